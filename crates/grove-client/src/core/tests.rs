//! The room core's flows without a server: an in-memory hub orders entries as grove's server
//! does (one commit per epoch, MLS commits validated by grove-proto's `HubGroup`, sequence
//! numbers 1, 2, 3, …), and each member's core applies pages of it and seals messages.

use grove_proto::identity::Identity;
use grove_proto::mls::engine::MlsEngine;
use grove_proto::mls::hub::{HubError, HubGroup};
use grove_proto::senderkeys::room::SkEngine;
use grove_proto::senderkeys::RotationPolicy;
use grove_wire::api::{Entry, EntryKind, RoomMode};
use grove_wire::content::Content;
use grove_wire::UserId;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{MlsRoom, RoomProtocol, Seal, SkRoom};
use crate::store::{Event, LocalRoom, RoomStatus};

const NOW: u64 = 1_800_000_000;

/// The server's ordering, in memory.
struct Hub {
    log: Vec<Entry>,
    mls: Option<HubGroup>,
    version: u64,
    /// A server that skips validation of MLS commits (the policy check with it). Sender-keys
    /// memberships this hub never checks beyond their version.
    lax: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Refused {
    WrongEpoch,
    Invalid,
}

impl Hub {
    fn append(&mut self, sender: UserId, kind: EntryKind, epoch: u64, body: Vec<u8>) -> Result<u64, Refused> {
        match (&mut self.mls, kind) {
            (Some(_), EntryKind::Commit) if self.lax => {}
            (Some(g), EntryKind::Commit) => {
                if epoch != g.epoch() {
                    return Err(Refused::WrongEpoch);
                }
                let checked = g.check_commit(&body, &sender).map_err(|_| Refused::Invalid)?;
                *g = checked.next;
            }
            (Some(g), EntryKind::Application) => {
                g.check_application(&body).map_err(|_| Refused::Invalid)?;
            }
            (None, EntryKind::Membership) => {
                if epoch != self.version + 1 {
                    return Err(Refused::WrongEpoch);
                }
                self.version = epoch;
            }
            (None, EntryKind::Application) if epoch != self.version => return Err(Refused::WrongEpoch),
            (None, EntryKind::Application) => {}
            _ => return Err(Refused::Invalid),
        }
        let seq = self.log.len() as u64 + 1;
        self.log.push(Entry { seq, kind, epoch, sender, ts: seq as i64, body });
        Ok(seq)
    }

