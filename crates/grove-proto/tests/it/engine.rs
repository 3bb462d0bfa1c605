//! Client engine scenarios: members with their own "database", a room served by the hub.

use std::collections::BTreeMap;

use grove_proto::identity::{Identity, UserId};
use grove_proto::mls::engine::{
    Changes, EngineError, GroupId, Incoming, JournalRow, MlsEngine, SnapshotWrite, StoredEpoch, StoredGroup,
    StoredKeyPackage, StoredState,
};
use grove_proto::mls::hub::{HubError, HubGroup};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub(crate) fn user(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

/// A seeded RNG. Every engine of these tests gets its own seed: reusing one would replay
/// "fresh" secrets.
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// What a client's database holds: four tables, written only by applying [`Changes`].
#[derive(Default, Clone)]
pub(crate) struct Db {
    pub(crate) groups: BTreeMap<GroupId, Vec<u8>>,
    pub(crate) epochs: BTreeMap<(GroupId, u64), Vec<u8>>,
    pub(crate) journal: BTreeMap<(GroupId, u64), Vec<u8>>,
    pub(crate) key_packages: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Db {
    pub(crate) fn apply(&mut self, changes: &Changes) {
        for g in &changes.groups {
            match &g.snapshot {
                SnapshotWrite::Unchanged => {}
                SnapshotWrite::Checkpoint(s) => {
                    self.groups.insert(g.group_id.clone(), s.to_vec());
                    self.journal.retain(|(id, _), _| id != &g.group_id);
                }
                SnapshotWrite::Delete => {
                    self.groups.remove(&g.group_id);
                    self.epochs.retain(|(id, _), _| id != &g.group_id);
                    self.journal.retain(|(id, _), _| id != &g.group_id);
                }
            }
            for r in &g.journal {
                let old = self.journal.insert((g.group_id.clone(), r.seq), r.entry.to_vec());
                assert!(old.is_none(), "journal row {} written twice", r.seq);
            }
            for e in &g.epochs {
                let key = (g.group_id.clone(), e.epoch);
                match &e.data {
                    Some(d) => {
                        self.epochs.insert(key, d.to_vec());
                    }
                    None => {
                        self.epochs.remove(&key);
                    }
                }
            }
        }
        for k in &changes.key_packages {
            match &k.data {
                Some(d) => {
                    self.key_packages.insert(k.id.clone(), d.to_vec());
                }
                None => {
                    self.key_packages.remove(&k.id);
                }
            }
        }
    }

    pub(crate) fn state(&self) -> StoredState {
        StoredState {
            groups: self
                .groups
                .iter()
                .map(|(id, snapshot)| StoredGroup {
                    group_id: id.clone(),
                    snapshot: snapshot.clone().into(),
                    epochs: self
                        .epochs
                        .iter()
                        .filter(|((g, _), _)| g == id)
                        .map(|((_, epoch), data)| StoredEpoch { epoch: *epoch, data: data.clone().into() })
                        .collect(),
                    journal: self
                        .journal
                        .iter()
                        .filter(|((g, _), _)| g == id)
                        .map(|((_, seq), entry)| JournalRow { seq: *seq, entry: entry.clone().into() })
                        .collect(),
                })
                .collect(),
            key_packages: self
                .key_packages
                .iter()
                .map(|(id, data)| StoredKeyPackage { id: id.clone(), data: data.clone().into() })
                .collect(),
        }
    }
}

/// The room's server: the hub's view of the group and the ordered log.
pub(crate) struct Room {
    pub(crate) id: GroupId,
    pub(crate) hub: HubGroup,
    pub(crate) log: Vec<Vec<u8>>,
}

impl Room {
    pub(crate) fn post_commit(&mut self, from: UserId, commit: &[u8]) -> Result<(), HubError> {
        let checked = self.hub.check_commit(commit, &from)?;
        self.hub = checked.next;
        self.log.push(commit.to_vec());
        Ok(())
    }

    fn post_proposal(&mut self, from: UserId, proposal: &[u8]) {
        self.hub = self.hub.check_proposal(proposal, &from).unwrap().next;
        self.log.push(proposal.to_vec());
    }

    pub(crate) fn post_application(&mut self, message: &[u8]) {
        self.hub.check_application(message).unwrap();
        self.log.push(message.to_vec());
    }
}

/// A client: identity, engine, database, and its cursor in the room's log.
pub(crate) struct Member {
    pub(crate) id: Identity,
    pub(crate) engine: MlsEngine,
    pub(crate) db: Db,
    pub(crate) cursor: usize,
    /// The RNG seed of the current engine: the member number, then 1000 more per restart.
    pub(crate) seed: u64,
}

impl Member {
    pub(crate) fn new(n: u8) -> Member {
        let id = user(n);
        let seed = u64::from(n);
        Member { engine: MlsEngine::with_rng(id.clone(), rng(seed)), id, db: Db::default(), cursor: 0, seed }
    }

    pub(crate) fn uid(&self) -> UserId {
        self.id.user_id()
    }

    /// Writes the changes, then checks the database matches the engine's state exactly.
    pub(crate) fn persist(&mut self, changes: Changes) {
        self.db.apply(&changes);
        assert_eq!(self.db.state().sorted(), self.engine.export_state().unwrap(), "db out of sync");
    }

    /// A restart: a new engine from the database.
    pub(crate) fn restart(&mut self) {
        self.seed += 1000;
        self.engine = MlsEngine::load_with_rng(self.id.clone(), self.db.state(), rng(self.seed)).unwrap();
    }

    pub(crate) fn key_package(&mut self) -> Vec<u8> {
        let (mut kps, last, changes) = self.engine.key_packages(1, false).unwrap();
        assert!(last.is_none());
        assert_eq!(changes.key_packages.len(), 1);
        self.persist(changes);
        kps.remove(0)
    }

    fn join(&mut self, room: &Room, welcome: &[u8]) {
        let (gid, info, changes) = self.engine.join(welcome, &room.hub.ratchet_tree().unwrap()).unwrap();
        assert_eq!(gid, room.id);
        assert_eq!(info.epoch, room.hub.epoch());
        assert_eq!(info.members, room.hub.members());
        self.persist(changes);
        // A joiner reads the log from after the commit that added it.
        self.cursor = room.log.len();
    }

    pub(crate) fn send(&mut self, room: &mut Room, text: &str) {
        let (msg, epoch, changes) = self.engine.encrypt(&room.id, text.as_bytes()).unwrap();
        assert_eq!(epoch, room.hub.epoch());
        self.persist(changes);
        room.post_application(&msg);
    }

    /// Processes the log from the cursor, persisting each result with the cursor.
    pub(crate) fn sync(&mut self, room: &Room) -> Vec<Incoming> {
        let mut out = Vec::new();
        while self.cursor < room.log.len() {
            let (incoming, changes) = self.engine.process(&room.id, &room.log[self.cursor]).unwrap();
            self.persist(changes);
            self.cursor += 1;
            out.push(incoming);
        }
        out
    }

    /// Makes a change as a pending commit, posts it, applies it.
    pub(crate) fn commit(
        &mut self,
        room: &mut Room,
        make: impl FnOnce(
            &mut MlsEngine,
            &GroupId,
        ) -> Result<(grove_proto::mls::engine::PendingCommit, Changes), EngineError>,
    ) -> Option<Vec<u8>> {
        let (pending, changes) = make(&mut self.engine, &room.id).unwrap();
        assert_eq!(pending.epoch, room.hub.epoch());
        self.persist(changes);
        room.post_commit(self.uid(), &pending.commit).unwrap();
        let (applied, changes) = self.engine.apply_pending(&room.id).unwrap();
        assert_eq!(applied.epoch, room.hub.epoch());
        self.persist(changes);
        pending.welcome
    }

    pub(crate) fn epoch_authenticator(&self, room: &Room) -> Vec<u8> {
        self.engine.epoch_authenticator(&room.id).unwrap()
    }
}

pub(crate) fn texts_from(incoming: &[Incoming]) -> Vec<(UserId, String)> {
    incoming
        .iter()
        .filter_map(|i| match i {
            Incoming::Application { sender, plaintext } => {
                Some((*sender, String::from_utf8(plaintext.clone()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn create_room(creator: &mut Member) -> Room {
    let (id, public, changes) = creator.engine.create_group().unwrap();
    creator.persist(changes);
    assert_eq!(id.to_string().len(), 64);
    let hub = HubGroup::observe(&public.group_info, &public.ratchet_tree).unwrap();
    assert_eq!(hub.group_id(), id.as_bytes());
    assert_eq!(hub.members(), vec![creator.uid()]);
    Room { id, hub, log: Vec::new() }
}

/// Alice creates a room and adds Bob and Carol in one commit; both join with the hub's tree.
pub(crate) fn three() -> (Room, Member, Member, Member) {
    let mut alice = Member::new(1);
    let mut bob = Member::new(2);
    let mut carol = Member::new(3);
    let mut room = create_room(&mut alice);

    let kps = vec![bob.key_package(), carol.key_package()];
    let welcome = alice.commit(&mut room, |e, g| e.commit_add(g, &kps)).unwrap();
    assert_eq!(room.hub.members(), vec![alice.uid(), bob.uid(), carol.uid()]);
    bob.join(&room, &welcome);
    carol.join(&room, &welcome);
    // Alice's own commit comes back from the log.
    assert_eq!(alice.sync(&room), vec![Incoming::Own]);
    (room, alice, bob, carol)
}

#[test]
fn three_members_exchange_messages() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    for m in [&alice, &bob, &carol] {
        assert_eq!(m.engine.epoch(&room.id).unwrap(), 1);
        assert_eq!(m.engine.members(&room.id).unwrap(), vec![alice.uid(), bob.uid(), carol.uid()]);
        assert_eq!(m.engine.group_ids(), vec![room.id.clone()]);
    }

    alice.send(&mut room, "hello from alice");
    bob.send(&mut room, "hello from bob");
    carol.send(&mut room, "hello from carol");
    alice.send(&mut room, "alice again");

    let all = [
        (alice.uid(), "hello from alice"),
        (bob.uid(), "hello from bob"),
        (carol.uid(), "hello from carol"),
        (alice.uid(), "alice again"),
    ];
    for m in [&mut alice, &mut bob, &mut carol] {
        let incoming = m.sync(&room);
        let expected: Vec<(UserId, String)> =
            all.iter().filter(|(from, _)| *from != m.uid()).map(|(from, t)| (*from, t.to_string())).collect();
        // Each message of another member exactly once, in log order; one's own are `Own`.
        assert_eq!(texts_from(&incoming), expected);
        let own = incoming.iter().filter(|i| **i == Incoming::Own).count();
        assert_eq!(own + expected.len(), all.len());
    }

    let auth = alice.epoch_authenticator(&room);
    assert_eq!(auth.len(), 32);
    assert_eq!(bob.epoch_authenticator(&room), auth);
    assert_eq!(carol.epoch_authenticator(&room), auth);

    // Replaying a processed application message fails (its key is gone) and changes nothing.
    let before = bob.engine.export_state().unwrap();
    let replay = room.log[1].clone();
    assert!(matches!(bob.engine.process(&room.id, &replay), Err(EngineError::Rejected(_))));
    assert_eq!(bob.engine.export_state().unwrap(), before);
}

#[test]
fn join_refuses_a_wrong_tree_and_a_used_key_package() {
    let mut alice = Member::new(1);
    let mut bob = Member::new(2);
    let mut room = create_room(&mut alice);
    let tree_at_0 = room.hub.ratchet_tree().unwrap();

    let kp = bob.key_package();
    let kp_id = bob.db.key_packages.keys().next().unwrap().clone();
    let welcome = alice.commit(&mut room, |e, g| e.commit_add(g, std::slice::from_ref(&kp))).unwrap();

    let before = bob.engine.export_state().unwrap();
    // The tree before the add (Alice alone) does not match the Welcome's GroupInfo.
    let err = bob.engine.join(&welcome, &tree_at_0).unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)), "{err:?}");
    // Another group's tree neither.
    let mut dave = Member::new(4);
    let other = create_room(&mut dave);
    let err = bob.engine.join(&welcome, &other.hub.ratchet_tree().unwrap()).unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)), "{err:?}");
    // Garbage.
    let tree = room.hub.ratchet_tree().unwrap();
    assert!(matches!(bob.engine.join(&welcome, &tree[..tree.len() - 1]), Err(EngineError::Malformed(_))));
    assert!(matches!(bob.engine.join(&welcome[1..], &tree), Err(EngineError::Malformed(_))));
    assert!(matches!(bob.engine.join(&kp, &tree), Err(EngineError::Malformed(_))));
    // Nothing changed: the KeyPackage's secrets are still there.
    assert_eq!(bob.engine.export_state().unwrap(), before);

    // The right tree works, and the one-time KeyPackage's secrets are deleted.
    let (_, _, changes) = bob.engine.join(&welcome, &tree).unwrap();
    assert!(changes.key_packages.iter().any(|k| k.id == kp_id && k.data.is_none()), "{changes:?}");
    bob.persist(changes);
    assert!(bob.db.key_packages.is_empty());

    // The same Welcome again: its one-time KeyPackage is gone.
    assert_eq!(bob.engine.join(&welcome, &tree).unwrap_err(), EngineError::NoMatchingKeyPackage);
}

#[test]
fn removed_member_cannot_read_later_messages() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    alice.send(&mut room, "before");
    for m in [&mut bob, &mut carol] {
        m.sync(&room);
    }
    let carol_before = carol.db.state();

    alice.commit(&mut room, |e, g| e.commit_remove(g, &[user(3).user_id()]));
    assert_eq!(room.hub.members(), vec![alice.uid(), bob.uid()]);
    alice.send(&mut room, "after");
    let secret = room.log.last().unwrap().clone();

    let incoming = bob.sync(&room);
    assert!(
        matches!(&incoming[0], Incoming::Commit { removed, removed_me: false, .. } if removed == &vec![carol.uid()])
    );
    assert_eq!(texts_from(&incoming), vec![(alice.uid(), "after".to_string())]);

    // Carol processes her removal: the group's rows are deleted.
    let (incoming, changes) = carol.engine.process(&room.id, &room.log[carol.cursor]).unwrap();
    carol.cursor += 1;
    assert!(matches!(incoming, Incoming::Commit { removed_me: true, epoch: 2, .. }), "{incoming:?}");
    assert!(changes.groups.iter().any(|g| g.group_id == room.id && g.snapshot == SnapshotWrite::Delete));
    carol.persist(changes);
    assert!(carol.db.groups.is_empty() && carol.db.epochs.is_empty() && carol.db.journal.is_empty());
    assert_eq!(carol.engine.group_ids(), Vec::<GroupId>::new());
    // Her engine cannot read, send or commit any more.
    let gone = EngineError::NotAMember(room.id.clone());
    assert_eq!(carol.engine.process(&room.id, &secret).unwrap_err(), gone);
    assert_eq!(carol.engine.encrypt(&room.id, b"x").unwrap_err(), gone);
    assert_eq!(carol.engine.commit_update(&room.id).unwrap_err(), gone);
    // After a restart the group is simply unknown.
    carol.restart();
    assert_eq!(carol.engine.process(&room.id, &secret).unwrap_err(), EngineError::NoSuchGroup(room.id.clone()));

    // A copy of Carol's state from before the removal cannot read the later message either:
    let mut old = MlsEngine::load_with_rng(user(3), carol_before.clone(), rng(103)).unwrap();
    let err = old.process(&room.id, &secret).unwrap_err();
    assert!(matches!(err, EngineError::WrongEpoch { message_epoch: 2, current_epoch: 1 }), "{err:?}");
    // not even with the epoch in the header rewritten to one it has keys for,
    let mut relabelled = secret.clone();
    set_private_message_epoch(&mut relabelled, 1);
    let err = old.process(&room.id, &relabelled).unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)), "{err:?}");
    // and processing the removal only removes it.
    let (incoming, _) = old.process(&room.id, &room.log[room.log.len() - 2]).unwrap();
    assert!(matches!(incoming, Incoming::Commit { removed_me: true, .. }));
    assert!(matches!(old.process(&room.id, &secret), Err(EngineError::NotAMember(_))));
}

