//! MLS link joins by external commit, against a real server: a link holder is in at once, with
//! nobody who can invite online; the server keeps only ciphertext of the room's state; a ban
//! and a reset link keep people out; a stale state on the server falls back to a request.

use grove_client::profile::{ClientError, LinkJoined};
use grove_client::RoomStatus;
use grove_proto::policy::Edit;
use grove_wire::api::RoomMode;
use grove_wire::content::Content;
use grove_wire::policy::JoinRule;
use grove_wire::ErrorCode;

use super::{texts, World};

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>, code: ErrorCode) {
    match r {
        Err(ClientError::Server(e)) if e.code() == Some(code) => {}
        other => panic!("expected the server to refuse with {}, got {other:?}", code.as_str()),
    }
}

/// Alice makes a link and goes offline. In the MLS room Dave joins by the link at once and
/// reads Bob's next message; Mallory, banned, is refused with not_allowed. In the sender-keys
/// room Dave's request waits until Alice is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_makes_a_link_and_goes_offline_dave_joins_at_once_mallory_banned_is_refused() {
    for mode in [RoomMode::Mls, RoomMode::SenderKeys] {
        let w = World::start().await;
        let tag = mode.as_str();
        let mut alice = w.user(&format!("alice-{tag}")).await;
        let mut bob = w.user(&format!("bob-{tag}")).await;
        let mut dave = w.user(&format!("dave-{tag}")).await;
        let mut mallory = w.user(&format!("mallory-{tag}")).await;
        alice.create_room_with_mode(&w.url, "plaza", mode).await.unwrap();
        for p in [&bob, &mallory] {
            alice.invite("plaza", &p.address().to_string()).await.unwrap();
        }
        for p in [&mut bob, &mut mallory, &mut alice] {
            p.sync().await.unwrap();
        }
        alice.edit_policy("plaza", Edit::Ban(mallory.user_id())).await.unwrap();
        alice.set_join_rule("plaza", JoinRule::Link).await.unwrap();
        let (link, _) = alice.make_link("plaza", Some(5), Some(3600)).await.unwrap();
        // Alice goes offline: she does nothing more until told.
        bob.sync().await.unwrap();
        mallory.sync().await.unwrap();

        // Mallory, banned, is refused.
        refused(mallory.join_link(&link).await, ErrorCode::NotAllowed);

        match mode {
            RoomMode::Mls => {
                assert_eq!(dave.join_link(&link).await.unwrap(), LinkJoined::Joined);
                assert_eq!(dave.room("plaza").unwrap().status, RoomStatus::Active);
                assert_eq!(dave.members("plaza").unwrap().len(), 3, "Alice, Bob and Dave");
                // Bob sees Dave come in and says hello; Dave reads it.
                bob.sync().await.unwrap();
                assert!(bob.members("plaza").unwrap().contains(&dave.user_id()));
                bob.send("plaza", "hello dave").await.unwrap();
                dave.sync().await.unwrap();
                assert_eq!(texts(&dave, "plaza"), vec!["hello dave".to_string()]);
                dave.send("plaza", "hi bob").await.unwrap();
                bob.sync().await.unwrap();
                assert!(texts(&bob, "plaza").contains(&"hi bob".to_string()));
            }
            RoomMode::SenderKeys => {
                assert_eq!(dave.join_link(&link).await.unwrap(), LinkJoined::Asked(JoinRule::Link));
                assert!(dave.sync().await.unwrap().joined.is_empty(), "nobody let him in: Alice is away");
                alice.sync().await.unwrap();
                assert_eq!(dave.sync().await.unwrap().joined.len(), 1);
                bob.sync().await.unwrap();
                bob.send("plaza", "hello dave").await.unwrap();
                dave.sync().await.unwrap();
                assert!(texts(&dave, "plaza").contains(&"hello dave".to_string()));
            }
        }
        // Alice is back: she sees Dave in; Mallory is still out.
        alice.sync().await.unwrap();
        let members = alice.members("plaza").unwrap();
        assert!(members.contains(&dave.user_id()), "{mode:?}");
        assert!(!members.contains(&mallory.user_id()), "{mode:?}");
    }
}

