//! A removed member reads the room's log up to and including the entry that removed it, and
//! nothing after: by reading, by long-poll and by push; its mailbox keeps working; a user who
//! never was a member is refused as before; a member added back reads like any member.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use mls_rs::group::{CommitEffect, ReceivedMessage};
use mls_rs::MlsMessage;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::mls::{add_member, bytes, client, mls_room, post_handshake};
use crate::push::{next_event, Live};

/// Alice's sender-keys room "r" with alice, bob, carol, dave and eve, each of whom said hello
/// in turn: seq 1 is the membership, 2..=6 the hellos.
async fn five_said_hello(s: &Server) -> [User; 5] {
    let people = [User::new(1), User::new(2), User::new(3), User::new(4), User::new(5)];
    let [alice, ..] = &people;
    sk_room(s, alice, "r").await;
    let all: Vec<&User> = people.iter().collect();
    post_membership(s, alice, alice, "r", 1, &all, &[alice]).await.ok();
    for (n, who) in people.iter().enumerate() {
        post_app(s, who, "r", 1, format!("hello from {n}").as_bytes()).await.ok();
    }
    people
}

#[tokio::test]
async fn carol_removed_while_away_reads_up_to_her_removal_and_no_further() {
    let s = Server::new();
    let [alice, bob, carol, dave, eve] = five_said_hello(&s).await;
    // A sender key for carol, left before her removal, stays hers to collect.
    register(&s, &carol).await;
    alice.post(&s, &format!("/v1/mailboxes/{}", carol.id), json!({"body": b64(b"alice's sender key")})).await.ok();
    post_membership(&s, &alice, &alice, "r", 2, &[&alice, &bob, &dave, &eve], &[&alice]).await.ok();
    post_app(&s, &bob, "r", 2, b"carol is gone").await.ok();
    post_membership(&s, &alice, &alice, "r", 3, &[&alice, &bob, &dave, &eve], &[&alice]).await.ok();

    let page = carol.get(&s, "/v1/rooms/r/log?after=0").await;
    assert_eq!(seqs(page.ok()), [1, 2, 3, 4, 5, 6, 7], "every hello and the entry that removed her");
    assert_eq!(
        (page.json["head"].clone(), page.json["epoch"].clone()),
        (json!(7), json!(2)),
        "the room as she left it"
    );
    assert_eq!(page.json["entries"][6]["kind"], json!("membership"));
    assert_eq!(seqs(carol.get(&s, "/v1/rooms/r/log?after=3&limit=2").await.ok()), [4, 5]);
    assert_eq!(seqs(carol.get(&s, "/v1/rooms/r/log?after=5&limit=100").await.ok()), [6, 7]);
    for after in [7, 8, 9, 1000] {
        let refused = carol.get(&s, &format!("/v1/rooms/r/log?after={after}")).await;
        assert_eq!(refused.err(403, "not_member")["head"], json!(7), "after={after}");
    }
    // A long-poll past the removal is refused at once, not held.
    let started = std::time::Instant::now();
    carol.get(&s, "/v1/rooms/r/log?after=7&wait=10").await.err(403, "not_member");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Reading is all she keeps: no posting, no room info, no files.
    post_app(&s, &carol, "r", 2, b"hello?").await.err(403, "not_member");
    carol.get(&s, "/v1/rooms/r").await.err(403, "not_member");
    // Her mailbox still holds what was sent to her.
    let mail = carol.get(&s, "/v1/mailbox").await;
    assert_eq!(mail.ok()["entries"].as_array().unwrap().len(), 1, "{}", mail.text);
    // Members read everything; someone who never was a member reads nothing.
    let all = dave.get(&s, "/v1/rooms/r/log?after=0").await;
    assert_eq!((seqs(all.ok()), all.json["head"].clone()), ((1..=9).collect(), json!(9)));
    let mallory = User::new(66);
    let refused = mallory.get(&s, "/v1/rooms/r/log?after=0").await;
    assert_eq!(refused.err(403, "not_member").get("head"), None);
}

