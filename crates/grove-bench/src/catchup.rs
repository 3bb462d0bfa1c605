//! Catch-up: read a long room log over HTTP, page by page.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use grove_store::{NewEntry, Store};
use grove_wire::api::{EntryKind, LogPage};

use crate::harness::{self, histogram, Cores, Env, Lat, User};
use crate::ingest::BODY;

/// What a catch-up run measured.
#[derive(Debug, Clone, Default)]
pub struct CatchupResult {
    pub entries: u64,
    pub page: u32,
    pub preload_rate: f64,
    pub secs: f64,
    pub rate: f64,
    pub page_latency: Lat,
    pub cores: Cores,
}

impl std::fmt::Display for CatchupResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {} entries in pages of {} in {:.3}s = {:.0} entries/s; page {}; (preload through the store: {:.0} rows/s); {}",
            self.entries, self.page, self.secs, self.rate, self.page_latency, self.preload_rate, self.cores
        )
    }
}

/// Preloads `entries` 256-byte entries into one room through the store (many concurrent
/// appends, so the writer commits them in large groups), then reads them all back over HTTP.
pub async fn run(env: &Env, entries: u64, page: u32) -> Result<CatchupResult> {
    let server = harness::start_server(env).await?;
    let client = harness::http_client()?;
    let admin = User::random();
    let name = "catchup";
    server.setup_room(&client, &admin, name, &[]).await?;
    let room = server.store.room(name).await?.map(|r| r.id).ok_or_else(|| anyhow::anyhow!("room missing"))?;

    // Preload: 500 concurrent appenders on the server runtime.
    let t = Instant::now();
    let writers = 500u64;
    let store = server.store.clone();
    let sender = admin.id;
    let preload = env.srv.spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for w in 0..writers {
            let store = store.clone();
            let n = entries / writers + u64::from(w < entries % writers);
            set.spawn(async move {
                for _ in 0..n {
                    let e = NewEntry {
                        kind: EntryKind::Application,
                        epoch: 0,
                        sender,
                        ts: harness::unix_ms(),
                        body: harness::random_body(BODY),
                        update: None,
                    };
                    store.append(room, e).await?;
                }
                Ok::<_, grove_store::StoreError>(())
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| anyhow::anyhow!("preload task: {e}"))??;
        }
        Ok::<_, anyhow::Error>(())
    });
    tokio::time::timeout(Duration::from_secs(300), preload).await???;
    let preload_rate = entries as f64 / t.elapsed().as_secs_f64();

    let read = |after: u64| {
        let path = format!("/v1/rooms/{name}/log?after={after}&limit={page}");
        let h = harness::sign(&admin, &server.server_key, "GET", &path, b"");
        let rb = harness::with_headers(client.get(format!("{}{path}", server.base)), &h);
        async move {
            let r = rb.send().await?;
            if !r.status().is_success() {
                bail!("read after {after}: {} {}", r.status(), r.text().await.unwrap_or_default());
            }
            let bytes = r.bytes().await?;
            Ok::<_, anyhow::Error>(serde_json::from_slice::<LogPage>(&bytes)?)
        }
    };
    // One untimed page (connection, reader statement cache, blocking-pool thread).
    read(0).await?;

    let mut hist = histogram();
    let mut after = 0u64;
    let max_pages = entries / page as u64 + 10;
    let c0 = harness::cpu_snap();
    let t0 = Instant::now();
    for _ in 0..max_pages {
        if after >= entries {
            break;
        }
        let t = Instant::now();
        let p = read(after).await?;
        let _ = hist.record(t.elapsed().as_nanos() as u64);
        if p.entries.is_empty() {
            bail!("catch-up stalled at {after} of {entries}");
        }
        for e in &p.entries {
            if e.seq != after + 1 || e.body.len() != BODY {
                bail!(
                    "catch-up: expected seq {} with a {BODY}-byte body, got seq {} ({} bytes)",
                    after + 1,
                    e.seq,
                    e.body.len()
                );
            }
            after = e.seq;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cores = Cores::between(env, &c0, &harness::cpu_snap());
    if after != entries {
        bail!("catch-up read {after} of {entries} entries");
    }
    server.stop().await;
    Ok(CatchupResult {
        entries,
        page,
        preload_rate,
        secs,
        rate: entries as f64 / secs,
        page_latency: Lat::of(&hist),
        cores,
    })
}
