//! grove-tidy: the workspace's house rules, as one test (`cargo test -p grove-tidy`) that reads
//! the workspace's files, after rust-analyzer's `tidy.rs`. The library is empty; the rules are
//! in `tests/tidy.rs`: the invariants that are absences (no I/O in the protocol core, SQL only
//! in the store crates, no group secret in the server), a `//!` doc atop every module, no
//! `http://` literal in shipped code, every crate in ARCHITECTURE.md's code map, and the lint
//! attributes every library crate must carry.

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
