//! Fault reports (`Store::record_report`, `false_reports`, `forget_reports`). Rare writes: each
//! runs on a connection of its own in one `BEGIN IMMEDIATE` transaction, which SQLite
//! serialises with the writer thread's.

use std::path::Path;

use grove_store::columns::user_from_db;
use grove_store::{Result, RoomId};
use grove_wire::UserId;
use rusqlite::{params, TransactionBehavior};

use crate::admin::writer;
use crate::codec::db_err;

type Reports = Vec<(UserId, Option<Vec<u8>>)>;

pub(crate) fn record(
    path: &Path,
    room: RoomId,
    seq: u64,
    reporter: &UserId,
    key: Option<Vec<u8>>,
    keep: usize,
) -> Result<Reports> {
    let mut conn = writer(path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let others = i64::try_from(keep.max(1) - 1).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT OR REPLACE INTO fault_reports (room, seq, reporter, membership_key) VALUES (?1, ?2, ?3, ?4)",
        params![room, seq, reporter.as_bytes().as_slice(), key],
    )
    .map_err(db_err)?;
    tx.execute(
        "DELETE FROM fault_reports WHERE room = ?1 AND seq <> ?2 AND seq NOT IN \
           (SELECT DISTINCT seq FROM fault_reports WHERE room = ?1 AND seq <> ?2 ORDER BY seq DESC LIMIT ?3)",
        params![room, seq, others],
    )
    .map_err(db_err)?;
    let mut out = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT reporter, membership_key FROM fault_reports WHERE room = ?1 AND seq = ?2 ORDER BY reporter",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query(params![room, seq]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let user: Vec<u8> = row.get(0).map_err(db_err)?;
            let key: Option<Vec<u8>> = row.get(1).map_err(db_err)?;
            out.push((user_from_db(&user, "fault_reports.reporter")?, key));
        }
    }
    tx.commit().map_err(db_err)?;
    Ok(out)
}

pub(crate) fn false_reports(path: &Path, room: RoomId, user: &UserId, add: bool) -> Result<u32> {
    let conn = writer(path)?;
    let user = user.as_bytes().as_slice();
    if add {
        conn.execute(
            "INSERT INTO false_reports (room, reporter, count) VALUES (?1, ?2, 1) \
             ON CONFLICT (room, reporter) DO UPDATE SET count = count + 1",
            params![room, user],
        )
        .map_err(db_err)?;
    }
    let n: Option<i64> = rusqlite::OptionalExtension::optional(conn.query_row(
        "SELECT count FROM false_reports WHERE room = ?1 AND reporter = ?2",
        params![room, user],
        |r| r.get(0),
    ))
    .map_err(db_err)?;
    Ok(u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
}

pub(crate) fn forget(path: &Path, room: RoomId, seq: u64) -> Result<()> {
    let conn = writer(path)?;
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    conn.execute("DELETE FROM fault_reports WHERE room = ?1 AND seq >= ?2", params![room, seq]).map_err(db_err)?;
    Ok(())
}