#[tokio::test]
async fn carol_added_back_reads_like_any_member_and_a_second_removal_moves_her_end() {
    let s = Server::new();
    let [alice, bob, carol, dave, eve] = five_said_hello(&s).await;
    post_membership(&s, &alice, &alice, "r", 2, &[&alice, &bob, &dave, &eve], &[&alice]).await.ok();
    post_membership(&s, &alice, &alice, "r", 3, &[&alice, &bob, &carol, &dave, &eve], &[&alice]).await.ok();
    post_app(&s, &carol, "r", 3, b"carol is back").await.ok();
    assert_eq!(seqs(carol.get(&s, "/v1/rooms/r/log?after=0").await.ok()), (1..=9).collect::<Vec<_>>());
    post_membership(&s, &alice, &alice, "r", 4, &[&alice, &bob, &dave, &eve], &[&alice]).await.ok();
    post_app(&s, &alice, "r", 4, b"after the second removal").await.ok();
    let page = carol.get(&s, "/v1/rooms/r/log?after=8").await;
    assert_eq!((seqs(page.ok()), page.json["head"].clone()), (vec![9, 10], json!(10)));
    assert_eq!(carol.get(&s, "/v1/rooms/r/log?after=10").await.err(403, "not_member")["head"], json!(10));
}

