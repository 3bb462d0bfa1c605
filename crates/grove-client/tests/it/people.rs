//! The client as people use it: several processes on one profile, offline sends, names,
//! replies and reactions.

use grove_client::profile::{ClientError, Profile};
use grove_client::{Event, MessageKind};
use grove_wire::api::RoomMode;
use grove_wire::content::{Content, SignedProfile};

use crate::{garden, texts, World};

/// Bob is invited to Alice's room: he reads it at once, but the room learns his name only
/// when he accepts. Carol declines: she leaves, and the room never learned her name. Dave
/// just writes: that accepts, and his name arrives before his message. In both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_is_read_before_it_is_accepted_and_a_declined_one_tells_nothing() {
    let w = World::start().await;
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    let mut carol = w.user("carol").await;
    let mut dave = w.user("dave").await;
    for (p, name) in [(&mut alice, "Alice"), (&mut bob, "Bob"), (&mut carol, "Carol"), (&mut dave, "Dave")] {
        p.set_name(name).await.unwrap();
    }
    for (room, mode) in [("garden", RoomMode::Mls), ("shed", RoomMode::SenderKeys)] {
        alice.create_room_with_mode(&w.url, room, mode).await.unwrap();
        alice.invite(room, &bob.address().to_string()).await.unwrap();
        alice.send(room, "the seeds arrived").await.unwrap();

        // Bob's sync joins the room, pending: he sees who invited him and can read it.
        assert_eq!(bob.sync().await.unwrap().joined.len(), 1, "{room}");
        let waiting = bob.invitations().unwrap();
        assert_eq!(waiting.len(), 1, "{room}");
        assert_eq!(waiting[0].inviter, alice.user_id(), "{room}");
        assert!(texts(&bob, room).contains(&"the seeds arrived".to_string()), "{room}: {:?}", texts(&bob, room));
        // Bob renames himself: a pending room is not told.
        bob.set_name("Bob").await.unwrap();
        alice.sync().await.unwrap();
        assert_eq!(alice.display_names(room).unwrap().get(&bob.user_id()), None, "{room}");

        // Bob accepts: the room learns his name; there is nothing left to accept.
        bob.accept(room).await.unwrap();
        assert!(bob.invitations().unwrap().is_empty(), "{room}");
        alice.sync().await.unwrap();
        assert_eq!(alice.display_names(room).unwrap().get(&bob.user_id()).map(String::as_str), Some("Bob"), "{room}");
        let again = bob.accept(room).await.unwrap_err().to_string();
        assert!(again.contains("no invitation"), "{again}");
        assert!(bob.decline(room).await.unwrap_err().to_string().contains("grove room leave"));

        // Carol declines: she has left, and nobody learned her name.
        alice.invite(room, &carol.address().to_string()).await.unwrap();
        carol.sync().await.unwrap();
        carol.decline(room).await.unwrap();
        assert_eq!(carol.room(room).unwrap().status, grove_client::RoomStatus::Left, "{room}");
        assert!(carol.invitations().unwrap().is_empty(), "{room}");
        for p in [&mut alice, &mut bob] {
            p.sync().await.unwrap();
            p.sync().await.unwrap();
            assert_eq!(p.display_names(room).unwrap().get(&carol.user_id()), None, "{room}");
        }
        alice.sync().await.unwrap();
        assert!(!alice.members(room).unwrap().contains(&carol.user_id()), "{room}: Carol is still a member");

        // Dave writes without accepting: his name arrives with his first message.
        alice.invite(room, &dave.address().to_string()).await.unwrap();
        dave.sync().await.unwrap();
        dave.send(room, "hello from Dave").await.unwrap();
        assert!(dave.invitations().unwrap().is_empty(), "{room}");
        alice.sync().await.unwrap();
        assert_eq!(alice.display_names(room).unwrap().get(&dave.user_id()).map(String::as_str), Some("Dave"));
        assert!(texts(&alice, room).contains(&"hello from Dave".to_string()), "{room}");
    }
}

