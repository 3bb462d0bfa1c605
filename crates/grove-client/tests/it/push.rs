//! The push client as `grove chat` uses it: Bob follows his rooms and his mailbox, and what it
//! hands over is applied with `apply_pushed` / `receive_mail`.

use std::collections::HashMap;
use std::time::Duration;

use grove_client::profile::Profile;
use grove_client::push::{Feed, Link, PushClient};
use grove_client::RoomStatus;
use grove_wire::api::RoomMode;
use tokio::sync::mpsc;

use crate::{texts, World};

/// How long Bob waits for the next thing the push client hands over before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// Bob's push client and what it handed over so far.
pub struct Follower {
    push: PushClient,
    feed: mpsc::Receiver<Feed>,
    /// Every connection state reported, in order.
    pub links: Vec<Link>,
    /// Per room name, the sequence number the next entry handed over must have.
    next: HashMap<String, u64>,
}

impl Follower {
    /// Follows every active room of `p` and its mailbox, as `grove chat` does.
    pub fn start(p: &Profile) -> Follower {
        let (tx, feed) = mpsc::channel(1024);
        let mut f = Follower { push: PushClient::new(tx), feed, links: Vec::new(), next: HashMap::new() };
        let mut rooms = Vec::new();
        for r in p.rooms().unwrap() {
            assert_eq!(r.server, p.home(), "these tests keep every room on the home server");
            if r.status == RoomStatus::Active {
                f.next.insert(r.name.clone(), r.cursor + 1);
                rooms.push((r.name, r.cursor));
            }
        }
        let home = p.home().to_string();
        f.push.follow(&home, p.server_for(&home), rooms, Some(p.mailbox_cursor().unwrap()));
        f
    }

    /// Applies what the push client hands over until `done` holds, checking that each room's
    /// entries come in order, with no gap and no duplicate.
    pub async fn until(&mut self, p: &mut Profile, what: &str, mut done: impl FnMut(&Profile, &[Link]) -> bool) {
        while !done(p, &self.links) {
            let feed = match tokio::time::timeout(WAIT, self.feed.recv()).await {
                Ok(Some(feed)) => feed,
                Ok(None) => panic!("the push client stopped while waiting for {what}"),
                Err(_) => panic!("nothing handed over for {WAIT:?} while waiting for {what}; links: {:?}", self.links),
            };
            match feed {
                Feed::Entries { server, room, entries } => {
                    let next =
                        self.next.get_mut(&room).unwrap_or_else(|| panic!("entries of a room not followed: {room}"));
                    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
                    let want: Vec<u64> = (*next..*next + seqs.len() as u64).collect();
                    assert_eq!(seqs, want, "{room}: entries handed over out of order, twice or with a gap");
                    *next += seqs.len() as u64;
                    let (_, status) = p.apply_pushed(&server, &room, entries).await.unwrap().unwrap();
                    assert_eq!(status, RoomStatus::Active);
                }
                Feed::Mail { .. } => {
                    for link in p.receive_mail().await.unwrap().joined {
                        let r = p.room(&link).unwrap();
                        self.next.insert(r.name.clone(), r.cursor + 1);
                        self.push.follow(&r.server, p.server_for(&r.server), vec![(r.name, r.cursor)], None);
                    }
                }
                Feed::RoomError { room, error, .. } => panic!("{room}: {error}"),
                Feed::Link { link, .. } => self.links.push(link),
            }
        }
    }
}

fn is_down(l: &Link) -> bool {
    matches!(l, Link::Down { .. })
}

/// Alice creates `garden` and invites Bob, who joins.
async fn alice_and_bob(w: &World) -> (Profile, Profile) {
    let mut alice = w.user("alice").await;
    let mut bob = w.user("bob").await;
    alice.create_room(&w.url, "garden").await.unwrap();
    alice.invite("garden", &bob.address().to_string()).await.unwrap();
    assert_eq!(bob.sync().await.unwrap().joined.len(), 1);
    alice.sync().await.unwrap();
    (alice, bob)
}

