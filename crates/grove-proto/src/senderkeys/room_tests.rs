//! Scenarios of the room engine: Alice (admin), Bob and Carol in a room; pairwise delivery is
//! a direct call naming the user whose session delivered the distribution.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::room::{DistributionOutcome, RoomChanges, RoomError, SkEngine};
use super::{RotationPolicy, SenderKeyError};
use crate::identity::UserId;
use grove_wire::membership::SignedMembership;
use grove_wire::policy::RoomPolicy;

const ROOM: &str = "http://h:1/rooms/paris";
const NOW: u64 = 1_700_000_000;

struct Member {
    key: SigningKey,
    engine: SkEngine,
    /// What the member persisted.
    db: BTreeMap<String, Vec<u8>>,
    rng: StdRng,
}

impl Member {
    fn new(seed: u8) -> Member {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let me = UserId(key.verifying_key().to_bytes());
        Member {
            key,
            engine: SkEngine::new(me, RotationPolicy::default()),
            db: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed as u64),
        }
    }
    fn id(&self) -> UserId {
        self.engine.me()
    }
    fn persist(&mut self, c: RoomChanges) {
        for r in c.records {
            match r.value {
                Some(v) => self.db.insert(r.key, v.to_vec()),
                None => self.db.remove(&r.key),
            };
        }
    }
    fn restart(&mut self) {
        self.engine = SkEngine::load(self.id(), RotationPolicy::default(), self.db.iter()).unwrap();
    }
    fn db_bytes(&self) -> Vec<u8> {
        self.db.values().flatten().copied().collect()
    }
}

/// The server's view: the current version and the log of memberships.
struct Room {
    version: u64,
}

fn trio() -> (Room, Member, Member, Member) {
    let mut alice = Member::new(1);
    let bob = Member::new(2);
    let carol = Member::new(3);
    let c = alice.engine.create_room(ROOM, "paris").unwrap();
    alice.persist(c);
    let mut room = Room { version: 0 };
    let (mut bob, mut carol) = (bob, carol);
    let m = change(&mut room, &mut alice, &[bob.id(), carol.id()], &[], &mut []);
    let c = bob.engine.join_room(ROOM, &alice.id(), &m).unwrap();
    bob.persist(c);
    let c = carol.engine.join_room(ROOM, &alice.id(), &m).unwrap();
    carol.persist(c);
    (room, alice, bob, carol)
}

/// `admin` signs the next version; the server accepts it; admin and `others` apply it.
fn change(
    room: &mut Room,
    admin: &mut Member,
    added: &[UserId],
    removed: &[UserId],
    others: &mut [&mut Member],
) -> SignedMembership {
    let m = admin.engine.next_membership(ROOM, &admin.key, added, removed).unwrap();
    assert_eq!(m.version, room.version + 1);
    room.version = m.version;
    let (_, c) = admin.engine.apply_membership(ROOM, &m).unwrap();
    admin.persist(c);
    for o in others.iter_mut() {
        let (_, c) = o.engine.apply_membership(ROOM, &m).unwrap();
        o.persist(c);
    }
    m
}

/// `sender` rotates if needed and delivers its distribution to each current member.
fn send(room: &Room, sender: &mut Member, to: &mut [&mut Member], text: &str) -> Vec<u8> {
    if sender.engine.needs_rotation(ROOM, NOW).unwrap() {
        let (rot, c) = sender.engine.rotate(ROOM, &mut sender.rng, NOW).unwrap();
        sender.persist(c);
        for (user, dist) in &rot.distributions {
            if let Some(m) = to.iter_mut().find(|m| m.id() == *user) {
                let (out, c) = m.engine.receive_distribution(&sender.id(), dist).unwrap();
                assert_eq!(out, DistributionOutcome::Accepted);
                m.persist(c);
            }
        }
        let c = sender.engine.mark_distributed(ROOM).unwrap();
        sender.persist(c);
    }
    let (msg, _, c) = sender.engine.encrypt(ROOM, text.as_bytes(), room.version, NOW).unwrap();
    sender.persist(c);
    msg
}