/// Rewrites the epoch in a PrivateMessage header: version (2) | wire format (2) | group id
/// (1 + 32) | epoch (8).
pub(crate) fn set_private_message_epoch(message: &mut [u8], epoch: u64) {
    assert_eq!(&message[2..4], &2u16.to_be_bytes(), "PrivateMessage");
    assert_eq!(message[4], 32, "group id length");
    message[37..45].copy_from_slice(&epoch.to_be_bytes());
}

#[test]
fn self_update_heals_a_compromise() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    let bob_stolen = bob.db.state();

    bob.commit(&mut room, |e, g| e.commit_update(g));
    alice.sync(&room);
    carol.sync(&room);
    alice.send(&mut room, "after bob's update");
    let secret = room.log.last().unwrap().clone();
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "after bob's update".to_string())]);

    // The stolen copy cannot follow the update (it lacks the new path secrets)...
    let mut thief = MlsEngine::load_with_rng(user(2), bob_stolen, rng(102)).unwrap();
    let update = room.log[room.log.len() - 2].clone();
    assert_eq!(thief.process(&room.id, &update).unwrap_err(), EngineError::OwnCommitLost);
    // ...nor read what was sent after it.
    assert!(matches!(thief.process(&room.id, &secret), Err(EngineError::WrongEpoch { .. })));
    let mut relabelled = secret;
    set_private_message_epoch(&mut relabelled, 1);
    assert!(matches!(thief.process(&room.id, &relabelled), Err(EngineError::Rejected(_))));

    let auth = alice.epoch_authenticator(&room);
    assert_eq!(bob.epoch_authenticator(&room), auth);
    assert_eq!(carol.epoch_authenticator(&room), auth);
}