/// Alice's profile open twice (as two processes would): one sends while the other
/// checkpoints. Before the profile lock, a checkpoint from a stale in-memory state could erase
/// the sender's journal rows (rolling a ratchet back behind a message already sent) or fail on
/// the journal's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_racing_sends_erases_nothing() {
    let w = World::start().await;
    let (mut alice, mut bob, _carol) = garden(&w).await;
    let mut other = Profile::open(&w.profile_dir("alice")).unwrap();
    let mut want = Vec::new();
    for i in 0..20 {
        let text = format!("race {i}");
        let (sent, checkpointed) = tokio::join!(alice.send("garden", &text), other.checkpoint());
        sent.unwrap();
        checkpointed.unwrap();
        want.push(text);
    }
    // Both handles and a fresh one go on sending, each under a new key.
    other.send("garden", "from the other handle").await.unwrap();
    alice.send("garden", "from the first handle").await.unwrap();
    Profile::open(&w.profile_dir("alice")).unwrap().send("garden", "from a fresh process").await.unwrap();
    want.extend(["from the other handle", "from the first handle", "from a fresh process"].map(String::from));
    bob.sync().await.unwrap();
    let unreadable: Vec<_> =
        bob.messages("garden", 0).unwrap().into_iter().filter(|m| m.kind == MessageKind::Undecryptable).collect();
    assert!(unreadable.is_empty(), "{unreadable:?}");
    assert_eq!(texts(&bob, "garden"), want);
    // Alice's own history has each once, whichever handle wrote it.
    assert_eq!(texts(&Profile::open(&w.profile_dir("alice")).unwrap(), "garden"), want);
}

/// Alice writes while her server is down: the message waits in the outbox, and the next
/// command that reaches the server posts it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_written_offline_is_sent_later_once() {
    for mode in ["mls", "sender-keys"] {
        let mut w = World::start().await;
        let mut alice = w.user("alice").await;
        let mut bob = w.user("bob").await;
        let mode = grove_wire::api::RoomMode::parse(mode).unwrap();
        alice.create_room_with_mode(&w.url, "garden", mode).await.unwrap();
        alice.invite("garden", &bob.address().to_string()).await.unwrap();
        bob.sync().await.unwrap();
        alice.send("garden", "before").await.unwrap();

        w.stop().await;
        for text in ["written offline 1", "written offline 2"] {
            match alice.send("garden", text).await {
                Err(ClientError::Queued { .. }) => {}
                other => panic!("{mode:?}: expected queued, got {other:?}"),
            }
        }
        assert_eq!(alice.outbox().unwrap().len(), 2);
        // A restart of the process keeps them.
        let mut alice = Profile::open(&w.profile_dir("alice")).unwrap();
        assert_eq!(alice.outbox().unwrap().len(), 2);

        w.restart().await;
        alice.sync().await.unwrap();
        assert!(alice.outbox().unwrap().is_empty());
        // Syncing again sends nothing twice.
        alice.sync().await.unwrap();
        bob.sync().await.unwrap();
        let want = ["before", "written offline 1", "written offline 2"].map(String::from).to_vec();
        assert_eq!(texts(&bob, "garden"), want, "{mode:?}");
        assert_eq!(texts(&alice, "garden"), want, "{mode:?}");
    }
}

