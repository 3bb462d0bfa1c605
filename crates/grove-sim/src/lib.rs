//! grove-sim: the design note's comparison of hosting schemes × encryption schemes, measured.
//!
//! The design note behind grove argued in words: full P2P is unreliable and costs O(N) upload,
//! service-node storage costs the network, a user-hosted server scales; pairwise encryption
//! scales poorly, Sender Keys scale but lack post-compromise security and rekey at O(N²), MLS
//! gives both at O(log N). This crate puts numbers on it, for N = 10, 100, 1,000 and 10,000.
//!
//! It has three parts, kept apart so that the simulation can be checked by hand:
//! - [`measure`] runs the real cryptography once — grove-proto's MLS engine and Sender Keys,
//!   and vodozemac 0.11's Olm for pairwise (grove-proto has no Olm module yet) — and records
//!   exact byte sizes of real messages and CPU times in a [`costs::CostTable`]. MLS is measured
//!   at every N up to 1,000 in a steady-state tree (every member but the creator and one receiver
//!   has committed an update, in a seeded random order); beyond, its costs are extrapolated from a fit of the measured points
//!   and every cell that uses them is marked.
//! - [`model`] says what each encryption scheme sends and spends for a message and for adding,
//!   removing and healing a member (see its table). Those are model choices, not measurements.
//! - [`net`] simulates each hosting scheme in memory on a virtual clock (uplink bandwidth and
//!   latency), deterministically for a seed: bytes uploaded, bytes on the network, bytes stored,
//!   delivery with members offline, hops and time to the last member. [`sim`] runs the whole grid
//!   and [`report`] writes the markdown and SVG plots.
//!
//! What it does not model: CPU inside the network simulation (reported apart), downlinks,
//! packet loss, node failures, onion routing (Session), the DHT and key-directory lookups, and
//! metadata protection. Every figure is per message or per operation, not per second.
//!
//! Model choices, also written in the report:
//! - Offline members are a seeded random 10 % or 50 % of the members other than the sender,
//!   drawn anew for each of 20 messages; "after return" counts what they can still get.
//! - The ring re-links around offline members (they miss what is sent meanwhile); a second
//!   delivery row shows the ring before it has re-linked (an offline member stops the message).
//! - Swarms have k = 5 replicas, like Session/Oxen; the server keeps one copy (store-and-forward).
//! - MLS add/remove/heal send one commit each (plus Welcome and tree to a joiner); Sender Keys
//!   rekey is every remaining member sending its new chain pairwise to every other, O(N²).

// The workspace denies unwrap/expect/panic and warns on unreachable `pub`; a tool relaxes them:
// a failed run is a failed measurement, and its `pub` items serve its own report.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod costs;
pub mod measure;
pub mod model;
pub mod net;
pub mod report;
pub mod sim;
