//! Resync ([`crate::mls::resync`]): the key a stuck member shares with the members of its
//! epoch, the GroupInfo a member ahead publishes under it, and the external commit by which
//! the stuck member replaces its own leaf.

use std::collections::{BTreeMap, HashMap};

use mls_rs::extension::built_in::RatchetTreeExt;
use mls_rs::group::{ContentType, Sender};
use mls_rs::{MlsMessage, MlsMessageDescription, WireFormat};
use zeroize::Zeroizing;

use super::error::{internal, rejected};
use super::process::Check;
use super::{encode, members_of, parse, user_at, Changes, EngineError, GroupId, MlsEngine};
use crate::identity::UserId;
use crate::mls::error::{Expected, Malformed};
use crate::mls::identity::user_of;
use crate::mls::resync::RESYNC_LABEL;

/// An external commit replacing this member's leaf, made and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResyncCommit {
    /// The commit (a PublicMessage), to post to the room's server.
    pub commit: Vec<u8>,
    /// The epoch it was made in (the GroupInfo's): the server takes it only in that epoch.
    pub epoch: u64,
    /// Who signed the GroupInfo it was made from.
    pub signer: UserId,
}

/// The resync keys of epochs other members' commits took a group out of, per group: (the epoch
/// left, its key), until the caller takes them.
pub(super) type LeftKeys = HashMap<GroupId, BTreeMap<u64, Zeroizing<[u8; 32]>>>;

/// At most this many left epochs' keys are kept per group between two takes (a page of commits
/// nobody took the keys of must not grow the engine without bound).
const LEFT_KEYS_KEPT: usize = 64;

impl MlsEngine {
    /// Before another member's commit of the current epoch is processed: notes the epoch's
    /// resync key, which the commit is about to take out of reach (mls-rs keeps no exporter
    /// secret of past epochs). A member who processed the commit can then offer the members
    /// who could not a way back in at once, sealed under that key
    /// ([`MlsEngine::take_left_resync_keys`]). One HKDF expansion per commit.
    pub(super) fn note_resync_key(&mut self, g: &GroupId, msg: &MlsMessage, check: &Check) {
        let commit = matches!(
            msg.description(),
            MlsMessageDescription::PublicProtocolMessage { content_type: ContentType::Commit, .. }
        );
        if !commit || check.own_commit_at_current || check.message_epoch != check.current {
            return;
        }
        let Ok(key) = self.resync_key(g) else { return };
        let kept = self.left_keys.entry(g.clone()).or_default();
        kept.insert(check.current, Zeroizing::new(key));
        while kept.len() > LEFT_KEYS_KEPT {
            kept.pop_first();
        }
    }

    /// The resync keys of the epochs that other members' commits, processed since the last
    /// call, took the group out of: (the epoch left, its key), oldest first. A key is noted
    /// before its commit is processed, so one whose commit then failed is among them: match
    /// them against the commits that succeeded (`Incoming::Commit`'s epoch is the one after).
    pub fn take_left_resync_keys(&mut self, g: &GroupId) -> Vec<(u64, Zeroizing<[u8; 32]>)> {
        self.left_keys.remove(g).map(|keys| keys.into_iter().collect()).unwrap_or_default()
    }

    /// The resync key of the group's current epoch: an exporter secret under
    /// [`RESYNC_LABEL`]. Every member of the epoch derives the same; nobody else can.
    pub fn resync_key(&self, g: &GroupId) -> Result<[u8; 32], EngineError> {
        let secret = self.group(g)?.export_secret(RESYNC_LABEL, b"", 32).map_err(internal("exporting a secret"))?;
        let mut key = [0u8; 32];
        if secret.as_bytes().len() != key.len() {
            return Err(EngineError::bug("an exporter secret of the wrong length"));
        }
        key.copy_from_slice(secret.as_bytes());
        Ok(key)
    }

    /// A GroupInfo of the group's current epoch that allows one external commit (it carries
    /// the external public key) and carries the ratchet tree, signed by this member.
    pub fn resync_group_info(&self, g: &GroupId) -> Result<Vec<u8>, EngineError> {
        let info =
            self.group(g)?.group_info_message_allowing_ext_commit(true).map_err(internal("signing a GroupInfo"))?;
        encode(&info)
    }

