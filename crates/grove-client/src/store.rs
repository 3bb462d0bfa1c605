//! The profile's local state: one SQLite file. Every sync step commits the engine's changes,
//! the decrypted messages and the room's cursor in one transaction, so a crash at any point
//! either keeps a step whole or loses it whole (and the step is redone from the old cursor).

use std::path::Path;

use grove_proto::mls::engine::{
    Changes, GroupId, JournalRow, SnapshotWrite, StoredEpoch, StoredGroup, StoredKeyPackage, StoredState,
};
use grove_proto::senderkeys::room::Record;
use grove_wire::api::RoomMode;
use grove_wire::content::{Content, SignedProfile};
use grove_wire::policy::{JoinRule, Role, RoomPolicy};
use grove_wire::UserId;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

mod cipher;
pub use cipher::Passphrase;
use cipher::{Cipher, KeyRecord};

/// Why the local state could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("local state: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Stored data does not decode.
    #[error("local state is corrupt: {0}")]
    Corrupt(String),
    /// The profile is locked with a passphrase and none was given.
    #[error("this profile is locked with a passphrase: give it (the prompt, or GROVE_PASSPHRASE in scripts)")]
    Locked,
    /// The passphrase does not open the profile.
    #[error("wrong passphrase: the profile was not opened and nothing in it changed")]
    WrongPassphrase,
    /// A passphrase operation on a profile made without one.
    #[error("this profile has no passphrase (it is not encrypted at rest); make an encrypted one with `grove init --passphrase` under another --profile")]
    NotEncrypted,
}

/// The layout, as numbered migrations: the file's `PRAGMA user_version` is the number of
/// migrations applied, and opening a file applies the ones it lacks, each in one transaction.
/// Append new migrations; never edit one that has shipped.
///
/// Migration 1 is the layout of the releases before numbering. Its statements are
/// `IF NOT EXISTS`, so a file from then (user_version 0, any of its tables present) is
/// completed, not rebuilt.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(SCHEMA_1),
    Migration::Code(structured_history),
    Migration::Sql(SCHEMA_3),
    Migration::Sql(SCHEMA_4),
];

enum Migration {
    Sql(&'static str),
    Code(fn(&Transaction<'_>) -> Result<(), StoreError>),
}

/// 4: invitations not yet accepted: the room (joined, so its history can be read) and who
/// invited this user. Until it is accepted, the user's name is not told to the room.
const SCHEMA_4: &str = "
CREATE TABLE invitations (room TEXT PRIMARY KEY, inviter BLOB NOT NULL, at INTEGER NOT NULL);
";

/// 3: names learned in rooms, the outbox, the read marker of each room.
const SCHEMA_3: &str = "
CREATE TABLE names (room TEXT NOT NULL, user BLOB NOT NULL, name TEXT NOT NULL, rev INTEGER NOT NULL,
    profile BLOB NOT NULL, PRIMARY KEY (room, user));
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL, content BLOB NOT NULL,
    body BLOB, epoch INTEGER, created INTEGER NOT NULL, attempted INTEGER);
CREATE INDEX outbox_room ON outbox (room, id);
ALTER TABLE rooms ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
";

/// 2: history holds structured events instead of English sentences. A text message's
/// plaintext was bare UTF-8; it becomes the content format's text. An event's sentence stays,
/// as a note.
fn structured_history(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let rows: Vec<(String, i64, Vec<u8>)> = {
        let mut q = tx.prepare("SELECT room, seq, body FROM messages WHERE kind = 'text'")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut update = tx.prepare("UPDATE messages SET kind = 'content', body = ?3 WHERE room = ?1 AND seq = ?2")?;
    for (room, seq, body) in rows {
        let content = Content::text(String::from_utf8_lossy(&body).into_owned());
        update.execute(params![room, seq, content.encode()])?;
    }
    tx.execute("UPDATE messages SET kind = 'note' WHERE kind = 'event'", [])?;
    Ok(())
}

/// 1: the layout before numbered migrations.
const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mls_groups (group_id BLOB PRIMARY KEY, snapshot BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mls_epochs (group_id BLOB NOT NULL, epoch_id INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch_id));
CREATE TABLE IF NOT EXISTS mls_key_packages (id BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mls_journal (group_id BLOB NOT NULL, seq INTEGER NOT NULL, entry BLOB NOT NULL,
    PRIMARY KEY (group_id, seq));
CREATE TABLE IF NOT EXISTS rooms (
    link TEXT PRIMARY KEY, server TEXT NOT NULL, name TEXT NOT NULL, mode TEXT NOT NULL,
    group_id BLOB NOT NULL, cursor INTEGER NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, sender BLOB NOT NULL, ts INTEGER NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (room, seq));
CREATE TABLE IF NOT EXISTS sk_records (key TEXT PRIMARY KEY, value BLOB NOT NULL);
";

/// Whether the profile can still use a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RoomStatus {
    /// A member.
    #[default]
    Active,
    /// This user left.
    Left,
    /// Someone removed this user.
    Removed,
}

impl RoomStatus {
    fn as_str(self) -> &'static str {
        match self {
            RoomStatus::Active => "active",
            RoomStatus::Left => "left",
            RoomStatus::Removed => "removed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(RoomStatus::Active),
            "left" => Some(RoomStatus::Left),
            "removed" => Some(RoomStatus::Removed),
            _ => None,
        }
    }
}

/// A room the profile is (or was) in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRoom {
    /// The room's link, `<server>/rooms/<name>`.
    pub link: String,
    /// The room's server base URL.
    pub server: String,
    /// The room's name on its server.
    pub name: String,
    /// The room's protocol.
    pub mode: RoomMode,
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The last log entry applied.
    pub cursor: u64,
    /// Member, left or removed.
    pub status: RoomStatus,
}

/// What a stored history line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A member's application message: `body` is its decrypted plaintext in the content
    /// format ([`Content`]), kept as received so that a kind this client does not know yet is
    /// shown once it does.
    Content,
    /// A membership change: `body` is a [`Membership`] as JSON; `sender` made it.
    Membership,
    /// An entry that could not be decrypted or verified; `body` says why.
    Undecryptable,
    /// A sentence: from a client before structured history (migration 2), or about an entry
    /// read but not taken ([`Message::note`]).
    Note,
}