    fn after(&self, cursor: u64) -> Vec<Entry> {
        self.log.iter().filter(|e| e.seq > cursor).cloned().collect()
    }
}

fn room(mode: RoomMode, group_id: Vec<u8>, cursor: u64) -> LocalRoom {
    LocalRoom {
        link: "http://hub.test/rooms/garden".into(),
        server: "http://hub.test".into(),
        name: "garden".into(),
        mode,
        group_id,
        cursor,
        status: RoomStatus::Active,
    }
}

fn engine(id: &Identity, seed: u64) -> MlsEngine {
    MlsEngine::with_rng(id.clone(), StdRng::seed_from_u64(seed)).with_clock(|| NOW)
}

/// Seals through the core and appends to the hub.
fn post(hub: &mut Hub, p: &mut dyn RoomProtocol, me: UserId, at: &LocalRoom, text: &str, view: u64) -> u64 {
    let Seal::Sealed { body, epoch, .. } = p.seal(at, &Content::text(text).encode(), view, NOW).unwrap() else {
        panic!("stale")
    };
    hub.append(me, EntryKind::Application, epoch, body).unwrap()
}

fn texts(applied: &super::Applied) -> Vec<String> {
    applied
        .batch
        .messages
        .iter()
        .filter_map(|m| match m.event() {
            Event::Content(Content::Text { text }) => Some(text),
            _ => None,
        })
        .collect()
}

#[test]
fn mls_alice_and_bob_talk_and_lose_a_commit_race_over_the_hub() {
    let (alice_id, bob_id) =
        (Identity::generate(&mut StdRng::seed_from_u64(1)), Identity::generate(&mut StdRng::seed_from_u64(2)));
    let (alice, bob) = (alice_id.user_id(), bob_id.user_id());
    let (mut a, mut b) = (engine(&alice_id, 11), engine(&bob_id, 12));
    let (g, public, _) = a.create_group().unwrap();
    let mut hub = Hub {
        log: Vec::new(),
        mls: Some(HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap()),
        version: 0,
        lax: false,
    };
    let (kps, _, _) = b.key_packages(1, false).unwrap();
    let (pending, _) = a.commit_add(&g, &kps).unwrap();
    let add = hub.append(alice, EntryKind::Commit, pending.epoch, pending.commit.clone()).unwrap();
    a.apply_pending(&g).unwrap();
    let tree = hub.mls.as_ref().unwrap().ratchet_tree().unwrap();
    b.join(&pending.welcome.unwrap(), &tree).unwrap();
    let gid = g.as_bytes().to_vec();

    // Alice says two things; Bob's core reads them; Alice's own core sees them as her own.
    let first =
        post(&mut hub, &mut MlsRoom { engine: &mut a }, alice, &room(RoomMode::Mls, gid.clone(), add), "hello", 0);
    post(&mut hub, &mut MlsRoom { engine: &mut a }, alice, &room(RoomMode::Mls, gid.clone(), add), "how are you", 0);
    let at_bob = room(RoomMode::Mls, gid.clone(), add);
    let got = MlsRoom { engine: &mut b }.apply(&at_bob, bob, hub.after(add), false).unwrap();
    assert_eq!(texts(&got), ["hello", "how are you"]);
    assert_eq!((got.cursor, got.status), (first + 1, RoomStatus::Active));
    assert!(got.own.is_empty());
    let mine =
        MlsRoom { engine: &mut a }.apply(&room(RoomMode::Mls, gid.clone(), add), alice, hub.after(add), false).unwrap();
    assert!(texts(&mine).is_empty());
    assert_eq!(mine.own.iter().map(|o| o.0).collect::<Vec<_>>(), [first, first + 1]);

    // Both commit an update in the same epoch: the hub takes Alice's, refuses Bob's; Bob drops
    // his, applies the winner through his core, and his next commit is taken.
    let cursor = first + 1;
    let epoch = a.epoch(&g).unwrap();
    let (pa, _) = a.commit_update(&g).unwrap();
    let (pb, _) = b.commit_update(&g).unwrap();
    let won = hub.append(alice, EntryKind::Commit, pa.epoch, pa.commit.clone()).unwrap();
    a.apply_pending(&g).unwrap();
    assert_eq!(hub.append(bob, EntryKind::Commit, pb.epoch, pb.commit.clone()), Err(Refused::WrongEpoch));
    b.discard_pending(&g).unwrap();
    let got = MlsRoom { engine: &mut b }
        .apply(&room(RoomMode::Mls, gid.clone(), cursor), bob, hub.after(cursor), false)
        .unwrap();
    assert_eq!(got.cursor, won);
    assert_eq!(b.epoch(&g).unwrap(), epoch + 1);
    let (pb, _) = b.commit_update(&g).unwrap();
    hub.append(bob, EntryKind::Commit, pb.epoch, pb.commit.clone()).unwrap();
    b.apply_pending(&g).unwrap();
    MlsRoom { engine: &mut a }.apply(&room(RoomMode::Mls, gid.clone(), won), alice, hub.after(won), false).unwrap();
    assert_eq!(a.epoch_authenticator(&g).unwrap(), b.epoch_authenticator(&g).unwrap());

    // A garbled entry is recorded as unreadable and does not wedge the room.
    let head = hub.log.len() as u64;
    hub.log.push(Entry {
        seq: head + 1,
        kind: EntryKind::Application,
        epoch: 0,
        sender: alice,
        ts: 0,
        body: b"junk".to_vec(),
    });
    post(
        &mut hub,
        &mut MlsRoom { engine: &mut a },
        alice,
        &room(RoomMode::Mls, gid.clone(), head + 1),
        "still here",
        0,
    );
    let got =
        MlsRoom { engine: &mut b }.apply(&room(RoomMode::Mls, gid.clone(), head), bob, hub.after(head), false).unwrap();
    assert!(matches!(got.batch.messages[0].event(), Event::Undecryptable(_)));
    assert_eq!(texts(&got), ["still here"]);
}

#[test]
fn sender_keys_alice_and_bob_talk_over_the_hub_and_a_missing_chain_asks_for_the_mailbox() {
    let (alice_id, bob_id) =
        (Identity::generate(&mut StdRng::seed_from_u64(3)), Identity::generate(&mut StdRng::seed_from_u64(4)));
    let (alice, bob) = (alice_id.user_id(), bob_id.user_id());
    let link = "http://hub.test/rooms/garden";
    let mut a = SkEngine::new(alice, RotationPolicy::default());
    let mut b = SkEngine::new(bob, RotationPolicy::default());
    let _ = a.create_room(link, "garden").unwrap();
    let mut hub = Hub { log: Vec::new(), mls: None, version: 0, lax: false };
    let m = a.next_membership(link, alice_id.signing_key(), &[bob], &[]).unwrap();
    let add = hub.append(alice, EntryKind::Membership, m.version, serde_json::to_vec(&m).unwrap()).unwrap();
    let _ = a.apply_membership(link, &m).unwrap();
    let _ = b.join_room(link, &alice, &m).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let (rotation, _) = a.rotate(link, &mut rng, NOW).unwrap();
    // (The driver sends the distributions over Olm, then marks the chain distributed.)
    let _ = a.mark_distributed(link).unwrap();
    let (mut ra, mut rb) = (SkRoom { engine: a }, SkRoom { engine: b });
    let at = room(RoomMode::SenderKeys, Vec::new(), add);

    // Alice's chain has not reached Bob yet: his core asks to read the mailbox first, and
    // stops before the entry, so it is read again afterwards.
    let first = post(&mut hub, &mut ra, alice, &at, "hello", 1);
    let got = rb.apply(&at, bob, hub.after(add), false).unwrap();
    assert!(got.follow_up.read_mailbox);
    assert_eq!(got.cursor, add);
    // The distribution arrives (the driver reads it from the mailbox); the page again.
    for (user, dist) in &rotation.distributions {
        assert_eq!(*user, bob);
        let _ = rb.engine.receive_distribution(&alice, dist).unwrap();
    }
    let got = rb.apply(&at, bob, hub.after(add), true).unwrap();
    assert_eq!(texts(&got), ["hello"]);
    assert_eq!(got.cursor, first);

    // A stale view is refused before anything is encrypted: the driver syncs and retries.
    assert!(matches!(ra.seal(&at, b"x", 0, NOW).unwrap(), Seal::Stale));
    // Alice's own entries come back to her core as her own, for her outbox.
    let mine = ra.apply(&at, alice, hub.after(add), false).unwrap();
    assert_eq!(mine.own.iter().map(|o| o.0).collect::<Vec<_>>(), [first]);

    // Bob is removed: his core says so and stops at that entry.
    let m2 = ra.engine.next_membership(link, alice_id.signing_key(), &[], &[bob]).unwrap();
    let removal = hub.append(alice, EntryKind::Membership, m2.version, serde_json::to_vec(&m2).unwrap()).unwrap();
    let got = rb.apply(&room(RoomMode::SenderKeys, Vec::new(), first), bob, hub.after(first), true).unwrap();
    assert_eq!((got.status, got.cursor), (RoomStatus::Removed, removal));
    // Alice applies her own removal of Bob: a member removed, so her chain must rotate.
    let got = ra.apply(&room(RoomMode::SenderKeys, Vec::new(), first), alice, hub.after(first), true).unwrap();
    assert!(got.follow_up.rotate);
    assert!(ra.needs_rotation(&at, NOW).unwrap());
}

fn undecryptable_reasons(applied: &super::Applied) -> Vec<String> {
    applied
        .batch
        .messages
        .iter()
        .filter_map(|m| match m.event() {
            Event::Undecryptable(why) => Some(why),
            _ => None,
        })
        .collect()
}

/// Mallory, a plain member, removes Bob through a server that skips the policy check: the real
/// hub would refuse her commit, and Alice's and Bob's clients refuse it too (it is recorded as
/// unreadable, nobody is removed, the room goes on).
#[test]
fn mls_members_refuse_a_removal_the_policy_forbids_even_if_the_server_let_it_through() {
    let ids: Vec<Identity> = (21..24).map(|n| Identity::generate(&mut StdRng::seed_from_u64(n))).collect();
    let (alice, bob, mallory) = (ids[0].user_id(), ids[1].user_id(), ids[2].user_id());
    let (mut a, mut b, mut m) = (engine(&ids[0], 31), engine(&ids[1], 32), engine(&ids[2], 33));
    let (g, public, _) = a.create_group().unwrap();
    let observed = HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap();
    let mut hub = Hub { log: Vec::new(), mls: Some(observed), version: 0, lax: false };
    let kps: Vec<Vec<u8>> = [&mut b, &mut m].into_iter().flat_map(|e| e.key_packages(1, false).unwrap().0).collect();
    let (pending, _) = a.commit_add(&g, &kps).unwrap();
    let add = hub.append(alice, EntryKind::Commit, pending.epoch, pending.commit.clone()).unwrap();
    a.apply_pending(&g).unwrap();
    let tree = hub.mls.as_ref().unwrap().ratchet_tree().unwrap();
    b.join(pending.welcome.as_ref().unwrap(), &tree).unwrap();
    m.join(pending.welcome.as_ref().unwrap(), &tree).unwrap();
    let gid = g.as_bytes().to_vec();

    let (bad, _) = m.commit_remove(&g, &[bob]).unwrap();
    let refused = hub.mls.as_ref().unwrap().check_commit(&bad.commit, &mallory).unwrap_err();
    assert!(matches!(refused, HubError::NotAllowed(_)), "the real hub refuses: {refused}");
    hub.lax = true;
    let at = hub.append(mallory, EntryKind::Commit, bad.epoch, bad.commit.clone()).unwrap();
    let epoch = a.epoch(&g).unwrap();
    for (engine, me) in [(&mut a, alice), (&mut b, bob)] {
        let got = MlsRoom { engine }.apply(&room(RoomMode::Mls, gid.clone(), add), me, hub.after(add), false).unwrap();
        assert_eq!((got.cursor, got.status), (at, RoomStatus::Active));
        let why = undecryptable_reasons(&got);
        assert!(why.len() == 1 && why[0].contains("not allowed"), "{why:?}");
    }
    assert_eq!(a.members(&g).unwrap().len(), 3, "Bob is still a member");
    assert_eq!((a.epoch(&g).unwrap(), b.epoch(&g).unwrap()), (epoch, epoch));
    // Alice and Bob still talk.
    let posted =
        post(&mut hub, &mut MlsRoom { engine: &mut a }, alice, &room(RoomMode::Mls, gid.clone(), at), "fine", 0);
    let got =
        MlsRoom { engine: &mut b }.apply(&room(RoomMode::Mls, gid.clone(), at), bob, hub.after(at), false).unwrap();
    assert_eq!((texts(&got), got.cursor), (vec!["fine".to_string()], posted));
}

/// The same in a sender-keys room: Mallory signs a membership without Bob; the in-memory hub
/// (which checks only versions) takes it; Alice and Bob refuse it and keep their view.
#[test]
fn sender_keys_members_refuse_a_removal_the_policy_forbids_even_if_the_server_let_it_through() {
    let ids: Vec<Identity> = (41..44).map(|n| Identity::generate(&mut StdRng::seed_from_u64(n))).collect();
    let (alice, bob, mallory) = (ids[0].user_id(), ids[1].user_id(), ids[2].user_id());
    let link = "http://hub.test/rooms/garden";
    let mut a = SkEngine::new(alice, RotationPolicy::default());
    let _ = a.create_room(link, "garden").unwrap();
    let mut hub = Hub { log: Vec::new(), mls: None, version: 0, lax: true };
    let m1 = a.next_membership(link, ids[0].signing_key(), &[bob, mallory], &[]).unwrap();
    let add = hub.append(alice, EntryKind::Membership, m1.version, serde_json::to_vec(&m1).unwrap()).unwrap();
    let _ = a.apply_membership(link, &m1).unwrap();
    let mut b = SkEngine::new(bob, RotationPolicy::default());
    let _ = b.join_room(link, &alice, &m1).unwrap();
    let mut m = SkEngine::new(mallory, RotationPolicy::default());
    let _ = m.join_room(link, &alice, &m1).unwrap();

    let bad = m.next_membership(link, ids[2].signing_key(), &[], &[bob]).unwrap();
    let at = hub.append(mallory, EntryKind::Membership, bad.version, serde_json::to_vec(&bad).unwrap()).unwrap();
    for (engine, me) in [(a, alice), (b, bob)] {
        let mut core = SkRoom { engine };
        let got = core.apply(&room(RoomMode::SenderKeys, Vec::new(), add), me, hub.after(add), true).unwrap();
        assert_eq!((got.cursor, got.status), (at, RoomStatus::Active));
        let why = undecryptable_reasons(&got);
        assert!(why.len() == 1 && why[0].contains("not allowed"), "{why:?}");
        let view = core.engine.view(link).unwrap();
        assert_eq!((view.version, view.members.len()), (1, 3), "Bob is still a member");
    }
}

/// What a hostile server (or a member posting garbage) can put in a page of the log.
#[derive(Debug, Clone)]
enum Hostile {
    /// Random bytes.
    Junk(Vec<u8>),
    /// A genuine entry of the room with one byte changed.
    Flipped { index: usize, xor: u8 },
    /// A genuine entry cut short.
    Truncated(usize),
    /// A genuine entry posted again.
    Replayed,
}

fn hostile() -> impl proptest::strategy::Strategy<Value = (Hostile, u8, u64)> {
    use proptest::prelude::*;
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Hostile::Junk),
        (any::<usize>(), 1..=255u8).prop_map(|(index, xor)| Hostile::Flipped { index, xor }),
        any::<usize>().prop_map(Hostile::Truncated),
        Just(Hostile::Replayed),
    ];
    // The entry's kind (0 application, 1 commit or membership) and epoch are the server's to
    // say, so they are hostile too.
    (body, 0..2u8, 0..4u64)
}

