//! A member who poisons a commit (issue 15): Mallory, a member whose client alters its
//! self-update before posting it (`grove_client::profile::misbehave`, feature `testing`). The
//! server checks what it can and takes the commit; the honest members cannot process it, say so
//! to the server, and the room must neither freeze nor split.

use grove_client::profile::misbehave::Forge;
use grove_client::profile::{ClientError, Profile};
use grove_client::{Event, MessageKind, RoomStatus};
use grove_proto::mls::fault::{commit_framing, with_membership_tag};
use grove_proto::policy::Edit;
use grove_wire::api::{EntryKind, FaultReport};
use grove_wire::policy::Role;
use grove_wire::ErrorCode;

use crate::{garden, texts, World};

/// Alice, Bob, Carol and Mallory in `garden`, each of whom said hello.
async fn garden_with_mallory(w: &World) -> (Profile, Profile, Profile, Profile) {
    let (mut alice, mut bob, mut carol) = garden(w).await;
    let mut mallory = w.user("mallory").await;
    alice.invite("garden", &mallory.address().to_string()).await.unwrap();
    assert_eq!(mallory.sync().await.unwrap().joined.len(), 1);
    for (p, name) in [(&mut alice, "alice"), (&mut bob, "bob"), (&mut carol, "carol"), (&mut mallory, "mallory")] {
        p.sync().await.unwrap();
        p.send("garden", &format!("hello from {name}")).await.unwrap();
    }
    for p in [&mut alice, &mut bob, &mut carol, &mut mallory] {
        p.sync().await.unwrap();
    }
    (alice, bob, carol, mallory)
}

/// Flips one bit of the membership tag (the commit's last byte).
fn flip_membership_tag(f: Forge) -> Vec<u8> {
    let mut c = f.commit;
    *c.last_mut().unwrap() ^= 1;
    c
}

/// Flips one bit of the confirmation tag and makes the membership tag anew, so that it
/// verifies.
fn flip_confirmation_tag(f: Forge) -> Vec<u8> {
    let mut c = f.commit;
    let at = commit_framing(&c).unwrap().confirmation_tag.start;
    c[at] ^= 1;
    with_membership_tag(&c, &f.context, &f.membership_key).unwrap()
}

/// The room's epoch on the server.
async fn server_epoch(p: &Profile, url: &str) -> u64 {
    p.server_for(url).room("garden").await.unwrap().epoch
}

/// Every profile's epoch and authenticator: one group, the same for all.
fn one_group(people: &mut [&mut Profile]) -> u64 {
    let views: Vec<(u64, Vec<u8>)> = people.iter_mut().map(|p| p.epoch("garden").unwrap()).collect();
    assert!(views.windows(2).all(|w| w[0] == w[1]), "one epoch and authenticator for all: {views:?}");
    views[0].0
}

/// Mallory's self-update has one bit of its membership tag flipped. The server takes it;
/// Alice, Bob and Carol cannot process it. Alice says something meanwhile. Each honest member's
/// next sync reports the commit with the epoch's membership key; the second report proves the
/// fault and the server voids the commit. After one round of syncs the three are in one epoch,
/// the room's, Bob's update goes through at once, everything Alice said reached everyone, the
/// history names Mallory's commit as voided, and Mallory, removed, reads nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_membership_tag_is_voided_and_the_room_goes_on() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);

    let poisoned = mallory.update_altered("garden", flip_membership_tag).await.unwrap();
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 1, "the server cannot tell");
    alice.send("garden", "alice, while mallory's commit stands").await.unwrap();

    // One round of syncs: Alice reports (one key), Bob reports (the same key: void), Carol
    // reads the void.
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(server_epoch(&alice, &w.url).await, epoch, "the room is back before the commit");
    alice.sync().await.unwrap();
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch);

    // The room works again: Bob commits, everyone follows, Carol talks.
    bob.update("garden").await.unwrap();
    for p in [&mut alice, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 1);
    carol.send("garden", "carol, after the void").await.unwrap();
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    for p in [&alice, &bob, &carol] {
        let said = texts(p, "garden");
        for line in ["alice, while mallory's commit stands", "carol, after the void"] {
            assert_eq!(said.iter().filter(|t| *t == line).count(), 1, "{said:?}");
        }
        // History names the poisoned commit and its void, both from Mallory.
        let history = p.messages("garden", 0).unwrap();
        let bad = history.iter().find(|m| m.seq == poisoned).expect("a line for the poisoned commit");
        assert_eq!((bad.kind, bad.sender), (MessageKind::Undecryptable, mallory.user_id()));
        let void = history
            .iter()
            .find_map(|m| match m.event() {
                Event::Membership(c) => c.voided.map(|v| (m.sender, v.seq, v.epoch)),
                _ => None,
            })
            .expect("a line for the void");
        assert_eq!(void, (mallory.user_id(), poisoned, epoch));
    }

    // Mallory is removed; what follows does not reach her.
    alice_removes_mallory_who_reads_nothing_after(&mut alice, &mut bob, &mut carol, &mut mallory).await;
}

