//! grove's MLS credential scheme.
//!
//! A leaf's credential is a [`BasicCredential`] whose identity is the 32 raw bytes of the user's
//! Ed25519 public key, and the leaf's signature key *is* that same public key. So the user id
//! named by a leaf is always the key that signs for that leaf: only the holder of a user's secret
//! key can create (or update) a leaf naming that user. [`GroveIdentityProvider`] enforces this
//! for every leaf, KeyPackage and external sender mls-rs validates.

use mls_rs::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs::error::IntoAnyError;
use mls_rs::group::proposal::Proposal;
use mls_rs::group::NewEpoch;
use mls_rs::identity::basic::BasicCredential;
use mls_rs::identity::{CredentialType, SigningIdentity};
use mls_rs::time::MlsTime;
use mls_rs::{ExtensionList, IdentityProvider};
use mls_rs_core::identity::MemberValidationContext;

use crate::identity::{Identity, UserId};

/// Why a signing identity is not an acceptable grove credential (hostile or foreign input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The credential is not a Basic credential.
    #[error("the credential is not a basic credential")]
    NotBasic,
    /// The Basic credential's identity is not 32 bytes long.
    #[error("the credential identity is {0} bytes long, expected 32")]
    WrongLength(usize),
    /// The credential names a user other than the holder of the leaf's signature key.
    #[error("the credential identity is not the leaf's signature key")]
    KeyMismatch,
}

impl IntoAnyError for CredentialError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

/// The user a signing identity names, if it is a valid grove credential: Basic, 32 bytes, equal
/// to the signature key.
pub fn user_of(signing_identity: &SigningIdentity) -> Result<UserId, CredentialError> {
    let basic = signing_identity.credential.as_basic().ok_or(CredentialError::NotBasic)?;
    let id = basic.identifier();
    let user = UserId::from_slice(id).ok_or(CredentialError::WrongLength(id.len()))?;
    if signing_identity.signature_key.as_bytes() != id {
        return Err(CredentialError::KeyMismatch);
    }
    Ok(user)
}

/// The mls-rs [`IdentityProvider`] for grove credentials (see the [module docs](self)).
///
/// It ignores timestamps: grove credentials do not expire (KeyPackage lifetimes are checked by
/// mls-rs itself, and only when it is given a time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroveIdentityProvider;

impl IdentityProvider for GroveIdentityProvider {
    type Error = CredentialError;

    fn validate_member(
        &self,
        signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _context: MemberValidationContext<'_>,
    ) -> Result<(), Self::Error> {
        user_of(signing_identity).map(|_| ())
    }

    fn validate_external_sender(
        &self,
        signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _extensions: Option<&ExtensionList>,
    ) -> Result<(), Self::Error> {
        user_of(signing_identity).map(|_| ())
    }

