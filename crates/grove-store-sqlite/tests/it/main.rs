//! Integration tests of the SQLite store: group commit under concurrency, durability across a
//! reopen, and durability across `kill -9` of a writing process.

mod concurrent;
mod durability;

use grove_store::{CreateRoomOutcome, NewEntry, NewRoom, RoomId, Store};
use grove_wire::api::{EntryKind, RoomMode};
use grove_wire::UserId;

/// The user with 32 bytes of `n`.
pub fn user(n: u8) -> UserId {
    UserId([n; 32])
}

/// Creates a private room owned by `user(1)`.
pub async fn create_room(store: &dyn Store, name: &str) -> RoomId {
    let room = NewRoom {
        name: name.to_string(),
        mode: RoomMode::Mls,
        public: false,
        created_by: user(1),
        created_at: 1,
        epoch: 0,
        state: b"state".to_vec(),
        members: vec![user(1)],
        admins: vec![],
    };
    match store.create_room(room, 1_000).await.expect("create_room") {
        CreateRoomOutcome::Created(r) => r.id,
        other => panic!("room {name} not created: {other:?}"),
    }
}

/// An application entry with this body.
pub fn entry(body: String) -> NewEntry {
    NewEntry { kind: EntryKind::Application, epoch: 0, sender: user(1), ts: 2, body: body.into_bytes(), update: None }
}

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
