//! [`EngineError`], and the mapping of mls-rs errors onto it.

use mls_rs::error::MlsError;

use super::GroupId;
#[cfg(doc)]
use super::{MlsEngine, EPOCH_RETENTION};
use crate::identity::UserId;
use crate::mls::error::{Cause, Internal, Malformed, Rejection};
use crate::mls::identity::CredentialError;
use crate::ErrorKind;

/// Why an engine operation failed. Nothing changed (see the [module docs](super)).
///
/// Three kinds ([`EngineError::kind`]):
/// - the input is hostile, garbled, foreign or stale ([`ErrorKind::Rejected`]):
///   [`Malformed`](Self::Malformed), [`Rejected`](Self::Rejected),
///   [`WrongGroup`](Self::WrongGroup), [`WrongEpoch`](Self::WrongEpoch),
///   [`EpochUnavailable`](Self::EpochUnavailable),
///   [`NoMatchingKeyPackage`](Self::NoMatchingKeyPackage), [`OwnCommitLost`](Self::OwnCommitLost),
///   [`NotAllowed`](Self::NotAllowed);
/// - the caller asked for something the state does not allow, or gave back stored state this
///   engine did not write ([`ErrorKind::Misuse`]): [`CorruptState`](Self::CorruptState),
///   [`NoSuchGroup`](Self::NoSuchGroup),
///   [`NotAMember`](Self::NotAMember), [`GroupExists`](Self::GroupExists),
///   [`PendingCommitExists`](Self::PendingCommitExists),
///   [`NoPendingCommit`](Self::NoPendingCommit), [`CommitRequired`](Self::CommitRequired),
///   [`NothingToCommit`](Self::NothingToCommit), [`NotInGroup`](Self::NotInGroup),
///   [`CannotRemoveSelf`](Self::CannotRemoveSelf), [`LeaveProposed`](Self::LeaveProposed),
///   [`NoPolicy`](Self::NoPolicy);
/// - a bug on our side ([`ErrorKind::Internal`]): [`Internal`](Self::Internal).
///
/// Every variant that stems from an mls-rs error keeps it as its
/// [`source`](std::error::Error::source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The bytes do not decode as the expected MLS structure.
    #[error("malformed MLS input: {0}")]
    Malformed(#[source] Malformed),
    /// mls-rs refused the input: bad signature or tag, undecryptable, invalid proposal, a ratchet
    /// tree that does not match the Welcome's GroupInfo, a KeyPackage that cannot be added, a
    /// message from a member who has since left, ...
    #[error("rejected by MLS validation: {0}")]
    Rejected(#[source] Rejection),
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
    CorruptState(#[source] CorruptState),
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
    /// The room's policy does not allow the commit (see [`crate::mls::policy`]): whoever made
    /// it lacked the right, or it adds a banned user.
    #[error("not allowed by the room's policy: {0}")]
    NotAllowed(#[source] crate::policy::PolicyError),
    /// The group carries no policy (it was created before grove had policies): its roles and
    /// bans cannot be changed.
    #[error("this room was created before rooms had policies: it has no roles or bans")]
    NoPolicy,
    /// A bug on our side (an invariant of this module or of mls-rs did not hold).
    #[error("internal error: {0}")]
    Internal(#[source] Internal),
}

impl EngineError {
    /// Who is to blame: hostile input, the caller, or us.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed(_)
            | Self::Rejected(_)
            | Self::WrongGroup
            | Self::WrongEpoch { .. }
            | Self::EpochUnavailable { .. }
            | Self::NoMatchingKeyPackage
            | Self::NotAllowed(_)
            | Self::OwnCommitLost => ErrorKind::Rejected,
            Self::CorruptState(_)
            | Self::NoSuchGroup(_)
            | Self::NotAMember(_)
            | Self::GroupExists(_)
            | Self::PendingCommitExists
            | Self::NoPendingCommit
            | Self::CommitRequired
            | Self::NothingToCommit
            | Self::NotInGroup(_)
            | Self::CannotRemoveSelf
            | Self::NoPolicy
            | Self::LeaveProposed => ErrorKind::Misuse,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A bug on our side with no underlying error.
    pub(super) fn bug(what: &'static str) -> EngineError {
        EngineError::Internal(Internal::new(what))
    }
}

impl From<Malformed> for EngineError {
    fn from(m: Malformed) -> EngineError {
        EngineError::Malformed(m)
    }
}

impl From<Rejection> for EngineError {
    fn from(r: Rejection) -> EngineError {
        EngineError::Rejected(r)
    }
}

/// Why rows given to [`MlsEngine::load_with_rng`] are not state this engine wrote for this user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptState {
    /// Two groups with one id.
    #[error("group {0} appears twice")]
    GroupTwice(GroupId),
    /// Two epoch records of one group with one epoch.
    #[error("group {0} has an epoch twice")]
    EpochTwice(GroupId),
    /// A group's journal rows are not numbered 0, 1, 2, …
    #[error("group {0}: the journal is not numbered 0, 1, 2, … (a row is missing or twice)")]
    JournalNumbering(GroupId),
    /// Two KeyPackages with one id.
    #[error("a key package appears twice")]
    KeyPackageTwice,
    /// A KeyPackage's secrets do not decode.
    #[error("a key package does not decode: {0}")]
    KeyPackage(#[source] Cause),
    /// A group's rows do not load.
    #[error("group {group}: {reason}")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        #[source]
        reason: GroupLoadError,
    },
}

/// Why a group's rows do not load (see [`CorruptState::Group`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupLoadError {
    /// mls-rs cannot load the snapshot.
    #[error("the snapshot does not load: {0}")]
    Snapshot(#[source] Cause),
    /// A journal row does not replay on the snapshot.
    #[error("journal row {row}: {what}")]
    Journal {
        /// The row's position in the journal.
        row: usize,
        /// What failed.
        what: &'static str,
        /// The mls-rs error, if any.
        #[source]
        cause: Option<Cause>,
    },
    /// The snapshot is of another group than the rows name.
    #[error("snapshot of another group")]
    OtherGroup,
    /// The snapshot is another user's state.
    #[error("state of another user")]
    OtherUser,
    /// The snapshot's own leaf is not a grove credential.
    #[error("this member's leaf: {0}")]
    Credential(#[source] CredentialError),
}

pub(super) fn internal(what: &'static str) -> impl FnOnce(MlsError) -> EngineError {
    move |e| EngineError::Internal(Internal::caused(what, e))
}

/// Maps an mls-rs error raised while processing outside input.
pub(super) fn rejected(e: MlsError) -> EngineError {
    if let Some(refusal) = crate::mls::policy::refusal(&e) {
        return EngineError::NotAllowed(refusal);
    }
    match e {
        MlsError::SerializationError(_) => EngineError::Malformed(Malformed::Message(Cause::new(e))),
        MlsError::GroupStorageError(_) | MlsError::KeyPackageRepoError(_) => {
            EngineError::Internal(Internal::caused("the engine's storage", e))
        }
        other => EngineError::Rejected(Rejection::Mls(Cause::new(other))),
    }
}

/// Maps an mls-rs error raised by a local operation on a group (no outside input).
pub(super) fn local(what: &'static str) -> impl FnOnce(MlsError) -> EngineError {
    move |e| match e {
        MlsError::CommitRequired => EngineError::CommitRequired,
        other => EngineError::Internal(Internal::caused(what, other)),
    }
}
