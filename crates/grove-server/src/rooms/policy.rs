//! The room rules an entry is judged by, against the room's public state as this instance
//! knows it: membership, epochs and the epoch window, sender-keys membership versions, and MLS
//! validation by grove-proto's hub (its refusals as HTTP answers), and the room policy of
//! sender-keys memberships (grove-proto's `policy::check_membership`, the rule clients apply).

use std::collections::BTreeMap;

use grove_proto::mls::hub::{HubError, HubGroup};
use grove_proto::policy::PolicyError;
use grove_wire::api::{AppendEntry, EntryKind, ResyncOffer, RoomMode};
use grove_wire::membership::SignedMembership;
use grove_wire::policy::RoomPolicy;
use grove_wire::UserId;

use super::handle::{RoomHandle, Slot};
use crate::error::{AppError, AppResult, RoomRefusal};
use crate::state::AppState;

pub(super) fn not_member(name: &str) -> AppError {
    RoomRefusal::NotMember { name: name.to_string() }.into()
}

/// A member's resync offer (MLS rooms only): a GroupInfo of the room's current epoch, sealed for
/// the members stuck at an earlier one. The server cannot open it; it checks its shape and that
/// it is of the current epoch (an offer of a past epoch helps nobody).
fn check_resync_offer(room: &RoomHandle, slot: &Slot, req: &AppendEntry) -> AppResult<()> {
    if req.epoch != slot.epoch {
        return Err(RoomRefusal::WrongEpoch { current: slot.epoch, head: room.head(), yours: req.epoch }.into());
    }
    let offer: ResyncOffer =
        serde_json::from_slice(&req.body).map_err(|source| RoomRefusal::ResyncNotJson { source })?;
    if offer.stuck_epoch >= req.epoch || offer.sealed.is_empty() {
        return Err(RoomRefusal::ResyncOfferShape.into());
    }
    Ok(())
}

/// Checks an application message (or a resync offer) against the room's public state as this
/// instance knows it.
pub(super) fn check_application(
    state: &AppState,
    room: &RoomHandle,
    slot: &Slot,
    user: UserId,
    req: &AppendEntry,
) -> AppResult<()> {
    if !slot.is_member(&user) {
        return Err(not_member(&room.name));
    }
    if req.kind == EntryKind::Resync {
        return check_resync_offer(room, slot, req);
    }
    if let Some(hub) = &slot.hub {
        let msg_epoch = match hub.check_application(&req.body) {
            Ok(epoch) => epoch,
            Err(HubError::WrongEpoch { message_epoch, current_epoch }) => {
                return Err(
                    RoomRefusal::WrongEpoch { current: current_epoch, head: room.head(), yours: message_epoch }.into()
                )
            }
            Err(source) => return Err(RoomRefusal::NotApplication { source }.into()),
        };
        if msg_epoch != req.epoch {
            return Err(RoomRefusal::EpochMismatch { said: req.epoch, made: msg_epoch }.into());
        }
    }
    if room.mode == RoomMode::SenderKeys {
        check_sender_keys_version(slot, req, room.head())?;
    }
    if req.epoch > slot.epoch {
        return Err(RoomRefusal::WrongEpoch { current: slot.epoch, head: room.head(), yours: req.epoch }.into());
    }
    let window = state.0.config.limits.epoch_window;
    if req.epoch.saturating_add(window) < slot.epoch {
        return Err(RoomRefusal::EpochTooOld { epoch: req.epoch, window, current: slot.epoch }.into());
    }
    Ok(())
}

/// What a validated handshake entry changes.
pub(super) struct Change {
    pub(super) new_epoch: u64,
    pub(super) members: Vec<UserId>,
    pub(super) admins: Vec<UserId>,
    pub(super) state: Vec<u8>,
    pub(super) hub: Option<HubGroup>,
    pub(super) sk_policy: Option<RoomPolicy>,
    /// Sender keys: the members' home servers the membership names.
    pub(super) sk_homes: Option<BTreeMap<UserId, String>>,
}

/// A sender-keys message is accepted only at the current membership version: one made on an
/// older view may be readable by a member removed since (Signal-Android issue 7103), so a sender
/// whose view is stale must sync, rotate and re-encrypt. (MLS rooms keep the epoch window: an
/// MLS message of an older epoch is not readable by members removed since.)
pub(super) fn check_sender_keys_version(slot: &Slot, req: &AppendEntry, head: u64) -> AppResult<()> {
    if req.epoch != slot.epoch {
        return Err(RoomRefusal::WrongEpoch { current: slot.epoch, head, yours: req.epoch }.into());
    }
    Ok(())
}

pub(super) fn check_membership(
    state: &AppState,
    room: &RoomHandle,
    slot: &Slot,
    req: &AppendEntry,
) -> AppResult<Change> {
    let m: SignedMembership = serde_json::from_slice(&req.body).map_err(|_| RoomRefusal::MembershipNotJson)?;
    if !m.verify() {
        return Err(RoomRefusal::MembershipUnsigned.into());
    }
    if m.room != room.name {
        return Err(RoomRefusal::MembershipOtherRoom.into());
    }
    let next = slot.epoch.saturating_add(1);
    if m.version != next || req.epoch != m.version {
        return Err(RoomRefusal::MembershipVersion { current: slot.epoch, next }.into());
    }
    let mut before = slot.members.clone();
    before.sort();
    let policy =
        slot.sk_policy.as_ref().ok_or_else(|| AppError::internal("sender-keys room without a policy", &room.name))?;
    grove_proto::policy::check_membership(&before, policy, &m.members, &m.policy, m.signer).map_err(not_allowed)?;
    grove_proto::policy::check_homes(&before, &slot.sk_homes, policy, &m.members, &m.homes, m.signer)
        .map_err(not_allowed)?;
    if let Some(bad_id) = m.members.iter().find(|u| u.verifying_key().is_none()) {
        return Err(RoomRefusal::MembershipBadMember { member: *bad_id }.into());
    }
    let _ = state;
    Ok(Change {
        new_epoch: m.version,
        members: m.members.clone(),
        admins: m.admins(),
        state: req.body.clone(),
        hub: None,
        sk_policy: Some(m.policy),
        sk_homes: Some(m.homes),
    })
}

/// A change the room's policy does not allow, as an HTTP answer.
pub(crate) fn not_allowed(e: PolicyError) -> AppError {
    RoomRefusal::NotAllowed { source: e }.into()
}

/// A refused commit or proposal as an HTTP answer.
pub(super) fn commit_error(e: HubError, head: u64, is_commit: bool) -> AppError {
    RoomRefusal::Handshake { commit: is_commit, head, source: e }.into()
}
