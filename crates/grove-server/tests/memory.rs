//! Bounded memory: 20,000 rooms touched once each, then idle, are let go, so touching another
//! 20,000 costs no more memory than the first batch did.
//!
//! Its own test binary (not a module of `tests/it`) because it measures the process's resident
//! set size, and no other test may allocate meanwhile. RSS alone would be flaky: an allocator
//! keeps freed pages for reuse instead of returning them to the OS, so "RSS returns to where it
//! was" may fail although nothing is held. What is robust is reuse: memory freed by evicted
//! rooms is taken again by the next batch, so with eviction the second batch barely grows the
//! RSS, and without it the second batch grows it as much as the first (a test that can fail).

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use std::sync::Arc;

use grove_store::{MemoryStore, NewRoom, Store};
use grove_wire::api::RoomMode;
use harness::{test_config, Server, User};

const ROOMS: usize = 20_000;

/// The idle period, clock skew and nonce pruning period together: after this much server
/// time, every room touched before is idle and every nonce stale.
const IDLE_MS: i64 = 60_000 + 300_000 + 20_000;

/// Resident set size in bytes, from /proc.
fn rss() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let pages: i64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm's resident field");
    pages * 4096
}

/// Touches every room of `batch` once, then lets them go idle and makes one more request (the
/// request that finds them idle). Returns the RSS with the batch loaded and after.
async fn touch_batch(server: &Server, owner: &User, batch: usize) -> (i64, i64) {
    for i in 0..ROOMS {
        let r = owner.get(server, &format!("/v1/rooms/b{batch}-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let loaded = rss();
    server.advance(IDLE_MS);
    owner.get(server, "/v1/rooms/warm").await.ok();
    (loaded, rss())
}

#[tokio::test(flavor = "current_thread")]
async fn twenty_thousand_rooms_touched_once_then_idle_are_let_go() {
    let mut config = test_config();
    config.server.room_idle_secs = 60;
    let store = Arc::new(MemoryStore::new());
    let server = Server::with(config, store.clone());
    let owner = User::new(1);
    let names =
        std::iter::once("warm".to_string()).chain((0..3).flat_map(|b| (0..ROOMS).map(move |i| format!("b{b}-{i}"))));
    for name in names {
        let room = NewRoom {
            name,
            mode: RoomMode::SenderKeys,
            public: false,
            created_by: owner.id,
            created_at: server.now(),
            epoch: 1,
            state: Vec::new(),
            members: vec![owner.id],
            admins: vec![owner.id],
        };
        store.create_room(room, u64::MAX).await.expect("create a room in the store");
    }
    // Warm up (the rate limiter, key cache and router allocate once).
    owner.get(&server, "/v1/rooms/warm").await.ok();
    server.advance(IDLE_MS);
    owner.get(&server, "/v1/rooms/warm").await.ok();
    let start = rss();

    let (loaded0, idle0) = touch_batch(&server, &owner, 0).await;
    let (loaded1, idle1) = touch_batch(&server, &owner, 1).await;
    let (loaded2, idle2) = touch_batch(&server, &owner, 2).await;
    eprintln!(
        "RSS from {start} B: batch 0 {loaded0} -> {idle0}, batch 1 {loaded1} -> {idle1}, batch 2 {loaded2} -> {idle2}"
    );
    let first = loaded0 - start;
    // Loading 20,000 rooms costs memory (so the checks below can fail) ...
    assert!(first > (ROOMS * 200) as i64, "{ROOMS} loaded rooms cost only {first} B of RSS");
    // ... and once they are idle it is let go and reused: two more batches, each as large as
    // the first, together grow the RSS by less than a third of what the first batch took.
    let more = loaded2.max(idle2) - loaded0;
    assert!(more < first / 3, "batches 1 and 2 grew the RSS by {more} B after batch 0 took {first} B");
}
