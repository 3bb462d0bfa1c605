//! The `grove` binary, run as a user would run it.

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
