//! A member's commit with a fault the hub cannot see: the membership tag's proof by the epoch's
//! membership key (`grove_proto::mls::fault`, `MlsEngine::reveal_membership_key`).

use grove_proto::mls::engine::EngineError;
use grove_proto::mls::fault::{commit_framing, membership_tag_input, membership_tag_verifies, with_membership_tag};

use crate::engine::three;

/// Carol's self-update with one bit of its membership tag flipped: the hub takes it (it holds
/// no membership key); Alice and Bob cannot process it, and each reveals the same key, under
/// which the posted tag fails and Carol's honest tag verifies.
#[test]
fn a_flipped_membership_tag_is_proven_by_the_key_both_honest_members_reveal() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    let before = room.hub.clone();
    let (pending, changes) = carol.engine.commit_update(&room.id).unwrap();
    carol.persist(changes);
    let mut bad = pending.commit.clone();
    *bad.last_mut().unwrap() ^= 1;
    room.post_commit(carol.uid(), &bad).unwrap();
    assert_eq!(room.hub.epoch(), 2, "the hub cannot tell");

    let context = before.group_context().unwrap();
    assert_eq!(alice.engine.group_context(&room.id).unwrap(), context, "members and hub agree on the context");
    let from_alice = alice.engine.reveal_membership_key(&room.id, &bad).unwrap().expect("alice proves it");
    let from_bob = bob.engine.reveal_membership_key(&room.id, &bad).unwrap().expect("bob proves it");
    assert_eq!(from_alice, from_bob);
    assert!(!membership_tag_verifies(&bad, &context, &from_alice).unwrap());
    assert!(membership_tag_verifies(&pending.commit, &context, &from_alice).unwrap());
    assert!(!membership_tag_verifies(&pending.commit, &context, &[7; 32]).unwrap(), "any other key fails");
    assert_eq!(with_membership_tag(&bad, &context, &from_alice).unwrap(), pending.commit);
    // Carol, who holds the pending commit, gets the same key from her own altered copy.
    assert_eq!(carol.engine.reveal_membership_key(&room.id, &bad).unwrap().unwrap(), from_alice);

    // Revealing changed nothing: the commit still fails, and nobody moved.
    assert!(matches!(alice.engine.process(&room.id, &bad), Err(EngineError::Rejected(_))));
    assert_eq!(alice.engine.epoch(&room.id).unwrap(), 1);
    // An honest commit reveals nothing.
    assert_eq!(bob.engine.reveal_membership_key(&room.id, &pending.commit).unwrap(), None);
    assert_eq!(membership_tag_input(&bad, &context).unwrap(), membership_tag_input(&pending.commit, &context).unwrap());
}

/// Carol alters her confirmation tag and makes the membership tag anew with the epoch's key:
/// the membership tag verifies, so there is nothing to reveal, yet Alice cannot process it.
#[test]
fn a_wrong_confirmation_tag_under_a_valid_membership_tag_proves_nothing() {
    let (mut room, mut alice, _bob, mut carol) = three();
    let context = room.hub.group_context().unwrap();
    let (pending, changes) = carol.engine.commit_update(&room.id).unwrap();
    carol.persist(changes);
    let mut flipped = pending.commit.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let key = carol.engine.reveal_membership_key(&room.id, &flipped).unwrap().unwrap();
    let mut bad = pending.commit.clone();
    let framing = commit_framing(&bad).unwrap();
    bad[framing.confirmation_tag.start] ^= 1;
    let bad = with_membership_tag(&bad, &context, &key).unwrap();
    assert!(membership_tag_verifies(&bad, &context, &key).unwrap());
    room.post_commit(carol.uid(), &bad).unwrap();

    assert!(matches!(alice.engine.process(&room.id, &bad), Err(EngineError::Rejected(_))));
    assert_eq!(alice.engine.reveal_membership_key(&room.id, &bad).unwrap(), None);
    assert_eq!(alice.engine.epoch(&room.id).unwrap(), 1);
}

/// What is not a member's PublicMessage commit has no framing to prove anything with.
#[test]
fn only_commits_have_a_membership_tag_to_check() {
    let (mut room, mut alice, _bob, _carol) = three();
    alice.send(&mut room, "a private message");
    let message = room.log.last().unwrap().clone();
    assert!(commit_framing(&message).is_err());
    assert!(commit_framing(&[]).is_err());
    assert!(commit_framing(&[0, 1, 0, 1, 0xff]).is_err());
    let context = room.hub.group_context().unwrap();
    assert!(membership_tag_verifies(&message, &context, &[0; 32]).is_err());
}