fn read(m: &mut Member, msg: &[u8]) -> Result<String, RoomError> {
    let (d, c) = m.engine.decrypt(ROOM, msg)?;
    m.persist(c);
    Ok(String::from_utf8(d.plaintext).unwrap())
}

#[test]
fn three_members_chat() {
    let (room, mut alice, mut bob, mut carol) = trio();
    let msg = send(&room, &mut alice, &mut [&mut bob, &mut carol], "hello");
    assert_eq!(read(&mut bob, &msg).unwrap(), "hello");
    assert_eq!(read(&mut carol, &msg).unwrap(), "hello");
    let msg = send(&room, &mut bob, &mut [&mut alice, &mut carol], "hi");
    assert_eq!(read(&mut alice, &msg).unwrap(), "hi");
    assert_eq!(read(&mut carol, &msg).unwrap(), "hi");
}

#[test]
fn carol_is_removed_and_cannot_read_any_later_message_of_any_member() {
    let (mut room, mut alice, mut bob, mut carol) = trio();
    let before = send(&room, &mut bob, &mut [&mut alice, &mut carol], "before");
    assert_eq!(read(&mut carol, &before).unwrap(), "before");
    // Carol keeps her state as it was (she ignores the removal); Alice and Bob apply it.
    let carol_id = carol.id();
    change(&mut room, &mut alice, &[], &[carol_id], &mut [&mut bob]);
    for sender in ["alice", "bob"] {
        let (s, r) = if sender == "alice" { (&mut alice, &mut bob) } else { (&mut bob, &mut alice) };
        // The rotation distributes to the remaining members only.
        let (rot, c) = s.engine.rotate(ROOM, &mut s.rng, NOW).unwrap();
        s.persist(c);
        assert!(rot.distributions.iter().all(|(u, _)| *u != carol_id));
        assert_eq!(rot.distributions.len(), 1);
        let (_, c) = r.engine.receive_distribution(&s.id(), &rot.distributions[0].1).unwrap();
        r.persist(c);
        let c = s.engine.mark_distributed(ROOM).unwrap();
        s.persist(c);
        let msg = s.engine.encrypt(ROOM, b"after", room.version, NOW).unwrap().0;
        assert_eq!(read(r, &msg).unwrap(), "after");
        let err = read(&mut carol, &msg).unwrap_err();
        assert!(matches!(err, RoomError::Cipher(SenderKeyError::WrongEpoch { .. })), "{err:?}");
        // Even had Carol applied the removal, she holds no chain of the new version.
        assert!(carol.engine.receivers().chains().all(|(k, _)| k.epoch < room.version));
    }
    // Carol's own view, once she applies the removal, deletes the room entirely.
    let m = alice.engine.view(ROOM).unwrap().signed.clone().unwrap();
    let (change, c) = carol.engine.apply_membership(ROOM, &m).unwrap();
    carol.persist(c);
    assert!(change.removed_me);
    assert!(!carol.engine.has_room(ROOM));
    assert!(carol.db.is_empty(), "Carol keeps nothing of the room: {:?}", carol.db.keys().collect::<Vec<_>>());
}

#[test]
fn removal_drops_the_old_chains_so_a_stolen_state_cannot_read_the_old_epoch() {
    let (mut room, mut alice, mut bob, mut carol) = trio();
    let old = send(&room, &mut alice, &mut [&mut bob, &mut carol], "old");
    let carol_id = carol.id();
    change(&mut room, &mut alice, &[], &[carol_id], &mut [&mut bob]);
    assert!(bob.engine.receivers().chains().all(|(k, _)| k.epoch == room.version));
    assert!(matches!(read(&mut bob, &old), Err(RoomError::Cipher(SenderKeyError::WrongEpoch { .. }))));
}

