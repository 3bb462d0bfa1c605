//! The push WebSocket on a real socket: backlog then live entries, in order; reconnecting
//! with a cursor resumes with no gap and no duplicate; the mailbox too.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grove_server::AppState;
use grove_wire::auth::sign_request;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

pub(crate) struct Live {
    addr: std::net::SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Live {
    pub(crate) async fn start() -> Live {
        Self::start_with(test_config()).await
    }

    async fn start_with(config: grove_server::Config) -> Live {
        let state = AppState::new(
            config,
            Arc::new(grove_store::MemoryStore::new()),
            ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(grove_server::run(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Live { addr, state, stop: Some(tx), task }
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    }

    pub(crate) async fn post(&self, user: &User, path: &str, body: Value) -> Value {
        let body = body.to_string().into_bytes();
        let h = sign_request(&user.key, &self.state.public_key(), "POST", path, Self::now(), &fresh_nonce(), &body);
        let resp = reqwest::Client::new()
            .post(format!("http://{}{path}", self.addr))
            .header("x-grove-key", h.key)
            .header("x-grove-timestamp", h.timestamp)
            .header("x-grove-nonce", h.nonce)
            .header("x-grove-signature", h.signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.json().await.unwrap()
    }

    pub(crate) async fn connect(
        &self,
        user: &User,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        tokio_tungstenite::connect_async(self.upgrade(user, "/v1/push")).await.unwrap().0
    }

    /// The upgrade request to `path_and_query`, signed by `user`.
    fn upgrade(&self, user: &User, path_and_query: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let h =
            sign_request(&user.key, &self.state.public_key(), "GET", path_and_query, Self::now(), &fresh_nonce(), b"");
        let mut req = format!("ws://{}{path_and_query}", self.addr).into_client_request().unwrap();
        let hs = req.headers_mut();
        hs.insert("x-grove-key", h.key.parse().unwrap());
        hs.insert("x-grove-timestamp", h.timestamp.parse().unwrap());
        hs.insert("x-grove-nonce", h.nonce.parse().unwrap());
        hs.insert("x-grove-signature", h.signature.parse().unwrap());
        req
    }

    /// A push socket opened with a frame binding: it can send entries. Answers the socket and
    /// the frame key the client derived (after checking the server's signature).
    pub(crate) async fn connect_bound(
        &self,
        user: &User,
    ) -> (
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        grove_wire::push::FrameKey,
    ) {
        let offer = grove_wire::push::Offer::new(&mut rand::rngs::OsRng);
        let path = format!("/v1/push?bind={}", offer.public_hex());
        let (ws, response) = tokio_tungstenite::connect_async(self.upgrade(user, &path)).await.unwrap();
        let header = |name: &str| response.headers().get(name).unwrap().to_str().unwrap().to_string();
        let key = offer
            .accept(
                &user.id,
                &self.state.public_key(),
                &header(grove_wire::push::HEADER_PUSH_KEY),
                &header(grove_wire::push::HEADER_PUSH_SIGNATURE),
            )
            .expect("the server's half of the binding is signed by the server");
        (ws, key)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("shut down").unwrap().unwrap();
    }
}

/// The next event on `ws`, past `live` markers (see [`next_event_or_live`]).
pub(crate) async fn next_event<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let ev = next_event_or_live(ws).await;
        if ev["type"] != "live" {
            return ev;
        }
    }
}

/// The next event on `ws`, `live` markers included.
pub(crate) async fn next_event_or_live<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an event").unwrap().unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn append(live: &Live, user: &User, n: u32) {
    live.post(user, "/v1/rooms/r/log", json!({"kind": "application", "epoch": 0, "body": b64(&n.to_be_bytes())})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivers_backlog_then_live_and_resumes_without_gap_or_duplicate() {
    let live = Live::start().await;
    let alice = User::new(1);
    live.post(&alice, "/v1/rooms", json!({"name": "r", "mode": "sender-keys"})).await;
    for n in 1..=5 {
        append(&live, &alice, n).await;
    }
    let mut ws = live.connect(&alice).await;
    ws.send(Message::text(json!({"type": "subscribe", "rooms": [{"room": "r", "after": 2}]}).to_string()))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut ws).await;
        assert_eq!((ev["type"].clone(), ev["room"].clone()), (json!("entry"), json!("r")));
        got.push(ev["entry"]["seq"].as_u64().unwrap());
    }
    // Live entries follow, while concurrent appends race the subscription.
    let writer = {
        let alice = alice.clone();
        let addr_state = (live.addr, live.state.clone());
        tokio::spawn(async move {
            let l = Live { addr: addr_state.0, state: addr_state.1, stop: None, task: tokio::spawn(async { Ok(()) }) };
            for n in 6..=30 {
                append(&l, &alice, n).await;
            }
        })
    };
    while got.len() < 15 {
        got.push(next_event(&mut ws).await["entry"]["seq"].as_u64().unwrap());
    }
    drop(ws); // the client goes away mid-stream
    writer.await.unwrap();
    let cursor = *got.last().unwrap();
    let mut ws = live.connect(&alice).await;
    ws.send(Message::text(json!({"type": "subscribe", "rooms": [{"room": "r", "after": cursor}]}).to_string()))
        .await
        .unwrap();
    while got.len() < 28 {
        got.push(next_event(&mut ws).await["entry"]["seq"].as_u64().unwrap());
    }
    assert_eq!(got, (3..=30).collect::<Vec<_>>(), "in order, no gap, no duplicate");
    live.stop().await;
}

/// Alice subscribes from entry 2 of a room of 5: she gets 3, 4 and 5, then a `live` marker
/// naming 5, then entry 6 when it is appended; subscribing from the head gets the marker at
/// once. A client that has applied everything up to the marker is as current as a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_ends_with_a_live_marker_before_live_entries() {
    let live = Live::start().await;
    let alice = User::new(1);
    live.post(&alice, "/v1/rooms", json!({"name": "r", "mode": "sender-keys"})).await;
    for n in 1..=5 {
        append(&live, &alice, n).await;
    }
    let mut ws = live.connect(&alice).await;
    ws.send(Message::text(json!({"type": "subscribe", "rooms": [{"room": "r", "after": 2}]}).to_string()))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let ev = next_event_or_live(&mut ws).await;
        got.push((
            ev["type"].as_str().unwrap().to_string(),
            ev["entry"]["seq"].as_u64().or(ev["seq"].as_u64()).unwrap(),
        ));
    }
    let want: Vec<(String, u64)> =
        [("entry", 3), ("entry", 4), ("entry", 5), ("live", 5)].iter().map(|(t, s)| (t.to_string(), *s)).collect();
    assert_eq!(got, want);
    append(&live, &alice, 6).await;
    let ev = next_event_or_live(&mut ws).await;
    assert_eq!((ev["type"].clone(), ev["entry"]["seq"].clone()), (json!("entry"), json!(6)));