/// Carol waits on the log when she is removed: the long-poll answers the entry that removed her
/// and nothing that came with or after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_ends_with_the_entry_that_removed_the_reader() {
    let s = Arc::new(Server::new());
    let [alice, bob, carol, dave, eve] = five_said_hello(&s).await;
    let waiting = {
        let (s, carol) = (s.clone(), carol.clone());
        tokio::spawn(async move { carol.get(&s, "/v1/rooms/r/log?after=6&wait=10").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    post_membership(&s, &alice, &alice, "r", 2, &[&alice, &bob, &dave, &eve], &[&alice]).await.ok();
    post_app(&s, &alice, "r", 2, b"right after").await.ok();
    let page = waiting.await.unwrap();
    assert_eq!((seqs(page.ok()), page.json["head"].clone()), (vec![7], json!(7)));
    carol.get(&s, "/v1/rooms/r/log?after=7&wait=10").await.err(403, "not_member");
}

/// In an MLS room, bob removed while away reads the commit that removed him, and his own
/// mls-rs group, processing it, learns that it was removed.
#[tokio::test]
async fn bob_removed_from_an_mls_room_reads_the_commit_that_removed_him() {
    let s = Server::new();
    let (alice, bob, carol) = (User::new(1), User::new(2), User::new(3));
    let (ac, bc, cc) = (client(&alice), client(&bob), client(&carol));
    let mut ag = mls_room(&s, &alice, &ac, "r").await;
    let mut bg = add_member(&s, &alice, &mut ag, &bc, "r").await;
    let mut cg = add_member(&s, &alice, &mut ag, &cc, "r").await;
    // Bob has read up to here (seq 2, the commit adding carol).
    bg.process_incoming_message(
        MlsMessage::from_bytes(&bodies(alice.get(&s, "/v1/rooms/r/log?after=1").await.ok())[0]).unwrap(),
    )
    .unwrap();
    let hello = cg.encrypt_application_message(b"hello from carol", vec![]).unwrap();
    post_handshake(&s, &carol, "r", "application", 2, &bytes(&hello)).await.ok();
    let remove = ag.commit_builder().remove_member(bg.current_member_index()).unwrap().build().unwrap();
    post_handshake(&s, &alice, "r", "commit", 2, &bytes(&remove.commit_message)).await.ok();
    ag.apply_pending_commit().unwrap();
    let after = ag.encrypt_application_message(b"bob is gone", vec![]).unwrap();
    post_handshake(&s, &alice, "r", "application", 3, &bytes(&after)).await.ok();

    let page = bob.get(&s, "/v1/rooms/r/log?after=2").await;
    assert_eq!(
        (seqs(page.ok()), page.json["head"].clone(), page.json["epoch"].clone()),
        (vec![3, 4], json!(4), json!(3))
    );
    let entries = bodies(&page.json);
    match bg.process_incoming_message(MlsMessage::from_bytes(&entries[0]).unwrap()).unwrap() {
        ReceivedMessage::ApplicationMessage(m) => assert_eq!(m.data(), b"hello from carol"),
        other => panic!("not carol's hello: {other:?}"),
    }
    match bg.process_incoming_message(MlsMessage::from_bytes(&entries[1]).unwrap()).unwrap() {
        ReceivedMessage::Commit(c) => assert!(matches!(c.effect, CommitEffect::Removed { .. }), "{:?}", c.effect),
        other => panic!("not the commit: {other:?}"),
    }
    assert_eq!(bob.get(&s, "/v1/rooms/r/log?after=4").await.err(403, "not_member")["head"], json!(4));
    assert_eq!(seqs(carol.get(&s, "/v1/rooms/r/log?after=2").await.ok()), [3, 4, 5]);
}

/// The push stream of a removed member: live, it carries everything up to and including the
/// entry that removed her, then a `not_member` frame, and the room's stream ends (her mailbox
/// stream goes on); subscribing afterwards gives the same backlog and the same end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carols_push_stream_ends_with_the_entry_that_removed_her() {
    let live = Live::start().await;
    let people = [User::new(1), User::new(2), User::new(3), User::new(4), User::new(5)];
    let [alice, bob, carol, dave, eve] = &people;
    live.post(alice, "/v1/rooms", json!({"name": "r", "mode": "sender-keys"})).await;
    let members = |version: u64, who: Vec<&User>| {
        let m = grove_wire::membership::SignedMembership::sign(
            &alice.key,
            "r",
            version,
            who.iter().map(|u| u.id).collect(),
            grove_wire::policy::RoomPolicy::for_creator(alice.id),
        );
        let body = json!({"kind": "membership", "epoch": version, "body": b64(&serde_json::to_vec(&m).unwrap())});
        live.post(alice, "/v1/rooms/r/log", body)
    };
    members(1, people.iter().collect()).await;
    // Known to the server (a last-resort key item), so its mailbox takes deposits.
    let item = json!({"kind": "olm_fallback", "last_resort": true, "data": b64(&carol.id.0)});
    live.post(carol, "/v1/keys", json!({"items": [item]})).await;
    let mut ws = live.connect(carol).await;
    let subscribe = json!({"type": "subscribe", "rooms": [{"room": "r", "after": 0}], "mailbox_after": 0});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let mut got = vec![next_event(&mut ws).await["entry"]["seq"].as_u64().unwrap()];
    for (n, who) in people.iter().enumerate() {
        app(&live, who, 1, &format!("hello from {n}")).await;
    }
    members(2, vec![alice, bob, dave, eve]).await;
    app(&live, alice, 2, "carol is gone").await;
    let end = loop {
        let ev = next_event(&mut ws).await;
        match ev["type"].as_str().unwrap() {
            "entry" => got.push(ev["entry"]["seq"].as_u64().unwrap()),
            "error" => break ev,
            other => panic!("unexpected {other}: {ev}"),
        }
    };
    assert_eq!(got, (1..=7).collect::<Vec<_>>(), "every entry up to her removal, none after");
    let said = (end["room"].clone(), end["error"]["code"].clone(), end["error"]["head"].clone());
    assert_eq!(said, (json!("r"), json!("not_member"), json!(7)));
    // The room's stream is over; her mailbox's is not.
    app(&live, alice, 2, "still carol-free").await;
    live.post(alice, &format!("/v1/mailboxes/{}", carol.id), json!({"body": b64(b"a note")})).await;
    let ev = next_event(&mut ws).await;
    assert_eq!((ev["type"].clone(), ev["entry"]["seq"].clone()), (json!("mail"), json!(1)), "{ev}");

    // Subscribing again, from anywhere before her removal, ends the same way.
    let mut ws = live.connect(carol).await;
    ws.send(Message::text(json!({"type": "subscribe", "rooms": [{"room": "r", "after": 4}]}).to_string()))
        .await
        .unwrap();
    let mut again: Vec<Value> = Vec::new();
    while again.last().is_none_or(|e| e["type"] != json!("error")) {
        again.push(next_event(&mut ws).await);
    }
    let seqs: Vec<u64> = again.iter().filter_map(|e| e["entry"]["seq"].as_u64()).collect();
    assert_eq!(seqs, [5, 6, 7]);
    assert_eq!(again.last().unwrap()["error"]["code"], json!("not_member"));
    live.stop().await;
}

async fn app(live: &Live, who: &User, version: u64, text: &str) -> Value {
    let body = json!({"kind": "application", "epoch": version, "body": b64(text.as_bytes())});
    live.post(who, "/v1/rooms/r/log", body).await
}