#[test]
fn concurrent_commits_one_wins_the_other_retries() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    let (from_alice, changes) = alice.engine.commit_update(&room.id).unwrap();
    alice.persist(changes);
    let (from_bob, changes) = bob.engine.commit_update(&room.id).unwrap();
    bob.persist(changes);
    assert_eq!(alice.engine.commit_update(&room.id).unwrap_err(), EngineError::PendingCommitExists);
    assert!(alice.engine.has_pending_commit(&room.id).unwrap());

    // The hub orders Alice's first; Bob's is for an epoch that is over.
    room.post_commit(alice.uid(), &from_alice.commit).unwrap();
    assert!(matches!(room.post_commit(bob.uid(), &from_bob.commit), Err(HubError::WrongEpoch { .. })));
    let (applied, changes) = alice.engine.apply_pending(&room.id).unwrap();
    assert_eq!(applied.epoch, 2);
    alice.persist(changes);

    // Bob discards his, follows Alice's, and makes his change again.
    let changes = bob.engine.discard_pending(&room.id).unwrap();
    bob.persist(changes);
    assert!(!bob.engine.has_pending_commit(&room.id).unwrap());
    assert!(matches!(bob.sync(&room)[..], [Incoming::Commit { epoch: 2, .. }]));
    bob.commit(&mut room, |e, g| e.commit_update(g));

    let incoming = alice.sync(&room);
    assert_eq!(incoming[0], Incoming::Own);
    assert!(matches!(&incoming[1], Incoming::Commit { epoch: 3, committer, .. } if *committer == bob.uid()));
    assert_eq!(carol.sync(&room).len(), 2);
    assert_eq!(bob.sync(&room), vec![Incoming::Own]);

    let auth = alice.epoch_authenticator(&room);
    assert_eq!(bob.epoch_authenticator(&room), auth);
    assert_eq!(carol.epoch_authenticator(&room), auth);
    assert_eq!(room.hub.epoch(), 3);
}