fn corrupt(h: &Hostile, genuine: &[u8]) -> Vec<u8> {
    match h {
        Hostile::Junk(b) => b.clone(),
        Hostile::Flipped { index, xor } => {
            let mut b = genuine.to_vec();
            let i = index % b.len().max(1);
            if let Some(x) = b.get_mut(i) {
                *x ^= xor;
            }
            b
        }
        Hostile::Truncated(n) => genuine[..n % genuine.len().max(1)].to_vec(),
        Hostile::Replayed => genuine.to_vec(),
    }
}

/// Appends the hostile entries to the hub's log as `sender`'s, each made from a genuine
/// application entry (kind 0) or a genuine handshake entry; answers the log's new head.
fn salt(
    hub: &mut Hub,
    entries: &[(Hostile, u8, u64)],
    sender: UserId,
    app: &[u8],
    handshake: (EntryKind, &[u8]),
) -> u64 {
    for (h, kind, epoch) in entries {
        let (kind, genuine) = if *kind == 0 { (EntryKind::Application, app) } else { handshake };
        let seq = hub.log.len() as u64 + 1;
        hub.log.push(Entry { seq, kind, epoch: *epoch, sender, ts: seq as i64, body: corrupt(h, genuine) });
    }
    hub.log.len() as u64
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
    ))]

    /// A page of Alice's MLS room with hostile entries before her next message: Bob's core
    /// applies the whole page without an error or a panic, records each hostile entry as
    /// unreadable (or drops a replay), reads Alice's message, and the room goes on.
    #[test]
    fn hostile_entries_never_wedge_an_mls_room(entries in proptest::collection::vec(hostile(), 1..6)) {
        let (alice_id, bob_id) =
            (Identity::generate(&mut StdRng::seed_from_u64(1)), Identity::generate(&mut StdRng::seed_from_u64(2)));
        let (alice, bob) = (alice_id.user_id(), bob_id.user_id());
        let (mut a, mut b) = (engine(&alice_id, 11), engine(&bob_id, 12));
        let (g, public, _) = a.create_group().unwrap();
        let mut hub =
            Hub { log: Vec::new(), mls: Some(HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap()), version: 0, lax: false };
        let (kps, _, _) = b.key_packages(1, false).unwrap();
        let (pending, _) = a.commit_add(&g, &kps).unwrap();
        let genuine_commit = pending.commit.clone();
        let add = hub.append(alice, EntryKind::Commit, pending.epoch, pending.commit.clone()).unwrap();
        a.apply_pending(&g).unwrap();
        let tree = hub.mls.as_ref().unwrap().ratchet_tree().unwrap();
        b.join(&pending.welcome.unwrap(), &tree).unwrap();
        let gid = g.as_bytes().to_vec();
        let at = room(RoomMode::Mls, gid.clone(), add);
        let first = post(&mut hub, &mut MlsRoom { engine: &mut a }, alice, &at, "before", 0);
        let genuine_app = hub.log[first as usize - 1].body.clone();
        let got = MlsRoom { engine: &mut b }.apply(&at, bob, hub.after(add), false).unwrap();
        proptest::prop_assert_eq!(texts(&got), ["before"]);

        // The hostile server slips its entries in, then Alice's next message.
        let head = salt(&mut hub, &entries, alice, &genuine_app, (EntryKind::Commit, &genuine_commit));
        post(&mut hub, &mut MlsRoom { engine: &mut a }, alice, &room(RoomMode::Mls, gid.clone(), head), "after", 0);
        let got = MlsRoom { engine: &mut b }.apply(&room(RoomMode::Mls, gid.clone(), first), bob, hub.after(first), false);
        let got = got.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("the page wedged the room: {e}")))?;
        proptest::prop_assert_eq!(got.status, RoomStatus::Active);
        proptest::prop_assert_eq!(got.cursor, head + 1);
        proptest::prop_assert_eq!(texts(&got), ["after"]);
        // Alice and Bob still share the epoch: a commit of Bob's is taken and Alice follows.
        let (pb, _) = b.commit_update(&g).unwrap();
        let won = hub.append(bob, EntryKind::Commit, pb.epoch, pb.commit.clone()).unwrap();
        b.apply_pending(&g).unwrap();
        MlsRoom { engine: &mut a }.apply(&room(RoomMode::Mls, gid.clone(), head + 1), alice, hub.after(head + 1), false).unwrap();
        proptest::prop_assert_eq!(a.epoch_authenticator(&g).unwrap(), b.epoch_authenticator(&g).unwrap());
        proptest::prop_assert_eq!(won, head + 2);
    }

    /// The same in a sender-keys room: hostile application and membership entries before
    /// Alice's next message never stop Bob's core, and the message is read.
    #[test]
    fn hostile_entries_never_wedge_a_sender_keys_room(entries in proptest::collection::vec(hostile(), 1..6)) {
        let (alice_id, bob_id) =
            (Identity::generate(&mut StdRng::seed_from_u64(3)), Identity::generate(&mut StdRng::seed_from_u64(4)));
        let (alice, bob) = (alice_id.user_id(), bob_id.user_id());
        let link = "http://hub.test/rooms/garden";
        let mut a = SkEngine::new(alice, RotationPolicy::default());
        let mut b = SkEngine::new(bob, RotationPolicy::default());
        let _ = a.create_room(link, "garden").unwrap();
        let mut hub = Hub { log: Vec::new(), mls: None, version: 0, lax: false };
        let m = a.next_membership(link, alice_id.signing_key(), &[bob], &[]).unwrap();
        let genuine_membership = serde_json::to_vec(&m).unwrap();
        let add = hub.append(alice, EntryKind::Membership, m.version, genuine_membership.clone()).unwrap();
        let _ = a.apply_membership(link, &m).unwrap();
        let _ = b.join_room(link, &alice, &m).unwrap();
        let (rotation, _) = a.rotate(link, &mut StdRng::seed_from_u64(5), NOW).unwrap();
        let _ = a.mark_distributed(link).unwrap();
        let (mut ra, mut rb) = (SkRoom { engine: a }, SkRoom { engine: b });
        for (_, dist) in &rotation.distributions {
            let _ = rb.engine.receive_distribution(&alice, dist).unwrap();
        }
        let at = room(RoomMode::SenderKeys, Vec::new(), add);
        let first = post(&mut hub, &mut ra, alice, &at, "before", 1);
        let genuine_app = hub.log[first as usize - 1].body.clone();
        let got = rb.apply(&at, bob, hub.after(add), true).unwrap();
        proptest::prop_assert_eq!(texts(&got), ["before"]);

        let head = salt(&mut hub, &entries, alice, &genuine_app, (EntryKind::Membership, &genuine_membership));
        post(&mut hub, &mut ra, alice, &room(RoomMode::SenderKeys, Vec::new(), head), "after", 1);
        let got = rb.apply(&room(RoomMode::SenderKeys, Vec::new(), first), bob, hub.after(first), true);
        let got = got.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("the page wedged the room: {e}")))?;
        proptest::prop_assert_eq!(got.status, RoomStatus::Active);
        proptest::prop_assert_eq!(got.cursor, head + 1);
        proptest::prop_assert_eq!(texts(&got), ["after"]);
    }
}
