//! `grove-bench client`: the cost of the profile lock. One profile sends messages one after the
//! other through `Profile::send` (outbox, seal, post, settle — everything `grove send` does but
//! the process start), alone, and then while a second handle on the same profile follows the
//! room as `grove read --follow` does (long-poll outside the lock, then a locked sync, which
//! reloads the state the sender wrote). The follower is a second `Profile` with its own SQLite
//! connection and its own lock file handle on its own thread and runtime: to the lock and the
//! database it is another process. Rounds alternate alone / followed; medians are reported with
//! the ratio of the two in the same run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use grove_client::profile::Profile;
use grove_wire::api::RoomMode;

use crate::harness::{histogram, median, start_server, us, Env, Lat};

/// One timed run.
struct Run {
    per_sec: f64,
    lat: Lat,
    follower_syncs: u64,
}

async fn send_all(p: &mut Profile, messages: usize, round: usize, tag: &str) -> Result<Run> {
    let mut h = histogram();
    let body = "x".repeat(100);
    let started = Instant::now();
    for i in 0..messages {
        let t = Instant::now();
        p.send("bench", &format!("{tag} {round} {i} {body}")).await.context("send")?;
        h.record(t.elapsed().as_nanos() as u64)?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Run { per_sec: messages as f64 / secs, lat: Lat::of(&h), follower_syncs: 0 })
}

/// Follows the room on its own thread until `stop`; answers the thread and its sync count.
fn follower(dir: &Path, stop: Arc<AtomicBool>) -> Result<(std::thread::JoinHandle<Result<()>>, Arc<AtomicU64>)> {
    let syncs = Arc::new(AtomicU64::new(0));
    let count = syncs.clone();
    let dir = dir.to_path_buf();
    let thread = std::thread::Builder::new().name("follower".into()).spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let mut p = Profile::open(&dir)?;
            while !stop.load(Ordering::Acquire) {
                p.wait_and_sync("bench", 1).await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    })?;
    Ok((thread, syncs))
}

/// Runs the benchmark; prints a markdown table.
pub async fn run(env: &Env, messages: usize, rounds: usize, mode: RoomMode) -> Result<()> {
    let server = start_server(env).await?;
    let dir = tempfile::Builder::new().prefix("grove-bench-client-").tempdir_in(&env.dir)?;
    let alice_dir = dir.path().join("alice");
    let mut alice = Profile::init(&alice_dir, &server.base).await?;
    let mut bob = Profile::init(&dir.path().join("bob"), &server.base).await?;
    alice.create_room_with_mode(&server.base, "bench", mode).await?;
    alice.invite("bench", &bob.address().to_string()).await?;
    bob.sync().await?;
    // Warm-up: connections, the group's first load.
    send_all(&mut alice, 20, 0, "warm-up").await?;

    let (mut alone, mut followed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        alone.push(send_all(&mut alice, messages, round, "alone").await?);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread, syncs) = follower(&alice_dir, stop.clone())?;
        // Let the follower start its first wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut r = send_all(&mut alice, messages, round, "followed").await?;
        stop.store(true, Ordering::Release);
        // The follower notices within its 1 s long-poll.
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("follower panicked"))??;
        r.follower_syncs = syncs.load(Ordering::Relaxed);
        followed.push(r);
    }
    // Everything arrived once at Bob's.
    bob.sync().await?;
    let texts = bob.messages("bench", 0)?.into_iter().filter_map(|m| m.text()).count();
    let want = 20 + 2 * rounds * messages;
    anyhow::ensure!(texts == want, "bob has {texts} messages, expected {want}");

    let med = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let (a_rate, f_rate) = (med(&alone, |r| r.per_sec), med(&followed, |r| r.per_sec));
    println!("\n### grove-bench client: {} room, {messages} sends x {rounds} rounds per scenario\n", mode.as_str());
    println!("| scenario | messages/s | send p50 | send p99 | follower syncs |");
    println!("|---|---|---|---|---|");
    println!(
        "| alone | {a_rate:.0} | {} | {} | - |",
        us(med(&alone, |r| r.lat.p50_us)),
        us(med(&alone, |r| r.lat.p99_us))
    );
    println!(
        "| with a follower on the profile | {f_rate:.0} | {} | {} | {:.0} |",
        us(med(&followed, |r| r.lat.p50_us)),
        us(med(&followed, |r| r.lat.p99_us)),
        med(&followed, |r| r.follower_syncs as f64)
    );
    println!(
        "\nthroughput with the follower: {:.2}x alone ({:+.1} %); p50 {:.2}x; p99 {:.2}x (target: at most 10 % slower)",
        f_rate / a_rate,
        (f_rate / a_rate - 1.0) * 100.0,
        med(&followed, |r| r.lat.p50_us) / med(&alone, |r| r.lat.p50_us),
        med(&followed, |r| r.lat.p99_us) / med(&alone, |r| r.lat.p99_us),
    );
    for (i, (a, f)) in alone.iter().zip(&followed).enumerate() {
        println!(
            "round {i}: alone {:.0}/s (p50 {}, p99 {}), followed {:.0}/s (p50 {}, p99 {}, {} follower syncs)",
            a.per_sec,
            us(a.lat.p50_us),
            us(a.lat.p99_us),
            f.per_sec,
            us(f.lat.p50_us),
            us(f.lat.p99_us),
            f.follower_syncs
        );
    }
    server.stop().await;
    Ok(())
}
