//! One loaded room: its public state as this instance knows it ([`Slot`]), and the in-order
//! publisher that hands durable entries to push subscribers and long-polls.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;
use grove_proto::mls::hub::HubGroup;
use grove_store::{Removal, RoomId, RoomRecord};
use grove_wire::api::{Entry, EntryKind, RoomInfo, RoomMode};
use grove_wire::membership::SignedMembership;
use grove_wire::policy::{Role, RoomPolicy};
use grove_wire::UserId;
use tokio::sync::{broadcast, watch, RwLock};

use crate::error::{AppError, AppResult};
use crate::state::AppState;

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
    /// Made on the first subscription: a channel allocates all its slots up front (4096 of
    /// them), which every loaded room would pay for, watched or not.
    entries: OnceLock<broadcast::Sender<Arc<Published>>>,
    /// Another instance appended: the log must be re-read after the head.
    stale: AtomicBool,
    /// A catch-up task is running for this room.
    catching_up: AtomicBool,
    /// When the room was last handed out by [`super::RoomService`] (server clock, ms).
    last_used: AtomicI64,
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
    pub hub: Option<HubGroup>,
    /// Sender-keys rooms: the policy of the current membership version.
    pub sk_policy: Option<RoomPolicy>,
    /// Sender-keys rooms: the members' home servers the current membership names.
    pub sk_homes: BTreeMap<UserId, String>,
}

struct Publisher {
    head: u64,
    pending: BTreeMap<u64, Entry>,
}

impl Slot {
    pub(super) fn from_record(rec: &RoomRecord) -> AppResult<Slot> {
        let hub = match rec.mode {
            RoomMode::Mls => Some(HubGroup::restore(&rec.state).map_err(|e| {
                AppError::internal("cannot restore a room's MLS state", format!("room {}: {e}", rec.name))
            })?),
            RoomMode::SenderKeys => None,
        };
        let sk_policy = match rec.mode {
            RoomMode::Mls => None,
            RoomMode::SenderKeys if rec.state.is_empty() => Some(RoomPolicy::for_creator(rec.created_by)),
            // A membership signed before rooms had policies (no `policy` field): its admins
            // keep their power as admins.
            RoomMode::SenderKeys => Some(match serde_json::from_slice::<SignedMembership>(&rec.state) {
                Ok(m) => m.policy,
                Err(_) => RoomPolicy {
                    roles: rec.admins.iter().map(|a| (*a, Role::Admin)).collect(),
                    ..RoomPolicy::default()
                },
            }),
        };
        let sk_homes = match rec.mode {
            RoomMode::SenderKeys => {
                serde_json::from_slice::<SignedMembership>(&rec.state).map(|m| m.homes).unwrap_or_default()
            }
            RoomMode::Mls => BTreeMap::new(),
        };
        Ok(Slot {
            sk_policy,
            sk_homes,
            epoch: rec.epoch,
            state_version: rec.state_version,
            member_set: rec.members.iter().copied().collect(),
            members: rec.members.clone(),
            admins: rec.admins.clone(),
            hub,
        })
    }

    pub(crate) fn is_member(&self, user: &UserId) -> bool {
        self.member_set.contains(user)
    }

    pub(super) fn set_members(&mut self, members: Vec<UserId>) {
        self.member_set = members.iter().copied().collect();
        self.members = members;
    }
}