    let mut caught_up = live.connect(&alice).await;
    caught_up
        .send(Message::text(json!({"type": "subscribe", "rooms": [{"room": "r", "after": 6}]}).to_string()))
        .await
        .unwrap();
    let ev = next_event_or_live(&mut caught_up).await;
    assert_eq!(ev, json!({"type": "live", "room": "r", "seq": 6}));
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_carries_the_mailbox_and_refuses_rooms_of_others() {
    let live = Live::start().await;
    let (alice, bob) = (User::new(1), User::new(2));
    live.post(&alice, "/v1/rooms", json!({"name": "r", "mode": "sender-keys"})).await;
    let fallback = json!({"kind": "olm_fallback", "last_resort": true, "data": b64(b"bob's fallback key")});
    live.post(&bob, "/v1/keys", json!({"items": [fallback]})).await;
    live.post(&alice, &format!("/v1/mailboxes/{}", bob.id), json!({"body": b64(b"first")})).await;
    let mut ws = live.connect(&bob).await;
    ws.send(Message::text(
        json!({"type": "subscribe", "rooms": [{"room": "r", "after": 0}], "mailbox_after": 0}).to_string(),
    ))
    .await
    .unwrap();
    let mut mail = Vec::new();
    let mut refused = false;
    let mut sent_second = false;
    while mail.len() < 2 || !refused {
        let ev = next_event(&mut ws).await;
        match ev["type"].as_str().unwrap() {
            "mail" => mail.push(grove_wire::b64::decode(ev["entry"]["body"].as_str().unwrap()).unwrap()),
            "error" => {
                assert_eq!((ev["room"].clone(), ev["error"]["code"].clone()), (json!("r"), json!("not_member")));
                refused = true;
            }
            other => panic!("unexpected {other}: {ev}"),
        }
        if mail.len() == 1 && !sent_second {
            sent_second = true;
            live.post(&alice, &format!("/v1/mailboxes/{}", bob.id), json!({"body": b64(b"second")})).await;
        }
    }
    assert_eq!(mail, [b"first".to_vec(), b"second".to_vec()]);
    ws.send(Message::text("{\"type\": \"dance\"}")).await.unwrap();
    assert_eq!(next_event(&mut ws).await["error"]["code"], json!("malformed_body"));
    let metrics = reqwest::get(format!("http://{}/metrics", live.addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("grove_push_connections 1"), "{metrics}");
    // Shutdown closes push connections instead of waiting for them.
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_rate_limited_even_without_signing() {
    let mut c = test_config();
    c.limits.ip_requests_per_sec = 2; // burst of 4
    let live = Live::start_with(c).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = client.get(format!("http://{}/v1/info", live.addr)).send().await.unwrap();
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").is_some()));
    }
    assert!(statuses[..4].iter().all(|s| s.0 == 200), "{statuses:?}");
    assert!(statuses[4..].contains(&(429, true)), "{statuses:?}");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let mut c = test_config();
    c.limits.ip_requests_per_sec = 2; // burst of 4
    c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let live = Live::start_with(c).await;
    let client = reqwest::Client::new();
    let get = |who: &'static str| {
        let client = client.clone();
        let url = format!("http://{}/v1/info", live.addr);
        async move { client.get(url).header("x-forwarded-for", who).send().await.unwrap().status().as_u16() }
    };
    // Carol's address uses up its budget ...
    let mut carol = Vec::new();
    for _ in 0..8 {
        carol.push(get("203.0.113.7").await);
    }
    assert!(carol[..4].iter().all(|s| *s == 200) && carol[4..].contains(&429), "{carol:?}");
    // ... and Dave's, behind the same proxy, is untouched.
    assert_eq!(get("203.0.113.8").await, 200);
    // A client cannot escape its limit by writing its own header: the proxy appends the
    // address it saw, and only that one counts.
    assert_eq!(get("198.51.100.1, 203.0.113.7").await, 429);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_follows_at_most_the_configured_number_of_rooms() {
    let mut config = test_config();
    config.quotas.push_subscriptions = 3;
    let live = Live::start_with(config).await;
    let alice = User::new(1);
    for n in 0..5 {
        live.post(&alice, "/v1/rooms", json!({"name": format!("r{n}"), "mode": "sender-keys"})).await;
    }
    let mut ws = live.connect(&alice).await;
    let rooms: Vec<Value> = (0..5).map(|n| json!({"room": format!("r{n}"), "after": 0})).collect();
    ws.send(Message::text(json!({"type": "subscribe", "rooms": rooms}).to_string())).await.unwrap();
    let mut refused = BTreeSet::new();
    for _ in 0..2 {
        let ev = next_event(&mut ws).await;
        assert_eq!((ev["type"].clone(), ev["error"]["code"].clone()), (json!("error"), json!("subscription_limit")));
        refused.insert(ev["room"].as_str().unwrap().to_string());
    }
    assert_eq!(refused, ["r3".to_string(), "r4".to_string()].into_iter().collect());
    // The three rooms it follows still deliver.
    live.post(&alice, "/v1/rooms/r2/log", json!({"kind": "application", "epoch": 0, "body": b64(b"hello")})).await;
    let ev = next_event(&mut ws).await;
    assert_eq!((ev["type"].clone(), ev["room"].clone()), (json!("entry"), json!("r2")));
    // The socket is full: fifty more rooms (which do not even exist) are all refused.
    let ghosts: Vec<Value> = (0..50).map(|n| json!({"room": format!("ghost{n}"), "after": 0})).collect();
    ws.send(Message::text(json!({"type": "subscribe", "rooms": ghosts}).to_string())).await.unwrap();
    let mut limited = 0;
    for _ in 0..50 {
        let ev = next_event(&mut ws).await;
        if ev["error"]["code"] == json!("subscription_limit") {
            limited += 1;
        }
    }
    assert_eq!(limited, 50, "subscriptions over the cap");
    live.stop().await;
}

/// A socket that subscribes to nothing is closed after `push_idle_secs`, with a reason; one
/// that stopped reading (no pong to the server's pings) is closed too; one that reads and
/// follows a room stays open and still gets its entries.
#[tokio::test]
async fn idle_and_silent_push_sockets_are_closed_and_live_ones_kept() {
    let mut config = test_config();
    config.connections.push_ping_secs = 1;
    config.connections.push_idle_secs = 1;
    let live = Live::start_with(config).await;
    let alice = User::new(1);
    live.post(&alice, "/v1/rooms", json!({"name": "r", "mode": "sender-keys"})).await;
    let subscribe = Message::text(json!({"type": "subscribe", "rooms": [{"room": "r", "after": 0}]}).to_string());

    let mut idle = live.connect(&alice).await;
    let mut silent = live.connect(&alice).await;
    silent.send(subscribe.clone()).await.unwrap();
    let mut reader = live.connect(&alice).await;
    reader.send(subscribe).await.unwrap();
    // The reader answers pings by reading, until its first entry arrives.
    let reading = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(until, reader.next()).await.expect("an entry before the deadline") {
                Some(Ok(Message::Text(t))) => {
                    let ev: Value = serde_json::from_str(t.as_str()).unwrap();
                    if ev["type"] == "live" {
                        continue;
                    }
                    assert_eq!(ev["type"], json!("entry"), "{ev}");
                    return ev;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => panic!("a reading, subscribed socket was closed"),
                Some(Ok(_)) => {}
            }
        }
    });

