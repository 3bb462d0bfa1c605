//! The Sender Keys *room engine*: one user's sender-keys rooms, sans-IO.
//!
//! It ties the cipher ([`SenderChain`], [`SenderKeyStore`]) to a room's signed membership
//! ([`SignedMembership`]): it keeps each room's membership *view* (verified admin signature,
//! versions one by one), the user's own chain per room (rotated on every membership change, by
//! age and by count, see [`RotationPolicy`]), and the receiver chains of the other members.
//!
//! The pairwise transport (Olm) is the caller's: the engine hands out the plaintext
//! distributions to encrypt for each member ([`Rotation::distributions`]) and takes the ones
//! that arrived with the user whose pairwise session delivered them
//! ([`SkEngine::receive_distribution`]).
//!
//! Rules the engine enforces:
//! - A membership version is accepted only if it names this room, is exactly the next version,
//!   and the policy of the version before lets its signer make the change
//!   ([`crate::policy::check_membership`], the rule the server applies too;
//!   [`SkEngine::apply_membership`]). A member may always sign its own leaving.
//! - A distribution is accepted only if it names the user whose pairwise session delivered it
//!   and that user is a member at the distribution's version; one for a version the view has not
//!   reached yet is held (bounded) until the view gets there; one for an older version is dropped.
//! - A message is decrypted only if it is of the view's version and from a member of it. The
//!   server accepts application entries of the current version only, and the log is read in
//!   order, so older chains are deleted when the view moves on (forward secrecy across
//!   membership changes, and a removed member's chain is gone).
//! - [`SkEngine::encrypt`] refuses to send on a stale view (the caller passes the version the
//!   server reported) and on a chain that must be rotated first.
//! - Members' home servers travel in the signed membership ([`SignedMembership::homes`]): the
//!   memberships this user signs name the homes it knows ([`SkEngine::set_known_homes`]) as
//!   [`crate::policy::check_homes`] lets it, and a version whose homes break that rule is
//!   refused like any other not allowed by the policy.
//! - A rotation's distribution is delivered member by member: [`SkEngine::mark_delivered`]
//!   records who got it, and the members still waiting ([`SkEngine::undelivered`]) get the
//!   same distribution later, so the chain is not rotated again for them and what was sent
//!   meanwhile becomes readable to them. The distribution is kept (secret) until every member
//!   got it or the chain is replaced.
//! - A message whose chain is unknown even after the mailbox was read is held
//!   ([`SkEngine::hold_message`], bounded): its distribution may still be on its way (its
//!   sender's pairwise delivery to this user is retried). [`SkEngine::take_readable`] decrypts
//!   the held messages whose chain has arrived since; a new membership version drops the rest.
//!
//! Every operation that changes state returns [`RoomChanges`]: the records for the caller to
//! persist in one transaction; [`SkEngine::load`] rebuilds the engine from them. A failed
//! operation changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use grove_wire::membership::SignedMembership;
use grove_wire::policy::RoomPolicy;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::store::ChainRef;
use super::{Decrypted, RotationPolicy, SenderChain, SenderKeyDistribution, SenderKeyError, SenderKeyStore};
use crate::identity::UserId;
use crate::policy::{Edit, PolicyError};

/// At most this many distributions are held for versions (or rooms) not reached yet.
pub const MAX_PENDING: usize = 256;
/// At most this many messages per room are held waiting for their chain.
pub const MAX_HELD: usize = 256;

