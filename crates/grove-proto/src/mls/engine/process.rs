//! Processing the group's log: [`MlsEngine::process`] and [`MlsEngine::process_many`], the cheap
//! checks before mls-rs sees a message, and the reading of what mls-rs did.

use mls_rs::error::MlsError;
use mls_rs::group::proposal::Proposal;
use mls_rs::group::{CommitEffect, CommitMessageDescription, ContentType, ProposalSender, ReceivedMessage, Sender};
use mls_rs::{MlsMessage, MlsMessageDescription};

use super::error::{internal, rejected};
use super::groups::record;
use super::{
    journal, parse, user_at, Changes, EngineError, EngineGroup, GroupId, Incoming, MlsEngine, EPOCH_RETENTION,
};
use crate::identity::UserId;
use crate::mls::error::{Expected, Internal, Malformed, Rejection};
use crate::mls::identity::{membership_change, user_of, MembershipChange};

/// What a processed or applied commit did.
pub(super) struct CommitSummary {
    pub(super) epoch: u64,
    pub(super) committer: UserId,
    pub(super) added: Vec<UserId>,
    pub(super) removed: Vec<UserId>,
    pub(super) removed_me: bool,
    /// The room's policy after the commit, if the commit set one.
    pub(super) policy: Option<grove_wire::policy::RoomPolicy>,
}

/// Reads a processed or applied commit.
pub(super) fn summarize(desc: &CommitMessageDescription) -> Result<CommitSummary, EngineError> {
    let (new_epoch, removed_me) = match &desc.effect {
        CommitEffect::NewEpoch(e) => (e, false),
        CommitEffect::Removed { new_epoch, .. } => (new_epoch, true),
        CommitEffect::ReInit(_) => return Err(EngineError::Rejected(Rejection::ReInit)),
    };
    if desc.is_external {
        // A member's resync (the rules let an external commit only replace its committer's
        // own leaf, `crate::mls::resync`): the committer is the user of the leaf it removed,
        // and membership is unchanged.
        let MembershipChange { removed, .. } = membership_change(new_epoch)
            .map_err(|e| EngineError::Internal(Internal::caused("reading a commit's proposals", e)))?;
        let [committer] = removed.as_slice() else {
            return Err(EngineError::Rejected(Rejection::ExternalCommit));
        };
        return Ok(CommitSummary {
            epoch: new_epoch.epoch,
            committer: *committer,
            added: Vec::new(),
            removed: Vec::new(),
            removed_me,
            // A resync may change no extension: the rules allow only its Remove and ExternalInit.
            policy: None,
        });
    }
    let prior = new_epoch.prior_state.roster();
    let committer = prior
        .member_with_index(desc.committer)
        .map_err(|e| EngineError::Internal(Internal::caused("committer not in the prior tree", e)))?;
    let committer = user_of(&committer.signing_identity)
        .map_err(|e| EngineError::Internal(Internal::caused("a leaf with a bad credential", e)))?;
    let MembershipChange { added, removed } = membership_change(new_epoch)
        .map_err(|e| EngineError::Internal(Internal::caused("reading a commit's proposals", e)))?;
    let policy = new_epoch.applied_proposals.iter().rev().find_map(|p| match &p.proposal {
        Proposal::GroupContextExtensions(list) => crate::mls::policy::read(list).ok().flatten(),
        _ => None,
    });
    Ok(CommitSummary { epoch: new_epoch.epoch, committer, added, removed, removed_me, policy })
}

/// What `process` did to a group, before the engine's bookkeeping.
enum Processed {
    Own,
    Application { sender: UserId, plaintext: Vec<u8> },
    Commit(CommitSummary),
    Proposal { sender: UserId, removes: Vec<UserId> },
}

/// What [`MlsEngine::check`] found out about a message mls-rs is to process.
pub(super) struct Check {
    /// A commit of this member at the current epoch (it must match the pending commit).
    pub(super) own_commit_at_current: bool,
    pub(super) current: u64,
    pub(super) message_epoch: u64,
}

enum Checked {
    /// This member's own handshake message, echoed by the log: nothing to do.
    Own,
    Process(Box<MlsMessage>, Check),
}

