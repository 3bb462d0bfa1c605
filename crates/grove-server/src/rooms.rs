//! Rooms: the in-memory view of each room's public state, the ordering gate, and the
//! publisher that hands appended entries to push subscribers and long-polls in order.
//!
//! Per room, a `tokio::sync::RwLock` over its [`Slot`]: application messages are checked and
//! appended under the read lock, so they run concurrently and the store's writer batches them;
//! handshake entries (MLS commits and proposals, sender-keys membership updates) take the
//! write lock, so validation, the durable append and the state change are one step for this
//! instance. The store's compare-and-set on the state version makes the same hold across
//! instances sharing a database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use grove_store::{AppendOutcome, NewEntry, RoomId, RoomRecord, StateUpdate};
use grove_wire::api::{AppendEntry, Appended, Entry, EntryKind, RoomInfo, RoomMode};
use grove_wire::membership::SignedMembership;
use grove_wire::{ErrorCode, UserId};
use tokio::sync::{broadcast, watch, RwLock};

use crate::error::{AppError, AppResult};
use crate::hub::{self, Hub};
use crate::state::AppState;
use grove_proto::mls::hub::HubError;

/// The rooms this instance has loaded.
#[derive(Default)]
pub(crate) struct RoomService {
    rooms: Mutex<HashMap<String, Arc<RoomHandle>>>,
    /// The same rooms by storage id, for announcements of other instances' appends.
    by_id: Mutex<HashMap<RoomId, Arc<RoomHandle>>>,
}

/// One loaded room.
pub(crate) struct RoomHandle {
    pub id: RoomId,
    pub name: String,
    pub mode: RoomMode,
    pub public: bool,
    pub created_by: UserId,
    pub created_at: i64,
    pub slot: RwLock<Slot>,
    publisher: Mutex<Publisher>,
    head: watch::Sender<u64>,
    entries: broadcast::Sender<Arc<Published>>,
    /// Another instance appended: the log must be re-read after the head.
    stale: AtomicBool,
    /// A catch-up task is running for this room.
    catching_up: AtomicBool,
}

/// An entry handed to push subscribers, serialised once for all of them.
pub(crate) struct Published {
    pub seq: u64,
    /// Commits and membership updates may change who may read: forwarders re-check.
    pub handshake: bool,
    /// The JSON of `PushEvent::Entry`.
    pub frame: Utf8Bytes,
}

/// The push frame of one entry.
pub(crate) fn entry_frame(room: &str, entry: Entry) -> Utf8Bytes {
    let ev = grove_wire::api::PushEvent::Entry { room: room.to_string(), entry };
    // Serialising plain data with string keys cannot fail.
    Utf8Bytes::from(serde_json::to_string(&ev).unwrap_or_default())
}

/// A room's public state as this instance knows it.
pub(crate) struct Slot {
    pub epoch: u64,
    pub state_version: u64,
    pub members: Vec<UserId>,
    member_set: HashSet<UserId>,
    pub admins: Vec<UserId>,
    pub hub: Option<Hub>,
}

struct Publisher {
    head: u64,
    pending: BTreeMap<u64, Entry>,
}

impl Slot {
    fn from_record(rec: &RoomRecord) -> AppResult<Slot> {
        let hub = match rec.mode {
            RoomMode::Mls => Some(Hub::restore(&rec.state).map_err(|e| {
                AppError::internal("cannot restore a room's MLS state", format!("room {}: {e}", rec.name))
            })?),
            RoomMode::SenderKeys => None,
        };
        Ok(Slot {
            epoch: rec.epoch,
            state_version: rec.state_version,
            member_set: rec.members.iter().copied().collect(),
            members: rec.members.clone(),
            admins: rec.admins.clone(),
            hub,
        })
    }

    pub fn is_member(&self, user: &UserId) -> bool {
        self.member_set.contains(user)
    }

    fn set_members(&mut self, members: Vec<UserId>) {
        self.member_set = members.iter().copied().collect();
        self.members = members;
    }
}

impl RoomHandle {
    fn new(rec: &RoomRecord) -> AppResult<RoomHandle> {
        Ok(RoomHandle {
            id: rec.id,
            name: rec.name.clone(),
            mode: rec.mode,
            public: rec.public,
            created_by: rec.created_by,
            created_at: rec.created_at,
            slot: RwLock::new(Slot::from_record(rec)?),
            publisher: Mutex::new(Publisher { head: rec.head, pending: BTreeMap::new() }),
            head: watch::channel(rec.head).0,
            entries: broadcast::channel(4096).0,
            stale: AtomicBool::new(false),
            catching_up: AtomicBool::new(false),
        })
    }