/// Why a room-engine operation failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The cipher refused (see [`SenderKeyError::kind`]).
    #[error(transparent)]
    Cipher(#[from] SenderKeyError),
    /// The engine has no such room.
    #[error("no sender-keys room {0:?}")]
    UnknownRoom(String),
    /// The room is already known.
    #[error("the sender-keys room {0:?} already exists here")]
    RoomExists(String),
    /// A membership update is not valid: bad signature or shape, another room.
    #[error("invalid membership: {0}")]
    BadMembership(&'static str),
    /// A membership update is not the next version.
    #[error("membership version {got} does not follow the view's version {current}")]
    MembershipVersion {
        /// The view's version.
        current: u64,
        /// The update's version.
        got: u64,
    },
    /// The view is older than the server's: sync the room before sending.
    #[error("the membership view (version {view}) is behind the room's (version {server}): sync first")]
    StaleView {
        /// The view's version.
        view: u64,
        /// The version the server reported.
        server: u64,
    },
    /// The own chain must be rotated (and distributed) before sending.
    #[error("the sender chain must be rotated before sending")]
    NeedsRotation,
    /// The room's policy does not let the signer make this change.
    #[error("not allowed by the room's policy: {0}")]
    NotAllowed(#[source] PolicyError),
    /// A membership must be signed with the engine's own key.
    #[error("a membership is signed with one's own key")]
    WrongKey,
    /// The message's or distribution's sender is not a member at its version.
    #[error("{0} is not a member of the room at that version")]
    NotMember(UserId),
    /// A distribution for a version the view has already left.
    #[error("the distribution is for membership version {dist}, the view is at {view}")]
    StaleDistribution {
        /// The distribution's version.
        dist: u64,
        /// The view's version.
        view: u64,
    },
    /// Too many distributions are waiting for their version.
    #[error("too many distributions are waiting for a membership version")]
    TooManyPending,
    /// Stored state does not decode.
    #[error("corrupt stored sender-keys room state: {0}")]
    CorruptState(&'static str),
}

impl RoomError {
    /// Whether a message could not be decrypted only because no chain of its sender is held
    /// for its room and version (yet): its distribution may still arrive.
    pub fn is_missing_chain(&self) -> bool {
        matches!(
            self,
            RoomError::Cipher(
                SenderKeyError::UnknownChain | SenderKeyError::WrongRoom | SenderKeyError::WrongEpoch { .. }
            )
        )
    }

    /// Whether the input was hostile or damaged (drop it), as opposed to misuse or local state.
    pub fn is_rejected_input(&self) -> bool {
        match self {
            RoomError::Cipher(e) => e.kind() == super::ErrorKind::Rejected,
            RoomError::BadMembership(_)
            | RoomError::NotAllowed(_)
            | RoomError::MembershipVersion { .. }
            | RoomError::NotMember(_)
            | RoomError::StaleDistribution { .. }
            | RoomError::TooManyPending => true,
            _ => false,
        }
    }
}

/// One record to persist: `value` `Some` = upsert (secret: wiped on drop), `None` = delete.
pub struct Record {
    /// The record's key (stable; opaque to the caller).
    pub key: String,
    /// The new value, or deletion.
    pub value: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record").field("key", &self.key).field("len", &self.value.as_ref().map(|v| v.len())).finish()
    }
}

/// What an operation changed, for the caller to persist in one transaction, in order.
#[derive(Debug, Default)]
#[must_use]
pub struct RoomChanges {
    /// Records to write, in order (a later write of a key wins).
    pub records: Vec<Record>,
}

impl RoomChanges {
    /// Appends a later operation's changes.
    pub fn merge(&mut self, later: RoomChanges) {
        self.records.extend(later.records);
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn put(&mut self, key: String, value: Zeroizing<Vec<u8>>) {
        self.records.push(Record { key, value: Some(value) });
    }

    fn delete(&mut self, key: String) {
        self.records.push(Record { key, value: None });
    }

    fn chains(&mut self, c: super::Changes) {
        for w in c.writes {
            self.records.push(Record { key: rx_key(&w.chain), value: w.state });
        }
    }
}

/// A room's membership as this user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The room's name on its server (what memberships are signed for).
    pub name: String,
    /// The membership version.
    pub version: u64,
    /// The members, sorted.
    pub members: Vec<UserId>,
    /// The room's policy at this version (roles, bans, rights).
    pub policy: RoomPolicy,
    /// The signed membership of this version (absent at version 0: the creator alone).
    pub signed: Option<SignedMembership>,
}

impl View {
    fn is_member(&self, u: &UserId) -> bool {
        self.members.binary_search(u).is_ok()
    }

    /// The members' home servers the signed membership names (none at version 0).
    pub fn homes(&self) -> BTreeMap<UserId, String> {
        self.signed.as_ref().map(|m| m.homes.clone()).unwrap_or_default()
    }

    /// A member's home server as the signed membership names it.
    pub fn home_of(&self, user: &UserId) -> Option<&str> {
        self.signed.as_ref().and_then(|m| m.home_of(user))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RoomRecord {
    view: View,
    /// Whether every distribution of the own chain was handed to the transport.
    distributed: bool,
    /// The members the own chain's distribution has not reached yet (kept in `out/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    undelivered: Vec<UserId>,
}

struct RoomState {
    view: View,
    own: Option<SenderChain>,
    distributed: bool,
    undelivered: BTreeSet<UserId>,
    /// The own chain's distribution while some member has not got it.
    out: Option<Zeroizing<Vec<u8>>>,
}

/// A message held until its chain's distribution arrives.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldMessage {
    seq: u64,
    ts: i64,
    #[serde(with = "grove_wire::b64")]
    body: Vec<u8>,
}

/// The own chain's distribution and the members it has not reached yet
/// ([`SkEngine::undelivered`]).
pub struct Undelivered {
    /// The members still waiting.
    pub members: Vec<UserId>,
    /// The distribution ([`SenderKeyDistribution::to_bytes`]). Secret.
    pub distribution: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Undelivered").field("members", &self.members).finish_non_exhaustive()
    }
}

/// A held message that became readable ([`SkEngine::take_readable`]).
pub struct Readable {
    /// The log entry's sequence number, as given to [`SkEngine::hold_message`].
    pub seq: u64,
    /// Its timestamp, as given.
    pub ts: i64,
    /// The message.
    pub decrypted: Decrypted,
}

/// What applying a membership version changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipChange {
    /// The new version.
    pub version: u64,
    /// Members who joined.
    pub added: Vec<UserId>,
    /// Members who were removed or left.
    pub removed: Vec<UserId>,
    /// This user is no longer a member: the room's state is deleted.
    pub removed_me: bool,
    /// The version was already applied (our own update read back): nothing changed.
    pub already_applied: bool,
}

/// A fresh own chain and its distributions, one per other member.
pub struct Rotation {
    /// The version the chain is for.
    pub version: u64,
    /// (member, [`SenderKeyDistribution::to_bytes`]) for every other member: encrypt each over
    /// that member's pairwise session. Secret.
    pub distributions: Vec<(UserId, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation").field("version", &self.version).field("to", &self.distributions.len()).finish()
    }
}

/// What happened to a received distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributionOutcome {
    /// The chain was added (or was already known with the same keys).
    Accepted,
    /// Held until the view reaches the distribution's version (or the room is joined).
    Held,
}

