//! The engine's journal: application messages write a row, not the group; a reload replays it.

use grove_proto::mls::engine::{
    Changes, EngineError, Incoming, MlsEngine, SnapshotWrite, StoredState, DEFAULT_JOURNAL_BOUND,
};

use crate::engine::{
    batch_equals_sequential, canonical, rng, set_private_message_epoch, texts_from, three, user, Member, Room,
};

/// What `changes` write for the room's group: (snapshot write, number of journal rows).
fn shape(changes: &Changes, room: &Room) -> (SnapshotWrite, usize) {
    let w = changes.groups.iter().find(|w| w.group_id == room.id).expect("the group is written");
    assert_eq!(changes.groups.len(), 1, "{changes:?}");
    (w.snapshot.clone(), w.journal.len())
}

fn journal_rows(m: &Member, room: &Room) -> usize {
    m.db.journal.keys().filter(|(g, _)| *g == room.id).count()
}

/// The member's engine, checkpointed in memory, holds exactly the state its database holds:
/// the snapshot its rows rebuild (snapshot + journal replayed) is the same, byte for byte, as
/// the one its running engine writes now.
fn assert_memory_matches_rows(m: &mut Member) {
    let from_rows = canonical(&m.id, m.db.state());
    let mut db = m.db.clone();
    for g in m.engine.group_ids() {
        let changes = m.engine.checkpoint(&g).unwrap();
        db.apply(&changes);
        m.db.apply(&changes);
    }
    assert_eq!(db.state().sorted(), from_rows, "the running engine and its rows hold different states");
    assert_eq!(m.engine.export_state().unwrap(), m.db.state().sorted());
}

#[test]
fn messages_write_a_journal_row_and_a_reload_replays_it() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    let snapshot_before = bob.db.groups[&room.id].clone();

    // Sending: one one-byte row, no snapshot.
    for i in 0..5 {
        let (msg, _, changes) = alice.engine.encrypt(&room.id, format!("a{i}").as_bytes()).unwrap();
        let (snapshot, rows) = shape(&changes, &room);
        assert_eq!((snapshot, rows), (SnapshotWrite::Unchanged, 1));
        assert_eq!(changes.groups[0].journal[0].entry.len(), 1);
        assert_eq!(changes.groups[0].journal[0].seq, 1 + i, "after the row of her applied commit");
        alice.persist(changes);
        room.post_application(&msg);
    }
    bob.send(&mut room, "b0");
    // Receiving: one row holding the message, no snapshot.
    let log = room.log.clone();
    for (i, msg) in log[bob.cursor..].iter().enumerate().take(5) {
        let (incoming, changes) = bob.engine.process(&room.id, msg).unwrap();
        assert!(matches!(incoming, Incoming::Application { .. }));
        assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 1));
        assert_eq!(changes.groups[0].journal[0].seq, 1 + i as u64, "after bob's own sent row");
        assert_eq!(changes.groups[0].journal[0].entry.len(), 1 + msg.len());
        bob.persist(changes);
    }
    bob.cursor += 5;
    // (Bob's own message comes back from the log: nothing is written.)
    let (incoming, changes) = bob.engine.process(&room.id, &log[bob.cursor]).unwrap();
    assert_eq!((incoming, changes), (Incoming::Own, Changes::default()));
    bob.cursor += 1;
    assert_eq!(bob.db.groups[&room.id], snapshot_before, "no snapshot was written");
    assert_eq!(journal_rows(&bob, &room), 6);
    assert_eq!(bob.engine.journal_len(&room.id).unwrap(), 6);
    carol.sync(&room);

    // Everyone's rows rebuild the same epoch, and each running engine holds exactly what its
    // rows rebuild, byte for byte.
    let auth = alice.epoch_authenticator(&room);
    for (seed, m) in [&mut alice, &mut bob, &mut carol].into_iter().enumerate() {
        let copy = MlsEngine::load_with_rng(m.id.clone(), m.db.state(), rng(900 + seed as u64)).unwrap();
        assert_eq!(copy.epoch_authenticator(&room.id).unwrap(), auth);
        assert_memory_matches_rows(m);
    }

    // Restarts from rows with a journal.
    let (msg, _, changes) = alice.engine.encrypt(&room.id, b"journaled").unwrap();
    alice.persist(changes);
    room.post_application(&msg);
    assert_eq!(journal_rows(&alice, &room), 1);
    alice.restart();
    bob.sync(&room);
    bob.restart();
    assert_eq!(bob.engine.journal_len(&room.id).unwrap(), 1);
    // The next message after the reload decrypts at the others, once.
    let (next, _, changes) = alice.engine.encrypt(&room.id, b"after the reload").unwrap();
    alice.persist(changes);
    assert_ne!(next, msg);
    room.post_application(&next);
    for m in [&mut bob, &mut carol] {
        assert_eq!(texts_from(&m.sync(&room)).last().unwrap(), &(alice.uid(), "after the reload".to_string()));
        assert!(matches!(m.engine.process(&room.id, &next), Err(EngineError::Rejected(_))), "decrypts once");
    }
    assert_eq!(alice.epoch_authenticator(&room), auth);
    assert_eq!(bob.epoch_authenticator(&room), auth);
}

