//! A member removed while away: on its next sync it has every message sent before its removal,
//! none after, and a line saying who removed it; in both modes, and with the removal racing its
//! own send.

use grove_client::profile::{ClientError, ConnectTo, Profile};
use grove_client::{Event, Message, MessageKind, RoomStatus};
use grove_wire::api::RoomMode;
use grove_wire::UserId;

use crate::{texts, World};

const NAMES: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];

/// Alice, bob, carol, dave and eve in alice's room `garden`, each of whom said hello in turn.
async fn five_said_hello(w: &World, mode: RoomMode) -> Vec<Profile> {
    let mut people = Vec::new();
    for name in NAMES {
        people.push(w.user(name).await);
    }
    people[0].create_room_with_mode(&w.url, "garden", mode).await.unwrap();
    for i in 1..people.len() {
        let address = people[i].address().to_string();
        people[0].invite("garden", &address).await.unwrap();
        assert_eq!(people[i].sync().await.unwrap().joined.len(), 1, "{mode:?}: {} joined", NAMES[i]);
    }
    for (p, name) in people.iter_mut().zip(NAMES) {
        p.sync().await.unwrap();
        p.send("garden", &format!("hello from {name}")).await.unwrap();
    }
    people
}

/// The line of `history` that says `who` was removed.
fn removal_of(history: &[Message], who: UserId) -> Option<&Message> {
    history.iter().find(|m| matches!(m.event(), Event::Membership(ref c) if c.removed.contains(&who)))
}

/// What carol must have once she knows she was removed: exactly the texts alice's history holds
/// before the entry that removed carol; that entry, from alice; no unreadable line, no "removed
/// while away" guess.
async fn carol_has_everything_before_her_removal(alice: &mut Profile, carol: &Profile, mode: RoomMode) {
    alice.sync().await.unwrap();
    let (alice_id, carol_id) = (alice.user_id(), carol.user_id());
    assert_eq!(carol.room("garden").unwrap().status, RoomStatus::Removed, "{mode:?}");
    let theirs = alice.messages("garden", 0).unwrap();
    let removal = removal_of(&theirs, carol_id).expect("alice's history has the removal").seq;
    let before: Vec<String> = theirs.iter().filter(|m| m.seq < removal).filter_map(|m| m.text()).collect();
    assert!(theirs.iter().any(|m| m.seq > removal && m.text().is_some()), "{mode:?}: the room went on");
    assert_eq!(
        texts(carol, "garden"),
        before,
        "{mode:?}: every message before her removal, none after; alice's history: {:#?}",
        theirs.iter().map(|m| (m.seq, m.event())).collect::<Vec<_>>()
    );
    let history = carol.messages("garden", 0).unwrap();
    let line = removal_of(&history, carol_id).expect("carol's history says she was removed");
    assert_eq!((line.seq, line.sender), (removal, alice_id), "{mode:?}: removed by alice, at that entry");
    assert_eq!(history.last(), Some(line), "{mode:?}: nothing after it");
    let unreadable: Vec<&Message> = history.iter().filter(|m| m.kind == MessageKind::Undecryptable).collect();
    assert!(unreadable.is_empty(), "{mode:?}: {unreadable:?}");
    let guessed = history.iter().any(|m| matches!(m.event(), Event::Membership(ref c) if c.removed_unseen));
    assert!(!guessed, "{mode:?}: she read her removal, so nothing is guessed");
}

/// Five speak in turn; carol, away, is removed by alice, and the others go on talking. Carol's
/// next sync brings dave's and eve's hellos (sent while she was away but before her removal),
/// then says alice removed her, and nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carol_removed_while_away_gets_every_message_sent_before_and_learns_alice_removed_her() {
    for mode in [RoomMode::Mls, RoomMode::SenderKeys] {
        let w = World::start().await;
        let mut people = five_said_hello(&w, mode).await;
        let carol_id = people[2].user_id();
        // Carol is away from here on; dave and eve say something more before she is removed.
        people[3].send("garden", "dave, while carol is away").await.unwrap();
        people[4].send("garden", "eve, while carol is away").await.unwrap();
        people[0].remove("garden", &carol_id).await.unwrap();
        people[0].send("garden", "alice: carol is gone").await.unwrap();
        people[1].send("garden", "bob: so she is").await.unwrap();

        let report = people[2].sync().await.unwrap();
        assert_eq!(report.removed_from, [format!("{}/rooms/garden", w.url)], "{mode:?}");
        {
            let (alice, rest) = people.split_at_mut(1);
            carol_has_everything_before_her_removal(&mut alice[0], &rest[1], mode).await;
        }
        let mut want: Vec<String> = NAMES.iter().map(|n| format!("hello from {n}")).collect();
        want.extend(["dave, while carol is away".into(), "eve, while carol is away".into()]);
        assert_eq!(texts(&people[2], "garden"), want, "{mode:?}");
        let err = people[2].send("garden", "hello?").await.unwrap_err();
        assert!(matches!(err, ClientError::NotActive { .. }), "{mode:?}: {err}");
        // Syncing again changes nothing.
        people[2].sync().await.unwrap();
        assert_eq!(texts(&people[2], "garden"), want, "{mode:?}");
    }
}

