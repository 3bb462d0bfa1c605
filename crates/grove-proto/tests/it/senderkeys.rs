//! Sender Keys scenarios: the properties a group cipher must show (round trip, out-of-order
//! delivery, window, replays, tampering, forgery, chain-id reuse, forward secrecy, hidden
//! secrets, rotation), each through the public API and the documented encodings.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use grove_proto::identity::UserId;
use grove_proto::senderkeys::{
    ChainRef, Changes, ErrorKind, MessageHeader, ReceiverChain, ReceiverLimits, RotationPolicy, SenderChain,
    SenderKeyDistribution, SenderKeyError, SenderKeyStore,
};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::Sha256;

use super::user;

/// An arbitrary injected time (Unix seconds).
const T: u64 = 1_700_000_000;
const DAY: u64 = 24 * 3600;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn uid(n: u8) -> UserId {
    user(n).user_id()
}

/// User `n`'s chain in `room` at `epoch`, from RNG seed `seed`.
fn chain(seed: u64, room: &str, epoch: u64, n: u8) -> SenderChain {
    SenderChain::new(&mut rng(seed), room, epoch, uid(n), T).unwrap()
}

/// The distribution as it travels: encoded and decoded again.
fn sent(dist: &SenderKeyDistribution) -> SenderKeyDistribution {
    SenderKeyDistribution::from_bytes(&dist.to_bytes()).unwrap()
}

/// A store holding `s`'s chain, as user `n` sent it.
fn store_with(s: &SenderChain) -> SenderKeyStore {
    let mut store = SenderKeyStore::new();
    store.add_distribution(&s.sender(), &sent(&s.distribution())).unwrap();
    store
}

/// Every chain state in the store, as it would be persisted: for byte-identity checks.
fn snapshot(store: &SenderKeyStore) -> Vec<Vec<u8>> {
    store.chains().map(|(_, c)| c.to_bytes().to_vec()).collect()
}

/// The caller's database: chain states by chain.
#[derive(Default)]
struct Db(BTreeMap<ChainRef, Vec<u8>>);

impl Db {
    fn apply(&mut self, changes: &Changes) {
        for w in &changes.writes {
            match &w.state {
                Some(s) => self.0.insert(w.chain.clone(), s.to_vec()),
                None => self.0.remove(&w.chain),
            };
        }
    }

    /// A restart: the store rebuilt from the database.
    fn load(&self) -> SenderKeyStore {
        SenderKeyStore::load(ReceiverLimits::default(), self.0.values()).unwrap()
    }
}

/// Offset of the chain key in a distribution's encoding (see `SenderKeyDistribution::to_bytes`).
fn dist_chain_key_at(room: &str) -> usize {
    2 + 2 + room.len() + 8 + 32 + 16 + 4
}

/// Offset of the chain key in a receiver state's encoding (see `ReceiverChain::to_bytes`).
fn recv_chain_key_at(room: &str) -> usize {
    2 + 2 + room.len() + 8 + 32 + 16 + 32 + 4 + 4
}

fn hmac(key: &[u8], byte: u8) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(&[byte]);
    m.finalize().into_bytes().into()
}

fn hex(b: &[u8]) -> String {
    grove_wire::hex::encode(b)
}