/// Names travel inside the group: each member's own, signed; a later member learns the
/// earlier ones from the inviter's roster; nobody can set another's name; equal names are told
/// apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_come_from_each_member_and_nobody_sets_anothers() {
    let w = World::start().await;
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    let mut carol = w.user("carol").await;
    alice.set_name("Alice Liddell").await.unwrap();
    bob.set_name("Bob Dobbs").await.unwrap();
    alice.create_room(&w.url, "garden").await.unwrap();
    alice.invite("garden", &bob.address().to_string()).await.unwrap();
    bob.sync().await.unwrap();
    bob.accept("garden").await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(alice.display_names("garden").unwrap().get(&bob.user_id()).map(String::as_str), Some("Bob Dobbs"));
    assert_eq!(bob.display_names("garden").unwrap().get(&alice.user_id()).map(String::as_str), Some("Alice Liddell"));

    // Carol joins later: she learns Alice's and Bob's names from Alice's roster.
    alice.invite("garden", &carol.address().to_string()).await.unwrap();
    carol.sync().await.unwrap();
    let names = carol.display_names("garden").unwrap();
    assert_eq!(names.get(&alice.user_id()).map(String::as_str), Some("Alice Liddell"));
    assert_eq!(names.get(&bob.user_id()).map(String::as_str), Some("Bob Dobbs"));

    // Carol tries to rename Bob: a profile naming Bob, signed by Carol; and a roster with a
    // forged signature. Both are ignored.
    let bad_sig = carol_signs(&w, &carol, "garden", &bob.user_id(), 99, "Bob the Fool");
    carol.send_content("garden", &Content::Profile(bad_sig.clone())).await.unwrap();
    carol.send_content("garden", &Content::Roster { profiles: vec![bad_sig] }).await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(alice.display_names("garden").unwrap().get(&bob.user_id()).map(String::as_str), Some("Bob Dobbs"));

    // Carol calls herself Alice too: the two are told apart by a short id.
    carol.set_name("Alice Liddell").await.unwrap();
    alice.sync().await.unwrap();
    let names = alice.display_names("garden").unwrap();
    assert_eq!(names[&carol.user_id()], format!("Alice Liddell ({})", carol.user_id().short()));
    assert_eq!(names[&alice.user_id()], format!("Alice Liddell ({})", alice.user_id().short()));
    // Names never reach the server: its files hold no "Bob Dobbs" nor "Alice Liddell".
    let mut w = w;
    for (path, bytes) in w.stop().await {
        for name in [b"Alice Liddell".as_slice(), b"Bob Dobbs"] {
            assert!(!bytes.windows(name.len()).any(|win| win == name), "{} holds a name", path.display());
        }
    }
}

fn carol_signs(
    w: &World,
    carol: &Profile,
    room: &str,
    user: &grove_wire::UserId,
    rev: u64,
    name: &str,
) -> SignedProfile {
    // Carol's own key signs a profile that names Bob: `verify` checks it against Bob's key.
    use ed25519_dalek::Signer;
    let link = carol.room(room).unwrap().link;
    let store = grove_client::ClientStore::open(&w.profile_dir("carol").join("state.db")).unwrap();
    let secret: [u8; 32] = store.meta("identity").unwrap().unwrap().try_into().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    let sig = key.sign(&SignedProfile::signing_bytes(&link, user, rev, name)).to_bytes().to_vec();
    SignedProfile { user: *user, name: name.into(), rev, sig }
}

