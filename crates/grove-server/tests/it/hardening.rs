//! What an attacker on the network tried (issue 17), each kept out: metric series from a
//! client's bytes, extreme and oddly written timestamps, repeated signing headers, bodies of
//! the wrong type or broken framing, strangers filling mailboxes and draining keys, rooms
//! frozen by a membership with no admin, and per-identity state that is never freed.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request};
use grove_wire::auth::HEADER_TIMESTAMP;
use serde_json::json;

use crate::harness::*;

/// 32 bytes that are not an Ed25519 public key (about half of all byte strings are not).
fn not_a_key() -> grove_wire::UserId {
    (0..=255u8).map(|n| grove_wire::UserId([n; 32])).find(|u| u.verifying_key().is_none()).unwrap()
}

fn item(kind: &str, data: &[u8], last_resort: bool) -> serde_json::Value {
    json!({"kind": kind, "last_resort": last_resort, "data": b64(data)})
}

#[tokio::test]
async fn requests_with_made_up_methods_add_no_metric_series() {
    let s = Server::new();
    for n in 0..50 {
        let method = Method::from_bytes(format!("XFOOBAR{n}").as_bytes()).unwrap();
        let r = s.call(Request::builder().method(method).uri("/v1/rooms").body(Body::empty()).unwrap()).await;
        r.err(405, "method_not_allowed");
    }
    let metrics = s.get("/metrics").await.text;
    assert!(!metrics.contains("XFOOBAR"), "a client's method became a label");
    let series = metrics.lines().filter(|l| l.starts_with("grove_http_requests_total{")).count();
    assert!(series <= 3, "{series} request series after 50 made-up methods:\n{metrics}");
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
}

#[tokio::test]
async fn extreme_timestamps_are_refused_not_a_crash() {
    let s = Server::new();
    let alice = User::new(1);
    // The largest timestamp is far in the future: stale. (In a debug build, i64::MIN used to
    // overflow `now - ts` and panic before the signature was checked.)
    let far = alice.request_at(&s, i64::MAX, &fresh_nonce(), Method::GET, "/v1/keys", Vec::new());
    s.call(far).await.err(401, "stale_timestamp");
    let negative = alice.request_at(&s, i64::MIN, &fresh_nonce(), Method::GET, "/v1/keys", Vec::new());
    s.call(negative).await.err(401, "unauthenticated");
    let past = alice.request_at(&s, s.now() - 1_000_000_000, &fresh_nonce(), Method::GET, "/v1/keys", Vec::new());
    s.call(past).await.err(401, "stale_timestamp");
    alice.get(&s, "/v1/keys").await.ok();
}

#[tokio::test]
async fn a_timestamp_has_one_spelling() {
    let s = Server::new();
    let alice = User::new(1);
    for spelling in ["+{}", "0{}", " {}", "{} ", "{}.0"] {
        let mut req = alice.request(&s, Method::GET, "/v1/keys", Vec::new());
        let ts = req.headers()[HEADER_TIMESTAMP].to_str().unwrap().to_string();
        let odd = spelling.replace("{}", &ts);
        req.headers_mut().insert(HEADER_TIMESTAMP, HeaderValue::from_str(&odd).unwrap());
        let r = s.call(req).await;
        assert_eq!(r.status, 401, "{odd:?} was accepted: {}", r.text);
    }
}

#[tokio::test]
async fn a_second_signing_header_is_refused() {
    let s = Server::new();
    let (alice, mallory) = (User::new(1), User::new(66));
    let mut req = alice.request(&s, Method::GET, "/v1/keys", Vec::new());
    req.headers_mut().append("x-grove-key", HeaderValue::from_str(&mallory.id.to_string()).unwrap());
    let r = s.call(req).await;
    r.err(401, "unauthenticated");
    assert!(r.json["message"].as_str().unwrap().contains("twice"), "{}", r.text);
}

#[tokio::test]
async fn a_body_of_another_type_is_415_and_broken_framing_is_400_not_413() {
    let s = Server::new();
    let alice = User::new(1);
    let body = json!({"name": "garden", "mode": "sender-keys"}).to_string().into_bytes();
    let mut req = alice.request(&s, Method::POST, "/v1/rooms", body.clone());
    req.headers_mut().insert("content-type", HeaderValue::from_static("text/plain"));
    s.call(req).await.err(415, "unsupported_media_type");
    let mut req = alice.request(&s, Method::POST, "/v1/rooms", body.clone());
    req.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    s.call(req).await.ok();
    // A body that breaks off mid-way (as a malformed chunked encoding does) is not "too large".
    let req = alice.request(&s, Method::POST, "/v1/rooms", body);
    let (parts, _) = req.into_parts();
    let chunks: Vec<Result<&'static [u8], std::io::Error>> =
        vec![Ok(b"{\"name\":".as_slice()), Err(std::io::Error::other("invalid chunk size line"))];
    let broken = Body::from_stream(futures_util::stream::iter(chunks));
    let r = s.call(Request::from_parts(parts, broken)).await;
    r.err(400, "malformed_body");
}

