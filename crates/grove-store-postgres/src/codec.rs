//! Conversions between domain values and stored columns, and error mapping.
//!
//! Anything read back that does not decode is [`StoreError::Corrupt`], never a panic.

pub(crate) use grove_store::columns::{
    cursor_to_db, key_kind_from_db, limit_to_db, seq_from_db, seq_to_db, u64_from_db, u64_to_db, user_from_db,
    users_from_db, users_to_db,
};
use grove_store::{RoomRecord, StoreError};
use grove_wire::api::{Entry, EntryKind, KeyCount, KeyKind, MailboxEntry, RoomMode};
use tokio_postgres::Row;

/// Maps a driver error: a server-side error is `Backend` (with its SQLSTATE), a lost or
/// unusable connection is `Unavailable`.
pub(crate) fn db_err(e: tokio_postgres::Error) -> StoreError {
    let failure = match e.as_db_error() {
        // 53100 disk_full: the database server's disk is full.
        Some(db) if *db.code() == tokio_postgres::error::SqlState::DISK_FULL => StoreError::full("postgres 53100"),
        Some(db) => StoreError::backend(format!("postgres {}", db.code().code())),
        None if e.is_closed() => StoreError::unavailable("postgres connection closed"),
        None => StoreError::unavailable("postgres"),
    };
    failure.caused_by(e)
}

/// A column that does not have the schema's type.
pub(crate) fn decode_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::corrupt("undecodable column").caused_by(e)
}

/// A typed column of a row, `Corrupt` if it does not decode.
pub(crate) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(decode_err)
}

/// The prefix of a text argument before its first NUL. PostgreSQL `text` cannot hold NUL and
/// no stored name contains one, so for lookups and `>` bounds the prefix is equivalent.
pub(crate) fn text_prefix(s: &str) -> (&str, bool) {
    match s.find('\0') {
        Some(i) => (&s[..i], true),
        None => (s, false),
    }
}

/// The columns [`room_from_row`] expects, in order.
pub(crate) const ROOM_COLUMNS: &str = "id, name, mode, public, created_by, created_at, epoch, \
     head, state_version, state, members, admins";

pub(crate) fn room_from_row(row: &Row) -> Result<RoomRecord, StoreError> {
    let mode: &str = col(row, 2)?;
    let created_by: &[u8] = col(row, 4)?;
    let members: &[u8] = col(row, 10)?;
    let admins: &[u8] = col(row, 11)?;
    Ok(RoomRecord {
        id: col(row, 0)?,
        name: col(row, 1)?,
        mode: RoomMode::parse(mode).ok_or_else(|| StoreError::corrupt(format!("unknown room mode {mode:?}")))?,
        public: col(row, 3)?,
        created_by: user_from_db(created_by, "rooms.created_by")?,
        created_at: col(row, 5)?,
        epoch: u64_from_db(col(row, 6)?),
        head: seq_from_db(col(row, 7)?)?,
        state_version: u64_from_db(col(row, 8)?),
        state: col(row, 9)?,
        members: users_from_db(members, "rooms.members")?,
        admins: users_from_db(admins, "rooms.admins")?,
    })
}

/// Columns: seq, kind, epoch, sender, ts, body.
pub(crate) fn entry_from_row(row: &Row) -> Result<Entry, StoreError> {
    let kind: &str = col(row, 1)?;
    let sender: &[u8] = col(row, 3)?;
    Ok(Entry {
        seq: seq_from_db(col(row, 0)?)?,
        kind: EntryKind::parse(kind).ok_or_else(|| StoreError::corrupt(format!("unknown entry kind {kind:?}")))?,
        epoch: u64_from_db(col(row, 2)?),
        sender: user_from_db(sender, "entries.sender")?,
        ts: col(row, 4)?,
        body: col(row, 5)?,
    })
}

/// Columns: seq, sender, ts, expires_at, body.
pub(crate) fn mail_from_row(row: &Row) -> Result<MailboxEntry, StoreError> {
    let sender: &[u8] = col(row, 1)?;
    Ok(MailboxEntry {
        seq: seq_from_db(col(row, 0)?)?,
        sender: user_from_db(sender, "mailbox.sender")?,
        ts: col(row, 2)?,
        expires_at: col(row, 3)?,
        body: col(row, 4)?,
    })
}

/// The query whose rows [`key_counts_from_rows`] folds: `$1` is the owner.
pub(crate) const KEY_COUNTS_SQL: &str =
    "SELECT kind, last_resort, count(*) FROM key_items WHERE owner = $1 GROUP BY kind, last_resort";

/// The owner's key counts, in the order of [`KeyKind`], only kinds the owner has.
pub(crate) fn key_counts_from_rows(rows: &[Row]) -> Result<Vec<KeyCount>, StoreError> {
    let kinds = [KeyKind::MlsKeyPackage, KeyKind::OlmOneTime, KeyKind::OlmFallback];
    let mut one_time = [0u64; 3];
    let mut last_resort = [false; 3];
    for row in rows {
        let kind = key_kind_from_db(col(row, 0)?)?;
        let i = kinds
            .iter()
            .position(|k| *k == kind)
            .ok_or_else(|| StoreError::backend(format!("key kind {} missing from the count table", kind.as_str())))?;
        let lr: bool = col(row, 1)?;
        let n: i64 = col(row, 2)?;
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
