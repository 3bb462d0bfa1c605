//! What the operator's commands (`grove admin`) read and change: an overview of every room,
//! the usage of every user, deleting a room, blocking a key.

use grove_wire::UserId;

use crate::{FileRecord, RoomId, RoomRecord};

/// A room with what it holds, for `grove admin rooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOverview {
    /// The room as stored.
    pub room: RoomRecord,
    /// Bytes of its log's entry bodies.
    pub bytes: u64,
    /// Time of its last entry (its creation if it has none), Unix ms.
    pub last_activity: i64,
}

/// What deleting a room removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedRoom {
    /// The room's storage id (no longer valid).
    pub id: RoomId,
    /// Entries removed from its log.
    pub entries: u64,
    /// Its attachments, whose records were removed: the caller deletes their bytes.
    pub files: Vec<FileRecord>,
}

/// A user's footprint outside rooms, for `grove admin users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserUsage {
    /// The user.
    pub user: UserId,
    /// Messages waiting in their mailbox (expired ones too, until purged).
    pub mailbox_messages: u64,
    /// Bytes of those messages.
    pub mailbox_bytes: u64,
    /// Key-directory items they published (one-time and last-resort).
    pub key_items: u64,
}