#[test]
fn a_sender_with_a_stale_view_refuses_to_send_until_it_syncs() {
    let (mut room, mut alice, mut bob, mut carol) = trio();
    send(&room, &mut bob, &mut [&mut alice, &mut carol], "one");
    // Alice removes Carol; Bob has not seen it yet.
    let carol_id = carol.id();
    let m = change(&mut room, &mut alice, &[], &[carol_id], &mut []);
    let before = bob.db.clone();
    let err = bob.engine.encrypt(ROOM, b"carol, can you read this?", room.version, NOW).unwrap_err();
    assert_eq!(err, RoomError::StaleView { view: 1, server: 2 });
    assert_eq!(bob.db, before);
    // After the resync, the chain must be rotated first.
    let (_, c) = bob.engine.apply_membership(ROOM, &m).unwrap();
    bob.persist(c);
    assert_eq!(bob.engine.encrypt(ROOM, b"x", room.version, NOW).unwrap_err(), RoomError::NeedsRotation);
    let msg = send(&room, &mut bob, &mut [&mut alice], "two");
    assert_eq!(read(&mut alice, &msg).unwrap(), "two");
    assert!(read(&mut carol, &msg).is_err());
}

#[test]
fn a_late_joiner_cannot_read_earlier_messages() {
    let (mut room, mut alice, mut bob, mut carol) = trio();
    let early = send(&room, &mut alice, &mut [&mut bob, &mut carol], "before dave");
    let mut dave = Member::new(4);
    let dave_id = dave.id();
    let m = change(&mut room, &mut alice, &[dave_id], &[], &mut [&mut bob, &mut carol]);
    let c = dave.engine.join_room(ROOM, &alice.id(), &m).unwrap();
    dave.persist(c);
    assert!(read(&mut dave, &early).is_err());
    let late = send(&room, &mut alice, &mut [&mut bob, &mut carol, &mut dave], "after dave");
    assert_eq!(read(&mut dave, &late).unwrap(), "after dave");
    // The chain Dave got starts where it was made at his version: nothing before.
    assert!(dave.engine.receivers().chains().all(|(k, _)| k.epoch == room.version));
    assert!(read(&mut dave, &early).is_err());
}

#[test]
fn a_distribution_must_come_from_its_senders_own_session_and_a_member() {
    let (room, mut alice, mut bob, mut carol) = trio();
    let (rot, c) = alice.engine.rotate(ROOM, &mut alice.rng, NOW).unwrap();
    alice.persist(c);
    let dist = rot.distributions.iter().find(|(u, _)| *u == bob.id()).unwrap().1.clone();
    // Carol forwards Alice's distribution over her own session.
    let before = bob.db.clone();
    let err = bob.engine.receive_distribution(&carol.id(), &dist).unwrap_err();
    assert_eq!(err, RoomError::Cipher(SenderKeyError::WrongSender));
    assert_eq!(bob.db, before);
    // Mallory, not a member, distributes her own chain for the room.
    let mut mallory = Member::new(9);
    let c = mallory.engine.create_room(ROOM, "paris").unwrap();
    mallory.persist(c);
    // Mallory makes a chain at the room's current version.
    let mallory_id = mallory.id();
    let chain = super::SenderChain::new(&mut mallory.rng, ROOM, room.version, mallory_id, NOW).unwrap();
    let err = bob.engine.receive_distribution(&mallory.id(), &chain.distribution().to_bytes()).unwrap_err();
    assert_eq!(err, RoomError::NotMember(mallory.id()));
    // Carol signing as Alice: a message under Carol's chain naming Alice as sender fails.
    let (_, c) = bob.engine.receive_distribution(&alice.id(), &dist).unwrap();
    bob.persist(c);
    let carol_msg = send(&room, &mut carol, &mut [&mut bob], "from carol");
    let mut forged = carol_msg.clone();
    let sender_at = 4 + ROOM.len() + 8;
    forged[sender_at..sender_at + 32].copy_from_slice(alice.id().as_bytes());
    assert!(read(&mut bob, &forged).is_err());
    assert_eq!(read(&mut bob, &carol_msg).unwrap(), "from carol");
}

