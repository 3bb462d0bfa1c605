//! JSON bodies of HTTP API v1. Binary fields are base64 (see [`crate::b64`]).

use serde::{Deserialize, Serialize};

use crate::membership::SignedMembership;
use crate::UserId;

/// `GET /v1/info`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The operator-chosen server name.
    pub name: String,
    /// The server's Ed25519 public key (hex); requests are signed for it.
    pub public_key: String,
    /// The grove version the server runs.
    pub version: String,
    /// Who may create rooms.
    pub room_creation: RoomCreationPolicy,
    /// The limits the server enforces.
    pub limits: Limits,
}

/// Who may create rooms on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomCreationPolicy {
    /// Any user.
    Open,
    /// Only users whose keys are listed in the server's configuration.
    Allowlist,
    /// Nobody.
    Closed,
}

/// Limits a server enforces, as published in [`ServerInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body_bytes: u64,
    /// Largest entry or mailbox message body, bytes (before base64).
    pub max_entry_bytes: u64,
    /// Most entries returned by one read.
    pub max_page_entries: u32,
    /// Longest long-poll wait, seconds.
    pub max_wait_secs: u64,
    /// Most messages a mailbox holds.
    pub mailbox_quota: u64,
    /// How long an unacknowledged mailbox message is kept, seconds.
    pub mailbox_ttl_secs: u64,
    /// Requests per second allowed per user (burst is twice that).
    pub user_requests_per_sec: u32,
    /// Requests per second allowed per IP address.
    pub ip_requests_per_sec: u32,
    /// Rooms one user may create.
    pub rooms_per_user: u64,
    /// Members one room may have.
    pub members_per_room: u64,
    /// Key-material items one user may hold on the server.
    pub key_items_per_user: u64,
    /// How many epochs behind the current one an application message may be.
    pub epoch_window: u64,
    /// Allowed clock skew of signed requests, seconds.
    pub clock_skew_secs: u64,
    /// Requests to join rooms by link one IP address may make per hour (all rooms together).
    #[serde(default)]
    pub join_requests_per_ip_per_hour: u32,
    /// Requests to join one room by link everyone together may make per hour.
    #[serde(default)]
    pub join_requests_per_room_per_hour: u32,
    /// Join requests one room keeps waiting for an admin at most.
    #[serde(default)]
    pub pending_joins_per_room: u64,
    /// Encrypted attachments (the blob store).
    #[serde(default)]
    pub files: FileLimits,
}

/// The blob store's limits, as published in [`Limits::files`]. Sizes are of blobs (ciphertext,
/// padded), bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileLimits {
    /// Largest blob.
    pub max_file_bytes: u64,
    /// Every upload part but the last is exactly this long; the last is the rest.
    pub part_bytes: u64,
    /// Bytes one user may hold (uploads in progress count with their full size).
    pub user_quota_bytes: u64,
    /// Bytes one room may hold.
    pub room_quota_bytes: u64,
    /// How long a complete blob is kept, seconds (0: until the room is gone).
    pub retention_secs: u64,
    /// How long an upload may stay incomplete before it is discarded, seconds.
    pub upload_ttl_secs: u64,
}

/// `POST /v1/rooms/{room}/files`: begin an upload of a blob of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// The blob's exact length, 1 to `max_file_bytes`.
    #[serde(with = "crate::int")]
    pub size: u64,
}

/// An upload's state: the answer of `POST /v1/rooms/{room}/files`, of every part, and of
/// `GET /v1/rooms/{room}/files/{blob}/upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// The blob's id, chosen by the server.
    pub blob: crate::attachment::BlobId,
    /// The blob's length.
    pub size: u64,
    /// Bytes stored so far: the offset of the next part.
    pub received: u64,
    /// The part length of this upload (every part but the last).
    pub part_bytes: u64,
    /// All `size` bytes are stored: the blob can be downloaded.
    pub complete: bool,
    /// When the server discards the blob (an incomplete upload, or a complete one past
    /// retention), Unix ms; absent if it keeps it until the room is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// The protocol of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomMode {
    /// MLS (RFC 9420); the server validates commits against the public group state.
    Mls,
    /// Signal-style Sender Keys with an admin-signed membership list.
    SenderKeys,
}

