//! Rooms and their logs: creation policy and limits, membership, reading and long-poll.

use std::sync::Arc;
use std::time::Duration;

use grove_wire::api::RoomCreationPolicy;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn alice_creates_a_room_and_the_name_is_hers() {
    let s = Server::new();
    let (alice, bob) = (User::new(1), User::new(2));
    let r = alice.post(&s, "/v1/rooms", json!({"name": "paris", "mode": "sender-keys", "public": true})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json["members"], json!([alice.id.to_string()]));
    assert_eq!(r.json["admins"], json!([alice.id.to_string()]));
    assert_eq!((r.json["epoch"].clone(), r.json["head"].clone()), (json!(0), json!(0)));
    bob.post(&s, "/v1/rooms", json!({"name": "paris", "mode": "sender-keys"})).await.err(409, "room_exists");
    for bad in ["", "Paris", "-x", "a b", &"x".repeat(65), "été"] {
        alice.post(&s, "/v1/rooms", json!({"name": bad, "mode": "sender-keys"})).await.err(400, "invalid_name");
    }
    alice.post(&s, "/v1/rooms", json!({"name": "lyon", "mode": "mls"})).await.err(400, "malformed_body");
    alice.post(&s, "/v1/rooms", json!({"name": "lyon", "mode": "carrier-pigeon"})).await.err(400, "malformed_body");
    // Public list needs no signature; private rooms are not listed.
    alice.post(&s, "/v1/rooms", json!({"name": "secret", "mode": "sender-keys"})).await.ok();
    let list = s.get("/v1/rooms").await;
    assert_eq!(list.ok()["rooms"], json!([{"name": "paris", "mode": "sender-keys", "member_count": 1}]));
    // Room info is for members only.
    assert_eq!(alice.get(&s, "/v1/rooms/paris").await.ok()["name"], json!("paris"));
    bob.get(&s, "/v1/rooms/paris").await.err(403, "not_member");
    alice.get(&s, "/v1/rooms/nowhere").await.err(404, "room_not_found");
}

#[tokio::test]
async fn room_creation_follows_the_servers_policy_and_limit() {
    let (alice, bob) = (User::new(1), User::new(2));
    let mut c = test_config();
    c.rooms.creation = RoomCreationPolicy::Closed;
    let s = Server::with_config(c.clone());
    alice.post(&s, "/v1/rooms", json!({"name": "a", "mode": "sender-keys"})).await.err(403, "forbidden");
    c.rooms.creation = RoomCreationPolicy::Allowlist;
    c.rooms.allowlist = vec![alice.id];
    c.limits.rooms_per_user = 1;
    let s = Server::with_config(c);
    assert_eq!(s.get("/v1/info").await.ok()["room_creation"], json!("allowlist"));
    alice.post(&s, "/v1/rooms", json!({"name": "a", "mode": "sender-keys"})).await.ok();
    bob.post(&s, "/v1/rooms", json!({"name": "b", "mode": "sender-keys"})).await.err(403, "forbidden");
    alice.post(&s, "/v1/rooms", json!({"name": "c", "mode": "sender-keys"})).await.err(403, "room_limit");
}

#[tokio::test]
async fn members_post_and_read_in_order_others_cannot() {
    let s = Server::new();
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    sk_room(&s, &alice, "r").await;
    post_app(&s, &bob, "r", 0, b"hi").await.err(403, "not_member");
    post_membership(&s, &alice, &alice, "r", 1, &[&alice, &bob], &[&alice]).await.ok();
    for n in 0..5u8 {
        let who = if n % 2 == 0 { &alice } else { &bob };
        let r = post_app(&s, who, "r", 1, &[n]).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.json["seq"], json!(u64::from(n) + 2));
    }
    let page = bob.get(&s, "/v1/rooms/r/log?after=0").await;
    assert_eq!(seqs(page.ok()), [1, 2, 3, 4, 5, 6]);
    assert_eq!((page.json["head"].clone(), page.json["epoch"].clone()), (json!(6), json!(1)));
    assert_eq!(page.json["entries"][0]["kind"], json!("membership"));
    assert_eq!(page.json["entries"][2]["sender"], json!(bob.id.to_string()));
    assert_eq!(seqs(&bob.get(&s, "/v1/rooms/r/log?after=2&limit=2").await.json), [3, 4]);
    carol.get(&s, "/v1/rooms/r/log").await.err(403, "not_member");
    // Bob is removed: he can no longer post, and reads no further than the entry that removed
    // him (see removal.rs).
    post_membership(&s, &alice, &alice, "r", 2, &[&alice], &[&alice]).await.ok();
    post_app(&s, &bob, "r", 2, b"still here?").await.err(403, "not_member");
    bob.get(&s, "/v1/rooms/r/log?after=7").await.err(403, "not_member");
    let info = alice.get(&s, "/v1/rooms/r").await;
    assert_eq!(info.ok()["members"], json!([alice.id.to_string()]));
    let m = alice.get(&s, "/v1/rooms/r/membership").await;
    assert_eq!(m.ok()["version"], json!(2));
    assert_eq!(m.json["current"]["members"], json!([alice.id.to_string()]));
}

