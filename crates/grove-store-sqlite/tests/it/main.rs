//! Integration tests of the SQLite store: group commit under concurrency, durability across a
//! reopen, and durability across `kill -9` of a writing process.

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod concurrent;
mod durability;

use grove_store::{RoomId, Store};

pub use grove_store::conformance::{create_room, entry, user};

/// Every entry of a room, paging through the log (bounded).
pub async fn read_all(store: &dyn Store, room: RoomId) -> Vec<grove_wire::api::Entry> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let after = out.last().map_or(0, |e: &grove_wire::api::Entry| e.seq);
        let page = store.read(room, after, 500).await.expect("read");
        assert!(page.len() <= 500, "a read returned more than its limit");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
    panic!("room {room} log did not end after 10,000 pages");
}
