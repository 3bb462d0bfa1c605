//! `grove-bench pg`: grove on PostgreSQL with one and with two server instances (issue 5).
//!
//! On a scratch database (created, then dropped) of the PostgreSQL server at `--url`:
//! 1. **pgbench baseline**: `pgbench` running single-row autocommit `INSERT`s of a 256-byte
//!    body with as many clients as grove has senders — what the database commits when every
//!    message is its own transaction.
//! 2. **Durable ingest** through HTTP: `senders` users each post 256-byte application entries
//!    one at a time (acknowledged after COMMIT), over `rooms` rooms, to one instance, then split
//!    evenly over two instances sharing the database.
//! 3. **Fan-out / wake-up**: `subscribers` push subscribers of one room and a paced publisher;
//!    with one instance (publisher and subscribers on A) and with two (publisher on A,
//!    subscribers on B, woken by A's `NOTIFY`). Reported: publish → delivery, and
//!    acknowledgement on A → delivery (the cross-instance wake-up; 0 when the delivery came
//!    before the publisher read its acknowledgement).
//!
//! Every instance runs in this process on the server runtime; PostgreSQL runs unpinned.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use grove_server::AppState;
use grove_store_postgres::PostgresStore;
use tokio::sync::{oneshot, Barrier};
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{self, histogram, now_ns, Env, Lat, Prepared, User};
use crate::ingest::BODY;

/// Options of `grove-bench pg`.
#[derive(Debug, Clone)]
pub struct Opts {
    pub url: String,
    pub rooms: usize,
    pub senders: usize,
    pub messages: usize,
    pub subscribers: usize,
    pub rate: u32,
    pub seconds: u32,
    pub pgbench_seconds: u32,
    /// Frames each sender keeps unanswered on its push WebSocket in the WebSocket ingest.
    pub window: usize,
}

/// One grove instance on the shared database.
struct Instance {
    addr: SocketAddr,
    base: String,
    store: Arc<PostgresStore>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _state: AppState,
}