#[test]
fn a_reloaded_sender_never_reuses_a_key() {
    let (mut room, mut alice, mut bob, _carol) = three();
    // Alice sends m1 (persisted first, as the rule says), restarts, sends m2.
    let (m1, _, changes) = alice.engine.encrypt(&room.id, b"m1").unwrap();
    alice.persist(changes);
    room.post_application(&m1);
    alice.restart();
    let (m2, _, changes) = alice.engine.encrypt(&room.id, b"m2").unwrap();
    alice.persist(changes);
    room.post_application(&m2);
    // Bob decrypts both: had m2 used m1's generation, its key would be gone (a key decrypts
    // once; see the duplicate below).
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "m1".into()), (alice.uid(), "m2".into())]);
    assert!(matches!(bob.engine.process(&room.id, &m1), Err(EngineError::Rejected(_))));

    // Many restarts in a row, each after one message: every message decrypts.
    for i in 0..10 {
        alice.send(&mut room, &format!("r{i}"));
        alice.restart();
    }
    assert_eq!(texts_from(&bob.sync(&room)).len(), 10);

    // A crash between `encrypt` and the transaction: the row and the unsent message are lost
    // together, so the next message takes the same generation, and nobody ever saw the first.
    let (lost, _, _lost_changes) = alice.engine.encrypt(&room.id, b"never sent").unwrap();
    alice.restart();
    let (sent, _, changes) = alice.engine.encrypt(&room.id, b"sent instead").unwrap();
    alice.persist(changes);
    room.post_application(&sent);
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "sent instead".into())]);
    // (Which is why the rule is "persist before you send": had the lost one left too, it would
    // share that key, and Bob refuses it.)
    assert!(matches!(bob.engine.process(&room.id, &lost), Err(EngineError::Rejected(_))));
}

#[test]
fn a_garbled_message_leaves_the_rows_unchanged() {
    let (mut room, mut alice, mut bob, _carol) = three();
    for i in 0..3 {
        alice.send(&mut room, &format!("m{i}"));
    }
    let first = room.log[bob.cursor].clone();
    bob.sync(&room);
    assert_eq!(journal_rows(&bob, &room), 3);
    alice.send(&mut room, "genuine");
    let good = room.log.last().unwrap().clone();

    let before = bob.engine.export_state().unwrap();
    // A flipped byte in the ciphertext passes the cheap checks and fails in mls-rs, after it
    // moved the ratchet: the engine reloads the group (snapshot + journal).
    let mut garbled = good.clone();
    let n = garbled.len();
    garbled[n - 5] ^= 0x01;
    assert!(matches!(bob.engine.process(&room.id, &garbled), Err(EngineError::Rejected(_))));
    let (outcomes, changes) = bob.engine.process_many(&room.id, &[garbled.clone(), garbled]).unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Err(EngineError::Rejected(_)))));
    assert!(changes.is_empty());
    assert_eq!(bob.engine.export_state().unwrap(), before);
    // The reloaded group still knows what the journal recorded: m0's key is used up ...
    assert!(matches!(bob.engine.process(&room.id, &first), Err(EngineError::Rejected(_))));
    // ... and the genuine message decrypts.
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "genuine".into())]);
    assert_memory_matches_rows(&mut bob);
}

