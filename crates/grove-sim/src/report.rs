//! The report: a markdown document with every table, a short summary for BENCHMARKS.md, and
//! SVG plots (plotters). Rendering is a pure function of the [`Results`], the cost table and the
//! caller's notes (timing of the run), so the same seed and costs give the same report.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::costs::CostTable;
use crate::model::Encryption;
use crate::net::Hosting;
use crate::sim::{OpKind, Results};

/// Where the run came from: how it was made, shown at the top of the report.
#[derive(Clone, Debug, Default)]
pub struct Notes {
    /// How the costs were obtained (command, date, machine, durations).
    pub provenance: Vec<String>,
}

/// Bytes, decimal units.
pub fn fmt_bytes(b: f64) -> String {
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")];
    for (d, u) in units {
        if b >= d {
            let v = b / d;
            return if v >= 100.0 { format!("{v:.0} {u}") } else { format!("{v:.1} {u}") };
        }
    }
    format!("{b:.0} B")
}

/// Microseconds as a readable time.
pub fn fmt_us(us: f64) -> String {
    if us >= 3_600e6 {
        format!("{:.1} h", us / 3_600e6)
    } else if us >= 100e6 {
        format!("{:.1} min", us / 60e6)
    } else if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn pct(x: f64) -> String {
    if x > 0.0 && x < 0.1 {
        format!("{:.1} %", x * 100.0)
    } else {
        format!("{:.0} %", x * 100.0)
    }
}

fn n_label(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A table over N: one row per (label, cells).
fn table(out: &mut String, first: &str, ns: &[u64], rows: &[(String, Vec<String>)]) {
    let _ = write!(out, "| {first} |");
    for n in ns {
        let _ = write!(out, " N={} |", n_label(*n));
    }
    out.push_str("\n|---|");
    for _ in ns {
        out.push_str("---:|");
    }
    out.push('\n');
    for (label, cells) in rows {
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn dagger(r: &Results, e: Encryption, n: u64) -> &'static str {
    if r.extrapolated(e, n) {
        " †"
    } else {
        ""
    }
}

fn pair_rows(r: &Results, f: impl Fn(Hosting, Encryption, u64) -> String) -> Vec<(String, Vec<String>)> {
    let mut rows = Vec::new();
    for h in Hosting::ALL {
        for e in Encryption::ALL {
            let cells = r.settings.ns.iter().map(|&n| format!("{}{}", f(h, e, n), dagger(r, e, n))).collect();
            rows.push((format!("{} × {}", h.name(), e.name()), cells));
        }
    }
    rows
}

/// The full markdown report.
pub fn markdown(r: &Results, costs: &CostTable, notes: &Notes) -> String {
    let ns = &r.settings.ns;
    let p = &r.settings.net;
    let mut o = String::new();
    o.push_str("# Hosting × encryption, measured (grove-sim)\n\n");
    o.push_str(
        "The design note behind grove compared three ways to host a group and three ways to encrypt \
         it, in words. This report puts numbers on every pair, for N members. Regenerate it (and \
         the plots beside it, and the summary in BENCHMARKS.md) with\n\n\
         ```\ncargo run --release -p grove-sim -- report\n```\n\n",
    );
    for line in &notes.provenance {
        let _ = writeln!(o, "- {line}");
    }
    o.push('\n');

    o.push_str("## How the numbers are made\n\n");
    let _ = write!(
        o,
        "Three kinds of figure, kept apart:\n\n\
         - **Measured** (per operation): exact byte sizes of real messages and CPU times of real \
         operations, in this run, on this machine (table below). Pairwise is vodozemac 0.11's Olm \
         (grove-proto has no Olm module yet); Sender Keys is `grove_proto::senderkeys`; MLS is \
         `grove_proto::mls::engine::MlsEngine` in a steady-state tree (every member but the \
         creator and one receiver committed an update, in random order) at every N up to the largest measured \
         one, its engine times including the engine's own writes (a journal row per message or \
         processed commit, the whole state for the member's own commits and every 16th \
         handshake) but no SQLite. CPU is \
         the {} around single calls (MLS: median of the repetitions; Olm messages and every \
         Sender Keys operation: mean over the iterations; Olm session set-up: median of up to \
         500), no pinning.\n\
         - **Extrapolated** (marked †): MLS costs beyond the largest measured N, from a \
         least-squares fit of the measured points: commit, message and Welcome sizes as \
         `a + b·log2 N`, the ratchet tree and every CPU time as `a + b·N` (never below the last \
         measured value).\n\
         - **Modelled and simulated**: what each scheme sends for each operation (rules below) \
         and how each hosting scheme carries it, simulated deterministically on a virtual clock. \
         Every network figure is of this kind, computed from the measured per-operation costs.\n\n",
        crate::measure::CPU_CLOCK
    );
    let _ = writeln!(
        o,
        "Network: members' uplinks {}/s, the grove server's and each service node's {}/s, {} \
         one-way latency per link, swarms of k = {} replicas. Delivery figures average {} \
         messages, each from a random sender with a fresh random set of offline members; seed {}.\n",
        fmt_bytes(p.member_bytes_per_s),
        fmt_bytes(p.infra_bytes_per_s),
        fmt_us(p.latency_us as f64),
        p.swarm_k,
        r.settings.messages,
        r.settings.seed
    );
    o.push_str(MODEL_TEXT);

    o.push_str("### Measured per-operation costs\n\n");
    let ol = &costs.olm;
    let sk = &costs.sender_keys;
    o.push_str("| Olm (vodozemac 0.11), independent of N | size | CPU |\n|---|---:|---:|\n");
    let _ = writeln!(
        o,
        "| 100-byte message (normal message): encrypt / decrypt | {} | {} / {} |",
        fmt_bytes(ol.message_bytes as f64),
        fmt_us(ol.encrypt_us),
        fmt_us(ol.decrypt_us)
    );
    let _ = writeln!(
        o,
        "| open a session: outbound + pre-key message / inbound | {} | {} / {} |",
        fmt_bytes(ol.prekey_bytes as f64),
        fmt_us(ol.session_out_us),
        fmt_us(ol.session_in_us)
    );
    let _ = writeln!(o, "| a Sender Keys distribution inside Olm | {} | |\n", fmt_bytes(ol.distribution_bytes as f64));
    o.push_str(
        "vodozemac derives its ratchet public key from the secret (an X25519 base-point \
         multiplication) on every `encrypt`, which is most of an Olm encryption's cost; decryption \
         is symmetric crypto only.\n\n",
    );
    o.push_str("| Sender Keys (grove-proto), independent of N | size | CPU |\n|---|---:|---:|\n");
    let _ = writeln!(
        o,
        "| 100-byte message: encrypt + sign / verify + decrypt | {} | {} / {} |",
        fmt_bytes(sk.message_bytes as f64),
        fmt_us(sk.encrypt_us),
        fmt_us(sk.decrypt_us)
    );
    let _ = writeln!(
        o,
        "| new chain + distribution / install a distribution | {} | {} / {} |\n",
        fmt_bytes(sk.distribution_bytes as f64),
        fmt_us(sk.new_chain_us),
        fmt_us(sk.install_us)
    );
    let mut rows = Vec::new();
    type Cell = fn(&crate::costs::MlsPoint) -> String;
    let mls_rows: [(&str, Cell); 8] = [
        ("100-byte message: size", |m| fmt_bytes(m.message_bytes as f64)),
        ("message: encrypt / decrypt", |m| format!("{} / {}", fmt_us(m.encrypt_us), fmt_us(m.decrypt_us))),
        ("update commit (heal): size / CPU", |m| {
            format!("{} / {}", fmt_bytes(m.update_bytes as f64), fmt_us(m.update_us))
        }),
        ("remove commit: size / CPU", |m| format!("{} / {}", fmt_bytes(m.remove_bytes as f64), fmt_us(m.remove_us))),
        ("add commit: size / CPU", |m| format!("{} / {}", fmt_bytes(m.add_bytes as f64), fmt_us(m.add_us))),
        ("process a commit (each receiver)", |m| fmt_us(m.process_us)),
        ("Welcome / ratchet tree", |m| {
            format!("{} / {}", fmt_bytes(m.welcome_bytes as f64), fmt_bytes(m.tree_bytes as f64))
        }),
        ("join (Welcome + tree)", |m| fmt_us(m.join_us)),
    ];
    for (label, f) in mls_rows {
        let cells = ns
            .iter()
            .map(|&n| match costs.mls.at(n) {
                Some((m, _)) => format!("{}{}", f(&m), dagger(r, Encryption::Mls, n)),
                None => "–".into(),
            })
            .collect();
        rows.push((label.to_string(), cells));
    }
    table(&mut o, "MLS (grove's engine), steady state", ns, &rows);

    o.push_str("## One 100-byte message, every member online\n\n");
    o.push_str("### Bytes the sender uploads\n\n");
    table(&mut o, "hosting × encryption", ns, &pair_rows(r, |h, e, n| fmt_bytes(r.message[&(h, e, n)].upload as f64)));
    o.push_str("### Bytes on the network (every link: sender, relays, server, replicas)\n\n");
    table(&mut o, "hosting × encryption", ns, &pair_rows(r, |h, e, n| fmt_bytes(r.message[&(h, e, n)].total as f64)));
    o.push_str("### Bytes stored by the infrastructure (for members who are offline or fetch later)\n\n");
    table(&mut o, "hosting × encryption", ns, &pair_rows(r, |h, e, n| fmt_bytes(r.message[&(h, e, n)].stored as f64)));
    o.push_str("### Hops and time until the last member has it\n\n");
    table(
        &mut o,
        "hosting × encryption",
        ns,
        &pair_rows(r, |h, e, n| {
            let m = &r.message[&(h, e, n)];
            let unit = if m.max_hops == 1 { "hop" } else { "hops" };
            format!("{} {unit}, {}", m.max_hops, fmt_us(m.last_arrival_us as f64))
        }),
    );
    o.push_str("### CPU per message\n\n");
    let rows: Vec<(String, Vec<String>)> = Encryption::ALL
        .iter()
        .map(|&e| {
            let cells = ns
                .iter()
                .map(|&n| {
                    let s = &r.schemes[&(e, n)];
                    format!(
                        "{} + {} each{}",
                        fmt_us(s.message_sender_us),
                        fmt_us(s.message_receiver_us),
                        dagger(r, e, n)
                    )
                })
                .collect();
            (format!("{}: sender + each receiver", e.name()), cells)
        })
        .collect();
    table(&mut o, "encryption", ns, &rows);

    o.push_str("## Delivery with members offline at send time\n\n");
    o.push_str("Share of the other members who have the message: *while online at send time* / *once everyone is back*. It does not depend on the encryption scheme.\n\n");
    for &pc in &r.settings.offline_percent {
        let _ = writeln!(o, "### {pc} % of members offline\n");
        let rows: Vec<(String, Vec<String>)> =
            [Hosting::Ring, Hosting::StaleRing, Hosting::Mesh, Hosting::Swarm, Hosting::Server]
                .iter()
                .map(|&h| {
                    let cells = ns
                        .iter()
                        .map(|&n| {
                            let d = r.delivery[&(h, n, pc)];
                            format!("{} / {}", pct(d.at_send), pct(d.after_return))
                        })
                        .collect();
                    (h.name().to_string(), cells)
                })
                .collect();
        table(&mut o, "hosting", ns, &rows);
    }

    o.push_str("## Membership changes, every member online\n\n");
    for k in OpKind::ALL {
        let _ = writeln!(o, "### {}: bytes on the network\n", capitalise(k.name()));
        table(
            &mut o,
            "hosting × encryption",
            ns,
            &pair_rows(r, |h, e, n| {
                let s = &r.schemes[&(e, n)];
                if k.of(s).by_traffic {
                    "0 (heals with traffic)".into()
                } else {
                    fmt_bytes(r.ops[&(h, e, n, k)].total as f64)
                }
            }),
        );
        let _ = writeln!(o, "{}: CPU summed over every member (any hosting)\n", capitalise(k.name()));
        let rows: Vec<(String, Vec<String>)> = Encryption::ALL
            .iter()
            .map(|&e| {
                let cells = ns
                    .iter()
                    .map(|&n| {
                        let s = &r.schemes[&(e, n)];
                        if k.of(s).by_traffic {
                            "0 (with traffic)".to_string()
                        } else {
                            format!("{}{}", fmt_us(k.of(s).cpu_us), dagger(r, e, n))
                        }
                    })
                    .collect();
                (e.name().to_string(), cells)
            })
            .collect();
        table(&mut o, "encryption", ns, &rows);
    }

    o.push_str("## What the numbers say about the note's claims\n\n");
    for &n in ns {
        if n == ns[ns.len() - 1] || n == 1_000 {
            o.push_str(&ratios(r, n));
        }
    }
    o.push_str(&claims(r));
    o.push_str("\n## Plots\n\n");
    o.push_str("Log-log; colour = hosting scheme, marker = encryption (● pairwise, ▲ Sender Keys, ✕ MLS).\n\n");
    for (file, title, _) in PLOTS {
        let _ = writeln!(o, "![{title}]({file})\n");
    }
    o
}

const MODEL_TEXT: &str = "\
### Model choices\n\n\
| | message | add a member | remove a member | heal after a key leak (PCS) |\n\
|---|---|---|---|---|\n\
| pairwise (Olm) | one Olm message per other member | a 100-byte notice to the N−1 others (one Olm message each); the newcomer opens a session with each of the N members (a pre-key message each) | the notice to the N−2 who stay; no rekey is needed | nothing sent: each pair's Double Ratchet heals at its next round trip (\"with traffic\") |\n\
| Sender Keys | one message for all | the notice (a Sender Keys message); the newcomer sends its distribution to the N members (pre-key messages), each sends its own back (Olm) | each of the N−1 who stay makes a new chain and sends it to the N−2 others over Olm: (N−1)(N−2) messages | the leaked member held every chain: all N make new chains, N(N−1) messages |\n\
| MLS | one PrivateMessage for all | an add commit to the N−1 others; a Welcome and the ratchet tree to the newcomer | a remove commit to the N−1 others | the leaked member commits an update to the N−1 others |\n\n\
Hosting: **P2P ring relay** (old Tox conferences): a group message goes to the sender's two ring \
neighbours and each member forwards it to its other neighbour on first receipt; a pairwise bundle \
is split by direction and each member strips its own ciphertext; offline members are out of the \
ring (it re-links around them) and miss what is sent meanwhile; a second delivery row shows the \
ring *before* it re-links, when an offline member stops the message. **P2P full mesh** (Tox NGC): \
one copy per online peer, nothing kept for offline ones. **Service-node swarm** (Session): the \
group's swarm of k nodes; the sender uploads once, the first node replicates to k−1 others, each \
stores it; members fetch from one replica each, offline ones on return; one-to-one deliveries go \
to the recipient's own swarm. **grove server**: one upload, one stored copy in the room's log, \
sent to online members and read from the log by the others on return; one-to-one deliveries go \
through the recipient's mailbox. One-to-one deliveries in P2P go straight to the recipient. Not \
modelled: CPU in the network timeline, downlinks, loss, node failures, onion routing, lookups.\n\n";

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**Confirmed.**"
    } else {
        "**Not confirmed.**"
    }
}

/// The short text on the note's claims, computed from the results.
pub fn claims(r: &Results) -> String {
    let ns = &r.settings.ns;
    let (lo, hi) = (ns[0], ns[ns.len() - 1]);
    let grow = hi as f64 / lo as f64;
    let m = |h, e, n| &r.message[&(h, e, n)];
    let op = |h, e, n, k| r.ops[&(h, e, n, k)].total as f64;
    let mls = Encryption::Mls;
    let mut o = String::new();

    let mesh_up = m(Hosting::Mesh, mls, hi).upload as f64 / m(Hosting::Mesh, mls, lo).upload as f64;
    let ring = m(Hosting::Ring, mls, hi);
    let server = m(Hosting::Server, mls, hi);
    let _ = writeln!(
        o,
        "- *Full P2P costs O(N) upload per message.* {} For the full mesh: the sender uploads {} at \
         N={} and {} at N={} (×{:.0} while N grew ×{:.0}). The ring relay does not: its sender uploads \
         two copies whatever N ({}), but the message then needs {} hops and {} to reach the last of \
         {} members, against {} hops and {} through the grove server.",
        verdict(mesh_up > grow / 2.0),
        fmt_bytes(m(Hosting::Mesh, mls, lo).upload as f64),
        n_label(lo),
        fmt_bytes(m(Hosting::Mesh, mls, hi).upload as f64),
        n_label(hi),
        mesh_up,
        grow,
        fmt_bytes(ring.upload as f64),
        ring.max_hops,
        fmt_us(ring.last_arrival_us as f64),
        n_label(hi),
        server.max_hops,
        fmt_us(server.last_arrival_us as f64),
    );
    if let Some(&pc) = r.settings.offline_percent.first() {
        let d = |h| r.delivery[&(h, hi, pc)];
        let p2p_keeps = d(Hosting::Mesh).after_return <= d(Hosting::Mesh).at_send + 1e-9
            && d(Hosting::Ring).after_return <= d(Hosting::Ring).at_send + 1e-9;
        let _ = writeln!(
            o,
            "- *Nothing reaches offline members in P2P.* {} With {pc} % offline at N={}, the mesh and \
             the re-linked ring reach {} and {} of the members, and nobody more when the others \
             return; the swarm and the grove server reach {} and {} once everyone is back. Before \
             the ring re-links it is worse than the note says: an offline member stops the message, \
             so only {} of the members get it.",
            verdict(p2p_keeps && d(Hosting::Server).after_return > 0.999),
            n_label(hi),
            pct(d(Hosting::Mesh).at_send),
            pct(d(Hosting::Ring).at_send),
            pct(d(Hosting::Swarm).after_return),
            pct(d(Hosting::Server).after_return),
            pct(d(Hosting::StaleRing).at_send),
        );
    }
    let sw = m(Hosting::Swarm, mls, hi);
    let _ = writeln!(
        o,
        "- *Swarms cost the network.* {} for storage: a swarm stores {} copies of each message ({} \
         against the grove server's {}). Hardly in traffic: the k−1 replications add {:.2} % to \
         the {} a message moves at N={}, where the fan-out to the members dominates either way. \
         The replicas are what removes the single point of failure the note saw in *one* node; a \
         grove server is such a single point for its rooms (failures are not modelled).",
        if sw.stored > server.stored { "**Confirmed**" } else { "**Not confirmed**" },
        r.settings.net.swarm_k,
        fmt_bytes(sw.stored as f64),
        fmt_bytes(server.stored as f64),
        (sw.total as f64 / server.total as f64 - 1.0) * 100.0,
        fmt_bytes(server.total as f64),
        n_label(hi),
    );
    let pw = m(Hosting::Server, Encryption::Pairwise, hi);
    let _ = writeln!(
        o,
        "- *Pairwise encryption costs O(N) ciphertexts per message.* {} Through the grove server \
         at N={} a pairwise message uploads {} (MLS: {}, Sender Keys: {}), puts {} on the network \
         and costs its sender {} of CPU. What the note left out: pairwise is the cheapest scheme to \
         *remove* a member ({} through the server, no rekey: the removed member simply gets no \
         further ciphertext) and heals after a leak with ordinary traffic.",
        verdict(pw.upload as f64 > 10.0 * server.upload as f64),
        n_label(hi),
        fmt_bytes(pw.upload as f64),
        fmt_bytes(server.upload as f64),
        fmt_bytes(m(Hosting::Server, Encryption::SenderKeys, hi).upload as f64),
        fmt_bytes(pw.total as f64),
        fmt_us(r.schemes[&(Encryption::Pairwise, hi)].message_sender_us),
        fmt_bytes(op(Hosting::Server, Encryption::Pairwise, hi, OpKind::Remove)),
    );
    let sk_hi = op(Hosting::Server, Encryption::SenderKeys, hi, OpKind::Remove);
    let sk_lo = op(Hosting::Server, Encryption::SenderKeys, lo, OpKind::Remove);
    let sk_growth = sk_hi / sk_lo;
    let _ = writeln!(
        o,
        "- *Sender Keys rekey at O(N²).* {} Removing a member through the grove server moves {} at \
         N={} and {} at N={} (×{} for N ×{}); MLS moves {}{} at N={}. Healing after a leak \
         costs Sender Keys {} at N={}; Sender Keys has no cheaper way to heal (no PCS without the \
         full rekey).",
        verdict(sk_growth > grow * grow / 4.0),
        fmt_bytes(sk_lo),
        n_label(lo),
        fmt_bytes(sk_hi),
        n_label(hi),
        n_label(sk_growth.round() as u64),
        n_label(grow.round() as u64),
        fmt_bytes(op(Hosting::Server, mls, hi, OpKind::Remove)),
        dagger(r, mls, hi),
        n_label(hi),
        fmt_bytes(op(Hosting::Server, Encryption::SenderKeys, hi, OpKind::Heal)),
        n_label(hi),
    );
    let measured: Vec<u64> = ns.iter().copied().filter(|&n| !r.extrapolated(mls, n)).collect();
    if let (Some(&a), Some(&b)) = (measured.first(), measured.last()) {
        let ra = &r.schemes[&(mls, a)];
        let rb = &r.schemes[&(mls, b)];
        let bytes = |s: &crate::model::SchemeCosts| match s.remove.steps.first().map(|x| x.send) {
            Some(crate::model::Send::Shared(b)) => b as f64,
            _ => 0.0,
        };
        let byte_growth = bytes(rb) / bytes(ra);
        let cpu_growth = rb.remove.cpu_us / ra.remove.cpu_us;
        let g = b as f64 / a as f64;
        let _ = writeln!(
            o,
            "- *MLS costs O(log N) per membership change.* {} for bytes: a remove commit grows from \
             {} at N={} to {} at N={} (×{:.1} for N ×{:.0}). **Not for CPU** in grove's engine today: \
             the CPU of a remove summed over the group grows ×{:.0} over the same range, more than \
             the number of members alone (×{:.0}) explains: each of them processes the commit, in a \
             time that itself grows with N (mls-rs clones the group state, tree included, and \
             recomputes hashes for every commit), so the group's total grows faster than N even \
             though each commit is small.",
            if byte_growth < g / 4.0 { "**Confirmed**" } else { "**Not confirmed**" },
            fmt_bytes(bytes(ra)),
            n_label(a),
            fmt_bytes(bytes(rb)),
            n_label(b),
            byte_growth,
            g,
            cpu_growth,
            g,
        );
        let _ = writeln!(
            o,
            "- *Sender Keys and MLS cost O(1) per message.* **Confirmed for bytes** ({} and {} \
             whatever N). {} for MLS CPU in grove's engine: decrypting one message takes {} at \
             N={} and {} at N={} (a message writes one journal row; the whole group state is \
             written only at a commit or once per 256 messages, which this figure leaves out); \
             Sender Keys stays at {}.",
            fmt_bytes(m(Hosting::Server, Encryption::SenderKeys, hi).upload as f64),
            fmt_bytes(server.upload as f64),
            // Flat within noise: less than 3× over the measured range of N.
            if rb.message_receiver_us < 3.0 * ra.message_receiver_us { "**Confirmed**" } else { "**Not confirmed**" },
            fmt_us(ra.message_receiver_us),
            n_label(a),
            fmt_us(rb.message_receiver_us),
            n_label(b),
            fmt_us(r.schemes[&(Encryption::SenderKeys, b)].message_receiver_us),
        );
    }
    let _ = writeln!(
        o,
        "- *A user-hosted server scales.* **Confirmed for the sender and for storage**: one upload \
         and one stored copy per message for Sender Keys and MLS, whatever N; the server's own \
         uplink carries N−1 copies ({} per message at N={}), which is what the operator's \
         hardware pays for.",
        fmt_bytes((server.total - server.upload) as f64),
        n_label(hi),
    );
    o
}

/// The summary section for BENCHMARKS.md (without its heading).
pub fn summary(r: &Results, notes: &Notes) -> String {
    let ns = &r.settings.ns;
    let hi = ns[ns.len() - 1];
    let mut o = String::new();
    o.push_str(
        "`cargo run --release -p grove-sim -- report` simulates every hosting scheme × encryption \
         scheme of the design note from per-operation costs measured with grove-proto (MLS, \
         Sender Keys) and vodozemac (Olm); the full tables, the model and the plots are in \
         [docs/comparison/README.md](docs/comparison/README.md). † marks MLS costs extrapolated \
         beyond the largest measured N.\n\n",
    );
    for line in &notes.provenance {
        let _ = writeln!(o, "- {line}");
    }
    o.push('\n');
    let _ = writeln!(o, "At N = {} (every member online; bytes on the network):\n", n_label(hi));
    o.push_str("| hosting × encryption | sender uploads per message | network per message | stored per message | remove a member | last member reached after |\n|---|---:|---:|---:|---:|---:|\n");
    for h in Hosting::ALL {
        for e in Encryption::ALL {
            let m = &r.message[&(h, e, hi)];
            let _ = writeln!(
                o,
                "| {} × {} | {} | {} | {} | {}{} | {} |",
                h.name(),
                e.name(),
                fmt_bytes(m.upload as f64),
                fmt_bytes(m.total as f64),
                fmt_bytes(m.stored as f64),
                fmt_bytes(r.ops[&(h, e, hi, OpKind::Remove)].total as f64),
                dagger(r, e, hi),
                fmt_us(m.last_arrival_us as f64),
            );
        }
    }
    o.push('\n');
    o.push_str(&ratios(r, hi));
    o.push_str(&claims(r));
    o
}

/// Every pair against grove server × MLS at `n`, from the same run.
pub fn ratios(r: &Results, n: u64) -> String {
    let base_m = &r.message[&(Hosting::Server, Encryption::Mls, n)];
    let base_rm = r.ops[&(Hosting::Server, Encryption::Mls, n, OpKind::Remove)].total as f64;
    let base_cpu = r.schemes[&(Encryption::Mls, n)].remove.cpu_us;
    let x = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "–".into() };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Ratios to **grove server × MLS** at N = {} (same run; > 1 costs more){}:\n",
        n_label(n),
        if r.extrapolated(Encryption::Mls, n) { ", MLS figures †" } else { "" }
    );
    o.push_str("| hosting × encryption | sender upload | network per message | stored | last member reached | network to remove | CPU to remove |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for h in Hosting::ALL {
        for e in Encryption::ALL {
            let m = &r.message[&(h, e, n)];
            let _ = writeln!(
                o,
                "| {} × {} | {} | {} | {} | {} | {} | {} |",
                h.name(),
                e.name(),
                x(m.upload as f64, base_m.upload as f64),
                x(m.total as f64, base_m.total as f64),
                x(m.stored as f64, base_m.stored as f64),
                x(m.last_arrival_us as f64, base_m.last_arrival_us as f64),
                x(r.ops[&(h, e, n, OpKind::Remove)].total as f64, base_rm),
                x(r.schemes[&(e, n)].remove.cpu_us, base_cpu),
            );
        }
    }
    o.push('\n');
    o
}

