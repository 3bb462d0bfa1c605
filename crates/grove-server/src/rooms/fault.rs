//! Fault reports: a member cannot process an MLS commit the server accepted. A report may
//! carry evidence — the membership key of the commit's epoch, revealed because the commit's
//! membership tag does not verify under it — which the server checks with
//! `grove_proto::mls::fault`. A commit proven faulty is voided: a [`EntryKind::Void`] entry is
//! appended (the commit stays in the log), and the room goes back to its state before the
//! commit, durably with that entry.
//!
//! # Who is believed
//!
//! The server cannot tell the epoch's true membership key from any other 32 bytes: a member
//! who wanted an honest commit undone (the one removing it, say) could reveal a made-up key,
//! under which any tag fails. So one report is never enough: the commit is voided once **two
//! members other than its committer** have revealed **the same key** and that key makes the
//! tag fail. Two honest members who both hold the epoch's secrets derive the same key; a liar
//! needs an accomplice among the members to void anything. A report whose key makes the tag
//! verify is false by its own evidence: it is refused (`false_report`) and counted against
//! its sender, whose reports this room refuses after [`MAX_FALSE_REPORTS`].
//!
//! A room with only the committer and one other member cannot void: the other member heals by
//! other means (see docs/security.md).
//!
//! # An admin's void
//!
//! A fault nobody can prove and nobody can heal by resync (no member but the committer could
//! process the commit: a wrong confirmation tag, say) is ended by an admin of the room: a
//! report with `admin_void` voids the room's last commit on the admin's word, as a proven one
//! is voided. The room goes back to the epoch every other member holds. An admin could so undo
//! an honest commit (its committer would then be ahead of the room), as it could remove any
//! member: the room's policy trusts its admins.
//!
//! Reports are kept in the store (`Store::record_report`: per room, for [`KEPT_COMMITS`]
//! reported commits), and so are false reports: a restart, or another instance on the same
//! PostgreSQL database, sees the same.

use std::collections::HashSet;

use grove_proto::mls::fault::membership_tag_verifies;
use grove_proto::mls::hub::HubGroup;
use grove_store::{AppendOutcome, NewEntry, StateUpdate};
use grove_wire::api::{Entry, EntryKind, FaultReport, ReportOutcome, Void};
use grove_wire::policy::Role;
use grove_wire::UserId;

use super::handle::{RoomHandle, Slot};
use crate::error::{AppError, AppResult, RequestRefusal, RoomRefusal, ServerRefusal};
use crate::state::AppState;

/// How many false reports a member may make in one room before its reports there are refused.
pub(crate) const MAX_FALSE_REPORTS: u32 = 3;

/// How many reported commits a room remembers reports for.
const KEPT_COMMITS: usize = 16;

/// How many distinct members, none the committer, must reveal the same key.
const AGREEING_REPORTERS: usize = 2;

/// Judges a report of `user` about the commit at `req.seq`; voids the commit once proven.
pub(crate) async fn report(
    state: &AppState,
    room: &RoomHandle,
    user: UserId,
    req: FaultReport,
) -> AppResult<ReportOutcome> {
    if req.membership_key.as_ref().is_some_and(|k| k.len() != 32) {
        return Err(RequestRefusal::MembershipKeyLength.into());
    }
    let falses = state.0.store.false_reports(room.id, &user, false).await?;
    if falses >= MAX_FALSE_REPORTS {
        return Err(RoomRefusal::TooManyFalseReports { falses }.into());
    }
    let mut slot = room.slot.write().await;
    let (commit, before) = reported_commit(state, room, &slot, &user, req.seq).await?;
    if let Some(key) = &req.membership_key {
        let context = before.group_context().map_err(|e| AppError::internal("encoding a group context", e))?;
        match membership_tag_verifies(&commit.body, &context, key) {
            Ok(false) => {}
            Ok(true) => {
                let n = state.0.store.false_reports(room.id, &user, true).await?;
                state.0.metrics.fault_report("false");
                tracing::warn!(room = %room.name, reporter = %user, seq = req.seq, false_reports = n, "false fault report");
                return Err(RoomRefusal::FalseReport { count: n, max: MAX_FALSE_REPORTS }.into());
            }
            Err(source) => return Err(RoomRefusal::ReportUncheckable { source }.into()),
        }
    }
    if req.admin_void {
        return admin_void(state, room, &mut slot, &commit, &before, user).await;
    }
    let seen = state.0.store.record_report(room.id, req.seq, &user, req.membership_key.clone(), KEPT_COMMITS).await?;
    let reports = seen.len() as u32;
    let agreeing: Vec<UserId> = match &req.membership_key {
        Some(key) => seen.iter().filter(|(_, k)| k.as_ref() == Some(key)).map(|(u, _)| *u).collect(),
        None => Vec::new(),
    };
    tracing::warn!(room = %room.name, reporter = %user, seq = req.seq, committer = %commit.sender,
        evidence = req.membership_key.is_some(), reason = %req.reason.chars().take(200).collect::<String>(),
        "a member cannot process a commit");
    if agreeing.len() < AGREEING_REPORTERS {
        state.0.metrics.fault_report("recorded");
        return Ok(ReportOutcome { void_seq: None, reports, agreeing: agreeing.len() as u32 });
    }
    let void_seq = void(state, room, &mut slot, &commit, &before, agreeing.clone(), "membership_tag").await?;
    drop(slot);
    state.0.store.forget_reports(room.id, commit.seq).await?;
    state.0.metrics.fault_report("voided");
    Ok(ReportOutcome { void_seq: Some(void_seq), reports, agreeing: agreeing.len() as u32 })
}

