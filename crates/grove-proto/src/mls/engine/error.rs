//! [`EngineError`], and the mapping of mls-rs errors onto it.

use mls_rs::error::MlsError;

use super::GroupId;
#[cfg(doc)]
use super::{MlsEngine, EPOCH_RETENTION};
use crate::identity::UserId;

/// Why an engine operation failed. Nothing changed (see the [module docs](super)).
///
/// Three kinds:
/// - the input is hostile, garbled, foreign or stale: [`Malformed`](Self::Malformed),
///   [`Rejected`](Self::Rejected), [`WrongGroup`](Self::WrongGroup),
///   [`WrongEpoch`](Self::WrongEpoch), [`EpochUnavailable`](Self::EpochUnavailable),
///   [`NoMatchingKeyPackage`](Self::NoMatchingKeyPackage), [`OwnCommitLost`](Self::OwnCommitLost),
///   [`CorruptState`](Self::CorruptState);
/// - the caller asked for something the state does not allow: [`NoSuchGroup`](Self::NoSuchGroup),
///   [`NotAMember`](Self::NotAMember), [`GroupExists`](Self::GroupExists),
///   [`PendingCommitExists`](Self::PendingCommitExists),
///   [`NoPendingCommit`](Self::NoPendingCommit), [`CommitRequired`](Self::CommitRequired),
///   [`NothingToCommit`](Self::NothingToCommit), [`NotInGroup`](Self::NotInGroup),
///   [`CannotRemoveSelf`](Self::CannotRemoveSelf), [`LeaveProposed`](Self::LeaveProposed);
/// - a bug on our side: [`Internal`](Self::Internal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The bytes do not decode as the expected MLS structure.
    #[error("malformed MLS input: {0}")]
    Malformed(String),
    /// mls-rs refused the input: bad signature or tag, undecryptable, invalid proposal, a ratchet
    /// tree that does not match the Welcome's GroupInfo, a KeyPackage that cannot be added, a
    /// message from a member who has since left, ...
    #[error("rejected by MLS validation: {0}")]
    Rejected(String),
    /// The message belongs to another group.
    #[error("the message is for another group")]
    WrongGroup,
    /// A handshake message not for the current epoch, or any message from a future epoch.
    #[error("wrong epoch: message is for epoch {message_epoch}, group is at {current_epoch}")]
    WrongEpoch {
        /// The epoch in the message's header.
        message_epoch: u64,
        /// The group's current epoch.
        current_epoch: u64,
    },
    /// An application message from an epoch whose keys this member no longer (or never) had:
    /// older than [`EPOCH_RETENTION`] epochs, or from before it joined.
    #[error("no keys for epoch {message_epoch} (group is at {current_epoch})")]
    EpochUnavailable {
        /// The epoch in the message's header.
        message_epoch: u64,
        /// The group's current epoch.
        current_epoch: u64,
    },
    /// The Welcome is not for any KeyPackage whose secrets this engine holds (not for us, or
    /// the one-time KeyPackage was used already).
    #[error("the Welcome is for none of our KeyPackages")]
    NoMatchingKeyPackage,
    /// The log holds a commit by this member, in the current epoch, that is not the pending
    /// commit (its secrets are lost: a pending commit was discarded although the server accepted
    /// it). The group cannot follow; the member must be re-added.
    #[error("an accepted commit of ours is not the pending commit; the group cannot follow")]
    OwnCommitLost,
    /// Rows given to [`MlsEngine::load_with_rng`] are not state this engine wrote for this user.
    #[error("corrupt stored state: {0}")]
    CorruptState(String),
    /// The engine has no such group.
    #[error("no such group {0}")]
    NoSuchGroup(GroupId),
    /// This member was removed from the group (or left).
    #[error("not a member of group {0} any more")]
    NotAMember(GroupId),
    /// A Welcome for a group this member is already in.
    #[error("already a member of group {0}")]
    GroupExists(GroupId),
    /// A commit is pending: apply or discard it first.
    #[error("a commit is already pending")]
    PendingCommitExists,
    /// There is no pending commit to apply.
    #[error("no commit is pending")]
    NoPendingCommit,
    /// Proposals are pending (e.g. a leave): MLS forbids application messages until they are
    /// committed ([`MlsEngine::commit_pending_proposals`]).
    #[error("proposals are pending: commit them first")]
    CommitRequired,
    /// The commit would be empty (no KeyPackages, no users, no pending proposals).
    #[error("nothing to commit")]
    NothingToCommit,
    /// The user is not a member of the group.
    #[error("{0} is not a member of the group")]
    NotInGroup(UserId),
    /// A member cannot remove itself with a commit: use [`MlsEngine::propose_leave`].
    #[error("cannot remove oneself: propose to leave instead")]
    CannotRemoveSelf,
    /// This member proposed to leave: it cannot commit (mls-rs would drop its own proposal from
    /// the commit, and the commit would cancel the leave); another member must commit.
    #[error("this member proposed to leave and cannot commit")]
    LeaveProposed,
    /// A bug on our side (an invariant of this module or of mls-rs did not hold).
    #[error("internal error: {0}")]
    Internal(String),
}

pub(super) fn internal(what: &str) -> impl FnOnce(MlsError) -> EngineError + '_ {
    move |e| EngineError::Internal(format!("{what}: {e}"))
}

/// Maps an mls-rs error raised while processing outside input.
pub(super) fn rejected(e: MlsError) -> EngineError {
    match e {
        MlsError::SerializationError(_) => EngineError::Malformed(e.to_string()),
        MlsError::GroupStorageError(_) | MlsError::KeyPackageRepoError(_) => EngineError::Internal(e.to_string()),
        other => EngineError::Rejected(other.to_string()),
    }
}

/// Maps an mls-rs error raised by a local operation on a group (no outside input).
pub(super) fn local(what: &'static str) -> impl FnOnce(MlsError) -> EngineError {
    move |e| match e {
        MlsError::CommitRequired => EngineError::CommitRequired,
        other => EngineError::Internal(format!("{what}: {other}")),
    }
}
