//! grove-store: what a grove server keeps, behind one trait.
//!
//! [`Store`] is the storage seam of the server: rooms with their ordered logs, mailboxes, the
//! key directory, and the records of encrypted attachments ([`files`]; their bytes live in an
//! object store, not here). Backends: [`MemoryStore`] here (tests), SQLite in
//! `grove-store-sqlite` (the default) and PostgreSQL in `grove-store-postgres` (several server
//! instances on one database); every backend runs the same conformance suite (the
//! `conformance` module and the `conformance_tests!` macro, behind the cargo feature
//! `testing`, for backends' tests).
//!
//! The store enforces the ordering invariants itself, so that they hold even with several
//! server instances on one database: per-room sequence numbers are assigned by the store,
//! strictly increasing and gap-free, and a room's public state (epoch, members, MLS public
//! group snapshot) changes only through a compare-and-set on its state version, atomically
//! with the entry that changes it. The store does not interpret entries: validation is the
//! server's job. An `Ok` from a write means the write is durable.

use std::sync::Arc;

use async_trait::async_trait;
use grove_wire::api::{ClaimedKey, Entry, EntryKind, KeyCount, KeyItemUpload, KeyKind, MailboxEntry, RoomMode};
use grove_wire::UserId;

pub mod admin;
pub mod columns;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod files;
pub mod joins;
mod memory;

pub use admin::{DeletedRoom, RoomOverview, UserUsage};
pub use files::{CreateFileOutcome, FilePartOutcome, FileQuota, FileRecord, FileTotals, NewFile};
pub use joins::{JoinOutcome, JoinRequest, LinkGroupInfo, RoomLink};
pub use memory::MemoryStore;

/// How many recent epochs of each room's public state a store keeps for
/// [`Store::room_state`].
pub const STATE_HISTORY: u64 = 64;

/// A room's storage id.
pub type RoomId = i64;

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Storage id.
    pub id: RoomId,
    /// Unique name on the server.
    pub name: String,
    /// Protocol.
    pub mode: RoomMode,
    /// Listed publicly.
    pub public: bool,
    /// Creator.
    pub created_by: UserId,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Current epoch (MLS) or membership version (sender-keys).
    pub epoch: u64,
    /// Sequence number of the last entry, 0 when empty.
    pub head: u64,
    /// Bumped by every state change; the compare-and-set token.
    pub state_version: u64,
    /// Opaque public state: the MLS hub snapshot, or the JSON of the signed membership.
    pub state: Vec<u8>,
    /// Current members.
    pub members: Vec<UserId>,
    /// Current admins (sender-keys rooms).
    pub admins: Vec<UserId>,
}

/// A room to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// Unique name.
    pub name: String,
    /// Protocol.
    pub mode: RoomMode,
    /// Listed publicly.
    pub public: bool,
    /// Creator.
    pub created_by: UserId,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Initial epoch.
    pub epoch: u64,
    /// Initial public state.
    pub state: Vec<u8>,
    /// Initial members.
    pub members: Vec<UserId>,
    /// Initial admins.
    pub admins: Vec<UserId>,
}

/// The result of creating a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRoomOutcome {
    /// Created.
    Created(RoomRecord),
    /// The name is taken.
    NameTaken,
    /// The creator already has `max_per_creator` rooms.
    LimitReached,
}

/// A change of a room's public state, made atomically with the entry that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateUpdate {
    /// Applies only if the room's state version is still this one.
    pub expected_state_version: u64,
    /// The room's epoch afterwards.
    pub new_epoch: u64,
    /// The new opaque state.
    pub state: Vec<u8>,
    /// The members afterwards.
    pub members: Vec<UserId>,
    /// The admins afterwards.
    pub admins: Vec<UserId>,
    /// The members this update removes: the store records, durably with the entry, that each
    /// one's reading of the log ends at this entry (see [`Store::removal`]).
    pub removed: Vec<UserId>,
    /// The members this update adds: the store forgets any earlier removal of theirs (a member
    /// added back reads like any member).
    pub added: Vec<UserId>,
}