/// The state on the server falls behind: Bob, who does not hold the link, updates his keys
/// while Alice is away. Dave's external commit is of an epoch the room left, so his join falls
/// back to a request, which Alice's client carries out when she is back; her client then keeps
/// the room's new state for the link, and Erin joins at once. Alice resets the link: the old
/// one opens nothing, and Frank, with it, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_room_state_falls_back_to_a_request_and_a_reset_link_opens_nothing() {
    let w = World::start().await;
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    let mut dave = w.user("dave").await;
    let mut erin = w.user("erin").await;
    let mut frank = w.user("frank").await;
    alice.create_room_with_mode(&w.url, "plaza", RoomMode::Mls).await.unwrap();
    alice.invite("plaza", &bob.address().to_string()).await.unwrap();
    bob.sync().await.unwrap();
    alice.set_join_rule("plaza", JoinRule::Link).await.unwrap();
    let (link, _) = alice.make_link("plaza", None, None).await.unwrap();

    // Alice is away; Bob updates his keys: the room moves on, the state Alice kept does not.
    bob.sync().await.unwrap();
    bob.update("plaza").await.unwrap();
    assert_eq!(dave.join_link(&link).await.unwrap(), LinkJoined::Asked(JoinRule::Link));
    assert_eq!(dave.room("plaza").map(|r| r.status).ok(), None, "not in yet");

    // Alice is back: her client lets Dave in and keeps the room's current state for the link.
    alice.sync().await.unwrap();
    assert_eq!(dave.sync().await.unwrap().joined.len(), 1);
    assert_eq!(erin.join_link(&link).await.unwrap(), LinkJoined::Joined);
    for p in [&mut alice, &mut bob, &mut dave] {
        p.sync().await.unwrap();
        assert_eq!(p.members("plaza").unwrap().len(), 4);
    }
    erin.send("plaza", "erin here").await.unwrap();
    alice.sync().await.unwrap();
    assert!(texts(&alice, "plaza").contains(&"erin here".to_string()));

    // A reset: the old link is refused before anything of the room is handed out.
    let (fresh, _) = alice.make_link("plaza", None, None).await.unwrap();
    refused(frank.join_link(&link).await, ErrorCode::LinkInvalid);
    assert_eq!(frank.join_link(&fresh).await.unwrap(), LinkJoined::Joined);
}

/// Other members let link holders in too: Alice shares the link's secret inside the group when
/// she makes it, and goes away. In the sender-keys room, Bob's sync carries out Dave's request.
/// In the MLS room, Carol updates her keys (the state Alice kept falls behind), and Bob's sync
/// keeps the room's current state for the link: Dave joins at once. Carol, a member who may
/// not change the settings, shares a link key of her own: every client ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_lets_dave_in_while_alice_who_made_the_link_is_away() {
    for mode in [RoomMode::Mls, RoomMode::SenderKeys] {
        let w = World::start().await;
        let tag = mode.as_str();
        let mut alice = w.user(&format!("alice-{tag}")).await;
        let mut bob = w.user(&format!("bob-{tag}")).await;
        let mut carol = w.user(&format!("carol-{tag}")).await;
        let mut dave = w.user(&format!("dave-{tag}")).await;
        alice.create_room_with_mode(&w.url, "plaza", mode).await.unwrap();
        for p in [&bob, &carol] {
            alice.invite("plaza", &p.address().to_string()).await.unwrap();
        }
        for p in [&mut bob, &mut carol, &mut alice] {
            p.sync().await.unwrap();
        }
        alice.set_join_rule("plaza", JoinRule::Link).await.unwrap();
        let (link, _) = alice.make_link("plaza", None, None).await.unwrap();
        // Alice is away from here on. Mallory-like Carol, a plain member, slips a link key of
        // her own in: ignored (had Bob taken it, Dave's proof would not verify under it, and
        // the server would refuse Bob's GroupInfo for it).
        carol.sync().await.unwrap();
        carol.send_content("plaza", &Content::LinkKey { secret: vec![7; 32] }).await.unwrap();
        // Bob learns the link's secret on his sync.
        bob.sync().await.unwrap();
        match mode {
            RoomMode::Mls => {
                carol.sync().await.unwrap();
                carol.update("plaza").await.unwrap();
                bob.sync().await.unwrap();
                assert_eq!(dave.join_link(&link).await.unwrap(), LinkJoined::Joined);
            }
            RoomMode::SenderKeys => {
                assert_eq!(dave.join_link(&link).await.unwrap(), LinkJoined::Asked(JoinRule::Link));
                bob.sync().await.unwrap();
                assert_eq!(dave.sync().await.unwrap().joined.len(), 1, "Bob let him in");
            }
        }
        bob.sync().await.unwrap();
        assert!(bob.members("plaza").unwrap().contains(&dave.user_id()), "{mode:?}");
        dave.send("plaza", "thanks, bob").await.unwrap();
        bob.sync().await.unwrap();
        assert!(texts(&bob, "plaza").contains(&"thanks, bob".to_string()), "{mode:?}");
        // The secret never appears in anyone's history.
        assert!(texts(&bob, "plaza").iter().all(|t| !t.contains("link_key")), "{mode:?}");
    }
}