/// Alice adds Bob and Carol naming their home servers; Bob, a plain member, leaves and points
/// Carol's home at his own server on the way out: refused with not_allowed (only Carol may
/// change her home), and leaving with the homes as they were goes through.
#[tokio::test]
async fn a_members_home_in_the_membership_changes_only_by_that_member() {
    let s = Server::new();
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    sk_room(&s, &alice, "r").await;
    let homes = |list: &[(&User, &str)]| list.iter().map(|(u, h)| (u.id, h.to_string())).collect();
    let post = |signer: &User, version: u64, members: &[&User], h: std::collections::BTreeMap<_, _>| {
        let m = grove_wire::membership::SignedMembership::sign_with_homes(
            &signer.key,
            "r",
            version,
            members.iter().map(|u| u.id).collect(),
            grove_wire::policy::RoomPolicy::for_creator(alice.id),
            h,
        );
        json!({"kind": "membership", "epoch": version, "body": b64(&serde_json::to_vec(&m).unwrap())})
    };
    let all = homes(&[(&alice, "a:1"), (&bob, "b:1"), (&carol, "c:1")]);
    alice.post(&s, "/v1/rooms/r/log", post(&alice, 1, &[&alice, &bob, &carol], all)).await.ok();
    let hijack = homes(&[(&alice, "a:1"), (&carol, "bob.example:1")]);
    bob.post(&s, "/v1/rooms/r/log", post(&bob, 2, &[&alice, &carol], hijack)).await.err(403, "not_allowed");
    let dropped = homes(&[(&alice, "a:1")]);
    bob.post(&s, "/v1/rooms/r/log", post(&bob, 2, &[&alice, &carol], dropped)).await.err(403, "not_allowed");
    let kept = homes(&[(&alice, "a:1"), (&carol, "c:1")]);
    bob.post(&s, "/v1/rooms/r/log", post(&bob, 2, &[&alice, &carol], kept)).await.ok();
}

#[tokio::test]
async fn membership_updates_must_be_allowed_by_the_policy_and_have_the_next_version() {
    let s = Server::new();
    let (alice, bob, mallory) = (User::new(1), User::new(2), User::new(66));
    sk_room(&s, &alice, "r").await;
    post_membership(&s, &alice, &alice, "r", 2, &[&alice, &bob], &[&alice]).await.err(409, "membership_version");
    // Mallory, no member, signs her own way in as owner: the policy does not allow it.
    post_membership(&s, &alice, &mallory, "r", 1, &[&alice, &mallory], &[&mallory]).await.err(403, "not_allowed");
    let elsewhere = grove_wire::membership::SignedMembership::sign(
        &alice.key,
        "other-room",
        1,
        vec![alice.id],
        grove_wire::policy::RoomPolicy::for_creator(alice.id),
    );
    let body = json!({"kind": "membership", "epoch": 1, "body": b64(&serde_json::to_vec(&elsewhere).unwrap())});
    alice.post(&s, "/v1/rooms/r/log", body).await.err(400, "bad_membership");
    // A forged signature.
    let mut m = grove_wire::membership::SignedMembership::sign(
        &alice.key,
        "r",
        1,
        vec![alice.id, mallory.id],
        grove_wire::policy::RoomPolicy::for_creator(alice.id),
    );
    m.members = vec![alice.id, bob.id];
    m.members.sort();
    let body = json!({"kind": "membership", "epoch": 1, "body": b64(&serde_json::to_vec(&m).unwrap())});
    alice.post(&s, "/v1/rooms/r/log", body).await.err(400, "bad_membership");
    let garbage = json!({"kind": "membership", "epoch": 1, "body": b64(b"{not json")});
    alice.post(&s, "/v1/rooms/r/log", garbage).await.err(400, "bad_membership");
    // Only members may post one, even a validly signed one.
    post_membership(&s, &bob, &alice, "r", 1, &[&alice, &bob], &[&alice]).await.err(403, "not_member");
    // Commits have no place in a sender-keys room.
    alice
        .post(&s, "/v1/rooms/r/log", json!({"kind": "commit", "epoch": 0, "body": b64(b"x")}))
        .await
        .err(400, "wrong_kind");
    let info = alice.get(&s, "/v1/rooms/r").await;
    assert_eq!((info.ok()["epoch"].clone(), info.json["head"].clone()), (json!(0), json!(0)), "state unchanged");
    // A new owner can be named, and then signs the next version.
    post_membership(&s, &alice, &alice, "r", 1, &[&alice, &bob], &[&alice, &bob]).await.ok();
    post_membership(&s, &bob, &bob, "r", 2, &[&bob], &[&bob]).await.ok();
    post_app(&s, &alice, "r", 2, b"x").await.err(403, "not_member");
}