#[test]
fn round_trip() {
    let mut alice = chain(1, "paris", 7, 1);
    let mut db = Db::default();
    let mut bob = SenderKeyStore::new();
    let dist = sent(&alice.distribution());
    assert_eq!((dist.room(), dist.epoch(), dist.sender(), dist.iteration()), ("paris", 7, uid(1), 0));
    assert_eq!(dist.chain_id(), alice.chain_id());
    assert_eq!(dist.signing_public_key(), alice.signing_public_key());
    db.apply(&bob.add_distribution(&uid(1), &dist).unwrap());

    for (i, text) in ["hello", "", "a longer message, with some more bytes in it"].iter().enumerate() {
        let msg = alice.encrypt(text.as_bytes()).unwrap();
        let header = MessageHeader::parse(&msg).unwrap();
        assert_eq!(header.iteration, i as u32);
        assert_eq!((header.room.as_str(), header.epoch, header.sender), ("paris", 7, uid(1)));
        let (d, changes) = bob.decrypt(&msg).unwrap();
        db.apply(&changes);
        assert_eq!(d.plaintext, text.as_bytes());
        assert_eq!((d.sender, d.iteration, d.epoch, d.room.as_str()), (uid(1), i as u32, 7, "paris"));
        assert_eq!(d.chain_id, alice.chain_id());
    }
    assert_eq!(alice.messages_sent(), 3);

    // Both sides survive a restart.
    let mut alice = SenderChain::from_bytes(&alice.to_bytes()).unwrap();
    let mut bob = db.load();
    let msg = alice.encrypt(b"after restart").unwrap();
    assert_eq!(bob.decrypt(&msg).unwrap().0.plaintext, b"after restart");

    // The bare receiver chain does the same, purely.
    let r = ReceiverChain::from_distribution(&dist);
    let mut fresh = chain(1, "paris", 7, 1);
    let m0 = fresh.encrypt(b"x").unwrap();
    let (d, next) = r.decrypt(&m0).unwrap();
    assert_eq!(d.plaintext, b"x");
    assert_eq!((r.next_iteration(), next.next_iteration()), (0, 1));
}

#[test]
fn out_of_order_delivery_within_the_window_decrypts_each_message_exactly_once() {
    let mut alice = chain(2, "paris", 1, 1);
    let mut bob = store_with(&alice);
    let msgs: Vec<Vec<u8>> = (0..12).map(|i| alice.encrypt(format!("m{i}").as_bytes()).unwrap()).collect();
    for i in [11usize, 0, 5, 3, 4, 1, 10, 2, 9, 6, 8, 7] {
        let (d, _) = bob.decrypt(&msgs[i]).unwrap();
        assert_eq!(d.plaintext, format!("m{i}").as_bytes());
        assert_eq!(d.iteration, i as u32);
        assert_eq!(bob.decrypt(&msgs[i]).unwrap_err(), SenderKeyError::Replay { iteration: i as u32 });
    }
    let (_, c) = bob.chains().next().unwrap();
    assert!(c.skipped_iterations().is_empty());
    assert_eq!(c.next_iteration(), 12);
}

#[test]
fn a_message_beyond_the_window_is_rejected_and_the_skipped_store_stays_bounded() {
    let mut alice = chain(3, "paris", 1, 1);
    let dist = alice.distribution();
    let msgs: Vec<Vec<u8>> = (0..2_002).map(|_| alice.encrypt(b"x").unwrap()).collect();

    // Default window: 2,000 ahead of the next expected iteration.
    let mut bob = store_with(&chain(3, "paris", 1, 1));
    let before = snapshot(&bob);
    assert_eq!(
        bob.decrypt(&msgs[2_001]).unwrap_err(),
        SenderKeyError::OutOfWindow { iteration: 2_001, next_iteration: 0 }
    );
    assert_eq!(snapshot(&bob), before);
    bob.decrypt(&msgs[2_000]).unwrap();
    // The skipped-key store keeps only the 1,000 highest skipped iterations.
    let (_, c) = bob.chains().next().unwrap();
    assert_eq!(c.skipped_iterations(), (1_000..2_000).collect::<Vec<u32>>());
    assert_eq!(bob.decrypt(&msgs[999]).unwrap_err(), SenderKeyError::Replay { iteration: 999 });
    assert_eq!(bob.decrypt(&msgs[1_000]).unwrap().0.iteration, 1_000);
    assert_eq!(bob.decrypt(&msgs[2_001]).unwrap().0.iteration, 2_001);

    // Small limits: window 10, 3 skipped keys.
    let limits = ReceiverLimits { max_forward: 10, max_skipped: 3 };
    let r = ReceiverChain::with_limits(&dist, limits);
    assert_eq!(r.decrypt(&msgs[11]).unwrap_err(), SenderKeyError::OutOfWindow { iteration: 11, next_iteration: 0 });
    let (_, r) = r.decrypt(&msgs[10]).unwrap();
    assert_eq!(r.skipped_iterations(), vec![7, 8, 9]);
    let (_, r) = r.decrypt(&msgs[12]).unwrap();
    assert_eq!(r.skipped_iterations(), vec![8, 9, 11]);
    assert_eq!(r.decrypt(&msgs[7]).unwrap_err(), SenderKeyError::Replay { iteration: 7 });
    assert_eq!(r.decrypt(&msgs[23]).unwrap().0.iteration, 23);
    assert_eq!(r.decrypt(&msgs[24]).unwrap_err(), SenderKeyError::OutOfWindow { iteration: 24, next_iteration: 13 });
    // The limits are part of the state.
    assert_eq!(ReceiverChain::from_bytes(&r.to_bytes()).unwrap().limits(), limits);
}

