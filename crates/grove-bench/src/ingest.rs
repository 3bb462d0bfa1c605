//! Durable ingest: through the real HTTP server, and at the store level (no HTTP).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use grove_store::{NewEntry, NewRoom, Store};
use grove_wire::api::{EntryKind, RoomMode};
use tokio::sync::Barrier;

use crate::harness::{self, histogram, Cores, Env, Lat, Prepared, Transport, User};

/// Size of every message body.
pub const BODY: usize = 256;
/// Untimed messages each sender posts first (connections, caches, room handles).
const WARMUP_PER_SENDER: usize = 20;

/// What an ingest run measured.
#[derive(Debug, Clone, Default)]
pub struct IngestResult {
    pub rooms: usize,
    pub senders: usize,
    pub messages: usize,
    pub secs: f64,
    pub rate: f64,
    pub ack: Lat,
    pub errors: usize,
    pub transactions: u64,
    pub mean_batch: f64,
    pub cores: Cores,
}

impl std::fmt::Display for IngestResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} msgs in {:.2}s = {:.0} msgs/s ({} rooms, {} senders); ack {}; {} commits, mean group {:.1}; errors {}; {}",
            self.messages, self.secs, self.rate, self.rooms, self.senders, self.ack, self.transactions, self.mean_batch, self.errors, self.cores
        )
    }
}

/// `senders` users post `messages` 256-byte application entries round-robin over `rooms`
/// sender-keys rooms, each sender one request at a time (64 concurrent keep-alive connections).
/// Requests are signed before the clock starts: the figure is the server's, not the signer's.
pub async fn http(env: &Env, rooms: usize, senders: usize, messages: usize) -> Result<IngestResult> {
    http_over(env, Transport::Plain, rooms, senders, messages).await
}

