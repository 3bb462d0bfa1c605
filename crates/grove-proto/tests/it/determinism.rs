//! The engine under an injected RNG: same seed and same operations give the same bytes,
//! different seeds do not; and its crypto provider interoperates with plain mls-rs clients on
//! the RustCrypto provider (a faithful ciphersuite 1).

use grove_proto::mls::engine::{GroupId, Incoming, MlsEngine, PendingCommit, PublicGroupState};
use grove_proto::mls::hub::HubGroup;
use mls_rs::client_builder::MlsConfig;
use mls_rs::group::{ExportedTree, ReceivedMessage};
use mls_rs::{ExtensionList, Group, MlsMessage};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{bytes, client, key_package, user};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Two fresh engines for Alice with the same RNG seed, each of which created a group.
///
/// The creator's leaf carries a lifetime read from the clock (in seconds), so the two groups
/// are equal only if both were created within the same second: retried (with fresh engines)
/// until they are, which in practice is the first attempt.
fn twin_groups(seed: u64) -> (MlsEngine, MlsEngine, GroupId, PublicGroupState) {
    for _ in 0..5 {
        let mut a = MlsEngine::with_rng(user(1), rng(seed));
        let mut b = MlsEngine::with_rng(user(1), rng(seed));
        let (ga, pa, _) = a.create_group().unwrap();
        let (gb, pb, _) = b.create_group().unwrap();
        // The group id is random bytes only: equal whatever the clock.
        assert_eq!(ga, gb, "same seed, same group id");
        if pa == pb {
            return (a, b, ga, pa);
        }
    }
    panic!("the clock's second changed between two group creations five times in a row");
}

/// Posts a commit to the hub (which must accept it) and returns the hub's next state.
fn post(hub: &HubGroup, pending: &PendingCommit, from: u8) -> HubGroup {
    hub.check_commit(&pending.commit, &user(from).user_id()).unwrap().next
}

#[test]
fn same_seed_same_group_id_commits_and_messages() {
    let (mut a, mut b, g, public) = twin_groups(42);
    let mut hub = HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap();

    // Both add Bob with the same KeyPackage: same commit, same Welcome (HPKE to Bob's init key,
    // with an ephemeral key from the RNG).
    let mut bob = MlsEngine::with_rng(user(2), rng(2));
    let (kps, _, _) = bob.key_packages(1, false).unwrap();
    let (add_a, _) = a.commit_add(&g, &kps).unwrap();
    let (add_b, _) = b.commit_add(&g, &kps).unwrap();
    assert_eq!(add_a, add_b);
    hub = post(&hub, &add_a, 1);
    a.apply_pending(&g).unwrap();
    b.apply_pending(&g).unwrap();
    bob.join(add_a.welcome.as_ref().unwrap(), &hub.ratchet_tree().unwrap()).unwrap();

    // Self-updates: fresh leaf key and path secret from the RNG, HPKE to Bob.
    let (update_a, _) = a.commit_update(&g).unwrap();
    let (update_b, _) = b.commit_update(&g).unwrap();
    assert_eq!(update_a.commit, update_b.commit);
    hub = post(&hub, &update_a, 1);
    a.apply_pending(&g).unwrap();
    b.apply_pending(&g).unwrap();
    let (incoming, _) = bob.process(&g, &update_a.commit).unwrap();
    assert!(matches!(incoming, Incoming::Commit { epoch: 2, .. }), "{incoming:?}");
    assert_eq!(hub.epoch(), 2);

    // Application messages: the reuse guard comes from the RNG too.
    let (msg_a, _, _) = a.encrypt(&g, b"hello").unwrap();
    let (msg_b, _, _) = b.encrypt(&g, b"hello").unwrap();
    assert_eq!(msg_a, msg_b);
    let (incoming, _) = bob.process(&g, &msg_a).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: user(1).user_id(), plaintext: b"hello".to_vec() });

    let auth = a.epoch_authenticator(&g).unwrap();
    assert_eq!(auth, b.epoch_authenticator(&g).unwrap());
    assert_eq!(auth, bob.epoch_authenticator(&g).unwrap());
}