/// The commit at `seq` if it is one the room can still go back on, with the room's public
/// state before it.
async fn reported_commit(
    state: &AppState,
    room: &RoomHandle,
    slot: &Slot,
    user: &UserId,
    seq: u64,
) -> AppResult<(Entry, HubGroup)> {
    let entry = state.0.store.read(room.id, seq.saturating_sub(1), 1).await?.into_iter().find(|e| e.seq == seq);
    let Some(commit) = entry.filter(|e| e.kind == EntryKind::Commit) else {
        return Err(RoomRefusal::ReportNotCommit { seq }.into());
    };
    if &commit.sender == user {
        return Err(RoomRefusal::ReportOwnCommit.into());
    }
    let restore = |bytes: Option<Vec<u8>>, which: u64| -> AppResult<HubGroup> {
        let bytes = bytes.ok_or(RoomRefusal::ReportTooOld { epoch: which })?;
        HubGroup::restore(&bytes).map_err(|e| AppError::internal("cannot restore a kept MLS state", e))
    };
    let epoch = commit.epoch;
    if slot.epoch <= epoch {
        return Err(RoomRefusal::ReportVoided { seq }.into());
    }
    let before = restore(state.0.store.room_state(room.id, epoch).await?, epoch)?;
    let after = restore(state.0.store.room_state(room.id, epoch + 1).await?, epoch + 1)?;
    // The commit in effect for the next epoch is this one exactly when its outcome has the
    // group context the room keeps for that epoch (the context names the commit through its
    // transcript hash); else the room went back past it and on by another commit.
    let ours = before.check_commit(&commit.body, &commit.sender).map_err(|e| {
        AppError::internal("a stored commit no longer validates against its epoch's state", format!("{e}"))
    })?;
    let context = |g: &HubGroup| g.group_context().map_err(|e| AppError::internal("encoding a group context", e));
    if context(&ours.next)? != context(&after)? {
        return Err(RoomRefusal::ReportVoided { seq }.into());
    }
    if !before.is_member(user) {
        return Err(RoomRefusal::ReportNotMemberThen.into());
    }
    Ok((commit, before))
}

/// An admin's void of the room's last commit, on its word (see [`FaultReport::admin_void`]):
/// the signer must be an admin or owner in the policy of the commit's epoch, and the commit
/// the room's last (nothing made on top of it is thrown away).
async fn admin_void(
    state: &AppState,
    room: &RoomHandle,
    slot: &mut Slot,
    commit: &Entry,
    before: &HubGroup,
    user: UserId,
) -> AppResult<ReportOutcome> {
    if before.policy().is_none_or(|p| p.role_of(&user) < Role::Admin) {
        return Err(RoomRefusal::VoidNotAdmin.into());
    }
    if commit.epoch.checked_add(1) != Some(slot.epoch) {
        return Err(RoomRefusal::VoidNotLast.into());
    }
    let void_seq = void(state, room, slot, commit, before, vec![user], "admin").await?;
    state.0.store.forget_reports(room.id, commit.seq).await?;
    state.0.metrics.fault_report("voided");
    Ok(ReportOutcome { void_seq: Some(void_seq), reports: 1, agreeing: 0 })
}

/// Appends the void of `commit` and puts the room back in its state before it.
async fn void(
    state: &AppState,
    room: &RoomHandle,
    slot: &mut Slot,
    commit: &Entry,
    before: &HubGroup,
    reporters: Vec<UserId>,
    reason: &str,
) -> AppResult<u64> {
    let members = before.members();
    let after: HashSet<&UserId> = members.iter().collect();
    let removed = slot.members.iter().filter(|m| !after.contains(m)).copied().collect();
    let added = members.iter().filter(|m| !slot.is_member(m)).copied().collect();
    let body = Void {
        voided: commit.seq,
        committer: commit.sender,
        epoch: commit.epoch,
        reporters: reporters.clone(),
        reason: reason.to_string(),
    };
    let body = serde_json::to_vec(&body).map_err(|e| AppError::internal("encoding a void", e))?;
    let ts = state.now();
    let sender = reporters.last().copied().unwrap_or(commit.sender);
    let snapshot = before.snapshot().map_err(|e| AppError::internal("cannot snapshot MLS state", e))?;
    let entry = NewEntry {
        kind: EntryKind::Void,
        epoch: commit.epoch,
        sender,
        ts,
        body: body.clone(),
        update: Some(StateUpdate {
            expected_state_version: slot.state_version,
            new_epoch: commit.epoch,
            state: snapshot,
            members: members.clone(),
            admins: Vec::new(),
            removed,
            added,
        }),
    };
    match state.0.store.append(room.id, entry).await? {
        AppendOutcome::Appended { seq, epoch } => {
            slot.epoch = epoch;
            slot.state_version += 1;
            slot.set_members(members);
            slot.hub = Some(before.clone());
            state.0.metrics.entry_appended(EntryKind::Void.as_str());
            tracing::warn!(room = %room.name, voided = commit.seq, committer = %commit.sender, epoch, seq, reason,
                "commit voided");
            room.publish(Entry { seq, kind: EntryKind::Void, epoch, sender, ts, body });
            Ok(seq)
        }
        AppendOutcome::Conflict { .. } => {
            // Another instance moved the room on meanwhile: take its state; the reporters'
            // clients report again on their next sync if the commit still stands.
            if let Some(rec) = state.0.store.room(&room.name).await? {
                *slot = Slot::from_record(&rec)?;
            }
            Err(ServerRefusal::ReportRaced.into())
        }
        AppendOutcome::NoSuchRoom => Err(RoomRefusal::RoomGone.into()),
    }
}
