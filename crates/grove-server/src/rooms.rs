//! Rooms: the in-memory view of each room's public state, the ordering gate, and the
//! publisher that hands appended entries to push subscribers and long-polls in order.
//!
//! Per room, a `tokio::sync::RwLock` over its [`Slot`]: application messages are checked and
//! appended under the read lock, so they run concurrently and the store's writer batches them;
//! handshake entries (MLS commits and proposals, sender-keys membership updates) take the
//! write lock, so validation, the durable append and the state change are one step for this
//! instance. The store's compare-and-set on the state version makes the same hold across
//! instances sharing a database.

mod append;
mod fault;
mod handle;
mod policy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use grove_store::{Removal, RoomId};
use grove_wire::UserId;

use crate::error::{AppError, AppResult, RoomRefusal};
use crate::state::AppState;

pub(crate) use append::{append, append_link_join};
pub(crate) use fault::report;
pub(crate) use handle::{entry_frame, RoomHandle};
pub(crate) use policy::not_allowed;
use policy::not_member;

/// The rooms this instance has loaded. A room idle for `server.room_idle_secs` is evicted
/// ([`RoomService::evict_idle`]): memory is bounded by the rooms in use, not by every room ever
/// touched.
#[derive(Default)]
pub(crate) struct RoomService {
    rooms: Mutex<HashMap<String, Arc<RoomHandle>>>,
    /// The same rooms by storage id, for announcements of other instances' appends.
    by_id: Mutex<HashMap<RoomId, Arc<RoomHandle>>>,
    /// When idle rooms were last looked for (server clock, ms).
    swept_at: AtomicI64,
}

impl RoomService {
    /// The loaded room, loading it from the store if needed; `not_found` if there is none.
    pub(crate) async fn get(&self, state: &AppState, name: &str) -> AppResult<Arc<RoomHandle>> {
        let now = state.now();
        self.sweep_if_due(state, now);
        if let Some(h) = self.rooms.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            h.touch(now);
            return Ok(h.clone());
        }
        let rec = state.0.store.room(name).await?.ok_or_else(|| RoomRefusal::NoSuchRoom { name: name.to_string() })?;
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
        handle.touch(now);
        if fresh && state.0.shared_store {
            // An append announced between our read of the record and now found no loaded room.
            handle.kick(state);
        }
        Ok(handle)
    }

    /// Like `get`, but answers `not_member` unless `user` is a current member.
    pub(crate) async fn get_for_member(
        &self,
        state: &AppState,
        name: &str,
        user: &UserId,
    ) -> AppResult<Arc<RoomHandle>> {
        let h = self.get(state, name).await?;
        if !h.slot.read().await.is_member(user) {
            // Another instance may have added them a moment ago.
            if !(state.0.shared_store && h.refresh(state).await? && h.slot.read().await.is_member(user)) {
                return Err(not_member(name));
            }
        }
        Ok(h)
    }

    /// Like `get_for_member`, but also lets in a member who was removed, to read the log up to
    /// and including the entry that removed it: answers the room and, for a removed member,
    /// where its reading ends. `not_member` for a user who never was one (or whose removal
    /// predates the store's record of removals).
    pub(crate) async fn get_for_reader(
        &self,
        state: &AppState,
        name: &str,
        user: &UserId,
    ) -> AppResult<(Arc<RoomHandle>, Option<Removal>)> {
        let h = self.get(state, name).await?;
        if h.slot.read().await.is_member(user) {
            return Ok((h, None));
        }
        // Another instance may have added them a moment ago.
        if state.0.shared_store && h.refresh(state).await? && h.slot.read().await.is_member(user) {
            return Ok((h, None));
        }
        match state.0.store.removal(h.id, user).await? {
            Some(r) => Ok((h, Some(r))),
            // Added back between the two looks: a member again.
            None if h.slot.read().await.is_member(user) => Ok((h, None)),
            None => Err(not_member(name)),
        }
    }

    /// Forgets a room deleted by the operator: its next use reads the store, and finds nothing.
    /// Requests holding its handle meanwhile fail at the store (`room_not_found`).
    pub(crate) fn forget(&self, name: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = rooms.remove(name) {
            self.by_id.lock().unwrap_or_else(|e| e.into_inner()).remove(&h.id);
        }
    }

    /// The loaded room with this storage id, if any.
    pub(crate) fn loaded_by_id(&self, id: RoomId) -> Option<Arc<RoomHandle>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// Every loaded room.
    pub(crate) fn loaded(&self) -> Vec<Arc<RoomHandle>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Evicts idle rooms if the last look was half an idle period ago or more (so a busy server
    /// looks twice per period, an idle one on its next request or on `run`'s timer).
    pub(crate) fn sweep_if_due(&self, state: &AppState, now: i64) {
        let idle = idle_ms(state);
        let last = self.swept_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= idle / 2
            && self.swept_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.evict_idle(now.saturating_sub(idle));
        }
    }

    /// Drops every room last used before `before` that nobody holds or waits on: no request
    /// in flight, no push subscriber, no long-poll, no catch-up. Such a room's state is all in
    /// the store, so its next use loads it again. Returns how many were dropped.
    ///
    /// Handles are only handed out under these locks, so a room counted unheld here cannot be
    /// picked up while it is dropped.
    pub(crate) fn evict_idle(&self, before: i64) -> usize {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = rooms.len();
        rooms.retain(|_, h| {
            // One reference in each map and no other: nobody holds the room.
            let evict = Arc::strong_count(h) == 2 && h.idle_since(before);
            if evict {
                by_id.remove(&h.id);
            }
            !evict
        });
        let evicted = loaded - rooms.len();
        if evicted > 0 {
            tracing::debug!(evicted, loaded = rooms.len(), "idle rooms evicted");
        }
        evicted
    }
}

/// The refusal of a read past the entry that removed the reader: `not_member`, with that
/// entry's sequence number as `head` (the last one it may read).
pub(crate) fn removed(name: &str, r: Removal) -> AppError {
    RoomRefusal::Removed { name: name.to_string(), seq: r.seq }.into()
}

/// The idle period, ms (at least one second).
fn idle_ms(state: &AppState) -> i64 {
    i64::try_from(state.0.config.server.room_idle_secs.max(1).saturating_mul(1000)).unwrap_or(i64::MAX)
}