impl Instance {
    async fn start(env: &Env, url: &str, key: &ed25519_dalek::SigningKey) -> Result<Instance> {
        let dir = tempfile::Builder::new().prefix("grove-bench-pg-").tempdir_in(&env.dir)?;
        let config = harness::bench_config(dir.path());
        let url2 = url.to_string();
        // Connect on the server runtime: the writer and listener tasks live there.
        let store = Arc::new(env.srv.spawn(async move { PostgresStore::connect(&url2).await }).await??);
        let state = AppState::new(config, store.clone(), key.clone());
        let (addr, stop_tx, task) = harness::serve_on(env, state.clone()).await?;
        Ok(Instance { addr, base: format!("http://{addr}"), store, stop: Some(stop_tx), task, _state: state })
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A scratch database, dropped at the end.
struct Scratch {
    admin: String,
    name: String,
    url: String,
}

async fn admin_exec(url: &str, sql: &str) -> Result<()> {
    let (client, conn) =
        tokio_postgres::connect(url, NoTls).await.with_context(|| format!("cannot connect to PostgreSQL at {url}"))?;
    let conn = tokio::spawn(conn);
    client.batch_execute(sql).await.with_context(|| sql.to_string())?;
    drop(client);
    let _ = conn.await;
    Ok(())
}

impl Scratch {
    async fn create(admin: &str, tag: &str) -> Result<Scratch> {
        let name = format!("grove_bench_{tag}_{}", std::process::id());
        admin_exec(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        admin_exec(admin, &format!("CREATE DATABASE {name}")).await?;
        let (base, _) = admin.rsplit_once('/').context("--url must be a URL ending with /DATABASE")?;
        Ok(Scratch { admin: admin.to_string(), url: format!("{base}/{name}"), name })
    }

    async fn drop_it(self) {
        if let Err(e) = admin_exec(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await {
            eprintln!("warning: cannot drop {}: {e}", self.name);
        }
    }
}

/// Runs every part and prints one line each.
pub async fn run(env: &Env, o: &Opts) -> Result<()> {
    let pgb = pgbench(o).await?;
    println!("pgbench: {pgb:.0} single-row INSERT transactions/s ({} clients, {} s)", o.senders, o.pgbench_seconds);
    for instances in [1usize, 2] {
        let r = ingest(env, o, instances).await?;
        println!(
            "ingest over HTTP, {instances} instance(s): {} msgs in {:.2}s = {:.0} msgs/s = {:.2}× pgbench; ack {}; {} commits, mean group {:.1}",
            r.0, r.1, r.2, r.2 / pgb, r.3, r.4, r.5
        );
        let w = ingest_ws(env, o, instances).await?;
        println!(
            "ingest over the push WebSocket (window {}), {instances} instance(s): {} msgs in {:.2}s = {:.0} msgs/s = {:.2}× pgbench = {:.2}× HTTP; ack {}; {} commits, mean group {:.1}",
            o.window, w.0, w.1, w.2, w.2 / pgb, w.2 / r.2.max(1.0), w.3, w.4, w.5
        );
    }
    for instances in [1usize, 2] {
        let w = wake(env, o, instances).await?;
        println!(
            "fanout, {instances} instance(s) ({} subscribers{}, {}/s, {} msgs): publish→delivery {}; ack→delivery {}; publisher ack {}; {} missing",
            o.subscribers,
            if instances == 2 { " on B, publisher on A" } else { "" },
            o.rate,
            w.messages,
            w.delivery,
            w.wake,
            w.ack,
            w.missing
        );
    }
    Ok(())
}

/// pgbench, single-row autocommit inserts: transactions per second.
async fn pgbench(o: &Opts) -> Result<f64> {
    let db = Scratch::create(&o.url, "pgbench").await?;
    admin_exec(&db.url, "CREATE TABLE t (id bigserial PRIMARY KEY, room int8 NOT NULL, body bytea NOT NULL)").await?;
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        format!(
            "\\set r random(1, {})\nINSERT INTO t (room, body) VALUES (:r, decode(repeat('ab', {BODY}), 'hex'));\n",
            o.rooms.max(1)
        ),
    )?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2", "-c", &o.senders.to_string(), "-T", &o.pgbench_seconds.to_string()])
        .arg("-f")
        .arg(script.path())
        .arg(&db.url)
        .output()
        .await
        .context("cannot run pgbench (it comes with PostgreSQL)")?;
    db.drop_it().await;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output: {text}"))?;
    Ok(tps)
}

/// Instances on a scratch database, with `o.rooms` sender-keys rooms of `o.senders` users.
struct Rig {
    db: Scratch,
    servers: Vec<Instance>,
    server_key: [u8; 32],
    client: reqwest::Client,
    users: Vec<User>,
    names: Vec<String>,
}

impl Rig {
    async fn start(env: &Env, o: &Opts, instances: usize, tag: &str) -> Result<Rig> {
        let db = Scratch::create(&o.url, tag).await?;
        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        let mut servers = Vec::new();
        for _ in 0..instances {
            servers.push(Instance::start(env, &db.url, &key).await?);
        }
        let server_key = key.verifying_key().to_bytes();
        let client = harness::http_client()?;
        let admin = User::random();
        let users: Vec<User> = (0..o.senders).map(|_| User::random()).collect();
        let ids: Vec<_> = users.iter().map(|u| u.id).collect();
        let names: Vec<String> = (0..o.rooms).map(|r| format!("ingest-{r}")).collect();
        for n in &names {
            setup_room(&client, &servers[0].base, &server_key, &admin, n, &ids).await?;
        }
        Ok(Rig { db, servers, server_key, client, users, names })
    }
}

/// An ingest's figures from its start, the stores' counters before it and the acks' latencies
/// (acked, secs, rate, ack latency, commits, mean group); stops the instances, drops the database.
async fn finish(
    t0: Instant,
    servers: Vec<Instance>,
    before: &[grove_store_postgres::WriterStats],
    db: Scratch,
    hist: &hdrhistogram::Histogram<u64>,
) -> Result<(usize, f64, f64, Lat, u64, f64)> {
    let secs = t0.elapsed().as_secs_f64();
    let (mut commits, mut ops) = (0, 0);
    for (s, b) in servers.iter().zip(before) {
        let a = s.store.stats();
        commits += a.transactions - b.transactions;
        ops += a.ops - b.ops;
    }
    for s in servers {
        s.stop().await;
    }
    db.drop_it().await;
    let n = hist.len() as usize;
    Ok((n, secs, n as f64 / secs, Lat::of(hist), commits, ops as f64 / commits.max(1) as f64))
}

/// Durable HTTP ingest over `instances` instances: (acked, secs, rate, ack latency, commits,
/// mean group).
async fn ingest(env: &Env, o: &Opts, instances: usize) -> Result<(usize, f64, f64, Lat, u64, f64)> {
    let Rig { db, servers, server_key, client, users, names } = Rig::start(env, o, instances, "ingest").await?;
    // Sign before the clock starts; sender i posts to instance i % instances.
    let per = o.messages / o.senders;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let names2 = names.clone();
    let users2 = users.clone();
    let plans: Vec<(Vec<Prepared>, Vec<Prepared>)> = tokio::task::spawn_blocking(move || {
        users2
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let base = &bases[i % bases.len()];
                let make = |k: usize| {
                    harness::prepare_append(
                        base,
                        &server_key,
                        u,
                        &names2[(i + k) % names2.len()],
                        1,
                        harness::random_body(BODY),
                    )
                };
                ((0..10).map(make).collect(), (10..10 + per).map(make).collect())
            })
            .collect()
    })
    .await?;
    let barrier = Arc::new(Barrier::new(o.senders + 1));
    let mut tasks = Vec::new();
    for (warm, main) in plans {
        let (client, barrier) = (client.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            for p in warm {
                let _ = harness::send(&client, p).await;
            }
            barrier.wait().await;
            let mut h = histogram();
            let mut errors = 0usize;
            for p in main {
                let t = Instant::now();
                match harness::send(&client, p).await {
                    Ok((201, _)) => {
                        let _ = h.record(t.elapsed().as_nanos() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    barrier.wait().await;
    let before: Vec<_> = servers.iter().map(|s| s.store.stats()).collect();
    let t0 = Instant::now();
    let mut hist = histogram();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = tokio::time::timeout(Duration::from_secs(600), t).await??;
        hist.add(&h).ok();
        errors += e;
    }
    if errors > 0 {
        bail!("ingest: {errors} appends failed");
    }
    finish(t0, servers, &before, db, &hist).await
}

/// Durable ingest over each sender's bound push WebSocket (sender i on instance
/// i % instances), `o.window` frames unanswered per sender: (acked, secs, rate, ack latency,
/// commits, mean group).
async fn ingest_ws(env: &Env, o: &Opts, instances: usize) -> Result<(usize, f64, f64, Lat, u64, f64)> {
    let Rig { db, servers, server_key, users, names, .. } = Rig::start(env, o, instances, "ingest_ws").await?;
    let barrier = Arc::new(Barrier::new(o.senders + 1));
    let mut tasks = Vec::with_capacity(o.senders);
    for (i, u) in users.iter().enumerate() {
        let url = format!("ws://{}/v1/push", servers[i % servers.len()].addr);
        let n = o.messages / o.senders + usize::from(i < o.messages % o.senders);
        tasks.push(crate::ingest::ws_sender(&url, u, &server_key, &names, i, n, o.window, barrier.clone()).await?);
    }
    barrier.wait().await;
    let before: Vec<_> = servers.iter().map(|s| s.store.stats()).collect();
    let t0 = Instant::now();
    let mut hist = histogram();
    let (mut errors, mut first) = (0, None);
    for t in tasks {
        let (h, e, fe) = tokio::time::timeout(Duration::from_secs(600), t).await???;
        hist.add(&h).ok();
        errors += e;
        first = first.or(fe);
    }
    if errors > 0 {
        bail!("ingest over the push WebSocket: {errors} appends refused; the first: {}", first.unwrap_or_default());
    }
    finish(t0, servers, &before, db, &hist).await
}

async fn setup_room(
    client: &reqwest::Client,
    base: &str,
    server_key: &[u8; 32],
    admin: &User,
    name: &str,
    members: &[grove_wire::UserId],
) -> Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({ "name": name, "mode": "sender-keys" }))?;
    let h = harness::sign(admin, server_key, "POST", "/v1/rooms", &body);
    let r = harness::with_headers(client.post(format!("{base}/v1/rooms")), &h)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("creating room {name}: {}", r.status());
    }
    let mut all = vec![admin.id];
    all.extend_from_slice(members);
    let m = grove_wire::membership::SignedMembership::sign(
        &admin.key,
        name,
        1,
        all,
        grove_wire::policy::RoomPolicy::for_creator(admin.id),
    );
    let path = format!("/v1/rooms/{name}/log");
    let body = serde_json::to_vec(&grove_wire::api::AppendEntry {
        kind: grove_wire::api::EntryKind::Membership,
        epoch: 1,
        body: serde_json::to_vec(&m)?,
    })?;
    let h = harness::sign(admin, server_key, "POST", &path, &body);
    let r = harness::with_headers(client.post(format!("{base}{path}")), &h)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("membership of room {name}: {}", r.status());
    }
    Ok(())
}

struct Wake {
    messages: usize,
    delivery: Lat,
    wake: Lat,
    ack: Lat,
    missing: u64,
}

/// The message index in the first 8 bytes of a push frame's body.
fn index_of(frame: &str) -> Option<usize> {
    const KEY: &str = "\"body\":\"";
    let at = frame.find(KEY)? + KEY.len();
    let bytes = grove_wire::b64::decode(frame.get(at..at + 24)?).ok()?;
    Some(u64::from_le_bytes(bytes[..8].try_into().ok()?) as usize)
}

/// Subscribers on the last instance, the publisher on the first.
async fn wake(env: &Env, o: &Opts, instances: usize) -> Result<Wake> {
    const WARMUP: usize = 5;
    let db = Scratch::create(&o.url, "wake").await?;
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let mut servers = Vec::new();
    for _ in 0..instances {
        servers.push(Instance::start(env, &db.url, &key).await?);
    }
    let server_key = key.verifying_key().to_bytes();
    let (src, dst) = (&servers[0], &servers[instances - 1]);
    let client = harness::http_client()?;
    let publisher = User::random();
    let subs: Vec<User> = (0..o.subscribers).map(|_| User::random()).collect();
    let ids: Vec<_> = subs.iter().map(|u| u.id).collect();
    let room = "wake";
    setup_room(&client, &src.base, &server_key, &publisher, room, &ids).await?;

    let total = WARMUP + o.rate as usize * o.seconds as usize;
    let posted: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let url = format!("ws://{}/v1/push", dst.addr);
    let sub_msg = serde_json::json!({ "type": "subscribe", "rooms": [{ "room": room, "after": 1 }] }).to_string();
    let mut readers = Vec::new();
    for u in &subs {
        let mut ws = harness::push_subscribe(&url, u, &server_key, sub_msg.clone()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(o.seconds as u64 + 60);
        readers.push(tokio::spawn(async move {
            let mut got: Vec<(usize, u64)> = Vec::with_capacity(total);
            while got.len() < total {
                let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                };
                let now = now_ns();
                let Message::Text(text) = msg else { continue };
                if let Some(i) = index_of(text.as_str()).filter(|&i| i < total) {
                    got.push((i, now));
                }
            }
            got
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let post = |i: usize| {
        let (client, posted, acked, base, publisher) =
            (client.clone(), posted.clone(), acked.clone(), src.base.clone(), publisher.clone());
        tokio::spawn(async move {
            let mut body = harness::random_body(BODY);
            body[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let p = harness::prepare_append(&base, &server_key, &publisher, room, 1, body);
            let t = now_ns();
            posted[i].store(t, Ordering::Release);
            let r = harness::send(&client, p).await;
            acked[i].store(now_ns(), Ordering::Release);
            matches!(r, Ok((201, _)))
        })
    };
    for i in 0..WARMUP {
        post(i).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate as f64));
    let mut posts = Vec::new();
    for i in WARMUP..total {
        tick.tick().await;
        posts.push(post(i));
    }
    let mut ack = histogram();
    for (k, p) in posts.into_iter().enumerate() {
        if !p.await? {
            bail!("publish {} failed", k + WARMUP);
        }
        let i = k + WARMUP;
        let _ = ack.record(acked[i].load(Ordering::Acquire).saturating_sub(posted[i].load(Ordering::Acquire)).max(1));
    }
    let (mut delivery, mut wake) = (histogram(), histogram());
    let mut received = 0u64;
    for r in readers {
        for (i, at) in r.await? {
            if i < WARMUP {
                continue;
            }
            received += 1;
            let _ = delivery.record(at.saturating_sub(posted[i].load(Ordering::Acquire)).max(1));
            let _ = wake.record(at.saturating_sub(acked[i].load(Ordering::Acquire)).max(1));
        }
    }
    for s in servers {
        s.stop().await;
    }
    db.drop_it().await;
    let messages = total - WARMUP;
    Ok(Wake {
        messages,
        delivery: Lat::of(&delivery),
        wake: Lat::of(&wake),
        ack: Lat::of(&ack),
        missing: (messages * o.subscribers) as u64 - received,
    })
}