/// A report is believed only as far as its evidence goes. Bob's honest update is reported by
/// Carol with a made-up key (recorded, nothing voided: one key is not enough), then by Mallory
/// with the epoch's true key, under which the tag verifies: refused as false, counted, and after
/// three such, Mallory's reports are not taken at all. A member cannot report its own commit or
/// something that is not a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_report_is_refused_and_counted_and_one_key_voids_nothing() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mallory) = garden_with_mallory(&w).await;
    let epoch = server_epoch(&alice, &w.url).await;
    let mut true_key = Vec::new();
    let update = bob
        .update_altered("garden", |f| {
            true_key = f.membership_key.clone();
            f.commit
        })
        .await
        .unwrap();
    let report = |key: &[u8]| FaultReport {
        seq: update,
        membership_key: Some(key.to_vec()),
        reason: "test".into(),
        admin_void: false,
    };

    let made_up = carol.server_for(&w.url).report_fault("garden", &report(&[9; 32])).await.unwrap();
    assert_eq!((made_up.void_seq, made_up.agreeing), (None, 1));
    for n in 1..=3 {
        let e = mallory.server_for(&w.url).report_fault("garden", &report(&true_key)).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::FalseReport), "false report {n}: {e}");
    }
    let e = mallory.server_for(&w.url).report_fault("garden", &report(&[9; 32])).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    let own = bob.server_for(&w.url).report_fault("garden", &report(&[9; 32])).await.unwrap_err();
    assert_eq!(own.code(), Some(ErrorCode::NotReportable), "{own}");
    let not_commit = FaultReport { seq: 1, membership_key: None, reason: String::new(), admin_void: false };
    let e = alice.server_for(&w.url).report_fault("garden", &not_commit).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotReportable), "{e}");

    // Bob's update stands: everyone follows it.
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 1);
    for p in [&mut alice, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 1);
}

/// Mallory's commit has a wrong confirmation tag under a valid membership tag: nothing the
/// server can check. The honest members cannot process it and report it without proof; the
/// server records the reports and voids nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_confirmation_tag_is_reported_without_proof() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);
    let poisoned = mallory.update_altered("garden", flip_confirmation_tag).await.unwrap();
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
        let line = p.messages("garden", 0).unwrap().into_iter().find(|m| m.seq == poisoned).unwrap();
        assert_eq!(line.kind, MessageKind::Undecryptable);
    }
    // Each honest member reported it (so a fourth report from one of them is its second, the
    // count does not grow), with no key.
    let again = FaultReport { seq: poisoned, membership_key: None, reason: "again".into(), admin_void: false };
    let outcome = alice.server_for(&w.url).report_fault("garden", &again).await.unwrap();
    assert_eq!((outcome.reports, outcome.agreeing, outcome.void_seq), (3, 0, None));
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 1);

    // Alice is told why she cannot change the room (not "busy"), and her messages are still
    // taken (her epoch is within the server's window) and reach Bob and Carol.
    match alice.update("garden").await {
        Err(ClientError::Behind { ours, room_epoch, .. }) => assert_eq!((ours, room_epoch), (epoch, epoch + 1)),
        other => panic!("expected Behind, got {other:?}"),
    }
    alice.send("garden", "alice, behind").await.unwrap();
    for p in [&mut bob, &mut carol] {
        p.sync().await.unwrap();
        assert!(texts(p, "garden").contains(&"alice, behind".to_string()));
    }
}