#[test]
fn replays_are_rejected_also_after_a_restart_across_epochs_and_across_rooms() {
    let mut alice = chain(4, "paris", 1, 1);
    let mut db = Db::default();
    let mut bob = SenderKeyStore::new();
    db.apply(&bob.add_distribution(&uid(1), &sent(&alice.distribution())).unwrap());
    let m0 = alice.encrypt(b"zero").unwrap();
    let m1 = alice.encrypt(b"one").unwrap();
    let m2 = alice.encrypt(b"two").unwrap();
    for m in [&m0, &m2] {
        db.apply(&bob.decrypt(m).unwrap().1);
    }
    assert_eq!(bob.decrypt(&m0).unwrap_err(), SenderKeyError::Replay { iteration: 0 });

    // After a restart: consumed iterations stay consumed, the skipped one still decrypts once.
    let mut bob = db.load();
    for (m, i) in [(&m0, 0), (&m2, 2)] {
        assert_eq!(bob.decrypt(m).unwrap_err(), SenderKeyError::Replay { iteration: i });
    }
    db.apply(&bob.decrypt(&m1).unwrap().1);
    let mut bob = db.load();
    assert_eq!(bob.decrypt(&m1).unwrap_err(), SenderKeyError::Replay { iteration: 1 });

    // Across epochs: Carol was removed, epoch 2; Alice rotates. While Bob still holds epoch 1,
    // an epoch-1 replay is a replay; once he forgets epoch 1 it is for a wrong epoch.
    let mut alice2 = chain(5, "paris", 2, 1);
    db.apply(&bob.add_distribution(&uid(1), &sent(&alice2.distribution())).unwrap());
    assert_eq!(bob.decrypt(&alice2.encrypt(b"e2").unwrap()).unwrap().0.epoch, 2);
    assert_eq!(bob.decrypt(&m2).unwrap_err(), SenderKeyError::Replay { iteration: 2 });
    let changes = bob.forget_before_epoch("paris", 2);
    assert_eq!(changes.writes.len(), 1);
    assert!(changes.writes[0].state.is_none());
    db.apply(&changes);
    let mut bob = db.load();
    assert_eq!(bob.decrypt(&m2).unwrap_err(), SenderKeyError::WrongEpoch { message_epoch: 1 });
    // An unknown chain at a known epoch.
    let stranger = chain(6, "paris", 2, 9).encrypt(b"?").unwrap();
    assert_eq!(bob.decrypt(&stranger).unwrap_err(), SenderKeyError::UnknownChain);

    // Across rooms: a store holding only room "lyon" refuses a "paris" message...
    let lyon = chain(7, "lyon", 2, 1);
    let mut lyon_store = store_with(&lyon);
    let paris_msg = alice2.encrypt(b"for paris").unwrap();
    assert_eq!(lyon_store.decrypt(&paris_msg).unwrap_err(), SenderKeyError::WrongRoom);
    // ...and so does a lone receiver chain of another room.
    let lyon_chain = ReceiverChain::from_distribution(&lyon.distribution());
    assert_eq!(lyon_chain.decrypt(&paris_msg).unwrap_err(), SenderKeyError::WrongRoom);
    // Rewriting the header to the other room (same length) breaks the signature, even when the
    // chain id is rewritten to Alice's chain in that room.
    let mut moved = paris_msg.clone();
    moved[4..9].copy_from_slice(b"lyon!");
    let mut lyon5 = SenderKeyStore::new();
    let lyon5_chain = chain(8, "lyon!", 2, 1);
    lyon5.add_distribution(&uid(1), &lyon5_chain.distribution()).unwrap();
    assert_eq!(lyon5.decrypt(&moved).unwrap_err(), SenderKeyError::UnknownChain);
    moved[4 + 5 + 8 + 32..4 + 5 + 8 + 32 + 16].copy_from_slice(lyon5_chain.chain_id().as_bytes());
    let before = snapshot(&lyon5);
    assert_eq!(lyon5.decrypt(&moved).unwrap_err(), SenderKeyError::BadSignature);
    assert_eq!(snapshot(&lyon5), before);
}

