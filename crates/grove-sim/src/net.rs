//! The hosting schemes, simulated in memory on a virtual clock: who sends which bytes to whom,
//! what is stored for later, who gets a message while online, who gets it after returning, and
//! when the last member has it.
//!
//! Links: every node has an uplink that sends one transmission at a time at its bandwidth
//! (members: [`NetParams::member_bytes_per_s`]; the grove server and service nodes:
//! [`NetParams::infra_bytes_per_s`]); a transmission arrives [`NetParams::latency_us`] after it
//! has left the uplink. Downlinks and CPU are not modelled (CPU is reported apart).
//!
//! The schemes:
//! - [`Hosting::Ring`] (old Tox conferences): members sit on a ring (a seeded random order); a
//!   group message goes to the sender's two ring neighbours and each member forwards it, on first
//!   receipt, to its other neighbour. A per-member bundle (pairwise) is split by direction and
//!   each member strips its own ciphertext before forwarding the rest. Offline members are taken
//!   out of the ring (the ring re-links around them, as Tox conferences reconnect to the closest
//!   online peers), and anything sent while they are away never reaches them. With
//!   [`Hosting::StaleRing`] the ring has *not* re-linked yet: an offline member neither receives
//!   nor forwards, so a message stops there.
//! - [`Hosting::Mesh`] (Tox NGC): the sender sends each online peer its own copy. Nothing is
//!   kept for offline peers.
//! - [`Hosting::Swarm`] (Session/Oxen service nodes): the group's messages live in a swarm of
//!   [`NetParams::swarm_k`] nodes; the sender uploads once, the receiving node replicates to the
//!   k−1 others, every replica stores it, and members fetch from replica `member mod k`.
//!   One-to-one deliveries go to the recipient's own swarm (its own k replicas). Members who were
//!   offline fetch on return (within the swarm's TTL).
//! - [`Hosting::Server`] (grove): the sender uploads once to the room's server, which stores it
//!   in the room's log and sends it to every online member; members who were offline read it from
//!   the log on return. One-to-one deliveries go through the recipient's mailbox on the server.
//!
//! A one-to-one delivery (Welcome, key distribution, pre-key message) goes straight to the
//! recipient in both P2P schemes (a direct peer connection), through the server's mailbox in
//! grove, and through the recipient's swarm with service nodes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::model::{Send, Step};

/// A hosting scheme of the design note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hosting {
    /// P2P ring relay (old Tox conferences), ring re-linked around offline members.
    Ring,
    /// P2P ring relay before the ring has re-linked (offline members still in it).
    StaleRing,
    /// P2P full mesh (Tox NGC).
    Mesh,
    /// Service-node swarm storage (Session), k replicas.
    Swarm,
    /// The user-hosted grove server.
    Server,
}

impl Hosting {
    /// The four schemes of the comparison (the stale ring is a delivery variant of `Ring`).
    pub const ALL: [Hosting; 4] = [Hosting::Ring, Hosting::Mesh, Hosting::Swarm, Hosting::Server];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Hosting::Ring => "P2P ring relay",
            Hosting::StaleRing => "P2P ring relay, not yet re-linked",
            Hosting::Mesh => "P2P full mesh",
            Hosting::Swarm => "service-node swarm",
            Hosting::Server => "grove server",
        }
    }
}

/// Network parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetParams {
    /// A member's uplink, bytes/s.
    pub member_bytes_per_s: f64,
    /// The grove server's and each service node's uplink, bytes/s.
    pub infra_bytes_per_s: f64,
    /// One-way latency of every link, µs.
    pub latency_us: u64,
    /// Replicas in a swarm.
    pub swarm_k: u64,
}

impl Default for NetParams {
    /// 8 Mbit/s home uplinks, 1 Gbit/s server and service nodes, 50 ms one way, k = 5.
    fn default() -> NetParams {
        NetParams { member_bytes_per_s: 1e6, infra_bytes_per_s: 125e6, latency_us: 50_000, swarm_k: 5 }
    }
}

/// What one send cost and achieved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Bytes the sender put on its uplink.
    pub upload: u64,
    /// Bytes on every link (sender, relays, server, replicas), duplicates included.
    pub total: u64,
    /// Bytes the infrastructure holds for later delivery (server log/mailbox, swarm replicas).
    pub stored: u64,
    /// Recipients who got it while online.
    pub delivered_online: u64,
    /// Recipients who get it once they are back (store-and-forward), not counting the above.
    pub delivered_later: u64,
    /// Recipients it was meant for.
    pub recipients: u64,
    /// Most hops to any recipient reached while online.
    pub max_hops: u64,
    /// Virtual time from the start of the send to the last online recipient's receipt, µs.
    pub last_arrival_us: u64,
}

/// The virtual clock and the uplinks.
struct Clock {
    /// Per node: µs at which its uplink is free.
    busy: Vec<u64>,
    /// Per node: µs per byte.
    us_per_byte: Vec<f64>,
    latency: u64,
    total: u64,
    /// Bytes the sender put on its uplink (ring sends).
    sender_bytes: u64,
}

