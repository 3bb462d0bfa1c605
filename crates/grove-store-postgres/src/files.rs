//! Attachment metadata. These writes are rare and small, so they do not go through the
//! group-committing writer: each runs on a pooled connection, in its own transaction or as one
//! statement. Quotas are decided under two advisory transaction locks (the uploader's, then the
//! room's: always in that order, so two uploads cannot deadlock), so concurrent instances
//! cannot both slip under a quota; a part is recorded by one compare-and-set `UPDATE` that also
//! keeps the part's hash.

use grove_store::{CreateFileOutcome, FilePartOutcome, FileQuota, FileRecord, FileTotals, NewFile, Result, StoreError};
use grove_wire::attachment::BlobId;
use tokio_postgres::Row;

use crate::codec::{col, db_err, seq_from_db, seq_to_db, user_from_db};
use crate::PostgresStore;

/// Advisory lock namespaces (first key of `pg_advisory_xact_lock(int4, int4)`), apart from the
/// writer's.
const LOCK_FILE_OWNER: i32 = 0x6772_0003;
const LOCK_FILE_ROOM: i32 = 0x6772_0004;

pub(crate) const FILE_COLUMNS: &str = "blob, room, owner, size, part_bytes, received, created_at, expires_at";

pub(crate) fn file_from_row(row: &Row) -> Result<FileRecord> {
    let blob: Vec<u8> = col(row, 0)?;
    let owner: Vec<u8> = col(row, 2)?;
    Ok(FileRecord {
        blob: <[u8; 16]>::try_from(blob.as_slice())
            .map(BlobId)
            .map_err(|_| StoreError::corrupt(format!("a blob id of {} bytes", blob.len())))?,
        room: col(row, 1)?,
        owner: user_from_db(&owner, "files.owner")?,
        size: seq_from_db(col(row, 3)?)?,
        part_bytes: seq_from_db(col(row, 4)?)?,
        received: seq_from_db(col(row, 5)?)?,
        created_at: col(row, 6)?,
        expires_at: col(row, 7)?,
    })
}

/// A 32-bit lock key from bytes (collisions only serialise two unrelated uploads).
fn lock_key(bytes: &[u8]) -> i32 {
    let mut k = [0u8; 4];
    for (i, b) in bytes.iter().enumerate() {
        k[i % 4] ^= b;
    }
    i32::from_be_bytes(k)
}

