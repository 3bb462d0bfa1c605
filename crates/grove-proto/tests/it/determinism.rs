//! The engine under an injected RNG and clock: same seed, same clock and same operations give
//! the same bytes, different seeds do not; KeyPackage lifetimes follow the injected clock, and
//! commits check added KeyPackages against it; and the engine's crypto provider interoperates
//! with plain mls-rs clients on the RustCrypto provider (a faithful ciphersuite 1).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grove_proto::mls::engine::{EngineError, GroupId, Incoming, MlsEngine, PendingCommit, PublicGroupState};
use grove_proto::mls::hub::HubGroup;
use mls_rs::client_builder::MlsConfig;
use mls_rs::crypto::HpkePublicKey;
use mls_rs::group::{ExportedTree, LeafNode, LeafNodeSource, ReceivedMessage};
use mls_rs::mls_rs_codec::{MlsDecode, MlsEncode};
use mls_rs::{CipherSuite, ExtensionList, Group, MlsMessage, ProtocolVersion};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{bytes, client, key_package, user};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// An arbitrary injected time (Unix seconds): 2023-11-14.
const T: u64 = 1_700_000_000;

/// mls-rs' default KeyPackage lifetime, which the engine keeps.
const YEAR: u64 = 365 * 24 * 3600;

/// A clock the test can move, shared with the engine it is injected into.
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn at(t: u64) -> TestClock {
        TestClock(Arc::new(AtomicU64::new(t)))
    }

    fn set(&self, t: u64) {
        self.0.store(t, Ordering::SeqCst);
    }

    fn reader(&self) -> impl Fn() -> u64 + Send + 'static {
        let t = self.0.clone();
        move || t.load(Ordering::SeqCst)
    }
}

/// A fresh engine for `user(n)` with RNG seed `seed` and a clock stuck at `t`.
fn engine_at(n: u8, seed: u64, t: u64) -> MlsEngine {
    MlsEngine::with_rng(user(n), rng(seed)).with_clock(move || t)
}

/// Two fresh engines for Alice with the same RNG seed and the same injected clock, each of which
/// created a group: the same group (the creator's leaf lifetime comes from the injected clock,
/// not from the second the test runs in).
fn twin_groups(seed: u64) -> (MlsEngine, MlsEngine, GroupId, PublicGroupState) {
    let mut a = engine_at(1, seed, T);
    let mut b = engine_at(1, seed, T);
    let (ga, pa, ca) = a.create_group().unwrap();
    let (gb, pb, cb) = b.create_group().unwrap();
    assert_eq!(ga, gb, "same seed, same group id");
    assert_eq!(pa, pb, "same seed and clock, same GroupInfo and tree");
    assert_eq!(ca, cb, "same seed and clock, same state");
    (a, b, ga, pa)
}

/// The lifetime (`not_before`, `not_after`) of a KeyPackage (`MlsMessage` bytes).
///
/// mls-rs exposes only `not_after` (`KeyPackage::expiration`); the leaf node is crate-private,
/// so it is decoded from the KeyPackage's encoding (RFC 9420 §10: version, cipher_suite,
/// init_key, leaf_node, ...).
fn lifetime(key_package: &[u8]) -> (u64, u64) {
    let kp = MlsMessage::from_bytes(key_package).unwrap().into_key_package().unwrap();
    let encoded = kp.mls_encode_to_vec().unwrap();
    let mut rest = encoded.as_slice();
    ProtocolVersion::mls_decode(&mut rest).unwrap();
    CipherSuite::mls_decode(&mut rest).unwrap();
    HpkePublicKey::mls_decode(&mut rest).unwrap();
    let leaf = LeafNode::mls_decode(&mut rest).unwrap();
    let LeafNodeSource::KeyPackage(lifetime) = leaf.leaf_node_source else {
        panic!("a KeyPackage's leaf node has a lifetime");
    };
    let not_after = lifetime.not_after.seconds_since_epoch();
    assert_eq!(kp.expiration().unwrap().seconds_since_epoch(), not_after);
    (lifetime.not_before.seconds_since_epoch(), not_after)
}

#[test]
fn same_seed_same_clock_same_key_packages() {
    let make = |seed, t| engine_at(2, seed, t).key_packages(2, true).unwrap();
    let (one_time, last, changes) = make(5, T);
    assert_eq!(one_time.len(), 2);
    assert_eq!(make(5, T), (one_time.clone(), last.clone(), changes));
    // The clock is part of the KeyPackage (its lifetime), the seed too (its keys).
    assert_ne!(make(5, T + 1).0, one_time);
    assert_ne!(make(6, T).0, one_time);
}

#[test]
fn key_package_lifetime_starts_at_the_injected_time() {
    let (one_time, last, _) = engine_at(2, 2, T).key_packages(1, true).unwrap();
    assert_eq!(lifetime(&one_time[0]), (T, T + YEAR));
    assert_eq!(lifetime(&last.unwrap()), (T, T + YEAR));
    // A clock beyond what mls-rs can add a year to is clamped, not a panic.
    let (far, _, _) = engine_at(2, 2, u64::MAX).key_packages(1, false).unwrap();
    assert_eq!(lifetime(&far[0]), (u64::MAX - YEAR, u64::MAX));
}

