//! Every hosting scheme × every encryption scheme at N = 3 and N = 4, worked out by hand from
//! the fixed costs (`fixed_costs`: Olm message 150 B, pre-key 250 B, distribution 300 B; Sender
//! Keys message 200 B; MLS message 300 B, remove commit 900 B, add 500 B, Welcome 360 B, tree
//! 700 B at N = 3) and the fixed network (`params`: members 1 B/µs, infrastructure 10 B/µs,
//! 1 ms per link, swarms of 2).

use grove_sim::model::{scheme_costs, Encryption, Send};
use grove_sim::net::{simulate, Group, Hosting, Outcome};
use grove_sim::sim::{op_traffic, OpKind};

use crate::{fixed_costs, params};

/// (upload, total, stored, delivered online, most hops, last arrival µs)
type Expect = (u64, u64, u64, u64, u64, u64);

fn check(hosting: Hosting, n: usize, send: Send, expect: Expect) {
    // Ring order 0, 1, …, n−1: member 1 is the sender's clockwise neighbour.
    let group = Group::with_ring((0..n).collect()).unwrap();
    let o: Outcome = simulate(hosting, &params(), &group, 0, send);
    let got = (o.upload, o.total, o.stored, o.delivered_online, o.max_hops, o.last_arrival_us);
    assert_eq!(got, expect, "{hosting:?}, N={n}, {send:?}");
    let recipients = match send {
        Send::Direct { count, .. } => count,
        _ => n as u64 - 1,
    };
    assert_eq!(o.recipients, recipients);
}

#[test]
fn a_message_in_a_group_of_three_costs_what_the_hand_count_says() {
    let (mls, sk, pw) = (Send::Shared(300), Send::Shared(200), Send::PerMember(150));
    // Mesh: one copy per peer, one after the other on the sender's 1 B/µs uplink.
    check(Hosting::Mesh, 3, mls, (600, 600, 0, 2, 1, 1600));
    check(Hosting::Mesh, 3, sk, (400, 400, 0, 2, 1, 1400));
    check(Hosting::Mesh, 3, pw, (300, 300, 0, 2, 1, 1300));
    // Ring of 3: both neighbours get it from the sender; each forwards it to the other, who
    // already has it: 4 transmissions, 2 of them duplicates.
    check(Hosting::Ring, 3, mls, (600, 1200, 0, 2, 1, 1600));
    check(Hosting::Ring, 3, sk, (400, 800, 0, 2, 1, 1400));
    // A pairwise bundle: one ciphertext each way, nothing left to forward.
    check(Hosting::Ring, 3, pw, (300, 300, 0, 2, 1, 1300));
    // Server: one upload (300 µs + 1 ms), stored once, then 30 µs per copy at 10 B/µs + 1 ms.
    check(Hosting::Server, 3, mls, (300, 900, 300, 2, 2, 2360));
    check(Hosting::Server, 3, sk, (200, 600, 200, 2, 2, 2240));
    check(Hosting::Server, 3, pw, (300, 600, 300, 2, 2, 2330));
    // Swarm of 2: upload, one replication, each member served by replica `member mod 2`
    // (member 1 by the replica, which has it at 2330 µs; member 2 by the first node).
    check(Hosting::Swarm, 3, mls, (300, 1200, 600, 2, 2, 3360));
    check(Hosting::Swarm, 3, sk, (200, 800, 400, 2, 2, 3240));
    // Pairwise: each ciphertext to the recipient's own swarm (2 copies stored each).
    check(Hosting::Swarm, 3, pw, (300, 900, 600, 2, 2, 2330));
}

