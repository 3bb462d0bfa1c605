//! MLS (RFC 9420) on top of `mls-rs`: grove's credential scheme ([`identity`]), the server-side
//! validator of a group's public state ([`hub`]), the client-side engine ([`engine`]) and the
//! crypto provider they use ([`crypto`]); the proof of a commit's bad membership tag
//! ([`fault`]); the resync of a member who cannot process a commit ([`resync`]).
//!
//! grove uses one ciphersuite, [`CIPHER_SUITE`] (MLS ciphersuite 1: X25519, AES-128-GCM,
//! SHA-256, Ed25519), implemented by the pure-Rust `mls-rs-crypto-rustcrypto` provider.
//!
//! # Clock and randomness
//!
//! - **Randomness is injected.** [`crypto::GroveCryptoProvider`] wraps the RustCrypto
//!   ciphersuite and draws every random byte (keys, group ids, secrets, HPKE ephemeral keys,
//!   reuse guards) from an RNG the caller passes in ([`engine::MlsEngine::with_rng`]). The hub
//!   uses [`crypto::GroveCryptoProvider::verify_only`], which has no RNG: it draws no
//!   randomness, and would fail rather than fall back to the OS.
//! - **The clock is injected too, if the caller asks**: an engine given a clock with
//!   [`engine::MlsEngine::with_clock`] passes its reading to mls-rs whenever it generates a
//!   KeyPackage, creates a group, or builds a commit (the only times a client needs one: lifetimes
//!   of new leaves, and the check of added KeyPackages' lifetimes), and mls-rs discards its own
//!   `MlsTime::now()` reading. Without one, mls-rs reads `SystemTime::now()` at those points.
//!   Processing messages and joining use no time (mls-rs then skips lifetime checks of received
//!   leaves). See [`engine`](engine#clock-and-randomness) for the precise list. The hub never
//!   reads the clock.
//!
//! [`crypto_provider`] is the plain RustCrypto provider (OS randomness), kept for tests and
//! interop checks that build bare mls-rs clients; grove-proto's own code does not use it.

pub mod crypto;
pub mod engine;
pub mod error;
pub mod fault;
pub mod hub;
pub mod identity;
pub mod links;
pub mod policy;
pub mod resync;

use mls_rs::CipherSuite;
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

/// The only MLS ciphersuite grove uses: `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` (1).
pub const CIPHER_SUITE: CipherSuite = CipherSuite::CURVE25519_AES128;

/// The plain RustCrypto provider with only [`CIPHER_SUITE`] enabled.
///
/// It draws randomness from the OS (via `getrandom`) when generating keys, nonces or group
/// ids. grove-proto itself uses [`crypto::GroveCryptoProvider`] (injected randomness) in the
/// engine and the hub; this one remains for tests and for bare mls-rs clients that interoperate
/// with grove (the primitives are the same).
pub fn crypto_provider() -> RustCryptoProvider {
    RustCryptoProvider::with_enabled_cipher_suites(vec![CIPHER_SUITE])
}
