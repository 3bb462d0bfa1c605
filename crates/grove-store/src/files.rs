//! What the store keeps about encrypted attachments: one row per blob (its room, uploader,
//! length, upload progress and expiry). The bytes themselves live in an object store, never
//! here; the store decides quotas and upload order, atomically, so both hold with several
//! server instances on one database.

use grove_wire::attachment::BlobId;
use grove_wire::UserId;

use crate::RoomId;

/// A blob whose upload begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Chosen by the server, random.
    pub blob: BlobId,
    /// The room it belongs to.
    pub room: RoomId,
    /// The uploader.
    pub owner: UserId,
    /// The blob's exact length, bytes.
    pub size: u64,
    /// Every part but the last is this long.
    pub part_bytes: u64,
    /// Unix ms.
    pub created_at: i64,
    /// When an incomplete upload is discarded, Unix ms.
    pub expires_at: i64,
}

/// A blob as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Its id.
    pub blob: BlobId,
    /// Its room.
    pub room: RoomId,
    /// Its uploader.
    pub owner: UserId,
    /// Its length.
    pub size: u64,
    /// Its part length.
    pub part_bytes: u64,
    /// Bytes stored so far (`== size` when complete).
    pub received: u64,
    /// Unix ms.
    pub created_at: i64,
    /// When it is discarded, Unix ms (`i64::MAX`: kept until its room goes).
    pub expires_at: i64,
}

impl FileRecord {
    /// All bytes are stored.
    pub fn complete(&self) -> bool {
        self.received == self.size
    }
}

/// The quotas a new upload must fit in, counting every blob not yet purged (uploads in
/// progress with their full size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileQuota {
    /// Bytes per uploader.
    pub per_user: u64,
    /// Bytes per room.
    pub per_room: u64,
}

/// The result of [`Store::create_file`](crate::Store::create_file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateFileOutcome {
    /// Recorded.
    Created(FileRecord),
    /// The uploader holds `used` bytes already; the new blob does not fit.
    UserQuota {
        /// Bytes the uploader holds.
        used: u64,
    },
    /// The room holds `used` bytes already; the new blob does not fit.
    RoomQuota {
        /// Bytes the room holds.
        used: u64,
    },
}

/// The result of [`Store::file_part`](crate::Store::file_part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilePartOutcome {
    /// Recorded; the blob afterwards.
    Recorded(FileRecord),
    /// This part (same offset, same SHA-256) was recorded already, by another request for the
    /// same body; nothing changed. The blob as it is.
    Held(FileRecord),
    /// The blob's `received` is not the part's offset (another part landed first, or the
    /// client is confused); nothing changed.
    Conflict(FileRecord),
    /// No such blob (never created, or purged).
    NoSuchFile,
}

/// Bytes and blobs the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileTotals {
    /// Blobs, complete or not.
    pub files: u64,
    /// Their declared lengths, summed.
    pub bytes: u64,
}