impl RoomMode {
    /// The mode as written in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Mls => "mls",
            RoomMode::SenderKeys => "sender-keys",
        }
    }

    /// Parses `mls` or `sender-keys`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mls" => Some(RoomMode::Mls),
            "sender-keys" => Some(RoomMode::SenderKeys),
            _ => None,
        }
    }
}

/// `POST /v1/rooms`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Unique on the server: 1 to 64 characters of `a-z 0-9 - _`, starting with a letter or digit.
    pub name: String,
    /// The room's protocol.
    pub mode: RoomMode,
    /// Whether the room appears in `GET /v1/rooms`.
    #[serde(default)]
    pub public: bool,
    /// For `mls` rooms: the creator's group at epoch 0 or later, as GroupInfo and ratchet tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mls: Option<MlsGroupState>,
}

/// The public state of an MLS group, as the creator hands it to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlsGroupState {
    /// An MLS GroupInfo message (TLS-serialised `MlsMessage`).
    #[serde(with = "crate::b64")]
    pub group_info: Vec<u8>,
    /// The exported ratchet tree.
    #[serde(with = "crate::b64")]
    pub ratchet_tree: Vec<u8>,
}

/// A room as the server describes it to a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room's name.
    pub name: String,
    /// The room's protocol.
    pub mode: RoomMode,
    /// Whether the room is listed publicly.
    pub public: bool,
    /// The current epoch (MLS) or membership version (sender-keys).
    pub epoch: u64,
    /// The sequence number of the last entry (0 when the log is empty).
    pub head: u64,
    /// The current members.
    pub members: Vec<UserId>,
    /// Sender-keys rooms: the admins of the current membership version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<UserId>,
    /// The user who created the room.
    pub created_by: UserId,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// `GET /v1/rooms`: the public rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicRooms {
    /// Public rooms, by name.
    pub rooms: Vec<PublicRoom>,
}

/// One entry of the public room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicRoom {
    /// The room's name.
    pub name: String,
    /// The room's protocol.
    pub mode: RoomMode,
    /// How many members it has.
    pub member_count: u64,
}

/// What a room-log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// An MLS commit (PublicMessage); advances the epoch.
    Commit,
    /// An MLS proposal (PublicMessage).
    Proposal,
    /// An encrypted application message.
    Application,
    /// A signed membership update of a sender-keys room; advances the version.
    Membership,
    /// Written by the server, never posted: an MLS commit proven faulty was voided, and the
    /// room went back to the epoch before it (the body is the JSON of a [`Void`]).
    Void,
    /// MLS: a GroupInfo of the room's current epoch, sealed for the members stuck at an earlier
    /// epoch, so that they can resync (the body is the JSON of a [`ResyncOffer`]).
    Resync,
}

impl EntryKind {
    /// The kind as a short string (storage, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Commit => "commit",
            EntryKind::Proposal => "proposal",
            EntryKind::Application => "application",
            EntryKind::Membership => "membership",
            EntryKind::Void => "void",
            EntryKind::Resync => "resync",
        }
    }

    /// Inverse of [`EntryKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "commit" => Some(EntryKind::Commit),
            "proposal" => Some(EntryKind::Proposal),
            "application" => Some(EntryKind::Application),
            "membership" => Some(EntryKind::Membership),
            "void" => Some(EntryKind::Void),
            "resync" => Some(EntryKind::Resync),
            _ => None,
        }
    }
}

/// `POST /v1/rooms/{room}/log`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendEntry {
    /// What the entry is.
    pub kind: EntryKind,
    /// The epoch the entry was made in (for `membership`: the new version).
    #[serde(with = "crate::int")]
    pub epoch: u64,
    /// The entry: an MLS message, a sender-keys message, or for `membership` the JSON of a
    /// [`SignedMembership`].
    #[serde(with = "crate::b64")]
    pub body: Vec<u8>,
}