impl std::fmt::Debug for Readable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readable").field("seq", &self.seq).finish_non_exhaustive()
    }
}

/// One user's sender-keys rooms. See the module docs.
pub struct SkEngine {
    me: UserId,
    policy: RotationPolicy,
    rooms: BTreeMap<String, RoomState>,
    receivers: SenderKeyStore,
    /// (from, distribution), waiting for their room or version.
    pending: Vec<(UserId, SenderKeyDistribution)>,
    /// Per room, messages waiting for their chain.
    held: BTreeMap<String, Vec<HeldMessage>>,
    /// Home servers this user knows (its own included), not persisted: see
    /// [`SkEngine::set_known_homes`].
    known_homes: BTreeMap<UserId, String>,
}

impl std::fmt::Debug for SkEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkEngine")
            .field("me", &self.me)
            .field("rooms", &self.rooms.keys().collect::<Vec<_>>())
            .field("chains", &self.receivers.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

const ROOM: &str = "room/";
const OWN: &str = "own/";
const RX: &str = "rx/";
const PENDING: &str = "pending";
const OUT: &str = "out/";
const HELD: &str = "held/";

fn rx_key(c: &ChainRef) -> String {
    format!("{RX}{}/{}/{}/{}", c.epoch, c.sender, c.chain_id, c.room)
}

impl SkEngine {
    /// An engine with no rooms.
    pub fn new(me: UserId, policy: RotationPolicy) -> SkEngine {
        SkEngine {
            me,
            policy,
            rooms: BTreeMap::new(),
            receivers: SenderKeyStore::new(),
            pending: Vec::new(),
            held: BTreeMap::new(),
            known_homes: BTreeMap::new(),
        }
    }

    /// The home servers this user knows (`HOST:PORT` or URLs), its own included. The
    /// memberships it signs name its own home, the homes of the members it adds and, if the
    /// room's policy lets it invite, those of members the membership names none for yet; the
    /// homes the previous version names stay as they are.
    pub fn set_known_homes(&mut self, homes: BTreeMap<UserId, String>) {
        self.known_homes = homes;
    }

    /// Rebuilds the engine from every record the caller persisted.
    pub fn load<I, K, V>(me: UserId, policy: RotationPolicy, records: I) -> Result<SkEngine, RoomError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut rooms = BTreeMap::new();
        let mut owns = Vec::new();
        let mut rx = Vec::new();
        let mut pending = Vec::new();
        let mut outs = Vec::new();
        let mut held: BTreeMap<String, Vec<HeldMessage>> = BTreeMap::new();
        for (k, v) in records {
            let (k, v) = (k.as_ref(), v.as_ref());
            if let Some(id) = k.strip_prefix(ROOM) {
                let r: RoomRecord = serde_json::from_slice(v).map_err(|_| RoomError::CorruptState("room record"))?;
                let state = RoomState {
                    view: r.view,
                    own: None,
                    distributed: r.distributed,
                    undelivered: r.undelivered.into_iter().collect(),
                    out: None,
                };
                rooms.insert(id.to_string(), state);
            } else if let Some(id) = k.strip_prefix(OUT) {
                outs.push((id.to_string(), Zeroizing::new(v.to_vec())));
            } else if let Some(rest) = k.strip_prefix(HELD) {
                let (_, room) = rest.split_once('/').ok_or(RoomError::CorruptState("held message key"))?;
                let m: HeldMessage = serde_json::from_slice(v).map_err(|_| RoomError::CorruptState("held message"))?;
                held.entry(room.to_string()).or_default().push(m);
            } else if let Some(id) = k.strip_prefix(OWN) {
                owns.push((id.to_string(), SenderChain::from_bytes(v)?));
            } else if k.starts_with(RX) {
                rx.push(v.to_vec());
            } else if k == PENDING {
                pending = decode_pending(v)?;
            } else {
                return Err(RoomError::CorruptState("unknown record"));
            }
        }
        for (id, chain) in owns {
            let room = rooms.get_mut(&id).ok_or(RoomError::CorruptState("own chain without its room"))?;
            room.own = Some(chain);
        }
        for (id, out) in outs {
            // A room forgotten in the same transaction leaves no `out/`; tolerate one anyway.
            if let Some(room) = rooms.get_mut(&id) {
                room.out = Some(out);
            }
        }
        for list in held.values_mut() {
            list.sort_by_key(|m| m.seq);
        }
        let receivers = SenderKeyStore::load(Default::default(), rx)?;
        Ok(SkEngine { me, policy, rooms, receivers, pending, held, known_homes: BTreeMap::new() })
    }

    /// The user.
    pub fn me(&self) -> UserId {
        self.me
    }

    /// A room's view.
    pub fn view(&self, room: &str) -> Result<&View, RoomError> {
        Ok(&self.room(room)?.view)
    }

    /// Whether the engine knows the room.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// The receiver chains held (for inspection and tests).
    pub fn receivers(&self) -> &SenderKeyStore {
        &self.receivers
    }

    /// How many distributions are held for later.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn room(&self, room: &str) -> Result<&RoomState, RoomError> {
        self.rooms.get(room).ok_or_else(|| RoomError::UnknownRoom(room.to_string()))
    }

    /// Creates room `room` (the id chains are bound to: the room's link) named `name` on its
    /// server, at version 0 with this user as its only member and admin.
    pub fn create_room(&mut self, room: &str, name: &str) -> Result<RoomChanges, RoomError> {
        super::check_room(room)?;
        if self.rooms.contains_key(room) {
            return Err(RoomError::RoomExists(room.to_string()));
        }
        let view = View {
            name: name.to_string(),
            version: 0,
            members: vec![self.me],
            policy: RoomPolicy::for_creator(self.me),
            signed: None,
        };
        let state = RoomState { view, own: None, distributed: false, undelivered: BTreeSet::new(), out: None };
        let mut changes = RoomChanges::default();
        changes.put(format!("{ROOM}{room}"), room_record(&state)?);
        self.rooms.insert(room.to_string(), state);
        Ok(changes)
    }

    /// Joins room `room` from an invitation that arrived over `inviter`'s pairwise session: the
    /// invitation's membership must verify, be signed by `inviter`, whom its policy lets invite,
    /// name this room and include this user. Distributions held for the room are applied.
    pub fn join_room(
        &mut self,
        room: &str,
        inviter: &UserId,
        membership: &SignedMembership,
    ) -> Result<RoomChanges, RoomError> {
        super::check_room(room)?;
        if self.rooms.contains_key(room) {
            return Err(RoomError::RoomExists(room.to_string()));
        }
        if !membership.verify() {
            return Err(RoomError::BadMembership("the signature or shape is invalid"));
        }
        if membership.signer != *inviter || !crate::policy::may_invite(&membership.policy, inviter) {
            return Err(RoomError::BadMembership("the invitation is not signed by a member who may invite"));
        }
        if membership.members.binary_search(&self.me).is_err() {
            return Err(RoomError::BadMembership("the invitation's membership does not include you"));
        }
        let view = View {
            name: membership.room.clone(),
            version: membership.version,
            members: membership.members.clone(),
            policy: membership.policy.clone(),
            signed: Some(membership.clone()),
        };
        let state = RoomState { view, own: None, distributed: false, undelivered: BTreeSet::new(), out: None };
        let mut changes = RoomChanges::default();
        changes.put(format!("{ROOM}{room}"), room_record(&state)?);
        self.rooms.insert(room.to_string(), state);
        changes.merge(self.release_pending(room));
        Ok(changes)
    }

    /// Signs the next membership version of `room` with `added` added and `removed` removed
    /// (removed members' roles go with them). Changes nothing: post it, then
    /// [`SkEngine::apply_membership`] it once the server accepted it. Whether the room's policy
    /// allows it is the server's to answer first, then every member's.
    pub fn next_membership(
        &self,
        room: &str,
        key: &SigningKey,
        added: &[UserId],
        removed: &[UserId],
    ) -> Result<SignedMembership, RoomError> {
        let view = &self.room(room)?.view;
        let policy = crate::policy::without(&view.policy, removed);
        self.sign_next(room, key, added, removed, policy)
    }

    /// Signs the next membership version of `room` with the policy edited (a ban of a member
    /// also removes it). Changes nothing, like [`SkEngine::next_membership`].
    pub fn next_policy(&self, room: &str, key: &SigningKey, edit: Edit) -> Result<SignedMembership, RoomError> {
        let view = &self.room(room)?.view;
        let removed: Vec<UserId> = edit.removes().filter(|u| view.is_member(u)).into_iter().collect();
        self.sign_next(room, key, &[], &removed, edit.apply(&view.policy))
    }

    fn sign_next(
        &self,
        room: &str,
        key: &SigningKey,
        added: &[UserId],
        removed: &[UserId],
        policy: RoomPolicy,
    ) -> Result<SignedMembership, RoomError> {
        let view = &self.room(room)?.view;
        if UserId(key.verifying_key().to_bytes()) != self.me {
            return Err(RoomError::WrongKey);
        }
        let members: Vec<UserId> = view.members.iter().chain(added).filter(|m| !removed.contains(m)).copied().collect();
        let homes = self.homes_to_sign(view, added);
        Ok(SignedMembership::sign_with_homes(key, &view.name, view.version + 1, members, policy, homes))
    }

    /// The homes the next version names: the view's, this user's own, those of the members
    /// added and, if this user may invite, those of members named without one (see
    /// [`crate::policy::check_homes`]). A home the view names is never changed but this user's.
    fn homes_to_sign(&self, view: &View, added: &[UserId]) -> BTreeMap<UserId, String> {
        let mut homes = view.homes();
        let valid = |h: &&String| grove_wire::membership::valid_home(h);
        if let Some(h) = self.known_homes.get(&self.me).filter(valid) {
            homes.insert(self.me, h.clone());
        }
        let fill = crate::policy::may_invite(&view.policy, &self.me);
        for (u, h) in self.known_homes.iter().filter(|(_, h)| valid(h)) {
            let named = homes.contains_key(u);
            if !named && (added.contains(u) || (fill && view.is_member(u))) {
                homes.insert(*u, h.clone());
            }
        }
        homes
    }

    /// Applies the next membership version of `room`, as read from the room's log (or as
    /// posted by this user). Checks signature, room, version and that the current view's policy
    /// lets the signer make the change. On any change the own chain is dropped (the next send rotates), and
    /// receiver chains of older versions are deleted. If this user was removed, every state of
    /// the room is deleted.
    pub fn apply_membership(
        &mut self,
        room: &str,
        m: &SignedMembership,
    ) -> Result<(MembershipChange, RoomChanges), RoomError> {
        let state = self.room(room)?;
        let view = &state.view;
        if m.version == view.version && view.signed.as_ref() == Some(m) {
            let change = MembershipChange { version: m.version, already_applied: true, ..Default::default() };
            return Ok((change, RoomChanges::default()));
        }
        if !m.verify() {
            return Err(RoomError::BadMembership("the signature or shape is invalid"));
        }
        if m.room != view.name {
            return Err(RoomError::BadMembership("signed for another room"));
        }
        if m.version != view.version + 1 {
            return Err(RoomError::MembershipVersion { current: view.version, got: m.version });
        }
        crate::policy::check_membership(&view.members, &view.policy, &m.members, &m.policy, m.signer)
            .map_err(RoomError::NotAllowed)?;
        crate::policy::check_homes(&view.members, &view.homes(), &view.policy, &m.members, &m.homes, m.signer)
            .map_err(RoomError::NotAllowed)?;
        let added: Vec<UserId> = m.members.iter().filter(|u| !view.is_member(u)).copied().collect();
        let removed: Vec<UserId> =
            view.members.iter().filter(|u| m.members.binary_search(u).is_err()).copied().collect();
        let removed_me = removed.contains(&self.me);
        let change = MembershipChange { version: m.version, added, removed, removed_me, already_applied: false };
        let mut changes = RoomChanges::default();
        if removed_me {
            changes.merge(self.forget_room(room));
            return Ok((change, changes));
        }
        let new_view = View {
            name: m.room.clone(),
            version: m.version,
            members: m.members.clone(),
            policy: m.policy.clone(),
            signed: Some(m.clone()),
        };
        let state = self.rooms.get_mut(room).ok_or_else(|| RoomError::UnknownRoom(room.to_string()))?;
        state.view = new_view;
        if state.own.take().is_some() {
            changes.delete(format!("{OWN}{room}"));
        }
        state.distributed = false;
        state.undelivered.clear();
        if state.out.take().is_some() {
            changes.delete(format!("{OUT}{room}"));
        }
        changes.put(format!("{ROOM}{room}"), room_record(state)?);
        changes.chains(self.receivers.forget_before_epoch(room, m.version));
        changes.merge(self.release_pending(room));
        // Held messages of older versions can no longer be read: their chains are gone.
        changes.merge(self.drop_held(room, |h| h.epoch < m.version));
        Ok((change, changes))
    }

    /// Deletes every state of `room` (left or removed).
    pub fn forget_room(&mut self, room: &str) -> RoomChanges {
        let mut changes = RoomChanges::default();
        if self.rooms.remove(room).is_some() {
            changes.delete(format!("{ROOM}{room}"));
            changes.delete(format!("{OWN}{room}"));
            changes.delete(format!("{OUT}{room}"));
        }
        changes.merge(self.drop_held(room, |_| true));
        changes.chains(self.receivers.forget_room(room));
        let before = self.pending.len();
        self.pending.retain(|(_, d)| d.room() != room);
        if self.pending.len() != before {
            changes.put(PENDING.to_string(), encode_pending(&self.pending));
        }
        changes
    }

    /// Whether the own chain of `room` must be replaced before the next message: none yet, made
    /// for another version, too old or too used for `policy`, or not fully distributed with no
    /// record of whom it still must reach (a rotation interrupted before its first delivery).
    /// A chain some members have not got yet is kept: see [`SkEngine::undelivered`]; its
    /// rotation by age or count waits for them (a new chain would leave them unable to read
    /// what was sent on this one), up to twice the policy's bounds.
    pub fn needs_rotation(&self, room: &str, now: u64) -> Result<bool, RoomError> {
        let s = self.room(room)?;
        let waiting = s.out.is_some();
        let overdue = RotationPolicy {
            max_age_secs: self.policy.max_age_secs.saturating_mul(2),
            max_messages: self.policy.max_messages.saturating_mul(2),
        };
        Ok(match &s.own {
            None => true,
            Some(c) => {
                c.epoch() != s.view.version
                    || (!s.distributed && !waiting)
                    || c.needs_rotation(now, if waiting { &overdue } else { &self.policy })
            }
        })
    }

    /// The current members the own chain's distribution of `room` has not reached yet, with that
    /// distribution (secret) to hand them; `None` if everyone has it (or there is no chain).
    pub fn undelivered(&self, room: &str) -> Result<Option<Undelivered>, RoomError> {
        let s = self.room(room)?;
        let Some(out) = &s.out else { return Ok(None) };
        let waiting: Vec<UserId> = s.undelivered.iter().filter(|u| s.view.is_member(u)).copied().collect();
        if waiting.is_empty() {
            return Ok(None);
        }
        Ok(Some(Undelivered { members: waiting, distribution: out.clone() }))
    }

    /// Records that the own chain's distribution of `room` was delivered to `users`; once every
    /// other current member has it, the kept distribution is deleted.
    pub fn mark_delivered(&mut self, room: &str, users: &[UserId]) -> Result<RoomChanges, RoomError> {
        let state = self.rooms.get_mut(room).ok_or_else(|| RoomError::UnknownRoom(room.to_string()))?;
        for u in users {
            state.undelivered.remove(u);
        }
        let view = &state.view;
        state.undelivered.retain(|u| view.is_member(u));
        let mut changes = RoomChanges::default();
        if state.undelivered.is_empty() {
            state.distributed = true;
            if state.out.take().is_some() {
                changes.delete(format!("{OUT}{room}"));
            }
        }
        changes.put(format!("{ROOM}{room}"), room_record(state)?);
        Ok(changes)
    }

    /// Makes a fresh own chain for `room` at the view's version and answers its distribution
    /// for every other current member. Persist the changes, hand every distribution to the
    /// pairwise transport, then call [`SkEngine::mark_distributed`].
    pub fn rotate(
        &mut self,
        room: &str,
        rng: &mut impl CryptoRngCore,
        now: u64,
    ) -> Result<(Rotation, RoomChanges), RoomError> {
        let me = self.me;
        let state = self.rooms.get_mut(room).ok_or_else(|| RoomError::UnknownRoom(room.to_string()))?;
        let chain = SenderChain::new(rng, room, state.view.version, me, now)?;
        let dist = chain.distribution();
        let bytes = dist.to_bytes();
        let distributions: Vec<(UserId, Zeroizing<Vec<u8>>)> =
            state.view.members.iter().filter(|m| **m != me).map(|m| (*m, bytes.clone())).collect();
        let mut changes = RoomChanges::default();
        changes.put(format!("{OWN}{room}"), chain.to_bytes());
        state.own = Some(chain);
        state.undelivered = distributions.iter().map(|(u, _)| *u).collect();
        state.distributed = state.undelivered.is_empty();
        if state.distributed {
            if state.out.take().is_some() {
                changes.delete(format!("{OUT}{room}"));
            }
        } else {
            changes.put(format!("{OUT}{room}"), bytes.clone());
            state.out = Some(bytes);
        }
        changes.put(format!("{ROOM}{room}"), room_record(state)?);
        let rotation = Rotation { version: state.view.version, distributions };
        Ok((rotation, changes))
    }

    /// Records that every distribution of the own chain of `room` was delivered.
    pub fn mark_distributed(&mut self, room: &str) -> Result<RoomChanges, RoomError> {
        let all: Vec<UserId> = self.room(room)?.undelivered.iter().copied().collect();
        self.mark_delivered(room, &all)
    }

    /// Encrypts `plaintext` for `room`. `server_version` is the room's membership version as the
    /// server last reported it: a view behind it is [`RoomError::StaleView`] (sync first); a chain
    /// that must be rotated is [`RoomError::NeedsRotation`]. Persist the changes before the
    /// message leaves. Answers the message and its version.
    pub fn encrypt(
        &mut self,
        room: &str,
        plaintext: &[u8],
        server_version: u64,
        now: u64,
    ) -> Result<(Vec<u8>, u64, RoomChanges), RoomError> {
        let view_version = self.room(room)?.view.version;
        if view_version != server_version {
            return Err(RoomError::StaleView { view: view_version, server: server_version });
        }
        if self.needs_rotation(room, now)? {
            return Err(RoomError::NeedsRotation);
        }
        let state = self.rooms.get_mut(room).ok_or_else(|| RoomError::UnknownRoom(room.to_string()))?;
        let chain = state.own.as_mut().ok_or(RoomError::NeedsRotation)?;
        let message = chain.encrypt(plaintext)?;
        let mut changes = RoomChanges::default();
        changes.put(format!("{OWN}{room}"), chain.to_bytes());
        Ok((message, view_version, changes))
    }

    /// Takes a distribution that arrived over the pairwise session of user `from`.
    pub fn receive_distribution(
        &mut self,
        from: &UserId,
        bytes: &[u8],
    ) -> Result<(DistributionOutcome, RoomChanges), RoomError> {
        let dist = SenderKeyDistribution::from_bytes(bytes)?;
        if dist.sender() != *from {
            return Err(SenderKeyError::WrongSender.into());
        }
        let held = match self.rooms.get(dist.room()) {
            None => true,
            Some(s) if dist.epoch() > s.view.version => true,
            Some(s) if dist.epoch() < s.view.version => {
                return Err(RoomError::StaleDistribution { dist: dist.epoch(), view: s.view.version })
            }
            Some(s) => {
                if !s.view.is_member(from) {
                    return Err(RoomError::NotMember(*from));
                }
                false
            }
        };
        let mut changes = RoomChanges::default();
        if held {
            if self.pending.len() >= MAX_PENDING {
                return Err(RoomError::TooManyPending);
            }
            self.pending.push((*from, dist));
            changes.put(PENDING.to_string(), encode_pending(&self.pending));
            return Ok((DistributionOutcome::Held, changes));
        }
        changes.chains(self.receivers.add_distribution(from, &dist)?);
        Ok((DistributionOutcome::Accepted, changes))
    }

    /// Decrypts a message of `room`: it must be of the view's version, from a current member,
    /// and pass every check of [`SenderKeyStore::decrypt`].
    pub fn decrypt(&mut self, room: &str, message: &[u8]) -> Result<(Decrypted, RoomChanges), RoomError> {
        let view = &self.room(room)?.view;
        let header = super::MessageHeader::parse(message)?;
        if header.room != room {
            return Err(SenderKeyError::WrongRoom.into());
        }
        if header.epoch != view.version {
            return Err(SenderKeyError::WrongEpoch { message_epoch: header.epoch }.into());
        }
        if !view.is_member(&header.sender) {
            return Err(RoomError::NotMember(header.sender));
        }
        let (d, c) = self.receivers.decrypt(message)?;
        let mut changes = RoomChanges::default();
        changes.chains(c);
        Ok((d, changes))
    }

    /// Holds a message of `room` (log entry `seq`, timestamp `ts`) whose chain is unknown, to
    /// decrypt once its distribution arrives ([`SkEngine::take_readable`]). Only a message of
    /// the view's version from another member is held, at most [`MAX_HELD`] per room (the
    /// oldest goes first). Answers whether it was held.
    pub fn hold_message(
        &mut self,
        room: &str,
        seq: u64,
        ts: i64,
        body: &[u8],
    ) -> Result<(bool, RoomChanges), RoomError> {
        let view = &self.room(room)?.view;
        let mut changes = RoomChanges::default();
        let Ok(header) = super::MessageHeader::parse(body) else { return Ok((false, changes)) };
        if header.room != room
            || header.epoch != view.version
            || !view.is_member(&header.sender)
            || header.sender == self.me
        {
            return Ok((false, changes));
        }
        let list = self.held.entry(room.to_string()).or_default();
        if list.iter().any(|h| h.seq == seq) {
            return Ok((true, changes));
        }
        let m = HeldMessage { seq, ts, body: body.to_vec() };
        let value = serde_json::to_vec(&m).map_err(|_| RoomError::CorruptState("cannot encode a held message"))?;
        changes.put(held_key(room, seq), Zeroizing::new(value));
        list.push(m);
        list.sort_by_key(|h| h.seq);
        while list.len() > MAX_HELD {
            let gone = list.remove(0);
            changes.delete(held_key(room, gone.seq));
        }
        Ok((true, changes))
    }

    /// How many messages of `room` are held waiting for their chain.
    pub fn held_len(&self, room: &str) -> usize {
        self.held.get(room).map_or(0, Vec::len)
    }

    /// Decrypts the held messages of `room` whose chain has arrived, in log order; drops those
    /// that can no longer be read (another version, a refused message) and keeps the others.
    pub fn take_readable(&mut self, room: &str) -> Result<(Vec<Readable>, RoomChanges), RoomError> {
        let mut out = Vec::new();
        let mut changes = RoomChanges::default();
        let Some(list) = self.held.remove(room) else { return Ok((out, changes)) };
        let mut keep = Vec::new();
        for h in list {
            match self.decrypt(room, &h.body) {
                Ok((decrypted, c)) => {
                    changes.merge(c);
                    changes.delete(held_key(room, h.seq));
                    out.push(Readable { seq: h.seq, ts: h.ts, decrypted });
                }
                // Only messages of the view's version are held: still no chain of their sender.
                Err(e) if e.is_missing_chain() => keep.push(h),
                Err(_) => changes.delete(held_key(room, h.seq)),
            }
        }
        if !keep.is_empty() {
            self.held.insert(room.to_string(), keep);
        }
        Ok((out, changes))
    }

    fn drop_held(&mut self, room: &str, gone: impl Fn(&super::MessageHeader) -> bool) -> RoomChanges {
        let mut changes = RoomChanges::default();
        let Some(list) = self.held.get_mut(room) else { return changes };
        list.retain(|h| {
            let drop = match super::MessageHeader::parse(&h.body) {
                Ok(header) => gone(&header),
                Err(_) => true,
            };
            if drop {
                changes.delete(held_key(room, h.seq));
            }
            !drop
        });
        if list.is_empty() {
            self.held.remove(room);
        }
        changes
    }

    /// Re-checks the held distributions of `room` against its view: accepts those of its
    /// version from members, drops those of older versions or from non-members, keeps the rest.
    fn release_pending(&mut self, room: &str) -> RoomChanges {
        let mut changes = RoomChanges::default();
        let Some(state) = self.rooms.get(room) else { return changes };
        let version = state.view.version;
        let before = self.pending.len();
        let mut keep = Vec::new();
        for (from, dist) in std::mem::take(&mut self.pending) {
            if dist.room() != room || dist.epoch() > version {
                keep.push((from, dist));
                continue;
            }
            if dist.epoch() == version && state.view.is_member(&from) {
                // A refused one (a reused chain id) is dropped like any hostile input.
                if let Ok(c) = self.receivers.add_distribution(&from, &dist) {
                    changes.chains(c);
                }
            }
        }
        self.pending = keep;
        if self.pending.len() != before {
            changes.put(PENDING.to_string(), encode_pending(&self.pending));
        }
        changes
    }
}

