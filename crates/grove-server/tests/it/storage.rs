//! A full disk, answered clearly: the data folder's database is capped (SQLite's
//! `max_page_count`, `server.sqlite_max_bytes`), so it fills up in a test.

use std::sync::Arc;

use grove_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;

use crate::harness::*;

const CAP: u64 = 1024 * 1024;
const RESERVE: u64 = 256 * 1024;
const BODY: usize = 16 * 1024;

fn body(i: usize) -> Vec<u8> {
    (0..BODY).map(|j| (i.wrapping_mul(31).wrapping_add(j.wrapping_mul(7)) % 251) as u8).collect()
}

async fn health(s: &Server) -> serde_json::Value {
    s.get("/healthz").await.ok().clone()
}

fn metric(s: &Server, text: &str, name: &str) -> f64 {
    let _ = s;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test]
async fn a_full_disk_is_answered_507_with_a_reserve_for_messages_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&dir.path().join("grove.db"), SqliteOptions { max_bytes: Some(CAP), ..Default::default() })
            .unwrap();
    let mut config = test_config();
    config.server.storage_reserve_bytes = RESERVE;
    config.files.store = dir.path().join("blobs").to_string_lossy().into_owned();
    let s = Server::with(config, Arc::new(store));
    let (alice, bob) = (User::new(1), User::new(2));
    sk_room(&s, &alice, "busy").await;
    post_membership(&s, &alice, &alice, "busy", 1, &[&alice, &bob], &[&alice]).await.ok();
    assert_eq!(health(&s).await, json!({"status": "ok"}));

    // Bob's mailbox takes a few large deposits (freed later, when he acknowledges them).
    register(&s, &bob).await;
    let to_bob = format!("/v1/mailboxes/{}", bob.id);
    for i in 0..24 {
        alice.post(&s, &to_bob, json!({"body": b64(&body(i))})).await.ok();
    }

    // Alice talks until the server is down to its reserve: then it says so.
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut i = 100;
    while health(&s).await["status"] == "ok" {
        let r = post_app(&s, &alice, "busy", 1, &body(i)).await;
        acked.push((r.ok()["seq"].as_u64().unwrap(), body(i)));
        i += 1;
        assert!(acked.len() < 200, "a 1 MiB database never got below its reserve");
    }
    let h = health(&s).await;
    assert_eq!((h["status"].as_str(), h["reason"].as_str()), (Some("degraded"), Some("storage_low")), "{h}");
    assert!(h["message"].as_str().unwrap().contains("reserve"), "{h}");

    // Below the reserve: no new room, no new upload; messages are still taken.
    alice.post(&s, "/v1/rooms", json!({"name": "another", "mode": "sender-keys"})).await.err(507, "storage_full");
    alice.post(&s, "/v1/rooms/busy/files", json!({"size": 8192})).await.err(507, "storage_full");
    let r = post_app(&s, &alice, "busy", 1, &body(i)).await;
    acked.push((r.ok()["seq"].as_u64().unwrap(), body(i)));
    i += 1;

    // Then the database is full: a message is refused with 507 storage_full, and nothing of it
    // is written.
    let refused = loop {
        let r = post_app(&s, &alice, "busy", 1, &body(i)).await;
        if r.status.is_success() {
            acked.push((r.json["seq"].as_u64().unwrap(), body(i)));
            i += 1;
            assert!(acked.len() < 400, "the database never filled");
            continue;
        }
        break r;
    };
    refused.err(507, "storage_full");
    for _ in 0..3 {
        post_app(&s, &alice, "busy", 1, &body(i)).await.err(507, "storage_full");
    }
    let h = health(&s).await;
    assert_eq!((h["status"].as_str(), h["reason"].as_str()), (Some("degraded"), Some("storage_full")), "{h}");
    let m = s.get("/metrics").await.text;
    assert_eq!(metric(&s, &m, "grove_storage_full"), 1.0);
    assert_eq!(metric(&s, &m, "grove_storage_full_episodes_total"), 1.0, "one episode, however many refusals");
    assert!(metric(&s, &m, "grove_storage_refusals_total{what=\"write\"}") >= 4.0);
    assert!(metric(&s, &m, "grove_storage_refusals_total{what=\"rooms\"}") >= 1.0);

    // Reads still work, and every acknowledged message is there, intact.
    let log = alice.get(&s, "/v1/rooms/busy/log?after=0&limit=1000").await;
    let entries = log.ok()["entries"].as_array().unwrap().clone();
    let app: Vec<_> = entries.iter().filter(|e| e["kind"] == "application").collect();
    assert_eq!(app.len(), acked.len());
    for (e, (seq, bytes)) in app.iter().zip(&acked) {
        assert_eq!((e["seq"].as_u64().unwrap(), e["body"].as_str().unwrap()), (*seq, b64(bytes).as_str()));
    }

    // Bob reads and acknowledges his mailbox: space comes back, and so does the server.
    bob.post(&s, "/v1/mailbox/ack", json!({"up_to": 24})).await.ok();
    assert_eq!(health(&s).await, json!({"status": "ok"}));
    let r = post_app(&s, &alice, "busy", 1, &body(i)).await;
    acked.push((r.ok()["seq"].as_u64().unwrap(), body(i)));
    alice.post(&s, "/v1/rooms", json!({"name": "another", "mode": "sender-keys"})).await.ok();
    let m = s.get("/metrics").await.text;
    assert_eq!(metric(&s, &m, "grove_storage_full"), 0.0);
    assert_eq!(metric(&s, &m, "grove_storage_low"), 0.0);
    assert_eq!(metric(&s, &m, "grove_storage_full_episodes_total"), 1.0);
}
