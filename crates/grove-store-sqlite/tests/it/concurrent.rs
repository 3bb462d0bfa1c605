use std::collections::BTreeMap;
use std::sync::Arc;

use grove_store::{AppendOutcome, Store};
use grove_store_sqlite::{SqliteOptions, SqliteStore};

use crate::{create_room, entry, read_all};

const APPENDS: usize = 2_000;
const ROOMS: usize = 10;
const TASKS: usize = 64;

/// 64 tasks append 2,000 entries across 10 rooms: the writer groups them, and after a reopen
/// every acknowledged entry is there, with gap-free sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_batched_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grove.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("open"));
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        rooms.push(create_room(&*store, &format!("room-{r}")).await);
    }
    let rooms = Arc::new(rooms);

    let before = store.stats();
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, rooms, barrier) = (store.clone(), rooms.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut acked = Vec::new();
            for i in (t..APPENDS).step_by(TASKS) {
                let room = rooms[i % ROOMS];
                match store.append(room, entry(format!("item {i}"))).await.expect("append") {
                    AppendOutcome::Appended { seq, .. } => acked.push((room, seq, i)),
                    other => panic!("append {i}: {other:?}"),
                }
            }
            acked
        }));
    }
    let mut acked: BTreeMap<(i64, u64), usize> = BTreeMap::new();
    for t in tasks {
        for (room, seq, i) in t.await.expect("task") {
            assert!(acked.insert((room, seq), i).is_none(), "room {room} seq {seq} acknowledged twice");
        }
    }
    assert_eq!(acked.len(), APPENDS);

    let after = store.stats();
    let transactions = after.transactions - before.transactions;
    let ops = after.ops - before.ops;
    let ratio = ops as f64 / transactions as f64;
    eprintln!("group commit: {ops} ops in {transactions} transactions, {ratio:.1} ops/transaction");
    assert_eq!(ops, APPENDS as u64);
    assert!(ratio > 1.0, "the writer did not batch: {ops} ops in {transactions} transactions");

    // Close (the writer finishes and exits), then reopen the same file.
    let store = Arc::try_unwrap(store).expect("no other handle");
    store.close().expect("close");
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("reopen");
    let mut total = 0;
    for (r, &room) in rooms.iter().enumerate() {
        let log = read_all(&store, room).await;
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>(), "room {room} has gaps");
        let head = store.room(&format!("room-{r}")).await.expect("room").map(|r| r.head);
        assert_eq!(head, Some(log.len() as u64));
        for e in &log {
            let i = acked.get(&(room, e.seq)).expect("an entry nobody was acknowledged for");
            assert_eq!(e.body, format!("item {i}").into_bytes());
        }
        total += log.len();
    }
    assert_eq!(total, APPENDS);
    store.close().expect("close");
}