#[test]
fn commit_with_unknown_outcome_is_settled_by_the_log() {
    let (mut room, mut alice, mut bob, mut carol) = three();

    // Alice's commit is accepted but she never hears back, and restarts: the pending commit is
    // in her database, and the log echo applies it.
    let (pending, changes) = alice.engine.commit_update(&room.id).unwrap();
    alice.persist(changes);
    room.post_commit(alice.uid(), &pending.commit).unwrap();
    alice.restart();
    assert!(alice.engine.has_pending_commit(&room.id).unwrap());
    assert!(matches!(alice.sync(&room)[..], [Incoming::Commit { epoch: 2, .. }]));
    assert!(!alice.engine.has_pending_commit(&room.id).unwrap());

    // Bob's commit loses the race but he never hears back: processing the winner drops it.
    let (_lost, changes) = bob.engine.commit_update(&room.id).unwrap();
    bob.persist(changes);
    carol.sync(&room);
    carol.commit(&mut room, |e, g| e.commit_update(g));
    let incoming = bob.sync(&room);
    assert!(matches!(incoming[..], [Incoming::Commit { epoch: 2, .. }, Incoming::Commit { epoch: 3, .. }]));
    assert!(!bob.engine.has_pending_commit(&room.id).unwrap());
    alice.sync(&room);
    carol.sync(&room);

    let auth = alice.epoch_authenticator(&room);
    assert_eq!(bob.epoch_authenticator(&room), auth);
    assert_eq!(carol.epoch_authenticator(&room), auth);
}

#[test]
fn persistence_round_trip_mid_conversation() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    alice.send(&mut room, "one");
    bob.sync(&room);
    bob.send(&mut room, "two");

    // Everyone restarts from their database.
    for m in [&mut alice, &mut bob, &mut carol] {
        m.restart();
        assert_eq!(m.engine.epoch(&room.id).unwrap(), 1);
    }
    assert_eq!(texts_from(&carol.sync(&room)), vec![(alice.uid(), "one".into()), (bob.uid(), "two".into())]);
    assert_eq!(texts_from(&alice.sync(&room)), vec![(bob.uid(), "two".into())]);

    // A crash before the transaction: the changes are lost, the engine is rebuilt from the
    // database and the message is processed again from the old cursor.
    carol.send(&mut room, "three");
    let msg = room.log.last().unwrap().clone();
    let (first, _lost) = alice.engine.process(&room.id, &msg).unwrap();
    alice.restart();
    let (again, changes) = alice.engine.process(&room.id, &msg).unwrap();
    assert_eq!(first, again);
    alice.persist(changes);
    alice.cursor += 1;

    // Commits across restarts, with an application message from the previous epoch arriving
    // after the commit (decrypted with the retained prior-epoch record, also after a restart).
    bob.sync(&room);
    carol.sync(&room);
    bob.send(&mut room, "late");
    let late = room.log.len() - 1;
    alice.commit(&mut room, |e, g| e.commit_update(g));
    room.log.swap(late, late + 1);
    carol.restart();
    let incoming = carol.sync(&room);
    assert!(matches!(incoming[0], Incoming::Commit { epoch: 2, .. }));
    assert_eq!(texts_from(&incoming), vec![(bob.uid(), "late".to_string())]);

    // Several commits: prior epochs are kept up to the retention limit and deleted after.
    for _ in 0..5 {
        carol.commit(&mut room, |e, g| e.commit_update(g));
        for m in [&mut alice, &mut bob] {
            m.sync(&room);
        }
    }
    for m in [&mut alice, &mut bob, &mut carol] {
        // (Epoch records are written with the snapshot: Alice and Bob journaled the commits.)
        let changes = m.engine.checkpoint(&room.id).unwrap();
        m.persist(changes);
        let epochs = m.db.epochs.len();
        assert_eq!(epochs, grove_proto::mls::engine::EPOCH_RETENTION, "{epochs} epoch records");
    }
    for m in [&mut alice, &mut bob, &mut carol] {
        m.restart();
    }
    alice.send(&mut room, "still here");
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "still here".into())]);
    assert_eq!(texts_from(&carol.sync(&room)), vec![(alice.uid(), "still here".into())]);
    let auth = alice.epoch_authenticator(&room);
    assert_eq!(bob.epoch_authenticator(&room), auth);
    assert_eq!(carol.epoch_authenticator(&room), auth);
}

