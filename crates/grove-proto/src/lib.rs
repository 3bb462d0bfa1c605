//! grove-proto: grove's group protocols, sans-IO.
//!
//! What it does:
//! - [`identity`]: a user is an Ed25519 key pair; the user id is the public key.
//! - [`mls::identity`]: the MLS credential scheme binding a leaf to its user (Basic credential =
//!   the user's public key = the leaf's signature key), as an mls-rs `IdentityProvider`.
//! - [`mls::hub`]: the server-side validator of an MLS group's public state: it orders commits
//!   (one per epoch), checks commits and proposals against the group before anyone sees them,
//!   and serves the ratchet tree to joiners. It never holds a group secret.
//! - [`mls::engine`]: the client side of MLS: one user's groups and KeyPackages, in memory; every
//!   operation hands back the rows the caller persists in its own transaction.
//! - [`mls::crypto`]: the MLS crypto provider (ciphersuite 1, RustCrypto primitives) drawing
//!   its randomness from an injected RNG.
//! - [`attachment`]: encrypted attachments: a fresh key per file, padding to size buckets,
//!   64 KiB segments sealed with AES-256-GCM in the STREAM construction, a SHA-256 digest of
//!   the blob; streaming in both directions.
//! - [`policy`]: the room policy's rules (roles, bans, rights), one implementation for both
//!   modes, the hub and the clients; [`mls::policy`] carries it in an MLS group.
//! - [`senderkeys`]: Signal-style Sender Keys (per-sender HMAC chain ratchet, AES-256-GCM per
//!   message, Ed25519 signature per chain): sender and receiver chains, the receiver store, and
//!   their persisted states. Randomness and time come from the caller.
//!
//! What it does not do: no I/O of any kind (no sockets, files, database, async runtime), and it
//! never reads the clock or the OS RNG itself: callers pass RNGs and clocks in. MLS randomness
//! goes through [`mls::crypto::GroveCryptoProvider`], which draws from the caller's RNG
//! ([`mls::engine::MlsEngine::with_rng`]; the hub draws none), and the engine passes the time of
//! an injected clock ([`mls::engine::MlsEngine::with_clock`]) to mls-rs when it creates a
//! KeyPackage, a group or a commit. The caveats: an engine given no clock lets mls-rs read the
//! system clock at those points (see [`mls::engine`] for the precise list). The Sender Keys room engine
//! ([`senderkeys::room`]) takes its randomness and time from the caller too; its pairwise Olm
//! transport lives in grove-client, because vodozemac draws OS randomness itself.

pub mod attachment;
pub mod identity;
pub mod invite;
pub mod mls;
pub mod policy;
pub mod senderkeys;

/// Who is to blame for an error of this crate ([`senderkeys::SenderKeyError::kind`],
/// [`mls::engine::EngineError::kind`], [`mls::hub::HubError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Hostile or damaged input from the network or another member: forged, replayed, garbled,
    /// stale, out of window, for another group, room, epoch or chain. Drop the input; nothing
    /// changed.
    Rejected,
    /// The caller used the API wrongly (asked for something the state does not allow), or its
    /// own stored state is corrupt.
    Misuse,
    /// A bug on our side (or in a dependency).
    Internal,
}