impl Clock {
    /// Node `from` sends `bytes`, ready at `at`; returns the arrival time.
    fn send(&mut self, from: usize, bytes: u64, at: u64) -> u64 {
        let start = at.max(self.busy[from]);
        let done = start + (bytes as f64 * self.us_per_byte[from]).ceil() as u64;
        self.busy[from] = done;
        self.total += bytes;
        done + self.latency
    }
}

/// The group: `n` members (0..n), `online[i]`, and a seeded ring order.
pub struct Group {
    online: Vec<bool>,
    ring: Vec<usize>,
}

impl Group {
    /// `n` members, all online, ring order shuffled by `seed`.
    pub fn new(n: usize, seed: u64) -> Group {
        let mut ring: Vec<usize> = (0..n).collect();
        ring.shuffle(&mut StdRng::seed_from_u64(seed));
        Group { online: vec![true; n], ring }
    }

    /// `ring.len()` members, all online, in this ring order; `None` unless `ring` is a
    /// permutation of `0..ring.len()`.
    pub fn with_ring(ring: Vec<usize>) -> Option<Group> {
        let mut sorted = ring.clone();
        sorted.sort_unstable();
        sorted.iter().enumerate().all(|(i, &m)| i == m).then(|| Group { online: vec![true; ring.len()], ring })
    }

    /// Sets member `i` online or offline.
    pub fn set_online(&mut self, i: usize, online: bool) {
        if let Some(o) = self.online.get_mut(i) {
            *o = online;
        }
    }

    /// Marks exactly `offline` members other than `keep` offline, chosen by `rng`.
    pub fn set_offline(&mut self, offline: usize, keep: usize, rng: &mut StdRng) {
        self.online.iter_mut().for_each(|o| *o = true);
        let mut others: Vec<usize> = (0..self.online.len()).filter(|&i| i != keep).collect();
        others.shuffle(rng);
        for &i in others.iter().take(offline) {
            self.online[i] = false;
        }
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.online.len()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.online.is_empty()
    }
}

/// Simulates one group send (`Shared` or `PerMember`) from `sender` to every other member of
/// `group`, or a `Direct` send to the `count` members following `sender` in index order.
///
/// A sender who is not a member sends nothing (an empty outcome).
pub fn simulate(hosting: Hosting, p: &NetParams, group: &Group, sender: usize, send: Send) -> Outcome {
    let n = group.len();
    if sender >= n {
        return Outcome::default();
    }
    let k = p.swarm_k.max(1) as usize;
    // Nodes: members 0..n, then the server (n) or the service nodes (n .. n + swarms·k).
    let infra = match hosting {
        Hosting::Server => 1,
        Hosting::Swarm => k * (n + 1),
        _ => 0,
    };
    let mut us_per_byte = vec![1e6 / p.member_bytes_per_s; n];
    us_per_byte.extend(std::iter::repeat_n(1e6 / p.infra_bytes_per_s, infra));
    let mut clock = Clock { busy: vec![0; n + infra], us_per_byte, latency: p.latency_us, total: 0, sender_bytes: 0 };
    let mut out = Outcome::default();

    let (recipients, per, shared): (Vec<usize>, u64, bool) = match send {
        Send::Shared(b) => ((0..n).filter(|&i| i != sender).collect(), b, true),
        Send::PerMember(b) => ((0..n).filter(|&i| i != sender).collect(), b, false),
        Send::Direct { count, bytes } => {
            ((1..n).map(|d| (sender + d) % n).take(count as usize).collect(), bytes, false)
        }
    };
    let direct = matches!(send, Send::Direct { .. });
    out.recipients = recipients.len() as u64;
    let mut arrivals: Vec<(usize, u64, u64)> = Vec::new(); // (member, time, hops)

    match hosting {
        Hosting::Mesh => {
            for &r in &recipients {
                if group.online[r] {
                    let t = clock.send(sender, per, 0);
                    arrivals.push((r, t, 1));
                }
            }
            out.upload = clock.total;
        }
        Hosting::Ring | Hosting::StaleRing if direct => {
            for &r in &recipients {
                if group.online[r] {
                    let t = clock.send(sender, per, 0);
                    arrivals.push((r, t, 1));
                }
            }
            out.upload = clock.total;
        }
        Hosting::Ring | Hosting::StaleRing => {
            let ring: Vec<usize> = if hosting == Hosting::Ring {
                group.ring.iter().copied().filter(|&m| group.online[m]).collect()
            } else {
                group.ring.clone()
            };
            ring_send(&mut clock, &ring, &group.online, sender, per, shared, &mut arrivals);
            out.upload = clock.sender_bytes;
        }
        Hosting::Server => {
            let server = n;
            let upload = if shared { per } else { per * recipients.len() as u64 };
            let at = clock.send(sender, upload, 0);
            out.upload = upload;
            out.stored = upload;
            for &r in &recipients {
                if group.online[r] {
                    let t = clock.send(server, per, at);
                    arrivals.push((r, t, 2));
                }
            }
        }
        Hosting::Swarm => {
            // Shared: the group's swarm (index 0). One-to-one and per-member: swarm of the recipient.
            let swarm_of = |who: usize| n + k * who;
            let mut upload = 0;
            if shared {
                let first = swarm_of(n);
                let at = clock.send(sender, per, 0);
                upload += per;
                let mut have = vec![at; k];
                for h in have.iter_mut().skip(1) {
                    *h = clock.send(first, per, at);
                }
                out.stored = per * k as u64;
                for &r in &recipients {
                    if group.online[r] {
                        let j = r % k;
                        let t = clock.send(first + j, per, have[j]);
                        arrivals.push((r, t, 2));
                    }
                }
            } else {
                for &r in &recipients {
                    let first = swarm_of(r);
                    let at = clock.send(sender, per, 0);
                    upload += per;
                    for _ in 1..k {
                        clock.send(first, per, at);
                    }
                    out.stored += per * k as u64;
                    if group.online[r] {
                        let t = clock.send(first, per, at);
                        arrivals.push((r, t, 2));
                    }
                }
            }
            out.upload = upload;
        }
    }

    out.total = clock.total;
    out.delivered_online = arrivals.len() as u64;
    if matches!(hosting, Hosting::Server | Hosting::Swarm) {
        out.delivered_later = out.recipients - out.delivered_online;
    }
    out.max_hops = arrivals.iter().map(|a| a.2).max().unwrap_or(0);
    out.last_arrival_us = arrivals.iter().map(|a| a.1).max().unwrap_or(0);
    out
}