impl MessageKind {
    fn as_str(self) -> &'static str {
        match self {
            MessageKind::Content => "content",
            MessageKind::Membership => "membership",
            MessageKind::Undecryptable => "undecryptable",
            MessageKind::Note => "note",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "content" => Some(MessageKind::Content),
            "membership" => Some(MessageKind::Membership),
            "undecryptable" => Some(MessageKind::Undecryptable),
            "note" => Some(MessageKind::Note),
            _ => None,
        }
    }
}

/// A membership change, as history keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<UserId>,
    /// Members removed (the sender itself: it left).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<UserId>,
    /// This profile joined the room, which then had this many members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<usize>,
    /// With `joined`: this profile had been in the room before (removed or left), and was
    /// invited back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
    /// This profile was removed by an entry it could no longer read (it was offline): the
    /// server stopped letting it read the room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed_unseen: bool,
    /// The server voided a commit (the line's sender made it): members proved it faulty, and
    /// the room went back to the epoch before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voided: Option<Voided>,
    /// Roles given by the change (the sender made it; [`Role::Member`] takes a role away).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<(UserId, Role)>,
    /// Users banned by the change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub banned: Vec<UserId>,
    /// Users whose ban the change lifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unbanned: Vec<UserId>,
    /// The change altered the rights (which role each action needs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rights: bool,
    /// The change set how people not invited come in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinRule>,
    /// This profile could not process a commit and got back into the room by a resync (an
    /// external commit replacing its own leaf), into this epoch, from a GroupInfo the line's
    /// sender published. Entries of the epochs it never entered are not readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resynced: Option<u64>,
}

impl Membership {
    /// Fills in what changed between two policies of a room: roles (but those of removed
    /// members, which go with them), bans, rights.
    pub fn with_policy_change(mut self, before: Option<&RoomPolicy>, after: Option<&RoomPolicy>) -> Membership {
        let (Some(before), Some(after)) = (before, after) else { return self };
        let users: std::collections::BTreeSet<UserId> =
            before.roles.keys().chain(after.roles.keys()).copied().collect();
        for u in users {
            let (old, new) = (before.role_of(&u), after.role_of(&u));
            if old != new && !self.removed.contains(&u) && !after.is_banned(&u) {
                self.roles.push((u, new));
            }
        }
        self.banned = after.bans.difference(&before.bans).copied().collect();
        self.unbanned = before.bans.difference(&after.bans).copied().collect();
        self.rights = before.rights != after.rights;
        self.join = (before.join != after.join).then_some(after.join);
        self
    }
}

/// A voided commit, as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voided {
    /// The voided commit's sequence number.
    pub seq: u64,
    /// The epoch the room went back to.
    pub epoch: u64,
}

/// A history line, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member's message.
    Content(Content),
    /// A membership change.
    Membership(Membership),
    /// An unreadable entry, and why.
    Undecryptable(String),
    /// An old sentence.
    Note(String),
}