#[test]
fn every_bit_flip_of_a_message_is_rejected_and_leaves_the_state_unchanged() {
    let mut alice = chain(9, "r", 1, 1);
    let mut bob = store_with(&alice);
    let first = alice.encrypt(b"first").unwrap();
    bob.decrypt(&first).unwrap();
    let _skipped = alice.encrypt(b"skipped").unwrap();
    let msg = alice.encrypt(b"hi").unwrap();
    let before = snapshot(&bob);
    let mut kinds = BTreeMap::new();
    for byte in 0..msg.len() {
        for bit in 0..8 {
            let mut bad = msg.clone();
            bad[byte] ^= 1 << bit;
            let err = bob.decrypt(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Rejected, "byte {byte} bit {bit}: {err:?}");
            *kinds.entry(format!("{err:?}").split([' ', '(', '{']).next().unwrap_or("").to_owned()).or_insert(0) += 1;
            assert_eq!(snapshot(&bob), before, "byte {byte} bit {bit} changed the state");
        }
    }
    println!("bit flips of a {}-byte message: {kinds:?}", msg.len());
    // Truncations and extensions too.
    for n in 0..msg.len() {
        assert!(bob.decrypt(&msg[..n]).is_err(), "truncated to {n}");
    }
    let mut longer = msg.clone();
    longer.push(0);
    assert!(bob.decrypt(&longer).is_err());
    assert_eq!(snapshot(&bob), before);
    // The genuine message still decrypts, once.
    assert_eq!(bob.decrypt(&msg).unwrap().0.plaintext, b"hi");
    assert_eq!(bob.decrypt(&msg).unwrap_err(), SenderKeyError::Replay { iteration: 2 });
}

#[test]
fn forged_signatures_are_rejected() {
    let mut alice = chain(10, "paris", 1, 1);
    let mut bob = store_with(&alice);
    let msg = alice.encrypt(b"hello").unwrap();
    let body = msg.len() - 64;
    let before = snapshot(&bob);

    // Garbage, zeros, a valid signature by another key.
    let mut garbage = msg.clone();
    garbage[body..].copy_from_slice(&[0xab; 64]);
    let mut zeros = msg.clone();
    zeros[body..].copy_from_slice(&[0; 64]);
    let mut other_key = msg.clone();
    let sig = SigningKey::generate(&mut rng(11)).sign(&msg[..body]).to_bytes();
    other_key[body..].copy_from_slice(&sig);
    for forged in [garbage, zeros, other_key] {
        assert_eq!(bob.decrypt(&forged).unwrap_err(), SenderKeyError::BadSignature);
    }
    // A far-future iteration with a bad signature: rejected on the signature, state untouched.
    let mut future = msg.clone();
    let at = 4 + 5 + 8 + 32 + 16;
    future[at..at + 4].copy_from_slice(&1_999u32.to_be_bytes());
    assert_eq!(bob.decrypt(&future).unwrap_err(), SenderKeyError::BadSignature);
    assert_eq!(snapshot(&bob), before);
    assert_eq!(bob.decrypt(&msg).unwrap().0.plaintext, b"hello");
}

