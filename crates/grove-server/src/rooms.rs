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
mod handle;
mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use grove_store::RoomId;
use grove_wire::{ErrorCode, UserId};

use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub(crate) use append::append;
pub(crate) use handle::{entry_frame, RoomHandle};
use policy::not_member;

/// The rooms this instance has loaded.
#[derive(Default)]
pub(crate) struct RoomService {
    rooms: Mutex<HashMap<String, Arc<RoomHandle>>>,
    /// The same rooms by storage id, for announcements of other instances' appends.
    by_id: Mutex<HashMap<RoomId, Arc<RoomHandle>>>,
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