    /// Another instance sharing the store appended to this room (or may have): re-read the
    /// log after the head and hand the new entries to subscribers, in order. Announcements
    /// coalesce: at most one catch-up runs per room, and one more follows if another
    /// announcement came in meanwhile.
    pub fn kick(self: &Arc<Self>, state: &AppState) {
        self.stale.store(true, Ordering::SeqCst);
        if self.catching_up.swap(true, Ordering::SeqCst) {
            return;
        }
        let room = self.clone();
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let mut failures = 0u64;
                while room.stale.swap(false, Ordering::SeqCst) {
                    if let Err(e) = room.catch_up(&state).await {
                        failures += 1;
                        tracing::warn!(room = %room.name, error = %e.0.message, "catching up with another instance failed");
                        if failures >= 5 {
                            // The next announcement (the listener announces everything after
                            // it reconnects) tries again.
                            break;
                        }
                        room.stale.store(true, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50 * failures)).await;
                    }
                }
                room.catching_up.store(false, Ordering::SeqCst);
                // An announcement that came after the last read but saw the flag still set.
                if !room.stale.load(Ordering::SeqCst) || room.catching_up.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        });
    }

    /// Reads the entries after the head from the store and publishes them; reloads the public
    /// state first if any of them is a handshake entry, so that forwarders re-checking
    /// membership see the change.
    async fn catch_up(&self, state: &AppState) -> AppResult<()> {
        let page = state.0.config.limits.max_page_entries.max(1);
        loop {
            let entries = state.0.store.read(self.id, self.head(), page).await?;
            let n = entries.len();
            if entries.iter().any(|e| e.kind != EntryKind::Application) {
                self.refresh(state).await?;
            }
            for e in entries {
                self.publish(e);
            }
            if n < page as usize {
                return Ok(());
            }
        }
    }

    /// Reloads the room's public state from the store if another instance moved it on;
    /// answers whether it did.
    pub async fn refresh(&self, state: &AppState) -> AppResult<bool> {
        let mut slot = self.slot.write().await;
        self.refresh_locked(state, &mut slot).await
    }

    /// `refresh` for a caller holding the write lock.
    async fn refresh_locked(&self, state: &AppState, slot: &mut Slot) -> AppResult<bool> {
        let Some(rec) = state.0.store.room(&self.name).await? else { return Ok(false) };
        if rec.state_version <= slot.state_version {
            return Ok(false);
        }
        tracing::debug!(room = %self.name, from = slot.epoch, to = rec.epoch, "room state reloaded from the store");
        *slot = Slot::from_record(&rec)?;
        Ok(true)
    }

    /// The last sequence number handed to subscribers (every entry up to it is durable).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Wakes when the head moves.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Live entries, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.entries.subscribe()
    }

    /// Hands a durable entry to subscribers once every earlier one has been handed over.
    fn publish(&self, entry: Entry) {
        let mut p = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if entry.seq <= p.head {
            return;
        }
        p.pending.insert(entry.seq, entry);
        let mut moved = false;
        loop {
            let next = p.head + 1;
            let Some(e) = p.pending.remove(&next) else { break };
            p.head = next;
            if self.entries.receiver_count() > 0 {
                let handshake = e.kind != EntryKind::Application;
                let frame = entry_frame(&self.name, e);
                // A send fails only when nobody listens any more: nothing to do.
                let _ = self.entries.send(Arc::new(Published { seq: next, handshake, frame }));
            }
            moved = true;
        }
        if moved {
            let head = p.head;
            self.head.send_if_modified(|h| {
                let changed = *h != head;
                *h = head;
                changed
            });
        }
    }

    /// The room as a member sees it.
    pub async fn info(&self) -> RoomInfo {
        let slot = self.slot.read().await;
        RoomInfo {
            name: self.name.clone(),
            mode: self.mode,
            public: self.public,
            epoch: slot.epoch,
            head: self.head(),
            members: slot.members.clone(),
            admins: slot.admins.clone(),
            created_by: self.created_by,
            created_at: self.created_at,
        }
    }
}

