//! The key directory: publish, count, claim; one-time items go out exactly once.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use crate::harness::*;

fn item(data: &str, last_resort: bool) -> serde_json::Value {
    json!({"kind": "mls_key_package", "last_resort": last_resort, "data": b64(data.as_bytes())})
}

#[tokio::test]
async fn bob_publishes_and_alice_claims_each_one_time_key_once_then_the_last_resort() {
    let s = Server::new();
    let (alice, bob) = (User::new(1), User::new(2));
    let r =
        bob.post(&s, "/v1/keys", json!({"items": [item("kp1", false), item("kp2", false), item("lr", true)]})).await;
    assert_eq!(r.ok()["counts"], json!([{"kind": "mls_key_package", "one_time": 2, "last_resort": true}]));
    let path = format!("/v1/keys/{}/claim", bob.id);
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let c = alice.post(&s, &path, json!({"kind": "mls_key_package"})).await;
        assert_eq!(c.ok()["last_resort"], json!(false));
        assert_eq!(c.json["user"], json!(bob.id.to_string()));
        got.insert(c.json["data"].as_str().unwrap().to_string());
    }
    assert_eq!(got, [b64(b"kp1"), b64(b"kp2")].into_iter().collect());
    for _ in 0..3 {
        let c = alice.post(&s, &path, json!({"kind": "mls_key_package"})).await;
        assert_eq!((c.ok()["last_resort"].clone(), c.json["data"].clone()), (json!(true), json!(b64(b"lr"))));
    }
    let counts = bob.get(&s, "/v1/keys").await;
    assert_eq!(counts.ok()["counts"], json!([{"kind": "mls_key_package", "one_time": 0, "last_resort": true}]));
    alice.post(&s, &path, json!({"kind": "olm_one_time"})).await.err(404, "no_key_material");
    let nobody = format!("/v1/keys/{}/claim", User::new(77).id);
    alice.post(&s, &nobody, json!({"kind": "mls_key_package"})).await.err(404, "no_key_material");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_get_the_same_one_time_key() {
    let s = Arc::new(Server::new());
    let bob = User::new(2);
    let items: Vec<_> = (0..10).map(|n| item(&format!("kp{n}"), false)).collect();
    bob.post(&s, "/v1/keys", json!({"items": items})).await.ok();
    let mut tasks = Vec::new();
    for n in 0..20u8 {
        let s = s.clone();
        let path = format!("/v1/keys/{}/claim", bob.id);
        tasks.push(tokio::spawn(async move {
            User::new(100 + n).post(&s, &path, json!({"kind": "mls_key_package"})).await
        }));
    }
    let mut seen = BTreeSet::new();
    let mut none = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status.is_success() {
            assert!(seen.insert(r.json["data"].as_str().unwrap().to_string()), "handed out twice");
        } else {
            r.err(404, "no_key_material");
            none += 1;
        }
    }
    assert_eq!((seen.len(), none), (10, 10));
}

#[tokio::test]
async fn key_material_is_capped_per_user_and_per_item() {
    let mut c = test_config();
    c.limits.key_items_per_user = 2;
    c.limits.max_entry_bytes = 1024;
    let s = Server::with_config(c);
    let bob = User::new(2);
    bob.post(&s, "/v1/keys", json!({"items": [item("a", false), item("b", false), item("c", false)]}))
        .await
        .err(403, "key_limit");
    assert_eq!(bob.get(&s, "/v1/keys").await.ok()["counts"], json!([]), "nothing was stored");
    let big = "x".repeat(2000);
    bob.post(&s, "/v1/keys", json!({"items": [item(&big, false)]})).await.err(413, "payload_too_large");
    bob.post(&s, "/v1/keys", json!({"items": []})).await.err(400, "bad_request");
    bob.post(&s, "/v1/keys", json!({"items": [{"kind": "rsa", "data": ""}]})).await.err(400, "malformed_body");
}