    let ev = next_event(&mut idle).await;
    assert_eq!((ev["type"].clone(), ev["error"]["code"].clone()), (json!("error"), json!("request_timeout")));
    assert!(closes(&mut idle).await, "the idle socket is closed after its error event");

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(closes(&mut silent).await, "a socket that answered no ping for two periods is closed");

    live.post(&alice, "/v1/rooms/r/log", json!({"kind": "application", "epoch": 0, "body": b64(b"still here")})).await;
    let ev = reading.await.unwrap();
    assert_eq!(ev["room"], json!("r"), "the live socket still delivers after five pings");
    live.stop().await;
}

/// Reads until the socket ends (a close frame, the end of the stream or a reset): true if it
/// does within ten seconds.
async fn closes<S>(ws: &mut S) -> bool
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A send frame for `room` (an application entry at epoch 0), numbered `id`, under `key`.
fn send_frame(key: &grove_wire::push::FrameKey, id: u64, room: &str, body: &[u8]) -> Message {
    let entry =
        grove_wire::api::AppendEntry { kind: grove_wire::api::EntryKind::Application, epoch: 0, body: body.to_vec() };
    let mac = key.mac(id, room, &entry);
    Message::text(
        serde_json::to_string(&grove_wire::api::PushRequest::Send { id, room: room.into(), entry, mac }).unwrap(),
    )
}

