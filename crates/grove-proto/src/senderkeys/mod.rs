//! Sender Keys: Signal's group cipher, done right.
//!
//! Every member of a Sender Keys room encrypts its messages with its own *sender chain*
//! ([`SenderChain`]) and hands the chain's public half, a [`SenderKeyDistribution`], to every
//! other member over a pairwise (Olm) session. Receivers keep one [`ReceiverChain`] per sender
//! chain, usually inside a [`SenderKeyStore`] that routes messages by their header.
//!
//! # The construction
//!
//! - **Chain ratchet** (as Signal): `MK_n = HMAC-SHA256(CK_n, 0x01)`, `CK_{n+1} =
//!   HMAC-SHA256(CK_n, 0x02)`. `CK_0` is 32 random bytes.
//! - **Per-message AEAD** (unlike Signal's unauthenticated AES-CBC): `key ‖ nonce =
//!   HKDF-SHA256(salt = none, ikm = MK_n, info = "grove sender-keys v1 message key")`, 32 + 12
//!   bytes, AES-256-GCM with the message header as associated data.
//! - **Per-chain signature**: each chain has its own Ed25519 key pair (drawn from the caller's
//!   RNG); every message carries an Ed25519 signature over header ‖ ciphertext, verified (strict)
//!   before anything else is computed from the message.
//!
//! # Wire message
//!
//! All integers big-endian. The header is also the AEAD's associated data.
//!
//! ```text
//! offset  size  field
//! 0       1     format version = 1
//! 1       1     kind = 1 (message)
//! 2       2     room length r (1..=MAX_ROOM_LEN)
//! 4       r     room (UTF-8)
//! 4+r     8     epoch (membership version)
//! 12+r    32    sender (UserId, Ed25519 public key)
//! 44+r    16    chain id
//! 60+r    4     iteration
//! 64+r    c     AES-256-GCM ciphertext ‖ 16-byte tag (c = plaintext length + 16)
//! 64+r+c  64    Ed25519 signature over bytes [0, 64+r+c) under the chain's signing key
//! ```
//!
//! [`SenderKeyDistribution::to_bytes`], [`SenderChain::to_bytes`] and [`ReceiverChain::to_bytes`]
//! use the same framing (version byte, kind byte) and are documented on those methods. Every
//! decoder refuses unknown versions and kinds, truncation and trailing bytes.
//!
//! # Receiving: pure, bounded, replay-proof, forward-secret
//!
//! [`ReceiverChain::decrypt`] takes `&self` and returns the next state: the caller stores it only
//! on success, so a failed decryption leaves the stored state byte-identical by construction.
//! The chain accepts iterations at most [`ReceiverLimits::max_forward`] ahead of the next
//! expected one and keeps at most [`ReceiverLimits::max_skipped`] message keys of skipped
//! iterations (the lowest are evicted first). A message key is deleted when it is used and the
//! chain key only moves forward, so the state after iteration `n` holds no key for any iteration
//! it has consumed, and an iteration seen before is a [`SenderKeyError::Replay`], also after the
//! state went through [`ReceiverChain::to_bytes`] and back.
//!
//! # What the caller must do
//!
//! - **Persist before you send.** [`SenderChain::encrypt`] advances the chain: persist
//!   [`SenderChain::to_bytes`] before the message leaves the device, or a restart reuses a key.
//! - **Authenticate distributions.** A [`SenderKeyDistribution`] is not signed: accept it only
//!   from the pairwise session of the user it names ([`SenderKeyStore::add_distribution`] takes
//!   that user and checks it), and only if that user is a member at the distribution's epoch.
//! - **Rotate.** Make a new [`SenderChain`] (and distribute it) on every membership change, and
//!   when [`SenderChain::needs_rotation`] says so.
//! - **Drop old epochs** with [`SenderKeyStore::forget_before_epoch`] once late messages of an
//!   old epoch are no longer expected.

mod codec;
mod crypto;
mod message;
mod receiver;
pub mod room;
mod sender;
mod store;

pub use message::MessageHeader;
pub use receiver::{Decrypted, ReceiverChain};
pub use sender::{SenderChain, SenderKeyDistribution};
pub use store::{ChainRef, ChainWrite, Changes, SenderKeyStore};

use std::fmt;

/// The format version of every encoding in this module (messages, distributions, states).
pub const FORMAT_VERSION: u8 = 1;

/// The longest room name a chain accepts, in bytes of UTF-8.
pub const MAX_ROOM_LEN: usize = 1024;

/// The length of a signature at the end of a message.
pub const SIGNATURE_LEN: usize = 64;

/// The length of the AEAD tag inside a message's ciphertext.
pub const TAG_LEN: usize = 16;

/// A sender chain's identifier: 16 random bytes, drawn when the chain is made. Public.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(pub [u8; 16]);

impl ChainId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        grove_wire::hex::Hex(&self.0).fmt(f)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({self})")
    }
}

/// When a sender should replace its chain by a fresh one, besides every membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// The largest age of a chain, in seconds (default 7 days).
    pub max_age_secs: u64,
    /// The largest number of messages sent on a chain (default 10,000).
    pub max_messages: u32,
}

impl RotationPolicy {
    /// 7 days.
    pub const DEFAULT_MAX_AGE_SECS: u64 = 7 * 24 * 3600;
    /// 10,000 messages.
    pub const DEFAULT_MAX_MESSAGES: u32 = 10_000;
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy { max_age_secs: Self::DEFAULT_MAX_AGE_SECS, max_messages: Self::DEFAULT_MAX_MESSAGES }
    }
}