#[test]
fn changes_merge_like_sequential_writes() {
    let (mut room, mut alice, mut bob, _carol) = three();
    let mut batch = Changes::default();
    let mut sequential = bob.db.clone();
    let mut in_memory = bob.db.state();
    alice.send(&mut room, "a");
    alice.commit(&mut room, |e, g| e.commit_update(g));
    alice.send(&mut room, "b");
    while bob.cursor < room.log.len() {
        let (_, changes) = bob.engine.process(&room.id, &room.log[bob.cursor]).unwrap();
        bob.cursor += 1;
        sequential.apply(&changes);
        in_memory.apply(&changes);
        batch.merge(changes);
    }
    let mut batched = bob.db.clone();
    batched.apply(&batch);
    assert_eq!(batched.state().sorted(), sequential.state().sorted());
    assert_eq!(in_memory.sorted(), sequential.state().sorted());
    assert_eq!(sequential.state().sorted(), bob.engine.export_state().unwrap());
}

#[test]
fn garbled_forged_and_foreign_messages_change_nothing() {
    let (mut room, mut alice, mut bob, _carol) = three();
    alice.send(&mut room, "genuine");
    let good = room.log.last().unwrap().clone();
    let before = bob.engine.export_state().unwrap();

    assert!(matches!(bob.engine.process(&room.id, b"garbage"), Err(EngineError::Malformed(_))));
    assert!(matches!(bob.engine.process(&room.id, &good[..good.len() - 1]), Err(EngineError::Malformed(_))));
    // Every single flipped byte is refused.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert!(bob.engine.process(&room.id, &bad).is_err(), "flipping byte {i} went unnoticed");
    }
    // A message of another group.
    let mut dave = Member::new(4);
    let mut other = create_room(&mut dave);
    dave.send(&mut other, "elsewhere");
    assert_eq!(bob.engine.process(&room.id, other.log.last().unwrap()).unwrap_err(), EngineError::WrongGroup);
    assert_eq!(bob.engine.process(&other.id, &good).unwrap_err(), EngineError::NoSuchGroup(other.id.clone()));
    // A Welcome or KeyPackage is not a log message.
    let kp = Member::new(5).key_package();
    assert!(matches!(bob.engine.process(&room.id, &kp), Err(EngineError::Malformed(_))));

    assert_eq!(bob.engine.export_state().unwrap(), before);
    let (incoming, changes) = bob.engine.process(&room.id, &good).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: alice.uid(), plaintext: b"genuine".to_vec() });
    bob.persist(changes);
    bob.cursor = room.log.len();

    // A commit the hub cannot fully check: a corrupted confirmation tag (the hub accepts it,
    // members refuse it, and mls-rs has worked on the group by then), then garbage in the
    // signature.
    let (pending, changes) = alice.engine.commit_update(&room.id).unwrap();
    alice.persist(changes);
    let good_commit = pending.commit.clone();
    let before = bob.engine.export_state().unwrap();
    let mut bad_tag = good_commit.clone();
    let i = bad_tag.len() - 34;
    bad_tag[i] ^= 0x01;
    assert!(room.hub.check_commit(&bad_tag, &alice.uid()).is_ok());
    assert!(matches!(bob.engine.process(&room.id, &bad_tag), Err(EngineError::Rejected(_))));
    let mut bad_sig = good_commit.clone();
    let i = bad_sig.len() - 66 - 10;
    bad_sig[i] ^= 0x01;
    assert!(matches!(bob.engine.process(&room.id, &bad_sig), Err(EngineError::Rejected(_))));
    assert_eq!(bob.engine.export_state().unwrap(), before);

    // The genuine commit and a following message still work.
    room.post_commit(alice.uid(), &good_commit).unwrap();
    let (_, changes) = alice.engine.apply_pending(&room.id).unwrap();
    alice.persist(changes);
    alice.send(&mut room, "after the commit");
    let incoming = bob.sync(&room);
    assert_eq!(texts_from(&incoming), vec![(alice.uid(), "after the commit".to_string())]);
    // A commit for an epoch that is over.
    assert!(matches!(bob.engine.process(&room.id, &good_commit), Err(EngineError::WrongEpoch { .. })));
}

#[test]
fn leave_by_proposal() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    let (proposal, changes) = bob.engine.propose_leave(&room.id).unwrap();
    bob.persist(changes);
    room.post_proposal(bob.uid(), &proposal);
    // Bob is still a member until someone commits, but may not send, nor commit (his commit
    // would drop his own proposal).
    assert_eq!(bob.engine.encrypt(&room.id, b"x").unwrap_err(), EngineError::CommitRequired);
    assert_eq!(bob.engine.commit_pending_proposals(&room.id).unwrap_err(), EngineError::LeaveProposed);
    assert_eq!(bob.engine.commit_update(&room.id).unwrap_err(), EngineError::LeaveProposed);

    let incoming = alice.sync(&room);
    assert_eq!(incoming, vec![Incoming::Proposal { sender: bob.uid(), removes: vec![bob.uid()] }]);
    assert_eq!(alice.engine.encrypt(&room.id, b"x").unwrap_err(), EngineError::CommitRequired);
    let (_, changes) = alice.engine.commit_pending_proposals(&room.id).unwrap();
    alice.persist(changes);
    // (A pending commit was made; discard it and redo it through the helper.)
    let changes = alice.engine.discard_pending(&room.id).unwrap();
    alice.persist(changes);
    alice.commit(&mut room, |e, g| e.commit_pending_proposals(g));
    assert_eq!(room.hub.members(), vec![alice.uid(), carol.uid()]);
    assert_eq!(alice.engine.commit_pending_proposals(&room.id).unwrap_err(), EngineError::NothingToCommit);

    let incoming = bob.sync(&room);
    assert_eq!(incoming[0], Incoming::Own);
    assert!(matches!(&incoming[1], Incoming::Commit { removed_me: true, removed, .. } if removed == &vec![bob.uid()]));
    assert!(bob.db.groups.is_empty());

    let incoming = carol.sync(&room);
    assert!(matches!(incoming[0], Incoming::Proposal { .. }));
    assert!(matches!(&incoming[1], Incoming::Commit { removed_me: false, removed, .. } if removed == &vec![bob.uid()]));
    alice.send(&mut room, "bye bob");
    assert_eq!(texts_from(&carol.sync(&room)), vec![(alice.uid(), "bye bob".into())]);
    assert_eq!(alice.epoch_authenticator(&room), carol.epoch_authenticator(&room));
}