/// Whether `p` holds an unreadable line for the entry at `seq` (a commit it could not process).
fn could_not_process(p: &Profile, seq: u64) -> bool {
    p.messages("garden", 0).unwrap().iter().any(|m| m.seq == seq && m.kind == MessageKind::Undecryptable)
}

/// Mallory's self-update encrypts garbage path secrets to Alice and Bob (to the node they
/// share); Carol's are sound. Nothing the server can check is wrong,
/// and no key proves anything. Alice and Bob cannot process it; Carol can. Alice says something
/// meanwhile. In two rounds of syncs (Alice and Bob ask, Carol answers with a sealed GroupInfo;
/// Alice resyncs and offers the next one, Bob resyncs from it) and Alice's reading of Bob's
/// resync, all three honest members are in one epoch, the room's; they talk and commit; what Alice said while stuck reached everyone;
/// Mallory's commit is named in Alice's and Bob's history, Alice removes her, and she reads
/// nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_path_secrets_for_two_members_are_healed_by_resync() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);

    mallory.update_garbling("garden", &[alice.user_id(), bob.user_id()]).await.unwrap();
    let poisoned = mallory.messages("garden", 0).unwrap().last().unwrap().seq;
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 1, "the server cannot tell");
    alice.send("garden", "alice, while stuck").await.unwrap();

    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    assert!(could_not_process(&alice, poisoned) && could_not_process(&bob, poisoned));
    assert!(!could_not_process(&carol, poisoned), "carol processed it");
    assert_eq!(carol.epoch("garden").unwrap().0, epoch + 1);
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    let room_epoch = server_epoch(&alice, &w.url).await;
    assert_eq!(room_epoch, epoch + 3, "two resyncs, one after the other");
    // Alice resynced before Bob did: she reads his resync.
    alice.sync().await.unwrap();
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), room_epoch);
    for p in [&alice, &bob] {
        let resynced = p.messages("garden", 0).unwrap().iter().any(|m| match m.event() {
            Event::Membership(c) => c.resynced.is_some(),
            _ => false,
        });
        assert!(resynced, "history says the profile resynced");
    }

    // The room works again: Bob commits, everyone follows, Carol talks.
    bob.update("garden").await.unwrap();
    carol.send("garden", "carol, after the resync").await.unwrap();
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), room_epoch + 1);
    for p in [&alice, &bob, &carol] {
        let said = texts(p, "garden");
        for line in ["alice, while stuck", "carol, after the resync"] {
            assert_eq!(said.iter().filter(|t| *t == line).count(), 1, "{said:?}");
        }
    }
    // Alice's history names who made the commit she could not process; she removes Mallory.
    let bad = alice.messages("garden", 0).unwrap().into_iter().find(|m| m.seq == poisoned).unwrap();
    assert_eq!(bad.sender, mallory.user_id());
    alice_removes_mallory_who_reads_nothing_after(&mut alice, &mut bob, &mut carol, &mut mallory).await;
}

/// The kinds of the room's log entries after `seq`, as the server holds them.
async fn kinds_after(p: &Profile, url: &str, seq: u64) -> Vec<EntryKind> {
    p.server_for(url).read_log("garden", seq, 100, 0).await.unwrap().entries.iter().map(|e| e.kind).collect()
}

/// Whether `p`'s history says it resynced.
fn resynced(p: &Profile) -> bool {
    p.messages("garden", 0).unwrap().iter().any(|m| matches!(m.event(), Event::Membership(c) if c.resynced.is_some()))
}

