//! Unit tests that look inside the states: forward secrecy of the stored bytes, exact encoding
//! sizes, invariants checked when loading, error classification.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::crypto::ratchet;
use super::*;
use crate::identity::UserId;

fn chain(seed: u64) -> SenderChain {
    let mut rng = StdRng::seed_from_u64(seed);
    SenderChain::new(&mut rng, "paris", 3, UserId([seed as u8; 32]), 1_700_000_000).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn receiver_state_forgets_consumed_keys() {
    let mut s = chain(1);
    let dist = s.distribution();
    let mut chain_keys = vec![dist.chain_key.clone()];
    let mut message_keys = Vec::new();
    for _ in 0..6 {
        let (mk, next) = ratchet(chain_keys.last().unwrap()).unwrap();
        message_keys.push(mk);
        chain_keys.push(next);
    }
    let msgs: Vec<Vec<u8>> = (0..6).map(|i| s.encrypt(format!("m{i}").as_bytes()).unwrap()).collect();

    let mut r = ReceiverChain::from_distribution(&dist);
    // Receive 0, 1, then 4 (skipping 2 and 3).
    for i in [0usize, 1, 4] {
        r = r.decrypt(&msgs[i]).unwrap().1;
    }
    assert_eq!(r.next_iteration(), 5);
    assert_eq!(r.skipped_iterations(), vec![2, 3]);
    let bytes = r.to_bytes();
    for (k, ck) in chain_keys.iter().enumerate().take(5) {
        assert!(!contains(&bytes, &ck[..]), "chain key {k} still stored");
    }
    assert!(contains(&bytes, &chain_keys[5][..]), "the current chain key is stored");
    for k in [0, 1, 4] {
        assert!(!contains(&bytes, &message_keys[k][..]), "message key {k} still stored after use");
    }
    for k in [2, 3] {
        assert!(contains(&bytes, &message_keys[k][..]), "skipped message key {k} is kept");
    }
    // Using a skipped key deletes it.
    let r = r.decrypt(&msgs[3]).unwrap().1;
    assert!(!contains(&r.to_bytes(), &message_keys[3][..]));
    assert_eq!(r.skipped_iterations(), vec![2]);
}

#[test]
fn sender_state_forgets_used_keys() {
    let mut s = chain(2);
    let ck0 = s.chain_key.clone();
    let (mk0, ck1) = ratchet(&ck0).unwrap();
    s.encrypt(b"x").unwrap();
    let bytes = s.to_bytes();
    assert!(!contains(&bytes, &ck0[..]));
    assert!(!contains(&bytes, &mk0[..]));
    assert!(contains(&bytes, &ck1[..]));
}

#[test]
fn encodings_have_the_announced_size() {
    let mut s = chain(3);
    let msg = s.encrypt(b"hello").unwrap();
    assert_eq!(msg.len(), 64 + "paris".len() + 5 + TAG_LEN + SIGNATURE_LEN);
    assert_eq!(msg.capacity(), msg.len());
    let d = s.distribution().to_bytes();
    assert_eq!(d.len(), 2 + 2 + 5 + 8 + 32 + 16 + 4 + 32 + 32);
    assert_eq!(d.capacity(), d.len());
    let st = s.to_bytes();
    assert_eq!(st.len(), 2 + 2 + 5 + 8 + 32 + 16 + 4 + 32 + 32 + 8);
    assert_eq!(st.capacity(), st.len());
    let mut r = ReceiverChain::from_distribution(&s.distribution());
    s.encrypt(b"1").unwrap();
    r = r.decrypt(&s.encrypt(b"2").unwrap()).unwrap().1;
    let rs = r.to_bytes();
    assert_eq!(rs.len(), 2 + 2 + 5 + 8 + 32 + 16 + 32 + 4 + 4 + 32 + 4 + 4 + 4 + 36);
    assert_eq!(rs.capacity(), rs.len());
}

#[test]
fn loading_checks_receiver_invariants() {
    let mut s = chain(4);
    let mut r = ReceiverChain::from_distribution(&s.distribution());
    let m: Vec<_> = (0..3).map(|_| s.encrypt(b"x").unwrap()).collect();
    r = r.decrypt(&m[2]).unwrap().1;
    let good = r.to_bytes();
    assert_eq!(ReceiverChain::from_bytes(&good).unwrap().to_bytes(), good);

    // Offsets: framing 2, room 2 + 5, epoch 8, sender 32, chain id 16, signing key 32.
    let first_at = 2 + 7 + 8 + 32 + 16 + 32;
    let next_at = first_at + 4;
    let count_at = next_at + 4 + 32 + 8;
    let first_skipped_at = count_at + 4;
    let set_u32 = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());

    let mut bad = good.to_vec();
    set_u32(&mut bad, first_at, 5); // first > next
    assert!(matches!(ReceiverChain::from_bytes(&bad), Err(SenderKeyError::CorruptState(_))));
    let mut bad = good.to_vec();
    set_u32(&mut bad, first_skipped_at + 36, 0); // not ascending
    assert!(matches!(ReceiverChain::from_bytes(&bad), Err(SenderKeyError::CorruptState(_))));
    let mut bad = good.to_vec();
    set_u32(&mut bad, first_skipped_at, 7); // out of range
    assert!(matches!(ReceiverChain::from_bytes(&bad), Err(SenderKeyError::CorruptState(_))));
    let mut bad = good.to_vec();
    set_u32(&mut bad, count_at, 3); // count larger than what follows / than the gap
    assert!(matches!(ReceiverChain::from_bytes(&bad), Err(SenderKeyError::CorruptState(_))));
    let mut bad = good.to_vec();
    bad.push(0);
    assert!(matches!(ReceiverChain::from_bytes(&bad), Err(SenderKeyError::CorruptState(_))));
    let mut bad = good.to_vec();
    bad[0] = 2;
    assert!(matches!(ReceiverChain::from_bytes(&bad), Err(SenderKeyError::CorruptState(_))));
    // A sender state is not a receiver state, and the reverse.
    assert!(matches!(ReceiverChain::from_bytes(&s.to_bytes()), Err(SenderKeyError::CorruptState(_))));
    assert!(matches!(SenderChain::from_bytes(&good), Err(SenderKeyError::CorruptState(_))));
    for n in 0..good.len() {
        assert!(ReceiverChain::from_bytes(&good[..n]).is_err(), "truncated to {n}");
    }
}

