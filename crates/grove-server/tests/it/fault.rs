//! Fault reports over the API (`POST /v1/rooms/{room}/reports`), with mls-rs clients on
//! grove's crypto provider, whose MAC tap gives the membership key a member's client reveals.

use grove_proto::identity::Identity;
use grove_proto::mls::crypto::{GroveCryptoProvider, MacTap};
use grove_proto::mls::fault::membership_tag_input;
use grove_proto::mls::identity::{signing_identity, GroveIdentityProvider};
use grove_proto::mls::CIPHER_SUITE;
use mls_rs::client_builder::MlsConfig;
use mls_rs::error::MlsError;
use mls_rs::group::ExportedTree;
use mls_rs::mls_rs_codec::MlsEncode;
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::{Client, Group, MlsMessage};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::harness::*;
use crate::mls::{bytes, mls_room, post_handshake};

/// A client as grove builds it, with the tap of its crypto provider.
fn tapped_client(user: &User, seed: u64) -> (Client<impl MlsConfig>, MacTap) {
    let id = Identity::from_secret_bytes(user.key.to_bytes());
    let (si, sk) = signing_identity(&id);
    let provider = GroveCryptoProvider::new(StdRng::seed_from_u64(seed));
    let tap = provider.tap();
    let client = Client::builder()
        .identity_provider(GroveIdentityProvider)
        .crypto_provider(provider)
        .mls_rules(DefaultMlsRules::new().with_commit_options(CommitOptions::new().with_ratchet_tree_extension(false)))
        .signing_identity(si, sk, CIPHER_SUITE)
        .build();
    (client, tap)
}

/// What a member's client does with a commit it cannot process: the membership key its tag
/// was checked with, if the tag is what failed.
fn revealed_key<C: MlsConfig>(group: &mut Group<C>, tap: &MacTap, commit: &[u8]) -> Option<Vec<u8>> {
    let context = group.context().mls_encode_to_vec().unwrap();
    let input = membership_tag_input(commit, &context).unwrap();
    tap.start();
    let outcome = group.process_incoming_message(MlsMessage::from_bytes(commit).unwrap());
    let calls = tap.stop();
    assert!(matches!(outcome, Err(MlsError::InvalidMembershipTag)), "{outcome:?}");
    calls.into_iter().find(|(_, data)| *data == input).map(|(key, _)| key.to_vec())
}

fn report(seq: u64, key: Option<&[u8]>) -> Value {
    match key {
        Some(k) => json!({"seq": seq, "membership_key": b64(k), "reason": "invalid membership tag"}),
        None => json!({"seq": seq}),
    }
}