/// One line of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The room's link.
    pub room: String,
    /// The entry's sequence number in the room's log.
    pub seq: u64,
    /// What it is.
    pub kind: MessageKind,
    /// Who posted the entry.
    pub sender: UserId,
    /// Server time, Unix ms.
    pub ts: i64,
    /// The plaintext content, the membership change, or why it is unreadable (see [`MessageKind`]).
    pub body: Vec<u8>,
}

impl Message {
    /// What the line says.
    pub fn event(&self) -> Event {
        match self.kind {
            MessageKind::Content => Event::Content(Content::decode(&self.body)),
            MessageKind::Membership => Event::Membership(serde_json::from_slice(&self.body).unwrap_or_default()),
            MessageKind::Undecryptable => Event::Undecryptable(String::from_utf8_lossy(&self.body).into_owned()),
            MessageKind::Note => Event::Note(String::from_utf8_lossy(&self.body).into_owned()),
        }
    }

    /// The text of a text message or reply, if it is one.
    pub fn text(&self) -> Option<String> {
        match self.event() {
            Event::Content(Content::Text { text } | Content::Reply { text, .. }) => Some(text),
            _ => None,
        }
    }

    /// A line for a member's message.
    pub fn content(room: &str, seq: u64, sender: UserId, ts: i64, plaintext: Vec<u8>) -> Message {
        Message { room: room.to_string(), seq, kind: MessageKind::Content, sender, ts, body: plaintext }
    }

    /// A line for a membership change made by `by`.
    pub fn membership(room: &str, seq: u64, by: UserId, ts: i64, change: &Membership) -> Message {
        let body = serde_json::to_vec(change).unwrap_or_default();
        Message { room: room.to_string(), seq, kind: MessageKind::Membership, sender: by, ts, body }
    }

    /// A sentence about an entry this client read but did not take (a room profile from a member
    /// whose role may not set it).
    pub fn note(room: &str, seq: u64, sender: UserId, ts: i64, text: &str) -> Message {
        Message { room: room.to_string(), seq, kind: MessageKind::Note, sender, ts, body: text.as_bytes().to_vec() }
    }

    /// A line for an unreadable entry.
    pub fn undecryptable(room: &str, seq: u64, sender: UserId, ts: i64, why: &str) -> Message {
        Message {
            room: room.to_string(),
            seq,
            kind: MessageKind::Undecryptable,
            sender,
            ts,
            body: why.as_bytes().to_vec(),
        }
    }
}

/// A sealed outbox item: the ciphertext and the epoch (or membership version) it was sealed in.
pub(crate) type Sealed = (Vec<u8>, u64);

/// A message waiting to be posted (see [`crate::profile::Profile::outbox`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Its place in the queue (posting order).
    pub id: i64,
    /// The room's link.
    pub room: String,
    /// The plaintext content.
    pub content: Vec<u8>,
    /// The ciphertext, once sealed, and the epoch it was sealed in. Posted again as it is
    /// until the server takes it or says its epoch is over; never re-encrypted under the same
    /// key.
    pub sealed: Option<Sealed>,
    /// When it was written, Unix seconds.
    pub created: i64,
    /// When its ciphertext was last posted (Unix ms), if ever: a post whose process died may
    /// still be reaching the server for a moment.
    pub attempted: Option<i64>,
}

/// A name learned in a room, from the member's own signed profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownName {
    /// Whose.
    pub user: UserId,
    /// The display name.
    pub name: String,
    /// The profile revision.
    pub rev: u64,
    /// The signed profile as received (passed on to new members).
    pub profile: Vec<u8>,
}

/// Everything one step writes, in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Engine state changes, applied in order.
    pub changes: Vec<Changes>,
    /// Rooms to insert or replace.
    pub rooms: Vec<LocalRoom>,
    /// New history lines (an existing `(room, seq)` is kept: no duplicates).
    pub messages: Vec<Message>,
    /// History lines that replace the existing one at their `(room, seq)`: a sender-keys message
    /// recorded as unreadable that became readable once its sender's key arrived.
    pub replaced: Vec<Message>,
    /// New cursors: (room link, cursor).
    pub cursors: Vec<(String, u64)>,
    /// New room statuses.
    pub statuses: Vec<(String, RoomStatus)>,
    /// A new mailbox cursor.
    pub mailbox_cursor: Option<u64>,
    /// Sender-keys rooms, Olm sessions and the address book: records to upsert or delete
    /// (see [`ClientStore::records`]).
    pub records: Vec<Record>,
    /// Names learned: (room link, profile). Kept only if newer (higher `rev`) than the known one.
    pub names: Vec<(String, SignedProfile)>,
    /// Outbox items sealed: (id, ciphertext, epoch); `None` forgets a stale ciphertext.
    pub sealed: Vec<(i64, Option<Sealed>)>,
    /// Outbox items gone (posted, or refused for good).
    pub sent: Vec<i64>,
    /// Outbox items about to be posted: (id, Unix ms).
    pub attempted: Vec<(i64, i64)>,
    /// Read markers: (room link, last seq shown).
    pub seen: Vec<(String, u64)>,
    /// Invitations received: (room link, inviter, Unix seconds); the room is pending until it is
    /// accepted.
    pub invitations: Vec<(String, UserId, i64)>,
    /// Invitations accepted (or settled by leaving): room links.
    pub accepted: Vec<String>,
    /// Metadata values to set (sealed like [`ClientStore::set_meta`]'s), in order.
    pub meta: Vec<(String, Vec<u8>)>,
}