#[test]
fn same_state_and_seed_same_commit_whatever_the_clock() {
    // From one stored state, the commit depends only on the RNG (commits carry no time).
    let mut alice = MlsEngine::with_rng(user(1), rng(1));
    let (g, _, _) = alice.create_group().unwrap();
    let state = alice.export_state().unwrap();
    let commit = |seed| {
        let mut e = MlsEngine::load_with_rng(user(1), state.clone(), rng(seed)).unwrap();
        e.commit_update(&g).unwrap().0.commit
    };
    assert_eq!(commit(7), commit(7));
    assert_ne!(commit(7), commit(8));
}

#[test]
fn different_seeds_different_bytes() {
    let (ga, _, _) = MlsEngine::with_rng(user(1), rng(1)).create_group().unwrap();
    let (gb, _, _) = MlsEngine::with_rng(user(1), rng(2)).create_group().unwrap();
    assert_ne!(ga, gb);

    // Same group state (one engine, reloaded), different seeds: different commits and messages.
    let mut alice = MlsEngine::with_rng(user(1), rng(1));
    let (g, _, _) = alice.create_group().unwrap();
    let mut bob = MlsEngine::with_rng(user(2), rng(2));
    let (kps, _, _) = bob.key_packages(1, false).unwrap();
    alice.commit_add(&g, &kps).unwrap();
    alice.apply_pending(&g).unwrap();
    let state = alice.export_state().unwrap();
    let mut x = MlsEngine::load_with_rng(user(1), state.clone(), rng(10)).unwrap();
    let mut y = MlsEngine::load_with_rng(user(1), state, rng(11)).unwrap();
    assert_ne!(x.encrypt(&g, b"m").unwrap().0, y.encrypt(&g, b"m").unwrap().0);
    assert_ne!(x.commit_update(&g).unwrap().0.commit, y.commit_update(&g).unwrap().0.commit);
}

/// Decrypts an application message with a bare mls-rs group.
fn read<C: MlsConfig>(group: &mut Group<C>, message: &[u8]) -> Vec<u8> {
    match group.process_incoming_message(MlsMessage::from_bytes(message).unwrap()).unwrap() {
        ReceivedMessage::ApplicationMessage(m) => m.data().to_vec(),
        other => panic!("expected an application message, got {other:?}"),
    }
}

fn send<C: MlsConfig>(group: &mut Group<C>, text: &[u8]) -> Vec<u8> {
    bytes(&group.encrypt_application_message(text, Vec::new()).unwrap())
}