/// The answer to an accepted append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// The entry's sequence number.
    pub seq: u64,
    /// Server time of acceptance, Unix milliseconds.
    pub ts: i64,
    /// The room's epoch after the entry.
    pub epoch: u64,
}

/// One room-log entry as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Per-room sequence number: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// What the entry is.
    pub kind: EntryKind,
    /// The epoch the entry was made in.
    pub epoch: u64,
    /// Who posted it (the request signer).
    pub sender: UserId,
    /// Server time of acceptance, Unix milliseconds.
    pub ts: i64,
    /// The opaque body.
    #[serde(with = "crate::b64")]
    pub body: Vec<u8>,
}

/// `GET /v1/rooms/{room}/log`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// Entries after the requested sequence number, in order.
    pub entries: Vec<Entry>,
    /// The room's head at the time of the read (for a member removed since: the entry that
    /// removed it, the last one it may read).
    pub head: u64,
    /// The room's epoch at the time of the read (for a member removed since: the epoch that
    /// entry led to).
    pub epoch: u64,
}

/// `GET /v1/rooms/{room}/tree`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatchetTree {
    /// The epoch the tree belongs to.
    pub epoch: u64,
    /// The exported public ratchet tree.
    #[serde(with = "crate::b64")]
    pub ratchet_tree: Vec<u8>,
}

/// `GET /v1/rooms/{room}/membership` for sender-keys rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipState {
    /// The current signed membership, absent at version 0 (the creator alone, unsigned).
    pub current: Option<SignedMembership>,
    /// The current version.
    pub version: u64,
}

/// Kinds of key material in the key directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// An MLS KeyPackage (`MlsMessage`).
    MlsKeyPackage,
    /// An Olm one-time key.
    OlmOneTime,
    /// An Olm fallback key.
    OlmFallback,
}

impl KeyKind {
    /// The kind as a short string.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::MlsKeyPackage => "mls_key_package",
            KeyKind::OlmOneTime => "olm_one_time",
            KeyKind::OlmFallback => "olm_fallback",
        }
    }

    /// Inverse of [`KeyKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mls_key_package" => Some(KeyKind::MlsKeyPackage),
            "olm_one_time" => Some(KeyKind::OlmOneTime),
            "olm_fallback" => Some(KeyKind::OlmFallback),
            _ => None,
        }
    }
}

/// One item of key material to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyItemUpload {
    /// What it is.
    pub kind: KeyKind,
    /// A last-resort item is handed out when no one-time item is left, and never consumed.
    /// Publishing a new last-resort item of a kind replaces the old one.
    #[serde(default)]
    pub last_resort: bool,
    /// The opaque key material.
    #[serde(with = "crate::b64")]
    pub data: Vec<u8>,
}

/// `POST /v1/keys`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishKeys {
    /// Items to add.
    pub items: Vec<KeyItemUpload>,
}

/// `GET /v1/keys` and the answer to `POST /v1/keys`: what the caller has on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    /// One row per kind the user has published.
    pub counts: Vec<KeyCount>,
}

/// How much key material of one kind a user has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    /// The kind.
    pub kind: KeyKind,
    /// One-time items left.
    pub one_time: u64,
    /// Whether a last-resort item is present.
    pub last_resort: bool,
}

/// `POST /v1/keys/{user}/claim`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimKey {
    /// The kind wanted.
    pub kind: KeyKind,
}

/// A claimed item of key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKey {
    /// Whose it is.
    pub user: UserId,
    /// What it is.
    pub kind: KeyKind,
    /// Whether it is the (reusable) last-resort item.
    pub last_resort: bool,
    /// The key material.
    #[serde(with = "crate::b64")]
    pub data: Vec<u8>,
}

/// `POST /v1/mailboxes/{user}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    /// The opaque message (a Welcome, an invitation, a pairwise ciphertext).
    #[serde(with = "crate::b64")]
    pub body: Vec<u8>,
}

