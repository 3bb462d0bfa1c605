//! Bad input never causes a 5xx: every route answers malformed bodies, paths and queries with
//! a 4xx and a code; unknown routes and methods too.

use axum::http::Method;
use serde_json::json;

use crate::harness::*;

const POST_ROUTES: &[&str] =
    &["/v1/keys", "/v1/keys/USER/claim", "/v1/mailboxes/USER", "/v1/mailbox/ack", "/v1/rooms", "/v1/rooms/r/log"];

#[tokio::test]
async fn malformed_bodies_on_every_route_get_malformed_body() {
    let s = Server::new();
    let alice = User::new(1);
    sk_room(&s, &alice, "r").await;
    let bad_bodies: &[&[u8]] = &[
        b"",
        b"not json",
        b"[]",
        b"{}",
        b"{\"unexpected\": 1}",
        b"\xff\xfe",
        b"{\"body\": \"%%%not base64\"}",
        b"{\"kind\": \"commit\", \"epoch\": -1, \"body\": \"\"}",
        b"{\"kind\": \"commit\", \"epoch\": 99999999999999999999999, \"body\": \"\"}",
        b"{\"name\": 5, \"mode\": \"mls\"}",
        b"{\"up_to\": \"ten\"}",
        b"{\"items\": [{\"kind\": \"mls_key_package\", \"data\": \"AA==\", \"extra\": true}]}",
    ];
    for route in POST_ROUTES {
        let route = route.replace("USER", &alice.id.to_string());
        for body in bad_bodies {
            let r = alice.post_raw(&s, &route, body).await;
            assert_eq!(r.status, 400, "{route} with {:?}: {}", String::from_utf8_lossy(body), r.text);
            assert_eq!(r.code(), "malformed_body", "{route}: {}", r.text);
        }
    }
    let info = alice.get(&s, "/v1/rooms/r").await;
    assert_eq!((info.ok()["epoch"].clone(), info.json["head"].clone()), (json!(0), json!(0)));
}

#[tokio::test]
async fn bad_paths_and_queries_get_bad_request() {
    let s = Server::new();
    let alice = User::new(1);
    sk_room(&s, &alice, "r").await;
    alice.post(&s, "/v1/keys/xyz/claim", json!({"kind": "mls_key_package"})).await.err(400, "bad_request");
    alice.post(&s, "/v1/mailboxes/xyz", json!({"body": ""})).await.err(400, "bad_request");
    for q in ["after=-1", "after=x", "limit=x", "wait=soon", "bogus=1", "limit=99999999999"] {
        alice.get(&s, &format!("/v1/rooms/r/log?{q}")).await.err(400, "bad_request");
        alice.get(&s, &format!("/v1/mailbox?{q}")).await.err(400, "bad_request");
    }
    s.get("/v1/rooms?limit=x").await.err(400, "bad_request");
    // A huge limit is capped, not refused.
    alice.get(&s, "/v1/rooms/r/log?limit=4000000000").await.ok();
    // The push route insists on a WebSocket.
    alice.get(&s, "/v1/push").await.err(400, "bad_request");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let s = Server::new();
    s.get("/v2/anything").await.err(404, "not_found");
    s.get("/").await.err(404, "not_found");
    let alice = User::new(1);
    let r = s.call(alice.request(&s, Method::DELETE, "/v1/rooms", Vec::new())).await;
    r.err(405, "method_not_allowed");
    let r = s.call(alice.request(&s, Method::PUT, "/v1/mailbox", Vec::new())).await;
    r.err(405, "method_not_allowed");
}

#[tokio::test]
async fn bodies_over_the_limit_get_payload_too_large() {
    let mut c = test_config();
    c.limits.max_body_bytes = 2048;
    c.limits.max_entry_bytes = 1024;
    let s = Server::with_config(c);
    let alice = User::new(1);
    let big = vec![b' '; 4096];
    for route in POST_ROUTES {
        let route = route.replace("USER", &alice.id.to_string());
        alice.post_raw(&s, &route, &big).await.err(413, "payload_too_large");
    }
}

#[tokio::test]
async fn health_info_and_metrics_answer_without_a_signature() {
    let s = Server::new();
    assert_eq!(s.get("/healthz").await.ok()["status"], json!("ok"));
    let info = s.get("/v1/info").await;
    assert_eq!(info.ok()["public_key"], json!(grove_wire::UserId(s.state.public_key()).to_string()));
    assert_eq!(info.json["limits"]["clock_skew_secs"], json!(300));
    let alice = User::new(1);
    sk_room(&s, &alice, "r").await;
    post_app(&s, &alice, "r", 0, b"x").await.ok();
    post_membership(&s, &alice, &alice, "r", 5, &[&alice], &[&alice]).await.err(409, "membership_version");
    let m = s.get("/metrics").await;
    assert_eq!(m.status, 200);
    for needle in [
        "grove_http_requests_total{route=\"/v1/rooms/{room}/log\",method=\"POST\",status=\"201\"} 1",
        "grove_entries_appended_total{kind=\"application\"} 1",
        "grove_commits_rejected_total{code=\"membership_version\"} 1",
        "grove_push_connections 0",
        "grove_storage_seconds_count{op=\"append\"}",
    ] {
        assert!(m.text.contains(needle), "missing {needle} in\n{}", m.text);
    }
}

/// JSON Schema, and so the OpenAPI document, calls `2.0` an integer: Bob acknowledges his mail
/// up to `2.0` and `3e0`, and Alice begins an upload of `4112.0` bytes, as if they had written
/// the digits; a fraction, a negative number or one past u64 is still refused.
#[tokio::test]
async fn integers_written_with_a_fraction_or_an_exponent_are_integers() {
    let s = Server::new();
    let alice = User::new(1);
    let bob = User::new(2);
    register(&s, &bob).await;
    for text in ["one", "two", "three"] {
        alice.post(&s, &format!("/v1/mailboxes/{}", bob.id), json!({ "body": b64(text.as_bytes()) })).await.ok();
    }
    for bad in [r#"{"up_to": 2.5}"#, r#"{"up_to": -1.0}"#, r#"{"up_to": 1.8446744073709552e19}"#] {
        bob.post_raw(&s, "/v1/mailbox/ack", bad.as_bytes()).await.err(400, "malformed_body");
    }
    assert_eq!(bob.post_raw(&s, "/v1/mailbox/ack", br#"{"up_to": 2.0}"#).await.ok()["removed"], json!(2));
    assert_eq!(bob.post_raw(&s, "/v1/mailbox/ack", br#"{"up_to": 3e0}"#).await.ok()["removed"], json!(1));
    assert_eq!(bob.get(&s, "/v1/mailbox").await.ok()["entries"], json!([]));

    sk_room(&s, &alice, "r").await;
    alice.post_raw(&s, "/v1/rooms/r/files", br#"{"size": 4112.5}"#).await.err(400, "malformed_body");
    let upload = alice.post_raw(&s, "/v1/rooms/r/files", br#"{"size": 4112.0}"#).await;
    assert_eq!(upload.ok()["size"], json!(4112));
}