#[test]
fn interop_with_the_plain_rustcrypto_provider() {
    // Alice: an engine with an injected RNG. Bob: a bare mls-rs client on RustCryptoProvider.
    let alice_uid = user(1).user_id();
    let mut alice = MlsEngine::with_rng(user(1), rng(1));
    let bob_client = client(&user(2));

    // Alice's group, Bob joins (HPKE from our provider to a RustCrypto init key).
    let (g, public, _) = alice.create_group().unwrap();
    let mut hub = HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap();
    let (add, _) = alice.commit_add(&g, &[bytes(&key_package(&bob_client))]).unwrap();
    hub = post(&hub, &add, 1);
    alice.apply_pending(&g).unwrap();
    let tree = ExportedTree::from_bytes(&hub.ratchet_tree().unwrap()).unwrap();
    let welcome = MlsMessage::from_bytes(add.welcome.as_ref().unwrap()).unwrap();
    let (mut bob, _) = bob_client.join_group(Some(tree), &welcome, None).unwrap();

    // Messages both ways.
    let (m, _, _) = alice.encrypt(&g, b"hi bob").unwrap();
    assert_eq!(read(&mut bob, &m), b"hi bob");
    let m = send(&mut bob, b"hi alice");
    let (incoming, _) = alice.process(&g, &m).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: user(2).user_id(), plaintext: b"hi alice".to_vec() });

    // Alice's update path (our leaf key, our HPKE) followed by Bob...
    let (update, _) = alice.commit_update(&g).unwrap();
    hub = post(&hub, &update, 1);
    alice.apply_pending(&g).unwrap();
    let received = bob.process_incoming_message(MlsMessage::from_bytes(&update.commit).unwrap()).unwrap();
    assert!(matches!(received, ReceivedMessage::Commit(_)));
    // ...and Bob's (RustCrypto HPKE to the leaf key our provider made) followed by Alice.
    let out = bob.commit(Vec::new()).unwrap();
    assert!(out.contains_update_path);
    let commit = bytes(&out.commit_message);
    hub = hub.check_commit(&commit, &user(2).user_id()).unwrap().next;
    bob.apply_pending_commit().unwrap();
    let (incoming, _) = alice.process(&g, &commit).unwrap();
    assert!(matches!(incoming, Incoming::Commit { epoch: 3, .. }), "{incoming:?}");
    assert_eq!(hub.epoch(), 3);
    assert_eq!(alice.epoch_authenticator(&g).unwrap(), bob.epoch_authenticator().unwrap().to_vec());
    let (m, _, _) = alice.encrypt(&g, b"epoch 3").unwrap();
    assert_eq!(read(&mut bob, &m), b"epoch 3");

    // The other way round: Bob's group, Alice joins with a KeyPackage our provider made.
    let mut bobs = bob_client.create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let (kps, _, _) = alice.key_packages(1, false).unwrap();
    let out = bobs.commit_builder().add_member(MlsMessage::from_bytes(&kps[0]).unwrap()).unwrap().build().unwrap();
    bobs.apply_pending_commit().unwrap();
    let tree = bobs.export_tree().to_bytes().unwrap();
    let (g2, info, _) = alice.join(&bytes(&out.welcome_messages[0]), &tree).unwrap();
    assert_eq!(g2.as_bytes(), bobs.group_id());
    assert_eq!(info.members, vec![user(2).user_id(), alice_uid]);
    let m = send(&mut bobs, b"welcome");
    let (incoming, _) = alice.process(&g2, &m).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: user(2).user_id(), plaintext: b"welcome".to_vec() });
    let (m, _, _) = alice.encrypt(&g2, b"thanks").unwrap();
    assert_eq!(read(&mut bobs, &m), b"thanks");
}

#[test]
fn transitional_new_and_load_still_work() {
    // `new` / `load` draw from the OS RNG; their engines talk to `with_rng` ones.
    let mut alice = MlsEngine::with_rng(user(1), rng(1));
    let mut carol = MlsEngine::new(user(3));
    let (g, public, _) = alice.create_group().unwrap();
    let hub = HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap();
    let (kps, _, _) = carol.key_packages(1, false).unwrap();
    let (add, _) = alice.commit_add(&g, &kps).unwrap();
    let hub = post(&hub, &add, 1);
    alice.apply_pending(&g).unwrap();
    carol.join(add.welcome.as_ref().unwrap(), &hub.ratchet_tree().unwrap()).unwrap();

    let mut carol = MlsEngine::load(user(3), carol.export_state().unwrap()).unwrap();
    let (m, _, _) = carol.encrypt(&g, b"from the OS RNG").unwrap();
    let (incoming, _) = alice.process(&g, &m).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: user(3).user_id(), plaintext: b"from the OS RNG".to_vec() });
    let (update, _) = carol.commit_update(&g).unwrap();
    post(&hub, &update, 3);
    carol.apply_pending(&g).unwrap();
    let (incoming, _) = alice.process(&g, &update.commit).unwrap();
    assert!(matches!(incoming, Incoming::Commit { epoch: 2, .. }), "{incoming:?}");
    assert_eq!(alice.epoch_authenticator(&g).unwrap(), carol.epoch_authenticator(&g).unwrap());
}