/// The answer to a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposited {
    /// The message's sequence number in the recipient's mailbox.
    pub seq: u64,
    /// When it expires unless acknowledged, Unix milliseconds.
    pub expires_at: i64,
}

/// One mailbox message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxEntry {
    /// Sequence number in this mailbox, strictly increasing.
    pub seq: u64,
    /// Who deposited it.
    pub sender: UserId,
    /// Deposit time, Unix milliseconds.
    pub ts: i64,
    /// Expiry time, Unix milliseconds.
    pub expires_at: i64,
    /// The opaque body.
    #[serde(with = "crate::b64")]
    pub body: Vec<u8>,
}

/// `GET /v1/mailbox`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxPage {
    /// Messages after the cursor, in order.
    pub entries: Vec<MailboxEntry>,
}

/// `POST /v1/mailbox/ack`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Every message with a sequence number up to and including this one is deleted.
    #[serde(with = "crate::int")]
    pub up_to: u64,
}

/// The answer to an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    /// How many messages were deleted.
    pub removed: u64,
}

/// A message a client sends on the push WebSocket (`GET /v1/push`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushRequest {
    /// Subscribe to rooms (each from a cursor) and optionally the mailbox. Entries after each
    /// cursor are sent first, then live ones, in order, with no gap and no duplicate.
    /// A later `subscribe` adds to (or restarts) subscriptions.
    Subscribe {
        /// Rooms and the last sequence number the client has.
        #[serde(default)]
        rooms: Vec<RoomCursor>,
        /// The last mailbox sequence number the client has; absent to not subscribe.
        #[serde(default, with = "crate::int::option")]
        mailbox_after: Option<u64>,
    },
    /// Append an entry to a room, as `POST /v1/rooms/{room}/log` does, on a connection opened
    /// with a `bind` key (see [`crate::push`]). Answered by [`PushEvent::Sent`] or
    /// [`PushEvent::Refused`] with the same `id`, in the order of the ids, each after the
    /// entry is durable.
    Send {
        /// The frame's number on this connection: 1, then each one more than the last.
        #[serde(with = "crate::int")]
        id: u64,
        /// The room's name.
        room: String,
        /// The entry.
        entry: AppendEntry,
        /// HMAC-SHA256 of the frame under the connection's key, 64 hex digits
        /// ([`crate::push::FrameKey::mac`]).
        mac: String,
    },
}

/// A room and a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomCursor {
    /// The room's name.
    pub room: String,
    /// The last sequence number the client has (0 for none).
    #[serde(with = "crate::int")]
    pub after: u64,
}

