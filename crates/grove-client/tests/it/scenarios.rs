//! The MLS-room scenarios of a real conversation.

use grove_client::profile::{ClientError, Profile};
use grove_client::{MessageKind, RoomStatus};

use crate::{copy_dir, garden, texts, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_chat_and_each_sees_every_message_once_in_server_order() {
    let mut w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    let mut sent = Vec::new();
    for round in 0..4 {
        for (name, p) in [("alice", &mut alice), ("bob", &mut bob), ("carol", &mut carol)] {
            let text = format!("{name} says {round}");
            let seq = p.send("garden", &text).await.unwrap();
            sent.push((seq, text));
        }
    }
    sent.sort();
    let expected: Vec<String> = sent.into_iter().map(|(_, t)| t).collect();
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
        p.sync().await.unwrap();
        assert_eq!(texts(p, "garden"), expected, "every message once, in the server's order");
    }
    let auth = alice.epoch("garden").unwrap();
    assert_eq!(bob.epoch("garden").unwrap(), auth);
    assert_eq!(carol.epoch("garden").unwrap(), auth);
    assert_eq!(alice.members("garden").unwrap().len(), 3);

    // The server's files hold none of the plaintexts.
    let files = w.stop().await;
    for text in &expected {
        for (path, data) in &files {
            assert!(!data.windows(text.len()).any(|win| win == text.as_bytes()), "{text:?} in {}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_carol_cannot_read_or_post_even_with_a_copy_of_her_old_state() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    carol.send("garden", "before").await.unwrap();
    copy_dir(&w.profile_dir("carol"), &w.profile_dir("carol-copy"));

    alice.remove("garden", &carol.user_id()).await.unwrap();
    let seq = alice.send("garden", "after carol left").await.unwrap();
    bob.sync().await.unwrap();
    assert!(texts(&bob, "garden").contains(&"after carol left".to_string()));
    assert_eq!(bob.members("garden").unwrap().len(), 2);

    carol.sync().await.unwrap();
    assert_eq!(carol.room("garden").unwrap().status, RoomStatus::Removed);
    assert!(!texts(&carol, "garden").contains(&"after carol left".to_string()));
    match carol.send("garden", "still here?").await {
        Err(ClientError::NotActive { .. }) => {}
        other => panic!("carol could post: {other:?}"),
    }

    // A copy of her state from before the removal cannot decrypt what follows. (`decrypt_entry`
    // persists nothing, so every try starts from the copy's file; that processing the removal
    // does not help either is shown by the engine's tests.)
    let ciphertext = alice.raw_entry("garden", seq).await.unwrap();
    let mut copy = Profile::open(&w.profile_dir("carol-copy")).unwrap();
    assert!(copy.decrypt_entry("garden", &ciphertext).is_err());
    // And the server refuses her, whatever state she holds.
    match copy.send("garden", "sneaking in").await {
        Err(ClientError::NotActive { .. }) => {}
        Err(ClientError::Server(e)) => assert_eq!(e.code(), Some(grove_wire::ErrorCode::NotMember), "{e}"),
        other => panic!("the copy could post: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_bobs_state_from_before_his_update_cannot_read_what_follows() {
    let w = World::start().await;
    let (mut alice, mut bob, _carol) = garden(&w).await;
    copy_dir(&w.profile_dir("bob"), &w.profile_dir("bob-leaked"));
    bob.update("garden").await.unwrap();
    let seq = alice.send("garden", "after bob's update").await.unwrap();
    bob.sync().await.unwrap();
    assert!(texts(&bob, "garden").contains(&"after bob's update".to_string()));

    let mut leaked = Profile::open(&w.profile_dir("bob-leaked")).unwrap();
    let update = alice.raw_entry("garden", seq - 1).await.unwrap();
    assert!(leaked.decrypt_entry("garden", &update).is_err(), "the leaked state cannot follow the update");
    let message = alice.raw_entry("garden", seq).await.unwrap();
    assert!(leaked.decrypt_entry("garden", &message).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_one_wins_the_other_retries_and_all_agree() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    let before = alice.epoch("garden").unwrap().0;
    let (a, b) = tokio::join!(alice.update("garden"), bob.update("garden"));
    a.unwrap();
    b.unwrap();
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    let auth = alice.epoch("garden").unwrap();
    assert_eq!(auth.0, before + 2, "both updates landed, one after the other");
    assert_eq!(bob.epoch("garden").unwrap(), auth);
    assert_eq!(carol.epoch("garden").unwrap(), auth);
    alice.send("garden", "still talking").await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(texts(&carol, "garden").last().unwrap(), "still talking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_offline_through_500_messages_and_5_commits_catches_up() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    let mut expected = Vec::new();
    for n in 0..500 {
        if n % 100 == 50 {
            let p = if n % 200 == 50 { &mut alice } else { &mut carol };
            p.update("garden").await.unwrap();
        }
        let (who, p) = if n % 2 == 0 { ("alice", &mut alice) } else { ("carol", &mut carol) };
        let text = format!("{who} {n}");
        p.send("garden", &text).await.unwrap();
        expected.push(text);
    }
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "garden"), expected);
    assert_eq!(bob.epoch("garden").unwrap(), alice.epoch("garden").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_entry_is_recorded_as_unreadable_and_changes_nothing() {
    let w = World::start().await;
    let (mut alice, mut bob, _carol) = garden(&w).await;
    let seq = alice.send("garden", "genuine").await.unwrap();
    let mut garbled = alice.raw_entry("garden", seq).await.unwrap();
    let n = garbled.len();
    garbled[n - 5] ^= 0x40;
    // Alice posts the garbled copy through the normal API (the server cannot read it).
    let server = grove_client::Server::new(&w.url, ed25519_dalek_key(&w, "alice"));
    let epoch = alice.epoch("garden").unwrap().0;
    server
        .append(
            "garden",
            &grove_wire::api::AppendEntry { kind: grove_wire::api::EntryKind::Application, epoch, body: garbled },
        )
        .await
        .unwrap();
    alice.send("garden", "after the garbage").await.unwrap();
    bob.sync().await.unwrap();
    let msgs = bob.messages("garden", 0).unwrap();
    let unreadable: Vec<_> = msgs.iter().filter(|m| m.kind == MessageKind::Undecryptable).collect();
    assert_eq!(unreadable.len(), 1);
    assert!(!String::from_utf8_lossy(&unreadable[0].body).is_empty(), "the reason is recorded");
    let t = texts(&bob, "garden");
    assert_eq!(t[t.len() - 2..], ["genuine".to_string(), "after the garbage".to_string()]);
}

fn ed25519_dalek_key(w: &World, name: &str) -> ed25519_dalek::SigningKey {
    let conn = rusqlite::Connection::open(w.profile_dir(name).join("state.db")).unwrap();
    let secret: Vec<u8> = conn.query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| r.get(0)).unwrap();
    ed25519_dalek::SigningKey::from_bytes(&secret.try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_leaves_and_alice_commits_his_departure() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = garden(&w).await;
    bob.leave("garden").await.unwrap();
    assert_eq!(bob.room("garden").unwrap().status, RoomStatus::Left);
    alice.sync().await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(alice.members("garden").unwrap().len(), 2);
    assert_eq!(carol.members("garden").unwrap(), alice.members("garden").unwrap());
    alice.send("garden", "bye bob").await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(texts(&carol, "garden").last().unwrap(), "bye bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_whose_welcome_is_older_than_the_room_still_joins() {
    let w = World::start().await;
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    alice.create_room(&w.url, "r").await.unwrap();
    alice.invite("r", &bob.address().to_string()).await.unwrap();
    for _ in 0..3 {
        alice.update("r").await.unwrap();
    }
    alice.send("r", "hello late bob").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "r"), ["hello late bob"]);
    assert_eq!(bob.epoch("r").unwrap().1, {
        alice.sync().await.unwrap();
        alice.epoch("r").unwrap().1
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do_next() {
    let w = World::start().await;
    let missing = w.profile_dir("nobody");
    let e = Profile::open(&missing).unwrap_err().to_string();
    assert!(e.contains("grove init --home URL"), "{e}");
    let mut alice = w.user("alice").await;
    let e = Profile::init(&w.profile_dir("alice"), &w.url).await.unwrap_err().to_string();
    assert!(e.contains("already has an identity"), "{e}");
    let e = alice.send("nowhere", "x").await.unwrap_err().to_string();
    assert!(e.contains("grove room list"), "{e}");
    alice.create_room(&w.url, "r").await.unwrap();
    let e = alice.invite("r", "not-an-address").await.unwrap_err().to_string();
    assert!(e.contains("USERID@HOST:PORT"), "{e}");
    let e = alice.create_room(&w.url, "r").await.unwrap_err().to_string();
    assert!(e.contains("room_exists"), "{e}");
    let e = Profile::init(&w.profile_dir("x"), "http://127.0.0.1:1").await.unwrap_err().to_string();
    assert!(e.contains("cannot reach"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_packages_are_replenished_when_they_run_low() {
    let w = World::start().await;
    let mut bob = w.user("bob").await;
    let alice = w.user("alice").await;
    let home = grove_client::Server::new(&w.url, ed25519_dalek_key(&w, "alice"));
    let counts = |c: grove_wire::api::KeyCounts| (c.counts[0].one_time, c.counts[0].last_resort);
    let bobs = grove_client::Server::new(&w.url, ed25519_dalek_key(&w, "bob"));
    assert_eq!(counts(bobs.key_counts().await.unwrap()), (20, true));
    for _ in 0..17 {
        home.claim_key(&bob.user_id(), grove_wire::api::KeyKind::MlsKeyPackage).await.unwrap();
    }
    assert_eq!(counts(bobs.key_counts().await.unwrap()), (3, true));
    bob.sync().await.unwrap();
    assert_eq!(counts(bobs.key_counts().await.unwrap()), (20, true));
    let _ = alice;
}