impl RoomService {
    /// The loaded room, loading it from the store if needed; `not_found` if there is none.
    pub async fn get(&self, state: &AppState, name: &str) -> AppResult<Arc<RoomHandle>> {
        if let Some(h) = self.rooms.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(h.clone());
        }
        let rec = state
            .0
            .store
            .room(name)
            .await?
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no room named {name:?} on this server")))?;
        let handle = Arc::new(RoomHandle::new(&rec)?);
        let (handle, fresh) = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            match rooms.get(name) {
                Some(h) => (h.clone(), false),
                None => {
                    rooms.insert(name.to_string(), handle.clone());
                    self.by_id.lock().unwrap_or_else(|e| e.into_inner()).insert(handle.id, handle.clone());
                    (handle, true)
                }
            }
        };
        if fresh && state.0.shared_store {
            // An append announced between our read of the record and now found no loaded room.
            handle.kick(state);
        }
        Ok(handle)
    }

    /// Like `get`, but answers `not_member` unless `user` is a current member.
    pub async fn get_for_member(&self, state: &AppState, name: &str, user: &UserId) -> AppResult<Arc<RoomHandle>> {
        let h = self.get(state, name).await?;
        if !h.slot.read().await.is_member(user) {
            // Another instance may have added them a moment ago.
            if !(state.0.shared_store && h.refresh(state).await? && h.slot.read().await.is_member(user)) {
                return Err(not_member(name));
            }
        }
        Ok(h)
    }

    /// The loaded room with this storage id, if any.
    pub fn loaded_by_id(&self, id: RoomId) -> Option<Arc<RoomHandle>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// Every loaded room.
    pub fn loaded(&self) -> Vec<Arc<RoomHandle>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

pub(crate) fn not_member(name: &str) -> AppError {
    AppError::new(ErrorCode::NotMember, format!("you are not a member of room {name:?}"))
}

/// Appends an entry for `user`, enforcing membership, kinds, ordering and validation.
pub(crate) async fn append(state: &AppState, room: &RoomHandle, user: UserId, req: AppendEntry) -> AppResult<Appended> {
    let max = state.0.config.limits.max_entry_bytes;
    if req.body.len() as u64 > max {
        return Err(AppError::new(ErrorCode::PayloadTooLarge, format!("an entry body is at most {max} bytes")));
    }
    match (room.mode, req.kind) {
        (_, EntryKind::Application) => append_application(state, room, user, req).await,
        (RoomMode::Mls, EntryKind::Commit | EntryKind::Proposal) | (RoomMode::SenderKeys, EntryKind::Membership) => {
            let result = append_handshake(state, room, user, req).await;
            if let Err(e) = &result {
                state.0.metrics.commit_rejected(e.code().as_str());
            }
            result
        }
        (mode, kind) => Err(AppError::new(
            ErrorCode::WrongKind,
            format!("a {} room takes no {} entries", mode.as_str(), kind.as_str()),
        )),
    }
}

async fn store_append(state: &AppState, room: &RoomHandle, entry: NewEntry) -> AppResult<AppendOutcome> {
    let t = std::time::Instant::now();
    let out = state.0.store.append(room.id, entry).await;
    state.0.metrics.storage("append", t.elapsed());
    Ok(out?)
}

async fn append_application(
    state: &AppState,
    room: &RoomHandle,
    user: UserId,
    req: AppendEntry,
) -> AppResult<Appended> {
    let mut slot = room.slot.read().await;
    if let Err(e) = check_application(state, room, &slot, user, &req) {
        // With a shared store our view may be behind another instance's: reload and re-check
        // once before refusing (a new member's first message, a message of the next epoch).
        drop(slot);
        if !(state.0.shared_store && room.refresh(state).await?) {
            return Err(e);
        }
        slot = room.slot.read().await;
        check_application(state, room, &slot, user, &req)?;
    }
    let ts = state.now();
    let entry = NewEntry { kind: req.kind, epoch: req.epoch, sender: user, ts, body: req.body, update: None };
    let body = entry.body.clone();
    match store_append(state, room, entry).await? {
        AppendOutcome::Appended { seq, epoch } => {
            drop(slot);
            state.0.metrics.entry_appended(req.kind.as_str());
            room.publish(Entry { seq, kind: req.kind, epoch: req.epoch, sender: user, ts, body });
            Ok(Appended { seq, ts, epoch })
        }
        AppendOutcome::Conflict { .. } | AppendOutcome::NoSuchRoom => {
            Err(AppError::internal("append without update conflicted", &room.name))
        }
    }
}