#[test]
fn a_distribution_for_a_version_not_reached_yet_waits_and_one_for_a_left_version_is_dropped() {
    let (mut room, mut alice, mut bob, mut carol) = trio();
    let carol_id = carol.id();
    // Alice removes Carol and rotates before Bob has applied the removal.
    let m = change(&mut room, &mut alice, &[], &[carol_id], &mut []);
    let (rot, c) = alice.engine.rotate(ROOM, &mut alice.rng, NOW).unwrap();
    alice.persist(c);
    let (out, c) = bob.engine.receive_distribution(&alice.id(), &rot.distributions[0].1).unwrap();
    bob.persist(c);
    assert_eq!(out, DistributionOutcome::Held);
    bob.restart();
    assert_eq!(bob.engine.pending_len(), 1);
    let (_, c) = bob.engine.apply_membership(ROOM, &m).unwrap();
    bob.persist(c);
    assert_eq!(bob.engine.pending_len(), 0);
    let c = alice.engine.mark_distributed(ROOM).unwrap();
    alice.persist(c);
    let msg = alice.engine.encrypt(ROOM, b"held", room.version, NOW).unwrap().0;
    assert_eq!(read(&mut bob, &msg).unwrap(), "held");
    // Carol's distribution of the old version reaches Bob late: dropped.
    let old = super::SenderChain::new(&mut carol.rng, ROOM, 1, carol_id, NOW).unwrap();
    let err = bob.engine.receive_distribution(&carol_id, &old.distribution().to_bytes()).unwrap_err();
    assert_eq!(err, RoomError::StaleDistribution { dist: 1, view: 2 });
}

#[test]
fn memberships_must_be_allowed_by_the_policy_and_follow_the_version() {
    let (room, mut alice, mut bob, carol) = trio();
    let _ = room;
    // Bob, a plain member, signs Carol's removal: his own engine signs it (the server answers
    // first), but every member refuses it.
    let by_bob = bob.engine.next_membership(ROOM, &bob.key, &[], &[carol.id()]).unwrap();
    let before = bob.db.clone();
    assert!(matches!(bob.engine.apply_membership(ROOM, &by_bob), Err(RoomError::NotAllowed(_))));
    let forged =
        SignedMembership::sign(&bob.key, "paris", 2, vec![alice.id(), bob.id()], RoomPolicy::for_creator(bob.id()));
    assert!(matches!(bob.engine.apply_membership(ROOM, &forged), Err(RoomError::NotAllowed(_))));
    // A bad signature.
    let mut m = alice.engine.next_membership(ROOM, &alice.key, &[], &[carol.id()]).unwrap();
    m.members.retain(|u| *u != bob.id());
    assert!(matches!(bob.engine.apply_membership(ROOM, &m), Err(RoomError::BadMembership(_))));
    // A version skipped.
    let policy = RoomPolicy::for_creator(alice.id());
    let m = SignedMembership::sign(&alice.key, "paris", 3, vec![alice.id(), bob.id()], policy.clone());
    assert_eq!(bob.engine.apply_membership(ROOM, &m).unwrap_err(), RoomError::MembershipVersion { current: 1, got: 3 });
    // Another room's.
    let m = SignedMembership::sign(&alice.key, "lyon", 2, vec![alice.id(), bob.id()], policy);
    assert!(matches!(bob.engine.apply_membership(ROOM, &m), Err(RoomError::BadMembership(_))));
    assert_eq!(bob.db, before);
    // Bob may always leave: his own version without himself is accepted.
    let leave = bob.engine.next_membership(ROOM, &bob.key, &[], &[bob.id()]).unwrap();
    let (change, _) = alice.engine.apply_membership(ROOM, &leave).unwrap();
    assert_eq!(change.removed, vec![bob.id()]);
    // Applying one's own accepted update again (read back from the log) changes nothing.
    let m = alice.engine.next_membership(ROOM, &alice.key, &[], &[carol.id()]).unwrap();
    let (_, c) = alice.engine.apply_membership(ROOM, &m).unwrap();
    alice.persist(c);
    let (again, c) = alice.engine.apply_membership(ROOM, &m).unwrap();
    assert!(again.already_applied && c.is_empty());
}

