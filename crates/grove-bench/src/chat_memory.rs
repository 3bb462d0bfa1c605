//! `grove-bench chat-memory`: the resident memory of a real `grove chat` with a large history.
//!
//! A profile with `rooms` MLS rooms on a local server, each with `per_room` history lines
//! (texts of about 140 bytes, from three senders) written into the profile's state file; the
//! `grove` binary built beside this one opens `grove chat` in a 120x40 tmux window. The
//! benchmark Tabs through every room, then PageUps through one room's history, and reads the
//! chat's `VmRSS` and `VmHWM` (peak) from `/proc/PID/status` after each phase. Beside it, in
//! the same run: the RSS of `grove chat` on an empty profile (the baseline: the binary, its
//! runtime and one push connection). Goal (issue 13): under 100 MiB with 50 rooms and 100,000
//! lines, because the screen reads a page of history at a time, never a room's whole log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use grove_client::profile::Profile;
use grove_client::{Batch, ClientStore, Message};
use grove_wire::content::Content;
use grove_wire::UserId;

use crate::harness::{start_server, Env};

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output().context("running tmux")?;
        if !out.status.success() {
            bail!("tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn screen(&self, window: &str) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", &format!("mem:{window}")])
    }

    fn keys(&self, window: &str, key: &str) -> Result<()> {
        self.run(&["send-keys", "-t", &format!("mem:{window}"), key]).map(|_| ())
    }

    /// Waits (up to a minute) until the window's screen contains `text`.
    fn wait_for(&self, window: &str, text: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let s = self.screen(window)?;
            if s.contains(text) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the chat never showed {text:?}; its screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid of the process in a window (the chat: the window runs it directly).
    fn pid(&self, window: &str) -> Result<u32> {
        let out = self.run(&["display-message", "-p", "-t", &format!("mem:{window}"), "#{pane_pid}"])?;
        out.trim().parse().with_context(|| format!("tmux gave no pid: {out:?}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// (VmRSS, VmHWM) of a process, in bytes.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).ok_or_else(|| anyhow!("no {name} in status"))?;
        let kb: u64 =
            line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("bad {line}"))?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Writes `per_room` text lines into each of the profile's rooms, straight into its state
/// file (as if they had been received): the chat reads them as it reads any history.
fn fill(dir: &Path, rooms: &[String], per_room: usize) -> Result<u64> {
    let mut store = ClientStore::open(&dir.join("state.db"))?;
    let senders = [UserId([1; 32]), UserId([2; 32]), UserId([3; 32])];
    let mut lines = 0;
    for link in rooms {
        let mut batch = Batch::default();
        for i in 0..per_room {
            let text = format!(
                "message {i} in this room: the tomatoes need water, the beans need poles, and someone should fix the gate {i:06}"
            );
            let seq = 10 + i as u64;
            let ts = 1_765_000_000_000 + (i as i64) * 60_000;
            let content = Content::text(text).encode();
            batch.messages.push(Message::content(link, seq, senders[i % 3], ts, content));
            lines += 1;
        }
        store.commit(batch)?;
    }
    Ok(lines)
}

/// Runs the benchmark; prints a markdown table.
pub async fn run(env: &Env, rooms: usize, per_room: usize) -> Result<()> {
    let grove: PathBuf = std::env::current_exe()?.with_file_name("grove");
    if !grove.exists() {
        bail!("{} is missing: build it first (cargo build --release -p grove-cli)", grove.display());
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        bail!("tmux is needed to run `grove chat` in a terminal: install it (apt-get install tmux)");
    }
    let server = start_server(env).await?;
    let home = tempfile::Builder::new().prefix("grove-bench-chat-memory-").tempdir_in(&env.dir)?;
    let mut links = Vec::new();
    {
        let mut full = Profile::init(&home.path().join("full"), &server.base).await?;
        for i in 0..rooms {
            links.push(full.create_room(&server.base, &format!("room{i}")).await?.link);
        }
        Profile::init(&home.path().join("empty"), &server.base).await?;
    }
    let lines = fill(&home.path().join("full"), &links, per_room)?;
    let db = std::fs::metadata(home.path().join("full").join("state.db"))?.len();

    let tmux = Tmux { socket: format!("grove-bench-mem-{}", std::process::id()) };
    tmux.run(&["new-session", "-d", "-s", "mem", "-x", "120", "-y", "40", "sleep 3600"])?;
    let open = |window: &str, room: &str| -> Result<u32> {
        let cmd = format!(
            "env GROVE_HOME={} TERM=xterm-256color {} --profile {window} chat {room}",
            home.path().display(),
            grove.display()
        );
        tmux.run(&["new-window", "-d", "-n", window, &cmd])?;
        tmux.wait_for(window, "● connected")?;
        tmux.pid(window)
    };

    let empty = open("empty", "")?;
    std::thread::sleep(Duration::from_millis(500));
    let (base_rss, base_peak) = rss(empty)?;

    let pid = open("full", "room0")?;
    let (open_rss, _) = rss(pid)?;
    // The list is in name order (room0, room1, room10, ...): each Tab shows the next.
    let mut names: Vec<String> = (0..rooms).map(|i| format!("room{i}")).collect();
    names.sort();
    for i in 1..=rooms {
        tmux.keys("full", "Tab")?;
        tmux.wait_for("full", &format!(" {} · mls", names[i % rooms]))?;
    }
    let (tab_rss, tab_peak) = rss(pid)?;
    let pages = 120;
    for _ in 0..pages {
        tmux.keys("full", "PPage")?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let (page_rss, page_peak) = rss(pid)?;

    println!("## grove chat's memory ({rooms} rooms, {lines} history lines, state file {})\n", mib(db));
    println!("| phase | VmRSS | peak (VmHWM) | over the empty profile |");
    println!("|---|---|---|---|");
    println!("| empty profile, connected (baseline) | {} | {} | 1.00x |", mib(base_rss), mib(base_peak));
    let ratio = |v: u64| format!("{:.2}x", v as f64 / base_rss.max(1) as f64);
    println!("| {rooms} rooms, room0 open | {} | - | {} |", mib(open_rss), ratio(open_rss));
    println!("| after Tab through every room | {} | {} | {} |", mib(tab_rss), mib(tab_peak), ratio(tab_rss));
    println!("| after {pages} PageUps in one room | {} | {} | {} |", mib(page_rss), mib(page_peak), ratio(page_rss));
    let peak = tab_peak.max(page_peak);
    let goal = 100 * 1024 * 1024;
    println!("\nPeak {} against the goal of 100 MiB: {}.", mib(peak), if peak < goal { "met" } else { "MISSED" });
    Ok(())
}
