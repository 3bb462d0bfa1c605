//! `grove-bench chat`: how long a message takes from one client core's send to another client
//! core's timeline, over the push client, beside the server's own publish-to-deliver latency
//! in the same run.
//!
//! - client: Alice's `Profile::send` (outbox, seal, post, settle) until Bob's profile, fed by
//!   grove-client's `PushClient` and applying with `Profile::apply_pushed` as `grove chat`'s
//!   worker does, has the message in its history (decrypted, committed to SQLite).
//! - server: a raw signed append of 256 random bytes until a raw push WebSocket receives the
//!   frame: the server's part alone (verify, durable commit, fan-out).
//!
//! One message at a time (idle latency, not throughput); rounds alternate the two.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use grove_client::profile::Profile;
use grove_client::push::{Feed, PushClient};
use grove_wire::api::RoomMode;
use tokio::sync::mpsc;

use crate::harness::{
    histogram, http_client, median, prepare_append, push_subscribe, random_body, send, start_server, us, Env, Lat, User,
};

/// Runs the benchmark; prints a markdown table.
pub async fn run(env: &Env, messages: usize, rounds: usize, mode: RoomMode) -> Result<()> {
    let server = start_server(env).await?;
    let dir = tempfile::Builder::new().prefix("grove-bench-chat-").tempdir_in(&env.dir)?;
    let mut alice = Profile::init(&dir.path().join("alice"), &server.base).await?;
    let mut bob = Profile::init(&dir.path().join("bob"), &server.base).await?;
    let room = alice.create_room_with_mode(&server.base, "chat", mode).await?;
    alice.invite("chat", &bob.address().to_string()).await?;
    bob.sync().await?;

    // Bob as `grove chat`'s worker: the push feed applied to the profile; each text that
    // lands in history is reported with the moment it landed.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let (feed_tx, mut feed) = mpsc::channel(1024);
    let mut push = PushClient::new(feed_tx);
    let bob_room = bob.room("chat")?;
    push.follow(&server.base, bob.server_for(&server.base), vec![(bob_room.name.clone(), bob_room.cursor)], None);
    let link = room.link.clone();
    let bob_task = tokio::spawn(async move {
        let _push = push;
        while let Some(f) = feed.recv().await {
            if let Feed::Entries { server, room, entries } = f {
                let before = bob.room(&link)?.cursor;
                bob.apply_pushed(&server, &room, entries).await?;
                let now = Instant::now();
                for m in bob.messages(&link, before)? {
                    if let Some(t) = m.text() {
                        let _ = arrived_tx.send((t, now));
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    });

    // Alice as `grove chat` too: her own push connection is open, so her sends go over it
    // (grove-client appends over an open push connection). Her feed holds only her own
    // entries, which her outbox settles; it is drained here rather than applied.
    let (alice_feed_tx, mut alice_feed) = mpsc::channel(1024);
    let mut alice_push = PushClient::new(alice_feed_tx);
    let alice_room = alice.room("chat")?;
    alice_push.follow(&server.base, alice.server_for(&server.base), vec![(alice_room.name, alice_room.cursor)], None);
    let alice_drain = tokio::spawn(async move {
        let _push = alice_push;
        while alice_feed.recv().await.is_some() {}
    });
    let alice_server = alice.server_for(&server.base);

    // The server's part alone: a sender-keys room of two raw users, a raw push socket.
    let (ra, rb) = (User::random(), User::random());
    let http = http_client()?;
    server.setup_room(&http, &ra, "raw", &[rb.id]).await?;
    let url = format!("ws://{}/v1/push", server.addr);
    let sub = r#"{"type":"subscribe","rooms":[{"room":"raw","after":1}]}"#.to_string();
    let mut ws = push_subscribe(&url, &rb, &server.server_key, sub).await?;

    // Warm-up.
    for i in 0..20 {
        client_once(&mut alice, &mut arrived, &format!("warm-up {i}")).await?;
        server_once(&server, &http, &ra, &mut ws).await?;
    }
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut h = histogram();
        for i in 0..messages {
            h.record(server_once(&server, &http, &ra, &mut ws).await?.as_nanos() as u64)?;
            let _ = i;
        }
        servers.push(Lat::of(&h));
        let mut h = histogram();
        for i in 0..messages {
            h.record(
                client_once(&mut alice, &mut arrived, &format!("round {round} message {i}")).await?.as_nanos() as u64
            )?;
        }
        clients.push(Lat::of(&h));
    }
    bob_task.abort();
    let over_push = alice_server.appended_over_push();
    alice_drain.abort();
    let med = |v: &[Lat], f: fn(&Lat) -> f64| median(v.iter().map(f).collect());
    let (s50, s99) = (med(&servers, |l| l.p50_us), med(&servers, |l| l.p99_us));
    let (c50, c99) = (med(&clients, |l| l.p50_us), med(&clients, |l| l.p99_us));
    println!("\n### grove-bench chat: {} room, {messages} messages x {rounds} rounds, one at a time\n", mode.as_str());
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    println!("| server: signed append -> push frame | {} | {} |", us(s50), us(s99));
    println!("| client core: send -> the other's timeline | {} | {} |", us(c50), us(c99));
    println!("\nclient / server: p50 {:.2}x, p99 {:.2}x (goal: at most 1.5x)", c50 / s50, c99 / s99);
    println!("Alice's sends over her push connection: {over_push} of {}", 20 + messages * rounds);
    for (i, (s, c)) in servers.iter().zip(&clients).enumerate() {
        println!(
            "round {i}: server p50 {} p99 {}; client p50 {} p99 {}",
            us(s.p50_us),
            us(s.p99_us),
            us(c.p50_us),
            us(c.p99_us)
        );
    }
    server.stop().await;
    Ok(())
}

/// One message from Alice's send to Bob's history.
async fn client_once(
    alice: &mut Profile,
    arrived: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    text: &str,
) -> Result<Duration> {
    let start = Instant::now();
    alice.send("chat", text).await.context("send")?;
    loop {
        let (got, at) = tokio::time::timeout(Duration::from_secs(30), arrived.recv())
            .await
            .context("the message did not reach Bob within 30 s")?
            .context("Bob's worker stopped")?;
        if got == text {
            return Ok(at - start);
        }
    }
}

/// One raw entry from the signed append to the push frame.
async fn server_once(
    server: &crate::harness::Server,
    http: &reqwest::Client,
    user: &User,
    ws: &mut crate::harness::PushSocket,
) -> Result<Duration> {
    let p = prepare_append(&server.base, &server.server_key, user, "raw", 1, random_body(256));
    let start = Instant::now();
    let (status, text) = send(http, p).await?;
    anyhow::ensure!(status == 201, "append: {status} {text}");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no push frame within 30 s")?
            .context("the push socket closed")??;
        // An entry, not the subscription's `live` marker.
        if msg.to_text().is_ok_and(|t| t.starts_with(r#"{"type":"entry""#)) {
            return Ok(start.elapsed());
        }
    }
}