/// Alice sends over her push socket: each entry is acknowledged after it is stored, in the
/// order sent, with its place in the log; a refused one (a room she is not in) gets the code
/// HTTP would give, under its own number, and the next still goes through. Bob, subscribed,
/// sees the entries.
#[tokio::test]
async fn entries_sent_on_the_socket_are_acknowledged_in_order() {
    let live = Live::start().await;
    let (alice, mallory) = (User::new(1), User::new(66));
    live.post(&alice, "/v1/rooms", json!({"name": "r", "mode": "sender-keys"})).await;
    live.post(&mallory, "/v1/rooms", json!({"name": "m", "mode": "sender-keys"})).await;
    let mut watcher = live.connect(&alice).await;
    watcher
        .send(Message::text(json!({"type": "subscribe", "rooms": [{"room": "r", "after": 0}]}).to_string()))
        .await
        .unwrap();

    let (mut ws, key) = live.connect_bound(&alice).await;
    for (id, room) in [(1, "r"), (2, "r"), (3, "m"), (4, "r"), (5, "nowhere")] {
        ws.send(send_frame(&key, id, room, format!("frame {id}").as_bytes())).await.unwrap();
    }
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(next_event(&mut ws).await);
    }
    let ids: Vec<u64> = answers.iter().map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "answered in the order sent: {answers:?}");
    let seqs: Vec<Value> = answers.iter().map(|a| a["appended"]["seq"].clone()).collect();
    assert_eq!(seqs, [json!(1), json!(2), Value::Null, json!(3), Value::Null]);
    assert_eq!(
        (answers[2]["type"].clone(), answers[2]["error"]["code"].clone()),
        (json!("refused"), json!("not_member"))
    );
    assert_eq!(answers[4]["error"]["code"], json!("room_not_found"));
    for want in 1..=3u64 {
        let ev = next_event(&mut watcher).await;
        assert_eq!((ev["type"].clone(), ev["entry"]["seq"].clone()), (json!("entry"), json!(want)));
    }
    live.stop().await;
}

