//! User identity: a user is an Ed25519 key pair, and the user id is its public key.
//!
//! [`UserId`] is the 32-byte Ed25519 public key (text form: 64 lowercase hex characters). It is
//! the same type as [`grove_wire::UserId`], re-exported here so that protocol code and wire code
//! never need to convert between two spellings of one thing.
//!
//! [`Identity`] holds the secret half. It never reads the OS RNG itself: [`Identity::generate`]
//! takes the caller's RNG.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey};
use rand_core::CryptoRngCore;

pub use grove_wire::{ParseUserIdError, UserId};

/// Why an identity operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The user id's 32 bytes are not a valid Ed25519 public key (hostile or corrupt input).
    #[error("the user id is not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The signature does not verify under the user's key (hostile or corrupt input).
    #[error("the signature does not verify")]
    BadSignature,
}

/// A user's secret key: an Ed25519 signing key. Its [`Debug`] output shows only the user id.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// Rebuilds an identity from its 32-byte Ed25519 secret seed (see [`Identity::secret_bytes`]).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Identity {
        Identity { key: SigningKey::from_bytes(&secret) }
    }

    /// Generates a fresh identity from the caller's cryptographic RNG.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Identity {
        Identity { key: SigningKey::generate(rng) }
    }

    /// The user id: this identity's public key.
    pub fn user_id(&self) -> UserId {
        UserId(self.key.verifying_key().to_bytes())
    }

    /// Signs `msg` with plain Ed25519 (RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The 32-byte Ed25519 secret seed. Handle with care: whoever holds it is this user.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The underlying `ed25519-dalek` signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("user_id", &self.user_id()).finish_non_exhaustive()
    }
}

/// Verifies an Ed25519 signature made by [`Identity::sign`] of `user`. Uses strict verification
/// (rejects small-order keys and non-canonical signatures).
pub fn verify(user: &UserId, msg: &[u8], signature: &[u8; 64]) -> Result<(), IdentityError> {
    let key = user.verifying_key().ok_or(IdentityError::InvalidPublicKey)?;
    let sig = Signature::from_bytes(signature);
    key.verify_strict(msg, &sig).map_err(|_| IdentityError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn identity_round_trips_and_signs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let id = Identity::generate(&mut rng);
        let again = Identity::from_secret_bytes(id.secret_bytes());
        assert_eq!(id.user_id(), again.user_id());

        let sig = id.sign(b"hello");
        assert_eq!(verify(&id.user_id(), b"hello", &sig), Ok(()));
        assert_eq!(verify(&id.user_id(), b"hellO", &sig), Err(IdentityError::BadSignature));

        let text = id.user_id().to_string();
        assert_eq!(text.len(), 64);
        assert!(text.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(text.parse::<UserId>(), Ok(id.user_id()));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let id = Identity::from_secret_bytes([0x5a; 32]);
        let dbg = format!("{id:?}");
        let secret_hex = grove_wire::hex::encode(&id.secret_bytes());
        assert!(!dbg.contains(&secret_hex), "{dbg}");
        assert!(!dbg.contains("5a5a5a"), "{dbg}");
        assert!(!dbg.contains("90, 90"), "{dbg}");
    }
}
