//! MLS rooms with real mls-rs clients: the server validates every commit and proposal against
//! the room's public group state and serves the ratchet tree to joiners.

use grove_proto::identity::Identity;
use grove_proto::mls::identity::{signing_identity, GroveIdentityProvider};
use grove_proto::mls::{crypto_provider, CIPHER_SUITE};
use mls_rs::client_builder::MlsConfig;
use mls_rs::group::{ExportedTree, ReceivedMessage};
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::{Client, ExtensionList, Group, MlsMessage};
use serde_json::json;

use crate::harness::*;

pub fn client(user: &User) -> Client<impl MlsConfig> {
    let id = Identity::from_secret_bytes(user.key.to_bytes());
    let (si, sk) = signing_identity(&id);
    Client::builder()
        .identity_provider(GroveIdentityProvider)
        .crypto_provider(crypto_provider())
        .mls_rules(DefaultMlsRules::new().with_commit_options(CommitOptions::new().with_ratchet_tree_extension(false)))
        .signing_identity(si, sk, CIPHER_SUITE)
        .build()
}

pub fn bytes(m: &MlsMessage) -> Vec<u8> {
    m.to_bytes().unwrap()
}

/// Alice creates an MLS room `name` on the server.
pub async fn mls_room<C: MlsConfig>(s: &Server, alice: &User, c: &Client<C>, name: &str) -> Group<C> {
    let group = c.create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let info = group.group_info_message(false).unwrap();
    let r = alice
        .post(
            s,
            "/v1/rooms",
            json!({"name": name, "mode": "mls", "mls": {
                "group_info": b64(&bytes(&info)),
                "ratchet_tree": b64(&group.export_tree().to_bytes().unwrap()),
            }}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    group
}

pub async fn post_handshake(s: &Server, user: &User, room: &str, kind: &str, epoch: u64, msg: &[u8]) -> Resp {
    user.post(s, &format!("/v1/rooms/{room}/log"), json!({"kind": kind, "epoch": epoch, "body": b64(msg)})).await
}

/// Alice adds the holder of `bc` to `room` (commit accepted by the server, applied) and the
/// newcomer joins with the room's tree: the newcomer's group.
pub async fn add_member<A: MlsConfig, B: MlsConfig>(
    s: &Server,
    alice: &User,
    ag: &mut Group<A>,
    bc: &Client<B>,
    room: &str,
) -> Group<B> {
    let epoch = ag.current_epoch();
    let kp = bc.generate_key_package_message(Default::default(), Default::default(), None).unwrap();
    let add = ag.commit_builder().add_member(kp).unwrap().build().unwrap();
    post_handshake(s, alice, room, "commit", epoch, &bytes(&add.commit_message)).await.ok();
    ag.apply_pending_commit().unwrap();
    let tree = ExportedTree::from_bytes(&ag.export_tree().to_bytes().unwrap()).unwrap();
    bc.join_group(Some(tree), &add.welcome_messages[0], None).unwrap().0
}

#[tokio::test]
async fn alice_invites_bob_who_joins_with_the_servers_tree_and_they_talk() {
    let s = Server::new();
    let (alice, bob) = (User::new(1), User::new(2));
    let (ac, bc) = (client(&alice), client(&bob));
    let mut ag = mls_room(&s, &alice, &ac, "garden").await;
    let info = alice.get(&s, "/v1/rooms/garden").await;
    assert_eq!((info.ok()["mode"].clone(), info.json["epoch"].clone()), (json!("mls"), json!(0)));

    // Bob publishes a KeyPackage; Alice claims it and commits the add.
    let kp = bc.generate_key_package_message(Default::default(), Default::default(), None).unwrap();
    let item = json!({"kind": "mls_key_package", "data": b64(&bytes(&kp))});
    bob.post(&s, "/v1/keys", json!({"items": [item]})).await.ok();
    register(&s, &bob).await;
    let claimed = alice.post(&s, &format!("/v1/keys/{}/claim", bob.id), json!({"kind": "mls_key_package"})).await;
    let kp = MlsMessage::from_bytes(&grove_wire::b64::decode(claimed.ok()["data"].as_str().unwrap()).unwrap()).unwrap();
    let out = ag.commit_builder().add_member(kp).unwrap().build().unwrap();
    let r = post_handshake(&s, &alice, "garden", "commit", 0, &bytes(&out.commit_message)).await;
    assert_eq!((r.status.as_u16(), r.json["seq"].clone(), r.json["epoch"].clone()), (201, json!(1), json!(1)));
    ag.apply_pending_commit().unwrap();
    let members = alice.get(&s, "/v1/rooms/garden").await.json["members"].clone();
    assert_eq!(
        members,
        json!([alice.id.to_string(), bob.id.to_string()]),
        "the server derived membership from the commit"
    );

    // The Welcome travels through Bob's mailbox, without the tree; Bob fetches the tree.
    let welcome = bytes(&out.welcome_messages[0]);
    alice.post(&s, &format!("/v1/mailboxes/{}", bob.id), json!({"body": b64(&welcome)})).await.ok();
    let mail = bob.get(&s, "/v1/mailbox").await;
    let welcome = MlsMessage::from_bytes(&bodies(mail.ok())[0]).unwrap();
    let tree = bob.get(&s, "/v1/rooms/garden/tree").await;
    assert_eq!(tree.ok()["epoch"], json!(1));
    let tree = ExportedTree::from_bytes(&grove_wire::b64::decode(tree.json["ratchet_tree"].as_str().unwrap()).unwrap())
        .unwrap();
    let (mut bg, _) = bc.join_group(Some(tree), &welcome, None).unwrap();
    assert_eq!(bg.epoch_authenticator().unwrap(), ag.epoch_authenticator().unwrap());
    let tree_at_1 = bg.export_tree().to_bytes().unwrap();

    // They talk through the log; the server only ever sees ciphertext.
    let msg = ag.encrypt_application_message(b"hello bob", vec![]).unwrap();
    post_handshake(&s, &alice, "garden", "application", 1, &bytes(&msg)).await.ok();
    let page = bob.get(&s, "/v1/rooms/garden/log?after=1").await;
    let body = &bodies(page.ok())[0];
    assert!(!body.windows(9).any(|w| w == b"hello bob"));
    match bg.process_incoming_message(MlsMessage::from_bytes(body).unwrap()).unwrap() {
        ReceivedMessage::ApplicationMessage(m) => assert_eq!(m.data(), b"hello bob"),
        other => panic!("expected an application message, got {other:?}"),
    }

    // Garbage is not an application message of this room.
    post_handshake(&s, &bob, "garden", "application", 1, b"garbage").await.err(400, "invalid_message");
    // A commit sent as an application message is refused too.
    let c = bg.commit(vec![]).unwrap();
    bg.clear_pending_commit();
    post_handshake(&s, &bob, "garden", "application", 1, &bytes(&c.commit_message)).await.err(400, "invalid_message");
    // Membership entries belong to sender-keys rooms.
    post_handshake(&s, &bob, "garden", "membership", 2, b"{}").await.err(400, "wrong_kind");

    // After the room moves on, a late joiner can still fetch the tree its Welcome was made for.
    let update = ag.commit(vec![]).unwrap();
    post_handshake(&s, &alice, "garden", "commit", 1, &bytes(&update.commit_message)).await.ok();
    ag.apply_pending_commit().unwrap();
    let old = bob.get(&s, "/v1/rooms/garden/tree?epoch=1").await;
    assert_eq!(old.ok()["epoch"], json!(1));
    assert_eq!(grove_wire::b64::decode(old.json["ratchet_tree"].as_str().unwrap()).unwrap(), tree_at_1);
    let now = bob.get(&s, "/v1/rooms/garden/tree").await;
    assert_eq!(now.ok()["epoch"], json!(2));
    assert_eq!(
        grove_wire::b64::decode(now.json["ratchet_tree"].as_str().unwrap()).unwrap(),
        ag.export_tree().to_bytes().unwrap()
    );
    bob.get(&s, "/v1/rooms/garden/tree?epoch=99").await.err(404, "not_found");
    bob.get(&s, "/v1/rooms/garden/tree?epoch=x").await.err(400, "bad_request");
}

#[tokio::test]
async fn forged_replayed_stale_and_misattributed_commits_are_rejected() {
    let s = Server::new();
    let (alice, bob) = (User::new(1), User::new(2));
    let (ac, bc) = (client(&alice), client(&bob));
    let mut ag = mls_room(&s, &alice, &ac, "r").await;
    let mut bg = add_member(&s, &alice, &mut ag, &bc, "r").await;

    // Forged: a flipped byte inside Alice's signature.
    let update = ag.commit(vec![]).unwrap();
    let good = bytes(&update.commit_message);
    let mut forged = good.clone();
    let at = forged.len() - 66 - 10;
    forged[at] ^= 1;
    post_handshake(&s, &alice, "r", "commit", 1, &forged).await.err(400, "invalid_commit");
    post_handshake(&s, &alice, "r", "commit", 1, &good[..20]).await.err(400, "invalid_commit");
    // Misattributed: Bob submits Alice's commit.
    post_handshake(&s, &bob, "r", "commit", 1, &good).await.err(403, "sender_mismatch");
    // An outsider cannot submit anything.
    post_handshake(&s, &User::new(9), "r", "commit", 1, &good).await.err(403, "not_member");
    let info = alice.get(&s, "/v1/rooms/r").await;
    assert_eq!(
        (info.ok()["epoch"].clone(), info.json["head"].clone()),
        (json!(1), json!(1)),
        "nothing above changed the room"
    );

    // Stale: Bob commits in epoch 1 too, but Alice's commit lands first.
    let bobs = bg.commit(vec![]).unwrap();
    post_handshake(&s, &alice, "r", "commit", 1, &good).await.ok();
    ag.apply_pending_commit().unwrap();
    let stale = post_handshake(&s, &bob, "r", "commit", 1, &bytes(&bobs.commit_message)).await;
    let e = stale.err(409, "wrong_epoch");
    assert_eq!((e["current_epoch"].clone(), e["head"].clone()), (json!(2), json!(2)));
    // The entry's epoch field cannot smuggle it in: the message's own epoch is checked.
    let stale = post_handshake(&s, &bob, "r", "commit", 2, &bytes(&bobs.commit_message)).await;
    assert_eq!(stale.err(409, "wrong_epoch")["current_epoch"], json!(2));
    // Replayed: Alice's accepted commit again.
    post_handshake(&s, &alice, "r", "commit", 1, &good).await.err(409, "wrong_epoch");
    post_handshake(&s, &alice, "r", "commit", 2, &good).await.err(409, "wrong_epoch");

    // Bob follows the winner and carries on.
    bg.clear_pending_commit();
    let page = bob.get(&s, "/v1/rooms/r/log?after=1").await;
    bg.process_incoming_message(MlsMessage::from_bytes(&bodies(page.ok())[0]).unwrap()).unwrap();
    assert_eq!(bg.epoch_authenticator().unwrap(), ag.epoch_authenticator().unwrap());

    // A member who applied a commit the server never accepted is ahead: its messages are
    // refused with the room's epoch, never stored.
    let _ = ag.commit(vec![]).unwrap();
    ag.apply_pending_commit().unwrap();
    let ahead = bytes(&ag.encrypt_application_message(b"from the future", vec![]).unwrap());
    let r = post_handshake(&s, &alice, "r", "application", 3, &ahead).await;
    assert_eq!(r.err(409, "wrong_epoch")["current_epoch"], json!(2));
    let r = post_handshake(&s, &alice, "r", "application", 2, &ahead).await;
    assert_eq!(r.err(409, "wrong_epoch")["current_epoch"], json!(2));
}

#[tokio::test]
async fn bob_leaves_by_proposal_alice_commits_it_and_bob_is_out() {
    let s = Server::new();
    let (alice, bob) = (User::new(1), User::new(2));
    let (ac, bc) = (client(&alice), client(&bob));
    let mut ag = mls_room(&s, &alice, &ac, "r").await;
    let mut bg = add_member(&s, &alice, &mut ag, &bc, "r").await;

    let late = bytes(&bg.encrypt_application_message(b"am I still here", vec![]).unwrap());
    let leave = bg.propose_remove(bg.current_member_index(), vec![]).unwrap();
    post_handshake(&s, &alice, "r", "proposal", 1, &bytes(&leave)).await.err(403, "sender_mismatch");
    post_handshake(&s, &bob, "r", "commit", 1, &bytes(&leave)).await.err(400, "invalid_commit");
    let r = post_handshake(&s, &bob, "r", "proposal", 1, &bytes(&leave)).await;
    assert_eq!((r.status.as_u16(), r.json["epoch"].clone()), (201, json!(1)), "a proposal does not change the epoch");

    ag.process_incoming_message(leave).unwrap();
    let commit = ag.commit(vec![]).unwrap();
    post_handshake(&s, &alice, "r", "commit", 1, &bytes(&commit.commit_message)).await.ok();
    ag.apply_pending_commit().unwrap();
    let info = alice.get(&s, "/v1/rooms/r").await;
    assert_eq!(info.ok()["members"], json!([alice.id.to_string()]));
    // He reads up to the commit that removed him, and no further.
    assert_eq!(seqs(bob.get(&s, "/v1/rooms/r/log?after=1").await.ok()), [2, 3]);
    bob.get(&s, "/v1/rooms/r/log?after=3").await.err(403, "not_member");
    post_handshake(&s, &bob, "r", "application", 1, &late).await.err(403, "not_member");
}

#[tokio::test]
async fn a_room_must_be_a_valid_group_containing_its_creator() {
    let s = Server::new();
    let (alice, bob) = (User::new(1), User::new(2));
    let group = client(&bob).create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let state = json!({
        "group_info": b64(&bytes(&group.group_info_message(false).unwrap())),
        "ratchet_tree": b64(&group.export_tree().to_bytes().unwrap()),
    });
    alice.post(&s, "/v1/rooms", json!({"name": "r", "mode": "mls", "mls": state})).await.err(403, "forbidden");
    let junk = json!({"group_info": b64(b"junk"), "ratchet_tree": b64(b"junk")});
    alice.post(&s, "/v1/rooms", json!({"name": "r", "mode": "mls", "mls": junk})).await.err(400, "invalid_message");
    let mut mismatched = state.clone();
    let mine = client(&alice).create_group(ExtensionList::default(), Default::default(), None).unwrap();
    mismatched["group_info"] = json!(b64(&bytes(&mine.group_info_message(false).unwrap())));
    alice
        .post(&s, "/v1/rooms", json!({"name": "r", "mode": "mls", "mls": mismatched}))
        .await
        .err(400, "invalid_message");
    alice
        .post(&s, "/v1/rooms", json!({"name": "r", "mode": "sender-keys", "mls": state}))
        .await
        .err(400, "malformed_body");
    alice.get(&s, "/v1/rooms/r").await.err(404, "room_not_found");
}
