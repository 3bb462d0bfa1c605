//! The engine's journal in the profile's state file: messages add small rows, the rows survive a
//! restart, long syncs checkpoint at the bound, and a file of the layout before the journal opens.

use grove_client::profile::Profile;
use grove_client::ClientStore;
use grove_proto::mls::engine::{StoredState, DEFAULT_JOURNAL_BOUND};

use crate::{garden, texts, World};

/// What the profile's state file holds for the engine (read through a second connection).
fn engine_rows(w: &World, name: &str) -> StoredState {
    ClientStore::open(&w.profile_dir(name).join("state.db")).unwrap().engine_state().unwrap()
}

/// (snapshot bytes, journal rows) of the profile's only group.
fn group_rows(w: &World, name: &str) -> (Vec<u8>, usize) {
    let state = engine_rows(w, name);
    assert_eq!(state.groups.len(), 1);
    (state.groups[0].snapshot.to_vec(), state.groups[0].journal.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_add_journal_rows_that_survive_a_restart() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    let (alice_snapshot, alice_rows) = group_rows(&w, "alice");
    let (bob_snapshot, bob_rows) = group_rows(&w, "bob");
    // Journal rows are handshakes so far: Alice's holds her second invitation's commit applied
    // (0x04), then the self-updates Bob and Carol commit after joining (0x03 each); Bob's, his
    // own update applied and Carol's.
    let tags = |name: &str| engine_rows(&w, name).groups[0].journal.iter().map(|r| r.entry[0]).collect::<Vec<_>>();
    assert_eq!((tags("alice"), tags("bob")), (vec![4, 3, 3], vec![4, 3]));

    let mut expected = Vec::new();
    for i in 0..10 {
        let text = format!("alice {i}");
        alice.send("garden", &text).await.unwrap();
        expected.push(text);
    }
    bob.sync().await.unwrap();
    // Ten sends: ten rows, and the snapshot untouched; Bob's page of ten: ten rows.
    assert_eq!(group_rows(&w, "alice"), (alice_snapshot.clone(), alice_rows + 10));
    assert_eq!(group_rows(&w, "bob"), (bob_snapshot.clone(), bob_rows + 10));

    // Both restart from their files (snapshot + journal replayed) and go on.
    drop(alice);
    drop(bob);
    let mut alice = Profile::open(&w.profile_dir("alice")).unwrap();
    let mut bob = Profile::open(&w.profile_dir("bob")).unwrap();
    alice.send("garden", "after alice's restart").await.unwrap();
    bob.send("garden", "after bob's restart").await.unwrap();
    expected.push("after alice's restart".into());
    expected.push("after bob's restart".into());
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
        assert_eq!(texts(p, "garden"), expected);
    }
    let auth = alice.epoch("garden").unwrap();
    assert_eq!(bob.epoch("garden").unwrap(), auth);
    assert_eq!(carol.epoch("garden").unwrap(), auth);

    // Bob's own commit writes his snapshot (it holds fresh secrets) and journals its
    // application; Alice journals the commit: one row more, the snapshot untouched.
    let (_, alice_rows) = group_rows(&w, "alice");
    bob.update("garden").await.unwrap();
    let (snapshot, rows) = group_rows(&w, "bob");
    assert_ne!(snapshot, bob_snapshot);
    assert_eq!(rows, 1);
    alice.sync().await.unwrap();
    assert_eq!(group_rows(&w, "alice"), (alice_snapshot.clone(), alice_rows + 1));
    // Restarted, Alice replays the commit and is in Bob's epoch; a checkpoint empties her journal.
    drop(alice);
    let mut alice = Profile::open(&w.profile_dir("alice")).unwrap();
    assert_eq!(alice.epoch("garden").unwrap(), bob.epoch("garden").unwrap());
    alice.checkpoint().await.unwrap();
    let (snapshot, rows) = group_rows(&w, "alice");
    assert_eq!(rows, 0);
    assert_ne!(snapshot, alice_snapshot);
    bob.send("garden", "after the checkpoint").await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(texts(&alice, "garden").last().unwrap(), "after the checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_checkpoints_at_the_journal_bound() {
    let w = World::start().await;
    let (mut alice, mut bob, _carol) = garden(&w).await;
    let n = DEFAULT_JOURNAL_BOUND + 44;
    let (_, alice_rows) = group_rows(&w, "alice");
    let mut max_rows = 0;
    for i in 0..n {
        alice.send("garden", &format!("m{i}")).await.unwrap();
        if i % 50 == 0 {
            bob.sync().await.unwrap();
            max_rows = max_rows.max(group_rows(&w, "bob").1);
        }
        max_rows = max_rows.max(group_rows(&w, "alice").1);
    }
    bob.sync().await.unwrap();
    assert!(max_rows < DEFAULT_JOURNAL_BOUND, "{max_rows} rows");
    // Alice's sends: one checkpoint at the bound, then the rest as rows.
    assert_eq!(group_rows(&w, "alice").1, alice_rows + n - DEFAULT_JOURNAL_BOUND);
    assert!(group_rows(&w, "bob").1 < DEFAULT_JOURNAL_BOUND);
    assert_eq!(texts(&bob, "garden").len(), n);
    // Restarted, Bob reads on.
    drop(bob);
    let mut bob = Profile::open(&w.profile_dir("bob")).unwrap();
    alice.send("garden", "the last one").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "garden").last().unwrap(), "the last one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_before_the_journal_opens() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    alice.send("garden", "before the upgrade").await.unwrap();
    // Bob's file as the previous release wrote it: every table but the journal (its rows are
    // folded into the snapshot, as that release wrote after every message).
    bob.update("garden").await.unwrap();
    bob.checkpoint().await.unwrap();
    assert_eq!(group_rows(&w, "bob").1, 0);
    drop(bob);
    // The layout before numbered migrations: no journal, names, outbox, invitations or read marker, no
    // user_version, and history as bare text and English sentences.
    let conn = rusqlite::Connection::open(w.profile_dir("bob").join("state.db")).unwrap();
    conn.execute_batch(
        "DROP TABLE mls_journal; DROP TABLE names; DROP TABLE outbox; DROP TABLE invitations;
         ALTER TABLE rooms DROP COLUMN seen;
         UPDATE messages SET kind = 'event', body = CAST('someone joined' AS BLOB) WHERE kind = 'membership';
         PRAGMA user_version = 0;",
    )
    .unwrap();
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT seq, body FROM messages WHERE kind = 'content'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (seq, body) in rows {
        let grove_wire::content::Content::Text { text } = grove_wire::content::Content::decode(&body) else {
            panic!("only texts so far")
        };
        conn.execute(
            "UPDATE messages SET kind = 'text', body = ?2 WHERE seq = ?1",
            rusqlite::params![seq, text.into_bytes()],
        )
        .unwrap();
    }
    drop(conn);

    let mut bob = Profile::open(&w.profile_dir("bob")).unwrap();
    bob.send("garden", "after the upgrade").await.unwrap();
    assert_eq!(group_rows(&w, "bob").1, 1, "the journal table is back, with the new row");
    alice.send("garden", "welcome back").await.unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(texts(&bob, "garden"), ["before the upgrade", "after the upgrade", "welcome back"]);
    assert_eq!(texts(&carol, "garden"), ["before the upgrade", "after the upgrade", "welcome back"]);
    // The old sentences are kept as notes.
    assert!(bob
        .messages("garden", 0)
        .unwrap()
        .iter()
        .any(|m| m.event() == grove_client::Event::Note("someone joined".into())));
    assert_eq!(ClientStore::open(&w.profile_dir("bob").join("state.db")).unwrap().layout().unwrap(), 4);
}
