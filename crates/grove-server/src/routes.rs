//! HTTP handlers: parse, authenticate, call the services, answer. No storage types here
//! beyond the store trait's outcomes.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use grove_proto::mls::hub::HubGroup;
use grove_store::{CreateRoomOutcome, DepositOutcome, MailboxQuota, NewMail, NewRoom, PublishOutcome};
use grove_wire::api::{
    Ack, Acked, AppendEntry, ClaimKey, CreateRoom, Deposit, Deposited, KeyCounts, LogPage, MailboxPage,
    MembershipState, PublicRoom, PublicRooms, PublishKeys, RatchetTree, RoomCreationPolicy, RoomMode, ServerInfo,
};
use grove_wire::membership::SignedMembership;
use grove_wire::UserId;
use serde::Deserialize;

use crate::auth::{Authed, Signed};
use crate::error::{AppError, AppResult, LimitRefusal, RequestRefusal, RoomRefusal, UserRefusal};
use crate::rooms;
use crate::state::AppState;

/// `Path` with our error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub(crate) struct P<T>(pub T);

/// `Query` with our error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub(crate) struct Q<T>(pub T);

impl From<PathRejection> for AppError {
    fn from(e: PathRejection) -> Self {
        RequestRefusal::InvalidPath { text: e.body_text() }.into()
    }
}

impl From<QueryRejection> for AppError {
    fn from(e: QueryRejection) -> Self {
        RequestRefusal::InvalidQuery { text: e.body_text() }.into()
    }
}

fn parse_user(s: &str) -> AppResult<UserId> {
    s.parse().map_err(|_| RequestRefusal::InvalidUserId.into())
}

/// `ok`, or `degraded` with the reason (storage full, or below the reserve) while the server
/// still serves what it can: reads always, messages unless the storage is full.
pub(crate) async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    match state.0.metrics.storage_watch().health(&state).await {
        None => Json(serde_json::json!({ "status": "ok" })),
        Some(d) => Json(serde_json::json!({ "status": "degraded", "reason": d.reason, "message": d.message })),
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let tracked = i64::try_from(crate::quota::tracked(&state)).unwrap_or(i64::MAX);
    state.0.metrics.tracked_identities().set(tracked);
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.0.metrics.render(),
    )
}

pub(crate) async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], crate::OPENAPI)
}

pub(crate) async fn info(State(state): State<AppState>) -> Json<ServerInfo> {
    let c = &state.0.config;
    Json(ServerInfo {
        name: c.server.name.clone(),
        public_key: UserId(state.0.public_key).to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        room_creation: c.rooms.creation,
        limits: c.limits.to_wire(&c.files),
    })
}

pub(crate) async fn not_found() -> AppError {
    RequestRefusal::NoRoute.into()
}

pub(crate) async fn method_not_allowed() -> AppError {
    RequestRefusal::WrongMethod.into()
}

// ---------------------------------------------------------------- key directory

pub(crate) async fn publish_keys(
    State(state): State<AppState>,
    req: Signed<PublishKeys>,
) -> AppResult<Json<KeyCounts>> {
    let limits = &state.0.config.limits;
    if req.body.items.is_empty() {
        return Err(RequestRefusal::NoKeyItems.into());
    }
    if req.body.items.iter().any(|i| i.data.is_empty()) {
        return Err(RequestRefusal::EmptyKeyItem.into());
    }
    let max_item = state.0.config.quotas.key_item_bytes.min(limits.max_entry_bytes);
    if let Some(big) = req.body.items.iter().find(|i| i.data.len() as u64 > max_item) {
        return Err(LimitRefusal::KeyItemTooLarge { max: max_item, len: big.data.len() }.into());
    }
    match state.0.store.publish_keys(&req.user, req.body.items, limits.key_items_per_user).await? {
        PublishOutcome::Stored(counts) => Ok(Json(KeyCounts { counts })),
        PublishOutcome::LimitReached => Err(LimitRefusal::KeyLimit { max: limits.key_items_per_user }.into()),
    }
}

