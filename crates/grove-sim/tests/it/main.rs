//! grove-sim's scenarios: the accounting checked by hand on small groups, determinism, and
//! what offline members get under each hosting scheme.

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounting;
mod determinism;
mod offline;
mod report;

use grove_sim::costs::{CostTable, MlsCosts, MlsPoint, OlmCosts, SenderKeyCosts};
use grove_sim::net::NetParams;

/// Round numbers, so that every figure can be worked out by hand.
pub fn fixed_costs() -> CostTable {
    let mls = |n: u64, tree: u64| MlsPoint {
        n,
        message_bytes: 300,
        encrypt_us: 100.0,
        decrypt_us: 100.0,
        update_bytes: 1000,
        update_us: 1000.0,
        remove_bytes: 900,
        remove_us: 900.0,
        add_bytes: 500,
        add_us: 500.0,
        process_us: 400.0,
        welcome_bytes: 360,
        tree_bytes: tree,
        join_us: 800.0,
    };
    CostTable {
        olm: OlmCosts {
            message_bytes: 150,
            notice_bytes: 150,
            distribution_bytes: 300,
            prekey_bytes: 250,
            encrypt_us: 10.0,
            decrypt_us: 20.0,
            session_out_us: 100.0,
            session_in_us: 200.0,
        },
        sender_keys: SenderKeyCosts {
            message_bytes: 200,
            distribution_bytes: 120,
            encrypt_us: 30.0,
            decrypt_us: 50.0,
            new_chain_us: 40.0,
            install_us: 5.0,
        },
        mls: MlsCosts { points: vec![mls(3, 700), mls(4, 900)] },
    }
}

/// Members send 1 byte/µs, the server and service nodes 10 bytes/µs, 1 ms per link, k = 2.
pub fn params() -> NetParams {
    NetParams { member_bytes_per_s: 1e6, infra_bytes_per_s: 1e7, latency_us: 1000, swarm_k: 2 }
}