#[test]
fn the_journal_bound_triggers_a_checkpoint() {
    let (mut room, mut alice, mut bob, _carol) = three();
    assert_eq!(DEFAULT_JOURNAL_BOUND, 256);
    alice.engine = MlsEngine::load_with_rng(alice.id.clone(), alice.db.state(), rng(11)).unwrap().with_journal_bound(4);
    bob.engine = MlsEngine::load_with_rng(bob.id.clone(), bob.db.state(), rng(12)).unwrap().with_journal_bound(4);
    // (Alice's journal holds the row of her applied commit: start from an empty one.)
    let changes = alice.engine.checkpoint(&room.id).unwrap();
    alice.persist(changes);

    // Sender: three rows, then the fourth operation writes a snapshot instead.
    for i in 0..3 {
        let (msg, _, changes) = alice.engine.encrypt(&room.id, b"x").unwrap();
        assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 1), "message {i}");
        alice.persist(changes);
        room.post_application(&msg);
    }
    let (msg, _, changes) = alice.engine.encrypt(&room.id, b"x").unwrap();
    let (snapshot, rows) = shape(&changes, &room);
    assert!(matches!(snapshot, SnapshotWrite::Checkpoint(_)) && rows == 0, "{changes:?}");
    alice.persist(changes);
    room.post_application(&msg);
    assert_eq!(journal_rows(&alice, &room), 0);
    assert_eq!(alice.engine.journal_len(&room.id).unwrap(), 0);

    // Receiver, one page of ten: one checkpoint at the end of the page.
    for _ in 0..6 {
        alice.send(&mut room, "y");
    }
    let page = room.log[bob.cursor..].to_vec();
    assert_eq!(page.len(), 10);
    let (outcomes, changes) = bob.engine.process_many(&room.id, &page).unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Ok(Incoming::Application { .. }))));
    let (snapshot, rows) = shape(&changes, &room);
    assert!(matches!(snapshot, SnapshotWrite::Checkpoint(_)) && rows == 0, "{changes:?}");
    bob.persist(changes);
    bob.cursor = room.log.len();
    // A page that stays under the bound writes rows only.
    alice.send(&mut room, "z1");
    alice.send(&mut room, "z2");
    let (_, changes) = bob.engine.process_many(&room.id, &room.log[bob.cursor..]).unwrap();
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 2));
    bob.persist(changes);
    bob.cursor = room.log.len();

    // The caller may checkpoint at any time; with an empty journal there is nothing to write.
    let changes = bob.engine.checkpoint(&room.id).unwrap();
    assert!(matches!(shape(&changes, &room), (SnapshotWrite::Checkpoint(_), 0)));
    bob.persist(changes);
    assert_eq!(journal_rows(&bob, &room), 0);
    assert!(bob.engine.checkpoint(&room.id).unwrap().is_empty());
    bob.restart();
    alice.send(&mut room, "still fine");
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "still fine".into())]);
}

