//! `kill -9` of a writing process loses no acknowledged write.
//!
//! The test re-runs its own executable as a child process with [`CHILD_ENV`] set, filtered to
//! [`child_writer`], which appends in a loop and prints each acknowledged sequence number. The
//! parent lets it run for about a second, kills it with SIGKILL, reopens the database and checks
//! that every acknowledged entry is there.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grove_store::{AppendOutcome, Store};
use grove_store_sqlite::{SqliteOptions, SqliteStore};

use crate::{create_room, entry, read_all};

/// Set in the child: the database path.
const CHILD_ENV: &str = "GROVE_SQLITE_CHILD";
const ROOM: &str = "kill-9";
const MARK: &str = "GROVE-ACK ";
const CHILD_TASKS: usize = 16;
const CHILD_MAX_APPENDS_PER_TASK: usize = 20_000;
const CHILD_MAX_RUN: Duration = Duration::from_secs(30);

/// In the child process only: appends until killed (or the bounds run out), reporting acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Arc::new(SqliteStore::open(Path::new(&path), SqliteOptions::default()).expect("open"));
    let room = store.room(ROOM).await.expect("room").expect("the parent created the room").id;
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut o = out.lock().expect("stdout");
        // libtest may have left "test … " without a newline.
        writeln!(o).expect("stdout");
        o.flush().expect("stdout");
    }
    let deadline = Instant::now() + CHILD_MAX_RUN;
    let mut tasks = Vec::new();
    for t in 0..CHILD_TASKS {
        let (store, out) = (store.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..CHILD_MAX_APPENDS_PER_TASK {
                if Instant::now() > deadline {
                    break;
                }
                let outcome = store.append(room, entry(format!("task {t} n {n}"))).await.expect("append");
                let AppendOutcome::Appended { seq, .. } = outcome else { panic!("{outcome:?}") };
                let mut o = out.lock().expect("stdout");
                writeln!(o, "{MARK}{seq} {t} {n}").expect("stdout");
                o.flush().expect("stdout");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grove.db");
    let room = rt.block_on(async {
        let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open");
        let room = create_room(&store, ROOM).await;
        store.close().expect("close");
        room
    });

    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", "durability::child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child writer");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel::<(u64, String)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(rest) = line.find(MARK).map(|i| &line[i + MARK.len()..]) else {
                continue;
            };
            let mut parts = rest.split(' ');
            let (Some(seq), Some(t), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
                // A line cut short by the kill was never a complete acknowledgement.
                continue;
            };
            let Ok(seq) = seq.parse::<u64>() else {
                continue;
            };
            if tx.send((seq, format!("task {t} n {n}"))).is_err() {
                break;
            }
        }
    });

    let first = rx.recv_timeout(Duration::from_secs(60));
    if first.is_ok() {
        std::thread::sleep(Duration::from_secs(1));
    }
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("wait for the child");
    reader.join().expect("reader thread");
    let first = first.expect("the child acknowledged nothing within 60 s");
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for (seq, body) in std::iter::once(first).chain(rx.try_iter()) {
        assert!(acked.insert(seq, body).is_none(), "seq {seq} acknowledged twice");
    }
    eprintln!("child killed ({status}) after {} acknowledged appends", acked.len());
    assert!(!status.success(), "the child finished instead of being killed; raise its bounds");
    assert!(acked.len() >= 10, "too few acknowledged appends ({}) to mean anything", acked.len());

    rt.block_on(async {
        let store = SqliteStore::open(&path, SqliteOptions::default()).expect("reopen after kill -9");
        let log = read_all(&store, room).await;
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>(), "sequence numbers have gaps");
        let stored: BTreeMap<u64, Vec<u8>> = log.into_iter().map(|e| (e.seq, e.body)).collect();
        for (seq, body) in &acked {
            assert_eq!(stored.get(seq), Some(&body.clone().into_bytes()), "acknowledged seq {seq} lost");
        }
        let head = store.room(ROOM).await.expect("room").expect("room exists").head;
        assert_eq!(head, stored.len() as u64);
        store.close().expect("close");
    });
}
