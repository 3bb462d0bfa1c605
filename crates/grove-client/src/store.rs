//! The profile's local state: one SQLite file. Every sync step commits the engine's changes,
//! the decrypted messages and the room's cursor in one transaction, so a crash at any point
//! either keeps a step whole or loses it whole (and the step is redone from the old cursor).

use std::path::Path;

use grove_proto::mls::engine::{
    Changes, GroupId, JournalRow, SnapshotWrite, StoredEpoch, StoredGroup, StoredKeyPackage, StoredState,
};
use grove_proto::senderkeys::room::Record;
use grove_wire::api::RoomMode;
use grove_wire::UserId;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use zeroize::Zeroizing;

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
}

/// The layout. Every statement is `IF NOT EXISTS`, so opening a file of an earlier layout adds
/// what it lacks: `mls_journal` (the engine's journal) came after the first release, and an
/// older file simply has no journal rows.
const SCHEMA: &str = "
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomStatus {
    /// A member.
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

/// What a stored message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A decrypted text message.
    Text,
    /// A membership event (someone joined, left, was removed), described in `body`.
    Event,
    /// An entry that could not be decrypted or verified; `body` says why.
    Undecryptable,
}

impl MessageKind {
    fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Event => "event",
            MessageKind::Undecryptable => "undecryptable",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(MessageKind::Text),
            "event" => Some(MessageKind::Event),
            "undecryptable" => Some(MessageKind::Undecryptable),
            _ => None,
        }
    }
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
    /// The plaintext (or the event's description).
    pub body: Vec<u8>,
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
    /// New cursors: (room link, cursor).
    pub cursors: Vec<(String, u64)>,
    /// New room statuses.
    pub statuses: Vec<(String, RoomStatus)>,
    /// A new mailbox cursor.
    pub mailbox_cursor: Option<u64>,
    /// Sender-keys rooms, Olm sessions and the address book: records to upsert or delete
    /// (see [`ClientStore::records`]).
    pub records: Vec<Record>,
}

/// One stored record: key (prefix stripped) and value (secret: wiped on drop).
pub type RecordRow = (String, Zeroizing<Vec<u8>>);

/// The profile's state file.
pub struct ClientStore {
    conn: Connection,
}

impl std::fmt::Debug for ClientStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientStore")
    }
}

impl ClientStore {
    /// Opens (creating) the state file.
    pub fn open(path: &Path) -> Result<ClientStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(ClientStore { conn })
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Sets a metadata value.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])?;
        Ok(())
    }

    /// Everything the engine persisted.
    pub fn engine_state(&self) -> Result<StoredState, StoreError> {
        let mut state = StoredState::default();
        let mut q = self.conn.prepare("SELECT group_id, snapshot FROM mls_groups ORDER BY group_id")?;
        for row in q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (id, snapshot) = row?;
            state.groups.push(StoredGroup {
                group_id: GroupId::new(id),
                snapshot: snapshot.into(),
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
            group.epochs.push(StoredEpoch { epoch: epoch as u64, data: data.into() });
        }
        let mut q = self.conn.prepare("SELECT group_id, seq, entry FROM mls_journal ORDER BY group_id, seq")?;
        for row in q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))? {
            let (id, seq, entry) = row?;
            let group = state
                .groups
                .iter_mut()
                .find(|g| g.group_id.as_bytes() == id.as_slice())
                .ok_or_else(|| StoreError::Corrupt("a journal row without its group".into()))?;
            group.journal.push(JournalRow { seq: seq as u64, entry: entry.into() });
        }
        let mut q = self.conn.prepare("SELECT id, data FROM mls_key_packages ORDER BY id")?;
        for row in q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (id, data) = row?;
            state.key_packages.push(StoredKeyPackage { id, data: data.into() });
        }
        Ok(state)
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
        apply_changes(&tx, &merged)?;
        for r in &batch.rooms {
            tx.execute(
                "INSERT OR REPLACE INTO rooms (link, server, name, mode, group_id, cursor, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![r.link, r.server, r.name, r.mode.as_str(), r.group_id, r.cursor as i64, r.status.as_str()],
            )?;
        }
        for m in &batch.messages {
            tx.execute(
                "INSERT OR IGNORE INTO messages (room, seq, kind, sender, ts, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![m.room, m.seq as i64, m.kind.as_str(), m.sender.as_bytes().as_slice(), m.ts, m.body],
            )?;
        }
        for (link, cursor) in &batch.cursors {
            tx.execute("UPDATE rooms SET cursor = max(cursor, ?2) WHERE link = ?1", params![link, *cursor as i64])?;
        }
        for (link, status) in &batch.statuses {
            tx.execute("UPDATE rooms SET status = ?2 WHERE link = ?1", params![link, status.as_str()])?;
        }
        for r in &batch.records {
            match &r.value {
                Some(v) => tx.execute(
                    "INSERT OR REPLACE INTO sk_records (key, value) VALUES (?1, ?2)",
                    params![r.key, v.as_slice()],
                )?,
                None => tx.execute("DELETE FROM sk_records WHERE key = ?1", [&r.key])?,
            };
        }
        if let Some(c) = batch.mailbox_cursor {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('mailbox_cursor', ?1)",
                [c.to_be_bytes().to_vec()],
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
            out.push((k[prefix.len()..].to_string(), v));
        }
        Ok(out)
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
        let mut q = self
            .conn
            .prepare("SELECT seq, kind, sender, ts, body FROM messages WHERE room = ?1 AND seq > ?2 ORDER BY seq")?;
        let rows = q.query_map(params![link, after as i64], |r| {
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
                body,
            });
        }
        Ok(out)
    }
}

fn apply_changes(tx: &Transaction<'_>, changes: &Changes) -> Result<(), StoreError> {
    for g in &changes.groups {
        let id = g.group_id.as_bytes();
        match &g.snapshot {
            SnapshotWrite::Unchanged => {}
            SnapshotWrite::Checkpoint(snapshot) => {
                tx.execute(
                    "INSERT OR REPLACE INTO mls_groups (group_id, snapshot) VALUES (?1, ?2)",
                    params![id, snapshot.as_slice()],
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
                    params![id, e.epoch as i64, data.as_slice()],
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
            insert.execute(params![id, r.seq as i64, r.entry.as_slice()])?;
        }
    }
    for k in &changes.key_packages {
        match &k.data {
            Some(data) => tx.execute(
                "INSERT OR REPLACE INTO mls_key_packages (id, data) VALUES (?1, ?2)",
                params![k.id, data.as_slice()],
            )?,
            None => tx.execute("DELETE FROM mls_key_packages WHERE id = ?1", [&k.id])?,
        };
    }
    Ok(())
}
