//! Rooms whose members live on other servers: a room on server A with members whose home
//! servers are A, B and C (three servers in this process), in both modes.

use grove_client::profile::{KeyPending, Profile};
use grove_wire::api::RoomMode;
use grove_wire::UserId;

use crate::{texts, World};

const MODES: [RoomMode; 2] = [RoomMode::Mls, RoomMode::SenderKeys];

/// Alice (home A) makes `garden` on A and invites Bob and Dave (home B) and Carol (home C);
/// each joins. Nobody but Alice has written to anyone yet.
async fn mixed_homes(a: &World, b: &World, c: &World, mode: RoomMode) -> Vec<Profile> {
    let mut alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let carol = c.user("carol").await;
    let dave = b.user("dave").await;
    alice.create_room_with_mode(&a.url, "garden", mode).await.unwrap();
    let mut people = vec![alice, bob, carol, dave];
    for i in 1..people.len() {
        let address = people[i].address().to_string();
        people[0].invite("garden", &address).await.unwrap();
    }
    for p in people.iter_mut().skip(1) {
        assert_eq!(p.sync().await.unwrap().joined.len(), 1, "{mode:?}");
    }
    people
}

async fn everyone_syncs(people: &mut [Profile]) {
    for p in people.iter_mut() {
        p.sync().await.unwrap();
    }
}

fn waiting(pending: &[KeyPending]) -> Vec<UserId> {
    pending.iter().map(|k| k.user).collect()
}

/// Bob's first message goes to Carol (home C) and Dave (home B) though he never wrote to them
/// and did not invite them (in sender-keys rooms it failed: "carol has published no Olm keys
/// on A"). Everyone reads everything; then Alice removes Dave, and the keys rotate across the
/// three homes: the others read each other, Dave reads nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_on_a_with_members_homed_on_a_b_and_c_talks_and_a_removal_rotates_across_homes() {
    for mode in MODES {
        let (a, b, c) = (World::start().await, World::start().await, World::start().await);
        let mut people = mixed_homes(&a, &b, &c, mode).await;
        let names = ["alice", "bob", "carol", "dave"];
        for (i, name) in names.iter().enumerate() {
            let sent = people[i]
                .send_reporting("garden", &grove_wire::content::Content::text(format!("hello from {name}")))
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {name} cannot send: {e}"));
            assert!(sent.key_pending.is_empty(), "{mode:?}: {name}: {:?}", sent.key_pending);
        }
        everyone_syncs(&mut people).await;
        let want: Vec<String> = names.iter().map(|n| format!("hello from {n}")).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(texts(&people[i], "garden"), want, "{mode:?}: {name}");
        }

        let dave = people[3].user_id();
        people[0].remove("garden", &dave).await.unwrap();
        everyone_syncs(&mut people).await;
        for (i, name) in names.iter().enumerate().take(3) {
            people[i].send("garden", &format!("{name}: dave is gone")).await.unwrap();
        }
        everyone_syncs(&mut people).await;
        let mut after = want.clone();
        after.extend(names.iter().take(3).map(|n| format!("{n}: dave is gone")));
        for (i, name) in names.iter().enumerate().take(3) {
            assert_eq!(texts(&people[i], "garden"), after, "{mode:?}: {name}");
        }
        assert_eq!(texts(&people[3], "garden"), want, "{mode:?}: dave reads nothing after his removal");
        if mode == RoomMode::SenderKeys {
            // Every remaining member's chain is of the new membership and reached everyone.
            for (i, name) in names.iter().enumerate().take(3) {
                assert!(people[i].key_pending("garden").unwrap().is_empty(), "{name}");
            }
        }
    }
}