/// Has mls-rs process a checked message, in memory only (the caller writes the group, or
/// reloads it on error).
fn process_in_memory(group: &mut EngineGroup, msg: MlsMessage, check: &Check) -> Result<Processed, EngineError> {
    let Check { own_commit_at_current, current, message_epoch } = *check;
    let received = match group.process_incoming_message(msg) {
        Ok(r) => r,
        Err(MlsError::CantProcessMessageFromSelf) if own_commit_at_current => return Err(EngineError::OwnCommitLost),
        Err(MlsError::CantProcessMessageFromSelf) => return Ok(Processed::Own),
        Err(MlsError::EpochNotFound) => {
            return Err(EngineError::EpochUnavailable { message_epoch, current_epoch: current })
        }
        Err(MlsError::InvalidEpoch) => return Err(EngineError::WrongEpoch { message_epoch, current_epoch: current }),
        Err(e) => return Err(rejected(e)),
    };
    Ok(match received {
        ReceivedMessage::ApplicationMessage(desc) => {
            let sender = user_at(group, desc.sender_index)?;
            Processed::Application { sender, plaintext: desc.data().to_vec() }
        }
        ReceivedMessage::Commit(desc) => Processed::Commit(match super::links::link_join_summary(group, &desc)? {
            Some(joined) => joined,
            None => summarize(&desc)?,
        }),
        ReceivedMessage::Proposal(desc) => {
            let ProposalSender::Member(index) = desc.sender else {
                return Err(EngineError::Rejected(Rejection::NonMemberProposal));
            };
            let sender = user_at(group, index)?;
            let removes = match &desc.proposal {
                Proposal::Remove(r) => vec![user_at(group, r.to_remove())?],
                _ => Vec::new(),
            };
            Processed::Proposal { sender, removes }
        }
        _ => return Err(EngineError::bug("mls-rs returned a non-group message")),
    })
}

/// The journal row for a message mls-rs processed: none for this member's own message (nothing
/// changed) or for a commit removing this member (the group is deleted, in `finish`).
fn journal_entry(processed: &Processed, message: &[u8]) -> Option<Vec<u8>> {
    match processed {
        Processed::Own => None,
        Processed::Commit(s) if s.removed_me => None,
        Processed::Application { .. } => Some(journal::received(message)),
        Processed::Commit(_) | Processed::Proposal { .. } => Some(journal::handshake(message)),
    }
}

/// In [`MlsEngine::process_many`], a failed message whose reload replayed a journal this long
/// writes a snapshot, so that the next failure of the page does not replay it all again.
const REPLAY_AFTER_FAILURE: usize = 32;

impl MlsEngine {
    /// Processes one message of the group's log, in server order: decrypts an application
    /// message, applies a commit, caches a proposal; recognises this member's own messages
    /// ([`Incoming::Own`], see the [module docs](super#own-messages)).
    ///
    /// On error nothing changed: garbled ([`EngineError::Malformed`]), forged or otherwise
    /// invalid ([`EngineError::Rejected`]), foreign ([`EngineError::WrongGroup`]), stale or
    /// future ([`EngineError::WrongEpoch`]), too old to decrypt
    /// ([`EngineError::EpochUnavailable`]). The caller should record the failure and go on with
    /// the next message.
    pub fn process(&mut self, g: &GroupId, message: &[u8]) -> Result<(Incoming, Changes), EngineError> {
        let (msg, check) = match self.check(g, message)? {
            Checked::Own => return Ok((Incoming::Own, Changes::default())),
            Checked::Process(msg, check) => (msg, check),
        };
        self.note_resync_key(g, &msg, &check);
        let store = self.store.clone();
        let bounds = self.bounds;
        let processed = self.with_group(g, |group| {
            let processed = process_in_memory(group, *msg, &check)?;
            if let Some(entry) = journal_entry(&processed, message) {
                record(group, &store, g, entry, bounds)?;
            }
            Ok(processed)
        })?;
        Ok((self.finish(g, processed), self.store.drain()))
    }

    /// Processes a page of the group's log, in order, with the same outcome for each message as
    /// [`MlsEngine::process`] called on each in turn (and the same state afterwards), but checks
    /// the journal's bounds once, at the end: the returned [`Changes`] hold the page's journal
    /// rows, or one snapshot if a bound was reached, or the group's deletion if a commit removed
    /// this member. Persist them with every message's result in one transaction.
    ///
    /// A failed message changes nothing, as with `process`: if mls-rs had touched the group, the
    /// engine reloads it from the last written state (the snapshot and the journal, which holds
    /// every message of this call that succeeded before). If that replayed a handshake or a long
    /// journal, it then writes a snapshot, so that further failures in the page do not redo that
    /// work. After a commit that removes this member, the remaining messages fail as `process`
    /// would fail then ([`EngineError::NotAMember`], or [`EngineError::Malformed`] for garbage).
    ///
    /// The outer error (an internal failure, which should not happen) means nothing changed,
    /// as with any operation.
    pub fn process_many(
        &mut self,
        g: &GroupId,
        messages: &[Vec<u8>],
    ) -> Result<(Vec<Result<Incoming, EngineError>>, Changes), EngineError> {
        match self.process_many_inner(g, messages) {
            Ok(outcomes) => Ok((outcomes, self.store.drain())),
            Err(e) => {
                // Back to the state before the call: everything written since is undone.
                self.reload_after_error(g)?;
                Err(e)
            }
        }
    }

