//! Invite links and join requests at the HTTP level: who may set a link, what a request must
//! carry, and each refusal with its code.

use axum::http::Method;
use grove_wire::policy::{JoinRule, Role, RoomPolicy};
use serde_json::json;

use crate::harness::*;

fn token_hash(token: &[u8]) -> String {
    b64(&grove_wire::invite::token_hash(token))
}

async fn delete(user: &User, server: &Server, path: &str) -> Resp {
    server.call(user.request(server, Method::DELETE, path, Vec::new())).await
}

#[tokio::test]
async fn a_link_is_set_by_an_admin_used_by_a_stranger_and_refused_with_a_reason() {
    let server = Server::new();
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    sk_room(&server, &alice, "square").await;
    let token = [9u8; 32];
    let ask = |token: &[u8], home: &str| json!({"token": b64(token), "home": home, "proof": b64(&[5; 32])});

    // Only a member whose role may change settings sets the link; bounds are checked.
    bob.post(&server, "/v1/rooms/square/link", json!({"token_hash": token_hash(&token)})).await.err(403, "not_member");
    let path = "/v1/rooms/square/link";
    alice.post(&server, path, json!({"token_hash": b64(&[1; 31])})).await.err(400, "bad_request");
    alice.post(&server, path, json!({"token_hash": token_hash(&token), "max_uses": 0})).await.err(400, "bad_request");
    // A time past 2^63 - 1 ms is no time; one already past makes a link that opens nothing
    // (asking with an expired link: below).
    let never = json!({"token_hash": token_hash(&token), "expires_at": 9_223_372_036_854_775_808u64});
    alice.post(&server, path, never).await.err(400, "bad_request");
    let past = json!({"token_hash": token_hash(&token), "expires_at": server.now() - 1});
    assert_eq!(alice.post(&server, path, past).await.ok()["uses"], 0);
    let expires_at = server.now() + 60_000;
    let set = json!({"token_hash": token_hash(&token), "max_uses": 3, "expires_at": expires_at});
    let info = alice.post(&server, path, set).await.ok().clone();
    assert_eq!((info["max_uses"].as_u64(), info["uses"].as_u64()), (Some(3), Some(0)));

    // The room is invite-only: nobody may ask, even with the link.
    let joins = "/v1/rooms/square/joins";
    bob.post(&server, joins, ask(&token, "https://home.example")).await.err(403, "not_allowed");
    // Alice opens it to links (the next signed membership carries the join rule).
    let mut policy = RoomPolicy { roles: [(alice.id, Role::Owner)].into(), ..RoomPolicy::default() };
    policy.join = JoinRule::Link;
    let m = grove_wire::membership::SignedMembership::sign(&alice.key, "square", 1, vec![alice.id], policy);
    let body = json!({"kind": "membership", "epoch": 1, "body": b64(&serde_json::to_vec(&m).unwrap())});
    alice.post(&server, "/v1/rooms/square/log", body).await.ok();

    // Bad requests, then a wrong token, then Bob's request, which waits.
    bob.post(&server, joins, ask(&token[..31], "https://home.example")).await.err(400, "bad_request");
    bob.post(&server, joins, ask(&token, "ftp://home.example")).await.err(400, "bad_request");
    let short_proof = json!({"token": b64(&token), "home": "https://home.example", "proof": b64(&[5; 31])});
    bob.post(&server, joins, short_proof).await.err(400, "bad_request");
    bob.post(&server, joins, ask(&token, "https://home.example/x y")).await.err(400, "bad_request");
    bob.post(&server, joins, ask(&[8; 32], "https://home.example")).await.err(403, "link_invalid");
    let asked = bob.post(&server, joins, ask(&token, "https://home.example")).await;
    assert_eq!(asked.status.as_u16(), 202, "{}", asked.text);
    assert_eq!(asked.json["join"], "link");
    // Alice is a member already: she cannot ask.
    alice.post(&server, joins, ask(&token, "https://home.example")).await.err(403, "not_allowed");

    // Alice sees it; Bob, no member, does not.
    let waiting = alice.get(&server, joins).await.ok().clone();
    assert_eq!(waiting["requests"][0]["user"], bob.id.to_string());
    assert_eq!(waiting["requests"][0]["home"], "https://home.example");
    assert_eq!(waiting["requests"][0]["proof"], b64(&[5; 32]));
    bob.get(&server, joins).await.err(403, "not_member");
    delete(&alice, &server, "/v1/rooms/square/joins/nothex").await.err(400, "bad_request");
    assert_eq!(delete(&alice, &server, &format!("{joins}/{}", bob.id)).await.ok()["existed"], true);
    assert_eq!(delete(&alice, &server, &format!("{joins}/{}", bob.id)).await.ok()["existed"], false);

    // Later, the link expires; then Alice revokes it.
    server.advance(60_000);
    carol.post(&server, joins, ask(&token, "https://home.example")).await.err(410, "link_expired");
    assert_eq!(delete(&alice, &server, path).await.ok()["existed"], true);
    carol.post(&server, joins, ask(&token, "https://home.example")).await.err(403, "link_invalid");
    assert_eq!(delete(&alice, &server, path).await.ok()["existed"], false);

    // The limits are published.
    let limits = &server.get("/v1/info").await.ok().clone()["limits"];
    assert_eq!(limits["pending_joins_per_room"], 100);
    assert_eq!(limits["join_requests_per_ip_per_hour"], 30);
}