pub(crate) async fn key_counts(State(state): State<AppState>, Authed(user): Authed) -> AppResult<Json<KeyCounts>> {
    Ok(Json(KeyCounts { counts: state.0.store.key_counts(&user).await? }))
}

pub(crate) async fn claim_key(
    State(state): State<AppState>,
    P(owner): P<String>,
    req: Signed<ClaimKey>,
) -> AppResult<impl IntoResponse> {
    let owner = parse_user(&owner)?;
    state.0.quotas.claim(req.user, owner)?;
    match state.0.store.claim_key(&owner, req.body.kind).await? {
        Some(k) => Ok(Json(k)),
        None => Err(UserRefusal::NoKeyMaterial { owner, kind: req.body.kind }.into()),
    }
}

// ---------------------------------------------------------------- mailboxes

pub(crate) async fn deposit(
    State(state): State<AppState>,
    P(owner): P<String>,
    req: Signed<Deposit>,
) -> AppResult<(StatusCode, Json<Deposited>)> {
    let owner = parse_user(&owner)?;
    if state.0.blocked.contains(&owner) {
        return Err(UserRefusal::RecipientBlocked.into());
    }
    let limits = &state.0.config.limits;
    if req.body.body.len() as u64 > limits.max_entry_bytes {
        return Err(LimitRefusal::MailTooLarge { max: limits.max_entry_bytes }.into());
    }
    if owner != req.user && state.0.store.key_counts(&owner).await?.is_empty() {
        return Err(UserRefusal::UnknownRecipient { owner }.into());
    }
    state.0.quotas.deposit(req.user, owner)?;
    let ts = state.now();
    let ttl_ms = i64::try_from(limits.mailbox_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let expires_at = ts.saturating_add(ttl_ms);
    let mail = NewMail { owner, sender: req.user, ts, expires_at, body: req.body.body };
    let quota =
        MailboxQuota { total: limits.mailbox_quota, per_sender: state.0.config.quotas.mailbox_share_per_sender };
    match state.0.store.deposit(mail, quota).await? {
        DepositOutcome::Deposited { seq } => {
            state.0.mailboxes.notify(owner, seq);
            Ok((StatusCode::CREATED, Json(Deposited { seq, expires_at })))
        }
        DepositOutcome::Full => Err(LimitRefusal::MailboxFull.into()),
        DepositOutcome::SenderFull => Err(LimitRefusal::MailboxShareFull { per_sender: quota.per_sender }.into()),
    }
}

/// `after`, `limit` and `wait` of reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
    #[serde(default)]
    wait: u64,
}

impl ReadQuery {
    fn limit(&self, state: &AppState) -> u32 {
        let max = state.0.config.limits.max_page_entries;
        self.limit.unwrap_or(max).clamp(1, max)
    }

    fn wait(&self, state: &AppState) -> Duration {
        Duration::from_secs(self.wait.min(state.0.config.limits.max_wait_secs))
    }
}

pub(crate) async fn read_mailbox(
    State(state): State<AppState>,
    Authed(user): Authed,
    Q(q): Q<ReadQuery>,
) -> AppResult<Json<MailboxPage>> {
    let limit = q.limit(&state);
    let deadline = tokio::time::Instant::now() + q.wait(&state);
    let mut watch = state.0.mailboxes.subscribe(user);
    loop {
        watch.borrow_and_update();
        let entries = state.0.store.mailbox_read(&user, q.after, limit, state.now()).await?;
        if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(MailboxPage { entries }));
        }
        if tokio::time::timeout_at(deadline, watch.changed()).await.is_err() {
            return Ok(Json(MailboxPage { entries: Vec::new() }));
        }
    }
}

pub(crate) async fn ack_mailbox(State(state): State<AppState>, req: Signed<Ack>) -> AppResult<Json<Acked>> {
    let removed = state.0.store.mailbox_ack(&req.user, req.body.up_to).await?;
    Ok(Json(Acked { removed }))
}