/// Builds a sender state for `victim`'s chain (its chain key, from the distribution the forger
/// received) signed with `forger_signing_secret`: what a member who knows another's chain key
/// could make.
fn forged_sender(victim: &SenderKeyDistribution, forger_signing_secret: &[u8]) -> SenderChain {
    let room = victim.room();
    let d = victim.to_bytes();
    let at = dist_chain_key_at(room);
    let mut state = vec![1u8, 3];
    state.extend_from_slice(&(room.len() as u16).to_be_bytes());
    state.extend_from_slice(room.as_bytes());
    state.extend_from_slice(&victim.epoch().to_be_bytes());
    state.extend_from_slice(victim.sender().as_bytes());
    state.extend_from_slice(victim.chain_id().as_bytes());
    state.extend_from_slice(&victim.iteration().to_be_bytes());
    state.extend_from_slice(&d[at..at + 32]);
    state.extend_from_slice(forger_signing_secret);
    state.extend_from_slice(&T.to_be_bytes());
    SenderChain::from_bytes(&state).unwrap()
}

#[test]
fn a_member_cannot_sign_as_another() {
    let alice = chain(12, "paris", 1, 1);
    let mut mallory = chain(13, "paris", 1, 4);
    // Carol holds both chains.
    let mut carol = store_with(&alice);
    carol.add_distribution(&uid(4), &sent(&mallory.distribution())).unwrap();
    let before = snapshot(&carol);

    // Mallory knows Alice's chain key and encrypts as Alice, signing with her own chain key.
    let mallory_state = mallory.to_bytes();
    let secret_at = 2 + 2 + 5 + 8 + 32 + 16 + 4 + 32;
    let mut as_alice = forged_sender(&alice.distribution(), &mallory_state[secret_at..secret_at + 32]);
    let forged = as_alice.encrypt(b"I am Alice").unwrap();
    assert_eq!(MessageHeader::parse(&forged).unwrap().sender, uid(1));
    assert_eq!(carol.decrypt(&forged).unwrap_err(), SenderKeyError::BadSignature);
    // With a signing key of her own making: the same.
    let fresh = SigningKey::generate(&mut rng(14)).to_bytes();
    let forged = forged_sender(&alice.distribution(), &fresh).encrypt(b"I am Alice").unwrap();
    assert_eq!(carol.decrypt(&forged).unwrap_err(), SenderKeyError::BadSignature);

    // Mallory's own message with the header's sender and chain id rewritten to Alice's.
    let mut rewritten = mallory.encrypt(b"hi").unwrap();
    rewritten[4 + 5 + 8..4 + 5 + 8 + 32].copy_from_slice(uid(1).as_bytes());
    assert_eq!(carol.decrypt(&rewritten).unwrap_err(), SenderKeyError::UnknownChain);
    rewritten[4 + 5 + 8 + 32..4 + 5 + 8 + 48].copy_from_slice(alice.chain_id().as_bytes());
    assert_eq!(carol.decrypt(&rewritten).unwrap_err(), SenderKeyError::BadSignature);

    // A receiver chain for Alice given Mallory's genuine message: wrong sender.
    let alice_chain = ReceiverChain::from_distribution(&alice.distribution());
    assert_eq!(alice_chain.decrypt(&mallory.encrypt(b"x").unwrap()).unwrap_err(), SenderKeyError::WrongSender);

    // Mallory cannot hand Carol a distribution in Alice's name over her own pairwise session.
    let fake = forged_sender(&alice.distribution(), &fresh).distribution();
    let mut dave = SenderKeyStore::new();
    assert_eq!(dave.add_distribution(&uid(4), &fake).unwrap_err(), SenderKeyError::WrongSender);
    assert!(dave.is_empty());
    assert_eq!(snapshot(&carol), before);
}

