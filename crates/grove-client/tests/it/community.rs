//! Rooms a community can run: roles and bans, in both modes, against a real server. Every story
//! runs once in an MLS room and once in a sender-keys room, with the same calls and the same
//! outcomes.

use grove_client::profile::{ClientError, LinkJoined, Profile};
use grove_client::{Event, RoomStatus};
use grove_proto::policy::Edit;
use grove_wire::api::RoomMode;
use grove_wire::content::{Content, RoomProfile};
use grove_wire::policy::{JoinRule, Role};
use grove_wire::ErrorCode;

use super::{texts, World};

const MODES: [RoomMode; 2] = [RoomMode::Mls, RoomMode::SenderKeys];

/// Alice creates `square` in `mode` and invites Bob, Carol and Mallory, who join.
async fn square(w: &World, mode: RoomMode) -> (Profile, Profile, Profile, Profile) {
    let tag = mode.as_str();
    let mut alice = w.user(&format!("alice-{tag}")).await;
    let mut bob = w.user(&format!("bob-{tag}")).await;
    let mut carol = w.user(&format!("carol-{tag}")).await;
    let mut mallory = w.user(&format!("mallory-{tag}")).await;
    alice.create_room_with_mode(&w.url, "square", mode).await.unwrap();
    for p in [&bob, &carol, &mallory] {
        alice.invite("square", &p.address().to_string()).await.unwrap();
    }
    for p in [&mut bob, &mut carol, &mut mallory, &mut alice] {
        p.sync().await.unwrap();
    }
    (alice, bob, carol, mallory)
}

#[track_caller]
fn not_allowed(r: Result<(), ClientError>) {
    match r {
        Err(ClientError::Server(e)) if e.code() == Some(ErrorCode::NotAllowed) => {}
        other => panic!("expected the server to refuse with not_allowed, got {other:?}"),
    }
}