/// Carol's home (C) is down while Alice removes Dave: Alice's and Bob's new keys cannot reach
/// Carol, and each is told so when sending; they go on talking. C comes back (same data
/// folder); Carol reads the room before Alice and Bob retried: their messages wait for their
/// keys. After Alice's and Bob's next sync the keys land and Carol reads everything: no message
/// lost, nobody left on a stale key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_down_during_a_rotation_delays_only_its_member_and_nothing_is_lost() {
    for mode in MODES {
        let (a, b, mut c) = (World::start().await, World::start().await, World::start().await);
        let mut people = mixed_homes(&a, &b, &c, mode).await;
        for (i, name) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
            people[i].send("garden", &format!("hello from {name}")).await.unwrap();
        }
        everyone_syncs(&mut people).await;
        let carol = people[2].user_id();
        let dave = people[3].user_id();

        c.stop().await;
        people[0].remove("garden", &dave).await.unwrap();
        let text = grove_wire::content::Content::text("alice: while C is down");
        let sent = people[0].send_reporting("garden", &text).await.unwrap();
        let bob_sync = people[1].sync().await.unwrap();
        assert!(bob_sync.removed_from.is_empty(), "{mode:?}");
        let text = grove_wire::content::Content::text("bob: while C is down");
        let bob_sent = people[1].send_reporting("garden", &text).await.unwrap();
        if mode == RoomMode::SenderKeys {
            assert_eq!(waiting(&sent.key_pending), [carol], "{mode:?}: alice is told carol waits");
            assert_eq!(sent.key_pending[0].home, c.url, "{mode:?}");
            assert_eq!(waiting(&bob_sent.key_pending), [carol], "{mode:?}: bob is told carol waits");
            // Retried on a sync while C is still down: still waiting, nothing breaks.
            people[0].sync().await.unwrap();
            assert_eq!(waiting(&people[0].key_pending("garden").unwrap()), [carol]);
        } else {
            assert!(sent.key_pending.is_empty() && bob_sent.key_pending.is_empty());
        }
        // Carol cannot read her mailbox while her home is down.
        assert!(people[2].sync().await.is_err(), "{mode:?}");

        c.restart().await;
        // Carol reads first: her own new key reaches Alice (A) and Bob (B).
        people[2].sync().await.unwrap();
        if mode == RoomMode::SenderKeys {
            // Alice's and Bob's keys have not come yet: their messages wait, said so.
            assert!(!texts(&people[2], "garden").contains(&"alice: while C is down".to_string()));
            let waiting = people[2]
                .messages("garden", 0)
                .unwrap()
                .into_iter()
                .filter(|m| String::from_utf8_lossy(&m.body).contains("has not arrived yet"))
                .count();
            assert_eq!(waiting, 2, "{mode:?}");
        }
        people[2].send("garden", "carol: back").await.unwrap();
        // Alice and Bob sync: their keys reach Carol now.
        people[0].sync().await.unwrap();
        people[1].sync().await.unwrap();
        if mode == RoomMode::SenderKeys {
            for p in &people[..3] {
                assert!(p.key_pending("garden").unwrap().is_empty(), "{mode:?}: nobody waits for a key");
            }
        }
        people[2].sync().await.unwrap();
        for (i, name) in ["alice", "bob"].iter().enumerate() {
            people[i].send("garden", &format!("{name}: welcome back")).await.unwrap();
        }
        everyone_syncs(&mut people).await;
        let mut want: Vec<String> =
            ["alice", "bob", "carol", "dave"].iter().map(|n| format!("hello from {n}")).collect();
        let before = want.clone();
        want.extend(
            [
                "alice: while C is down",
                "bob: while C is down",
                "carol: back",
                "alice: welcome back",
                "bob: welcome back",
            ]
            .map(String::from),
        );
        for (i, name) in ["alice", "bob", "carol"].iter().enumerate() {
            assert_eq!(texts(&people[i], "garden"), want, "{mode:?}: {name}");
            let unreadable: Vec<_> = people[i]
                .messages("garden", 0)
                .unwrap()
                .into_iter()
                .filter(|m| m.kind == grove_client::MessageKind::Undecryptable)
                .collect();
            assert!(unreadable.is_empty(), "{mode:?}: {name}: {unreadable:?}");
        }
        assert_eq!(texts(&people[3], "garden"), before, "{mode:?}: dave");
    }
}
