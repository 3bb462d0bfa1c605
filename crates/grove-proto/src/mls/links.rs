//! Link joins: a holder of a room's invite link comes into an MLS room by an external commit
//! (RFC 9420 section 12.4.3.2) that adds its own leaf, with no member online.
//!
//! # The sealed GroupInfo
//!
//! Members who know the link's secret keep a GroupInfo of the room's current epoch (with the
//! ratchet tree and the external public key, as a resync offer has: [`crate::mls::engine::MlsEngine::resync_group_info`])
//! on the room's server, sealed under [`group_info_key`], an HKDF of the secret under its own
//! label ([`seal`], AES-256-GCM, the resync's sealing); they upload it again after every epoch
//! change. The server keeps ciphertext and the epoch; it hands it to whoever shows the link's
//! token (it knows only the token's hash). The joiner opens it with the key it derives from the
//! secret in its link, makes an external commit from it
//! ([`crate::mls::engine::MlsEngine::join_by_link`]) and posts it with the token.
//!
//! # The rule
//!
//! An external commit that removes no leaf is a link join (`check_link_join`): its proposals
//! are its ExternalInit and nothing else, the room has a policy whose join rule is `link`, the
//! new leaf's user is not a member already and is not banned. It is one of
//! [`crate::mls::policy::PolicyRules`], so the hub and every client judge it alike. The hub takes
//! one only through [`HubGroup::check_link_join`], which the server calls only for a request that
//! carries the room's valid link token (a link join posted as an ordinary entry is refused:
//! [`HubGroup::check_commit`]); the clients cannot see the token, and take the server's word
//! for it, as they do for the link's uses and expiry.

use hkdf::Hkdf;
use mls_rs::external_client::ExternalReceivedMessage;
use mls_rs::group::{CommitEffect, ContentType, GroupContext, Roster, Sender};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::ProposalBundle;
use sha2::Sha256;

use crate::identity::UserId;
use crate::mls::error::{Internal, Rejection};
use crate::mls::hub::{rejected, CheckedCommit, HubError, HubGroup};
use crate::mls::identity::user_of;
use crate::policy::{may_request_join, PolicyError};
use grove_wire::policy::JoinRule;

pub use crate::mls::resync::{open, seal, ResyncError as SealError};

/// The HKDF label of the key a room's GroupInfo is sealed under for its link's holders.
pub const GROUP_INFO_LABEL: &[u8] = b"grove link group info key v1";

/// The key the room's GroupInfo is sealed under for the holders of the link with `secret`:
/// HKDF-SHA256 of the secret, under [`GROUP_INFO_LABEL`]. The server, which sees only the hash
/// of the link's token, cannot derive it.
pub fn group_info_key(secret: &[u8; 32]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(None, secret);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    if hk.expand(GROUP_INFO_LABEL, &mut key).is_err() {
        return [0; 32];
    }
    key
}

/// The one rule of link joins: an external commit removing no leaf adds `identity`'s user, in
/// a room whose policy lets a link holder in at once and does not ban it. `roster` is the
/// members before the commit, `context` the GroupContext before it.
pub(crate) fn check_link_join(
    identity: &SigningIdentity,
    roster: &Roster,
    context: &GroupContext,
    proposals: &ProposalBundle,
) -> Result<(), PolicyError> {
    let user = user_of(identity).map_err(|_| PolicyError::Invalid("an external commit's leaf is no grove user"))?;
    if proposals.length() != proposals.external_init_proposals().len() {
        return Err(PolicyError::Invalid("a link join carries nothing but its ExternalInit"));
    }
    let policy = crate::mls::policy::read(&context.extensions)?
        .ok_or(PolicyError::Invalid("a room created before rooms had policies takes members by invitation only"))?;
    if may_request_join(&policy, &user)? != JoinRule::Link {
        return Err(PolicyError::Invalid("the room's join policy is not `link`: a link holder asks and waits"));
    }
    if roster.members_iter().any(|m| user_of(&m.signing_identity).ok() == Some(user)) {
        return Err(PolicyError::Invalid("a link join adds a user who is a member already"));
    }
    Ok(())
}

impl HubGroup {
    /// Validates a link join: an external commit posted (per the request signature) by
    /// `sender` that adds `sender`'s leaf (the crate's `check_link_join`, run by mls-rs through the
    /// room's rules). The caller has checked the link's token. `added` is `[sender]`.
    pub fn check_link_join(&self, message: &[u8], sender: &UserId) -> Result<CheckedCommit, HubError> {
        let msg = crate::mls::hub::parse(message)?;
        let from = self.check_handshake(&msg, ContentType::Commit)?;
        if from != Sender::NewMemberCommit {
            return Err(HubError::WrongContentType);
        }
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
            CommitEffect::Removed { .. } => {
                return Err(HubError::NotAllowed(PolicyError::Invalid("a link join removes no leaf")))
            }
            CommitEffect::ReInit(_) => return Err(HubError::Rejected(Rejection::ReInit)),
        };
        if next.roster().members_iter().count() != self.group.roster().members_iter().count() + 1 {
            return Err(HubError::NotAllowed(PolicyError::Invalid("a link join adds one leaf: the joiner's")));
        }
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
            added: vec![user],
            removed: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_info_key_is_the_links_and_no_other_secrets() {
        let key = group_info_key(&[1; 32]);
        assert_ne!(key, group_info_key(&[2; 32]));
        assert_ne!(key, [0; 32]);
        // Not the link's token (which the server is shown) nor its hash.
        assert_ne!(key, grove_wire::invite::token(&[1; 32]));
        assert_ne!(key, grove_wire::invite::token_hash(&grove_wire::invite::token(&[1; 32])));
        let sealed = seal(&key, [3; 12], b"group info");
        assert_eq!(open(&key, &sealed).unwrap(), b"group info");
        assert!(open(&group_info_key(&[2; 32]), &sealed).is_err());
    }
}