/// Replies, edits, deletes and reactions are kept as structured events; a kind from a newer
/// client is kept as unsupported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_edits_reactions_and_unknown_kinds_are_kept() {
    let w = World::start().await;
    let (mut alice, mut bob, _carol) = garden(&w).await;
    let first = alice.send("garden", "lunch?").await.unwrap();
    bob.send_content("garden", &Content::Reply { to: first, text: "yes".into() }).await.unwrap();
    bob.send_content("garden", &Content::Reaction { to: first, key: "👍".into(), remove: false }).await.unwrap();
    alice.send_content("garden", &Content::Edit { of: first, text: "lunch at noon?".into() }).await.unwrap();
    alice.send_content("garden", &Content::Delete { of: first }).await.unwrap();
    let poll = br#"{"v":1,"type":"poll","question":"where?"}"#.to_vec();
    bob.send_content("garden", &Content::decode(&poll)).await.unwrap();
    alice.sync().await.unwrap();
    let kinds: Vec<String> = alice
        .messages("garden", first - 1)
        .unwrap()
        .into_iter()
        .filter_map(|m| match m.event() {
            Event::Content(c) => Some(c.kind().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["text", "reply", "reaction", "edit", "delete", "poll"]);
    let last = alice.messages("garden", 0).unwrap().pop().unwrap();
    assert_eq!(last.event(), Event::Content(Content::Unsupported { kind: "poll".into(), raw: poll }));
}

/// Bob is removed while away and added back, three times in a row, in both modes: each time he
/// reads what is said while he is a member and nothing said while he was out, and his history
/// says where the gaps are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_added_back_again_and_again() {
    for mode in [grove_wire::api::RoomMode::Mls, grove_wire::api::RoomMode::SenderKeys] {
        let w = World::start().await;
        let mut alice = w.user("alice").await;
        let mut bob = w.user("bob").await;
        alice.create_room_with_mode(&w.url, "garden", mode).await.unwrap();
        alice.invite("garden", &bob.address().to_string()).await.unwrap();
        bob.sync().await.unwrap();
        let mut want = Vec::new();
        for round in 0..3 {
            let said = format!("while bob is in, round {round}");
            alice.send("garden", &said).await.unwrap();
            want.push(said);
            bob.sync().await.unwrap();
            alice.remove("garden", &bob.user_id()).await.unwrap();
            alice.send("garden", &format!("while bob is out, round {round}")).await.unwrap();
            // Bob, away during the removal, learns it on his next sync.
            bob.sync().await.unwrap();
            assert!(matches!(bob.send("garden", "let me in").await, Err(ClientError::NotActive { .. })), "{mode:?}");
            alice.invite("garden", &bob.address().to_string()).await.unwrap();
            let report = bob.sync().await.unwrap();
            assert_eq!(report.joined.len(), 1, "{mode:?} round {round}: bob is back");
            let said = format!("after bob is back, round {round}");
            alice.send("garden", &said).await.unwrap();
            want.push(said);
            bob.send("garden", &format!("bob is back, round {round}")).await.unwrap();
            want.push(format!("bob is back, round {round}"));
        }
        bob.sync().await.unwrap();
        alice.sync().await.unwrap();
        assert_eq!(texts(&bob, "garden"), want, "{mode:?}");
        let history = bob.messages("garden", 0).unwrap();
        let unreadable: Vec<_> = history.iter().filter(|m| m.kind == MessageKind::Undecryptable).collect();
        assert!(unreadable.is_empty(), "{mode:?}: {unreadable:?}");
        let marks = |f: fn(&grove_client::Membership) -> bool| {
            history.iter().filter(|m| matches!(m.event(), Event::Membership(ref c) if f(c))).count()
        };
        assert_eq!(marks(|c| c.again), 3, "{mode:?}: three 'added back' lines");
        // Each removal is in his history: the entry that removed him, or, where the server no
        // longer let him read it, a line saying he was removed while away.
        let me = bob.user_id();
        let removals = history
            .iter()
            .filter(|m| matches!(m.event(), Event::Membership(ref c) if c.removed_unseen || c.removed.contains(&me)))
            .count();
        assert_eq!(
            removals,
            3,
            "{mode:?}: three removed lines: {:#?}",
            history.iter().map(|m| (m.seq, m.event())).collect::<Vec<_>>()
        );
        assert_eq!(alice.members("garden").unwrap().len(), 2);
    }
}

/// The ordinary mistakes are answered with what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_mistakes_get_plain_answers() {
    let w = World::start().await;
    let (mut alice, bob, carol) = garden(&w).await;
    let err = alice.invite("garden", &bob.address().to_string()).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} is already a member of garden", bob.user_id().short()));
    alice.remove("garden", &carol.user_id()).await.unwrap();
    let err = alice.remove("garden", &carol.user_id()).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!("{} is not a member of garden", carol.user_id().short())), "{err}");
    // A message over the server's limit is refused before anything is encrypted or queued.
    let huge = "x".repeat(2 * 1024 * 1024);
    let err = alice.send("garden", &huge).await.unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("takes at most"), "{err}");
    assert!(alice.outbox().unwrap().is_empty());
    alice.send("garden", "a normal message still goes").await.unwrap();
    // An address with no key material left (here: none ever published) is named, with what to do.
    let nobody = grove_proto::identity::Identity::generate(&mut rand::rngs::OsRng).user_id();
    let host = w.url.trim_start_matches("http://");
    let err = alice.invite("garden", &format!("{nobody}@{host}")).await.unwrap_err();
    assert!(err.to_string().contains("has no key packages left") && err.to_string().contains("grove sync"), "{err}");
    // Acting in a room one was removed from.
    let mut carol = carol;
    carol.sync().await.unwrap();
    let err = carol.send("garden", "hello?").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("you can no longer use room \"{}/rooms/garden\": you were removed from it", w.url)
    );
}

