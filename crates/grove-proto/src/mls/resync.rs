//! Resync: a member who cannot process a commit the room accepted (a split view: garbage path
//! secrets for it, say) gets back into the group by an MLS external commit that replaces its
//! own leaf (RFC 9420 section 12.4.3.2), from a GroupInfo of the room's current epoch that a
//! member who did process the commit publishes.
//!
//! # The rule
//!
//! grove takes an external commit only as a resync (`check_replaces_own_leaf`): its proposals
//! are its ExternalInit and exactly one Remove, of a leaf whose user is the user of the new
//! leaf, and nothing else. So a resync changes no membership: the member is the same user with
//! a fresh leaf. The rule is one of [`crate::mls::policy::PolicyRules`], so the hub and every
//! client judge an external commit by it; the hub also binds the new leaf to the user who
//! signed the request ([`crate::mls::hub::HubGroup::check_commit`]).
//!
//! # How the GroupInfo reaches the stuck members, and only them
//!
//! A member stuck at epoch `E` still holds every secret of `E`, and so does every member who
//! went on past it (for a while: [`crate::mls::engine::EPOCH_RETENTION`] epochs). The stuck
//! member derives the **resync key** of `E` ([`crate::mls::engine::MlsEngine::resync_key`], an
//! MLS exporter secret of `E` under [`RESYNC_LABEL`]) and sends it to the room in an ordinary
//! application message of epoch `E` (a request: only members of `E` can decrypt it, the server
//! cannot). A member who is past `E` decrypts the request with its record of `E`, and answers
//! with a GroupInfo of its current epoch, with the ratchet tree and the external public key,
//! sealed under that key ([`seal`], AES-256-GCM): a `resync` entry of the log. Every member
//! stuck at `E` derives the same key from its own state and opens it ([`open`]); the server
//! sees ciphertext.
//!
//! No request is needed when someone processed the commit before the stuck member reads the
//! log: a member who processes another member's commit of `E` derives `E`'s resync key just
//! before ([`crate::mls::engine::MlsEngine::take_left_resync_keys`]) and, unless an offer for
//! `E` is already in the log, offers its GroupInfo under that key unasked.
//! The stuck member then finds the offer on its first read after the commit: one round of
//! syncs heals the split view. The request remains for a member who read the log before
//! anyone processed the commit. A member who resynced knows the key of `E` too, and publishes the GroupInfo
//! of the epoch its own external commit started, so the next stuck member can go on from there
//! at once.
//!
//! A GroupInfo is signed by the member who made it; the stuck member ignores one signed by the
//! committer of the commit it could not process (the suspect), so a lone liar cannot lead it
//! astray with a GroupInfo whose external public key is wrong.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use mls_rs::group::Roster;
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::ProposalBundle;

use mls_rs::external_client::ExternalReceivedMessage;
use mls_rs::group::CommitEffect;
use mls_rs::MlsMessage;

use crate::identity::UserId;
use crate::mls::error::{Internal, Rejection};
use crate::mls::hub::{rejected, CheckedCommit, HubError, HubGroup};
use crate::mls::identity::user_of;
use crate::policy::PolicyError;

/// The exporter label of the resync key.
pub const RESYNC_LABEL: &[u8] = b"grove resync v1";

/// The length of a sealed GroupInfo's nonce.
const NONCE_LEN: usize = 12;

/// Why a sealed GroupInfo cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResyncError {
    /// It was not sealed under this key (another epoch's, or garbage).
    #[error("the resync offer was not sealed under this member's key")]
    NotForUs,
}

