//! The operator's reads and writes (`grove admin`). Reads run on the read pool; the two writes
//! (deleting a room, blocking a key) are rare, so each runs on a connection of its own in one
//! `BEGIN IMMEDIATE` transaction (SQLite serialises it with the writer thread's), and deleting
//! a room then checkpoints and truncates the WAL: with `secure_delete` on that connection, the
//! room's rows are overwritten, not just unlinked, in the database file, and no copy of them
//! stays behind in the WAL.

use std::collections::BTreeMap;
use std::path::Path;

use grove_store::columns::user_from_db;
use grove_store::{DeletedRoom, Result, RoomOverview, StoreError, UserUsage};
use grove_wire::UserId;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::codec::{db_err, room_from_row, seq_from_db, ROOM_COLUMNS};

pub(crate) fn rooms_overview(conn: &Connection) -> Result<Vec<RoomOverview>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ROOM_COLUMNS}, \
               (SELECT COALESCE(SUM(length(body)), 0) FROM entries WHERE entries.room = rooms.id), \
               (SELECT MAX(ts) FROM entries WHERE entries.room = rooms.id) \
             FROM rooms ORDER BY name"
        ))
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let room = room_from_row(row)?;
        let bytes: i64 = row.get(12).map_err(db_err)?;
        let last: Option<i64> = row.get(13).map_err(db_err)?;
        let last_activity = last.unwrap_or(room.created_at);
        out.push(RoomOverview { room, bytes: seq_from_db(bytes)?, last_activity });
    }
    Ok(out)
}

pub(crate) fn users_usage(conn: &Connection) -> Result<Vec<UserUsage>> {
    let mut out: BTreeMap<UserId, UserUsage> = BTreeMap::new();
    let blank = |user: UserId| UserUsage { user, mailbox_messages: 0, mailbox_bytes: 0, key_items: 0 };
    {
        let mut stmt = conn
            .prepare_cached("SELECT owner, COUNT(*), COALESCE(SUM(length(body)), 0) FROM mailbox GROUP BY owner")
            .map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let owner: Vec<u8> = row.get(0).map_err(db_err)?;
            let user = user_from_db(&owner, "mailbox.owner")?;
            let u = out.entry(user).or_insert_with(|| blank(user));
            u.mailbox_messages = seq_from_db(row.get(1).map_err(db_err)?)?;
            u.mailbox_bytes = seq_from_db(row.get(2).map_err(db_err)?)?;
        }
    }
    let mut stmt = conn.prepare_cached("SELECT owner, COUNT(*) FROM key_items GROUP BY owner").map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    while let Some(row) = rows.next().map_err(db_err)? {
        let owner: Vec<u8> = row.get(0).map_err(db_err)?;
        let user = user_from_db(&owner, "key_items.owner")?;
        out.entry(user).or_insert_with(|| blank(user)).key_items = seq_from_db(row.get(1).map_err(db_err)?)?;
    }
    Ok(out.into_values().collect())
}

pub(crate) fn blocked_users(conn: &Connection) -> Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT owner FROM blocked ORDER BY owner").map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let user: Vec<u8> = row.get(0).map_err(db_err)?;
        out.push(user_from_db(&user, "blocked.user")?);
    }
    Ok(out)
}

/// A connection of its own for one of the operator's writes.
pub(crate) fn writer(path: &Path) -> Result<Connection> {
    let conn =
        Connection::open(path).map_err(|e| StoreError::unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(crate::BUSY_TIMEOUT).map_err(db_err)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
    conn.pragma_update(None, "secure_delete", true).map_err(db_err)?;
    Ok(conn)
}

pub(crate) fn delete_room(path: &Path, name: &str) -> Result<Option<DeletedRoom>> {
    let mut conn = writer(path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM rooms WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(db_err)?;
    let Some(id) = id else { return Ok(None) };
    let mut files = Vec::new();
    {
        let sql = format!("SELECT {} FROM files WHERE room = ?1", crate::files::FILE_COLUMNS);
        let mut stmt = tx.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = stmt.query([id]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            files.push(crate::files::file_from_row(row)?);
        }
    }
    let entries = tx.execute("DELETE FROM entries WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM room_states WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM file_parts WHERE blob IN (SELECT blob FROM files WHERE room = ?1)", [id])
        .map_err(db_err)?;
    tx.execute("DELETE FROM files WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM room_links WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM join_requests WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM link_group_infos WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM fault_reports WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM false_reports WHERE room = ?1", [id]).map_err(db_err)?;
    tx.execute("DELETE FROM rooms WHERE id = ?1", [id]).map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    // Copy the overwritten pages into the database file and empty the WAL, which still held
    // the room's rows as earlier transactions wrote them.
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(db_err)?;
    if busy != 0 {
        tracing::warn!(room = name, "the room is deleted; its rows stay in the WAL until the next checkpoint");
    }
    Ok(Some(DeletedRoom { id, entries: entries as u64, files }))
}

/// Deletes application entries accepted before `before` (log retention), with `secure_delete`
/// so their bytes are overwritten, then checkpoints the WAL (truncating it) so none stay there.
pub(crate) fn purge_messages(path: &Path, before: i64) -> Result<u64> {
    let conn = writer(path)?;
    let n = conn.execute("DELETE FROM entries WHERE kind = 'application' AND ts < ?1", [before]).map_err(db_err)?;
    if n > 0 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).map_err(db_err)?;
        if busy != 0 {
            tracing::debug!("purged messages stay in the WAL until the next checkpoint");
        }
    }
    Ok(n as u64)
}

pub(crate) fn set_blocked(path: &Path, user: &UserId, blocked: bool, at: i64) -> Result<bool> {
    let conn = writer(path)?;
    let user = user.as_bytes().as_slice();
    let n = if blocked {
        conn.execute(
            "INSERT INTO blocked (owner, since) VALUES (?1, ?2) ON CONFLICT (owner) DO NOTHING",
            params![user, at],
        )
    } else {
        conn.execute("DELETE FROM blocked WHERE owner = ?1", [user])
    }
    .map_err(db_err)?;
    Ok(n > 0)
}
