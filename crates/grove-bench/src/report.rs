//! `grove-bench all`: every benchmark `runs` times, then one markdown table of medians.

use anyhow::Result;

use crate::baseline::{self, AxumResult, SigCost, SqliteResult};
use crate::catchup::{self, CatchupResult};
use crate::fanout::{self, FanoutResult};
use crate::harness::{median, us, Env};
use crate::ingest::{self, IngestResult};

/// One repetition of everything.
#[derive(Debug, Clone, Default)]
struct Run {
    raw: SqliteResult,
    raw1: SqliteResult,
    axum: AxumResult,
    store: IngestResult,
    store128: IngestResult,
    http10: IngestResult,
    http1: IngestResult,
    catchup: CatchupResult,
    fanout: FanoutResult,
    idle: FanoutResult,
    idle_ws: FanoutResult,
    store_idle: crate::harness::Lat,
    ws10: IngestResult,
    sig: SigCost,
}

/// Runs everything and prints the table.
pub async fn all(env: &Env, runs: usize, messages: usize, fanout_seconds: u32) -> Result<()> {
    let started = std::time::Instant::now();
    let j0 = crate::harness::busy_jiffies();
    let mut results: Vec<Run> = Vec::new();
    for i in 1..=runs {
        eprintln!("== run {i} of {runs} ({:.0}s elapsed)", started.elapsed().as_secs_f64());
        let mut r = Run { raw: baseline::sqlite(env, 200_000, 100, 10).await?, ..Run::default() };
        eprintln!("  baseline-sqlite: {}", r.raw);
        r.raw1 = baseline::sqlite(env, 3_000, 1, 10).await?;
        eprintln!("  baseline-sqlite, 1 row/txn: {}", r.raw1);
        r.axum = baseline::axum(env, 100_000, 64).await?;
        eprintln!("  baseline-axum:   {}", r.axum);
        r.store = ingest::store_level(env, 10, 64, 100_000).await?;
        eprintln!("  store-ingest:    {}", r.store);
        r.store128 = ingest::store_level(env, 10, 128, 100_000).await?;
        eprintln!("  store-ingest 128: {}", r.store128);
        r.http10 = ingest::http(env, 10, 64, messages).await?;
        eprintln!("  ingest 10 rooms: {}", r.http10);
        r.http1 = ingest::http(env, 1, 64, messages).await?;
        eprintln!("  ingest 1 room:   {}", r.http1);
        r.ws10 = ingest::websocket(env, 10, 64, 16, messages).await?;
        eprintln!("  ws-ingest:       {}", r.ws10);
        r.catchup = catchup::run(env, 100_000, 1_000).await?;
        eprintln!("  catchup:         {}", r.catchup);
        r.fanout = fanout::run(env, 1_000, 50, fanout_seconds).await?;
        eprintln!("  fanout:          {}", r.fanout);
        r.idle = fanout::run(env, 1, 200, 5).await?;
        eprintln!("  idle:            {}", r.idle);
        r.idle_ws = fanout::run_via(env, 1, 200, 5, fanout::Publish::Ws).await?;
        eprintln!("  idle over WS:    {}", r.idle_ws);
        r.store_idle = ingest::store_idle(env, 1_000, std::time::Duration::from_millis(5)).await?;
        eprintln!("  store idle:      {}", r.store_idle);
        r.sig = baseline::sig_cost(env).await?;
        eprintln!("  sig-cost:        {}", r.sig);
        results.push(r);
    }
    let j1 = crate::harness::busy_jiffies();
    let secs = started.elapsed().as_secs_f64();
    // Jiffies are 1/100 s on Linux (USER_HZ).
    let foreign = (j1.0 - j0.0).saturating_sub(j1.1 - j0.1) as f64 / 100.0;
    print_table(env, &results, secs);
    println!();
    println!(
        "CPU time on both cores not charged to grove-bench during the run (other processes, kernel threads, interrupts): {foreign:.1} core-seconds = {:.1}% of the 2-core capacity over {secs:.0}s.",
        foreign / (2.0 * secs) * 100.0
    );
    Ok(())
}