/// One stored record: key (prefix stripped) and value (secret: wiped on drop).
pub(crate) type RecordRow = (String, Zeroizing<Vec<u8>>);

/// The profile's state file.
pub struct ClientStore {
    conn: Connection,
    /// How secret values are written and read ([`cipher`]).
    cipher: Cipher,
}

impl std::fmt::Debug for ClientStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientStore")
    }
}

impl ClientStore {
    /// Opens (creating) the state file. It holds the identity secret and every group secret,
    /// so it is created readable by its owner only (0600; SQLite gives its `-wal` and `-shm`
    /// files the same mode), and an existing one readable by others is tightened, with a
    /// warning.
    pub fn open(path: &Path) -> Result<ClientStore, StoreError> {
        Self::open_with(path, None)
    }

    /// Opens (creating) the state file; a profile locked with a passphrase needs it
    /// ([`StoreError::Locked`] without, [`StoreError::WrongPassphrase`] for another), and a
    /// passphrase given for a profile without one is ignored.
    pub fn open_with(path: &Path, passphrase: Option<&Passphrase>) -> Result<ClientStore, StoreError> {
        private_file(path).map_err(|e| StoreError::Corrupt(format!("cannot make {} private: {e}", path.display())))?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut store = ClientStore { conn, cipher: Cipher::Plain };
        store.migrate()?;
        if let Some(rec) = store.key_record()? {
            store.cipher = rec.unlock(passphrase.ok_or(StoreError::Locked)?)?;
            // A changed passphrase leaves no old sealed key in freed pages.
            store.conn.pragma_update(None, "secure_delete", "ON")?;
        }
        Ok(store)
    }

    /// Whether the state file at `path` is locked with a passphrase (without opening it).
    pub fn is_locked(path: &Path) -> Result<bool, StoreError> {
        if !path.exists() {
            return Ok(false);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let has_meta: bool =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| {
                r.get::<_, i64>(0).map(|n| n > 0)
            })?;
        if !has_meta {
            return Ok(false);
        }
        Ok(conn.query_row("SELECT count(*) FROM meta WHERE key = 'cipher'", [], |r| r.get::<_, i64>(0))? > 0)
    }

    fn key_record(&self) -> Result<Option<KeyRecord>, StoreError> {
        let raw: Option<Vec<u8>> =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'cipher'", [], |r| r.get(0)).optional()?;
        raw.map(|r| KeyRecord::decode(&r)).transpose()
    }