/// The plots: (file name, title, unit of the y axis).
pub const PLOTS: [(&str, &str, &str); 4] = [
    ("message-network-bytes.svg", "Bytes on the network per message", "bytes"),
    ("message-sender-upload.svg", "Bytes the sender uploads per message", "bytes"),
    ("remove-network-bytes.svg", "Bytes on the network to remove a member", "bytes"),
    ("message-last-member.svg", "Time until the last member has a message", "seconds"),
];

/// Writes the SVG plots into `dir`.
pub fn plots(r: &Results, dir: &Path) -> Result<()> {
    let value = |i: usize, h: Hosting, e: Encryption, n: u64| -> f64 {
        match i {
            0 => r.message[&(h, e, n)].total as f64,
            1 => r.message[&(h, e, n)].upload as f64,
            2 => r.ops[&(h, e, n, OpKind::Remove)].total as f64,
            _ => r.message[&(h, e, n)].last_arrival_us as f64 / 1e6,
        }
    };
    for (i, (file, title, unit)) in PLOTS.iter().enumerate() {
        let path = dir.join(file);
        plot(r, &path, title, unit, |h, e, n| value(i, h, e, n)).with_context(|| format!("plot {}", path.display()))?;
    }
    Ok(())
}

fn plot(
    r: &Results,
    path: &Path,
    title: &str,
    unit: &str,
    value: impl Fn(Hosting, Encryption, u64) -> f64,
) -> Result<()> {
    let ns = &r.settings.ns;
    let mut ys: Vec<f64> = Vec::new();
    for h in Hosting::ALL {
        for e in Encryption::ALL {
            ys.extend(ns.iter().map(|&n| value(h, e, n)).filter(|v| *v > 0.0));
        }
    }
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min).max(1e-6) / 2.0;
    let hi = ys.iter().copied().fold(0.0, f64::max).max(lo * 4.0) * 2.0;
    let (x0, x1) = (ns[0] as f64 / 1.5, ns[ns.len() - 1] as f64 * 1.5);
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (lo..hi).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("members (N)")
        .y_desc(unit)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colours = [RGBColor(200, 60, 40), RGBColor(230, 150, 20), RGBColor(60, 120, 200), RGBColor(40, 150, 70)];
    for (hi_, h) in Hosting::ALL.iter().enumerate() {
        let colour = colours[hi_];
        for e in Encryption::ALL {
            let pts: Vec<(f64, f64)> = ns.iter().map(|&n| (n as f64, value(*h, e, n))).filter(|p| p.1 > 0.0).collect();
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let label = format!("{} × {}", h.name(), e.name());
            match e {
                Encryption::Pairwise => chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 5, colour.filled())))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .label(label)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled())),
                Encryption::SenderKeys => chart
                    .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 6, colour.filled())))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .label(label)
                    .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, colour.filled())),
                Encryption::Mls => chart
                    .draw_series(pts.iter().map(|&p| Cross::new(p, 6, colour.stroke_width(2))))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .label(label)
                    .legend(move |(x, y)| Cross::new((x + 10, y), 6, colour.stroke_width(2))),
            };
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Replaces (or appends) the grove-sim section of BENCHMARKS.md.
pub fn splice_benchmarks(doc: &str, section: &str) -> String {
    const BEGIN: &str = "<!-- grove-sim report: begin (generated, edit crates/grove-sim) -->";
    const END: &str = "<!-- grove-sim report: end -->";
    let block = format!("{BEGIN}\n## Hosting × encryption (grove-sim, issue 6)\n\n{section}{END}\n");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &doc[..a], block, &doc[b + END.len()..].trim_start_matches('\n'))
        }
        _ => format!("{}\n\n{}", doc.trim_end(), block),
    }
}