/// One round of syncs heals a split view (issue 15, item 6). Mallory's self-update encrypts
/// garbage path secrets to Alice and Bob; Carol's are sound. Each honest member then syncs once:
/// Carol, who processes the commit, offers unasked a GroupInfo of her epoch sealed under the
/// resync key of the epoch the commit left; Alice, stuck behind it, finds that offer on the
/// same read and resyncs; Bob, stuck too, resyncs from the GroupInfo Alice then offers. Nobody
/// asked: the log holds no request, one offer per commit and the two resyncs. After that round
/// nobody is stuck: each is on the room's line of epochs. Alice and Bob talk, Carol commits (her
/// update reads the two resyncs as ordinary commits first), one ordinary read each and all
/// three are in Carol's epoch, with everything said read by everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_path_secrets_for_two_members_are_healed_in_one_round_of_syncs() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);
    mallory.update_garbling("garden", &[alice.user_id(), bob.user_id()]).await.unwrap();
    let poisoned = mallory.messages("garden", 0).unwrap().last().unwrap().seq;

    // The round.
    for p in [&mut carol, &mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    assert!(could_not_process(&alice, poisoned) && could_not_process(&bob, poisoned));
    assert!(resynced(&alice) && resynced(&bob) && !resynced(&carol));
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 3, "mallory's commit and two resyncs");
    assert_eq!(
        kinds_after(&carol, &w.url, poisoned).await,
        [EntryKind::Resync, EntryKind::Commit, EntryKind::Resync, EntryKind::Commit, EntryKind::Resync],
        "carol's offer, alice's resync and offer, bob's resync and offer: no request"
    );
    // Nobody is stuck: each holds an epoch of the room's line, the last each read.
    assert_eq!(carol.epoch("garden").unwrap().0, epoch + 1);
    assert_eq!(alice.epoch("garden").unwrap().0, epoch + 2);
    assert_eq!(bob.epoch("garden").unwrap().0, epoch + 3);

    // They talk and commit at once; then each reads, and no more resync happens.
    alice.send("garden", "alice, after the round").await.unwrap();
    bob.send("garden", "bob, after the round").await.unwrap();
    carol.update("garden").await.unwrap();
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 4);
    carol.send("garden", "carol, after her update").await.unwrap();
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    for p in [&alice, &bob, &carol] {
        let said = texts(p, "garden");
        for line in ["alice, after the round", "bob, after the round", "carol, after her update"] {
            assert_eq!(said.iter().filter(|t| *t == line).count(), 1, "{said:?}");
        }
    }
    alice_removes_mallory_who_reads_nothing_after(&mut alice, &mut bob, &mut carol, &mut mallory).await;
}

/// Mallory, a moderator, removes Bob by a commit with a flipped membership tag. The server
/// takes it and stops letting Bob read after it. Bob cannot process it: his client does not
/// take the server's word for his removal (he stays in the room, and what he sends meanwhile
/// waits in his outbox). Alice and Carol prove the fault; the server voids the commit, and Bob,
/// a member again, reads on, his message goes out, and everyone talks in one epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_by_a_poisoned_commit_is_a_member_again_after_the_void() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    alice.edit_policy("garden", Edit::SetRole(mallory.user_id(), Role::Moderator)).await.unwrap();
    for p in [&mut bob, &mut carol, &mut mallory] {
        p.sync().await.unwrap();
    }
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);

    let poisoned = mallory.remove_altered("garden", bob.user_id(), flip_membership_tag).await.unwrap();
    let members = alice.server_for(&w.url).room("garden").await.unwrap().members;
    assert!(!members.contains(&bob.user_id()), "the server believes the commit");

    // Bob reads up to the commit, cannot process it, and is not removed for it.
    bob.sync().await.unwrap();
    assert!(could_not_process(&bob, poisoned));
    assert_eq!(bob.room("garden").unwrap().status, RoomStatus::Active);
    match bob.send("garden", "bob, while the server says he is out").await {
        Err(ClientError::Queued { .. }) => {}
        other => panic!("expected the message to wait, got {other:?}"),
    }

    for p in [&mut alice, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(server_epoch(&alice, &w.url).await, epoch, "voided");
    assert!(alice.server_for(&w.url).room("garden").await.unwrap().members.contains(&bob.user_id()));

    bob.sync().await.unwrap();
    assert_eq!(bob.room("garden").unwrap().status, RoomStatus::Active);
    assert_eq!(bob.outbox_len(Some("garden")).unwrap(), 0, "his message went out once he could post");
    bob.update("garden").await.unwrap();
    for p in [&mut alice, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 1);
    for p in [&alice, &carol] {
        assert!(texts(p, "garden").contains(&"bob, while the server says he is out".to_string()));
    }
}