/// The one rule of external commits: a member replacing its own leaf. `identity` is the new
/// leaf's, `roster` the members before the commit.
pub(crate) fn check_replaces_own_leaf(
    identity: &SigningIdentity,
    roster: &Roster,
    proposals: &ProposalBundle,
) -> Result<(), PolicyError> {
    let user = user_of(identity).map_err(|_| PolicyError::Invalid("an external commit's leaf is no grove user"))?;
    let [remove] = proposals.remove_proposals() else {
        return Err(PolicyError::Invalid("an external commit must remove exactly one leaf: the committer's own"));
    };
    let removed = roster
        .member_with_index(remove.proposal.to_remove())
        .ok()
        .and_then(|m| user_of(&m.signing_identity).ok())
        .ok_or(PolicyError::Invalid("an external commit removes a leaf that is not a member"))?;
    if removed != user {
        return Err(PolicyError::Invalid("an external commit may only replace the committer's own leaf"));
    }
    if proposals.length() != 1 + proposals.external_init_proposals().len() {
        return Err(PolicyError::Invalid("an external commit carries nothing but its ExternalInit and one Remove"));
    }
    Ok(())
}

impl HubGroup {
    /// Validates an external commit posted (per the request signature) by `sender`: taken only
    /// as `sender`'s resync, its new leaf `sender`'s and the one leaf it removes `sender`'s
    /// old one ([`check_replaces_own_leaf`], run by mls-rs through the room's rules). Changes
    /// no membership: `added` and `removed` are empty.
    pub(super) fn check_resync(&self, msg: MlsMessage, sender: &UserId) -> Result<CheckedCommit, HubError> {
        let mut next = self.group.clone();
        let received = next.process_incoming_message(msg).map_err(rejected)?;
        let ExternalReceivedMessage::Commit(desc) = received else {
            return Err(HubError::bug("mls-rs did not process a commit as a commit"));
        };
        if !desc.is_external {
            return Err(HubError::bug("mls-rs reports an external commit as a member's"));
        }
        let new_epoch = match desc.effect {
            CommitEffect::NewEpoch(e) => e,
            // The rule lets it remove only its committer's old leaf, never the hub's view.
            CommitEffect::Removed { new_epoch, .. } => new_epoch,
            CommitEffect::ReInit(_) => return Err(HubError::Rejected(Rejection::ReInit)),
        };
        let leaf = next.roster().member_with_index(desc.committer).map_err(|_| HubError::NotAMember)?;
        let user = user_of(&leaf.signing_identity)
            .map_err(|e| HubError::Internal(Internal::caused("a new leaf with a bad credential", e)))?;
        if &user != sender {
            return Err(HubError::SenderMismatch);
        }
        if self.epoch().checked_add(1) != Some(new_epoch.epoch) || next.group_context().epoch() != new_epoch.epoch {
            return Err(HubError::bug("the commit did not advance one epoch"));
        }
        Ok(CheckedCommit {
            new_epoch: new_epoch.epoch,
            next: HubGroup { group: next },
            added: Vec::new(),
            removed: Vec::new(),
        })
    }
}

/// Seals a GroupInfo under a resync key; `nonce` must be fresh random bytes.
pub fn seal(key: &[u8; 32], nonce: [u8; NONCE_LEN], group_info: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    // Encryption with a 32-byte key cannot fail for any input length grove handles.
    let ct = cipher.encrypt(Nonce::from_slice(&nonce), group_info).unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

/// Opens a GroupInfo sealed by [`seal`].
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, ResyncError> {
    if sealed.len() < NONCE_LEN {
        return Err(ResyncError::NotForUs);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    Aes256Gcm::new(key.into()).decrypt(Nonce::from_slice(nonce), ct).map_err(|_| ResyncError::NotForUs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_under_one_key_opens_under_it_only() {
        let sealed = seal(&[1; 32], [7; 12], b"group info");
        assert_eq!(open(&[1; 32], &sealed).unwrap(), b"group info");
        assert_eq!(open(&[2; 32], &sealed), Err(ResyncError::NotForUs));
        assert_eq!(open(&[1; 32], &sealed[..5]), Err(ResyncError::NotForUs));
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(open(&[1; 32], &flipped), Err(ResyncError::NotForUs));
    }
}