#[test]
fn a_reused_chain_id_with_a_new_key_is_rejected() {
    let mut alice = chain(15, "paris", 1, 1);
    let dist = alice.distribution();
    let mut bob = store_with(&alice);
    let room = "paris";
    let ck_at = dist_chain_key_at(room);
    let original = dist.to_bytes().to_vec();

    // Same chain id, another signing key.
    let mut other_sig = original.clone();
    let new_key = SigningKey::generate(&mut rng(16)).verifying_key().to_bytes();
    other_sig[ck_at + 32..].copy_from_slice(&new_key);
    // Same chain id and signing key, another chain key.
    let mut other_ck = original.clone();
    other_ck[ck_at] ^= 1;
    let before = snapshot(&bob);
    for bytes in [other_sig, other_ck] {
        let d = SenderKeyDistribution::from_bytes(&bytes).unwrap();
        assert_eq!(bob.add_distribution(&uid(1), &d).unwrap_err(), SenderKeyError::ChainIdReused);
        assert_eq!(snapshot(&bob), before);
    }

    // A re-send of the same chain, now or later in the chain, is accepted and changes nothing.
    assert!(bob.add_distribution(&uid(1), &dist).unwrap().is_empty());
    for _ in 0..3 {
        alice.encrypt(b"x").unwrap();
    }
    let later = alice.distribution();
    assert_eq!(later.iteration(), 3);
    assert!(bob.add_distribution(&uid(1), &later).unwrap().is_empty());
    // A later distribution with a chain key that is not where ours ratchets to is a reuse.
    let mut wrong_later = later.to_bytes().to_vec();
    wrong_later[ck_at] ^= 0x80;
    let d = SenderKeyDistribution::from_bytes(&wrong_later).unwrap();
    assert_eq!(bob.add_distribution(&uid(1), &d).unwrap_err(), SenderKeyError::ChainIdReused);
    assert_eq!(snapshot(&bob), before);

    // Distributions are checked when decoded: truncation, trailing bytes, a bad public key.
    for n in 0..original.len() {
        assert!(SenderKeyDistribution::from_bytes(&original[..n]).is_err(), "truncated to {n}");
    }
    let mut trailing = original.clone();
    trailing.push(0);
    assert!(matches!(SenderKeyDistribution::from_bytes(&trailing), Err(SenderKeyError::Malformed(_))));
    let mut small_order = original.clone();
    small_order[ck_at + 32..].copy_from_slice(&[0; 32]); // a small-order point
    assert!(matches!(SenderKeyDistribution::from_bytes(&small_order), Err(SenderKeyError::Malformed(_))));
    let mut v2 = original;
    v2[0] = 2;
    assert_eq!(
        SenderKeyDistribution::from_bytes(&v2).unwrap_err(),
        SenderKeyError::UnsupportedFormat { version: 2, kind: 2 }
    );
}