/// [`http`] over plain HTTP or TLS (grove terminating it; the client on rustls, HTTP/1.1).
pub async fn http_over(
    env: &Env,
    transport: Transport,
    rooms: usize,
    senders: usize,
    messages: usize,
) -> Result<IngestResult> {
    let (server, client, users, names) = start_with_rooms(env, transport, rooms, senders).await?;

    // Sign everything up front, on both cores (nothing else runs yet).
    let per = messages / senders;
    let extra = messages % senders;
    let counts: Vec<usize> = (0..senders).map(|i| per + usize::from(i < extra)).collect();
    let base = server.base.clone();
    let key = server.server_key;
    let plans: Vec<(User, usize, usize)> =
        users.iter().cloned().zip(counts.iter().copied()).enumerate().map(|(i, (u, n))| (u, n, i)).collect();
    let env2 = env.clone();
    let names2 = names.clone();
    let mut prepared: Vec<(Vec<Prepared>, Vec<Prepared>)> = tokio::task::spawn_blocking(move || {
        let halves: Vec<Vec<(User, usize, usize)>> = {
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (k, p) in plans.into_iter().enumerate() {
                if k % 2 == 0 {
                    a.push(p)
                } else {
                    b.push(p)
                }
            }
            vec![a, b]
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = halves
                .into_iter()
                .enumerate()
                .map(|(core, plan)| {
                    let (base, names, env) = (&base, &names2, &env2);
                    s.spawn(move || {
                        if env.pin {
                            harness::pin_current(if core == 0 { env.server_core } else { env.client_core });
                        }
                        plan.into_iter()
                            .map(|(u, n, i)| {
                                let make = |k: usize| {
                                    let room = &names[(i + k) % names.len()];
                                    harness::prepare_append(base, &key, &u, room, 1, harness::random_body(BODY))
                                };
                                let warm: Vec<Prepared> = (0..WARMUP_PER_SENDER).map(make).collect();
                                let main: Vec<Prepared> =
                                    (WARMUP_PER_SENDER..WARMUP_PER_SENDER + n).map(make).collect();
                                (i, warm, main)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(usize, Vec<Prepared>, Vec<Prepared>)> =
                handles.into_iter().flat_map(|h| h.join().expect("signing thread")).collect();
            all.sort_by_key(|x| x.0);
            all.into_iter().map(|(_, w, m)| (w, m)).collect()
        })
    })
    .await?;

    let barrier = Arc::new(Barrier::new(senders + 1));
    let mut tasks = Vec::with_capacity(senders);
    for (warm, main) in prepared.drain(..) {
        let client = client.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0usize;
            let mut first_error = None;
            for p in warm {
                if !matches!(harness::send(&client, p).await, Ok((201, _))) {
                    errors += 1;
                }
            }
            barrier.wait().await;
            let mut h = histogram();
            for p in main {
                let t = Instant::now();
                match harness::send(&client, p).await {
                    Ok((201, _)) => {
                        let _ = h.record(t.elapsed().as_nanos() as u64);
                    }
                    Ok((s, text)) => {
                        errors += 1;
                        first_error.get_or_insert(format!("{s} {text}"));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            anyhow::Ok((h, errors, first_error))
        }));
    }
    finish(env, server, &names, senders, messages, barrier, tasks, "ingest").await
}

/// A server with `rooms` sender-keys rooms (`ingest-N`) whose members are `senders` fresh
/// users; answers it, an HTTP client for it, the users and the rooms' names.
async fn start_with_rooms(
    env: &Env,
    transport: Transport,
    rooms: usize,
    senders: usize,
) -> Result<(harness::Server, reqwest::Client, Vec<User>, Vec<String>)> {
    let server = harness::start_server_with(env, transport).await?;
    let client = harness::http_client_for(&server)?;
    let admin = User::random();
    let users: Vec<User> = (0..senders).map(|_| User::random()).collect();
    let ids: Vec<_> = users.iter().map(|u| u.id).collect();
    let names: Vec<String> = (0..rooms).map(|r| format!("ingest-{r}")).collect();
    for n in &names {
        server.setup_room(&client, &admin, n, &ids).await?;
    }
    Ok((server, client, users, names))
}

/// What one sender task of an ingest run hands back: its latencies, errors, and the first.
pub type SenderOutcome = Result<(hdrhistogram::Histogram<u64>, usize, Option<String>)>;

/// Starts the clock when every sender has warmed up (`barrier`), waits for them all, checks
/// that the store holds every acknowledged entry (plus each room's setup entry and the
/// warm-up), stops the server and says what the run measured.
#[allow(clippy::too_many_arguments)] // one per figure of the run
async fn finish(
    env: &Env,
    server: harness::Server,
    names: &[String],
    senders: usize,
    messages: usize,
    barrier: Arc<Barrier>,
    tasks: Vec<tokio::task::JoinHandle<SenderOutcome>>,
    what: &str,
) -> Result<IngestResult> {
    barrier.wait().await;
    let before = server.store.stats();
    let c0 = harness::cpu_snap();
    let t0 = Instant::now();
    let mut hist = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (h, e, fe) = tokio::time::timeout(Duration::from_secs(600), t).await???;
        hist.add(&h).ok();
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cores = Cores::between(env, &c0, &harness::cpu_snap());
    let after = server.store.stats();
    if let Some(e) = first_error {
        eprintln!("{what}: first error: {e}");
    }
    // Every acknowledged entry must be in the store.
    let mut stored = 0u64;
    for n in names {
        stored += server.store.room(n).await?.map(|r| r.head).unwrap_or(0);
    }
    let expected = (names.len() + senders * WARMUP_PER_SENDER + messages - errors) as u64;
    if stored != expected {
        bail!("{what}: the store holds {stored} entries, expected {expected}");
    }
    server.stop().await;
    let ok = hist.len() as usize;
    let txns = after.transactions - before.transactions;
    Ok(IngestResult {
        rooms: names.len(),
        senders,
        messages: ok,
        secs,
        rate: ok as f64 / secs,
        ack: Lat::of(&hist),
        errors,
        transactions: txns,
        mean_batch: (after.ops - before.ops) as f64 / txns.max(1) as f64,
        cores,
    })
}

/// `tasks` tokio tasks on the server runtime call `store.append` directly (no HTTP, no auth):
/// the storage write path alone (channel, group committer, rusqlite, fsync).
pub async fn store_level(env: &Env, rooms: usize, tasks: usize, messages: usize) -> Result<IngestResult> {
    let dir = tempfile::Builder::new().prefix("grove-bench-store-").tempdir_in(&env.dir)?;
    let store = harness::open_store(env, dir.path().to_path_buf()).await?;
    let user = User::random();
    let ids = Arc::new(store_rooms(&store, &user, rooms).await?);
    // Bodies are made before the clock starts, as the raw reference's are: the figure is the
    // store's, not the random generator's.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..1024).map(|_| harness::random_body(BODY)).collect());
    let per = messages / tasks;
    let barrier = Arc::new(Barrier::new(tasks + 1));
    let mut handles = Vec::new();
    for i in 0..tasks {
        let (store, ids, barrier, bodies) = (store.clone(), ids.clone(), barrier.clone(), bodies.clone());
        let sender = user.id;
        let n = per + usize::from(i < messages % tasks);
        handles.push(env.srv.spawn(async move {
            let entry = |k: usize| NewEntry {
                kind: EntryKind::Application,
                epoch: 0,
                sender,
                ts: harness::unix_ms(),
                body: bodies[(i * 31 + k) % bodies.len()].clone(),
                update: None,
            };
            let mut errors = 0usize;
            for k in 0..WARMUP_PER_SENDER {
                if store.append(ids[(i + k) % ids.len()], entry(k)).await.is_err() {
                    errors += 1;
                }
            }
            barrier.wait().await;
            let mut h = histogram();
            for k in WARMUP_PER_SENDER..WARMUP_PER_SENDER + n {
                let e = entry(k);
                let t = Instant::now();
                match store.append(ids[(i + k) % ids.len()], e).await {
                    Ok(grove_store::AppendOutcome::Appended { .. }) => {
                        let _ = h.record(t.elapsed().as_nanos() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    barrier.wait().await;
    let before = store.stats();
    let c0 = harness::cpu_snap();
    let t0 = Instant::now();
    let mut hist = histogram();
    let mut errors = 0;
    for h in handles {
        let (h, e) = tokio::time::timeout(Duration::from_secs(600), h).await??;
        hist.add(&h).ok();
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cores = Cores::between(env, &c0, &harness::cpu_snap());
    let after = store.stats();
    let txns = after.transactions - before.transactions;
    drop(store);
    let ok = hist.len() as usize;
    Ok(IngestResult {
        rooms,
        senders: tasks,
        messages: ok,
        secs,
        rate: ok as f64 / secs,
        ack: Lat::of(&hist),
        errors,
        transactions: txns,
        mean_batch: (after.ops - before.ops) as f64 / txns.max(1) as f64,
        cores,
    })
}

/// `rooms` sender-keys rooms created through the store, `user` their only member.
async fn store_rooms(
    store: &grove_store_sqlite::SqliteStore,
    user: &User,
    rooms: usize,
) -> Result<Vec<grove_store::RoomId>> {
    let mut ids = Vec::new();
    for r in 0..rooms {
        let new = NewRoom {
            name: format!("store-{r}"),
            mode: RoomMode::SenderKeys,
            public: false,
            created_by: user.id,
            created_at: harness::unix_ms(),
            epoch: 0,
            state: Vec::new(),
            members: vec![user.id],
            admins: vec![user.id],
        };
        match store.create_room(new, 1_000_000).await? {
            grove_store::CreateRoomOutcome::Created(rec) => ids.push(rec.id),
            other => bail!("cannot create a room: {other:?}"),
        }
    }
    Ok(ids)
}

/// One task appends `messages` entries through the store one at a time, pausing `gap` between
/// them (an idle store): each append's latency is the hand-off to the writer thread, one
/// commit with its fsync, and the answer back. The idle path's storage hop.
pub async fn store_idle(env: &Env, messages: usize, gap: Duration) -> Result<Lat> {
    let dir = tempfile::Builder::new().prefix("grove-bench-store-idle-").tempdir_in(&env.dir)?;
    let store = harness::open_store(env, dir.path().to_path_buf()).await?;
    let user = User::random();
    let room = store_rooms(&store, &user, 1).await?[0];
    let body = harness::random_body(BODY);
    let task = env.srv.spawn(async move {
        let mut h = histogram();
        for k in 0..WARMUP_PER_SENDER + messages {
            let e = NewEntry {
                kind: EntryKind::Application,
                epoch: 0,
                sender: user.id,
                ts: harness::unix_ms(),
                body: body.clone(),
                update: None,
            };
            let t = Instant::now();
            match store.append(room, e).await {
                Ok(grove_store::AppendOutcome::Appended { .. }) if k >= WARMUP_PER_SENDER => {
                    let _ = h.record(t.elapsed().as_nanos() as u64);
                }
                Ok(grove_store::AppendOutcome::Appended { .. }) => {}
                other => bail!("an idle append failed: {other:?}"),
            }
            tokio::time::sleep(gap).await;
        }
        anyhow::Ok(h)
    });
    let h = tokio::time::timeout(Duration::from_secs(600), task).await???;
    drop(dir);
    Ok(Lat::of(&h))
}

/// Plain HTTP and TLS ingest in turn, `rounds` times each (alternating, so drift in the
/// machine's load hits both alike); answers each run's result.
pub async fn tls_cost(
    env: &Env,
    rounds: usize,
    rooms: usize,
    senders: usize,
    messages: usize,
) -> Result<Vec<(Transport, IngestResult)>> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        for t in [Transport::Plain, Transport::Tls] {
            let r = http_over(env, t, rooms, senders, messages).await?;
            eprintln!("  {t:?}: {r}");
            out.push((t, r));
        }
    }
    Ok(out)
}

/// [`http`] and the same load over the push WebSocket in one run: `senders` users, each with
/// one bound socket keeping up to `window` entries in flight, post `messages` 256-byte
/// application entries round-robin over `rooms` sender-keys rooms. Answers (HTTP, WebSocket).
pub async fn websocket_vs_http(
    env: &Env,
    rooms: usize,
    senders: usize,
    window: usize,
    messages: usize,
) -> Result<(IngestResult, IngestResult)> {
    let over_http = http(env, rooms, senders, messages).await?;
    let over_ws = websocket(env, rooms, senders, window, messages).await?;
    Ok((over_http, over_ws))
}

/// One sender on its own bound push socket to `url`: `WARMUP_PER_SENDER` untimed frames, then
/// (after `barrier`) `n` timed ones, round-robin over `names` from the `i`th, at most `window`
/// unanswered at a time. Frames (with their MACs) are made before the clock starts; an entry's
/// latency runs from its frame's send to its `sent` answer.
#[allow(clippy::too_many_arguments)]
pub async fn ws_sender(
    url: &str,
    user: &User,
    server_key: &[u8; 32],
    names: &[String],
    i: usize,
    n: usize,
    window: usize,
    barrier: Arc<Barrier>,
) -> Result<tokio::task::JoinHandle<SenderOutcome>> {
    use futures_util::{SinkExt, StreamExt};
    use grove_wire::api::{AppendEntry, PushRequest};
    use tokio_tungstenite::tungstenite::Message;

    let window = window.max(1);
    let (ws, key) = harness::push_bound(url, user, server_key).await?;
    let frames: Vec<String> = (0..WARMUP_PER_SENDER + n)
        .map(|k| {
            let room = names[(i + k) % names.len()].clone();
            let entry = AppendEntry { kind: EntryKind::Application, epoch: 1, body: harness::random_body(BODY) };
            let id = k as u64 + 1;
            let mac = key.mac(id, &room, &entry);
            serde_json::to_string(&PushRequest::Send { id, room, entry, mac }).unwrap_or_default()
        })
        .collect();
    Ok(tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut h = histogram();
        let (mut errors, mut first_error) = (0usize, None);
        let mut sent_at = std::collections::VecDeque::with_capacity(window);
        let mut frames = frames.into_iter();
        let mut answered = 0usize;
        let total = WARMUP_PER_SENDER + n;
        while answered < total {
            if answered == WARMUP_PER_SENDER && sent_at.is_empty() {
                barrier.wait().await;
            }
            let warming = answered < WARMUP_PER_SENDER;
            let limit = if warming { WARMUP_PER_SENDER } else { total };
            let sent = answered + sent_at.len();
            if sent_at.len() < window && sent < limit {
                if let Some(f) = frames.next() {
                    sink.send(Message::text(f)).await?;
                    sent_at.push_back(Instant::now());
                    continue;
                }
            }
            let Some(msg) = stream.next().await else { bail!("the server closed the push socket") };
            let Message::Text(text) = msg? else { continue };
            let ev: serde_json::Value = serde_json::from_str(text.as_str())?;
            let t = sent_at.pop_front().ok_or_else(|| anyhow::anyhow!("an answer to no send: {ev}"))?;
            answered += 1;
            if ev["type"] == "sent" {
                if !warming {
                    let _ = h.record(t.elapsed().as_nanos() as u64);
                }
            } else {
                errors += 1;
                first_error.get_or_insert(ev.to_string());
            }
        }
        anyhow::Ok((h, errors, first_error))
    }))
}

/// The WebSocket half of [`websocket_vs_http`]: each sender a [`ws_sender`].
pub async fn websocket(
    env: &Env,
    rooms: usize,
    senders: usize,
    window: usize,
    messages: usize,
) -> Result<IngestResult> {
    let (server, _, users, names) = start_with_rooms(env, Transport::Plain, rooms, senders).await?;
    let url = format!("{}/v1/push", server.base.replacen("http://", "ws://", 1));
    let barrier = Arc::new(Barrier::new(senders + 1));
    let mut tasks = Vec::with_capacity(senders);
    for (i, user) in users.iter().enumerate() {
        let n = messages / senders + usize::from(i < messages % senders);
        tasks.push(ws_sender(&url, user, &server.server_key, &names, i, n, window, barrier.clone()).await?);
    }
    finish(env, server, &names, senders, messages, barrier, tasks, "ingest over the push WebSocket").await
}
