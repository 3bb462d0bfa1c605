//! Several `PostgresStore` instances on one database, as several server instances would run:
//! the ordering invariants hold across them, migrations run once, and each committed group
//! sends one notification.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use grove_store::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, MailboxQuota, NewEntry, NewMail, NewRoom, StateUpdate, Store,
    StoreError,
};
use grove_store_postgres::{PostgresStore, NOTIFY_CHANNEL};
use grove_wire::api::{EntryKind, KeyItemUpload, KeyKind, RoomMode};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{create_room, entry, user, TestDb};

fn commit(tag: String) -> NewEntry {
    NewEntry {
        kind: EntryKind::Commit,
        epoch: 0,
        sender: user(1),
        ts: 3,
        body: tag.clone().into_bytes(),
        update: Some(StateUpdate {
            expected_state_version: 0,
            new_epoch: 1,
            state: format!("state after {tag}").into_bytes(),
            members: vec![user(1), user(2)],
            admins: vec![],
            removed: vec![],
            added: vec![],
        }),
    }
}

/// Two instances: 50 conflicting state updates (one wins), 1,000 appends (seqs 1..=1000) and
/// 40 claimers of 20 one-time keys (each handed out once), all split across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_keep_the_invariants() {
    let db = TestDb::create().await;
    let a = Arc::new(PostgresStore::connect(db.url()).await.expect("connect a"));
    let b = Arc::new(PostgresStore::connect(db.url()).await.expect("connect b"));
    let stores: [Arc<PostgresStore>; 2] = [a.clone(), b.clone()];

    // 50 concurrent commits at state version 0: exactly one applies.
    let room = create_room(&*a, "contested").await;
    let mut tasks = Vec::new();
    for n in 0..50 {
        let s = stores[n % 2].clone();
        tasks.push(tokio::spawn(async move { s.append(room, commit(format!("c{n}"))).await.expect("append") }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task") {
            AppendOutcome::Appended { seq, epoch } => {
                assert_eq!((seq, epoch), (1, 1));
                won += 1;
            }
            AppendOutcome::Conflict { epoch, head, state_version } => {
                assert_eq!((epoch, head, state_version), (1, 1, 1))
            }
            AppendOutcome::NoSuchRoom => panic!("room vanished"),
        }
    }
    assert_eq!(won, 1, "exactly one conflicting update wins");
    let now = b.room("contested").await.expect("room").expect("exists");
    assert_eq!((now.epoch, now.head, now.state_version), (1, 1, 1));
    assert_eq!(b.read(room, 0, 10).await.expect("read").len(), 1, "the losers left no entry");

    // 1,000 concurrent appends to one room: seqs 1..=1000, gap-free, each once.
    let room = create_room(&*b, "busy").await;
    let before = [a.stats(), b.stats()];
    let mut tasks = Vec::new();
    for n in 0..1_000u64 {
        let s = stores[(n % 2) as usize].clone();
        tasks.push(tokio::spawn(async move { s.append(room, entry(format!("m{n}"))).await.expect("append") }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        match t.await.expect("task") {
            AppendOutcome::Appended { seq, .. } => assert!(seqs.insert(seq), "seq {seq} handed out twice"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seqs, (1..=1_000).collect());
    let mut read = Vec::new();
    loop {
        let after = read.last().copied().unwrap_or(0);
        let page = a.read(room, after, 300).await.expect("read");
        if page.is_empty() {
            break;
        }
        read.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(read, (1..=1_000).collect::<Vec<_>>());
    for (name, s, before) in [("a", &a, before[0]), ("b", &b, before[1])] {
        let after = s.stats();
        let (txns, ops) = (after.transactions - before.transactions, after.ops - before.ops);
        eprintln!(
            "instance {name}: {ops} appends in {txns} transactions ({:.1} per transaction, largest {}, fallbacks {})",
            ops as f64 / txns as f64,
            after.max_batch,
            after.fallbacks
        );
        assert_eq!(ops, 500);
        assert!(txns < ops, "instance {name} did not group its appends");
    }

    // 20 one-time keys, 40 concurrent claimers across both instances.
    let bob = user(2);
    let items = (0..20)
        .map(|n| KeyItemUpload { kind: KeyKind::MlsKeyPackage, last_resort: false, data: format!("kp{n}").into() })
        .collect();
    a.publish_keys(&bob, items, 100).await.expect("publish");
    let mut tasks = Vec::new();
    for n in 0..40 {
        let s = stores[n % 2].clone();
        tasks.push(tokio::spawn(async move { s.claim_key(&bob, KeyKind::MlsKeyPackage).await.expect("claim") }));
    }
    let mut seen = BTreeSet::new();
    let mut none = 0;
    for t in tasks {
        match t.await.expect("task") {
            Some(c) => {
                assert!(!c.last_resort);
                assert!(seen.insert(c.data), "a one-time key was handed out twice");
            }
            None => none += 1,
        }
    }
    assert_eq!((seen.len(), none), (20, 20));
    assert!(b.key_counts(&bob).await.expect("counts").is_empty());

    drop(stores);
    Arc::into_inner(a).expect("last handle").close().await.expect("close a");
    Arc::into_inner(b).expect("last handle").close().await.expect("close b");
}

/// Four instances starting at once on an empty database migrate it once; a schema newer than
/// this build is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_startups_migrate_once() {
    let db = TestDb::create().await;
    let starts = (0..4).map(|_| PostgresStore::connect(db.url()));
    let stores = futures_util::future::try_join_all(starts).await.expect("every instance starts");
    let room = create_room(&stores[0], "r").await;
    assert_eq!(stores[3].read(room, 0, 10).await.expect("read").len(), 0);
    for s in stores {
        s.close().await.expect("close");
    }

    let (client, conn) = tokio_postgres::connect(db.url(), NoTls).await.expect("connect raw");
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query("SELECT version FROM grove_migrations ORDER BY version", &[])
        .await
        .expect("migrations table")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8], "each migration recorded once");
    client.batch_execute("INSERT INTO grove_migrations (version, name) VALUES (999, 'future')").await.expect("bump");
    match PostgresStore::connect(db.url()).await {
        Err(StoreError::Unavailable { message: msg, .. }) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("a newer schema was not refused: {other:?}"),
    }
    assert!(matches!(PostgresStore::connect("not a url ::").await, Err(StoreError::Unavailable { .. })));
}

/// Each committed group of appends sends one `NOTIFY grove_entries` naming its rooms
/// (`ORIGIN;ROOMS;MAILBOXES`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_committed_group() {
    let db = TestDb::create().await;
    let (listener, mut conn) = tokio_postgres::connect(db.url(), NoTls).await.expect("connect listener");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    listener.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await.expect("listen");

    let store = Arc::new(PostgresStore::connect(db.url()).await.expect("connect"));
    let rooms = [create_room(&*store, "x").await, create_room(&*store, "y").await];
    let before = store.stats();
    let mut tasks = Vec::new();
    for n in 0..200 {
        let s = store.clone();
        let room = rooms[n % 2];
        tasks.push(tokio::spawn(async move { s.append(room, entry(format!("m{n}"))).await.expect("append") }));
    }
    for t in tasks {
        assert!(matches!(t.await.expect("task"), AppendOutcome::Appended { .. }));
    }
    let groups = store.stats().transactions - before.transactions;

    let mut payloads = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        payloads.push(p);
    }
    eprintln!("200 appends: {groups} groups, {} notifications", payloads.len());
    assert!(!payloads.is_empty(), "no notification");
    assert_eq!(payloads.len() as u64, groups, "one notification per committed group");
    let named: BTreeSet<i64> = payloads
        .iter()
        .flat_map(|p| p.split(';').nth(1).expect("ORIGIN;ROOMS;MAILBOXES").split(','))
        .map(|id| id.parse::<i64>().expect("room id"))
        .collect();
    assert_eq!(named, rooms.into_iter().collect());
}