fn col(runs: &[Run], f: impl Fn(&Run) -> f64) -> (f64, Vec<f64>) {
    let v: Vec<f64> = runs.iter().map(&f).collect();
    (median(v.clone()), v)
}

fn rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn each(v: &[f64], fmt: fn(f64) -> String) -> String {
    v.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(" / ")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn print_table(env: &Env, runs: &[Run], secs: f64) {
    let n = runs.len();
    println!();
    println!(
        "grove-bench all: {n} run(s) in {secs:.0}s; pinning: {}; server runtime {} worker(s), client runtime {} worker(s); data in {}",
        if env.pin { format!("server core {}, client core {}", env.server_core, env.client_core) } else { "none".into() },
        env.server_threads,
        env.client_threads,
        env.dir.display()
    );
    println!();
    println!("| Benchmark | Figure | Median | Each run | Target | |");
    println!("|---|---|---|---|---|---|");
    let row =
        |bench: &str, figure: &str, f: &dyn Fn(&Run) -> f64, fmt: fn(f64) -> String, target: &str, ok: Option<bool>| {
            let (m, v) = col(runs, f);
            let _ = m;
            println!(
                "| {bench} | {figure} | {} | {} | {target} | {} |",
                fmt(m),
                each(&v, fmt),
                ok.map(verdict).unwrap_or("")
            );
        };
    let med = |f: &dyn Fn(&Run) -> f64| col(runs, f).0;

    let raw = |r: &Run| r.raw.rate;
    let ax = |r: &Run| r.axum.rate;
    let st = |r: &Run| r.store.rate;
    let h10 = |r: &Run| r.http10.rate;
    let h1 = |r: &Run| r.http1.rate;

    row("Raw rusqlite insert, 100 rows/txn, 10 rooms, FULL+WAL", "rows/s", &raw, rate, "reference", None);
    row("Raw rusqlite insert", "commit p99", &|r| r.raw.commit.p99_us, us, "reference", None);
    row("Raw rusqlite insert, 1 row/txn (fsync floor)", "commits/s", &|r| r.raw1.rate, rate, "reference", None);
    row("Raw rusqlite insert, 1 row/txn", "commit p50", &|r| r.raw1.commit.p50_us, us, "reference", None);
    row("Bare axum POST 256 B, 64 conns", "req/s", &ax, rate, "reference", None);
    row("Store-level ingest, 64 tasks, 10 rooms (no HTTP)", "rows/s", &st, rate, "", None);
    row("Store-level ingest", "mean commit group", &|r| r.store.mean_batch, |v| format!("{v:.1}"), "", None);
    row("Store-level ingest, 128 tasks, 10 rooms (no HTTP)", "rows/s", &|r| r.store128.rate, rate, "", None);
    row(
        "Store-level ingest, 128 tasks",
        "mean commit group",
        &|r| r.store128.mean_batch,
        |v| format!("{v:.1}"),
        "",
        None,
    );
    row("Bare axum POST", "server core busy", &|r| r.axum.cores.server * 100.0, |v| format!("{v:.0}%"), "", None);
    row("Bare axum POST", "client core busy", &|r| r.axum.cores.client * 100.0, |v| format!("{v:.0}%"), "", None);
    row("Store-level ingest", "append p50", &|r| r.store.ack.p50_us, us, "", None);
    row("Store-level ingest", "append p99", &|r| r.store.ack.p99_us, us, "", None);
    let h10m = med(&h10);
    row(
        "HTTP ingest, 64 senders, 10 rooms, acked after fsync",
        "msgs/s",
        &h10,
        rate,
        "≥ 40,000 msgs/s",
        Some(h10m >= 40_000.0),
    );
    row("HTTP ingest, 10 rooms", "ack p50", &|r| r.http10.ack.p50_us, us, "", None);
    row("HTTP ingest, 10 rooms", "ack p99", &|r| r.http10.ack.p99_us, us, "", None);
    row("HTTP ingest, 10 rooms", "mean commit group", &|r| r.http10.mean_batch, |v| format!("{v:.1}"), "", None);
    row(
        "HTTP ingest, 10 rooms",
        "server core busy",
        &|r| r.http10.cores.server * 100.0,
        |v| format!("{v:.0}%"),
        "",
        None,
    );
    row(
        "HTTP ingest, 10 rooms",
        "client core busy",
        &|r| r.http10.cores.client * 100.0,
        |v| format!("{v:.0}%"),
        "",
        None,
    );
    row("HTTP ingest, 64 senders, 1 room", "msgs/s", &h1, rate, "", None);
    row("HTTP ingest, 1 room", "ack p50", &|r| r.http1.ack.p50_us, us, "", None);
    row("HTTP ingest, 1 room", "ack p99", &|r| r.http1.ack.p99_us, us, "", None);
    row("Catch-up read, 100,000 entries, pages of 1,000", "entries/s", &|r| r.catchup.rate, rate, "", None);
    row("Catch-up read", "total time", &|r| r.catchup.secs * 1e6, us, "", None);
    row("Catch-up read", "page p99", &|r| r.catchup.page_latency.p99_us, us, "", None);
    let fan99 = med(&|r: &Run| r.fanout.last.p99_us);
    row(
        "Fan-out, 1,000 WS subscribers × 50 msgs/s",
        "publish → last subscriber p50",
        &|r| r.fanout.last.p50_us,
        us,
        "",
        None,
    );
    row(
        "Fan-out, 1,000 × 50/s",
        "publish → last subscriber p99",
        &|r| r.fanout.last.p99_us,
        us,
        "≤ 35 ms",
        Some(fan99 <= 35_000.0),
    );
    row("Fan-out, 1,000 × 50/s", "per delivery p50", &|r| r.fanout.delivery.p50_us, us, "", None);
    row("Fan-out, 1,000 × 50/s", "per delivery p99", &|r| r.fanout.delivery.p99_us, us, "", None);
    row(
        "Fan-out, 1,000 × 50/s",
        "missing deliveries",
        &|r| r.fanout.missing as f64,
        |v| format!("{v:.0}"),
        "0",
        Some(med(&|r: &Run| r.fanout.missing as f64) == 0.0),
    );
    row("Fan-out, 1,000 × 50/s", "publisher ack p50", &|r| r.fanout.ack.p50_us, us, "", None);
    row(
        "Fan-out, 1,000 × 50/s",
        "server core busy",
        &|r| r.fanout.cores.server * 100.0,
        |v| format!("{v:.0}%"),
        "",
        None,
    );
    row(
        "Fan-out, 1,000 × 50/s",
        "client core busy",
        &|r| r.fanout.cores.client * 100.0,
        |v| format!("{v:.0}%"),
        "",
        None,
    );
    let idle50 = med(&|r: &Run| r.idle.delivery.p50_us);
    let idle99 = med(&|r: &Run| r.idle.delivery.p99_us);
    row(
        "Idle path, 1 subscriber × 200 msgs/s",
        "publish → deliver p50",
        &|r| r.idle.delivery.p50_us,
        us,
        "≤ 350 µs",
        Some(idle50 <= 350.0),
    );
    row(
        "Idle path, 1 × 200/s",
        "publish → deliver p99",
        &|r| r.idle.delivery.p99_us,
        us,
        "≤ 1 ms",
        Some(idle99 <= 1_000.0),
    );
    row("Idle path, 1 × 200/s", "publisher ack p50", &|r| r.idle.ack.p50_us, us, "", None);
    let ws50 = med(&|r: &Run| r.idle_ws.delivery.p50_us);
    let ws99 = med(&|r: &Run| r.idle_ws.delivery.p99_us);
    row(
        "Idle path, publisher on its push WebSocket, 1 × 200/s",
        "publish → deliver p50",
        &|r| r.idle_ws.delivery.p50_us,
        us,
        "≤ 350 µs",
        Some(ws50 <= 350.0),
    );
    row(
        "Idle path over WS, 1 × 200/s",
        "publish → deliver p99",
        &|r| r.idle_ws.delivery.p99_us,
        us,
        "≤ 1 ms",
        Some(ws99 <= 1_000.0),
    );
    row("Idle path over WS, 1 × 200/s", "publisher ack p50", &|r| r.idle_ws.ack.p50_us, us, "", None);
    row("Idle store append (writer hop + commit), 1 every 5 ms", "p50", &|r| r.store_idle.p50_us, us, "", None);
    row("Idle store append", "p99", &|r| r.store_idle.p99_us, us, "", None);
    let ws = |r: &Run| r.ws10.rate;
    let wsm = med(&ws);
    row(
        "WS ingest, 64 senders × window 16, 10 rooms, acked after fsync",
        "msgs/s",
        &ws,
        rate,
        "≥ 40,000 msgs/s",
        Some(wsm >= 40_000.0),
    );
    row("WS ingest", "ack p50", &|r| r.ws10.ack.p50_us, us, "", None);
    row("WS ingest", "mean commit group", &|r| r.ws10.mean_batch, |v| format!("{v:.1}"), "", None);
    row("WS ingest", "server core busy", &|r| r.ws10.cores.server * 100.0, |v| format!("{v:.0}%"), "", None);
    row("Request signature", "sign (client)", &|r| r.sig.sign_us, |v| format!("{v:.1} µs"), "", None);
    row("Request signature", "verify (server)", &|r| r.sig.verify_us, |v| format!("{v:.1} µs"), "", None);

    println!();
    println!("| Ratio (per run, then median) | Median | Each run | Target | |");
    println!("|---|---|---|---|---|");
    let ratio = |name: &str, f: &dyn Fn(&Run) -> f64, target: Option<f64>| {
        let (m, v) = col(runs, f);
        let t = target.map(|t| format!("≥ {}", pct(t))).unwrap_or_default();
        println!(
            "| {name} | {} | {} | {t} | {} |",
            pct(m),
            each(&v, pct),
            target.map(|t| verdict(m >= t)).unwrap_or("")
        );
    };
    ratio("HTTP ingest (10 rooms) ÷ raw batched insert", &|r| h10(r) / raw(r), Some(0.70));
    ratio("Store-level ingest ÷ raw batched insert (storage write path)", &|r| st(r) / raw(r), Some(0.70));
    ratio(
        "Store-level ingest, 128 tasks (groups of ~100, as the raw's) ÷ raw batched insert",
        &|r| r.store128.rate / raw(r),
        Some(0.70),
    );
    ratio("HTTP ingest (10 rooms) ÷ bare axum", &|r| h10(r) / ax(r), Some(0.25));
    ratio("HTTP ingest (10 rooms) ÷ store-level ingest", &|r| h10(r) / st(r), None);
    ratio("HTTP ingest (1 room) ÷ HTTP ingest (10 rooms)", &|r| h1(r) / h10(r), None);
    ratio("WS ingest ÷ raw batched insert", &|r| ws(r) / raw(r), None);
    ratio("WS ingest ÷ HTTP ingest (10 rooms)", &|r| ws(r) / h10(r), None);
    ratio("Idle path over WS ÷ over HTTP (deliver p50)", &|r| r.idle_ws.delivery.p50_us / r.idle.delivery.p50_us, None);
    ratio("Idle store append p50 ÷ raw 1-row commit p50", &|r| r.store_idle.p50_us / r.raw1.commit.p50_us, None);
}
