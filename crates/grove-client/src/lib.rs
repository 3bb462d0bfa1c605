//! grove-client: the client library behind the `grove` command.
//!
//! A profile is one identity with one SQLite state file. [`transport::Server`] speaks signed
//! HTTP to a grove server; the local store keeps identity, group state, history and cursors;
//! the profile ties them to the MLS engine of grove-proto.

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod core;
pub mod files;
pub mod known;
mod lock;
pub mod net;
pub mod olm;
pub mod profile;
pub mod proxy;
pub mod push;
pub mod store;
pub mod transport;