/// Reports are kept by the server's store. Mallory reports Bob's honest update falsely three
/// times; then she poisons her own update and Alice reports it with the epoch's key. The server
/// restarts. Mallory's next report is refused (her false reports were kept), and Bob's report
/// of the poisoned commit, with the same key as Alice's before the restart, voids it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_false_reports_survive_a_restart_of_the_server() {
    let mut w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let mut true_key = Vec::new();
    let honest = bob
        .update_altered("garden", |f| {
            true_key = f.membership_key.clone();
            f.commit
        })
        .await
        .unwrap();
    let falsely = FaultReport { seq: honest, membership_key: Some(true_key), reason: "lie".into(), admin_void: false };
    for _ in 0..3 {
        let e = mallory.server_for(&w.url).report_fault("garden", &falsely).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::FalseReport), "{e}");
    }
    for p in [&mut alice, &mut carol, &mut mallory] {
        p.sync().await.unwrap();
    }
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);
    let poisoned = mallory.update_altered("garden", flip_membership_tag).await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 1, "one report voids nothing");

    w.stop().await;
    w.restart().await;
    let again = FaultReport { seq: poisoned, membership_key: Some(vec![9; 32]), reason: "x".into(), admin_void: false };
    let e = mallory.server_for(&w.url).report_fault("garden", &again).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    bob.sync().await.unwrap();
    assert_eq!(server_epoch(&alice, &w.url).await, epoch, "Alice's report, from before the restart, counted");
    for p in [&mut alice, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch);
}

/// Mallory's self-update encrypts garbage path secrets to Carol only (her leaf). Carol cannot process it; Alice and Bob can. Carol asks, Alice answers,
/// Carol resyncs: within those syncs all three are in the room's epoch, Carol's message sent
/// while stuck reached both, and after Mallory's removal nothing reaches her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_path_secrets_for_one_member_are_healed_by_resync() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);
    mallory.update_garbling("garden", &[carol.user_id()]).await.unwrap();
    let poisoned = mallory.messages("garden", 0).unwrap().last().unwrap().seq;
    carol.send("garden", "carol, while stuck").await.unwrap();
    for p in [&mut carol, &mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    carol.sync().await.unwrap();
    assert!(could_not_process(&carol, poisoned));
    assert!(!could_not_process(&alice, poisoned) && !could_not_process(&bob, poisoned));
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 2, "mallory's commit, then carol's resync");
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 2);
    for p in [&alice, &bob] {
        assert!(texts(p, "garden").contains(&"carol, while stuck".to_string()));
    }
    carol.update("garden").await.unwrap();
    alice.remove("garden", &mallory.user_id()).await.unwrap();
    carol.send("garden", "carol, without mallory").await.unwrap();
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
        assert!(texts(p, "garden").contains(&"carol, without mallory".to_string()));
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 4);
    let _ = mallory.sync().await;
    assert!(!texts(&mallory, "garden").contains(&"carol, without mallory".to_string()));
}

/// Mallory's commit has a wrong confirmation tag under a valid membership tag: nobody else can
/// process it, so nobody can prove it or offer a resync. Bob, a plain member, cannot void it;
/// Alice, the room's owner, voids it on her word. Everyone reads the void and is back in the
/// epoch they hold; the room works again, and Alice removes Mallory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_nobody_can_process_is_voided_by_an_admin() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);
    let poisoned = mallory.update_altered("garden", flip_confirmation_tag).await.unwrap();
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
        assert!(could_not_process(p, poisoned));
    }
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 1, "no resync: nobody could process it");

    match bob.void_stuck_commit("garden").await {
        Err(ClientError::Server(e)) => assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}"),
        other => panic!("a plain member voided: {other:?}"),
    }
    alice.void_stuck_commit("garden").await.unwrap();
    assert_eq!(server_epoch(&alice, &w.url).await, epoch);
    for p in [&mut bob, &mut carol] {
        p.sync().await.unwrap();
    }
    bob.update("garden").await.unwrap();
    carol.send("garden", "carol, after the admin's void").await.unwrap();
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
        assert!(texts(p, "garden").contains(&"carol, after the admin's void".to_string()));
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 1);
    alice.remove("garden", &mallory.user_id()).await.unwrap();
    let _ = mallory.sync().await;
    alice.send("garden", "alice, without mallory").await.unwrap();
    let _ = mallory.sync().await;
    assert!(!texts(&mallory, "garden").contains(&"alice, without mallory".to_string()));
}

