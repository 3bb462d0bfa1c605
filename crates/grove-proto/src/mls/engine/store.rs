//! The engine's in-memory, change-recording implementation of the mls-rs storage traits.
//!
//! mls-rs writes a group with `Group::write_to_storage` and KeyPackage secrets when it generates
//! or uses a KeyPackage. [`RecordingStore`] keeps every row in memory (so mls-rs can read them
//! back: prior epochs, KeyPackages) and remembers which rows changed since the last
//! [`RecordingStore::drain`], which turns them into a [`Changes`] for the caller's database.
//!
//! Besides mls-rs' rows it keeps each group's *journal* (see the engine's
//! [module docs](super#the-journal)): rows the engine appends after operations it does not
//! write a snapshot for. Every snapshot mls-rs writes is a checkpoint: it empties the journal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mls_rs::mls_rs_codec::MlsDecode;
use mls_rs_core::error::IntoAnyError;
use mls_rs_core::group::{EpochRecord, GroupState, GroupStateStorage};
use mls_rs_core::key_package::{KeyPackageData, KeyPackageStorage};
use zeroize::Zeroizing;

use super::{
    Changes, EpochWrite, GroupId, GroupWrite, JournalRow, KeyPackageWrite, SnapshotWrite, StoredEpoch, StoredGroup,
    StoredKeyPackage, StoredState,
};

/// How many prior epochs a group keeps (the mls-rs default). Their records let a member decrypt
/// an application message sent in an earlier epoch that arrives after a commit.
pub const EPOCH_RETENTION: usize = 3;

/// A stored row that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key package storage: {0}")]
pub(crate) struct StoreError(String);

impl IntoAnyError for StoreError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

struct GroupRows {
    snapshot: Zeroizing<Vec<u8>>,
    epochs: BTreeMap<u64, Zeroizing<Vec<u8>>>,
    /// The journal since the snapshot, in order (row `i` has sequence number `i`).
    journal: Vec<Zeroizing<Vec<u8>>>,
}

impl GroupRows {
    fn empty() -> GroupRows {
        GroupRows { snapshot: Zeroizing::default(), epochs: BTreeMap::new(), journal: Vec::new() }
    }
}

/// The values a group's rows had before the first change since the last drain.
struct GroupUndo {
    /// Whether the group had rows.
    existed: bool,
    /// The earlier snapshot, once the snapshot was replaced or deleted since (moved here).
    snapshot: Option<Zeroizing<Vec<u8>>>,
    /// The earlier journal.
    journal: JournalUndo,
    /// Epoch id → its earlier record (`None`: there was none). Only epochs touched since.
    epochs: BTreeMap<u64, Option<Zeroizing<Vec<u8>>>>,
}

/// What a group's journal was before the first change since the last drain.
enum JournalUndo {
    /// It had this many rows; any beyond were appended since.
    Len(usize),
    /// It was emptied (by a checkpoint or a deletion) since; these were its rows.
    Rows(Vec<Zeroizing<Vec<u8>>>),
}

impl GroupUndo {
    fn before(rows: Option<&GroupRows>) -> GroupUndo {
        GroupUndo {
            existed: rows.is_some(),
            snapshot: None,
            journal: JournalUndo::Len(rows.map_or(0, |r| r.journal.len())),
            epochs: BTreeMap::new(),
        }
    }

    /// Keeps the journal `old` (just taken out of the rows), unless an earlier one is kept.
    fn journal_replaced(&mut self, old: Vec<Zeroizing<Vec<u8>>>) {
        if let JournalUndo::Len(n) = self.journal {
            let mut old = old;
            old.truncate(n);
            self.journal = JournalUndo::Rows(old);
        }
    }
}

/// Every row changed since the last drain, with its earlier value: the drain reports the
/// current value of each, a rollback puts the earlier values back. Earlier values are moved
/// here as rows are overwritten, so recording costs no copies.
#[derive(Default)]
struct Undo {
    groups: BTreeMap<Vec<u8>, GroupUndo>,
    key_packages: BTreeMap<Vec<u8>, Option<Zeroizing<Vec<u8>>>>,
}

