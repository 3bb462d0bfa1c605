//! Push fan-out: WebSocket subscribers of one room, a paced publisher, publish→deliver latency.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{self, histogram, now_ns, Cores, Env, Lat, User};
use crate::ingest::BODY;

/// Untimed messages sent first; the measured phase starts once every subscriber got them all.
const WARMUP: usize = 5;

/// How the publisher posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Publish {
    /// A signed `POST /v1/rooms/{room}/log` per message, over keep-alive HTTP.
    Http,
    /// A `send` frame on the publisher's own bound push WebSocket (grove-client's path when it
    /// holds a connection, as `grove chat` does), acknowledged by a `sent` event.
    Ws,
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Publish::Http => "HTTP POST",
            Publish::Ws => "push WebSocket",
        })
    }
}

/// What a fan-out run measured.
#[derive(Debug, Clone, Default)]
pub struct FanoutResult {
    pub publish: Option<Publish>,
    pub subscribers: usize,
    pub rate: u32,
    pub messages: usize,
    /// Publish (just before the POST) → the last subscriber received it.
    pub last: Lat,
    /// Publish → each delivery.
    pub delivery: Lat,
    /// Publish → 201 received by the publisher.
    pub ack: Lat,
    pub deliveries: u64,
    pub missing: u64,
    pub publish_errors: usize,
    pub connect_secs: f64,
    pub cores: Cores,
}

impl std::fmt::Display for FanoutResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} subscribers × {}/s, {} msgs ({}): to last subscriber {}; per delivery {}; publisher ack {}; {} deliveries, {} missing, {} publish errors (connect {:.1}s); {}",
            self.subscribers, self.rate, self.messages, self.publish.map(|p| p.to_string()).unwrap_or_default(), self.last, self.delivery, self.ack, self.deliveries, self.missing, self.publish_errors, self.connect_secs, self.cores
        )
    }
}

struct Shared {
    /// Per message: when the publisher started the POST (ns, `now_ns`); 0 before.
    posted: Vec<AtomicU64>,
    /// Per message: the latest receipt among subscribers.
    last_recv: Vec<AtomicU64>,
    /// Per message: how many subscribers received it.
    count: Vec<AtomicU32>,
}

/// The message index carried in the first 8 bytes of a push frame's body.
fn index_of(frame: &str) -> Option<usize> {
    const KEY: &str = "\"body\":\"";
    let at = frame.find(KEY)? + KEY.len();
    // 24 base64 characters are exactly the first 18 bytes.
    let bytes = grove_wire::b64::decode(frame.get(at..at + 24)?).ok()?;
    Some(u64::from_le_bytes(bytes[..8].try_into().ok()?) as usize)
}

/// `subscribers` WebSocket clients (distinct members) subscribe to one room; one publisher
/// posts `rate` msgs/s for `seconds` seconds; every entry is acknowledged after fsync.
pub async fn run(env: &Env, subscribers: usize, rate: u32, seconds: u32) -> Result<FanoutResult> {
    run_via(env, subscribers, rate, seconds, Publish::Http).await
}