/// In a sender-keys room, a plain member and the owner each leave by posting the version
/// without themselves (the policy lets anyone leave); the room goes on with who is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_keys_members_and_admins_leave() {
    use grove_client::RoomStatus;
    let w = World::start().await;
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    let mut carol = w.user("carol").await;
    alice.create_room_with_mode(&w.url, "patio", grove_wire::api::RoomMode::SenderKeys).await.unwrap();
    for p in [&bob, &carol] {
        alice.invite("patio", &p.address().to_string()).await.unwrap();
    }
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    carol.leave("patio").await.unwrap();
    assert_eq!(carol.room("patio").unwrap().status, RoomStatus::Left);
    alice.sync().await.unwrap();
    assert_eq!(alice.members("patio").unwrap().len(), 2, "carol left by her own signed version");
    alice.send("patio", "bye carol").await.unwrap();
    alice.leave("patio").await.unwrap();
    assert_eq!(alice.room("patio").unwrap().status, RoomStatus::Left);
    bob.sync().await.unwrap();
    assert_eq!(bob.members("patio").unwrap(), vec![bob.user_id()]);
    bob.send("patio", "alone now").await.unwrap();
    assert_eq!(texts(&bob, "patio"), ["bye carol", "alone now"]);
}

/// A proxy in front of the server that answers the first `refuse` posts of messages to a room's
/// log with `503 unavailable` (as an overloaded server or a full disk would), then forwards
/// everything. (Other posts, such as a resync offer after a commit, go through.)
async fn refusing_proxy(upstream: String, refuse: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Clone)]
    struct P {
        upstream: String,
        refused: Arc<AtomicUsize>,
        refuse: usize,
        http: reqwest::Client,
    }
    async fn forward(State(p): State<P>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 26).await.unwrap();
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        let message = serde_json::from_slice::<grove_wire::api::AppendEntry>(&body).is_ok_and(|e| {
            matches!(e.kind, grove_wire::api::EntryKind::Application | grove_wire::api::EntryKind::Membership)
        });
        if parts.method == axum::http::Method::POST
            && path.ends_with("/log")
            && message
            && p.refused.load(Ordering::SeqCst) < p.refuse
        {
            // "Not now", as a busy server or a full disk says it.
            let (status, body) = match p.refused.fetch_add(1, Ordering::SeqCst) % 2 {
                0 => (503, r#"{"code":"unavailable","message":"try again later"}"#),
                _ => (507, r#"{"code":"storage_full","message":"the server's storage is full"}"#),
            };
            return Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
        }
        let (status, headers, body) = crate::proxy::pass(&p.http, &p.upstream, &parts, Body::from(body)).await;
        crate::proxy::respond(status, &headers, body)
    }
    let refused = Arc::new(AtomicUsize::new(0));
    let state = P { upstream, refused: refused.clone(), refuse, http: reqwest::Client::new() };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let url = crate::proxy::serve(app).await;
    (url, refused)
}

/// The server refuses Alice's next sends ("try later"): each waits in her outbox, and once
/// the server takes posts again every message arrives once, in order, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_refused_for_now_wait_and_arrive_once_in_order() {
    for mode in [grove_wire::api::RoomMode::Mls, grove_wire::api::RoomMode::SenderKeys] {
        let w = World::start().await;
        let mut alice = w.user("alice").await;
        let mut bob = w.user("bob").await;
        alice.create_room_with_mode(&w.url, "garden", mode).await.unwrap();
        alice.invite("garden", &bob.address().to_string()).await.unwrap();
        bob.sync().await.unwrap();
        // From now on Alice reaches the room's server through the proxy, which refuses 5 posts.
        let (proxy, refused) = refusing_proxy(w.url.clone(), 5).await;
        let mut rules = grove_client::profile::ConnectTo::none();
        rules.add(&w.url, &proxy);
        alice.set_connect_to(rules);
        let mut want = Vec::new();
        for i in 0..5 {
            let text = format!("message {i}");
            match alice.send("garden", &text).await {
                Err(ClientError::Queued { .. }) => {}
                other => panic!("{mode:?}: expected queued, got {other:?}"),
            }
            want.push(text);
        }
        assert_eq!(alice.outbox().unwrap().len(), 5);
        // The server takes posts again: the next send goes after the five waiting, in order.
        alice.send("garden", "message 5").await.unwrap();
        want.push("message 5".into());
        assert!(alice.outbox().unwrap().is_empty());
        assert!(refused.load(std::sync::atomic::Ordering::SeqCst) >= 5);
        bob.sync().await.unwrap();
        assert_eq!(texts(&bob, "garden"), want, "{mode:?}");
        assert_eq!(texts(&alice, "garden"), want, "{mode:?}");
    }
}