/// Where a removed member's reading of a room's log ends: the entry that removed it (an MLS
/// commit, a sender-keys membership update), which it may still read, and nothing after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// The sequence number of the entry that removed the member.
    pub seq: u64,
    /// The room's epoch (MLS) or membership version (sender keys) that entry led to.
    pub epoch: u64,
}

/// An entry to append to a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// What it is.
    pub kind: EntryKind,
    /// Epoch it was made in.
    pub epoch: u64,
    /// Who posted it.
    pub sender: UserId,
    /// Acceptance time, Unix ms.
    pub ts: i64,
    /// Opaque body.
    pub body: Vec<u8>,
    /// The state change it causes, if any.
    pub update: Option<StateUpdate>,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Appended (and the state update, if any, applied).
    Appended {
        /// The entry's sequence number.
        seq: u64,
        /// The room's epoch afterwards.
        epoch: u64,
    },
    /// The state update's expected version did not match; nothing was written.
    Conflict {
        /// The room's current epoch.
        epoch: u64,
        /// The room's current head.
        head: u64,
        /// The room's current state version.
        state_version: u64,
    },
    /// No room with this id.
    NoSuchRoom,
}

/// A mailbox message to deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    /// Mailbox owner.
    pub owner: UserId,
    /// Depositor.
    pub sender: UserId,
    /// Deposit time, Unix ms.
    pub ts: i64,
    /// Expiry, Unix ms.
    pub expires_at: i64,
    /// Opaque body.
    pub body: Vec<u8>,
}

/// The result of a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositOutcome {
    /// Stored with this sequence number.
    Deposited {
        /// Sequence number in the owner's mailbox.
        seq: u64,
    },
    /// The mailbox holds `quota.total` unexpired messages already.
    Full,
    /// The sender's own unexpired messages in this mailbox number `quota.per_sender` already:
    /// one sender may not take the whole mailbox, however slowly it deposits.
    SenderFull,
}

/// How much of one mailbox may be filled: in all, and by one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxQuota {
    /// Unexpired messages the mailbox holds at most.
    pub total: u64,
    /// Unexpired messages of one sender the mailbox holds at most.
    pub per_sender: u64,
}

/// The result of publishing key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored; the owner's counts afterwards.
    Stored(Vec<KeyCount>),
    /// Storing would exceed the per-user cap; nothing was stored.
    LimitReached,
}

/// A storage failure. Hostile input never produces one: it is the backend failing.
///
/// Each variant says what kind of failure it is and keeps the error that caused it (the
/// database driver's, an I/O error, a join error), if any, as its
/// [`source`](std::error::Error::source): build one with [`StoreError::unavailable`],
/// [`StoreError::backend`] or [`StoreError::corrupt`], and [`StoreError::caused_by`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or is shutting down.
    #[error("storage unavailable: {message}")]
    Unavailable {
        /// What could not be done.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Source>,
    },
    /// The backend failed (I/O error, constraint violation that should not happen).
    #[error("storage failure: {message}")]
    Backend {
        /// What could not be done.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Source>,
    },
    /// The storage is full (no space left on the disk, or the database reached its size cap):
    /// nothing was written; the same write can succeed once space is freed.
    #[error("storage full: {message}")]
    Full {
        /// What could not be written.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Source>,
    },
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {message}")]
    Corrupt {
        /// What does not decode.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Source>,
    },
}

impl StoreError {
    /// The backend cannot be reached or is shutting down.
    pub fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError::Unavailable { message: message.into(), source: None }
    }

    /// The backend failed.
    pub fn backend(message: impl Into<String>) -> StoreError {
        StoreError::Backend { message: message.into(), source: None }
    }

    /// The storage is full.
    pub fn full(message: impl Into<String>) -> StoreError {
        StoreError::Full { message: message.into(), source: None }
    }

    /// Stored data could not be decoded.
    pub fn corrupt(message: impl Into<String>) -> StoreError {
        StoreError::Corrupt { message: message.into(), source: None }
    }

    /// The error with every error under it, for logs: "storage failure: postgres 40P01: deadlock
    /// detected".
    pub fn detail(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(s) = next {
            out.push_str(": ");
            out.push_str(&s.to_string());
            next = s.source();
        }
        out
    }

    /// The same failure, caused by `e` (kept as the source).
    pub fn caused_by(mut self, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        let (StoreError::Unavailable { source, .. }
        | StoreError::Backend { source, .. }
        | StoreError::Full { source, .. }
        | StoreError::Corrupt { source, .. }) = &mut self;
        *source = Some(Source(Arc::new(e)));
        self
    }
}