#[test]
fn replays_are_rejected_after_a_restart_across_epochs_and_across_rooms() {
    let (mut room, mut alice, mut bob, mut carol) = trio();
    let msg = send(&room, &mut alice, &mut [&mut bob, &mut carol], "once");
    assert_eq!(read(&mut bob, &msg).unwrap(), "once");
    bob.restart();
    assert!(matches!(read(&mut bob, &msg), Err(RoomError::Cipher(SenderKeyError::Replay { .. }))));
    // Across rooms: Bob is also in another room with Alice; the message names the first room.
    const OTHER: &str = "http://h:1/rooms/lyon";
    let c = alice.engine.create_room(OTHER, "lyon").unwrap();
    alice.persist(c);
    let m = alice.engine.next_membership(OTHER, &alice.key, &[bob.id()], &[]).unwrap();
    let (_, c) = alice.engine.apply_membership(OTHER, &m).unwrap();
    alice.persist(c);
    let c = bob.engine.join_room(OTHER, &alice.id(), &m).unwrap();
    bob.persist(c);
    assert!(matches!(bob.engine.decrypt(OTHER, &msg), Err(RoomError::Cipher(SenderKeyError::WrongRoom))));
    // Across epochs: after the next version, the message is of an old epoch.
    change(&mut room, &mut alice, &[], &[carol.id()], &mut [&mut bob]);
    assert!(matches!(read(&mut bob, &msg), Err(RoomError::Cipher(SenderKeyError::WrongEpoch { .. }))));
}

#[test]
fn a_failed_decryption_changes_nothing_and_restart_keeps_everything() {
    let (room, mut alice, mut bob, mut carol) = trio();
    let msg = send(&room, &mut alice, &mut [&mut bob, &mut carol], "a secret plaintext");
    let before = bob.db.clone();
    let mut bad = msg.clone();
    let last = bad.len() - 70;
    bad[last] ^= 1;
    assert!(read(&mut bob, &bad).is_err());
    assert_eq!(bob.db, before);
    bob.restart();
    assert_eq!(read(&mut bob, &msg).unwrap(), "a secret plaintext");
    assert!(!bob.db_bytes().windows(18).any(|w| w == b"a secret plaintext"), "no plaintext in stored state");
    // The sender's chain survives a restart and continues where it stopped.
    alice.restart();
    let msg2 = alice.engine.encrypt(ROOM, b"y", room.version, NOW).unwrap();
    alice.persist(msg2.2);
    assert_eq!(read(&mut bob, &msg2.0).unwrap(), "y");
}

#[test]
fn chains_rotate_by_count_and_by_age() {
    let (room, mut alice, mut bob, mut carol) = trio();
    send(&room, &mut alice, &mut [&mut bob, &mut carol], "first");
    let policy = RotationPolicy::default();
    assert!(!alice.engine.needs_rotation(ROOM, NOW).unwrap());
    assert!(alice.engine.needs_rotation(ROOM, NOW + policy.max_age_secs).unwrap());
    assert_eq!(
        alice.engine.encrypt(ROOM, b"late", room.version, NOW + policy.max_age_secs).unwrap_err(),
        RoomError::NeedsRotation
    );
    for _ in 1..policy.max_messages {
        let (_, _, c) = alice.engine.encrypt(ROOM, b"m", room.version, NOW).unwrap();
        alice.persist(c);
    }
    assert!(alice.engine.needs_rotation(ROOM, NOW).unwrap());
    let msg = send(&room, &mut alice, &mut [&mut bob, &mut carol], "fresh chain");
    assert_eq!(read(&mut bob, &msg).unwrap(), "fresh chain");
}