/// Frames are bound to their connection: a frame copied onto another of Alice's sockets, one
/// numbered out of turn, one with a changed body, and any send on a socket opened without a
/// binding are all refused, and the socket is closed; nothing reaches the log.
#[tokio::test]
async fn a_send_frame_works_only_on_its_own_connection_in_turn_and_unchanged() {
    let live = Live::start().await;
    let alice = User::new(1);
    live.post(&alice, "/v1/rooms", json!({"name": "r", "mode": "sender-keys"})).await;
    let (mut first, key) = live.connect_bound(&alice).await;
    let frame = send_frame(&key, 1, "r", b"once");
    first.send(frame.clone()).await.unwrap();
    assert_eq!(next_event(&mut first).await["type"], json!("sent"));

    let refused = |mut ws: tokio_tungstenite::WebSocketStream<_>, frame: Message, what: &'static str| async move {
        ws.send(frame).await.unwrap();
        let ev = next_event(&mut ws).await;
        assert_eq!(
            (ev["type"].clone(), ev["error"]["code"].clone()),
            (json!("error"), json!("bad_signature")),
            "{what}: {ev}"
        );
        assert!(closes(&mut ws).await, "{what}: the socket is closed");
    };
    let (other, _) = live.connect_bound(&alice).await;
    refused(other, frame.clone(), "a frame replayed on another connection").await;
    refused(first, send_frame(&key, 3, "r", b"skipped one"), "a frame out of turn").await;
    let (mut third, key3) = live.connect_bound(&alice).await;
    let Message::Text(text) = send_frame(&key3, 1, "r", b"as signed") else { unreachable!() };
    third.send(Message::text(text.as_str().replace(&b64(b"as signed"), &b64(b"changed!!")))).await.unwrap();
    let ev = next_event(&mut third).await;
    assert_eq!(ev["error"]["code"], json!("bad_signature"), "a changed body: {ev}");
    refused(live.connect(&alice).await, send_frame(&key3, 1, "r", b"unbound"), "a socket without a binding").await;

    let head =
        live.post(&alice, "/v1/rooms/r/log", json!({"kind": "application", "epoch": 0, "body": b64(b"by http")})).await;
    assert_eq!(head["seq"], json!(2), "only the one good frame reached the log");
    live.stop().await;
}
