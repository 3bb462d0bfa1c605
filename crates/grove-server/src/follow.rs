//! Following the writes of other instances that share the store (several `grove serve` on one
//! PostgreSQL database).
//!
//! The store announces each group another instance committed ([`ForeignWrites`]: the rooms
//! appended to, the mailboxes deposited to; one announcement per committed group, not per
//! entry). One task per server turns an announcement into wake-ups: each named room that this
//! instance has loaded re-reads its log once after its head and hands the new entries to its
//! subscribers in order (reloading its public state first if a handshake entry is among them;
//! see `RoomHandle::kick`), and each named mailbox's readers re-read. Rooms not loaded here have
//! no subscriber and no cached state, so they cost nothing. "Everything" (the store's listener
//! reconnected, or this task lagged behind the announcements) re-checks every loaded room and
//! mailbox: a missed announcement delays entries, never loses them.

use std::sync::Weak;

use grove_store::ForeignWrites;
use tokio::sync::broadcast;

use crate::state::{AppState, Shared};

/// Starts the follower task; it ends with the server state or the store's feed.
pub(crate) fn spawn(state: &AppState, rx: broadcast::Receiver<ForeignWrites>) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(follow(std::sync::Arc::downgrade(&state.0), rx));
        }
        Err(_) => tracing::error!(
            "the server state was built outside a Tokio runtime: other instances' writes will not wake this one"
        ),
    }
}

async fn follow(state: Weak<Shared>, mut rx: broadcast::Receiver<ForeignWrites>) {
    loop {
        let writes = match rx.recv().await {
            Ok(w) => w,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "fell behind other instances' announcements; re-checking every room");
                ForeignWrites::everything()
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(shared) = state.upgrade() else { return };
        let state = AppState(shared);
        if writes.everything {
            for room in state.0.rooms.loaded() {
                room.kick(&state);
            }
            state.0.mailboxes.poke_all();
            continue;
        }
        for id in writes.deleted_rooms {
            if let Some(room) = state.0.rooms.loaded_by_id(id) {
                state.0.rooms.forget(&room.name);
            }
        }
        for id in writes.rooms {
            if let Some(room) = state.0.rooms.loaded_by_id(id) {
                room.kick(&state);
            }
        }
        for owner in &writes.mailboxes {
            state.0.mailboxes.poke(owner);
        }
    }
}