    fn identity(
        &self,
        signing_identity: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<Vec<u8>, Self::Error> {
        user_of(signing_identity).map(|u| u.as_bytes().to_vec())
    }

    fn valid_successor(
        &self,
        predecessor: &SigningIdentity,
        successor: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<bool, Self::Error> {
        Ok(user_of(predecessor)? == user_of(successor)?)
    }

    fn supported_types(&self) -> Vec<CredentialType> {
        vec![BasicCredential::credential_type()]
    }
}

/// What an mls-rs `Client` needs to act as `id`: the signing identity (Basic credential holding
/// the 32-byte public key, signature key = the same public key) and the signature secret key.
///
/// The secret key is in the format `mls-rs-crypto-rustcrypto` expects for Ed25519: the 64-byte
/// "keypair" encoding, 32-byte seed followed by the 32-byte public key
/// (`ed25519_dalek::SigningKey::to_keypair_bytes`). The provider rejects a bare 32-byte seed.
pub fn signing_identity(id: &Identity) -> (SigningIdentity, SignatureSecretKey) {
    let public = id.user_id();
    let credential = BasicCredential::new(public.as_bytes().to_vec()).into_credential();
    let signing_identity = SigningIdentity::new(credential, SignaturePublicKey::new(public.as_bytes().to_vec()));
    let secret = SignatureSecretKey::new(id.signing_key().to_keypair_bytes().to_vec());
    (signing_identity, secret)
}

/// Why a commit's applied proposals could not be read as users added and removed. mls-rs
/// validated the commit before, so either means a bug (ours or mls-rs').
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeafError {
    /// A leaf of the tree, or of an Add, with a credential [`GroveIdentityProvider`] refuses.
    #[error("a leaf with a bad credential: {0}")]
    BadCredential(#[from] CredentialError),
    /// A Remove of a leaf that is blank in the tree the commit applied to.
    #[error("a remove of the blank leaf {0}")]
    BlankLeaf(u32),
}

/// The users a commit added and removed, each in proposal order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MembershipChange {
    /// Users of the commit's Add proposals.
    pub(crate) added: Vec<UserId>,
    /// Users at the leaves of its Remove proposals, in the tree before the commit.
    pub(crate) removed: Vec<UserId>,
}

/// Reads who a processed commit added and removed: from its applied proposals, against the
/// tree it was applied to. The one reading of a commit's membership change, shared by the
/// client engine and the hub.
pub(crate) fn membership_change(epoch: &NewEpoch) -> Result<MembershipChange, LeafError> {
    let prior = epoch.prior_state.roster();
    let mut change = MembershipChange::default();
    for info in &epoch.applied_proposals {
        match &info.proposal {
            Proposal::Add(add) => change.added.push(user_of(add.signing_identity())?),
            Proposal::Remove(remove) => {
                let index = remove.to_remove();
                let member = prior.member_with_index(index).map_err(|_| LeafError::BlankLeaf(index))?;
                change.removed.push(user_of(&member.signing_identity)?);
            }
            _ => {}
        }
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mls_rs::identity::{Credential, CustomCredential};
    use mls_rs::{CipherSuiteProvider, CryptoProvider};

    fn ext() -> ExtensionList {
        ExtensionList::default()
    }

    #[test]
    fn provider_accepts_only_key_bound_basic_credentials() {
        let alice = Identity::from_secret_bytes([1; 32]);
        let carol = Identity::from_secret_bytes([3; 32]);
        let p = GroveIdentityProvider;
        let none = MemberValidationContext::None;

        let (good, _) = signing_identity(&alice);
        assert_eq!(p.validate_member(&good, None, none), Ok(()));
        assert_eq!(p.identity(&good, &ext()), Ok(alice.user_id().as_bytes().to_vec()));
        assert_eq!(user_of(&good), Ok(alice.user_id()));

        // Credential names Carol, but the key is Alice's.
        let claims_carol = SigningIdentity::new(
            BasicCredential::new(carol.user_id().as_bytes().to_vec()).into_credential(),
            good.signature_key.clone(),
        );
        assert_eq!(p.validate_member(&claims_carol, None, none), Err(CredentialError::KeyMismatch));
        assert_eq!(p.validate_external_sender(&claims_carol, None, None), Err(CredentialError::KeyMismatch));

        let short =
            SigningIdentity::new(BasicCredential::new(vec![1; 31]).into_credential(), good.signature_key.clone());
        assert_eq!(p.validate_member(&short, None, none), Err(CredentialError::WrongLength(31)));

        let custom = SigningIdentity::new(
            Credential::Custom(CustomCredential::new(CredentialType::new(0xf000), alice.user_id().as_bytes().to_vec())),
            good.signature_key.clone(),
        );
        assert_eq!(p.validate_member(&custom, None, none), Err(CredentialError::NotBasic));

        let (carol_si, _) = signing_identity(&carol);
        assert_eq!(p.valid_successor(&good, &good, &ext()), Ok(true));
        assert_eq!(p.valid_successor(&good, &carol_si, &ext()), Ok(false));
    }

    #[test]
    fn secret_key_is_seed_then_public_and_signs_plain_ed25519() {
        let alice = Identity::from_secret_bytes([9; 32]);
        let (si, sk) = signing_identity(&alice);
        let bytes = sk.as_bytes();
        assert_eq!(bytes.len(), 64);
        assert_eq!(&bytes[..32], &alice.secret_bytes());
        assert_eq!(&bytes[32..], alice.user_id().as_bytes());

        let cs = crate::mls::crypto_provider().cipher_suite_provider(crate::mls::CIPHER_SUITE).unwrap();
        assert_eq!(cs.signature_key_derive_public(&sk).unwrap(), si.signature_key);

        let sig = cs.sign(&sk, b"data").unwrap();
        cs.verify(&si.signature_key, &sig, b"data").unwrap();
        let sig: [u8; 64] = sig.try_into().unwrap();
        assert_eq!(crate::identity::verify(&alice.user_id(), b"data", &sig), Ok(()));
        // Our own signatures verify under the provider too.
        cs.verify(&si.signature_key, &alice.sign(b"other"), b"other").unwrap();

        // A bare 32-byte seed is not accepted by the provider.
        let seed_only = SignatureSecretKey::new(alice.secret_bytes().to_vec());
        assert!(cs.sign(&seed_only, b"data").is_err());
    }
}