    fn process_many_inner(
        &mut self,
        g: &GroupId,
        messages: &[Vec<u8>],
    ) -> Result<Vec<Result<Incoming, EngineError>>, EngineError> {
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            let (msg, check) = match self.check(g, message) {
                Ok(Checked::Own) => {
                    outcomes.push(Ok(Incoming::Own));
                    continue;
                }
                Ok(Checked::Process(msg, check)) => (msg, check),
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            self.note_resync_key(g, &msg, &check);
            let Some(group) = self.groups.get_mut(g) else {
                return Err(EngineError::bug("a group vanished while processing its messages"));
            };
            match process_in_memory(group, *msg, &check) {
                Ok(processed) => {
                    // As `process` would (no bound check yet: that is once, at the end).
                    if let Some(entry) = journal_entry(&processed, message) {
                        self.store.append_journal(g.as_bytes(), entry);
                    }
                    outcomes.push(Ok(self.finish(g, processed)));
                }
                Err(e) => {
                    outcomes.push(Err(e));
                    // Back to the last written state: the snapshot and the journal, which holds
                    // every message of this call that succeeded.
                    self.reload(g)?;
                    let costly = self.store.journal_len(g.as_bytes()) >= REPLAY_AFTER_FAILURE
                        || self.store.journal_handshakes(g.as_bytes()) > 0;
                    if let (true, Some(group)) = (costly, self.groups.get_mut(g)) {
                        // A checkpoint, so the next failure replays only what follows: a page of
                        // forged entries costs linear work (at most one write per failure), not
                        // quadratic.
                        group.write_to_storage().map_err(internal("writing the group"))?;
                    }
                }
            }
        }
        if self.groups.contains_key(g) && self.bounds.reached(&self.store, g) {
            if let Some(group) = self.groups.get_mut(g) {
                group.write_to_storage().map_err(internal("writing the group"))?;
            }
        }
        Ok(outcomes)
    }

    /// The cheap checks of [`MlsEngine::process`], before mls-rs sees the message: decoding,
    /// group, epoch, content type; recognises this member's own handshake messages.
    fn check(&self, g: &GroupId, message: &[u8]) -> Result<Checked, EngineError> {
        let msg = parse(message)?;
        let group = self.group(g)?;
        let current = group.current_epoch();
        let me = group.current_member_index();
        let wrong_epoch = |message_epoch| EngineError::WrongEpoch { message_epoch, current_epoch: current };

        let own_commit_at_current = match msg.description() {
            MlsMessageDescription::PublicProtocolMessage { group_id, epoch_id, content_type, sender, .. } => {
                if group_id != g.as_bytes() {
                    return Err(EngineError::WrongGroup);
                }
                if epoch_id > current {
                    return Err(wrong_epoch(epoch_id));
                }
                let own = sender == Sender::Member(me);
                match content_type {
                    // Our own handshake message echoed by the log (our commit was applied with
                    // `apply_pending`, or our proposal is cached since we made it).
                    ContentType::Commit | ContentType::Proposal if own && epoch_id < current => {
                        return Ok(Checked::Own)
                    }
                    ContentType::Proposal if own => return Ok(Checked::Own),
                    ContentType::Commit | ContentType::Proposal if epoch_id < current => {
                        return Err(wrong_epoch(epoch_id))
                    }
                    ContentType::Commit | ContentType::Proposal => own,
                    ContentType::Application => return Err(EngineError::Rejected(Rejection::PublicApplication)),
                }
            }
            MlsMessageDescription::PrivateProtocolMessage { group_id, epoch_id, content_type } => {
                if group_id != g.as_bytes() {
                    return Err(EngineError::WrongGroup);
                }
                if epoch_id > current {
                    return Err(wrong_epoch(epoch_id));
                }
                if content_type != ContentType::Application {
                    // grove sends handshakes as PublicMessage, so the hub can validate them.
                    return Err(EngineError::Rejected(Rejection::PrivateHandshake));
                }
                false
            }
            _ => return Err(EngineError::Malformed(Malformed::Expected(Expected::GroupMessage))),
        };
        let message_epoch = msg.epoch().unwrap_or(current);
        if message_epoch + (EPOCH_RETENTION as u64) < current {
            // mls-rs keeps the records of older epochs until the next checkpoint (it trims them
            // when it writes the group); refusing here makes the answer independent of when that
            // was (see "Prior epochs" in the module docs).
            return Err(EngineError::EpochUnavailable { message_epoch, current_epoch: current });
        }
        Ok(Checked::Process(Box::new(msg), Check { own_commit_at_current, current, message_epoch }))
    }

    /// Turns a processed message into its [`Incoming`]; drops the group if this member was
    /// removed.
    fn finish(&mut self, g: &GroupId, processed: Processed) -> Incoming {
        match processed {
            Processed::Own => Incoming::Own,
            Processed::Application { sender, plaintext } => Incoming::Application { sender, plaintext },
            Processed::Proposal { sender, removes } => Incoming::Proposal { sender, removes },
            Processed::Commit(s) => {
                if s.removed_me {
                    // The group is dead to us: drop it and every secret of it.
                    self.groups.remove(g);
                    self.store.purge_group(g.as_bytes());
                    self.departed.insert(g.clone());
                }
                Incoming::Commit {
                    epoch: s.epoch,
                    committer: s.committer,
                    added: s.added,
                    removed: s.removed,
                    removed_me: s.removed_me,
                    policy: s.policy,
                }
            }
        }
    }
}
