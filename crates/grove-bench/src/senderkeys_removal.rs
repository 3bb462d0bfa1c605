//! The cost of a removal in a Sender Keys room of N members (issue 4, item 7, second part),
//! beside the MLS remove commit of grove's engine at the same N, measured in the same process.
//!
//! After a removal, each of the N−1 remaining members makes a fresh chain and sends its
//! distribution over Olm to each of the N−2 others: (N−1)(N−2) pairwise messages in all. Members
//! work in parallel on their own devices, so the group's wall time is one member's critical
//! path: rotate + N−2 Olm encryptions (sender side) and then N−2 Olm decryptions + chain
//! insertions (receiver side). Both are measured for real on one member with N−2 established
//! Olm sessions (network and storage excluded). Bytes are the mailbox bodies exactly as
//! grove-client deposits them.
//!
//! MLS: the remover's `commit_remove` on a group of N made by one commit adding N−1 members
//! (a bare tree: MLS's costliest shape for a commit), its size, and the bytes all N−2 receivers
//! download (one commit each). Zero pairwise messages.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use grove_client::profile::MailMessage;
use grove_client::OlmDevice;
use grove_proto::identity::{Identity, UserId};
use grove_proto::mls::engine::MlsEngine;
use grove_proto::senderkeys::room::SkEngine;
use grove_proto::senderkeys::{RotationPolicy, SenderChain};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROOM: &str = "http://bench:1/rooms/removal";

struct SkFigures {
    pairwise_per_member: usize,
    bytes_per_member: usize,
    sender: Duration,
    receiver: Duration,
}