#[derive(Default)]
struct Inner {
    groups: BTreeMap<Vec<u8>, GroupRows>,
    key_packages: BTreeMap<Vec<u8>, Zeroizing<Vec<u8>>>,
    undo: Undo,
}

impl Inner {
    fn touch_key_package(&mut self, id: &[u8]) {
        if !self.undo.key_packages.contains_key(id) {
            let old = self.key_packages.get(id).cloned();
            self.undo.key_packages.insert(id.to_vec(), old);
        }
    }
}

/// Rows of groups, prior epochs and KeyPackage secrets, shared by the engine and its mls-rs
/// `Client` (clones share the same rows).
#[derive(Clone, Default)]
pub(crate) struct RecordingStore {
    inner: Arc<Mutex<Inner>>,
}

impl RecordingStore {
    /// A store holding `state`, with nothing changed.
    pub(crate) fn from_state(state: StoredState) -> RecordingStore {
        let mut inner = Inner::default();
        for g in state.groups {
            let epochs = g.epochs.into_iter().map(|e| (e.epoch, e.data)).collect();
            let mut journal = g.journal;
            journal.sort_by_key(|r| r.seq);
            let journal = journal.into_iter().map(|r| r.entry).collect();
            inner.groups.insert(g.group_id.0, GroupRows { snapshot: g.snapshot, epochs, journal });
        }
        for kp in state.key_packages {
            inner.key_packages.insert(kp.id, kp.data);
        }
        RecordingStore { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock, and every method leaves the rows consistent,
        // so a poisoned lock (a panic elsewhere in the thread) still holds usable rows.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every row, as the caller's database holds it once every drained [`Changes`] is applied.
    pub(crate) fn rows(&self) -> StoredState {
        let inner = self.lock();
        StoredState {
            groups: inner
                .groups
                .iter()
                .map(|(id, rows)| StoredGroup {
                    group_id: GroupId(id.clone()),
                    snapshot: rows.snapshot.clone(),
                    epochs: rows
                        .epochs
                        .iter()
                        .map(|(epoch, data)| StoredEpoch { epoch: *epoch, data: data.clone() })
                        .collect(),
                    journal: journal_rows(&rows.journal, 0),
                })
                .collect(),
            key_packages: inner
                .key_packages
                .iter()
                .map(|(id, data)| StoredKeyPackage { id: id.clone(), data: data.clone() })
                .collect(),
        }
    }

    /// Whether the store has a snapshot of the group.
    pub(crate) fn has_group(&self, group_id: &[u8]) -> bool {
        self.lock().groups.contains_key(group_id)
    }

    /// Deletes a group and all its epoch records.
    pub(crate) fn purge_group(&self, group_id: &[u8]) {
        let mut inner = self.lock();
        let Inner { groups, undo, .. } = &mut *inner;
        let u = undo.groups.entry(group_id.to_vec()).or_insert_with(|| GroupUndo::before(groups.get(group_id)));
        if let Some(rows) = groups.remove(group_id) {
            if u.snapshot.is_none() {
                u.snapshot = Some(rows.snapshot);
            }
            u.journal_replaced(rows.journal);
            for (epoch, data) in rows.epochs {
                u.epochs.entry(epoch).or_insert(Some(data));
            }
        }
    }

    /// Appends a row to the group's journal. Answers the journal's length afterwards.
    pub(crate) fn append_journal(&self, group_id: &[u8], entry: Vec<u8>) -> usize {
        let mut inner = self.lock();
        let Inner { groups, undo, .. } = &mut *inner;
        let Some(rows) = groups.get_mut(group_id) else {
            // The engine journals only groups it wrote (every group is written when it is
            // created or joined); there is nothing to replay this row on.
            return 0;
        };
        undo.groups.entry(group_id.to_vec()).or_insert_with(|| GroupUndo::before(Some(rows)));
        rows.journal.push(Zeroizing::new(entry));
        rows.journal.len()
    }

    /// The group's journal, in order.
    pub(crate) fn journal(&self, group_id: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
        self.lock().groups.get(group_id).map(|rows| rows.journal.clone()).unwrap_or_default()
    }

    /// The length of the group's journal.
    pub(crate) fn journal_len(&self, group_id: &[u8]) -> usize {
        self.lock().groups.get(group_id).map_or(0, |rows| rows.journal.len())
    }

    /// How many of the group's journal rows are handshakes (see [`super::journal::is_handshake`]).
    pub(crate) fn journal_handshakes(&self, group_id: &[u8]) -> usize {
        self.lock()
            .groups
            .get(group_id)
            .map_or(0, |rows| rows.journal.iter().filter(|e| super::journal::is_handshake(e)).count())
    }

    /// Deletes a KeyPackage's secrets.
    pub(crate) fn delete_key_package(&self, id: &[u8]) {
        let mut inner = self.lock();
        inner.touch_key_package(id);
        inner.key_packages.remove(id);
    }

    /// Whether a KeyPackage's secrets are stored.
    pub(crate) fn has_key_package(&self, id: &[u8]) -> bool {
        self.lock().key_packages.contains_key(id)
    }

    /// Puts back every row changed since the last drain: the failed operation never happened.
    pub(crate) fn rollback(&self) {
        let mut inner = self.lock();
        let undo = std::mem::take(&mut inner.undo);
        for (id, u) in undo.groups {
            if !u.existed {
                inner.groups.remove(&id);
                continue;
            }
            // A purged group lost every epoch record, and each of them is in `u.epochs`; its
            // snapshot and journal are in `u` too.
            let rows = inner.groups.entry(id).or_insert_with(GroupRows::empty);
            if let Some(snapshot) = u.snapshot {
                rows.snapshot = snapshot;
            }
            match u.journal {
                JournalUndo::Len(n) => rows.journal.truncate(n),
                JournalUndo::Rows(old) => rows.journal = old,
            }
            for (epoch, old) in u.epochs {
                match old {
                    Some(data) => rows.epochs.insert(epoch, data),
                    None => rows.epochs.remove(&epoch),
                };
            }
        }
        for (id, old) in undo.key_packages {
            match old {
                Some(data) => inner.key_packages.insert(id, data),
                None => inner.key_packages.remove(&id),
            };
        }
    }

    /// Turns every row changed since the last drain into [`Changes`], and starts afresh.
    pub(crate) fn drain(&self) -> Changes {
        let mut inner = self.lock();
        let undo = std::mem::take(&mut inner.undo);
        let mut changes = Changes::default();
        for (id, u) in undo.groups {
            let write = match inner.groups.get(&id) {
                Some(rows) => {
                    // A new or rewritten snapshot empties the journal: every row after it is new.
                    let (snapshot, journal) = match u.journal {
                        JournalUndo::Len(n) if u.existed && u.snapshot.is_none() => {
                            (SnapshotWrite::Unchanged, journal_rows(&rows.journal, n))
                        }
                        _ => (SnapshotWrite::Checkpoint(rows.snapshot.clone()), journal_rows(&rows.journal, 0)),
                    };
                    GroupWrite {
                        group_id: GroupId(id),
                        snapshot,
                        epochs: u
                            .epochs
                            .into_keys()
                            .map(|epoch| EpochWrite { epoch, data: rows.epochs.get(&epoch).cloned() })
                            .collect(),
                        journal,
                    }
                }
                None => GroupWrite {
                    group_id: GroupId(id),
                    snapshot: SnapshotWrite::Delete,
                    epochs: u.epochs.into_keys().map(|epoch| EpochWrite { epoch, data: None }).collect(),
                    journal: Vec::new(),
                },
            };
            if write.snapshot == SnapshotWrite::Unchanged && write.journal.is_empty() && write.epochs.is_empty() {
                // Touched and put back (e.g. appended rows rolled back): nothing to write.
                continue;
            }
            changes.groups.push(write);
        }
        for id in undo.key_packages.into_keys() {
            let data = inner.key_packages.get(&id).cloned();
            changes.key_packages.push(KeyPackageWrite { id, data });
        }
        changes
    }
}

/// The rows of `journal` from index `from` on, numbered by their index.
fn journal_rows(journal: &[Zeroizing<Vec<u8>>], from: usize) -> Vec<JournalRow> {
    journal
        .iter()
        .enumerate()
        .skip(from)
        .map(|(seq, entry)| JournalRow { seq: seq as u64, entry: entry.clone() })
        .collect()
}

impl GroupStateStorage for RecordingStore {
    type Error = StoreError;

    fn state(&self, group_id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self.lock().groups.get(group_id).map(|rows| rows.snapshot.clone()))
    }

    fn epoch(&self, group_id: &[u8], epoch_id: u64) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self.lock().groups.get(group_id).and_then(|rows| rows.epochs.get(&epoch_id).cloned()))
    }

    fn write(
        &mut self,
        state: GroupState,
        epoch_inserts: Vec<EpochRecord>,
        epoch_updates: Vec<EpochRecord>,
    ) -> Result<(), Self::Error> {
        let mut inner = self.lock();
        let Inner { groups, undo, .. } = &mut *inner;
        let u = undo.groups.entry(state.id.clone()).or_insert_with(|| GroupUndo::before(groups.get(&state.id)));
        let rows = groups.entry(state.id).or_insert_with(GroupRows::empty);
        let old = std::mem::replace(&mut rows.snapshot, state.data);
        if u.snapshot.is_none() {
            u.snapshot = Some(old);
        }
        // The snapshot holds everything the journal recorded: a checkpoint.
        u.journal_replaced(std::mem::take(&mut rows.journal));
        for e in epoch_inserts {
            let old = rows.epochs.insert(e.id, e.data);
            u.epochs.entry(e.id).or_insert(old);
        }
        for e in epoch_updates {
            // An update of a record already trimmed is moot (as in mls-rs' in-memory storage).
            if let Some(data) = rows.epochs.get_mut(&e.id) {
                let old = std::mem::replace(data, e.data);
                u.epochs.entry(e.id).or_insert(Some(old));
            }
        }
        while rows.epochs.len() > EPOCH_RETENTION {
            if let Some((oldest, data)) = rows.epochs.pop_first() {
                u.epochs.entry(oldest).or_insert(Some(data));
            }
        }
        Ok(())
    }

    fn max_epoch_id(&self, group_id: &[u8]) -> Result<Option<u64>, Self::Error> {
        Ok(self.lock().groups.get(group_id).and_then(|rows| rows.epochs.keys().next_back().copied()))
    }
}

impl KeyPackageStorage for RecordingStore {
    type Error = StoreError;

    fn delete(&mut self, id: &[u8]) -> Result<(), Self::Error> {
        self.delete_key_package(id);
        Ok(())
    }

    fn insert(&mut self, id: Vec<u8>, pkg: KeyPackageData) -> Result<(), Self::Error> {
        use mls_rs::mls_rs_codec::MlsEncode;
        let data = pkg.mls_encode_to_vec().map_err(|e| StoreError(format!("encoding: {e}")))?;
        let mut inner = self.lock();
        inner.touch_key_package(&id);
        inner.key_packages.insert(id, Zeroizing::new(data));
        Ok(())
    }

    fn get(&self, id: &[u8]) -> Result<Option<KeyPackageData>, Self::Error> {
        let inner = self.lock();
        let Some(data) = inner.key_packages.get(id) else {
            return Ok(None);
        };
        KeyPackageData::mls_decode_exhaustive(data).map(Some).map_err(|e| StoreError(e.to_string()))
    }
}