#[tokio::test]
async fn deposits_go_only_to_users_the_server_knows() {
    let s = Server::new();
    let (alice, bob) = (User::new(1), User::new(2));
    let to_bob = format!("/v1/mailboxes/{}", bob.id);
    alice.post(&s, &to_bob, json!({"body": b64(b"hi")})).await.err(404, "not_found");
    // 64 hex characters that are not a key, and a key nobody uses.
    let to_not_a_key = format!("/v1/mailboxes/{}", not_a_key());
    alice.post(&s, &to_not_a_key, json!({"body": b64(b"x")})).await.err(404, "not_found");
    register(&s, &bob).await;
    alice.post(&s, &to_bob, json!({"body": b64(b"hi")})).await.ok();
}

#[tokio::test]
async fn a_stranger_cannot_fill_a_mailbox_others_can_still_reach() {
    let mut c = test_config();
    c.quotas.deposits_per_pair_per_hour = 5;
    let s = Server::with_config(c);
    let (alice, bob, mallory) = (User::new(1), User::new(2), User::new(66));
    register(&s, &bob).await;
    let to_bob = format!("/v1/mailboxes/{}", bob.id);
    for _ in 0..5 {
        mallory.post(&s, &to_bob, json!({"body": b64(b"spam")})).await.ok();
    }
    let r = mallory.post(&s, &to_bob, json!({"body": b64(b"spam")})).await;
    r.err(429, "rate_limited");
    assert!(r.retry_after.is_some());
    alice.post(&s, &to_bob, json!({"body": b64(b"a real message")})).await.ok();
}

/// Mallory stays under the hourly rate but never stops: her unread messages in Bob's mailbox
/// stop at her share, Alice's still arrive, and once Bob has read them Mallory may write again.
#[tokio::test]
async fn a_slow_stranger_fills_only_its_share_of_a_mailbox() {
    let mut c = test_config();
    c.quotas.mailbox_share_per_sender = 3;
    let s = Server::with_config(c);
    let (alice, bob, mallory) = (User::new(1), User::new(2), User::new(66));
    register(&s, &bob).await;
    let to_bob = format!("/v1/mailboxes/{}", bob.id);
    for _ in 0..3 {
        mallory.post(&s, &to_bob, json!({"body": b64(b"spam")})).await.ok();
    }
    let r = mallory.post(&s, &to_bob, json!({"body": b64(b"spam")})).await;
    r.err(429, "mailbox_full");
    assert!(r.retry_after.is_some());
    alice.post(&s, &to_bob, json!({"body": b64(b"a real message")})).await.ok();
    let page = bob.get(&s, "/v1/mailbox?after=0").await;
    let senders: Vec<&str> =
        page.ok()["entries"].as_array().expect("entries").iter().filter_map(|e| e["sender"].as_str()).collect();
    assert_eq!(senders.len(), 4, "three of Mallory's and Alice's");
    assert_eq!(senders.last().copied(), Some(alice.id.to_string().as_str()));
    bob.post(&s, "/v1/mailbox/ack", json!({"up_to": 4})).await.ok();
    mallory.post(&s, &to_bob, json!({"body": b64(b"spam again")})).await.ok();
}

#[tokio::test]
async fn key_claims_are_limited_per_claimer_and_per_target() {
    let mut c = test_config();
    c.quotas.key_claims_per_pair_per_hour = 3;
    c.quotas.key_claims_per_target_per_hour = 5;
    let s = Server::with_config(c);
    let (alice, bob, carol, mallory) = (User::new(1), User::new(2), User::new(3), User::new(66));
    let items: Vec<_> = (0..20u8).map(|n| item("olm_one_time", &[n; 32], false)).collect();
    bob.post(&s, "/v1/keys", json!({"items": items})).await.ok();
    let claim = format!("/v1/keys/{}/claim", bob.id);
    for _ in 0..3 {
        mallory.post(&s, &claim, json!({"kind": "olm_one_time"})).await.ok();
    }
    mallory.post(&s, &claim, json!({"kind": "olm_one_time"})).await.err(429, "rate_limited");
    // Others may still claim, up to what everyone together may take of Bob per hour.
    alice.post(&s, &claim, json!({"kind": "olm_one_time"})).await.ok();
    carol.post(&s, &claim, json!({"kind": "olm_one_time"})).await.ok();
    carol.post(&s, &claim, json!({"kind": "olm_one_time"})).await.err(429, "rate_limited");
    let counts = bob.get(&s, "/v1/keys").await;
    assert_eq!(counts.ok()["counts"][0]["one_time"], json!(15), "only five keys left Bob's store");
}