impl RoomHandle {
    pub(super) fn new(rec: &RoomRecord) -> AppResult<RoomHandle> {
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
            entries: OnceLock::new(),
            stale: AtomicBool::new(false),
            catching_up: AtomicBool::new(false),
            last_used: AtomicI64::new(i64::MIN),
        })
    }

    /// Another instance sharing the store appended to this room (or may have): re-read the
    /// log after the head and hand the new entries to subscribers, in order. Announcements
    /// coalesce: at most one catch-up runs per room, and one more follows if another
    /// announcement came in meanwhile.
    pub(crate) fn kick(self: &Arc<Self>, state: &AppState) {
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
                        tracing::warn!(room = %room.name, error = %e, "catching up with another instance failed");
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
    pub(crate) async fn refresh(&self, state: &AppState) -> AppResult<bool> {
        let mut slot = self.slot.write().await;
        self.refresh_locked(state, &mut slot).await
    }

    /// `refresh` for a caller holding the write lock.
    pub(super) async fn refresh_locked(&self, state: &AppState, slot: &mut Slot) -> AppResult<bool> {
        let Some(rec) = state.0.store.room(&self.name).await? else { return Ok(false) };
        if rec.state_version <= slot.state_version {
            return Ok(false);
        }
        tracing::debug!(room = %self.name, from = slot.epoch, to = rec.epoch, "room state reloaded from the store");
        *slot = Slot::from_record(&rec)?;
        Ok(true)
    }

    /// Reads the log after `after` for `user`, at most `limit` entries, never past where its
    /// reading ends: `bound` is its removal (from [`super::RoomService::get_for_reader`]), or
    /// `None` for a member, in which case a page holding a handshake entry is checked, since
    /// that entry may have removed the reader; `bound` is then set and the page clipped at it.
    pub(crate) async fn read_for(
        &self,
        state: &AppState,
        user: &UserId,
        after: u64,
        limit: u32,
        bound: &mut Option<Removal>,
    ) -> AppResult<Vec<Entry>> {
        let limit = match bound {
            Some(r) if after >= r.seq => return Ok(Vec::new()),
            Some(r) => limit.min(u32::try_from(r.seq - after).unwrap_or(u32::MAX)),
            None => limit,
        };
        let t = std::time::Instant::now();
        let mut entries = state.0.store.read(self.id, after, limit).await?;
        state.0.metrics.storage("read", t.elapsed());
        if bound.is_none() {
            *bound = self.removal_in(state, user, &entries).await?;
            if let Some(r) = bound {
                entries.retain(|e| e.seq <= r.seq);
            }
        }
        Ok(entries)
    }

    /// Whether `user`, a member when it started reading, was removed by one of `entries` or
    /// since: its removal, if so.
    async fn removal_in(&self, state: &AppState, user: &UserId, entries: &[Entry]) -> AppResult<Option<Removal>> {
        if !entries.iter().any(|e| e.kind != EntryKind::Application) {
            return Ok(None);
        }
        self.removal_of(state, user).await
    }

    /// `user`'s removal, once a handshake entry it read as a member may have removed it.
    pub(crate) async fn removal_of(&self, state: &AppState, user: &UserId) -> AppResult<Option<Removal>> {
        // On its own store this instance's view is never behind what it read: a handshake entry
        // is written under the state's write lock, which is released only once the view has it.
        if !state.0.shared_store && self.slot.read().await.is_member(user) {
            return Ok(None);
        }
        Ok(state.0.store.removal(self.id, user).await?)
    }

    /// Marks the room used at `now` (server clock, ms).
    pub(super) fn touch(&self, now: i64) {
        self.last_used.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether the room was last used before `before` and nothing waits on it: no push
    /// subscriber, no long-poll, no catch-up with another instance.
    pub(super) fn idle_since(&self, before: i64) -> bool {
        self.last_used.load(Ordering::Relaxed) < before
            && self.subscribers() == 0
            && self.head.receiver_count() == 0
            && !self.catching_up.load(Ordering::SeqCst)
            && !self.stale.load(Ordering::SeqCst)
    }

    /// The last sequence number handed to subscribers (every entry up to it is durable).
    pub(crate) fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Wakes when the head moves.
    pub(crate) fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Live entries, in order.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.entries.get_or_init(|| broadcast::channel(4096).0).subscribe()
    }

    /// How many push subscribers listen.
    fn subscribers(&self) -> usize {
        self.entries.get().map_or(0, broadcast::Sender::receiver_count)
    }

    /// Hands a durable entry to subscribers once every earlier one has been handed over.
    pub(super) fn publish(&self, entry: Entry) {
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
            if let Some(entries) = self.entries.get().filter(|tx| tx.receiver_count() > 0) {
                let handshake = e.kind != EntryKind::Application;
                let frame = entry_frame(&self.name, e);
                // A send fails only when nobody listens any more: nothing to do.
                let _ = entries.send(Arc::new(Published { seq: next, handshake, frame }));
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

    /// The room's policy as its current state says (`None`: an MLS room created before rooms
    /// had policies).
    pub(crate) async fn policy(&self) -> Option<RoomPolicy> {
        let slot = self.slot.read().await;
        match &slot.hub {
            Some(hub) => hub.policy(),
            None => slot.sk_policy.clone(),
        }
    }

    /// Whether `user` is a current member, as this instance knows.
    pub(crate) async fn has_member(&self, user: &UserId) -> bool {
        self.slot.read().await.is_member(user)
    }

    /// The room as a member sees it.
    pub(crate) async fn info(&self) -> RoomInfo {
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
