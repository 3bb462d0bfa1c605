//! The push WebSocket: one per client, carrying new entries of any set of the user's rooms
//! and of their mailbox, in order. A subscription starts from a cursor: the backlog after it
//! is read from the store first, then live entries follow; entries are numbered, so the
//! client's cursor makes reconnection exact (no gap, no duplicate).
//!
//! The server pings each socket every `connections.push_ping_secs` and closes one it heard
//! nothing from for two of them, or one that followed nothing for `connections.push_idle_secs`:
//! an upgraded socket is outside the HTTP timeouts, so these are what free a dead peer's slot.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use grove_store::Removal;
use grove_wire::api::{AppendEntry, PushEvent, PushRequest};
use grove_wire::push;
use grove_wire::UserId;
use rand::rngs::OsRng;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::auth::Authed;
use crate::error::{AppError, AuthRefusal, LimitRefusal, RequestRefusal};
use crate::rooms::{self, entry_frame, RoomHandle};
use crate::routes::Q;
use crate::state::AppState;

/// Send frames one socket may have in flight (read, not yet answered); the socket is not read
/// further until one is answered.
const SEND_WINDOW: usize = 256;

/// `GET /v1/push`'s query: the client's half of the frame binding, to send on the socket.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PushQuery {
    bind: Option<String>,
}

