//! What the engine's operations return besides [`Changes`](super::Changes): the public state of
//! a new group, what a join learned, a pending commit, an applied commit, a processed message.

use std::fmt;

#[cfg(doc)]
use super::MlsEngine;
use crate::identity::UserId;

/// What the room's server needs to create a room for a new group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublicGroupState {
    /// The signed GroupInfo (an `MlsMessage`), without the ratchet-tree extension.
    pub group_info: Vec<u8>,
    /// The exported ratchet tree.
    pub ratchet_tree: Vec<u8>,
}

/// The group this member just joined.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinInfo {
    /// The epoch the Welcome starts in.
    pub epoch: u64,
    /// The members, in leaf order (this member included).
    pub members: Vec<UserId>,
}

/// A commit made locally and not yet applied (see the [module docs](super#commits)).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingCommit {
    /// The commit (a PublicMessage), to post to the room's server.
    pub commit: Vec<u8>,
    /// One Welcome for every member added, if any (without the ratchet tree).
    pub welcome: Option<Vec<u8>>,
    /// The epoch the commit was made in (the server accepts it only in that epoch).
    pub epoch: u64,
}

impl fmt::Debug for PendingCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCommit")
            .field("commit", &format_args!("{} bytes", self.commit.len()))
            .field("welcome", &self.welcome.as_ref().map(|w| w.len()))
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// A pending commit this member applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    /// The new epoch.
    pub epoch: u64,
    /// Users added, in proposal order.
    pub added: Vec<UserId>,
    /// Users removed, in proposal order.
    pub removed: Vec<UserId>,
}

/// The outcome of [`MlsEngine::process`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// An application message from another member, decrypted and authenticated.
    Application {
        /// Who wrote it.
        sender: UserId,
        /// The plaintext.
        plaintext: Vec<u8>,
    },
    /// A commit, applied: the group is now in `epoch`.
    Commit {
        /// The new epoch.
        epoch: u64,
        /// Who committed.
        committer: UserId,
        /// Users added, in proposal order.
        added: Vec<UserId>,
        /// Users removed, in proposal order.
        removed: Vec<UserId>,
        /// This member was removed: the group is gone (see the [module docs](super#removal)).
        removed_me: bool,
        /// The room's policy after the commit, if the commit changed it (roles, bans, rights).
        policy: Option<grove_wire::policy::RoomPolicy>,
    },
    /// A proposal from another member, cached for the next commit (see
    /// [`MlsEngine::commit_pending_proposals`]).
    Proposal {
        /// Who proposed.
        sender: UserId,
        /// Users the proposal removes (a leave proposal names its sender).
        removes: Vec<UserId>,
    },
    /// A message this member sent itself; nothing changed.
    Own,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incoming::Application { sender, plaintext } => f
                .debug_struct("Application")
                .field("sender", sender)
                .field("plaintext", &format_args!("{} bytes", plaintext.len()))
                .finish(),
            Incoming::Commit { epoch, committer, added, removed, removed_me, policy } => f
                .debug_struct("Commit")
                .field("epoch", epoch)
                .field("committer", committer)
                .field("added", added)
                .field("removed", removed)
                .field("removed_me", removed_me)
                .field("policy", policy)
                .finish(),
            Incoming::Proposal { sender, removes } => {
                f.debug_struct("Proposal").field("sender", sender).field("removes", removes).finish()
            }
            Incoming::Own => f.write_str("Own"),
        }
    }
}