/// Alice, Bob, Carol and Mallory in `garden`; Mallory's self-update has a flipped membership
/// tag. The server takes it. Alice reports it with the key her client used: recorded. Carol
/// reports it with a made-up key: recorded, not agreeing. Bob reports it with the same key as
/// Alice: the commit is voided; the log says so; the room is back at epoch 1 with its four
/// members, and Bob's update at epoch 1 is taken. What cannot be voided is refused.
#[tokio::test]
async fn two_members_revealing_the_same_key_void_a_commit_whose_tag_fails_under_it() {
    let s = Server::new();
    let (alice, bob, carol, mallory) = (User::new(1), User::new(2), User::new(3), User::new(4));
    let (ac, alice_tap) = tapped_client(&alice, 1);
    let mut ag = mls_room(&s, &alice, &ac, "garden").await;
    let (mut groups, mut taps) = (Vec::new(), Vec::new());
    let mut add = ag.commit_builder();
    let mut clients = Vec::new();
    for (i, u) in [&bob, &carol, &mallory].into_iter().enumerate() {
        let (c, tap) = tapped_client(u, 10 + i as u64);
        let kp = c.generate_key_package_message(Default::default(), Default::default(), None).unwrap();
        add = add.add_member(kp).unwrap();
        clients.push(c);
        taps.push(tap);
    }
    let out = add.build().unwrap();
    post_handshake(&s, &alice, "garden", "commit", 0, &bytes(&out.commit_message)).await.ok();
    ag.apply_pending_commit().unwrap();
    let tree = ag.export_tree().to_bytes().unwrap();
    for c in &clients {
        let tree = ExportedTree::from_bytes(&tree).unwrap();
        groups.push(c.join_group(Some(tree), &out.welcome_messages[0], None).unwrap().0);
    }
    let (bg, rest) = groups.split_at_mut(1);
    let (bg, mg) = (&mut bg[0], &mut rest[1]);

    let mut poisoned = bytes(&mg.commit(vec![]).unwrap().commit_message);
    *poisoned.last_mut().unwrap() ^= 1;
    let r = post_handshake(&s, &mallory, "garden", "commit", 1, &poisoned).await;
    let seq = r.ok()["seq"].as_u64().unwrap();
    assert_eq!(r.json["epoch"], json!(2), "the server cannot tell");

    let key = revealed_key(&mut ag, &alice_tap, &poisoned).expect("alice's client reveals the key");
    assert_eq!(revealed_key(bg, &taps[0], &poisoned), Some(key.clone()), "bob's reveals the same");
    let from_alice = alice.post(&s, "/v1/rooms/garden/reports", report(seq, Some(&key))).await;
    assert_eq!((from_alice.ok()["agreeing"].clone(), from_alice.json.get("void_seq")), (json!(1), None));
    let made_up = carol.post(&s, "/v1/rooms/garden/reports", report(seq, Some(&[5; 32]))).await;
    assert_eq!((made_up.ok()["reports"].clone(), made_up.json["agreeing"].clone()), (json!(2), json!(1)));
    mallory.post(&s, "/v1/rooms/garden/reports", report(seq, Some(&key))).await.err(409, "not_reportable");
    let from_bob = bob.post(&s, "/v1/rooms/garden/reports", report(seq, Some(&key))).await;
    let void_seq = from_bob.ok()["void_seq"].as_u64().expect("voided");
    assert_eq!(from_bob.json["agreeing"], json!(2));

    let page = bob.get(&s, &format!("/v1/rooms/garden/log?after={}", void_seq - 1)).await;
    let entry = &page.ok()["entries"][0];
    assert_eq!(entry["kind"], json!("void"));
    let void: Value =
        serde_json::from_slice(&grove_wire::b64::decode(entry["body"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!((void["voided"].clone(), void["epoch"].clone()), (json!(seq), json!(1)));
    assert_eq!(void["committer"], json!(mallory.id.to_string()));
    let info = bob.get(&s, "/v1/rooms/garden").await;
    assert_eq!(info.ok()["epoch"], json!(1));
    assert_eq!(info.json["members"].as_array().unwrap().len(), 4);

    // Voided already; and a member's honest commit of epoch 1 goes through.
    alice.post(&s, "/v1/rooms/garden/reports", report(seq, Some(&key))).await.err(409, "not_reportable");
    let update = bg.commit(vec![]).unwrap();
    let r = post_handshake(&s, &bob, "garden", "commit", 1, &bytes(&update.commit_message)).await;
    let update_seq = r.ok()["seq"].as_u64().unwrap();
    // A report without proof of a standing commit is recorded, and changes nothing.
    let unproven = carol.post(&s, "/v1/rooms/garden/reports", report(update_seq, None)).await;
    assert_eq!((unproven.ok()["reports"].clone(), unproven.json["agreeing"].clone()), (json!(1), json!(0)));
    assert_eq!(bob.get(&s, "/v1/rooms/garden").await.ok()["epoch"], json!(2));

    // Not a member in the commit's epoch; not a commit; a key of the wrong size; a
    // sender-keys room.
    bob.post(&s, "/v1/rooms/garden/reports", report(1, None)).await.err(409, "not_reportable");
    alice.post(&s, "/v1/rooms/garden/reports", report(void_seq, None)).await.err(409, "not_reportable");
    alice.post(&s, "/v1/rooms/garden/reports", report(seq, Some(&[1; 16]))).await.err(400, "bad_request");
    sk_room(&s, &alice, "yard").await;
    alice.post(&s, "/v1/rooms/yard/reports", report(1, None)).await.err(400, "wrong_kind");
}