/// Carol writes while her server cannot be reached (the message waits in her outbox) and is
/// removed meanwhile. Her next sync finds her removal, drops what she wrote, and keeps
/// everything the others said before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carols_queued_message_meets_her_removal_and_she_loses_nothing_she_could_read() {
    for mode in [RoomMode::Mls, RoomMode::SenderKeys] {
        let w = World::start().await;
        let mut people = five_said_hello(&w, mode).await;
        let carol_id = people[2].user_id();
        let mut away = ConnectTo::none();
        away.add(&w.url, "http://127.0.0.1:9");
        people[2].set_connect_to(away);
        let err = people[2].send("garden", "carol, written offline").await.unwrap_err();
        assert!(matches!(err, ClientError::Queued { .. }), "{mode:?}: {err}");
        people[3].send("garden", "dave, before the removal").await.unwrap();
        people[0].remove("garden", &carol_id).await.unwrap();
        people[4].send("garden", "eve, after it").await.unwrap();

        people[2].set_connect_to(ConnectTo::none());
        let report = people[2].sync().await.unwrap();
        assert_eq!(report.removed_from.len(), 1, "{mode:?}");
        assert!(people[2].outbox().unwrap().is_empty(), "{mode:?}: nobody would ever take it");
        {
            let (alice, rest) = people.split_at_mut(1);
            carol_has_everything_before_her_removal(&mut alice[0], &rest[1], mode).await;
        }
        assert!(texts(&people[2], "garden").contains(&"dave, before the removal".to_string()), "{mode:?}");
        assert!(!texts(&people[0], "garden").contains(&"carol, written offline".to_string()), "{mode:?}");
    }
}

/// Carol sends just as alice removes her. Whichever reaches the server first, carol ends up
/// knowing she was removed, with every message sent before her removal and none after; her own
/// message is in the room's history exactly when her send succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carols_send_racing_her_removal_loses_nothing_she_could_read() {
    for mode in [RoomMode::Mls, RoomMode::SenderKeys] {
        let w = World::start().await;
        let mut people = five_said_hello(&w, mode).await;
        let carol_id = people[2].user_id();
        people[3].send("garden", "dave, before the race").await.unwrap();
        let (before, rest) = people.split_at_mut(2);
        let (alice, carol) = (&mut before[0], &mut rest[0]);
        let (sent, removed) = tokio::join!(carol.send("garden", "carol, racing"), alice.remove("garden", &carol_id));
        removed.unwrap();
        people[0].send("garden", "alice, after the race").await.unwrap();
        people[1].sync().await.unwrap();
        let others = texts(&people[1], "garden");
        match &sent {
            Ok(_) => assert!(others.contains(&"carol, racing".to_string()), "{mode:?}: taken, so everyone has it"),
            Err(ClientError::NotActive { .. }) => {
                assert!(!others.contains(&"carol, racing".to_string()), "{mode:?}: refused, so nobody has it")
            }
            Err(e) => panic!("{mode:?}: carol's send failed unexpectedly: {e}"),
        }
        people[2].sync().await.unwrap();
        {
            let (alice, rest) = people.split_at_mut(1);
            carol_has_everything_before_her_removal(&mut alice[0], &rest[1], mode).await;
        }
        assert_eq!(
            texts(&people[2], "garden").contains(&"carol, racing".to_string()),
            sent.is_ok(),
            "{mode:?}: her own message is in her history exactly when it was taken"
        );
        assert!(people[2].outbox().unwrap().is_empty(), "{mode:?}");
    }
}
