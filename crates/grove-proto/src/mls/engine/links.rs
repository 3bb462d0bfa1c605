//! Link joins ([`crate::mls::links`]): the external commit by which a holder of a room's invite
//! link adds itself to the group.

use mls_rs::group::{CommitEffect, CommitMessageDescription};
use mls_rs::{MlsMessage, WireFormat};

use super::error::internal;
use super::process::CommitSummary;
use super::resync::ResyncCommit;
use super::{parse, user_at, EngineError, EngineGroup, GroupId, MlsEngine};
use crate::mls::error::{Expected, Internal, Malformed};
use crate::mls::identity::membership_change;

impl MlsEngine {
    /// Makes an external commit that adds this user to the group of `group_info` (a GroupInfo
    /// with the ratchet tree and the external public key, as members keep it sealed on the
    /// room's server). The new group waits in memory until [`MlsEngine::apply_resync`] (the
    /// server took the commit) or [`MlsEngine::discard_resync`] (it did not). Errors if the
    /// GroupInfo does not decode, if this user is in the group already
    /// ([`EngineError::GroupExists`]), or if mls-rs refuses it (tree, signature, the room's
    /// policy: a room whose join rule is not `link`, a ban).
    pub fn join_by_link(&mut self, group_info: &[u8]) -> Result<(GroupId, ResyncCommit), EngineError> {
        let msg: MlsMessage = parse(group_info)?;
        if msg.wire_format() != WireFormat::GroupInfo {
            return Err(EngineError::Malformed(Malformed::Expected(Expected::GroupInfo)));
        }
        let info =
            msg.clone().into_group_info().ok_or(EngineError::Malformed(Malformed::Expected(Expected::GroupInfo)))?;
        let g = GroupId::new(info.group_context().group_id().to_vec());
        if self.groups.contains_key(&g) {
            return Err(EngineError::GroupExists(g));
        }
        let (epoch, signer) = (info.group_context().epoch(), info.sender());
        let builder = self.client.external_commit_builder().map_err(internal("an external commit"))?;
        let commit = self.external_commit(&g, builder, msg, epoch, signer)?;
        Ok((g, commit))
    }
}

/// What a processed commit did if it is a link join (an external commit that removed no leaf:
/// the rules took it as one, `crate::mls::links::check_link_join`): its committer, the new
/// leaf's user in `group` as processed, joined. `None` for any other commit.
pub(super) fn link_join_summary(
    group: &EngineGroup,
    desc: &CommitMessageDescription,
) -> Result<Option<CommitSummary>, EngineError> {
    let CommitEffect::NewEpoch(new_epoch) = &desc.effect else { return Ok(None) };
    if !desc.is_external {
        return Ok(None);
    }
    let change = membership_change(new_epoch)
        .map_err(|e| EngineError::Internal(Internal::caused("reading a commit's proposals", e)))?;
    if !change.removed.is_empty() || !change.added.is_empty() {
        return Ok(None);
    }
    let joiner = user_at(group, desc.committer)?;
    Ok(Some(CommitSummary {
        epoch: new_epoch.epoch,
        committer: joiner,
        added: vec![joiner],
        removed: Vec::new(),
        removed_me: false,
        policy: None,
    }))
}