    /// Makes an external commit that replaces this member's leaf in the group, from a GroupInfo
    /// (with the ratchet tree) of a later epoch. The group as this member holds it is kept
    /// unchanged until [`MlsEngine::apply_resync`] (the server took the commit) or
    /// [`MlsEngine::discard_resync`] (it did not). Errors if the GroupInfo is not one of this
    /// group, of an epoch after this member's, or if mls-rs refuses it (tree, signature).
    pub fn prepare_resync(&mut self, g: &GroupId, group_info: &[u8]) -> Result<ResyncCommit, EngineError> {
        let group = self.group(g)?;
        let me = group.current_member_index();
        let current = group.current_epoch();
        let msg: MlsMessage = parse(group_info)?;
        if msg.wire_format() != WireFormat::GroupInfo {
            return Err(EngineError::Malformed(Malformed::Expected(Expected::GroupInfo)));
        }
        let info =
            msg.clone().into_group_info().ok_or(EngineError::Malformed(Malformed::Expected(Expected::GroupInfo)))?;
        if info.group_context().group_id() != g.as_bytes() {
            return Err(EngineError::WrongGroup);
        }
        let (epoch, signer) = (info.group_context().epoch(), info.sender());
        if epoch <= current {
            return Err(EngineError::WrongEpoch { message_epoch: epoch, current_epoch: current });
        }
        // This member's leaf in the GroupInfo's epoch: where it was in this member's epoch,
        // unless the tree says otherwise (a resync of this member that the room took while its
        // client lost the outcome, a crash say, put a leaf of its user elsewhere).
        let me = info
            .extensions()
            .get_as::<RatchetTreeExt>()
            .ok()
            .flatten()
            .and_then(|t| {
                t.tree_data.roster().members_iter().find(|m| user_of(&m.signing_identity).is_ok_and(|u| u == self.user))
            })
            .map_or(me, |m| m.index);
        let builder = self.client.external_commit_builder().map_err(internal("an external commit"))?.with_removal(me);
        self.external_commit(g, builder, msg, epoch, signer)
    }

    /// Builds the external commit `builder` makes from the GroupInfo `msg` (of `epoch`, signed
    /// by the leaf `signer`), and keeps the group it leads to until [`MlsEngine::apply_resync`]
    /// or [`MlsEngine::discard_resync`]: a resync's, or a link join's.
    pub(super) fn external_commit(
        &mut self,
        g: &GroupId,
        mut builder: mls_rs::group::external_commit::ExternalCommitBuilder<super::EngineConfig>,
        msg: MlsMessage,
        epoch: u64,
        signer: u32,
    ) -> Result<ResyncCommit, EngineError> {
        if let Some(t) = self.now() {
            builder = builder.commit_time(t);
        }
        // The new group's epoch records must not meet an earlier membership's (mls-rs refuses a
        // gap in the epochs it stores): the builder sees the group's rows purged, and the purge
        // is undone at once; `apply_resync` purges them for good.
        self.store.purge_group(g.as_bytes());
        let built = builder.build(msg).map_err(rejected);
        self.store.rollback();
        let (fresh, commit) = built?;
        let signer = user_at(&fresh, signer)?;
        let commit = ResyncCommit { commit: encode(&commit)?, epoch, signer };
        self.resyncing.insert(g.clone(), fresh);
        Ok(commit)
    }

    /// The server took the resync commit: the group is now the one it made (its rows replace
    /// every row of the group as it was). Answers the new epoch and the members.
    pub fn apply_resync(&mut self, g: &GroupId) -> Result<(u64, Vec<UserId>, Changes), EngineError> {
        let mut fresh = self.resyncing.remove(g).ok_or(EngineError::NoPendingCommit)?;
        self.store.purge_group(g.as_bytes());
        if let Err(e) = fresh.write_to_storage() {
            self.store.rollback();
            return Err(internal("writing the group")(e));
        }
        let (epoch, members) = (fresh.current_epoch(), members_of(&fresh));
        self.departed.remove(g);
        self.groups.insert(g.clone(), fresh);
        Ok((epoch, members, self.store.drain()))
    }

    /// The server did not take the resync commit: forget it (the group stays as it was).
    pub fn discard_resync(&mut self, g: &GroupId) {
        self.resyncing.remove(g);
    }

    /// Whether `message` is an external commit (a resync's), by its framing.
    pub fn is_external_commit(message: &[u8]) -> bool {
        parse(message).is_ok_and(|m| {
            matches!(
                m.description(),
                MlsMessageDescription::PublicProtocolMessage { sender: Sender::NewMemberCommit, .. }
            )
        })
    }
}

#[cfg(feature = "testing")]
impl MlsEngine {
    /// Feature `testing`, for grove's own tests of a lying member: until called again, this
    /// engine's HPKE encryptions (a commit's path secrets, one per copath node) to the keys of
    /// these users' leaves, and of every parent node above one of them, carry garbage: the
    /// members under those nodes cannot process the commit, the others can (a split view).
    /// Empty `users`: honest again.
    pub fn garble_seals_to(&self, g: &GroupId, users: &[UserId]) -> Result<(), EngineError> {
        use mls_rs::group::Node;
        let tree = self.group(g)?.export_tree();
        let nodes = tree.nodes();
        let targets: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                Some(Node::Leaf(l))
                    if crate::mls::identity::user_of(&l.signing_identity).is_ok_and(|u| users.contains(&u)) =>
                {
                    Some(i)
                }
                _ => None,
            })
            .collect();
        let mut keys = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            match n {
                Some(Node::Leaf(l)) if targets.contains(&i) => keys.push(l.public_key.as_ref().to_vec()),
                Some(Node::Parent(p)) => {
                    // A parent node's subtree spans the node indexes within 2^level - 1 of it.
                    let span = (1usize << i.trailing_ones()) - 1;
                    if targets.iter().any(|t| *t + span >= i && *t <= i + span) {
                        keys.push(p.public_key.as_ref().to_vec());
                    }
                }
                _ => {}
            }
        }
        self.tap.garble_seals_to(keys);
        Ok(())
    }
}