#[test]
fn last_resort_key_package_joins_several_groups() {
    let mut bob = Member::new(2);
    let (one_time, last, changes) = bob.engine.key_packages(2, true).unwrap();
    assert_eq!(one_time.len(), 2);
    assert_eq!(changes.key_packages.len(), 3);
    bob.persist(changes);
    let last = last.unwrap();

    let mut alice = Member::new(1);
    let mut dave = Member::new(4);
    let mut room_a = create_room(&mut alice);
    let mut room_d = create_room(&mut dave);
    let welcome_a = alice.commit(&mut room_a, |e, g| e.commit_add(g, std::slice::from_ref(&last))).unwrap();
    let welcome_d = dave.commit(&mut room_d, |e, g| e.commit_add(g, std::slice::from_ref(&last))).unwrap();

    for (room, welcome) in [(&room_a, &welcome_a), (&room_d, &welcome_d)] {
        let tree = room.hub.ratchet_tree().unwrap();
        let (gid, info, changes) = bob.engine.join(welcome, &tree).unwrap();
        assert_eq!(gid, room.id);
        assert_eq!(info.members.len(), 2);
        // The last-resort KeyPackage's secrets are kept.
        assert!(changes.key_packages.is_empty(), "{changes:?}");
        bob.persist(changes);
        assert_eq!(bob.db.key_packages.len(), 3);
    }
    assert_eq!(bob.engine.group_ids().len(), 2);
    // The same Welcome again: the KeyPackage is still usable, but Bob is in the group already.
    let tree = room_a.hub.ratchet_tree().unwrap();
    assert_eq!(bob.engine.join(&welcome_a, &tree).unwrap_err(), EngineError::GroupExists(room_a.id.clone()));

    alice.send(&mut room_a, "in a");
    dave.send(&mut room_d, "in d");
    let (incoming, changes) = bob.engine.process(&room_a.id, room_a.log.last().unwrap()).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: alice.uid(), plaintext: b"in a".to_vec() });
    bob.persist(changes);
    let (incoming, changes) = bob.engine.process(&room_d.id, room_d.log.last().unwrap()).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: dave.uid(), plaintext: b"in d".to_vec() });
    bob.persist(changes);

    // Retiring it deletes its secrets; a one-time KeyPackage is gone after one use.
    let changes = bob.engine.forget_key_package(&last).unwrap();
    assert_eq!(changes.key_packages.len(), 1);
    bob.persist(changes);
    assert_eq!(bob.db.key_packages.len(), 2);
}

#[test]
fn misuse_is_reported() {
    let (room, mut alice, _bob, _carol) = three();
    let nowhere = GroupId::new(vec![7; 32]);
    assert_eq!(alice.engine.epoch(&nowhere).unwrap_err(), EngineError::NoSuchGroup(nowhere.clone()));
    assert_eq!(alice.engine.commit_remove(&room.id, &[alice.uid()]).unwrap_err(), EngineError::CannotRemoveSelf);
    let stranger = user(9).user_id();
    assert_eq!(alice.engine.commit_remove(&room.id, &[stranger]).unwrap_err(), EngineError::NotInGroup(stranger));
    assert_eq!(alice.engine.commit_remove(&room.id, &[]).unwrap_err(), EngineError::NothingToCommit);
    assert_eq!(alice.engine.commit_add(&room.id, &[]).unwrap_err(), EngineError::NothingToCommit);
    assert!(matches!(alice.engine.commit_add(&room.id, &[b"junk".to_vec()]), Err(EngineError::Malformed(_))));
    assert_eq!(alice.engine.apply_pending(&room.id).unwrap_err(), EngineError::NoPendingCommit);
    assert_eq!(alice.engine.discard_pending(&room.id).unwrap(), Changes::default());

    // Adding someone who is already in the group is refused, and changes nothing.
    let before = alice.engine.export_state().unwrap();
    let bob_again = Member::new(2).key_package();
    assert!(matches!(alice.engine.commit_add(&room.id, &[bob_again]), Err(EngineError::Rejected(_))));
    assert_eq!(alice.engine.export_state().unwrap(), before);
    assert!(!alice.engine.has_pending_commit(&room.id).unwrap());

    // Group ids print and parse as hex.
    let text = room.id.to_string();
    assert_eq!(text.parse::<GroupId>().unwrap(), room.id);
    assert!("abc".parse::<GroupId>().is_err());
    assert!("zz".parse::<GroupId>().is_err());

    // Debug output never shows secret bytes.
    let (_, mut changes) = alice.engine.encrypt(&room.id, b"x").map(|(m, _, c)| (m, c)).unwrap();
    changes.merge(alice.engine.checkpoint(&room.id).unwrap());
    let snapshot = changes.groups[0].snapshot.bytes().unwrap().to_vec();
    let hex = grove_wire::hex::encode(&snapshot[snapshot.len() - 16..]);
    let dbg = format!("{changes:?} {:?}", alice.db.state());
    assert!(!dbg.contains(&hex), "{dbg}");
    assert!(dbg.contains("bytes"), "{dbg}");
    alice.persist(changes);

    // A forgotten group is deleted.
    let changes = alice.engine.forget_group(&room.id).unwrap();
    assert!(changes.groups.iter().all(|g| g.snapshot == SnapshotWrite::Delete));
    alice.persist(changes);
    assert!(alice.db.groups.is_empty());
}

#[test]
fn load_refuses_foreign_or_corrupt_state() {
    let (room, alice, _bob, _carol) = three();
    let state = alice.db.state();
    let corrupt_on_use = |id: Identity, state: StoredState| {
        let engine = MlsEngine::load_with_rng(id, state, rng(202)).expect("groups load on first use");
        let err = engine.epoch(&room.id).unwrap_err();
        assert!(matches!(err, EngineError::CorruptState(_)), "{err:?}");
        // ... and stays an error.
        assert!(matches!(engine.members(&room.id), Err(EngineError::CorruptState(_))));
    };
    // Alice's rows are not Bob's.
    corrupt_on_use(user(2), state.clone());
    let mut garbled = state.clone();
    garbled.groups[0].snapshot = b"junk".to_vec().into();
    corrupt_on_use(user(1), garbled);
    // A group twice is refused at once.
    let mut twice = state.clone();
    twice.groups.push(twice.groups[0].clone());
    assert!(matches!(MlsEngine::load_with_rng(user(1), twice, rng(201)), Err(EngineError::CorruptState(_))));
    let engine = MlsEngine::load_with_rng(user(1), state, rng(401)).unwrap();
    assert_eq!(engine.epoch(&room.id).unwrap(), 1);
}

