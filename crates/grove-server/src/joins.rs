//! Invite links and join requests: how someone who was not invited asks to come into a room.
//!
//! A member whose role may change the room's settings sets the room's one link (a reset
//! replaces it) or revokes it; the server keeps only the SHA-256 of the link's token
//! (`grove_wire::invite`), counts its uses and checks its expiry. A holder of the link asks to
//! join (`POST /v1/rooms/{room}/joins`): refused when the room's policy is invite-only or bans
//! the asker (`grove_proto::policy::may_request_join`, the rule the clients apply too), rate
//! limited per address and per room, and capped in how many wait per room. The request only
//! waits: an admin's client carries it out as an ordinary invitation (automatically under the
//! `link` join rule, on an admin's decision under `approval`), and that invitation is judged by
//! the room's policy like any other, so a ban decided meanwhile still keeps the asker out.

use std::net::IpAddr;

use grove_proto::policy::{may_change_settings, may_invite, may_request_join, PolicyError};
use grove_store::{JoinOutcome, JoinRequest, RoomLink};
use grove_wire::api::{AskToJoin, Deleted, JoinAsked, JoinRequestItem, JoinRequests, RoomLinkInfo, SetRoomLink};
use grove_wire::policy::RoomPolicy;
use grove_wire::UserId;

use crate::error::{AppError, AppResult, LimitRefusal, RequestRefusal, RoomRefusal};
use crate::rooms::{not_allowed, RoomHandle};
use crate::state::AppState;

/// The longest home-server URL a request may name.
const MAX_HOME_CHARS: usize = 256;

fn no_policy() -> AppError {
    not_allowed(PolicyError::Invalid("a room created before rooms had policies takes members by invitation only"))
}

/// The room's policy, for `user`, a member who must hold the right `allowed` checks.
async fn policy_for(
    room: &RoomHandle,
    user: &UserId,
    allowed: fn(&RoomPolicy, &UserId) -> bool,
    action: &'static str,
) -> AppResult<RoomPolicy> {
    let policy = room.policy().await.ok_or_else(no_policy)?;
    if !allowed(&policy, user) {
        return Err(RoomRefusal::RoleTooLow { action, role: policy.role_of(user) }.into());
    }
    Ok(policy)
}

/// `POST /v1/rooms/{room}/link`.
pub(crate) async fn set_link(state: &AppState, name: &str, user: UserId, body: SetRoomLink) -> AppResult<RoomLinkInfo> {
    let room = state.0.rooms.get_for_member(state, name, &user).await?;
    policy_for(&room, &user, may_change_settings, "manage its invite link").await?;
    let token_hash = <[u8; 32]>::try_from(body.token_hash.as_slice()).map_err(|_| RequestRefusal::LinkTokenHash)?;
    if body.max_uses == Some(0) {
        return Err(RequestRefusal::LinkMaxUses.into());
    }
    let now = state.now();
    // A time already past is taken as said: the link opens nothing (its requests get
    // `link_expired`), as it would a moment after being set.
    let expires_at = match body.expires_at {
        None => None,
        Some(at) => Some(i64::try_from(at).map_err(|_| RequestRefusal::LinkExpiresAt)?),
    };
    let link = RoomLink { token_hash, max_uses: body.max_uses, uses: 0, expires_at, created_by: user, created_at: now };
    state.0.store.set_room_link(room.id, Some(link)).await?;
    tracing::info!(room = name, "invite link set");
    Ok(RoomLinkInfo { max_uses: body.max_uses, uses: 0, expires_at: body.expires_at, created_by: user })
}

/// `DELETE /v1/rooms/{room}/link`.
pub(crate) async fn revoke_link(state: &AppState, name: &str, user: UserId) -> AppResult<Deleted> {
    let room = state.0.rooms.get_for_member(state, name, &user).await?;
    policy_for(&room, &user, may_change_settings, "manage its invite link").await?;
    let existed = state.0.store.room_link(room.id).await?.is_some();
    state.0.store.set_room_link(room.id, None).await?;
    tracing::info!(room = name, existed, "invite link revoked");
    Ok(Deleted { existed })
}