/// [`run`], the publisher posting as `publish` says.
pub async fn run_via(env: &Env, subscribers: usize, rate: u32, seconds: u32, publish: Publish) -> Result<FanoutResult> {
    if let Some(limit) = harness::open_files_limit() {
        let need = 2 * subscribers as u64 + 256;
        if limit < need {
            bail!("the open-files limit is {limit}; {subscribers} subscribers need about {need} (client and server sockets): raise `ulimit -n`");
        }
    }
    let server = harness::start_server(env).await?;
    let client = harness::http_client()?;
    let publisher = User::random();
    let subs: Vec<User> = (0..subscribers).map(|_| User::random()).collect();
    let room = "fanout";
    let ids: Vec<_> = subs.iter().map(|u| u.id).collect();
    server.setup_room(&client, &publisher, room, &ids).await?;
    // Seq 1 is the membership entry: subscribe after it.
    let after = 1u64;

    let total = WARMUP + (rate as usize) * (seconds as usize);
    let shared = Arc::new(Shared {
        posted: (0..total).map(|_| AtomicU64::new(0)).collect(),
        last_recv: (0..total).map(|_| AtomicU64::new(0)).collect(),
        count: (0..total).map(|_| AtomicU32::new(0)).collect(),
    });

    // Connect and subscribe, 32 at a time.
    let t_connect = std::time::Instant::now();
    let url = format!("ws://{}/v1/push", server.addr);
    let key = server.server_key;
    let sub_msg = serde_json::json!({ "type": "subscribe", "rooms": [{ "room": room, "after": after }] }).to_string();
    let sockets: Vec<_> = futures_util::stream::iter(subs.iter().cloned())
        .map(|u| {
            let (url, sub_msg) = (url.clone(), sub_msg.clone());
            async move { harness::push_subscribe(&url, &u, &key, sub_msg).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let connect_secs = t_connect.elapsed().as_secs_f64();

    // Subscriber tasks: bounded by a deadline well after the last publish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds as u64 + 60);
    let mut readers = Vec::with_capacity(subscribers);
    for mut ws in sockets {
        let shared = shared.clone();
        readers.push(tokio::spawn(async move {
            let mut lat: Vec<u64> = Vec::with_capacity(total);
            let mut got = 0usize;
            let mut errors = 0usize;
            while got < total {
                let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                };
                let now = now_ns();
                let Message::Text(text) = msg else { continue };
                if text.as_str().starts_with(r#"{"type":"live""#) {
                    // The backlog's end marker.
                    continue;
                }
                let Some(i) = index_of(text.as_str()).filter(|&i| i < total) else {
                    errors += 1;
                    continue;
                };
                got += 1;
                shared.count[i].fetch_add(1, Ordering::AcqRel);
                shared.last_recv[i].fetch_max(now, Ordering::AcqRel);
                if i >= WARMUP {
                    let posted = shared.posted[i].load(Ordering::Acquire);
                    lat.push(now.saturating_sub(posted));
                }
            }
            let _ = ws.close(None).await;
            (lat, errors)
        }));
    }

    // The publisher: paced, each POST in its own task so a slow ack never delays the next one;
    // over the WebSocket, one task owns the socket and answers each frame's ack in order.
    let frames = match publish {
        Publish::Http => None,
        Publish::Ws => {
            let (ws, frame_key) = harness::push_bound(&url, &publisher, &key).await?;
            Some((ws_publisher(ws, shared.clone()), Arc::new(frame_key)))
        }
    };
    let post = |i: usize| {
        let (client, shared, base, publisher) =
            (client.clone(), shared.clone(), server.base.clone(), publisher.clone());
        let frames = frames.as_ref().map(|(tx, frame_key)| (tx.clone(), frame_key.clone()));
        tokio::spawn(async move {
            let mut body = harness::random_body(BODY);
            body[..8].copy_from_slice(&(i as u64).to_le_bytes());
            body[8..16].copy_from_slice(&now_ns().to_le_bytes());
            if let Some((tx, frame_key)) = frames {
                let entry =
                    grove_wire::api::AppendEntry { kind: grove_wire::api::EntryKind::Application, epoch: 1, body };
                let id = i as u64 + 1;
                let mac = frame_key.mac(id, room, &entry);
                let frame = grove_wire::api::PushRequest::Send { id, room: room.to_string(), entry, mac };
                let text = serde_json::to_string(&frame).map_err(|e| e.to_string())?;
                let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
                tx.send((i, text, ack_tx)).map_err(|_| "the publisher's socket is gone".to_string())?;
                return ack_rx.await.map_err(|_| "the publisher's socket is gone".to_string())?;
            }
            let p = harness::prepare_append(&base, &key, &publisher, room, 1, body);
            let t = now_ns();
            shared.posted[i].store(t, Ordering::Release);
            let r = harness::send(&client, p).await;
            let ack = now_ns() - t;
            match r {
                Ok((201, _)) => Ok(ack),
                Ok((s, text)) => Err(format!("{s} {text}")),
                Err(e) => Err(e.to_string()),
            }
        })
    };
    // Warm-up: wait (bounded) until every subscriber has every warm-up message.
    for i in 0..WARMUP {
        post(i).await?.map_err(|e| anyhow::anyhow!("warm-up publish: {e}"))?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while (0..WARMUP).any(|i| shared.count[i].load(Ordering::Acquire) < subscribers as u32) {
        if tokio::time::Instant::now() > ready_by {
            bail!(
                "only {} of {subscribers} subscribers received the warm-up",
                shared.count[WARMUP - 1].load(Ordering::Acquire)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let c0 = harness::cpu_snap();
    let mut posts = Vec::with_capacity(total);
    for i in WARMUP..total {
        tick.tick().await;
        posts.push(post(i));
    }
    let cores = Cores::between(env, &c0, &harness::cpu_snap());
    let mut ack = histogram();
    let mut publish_errors = 0;
    for p in posts {
        match tokio::time::timeout_at(deadline, p).await {
            Ok(Ok(Ok(ns))) => {
                let _ = ack.record(ns.max(1));
            }
            Ok(Ok(Err(e))) => {
                if publish_errors == 0 {
                    eprintln!("fanout: publish failed: {e}");
                }
                publish_errors += 1;
            }
            _ => publish_errors += 1,
        }
    }
    // Readers stop once they have everything, or at the deadline.
    let mut delivery = histogram();
    let mut frame_errors = 0;
    for r in readers {
        let (lat, e) = r.await?;
        frame_errors += e;
        for v in lat {
            let _ = delivery.record(v.max(1));
        }
    }
    if frame_errors > 0 {
        eprintln!("fanout: {frame_errors} frames were not entries of this benchmark");
    }
    let mut last = histogram();
    let mut missing = 0u64;
    for i in WARMUP..total {
        let c = shared.count[i].load(Ordering::Acquire) as u64;
        missing += subscribers as u64 - c.min(subscribers as u64);
        if c as usize == subscribers {
            let posted = shared.posted[i].load(Ordering::Acquire);
            let l = shared.last_recv[i].load(Ordering::Acquire);
            let _ = last.record(l.saturating_sub(posted).max(1));
        }
    }
    server.stop().await;
    Ok(FanoutResult {
        publish: Some(publish),
        subscribers,
        rate,
        messages: total - WARMUP,
        last: Lat::of(&last),
        delivery: Lat::of(&delivery),
        ack: Lat::of(&ack),
        deliveries: delivery.len(),
        missing,
        publish_errors,
        connect_secs,
        cores,
    })
}

/// A frame to send on the publisher's socket: its message index, its text, where its ack goes.
type Frame = (usize, String, tokio::sync::oneshot::Sender<std::result::Result<u64, String>>);

/// The publisher's bound push socket, owned by one task: frames go out in the order they come
/// (their `posted` time taken just before the write), and each `sent` or `refused` answers the
/// oldest frame still waiting (the server answers in order).
fn ws_publisher(ws: harness::PushSocket, shared: Arc<Shared>) -> tokio::sync::mpsc::UnboundedSender<Frame> {
    use futures_util::SinkExt;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut waiting: std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<_>)> = Default::default();
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some((i, text, ack)) = frame else { break };
                    let t = now_ns();
                    shared.posted[i].store(t, Ordering::Release);
                    if let Err(e) = sink.send(Message::text(text)).await {
                        let _ = ack.send(Err(format!("send: {e}")));
                        break;
                    }
                    waiting.push_back((t, ack));
                }
                msg = stream.next() => {
                    let Some(Ok(Message::Text(text))) = msg else {
                        if matches!(msg, None | Some(Err(_))) { break }
                        continue;
                    };
                    let now = now_ns();
                    let Some((t, ack)) = waiting.pop_front() else { continue };
                    let answer = if text.as_str().contains("\"type\":\"sent\"") {
                        Ok(now - t)
                    } else {
                        Err(text.to_string())
                    };
                    let _ = ack.send(answer);
                }
            }
        }
        for (_, ack) in waiting {
            let _ = ack.send(Err("the publisher's socket closed".into()));
        }
    });
    tx
}