/// Bob follows the room over the push WebSocket while Alice sends 50 messages: applied as
/// they come, they give Bob all 50, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_follows_the_room_live_and_gets_every_message_once_in_order() {
    let w = World::start().await;
    let (mut alice, mut bob) = alice_and_bob(&w).await;
    let mut follower = Follower::start(&bob);
    follower.until(&mut bob, "the push WebSocket", |_, links| links.contains(&Link::Live)).await;

    let want: Vec<String> = (0..50).map(|i| format!("message {i}")).collect();
    let sends = async {
        for text in &want {
            alice.send("garden", text).await.unwrap();
        }
    };
    let receives = follower.until(&mut bob, "50 messages", |p, _| texts(p, "garden").len() >= 50);
    tokio::join!(sends, receives);

    assert_eq!(texts(&bob, "garden"), want);
    assert!(follower.links.iter().all(|l| *l == Link::Live), "{:?}", follower.links);
    // A full read from the server finds nothing missing and adds nothing.
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "garden"), want);
}

/// Alice has the chat open (a push connection) in a room of each mode: her messages go over
/// that connection, not over HTTP, and Bob gets them all, in order, once. Once she closes it,
/// her next message goes over HTTP and arrives too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_her_push_connection_open_alices_messages_go_over_it() {
    let w = World::start().await;
    let (mut alice, mut bob) = alice_and_bob(&w).await;
    alice.create_room_with_mode(&w.url, "shed", RoomMode::SenderKeys).await.unwrap();
    alice.invite("shed", &bob.address().to_string()).await.unwrap();
    assert_eq!(bob.sync().await.unwrap().joined.len(), 1);
    alice.sync().await.unwrap();
    let mut hers = Follower::start(&alice);
    hers.until(&mut alice, "Alice's push WebSocket", |_, links| links.contains(&Link::Live)).await;
    let mut his = Follower::start(&bob);
    his.until(&mut bob, "Bob's push WebSocket", |_, links| links.contains(&Link::Live)).await;

    let server = alice.server_for(&w.url);
    let before = server.appended_over_push();
    let want: Vec<String> = (0..10).map(|i| format!("message {i}")).collect();
    for room in ["garden", "shed"] {
        for text in &want {
            alice.send(room, text).await.unwrap();
        }
    }
    assert_eq!(server.appended_over_push() - before, 20, "every message went over the push connection");
    his.until(&mut bob, "20 messages", |p, _| texts(p, "garden").len() >= 10 && texts(p, "shed").len() >= 10).await;
    for room in ["garden", "shed"] {
        assert_eq!(texts(&bob, room), want, "{room}: Bob's");
        assert_eq!(texts(&alice, room), want, "{room}: Alice's own");
    }

    drop(hers);
    alice.send("garden", "after the chat closed").await.unwrap();
    assert_eq!(server.appended_over_push() - before, 20, "without a push connection, sending is HTTP");
    his.until(&mut bob, "the last message", |p, _| texts(p, "garden").len() >= 11).await;
    assert_eq!(texts(&bob, "garden").last().map(String::as_str), Some("after the chat closed"));
}

/// Bob has the chat open on the garden (his push connection follows it live). With everything
/// it brought applied, his messages go out without reading the log first. Then Alice removes
/// Carol: Bob's connection brings the commit, but Bob has not applied it when he writes. His
/// send reads the log first (his view is behind what his connection brought), so his message is
/// sealed after Carol's removal: Alice reads it, Carol never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_skips_the_read_only_when_the_live_connection_brought_nothing_unapplied() {
    let w = World::start().await;
    let (mut alice, mut bob, mut carol) = crate::garden(&w).await;
    let mut his = Follower::start(&bob);
    his.until(&mut bob, "Bob's push WebSocket", |_, links| links.contains(&Link::Live)).await;
    let server = bob.server_for(&w.url);
    let room = bob.room("garden").unwrap().name;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.live_through(&room).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the live marker never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let reads = server.log_reads();
    bob.send("garden", "hello, all three").await.unwrap();
    bob.send("garden", "and again").await.unwrap();
    assert_eq!(server.log_reads(), reads, "followed live and applied: no read before sending");

    alice.remove("garden", &carol.user_id()).await.unwrap();
    let removed_at = alice.room("garden").unwrap().cursor;
    while server.live_through(&room).is_none_or(|s| s < removed_at) {
        assert!(tokio::time::Instant::now() < deadline, "Bob's connection never brought the removal");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reads = server.log_reads();
    bob.send("garden", "now that Carol is gone").await.unwrap();
    assert!(server.log_reads() > reads, "the removal was brought but not applied: Bob reads the log first");

    alice.sync().await.unwrap();
    assert_eq!(texts(&alice, "garden"), ["hello, all three", "and again", "now that Carol is gone"]);
    carol.sync().await.unwrap();
    assert_eq!(carol.room("garden").unwrap().status, RoomStatus::Removed);
    assert_eq!(texts(&carol, "garden"), ["hello, all three", "and again"], "Carol never reads what came after");
}