/// Whether `home` reads as a server's base URL (what an admin's client will reach).
fn home_ok(home: &str) -> bool {
    let rest = home.split_once("://").filter(|(scheme, _)| matches!(*scheme, "https" | "http")).map(|(_, r)| r);
    home.chars().count() <= MAX_HOME_CHARS
        && rest.is_some_and(|r| {
            !r.is_empty()
                && !r.contains(['/', '@', '?', '#'])
                && !r.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

/// `POST /v1/rooms/{room}/joins`.
pub(crate) async fn ask(
    state: &AppState,
    name: &str,
    user: UserId,
    ip: Option<IpAddr>,
    body: AskToJoin,
) -> AppResult<JoinAsked> {
    let room = state.0.rooms.get(state, name).await?;
    if body.token.len() != 32 || body.proof.len() != 32 {
        return Err(RequestRefusal::JoinTokenProof.into());
    }
    if !home_ok(&body.home) {
        return Err(RequestRefusal::JoinHome.into());
    }
    state.0.quotas.join(ip, room.id)?;
    let token_hash = grove_wire::invite::token_hash(&body.token);
    let now = state.now();
    // The link first, so that without it nothing more of the room is told.
    if let Err(refused) = grove_store::joins::admits(state.0.store.room_link(room.id).await?.as_ref(), &token_hash, now)
    {
        return Err(refusal(refused));
    }
    if room.has_member(&user).await {
        return Err(RoomRefusal::AlreadyMember.into());
    }
    let policy = room.policy().await.ok_or_else(no_policy)?;
    let join = may_request_join(&policy, &user).map_err(not_allowed)?;
    let request = JoinRequest { user, home: body.home, at: now, proof: body.proof };
    let max = state.0.config.limits.pending_joins_per_room;
    match state.0.store.request_join(room.id, token_hash, request, max).await? {
        JoinOutcome::Requested | JoinOutcome::AlreadyRequested => {
            tracing::info!(room = name, join = join.as_str(), "a join request waits");
            Ok(JoinAsked { join })
        }
        refused => Err(refusal(refused)),
    }
}

pub(crate) fn refusal(outcome: JoinOutcome) -> AppError {
    match outcome {
        JoinOutcome::Expired => RoomRefusal::LinkExpired.into(),
        JoinOutcome::UsedUp => RoomRefusal::LinkUsedUp.into(),
        JoinOutcome::TooManyPending => LimitRefusal::JoinQueueFull.into(),
        JoinOutcome::NoLink | JoinOutcome::Requested | JoinOutcome::AlreadyRequested => RoomRefusal::LinkInvalid.into(),
    }
}

/// `GET /v1/rooms/{room}/joins`: the waiting requests of users who are neither members nor
/// banned now.
pub(crate) async fn list(state: &AppState, name: &str, user: UserId) -> AppResult<JoinRequests> {
    let room = state.0.rooms.get_for_member(state, name, &user).await?;
    let policy = policy_for(&room, &user, may_invite, "see join requests").await?;
    let mut requests = Vec::new();
    for r in state.0.store.join_requests(room.id).await? {
        if !room.has_member(&r.user).await && !policy.is_banned(&r.user) {
            requests.push(JoinRequestItem { user: r.user, home: r.home, at: r.at, proof: r.proof });
        }
    }
    Ok(JoinRequests { requests })
}

/// `DELETE /v1/rooms/{room}/joins/{user}`: a request carried out or denied.
pub(crate) async fn drop_request(state: &AppState, name: &str, user: UserId, target: UserId) -> AppResult<Deleted> {
    let room = state.0.rooms.get_for_member(state, name, &user).await?;
    policy_for(&room, &user, may_invite, "decide join requests").await?;
    Ok(Deleted { existed: state.0.store.delete_join_request(room.id, &target).await? })
}
