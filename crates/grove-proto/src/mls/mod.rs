//! MLS (RFC 9420) on top of `mls-rs`: grove's credential scheme ([`identity`]), the server-side
//! validator of a group's public state ([`hub`]) and the client-side engine ([`engine`]).
//!
//! grove uses one ciphersuite, [`CIPHER_SUITE`] (MLS ciphersuite 1: X25519, AES-128-GCM,
//! SHA-256, Ed25519), and the pure-Rust `mls-rs-crypto-rustcrypto` provider.

pub mod engine;
pub mod hub;
pub mod identity;

use mls_rs::CipherSuite;
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

/// The only MLS ciphersuite grove uses: `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` (1).
pub const CIPHER_SUITE: CipherSuite = CipherSuite::CURVE25519_AES128;

/// The crypto provider grove uses, with only [`CIPHER_SUITE`] enabled.
///
/// Note: the provider draws randomness from the OS (via `getrandom`) when *generating* keys,
/// nonces or group ids. The hub's validation paths never generate anything; client code that
/// creates groups, KeyPackages or commits does.
pub fn crypto_provider() -> RustCryptoProvider {
    RustCryptoProvider::with_enabled_cipher_suites(vec![CIPHER_SUITE])
}
