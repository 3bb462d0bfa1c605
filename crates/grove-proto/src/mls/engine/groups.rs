//! The engine's groups: [`GroupId`], the lazily loaded group map, loading a group (snapshot plus
//! journal replayed), and the journal's bounds.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use grove_wire::hex::Hex;
use mls_rs::Client;

use super::error::internal;
use super::error::GroupLoadError;
use super::store::RecordingStore;
use super::{journal, EngineConfig, EngineError, EngineGroup};
use crate::identity::UserId;
use crate::mls::error::Cause;
use crate::mls::identity::user_of;

/// An MLS group id (the raw bytes; 32 random bytes for groups this engine creates). Displayed
/// and parsed as lowercase hex.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub(super) Vec<u8>);

impl GroupId {
    /// Wraps raw group id bytes.
    pub fn new(bytes: Vec<u8>) -> GroupId {
        GroupId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Hex(&self.0).fmt(f)
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

/// Why a string is not a [`GroupId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a group id is an even number of hex digits")]
pub struct ParseGroupIdError;

impl FromStr for GroupId {
    type Err = ParseGroupIdError;

    fn from_str(s: &str) -> Result<GroupId, ParseGroupIdError> {
        grove_wire::hex::decode(s).map(GroupId).ok_or(ParseGroupIdError)
    }
}

/// Loads a group from the store: its snapshot, then its journal replayed.
pub(super) fn load_group(
    client: &Client<EngineConfig>,
    store: &RecordingStore,
    g: &GroupId,
) -> Result<EngineGroup, GroupLoadError> {
    let mut group = client.load_group(g.as_bytes()).map_err(|e| GroupLoadError::Snapshot(Cause::new(e)))?;
    journal::replay(&mut group, &store.journal(g.as_bytes()))?;
    Ok(group)
}

/// Loads a group on first use: its rows, checked to be this user's state of this group.
pub(super) fn load_checked(
    client: &Client<EngineConfig>,
    store: &RecordingStore,
    user: &UserId,
    g: &GroupId,
) -> Result<EngineGroup, GroupLoadError> {
    let group = load_group(client, store, g)?;
    if group.group_id() != g.as_bytes() {
        return Err(GroupLoadError::OtherGroup);
    }
    let me = group.current_member_signing_identity().map_err(|e| GroupLoadError::Snapshot(Cause::new(e)))?;
    if user_of(me).map_err(GroupLoadError::Credential)? != *user {
        return Err(GroupLoadError::OtherUser);
    }
    Ok(group)
}

/// The engine's groups. A group rebuilt from stored rows is loaded (its snapshot decoded, its
/// journal replayed) the first time it is used, so that starting an engine costs nothing per
/// group and using one group never pays for the others; a group whose rows do not load stays
/// an error ([`EngineError::CorruptState`]) on every use, the other groups unharmed.
#[derive(Default)]
pub(super) struct Groups(pub(super) BTreeMap<GroupId, OnceLock<Result<EngineGroup, GroupLoadError>>>);

impl Groups {
    /// A group in memory.
    pub(super) fn insert(&mut self, g: GroupId, group: EngineGroup) {
        self.0.insert(g, OnceLock::from(Ok(group)));
    }

    /// A group to load from the store on first use.
    pub(super) fn insert_stored(&mut self, g: GroupId) {
        self.0.insert(g, OnceLock::new());
    }

    pub(super) fn remove(&mut self, g: &GroupId) -> bool {
        self.0.remove(g).is_some()
    }

    pub(super) fn contains_key(&self, g: &GroupId) -> bool {
        self.0.contains_key(g)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &GroupId> {
        self.0.keys()
    }

    /// The group, if it is loaded (see [`MlsEngine::group`]).
    pub(super) fn get_mut(&mut self, g: &GroupId) -> Option<&mut EngineGroup> {
        self.0.get_mut(g)?.get_mut()?.as_mut().ok()
    }
}

/// When a group's journal is checkpointed (see [`MlsEngine::with_journal_bound`] and
/// [`MlsEngine::with_handshake_bound`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// A journal reaching this many rows is checkpointed.
    pub(super) rows: usize,
    /// A journal holding this many handshake rows is checkpointed.
    pub(super) handshakes: usize,
}

impl Bounds {
    /// Whether the group's journal reached a bound.
    pub(super) fn reached(&self, store: &RecordingStore, g: &GroupId) -> bool {
        store.journal_len(g.as_bytes()) >= self.rows || store.journal_handshakes(g.as_bytes()) >= self.handshakes
    }
}

/// Records `entry` in the group's journal; when the journal reaches a bound, writes the group's
/// snapshot instead (a checkpoint, which empties the journal).
pub(super) fn record(
    group: &mut EngineGroup,
    store: &RecordingStore,
    g: &GroupId,
    entry: Vec<u8>,
    bounds: Bounds,
) -> Result<(), EngineError> {
    store.append_journal(g.as_bytes(), entry);
    if bounds.reached(store, g) {
        group.write_to_storage().map_err(internal("writing the group"))?;
    }
    Ok(())
}