#[test]
fn a_message_in_a_group_of_four_costs_what_the_hand_count_says() {
    let (mls, sk, pw) = (Send::Shared(300), Send::Shared(200), Send::PerMember(150));
    check(Hosting::Mesh, 4, mls, (900, 900, 0, 3, 1, 1900));
    check(Hosting::Mesh, 4, sk, (600, 600, 0, 3, 1, 1600));
    check(Hosting::Ring, 4, sk, (400, 1000, 0, 3, 2, 2400));
    check(Hosting::Server, 4, sk, (200, 800, 200, 3, 2, 2260));
    check(Hosting::Swarm, 4, sk, (200, 1000, 400, 3, 2, 3260));
    check(Hosting::Mesh, 4, pw, (450, 450, 0, 3, 1, 1450));
    // Ring 0-1-2-3: 0→1, 0→3, 1→2 (first, at 2600 µs), 3→2 (duplicate), 2→3 (duplicate).
    check(Hosting::Ring, 4, mls, (600, 1500, 0, 3, 2, 2600));
    // Bundle: two ciphertexts clockwise (300 B), one counter-clockwise; member 1 strips its own
    // and forwards 150 B to member 2.
    check(Hosting::Ring, 4, pw, (450, 600, 0, 3, 2, 2450));
    check(Hosting::Server, 4, mls, (300, 1200, 300, 3, 2, 2390));
    check(Hosting::Server, 4, pw, (450, 900, 450, 3, 2, 2495));
    // Swarm of 2: members 1 and 3 from the replica (2330 → 3360, 3390), member 2 from the first
    // node. Pairwise: each recipient's swarm, the last ciphertext leaves the sender at 450 µs.
    check(Hosting::Swarm, 4, mls, (300, 1500, 600, 3, 2, 3390));
    check(Hosting::Swarm, 4, pw, (450, 1350, 900, 3, 2, 2480));
}

/// (network bytes through the server, through the mesh, through the swarm, CPU µs)
fn op(e: Encryption, n: u64, k: OpKind) -> (u64, u64, u64, f64) {
    let s = scheme_costs(&fixed_costs(), e, n).unwrap();
    let p = params();
    let t = |h| op_traffic(h, &p, k.of(&s), 1).total;
    (t(Hosting::Server), t(Hosting::Mesh), t(Hosting::Swarm), k.of(&s).cpu_us)
}

#[test]
fn membership_changes_in_a_group_of_three_cost_what_the_hand_count_says() {
    // MLS remove: a 900 B commit to 2 others. CPU: 900 + 2 × 400.
    assert_eq!(op(Encryption::Mls, 3, OpKind::Remove), (2700, 1800, 3600, 1700.0));
    // MLS add: 500 B commit to 2 others; Welcome + tree (360 + 700) to the newcomer.
    // Server: 500 + 2·500 + 2·1060. CPU: 500 + 2 × 400 + 800 (join).
    assert_eq!(op(Encryption::Mls, 3, OpKind::Add), (3620, 1000 + 1060, 2000 + 3 * 1060, 2100.0));
    // MLS heal: a 1000 B update commit to 2 others.
    assert_eq!(op(Encryption::Mls, 3, OpKind::Heal), (3000, 2000, 4000, 1800.0));
    // Sender Keys remove: each of the 2 who stay sends a new chain (300 B in Olm) to the other.
    // CPU: 2 new chains (40) + 2 × (Olm encrypt 10 + decrypt 20 + install 5).
    assert_eq!(op(Encryption::SenderKeys, 3, OpKind::Remove), (1200, 600, 1800, 150.0));
    // Sender Keys heal: all 3 send to the 2 others: 6 distributions.
    assert_eq!(op(Encryption::SenderKeys, 3, OpKind::Heal), (3600, 1800, 5400, 330.0));
    // Sender Keys add: notice (200 B shared), newcomer → 3 members (300 B + 100 B pre-key
    // overhead each), 3 members → newcomer (300 B each).
    // Server: 600 + 2400 + 1800. CPU: 30 + 2·50 + 40 + 3·(100 + 200 + 5) + 3·35.
    assert_eq!(op(Encryption::SenderKeys, 3, OpKind::Add).0, 4800);
    assert_eq!(op(Encryption::SenderKeys, 3, OpKind::Add).3, 1190.0);
    // Pairwise add: 150 B notice to 2 others; 3 pre-key messages (250 B) from the newcomer.
    // CPU: 2 × (10 + 20) + 3 × (100 + 200).
    assert_eq!(op(Encryption::Pairwise, 3, OpKind::Add), (2100, 1050, 600 + 300 + 2250, 960.0));
    // Pairwise remove: the notice to the 1 who stays. No rekey.
    assert_eq!(op(Encryption::Pairwise, 3, OpKind::Remove), (300, 150, 450, 30.0));
    // Pairwise heal: nothing sent (the Double Ratchet heals with traffic).
    let s = scheme_costs(&fixed_costs(), Encryption::Pairwise, 3).unwrap();
    assert!(s.heal.by_traffic && s.heal.steps.is_empty());
    assert_eq!(op(Encryption::Pairwise, 3, OpKind::Heal), (0, 0, 0, 0.0));
}