/// Checks an application message against the room's public state as this instance knows it.
fn check_application(
    state: &AppState,
    room: &RoomHandle,
    slot: &Slot,
    user: UserId,
    req: &AppendEntry,
) -> AppResult<()> {
    if !slot.is_member(&user) {
        return Err(not_member(&room.name));
    }
    if let Some(hub) = &slot.hub {
        let msg_epoch = match hub.check_application(&req.body) {
            Ok(epoch) => epoch,
            Err(HubError::WrongEpoch { message_epoch, current_epoch }) => {
                return Err(AppError::wrong_epoch(current_epoch, room.head(), message_epoch))
            }
            Err(e) => {
                return Err(AppError::new(
                    ErrorCode::InvalidMessage,
                    format!("not an MLS application message of this room: {e}"),
                ))
            }
        };
        if msg_epoch != req.epoch {
            return Err(AppError::new(
                ErrorCode::InvalidMessage,
                format!("the entry says epoch {} but the message was made in epoch {msg_epoch}", req.epoch),
            ));
        }
    }
    if room.mode == RoomMode::SenderKeys {
        check_sender_keys_version(slot, req, room.head())?;
    }
    if req.epoch > slot.epoch {
        return Err(AppError::wrong_epoch(slot.epoch, room.head(), req.epoch));
    }
    let window = state.0.config.limits.epoch_window;
    if req.epoch + window < slot.epoch {
        let mut e = AppError::new(
            ErrorCode::EpochTooOld,
            format!(
                "epoch {} is more than {window} epochs behind the room's epoch {}: sync and re-encrypt",
                req.epoch, slot.epoch
            ),
        );
        e.0.current_epoch = Some(slot.epoch);
        return Err(e);
    }
    Ok(())
}

/// What a validated handshake entry changes.
struct Change {
    new_epoch: u64,
    members: Vec<UserId>,
    admins: Vec<UserId>,
    state: Vec<u8>,
    hub: Option<Hub>,
}

/// How often a handshake entry is re-validated after the store's compare-and-set found that
/// another instance had moved the room on.
const CONFLICT_RETRIES: u32 = 3;

/// Why one attempt at a handshake entry failed.
enum Attempt {
    /// Refused by validation against the state this instance knows.
    Refused(AppError),
    /// The store's compare-and-set failed: the slot has been reloaded; validate again.
    Conflict { epoch: u64, head: u64 },
}

async fn append_handshake(state: &AppState, room: &RoomHandle, user: UserId, req: AppendEntry) -> AppResult<Appended> {
    let mut slot = room.slot.write().await;
    // Only a shared store can hold a newer state than ours.
    let mut refreshed = !state.0.shared_store;
    let mut conflicts = 0;
    loop {
        match try_handshake(state, room, &mut slot, user, &req).await? {
            Ok(appended) => {
                drop(slot);
                state.0.metrics.entry_appended(req.kind.as_str());
                let (seq, ts) = (appended.seq, appended.ts);
                room.publish(Entry { seq, kind: req.kind, epoch: req.epoch, sender: user, ts, body: req.body });
                return Ok(appended);
            }
            // Our view may be behind another instance's: reload once, and judge again if it was.
            Err(Attempt::Refused(e)) => {
                if refreshed || !room.refresh_locked(state, &mut slot).await? {
                    return Err(e);
                }
                refreshed = true;
            }
            Err(Attempt::Conflict { epoch, head }) => {
                conflicts += 1;
                refreshed = true;
                if conflicts > CONFLICT_RETRIES {
                    return Err(AppError::wrong_epoch(epoch, head, req.epoch));
                }
            }
        }
    }
}

