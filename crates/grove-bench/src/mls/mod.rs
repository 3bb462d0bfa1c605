//! `grove-bench mls`: MLS room costs with grove's engine (issue 3, item 5), against mls-rs and
//! openmls used as their examples use them, at N = 10 .. 10,000 members.
//!
//! Simulating N members is the expensive part. Only the measured members are full engines: the
//! committer (the group's creator, leaf 0), one receiver (leaf 1), each joiner, and the hub. The
//! others exist as KeyPackages (their identity and leaf HPKE secret are kept). For the steady
//! state those members commit a self-update in turn: a "ghost" engine is rebuilt for that one
//! commit from the receiver's current snapshot with the private part replaced by the ghost's own
//! leaf key and signer (see [`grove::splice`]), then dropped. Every ghost commit is validated by
//! the hub and processed by the committer and the receiver, as in a real group.

mod grove;
mod mlsrs;
mod openmls;

use std::time::{Duration, Instant};

use anyhow::Result;

/// Options of `grove-bench mls`.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Group sizes.
    pub sizes: Vec<usize>,
    /// Repetitions of each committed operation (median reported).
    pub reps: usize,
    /// Wall-clock budget for the steady-state fill of one group (members updating in turn).
    pub fill_budget: Duration,
    /// Skip the openmls baseline.
    pub no_openmls: bool,
    /// Skip the mls-rs baseline.
    pub no_mlsrs: bool,
}

/// One measured figure: every sample of it.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub op: String,
    pub n: usize,
    pub ms: Vec<f64>,
    pub bytes: Vec<usize>,
}

/// Collected figures, in insertion order.
#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<Row>,
}

impl Results {
    pub fn rec(&mut self, scenario: &str, op: &str, n: usize, t: Option<Duration>, bytes: Option<usize>) {
        let row = match self.rows.iter_mut().position(|r| r.scenario == scenario && r.op == op && r.n == n) {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push(Row { scenario: scenario.into(), op: op.into(), n, ms: Vec::new(), bytes: Vec::new() });
                self.rows.last_mut().expect("just pushed")
            }
        };
        if let Some(t) = t {
            row.ms.push(t.as_secs_f64() * 1e3);
        }
        if let Some(b) = bytes {
            row.bytes.push(b);
        }
    }

    pub fn t(&mut self, scenario: &str, op: &str, n: usize, t: Duration) {
        self.rec(scenario, op, n, Some(t), None);
    }

    pub fn tb(&mut self, scenario: &str, op: &str, n: usize, t: Duration, bytes: usize) {
        self.rec(scenario, op, n, Some(t), Some(bytes));
    }

    pub fn b(&mut self, scenario: &str, op: &str, n: usize, bytes: usize) {
        self.rec(scenario, op, n, None, Some(bytes));
    }

    fn get(&self, scenario: &str, op: &str, n: usize) -> Option<&Row> {
        self.rows.iter().find(|r| r.scenario == scenario && r.op == op && r.n == n)
    }

    /// Median ms of a figure.
    pub fn ms(&self, scenario: &str, op: &str, n: usize) -> Option<f64> {
        self.get(scenario, op, n).and_then(|r| median_f(&r.ms))
    }

    /// Median bytes of a figure.
    pub fn bytes(&self, scenario: &str, op: &str, n: usize) -> Option<usize> {
        self.get(scenario, op, n).and_then(|r| {
            let mut v = r.bytes.clone();
            v.sort_unstable();
            v.get(v.len().checked_sub(1)? / 2).copied()
        })
    }
}

fn median_f(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[(v.len() - 1) / 2])
}

/// Runs `f` and returns its result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Progress on stderr, with the seconds since the start.
pub fn progress(msg: impl AsRef<str>) {
    let start = START.get_or_init(Instant::now);
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (h, m, s) = ((wall / 3600) % 24, (wall / 60) % 60, wall % 60);
    eprintln!("[{h:02}:{m:02}:{s:02} UTC +{:>7.1}s] {}", start.elapsed().as_secs_f64(), msg.as_ref());
}

/// Formats milliseconds.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} µs", ms * 1000.0)
    }
}

/// Formats a byte count.
pub fn fmt_b(b: usize) -> String {
    if b >= 1_000_000 {
        format!("{:.2} MB", b as f64 / 1e6)
    } else if b >= 10_000 {
        format!("{:.0} KB", b as f64 / 1e3)
    } else if b >= 1_000 {
        format!("{:.1} KB", b as f64 / 1e3)
    } else {
        format!("{b} B")
    }
}