#[test]
fn a_corrupt_group_does_not_stop_the_others() {
    let (room, mut alice, _bob, _carol) = three();
    let (other, _, changes) = alice.engine.create_group().unwrap();
    alice.persist(changes);
    let mut state = alice.db.state();
    let broken = state.groups.iter_mut().find(|g| g.group_id == other).unwrap();
    broken.snapshot = b"junk".to_vec().into();
    let mut engine = MlsEngine::load_with_rng(user(1), state, rng(7)).unwrap();
    assert_eq!(engine.group_ids().len(), 2);
    assert!(matches!(engine.encrypt(&other, b"x"), Err(EngineError::CorruptState(_))));
    let (_, epoch, _) = engine.encrypt(&room.id, b"the room still works").unwrap();
    assert_eq!(epoch, 1);
}

#[test]
fn old_epochs_expire() {
    let (mut room, mut alice, mut bob, _carol) = three();
    // Messages made in epoch 1, delivered only after several commits.
    let (from_alice, _, changes) = alice.engine.encrypt(&room.id, b"slow").unwrap();
    alice.persist(changes);
    let (from_bob, _, changes) = bob.engine.encrypt(&room.id, b"own").unwrap();
    bob.persist(changes);

    alice.commit(&mut room, |e, g| e.commit_update(g));
    bob.sync(&room);
    // One epoch later both still decrypt (Bob's own is recognised as his).
    let before = bob.engine.export_state().unwrap();
    let (incoming, _) = bob.engine.process(&room.id, &from_bob).unwrap();
    assert_eq!(incoming, Incoming::Own);
    let (incoming, _) = bob.engine.process(&room.id, &from_alice).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: alice.uid(), plaintext: b"slow".to_vec() });
    // (Undo that: Bob's engine back to before, from its database.)
    bob.restart();
    assert_eq!(bob.engine.export_state().unwrap(), before);

    for _ in 0..grove_proto::mls::engine::EPOCH_RETENTION {
        alice.commit(&mut room, |e, g| e.commit_update(g));
        bob.sync(&room);
    }
    assert_eq!(bob.engine.epoch(&room.id).unwrap(), 1 + 1 + grove_proto::mls::engine::EPOCH_RETENTION as u64);
    let err = bob.engine.process(&room.id, &from_alice).unwrap_err();
    assert!(matches!(err, EngineError::EpochUnavailable { message_epoch: 1, .. }), "{err:?}");
    assert_eq!(bob.engine.export_state().unwrap(), bob.db.state().sorted());
}

/// The state the rows hold, in one canonical form: each group's snapshot as a checkpoint of the
/// engine loaded from them writes it (its journal replayed), and its prior-epoch records.
pub(crate) fn canonical(id: &Identity, state: StoredState) -> StoredState {
    let mut db = Db::default();
    let changes = Changes {
        groups: state
            .groups
            .iter()
            .map(|g| grove_proto::mls::engine::GroupWrite {
                group_id: g.group_id.clone(),
                snapshot: SnapshotWrite::Checkpoint(g.snapshot.clone()),
                epochs: g
                    .epochs
                    .iter()
                    .map(|e| grove_proto::mls::engine::EpochWrite { epoch: e.epoch, data: Some(e.data.clone()) })
                    .collect(),
                journal: g.journal.clone(),
            })
            .collect(),
        key_packages: Vec::new(),
    };
    db.apply(&changes);
    let mut engine = MlsEngine::load_with_rng(id.clone(), state, rng(4242)).unwrap();
    for g in engine.group_ids() {
        db.apply(&engine.checkpoint(&g).unwrap());
    }
    assert!(db.journal.is_empty());
    db.state().sorted()
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<MlsEngine>();
    check::<Changes>();
    check::<EngineError>();
}

/// Processes `page` from `member`'s database once with `process` per message and once with one
/// `process_many`, on two engines loaded from that database; checks the outcomes, the databases
/// after applying the changes and the engines' states are the same, and that the batch wrote
/// the group at most once. Returns the outcomes and the batch's changes.
pub(crate) fn batch_equals_sequential(
    member: &Member,
    room: &Room,
    page: &[Vec<u8>],
) -> (Vec<Result<Incoming, EngineError>>, Changes) {
    let mut one_by_one =
        MlsEngine::load_with_rng(member.id.clone(), member.db.state(), rng(member.seed + 500)).unwrap();
    let mut db_one = member.db.clone();
    let mut expected = Vec::new();
    for m in page {
        match one_by_one.process(&room.id, m) {
            Ok((incoming, changes)) => {
                db_one.apply(&changes);
                expected.push(Ok(incoming));
            }
            Err(e) => expected.push(Err(e)),
        }
    }

    let mut batched = MlsEngine::load_with_rng(member.id.clone(), member.db.state(), rng(member.seed + 600)).unwrap();
    let mut db_batch = member.db.clone();
    let (outcomes, changes) = batched.process_many(&room.id, page).unwrap();
    db_batch.apply(&changes);

    assert_eq!(outcomes, expected);
    assert!(changes.key_packages.is_empty());
    assert!(changes.groups.len() <= 1 && changes.groups.iter().all(|w| w.group_id == room.id), "{changes:?}");
    // The rows may differ (the batch writes a snapshot where `process` wrote one and then
    // journaled more), but they hold the same state.
    assert_eq!(canonical(&member.id, db_batch.state()), canonical(&member.id, db_one.state()));
    assert_eq!(batched.export_state().unwrap(), db_batch.state().sorted());
    assert_eq!(one_by_one.export_state().unwrap(), db_one.state().sorted());
    assert_eq!(batched.group_ids(), one_by_one.group_ids());
    (outcomes, changes)
}