#[test]
fn forward_secrecy_inside_a_chain() {
    let room = "paris";
    let mut alice = chain(17, room, 1, 1);
    let dist = alice.distribution();
    let d = dist.to_bytes();
    let at = dist_chain_key_at(room);
    // CK_0.. and MK_0.. as the distribution lets anyone who holds it compute them.
    let mut chain_keys = vec![<[u8; 32]>::try_from(&d[at..at + 32]).unwrap()];
    let mut message_keys = Vec::new();
    for i in 0..8 {
        message_keys.push(hmac(&chain_keys[i], 1));
        chain_keys.push(hmac(&chain_keys[i], 2));
    }
    let msgs: Vec<Vec<u8>> = (0..8).map(|i| alice.encrypt(&[i]).unwrap()).collect();

    // Bob receives 0..=5 except 3, and restarts.
    let mut db = Db::default();
    let mut bob = SenderKeyStore::new();
    db.apply(&bob.add_distribution(&uid(1), &dist).unwrap());
    for i in [0usize, 1, 2, 4, 5] {
        db.apply(&bob.decrypt(&msgs[i]).unwrap().1);
    }
    let state = db.0.values().next().unwrap().clone();
    for (k, ck) in chain_keys.iter().enumerate().take(6) {
        assert!(!state.windows(32).any(|w| w == ck), "chain key {k} is in the state");
    }
    for k in [0, 1, 2, 4, 5] {
        assert!(!state.windows(32).any(|w| w == message_keys[k]), "message key {k} is in the state");
    }
    assert!(state.windows(32).any(|w| w == message_keys[3]), "the skipped key 3 is kept");

    // The persisted state decrypts none of the consumed messages, and 3 exactly once.
    let mut bob = db.load();
    for i in [0usize, 1, 2, 4, 5] {
        assert_eq!(bob.decrypt(&msgs[i]).unwrap_err(), SenderKeyError::Replay { iteration: i as u32 });
    }
    assert_eq!(bob.decrypt(&msgs[3]).unwrap().0.plaintext, [3]);
    assert_eq!(bob.decrypt(&msgs[3]).unwrap_err(), SenderKeyError::Replay { iteration: 3 });

    // The sender's state after message 7 holds none of the keys used so far.
    let sender_state = alice.to_bytes();
    for k in 0..8 {
        assert!(!sender_state.windows(32).any(|w| w == chain_keys[k] || w == message_keys[k]), "sender key {k}");
    }

    // A late joiner, given the chain at iteration 8, reads nothing before it.
    let carol = ReceiverChain::from_distribution(&alice.distribution());
    assert_eq!(carol.first_iteration(), 8);
    for (i, msg) in msgs.iter().enumerate() {
        assert_eq!(
            carol.decrypt(msg).unwrap_err(),
            SenderKeyError::PredatesChain { iteration: i as u32, first_iteration: 8 }
        );
    }
    assert_eq!(carol.decrypt(&alice.encrypt(b"welcome").unwrap()).unwrap().0.plaintext, b"welcome");
}

#[test]
fn debug_output_hides_every_secret() {
    let room = "paris";
    let mut alice = chain(18, room, 1, 1);
    // Two messages in, so the distributed chain key is not the first one.
    alice.encrypt(b"a").unwrap();
    alice.encrypt(b"b").unwrap();
    let dist = alice.distribution();
    let mut bob = store_with(&alice);
    let (decrypted, changes) = bob.decrypt(&alice.encrypt(b"secret text").unwrap()).unwrap();
    let receiver = ReceiverChain::from_distribution(&chain(18, room, 1, 1).distribution());
    let (_, receiver) = receiver
        .decrypt(&{
            let mut c = chain(18, room, 1, 1);
            c.encrypt(b"a").unwrap();
            c.encrypt(b"b").unwrap()
        })
        .unwrap();
    assert_eq!(receiver.skipped_iterations(), vec![0]);

    let d = dist.to_bytes();
    let at = dist_chain_key_at(room);
    let state = alice.to_bytes();
    let signing_secret_at = at + 32;
    let rstate = receiver.to_bytes();
    let rck = recv_chain_key_at(room);
    let bob_state = bob.chains().next().unwrap().1.to_bytes();
    let secrets: Vec<&[u8]> = vec![
        &d[at..at + 32],                                   // the distributed chain key
        &state[signing_secret_at..signing_secret_at + 32], // the signing secret
        &state[at..at + 32],                               // the sender's current chain key
        &rstate[rstate.len() - 32..],                      // a skipped message key
        &rstate[rck..rck + 32],                            // a receiver's chain key
        &bob_state[rck..rck + 32],                         // the store's chain key
    ];

    let outputs = [
        format!("{alice:?}"),
        format!("{alice:#?}"),
        format!("{dist:?}"),
        format!("{receiver:?}"),
        format!("{receiver:#?}"),
        format!("{bob:?}"),
        format!("{changes:?}"),
        format!("{decrypted:?}"),
    ];
    for out in &outputs {
        for s in &secrets {
            assert!(!out.contains(&hex(s)), "{out}");
            assert!(!out.contains(&hex(s).to_uppercase()), "{out}");
            let dec = format!("{:?}", &s[..4]);
            assert!(!out.contains(&dec[1..dec.len() - 1]), "{out} contains {dec}");
        }
        assert!(!out.contains("secret text"), "{out}");
    }
    println!("{}", outputs[0]);
    println!("{}", outputs[3]);
}

