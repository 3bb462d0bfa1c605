//! Exactly one commit per epoch, whoever sends how many at once.

use std::sync::Arc;

use serde_json::json;

use crate::harness::*;
use crate::mls::{bytes, client, mls_room, post_handshake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_mls_commits_for_one_epoch_exactly_one_wins() {
    let s = Arc::new(Server::new());
    let alice = User::new(1);
    let ac = client(&alice);
    let mut ag = mls_room(&s, &alice, &ac, "r").await;
    // Fifty different self-updates, all made in epoch 0.
    let commits: Vec<Vec<u8>> = (0..50)
        .map(|_| {
            let c = bytes(&ag.commit(vec![]).unwrap().commit_message);
            ag.clear_pending_commit();
            c
        })
        .collect();
    let mut tasks = Vec::new();
    for c in commits {
        let (s, alice) = (s.clone(), alice.clone());
        tasks.push(tokio::spawn(async move { post_handshake(&s, &alice, "r", "commit", 0, &c).await }));
    }
    let mut accepted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 201 {
            accepted += 1;
            assert_eq!(r.json["epoch"], json!(1));
        } else {
            let e = r.err(409, "wrong_epoch");
            assert_eq!((e["current_epoch"].clone(), e["head"].clone()), (json!(1), json!(1)));
        }
    }
    assert_eq!(accepted, 1);
    let page = alice.get(&s, "/v1/rooms/r/log").await;
    assert_eq!(seqs(page.ok()), [1], "one commit in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_membership_updates_for_one_version_exactly_one_wins() {
    let s = Arc::new(Server::new());
    let alice = User::new(1);
    sk_room(&s, &alice, "r").await;
    let mut tasks = Vec::new();
    for n in 0..50u8 {
        let (s, alice) = (s.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            post_membership(&s, &alice, &alice, "r", 1, &[&alice, &User::new(100 + n)], &[&alice]).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 201 {
            accepted += 1;
        } else {
            r.err(409, "membership_version");
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(alice.get(&s, "/v1/rooms/r").await.ok()["members"].as_array().unwrap().len(), 2);
}
