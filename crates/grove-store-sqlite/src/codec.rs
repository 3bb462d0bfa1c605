//! Conversions between domain values and stored columns, and error mapping.
//!
//! Anything read back that does not decode is [`StoreError::Corrupt`], never a panic.

use grove_store::{RoomRecord, StoreError};
use grove_wire::api::{Entry, EntryKind, KeyCount, KeyKind, MailboxEntry, RoomMode};
use grove_wire::UserId;
use rusqlite::{Error, ErrorCode, Row};

/// Maps a SQLite error: decoding failures and corruption codes are `Corrupt`, the rest `Backend`.
pub(crate) fn db_err(e: Error) -> StoreError {
    match &e {
        Error::InvalidColumnType(..)
        | Error::FromSqlConversionFailure(..)
        | Error::IntegralValueOutOfRange(..)
        | Error::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
        Error::SqliteFailure(f, _) if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// A sequence number or head for storage; the store assigns them, so they fit easily.
pub(crate) fn seq_to_db(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("sequence number {v} out of range")))
}

/// A stored sequence number or head; negative is corrupt.
pub(crate) fn seq_from_db(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative sequence number {v}")))
}

/// A cursor (`seq > after`) as a SQL bound; `None` when no stored seq can be greater.
pub(crate) fn cursor_to_db(after: u64) -> Option<i64> {
    i64::try_from(after).ok()
}

/// Epochs and state versions are opaque u64 counters, stored bit-for-bit.
pub(crate) fn u64_to_db(v: u64) -> i64 {
    v as i64
}

/// Inverse of [`u64_to_db`].
pub(crate) fn u64_from_db(v: i64) -> u64 {
    v as u64
}

/// A limit for SQL `LIMIT`.
pub(crate) fn limit_to_db(limit: u32) -> i64 {
    i64::from(limit)
}

pub(crate) fn user_from_db(bytes: &[u8], what: &str) -> Result<UserId, StoreError> {
    UserId::from_slice(bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: {} bytes, a user id is 32", bytes.len())))
}

pub(crate) fn users_to_db(users: &[UserId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(users.len() * 32);
    for u in users {
        out.extend_from_slice(u.as_bytes());
    }
    out
}

pub(crate) fn users_from_db(bytes: &[u8], what: &str) -> Result<Vec<UserId>, StoreError> {
    if bytes.len() % 32 != 0 {
        return Err(StoreError::Corrupt(format!("{what}: {} bytes, not a multiple of 32", bytes.len())));
    }
    bytes.chunks_exact(32).map(|c| user_from_db(c, what)).collect()
}

pub(crate) fn mode_from_db(s: &str) -> Result<RoomMode, StoreError> {
    RoomMode::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown room mode {s:?}")))
}

pub(crate) fn entry_kind_from_db(s: &str) -> Result<EntryKind, StoreError> {
    EntryKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown entry kind {s:?}")))
}

pub(crate) fn key_kind_from_db(s: &str) -> Result<KeyKind, StoreError> {
    KeyKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown key kind {s:?}")))
}

pub(crate) fn bool_from_db(v: i64, what: &str) -> Result<bool, StoreError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StoreError::Corrupt(format!("{what}: {v} is not a boolean"))),
    }
}

/// The columns [`room_from_row`] expects, in order.
pub(crate) const ROOM_COLUMNS: &str = "id, name, mode, public, created_by, created_at, epoch, \
     head, state_version, state, members, admins";

pub(crate) fn room_from_row(row: &Row<'_>) -> Result<RoomRecord, StoreError> {
    let mode: String = row.get(2).map_err(db_err)?;
    let created_by: Vec<u8> = row.get(4).map_err(db_err)?;
    let members: Vec<u8> = row.get(10).map_err(db_err)?;
    let admins: Vec<u8> = row.get(11).map_err(db_err)?;
    Ok(RoomRecord {
        id: row.get(0).map_err(db_err)?,
        name: row.get(1).map_err(db_err)?,
        mode: mode_from_db(&mode)?,
        public: bool_from_db(row.get(3).map_err(db_err)?, "rooms.public")?,
        created_by: user_from_db(&created_by, "rooms.created_by")?,
        created_at: row.get(5).map_err(db_err)?,
        epoch: u64_from_db(row.get(6).map_err(db_err)?),
        head: seq_from_db(row.get(7).map_err(db_err)?)?,
        state_version: u64_from_db(row.get(8).map_err(db_err)?),
        state: row.get(9).map_err(db_err)?,
        members: users_from_db(&members, "rooms.members")?,
        admins: users_from_db(&admins, "rooms.admins")?,
    })
}

/// Columns: seq, kind, epoch, sender, ts, body.
pub(crate) fn entry_from_row(row: &Row<'_>) -> Result<Entry, StoreError> {
    let kind: String = row.get(1).map_err(db_err)?;
    let sender: Vec<u8> = row.get(3).map_err(db_err)?;
    Ok(Entry {
        seq: seq_from_db(row.get(0).map_err(db_err)?)?,
        kind: entry_kind_from_db(&kind)?,
        epoch: u64_from_db(row.get(2).map_err(db_err)?),
        sender: user_from_db(&sender, "entries.sender")?,
        ts: row.get(4).map_err(db_err)?,
        body: row.get(5).map_err(db_err)?,
    })
}

/// Columns: seq, sender, ts, expires_at, body.
pub(crate) fn mail_from_row(row: &Row<'_>) -> Result<MailboxEntry, StoreError> {
    let sender: Vec<u8> = row.get(1).map_err(db_err)?;
    Ok(MailboxEntry {
        seq: seq_from_db(row.get(0).map_err(db_err)?)?,
        sender: user_from_db(&sender, "mailbox.sender")?,
        ts: row.get(2).map_err(db_err)?,
        expires_at: row.get(3).map_err(db_err)?,
        body: row.get(4).map_err(db_err)?,
    })
}

/// The owner's key counts, in the order of [`KeyKind`], only kinds the owner has.
pub(crate) fn key_counts(conn: &rusqlite::Connection, owner: &UserId) -> Result<Vec<KeyCount>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT kind, last_resort, COUNT(*) FROM key_items WHERE owner = ?1 \
             GROUP BY kind, last_resort",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query([owner.as_bytes().as_slice()]).map_err(db_err)?;
    let kinds = [KeyKind::MlsKeyPackage, KeyKind::OlmOneTime, KeyKind::OlmFallback];
    let mut one_time = [0u64; 3];
    let mut last_resort = [false; 3];
    while let Some(row) = rows.next().map_err(db_err)? {
        let kind: String = row.get(0).map_err(db_err)?;
        let kind = key_kind_from_db(&kind)?;
        let i = kinds
            .iter()
            .position(|k| *k == kind)
            .ok_or_else(|| StoreError::Backend(format!("key kind {} missing from the count table", kind.as_str())))?;
        let lr = bool_from_db(row.get(1).map_err(db_err)?, "key_items.last_resort")?;
        let n: i64 = row.get(2).map_err(db_err)?;
        if lr {
            last_resort[i] = true;
        } else {
            one_time[i] = seq_from_db(n)?;
        }
    }
    Ok(kinds
        .iter()
        .enumerate()
        .filter(|(i, _)| one_time[*i] > 0 || last_resort[*i])
        .map(|(i, kind)| KeyCount { kind: *kind, one_time: one_time[i], last_resort: last_resort[i] })
        .collect())
}