/// An admin voids only the room's last commit: once Mallory commits again on top of her bad
/// commit, Alice's void of it is refused (`not_reportable`) and the room stays where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_voids_only_the_rooms_last_commit() {
    let w = World::start().await;
    let (mut alice, _bob, _carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = server_epoch(&alice, &w.url).await;
    mallory.update_altered("garden", flip_confirmation_tag).await.unwrap();
    alice.sync().await.unwrap();
    mallory.update("garden").await.unwrap();
    match alice.void_stuck_commit("garden").await {
        Err(ClientError::Server(e)) => assert_eq!(e.code(), Some(ErrorCode::NotReportable), "{e}"),
        other => panic!("voided a commit others built on: {other:?}"),
    }
    assert_eq!(server_epoch(&alice, &w.url).await, epoch + 2);
}

/// Alice removes Mallory and writes: Bob and Carol read it, Mallory does not.
async fn alice_removes_mallory_who_reads_nothing_after(
    alice: &mut Profile,
    bob: &mut Profile,
    carol: &mut Profile,
    mallory: &mut Profile,
) {
    alice.remove("garden", &mallory.user_id()).await.unwrap();
    alice.send("garden", "alice, without mallory").await.unwrap();
    for p in [bob, carol] {
        p.sync().await.unwrap();
        assert!(texts(p, "garden").contains(&"alice, without mallory".to_string()));
    }
    let _ = mallory.sync().await;
    assert!(!texts(mallory, "garden").contains(&"alice, without mallory".to_string()));
}

/// What [`flaky_proxy`] does to the room entries of one kind posted through it, in order: the
/// first `dropped` never reach the server, the next `answers_held` reach it but their answer
/// is held for a minute (the client gives up, or dies, before it comes). Everything else goes
/// through.
#[derive(Default)]
struct Flaky {
    dropped: usize,
    answers_held: usize,
    seen: std::sync::atomic::AtomicUsize,
}

/// A proxy in front of `upstream` that breaks the posts of `kind` entries as `flaky` says.
async fn flaky_proxy(upstream: String, kind: EntryKind, flaky: std::sync::Arc<Flaky>) -> String {
    use axum::extract::{Request, State};
    use axum::response::Response;
    use std::sync::atomic::Ordering;

    #[derive(Clone)]
    struct P {
        upstream: String,
        kind: EntryKind,
        flaky: std::sync::Arc<Flaky>,
        http: reqwest::Client,
    }
    fn broken() -> Response {
        let cut =
            futures_util::stream::once(async { Err::<bytes::Bytes, _>(std::io::Error::other("reset by the proxy")) });
        Response::builder().status(200).body(axum::body::Body::from_stream(cut)).unwrap()
    }
    async fn forward(State(p): State<P>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 26).await.unwrap();
        let posted = parts.method == axum::http::Method::POST && parts.uri.path().ends_with("/log");
        let ours =
            posted && serde_json::from_slice::<grove_wire::api::AppendEntry>(&bytes).is_ok_and(|e| e.kind == p.kind);
        let n = if ours { p.flaky.seen.fetch_add(1, Ordering::SeqCst) } else { usize::MAX };
        if n < p.flaky.dropped {
            return broken();
        }
        let (status, headers, answer) =
            crate::proxy::pass(&p.http, &p.upstream, &parts, axum::body::Body::from(bytes)).await;
        if n < p.flaky.dropped + p.flaky.answers_held {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            return broken();
        }
        crate::proxy::respond(status, &headers, answer)
    }
    let state = P { upstream, kind, flaky, http: reqwest::Client::new() };
    crate::proxy::serve(axum::Router::new().fallback(forward).with_state(state)).await
}

/// Sends `p`'s requests to `w`'s server through `proxy`.
fn through(p: &mut Profile, w: &World, proxy: &str) {
    let mut rules = grove_client::profile::ConnectTo::none();
    rules.add(&w.url, proxy);
    p.set_connect_to(rules);
}