#[test]
fn the_clock_is_read_once_per_operation() {
    let reads = Arc::new(AtomicU64::new(0));
    let counter = reads.clone();
    let mut alice = MlsEngine::with_rng(user(1), rng(1)).with_clock(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        T
    });
    alice.key_packages(3, true).unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    let (g, _, _) = alice.create_group().unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    alice.commit_update(&g).unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 3);
    // Applying, encrypting and processing need no time.
    alice.apply_pending(&g).unwrap();
    alice.encrypt(&g, b"m").unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 3);
}

#[test]
fn commits_check_added_key_packages_against_the_injected_clock() {
    let clock = TestClock::at(T);
    let mut alice = MlsEngine::with_rng(user(1), rng(1)).with_clock(clock.reader());
    let (g, _, _) = alice.create_group().unwrap();
    let (kps, _, _) = engine_at(2, 2, T).key_packages(1, false).unwrap();
    assert_eq!(lifetime(&kps[0]), (T, T + YEAR));

    // Not yet valid, then expired: refused, nothing changed.
    let before = alice.export_state().unwrap();
    for t in [T - 1, T + YEAR + 1] {
        clock.set(t);
        let err = alice.commit_add(&g, &kps).unwrap_err();
        assert!(matches!(&err, EngineError::Rejected(m) if m.to_string().contains("lifetime")), "at {t}: {err:?}");
        assert!(!alice.has_pending_commit(&g).unwrap());
        assert_eq!(alice.export_state().unwrap(), before);
    }
    // The lifetime's bounds are inclusive.
    for t in [T, T + YEAR] {
        clock.set(t);
        alice.commit_add(&g, &kps).unwrap();
        alice.discard_pending(&g).unwrap();
    }

    // Only the KeyPackages being added are checked, not the members' leaves: two years on,
    // Alice's own leaf (lifetime from the group's creation) has expired, and she still adds a
    // fresh KeyPackage and updates.
    clock.set(T + 2 * YEAR);
    let (fresh, _, _) = engine_at(3, 3, T + 2 * YEAR).key_packages(1, false).unwrap();
    alice.commit_add(&g, &fresh).unwrap();
    alice.apply_pending(&g).unwrap();
    alice.commit_update(&g).unwrap();
}

#[test]
fn receiving_and_joining_check_no_lifetimes() {
    // Alice adds Bob at T (his KeyPackage is valid for her); Carol, whose clock says the
    // KeyPackage expired long ago, still follows the commit; and Dave, whose clock is past every
    // leaf's lifetime, still joins (see the engine's docs: received lifetimes are not checked).
    let mut alice = engine_at(1, 1, T);
    let (g, public, _) = alice.create_group().unwrap();
    let mut hub = HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap();
    let mut carol = engine_at(3, 3, T);
    let (kps, _, _) = carol.key_packages(1, false).unwrap();
    let (add, _) = alice.commit_add(&g, &kps).unwrap();
    hub = post(&hub, &add, 1);
    alice.apply_pending(&g).unwrap();
    let mut carol = carol.with_clock(|| T + 10 * YEAR);
    carol.join(add.welcome.as_ref().unwrap(), &hub.ratchet_tree().unwrap()).unwrap();

    let mut bob = engine_at(2, 2, T);
    let (kps, _, _) = bob.key_packages(1, false).unwrap();
    let (add, _) = alice.commit_add(&g, &kps).unwrap();
    hub = post(&hub, &add, 1);
    alice.apply_pending(&g).unwrap();
    let (incoming, _) = carol.process(&g, &add.commit).unwrap();
    assert!(matches!(incoming, Incoming::Commit { epoch: 2, .. }), "{incoming:?}");

    let mut dave = engine_at(4, 4, T);
    let (kps, _, _) = dave.key_packages(1, false).unwrap();
    let (add, _) = alice.commit_add(&g, &kps).unwrap();
    hub = post(&hub, &add, 1);
    alice.apply_pending(&g).unwrap();
    carol.process(&g, &add.commit).unwrap();
    let mut dave = dave.with_clock(|| T + 10 * YEAR);
    let (_, info, _) = dave.join(add.welcome.as_ref().unwrap(), &hub.ratchet_tree().unwrap()).unwrap();
    assert_eq!(info.epoch, 3);
    assert_eq!(dave.epoch_authenticator(&g).unwrap(), carol.epoch_authenticator(&g).unwrap());
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
    let mut bob = engine_at(2, 2, T);
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
    // From one stored state, the commit depends only on the RNG (commits carry no time): the
    // same with the system clock (mls-rs reads it), an injected clock, or another one.
    let mut alice = MlsEngine::with_rng(user(1), rng(1));
    let (g, _, _) = alice.create_group().unwrap();
    let state = alice.export_state().unwrap();
    let commit = |seed, clock: Option<u64>| {
        let mut e = MlsEngine::load_with_rng(user(1), state.clone(), rng(seed)).unwrap();
        if let Some(t) = clock {
            e = e.with_clock(move || t);
        }
        e.commit_update(&g).unwrap().0.commit
    };
    assert_eq!(commit(7, None), commit(7, None));
    assert_eq!(commit(7, None), commit(7, Some(T)));
    assert_eq!(commit(7, Some(T)), commit(7, Some(T + 5 * YEAR)));
    assert_ne!(commit(7, Some(T)), commit(8, Some(T)));
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
