//! MLS link joins: a holder of a room's invite link comes in by an external commit, with no
//! member online (grove-proto `mls::links`).
//!
//! - `PUT /v1/rooms/{room}/link/group-info`: a member who knows the link's secret keeps the
//!   room's GroupInfo here, sealed under a key derived from the secret: the server cannot read
//!   it. Kept only for the room's current link (the member shows the hash of its token) and
//!   never replaced by an older epoch's.
//! - `POST /v1/rooms/{room}/link/group-info`: a link holder (who shows the token) fetches it.
//!   Refused like a join request (`link_invalid`, `link_expired`, `link_used_up`, the join-request
//!   rate limits when it is handed out,
//!   `not_allowed` for a banned asker or an invite-only room); `not_found` when the way in is a
//!   join request instead (the join rule is `approval`, or no member kept a GroupInfo yet).
//! - `POST /v1/rooms/{room}/link/join`: the holder posts its external commit with the token;
//!   the hub takes it only as a link join ([`grove_proto::mls::hub::HubGroup::check_link_join`]),
//!   the link must admit it, and its use is counted once the commit is in the log.

use std::net::IpAddr;

use grove_proto::policy::may_request_join;
use grove_store::LinkGroupInfo;
use grove_wire::api::{
    AppendEntry, Appended, EntryKind, LinkGroupInfoKept, LinkJoin, LinkToken, PutLinkGroupInfo, RoomMode,
    SealedGroupInfo,
};
use grove_wire::policy::JoinRule;
use grove_wire::UserId;

use crate::error::{AppResult, LimitRefusal, RequestRefusal, RoomRefusal};
use crate::joins::refusal;
use crate::rooms::{not_allowed, RoomHandle};
use crate::state::AppState;

/// The largest sealed GroupInfo kept (a GroupInfo carries the ratchet tree: about 250 bytes a
/// member; the room's member limit bounds it too).
fn max_sealed(state: &AppState) -> u64 {
    state.0.config.limits.max_entry_bytes
}

fn token_hash_of(token: &[u8]) -> AppResult<[u8; 32]> {
    if token.len() != 32 {
        return Err(RequestRefusal::LinkToken.into());
    }
    Ok(grove_wire::invite::token_hash(token))
}

/// The room, which must be an MLS room.
fn mls_only(room: &RoomHandle) -> AppResult<()> {
    if room.mode != RoomMode::Mls {
        return Err(RoomRefusal::LinkJoinsOnlyMls.into());
    }
    Ok(())
}

/// Whether the room's current link is the one with `token_hash`, admitting a join now.
async fn check_link(state: &AppState, room: &RoomHandle, token_hash: &[u8; 32]) -> AppResult<()> {
    grove_store::joins::admits(state.0.store.room_link(room.id).await?.as_ref(), token_hash, state.now())
        .map_err(refusal)
}

/// Whether the room lets `user` in by its link at once.
async fn check_policy(room: &RoomHandle, user: &UserId) -> AppResult<()> {
    let policy = room.policy().await.ok_or_else(|| {
        not_allowed(grove_proto::policy::PolicyError::Invalid(
            "a room created before rooms had policies takes members by invitation only",
        ))
    })?;
    match may_request_join(&policy, user).map_err(not_allowed)? {
        JoinRule::Link => Ok(()),
        // Not a refusal: the way in is a request.
        _ => Err(RoomRefusal::JoinByApproval.into()),
    }
}

/// `PUT /v1/rooms/{room}/link/group-info`.
pub(crate) async fn put_group_info(
    state: &AppState,
    name: &str,
    user: UserId,
    body: PutLinkGroupInfo,
) -> AppResult<LinkGroupInfoKept> {
    let room = state.0.rooms.get_for_member(state, name, &user).await?;
    mls_only(&room)?;
    let token_hash = <[u8; 32]>::try_from(body.token_hash.as_slice()).map_err(|_| RequestRefusal::LinkTokenHash)?;
    let max = max_sealed(state);
    if body.sealed.len() as u64 > max {
        return Err(RoomRefusal::GroupInfoTooLarge { max }.into());
    }
    if state.0.store.room_link(room.id).await?.is_none_or(|l| l.token_hash != token_hash) {
        return Err(RoomRefusal::LinkInvalid.into());
    }
    let kept = state
        .0
        .store
        .set_link_group_info(room.id, LinkGroupInfo { token_hash, epoch: body.epoch, sealed: body.sealed })
        .await?;
    tracing::debug!(room = name, epoch = body.epoch, kept, "a sealed GroupInfo for the link");
    Ok(LinkGroupInfoKept { kept })
}

/// `POST /v1/rooms/{room}/link/group-info`.
pub(crate) async fn group_info(
    state: &AppState,
    name: &str,
    user: UserId,
    ip: Option<IpAddr>,
    body: LinkToken,
) -> AppResult<SealedGroupInfo> {
    let room = state.0.rooms.get(state, name).await?;
    mls_only(&room)?;
    let token_hash = token_hash_of(&body.token)?;
    check_link(state, &room, &token_hash).await?;
    if room.has_member(&user).await {
        return Err(RoomRefusal::AlreadyMember.into());
    }
    check_policy(&room, &user).await?;
    match state.0.store.link_group_info(room.id).await? {
        Some(info) if info.token_hash == token_hash => {
            // Counted like a join request only when it is handed out: a holder told to ask
            // instead (`not_found`) then asks within the same limits.
            state.0.quotas.join(ip, room.id)?;
            Ok(SealedGroupInfo { epoch: info.epoch, sealed: info.sealed })
        }
        _ => Err(RoomRefusal::NoLinkGroupInfo.into()),
    }
}

/// `POST /v1/rooms/{room}/link/join`.
pub(crate) async fn join(state: &AppState, name: &str, user: UserId, body: LinkJoin) -> AppResult<Appended> {
    let room = state.0.rooms.get(state, name).await?;
    mls_only(&room)?;
    let token_hash = token_hash_of(&body.token)?;
    let max = state.0.config.limits.max_entry_bytes;
    if body.commit.len() as u64 > max {
        return Err(LimitRefusal::EntryTooLarge { max }.into());
    }
    let entry = AppendEntry { kind: EntryKind::Commit, epoch: body.epoch, body: body.commit };
    let appended = crate::rooms::append_link_join(state, &room, user, entry, token_hash).await?;
    tracing::info!(room = name, seq = appended.seq, "a link holder joined by an external commit");
    Ok(appended)
}
