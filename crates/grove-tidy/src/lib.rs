//! grove-tidy: the workspace's house rules, as one test (`cargo test -p grove-tidy`) that reads
//! the workspace's files, after rust-analyzer's `tidy.rs`. The library is empty; the rules are
//! in `tests/tidy.rs`: the invariants that are absences (no I/O in the protocol core, SQL only
//! in the store crates, no group secret in the server), a `//!` doc atop every module, no
//! `http://` literal in shipped code, every crate in ARCHITECTURE.md's code map, and the
//! workspace lints every crate inherits (relaxed only by the binary and the tools).
