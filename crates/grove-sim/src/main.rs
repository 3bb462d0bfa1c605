//! `grove-sim report`: measures the per-operation costs, runs the comparison and writes
//! docs/comparison/README.md, its SVG plots and the grove-sim section of BENCHMARKS.md.

// The workspace denies unwrap/expect/panic and warns on unreachable `pub`; a tool relaxes them:
// a failed run is a failed measurement, and its `pub` items serve its own report.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use grove_sim::measure::{measure, MeasureOpts};

/// The allocator of the `grove` binary, so that the measured MLS costs are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use grove_sim::report::{markdown, plots, splice_benchmarks, summary, Notes};
use grove_sim::sim::{run, Settings};

#[derive(Parser)]
#[command(name = "grove-sim", about = "Every hosting scheme × every encryption scheme, measured")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure, simulate, and write the report, plots and BENCHMARKS.md section.
    Report {
        /// Folder for README.md and the plots.
        #[arg(long, default_value = "docs/comparison")]
        out: PathBuf,
        /// BENCHMARKS.md to update (its grove-sim section is replaced or appended).
        #[arg(long, default_value = "BENCHMARKS.md")]
        benchmarks: PathBuf,
        /// Group sizes of the report.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
        sizes: Vec<u64>,
        /// Group sizes at which MLS runs for real (larger ones are extrapolated).
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        mls_sizes: Vec<u64>,
        /// Repetitions of each MLS commit.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Iterations of each Olm and Sender Keys operation.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Messages per delivery figure.
        #[arg(long, default_value_t = 20)]
        messages: usize,
        /// Seed of the simulation and of grove-proto's RNGs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// UTC date and time of a Unix timestamp (civil-from-days).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs / 3600) % 24, (secs / 60) % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// The 1-minute load average (Linux), to say how busy the machine was.
fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next().map(str::to_owned)
}

fn main() -> Result<()> {
    let Command::Report { out, benchmarks, sizes, mls_sizes, reps, iterations, messages, seed } = Cli::parse().command;
    if let Some(n) = sizes.iter().find(|&&n| n < 3) {
        return Err(anyhow!("--sizes: {n} is too small, the model needs groups of at least 3"));
    }
    if let Some(n) = mls_sizes.iter().find(|&&n| n < 6) {
        return Err(anyhow!("--mls-sizes: {n} is too small, MLS is measured from N = 6"));
    }
    if messages == 0 || iterations == 0 || reps == 0 {
        return Err(anyhow!("--messages, --iterations and --reps must be at least 1"));
    }
    if mls_sizes.is_empty() || sizes.is_empty() {
        return Err(anyhow!("--sizes and --mls-sizes need at least one group size each"));
    }
    // Read BENCHMARKS.md first: a run that cannot update it writes nothing.
    let doc = std::fs::read_to_string(&benchmarks).with_context(|| {
        format!("cannot read {} (run from the repository root, or pass --benchmarks)", benchmarks.display())
    })?;
    let load_before = load_average();
    let start = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let progress = |s: String| eprintln!("[+{:>6.1}s] {s}", start.elapsed().as_secs_f64());
    let opts = MeasureOpts { mls_sizes: mls_sizes.clone(), reps, iterations, seed };
    let costs = measure(&opts, progress).context("measuring the per-operation costs")?;
    let measured = start.elapsed();
    let load_after = load_average();
    eprintln!("[+{:>6.1}s] simulating", start.elapsed().as_secs_f64());
    let settings = Settings { ns: sizes, messages, seed, ..Settings::default() };
    let results = run(&costs, &settings).map_err(|e| anyhow!(e))?;
    let simulated = start.elapsed() - measured;
    let profile =
        if cfg!(debug_assertions) { "a debug build (CPU figures are not representative)" } else { "a release build" };
    let mls: Vec<String> = mls_sizes.iter().map(|n| n.to_string()).collect();
    let notes = Notes {
        provenance: vec![
            format!(
                "Run {} from {profile}: measuring took {:.0} s (MLS for real at N = {}, {reps} repetitions per commit; \
                 {iterations} iterations per Olm and Sender Keys operation), the simulation {:.1} s.",
                utc(now),
                measured.as_secs_f64(),
                mls.join(", "),
                simulated.as_secs_f64()
            ),
            format!(
                "Machine: the project's 2-vCPU test machine, shared with other builds; 1-minute load average {} \
                 at the start and {} at the end of the measurement. CPU figures are noisy: compare schemes \
                 within the run, not across runs.",
                load_before.as_deref().unwrap_or("unknown"),
                load_after.as_deref().unwrap_or("unknown"),
            ),
        ],
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = markdown(&results, &costs, &notes);
    let readme = out.join("README.md");
    std::fs::write(&readme, md).with_context(|| format!("cannot write {}", readme.display()))?;
    plots(&results, &out)?;
    std::fs::write(&benchmarks, splice_benchmarks(&doc, &summary(&results, &notes)))
        .with_context(|| format!("cannot write {}", benchmarks.display()))?;
    eprintln!(
        "[+{:>6.1}s] wrote {}, {} plots in {}, and the grove-sim section of {}",
        start.elapsed().as_secs_f64(),
        readme.display(),
        grove_sim::report::PLOTS.len(),
        out.display(),
        benchmarks.display()
    );
    Ok(())
}