/// Across two instances: 60 deposits to one mailbox with room for 30 fill it exactly, with
/// distinct gap-free numbers; 20 rooms created at once by one creator with a limit of 5 give 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_mailbox_numbers_and_limits() {
    let db = TestDb::create().await;
    let stores = [
        Arc::new(PostgresStore::connect(db.url()).await.expect("connect a")),
        Arc::new(PostgresStore::connect(db.url()).await.expect("connect b")),
    ];
    let bob = user(2);
    let mut tasks = Vec::new();
    for n in 0..60 {
        let s = stores[n % 2].clone();
        // Two senders, thirty deposits each, racing over both instances: each may hold 20.
        let sender = user(8 + (n / 2 % 2) as u8);
        let mail = NewMail { owner: bob, sender, ts: 10, expires_at: 10_000, body: vec![n as u8] };
        let quota = MailboxQuota { total: 30, per_sender: 20 };
        tasks.push(tokio::spawn(async move { (sender, s.deposit(mail, quota).await.expect("deposit")) }));
    }
    let mut seqs = BTreeSet::new();
    let mut full = 0;
    let mut per_sender = std::collections::HashMap::new();
    for t in tasks {
        match t.await.expect("task") {
            (sender, DepositOutcome::Deposited { seq }) => {
                assert!(seqs.insert(seq), "mailbox seq {seq} twice");
                *per_sender.entry(sender).or_insert(0) += 1;
            }
            (_, DepositOutcome::Full | DepositOutcome::SenderFull) => full += 1,
        }
    }
    assert_eq!((seqs.len(), full), (30, 30));
    assert!(per_sender.values().all(|n| *n <= 20), "no sender holds more than its share: {per_sender:?}");
    assert_eq!(seqs, (1..=30).collect());
    assert_eq!(stores[0].mailbox_ack(&bob, 30).await.expect("ack"), 30);
    let mail = NewMail { owner: bob, sender: user(9), ts: 10, expires_at: 10_000, body: vec![] };
    assert_eq!(
        stores[1].deposit(mail, MailboxQuota { total: 30, per_sender: 30 }).await.expect("deposit"),
        DepositOutcome::Deposited { seq: 31 }
    );

    let mut tasks = Vec::new();
    for n in 0..20 {
        let s = stores[n % 2].clone();
        let room = NewRoom {
            name: format!("room-{n}"),
            mode: RoomMode::Mls,
            public: false,
            created_by: user(7),
            created_at: 1,
            epoch: 0,
            state: vec![],
            members: vec![user(7)],
            admins: vec![],
        };
        tasks.push(tokio::spawn(async move { s.create_room(room, 5).await.expect("create") }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.expect("task") {
            CreateRoomOutcome::Created(_) => created += 1,
            CreateRoomOutcome::LimitReached => {}
            CreateRoomOutcome::NameTaken => panic!("names are distinct"),
        }
    }
    assert_eq!(created, 5, "the per-creator limit holds across instances");
}

/// An op that fails does not fail the others of its group: they are rerun one per transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_op_fails_alone() {
    let db = TestDb::create().await;
    let store = Arc::new(PostgresStore::connect(db.url()).await.expect("connect"));
    let room = create_room(&*store, "r").await;
    let (client, conn) = tokio_postgres::connect(db.url(), NoTls).await.expect("connect raw");
    tokio::spawn(conn);
    // Claims now fail inside the database.
    client.batch_execute("ALTER TABLE key_items RENAME TO key_items_gone").await.expect("rename");

    let mut appends = Vec::new();
    let mut claims = Vec::new();
    for n in 0..50 {
        let s = store.clone();
        appends.push(tokio::spawn(async move { s.append(room, entry(format!("m{n}"))).await }));
        if n % 10 == 0 {
            let s = store.clone();
            claims.push(tokio::spawn(async move { s.claim_key(&user(2), KeyKind::OlmOneTime).await }));
        }
    }
    let mut seqs = BTreeSet::new();
    for t in appends {
        match t.await.expect("task") {
            Ok(AppendOutcome::Appended { seq, .. }) => assert!(seqs.insert(seq)),
            other => panic!("an append failed with the claims: {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=50).collect());
    for t in claims {
        assert!(matches!(t.await.expect("task"), Err(StoreError::Backend { .. })));
    }
    eprintln!("stats: {:?}", store.stats());
    assert!(store.stats().fallbacks >= 1, "no group failed: the claims were never grouped with appends");

    client.batch_execute("ALTER TABLE key_items_gone RENAME TO key_items").await.expect("rename back");
    assert_eq!(store.claim_key(&user(2), KeyKind::OlmOneTime).await.expect("claim"), None);
    // Undecodable rows are errors, not panics.
    client
        .batch_execute("UPDATE rooms SET members = '\\x0102'; UPDATE entries SET kind = 'bogus'")
        .await
        .expect("corrupt");
    assert!(matches!(store.room("r").await, Err(StoreError::Corrupt { .. })));
    assert!(matches!(store.read(room, 0, 10).await, Err(StoreError::Corrupt { .. })));
}

/// A writer whose connection was killed reconnects for the next group; the log goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_reconnects_after_losing_its_connection() {
    let db = TestDb::create().await;
    let store = PostgresStore::connect(db.url()).await.expect("connect");
    let room = create_room(&store, "r").await;
    assert!(matches!(store.append(room, entry("before".into())).await, Ok(AppendOutcome::Appended { seq: 1, .. })));
    let (client, conn) = tokio_postgres::connect(db.url(), NoTls).await.expect("connect raw");
    tokio::spawn(conn);
    let killed = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "no connection to kill");
    tokio::time::sleep(Duration::from_millis(200)).await;
    match store.append(room, entry("after".into())).await {
        Ok(AppendOutcome::Appended { seq, .. }) => assert_eq!(seq, 2),
        other => panic!("the writer did not reconnect: {other:?}"),
    }
    assert_eq!(store.read(room, 0, 10).await.expect("read after the pool lost its connections").len(), 2);
}

/// An instance that holds a room's row lock and hangs (here: a session that locked the row in
/// an open transaction) stalls another instance's appends to that room only for `lock_timeout`:
/// they fail with `Unavailable`, nothing is written, and once the lock is gone appends work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_lock_holder_stalls_others_only_for_the_lock_timeout() {
    let db = TestDb::create().await;
    let url = format!("{} options='-c lock_timeout=300ms'", db.url());
    let store = PostgresStore::connect(&url).await.expect("connect");
    let room = create_room(&store, "held").await;
    assert!(matches!(store.append(room, entry("before".into())).await, Ok(AppendOutcome::Appended { seq: 1, .. })));

    let (hung, conn) = tokio_postgres::connect(db.url(), NoTls).await.expect("connect the hung session");
    let conn = tokio::spawn(conn);
    hung.batch_execute(&format!("BEGIN; SELECT head FROM rooms WHERE id = {room} FOR UPDATE")).await.expect("lock");

    let started = std::time::Instant::now();
    match store.append(room, entry("while held".into())).await {
        Err(StoreError::Unavailable { message: m, .. }) => assert!(m.contains("did not answer in time"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "waited {took:?} for the lock");

    hung.batch_execute("ROLLBACK").await.expect("release");
    drop(hung);
    let _ = conn.await;
    assert!(matches!(store.append(room, entry("after".into())).await, Ok(AppendOutcome::Appended { seq: 2, .. })));
    let bodies: Vec<Vec<u8>> = store.read(room, 0, 10).await.expect("read").into_iter().map(|e| e.body).collect();
    assert_eq!(bodies, vec![b"before".to_vec(), b"after".to_vec()]);
}

/// Two members report one commit at the same moment, each through another instance, in 30
/// rooms at once (all started together): in every room one of the two records sees both reports (they are judged one
/// after the other, so the second report's instance sees the agreement that voids the commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reports_of_one_commit_on_two_instances_see_each_other() {
    let db = TestDb::create().await;
    let stores = [
        Arc::new(PostgresStore::connect(db.url()).await.expect("connect a")),
        Arc::new(PostgresStore::connect(db.url()).await.expect("connect b")),
    ];
    let mut rooms = Vec::new();
    for n in 0..30 {
        rooms.push(create_room(&*stores[0], &format!("reported-{n}")).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(rooms.len() * 2));
    let mut tasks = Vec::new();
    for room in rooms {
        for (reporter, s) in [(user(2), stores[0].clone()), (user(3), stores[1].clone())] {
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                (room, s.record_report(room, 5, &reporter, Some(vec![7; 32]), 16).await.expect("record"))
            }));
        }
    }
    let mut seen_both = std::collections::HashMap::new();
    for t in tasks {
        let (room, seen) = t.await.expect("task");
        *seen_both.entry(room).or_insert(false) |= seen.len() == 2;
    }
    let missed: Vec<_> = seen_both.iter().filter(|(_, both)| !**both).map(|(r, _)| *r).collect();
    assert!(missed.is_empty(), "rooms whose two reports missed each other: {missed:?}");
}
