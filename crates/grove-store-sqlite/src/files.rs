//! Attachment metadata: the writes (run by the writer thread, each under its savepoint) and
//! the reads (on the read pool).

use grove_store::columns::user_from_db;
use grove_store::{CreateFileOutcome, FilePartOutcome, FileQuota, FileRecord, FileTotals, NewFile, Result, StoreError};
use grove_wire::attachment::BlobId;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::codec::{db_err, seq_from_db, seq_to_db};
use crate::writer::{pending, Finish, Reply};

/// The columns [`file_from_row`] reads, in order.
pub(crate) const FILE_COLUMNS: &str = "blob, room, owner, size, part_bytes, received, created_at, expires_at";

/// A write of attachment metadata.
pub(crate) enum FileOp {
    Create(NewFile, FileQuota, Reply<CreateFileOutcome>),
    Part(BlobId, u64, u64, [u8; 32], i64, Reply<FilePartOutcome>),
    Delete(BlobId, Reply<bool>),
}

impl FileOp {
    pub(crate) fn run(self, conn: &Connection) -> Box<dyn Finish> {
        match self {
            FileOp::Create(file, quota, reply) => pending(reply, create(conn, file, quota)),
            FileOp::Part(blob, offset, len, sha256, expires, reply) => {
                pending(reply, part(conn, &blob, offset, len, &sha256, expires))
            }
            FileOp::Delete(blob, reply) => pending(reply, delete(conn, &blob)),
        }
    }

    pub(crate) fn fail(self, e: StoreError) {
        match self {
            FileOp::Create(_, _, r) => drop(r.send(Err(e))),
            FileOp::Part(_, _, _, _, _, r) => drop(r.send(Err(e))),
            FileOp::Delete(_, r) => drop(r.send(Err(e))),
        }
    }
}

fn blob_from_db(bytes: &[u8]) -> Result<BlobId> {
    <[u8; 16]>::try_from(bytes)
        .map(BlobId)
        .map_err(|_| StoreError::corrupt(format!("a blob id of {} bytes", bytes.len())))
}

pub(crate) fn file_from_row(row: &Row<'_>) -> Result<FileRecord> {
    let blob: Vec<u8> = row.get(0).map_err(db_err)?;
    let owner: Vec<u8> = row.get(2).map_err(db_err)?;
    Ok(FileRecord {
        blob: blob_from_db(&blob)?,
        room: row.get(1).map_err(db_err)?,
        owner: user_from_db(&owner, "files.owner")?,
        size: seq_from_db(row.get(3).map_err(db_err)?)?,
        part_bytes: seq_from_db(row.get(4).map_err(db_err)?)?,
        received: seq_from_db(row.get(5).map_err(db_err)?)?,
        created_at: row.get(6).map_err(db_err)?,
        expires_at: row.get(7).map_err(db_err)?,
    })
}

fn used(conn: &Connection, sql: &str, key: &dyn rusqlite::ToSql) -> Result<u64> {
    let n: i64 = conn.prepare_cached(sql).and_then(|mut s| s.query_row([key], |r| r.get(0))).map_err(db_err)?;
    seq_from_db(n)
}

fn create(conn: &Connection, file: NewFile, quota: FileQuota) -> Result<CreateFileOutcome> {
    let owner = file.owner.as_bytes().as_slice();
    let user_used = used(conn, "SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?1", &owner)?;
    if user_used.saturating_add(file.size) > quota.per_user {
        return Ok(CreateFileOutcome::UserQuota { used: user_used });
    }
    let room_used = used(conn, "SELECT COALESCE(SUM(size), 0) FROM files WHERE room = ?1", &file.room)?;
    if room_used.saturating_add(file.size) > quota.per_room {
        return Ok(CreateFileOutcome::RoomQuota { used: room_used });
    }
    let (size, part_bytes) = (seq_to_db(file.size)?, seq_to_db(file.part_bytes)?);
    conn.prepare_cached(&format!("INSERT INTO files ({FILE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)"))
        .and_then(|mut s| {
            s.execute(params![
                file.blob.0.as_slice(),
                file.room,
                owner,
                size,
                part_bytes,
                file.created_at,
                file.expires_at
            ])
        })
        .map_err(db_err)?;
    Ok(CreateFileOutcome::Created(FileRecord {
        blob: file.blob,
        room: file.room,
        owner: file.owner,
        size: file.size,
        part_bytes: file.part_bytes,
        received: 0,
        created_at: file.created_at,
        expires_at: file.expires_at,
    }))
}