/// Alice knows everyone's home and invites Bob and Carol: the membership names each home, and
/// Bob, who leaves, cannot point Carol's home elsewhere. Alice rotates while Carol's home is
/// down: Bob gets the distribution, Carol does not, and Alice's chain is kept (no new rotation)
/// with Carol still waiting, across a restart. Carol holds Alice's message until the same
/// distribution lands, then reads it.
#[test]
fn homes_are_in_the_membership_and_a_late_distribution_makes_a_held_message_readable() {
    let (mut alice, mut bob, mut carol) = (Member::new(1), Member::new(2), Member::new(3));
    let homes = BTreeMap::from([(alice.id(), "a:1".to_string()), (bob.id(), "b:1".into()), (carol.id(), "c:1".into())]);
    alice.engine.set_known_homes(homes);
    let c = alice.engine.create_room(ROOM, "paris").unwrap();
    alice.persist(c);
    let mut room = Room { version: 0 };
    let m = change(&mut room, &mut alice, &[bob.id(), carol.id()], &[], &mut []);
    assert_eq!((m.home_of(&alice.id()), m.home_of(&carol.id())), (Some("a:1"), Some("c:1")));
    for p in [&mut bob, &mut carol] {
        let c = p.engine.join_room(ROOM, &alice.id(), &m).unwrap();
        p.persist(c);
    }
    assert_eq!(bob.engine.view(ROOM).unwrap().home_of(&carol.id()), Some("c:1"));
    let mut moved = m.homes.clone();
    moved.remove(&bob.id());
    moved.insert(carol.id(), "mallory:1".into());
    let policy = RoomPolicy::for_creator(alice.id());
    let leave = SignedMembership::sign_with_homes(&bob.key, "paris", 2, vec![alice.id(), carol.id()], policy, moved);
    assert!(matches!(alice.engine.apply_membership(ROOM, &leave), Err(RoomError::NotAllowed(_))));

    let (rot, c) = alice.engine.rotate(ROOM, &mut alice.rng, NOW).unwrap();
    alice.persist(c);
    let to_bob = &rot.distributions.iter().find(|(u, _)| *u == bob.id()).unwrap().1;
    let (_, c) = bob.engine.receive_distribution(&alice.id(), to_bob).unwrap();
    bob.persist(c);
    let c = alice.engine.mark_delivered(ROOM, &[bob.id()]).unwrap();
    alice.persist(c);
    alice.restart();
    assert!(!alice.engine.needs_rotation(ROOM, NOW).unwrap(), "the chain is kept for Carol");
    let waiting = alice.engine.undelivered(ROOM).unwrap().unwrap();
    assert_eq!(waiting.members, [carol.id()]);
    let dist = waiting.distribution;
    let (msg, _, c) = alice.engine.encrypt(ROOM, b"while carol waits", room.version, NOW).unwrap();
    alice.persist(c);
    assert_eq!(read(&mut bob, &msg).unwrap(), "while carol waits");

    assert!(read(&mut carol, &msg).unwrap_err().is_missing_chain());
    let (held, c) = carol.engine.hold_message(ROOM, 7, 70, &msg).unwrap();
    carol.persist(c);
    assert!(held);
    carol.restart();
    let (none, _) = carol.engine.take_readable(ROOM).unwrap();
    assert!(none.is_empty());
    assert_eq!(carol.engine.held_len(ROOM), 1);
    let (_, c) = carol.engine.receive_distribution(&alice.id(), &dist).unwrap();
    carol.persist(c);
    let (readable, c) = carol.engine.take_readable(ROOM).unwrap();
    carol.persist(c);
    assert_eq!(readable.len(), 1);
    assert_eq!((readable[0].seq, readable[0].ts), (7, 70));
    assert_eq!(readable[0].decrypted.plaintext, b"while carol waits");
    assert_eq!(carol.engine.held_len(ROOM), 0);
    assert!(!carol.db.keys().any(|k| k.starts_with("held/")));

    // A week later the chain is due by age, but Carol still waits for it: kept, up to two weeks.
    let week = RotationPolicy::default().max_age_secs;
    assert!(!alice.engine.needs_rotation(ROOM, NOW + week).unwrap());
    assert!(alice.engine.needs_rotation(ROOM, NOW + 2 * week).unwrap());
    let c = alice.engine.mark_delivered(ROOM, &[carol.id()]).unwrap();
    alice.persist(c);
    assert!(alice.engine.needs_rotation(ROOM, NOW + week).unwrap(), "everyone has it: rotated by age again");
    assert!(alice.engine.undelivered(ROOM).unwrap().is_none());
    assert!(!alice.db.keys().any(|k| k.starts_with("out/")), "the kept distribution is gone");
}
