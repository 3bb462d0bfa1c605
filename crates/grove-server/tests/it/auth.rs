//! Every user request is signed; each way a signature can be wrong has its own code.

use crate::harness::*;
use axum::http::Method;

#[tokio::test]
async fn an_unsigned_request_is_unauthenticated() {
    let s = Server::new();
    s.get("/v1/keys").await.err(401, "unauthenticated");
    s.get("/v1/mailbox").await.err(401, "unauthenticated");
}

#[tokio::test]
async fn a_signature_over_another_body_is_rejected() {
    let s = Server::new();
    let alice = User::new(1);
    let mut req = alice.request(&s, Method::POST, "/v1/rooms", br#"{"name":"a","mode":"sender-keys"}"#.to_vec());
    *req.body_mut() = axum::body::Body::from(r#"{"name":"b","mode":"sender-keys"}"#);
    s.call(req).await.err(401, "bad_signature");
}

#[tokio::test]
async fn a_request_signed_for_another_server_is_rejected() {
    let s = Server::new();
    let alice = User::new(1);
    let other_server_key = ed25519_dalek::SigningKey::from_bytes(&[99; 32]).verifying_key().to_bytes();
    let h =
        grove_wire::auth::sign_request(&alice.key, &other_server_key, "GET", "/v1/keys", s.now(), &fresh_nonce(), b"");
    let req = axum::http::Request::get("/v1/keys")
        .header("x-grove-key", h.key)
        .header("x-grove-timestamp", h.timestamp)
        .header("x-grove-nonce", h.nonce)
        .header("x-grove-signature", h.signature)
        .body(axum::body::Body::empty())
        .unwrap();
    s.call(req).await.err(401, "bad_signature");
}

#[tokio::test]
async fn a_signature_by_another_key_is_rejected() {
    let s = Server::new();
    let (alice, mallory) = (User::new(1), User::new(66));
    let mut req = mallory.request(&s, Method::GET, "/v1/keys", Vec::new());
    req.headers_mut().insert("x-grove-key", alice.id.to_string().parse().unwrap());
    s.call(req).await.err(401, "bad_signature");
}

#[tokio::test]
async fn stale_and_future_timestamps_are_rejected() {
    let s = Server::new();
    let alice = User::new(1);
    let skew = 300_000;
    let old = alice.request_at(&s, s.now() - skew - 1, &fresh_nonce(), Method::GET, "/v1/keys", Vec::new());
    s.call(old).await.err(401, "stale_timestamp");
    let future = alice.request_at(&s, s.now() + skew + 1, &fresh_nonce(), Method::GET, "/v1/keys", Vec::new());
    s.call(future).await.err(401, "stale_timestamp");
    let edge = alice.request_at(&s, s.now() - skew + 1, &fresh_nonce(), Method::GET, "/v1/keys", Vec::new());
    s.call(edge).await.ok();
}

#[tokio::test]
async fn a_reused_nonce_is_rejected_even_on_another_route() {
    let s = Server::new();
    let alice = User::new(1);
    let nonce = fresh_nonce();
    s.call(alice.request_at(&s, s.now(), &nonce, Method::GET, "/v1/keys", Vec::new())).await.ok();
    s.call(alice.request_at(&s, s.now(), &nonce, Method::GET, "/v1/keys", Vec::new())).await.err(401, "nonce_reused");
    s.call(alice.request_at(&s, s.now(), &nonce, Method::GET, "/v1/mailbox", Vec::new()))
        .await
        .err(401, "nonce_reused");
    // Another user may use the same nonce.
    let bob = User::new(2);
    s.call(bob.request_at(&s, s.now(), &nonce, Method::GET, "/v1/keys", Vec::new())).await.ok();
}

#[tokio::test]
async fn malformed_auth_headers_are_unauthenticated() {
    let s = Server::new();
    let alice = User::new(1);
    for (header, value) in
        [("x-grove-key", "not-a-key"), ("x-grove-timestamp", "yesterday"), ("x-grove-nonce", "short")]
    {
        let mut req = alice.request(&s, Method::GET, "/v1/keys", Vec::new());
        req.headers_mut().insert(header, value.parse().unwrap());
        s.call(req).await.err(401, "unauthenticated");
    }
    let mut req = alice.request(&s, Method::GET, "/v1/keys", Vec::new());
    req.headers_mut().insert("x-grove-signature", "!!!".parse().unwrap());
    s.call(req).await.err(401, "bad_signature");
}

#[tokio::test]
async fn too_many_requests_get_429_with_retry_after() {
    let mut c = test_config();
    c.limits.user_requests_per_sec = 1; // burst of 2
    let s = Server::with_config(c);
    let alice = User::new(1);
    alice.get(&s, "/v1/keys").await.ok();
    alice.get(&s, "/v1/keys").await.ok();
    let r = alice.get(&s, "/v1/keys").await;
    r.err(429, "rate_limited");
    assert!(r.retry_after.as_deref().unwrap().parse::<u64>().unwrap() >= 1);
    // Others are not affected.
    User::new(2).get(&s, "/v1/keys").await.ok();
}
