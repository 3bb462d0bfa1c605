//! `grove admin backup` under load: the copy holds every entry acknowledged before the backup
//! began, and a server started on it serves them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use grove_store_sqlite::{SqliteOptions, SqliteStore};

use crate::harness::*;

/// A server on the SQLite database and key of the data folder `data`, as `grove serve --data`.
fn serve_folder(data: &std::path::Path) -> (Server, grove_server::Config) {
    let mut config = test_config();
    config.server.data_dir = data.to_path_buf();
    std::fs::create_dir_all(data).unwrap();
    let store = SqliteStore::open(&data.join("grove.db"), SqliteOptions::default()).unwrap();
    let key = grove_server::load_or_create_key(data).unwrap();
    (Server::with_key(config.clone(), Arc::new(store), key), config)
}

async fn log_of(s: &Server, user: &User, room: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let page = user.get(s, &format!("/v1/rooms/{room}/log?after={}&limit=1000", out.len())).await;
        let entries = page.ok()["entries"].as_array().unwrap().clone();
        if entries.is_empty() {
            return out;
        }
        for e in entries {
            out.push((e["seq"].as_u64().unwrap(), e["body"].as_str().unwrap().to_string()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_steady_writes_restores_every_entry_acknowledged_before_it_began() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, config) = serve_folder(&tmp.path().join("data"));
    let s = Arc::new(s);
    let (alice, bob) = (User::new(1), User::new(2));
    sk_room(&s, &alice, "busy").await;
    post_membership(&s, &alice, &alice, "busy", 1, &[&alice, &bob], &[&alice]).await.ok();

    // Alice and Bob write steadily, each recording what the server acknowledged.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (who, user) in [("alice", alice.clone()), ("bob", bob.clone())] {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let body = format!("{who} says {n}").into_bytes();
                let r = post_app(&s, &user, "busy", 1, &body).await;
                acked.lock().unwrap().push((r.ok()["seq"].as_u64().unwrap(), b64(&body)));
                n += 1;
            }
        }));
    }
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // The backup begins: what was acknowledged so far must all be in it.
    let before = acked.lock().unwrap().clone();
    let to = tmp.path().join("backup");
    let (c, t) = (config.clone(), to.clone());
    let report = tokio::task::spawn_blocking(move || grove_server::backup(&c, &t)).await.unwrap().unwrap();
    let during = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < during + 100 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert!(report.bytes > 0);
    assert_eq!(std::fs::read(&report.key).unwrap(), std::fs::read(tmp.path().join("data/server.key")).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [&to, &report.database, &report.key] {
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o077, 0, "{} is private", f.display());
        }
    }
    let live = log_of(&s, &alice, "busy").await;
    drop(s);

    // Restored: a server started on the copy, with the same key, serves every entry
    // acknowledged before the backup began, entry by entry, and its log is a prefix of the
    // live one (one consistent instant, no hole).
    let (restored, _) = serve_folder(&to);
    assert_eq!(
        restored.state.public_key(),
        grove_server::load_or_create_key(&tmp.path().join("data")).unwrap().verifying_key().to_bytes()
    );
    let copy = log_of(&restored, &bob, "busy").await;
    for (seq, body) in &before {
        let i = usize::try_from(*seq - 1).unwrap();
        assert_eq!(copy.get(i), Some(&(*seq, body.clone())), "entry {seq}, acknowledged before the backup");
    }
    assert_eq!(copy[..], live[..copy.len()]);
    assert!(copy.len() < live.len(), "the writers went on after the backup");
    // And it takes new writes.
    post_app(&restored, &alice, "busy", 1, b"after the restore").await.ok();
}