#[tokio::test]
async fn key_items_are_size_capped_and_the_last_resort_is_always_replaceable() {
    let mut c = test_config();
    c.quotas.key_item_bytes = 1024;
    c.limits.key_items_per_user = 3;
    let s = Server::with_config(c);
    let bob = User::new(2);
    let big = item("mls_key_package", &[7; 1025], false);
    bob.post(&s, "/v1/keys", json!({"items": [big]})).await.err(413, "payload_too_large");
    let items: Vec<_> = (0..3u8).map(|n| item("mls_key_package", &[n; 100], false)).collect();
    bob.post(&s, "/v1/keys", json!({"items": items})).await.ok();
    bob.post(&s, "/v1/keys", json!({"items": [item("mls_key_package", b"kp4", false)]})).await.err(403, "key_limit");
    for lr in [b"lr1", b"lr2"] {
        let r = bob.post(&s, "/v1/keys", json!({"items": [item("mls_key_package", lr, true)]})).await;
        assert_eq!(r.ok()["counts"], json!([{"kind": "mls_key_package", "one_time": 3, "last_resort": true}]));
    }
}

#[tokio::test]
async fn a_membership_whose_policy_does_not_fit_or_with_ids_that_are_not_keys_is_refused() {
    let s = Server::new();
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    sk_room(&s, &alice, "r").await;
    // A role for Carol, who is not a member.
    post_membership(&s, &alice, &alice, "r", 1, &[&alice, &bob], &[&alice, &carol]).await.err(400, "bad_membership");
    let m = grove_wire::membership::SignedMembership::sign(
        &alice.key,
        "r",
        1,
        vec![alice.id, not_a_key()],
        grove_wire::policy::RoomPolicy::for_creator(alice.id),
    );
    let body = json!({"kind": "membership", "epoch": 1, "body": b64(&serde_json::to_vec(&m).unwrap())});
    alice.post(&s, "/v1/rooms/r/log", body).await.err(400, "bad_membership");
    post_membership(&s, &alice, &alice, "r", 1, &[&alice, &bob], &[&alice]).await.ok();
}

/// Reads `grove_tracked_identities` from `/metrics`.
async fn tracked(s: &Server) -> i64 {
    let text = s.get("/metrics").await.text;
    let line = text.lines().find(|l| l.starts_with("grove_tracked_identities ")).expect("the gauge");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn state_kept_per_identity_is_freed_once_they_go_quiet() {
    // The buckets refill in real time: a deposit quota this large refills in a millisecond,
    // so the test need not wait the six seconds a deposit takes to refill by default.
    let mut c = test_config();
    c.quotas.deposits_per_pair_per_hour = 3_600_000;
    let s = Server::with_config(c);
    let bob = User::new(2);
    register(&s, &bob).await;
    let to_bob = format!("/v1/mailboxes/{}", bob.id);
    // Five hundred one-off identities each read their mailbox and send Bob a message.
    for n in 0..500u32 {
        let key = ed25519_dalek::SigningKey::from_bytes(&sha256(&n.to_be_bytes()));
        let u = User { id: grove_wire::UserId(key.verifying_key().to_bytes()), key };
        u.get(&s, "/v1/mailbox").await.ok();
        u.post(&s, &to_bob, json!({"body": b64(b"hello")})).await.ok();
    }
    assert!(tracked(&s).await >= 1000, "the identities are tracked while active");
    // A minute later (and once every bucket has refilled), they are forgotten.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    s.advance(61_000);
    bob.get(&s, "/v1/mailbox").await.ok();
    let left = tracked(&s).await;
    assert!(left <= 5, "{left} identities still tracked after they went quiet");
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[tokio::test]
async fn a_cursor_up_to_the_documented_maximum_is_accepted_and_past_it_refused() {
    let doc: serde_json::Value = serde_json::from_str(grove_server::OPENAPI).unwrap();
    let max = doc["components"]["parameters"]["After"]["schema"]["maximum"].as_u64().expect("`after` has a maximum");
    let s = Server::new();
    let alice = User::new(1);
    alice.get(&s, &format!("/v1/mailbox?after={max}")).await.ok();
    let past = format!("{}", u128::from(max) + 1);
    alice.get(&s, &format!("/v1/mailbox?after={past}")).await.err(400, "bad_request");
}