/// The bounds of a receiver chain. They are part of its persisted state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// How far past the next expected iteration a message may be: iteration `i` is accepted if
    /// `i - next <= max_forward` (default 2,000). Bounds the work one message can cause.
    pub max_forward: u32,
    /// How many message keys of skipped iterations are kept for late messages (default 1,000);
    /// beyond that the lowest iterations are evicted.
    pub max_skipped: u32,
}

impl ReceiverLimits {
    /// 2,000 iterations.
    pub const DEFAULT_MAX_FORWARD: u32 = 2_000;
    /// 1,000 message keys.
    pub const DEFAULT_MAX_SKIPPED: u32 = 1_000;
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits { max_forward: Self::DEFAULT_MAX_FORWARD, max_skipped: Self::DEFAULT_MAX_SKIPPED }
    }
}

/// Who is to blame for a [`SenderKeyError`] (the crate's one [`crate::ErrorKind`]).
pub use crate::ErrorKind;

/// Why a Sender Keys operation failed. Every failure leaves all state as it was.
///
/// [`SenderKeyError::kind`] sorts the variants: hostile or damaged input, misuse, our bugs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderKeyError {
    // --- Hostile or damaged input (ErrorKind::Rejected) ---
    /// The bytes do not decode as the expected structure (truncated, trailing bytes, bad
    /// lengths, invalid UTF-8, an invalid public key, ...).
    #[error("malformed sender-keys input: {0}")]
    Malformed(&'static str),
    /// The input has a format version or kind this code does not know.
    #[error("unsupported sender-keys format: version {version}, kind {kind}")]
    UnsupportedFormat {
        /// The version byte.
        version: u8,
        /// The kind byte (0 if the input was too short to have one).
        kind: u8,
    },
    /// The message's signature does not verify under its chain's signing key: forged or altered
    /// (a bit flip in header, ciphertext or signature; a member signing as another).
    #[error("bad signature")]
    BadSignature,
    /// The signature is valid but the ciphertext does not decrypt: the chain's signer encrypted
    /// with keys that do not match the chain it distributed.
    #[error("the message does not decrypt")]
    DecryptionFailed,
    /// The iteration was already decrypted (or its key was evicted from the skipped-key store,
    /// which cannot be told apart): a duplicate or a replay.
    #[error("replayed message: iteration {iteration} was already consumed")]
    Replay {
        /// The message's iteration.
        iteration: u32,
    },
    /// The iteration is older than the chain as it was distributed to us (we joined later).
    #[error("iteration {iteration} predates the chain as distributed (first iteration {first_iteration})")]
    PredatesChain {
        /// The message's iteration.
        iteration: u32,
        /// The first iteration this receiver ever held a key for.
        first_iteration: u32,
    },
    /// The iteration is further ahead than the forward window allows.
    #[error("iteration {iteration} is beyond the window (next expected {next_iteration})")]
    OutOfWindow {
        /// The message's iteration.
        iteration: u32,
        /// The next iteration the chain expects.
        next_iteration: u32,
    },
    /// The message names a room this chain or store holds no chain for.
    #[error("the message is for another room")]
    WrongRoom,
    /// The message names an epoch this chain or store holds no chain for (another epoch's
    /// message, or one of an epoch already forgotten).
    #[error("the message is for epoch {message_epoch}, for which there is no chain")]
    WrongEpoch {
        /// The epoch in the message's header.
        message_epoch: u64,
    },
    /// The message's sender is not the chain's sender, or a distribution names another user than
    /// the one whose pairwise session delivered it.
    #[error("the sender does not match the chain")]
    WrongSender,
    /// No chain with the message's (room, epoch, sender, chain id) is known.
    #[error("unknown sender chain")]
    UnknownChain,
    /// A distribution reuses a known chain id with another signing key or chain key.
    #[error("a known chain id was distributed again with different keys")]
    ChainIdReused,

    // --- Misuse (ErrorKind::Misuse) ---
    /// The room name is empty or longer than [`MAX_ROOM_LEN`] bytes.
    #[error("room name must be 1..={MAX_ROOM_LEN} bytes, got {len}")]
    InvalidRoom {
        /// The room name's length in bytes.
        len: usize,
    },
    /// The sender chain has used every iteration: rotate it.
    #[error("the sender chain is exhausted: rotate it")]
    ChainExhausted,
    /// Stored state given back to this module does not decode.
    #[error("corrupt stored sender-keys state: {0}")]
    CorruptState(&'static str),

    // --- Our bugs (ErrorKind::Internal) ---
    /// A primitive failed where it cannot.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl SenderKeyError {
    /// Who is to blame: hostile input, the caller, or us.
    pub fn kind(&self) -> ErrorKind {
        use SenderKeyError::*;
        match self {
            Malformed(_)
            | UnsupportedFormat { .. }
            | BadSignature
            | DecryptionFailed
            | Replay { .. }
            | PredatesChain { .. }
            | OutOfWindow { .. }
            | WrongRoom
            | WrongEpoch { .. }
            | WrongSender
            | UnknownChain
            | ChainIdReused => ErrorKind::Rejected,
            InvalidRoom { .. } | ChainExhausted | CorruptState(_) => ErrorKind::Misuse,
            Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Checks a room name for use in a chain.
fn check_room(room: &str) -> Result<(), SenderKeyError> {
    if room.is_empty() || room.len() > MAX_ROOM_LEN {
        return Err(SenderKeyError::InvalidRoom { len: room.len() });
    }
    Ok(())
}

#[cfg(test)]
mod room_tests;
#[cfg(test)]
mod tests;