#[test]
fn other_members_commits_are_journaled_and_own_commits_checkpoint() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    alice.send(&mut room, "one");
    bob.sync(&room);
    carol.sync(&room);
    assert_eq!(alice.sync(&room), vec![Incoming::Own]);
    assert_eq!(journal_rows(&bob, &room), 1);
    // Carol makes a message in epoch 1 that arrives only after the commit below.
    let (late, _, changes) = carol.engine.encrypt(&room.id, b"late").unwrap();
    carol.persist(changes);
    // Bob's own commit writes a snapshot (it holds the fresh path secrets of the pending
    // commit); applying it, once the server took it, is a one-byte row.
    let (pending, changes) = bob.engine.commit_update(&room.id).unwrap();
    assert!(matches!(shape(&changes, &room), (SnapshotWrite::Checkpoint(_), 0)));
    bob.persist(changes);
    assert_eq!(journal_rows(&bob, &room), 0);
    room.post_commit(bob.uid(), &pending.commit).unwrap();
    let (_, changes) = bob.engine.apply_pending(&room.id).unwrap();
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 1));
    assert_eq!(changes.groups[0].journal[0].entry.len(), 1);
    bob.persist(changes);
    // Alice processes Bob's commit: one row holding the commit, not the group.
    assert_eq!(journal_rows(&alice, &room), 2, "her applied commit and her message");
    let (incoming, changes) = alice.engine.process(&room.id, room.log.last().unwrap()).unwrap();
    assert!(matches!(incoming, Incoming::Commit { epoch: 2, .. }));
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 1));
    assert_eq!(changes.groups[0].journal[0].entry.len(), 1 + pending.commit.len());
    alice.persist(changes);
    alice.cursor += 1;
    // A page holding the commit and a message: two rows.
    alice.send(&mut room, "two");
    let (outcomes, changes) = carol.engine.process_many(&room.id, &room.log[carol.cursor..]).unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 2));
    carol.persist(changes);
    carol.cursor = room.log.len();

    // Everyone restarts from rows whose snapshot is of epoch 1 (Bob's: his pending commit) and
    // whose journal crosses into epoch 2: all rebuild epoch 2 with the same authenticator, and
    // each running engine holds exactly what its rows rebuild.
    let auth = bob.epoch_authenticator(&room);
    for m in [&mut alice, &mut bob, &mut carol] {
        m.restart();
        assert_eq!(m.engine.epoch(&room.id).unwrap(), 2);
        assert_eq!(m.epoch_authenticator(&room), auth);
        assert_memory_matches_rows(m);
    }
    // After the replayed commit, messages of epoch 2 flow both ways.
    bob.send(&mut room, "after the restart");
    assert_eq!(texts_from(&alice.sync(&room)).last().unwrap(), &(bob.uid(), "after the restart".to_string()));

    // The message of the old epoch, delivered after the commit, decrypts with the retained
    // epoch record (which it updates), is journaled, and survives a reload: once.
    let (incoming, changes) = alice.engine.process(&room.id, &late).unwrap();
    assert_eq!(incoming, Incoming::Application { sender: carol.uid(), plaintext: b"late".to_vec() });
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 1));
    alice.persist(changes);
    alice.restart();
    assert!(matches!(alice.engine.process(&room.id, &late), Err(EngineError::Rejected(_))), "decrypted once");
    assert_memory_matches_rows(&mut alice);
}