#[test]
fn membership_changes_in_a_group_of_four_cost_what_the_hand_count_says() {
    // Sender Keys remove: 3 stay, each sends to 2: 6 × 300 B. CPU: 3 × 40 + 6 × 35.
    assert_eq!(op(Encryption::SenderKeys, 4, OpKind::Remove), (3600, 1800, 5400, 330.0));
    // Sender Keys heal: 4 × 3 distributions. CPU: 4 × 40 + 12 × 35.
    assert_eq!(op(Encryption::SenderKeys, 4, OpKind::Heal), (7200, 3600, 10800, 580.0));
    // MLS remove: 900 B to 3 others. CPU 900 + 3 × 400.
    assert_eq!(op(Encryption::Mls, 4, OpKind::Remove), (3600, 2700, 4500, 2100.0));
    // MLS add at 4: tree is 900 B. Server: 500 + 3·500 + 2·1260.
    assert_eq!(op(Encryption::Mls, 4, OpKind::Add).0, 4520);
    // Pairwise remove: notice to 2. Pairwise add: notice to 3, 4 pre-key messages.
    assert_eq!(op(Encryption::Pairwise, 4, OpKind::Remove), (600, 300, 900, 60.0));
    assert_eq!(op(Encryption::Pairwise, 4, OpKind::Add), (900 + 2000, 450 + 1000, 1350 + 3000, 1290.0));
}

#[test]
fn the_ring_relay_costs_the_same_as_the_mesh_for_one_to_one_deliveries() {
    let s = Send::Direct { count: 2, bytes: 300 };
    check(Hosting::Ring, 4, s, (600, 600, 0, 2, 1, 1600));
    check(Hosting::Mesh, 4, s, (600, 600, 0, 2, 1, 1600));
    check(Hosting::Server, 4, s, (600, 1200, 600, 2, 2, 2660));
}

#[test]
fn membership_changes_over_the_ring_relay_cost_what_the_hand_count_says() {
    let ring = |e, n, k: OpKind| {
        let s = scheme_costs(&fixed_costs(), e, n).unwrap();
        op_traffic(Hosting::Ring, &params(), k.of(&s), 1).total
    };
    // A shared message costs 4 transmissions on a ring of 3 and 5 on a ring of 4 (duplicates
    // included); a pairwise bundle one per recipient; one-to-one deliveries go direct.
    assert_eq!(ring(Encryption::Mls, 3, OpKind::Remove), 4 * 900);
    assert_eq!(ring(Encryption::Mls, 3, OpKind::Add), 4 * 500 + 1060);
    assert_eq!(ring(Encryption::Mls, 4, OpKind::Remove), 5 * 900);
    assert_eq!(ring(Encryption::Mls, 4, OpKind::Add), 5 * 500 + 1260);
    assert_eq!(ring(Encryption::SenderKeys, 3, OpKind::Remove), 2 * 300);
    assert_eq!(ring(Encryption::SenderKeys, 3, OpKind::Add), 4 * 200 + 3 * 400 + 3 * 300);
    assert_eq!(ring(Encryption::SenderKeys, 4, OpKind::Heal), 4 * 3 * 300);
    // Removing from 3 leaves a ring of 2: the notice crosses the one link once.
    assert_eq!(ring(Encryption::Pairwise, 3, OpKind::Remove), 150);
    assert_eq!(ring(Encryption::Pairwise, 4, OpKind::Remove), 2 * 150);
    assert_eq!(ring(Encryption::Pairwise, 4, OpKind::Add), 4 * 150 + 4 * 250);
}
