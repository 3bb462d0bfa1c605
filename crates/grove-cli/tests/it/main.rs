//! The `grove` binary, run as a user would run it.

mod client;
mod invariants;
mod multi_instance;
mod senderkeys;
mod serve;
