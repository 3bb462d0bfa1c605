//! Conversions between domain values and stored columns, and error mapping.
//!
//! Anything read back that does not decode is [`StoreError::Corrupt`], never a panic.

pub(crate) use grove_store::columns::{
    cursor_to_db, entry_kind_from_db, key_kind_from_db, limit_to_db, mode_from_db, seq_from_db, seq_to_db, u64_from_db,
    u64_to_db, user_from_db, users_from_db, users_to_db,
};
use grove_store::{RoomRecord, StoreError};
use grove_wire::api::{Entry, KeyCount, KeyKind, MailboxEntry};
use grove_wire::UserId;
use rusqlite::{Error, ErrorCode, Row};

/// Maps a SQLite error: decoding failures and corruption codes are `Corrupt`, the rest `Backend`.
pub(crate) fn db_err(e: Error) -> StoreError {
    let failure = match &e {
        Error::InvalidColumnType(..)
        | Error::FromSqlConversionFailure(..)
        | Error::IntegralValueOutOfRange(..)
        | Error::Utf8Error(..) => StoreError::corrupt("a column does not decode"),
        Error::SqliteFailure(f, _) if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::corrupt("the database file is corrupt")
        }
        // "database or disk is full": the disk, or the page cap (`max_page_count`).
        Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => StoreError::full("sqlite"),
        _ => StoreError::backend("sqlite"),
    };
    failure.caused_by(e)
}

pub(crate) fn bool_from_db(v: i64, what: &str) -> Result<bool, StoreError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StoreError::corrupt(format!("{what}: {v} is not a boolean"))),
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
            .ok_or_else(|| StoreError::backend(format!("key kind {} missing from the count table", kind.as_str())))?;
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn driver_errors_keep_their_source() {
        let e = db_err(Error::InvalidQuery);
        assert!(matches!(e, StoreError::Backend { .. }));
        assert!(e.source().is_some_and(|s| s.to_string() == Error::InvalidQuery.to_string()));
        let corrupt = db_err(Error::IntegralValueOutOfRange(0, -1));
        assert!(matches!(corrupt, StoreError::Corrupt { .. }) && corrupt.source().is_some());
    }
}
