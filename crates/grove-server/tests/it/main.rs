//! grove-server scenarios, through the real router.

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod auth;
mod backup;
mod connections;
mod errors;
mod fault;
mod files;
mod files_s3;
mod hardening;
mod harness;
mod joins;
mod keys;
mod link_joins;
mod mailbox;
mod mls;
mod multi_instance;
mod ordering;
mod push;
mod removal;
mod restart;
mod resync;
mod rooms;
mod storage;