/// `GET /v1/push`: authenticated like any GET, then upgraded. With `bind`, the answer carries
/// the server's half of the frame binding and the socket takes `send` frames.
pub(crate) async fn push(
    State(state): State<AppState>,
    Authed(user): Authed,
    Q(query): Q<PushQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return AppError::from(RequestRefusal::NotWebSocket { text: e.body_text() }).into_response(),
    };
    let binding = match query.bind.as_deref().map(|half| push::answer(&mut OsRng, &state.0.signing_key, &user, half)) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(source)) => return AppError::from(RequestRefusal::InvalidBind { source }).into_response(),
    };
    let (frames, answer) = match binding {
        Some((key, half, signature)) => (Some(key), Some((half, signature))),
        None => (None, None),
    };
    // A small read buffer: tungstenite clears the whole buffer on every read poll, and the
    // client rarely sends anything after subscribing (128 KiB by default cost ~45% of fanout CPU).
    // An entry sent on the socket may be as large as an HTTP body (base64 in JSON).
    let body = usize::try_from(state.0.config.limits.max_body_bytes).unwrap_or(usize::MAX);
    let max = if frames.is_some() { body.saturating_mul(2).max(64 * 1024) } else { 64 * 1024 };
    let mut response = ws
        .max_message_size(max)
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| connection(state, user, socket, frames));
    if let Some((half, signature)) = answer {
        for (name, value) in [(push::HEADER_PUSH_KEY, half), (push::HEADER_PUSH_SIGNATURE, signature)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// One `send` frame's entry appended as `POST /v1/rooms/{room}/log` would, answered by id.
async fn send(state: AppState, user: UserId, id: u64, room: String, entry: AppendEntry) -> PushEvent {
    let result = async {
        crate::auth::user_rate(&state, &user)?;
        let room = state.0.rooms.get(&state, &room).await?;
        rooms::append(&state, &room, user, entry).await
    };
    match result.await {
        Ok(appended) => PushEvent::Sent { id, appended },
        Err(e) => PushEvent::Refused { id, error: e.answer() },
    }
}

fn frame(ev: &PushEvent) -> Utf8Bytes {
    // Serialising plain data with string keys cannot fail.
    Utf8Bytes::from(serde_json::to_string(ev).unwrap_or_default())
}

fn error_frame(room: Option<String>, refusal: impl Into<AppError>) -> Utf8Bytes {
    frame(&PushEvent::Error { room, error: refusal.into().answer() })
}

async fn connection(state: AppState, user: UserId, socket: WebSocket, frames: Option<push::FrameKey>) {
    state.0.metrics.push_connections().inc();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(1024);
    let mut tasks = JoinSet::new();
    let mut rooms: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut mailbox: Option<tokio::task::AbortHandle> = None;
    let mut shutdown = state.0.shutdown.subscribe();
    let mut blocks = state.0.blocked.subscribe();
    let conn = &state.0.config.connections;
    let ping_every = Duration::from_secs(conn.push_ping_secs);
    let idle_limit = Duration::from_secs(conn.push_idle_secs);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    // Since when the socket follows nothing (checked at each ping): from the start until a
    // subscription is seen at a ping.
    let mut idle_since = Some(Instant::now());
    // Sends in flight, answered in the order they came; each runs to its end as a task of its
    // own, so an entry the store took is published even if the socket drops meanwhile.
    let mut sending = FuturesOrdered::new();
    let mut next_id: u64 = 1;
    loop {
        tokio::select! {
            Some(answer) = sending.next(), if !sending.is_empty() => {
                let event = match answer {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::error!(error = %e, "a push send task failed");
                        break;
                    }
                };
                if sink.send(Message::Text(frame(&event))).await.is_err() {
                    break;
                }
            }
            msg = stream.next(), if sending.len() < SEND_WINDOW => {
                heard = Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<PushRequest>(text.as_str()) {
                    Ok(PushRequest::Subscribe { rooms: cursors, mailbox_after }) => {
                        // Subscriptions that ended (no such room, not a member) no longer count.
                        rooms.retain(|_, h| !h.is_finished());
                        let cap = state.0.config.quotas.push_subscriptions;
                        let mut refused = Vec::new();
                        for c in cursors {
                            if let Some(old) = rooms.remove(&c.room) {
                                old.abort();
                            }
                            if rooms.len() >= cap || state.0.user_limiter.check_key(&user).is_err() {
                                refused.push(c.room);
                                continue;
                            }
                            let handle = tasks.spawn(forward_room(state.clone(), user, c.room.clone(), c.after, tx.clone()));
                            rooms.insert(c.room, handle);
                        }
                        if let Some(after) = mailbox_after {
                            if let Some(old) = mailbox.take() {
                                old.abort();
                            }
                            mailbox = Some(tasks.spawn(forward_mailbox(state.clone(), user, after, tx.clone())));
                        }
                        if !refused.is_empty() && !refuse(&mut sink, refused, cap).await {
                            break;
                        }
                    }
                    Ok(PushRequest::Send { id, room, entry, mac }) => {
                        let refusal = match &frames {
                            None => Some(AuthRefusal::UnboundSend),
                            Some(_) if id != next_id => Some(AuthRefusal::SendOutOfOrder { id, due: next_id }),
                            Some(key) if !key.verify(id, &room, &entry, &mac) => Some(AuthRefusal::SendMacInvalid { id }),
                            Some(_) => None,
                        };
                        if let Some(refusal) = refusal {
                            // Not a refusal of the entry: the frames are not this connection's.
                            let f = error_frame(None, refusal);
                            let _ = sink.send(Message::Text(f)).await;
                            let _ = sink.send(Message::Close(None)).await;
                            break;
                        }
                        next_id += 1;
                        sending.push_back(tokio::spawn(send(state.clone(), user, id, room, entry)));
                    }
                    Err(e) => {
                        let f = error_frame(None, RequestRefusal::NotPushRequest { source: e });
                        if sink.send(Message::Text(f)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Some(f) = rx.recv() => {
                if sink.send(Message::Text(f)).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
            Ok(()) = blocks.changed() => {
                if state.0.blocked.contains(&user) {
                    let f = error_frame(None, AuthRefusal::Blocked);
                    let _ = sink.send(Message::Text(f)).await;
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = ping.tick() => {
                if heard.elapsed() >= 2 * ping_every {
                    tracing::debug!("push socket silent for two pings: closed");
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                rooms.retain(|_, h| !h.is_finished());
                if rooms.is_empty() && mailbox.as_ref().is_none_or(|h| h.is_finished()) {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= idle_limit {
                        let idle = LimitRefusal::PushIdle { secs: idle_limit.as_secs() };
                        let _ = sink.send(Message::Text(error_frame(None, idle))).await;
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                } else {
                    idle_since = None;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    tasks.shutdown().await;
    state.0.metrics.push_connections().dec();
}

/// Tells the client which rooms were not subscribed to, one error frame each (the first
/// [`REFUSALS_SHOWN`] of them, then one for the rest); false if the socket is gone.
async fn refuse(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    refused: Vec<String>,
    cap: usize,
) -> bool {
    let n = refused.len();
    for room in refused.into_iter().take(REFUSALS_SHOWN) {
        let f = error_frame(Some(room), LimitRefusal::Subscriptions { cap });
        if sink.send(Message::Text(f)).await.is_err() {
            return false;
        }
    }
    if n > REFUSALS_SHOWN {
        let rest = LimitRefusal::MoreSubscriptions { more: n - REFUSALS_SHOWN, cap };
        return sink.send(Message::Text(error_frame(None, rest))).await.is_ok();
    }
    true
}

/// How many refused rooms are named one by one in error frames.
const REFUSALS_SHOWN: usize = 100;

/// Sends the backlog of `room` after `*after`, page by page, advancing `*after`, never past
/// where `user`'s reading ends (`bound`, set here if a page shows it was removed).
async fn catch_up(
    state: &AppState,
    room: &RoomHandle,
    user: &UserId,
    after: &mut u64,
    bound: &mut Option<Removal>,
    tx: &mpsc::Sender<Utf8Bytes>,
) -> Result<(), ()> {
    let page = state.0.config.limits.max_page_entries;
    loop {
        let entries = room.read_for(state, user, *after, page, bound).await.map_err(|e| {
            tracing::warn!(error = %e, room = %room.name, "push catch-up read failed");
        })?;
        let n = entries.len();
        for e in entries {
            *after = e.seq;
            tx.send(entry_frame(&room.name, e)).await.map_err(|_| ())?;
        }
        if n < page as usize {
            return Ok(());
        }
    }
}

/// Whether `after` is the end of the reader's reading: its removal, read.
fn ended(bound: Option<Removal>, after: u64) -> Option<Removal> {
    bound.filter(|r| after >= r.seq)
}

/// Forwards one room's entries after `after`: the backlog, then live ones. A member removed
/// (before or while subscribed) gets everything up to and including the entry that removed it,
/// then a `not_member` error frame, and the subscription ends.
async fn forward_room(state: AppState, user: UserId, name: String, mut after: u64, tx: mpsc::Sender<Utf8Bytes>) {
    let (room, mut bound): (Arc<RoomHandle>, _) = match state.0.rooms.get_for_reader(&state, &name, &user).await {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(frame(&PushEvent::Error { room: Some(name), error: e.answer() })).await;
            return;
        }
    };
    let end =
        |r: Removal| frame(&PushEvent::Error { room: Some(name.clone()), error: rooms::removed(&name, r).answer() });
    // Subscribe before reading the backlog, so nothing falls between the two.
    let mut live = room.subscribe();
    if catch_up(&state, &room, &user, &mut after, &mut bound, &tx).await.is_err() {
        return;
    }
    if ended(bound, after).is_none() {
        // The backlog is out: the client knows it is as current as a read would make it.
        if tx.send(frame(&PushEvent::Live { room: name.clone(), seq: after })).await.is_err() {
            return;
        }
    }
    loop {
        if let Some(r) = ended(bound, after) {
            let _ = tx.send(end(r)).await;
            return;
        }
        match live.recv().await {
            Ok(p) => {
                if p.seq <= after {
                    continue;
                }
                if p.seq > after.saturating_add(1) {
                    // Only after a lag: the store has everything up to p.seq.
                    if catch_up(&state, &room, &user, &mut after, &mut bound, &tx).await.is_err() {
                        return;
                    }
                    continue;
                }
                if p.handshake && bound.is_none() {
                    // It may have removed this reader (or an earlier one did, and this
                    // instance's view has it only now).
                    match room.removal_of(&state, &user).await {
                        Ok(r) => bound = r,
                        Err(e) => {
                            tracing::warn!(error = %e, room = %room.name, "push removal check failed");
                            return;
                        }
                    }
                    if bound.is_some_and(|r| p.seq > r.seq) {
                        continue;
                    }
                }
                if tx.send(p.frame.clone()).await.is_err() {
                    return;
                }
                after = p.seq;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if catch_up(&state, &room, &user, &mut after, &mut bound, &tx).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn forward_mailbox(state: AppState, user: UserId, mut after: u64, tx: mpsc::Sender<Utf8Bytes>) {
    let mut watch = state.0.mailboxes.subscribe(user);
    let page = state.0.config.limits.max_page_entries;
    loop {
        watch.borrow_and_update();
        loop {
            let entries = match state.0.store.mailbox_read(&user, after, page, state.now()).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "push mailbox read failed");
                    return;
                }
            };
            let n = entries.len();
            for entry in entries {
                after = entry.seq;
                if tx.send(frame(&PushEvent::Mail { entry })).await.is_err() {
                    return;
                }
            }
            if n < page as usize {
                break;
            }
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}