#[test]
fn the_handshake_bound_checkpoints_and_a_reload_replays_the_commits_before_it() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    bob.engine = MlsEngine::load_with_rng(bob.id.clone(), bob.db.state(), rng(21)).unwrap().with_handshake_bound(4);
    // Three commits (updates by Alice and by Carol, then Alice adds Dave), each
    // followed by a message: Bob journals 3 handshakes and 3 messages, no snapshot.
    alice.commit(&mut room, |e, g| e.commit_update(g));
    alice.send(&mut room, "a1");
    carol.sync(&room);
    carol.commit(&mut room, |e, g| e.commit_update(g));
    carol.send(&mut room, "c1");
    alice.sync(&room);
    let mut dave = Member::new(4);
    let kp = dave.key_package();
    alice.commit(&mut room, |e, g| e.commit_add(g, &[kp]));
    alice.send(&mut room, "a2");
    let snapshot_before = bob.db.groups[&room.id].clone();
    let texts = texts_from(&bob.sync(&room));
    assert_eq!(texts.len(), 3);
    assert_eq!(bob.db.groups[&room.id], snapshot_before, "no snapshot was written");
    assert_eq!(journal_rows(&bob, &room), 6);
    assert_eq!(bob.engine.epoch(&room.id).unwrap(), 4);

    // A restart replays the three commits: the same group as Alice's, byte for byte.
    bob.restart();
    bob.engine = MlsEngine::load_with_rng(bob.id.clone(), bob.db.state(), rng(22)).unwrap().with_handshake_bound(4);
    assert_eq!(bob.engine.epoch(&room.id).unwrap(), 4);
    assert_eq!(bob.engine.members(&room.id).unwrap(), room.hub.members());
    assert_eq!(bob.epoch_authenticator(&room), alice.epoch_authenticator(&room));

    // The fourth handshake reaches the bound: a checkpoint, the journal emptied.
    carol.sync(&room);
    carol.commit(&mut room, |e, g| e.commit_update(g));
    carol.send(&mut room, "c2");
    carol.commit(&mut room, |e, g| e.commit_update(g));
    carol.commit(&mut room, |e, g| e.commit_update(g));
    carol.commit(&mut room, |e, g| e.commit_update(g));
    let (_, changes) = bob.engine.process(&room.id, &room.log[bob.cursor]).unwrap();
    bob.persist(changes);
    bob.cursor += 1;
    assert_eq!(journal_rows(&bob, &room), 0, "checkpointed at the 4th handshake of its journal");
    let (_, changes) = bob.engine.process_many(&room.id, &room.log[bob.cursor..]).unwrap();
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 4), "a message and three commits");
    bob.persist(changes);
    bob.cursor = room.log.len();
    bob.restart();
    assert_eq!(bob.engine.epoch(&room.id).unwrap(), room.hub.epoch());
    assert_eq!(bob.epoch_authenticator(&room), carol.epoch_authenticator(&room));
    alice.sync(&room);
    alice.send(&mut room, "still in step");
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "still in step".into())]);
    assert_memory_matches_rows(&mut bob);
}

#[test]
fn a_refused_commit_is_dropped_in_the_journal_and_stays_dropped_after_a_restart() {
    let (mut room, mut alice, mut bob, _carol) = three();
    // Alice and Bob commit in the same epoch; the hub takes Alice's.
    let (bobs, changes) = bob.engine.commit_update(&room.id).unwrap();
    bob.persist(changes);
    alice.commit(&mut room, |e, g| e.commit_update(g));
    assert!(room.post_commit(bob.uid(), &bobs.commit).is_err());
    // Bob drops his pending commit: a one-byte row, no snapshot.
    let changes = bob.engine.discard_pending(&room.id).unwrap();
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Unchanged, 1));
    bob.persist(changes);
    // His snapshot still holds the pending commit; the journal drops it again on a restart.
    bob.restart();
    assert!(!bob.engine.has_pending_commit(&room.id).unwrap());
    bob.sync(&room);
    assert_eq!(bob.epoch_authenticator(&room), alice.epoch_authenticator(&room));
    // He makes his change again, on the new epoch, and everyone follows.
    bob.commit(&mut room, |e, g| e.commit_update(g));
    bob.restart();
    let incoming = alice.sync(&room);
    assert_eq!(incoming[0], Incoming::Own, "her own commit");
    assert!(matches!(incoming[1], Incoming::Commit { .. }), "{incoming:?}");
    assert_eq!(bob.epoch_authenticator(&room), alice.epoch_authenticator(&room));
    assert_memory_matches_rows(&mut bob);
}