#[test]
fn error_kinds() {
    assert_eq!(SenderKeyError::Replay { iteration: 1 }.kind(), ErrorKind::Rejected);
    assert_eq!(SenderKeyError::BadSignature.kind(), ErrorKind::Rejected);
    assert_eq!(SenderKeyError::ChainIdReused.kind(), ErrorKind::Rejected);
    assert_eq!(SenderKeyError::ChainExhausted.kind(), ErrorKind::Misuse);
    assert_eq!(SenderKeyError::CorruptState("x").kind(), ErrorKind::Misuse);
    assert_eq!(SenderKeyError::Internal("x").kind(), ErrorKind::Internal);
}

#[test]
fn exhausted_chain_refuses_to_encrypt() {
    let mut s = chain(5);
    s.iteration = u32::MAX - 1;
    let dist = s.distribution();
    let last = s.encrypt(b"last").unwrap();
    assert!(s.needs_rotation(1_700_000_000, &RotationPolicy { max_age_secs: u64::MAX, max_messages: u32::MAX }));
    let before = s.to_bytes();
    assert_eq!(s.encrypt(b"one too many"), Err(SenderKeyError::ChainExhausted));
    assert_eq!(s.to_bytes(), before);
    // The receiver takes the last iteration.
    let r = ReceiverChain::from_distribution(&dist);
    let (d, r) = r.decrypt(&last).unwrap();
    assert_eq!(d.iteration, u32::MAX - 1);
    assert_eq!(r.next_iteration(), u32::MAX);
}

#[test]
fn room_names_are_checked() {
    let mut rng = StdRng::seed_from_u64(6);
    let u = UserId([1; 32]);
    assert_eq!(SenderChain::new(&mut rng, "", 0, u, 0).unwrap_err(), SenderKeyError::InvalidRoom { len: 0 });
    let long = "x".repeat(MAX_ROOM_LEN + 1);
    assert!(matches!(SenderChain::new(&mut rng, &long, 0, u, 0), Err(SenderKeyError::InvalidRoom { .. })));
    let longest = "é".repeat(MAX_ROOM_LEN / 2);
    let mut s = SenderChain::new(&mut rng, &longest, 0, u, 0).unwrap();
    let r = ReceiverChain::from_distribution(&SenderKeyDistribution::from_bytes(&s.distribution().to_bytes()).unwrap());
    assert_eq!(r.decrypt(&s.encrypt(b"hi").unwrap()).unwrap().0.room, longest);
}
