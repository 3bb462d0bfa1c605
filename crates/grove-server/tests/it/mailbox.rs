//! Mailboxes: anyone deposits, only the owner reads (cursor, long-poll) and acknowledges.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn alice_deposits_and_only_bob_reads_and_acknowledges() {
    let s = Server::new();
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    register(&s, &bob).await;
    let to_bob = format!("/v1/mailboxes/{}", bob.id);
    for n in 1..=3u64 {
        let r = alice.post(&s, &to_bob, json!({"body": b64(format!("welcome {n}").as_bytes())})).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.json["seq"], json!(n));
        assert_eq!(r.json["expires_at"], json!(s.now() + 30 * 24 * 3600 * 1000));
    }
    let page = bob.get(&s, "/v1/mailbox?after=0").await;
    assert_eq!(bodies(page.ok()), [b"welcome 1".to_vec(), b"welcome 2".to_vec(), b"welcome 3".to_vec()]);
    assert_eq!(page.json["entries"][0]["sender"], json!(alice.id.to_string()));
    assert_eq!(seqs(&bob.get(&s, "/v1/mailbox?after=1&limit=1").await.json), [2]);
    // Carol's mailbox is her own: she sees nothing of Bob's.
    assert_eq!(seqs(carol.get(&s, "/v1/mailbox").await.ok()), Vec::<u64>::new());
    assert_eq!(bob.post(&s, "/v1/mailbox/ack", json!({"up_to": 2})).await.ok()["removed"], json!(2));
    assert_eq!(seqs(&bob.get(&s, "/v1/mailbox").await.json), [3]);
}

#[tokio::test]
async fn a_full_mailbox_refuses_and_expired_messages_vanish() {
    let mut c = test_config();
    c.limits.mailbox_quota = 2;
    c.limits.mailbox_ttl_secs = 60;
    c.limits.max_entry_bytes = 100;
    let s = Server::with_config(c);
    let (alice, bob) = (User::new(1), User::new(2));
    register(&s, &bob).await;
    let to_bob = format!("/v1/mailboxes/{}", bob.id);
    alice.post(&s, &to_bob, json!({"body": b64(b"1")})).await.ok();
    alice.post(&s, &to_bob, json!({"body": b64(b"2")})).await.ok();
    let full = alice.post(&s, &to_bob, json!({"body": b64(b"3")})).await;
    full.err(429, "mailbox_full");
    assert!(full.retry_after.is_some());
    alice.post(&s, &to_bob, json!({"body": b64(&[0u8; 101])})).await.err(413, "payload_too_large");
    s.advance(61_000);
    assert_eq!(seqs(bob.get(&s, "/v1/mailbox").await.ok()), Vec::<u64>::new());
    alice.post(&s, &to_bob, json!({"body": b64(b"4")})).await.ok();
    assert_eq!(bodies(&bob.get(&s, "/v1/mailbox").await.json), [b"4".to_vec()]);
    alice.post(&s, "/v1/mailboxes/nobody", json!({"body": b64(b"x")})).await.err(400, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_mail_arrives() {
    let s = Arc::new(Server::new());
    let (alice, bob) = (User::new(1), User::new(2));
    register(&s, &bob).await;
    let reader = {
        let s = s.clone();
        tokio::spawn(async move { bob.get(&s, "/v1/mailbox?after=0&wait=10").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    alice.post(&s, &format!("/v1/mailboxes/{}", User::new(2).id), json!({"body": b64(b"hi")})).await.ok();
    let got = reader.await.unwrap();
    assert_eq!(bodies(got.ok()), [b"hi".to_vec()]);
    assert!(started.elapsed() < Duration::from_secs(5), "woke on the deposit, not the timeout");
}
