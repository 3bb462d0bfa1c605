//! References measured in the same run: raw rusqlite batched inserts, a bare axum endpoint, and
//! the cost of one request signature (sign on the client, verify on the server).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use rusqlite::params;
use tokio::sync::Barrier;

use crate::harness::{self, histogram, Cores, Env, Lat, User};
use crate::ingest::BODY;

/// Raw rusqlite result.
#[derive(Debug, Clone, Default)]
pub struct SqliteResult {
    pub rows: u64,
    pub batch: u64,
    pub rooms: u64,
    pub secs: f64,
    pub rate: f64,
    pub commit: Lat,
    pub cores: Cores,
}

impl std::fmt::Display for SqliteResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows, {} per txn, {} rooms, synchronous=FULL, WAL: {:.2}s = {:.0} rows/s; commit {}; {}",
            self.rows, self.batch, self.rooms, self.secs, self.rate, self.commit, self.cores
        )
    }
}

/// Raw rusqlite on the same schema shape as the store (rowid `entries` table plus a unique
/// `(room, seq)` index), 256-byte bodies, rooms round robin, `batch` rows per transaction,
/// WAL and synchronous=FULL, on a server-core thread.
pub async fn sqlite(env: &Env, rows: u64, batch: u64, rooms: u64) -> Result<SqliteResult> {
    let dir = tempfile::Builder::new().prefix("grove-bench-raw-").tempdir_in(&env.dir)?;
    let path = dir.path().join("raw.db");
    let c0 = harness::cpu_snap();
    let mut r = env
        .srv
        .spawn_blocking(move || -> Result<SqliteResult> {
            let conn = rusqlite::Connection::open(&path)?;
            let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                bail!("no WAL: {mode}");
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(
                "CREATE TABLE entries (room INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, \
                 epoch INTEGER NOT NULL, sender BLOB NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL);
                 CREATE UNIQUE INDEX entries_room_seq ON entries (room, seq);",
            )?;
            let bodies: Vec<Vec<u8>> = (0..1024).map(|_| harness::random_body(BODY)).collect();
            let sender = harness::random_body(32);
            let mut seqs = vec![0i64; rooms as usize];
            let mut hist = histogram();
            let batches = rows / batch;
            let t0 = Instant::now();
            let mut n = 0u64;
            for _ in 0..batches {
                let t = Instant::now();
                conn.execute_batch("BEGIN")?;
                {
                    let mut st = conn.prepare_cached(
                        "INSERT INTO entries (room, seq, kind, epoch, sender, ts, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?;
                    for _ in 0..batch {
                        let room = (n % rooms) as usize;
                        seqs[room] += 1;
                        st.execute(params![
                            room as i64 + 1,
                            seqs[room],
                            "application",
                            1i64,
                            sender.as_slice(),
                            harness::unix_ms(),
                            bodies[(n % 1024) as usize].as_slice()
                        ])?;
                        n += 1;
                    }
                }
                conn.execute_batch("COMMIT")?;
                let _ = hist.record(t.elapsed().as_nanos() as u64);
            }
            let secs = t0.elapsed().as_secs_f64();
            Ok(SqliteResult { rows: n, batch, rooms, secs, rate: n as f64 / secs, commit: Lat::of(&hist), cores: Cores::default() })
        })
        .await??;
    r.cores = Cores::between(env, &c0, &harness::cpu_snap());
    drop(dir);
    Ok(r)
}

/// Bare axum result.
#[derive(Debug, Clone, Default)]
pub struct AxumResult {
    pub requests: usize,
    pub concurrency: usize,
    pub secs: f64,
    pub rate: f64,
    pub latency: Lat,
    pub cores: Cores,
}

impl std::fmt::Display for AxumResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} POSTs of {BODY} B, {} concurrent: {:.2}s = {:.0} req/s; latency {}; {}",
            self.requests, self.concurrency, self.secs, self.rate, self.latency, self.cores
        )
    }
}