/// A message the server sends on the push WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PushEvent {
    /// A room-log entry.
    Entry {
        /// The room's name.
        room: String,
        /// The entry.
        entry: Entry,
    },
    /// A mailbox message.
    Mail {
        /// The message.
        entry: MailboxEntry,
    },
    /// A room's backlog is delivered: every entry up to `seq` (the room's head when the
    /// subscription caught up, or the cursor if nothing was behind it) has been sent, and what
    /// follows comes live. Sent once per subscription, after its backlog.
    Live {
        /// The room's name.
        room: String,
        /// The last entry of the backlog (the subscription's cursor if there was none).
        #[serde(with = "crate::int")]
        seq: u64,
    },
    /// A `send` frame's entry is in the log, durably.
    Sent {
        /// The frame's number.
        id: u64,
        /// Where the entry landed.
        appended: Appended,
    },
    /// A `send` frame was refused, with the error `POST /v1/rooms/{room}/log` would give.
    Refused {
        /// The frame's number.
        id: u64,
        /// Why.
        error: crate::ApiError,
    },
    /// A subscription failed (e.g. not a member); the others continue.
    Error {
        /// The room concerned, if any.
        room: Option<String>,
        /// Why.
        error: crate::ApiError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_reject_unknown_fields() {
        let e = AppendEntry { kind: EntryKind::Commit, epoch: 3, body: vec![1, 2, 3] };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"kind":"commit","epoch":3,"body":"AQID"}"#);
        assert_eq!(serde_json::from_str::<AppendEntry>(&json).unwrap(), e);
        assert!(serde_json::from_str::<AppendEntry>(r#"{"kind":"commit","epoch":3,"body":"AQID","x":1}"#).is_err());
        assert!(serde_json::from_str::<AppendEntry>(r#"{"kind":"commit","epoch":3,"body":"!!"}"#).is_err());
        let mode: RoomMode = serde_json::from_str("\"sender-keys\"").unwrap();
        assert_eq!(mode, RoomMode::SenderKeys);
        let sub: PushRequest =
            serde_json::from_str(r#"{"type":"subscribe","rooms":[{"room":"a","after":2}]}"#).unwrap();
        assert_eq!(
            sub,
            PushRequest::Subscribe { rooms: vec![RoomCursor { room: "a".into(), after: 2 }], mailbox_after: None }
        );
    }
}

/// `POST /v1/rooms/{room}/reports`: a member cannot process a commit the server accepted.
///
/// The request's signature makes the report the reporter's. With `membership_key` (the
/// membership key of the commit's epoch, which the reporter's client revealed because the
/// commit's membership tag does not verify under it), the report is evidence the server checks:
/// see `grove_proto::mls::fault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultReport {
    /// The sequence number of the commit.
    #[serde(with = "crate::int")]
    pub seq: u64,
    /// The membership key of the commit's epoch, if the fault is a bad membership tag.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::b64::option")]
    pub membership_key: Option<Vec<u8>>,
    /// What the reporter's client found, for the room's history and the operator (at most 200
    /// characters are kept).
    #[serde(default)]
    pub reason: String,
    /// An admin of the room (in the commit's epoch) asks the server to void the room's last
    /// commit on its word: no member could process it, so no member can prove its fault or
    /// offer a resync, and the room goes back to the epoch every other member holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin_void: bool,
}

/// The answer to a [`FaultReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportOutcome {
    /// The commit was voided: the sequence number of the [`EntryKind::Void`] entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void_seq: Option<u64>,
    /// How many members (the reporter included) have reported this commit so far.
    pub reports: u32,
    /// How many of them revealed the same membership key as this report, so far.
    pub agreeing: u32,
}

/// The body of an [`EntryKind::Resync`] entry: a member of the room's current epoch offers the
/// members stuck at `stuck_epoch` a way back in (see `grove_proto::mls::resync`). Posted with
/// the room's current epoch as its entry epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncOffer {
    /// The epoch the members it is for are stuck at.
    #[serde(with = "crate::int")]
    pub stuck_epoch: u64,
    /// A GroupInfo of the entry's epoch (with the ratchet tree and the external public key),
    /// sealed under the resync key of `stuck_epoch`, which only that epoch's members hold.
    #[serde(with = "crate::b64")]
    pub sealed: Vec<u8>,
}

/// The body of an [`EntryKind::Void`] entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Void {
    /// The sequence number of the voided commit. Every commit and proposal after it, up to
    /// this entry, is void with it (they were made on top of it).
    pub voided: u64,
    /// Who made the voided commit.
    pub committer: UserId,
    /// The epoch the room is back in (the voided commit's epoch).
    pub epoch: u64,
    /// The members whose revealed membership key proved the fault.
    pub reporters: Vec<UserId>,
    /// Why: `membership_tag` (its membership tag does not verify under the epoch's key), or
    /// `admin` (an admin of the room voided the room's last commit on its word).
    pub reason: String,
}

/// `POST /v1/rooms/{room}/link`: sets the room's invite link, replacing any other (a reset:
/// the old link stops working). The server keeps only the hash of the link's token
/// ([`crate::invite`]), never the link's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoomLink {
    /// SHA-256 of the link's token (32 bytes).
    #[serde(with = "crate::b64")]
    pub token_hash: Vec<u8>,
    /// How many join requests the link may make; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::int::option")]
    pub max_uses: Option<u64>,
    /// When the link stops working, Unix ms; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::int::option")]
    pub expires_at: Option<u64>,
}