#[test]
fn a_removed_members_reload_cannot_decrypt() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    alice.send(&mut room, "before");
    bob.sync(&room);
    carol.sync(&room);
    assert_eq!(journal_rows(&carol, &room), 1);
    let carol_before: StoredState = carol.db.state();

    alice.commit(&mut room, |e, g| e.commit_remove(g, &[user(3).user_id()]));
    alice.send(&mut room, "after");
    let secret = room.log.last().unwrap().clone();
    assert_eq!(texts_from(&bob.sync(&room)), vec![(alice.uid(), "after".into())]);

    // Carol processes her removal: snapshot, epoch records and journal rows are all deleted.
    let (outcomes, changes) = carol.engine.process_many(&room.id, &room.log[carol.cursor..]).unwrap();
    assert!(matches!(outcomes[0], Ok(Incoming::Commit { removed_me: true, .. })));
    assert_eq!(shape(&changes, &room), (SnapshotWrite::Delete, 0));
    carol.persist(changes);
    assert!(carol.db.groups.is_empty() && carol.db.epochs.is_empty() && carol.db.journal.is_empty());
    carol.restart();
    assert_eq!(carol.engine.process(&room.id, &secret).unwrap_err(), EngineError::NoSuchGroup(room.id.clone()));

    // A copy of her rows from before (snapshot + journal), reloaded, cannot read the message
    // either, under its own epoch or relabelled to the one it has keys for.
    let mut old = MlsEngine::load_with_rng(user(3), carol_before, rng(303)).unwrap();
    assert_eq!(old.journal_len(&room.id).unwrap(), 1);
    assert!(matches!(old.process(&room.id, &secret), Err(EngineError::WrongEpoch { .. })));
    let mut relabelled = secret.clone();
    set_private_message_epoch(&mut relabelled, 1);
    assert!(matches!(old.process(&room.id, &relabelled), Err(EngineError::Rejected(_))));
    // Nor can she post: a message from her old state is refused by those who saw her leave.
    let (stale, _, _) = old.encrypt(&room.id, b"let me in").unwrap();
    assert!(matches!(bob.engine.process(&room.id, &stale), Err(EngineError::Rejected(_))));
}

#[test]
fn load_refuses_a_broken_journal() {
    let (mut room, mut alice, mut bob, _carol) = three();
    alice.send(&mut room, "one");
    alice.send(&mut room, "two");
    bob.sync(&room);
    let good = bob.db.state();
    assert_eq!(good.groups[0].journal.len(), 2);
    assert!(MlsEngine::load_with_rng(user(2), good.clone(), rng(1)).is_ok());
    // Refused when the engine is rebuilt (rows missing or twice) or when the group is first
    // used (rows that do not replay).
    let corrupt = |state: StoredState| match MlsEngine::load_with_rng(user(2), state, rng(2)) {
        Err(EngineError::CorruptState(_)) => {}
        Ok(engine) => match engine.epoch(&room.id) {
            Err(EngineError::CorruptState(_)) => {}
            other => panic!("expected CorruptState on first use, got {other:?}"),
        },
        Err(other) => panic!("expected CorruptState, got {other:?}"),
    };
    // A missing row, a row twice, garbage in a row.
    let mut missing = good.clone();
    missing.groups[0].journal.remove(0);
    corrupt(missing);
    let mut twice = good.clone();
    let row = twice.groups[0].journal[1].clone();
    twice.groups[0].journal.push(row);
    corrupt(twice);
    let mut garbage = good.clone();
    garbage.groups[0].journal[0].entry = b"\x02junk".to_vec().into();
    corrupt(garbage);
    let mut unknown = good.clone();
    unknown.groups[0].journal[0].entry = b"\x07".to_vec().into();
    corrupt(unknown);
    // The same message twice (its key is used up the second time).
    let mut dup = good.clone();
    dup.groups[0].journal[1].entry = dup.groups[0].journal[0].entry.clone();
    corrupt(dup);
}

#[test]
fn a_failure_after_many_journaled_messages_in_a_page_is_like_process() {
    let (mut room, mut alice, bob, _carol) = three();
    for i in 0..40 {
        alice.send(&mut room, &format!("m{i}"));
    }
    let mut garbled = room.log.last().unwrap().clone();
    let n = garbled.len();
    garbled[n - 5] ^= 0x01;
    alice.send(&mut room, "after");
    let mut page = room.log[bob.cursor..].to_vec();
    page.insert(40, garbled.clone());
    page.push(garbled);
    // The first failure replays 40 rows and then writes a snapshot; the second replays none.
    let (outcomes, changes) = batch_equals_sequential(&bob, &room, &page);
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 2);
    assert_eq!(texts_from(&outcomes.into_iter().filter_map(Result::ok).collect::<Vec<_>>()).len(), 41);
    assert!(matches!(shape(&changes, &room), (SnapshotWrite::Checkpoint(_), 1)), "{changes:?}");
}