// ---------------------------------------------------------------- rooms

fn valid_room_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// `after` and `limit` of the public list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    after: String,
    limit: Option<u32>,
}

pub(crate) async fn public_rooms(State(state): State<AppState>, Q(q): Q<ListQuery>) -> AppResult<Json<PublicRooms>> {
    let max = state.0.config.limits.max_page_entries;
    let rooms = state.0.store.public_rooms(&q.after, q.limit.unwrap_or(max).clamp(1, max)).await?;
    Ok(Json(PublicRooms {
        rooms: rooms
            .into_iter()
            .map(|r| PublicRoom { name: r.name, mode: r.mode, member_count: r.members.len() as u64 })
            .collect(),
    }))
}

pub(crate) async fn create_room(
    State(state): State<AppState>,
    req: Signed<CreateRoom>,
) -> AppResult<(StatusCode, Json<grove_wire::api::RoomInfo>)> {
    let c = &state.0.config;
    let user = req.user;
    let allowed = match c.rooms.creation {
        RoomCreationPolicy::Open => true,
        RoomCreationPolicy::Allowlist => c.rooms.allowlist.contains(&user),
        RoomCreationPolicy::Closed => false,
    };
    if !allowed {
        return Err(RoomRefusal::CreationClosed.into());
    }
    let CreateRoom { name, mode, public, mls } = req.body;
    if !valid_room_name(&name) {
        return Err(RequestRefusal::InvalidRoomName.into());
    }
    let (epoch, state_bytes, members, admins) = match (mode, mls) {
        (RoomMode::Mls, Some(g)) => {
            let hub = HubGroup::observe(&g.group_info, &g.ratchet_tree)
                .map_err(|source| RoomRefusal::InvalidGroup { source })?;
            let members = hub.members();
            if !members.contains(&user) {
                return Err(RoomRefusal::CreatorNotInGroup.into());
            }
            let snapshot = hub.snapshot().map_err(|e| AppError::internal("cannot snapshot a new MLS group", e))?;
            let admins = hub.policy().map(|p| p.admins()).unwrap_or_default();
            (hub.epoch(), snapshot, members, admins)
        }
        (RoomMode::Mls, None) => return Err(RequestRefusal::MlsRoomWithoutGroup.into()),
        (RoomMode::SenderKeys, Some(_)) => return Err(RequestRefusal::SenderKeysRoomWithGroup.into()),
        (RoomMode::SenderKeys, None) => (0, Vec::new(), vec![user], vec![user]),
    };
    if members.len() as u64 > c.limits.members_per_room {
        return Err(LimitRefusal::NewRoomTooBig { limit: c.limits.members_per_room }.into());
    }
    let new = NewRoom {
        name: name.clone(),
        mode,
        public,
        created_by: user,
        created_at: state.now(),
        epoch,
        state: state_bytes,
        members,
        admins,
    };
    state.0.metrics.storage_watch().reserve(&state, "rooms", 0).await?;
    match state.0.store.create_room(new, c.limits.rooms_per_user).await? {
        CreateRoomOutcome::Created(_) => {
            tracing::info!(room = %name, mode = mode.as_str(), "room created");
            tracing::debug!(room = %name, creator = %user.short(), "room creator");
            let handle = state.0.rooms.get(&state, &name).await?;
            Ok((StatusCode::CREATED, Json(handle.info().await)))
        }
        CreateRoomOutcome::NameTaken => Err(RoomRefusal::RoomExists { name }.into()),
        CreateRoomOutcome::LimitReached => Err(LimitRefusal::RoomLimit { max: c.limits.rooms_per_user }.into()),
    }
}

pub(crate) async fn room_info(
    State(state): State<AppState>,
    Authed(user): Authed,
    P(name): P<String>,
) -> AppResult<Json<grove_wire::api::RoomInfo>> {
    let room = state.0.rooms.get_for_member(&state, &name, &user).await?;
    Ok(Json(room.info().await))
}

