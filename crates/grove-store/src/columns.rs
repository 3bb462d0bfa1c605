//! Column encodings shared by the SQL backends: how domain values become database values
//! and back, with undecodable stored values reported as [`StoreError::Corrupt`].

use grove_wire::api::{EntryKind, KeyKind, RoomMode};
use grove_wire::UserId;

use crate::StoreError;

/// A sequence number or head for storage; the store assigns them, so they fit easily.
pub fn seq_to_db(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::backend(format!("sequence number {v} out of range")))
}

/// A stored sequence number, head or count; negative is corrupt.
pub fn seq_from_db(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(format!("negative sequence number {v}")))
}

/// A cursor (`seq > after`) as a SQL bound; `None` when no stored seq can be greater.
pub fn cursor_to_db(after: u64) -> Option<i64> {
    i64::try_from(after).ok()
}

/// Epochs and state versions are opaque u64 counters, stored bit-for-bit.
pub fn u64_to_db(v: u64) -> i64 {
    v as i64
}

/// Inverse of [`u64_to_db`].
pub fn u64_from_db(v: i64) -> u64 {
    v as u64
}

/// A limit for SQL `LIMIT`.
pub fn limit_to_db(limit: u32) -> i64 {
    i64::from(limit)
}

/// A stored user id (32 bytes); `what` names the column in the error.
pub fn user_from_db(bytes: &[u8], what: &str) -> Result<UserId, StoreError> {
    UserId::from_slice(bytes)
        .ok_or_else(|| StoreError::corrupt(format!("{what}: {} bytes, a user id is 32", bytes.len())))
}

/// A list of users as concatenated 32-byte keys.
pub fn users_to_db(users: &[UserId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(users.len() * 32);
    for u in users {
        out.extend_from_slice(u.as_bytes());
    }
    out
}

/// Inverse of [`users_to_db`].
pub fn users_from_db(bytes: &[u8], what: &str) -> Result<Vec<UserId>, StoreError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(StoreError::corrupt(format!("{what}: {} bytes, not a multiple of 32", bytes.len())));
    }
    bytes.chunks_exact(32).map(|c| user_from_db(c, what)).collect()
}

/// A stored room mode.
pub fn mode_from_db(s: &str) -> Result<RoomMode, StoreError> {
    RoomMode::parse(s).ok_or_else(|| StoreError::corrupt(format!("unknown room mode {s:?}")))
}

/// A stored entry kind.
pub fn entry_kind_from_db(s: &str) -> Result<EntryKind, StoreError> {
    EntryKind::parse(s).ok_or_else(|| StoreError::corrupt(format!("unknown entry kind {s:?}")))
}

/// A stored key kind.
pub fn key_kind_from_db(s: &str) -> Result<KeyKind, StoreError> {
    KeyKind::parse(s).ok_or_else(|| StoreError::corrupt(format!("unknown key kind {s:?}")))
}
