//! Appending an entry: the ordering gate. Application messages under the room's read lock,
//! handshake entries under its write lock with the store's compare-and-set, retried when
//! another instance moved the room on.

use std::collections::HashSet;

use grove_store::{AppendOutcome, NewEntry, StateUpdate};
use grove_wire::api::{AppendEntry, Appended, Entry, EntryKind, RoomMode};
use grove_wire::UserId;

use super::handle::{RoomHandle, Slot};
use super::policy::{check_application, check_membership, commit_error, not_member, Change};
use crate::error::{AppError, AppResult, LimitRefusal, RoomRefusal};
use crate::state::AppState;

/// Appends an entry for `user`, enforcing membership, kinds, ordering and validation.
pub(crate) async fn append(state: &AppState, room: &RoomHandle, user: UserId, req: AppendEntry) -> AppResult<Appended> {
    let max = state.0.config.limits.max_entry_bytes;
    if req.body.len() as u64 > max {
        return Err(LimitRefusal::EntryTooLarge { max }.into());
    }
    match (room.mode, req.kind) {
        (_, EntryKind::Application) | (RoomMode::Mls, EntryKind::Resync) => {
            append_application(state, room, user, req).await
        }
        (RoomMode::Mls, EntryKind::Commit | EntryKind::Proposal) | (RoomMode::SenderKeys, EntryKind::Membership) => {
            let result = append_handshake(state, room, user, req, None).await;
            if let Err(e) = &result {
                state.0.metrics.commit_rejected(e.code().as_str());
            }
            result
        }
        (mode, kind) => Err(RoomRefusal::WrongKind { mode, kind }.into()),
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

/// Appends a link join (`crate::link_joins`): `user`'s external commit adding itself to an
/// MLS room, made with the link whose token hashes to `token_hash`. The link must admit it
/// when it is judged, under the room's write lock, and the use is counted once it is appended.
pub(crate) async fn append_link_join(
    state: &AppState,
    room: &RoomHandle,
    user: UserId,
    req: AppendEntry,
    token_hash: [u8; 32],
) -> AppResult<Appended> {
    let result = append_handshake(state, room, user, req, Some(token_hash)).await;
    if let Err(e) = &result {
        state.0.metrics.commit_rejected(e.code().as_str());
    }
    result
}

async fn append_handshake(
    state: &AppState,
    room: &RoomHandle,
    user: UserId,
    req: AppendEntry,
    link: Option<[u8; 32]>,
) -> AppResult<Appended> {
    let mut slot = room.slot.write().await;
    // Only a shared store can hold a newer state than ours.
    let mut refreshed = !state.0.shared_store;
    let mut conflicts = 0;
    loop {
        match try_handshake(state, room, &mut slot, user, &req, link).await? {
            Ok(appended) => {
                drop(slot);
                if let Some(token_hash) = link {
                    // Admitted under the write lock a moment ago; only another instance's join
                    // in between could have used the link up.
                    if let Err(refused) = state.0.store.use_link(room.id, token_hash, appended.ts).await? {
                        tracing::warn!(room = room.name, ?refused, "a link join was taken as the link ran out");
                    }
                }
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
                    return Err(RoomRefusal::WrongEpoch { current: epoch, head, yours: req.epoch }.into());
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
    link: Option<[u8; 32]>,
) -> AppResult<Result<Appended, Attempt>> {
    if let Some(token_hash) = link {
        let now = state.now();
        if let Err(refused) =
            grove_store::joins::admits(state.0.store.room_link(room.id).await?.as_ref(), &token_hash, now)
        {
            return Ok(Err(Attempt::Refused(crate::joins::refusal(refused))));
        }
    } else if !slot.is_member(&user) {
        return Ok(Err(Attempt::Refused(not_member(&room.name))));
    }
    let change = match req.kind {
        EntryKind::Membership => match check_membership(state, room, slot, req) {
            Ok(c) => c,
            Err(e) => return Ok(Err(Attempt::Refused(e))),
        },
        _ => {
            if req.epoch != slot.epoch {
                return Ok(Err(Attempt::Refused(
                    RoomRefusal::WrongEpoch { current: slot.epoch, head: room.head(), yours: req.epoch }.into(),
                )));
            }
            let hub = slot.hub.as_ref().ok_or_else(|| AppError::internal("MLS room without hub state", &room.name))?;
            let head = room.head();
            let checked = if link.is_some() {
                hub.check_link_join(&req.body, &user).map(|c| c.next).map_err(|e| commit_error(e, head, true))
            } else if req.kind == EntryKind::Commit {
                hub.check_commit(&req.body, &user).map(|c| c.next).map_err(|e| commit_error(e, head, true))
            } else {
                hub.check_proposal(&req.body, &user).map(|c| c.next).map_err(|e| commit_error(e, head, false))
            };
            let next = match checked {
                Ok(next) => next,
                Err(e) => return Ok(Err(Attempt::Refused(e))),
            };
            Change {
                new_epoch: next.epoch(),
                members: next.members(),
                admins: next.policy().map(|p| p.admins()).unwrap_or_default(),
                state: next.snapshot().map_err(|e| AppError::internal("cannot snapshot MLS state", e))?,
                hub: Some(next),
                sk_policy: None,
                sk_homes: None,
            }
        }
    };
    let limit = state.0.config.limits.members_per_room;
    if change.members.len() as u64 > limit {
        return Err(LimitRefusal::RoomTooBig { limit }.into());
    }
    let ts = state.now();
    // Who this entry removes (each may read the log up to and including it, and no further)
    // and who it adds (back).
    let after: HashSet<&UserId> = change.members.iter().collect();
    let removed = slot.members.iter().filter(|m| !after.contains(m)).copied().collect();
    let added = change.members.iter().filter(|m| !slot.is_member(m)).copied().collect();
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
            removed,
            added,
        }),
    };
    match store_append(state, room, entry).await? {
        AppendOutcome::Appended { seq, epoch } => {
            slot.epoch = epoch;
            slot.state_version += 1;
            slot.set_members(change.members);
            slot.admins = change.admins;
            if change.sk_policy.is_some() {
                slot.sk_policy = change.sk_policy;
            }
            if let Some(homes) = change.sk_homes {
                slot.sk_homes = homes;
            }
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
        AppendOutcome::NoSuchRoom => Err(RoomRefusal::RoomGone.into()),
    }
}