/// A proxy in front of the server that refuses WebSocket upgrades (502, as some reverse
/// proxies do) and forwards everything else, long polls included. Answers its URL and how many
/// upgrades it refused.
async fn no_websocket_proxy(upstream: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Clone)]
    struct P {
        upstream: String,
        refused: Arc<AtomicUsize>,
        http: reqwest::Client,
    }
    async fn forward(State(p): State<P>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        if parts.headers.contains_key(axum::http::header::UPGRADE) {
            p.refused.fetch_add(1, Ordering::SeqCst);
            return Response::builder().status(502).body(Body::from("502 Bad Gateway")).unwrap();
        }
        let (status, headers, body) = crate::proxy::pass(&p.http, &p.upstream, &parts, body).await;
        crate::proxy::respond(status, &headers, body)
    }
    let refused = Arc::new(AtomicUsize::new(0));
    let state = P { upstream, refused: refused.clone(), http: reqwest::Client::new() };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let url = crate::proxy::serve(app).await;
    (url, refused)
}

/// Bob reaches his server through a proxy that refuses WebSockets: his push client says it is
/// polling, and still hands over Alice's messages in order, once, and her invitation to a
/// second room, which Bob joins and then follows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_refuses_websockets_bob_long_polls() {
    let w = World::start().await;
    let (mut alice, mut bob) = alice_and_bob(&w).await;
    let (proxy, refused) = no_websocket_proxy(w.url.clone()).await;
    let mut rules = grove_client::profile::ConnectTo::none();
    rules.add(&w.url, &proxy);
    bob.set_connect_to(rules);
    let mut follower = Follower::start(&bob);
    follower.until(&mut bob, "polling", |_, links| links.contains(&Link::Polling)).await;
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    let want: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    let sends = async {
        for text in &want {
            alice.send("garden", text).await.unwrap();
        }
    };
    let receives = follower.until(&mut bob, "20 messages", |p, _| texts(p, "garden").len() >= 20);
    tokio::join!(sends, receives);
    assert_eq!(texts(&bob, "garden"), want);

    // Alice invites Bob to a second room: the invitation comes by the mailbox's long poll.
    alice.create_room(&w.url, "shed").await.unwrap();
    alice.invite("shed", &bob.address().to_string()).await.unwrap();
    follower
        .until(&mut bob, "the invitation", |p, _| p.room("shed").is_ok_and(|r| r.status == RoomStatus::Active))
        .await;
    alice.sync().await.unwrap();
    let in_shed: Vec<String> = (0..5).map(|i| format!("in the shed {i}")).collect();
    for text in &in_shed {
        alice.send("shed", text).await.unwrap();
    }
    follower.until(&mut bob, "5 messages in the shed", |p, _| texts(p, "shed").len() >= 5).await;
    assert_eq!(texts(&bob, "shed"), in_shed);
    assert_eq!(texts(&bob, "garden"), want);
    assert!(!follower.links.contains(&Link::Live), "{:?}", follower.links);
}