/// The whole benchmark: every size, grove then the baselines; prints markdown tables.
pub fn run(opts: Opts) -> Result<()> {
    let started = Instant::now();
    progress(format!("mls: sizes {:?}, {} rep(s), fill budget {:?}", opts.sizes, opts.reps, opts.fill_budget));
    let mut res = Results::default();
    let mut notes: Vec<String> = Vec::new();
    for &n in &opts.sizes {
        progress(format!("== N = {n}: grove engine"));
        grove::run(n, &opts, &mut res, &mut notes)?;
        if !opts.no_mlsrs {
            progress(format!("== N = {n}: mls-rs baseline"));
            mlsrs::run(n, &opts, &mut res)?;
        }
        if !opts.no_openmls {
            progress(format!("== N = {n}: openmls baseline"));
            openmls::run(n, &opts, &mut res)?;
        }
    }
    print_report(&opts, &res, &notes, started.elapsed());
    Ok(())
}

/// (section, [(op label, figure key, kind)]) where kind: 't' time, 'b' bytes, 'x' both.
const GROVE_OPS: &[(&str, &str)] = &[
    ("create: commit adding N−1 (sender)", "x"),
    ("create: Welcome", "b"),
    ("create: apply own commit", "t"),
    ("create: hub check_commit", "t"),
    ("create: persist (ClientStore)", "x"),
    ("join from bulk Welcome (Welcome + tree from hub)", "x"),
    ("update: commit (sender)", "x"),
    ("update: sender persist", "x"),
    ("update: hub check_commit", "t"),
    ("update: apply own commit", "t"),
    ("update: receiver process", "t"),
    ("update: receiver persist", "x"),
    ("update: receiver process + persist", "t"),
    ("update: receiver process + persist, incl. checkpoint share", "t"),
    ("remove: commit (sender)", "x"),
    ("remove: hub check_commit", "t"),
    ("remove: receiver process", "t"),
    ("remove: receiver persist", "x"),
    ("remove: receiver process + persist", "t"),
    ("remove: receiver process + persist, incl. checkpoint share", "t"),
    ("add 1: commit (sender)", "x"),
    ("add 1: Welcome", "b"),
    ("add 1: hub check_commit", "t"),
    ("add 1: receiver process + persist", "t"),
    ("add 1: receiver process + persist, incl. checkpoint share", "t"),
    ("join: engine (Welcome + tree from hub)", "x"),
    ("join: persist", "x"),
    ("add 1: joiner's first update (grove's client makes it at once)", "b"),
    ("msg 100 B: encrypt", "x"),
    ("msg 100 B: decrypt", "t"),
    ("msg 100 B: encrypt + decrypt", "t"),
    ("msg 100 B: persist sender", "x"),
    ("msg 100 B: persist receiver", "x"),
    ("checkpoint sender: engine", "x"),
    ("checkpoint sender: persist", "t"),
    ("checkpoint receiver: engine", "x"),
    ("checkpoint receiver: persist", "t"),
    ("msg 100 B: encrypt + decrypt, incl. checkpoint share", "t"),
    ("msg 100 B: persist both, incl. checkpoint share", "t"),
    ("load receiver: snapshot + journal (rows of the ops above)", "t"),
    ("load receiver: snapshot, empty journal", "t"),
    ("hub snapshot", "x"),
    ("ratchet tree (hub export)", "x"),
];

const BASE_OPS: &[(&str, &str)] = &[
    ("create: commit adding N−1 (sender)", "x"),
    ("create: Welcome (with tree)", "b"),
    ("create: apply own commit", "t"),
    ("join from bulk Welcome", "t"),
    ("update: commit (sender)", "x"),
    ("update: apply own commit", "t"),
    ("update: receiver process", "t"),
    ("remove: commit (sender)", "x"),
    ("remove: receiver process", "t"),
    ("add 1: commit (sender)", "x"),
    ("add 1: Welcome (with tree)", "b"),
    ("add 1: receiver process", "t"),
    ("join: from Welcome with tree", "x"),
    ("msg 100 B: encrypt", "x"),
    ("msg 100 B: decrypt", "t"),
    ("msg 100 B: encrypt + decrypt", "t"),
    ("write_to_storage (receiver)", "t"),
    ("storage footprint (receiver)", "b"),
];