    /// Whether the file's secrets are sealed under a passphrase.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_sealed()
    }

    /// Locks a new, empty profile with `passphrase`: a fresh data key, sealed under it. Refused
    /// once the profile holds an identity (its secrets are already written in clear).
    pub fn lock_new(&mut self, passphrase: &Passphrase) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rows: i64 = tx.query_row("SELECT count(*) FROM meta", [], |r| r.get(0))?;
        if rows > 0 {
            return Err(StoreError::NotEncrypted);
        }
        let (rec, cipher) = KeyRecord::create(passphrase)?;
        tx.execute("INSERT INTO meta (key, value) VALUES ('cipher', ?1)", [rec.encode()?])?;
        tx.commit()?;
        self.cipher = cipher;
        self.conn.pragma_update(None, "secure_delete", "ON")?;
        Ok(())
    }

    /// Seals the data key under a new passphrase (the profile was opened with the old one).
    /// The old sealed key is overwritten (`secure_delete`) and the write-ahead log truncated.
    pub fn change_passphrase(&mut self, new: &Passphrase) -> Result<(), StoreError> {
        let rec = KeyRecord::reseal(&self.cipher, new)?;
        self.conn.execute("UPDATE meta SET value = ?1 WHERE key = 'cipher'", [rec.encode()?])?;
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// The key the Olm pickles are encrypted with ([`Cipher::pickle_key`]).
    pub(crate) fn pickle_key(&self) -> Option<Zeroizing<[u8; 32]>> {
        self.cipher.pickle_key()
    }

    /// Applies the migrations the file lacks.
    fn migrate(&mut self) -> Result<(), StoreError> {
        loop {
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let Some(m) = MIGRATIONS.get(version as usize) else {
                if version as usize > MIGRATIONS.len() {
                    return Err(StoreError::Corrupt(format!(
                        "the state file has layout {version}, newer than this grove knows ({}): use a newer grove",
                        MIGRATIONS.len()
                    )));
                }
                return Ok(());
            };
            match m {
                Migration::Sql(sql) => tx.execute_batch(sql)?,
                Migration::Code(f) => f(&tx)?,
            }
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
    }

    /// How many migrations the file has (its layout number).
    pub fn layout(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let raw: Option<Vec<u8>> =
            self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        raw.map(|v| self.cipher.open(&format!("meta.{key}"), v)).transpose()
    }

    /// Sets a metadata value.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let value = self.cipher.seal(&format!("meta.{key}"), value)?;
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])?;
        Ok(())
    }

    /// Removes a metadata value.
    pub fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// SQLite's `PRAGMA data_version`: it changes whenever another connection (another
    /// process on this profile) committed, and not for this connection's own commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Everything the engine persisted, read in one transaction (one consistent snapshot even
    /// while another process commits).
    pub fn engine_state(&self) -> Result<StoredState, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let state = self.engine_state_in(&tx)?;
        tx.commit()?;
        Ok(state)
    }

    fn engine_state_in(&self, _tx: &Transaction<'_>) -> Result<StoredState, StoreError> {
        let mut state = StoredState::default();
        let mut q = self.conn.prepare("SELECT group_id, snapshot FROM mls_groups ORDER BY group_id")?;
        for row in q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (id, snapshot) = row?;
            state.groups.push(StoredGroup {
                group_id: GroupId::new(id),
                snapshot: self.cipher.open("mls_groups.snapshot", snapshot)?.into(),
                epochs: Vec::new(),
                journal: Vec::new(),
            });
        }
        let mut q = self.conn.prepare("SELECT group_id, epoch_id, data FROM mls_epochs ORDER BY group_id, epoch_id")?;
        for row in q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))? {
            let (id, epoch, data) = row?;
            let group = state
                .groups
                .iter_mut()
                .find(|g| g.group_id.as_bytes() == id.as_slice())
                .ok_or_else(|| StoreError::Corrupt("an epoch record without its group".into()))?;
            group
                .epochs
                .push(StoredEpoch { epoch: epoch as u64, data: self.cipher.open("mls_epochs.data", data)?.into() });
        }
        let mut q = self.conn.prepare("SELECT group_id, seq, entry FROM mls_journal ORDER BY group_id, seq")?;
        for row in q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))? {
            let (id, seq, entry) = row?;
            let group = state
                .groups
                .iter_mut()
                .find(|g| g.group_id.as_bytes() == id.as_slice())
                .ok_or_else(|| StoreError::Corrupt("a journal row without its group".into()))?;
            group
                .journal
                .push(JournalRow { seq: seq as u64, entry: self.cipher.open("mls_journal.entry", entry)?.into() });
        }
        let mut q = self.conn.prepare("SELECT id, data FROM mls_key_packages ORDER BY id")?;
        for row in q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (id, data) = row?;
            state
                .key_packages
                .push(StoredKeyPackage { id, data: self.cipher.open("mls_key_packages.data", data)?.into() });
        }
        Ok(state)
    }

    /// Writes a batch in one transaction, without waiting for the disk: for a batch that only
    /// records what the server already holds (a log page applied, an own post settled), or
    /// what has not left the machine yet (a message queued to be sealed at once). A crash of
    /// the process loses nothing (the WAL is in the OS); a power loss may lose it, and then the
    /// profile reads it again from the server (the cursor and the state went back together) or
    /// settles the post from the log. Every durable [`ClientStore::commit`] after it (any seal,
    /// any pending commit, anything that leaves the machine) makes it durable too: it syncs the
    /// whole WAL.
    pub fn commit_relaxed(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let r = self.commit(batch);
        let back = self.conn.pragma_update(None, "synchronous", "FULL");
        r?;
        Ok(back?)
    }

    /// Makes every relaxed commit before it durable (one durable write that syncs the WAL).
    pub fn make_durable(&mut self) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('durable_at', ?1)",
            [std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)],
        )?;
        Ok(())
    }

    /// Writes a batch in one transaction.
    pub fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        // One write per row: if several changes in the batch write a group's snapshot, only the
        // last one matters (the snapshot is the whole group: O(members) bytes), and journal rows
        // before it are moot.
        let mut merged = Changes::default();
        for c in batch.changes {
            merged.merge(c);
        }
        let c = &self.cipher;
        apply_changes(&tx, c, &merged)?;
        for r in &batch.rooms {
            tx.execute(
                "INSERT OR REPLACE INTO rooms (link, server, name, mode, group_id, cursor, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![r.link, r.server, r.name, r.mode.as_str(), r.group_id, r.cursor as i64, r.status.as_str()],
            )?;
        }
        for m in &batch.messages {
            tx.execute(
                "INSERT OR IGNORE INTO messages (room, seq, kind, sender, ts, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    m.room,
                    m.seq as i64,
                    m.kind.as_str(),
                    m.sender.as_bytes().as_slice(),
                    m.ts,
                    c.seal("messages.body", &m.body)?
                ],
            )?;
        }
        for m in &batch.replaced {
            tx.execute(
                "INSERT OR REPLACE INTO messages (room, seq, kind, sender, ts, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    m.room,
                    m.seq as i64,
                    m.kind.as_str(),
                    m.sender.as_bytes().as_slice(),
                    m.ts,
                    c.seal("messages.body", &m.body)?
                ],
            )?;
        }
        for (link, cursor) in &batch.cursors {
            tx.execute("UPDATE rooms SET cursor = max(cursor, ?2) WHERE link = ?1", params![link, *cursor as i64])?;
        }
        for (link, status) in &batch.statuses {
            tx.execute("UPDATE rooms SET status = ?2 WHERE link = ?1", params![link, status.as_str()])?;
            if *status != RoomStatus::Active {
                tx.execute("DELETE FROM invitations WHERE room = ?1", [link])?;
            }
        }
        for (link, inviter, at) in &batch.invitations {
            tx.execute(
                "INSERT OR REPLACE INTO invitations (room, inviter, at) VALUES (?1, ?2, ?3)",
                params![link, inviter.as_bytes().as_slice(), at],
            )?;
        }
        for link in &batch.accepted {
            tx.execute("DELETE FROM invitations WHERE room = ?1", [link])?;
        }
        for (key, value) in &batch.meta {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, c.seal(&format!("meta.{key}"), value)?],
            )?;
        }
        for r in &batch.records {
            match &r.value {
                Some(v) => tx.execute(
                    "INSERT OR REPLACE INTO sk_records (key, value) VALUES (?1, ?2)",
                    params![r.key, c.seal("sk_records.value", v)?],
                )?,
                None => tx.execute("DELETE FROM sk_records WHERE key = ?1", [&r.key])?,
            };
        }
        for (room, p) in &batch.names {
            let body = serde_json::to_vec(p).unwrap_or_default();
            tx.execute(
                "INSERT INTO names (room, user, name, rev, profile) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (room, user) DO UPDATE SET name = excluded.name, rev = excluded.rev, profile = excluded.profile
                 WHERE excluded.rev > names.rev",
                params![room, p.user.as_bytes().as_slice(), c.seal_text("names.name", &p.name)?, p.rev as i64, c.seal("names.profile", &body)?],
            )?;
        }
        for (id, sealed) in &batch.sealed {
            let (body, epoch) = match sealed {
                Some((b, e)) => (Some(c.seal("outbox.body", b)?), Some(*e as i64)),
                None => (None, None),
            };
            tx.execute("UPDATE outbox SET body = ?2, epoch = ?3 WHERE id = ?1", params![id, body, epoch])?;
        }
        for (id, at) in &batch.attempted {
            tx.execute("UPDATE outbox SET attempted = ?2 WHERE id = ?1", params![id, at])?;
        }
        for id in &batch.sent {
            tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        }
        for (link, seq) in &batch.seen {
            tx.execute("UPDATE rooms SET seen = max(seen, ?2) WHERE link = ?1", params![link, *seq as i64])?;
        }
        if let Some(c) = batch.mailbox_cursor {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('mailbox_cursor', ?1)",
                [self.cipher.seal("meta.mailbox_cursor", &c.to_be_bytes())?],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every record whose key starts with `prefix` (the prefix stripped), in key order.
    pub fn records(&self, prefix: &str) -> Result<Vec<RecordRow>, StoreError> {
        let mut q =
            self.conn.prepare("SELECT key, value FROM sk_records WHERE substr(key, 1, ?2) = ?1 ORDER BY key")?;
        let rows = q.query_map(params![prefix, prefix.len() as i64], |r| {
            Ok((r.get::<_, String>(0)?, Zeroizing::new(r.get::<_, Vec<u8>>(1)?)))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (k, v) = row?;
            let v = Zeroizing::new(self.cipher.open("sk_records.value", v.to_vec())?);
            out.push((k[prefix.len()..].to_string(), v));
        }
        Ok(out)
    }

    /// Queues a message for a room; answers its id.
    pub fn outbox_add(&mut self, room: &str, content: &[u8], created: i64) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO outbox (room, content, created) VALUES (?1, ?2, ?3)",
            params![room, self.cipher.seal("outbox.content", content)?, created],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// [`ClientStore::outbox_add`] without waiting for the disk, for a message about to be
    /// sealed (whose durable commit makes it durable too); see [`ClientStore::commit_relaxed`].
    /// Whoever stops before sealing it calls [`ClientStore::make_durable`].
    pub fn outbox_add_relaxed(&mut self, room: &str, content: &[u8], created: i64) -> Result<i64, StoreError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let r = self.outbox_add(room, content, created);
        let back = self.conn.pragma_update(None, "synchronous", "FULL");
        let id = r?;
        back?;
        Ok(id)
    }

    /// The outbox, oldest first: one room's, or every room's.
    pub fn outbox(&self, room: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT id, room, content, body, epoch, created, attempted FROM outbox WHERE ?1 IS NULL OR room = ?1 ORDER BY id",
        )?;
        let rows = q.query_map([room], |r| {
            let body: Option<Vec<u8>> = r.get(3)?;
            let epoch: Option<i64> = r.get(4)?;
            Ok(OutboxItem {
                id: r.get(0)?,
                room: r.get(1)?,
                content: r.get(2)?,
                sealed: body.zip(epoch.map(|e| e as u64)),
                created: r.get(5)?,
                attempted: r.get(6)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let mut item = row?;
            item.content = self.cipher.open("outbox.content", std::mem::take(&mut item.content))?;
            if let Some((body, _)) = &mut item.sealed {
                *body = self.cipher.open("outbox.body", std::mem::take(body))?;
            }
            out.push(item);
        }
        Ok(out)
    }

    /// The outbox item of `room` whose ciphertext is `body`, if any (an own entry seen in the
    /// log: the post went through, whether or not its answer arrived).
    pub fn outbox_item_posted_as(&self, room: &str, body: &[u8]) -> Result<Option<OutboxItem>, StoreError> {
        Ok(self.outbox(Some(room))?.into_iter().find(|i| i.sealed.as_ref().is_some_and(|(b, _)| b == body)))
    }

    /// The names learned in a room.
    pub fn names(&self, room: &str) -> Result<Vec<KnownName>, StoreError> {
        let mut q = self.conn.prepare("SELECT user, name, rev, profile FROM names WHERE room = ?1 ORDER BY user")?;
        let rows = q.query_map([room], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, bytes(r.get_ref(1)?), r.get::<_, i64>(2)?, r.get::<_, Vec<u8>>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (user, name, rev, profile) = row?;
            let name = self.cipher.open_text("names.name", name)?;
            let profile = self.cipher.open("names.profile", profile)?;
            let user = UserId::from_slice(&user).ok_or_else(|| StoreError::Corrupt("a name's user".into()))?;
            out.push(KnownName { user, name, rev: rev as u64, profile });
        }
        Ok(out)
    }

    /// Invitations not yet accepted: (room link, inviter, Unix seconds), oldest first.
    pub fn invitations(&self) -> Result<Vec<(String, UserId, i64)>, StoreError> {
        let mut q = self.conn.prepare("SELECT room, inviter, at FROM invitations ORDER BY at, room")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (room, inviter, at) = row?;
            let inviter =
                UserId::from_slice(&inviter).ok_or_else(|| StoreError::Corrupt("an invitation's inviter".into()))?;
            out.push((room, inviter, at));
        }
        Ok(out)
    }

    /// How many messages from others in a room are after its read marker.
    pub fn unread(&self, room: &str, me: &UserId) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM messages m JOIN rooms r ON r.link = m.room
             WHERE m.room = ?1 AND m.seq > r.seen AND m.kind = 'content' AND m.sender != ?2",
            params![room, me.as_bytes().as_slice()],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// The mailbox cursor.
    pub fn mailbox_cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta("mailbox_cursor")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Every room, by link.
    pub fn rooms(&self) -> Result<Vec<LocalRoom>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT link, server, name, mode, group_id, cursor, status FROM rooms ORDER BY name, link")?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (link, server, name, mode, group_id, cursor, status) = row?;
            out.push(LocalRoom {
                mode: RoomMode::parse(&mode).ok_or_else(|| StoreError::Corrupt(format!("room mode {mode:?}")))?,
                status: RoomStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("room status {status:?}")))?,
                link,
                server,
                name,
                group_id,
                cursor: cursor as u64,
            });
        }
        Ok(out)
    }

    /// A room's history after `after`, in order.
    pub fn messages(&self, link: &str, after: u64) -> Result<Vec<Message>, StoreError> {
        self.query_messages(
            link,
            "SELECT seq, kind, sender, ts, body FROM messages WHERE room = ?1 AND seq > ?2 ORDER BY seq",
            params![link, after as i64],
        )
    }

    /// The last `limit` lines of a room's history before `before`, in order.
    pub fn messages_before(&self, link: &str, before: u64, limit: usize) -> Result<Vec<Message>, StoreError> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = self.query_messages(
            link,
            "SELECT seq, kind, sender, ts, body FROM messages WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            params![link, before, limit],
        )?;
        out.reverse();
        Ok(out)
    }

    fn query_messages(&self, link: &str, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Message>, StoreError> {
        let mut q = self.conn.prepare_cached(sql)?;
        let rows = q.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, kind, sender, ts, body) = row?;
            out.push(Message {
                room: link.to_string(),
                seq: seq as u64,
                kind: MessageKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("message kind {kind:?}")))?,
                sender: UserId::from_slice(&sender).ok_or_else(|| StoreError::Corrupt("sender".into()))?,
                ts,
                body: self.cipher.open("messages.body", body)?,
            });
        }
        Ok(out)
    }
}