pub(crate) async fn append(
    State(state): State<AppState>,
    P(name): P<String>,
    req: Signed<AppendEntry>,
) -> AppResult<(StatusCode, Json<grove_wire::api::Appended>)> {
    let room = state.0.rooms.get(&state, &name).await?;
    let out = rooms::append(&state, &room, req.user, req.body).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// `POST /v1/rooms/{room}/reports`: a member cannot process a commit (see `rooms::fault`).
pub(crate) async fn report_fault(
    State(state): State<AppState>,
    P(name): P<String>,
    req: Signed<grove_wire::api::FaultReport>,
) -> AppResult<Json<grove_wire::api::ReportOutcome>> {
    let room = state.0.rooms.get(&state, &name).await?;
    if room.mode != grove_wire::api::RoomMode::Mls {
        return Err(RoomRefusal::ReportsOnlyMls.into());
    }
    Ok(Json(rooms::report(&state, &room, req.user, req.body).await?))
}

pub(crate) async fn read_log(
    State(state): State<AppState>,
    Authed(user): Authed,
    P(name): P<String>,
    Q(q): Q<ReadQuery>,
) -> AppResult<Json<LogPage>> {
    // A removed member reads up to and including the entry that removed it, and no further.
    let (room, mut bound) = state.0.rooms.get_for_reader(&state, &name, &user).await?;
    let limit = q.limit(&state);
    let deadline = tokio::time::Instant::now() + q.wait(&state);
    let mut head = room.watch_head();
    loop {
        head.borrow_and_update();
        let entries = room.read_for(&state, &user, q.after, limit, &mut bound).await?;
        if let Some(r) = bound {
            if entries.is_empty() {
                return Err(rooms::removed(&name, r));
            }
            // The room as it was when the reader was removed: nothing of what came after.
            return Ok(Json(LogPage { head: r.seq, epoch: r.epoch, entries }));
        }
        if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
            let last = entries.last().map(|e| e.seq).unwrap_or(0);
            let epoch = room.slot.read().await.epoch;
            return Ok(Json(LogPage { head: room.head().max(last), epoch, entries }));
        }
        if tokio::time::timeout_at(deadline, head.changed()).await.is_err() {
            let epoch = room.slot.read().await.epoch;
            return Ok(Json(LogPage { head: room.head(), epoch, entries: Vec::new() }));
        }
    }
}

/// `epoch` of the tree route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TreeQuery {
    epoch: Option<u64>,
}

pub(crate) async fn ratchet_tree(
    State(state): State<AppState>,
    Authed(user): Authed,
    P(name): P<String>,
    Q(q): Q<TreeQuery>,
) -> AppResult<Json<RatchetTree>> {
    let room = state.0.rooms.get_for_member(&state, &name, &user).await?;
    let slot = room.slot.read().await;
    let hub = slot.hub.as_ref().ok_or(RoomRefusal::TreeOnlyMls)?;
    let epoch = q.epoch.unwrap_or(slot.epoch);
    let tree = if epoch == slot.epoch {
        hub.ratchet_tree()
    } else {
        drop(slot);
        let old = state.0.store.room_state(room.id, epoch).await?.ok_or(RoomRefusal::TreeNotKept { epoch })?;
        HubGroup::restore(&old).and_then(|h| h.ratchet_tree())
    }
    .map_err(|e| AppError::internal("cannot export a ratchet tree", e))?;
    Ok(Json(RatchetTree { epoch, ratchet_tree: tree }))
}

pub(crate) async fn membership(
    State(state): State<AppState>,
    Authed(user): Authed,
    P(name): P<String>,
) -> AppResult<Json<MembershipState>> {
    let room = state.0.rooms.get_for_member(&state, &name, &user).await?;
    if room.mode != RoomMode::SenderKeys {
        return Err(RoomRefusal::MembershipOnlySenderKeys.into());
    }
    let rec = state.0.store.room(&name).await?.ok_or(RoomRefusal::RoomGone)?;
    let current = if rec.state.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<SignedMembership>(&rec.state)
                .map_err(|e| AppError::internal("stored membership does not parse", e))?,
        )
    };
    let version = rec.epoch;
    Ok(Json(MembershipState { current, version }))
}