pub(crate) fn read(conn: &Connection, blob: &BlobId) -> Result<Option<FileRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE blob = ?1")).map_err(db_err)?;
    let mut rows = stmt.query([blob.0.as_slice()]).map_err(db_err)?;
    match rows.next().map_err(db_err)? {
        Some(row) => file_from_row(row).map(Some),
        None => Ok(None),
    }
}

fn part(
    conn: &Connection,
    blob: &BlobId,
    offset: u64,
    len: u64,
    sha256: &[u8; 32],
    expires_when_complete: i64,
) -> Result<FilePartOutcome> {
    let Some(mut f) = read(conn, blob)? else { return Ok(FilePartOutcome::NoSuchFile) };
    let Some(end) = offset.checked_add(len).filter(|&e| e <= f.size && f.received == offset) else {
        let held = i64::try_from(offset).ok().map(|at| recorded_hash(conn, blob, at)).transpose()?.flatten();
        return Ok(if held.as_ref() == Some(sha256) { FilePartOutcome::Held(f) } else { FilePartOutcome::Conflict(f) });
    };
    f.received = end;
    if f.complete() {
        f.expires_at = expires_when_complete;
    }
    let (at, end) = (seq_to_db(offset)?, seq_to_db(end)?);
    conn.prepare_cached("UPDATE files SET received = ?2, expires_at = ?3 WHERE blob = ?1")
        .and_then(|mut s| s.execute(params![blob.0.as_slice(), end, f.expires_at]))
        .map_err(db_err)?;
    conn.prepare_cached("INSERT INTO file_parts (blob, at, sha256) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![blob.0.as_slice(), at, sha256.as_slice()]))
        .map_err(db_err)?;
    Ok(FilePartOutcome::Recorded(f))
}

fn hash_from_db(bytes: &[u8]) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).map_err(|_| StoreError::corrupt(format!("a part hash of {} bytes", bytes.len())))
}

/// The hash recorded for the part of `blob` at `offset`, if any.
fn recorded_hash(conn: &Connection, blob: &BlobId, offset: i64) -> Result<Option<[u8; 32]>> {
    let got: Option<Vec<u8>> = conn
        .prepare_cached("SELECT sha256 FROM file_parts WHERE blob = ?1 AND at = ?2")
        .and_then(|mut s| s.query_row(params![blob.0.as_slice(), offset], |r| r.get(0)).optional())
        .map_err(db_err)?;
    got.map(|h| hash_from_db(&h)).transpose()
}

pub(crate) fn part_hashes(conn: &Connection, blob: &BlobId) -> Result<Vec<(u64, [u8; 32])>> {
    let mut stmt =
        conn.prepare_cached("SELECT at, sha256 FROM file_parts WHERE blob = ?1 ORDER BY at").map_err(db_err)?;
    let mut rows = stmt.query([blob.0.as_slice()]).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let hash: Vec<u8> = row.get(1).map_err(db_err)?;
        out.push((seq_from_db(row.get(0).map_err(db_err)?)?, hash_from_db(&hash)?));
    }
    Ok(out)
}

fn delete(conn: &Connection, blob: &BlobId) -> Result<bool> {
    conn.prepare_cached("DELETE FROM file_parts WHERE blob = ?1")
        .and_then(|mut s| s.execute([blob.0.as_slice()]))
        .map_err(db_err)?;
    let n = conn
        .prepare_cached("DELETE FROM files WHERE blob = ?1")
        .and_then(|mut s| s.execute([blob.0.as_slice()]))
        .map_err(db_err)?;
    Ok(n > 0)
}

pub(crate) fn expired(conn: &Connection, now: i64, limit: u32) -> Result<Vec<FileRecord>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE expires_at <= ?1 ORDER BY expires_at, blob LIMIT ?2"
        ))
        .map_err(db_err)?;
    let mut rows = stmt.query(params![now, i64::from(limit)]).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        out.push(file_from_row(row)?);
    }
    Ok(out)
}

pub(crate) fn totals(conn: &Connection) -> Result<FileTotals> {
    let (files, bytes): (i64, i64) = conn
        .prepare_cached("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .optional()
        .map_err(db_err)?
        .unwrap_or((0, 0));
    Ok(FileTotals { files: seq_from_db(files)?, bytes: seq_from_db(bytes)? })
}