/// Validates a handshake entry against `slot` and appends it with its state change.
async fn try_handshake(
    state: &AppState,
    room: &RoomHandle,
    slot: &mut Slot,
    user: UserId,
    req: &AppendEntry,
) -> AppResult<Result<Appended, Attempt>> {
    if !slot.is_member(&user) {
        return Ok(Err(Attempt::Refused(not_member(&room.name))));
    }
    let change = match req.kind {
        EntryKind::Membership => match check_membership(state, room, slot, req) {
            Ok(c) => c,
            Err(e) => return Ok(Err(Attempt::Refused(e))),
        },
        _ => {
            if req.epoch != slot.epoch {
                return Ok(Err(Attempt::Refused(AppError::wrong_epoch(slot.epoch, room.head(), req.epoch))));
            }
            let hub = slot.hub.as_ref().ok_or_else(|| AppError::internal("MLS room without hub state", &room.name))?;
            let head = room.head();
            let checked = if req.kind == EntryKind::Commit {
                hub.check_commit(&req.body, &user).map_err(|e| hub::commit_error(e, head, true))
            } else {
                hub.check_proposal(&req.body, &user).map_err(|e| hub::commit_error(e, head, false))
            };
            let next = match checked {
                Ok(next) => next,
                Err(e) => return Ok(Err(Attempt::Refused(e))),
            };
            Change {
                new_epoch: next.epoch(),
                members: next.members(),
                admins: Vec::new(),
                state: next.snapshot().map_err(|e| AppError::internal("cannot snapshot MLS state", e))?,
                hub: Some(next),
            }
        }
    };
    let limit = state.0.config.limits.members_per_room;
    if change.members.len() as u64 > limit {
        return Err(AppError::new(
            ErrorCode::MemberLimit,
            format!("a room on this server has at most {limit} members"),
        ));
    }
    let ts = state.now();
    let entry = NewEntry {
        kind: req.kind,
        epoch: req.epoch,
        sender: user,
        ts,
        body: req.body.clone(),
        update: Some(StateUpdate {
            expected_state_version: slot.state_version,
            new_epoch: change.new_epoch,
            state: change.state,
            members: change.members.clone(),
            admins: change.admins.clone(),
        }),
    };
    match store_append(state, room, entry).await? {
        AppendOutcome::Appended { seq, epoch } => {
            slot.epoch = epoch;
            slot.state_version += 1;
            slot.set_members(change.members);
            slot.admins = change.admins;
            if change.hub.is_some() {
                slot.hub = change.hub;
            }
            Ok(Ok(Appended { seq, ts, epoch }))
        }
        AppendOutcome::Conflict { epoch, head, .. } => {
            // Another instance moved the room on: reload our view from the store.
            if let Some(rec) = state.0.store.room(&room.name).await? {
                *slot = Slot::from_record(&rec)?;
            }
            Ok(Err(Attempt::Conflict { epoch, head }))
        }
        AppendOutcome::NoSuchRoom => Err(AppError::new(ErrorCode::NotFound, "the room no longer exists")),
    }
}

/// A sender-keys message is accepted only at the current membership version: one made on an
/// older view may be readable by a member removed since (Signal-Android issue 7103), so a sender
/// whose view is stale must sync, rotate and re-encrypt. (MLS rooms keep the epoch window: an
/// MLS message of an older epoch is not readable by members removed since.)
fn check_sender_keys_version(slot: &Slot, req: &AppendEntry, head: u64) -> AppResult<()> {
    if req.epoch != slot.epoch {
        return Err(AppError::wrong_epoch(slot.epoch, head, req.epoch));
    }
    Ok(())
}

fn check_membership(state: &AppState, room: &RoomHandle, slot: &Slot, req: &AppendEntry) -> AppResult<Change> {
    let bad = |m: &str| AppError::new(ErrorCode::BadMembership, m.to_string());
    let m: SignedMembership =
        serde_json::from_slice(&req.body).map_err(|_| bad("the body is not a signed membership (JSON)"))?;
    if !m.verify() {
        return Err(bad("the membership signature or shape is invalid"));
    }
    if m.room != room.name {
        return Err(bad("the membership is signed for another room"));
    }
    if m.version != slot.epoch + 1 || req.epoch != m.version {
        let mut e = AppError::new(
            ErrorCode::MembershipVersion,
            format!(
                "the room is at membership version {}; the next update must be version {}",
                slot.epoch,
                slot.epoch + 1
            ),
        );
        e.0.current_epoch = Some(slot.epoch);
        return Err(e);
    }
    if !slot.admins.contains(&m.signer) {
        return Err(bad("the membership is not signed by an admin of the current version"));
    }
    let _ = state;
    Ok(Change {
        new_epoch: m.version,
        members: m.members.clone(),
        admins: m.admins.clone(),
        state: req.body.clone(),
        hub: None,
    })
}