/// Sender Keys removal at `n` members, as seen by one remaining member.
fn sk_removal(n: usize, rng: &mut StdRng) -> Result<SkFigures> {
    let ident = |rng: &mut StdRng| Identity::from_secret_bytes(rng.gen());
    let me = ident(rng);
    let victim = ident(rng);
    // The N−2 other remaining members, each with an Olm account.
    let peers: Vec<Identity> = (0..n.saturating_sub(2)).map(|_| ident(rng)).collect();
    let mut my_device = OlmDevice::new(me.clone(), "bench:1");
    let mut peer_devices: Vec<OlmDevice> = peers.iter().map(|p| OlmDevice::new(p.clone(), "bench:1")).collect();
    // Sessions both ways, established (past the pre-key stage), from each peer's fallback key.
    for (p, dev) in peers.iter().zip(peer_devices.iter_mut()) {
        let (_, fallback) = dev.new_keys(0, true);
        my_device.start_session(&p.user_id(), &fallback.context("no fallback key")?).map_err(|e| anyhow!("{e}"))?;
        let hello = my_device.encrypt(&p.user_id(), b"hello").map_err(|e| anyhow!("{e}"))?;
        dev.decrypt(&me.user_id(), &hello).map_err(|e| anyhow!("{e}"))?;
        let back = dev.encrypt(&me.user_id(), b"hi").map_err(|e| anyhow!("{e}"))?;
        my_device.decrypt(&p.user_id(), &back).map_err(|e| anyhow!("{e}"))?;
    }
    // The room at N members with `me` as admin; then the removal.
    let mut engine = SkEngine::new(me.user_id(), RotationPolicy::default());
    let _ = engine.create_room(ROOM, "removal")?;
    let mut everyone: Vec<UserId> = peers.iter().map(|p| p.user_id()).collect();
    everyone.push(victim.user_id());
    let m = engine.next_membership(ROOM, me.signing_key(), &everyone, &[])?;
    let _ = engine.apply_membership(ROOM, &m)?;
    let m = engine.next_membership(ROOM, me.signing_key(), &[], &[victim.user_id()])?;
    let _ = engine.apply_membership(ROOM, &m)?;

    // Sender side: rotate, then one Olm message per remaining member.
    let t = Instant::now();
    let (rotation, _) = engine.rotate(ROOM, &mut StdRng::seed_from_u64(rng.gen()), 1_800_000_000)?;
    let mut bodies = Vec::with_capacity(rotation.distributions.len());
    for (user, dist) in &rotation.distributions {
        let payload =
            serde_json::to_vec(&serde_json::json!({"type": "sender_key", "dist": grove_wire::b64::encode(dist)}))?;
        let envelope = my_device.encrypt(user, &payload).map_err(|e| anyhow!("{e}"))?;
        bodies.push(serde_json::to_vec(&MailMessage::Pairwise { envelope })?);
    }
    let sender = t.elapsed();
    let bytes_per_member = bodies.iter().map(|b| b.len()).sum();

    // Receiver side: every other remaining member's distribution reaches `me`.
    let mut incoming = Vec::with_capacity(peers.len());
    for (p, dev) in peers.iter().zip(peer_devices.iter_mut()) {
        // The peer's fresh chain at the new version (its rotation minus the other N−3 copies).
        let chain =
            SenderChain::new(&mut StdRng::seed_from_u64(rng.gen()), ROOM, m.version, p.user_id(), 1_800_000_000)?;
        let dist = chain.distribution().to_bytes();
        let payload =
            serde_json::to_vec(&serde_json::json!({"type": "sender_key", "dist": grove_wire::b64::encode(&dist)}))?;
        let envelope = dev.encrypt(&me.user_id(), &payload).map_err(|e| anyhow!("{e}"))?;
        incoming.push((p.user_id(), serde_json::to_vec(&MailMessage::Pairwise { envelope })?));
    }
    let t = Instant::now();
    for (from, body) in &incoming {
        let MailMessage::Pairwise { envelope } = serde_json::from_slice(body)? else {
            return Err(anyhow!("not a pairwise message"));
        };
        let plaintext = my_device.decrypt(from, &envelope).map_err(|e| anyhow!("{e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&plaintext)?;
        let dist = grove_wire::b64::decode(v["dist"].as_str().context("no dist")?).map_err(|e| anyhow!("{e}"))?;
        let _ = engine.receive_distribution(from, &dist)?;
    }
    let receiver = t.elapsed();
    if engine.receivers().len() != peers.len() {
        return Err(anyhow!("{} chains accepted, {} expected", engine.receivers().len(), peers.len()));
    }
    Ok(SkFigures { pairwise_per_member: rotation.distributions.len(), bytes_per_member, sender, receiver })
}

/// MLS: the remove commit on a bare group of `n`: (time, commit bytes).
fn mls_removal(n: usize, rng: &mut StdRng) -> Result<(Duration, usize)> {
    let engine = |rng: &mut StdRng| {
        let id = Identity::from_secret_bytes(rng.gen());
        (id.user_id(), MlsEngine::with_rng(id, StdRng::seed_from_u64(rng.gen())))
    };
    let (_, mut creator) = engine(rng);
    let (g, _, _) = creator.create_group()?;
    let mut kps = Vec::with_capacity(n - 1);
    let mut users = Vec::with_capacity(n - 1);
    for _ in 1..n {
        let (u, mut e) = engine(rng);
        let (mut kp, _, _) = e.key_packages(1, false)?;
        kps.push(kp.pop().context("no KeyPackage")?);
        users.push(u);
    }
    let _ = creator.commit_add(&g, &kps)?;
    let _ = creator.apply_pending(&g)?;
    let t = Instant::now();
    let (pending, _) = creator.commit_remove(&g, &users[..1])?;
    Ok((t.elapsed(), pending.commit.len()))
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

/// Prints the removal table for `sizes`.
pub fn run(sizes: &[usize], with_mls: bool) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(11);
    println!();
    println!("| N | SK pairwise msgs (group) | SK bytes (group) | SK member: rotate + encrypt | SK member: decrypt + accept | SK group wall time (members in parallel) | MLS remove commit (bare tree) | MLS commit | MLS bytes (group) | SK wall / MLS commit |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        if n < 3 {
            continue;
        }
        eprintln!("removal at N={n}: sender keys");
        let sk = sk_removal(n, &mut rng)?;
        let group_msgs = (n - 1) * sk.pairwise_per_member;
        let group_bytes = (n - 1) as f64 * sk.bytes_per_member as f64;
        let wall = sk.sender + sk.receiver;
        let mls = if with_mls {
            eprintln!("removal at N={n}: MLS");
            let (t, b) = mls_removal(n, &mut rng)?;
            // One commit, downloaded by each of the N−2 remaining receivers.
            format!(
                "{} | {} | {} | {:.2}",
                ms(t),
                bytes(b as f64),
                bytes(b as f64 * (n - 2) as f64),
                wall.as_secs_f64() / t.as_secs_f64()
            )
        } else {
            "– | – | – | –".to_string()
        };
        println!(
            "| {n} | {group_msgs} | {} | {} | {} | {} | {mls} |",
            bytes(group_bytes),
            ms(sk.sender),
            ms(sk.receiver),
            ms(wall),
        );
    }
    Ok(())
}