fn cell(res: &Results, scenario: &str, op: &str, n: usize, kind: &str) -> String {
    let t = res.ms(scenario, op, n).map(fmt_ms);
    let b = res.bytes(scenario, op, n).map(fmt_b);
    match (kind, t, b) {
        ("t", Some(t), _) => t,
        ("b", _, Some(b)) => b,
        ("x", Some(t), Some(b)) => format!("{t} / {b}"),
        ("x", Some(t), None) => t,
        ("x", None, Some(b)) => b,
        _ => "–".into(),
    }
}

fn table(res: &Results, scenario: &str, ops: &[(&str, &str)], sizes: &[usize]) {
    if !res.rows.iter().any(|r| r.scenario == scenario) {
        return;
    }
    println!("\n**{scenario}**\n");
    print!("| op |");
    for n in sizes {
        print!(" N={n} |");
    }
    println!();
    print!("|---|");
    for _ in sizes {
        print!("---|");
    }
    println!();
    for (op, kind) in ops {
        if !sizes.iter().any(|&n| res.get(scenario, op, n).is_some()) {
            continue;
        }
        print!("| {op} |");
        for &n in sizes {
            print!(" {} |", cell(res, scenario, op, n, kind));
        }
        println!();
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn print_report(opts: &Opts, res: &Results, notes: &[String], took: Duration) {
    let sizes = &opts.sizes;
    println!(
        "\ngrove-bench mls: sizes {sizes:?}, {} rep(s) per committed op (median), took {:.0} s",
        opts.reps,
        took.as_secs_f64()
    );
    println!("\nCells are `time / bytes` (median). Sender times include the engine's own snapshot write (it is part of every grove op); \"persist\" rows are the ClientStore SQLite transaction (WAL, synchronous=FULL) of that op's Changes, with the Changes' size.");
    for sc in ["grove bare", "grove steady", "grove partial"] {
        table(res, sc, GROVE_OPS, sizes);
    }
    for sc in ["mls-rs bare", "openmls bare"] {
        table(res, sc, BASE_OPS, sizes);
    }

    // Drain of the bare group's O(N) commit as members update.
    let drain: Vec<&Row> = res.rows.iter().filter(|r| r.scenario == "grove drain").collect();
    if !drain.is_empty() {
        println!("\n**grove: the creator's self-update as members update in turn (random order)**\n");
        println!("| N | members updated | update commit (sender) | bytes | receiver process + persist |");
        println!("|---|---|---|---|---|");
        let mut keys: Vec<(usize, String)> = Vec::new();
        for r in &drain {
            if let Some(p) = r.op.strip_prefix("commit@") {
                keys.push((r.n, p.to_string()));
            }
        }
        for (n, p) in keys {
            let c = format!("commit@{p}");
            let rp = format!("recv@{p}");
            println!(
                "| {n} | {p} | {} | {} | {} |",
                res.ms("grove drain", &c, n).map(fmt_ms).unwrap_or_default(),
                res.bytes("grove drain", &c, n).map(fmt_b).unwrap_or_default(),
                res.ms("grove drain", &rp, n).map(fmt_ms).unwrap_or_default(),
            );
        }
    }

    // Ratios against the baselines and the targets.
    println!("\n**grove ÷ baseline (time ratio < 1 = grove faster; same op, same N)**\n");
    print!("| op | vs |");
    for n in sizes {
        print!(" N={n} |");
    }
    println!();
    print!("|---|---|");
    for _ in sizes {
        print!("---|");
    }
    println!();
    let pairs: &[(&str, &str, &str)] = &[
        ("create: commit adding N−1 (sender)", "grove bare", "create: commit adding N−1 (sender)"),
        ("update: commit (sender)", "grove bare", "update: commit (sender)"),
        ("update: receiver process", "grove bare", "update: receiver process"),
        ("update: receiver process + persist", "grove bare", "update: receiver process"),
        ("remove: commit (sender)", "grove bare", "remove: commit (sender)"),
        ("add 1: commit (sender)", "grove bare", "add 1: commit (sender)"),
        ("join: engine (Welcome + tree from hub)", "grove bare", "join: from Welcome with tree"),
        ("msg 100 B: encrypt + decrypt", "grove bare", "msg 100 B: encrypt + decrypt"),
    ];
    for base in ["mls-rs bare", "openmls bare"] {
        if !res.rows.iter().any(|r| r.scenario == base) {
            continue;
        }
        for (gop, gsc, bop) in pairs {
            print!("| {gop} | {base} |");
            for &n in sizes {
                print!(" {} |", ratio(res.ms(gsc, gop, n), res.ms(base, bop, n)));
            }
            println!();
        }
    }

    println!("\n**Targets (issue 3) at the largest N measured for each**\n");
    println!("| target | grove | met? | mls-rs | openmls |");
    println!("|---|---|---|---|---|");
    let big = *sizes.iter().max().unwrap_or(&0);
    let steady_n =
        sizes.iter().rev().copied().find(|&n| res.get("grove steady", "update: commit (sender)", n).is_some());
    let target = |name: &str, grove: Option<(f64, String)>, limit: f64, base: [String; 2]| {
        let (val, shown) = match grove {
            Some(g) => g,
            None => {
                println!("| {name} | not measured | – | {} | {} |", base[0], base[1]);
                return;
            }
        };
        let met = if val <= limit { "met" } else { "**missed**" };
        println!("| {name} | {shown} | {met} | {} | {} |", base[0], base[1]);
    };
    let base_t = |op: &str, n: usize| -> [String; 2] {
        [
            res.ms("mls-rs bare", op, n).map(fmt_ms).unwrap_or("–".into()),
            res.ms("openmls bare", op, n).map(fmt_ms).unwrap_or("–".into()),
        ]
    };
    let base_b = |op: &str, n: usize| -> [String; 2] {
        [
            res.bytes("mls-rs bare", op, n).map(fmt_b).unwrap_or("–".into()),
            res.bytes("openmls bare", op, n).map(fmt_b).unwrap_or("–".into()),
        ]
    };
    if let Some(sn) = steady_n {
        for (what, op) in [("update", "update: commit (sender)"), ("remove", "remove: commit (sender)")] {
            let b = res.bytes("grove steady", op, sn);
            target(
                &format!("steady {what} commit ≤ 3 KB (N={sn})"),
                b.map(|b| (b as f64, format!("{b} B"))),
                3000.0,
                base_b(op, sn).map(|s| format!("{s} (bare)")),
            );
            let t = res.ms("grove steady", op, sn);
            target(
                &format!("steady {what} commit ≤ 150 ms (N={sn})"),
                t.map(|t| (t, fmt_ms(t))),
                150.0,
                base_t(op, sn).map(|s| format!("{s} (bare)")),
            );
        }
        for op in ["update: receiver process + persist", "update: receiver process + persist, incl. checkpoint share"] {
            let t = res.ms("grove steady", op, sn);
            target(
                &format!("process a commit incl. persistence ≤ 30 ms (steady, N={sn}; {op})"),
                t.map(|t| (t, fmt_ms(t))),
                30.0,
                base_t("update: receiver process", sn).map(|s| format!("{s} (bare, no persistence)")),
            );
        }
    }
    for op in ["update: receiver process + persist", "update: receiver process + persist, incl. checkpoint share"] {
        let t = res.ms("grove bare", op, big);
        target(
            &format!("process a commit incl. persistence ≤ 30 ms (bare, N={big}; {op})"),
            t.map(|t| (t, fmt_ms(t))),
            30.0,
            base_t("update: receiver process", big).map(|s| format!("{s} (no persistence)")),
        );
    }
    let join_sc = if steady_n == Some(big) { "grove steady" } else { "grove bare" };
    let t = res.ms(join_sc, "join: engine (Welcome + tree from hub)", big);
    target(
        &format!("join ≤ 0.4 s (N={big}, {join_sc})"),
        t.map(|t| (t, fmt_ms(t))),
        400.0,
        base_t("join: from Welcome with tree", big),
    );
    let b = res.bytes(join_sc, "add 1: Welcome", big);
    target(
        &format!("Welcome ≤ 4 KB (N={big})"),
        b.map(|b| (b as f64, fmt_b(b))),
        4000.0,
        base_b("add 1: Welcome (with tree)", big),
    );
    for n in sizes {
        let t = res.ms("grove bare", "msg 100 B: encrypt + decrypt", *n);
        target(
            &format!("100-byte message encrypt + decrypt ≤ 0.15 ms (N={n})"),
            t.map(|t| (t, fmt_ms(t))),
            0.15,
            base_t("msg 100 B: encrypt + decrypt", *n),
        );
    }
    if !notes.is_empty() {
        println!("\nNotes from the run:\n");
        for n in notes {
            println!("- {n}");
        }
    }
}
