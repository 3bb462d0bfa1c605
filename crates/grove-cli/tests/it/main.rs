//! The `grove` binary, run as a user would run it.

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod chat;
mod client;
mod files;
mod multi_instance;
mod privacy;
mod processes;
mod senderkeys;
mod serve;
mod tls;
