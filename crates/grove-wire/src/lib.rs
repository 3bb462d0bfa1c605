//! grove-wire: the types that cross the wire between grove clients and servers.
//!
//! This crate is pure data: the JSON bodies of HTTP API v1 ([`api`]), the stable error codes
//! ([`error`]), the request-signing format ([`auth`]), the signed membership lists of
//! sender-keys rooms ([`membership`]), a room's roles, bans and rights ([`policy`]), the end-to-end encrypted content of application
//! messages ([`content`]) and the reference to an encrypted file it may carry ([`attachment`]),
//! and the binding of entries sent on the push WebSocket to their connection ([`push`]).
//! It does no I/O, never reads the clock or the OS RNG:
//! callers pass in times and keys.

pub mod api;
pub mod attachment;
pub mod auth;
pub mod b64;
pub mod content;
pub mod error;
pub mod hex;
pub mod int;
pub mod invite;
pub mod membership;
pub mod policy;
pub mod push;

mod user;

pub use error::{ApiError, ErrorCode};
pub use user::{ParseUserIdError, UserId};

/// The API version prefix of every route.
pub const API_PREFIX: &str = "/v1";