/// A transmission arriving on the ring: (time µs, sequence number, ring position, direction
/// (1 clockwise, 0 counter-clockwise), hops so far, ciphertexts left in a pairwise bundle).
type RingEvent = (u64, u64, usize, u8, u64, u64);

/// One ring send: event-driven on the virtual clock. `ring` lists the members in ring order
/// (for a stale ring it includes offline members, who drop what they get).
fn ring_send(
    clock: &mut Clock,
    ring: &[usize],
    online: &[bool],
    sender: usize,
    per: u64,
    shared: bool,
    arrivals: &mut Vec<(usize, u64, u64)>,
) {
    let m = ring.len();
    clock.sender_bytes = 0;
    let Some(pos) = ring.iter().position(|&x| x == sender) else { return };
    if m < 2 {
        return;
    }
    let mut q: BinaryHeap<Reverse<RingEvent>> = BinaryHeap::new();
    let mut seq = 0;
    let mut got = vec![false; m];
    got[pos] = true;
    let step = |p: usize, dir: u8| if dir == 1 { (p + 1) % m } else { (p + m - 1) % m };
    // Positions the sender covers clockwise: the nearer half (pairwise bundles split by direction).
    let cw = (m - 1).div_ceil(2) as u64;
    let ccw = (m - 1) as u64 - cw;
    let dirs: Vec<(u8, u64)> = if m == 2 { vec![(1, 1)] } else { vec![(1, cw), (0, ccw)] };
    for (dir, count) in dirs {
        if !shared && count == 0 {
            continue;
        }
        let bytes = if shared { per } else { per * count };
        let t = clock.send(ring[pos], bytes, 0);
        clock.sender_bytes += bytes;
        q.push(Reverse((t, seq, step(pos, dir), dir, 1, count)));
        seq += 1;
    }
    while let Some(Reverse((t, _, at, dir, hops, left))) = q.pop() {
        let member = ring[at];
        if !online[member] || got[at] {
            // Offline in a stale ring: the message stops here. Already had it (the other
            // direction was faster): a duplicate, dropped.
            continue;
        }
        got[at] = true;
        arrivals.push((member, t, hops));
        let next = step(at, dir);
        // A bundle loses this member's ciphertext; a shared message goes on unchanged. Nobody
        // sends back to the sender, whom everyone knows to have it.
        let left = if shared { left } else { left - 1 };
        if next == pos || (!shared && left == 0) {
            continue;
        }
        let bytes = if shared { per } else { per * left };
        let t2 = clock.send(member, bytes, t);
        q.push(Reverse((t2, seq, next, dir, hops + 1, left)));
        seq += 1;
    }
}

/// A membership step's cost with everyone online: one sender simulated, times `senders`.
pub fn step_traffic(hosting: Hosting, p: &NetParams, step: &Step, seed: u64) -> Outcome {
    let group = Group::new(step.group as usize, seed);
    let one = simulate(hosting, p, &group, 0, step.send);
    Outcome {
        upload: one.upload,
        total: one.total * step.senders,
        stored: one.stored * step.senders,
        delivered_online: one.delivered_online * step.senders,
        delivered_later: one.delivered_later * step.senders,
        recipients: one.recipients * step.senders,
        max_hops: one.max_hops,
        last_arrival_us: one.last_arrival_us,
    }
}