/// The error that caused a [`StoreError`], kept whole. Cheap to clone.
#[derive(Clone)]
pub struct Source(Arc<dyn std::error::Error + Send + Sync>);

impl Source {
    /// The error itself.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Source {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Writes that *other* processes committed to a shared store, as announced to this one (see
/// [`Store::foreign_writes`]). An announcement may be late, duplicated or coalesced, never
/// wrong about what it names: a reader re-reads the store from what it knows, so a duplicate
/// costs a read and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignWrites {
    /// Rooms whose logs grew (and whose public state may have changed with them).
    pub rooms: Vec<RoomId>,
    /// Users whose mailboxes received messages.
    pub mailboxes: Vec<UserId>,
    /// Rooms the operator deleted ([`Store::delete_room`]): forget whatever is cached of them.
    pub deleted_rooms: Vec<RoomId>,
    /// Announcements may have been missed (the listener reconnected, or this receiver lagged):
    /// anything may have changed, re-check every room and mailbox of interest.
    pub everything: bool,
}

impl ForeignWrites {
    /// "Re-check everything".
    pub fn everything() -> ForeignWrites {
        ForeignWrites { everything: true, ..ForeignWrites::default() }
    }
}

/// The storage seam of a grove server. Every `Ok` write is durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a room if the name is free and the creator is under `max_per_creator` rooms.
    async fn create_room(&self, room: NewRoom, max_per_creator: u64) -> Result<CreateRoomOutcome>;

    /// Looks a room up by name.
    async fn room(&self, name: &str) -> Result<Option<RoomRecord>>;

    /// Public rooms, by name, after `after_name`, at most `limit`.
    async fn public_rooms(&self, after_name: &str, limit: u32) -> Result<Vec<RoomRecord>>;

    /// Appends an entry, assigning the next sequence number; with a state update, applies it
    /// only if the state version matches (else writes nothing and answers `Conflict`).
    async fn append(&self, room: RoomId, entry: NewEntry) -> Result<AppendOutcome>;

    /// The room's public state as last written for `epoch` (at creation or by a state update),
    /// if `epoch` is among the last [`STATE_HISTORY`] epochs.
    async fn room_state(&self, room: RoomId, epoch: u64) -> Result<Option<Vec<u8>>>;

    /// Entries with `seq > after`, in order, at most `limit`.
    async fn read(&self, room: RoomId, after: u64, limit: u32) -> Result<Vec<Entry>>;

    /// Where `user`'s reading of the room's log ends, if a state update removed them (its
    /// [`StateUpdate::removed`]) and no later one added them back ([`StateUpdate::added`]).
    /// `None` for a current member, and for a user who was never one.
    async fn removal(&self, room: RoomId, user: &UserId) -> Result<Option<Removal>>;

    /// Deposits a message if the owner's mailbox holds fewer than `quota` unexpired ones.
    async fn deposit(&self, mail: NewMail, quota: MailboxQuota) -> Result<DepositOutcome>;

    /// Unexpired messages with `seq > after`, in order, at most `limit`.
    async fn mailbox_read(&self, owner: &UserId, after: u64, limit: u32, now: i64) -> Result<Vec<MailboxEntry>>;

    /// Deletes the owner's messages with `seq <= up_to`; answers how many.
    async fn mailbox_ack(&self, owner: &UserId, up_to: u64) -> Result<u64>;

    /// Deletes every expired mailbox message; answers how many.
    async fn purge_expired(&self, now: i64) -> Result<u64>;

    /// Adds key material, all or nothing, if the owner stays within `cap` one-time items. A
    /// last-resort item replaces the owner's previous last-resort item of the same kind and
    /// does not count against `cap` (there is one per kind), so it can always be replaced.
    async fn publish_keys(&self, owner: &UserId, items: Vec<KeyItemUpload>, cap: u64) -> Result<PublishOutcome>;

    /// Hands out one item of `kind`: a one-time item (removed, never handed out again), or else
    /// the last-resort item (kept).
    async fn claim_key(&self, owner: &UserId, kind: KeyKind) -> Result<Option<ClaimedKey>>;

    /// What the owner has, per kind.
    async fn key_counts(&self, owner: &UserId) -> Result<Vec<KeyCount>>;

    /// Records a new blob if its uploader and its room stay within `quota` (see
    /// [`FileQuota`]); decided atomically with the other uploads.
    async fn create_file(&self, file: NewFile, quota: FileQuota) -> Result<CreateFileOutcome>;

    /// Looks a blob up.
    async fn file(&self, blob: &grove_wire::attachment::BlobId) -> Result<Option<FileRecord>>;

    /// Records that the blob's bytes `[offset, offset + len)` are stored, with SHA-256
    /// `sha256`, if its `received` is `offset` (compare-and-set) and `offset + len <= size`; the
    /// part's hash is recorded in the same transaction. When that completes the blob, its expiry
    /// becomes `expires_when_complete`. If the part at `offset` is already recorded with the same
    /// hash, nothing changes and the answer is [`FilePartOutcome::Held`]: the same body sent
    /// twice at once (to two instances) is taken once, a different body is a conflict.
    async fn file_part(
        &self,
        blob: &grove_wire::attachment::BlobId,
        offset: u64,
        len: u64,
        sha256: &[u8; 32],
        expires_when_complete: i64,
    ) -> Result<FilePartOutcome>;

    /// The recorded parts of a blob: each one's offset and SHA-256, by offset. Parts recorded
    /// before hashes were kept (schema of an older release) are missing.
    async fn file_part_hashes(&self, blob: &grove_wire::attachment::BlobId) -> Result<Vec<(u64, [u8; 32])>>;

    /// Blobs whose expiry is at or before `now`, at most `limit`, oldest expiry first.
    async fn expired_files(&self, now: i64, limit: u32) -> Result<Vec<FileRecord>>;

    /// Forgets a blob (after its bytes were deleted); answers whether it was there.
    async fn delete_file(&self, blob: &grove_wire::attachment::BlobId) -> Result<bool>;

    /// What the store holds, for the metrics.
    async fn file_totals(&self) -> Result<FileTotals>;

    /// Every room, by name, with its size and last activity (`grove admin rooms`).
    async fn rooms_overview(&self) -> Result<Vec<RoomOverview>>;

    /// Deletes the room named `name` with its log, its kept states and its attachments'
    /// records, in one transaction; answers what was removed (`None`: no such room). Its name
    /// is free again afterwards. Deleted rows do not linger in the database's files where the
    /// backend can help it (SQLite: `secure_delete` and a truncating checkpoint).
    async fn delete_room(&self, name: &str) -> Result<Option<DeletedRoom>>;

    /// Every user with a mailbox message or a key-directory item, by user id.
    async fn users_usage(&self) -> Result<Vec<UserUsage>>;

    /// Log retention: deletes from every room's log the application messages accepted before
    /// `before` (Unix ms), and answers how many. Commits, proposals and membership entries
    /// stay (a member catching up needs them to follow the room's epochs and versions); reads
    /// after a purge skip the deleted sequence numbers, which are never given out again. Deleted
    /// rows do not linger in the database's files where the backend can help it.
    async fn purge_messages(&self, before: i64) -> Result<u64>;

    /// Blocks (`blocked`) or unblocks a key, at time `at`; answers whether that changed
    /// anything.
    async fn set_blocked(&self, user: &UserId, blocked: bool, at: i64) -> Result<bool>;

    /// The blocked keys, by user id.
    async fn blocked_users(&self) -> Result<Vec<UserId>>;

    /// Sets a room's invite link (replacing any other: a reset), or with `None` revokes it.
    async fn set_room_link(&self, room: RoomId, link: Option<RoomLink>) -> Result<()>;

    /// A room's invite link, if it has one.
    async fn room_link(&self, room: RoomId) -> Result<Option<RoomLink>>;

    /// Keeps a request to join `room` made with the link whose token hashes to `token_hash`,
    /// atomically with counting the link's use: refused if the link is not the room's, expired
    /// (at `request.at`) or used up, or if the room already has `max_pending` requests waiting.
    async fn request_join(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        request: JoinRequest,
        max_pending: u64,
    ) -> Result<JoinOutcome>;

    /// The requests waiting in a room, oldest first.
    async fn join_requests(&self, room: RoomId) -> Result<Vec<JoinRequest>>;

    /// Counts one use of the room's link whose token hashes to `token_hash` (a link join by an
    /// external commit, which keeps no request), atomically with checking that it admits one at
    /// `now` (Unix ms): `Err` says why not, and nothing is counted then.
    async fn use_link(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<std::result::Result<(), JoinOutcome>>;

    /// Keeps the room's GroupInfo sealed for its link's holders, unless the one kept is for the
    /// same link and of a later epoch ([`joins::replaces`]); answers whether it was kept.
    async fn set_link_group_info(&self, room: RoomId, info: LinkGroupInfo) -> Result<bool>;

    /// The room's GroupInfo sealed for its link's holders, if one was kept.
    async fn link_group_info(&self, room: RoomId) -> Result<Option<LinkGroupInfo>>;

    /// Drops `user`'s request to join `room` (carried out or denied); whether there was one.
    async fn delete_join_request(&self, room: RoomId, user: &UserId) -> Result<bool>;

    /// Fault reports (grove-server `rooms::fault`): records `reporter`'s report of the commit at
    /// `seq` in `room`, with the membership key it revealed if any (a second report from the
    /// same reporter replaces its first), keeps the reports of `keep` reported commits of the
    /// room only (this one and the most recent others), and answers every report of that
    /// commit, by reporter.
    async fn record_report(
        &self,
        room: RoomId,
        seq: u64,
        reporter: &UserId,
        key: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Vec<(UserId, Option<Vec<u8>>)>>;

    /// `user`'s false reports in `room`, after adding one if `add`.
    async fn false_reports(&self, room: RoomId, user: &UserId, add: bool) -> Result<u32>;

    /// Forgets the reports of the room's commits at or after `seq` (they were voided).
    async fn forget_reports(&self, room: RoomId, seq: u64) -> Result<()>;

    /// How many more bytes the store can take before it is full, if it can tell: SQLite
    /// answers the smaller of its filesystem's free space and the room left under its size cap
    /// (`max_page_count`); the default, `None`, is "cannot tell" (PostgreSQL: the database
    /// server's disk is not visible from here). The server keeps a reserve with it: below the
    /// reserve, new rooms and uploads are refused while messages are still taken.
    async fn headroom(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// For a store that several processes share (PostgreSQL): a feed of the writes the others
    /// commit, so that a server instance can wake its subscribers and refresh its cached room
    /// state. `None` (the default) for a store only this process writes to (memory, SQLite):
    /// then every write goes through this process, which sees it directly. Each call answers a
    /// new receiver; a receiver that lags gets `RecvError::Lagged` and should treat it as
    /// [`ForeignWrites::everything`].
    fn foreign_writes(&self) -> Option<tokio::sync::broadcast::Receiver<ForeignWrites>> {
        None
    }
}

#[cfg(test)]
mod error_tests {
    use std::error::Error;

    use super::StoreError;

    #[test]
    fn a_store_error_keeps_its_cause() {
        let e = StoreError::unavailable("postgres").caused_by(std::io::Error::other("connection reset"));
        assert!(matches!(e, StoreError::Unavailable { .. }));
        assert_eq!(e.to_string(), "storage unavailable: postgres");
        assert_eq!(e.source().map(|s| s.to_string()), Some("connection reset".to_string()));
        assert_eq!(e.detail(), "storage unavailable: postgres: connection reset");
        assert!(StoreError::corrupt("x").source().is_none());
    }
}