fn held_key(room: &str, seq: u64) -> String {
    format!("{HELD}{seq:020}/{room}")
}

fn room_record(state: &RoomState) -> Result<Zeroizing<Vec<u8>>, RoomError> {
    let rec = RoomRecord {
        view: state.view.clone(),
        distributed: state.distributed,
        undelivered: state.undelivered.iter().copied().collect(),
    };
    serde_json::to_vec(&rec).map(Zeroizing::new).map_err(|_| RoomError::CorruptState("cannot encode a room record"))
}

fn encode_pending(pending: &[(UserId, SenderKeyDistribution)]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for (from, d) in pending {
        let bytes = d.to_bytes();
        out.extend_from_slice(from.as_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_pending(mut v: &[u8]) -> Result<Vec<(UserId, SenderKeyDistribution)>, RoomError> {
    let bad = RoomError::CorruptState("pending distributions");
    let mut out = Vec::new();
    while !v.is_empty() {
        if v.len() < 36 {
            return Err(bad);
        }
        let from = UserId::from_slice(&v[..32]).ok_or(RoomError::CorruptState("pending distributions"))?;
        let len = u32::from_be_bytes([v[32], v[33], v[34], v[35]]) as usize;
        v = &v[36..];
        if v.len() < len {
            return Err(bad);
        }
        out.push((from, SenderKeyDistribution::from_bytes(&v[..len])?));
        v = &v[len..];
    }
    Ok(out)
}