/// A sender-keys message made on an older membership view could be readable by a member
/// removed since: only the current version is accepted, and the sender learns it must resync.
#[tokio::test]
async fn sender_keys_messages_are_accepted_at_the_current_membership_version_only() {
    let mut c = test_config();
    c.limits.epoch_window = 1;
    let s = Server::with_config(c);
    let alice = User::new(1);
    sk_room(&s, &alice, "r").await;
    for v in 1..=3 {
        post_membership(&s, &alice, &alice, "r", v, &[&alice], &[&alice]).await.ok();
    }
    post_app(&s, &alice, "r", 3, b"now").await.ok();
    let behind = post_app(&s, &alice, "r", 2, b"one behind").await;
    assert_eq!(behind.err(409, "wrong_epoch")["current_epoch"], json!(3));
    let old = post_app(&s, &alice, "r", 1, b"two behind").await;
    assert_eq!(old.err(409, "wrong_epoch")["current_epoch"], json!(3));
    let future = post_app(&s, &alice, "r", 4, b"ahead").await;
    assert_eq!(future.err(409, "wrong_epoch")["current_epoch"], json!(3));
}

#[tokio::test]
async fn oversized_entries_are_refused() {
    let mut c = test_config();
    c.limits.max_entry_bytes = 1000;
    c.limits.max_body_bytes = 4000;
    let s = Server::with_config(c);
    let alice = User::new(1);
    sk_room(&s, &alice, "r").await;
    post_app(&s, &alice, "r", 0, &[0; 1000]).await.ok();
    post_app(&s, &alice, "r", 0, &[0; 1001]).await.err(413, "payload_too_large");
    post_app(&s, &alice, "r", 0, &[0; 5000]).await.err(413, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_the_log_wakes_on_a_new_entry() {
    let s = Arc::new(Server::new());
    let alice = User::new(1);
    sk_room(&s, &alice, "r").await;
    post_app(&s, &alice, "r", 0, b"first").await.ok();
    let reader = {
        let (s, alice) = (s.clone(), alice.clone());
        tokio::spawn(async move { alice.get(&s, "/v1/rooms/r/log?after=1&wait=10").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    post_app(&s, &alice, "r", 0, b"second").await.ok();
    let page = reader.await.unwrap();
    assert_eq!(bodies(page.ok()), [b"second".to_vec()]);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing new: the wait times out with an empty page.
    let empty = alice.get(&s, "/v1/rooms/r/log?after=2&wait=1").await;
    assert_eq!(seqs(empty.ok()), Vec::<u64>::new());
    assert_eq!(empty.json["head"], json!(2));
}

#[tokio::test]
async fn a_room_cannot_grow_past_the_member_limit() {
    let mut c = test_config();
    c.limits.members_per_room = 2;
    let s = Server::with_config(c);
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    sk_room(&s, &alice, "r").await;
    post_membership(&s, &alice, &alice, "r", 1, &[&alice, &bob], &[&alice]).await.ok();
    post_membership(&s, &alice, &alice, "r", 2, &[&alice, &bob, &carol], &[&alice]).await.err(403, "member_limit");
    assert_eq!(alice.get(&s, "/v1/rooms/r").await.ok()["members"].as_array().unwrap().len(), 2);
}
