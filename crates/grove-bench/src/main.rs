//! grove-bench: load generator and benchmarks for the grove server (loopback only).
//!
//! Every benchmark runs an in-process server on 127.0.0.1:0 with a fresh temporary data folder
//! (SQLite, WAL, synchronous=FULL) on its own tokio runtime, and the load generator on another
//! runtime. With `--pin split` (the default) every server thread (runtime workers, blocking
//! pool, the SQLite writer thread) is pinned to `--server-core` and every client thread to
//! `--client-core`, following the measurement rule of the performance notes. Every run is
//! bounded in count and time.

// The workspace denies unwrap/expect/panic and warns on unreachable `pub`; a tool relaxes them:
// a failed run is a failed measurement, and its `pub` items serve its own report.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

/// The allocator `grove` itself uses (see the workspace's Cargo.toml): what is measured here is
/// what the product runs. The baselines in the same process use it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

mod attach;
mod baseline;
mod catchup;
mod chat;
mod chat_memory;
mod client;
mod fanout;
mod harness;
mod ingest;
mod mls;
mod pg;
mod report;
mod senderkeys;
mod senderkeys_removal;

use harness::Env;

#[derive(Parser, Debug)]
#[command(name = "grove-bench", about = "grove benchmarks (loopback only, bounded)")]
struct Cli {
    /// `split`: server threads on --server-core, client threads on --client-core; `none`: no pinning.
    #[arg(long, value_enum, default_value_t = Pin::Split, global = true)]
    pin: Pin,
    /// Core for the server runtime, its blocking pool and the SQLite writer.
    #[arg(long, default_value_t = 0, global = true)]
    server_core: usize,
    /// Core for the load generator.
    #[arg(long, default_value_t = 1, global = true)]
    client_core: usize,
    /// Worker threads of the server runtime.
    #[arg(long, default_value_t = 1, global = true)]
    server_threads: usize,
    /// Worker threads of the client runtime.
    #[arg(long, default_value_t = 1, global = true)]
    client_threads: usize,
    /// Folder for temporary databases (must be on the disk under test) [default: the system temp dir].
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pin {
    Split,
    None,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Durable ingest through the HTTP server: 256-byte entries, concurrent senders.
    Ingest {
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 64)]
        senders: usize,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
    },
    /// The cost of TLS on ingest: plain HTTP and TLS runs alternating in one process (grove
    /// terminating TLS with a certificate of a CA made for the run); prints the median ratio.
    Tls {
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 64)]
        senders: usize,
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Durable ingest over HTTP and over the push WebSocket (bound sockets pipelining `window`
    /// entries each) in one run; prints both and the ratio.
    WsIngest {
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 64)]
        senders: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
    },
    /// Durable ingest at the store level (tokio tasks calling `store.append`, no HTTP).
    StoreIngest {
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 64)]
        tasks: usize,
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
    },
    /// Preload a room through the store, then read it all over HTTP in pages.
    Catchup {
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
        #[arg(long, default_value_t = 1_000)]
        page: u32,
    },
    /// WebSocket subscribers of one room and a paced publisher.
    Fanout {
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 50)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// How the publisher posts: a signed HTTP POST each, or frames on its push WebSocket.
        #[arg(long, value_enum, default_value_t = fanout::Publish::Http)]
        publish: fanout::Publish,
    },
    /// Raw rusqlite batched inserts (same row shape; WAL; synchronous=FULL).
    BaselineSqlite {
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
        #[arg(long, default_value_t = 100)]
        batch: u64,
        #[arg(long, default_value_t = 10)]
        rooms: u64,
    },
    /// A bare axum POST endpoint hit by the same concurrent client.
    BaselineAxum {
        #[arg(long, default_value_t = 100_000)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// CPU cost of signing and verifying one request.
    SigCost,
    /// MLS room costs with grove's engine vs mls-rs and openmls (issue 3): create, add, remove,
    /// update, process, join, messages, at N members; bare and steady state. CPU only, no server
    /// (runs unpinned: mls-rs uses rayon on both cores).
    Mls {
        /// Group sizes (members).
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
        sizes: Vec<usize>,
        /// Only 10, 100 and 1,000.
        #[arg(long)]
        quick: bool,
        /// Repetitions of each committed operation (medians are reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Seconds allowed for the steady-state fill (members updating in turn) of one group.
        #[arg(long, default_value_t = 600)]
        fill_budget: u64,
        /// Skip the openmls baseline.
        #[arg(long)]
        no_openmls: bool,
        /// Skip the mls-rs baseline.
        #[arg(long)]
        no_mlsrs: bool,
    },
    /// Sender Keys per-message cost: encrypt + sign, verify + decrypt (CPU only, unpinned).
    Senderkeys {
        /// Messages to time.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Plaintext bytes per message.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Group sizes for the cost of a removal (empty: skip).
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
        removal_sizes: Vec<usize>,
        /// Do not measure the MLS remove commit beside it.
        #[arg(long)]
        no_mls: bool,
    },
    /// grove on PostgreSQL, one and two instances: pgbench single-row insert baseline, durable
    /// HTTP ingest, push fan-out and cross-instance wake-up latency (scratch databases).
    Pg {
        /// Admin URL of the PostgreSQL server (scratch databases are created and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres", env = "GROVE_TEST_POSTGRES")]
        url: String,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 64)]
        senders: usize,
        #[arg(long, default_value_t = 60_000)]
        messages: usize,
        /// Push subscribers of the fan-out / wake-up part.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Messages per second of the paced publisher.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        #[arg(long, default_value_t = 10)]
        pgbench_seconds: u32,
        /// Frames each sender keeps unanswered in the WebSocket ingest.
        #[arg(long, default_value_t = 16)]
        window: usize,
    },
    /// The client's profile lock: one profile sends messages alone, then with a second handle
    /// on the same profile following the room (`grove read --follow`); rounds alternate.
    Client {
        /// Messages per timed run.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Rounds (each: one run alone, one followed).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Room mode: mls or sender-keys.
        #[arg(long, default_value = "mls", value_parser = ["mls", "sender-keys"])]
        mode: String,
    },
    /// `grove chat`'s latency: one client core's send to another's timeline over the push
    /// client, beside the server's own append-to-push latency, in the same run.
    Chat {
        /// Messages per round and path.
        #[arg(long, default_value_t = 300)]
        messages: usize,
        /// Rounds (each: the server path, then the client path).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Room mode: mls or sender-keys.
        #[arg(long, default_value = "mls", value_parser = ["mls", "sender-keys"])]
        mode: String,
    },
    /// The resident memory of a real `grove chat` (the `grove` binary built beside this one,
    /// in tmux) with a large history, beside an empty profile's.
    ChatMemory {
        /// Rooms in the profile.
        #[arg(long, default_value_t = 50)]
        rooms: usize,
        /// History lines per room.
        #[arg(long, default_value_t = 2000)]
        per_room: usize,
    },
    /// An encrypted attachment through grove (encrypt, HTTP parts, blob store; download,
    /// decrypt, verify) against a bare axum endpoint and the raw disk, in the same run.
    Attach {
        /// The file's size, MiB.
        #[arg(long, default_value_t = 200)]
        mib: u64,
    },
    /// Everything, `--runs` times, then a markdown table of medians and ratios.
    All {
        /// Repetitions of every benchmark (the table reports medians).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Messages per HTTP ingest run.
        #[arg(long, default_value_t = 60_000)]
        messages: usize,
        /// Seconds of the 1,000-subscriber fan-out.
        #[arg(long, default_value_t = 10)]
        fanout_seconds: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Mls { sizes, quick, reps, fill_budget, no_openmls, no_mlsrs } = &cli.cmd {
        // CPU-only and single-process: no server runtime, no pinning.
        let sizes = if *quick { vec![10, 100, 1000] } else { sizes.clone() };
        return mls::run(mls::Opts {
            sizes,
            reps: (*reps).clamp(1, 20),
            fill_budget: std::time::Duration::from_secs(*fill_budget),
            no_openmls: *no_openmls,
            no_mlsrs: *no_mlsrs,
        });
    }
    if let Cmd::Senderkeys { messages, size, removal_sizes, no_mls } = &cli.cmd {
        senderkeys::run((*messages).max(1), *size)?;
        return senderkeys_removal::run(removal_sizes, !*no_mls);
    }
    let pin = cli.pin == Pin::Split;
    if pin && !harness::pin_current(cli.client_core) {
        eprintln!("warning: cannot pin with taskset; continuing unpinned");
    }
    let server_rt = harness::runtime("grove-srv", cli.server_threads, pin.then_some(cli.server_core))?;
    let client_rt = harness::runtime("bench-cli", cli.client_threads, pin.then_some(cli.client_core))?;
    let env = Env {
        pin,
        server_core: cli.server_core,
        client_core: cli.client_core,
        server_threads: cli.server_threads,
        client_threads: cli.client_threads,
        dir: cli.dir.clone().unwrap_or_else(std::env::temp_dir),
        srv: server_rt.handle().clone(),
    };
    let result = client_rt.block_on(async {
        // Make sure the client runtime's threads exist (and are pinned) before measuring.
        tokio::task::yield_now().await;
        match cli.cmd {
            Cmd::Ingest { rooms, senders, messages } => {
                println!("ingest: {}", ingest::http(&env, rooms, senders, messages).await?);
            }
            Cmd::Tls { rooms, senders, messages, rounds } => {
                let runs = ingest::tls_cost(&env, rounds.clamp(1, 10), rooms, senders, messages).await?;
                let rates =
                    |t| harness::median(runs.iter().filter(|(x, _)| *x == t).map(|(_, r)| r.rate).collect::<Vec<_>>());
                let p50 = |t| {
                    harness::median(runs.iter().filter(|(x, _)| *x == t).map(|(_, r)| r.ack.p50_us).collect::<Vec<_>>())
                };
                let (plain, tls) = (rates(harness::Transport::Plain), rates(harness::Transport::Tls));
                println!(
                    "tls: plain {plain:.0} msgs/s, TLS {tls:.0} msgs/s (medians of {rounds}): TLS ÷ plain = {:.3} \
                     (cost {:.1} %; goal < 15 %); ack p50 plain {:.0} µs, TLS {:.0} µs",
                    tls / plain,
                    (1.0 - tls / plain) * 100.0,
                    p50(harness::Transport::Plain),
                    p50(harness::Transport::Tls)
                );
            }
            Cmd::WsIngest { rooms, senders, window, messages } => {
                let (over_http, over_ws) = ingest::websocket_vs_http(&env, rooms, senders, window, messages).await?;
                println!("ingest over HTTP: {over_http}");
                println!("ingest over the push WebSocket (window {window}): {over_ws}");
                println!(
                    "ws-ingest: WebSocket ÷ HTTP = {:.2}x msgs/s; ack p50 {:.0} µs vs {:.0} µs (goal 40k msgs/s)",
                    over_ws.rate / over_http.rate.max(1.0),
                    over_ws.ack.p50_us,
                    over_http.ack.p50_us
                );
            }
            Cmd::StoreIngest { rooms, tasks, messages } => {
                println!("store-ingest: {}", ingest::store_level(&env, rooms, tasks, messages).await?);
            }
            Cmd::Catchup { entries, page } => {
                println!("catchup: {}", catchup::run(&env, entries, page).await?);
            }
            Cmd::Fanout { subscribers, rate, seconds, publish } => {
                println!("fanout: {}", fanout::run_via(&env, subscribers, rate, seconds, publish).await?);
            }
            Cmd::BaselineSqlite { rows, batch, rooms } => {
                println!("baseline-sqlite: {}", baseline::sqlite(&env, rows, batch, rooms).await?);
            }
            Cmd::BaselineAxum { requests, concurrency } => {
                println!("baseline-axum: {}", baseline::axum(&env, requests, concurrency).await?);
            }
            Cmd::Attach { mib } => {
                attach::run(&env, mib).await?;
            }
            Cmd::SigCost => println!("sig-cost: {}", baseline::sig_cost(&env).await?),
            Cmd::Pg { url, rooms, senders, messages, subscribers, rate, seconds, pgbench_seconds, window } => {
                let o = pg::Opts {
                    url,
                    rooms: rooms.max(1),
                    senders: senders.max(1),
                    messages,
                    subscribers: subscribers.max(1),
                    rate: rate.max(1),
                    seconds: seconds.max(1),
                    pgbench_seconds: pgbench_seconds.max(1),
                    window: window.max(1),
                };
                pg::run(&env, &o).await?;
            }
            Cmd::Client { messages, rounds, mode } => {
                let mode = grove_wire::api::RoomMode::parse(&mode).unwrap_or(grove_wire::api::RoomMode::Mls);
                client::run(&env, messages.max(1), rounds.clamp(1, 20), mode).await?;
            }
            Cmd::Chat { messages, rounds, mode } => {
                let mode = grove_wire::api::RoomMode::parse(&mode).unwrap_or(grove_wire::api::RoomMode::Mls);
                chat::run(&env, messages.max(1), rounds.clamp(1, 20), mode).await?;
            }
            Cmd::ChatMemory { rooms, per_room } => {
                chat_memory::run(&env, rooms.clamp(1, 500), per_room.max(1)).await?;
            }
            Cmd::Mls { .. } | Cmd::Senderkeys { .. } => unreachable!("handled before the runtimes start"),
            Cmd::All { runs, messages, fanout_seconds } => {
                report::all(&env, runs.clamp(1, 10), messages, fanout_seconds).await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    // Bounded shutdown of whatever is left on the runtimes.
    client_rt.shutdown_timeout(std::time::Duration::from_secs(5));
    server_rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}