/// A bare axum endpoint (POST with a 256-byte body → 200, nothing else) on the server runtime,
/// hit by the same client as the ingest benchmark (`concurrency` keep-alive senders).
pub async fn axum(env: &Env, requests: usize, concurrency: usize) -> Result<AxumResult> {
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = env.srv.spawn(async move {
        let app = axum::Router::new().route("/publish", post(|_body: axum::body::Bytes| async { StatusCode::OK }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let _ = addr_tx.send(listener.local_addr()?);
        let listener = listener.tap_io(|io| {
            let _ = io.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    let addr: std::net::SocketAddr = addr_rx.await?;
    let url = format!("http://{addr}/publish");
    let client = harness::http_client()?;
    let body = harness::random_body(BODY);
    const WARMUP: usize = 50;
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let (client, url, body, barrier) = (client.clone(), url.clone(), body.clone(), barrier.clone());
        let n = requests / concurrency + usize::from(i < requests % concurrency);
        tasks.push(tokio::spawn(async move {
            let one = |client: &reqwest::Client| {
                let rb = client.post(&url).header("content-type", "application/octet-stream").body(body.clone());
                async move {
                    let r = rb.send().await?;
                    let ok = r.status().as_u16() == 200;
                    r.bytes().await?;
                    Ok::<_, anyhow::Error>(ok)
                }
            };
            for _ in 0..WARMUP {
                one(&client).await?;
            }
            barrier.wait().await;
            let mut h = histogram();
            let mut errors = 0usize;
            for _ in 0..n {
                let t = Instant::now();
                if one(&client).await? {
                    let _ = h.record(t.elapsed().as_nanos() as u64);
                } else {
                    errors += 1;
                }
            }
            Ok::<_, anyhow::Error>((h, errors))
        }));
    }
    barrier.wait().await;
    let c0 = harness::cpu_snap();
    let t0 = Instant::now();
    let mut hist = histogram();
    for t in tasks {
        let (h, errors) = tokio::time::timeout(Duration::from_secs(600), t).await???;
        if errors > 0 {
            bail!("bare axum answered {errors} requests with an error");
        }
        hist.add(&h).ok();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cores = Cores::between(env, &c0, &harness::cpu_snap());
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let n = hist.len() as usize;
    Ok(AxumResult { requests: n, concurrency, secs, rate: n as f64 / secs, latency: Lat::of(&hist), cores })
}

/// CPU cost of request signing: sign (client side) and verify (server side, as the server's
/// auth does it), µs per request, each timed on its own core.
#[derive(Debug, Clone, Copy, Default)]
pub struct SigCost {
    pub sign_us: f64,
    pub verify_us: f64,
}

impl std::fmt::Display for SigCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sign_request {:.1} µs (client core), verify_request {:.1} µs (server core)",
            self.sign_us, self.verify_us
        )
    }
}

/// Times `sign_request` and `verify_request` on a typical append (256-byte entry).
pub async fn sig_cost(env: &Env) -> Result<SigCost> {
    const N: u32 = 3000;
    let user = User::random();
    let server_key = User::random().id.0;
    let body = serde_json::to_vec(&grove_wire::api::AppendEntry {
        kind: grove_wire::api::EntryKind::Application,
        epoch: 1,
        body: harness::random_body(BODY),
    })?;
    let path = "/v1/rooms/ingest-0/log";
    let t = Instant::now();
    let mut last = None;
    for _ in 0..N {
        last = Some(harness::sign(&user, &server_key, "POST", path, &body));
    }
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / N as f64;
    let h = last.ok_or_else(|| anyhow::anyhow!("no signature"))?;
    let verify_us = env
        .srv
        .spawn_blocking(move || {
            let ts: i64 = h.timestamp.parse().unwrap_or(0);
            let t = Instant::now();
            let mut ok = 0u32;
            for _ in 0..N {
                ok += u32::from(
                    grove_wire::auth::verify_request(
                        &user.id,
                        &h.signature,
                        &server_key,
                        "POST",
                        path,
                        ts,
                        &h.nonce,
                        &body,
                    )
                    .is_ok(),
                );
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / N as f64;
            (ok == N).then_some(us)
        })
        .await?
        .ok_or_else(|| anyhow::anyhow!("a signature did not verify"))?;
    Ok(SigCost { sign_us, verify_us })
}
