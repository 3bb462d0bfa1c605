//! Sender Keys per-message cost (issue 4, item 7, first part): encrypt + sign on the sender,
//! verify + decrypt on a receiver, for a 100-byte message — independent of group size by
//! construction (one AEAD and one signature per message), measured here beside MLS's figure.

use std::time::Instant;

use anyhow::{anyhow, Result};
use grove_proto::identity::Identity;
use grove_proto::senderkeys::{ReceiverChain, SenderChain};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Measures `n` messages of `size` bytes; prints a small table.
pub fn run(n: usize, size: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let alice = Identity::from_secret_bytes([1; 32]).user_id();
    let mut chain = SenderChain::new(&mut rng, "bench", 1, alice, 1_800_000_000).map_err(|e| anyhow!("{e}"))?;
    let mut receiver = ReceiverChain::from_distribution(&chain.distribution());
    let plaintext = vec![0x42u8; size];
    // Warm up.
    for _ in 0..100 {
        let m = chain.encrypt(&plaintext).map_err(|e| anyhow!("{e}"))?;
        receiver = receiver.decrypt(&m).map_err(|e| anyhow!("{e}"))?.1;
    }
    let mut messages = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        messages.push(chain.encrypt(&plaintext).map_err(|e| anyhow!("{e}"))?);
    }
    let send = t.elapsed() / n as u32;
    let t = Instant::now();
    for m in &messages {
        receiver = receiver.decrypt(m).map_err(|e| anyhow!("{e}"))?.1;
    }
    let recv = t.elapsed() / n as u32;
    // Baseline, same run: one bare Ed25519 signature over a message of the same length.
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let t = Instant::now();
    for m in &messages {
        std::hint::black_box(ed25519_dalek::Signer::sign(&key, std::hint::black_box(&m[..m.len() - 64])));
    }
    let sign = t.elapsed() / n as u32;
    println!("| Sender Keys, {size}-byte message, {n} messages | per message |");
    println!("|---|---|");
    println!("| encrypt + sign (sender) | {:.1} µs |", send.as_secs_f64() * 1e6);
    println!("| verify + decrypt (receiver, state returned, not persisted) | {:.1} µs |", recv.as_secs_f64() * 1e6);
    println!(
        "| baseline: bare Ed25519 sign of the same bytes | {:.1} µs (send = {:.2}× it) |",
        sign.as_secs_f64() * 1e6,
        send.as_secs_f64() / sign.as_secs_f64()
    );
    println!("| message size on the wire | {} B |", messages[0].len());
    println!(
        "| target: send ≤ 25 µs whatever N | {} |",
        if send.as_secs_f64() <= 25e-6 { "met" } else { "**missed**" }
    );
    Ok(())
}