/// Bob's server stops and starts again on the same address while Alice writes before, during
/// (her message waits in her outbox) and after: Bob's push client says the link is down, then
/// live again, and Bob ends with every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_restarts_and_bob_misses_nothing_and_gets_nothing_twice() {
    let mut w = World::start().await;
    let (mut alice, mut bob) = alice_and_bob(&w).await;
    let mut follower = Follower::start(&bob);
    follower.until(&mut bob, "the push WebSocket", |_, links| links.contains(&Link::Live)).await;

    let mut want = Vec::new();
    for i in 0..10 {
        let text = format!("before {i}");
        alice.send("garden", &text).await.unwrap();
        want.push(text);
    }
    follower.until(&mut bob, "the messages before", |p, _| texts(p, "garden").len() >= 10).await;

    w.stop().await;
    follower.until(&mut bob, "the link to go down", |_, links| links.last().is_some_and(is_down)).await;
    match alice.send("garden", "while the server is down").await {
        Err(grove_client::profile::ClientError::Queued { .. }) => {}
        other => panic!("expected queued, got {other:?}"),
    }
    want.push("while the server is down".into());

    w.restart().await;
    follower.until(&mut bob, "the link to come back", |_, links| links.last() == Some(&Link::Live)).await;
    alice.sync().await.unwrap();
    assert!(alice.outbox().unwrap().is_empty());
    for i in 0..10 {
        let text = format!("after {i}");
        alice.send("garden", &text).await.unwrap();
        want.push(text);
    }
    follower.until(&mut bob, "every message", |p, _| texts(p, "garden").len() >= want.len()).await;
    assert_eq!(texts(&bob, "garden"), want);
    let first_down = follower.links.iter().position(is_down).unwrap();
    assert!(follower.links[..first_down].iter().all(|l| *l == Link::Live), "{:?}", follower.links);
    assert!(!follower.links.contains(&Link::Polling), "{:?}", follower.links);
    bob.sync().await.unwrap();
    assert_eq!(texts(&bob, "garden"), want);
}

/// Bob follows two rooms over one push connection, garden and shed. Alice removes him from
/// garden while he is connected: his feed hands over garden up to and including the commit
/// that removed him, then says garden is over for him (`not_member`), and nothing after it;
/// shed, on the same connection, goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_is_removed_from_one_room_while_following_two_and_the_other_goes_on() {
    let w = World::start().await;
    let (mut alice, mut bob) = alice_and_bob(&w).await;
    alice.create_room(&w.url, "shed").await.unwrap();
    alice.invite("shed", &bob.address().to_string()).await.unwrap();
    bob.sync().await.unwrap();
    alice.sync().await.unwrap();
    let mut follower = Follower::start(&bob);
    follower.until(&mut bob, "the push WebSocket", |_, links| links.contains(&Link::Live)).await;

    alice.send("garden", "before").await.unwrap();
    alice.remove("garden", &bob.user_id()).await.unwrap();
    alice.send("garden", "after Bob left").await.unwrap();
    alice.send("shed", "shed goes on").await.unwrap();

    let (mut ended, mut removed) = (None, false);
    while ended.is_none() || !texts(&bob, "shed").contains(&"shed goes on".to_string()) {
        let feed = tokio::time::timeout(WAIT, follower.feed.recv()).await.expect("the feed went quiet").unwrap();
        match feed {
            Feed::Entries { server, room, entries } => {
                assert!(room == "shed" || ended.is_none(), "garden entries after its end: {entries:?}");
                let (_, status) = bob.apply_pushed(&server, &room, entries).await.unwrap().unwrap();
                removed |= room == "garden" && status == RoomStatus::Removed;
            }
            Feed::RoomError { room, error, .. } => {
                assert_eq!(room, "garden");
                assert_eq!(error.code, grove_wire::ErrorCode::NotMember, "{error}");
                ended = Some(error);
            }
            Feed::Link { link, .. } => follower.links.push(link),
            Feed::Mail { .. } => {}
        }
    }
    assert!(removed, "garden's removal commit was handed over and applied");
    assert_eq!(bob.room("garden").unwrap().status, RoomStatus::Removed);
    assert_eq!(texts(&bob, "garden"), ["before"]);
    assert_eq!(texts(&bob, "shed"), ["shed goes on"]);
    assert!(follower.links.iter().all(|l| *l == Link::Live), "one connection throughout: {:?}", follower.links);
}
