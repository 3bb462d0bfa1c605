//! The whole comparison: every hosting scheme × every encryption scheme × every N, from a cost
//! table, deterministic for a seed.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::costs::{CostTable, Provenance};
use crate::model::{scheme_costs, Encryption, Op, SchemeCosts, Send};
use crate::net::{simulate, step_traffic, Group, Hosting, NetParams, Outcome};

/// A membership operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Add one member.
    Add,
    /// Remove one member (rekey).
    Remove,
    /// Heal after a member's keys leak (PCS).
    Heal,
}

impl OpKind {
    /// All, in report order.
    pub const ALL: [OpKind; 3] = [OpKind::Add, OpKind::Remove, OpKind::Heal];

    /// Name for tables.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Add => "add a member",
            OpKind::Remove => "remove a member",
            OpKind::Heal => "heal after a key leak (PCS)",
        }
    }

    /// The op in a scheme's costs.
    pub fn of(self, s: &SchemeCosts) -> &Op {
        match self {
            OpKind::Add => &s.add,
            OpKind::Remove => &s.remove,
            OpKind::Heal => &s.heal,
        }
    }
}

/// Network cost of one membership operation, everyone online.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpTraffic {
    /// Bytes on every link.
    pub total: u64,
    /// Bytes held by the infrastructure.
    pub stored: u64,
    /// Virtual time until the last step's last recipient has it, µs (steps run one after another).
    pub duration_us: u64,
}

/// Delivery with some members offline at send time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Delivery {
    /// Share of recipients who got the message while online.
    pub at_send: f64,
    /// Share who have it once the offline members are back.
    pub after_return: f64,
}

/// Settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Group sizes.
    pub ns: Vec<u64>,
    /// Network parameters.
    pub net: NetParams,
    /// Seed of ring orders, offline sets and senders.
    pub seed: u64,
    /// Messages per delivery figure (each with its own offline set and sender).
    pub messages: usize,
    /// Offline shares, in percent.
    pub offline_percent: Vec<u64>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            ns: vec![10, 100, 1_000, 10_000],
            net: NetParams::default(),
            seed: 1,
            messages: 20,
            offline_percent: vec![10, 50],
        }
    }
}

/// Everything the report shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    /// The settings.
    pub settings: Settings,
    /// Per (scheme, N): what it sends and spends.
    pub schemes: BTreeMap<(Encryption, u64), SchemeCosts>,
    /// One application message, everyone online.
    pub message: BTreeMap<(Hosting, Encryption, u64), Outcome>,
    /// Membership operations, everyone online.
    pub ops: BTreeMap<(Hosting, Encryption, u64, OpKind), OpTraffic>,
    /// Delivery per (hosting, N, offline %), averaged over `messages` messages.
    pub delivery: BTreeMap<(Hosting, u64, u64), Delivery>,
}

impl Results {
    /// Whether a cell of `encryption` at `n` rests on an extrapolated cost.
    pub fn extrapolated(&self, encryption: Encryption, n: u64) -> bool {
        self.schemes.get(&(encryption, n)).is_some_and(|s| s.provenance == Provenance::Extrapolated)
    }
}

/// The network cost of an op: its steps one after another.
pub fn op_traffic(hosting: Hosting, p: &NetParams, op: &Op, seed: u64) -> OpTraffic {
    let mut t = OpTraffic::default();
    for step in &op.steps {
        let o = step_traffic(hosting, p, step, seed);
        t.total += o.total;
        t.stored += o.stored;
        t.duration_us += o.last_arrival_us;
    }
    t
}

/// Delivery of `messages` group messages from random senders with `offline` members offline.
/// Groups of fewer than 2 members, or 0 messages, deliver nothing (an all-zero figure).
pub fn delivery(hosting: Hosting, p: &NetParams, n: u64, offline_percent: u64, messages: usize, seed: u64) -> Delivery {
    if n < 2 || messages == 0 {
        return Delivery::default();
    }
    let offline_percent = offline_percent.min(100);
    let mut rng = StdRng::seed_from_u64(seed ^ n.rotate_left(17) ^ offline_percent.rotate_left(40));
    let mut group = Group::new(n as usize, rng.gen());
    let offline = ((n - 1) * offline_percent + 50) / 100;
    let (mut at_send, mut after) = (0.0, 0.0);
    for _ in 0..messages {
        let sender = rng.gen_range(0..n as usize);
        group.set_offline(offline as usize, sender, &mut rng);
        // Reach does not depend on the payload: a 1-byte shared message.
        let o = simulate(hosting, p, &group, sender, Send::Shared(1));
        at_send += o.delivered_online as f64 / o.recipients as f64;
        after += (o.delivered_online + o.delivered_later) as f64 / o.recipients as f64;
    }
    Delivery { at_send: at_send / messages as f64, after_return: after / messages as f64 }
}

/// Runs the comparison. Errors if the cost table cannot give MLS costs.
pub fn run(table: &CostTable, settings: &Settings) -> Result<Results, String> {
    let mut r = Results {
        settings: settings.clone(),
        schemes: BTreeMap::new(),
        message: BTreeMap::new(),
        ops: BTreeMap::new(),
        delivery: BTreeMap::new(),
    };
    let p = &settings.net;
    for &n in &settings.ns {
        if n < 3 {
            return Err(format!("group size {n}: the model needs at least 3 members"));
        }
        if settings.messages == 0 {
            return Err("delivery figures need at least 1 message".into());
        }
        for e in Encryption::ALL {
            let s = scheme_costs(table, e, n).ok_or("no MLS costs measured")?;
            for h in Hosting::ALL {
                let group = Group::new(n as usize, settings.seed);
                r.message.insert((h, e, n), simulate(h, p, &group, 0, s.message));
                for k in OpKind::ALL {
                    r.ops.insert((h, e, n, k), op_traffic(h, p, k.of(&s), settings.seed));
                }
            }
            r.schemes.insert((e, n), s);
        }
        for h in [Hosting::Ring, Hosting::StaleRing, Hosting::Mesh, Hosting::Swarm, Hosting::Server] {
            for &pc in &settings.offline_percent {
                r.delivery.insert((h, n, pc), delivery(h, p, n, pc, settings.messages, settings.seed));
            }
        }
    }
    Ok(r)
}