fn role(p: &mut Profile, of: grove_wire::UserId) -> Role {
    p.policy("square").unwrap().expect("a room with a policy").role_of(&of)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mallory_cannot_remove_bob_until_alice_makes_her_a_moderator() {
    for mode in MODES {
        let w = World::start().await;
        let (mut alice, mut bob, mut carol, mut mallory) = square(&w, mode).await;
        assert_eq!(role(&mut bob, alice.user_id()), Role::Owner, "{mode:?}: the creator is the owner");
        assert_eq!(role(&mut bob, mallory.user_id()), Role::Member);

        // Mallory, a plain member, tries to remove Bob: the server refuses with not_allowed.
        not_allowed(mallory.remove("square", &bob.user_id()).await);
        // Nor may she make herself an admin.
        not_allowed(mallory.edit_policy("square", Edit::SetRole(mallory.user_id(), Role::Admin)).await);
        alice.sync().await.unwrap();
        assert_eq!(alice.members("square").unwrap().len(), 4, "{mode:?}: Bob is still in");

        // Alice makes Mallory a moderator: everyone's state says so.
        alice.edit_policy("square", Edit::SetRole(mallory.user_id(), Role::Moderator)).await.unwrap();
        let mallory_id = mallory.user_id();
        for p in [&mut bob, &mut carol, &mut mallory] {
            p.sync().await.unwrap();
            assert_eq!(role(p, mallory_id), Role::Moderator, "{mode:?}");
        }

        // Now it works; Carol sees Bob go, and Bob learns he was removed.
        mallory.remove("square", &bob.user_id()).await.unwrap();
        carol.sync().await.unwrap();
        assert!(!carol.members("square").unwrap().contains(&bob.user_id()), "{mode:?}");
        bob.sync().await.unwrap();
        assert_eq!(bob.room("square").unwrap().status, RoomStatus::Removed, "{mode:?}");

        // A moderator does not outrank the owner.
        not_allowed(mallory.remove("square", &alice.user_id()).await);
        // Carol, a plain member, may always leave.
        carol.leave("square").await.unwrap();
        // Mallory leaves too, and her role goes with her.
        mallory.leave("square").await.unwrap();
        alice.sync().await.unwrap();
        alice.sync().await.unwrap();
        assert_eq!(alice.members("square").unwrap(), vec![alice.user_id()], "{mode:?}");
        let policy = alice.policy("square").unwrap().unwrap();
        assert_eq!(policy.roles.len(), 1, "{mode:?}: only Alice's role is left: {policy:?}");
        alice.send("square", "alone, and still talking").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_user_cannot_be_invited_back_until_unbanned() {
    for mode in MODES {
        let w = World::start().await;
        let (mut alice, mut bob, mut carol, mut mallory) = square(&w, mode).await;

        // Alice bans Bob: he is removed and listed as banned.
        alice.edit_policy("square", Edit::Ban(bob.user_id())).await.unwrap();
        bob.sync().await.unwrap();
        assert_eq!(bob.room("square").unwrap().status, RoomStatus::Removed, "{mode:?}");
        carol.sync().await.unwrap();
        assert!(carol.policy("square").unwrap().unwrap().is_banned(&bob.user_id()), "{mode:?}");
        assert_eq!(carol.members("square").unwrap().len(), 3);

        // Carol may invite, but not Bob: the server refuses the commit or membership that adds
        // him.
        let err = carol.invite("square", &bob.address().to_string()).await.unwrap_err();
        assert!(matches!(&err, ClientError::Server(e) if e.code() == Some(ErrorCode::NotAllowed)), "{mode:?}: {err:?}");
        // Mallory, a plain member, cannot lift the ban, nor ban Carol.
        not_allowed(mallory.edit_policy("square", Edit::Unban(bob.user_id())).await);
        not_allowed(mallory.edit_policy("square", Edit::Ban(carol.user_id())).await);

        // Alice lifts it; now Carol's invitation goes through and Bob is back.
        alice.edit_policy("square", Edit::Unban(bob.user_id())).await.unwrap();
        carol.invite("square", &bob.address().to_string()).await.unwrap();
        bob.sync().await.unwrap();
        assert_eq!(bob.room("square").unwrap().status, RoomStatus::Active, "{mode:?}");
        assert_eq!(bob.members("square").unwrap().len(), 4, "{mode:?}");
        bob.send("square", "back again").await.unwrap();
        alice.sync().await.unwrap();
        assert!(alice.messages("square", 0).unwrap().iter().any(|m| m.text().as_deref() == Some("back again")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_has_a_name_and_topic_only_its_admins_set_and_the_server_cannot_read() {
    for mode in MODES {
        let mut w = World::start().await;
        let (mut alice, mut bob, mut carol, mut mallory) = square(&w, mode).await;

        // Alice, the owner, names the room; everyone sees it.
        alice.set_room_profile("square", Some("Paris protests"), Some("Saturday at République")).await.unwrap();
        for p in [&mut bob, &mut carol, &mut mallory] {
            p.sync().await.unwrap();
            let r = p.room_profile("square").unwrap();
            assert_eq!((r.name.as_str(), r.topic.as_str()), ("Paris protests", "Saturday at République"), "{mode:?}");
        }

        // Mallory, a plain member, cannot change the room's name: her client says so...
        let err = mallory.set_room_profile("square", Some("Mallory's party"), None).await.unwrap_err();
        assert!(matches!(&err, ClientError::Invalid(m) if m.contains("admin")), "{mode:?}: {err:?}");
        // ...and a client that sends it anyway (the server cannot check what it cannot read) is
        // ignored by every client, hers included.
        let forged = RoomProfile { name: "Mallory's party".into(), topic: "free beer".into() };
        mallory.send_content("square", &Content::RoomProfile(forged)).await.unwrap();
        for p in [&mut alice, &mut bob, &mut mallory] {
            p.sync().await.unwrap();
            assert_eq!(p.room_profile("square").unwrap().name, "Paris protests", "{mode:?}");
        }
        let last = bob.messages("square", 0).unwrap().pop().unwrap();
        assert!(matches!(last.event(), Event::Note(t) if t.contains("ignored")), "{mode:?}: {last:?}");

        // Alice makes Carol an admin: Carol may now change the topic (the name stays), and a
        // role change reads as what it is in history.
        alice.edit_policy("square", Edit::SetRole(carol.user_id(), Role::Admin)).await.unwrap();
        bob.sync().await.unwrap();
        let line = bob.messages("square", 0).unwrap().pop().unwrap();
        match line.event() {
            Event::Membership(m) => assert_eq!(m.roles, vec![(carol.user_id(), Role::Admin)], "{mode:?}"),
            other => panic!("{mode:?}: {other:?}"),
        }
        carol.set_room_profile("square", None, Some("Sunday, 2pm")).await.unwrap();
        // Then she loses the role; what she sends after that is ignored.
        alice.edit_policy("square", Edit::SetRole(carol.user_id(), Role::Member)).await.unwrap();
        let stale = RoomProfile { name: "Carol's room".into(), topic: "".into() };
        carol.send_content("square", &Content::RoomProfile(stale)).await.unwrap();
        for p in [&mut alice, &mut bob, &mut carol, &mut mallory] {
            p.sync().await.unwrap();
            let r = p.room_profile("square").unwrap();
            assert_eq!((r.name.as_str(), r.topic.as_str()), ("Paris protests", "Sunday, 2pm"), "{mode:?}");
        }

        // The server never saw the name nor the topic.
        for (path, bytes) in w.stop().await {
            for secret in [b"Paris protests".as_slice(), b"Sunday, 2pm", "République".as_bytes()] {
                assert!(!bytes.windows(secret.len()).any(|win| win == secret), "{mode:?}: {} holds it", path.display());
            }
        }
    }
}

/// What using a link of a room whose join rule is `link` does: in an MLS room, the holder is in
/// at once (an external commit); in a sender-keys room, its request waits for an admin's client.
fn at_once_in(mode: RoomMode) -> LinkJoined {
    match mode {
        RoomMode::Mls => LinkJoined::Joined,
        RoomMode::SenderKeys => LinkJoined::Asked(JoinRule::Link),
    }
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>, code: ErrorCode) {
    match r {
        Err(ClientError::Server(e)) if e.code() == Some(code) => {}
        other => panic!("expected the server to refuse with {}, got {other:?}", code.as_str()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_for_two_uses_lets_two_in_and_no_one_after_it_is_used_up_revoked_or_they_are_banned() {
    for mode in MODES {
        let w = World::start().await;
        let tag = mode.as_str();
        let (mut alice, mut bob, mut carol, mut mallory) = square(&w, mode).await;
        let mut dave = w.user(&format!("dave-{tag}")).await;
        let mut erin = w.user(&format!("erin-{tag}")).await;
        let mut frank = w.user(&format!("frank-{tag}")).await;
        let mut grace = w.user(&format!("grace-{tag}")).await;

        // A new room is invite-only: Mallory, a plain member, can neither open it nor make a link.
        assert_eq!(alice.policy("square").unwrap().unwrap().join, JoinRule::InviteOnly);
        not_allowed(mallory.set_join_rule("square", JoinRule::Link).await);
        refused(mallory.make_link("square", None, None).await, ErrorCode::NotAllowed);
        // A link of an invite-only room lets nobody ask.
        let (closed, _) = alice.make_link("square", None, None).await.unwrap();
        refused(dave.join_link(&closed).await, ErrorCode::NotAllowed);

        // Alice opens the room to links and makes one for two uses.
        alice.set_join_rule("square", JoinRule::Link).await.unwrap();
        let (link, info) = alice.make_link("square", Some(2), Some(3600)).await.unwrap();
        assert_eq!((info.max_uses, info.uses), (Some(2), 0));
        assert!(link.starts_with(&alice.room("square").unwrap().link) && link.contains('#'), "{link}");
        refused(dave.join_link(&closed).await, ErrorCode::LinkInvalid);

        // Dave and Erin use it; Frank's use is refused: it is used up. In the MLS room they are
        // in at once (an external commit; Dave, in, keeps the room's state for Erin); in the
        // sender-keys room their requests wait for Alice's client.
        let by_link = at_once_in(mode);
        assert_eq!(dave.join_link(&link).await.unwrap(), by_link, "{mode:?}");
        assert_eq!(erin.join_link(&link).await.unwrap(), by_link, "{mode:?}");
        refused(frank.join_link(&link).await, ErrorCode::LinkUsedUp);

        // Alice's client lets them in on its next sync (sender-keys); they read and write.
        alice.sync().await.unwrap();
        for p in [&mut dave, &mut erin] {
            let joined = if mode == RoomMode::Mls { 0 } else { 1 };
            assert_eq!(p.sync().await.unwrap().joined.len(), joined, "{mode:?}");
            p.send("square", "hello, square").await.unwrap();
        }
        bob.sync().await.unwrap();
        assert_eq!(bob.members("square").unwrap().len(), 6, "{mode:?}");
        assert_eq!(texts(&bob, "square").iter().filter(|t| *t == "hello, square").count(), 2, "{mode:?}");
        assert!(alice.join_requests("square").await.unwrap().is_empty());

        // A request the server could make up (the token, but no proof of the secret) is not
        // carried out by Alice's client: it waits for an admin's decision.
        let token = grove_wire::invite::token(&grove_wire::invite::parse(&link).unwrap().1).to_vec();
        let forged = grove_wire::api::AskToJoin { token, home: w.url.clone(), proof: vec![0; 32] };
        let room_server = frank.server_for(&w.url);
        refused(room_server.ask_to_join("square", &forged).await.map_err(ClientError::from), ErrorCode::LinkUsedUp);
        alice.revoke_link("square").await.unwrap();
        let (link, _) = alice.make_link("square", None, None).await.unwrap();
        let token = grove_wire::invite::token(&grove_wire::invite::parse(&link).unwrap().1).to_vec();
        let forged = grove_wire::api::AskToJoin { token, home: w.url.clone(), proof: vec![0; 32] };
        room_server.ask_to_join("square", &forged).await.unwrap();
        alice.sync().await.unwrap();
        assert!(frank.sync().await.unwrap().joined.is_empty(), "{mode:?}: a request without a proof was carried out");
        assert_eq!(alice.join_requests("square").await.unwrap().len(), 1, "{mode:?}: it waits for an admin");
        assert!(alice.deny("square", &frank.user_id()).await.unwrap());

        // Alice revokes it: Frank is refused again, now because there is no such link.
        assert!(alice.revoke_link("square").await.unwrap());
        refused(frank.join_link(&link).await, ErrorCode::LinkInvalid);

        // Mallory is banned: a fresh link does not let her back.
        alice.edit_policy("square", Edit::Ban(mallory.user_id())).await.unwrap();
        mallory.sync().await.unwrap();
        let (fresh, _) = alice.make_link("square", None, None).await.unwrap();
        refused(mallory.join_link(&fresh).await, ErrorCode::NotAllowed);
        // Grace uses the link (MLS: she is in at once), and Alice bans her before she says
        // anything: she is out (sender-keys: her request is never carried out).
        assert_eq!(grace.join_link(&fresh).await.unwrap(), at_once_in(mode));
        alice.edit_policy("square", Edit::Ban(grace.user_id())).await.unwrap();
        alice.sync().await.unwrap();
        assert!(grace.sync().await.unwrap().joined.is_empty(), "{mode:?}");
        assert!(!alice.members("square").unwrap().contains(&grace.user_id()));
        carol.sync().await.unwrap();
        assert_eq!(carol.members("square").unwrap().len(), 5, "{mode:?}: Mallory out, Dave and Erin in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_approval_bob_waits_for_alice_who_approves_him_and_denies_carol() {
    for mode in MODES {
        let w = World::start().await;
        let tag = mode.as_str();
        let mut alice = w.user(&format!("alice-{tag}")).await;
        let mut bob = w.user(&format!("bob-{tag}")).await;
        let mut carol = w.user(&format!("carol-{tag}")).await;
        alice.create_room_with_mode(&w.url, "square", mode).await.unwrap();
        alice.set_join_rule("square", JoinRule::Approval).await.unwrap();
        let (link, _) = alice.make_link("square", None, None).await.unwrap();

        // Bob asks; nothing happens by itself.
        assert_eq!(bob.join_link(&link).await.unwrap(), LinkJoined::Asked(JoinRule::Approval));
        assert_eq!(carol.join_link(&link).await.unwrap(), LinkJoined::Asked(JoinRule::Approval));
        alice.sync().await.unwrap();
        assert!(bob.sync().await.unwrap().joined.is_empty(), "{mode:?}");
        // Alice sees the requests, approves Bob and denies Carol.
        let waiting: Vec<_> = alice.join_requests("square").await.unwrap().into_iter().map(|r| r.user).collect();
        assert_eq!(waiting.len(), 2);
        assert!(waiting.contains(&bob.user_id()) && waiting.contains(&carol.user_id()));
        alice.approve("square", &bob.user_id()).await.unwrap();
        assert!(alice.deny("square", &carol.user_id()).await.unwrap());
        assert!(alice.join_requests("square").await.unwrap().is_empty());

        // Bob reads and writes (he asked, so the invitation is accepted); Carol is not in.
        assert_eq!(bob.sync().await.unwrap().joined.len(), 1, "{mode:?}");
        assert_eq!(bob.invitation("square").unwrap(), None, "{mode:?}");
        bob.send("square", "thanks for letting me in").await.unwrap();
        alice.sync().await.unwrap();
        assert!(texts(&alice, "square").contains(&"thanks for letting me in".to_string()), "{mode:?}");
        assert!(carol.sync().await.unwrap().joined.is_empty(), "{mode:?}");
        assert_eq!(alice.members("square").unwrap().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_spam_is_capped_per_room_and_rate_limited_per_address() {
    let w = World::start_with(|c| {
        c.limits.pending_joins_per_room = 2;
        c.limits.join_requests_per_ip_per_hour = 5;
    })
    .await;
    let mut alice = w.user("alice").await;
    alice.create_room(&w.url, "square").await.unwrap();
    alice.set_join_rule("square", JoinRule::Approval).await.unwrap();
    let (link, _) = alice.make_link("square", None, None).await.unwrap();
    let mut askers = Vec::new();
    for n in 0..4 {
        askers.push(w.user(&format!("asker-{n}")).await);
    }
    // Two requests wait; the third finds the room's queue full (and uses nothing).
    askers[0].join_link(&link).await.unwrap();
    askers[1].join_link(&link).await.unwrap();
    refused(askers[2].join_link(&link).await, ErrorCode::JoinQueueFull);
    // Asking again while waiting changes nothing.
    askers[0].join_link(&link).await.unwrap();
    // That was the fourth request from this address (all the askers share 127.0.0.1); the
    // fifth is the last one it may make this hour, the sixth is refused.
    refused(askers[3].join_link(&link).await, ErrorCode::JoinQueueFull);
    refused(askers[3].join_link(&link).await, ErrorCode::RateLimited);
    assert_eq!(alice.join_requests("square").await.unwrap().len(), 2);
}
