//! The `grove` binary, run as a user would run it.

mod client;
mod invariants;
mod senderkeys;
mod serve;