impl PostgresStore {
    pub(crate) async fn files_create(&self, file: NewFile, quota: FileQuota) -> Result<CreateFileOutcome> {
        let mut client = self.pool.get().await.map_err(crate::pool_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let owner = file.owner.as_bytes().to_vec();
        tx.execute("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", &[&LOCK_FILE_OWNER, &lock_key(&owner)])
            .await
            .map_err(db_err)?;
        let room_key = lock_key(&file.room.to_be_bytes());
        tx.execute("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", &[&LOCK_FILE_ROOM, &room_key])
            .await
            .map_err(db_err)?;
        let row = tx
            .query_one(
                "SELECT (SELECT COALESCE(SUM(size), 0)::bigint FROM files WHERE owner = $1), \
                        (SELECT COALESCE(SUM(size), 0)::bigint FROM files WHERE room = $2)",
                &[&owner, &file.room],
            )
            .await
            .map_err(db_err)?;
        let user_used = seq_from_db(col(&row, 0)?)?;
        let room_used = seq_from_db(col(&row, 1)?)?;
        if user_used.saturating_add(file.size) > quota.per_user {
            return Ok(CreateFileOutcome::UserQuota { used: user_used });
        }
        if room_used.saturating_add(file.size) > quota.per_room {
            return Ok(CreateFileOutcome::RoomQuota { used: room_used });
        }
        let (size, part_bytes) = (seq_to_db(file.size)?, seq_to_db(file.part_bytes)?);
        tx.execute(
            &format!("INSERT INTO files ({FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)"),
            &[&file.blob.0.as_slice(), &file.room, &owner, &size, &part_bytes, &file.created_at, &file.expires_at],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
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

    pub(crate) async fn files_get(&self, blob: &BlobId) -> Result<Option<FileRecord>> {
        let rows =
            self.query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE blob = $1"), &[&blob.0.as_slice()]).await?;
        rows.first().map(file_from_row).transpose()
    }

    pub(crate) async fn files_part(
        &self,
        blob: &BlobId,
        offset: u64,
        len: u64,
        sha256: &[u8; 32],
        expires_when_complete: i64,
    ) -> Result<FilePartOutcome> {
        let (Some(end), Ok(at)) = (offset.checked_add(len).and_then(|e| i64::try_from(e).ok()), i64::try_from(offset))
        else {
            return Ok(match self.files_get(blob).await? {
                Some(f) => FilePartOutcome::Conflict(f),
                None => FilePartOutcome::NoSuchFile,
            });
        };
        // One statement, so one transaction: the offset moves and the part's hash is kept
        // together, or neither.
        let rows = self
            .query(
                &format!(
                    "WITH moved AS ( \
                       UPDATE files SET received = $3, \
                         expires_at = CASE WHEN $3 = size THEN $4 ELSE expires_at END \
                       WHERE blob = $1 AND received = $2 AND $3 <= size RETURNING {FILE_COLUMNS}), \
                     kept AS (INSERT INTO file_parts (blob, at, sha256) SELECT blob, $2, $5 FROM moved) \
                     SELECT {FILE_COLUMNS} FROM moved"
                ),
                &[&blob.0.as_slice(), &at, &end, &expires_when_complete, &sha256.as_slice()],
            )
            .await?;
        if let Some(row) = rows.first() {
            return Ok(FilePartOutcome::Recorded(file_from_row(row)?));
        }
        // Not at the offset: held if this very part is recorded with this hash.
        let rows = self
            .query(
                &format!(
                    "SELECT {FILE_COLUMNS}, (SELECT sha256 FROM file_parts p WHERE p.blob = $1 AND p.at = $2) \
                     FROM files WHERE blob = $1"
                ),
                &[&blob.0.as_slice(), &at],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(FilePartOutcome::NoSuchFile) };
        let f = file_from_row(row)?;
        let held: Option<Vec<u8>> = col(row, 8)?;
        Ok(if held.as_deref() == Some(sha256.as_slice()) {
            FilePartOutcome::Held(f)
        } else {
            FilePartOutcome::Conflict(f)
        })
    }

    pub(crate) async fn files_part_hashes(&self, blob: &BlobId) -> Result<Vec<(u64, [u8; 32])>> {
        let rows =
            self.query("SELECT at, sha256 FROM file_parts WHERE blob = $1 ORDER BY at", &[&blob.0.as_slice()]).await?;
        rows.iter()
            .map(|row| {
                let hash: Vec<u8> = col(row, 1)?;
                let hash = <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| StoreError::corrupt(format!("a part hash of {} bytes", hash.len())))?;
                Ok((seq_from_db(col(row, 0)?)?, hash))
            })
            .collect()
    }

    pub(crate) async fn files_expired(&self, now: i64, limit: u32) -> Result<Vec<FileRecord>> {
        let rows = self
            .query(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE expires_at <= $1 ORDER BY expires_at, blob LIMIT $2"),
                &[&now, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(file_from_row).collect()
    }

    pub(crate) async fn files_delete(&self, blob: &BlobId) -> Result<bool> {
        let rows = self.query("DELETE FROM files WHERE blob = $1 RETURNING blob", &[&blob.0.as_slice()]).await?;
        Ok(!rows.is_empty())
    }

    pub(crate) async fn files_totals(&self) -> Result<FileTotals> {
        let rows = self.query("SELECT count(*), COALESCE(SUM(size), 0)::bigint FROM files", &[]).await?;
        let row = rows.first().ok_or_else(|| StoreError::backend("an aggregate returned no row"))?;
        Ok(FileTotals { files: seq_from_db(col(row, 0)?)?, bytes: seq_from_db(col(row, 1)?)? })
    }
}