/// Creates `path` (0600) if it does not exist; tightens it (and the SQLite files beside it) if
/// others can read it.
fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut name = path.as_os_str().to_owned();
        for suffix in ["", "-wal", "-shm"] {
            name.push(suffix);
            let file = std::path::PathBuf::from(&name);
            name = path.as_os_str().to_owned();
            let Ok(meta) = std::fs::metadata(&file) else { continue };
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %file.display(), "the profile's state file was readable by others; it is now private (0600)");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A value's bytes, whether SQLite holds it as text or as a blob (a sealed text column).
fn bytes(v: rusqlite::types::ValueRef<'_>) -> Vec<u8> {
    match v {
        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
        _ => Vec::new(),
    }
}

fn apply_changes(tx: &Transaction<'_>, c: &Cipher, changes: &Changes) -> Result<(), StoreError> {
    for g in &changes.groups {
        let id = g.group_id.as_bytes();
        match &g.snapshot {
            SnapshotWrite::Unchanged => {}
            SnapshotWrite::Checkpoint(snapshot) => {
                tx.execute(
                    "INSERT OR REPLACE INTO mls_groups (group_id, snapshot) VALUES (?1, ?2)",
                    params![id, c.seal("mls_groups.snapshot", snapshot)?],
                )?;
                tx.execute("DELETE FROM mls_journal WHERE group_id = ?1", [id])?;
            }
            SnapshotWrite::Delete => {
                tx.execute("DELETE FROM mls_groups WHERE group_id = ?1", [id])?;
                tx.execute("DELETE FROM mls_epochs WHERE group_id = ?1", [id])?;
                tx.execute("DELETE FROM mls_journal WHERE group_id = ?1", [id])?;
            }
        }
        for e in &g.epochs {
            match &e.data {
                Some(data) => tx.execute(
                    "INSERT OR REPLACE INTO mls_epochs (group_id, epoch_id, data) VALUES (?1, ?2, ?3)",
                    params![id, e.epoch as i64, c.seal("mls_epochs.data", data)?],
                )?,
                None => tx.execute(
                    "DELETE FROM mls_epochs WHERE group_id = ?1 AND epoch_id = ?2",
                    params![id, e.epoch as i64],
                )?,
            };
        }
        // A plain INSERT: a row already there would mean the journal went wrong, and the
        // transaction fails rather than overwrite it.
        let mut insert = tx.prepare_cached("INSERT INTO mls_journal (group_id, seq, entry) VALUES (?1, ?2, ?3)")?;
        for r in &g.journal {
            insert.execute(params![id, r.seq as i64, c.seal("mls_journal.entry", &r.entry)?])?;
        }
    }
    for k in &changes.key_packages {
        match &k.data {
            Some(data) => tx.execute(
                "INSERT OR REPLACE INTO mls_key_packages (id, data) VALUES (?1, ?2)",
                params![k.id, c.seal("mls_key_packages.data", data)?],
            )?,
            None => tx.execute("DELETE FROM mls_key_packages WHERE id = ?1", [&k.id])?,
        };
    }
    Ok(())
}