/// `POST /v1/rooms/{room}/link`: sets the room's invite link (see `joins`).
pub(crate) async fn set_room_link(
    State(state): State<AppState>,
    P(name): P<String>,
    req: Signed<grove_wire::api::SetRoomLink>,
) -> AppResult<Json<grove_wire::api::RoomLinkInfo>> {
    Ok(Json(crate::joins::set_link(&state, &name, req.user, req.body).await?))
}

/// `DELETE /v1/rooms/{room}/link`: revokes it.
pub(crate) async fn revoke_room_link(
    State(state): State<AppState>,
    Authed(user): Authed,
    P(name): P<String>,
) -> AppResult<Json<grove_wire::api::Deleted>> {
    Ok(Json(crate::joins::revoke_link(&state, &name, user).await?))
}

/// `POST /v1/rooms/{room}/joins`: a link holder asks to join.
pub(crate) async fn ask_to_join(
    State(state): State<AppState>,
    crate::auth::ClientIp(ip): crate::auth::ClientIp,
    P(name): P<String>,
    req: Signed<grove_wire::api::AskToJoin>,
) -> AppResult<(StatusCode, Json<grove_wire::api::JoinAsked>)> {
    Ok((StatusCode::ACCEPTED, Json(crate::joins::ask(&state, &name, req.user, ip, req.body).await?)))
}

/// `GET /v1/rooms/{room}/joins`: the requests waiting.
pub(crate) async fn join_requests(
    State(state): State<AppState>,
    Authed(user): Authed,
    P(name): P<String>,
) -> AppResult<Json<grove_wire::api::JoinRequests>> {
    Ok(Json(crate::joins::list(&state, &name, user).await?))
}

/// `DELETE /v1/rooms/{room}/joins/{user}`: a request carried out or denied.
pub(crate) async fn drop_join_request(
    State(state): State<AppState>,
    Authed(user): Authed,
    P((name, target)): P<(String, String)>,
) -> AppResult<Json<grove_wire::api::Deleted>> {
    let target = parse_user(&target)?;
    Ok(Json(crate::joins::drop_request(&state, &name, user, target).await?))
}

/// `PUT /v1/rooms/{room}/link/group-info`: a member keeps the room's sealed GroupInfo for the
/// link's holders (see `link_joins`).
pub(crate) async fn put_link_group_info(
    State(state): State<AppState>,
    P(name): P<String>,
    req: Signed<grove_wire::api::PutLinkGroupInfo>,
) -> AppResult<Json<grove_wire::api::LinkGroupInfoKept>> {
    Ok(Json(crate::link_joins::put_group_info(&state, &name, req.user, req.body).await?))
}

/// `POST /v1/rooms/{room}/link/group-info`: a link holder fetches it.
pub(crate) async fn link_group_info(
    State(state): State<AppState>,
    crate::auth::ClientIp(ip): crate::auth::ClientIp,
    P(name): P<String>,
    req: Signed<grove_wire::api::LinkToken>,
) -> AppResult<Json<grove_wire::api::SealedGroupInfo>> {
    Ok(Json(crate::link_joins::group_info(&state, &name, req.user, ip, req.body).await?))
}

/// `POST /v1/rooms/{room}/link/join`: a link holder's external commit.
pub(crate) async fn link_join(
    State(state): State<AppState>,
    P(name): P<String>,
    req: Signed<grove_wire::api::LinkJoin>,
) -> AppResult<(StatusCode, Json<grove_wire::api::Appended>)> {
    Ok((StatusCode::CREATED, Json(crate::link_joins::join(&state, &name, req.user, req.body).await?)))
}