/// `POST /v1/rooms/{room}/joins`: a user who holds the room's link asks to join it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskToJoin {
    /// The link's token (32 bytes, [`crate::invite::token`]).
    #[serde(with = "crate::b64")]
    pub token: Vec<u8>,
    /// The asker's home server (its base URL), where an admin's client finds its key material
    /// and mailbox to invite it.
    pub home: String,
    /// The asker's proof that it holds the link (32 bytes, grove-proto's `invite::proof`):
    /// opaque to the server, checked by the admin's client that carries the request out.
    #[serde(with = "crate::b64")]
    pub proof: Vec<u8>,
}

/// `PUT /v1/rooms/{room}/link/group-info`: a member who holds the room's link keeps the room's
/// GroupInfo there for the link's holders (MLS rooms whose join rule is `link`), sealed under a
/// key derived from the link's secret (grove-proto `mls::links`), which the server never sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutLinkGroupInfo {
    /// The hash of the link's token (32 bytes, [`crate::invite::token_hash`]): the server keeps
    /// it only for the room's current link.
    #[serde(with = "crate::b64")]
    pub token_hash: Vec<u8>,
    /// The GroupInfo's epoch: the room's current one.
    #[serde(with = "crate::int")]
    pub epoch: u64,
    /// The sealed GroupInfo (opaque to the server).
    #[serde(with = "crate::b64")]
    pub sealed: Vec<u8>,
}

/// The answer to [`PutLinkGroupInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkGroupInfoKept {
    /// Whether it was kept (not when the server holds one of a later epoch already).
    pub kept: bool,
}

/// `POST /v1/rooms/{room}/link/group-info`: a link holder fetches the sealed GroupInfo, and
/// `POST /v1/rooms/{room}/link/join` (with [`LinkJoin`]) joins by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkToken {
    /// The link's token (32 bytes, [`crate::invite::token`]).
    #[serde(with = "crate::b64")]
    pub token: Vec<u8>,
}

/// The answer to [`LinkToken`]: the room's GroupInfo as its members sealed it for the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedGroupInfo {
    /// Its epoch.
    #[serde(with = "crate::int")]
    pub epoch: u64,
    /// The sealed GroupInfo.
    #[serde(with = "crate::b64")]
    pub sealed: Vec<u8>,
}

/// `POST /v1/rooms/{room}/link/join`: a link holder's external commit that adds it to an MLS
/// room whose join rule is `link`. Answered like an append ([`Appended`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkJoin {
    /// The link's token (32 bytes, [`crate::invite::token`]).
    #[serde(with = "crate::b64")]
    pub token: Vec<u8>,
    /// The epoch the commit was made in (the GroupInfo's).
    #[serde(with = "crate::int")]
    pub epoch: u64,
    /// The external commit (an MLS PublicMessage).
    #[serde(with = "crate::b64")]
    pub commit: Vec<u8>,
}

/// The answer to [`AskToJoin`]: the request waits, and how it will be decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAsked {
    /// `link`: an admin's client lets the asker in on its next sync; `approval`: an admin
    /// decides.
    pub join: crate::policy::JoinRule,
}

/// `GET /v1/rooms/{room}/joins`: the requests waiting in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequests {
    /// Oldest first.
    pub requests: Vec<JoinRequestItem>,
}

/// One waiting request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequestItem {
    /// Who asks.
    pub user: UserId,
    /// Its home server.
    pub home: String,
    /// When it asked, Unix ms.
    pub at: i64,
    /// Its proof that it holds the link.
    #[serde(with = "crate::b64")]
    pub proof: Vec<u8>,
}

/// The answer to [`SetRoomLink`]: the link as the server now keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLinkInfo {
    /// How many join requests it may make; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// How many it made.
    pub uses: u64,
    /// When it stops working, Unix ms; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The member who made it.
    pub created_by: UserId,
}

/// The answer to a `DELETE` (a link revoked, a join request dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Whether there was something to delete.
    pub existed: bool,
}
