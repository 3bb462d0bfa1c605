//! Invite links and join requests: what a server keeps so that people who were not invited can
//! ask to come into a room ([`crate::Store::request_join`]).
//!
//! A room has at most one link. The server never holds the link's secret: only the SHA-256 of
//! the token derived from it, so it can count uses and expiry, and a copy of its database
//! neither opens the link nor names the secret. A request names the asker and its home server;
//! an admin's client carries it out (an ordinary invitation) or drops it.

use grove_wire::UserId;

/// A room's invite link, as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLink {
    /// SHA-256 of the link's token (the token itself is derived from the link's secret).
    pub token_hash: [u8; 32],
    /// How many requests the link may make; `None`: no limit.
    pub max_uses: Option<u64>,
    /// Requests made with it so far.
    pub uses: u64,
    /// Unix ms after which it is refused; `None`: never.
    pub expires_at: Option<i64>,
    /// The member who made it.
    pub created_by: UserId,
    /// When, Unix ms.
    pub created_at: i64,
}

/// A request to join a room by its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Who asks.
    pub user: UserId,
    /// The asker's home server (where its key material and mailbox are), a base URL.
    pub home: String,
    /// The asker's proof that it holds the link (opaque to the server: an HMAC keyed from the
    /// link's secret, checked by the admin's client).
    pub proof: Vec<u8>,
    /// When, Unix ms.
    pub at: i64,
}

/// A room's GroupInfo for its link's holders (MLS rooms whose join rule is `link`): sealed by a
/// member under a key derived from the link's secret, which the server never sees; a holder of
/// the link opens it and joins by an external commit (grove-proto `mls::links`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkGroupInfo {
    /// The hash of the token of the link it was sealed for: once the link is reset or revoked it
    /// opens nothing, and the server hands it to nobody.
    pub token_hash: [u8; 32],
    /// The epoch of the GroupInfo.
    pub epoch: u64,
    /// The sealed GroupInfo (opaque to the server).
    pub sealed: Vec<u8>,
}

/// Whether `new` replaces `kept` ([`crate::Store::set_link_group_info`]): always for another
/// link, and for the same link unless it is of an older epoch than the one kept.
pub fn replaces(kept: Option<&LinkGroupInfo>, new: &LinkGroupInfo) -> bool {
    kept.is_none_or(|k| k.token_hash != new.token_hash || new.epoch >= k.epoch)
}

/// What [`crate::Store::request_join`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The request is kept, and the link's use counted.
    Requested,
    /// This user already has a request waiting (nothing counted).
    AlreadyRequested,
    /// The room has no link, or not this one (revoked or reset).
    NoLink,
    /// The link expired.
    Expired,
    /// The link was used as often as it may be.
    UsedUp,
    /// The room has as many waiting requests as it may keep.
    TooManyPending,
}

/// Whether the room's `link` admits a request made with `token_hash` at `now` (Unix ms): the
/// one rule every backend applies, inside the transaction that counts the use.
pub fn admits(link: Option<&RoomLink>, token_hash: &[u8; 32], now: i64) -> Result<(), JoinOutcome> {
    let Some(link) = link.filter(|l| l.token_hash == *token_hash) else { return Err(JoinOutcome::NoLink) };
    if link.expires_at.is_some_and(|at| now >= at) {
        return Err(JoinOutcome::Expired);
    }
    if link.max_uses.is_some_and(|max| link.uses >= max) {
        return Err(JoinOutcome::UsedUp);
    }
    Ok(())
}
