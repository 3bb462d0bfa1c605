//! The `grove` binary, run as a user would run it.

mod invariants;
mod serve;