#[test]
fn rotation_policy_by_age_and_count() {
    let policy = RotationPolicy::default();
    assert_eq!((policy.max_age_secs, policy.max_messages), (7 * DAY, 10_000));
    let mut alice = chain(19, "paris", 1, 1);
    assert_eq!(alice.created_at(), T);
    assert!(!alice.needs_rotation(T, &policy));
    assert!(!alice.needs_rotation(T + 7 * DAY - 1, &policy));
    assert!(alice.needs_rotation(T + 7 * DAY, &policy));
    // A clock that went backwards is no reason to rotate.
    assert!(!alice.needs_rotation(T - DAY, &policy));

    let by_count = RotationPolicy { max_age_secs: u64::MAX, max_messages: 3 };
    for _ in 0..2 {
        alice.encrypt(b"x").unwrap();
    }
    assert!(!alice.needs_rotation(T, &by_count));
    alice.encrypt(b"x").unwrap();
    assert_eq!(alice.messages_sent(), 3);
    assert!(alice.needs_rotation(T, &by_count));
    // Both survive a restart.
    let again = SenderChain::from_bytes(&alice.to_bytes()).unwrap();
    assert_eq!((again.created_at(), again.messages_sent()), (T, 3));
    assert!(again.needs_rotation(T, &by_count));
    assert!(again.needs_rotation(T + 7 * DAY, &policy));

    // The default count, for real.
    let mut busy = chain(20, "paris", 1, 1);
    for _ in 0..9_999 {
        busy.encrypt(b"").unwrap();
    }
    assert!(!busy.needs_rotation(T, &policy));
    busy.encrypt(b"").unwrap();
    assert!(busy.needs_rotation(T, &policy));
}

#[test]
fn same_seed_same_bytes() {
    let mut a = chain(21, "paris", 1, 1);
    let mut b = chain(21, "paris", 1, 1);
    assert_eq!(a.to_bytes(), b.to_bytes());
    assert_eq!(a.encrypt(b"m").unwrap(), b.encrypt(b"m").unwrap());
    assert_ne!(chain(22, "paris", 1, 1).chain_id(), a.chain_id());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any delivery order of messages within the window, with duplicates and a restart
    /// anywhere, decrypts every message exactly once.
    #[test]
    fn arbitrary_delivery_orders_within_the_window(
        order in Just((0..40u32).collect::<Vec<u32>>()).prop_shuffle(),
        dups in proptest::collection::vec((0..40usize, 0..40u32), 0..20),
        restart_at in 0..60usize,
        seed in any::<u64>(),
    ) {
        let mut alice = SenderChain::new(&mut rng(seed), "room", 5, uid(1), T).unwrap();
        let mut db = Db::default();
        let mut bob = SenderKeyStore::new();
        db.apply(&bob.add_distribution(&uid(1), &alice.distribution()).unwrap());
        let msgs: Vec<Vec<u8>> = (0..40u32).map(|i| alice.encrypt(&i.to_be_bytes()).unwrap()).collect();

        let mut deliveries = order.clone();
        for (pos, i) in dups {
            deliveries.insert(pos.min(deliveries.len()), i);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (n, i) in deliveries.into_iter().enumerate() {
            if n == restart_at {
                bob = db.load();
            }
            match bob.decrypt(&msgs[i as usize]) {
                Ok((d, changes)) => {
                    prop_assert!(seen.insert(i), "iteration {} decrypted twice", i);
                    prop_assert_eq!(d.iteration, i);
                    prop_assert_eq!(d.plaintext, i.to_be_bytes().to_vec());
                    db.apply(&changes);
                }
                Err(e) => {
                    prop_assert!(seen.contains(&i), "iteration {} refused: {:?}", i, e);
                    prop_assert_eq!(e, SenderKeyError::Replay { iteration: i });
                }
            }
        }
        prop_assert_eq!(seen.len(), 40);
        let (_, c) = bob.chains().next().unwrap();
        prop_assert!(c.skipped_iterations().is_empty());
    }
}