#[test]
fn process_many_equals_sequential_process() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    // A message made in epoch 1 and delivered after the commit.
    let (late, _, changes) = carol.engine.encrypt(&room.id, b"late").unwrap();
    carol.persist(changes);
    alice.send(&mut room, "a1");
    carol.send(&mut room, "c1");
    let c1 = room.log.last().unwrap().clone();
    bob.send(&mut room, "b1");
    alice.commit(&mut room, |e, g| e.commit_update(g));
    alice.send(&mut room, "a2");
    let a2 = room.log.last().unwrap().clone();
    alice.send(&mut room, "a3");

    // The page as a (misbehaving) server serves it: garbage, a garbled copy of a2 (it fails in
    // mls-rs, after the cheap checks), a duplicate of c1 (after the commit: a prior-epoch
    // message whose key is gone), and the late message of epoch 1.
    let mut garbled = a2.clone();
    let n = garbled.len();
    garbled[n - 5] ^= 0x01;
    let mut page: Vec<Vec<u8>> = room.log[alice.cursor..].to_vec();
    assert_eq!(page.len(), 6);
    page.insert(1, b"garbage".to_vec());
    page.insert(5, garbled.clone()); // just after the commit
    page.insert(6, c1.clone());
    page.insert(8, late.clone());
    page.push(garbled);

    for m in [&alice, &bob, &carol] {
        let (outcomes, changes) = batch_equals_sequential(m, &room, &page);
        assert_eq!(outcomes.len(), page.len());
        assert_eq!(changes.groups.len(), 1);
        // Bob and Carol journal the commit with the messages; Alice's own commit is applied
        // already: she journals only the messages. (The garbled messages replayed what came
        // before them, and a replay that holds a commit ends in a checkpoint.)
        assert!(!changes.groups[0].journal.is_empty());
        assert!(matches!(outcomes[1], Err(EngineError::Malformed(_))));
        // (Alice's own garbled message: mls-rs reads the sender before the content.)
        assert!(matches!(outcomes[5], Err(EngineError::Rejected(_)) | Ok(Incoming::Own)), "{:?}", outcomes[5]);
        assert!(matches!(outcomes[4], Ok(Incoming::Commit { epoch: 2, .. }) | Ok(Incoming::Own)));
    }
    // Bob's view, in detail.
    let (outcomes, _) = batch_equals_sequential(&bob, &room, &page);
    let ok: Vec<Incoming> = outcomes.iter().filter_map(|o| o.as_ref().ok().cloned()).collect();
    assert_eq!(
        texts_from(&ok),
        vec![
            (alice.uid(), "a1".to_string()),
            (carol.uid(), "c1".to_string()),
            (alice.uid(), "a2".to_string()),
            (carol.uid(), "late".to_string()),
            (alice.uid(), "a3".to_string()),
        ]
    );
    assert!(matches!(outcomes[6], Err(EngineError::Rejected(_))), "duplicate: {:?}", outcomes[6]);
    assert!(matches!(outcomes[10], Err(EngineError::Rejected(_))));

    // An empty page changes nothing; a page of failures writes nothing.
    let mut fresh = MlsEngine::load_with_rng(bob.id.clone(), bob.db.state(), rng(bob.seed + 700)).unwrap();
    let (outcomes, changes) = fresh.process_many(&room.id, &[]).unwrap();
    assert!(outcomes.is_empty() && changes.is_empty());
    let (_, changes) = batch_equals_sequential(&bob, &room, &[b"garbage".to_vec(), page[5].clone()]);
    assert!(changes.is_empty());
    // Unknown group.
    let other = GroupId::new(vec![7; 32]);
    let (outcomes, _) = fresh.process_many(&other, &page[..1]).unwrap();
    assert_eq!(outcomes, vec![Err(EngineError::NoSuchGroup(other))]);
}

#[test]
fn process_many_stops_at_removal() {
    let (mut room, mut alice, _bob, carol) = three();
    alice.send(&mut room, "before");
    alice.commit(&mut room, |e, g| e.commit_remove(g, &[user(3).user_id()]));
    alice.send(&mut room, "after");
    let mut page = room.log[carol.cursor..].to_vec();
    page.push(b"garbage".to_vec());

    let (outcomes, changes) = batch_equals_sequential(&carol, &room, &page);
    assert_eq!(outcomes[0], Ok(Incoming::Application { sender: alice.uid(), plaintext: b"before".to_vec() }));
    assert!(matches!(outcomes[1], Ok(Incoming::Commit { removed_me: true, .. })), "{:?}", outcomes[1]);
    assert_eq!(outcomes[2], Err(EngineError::NotAMember(room.id.clone())));
    assert!(matches!(outcomes[3], Err(EngineError::Malformed(_))));
    assert_eq!(changes.groups.len(), 1);
    assert_eq!(changes.groups[0].snapshot, SnapshotWrite::Delete);
}

#[test]
fn process_many_expires_old_epochs_like_process() {
    let (mut room, mut alice, bob, _carol) = three();
    let (slow, _, changes) = alice.engine.encrypt(&room.id, b"slow").unwrap();
    alice.persist(changes);
    let mut ok_late = None;
    for i in 0..=grove_proto::mls::engine::EPOCH_RETENTION {
        alice.commit(&mut room, |e, g| e.commit_update(g));
        if i == 0 {
            let (m, _, changes) = alice.engine.encrypt(&room.id, b"one epoch late").unwrap();
            alice.persist(changes);
            ok_late = Some(m);
        }
    }
    let mut page = room.log[bob.cursor..].to_vec();
    page.push(ok_late.unwrap());
    page.push(slow);
    let (outcomes, changes) = batch_equals_sequential(&bob, &room, &page);
    let n = page.len();
    assert_eq!(
        outcomes[n - 2],
        Ok(Incoming::Application { sender: alice.uid(), plaintext: b"one epoch late".to_vec() })
    );
    assert!(
        matches!(outcomes[n - 1], Err(EngineError::EpochUnavailable { message_epoch: 1, .. })),
        "{:?}",
        outcomes[n - 1]
    );
    assert_eq!(changes.groups.len(), 1);
}