/// Mallory's self-update encrypts garbage path secrets to Carol only. Alice reads it first and
/// offers a resync unasked, but her connection drops the offer, twice: once when she posts it,
/// once when her sync posts it again at its end. Her next sync posts it. Carol, on her first
/// read after that, resyncs from it, and the three are in one epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_could_not_be_posted_is_posted_on_the_next_sync() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);
    let flaky = std::sync::Arc::new(Flaky { dropped: 2, ..Flaky::default() });
    let proxy = flaky_proxy(w.url.clone(), EntryKind::Resync, flaky.clone()).await;
    through(&mut alice, &w, &proxy);
    mallory.update_garbling("garden", &[carol.user_id()]).await.unwrap();
    let poisoned = mallory.messages("garden", 0).unwrap().last().unwrap().seq;
    let offers_posted = || flaky.seen.load(std::sync::atomic::Ordering::SeqCst);

    alice.sync().await.unwrap();
    assert_eq!(offers_posted(), 2, "posted, then posted again, both lost");
    assert!(kinds_after(&alice, &w.url, poisoned).await.is_empty(), "no offer reached the server");
    alice.sync().await.unwrap();
    assert_eq!(kinds_after(&alice, &w.url, poisoned).await, [EntryKind::Resync], "the next sync posted it");

    carol.sync().await.unwrap();
    assert!(could_not_process(&carol, poisoned) && resynced(&carol));
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 2);
    assert_eq!(offers_posted(), 4, "and one more, for Carol's resync, at once");
}

/// Mallory's self-update encrypts garbage path secrets to Carol only. Bob offers a resync
/// unasked; Carol resyncs from it, and the room takes her external commit, but her client dies
/// before the answer comes (kill -9: the sync is dropped where it waits). The room now holds a
/// leaf of Carol's for which nobody has the secrets, and Carol's client, reopened, is still in
/// the epoch before Mallory's commit, its cursor past it. Its first sync asks again (what it
/// kept before posting the commit says so); Alice answers; Carol's next read replaces that
/// orphaned leaf by a resync, and the three are in one epoch and talk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_dies_while_posting_its_resync_asks_again_when_reopened() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol, mut mallory) = garden_with_mallory(&w).await;
    let epoch = one_group(&mut [&mut alice, &mut bob, &mut carol, &mut mallory]);
    let flaky = std::sync::Arc::new(Flaky { answers_held: 1, ..Flaky::default() });
    let proxy = flaky_proxy(w.url.clone(), EntryKind::Commit, flaky.clone()).await;
    through(&mut carol, &w, &proxy);
    mallory.update_garbling("garden", &[carol.user_id()]).await.unwrap();

    bob.sync().await.unwrap();
    let died = tokio::time::timeout(std::time::Duration::from_secs(5), carol.sync()).await;
    assert!(died.is_err(), "the sync was waiting for the commit's answer");
    drop(carol);
    let mut carol = Profile::open(&w.profile_dir("carol")).unwrap();
    assert_eq!(server_epoch(&carol, &w.url).await, epoch + 2, "the room took Carol's resync");
    assert_eq!(carol.epoch("garden").unwrap().0, epoch, "Carol never applied it");

    let resync = carol.server_for(&w.url).room("garden").await.unwrap().head;
    carol.sync().await.unwrap();
    assert!(kinds_after(&carol, &w.url, resync).await.contains(&EntryKind::Application), "Carol asked again");
    assert!(!resynced(&carol));
    carol.send("garden", "carol, still stuck").await.unwrap();

    alice.sync().await.unwrap();
    carol.sync().await.unwrap();
    assert!(resynced(&carol));
    assert_eq!(server_epoch(&carol, &w.url).await, epoch + 3, "her second resync replaced the orphaned leaf");
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
    }
    assert_eq!(one_group(&mut [&mut alice, &mut bob, &mut carol]), epoch + 3);
    let members = alice.server_for(&w.url).room("garden").await.unwrap().members;
    assert_eq!(members.iter().filter(|m| **m == carol.user_id()).count(), 1, "one leaf of Carol's: {members:?}");
    carol.send("garden", "carol, back").await.unwrap();
    for p in [&mut alice, &mut bob] {
        p.sync().await.unwrap();
        let said = texts(p, "garden");
        for line in ["carol, still stuck", "carol, back"] {
            assert!(said.contains(&line.to_string()), "{said:?}");
        }
    }
}
