//! What an operation hands back for the caller to persist ([`Changes`]) and what the caller
//! hands back to rebuild an engine ([`StoredState`]).

use std::fmt;

use zeroize::Zeroizing;

use super::GroupId;
#[cfg(doc)]
use super::MlsEngine;

/// What persistent state an operation changed: write it in one transaction (see the
/// [module docs](super)). `Debug` prints only lengths, never secret bytes.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Group rows to write, one entry per group touched.
    pub groups: Vec<GroupWrite>,
    /// KeyPackage secret rows to write.
    pub key_packages: Vec<KeyPackageWrite>,
}

/// The writes for one group, to apply in this order: the snapshot (with what it implies for the
/// journal), the epoch records, then the new journal rows.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupWrite {
    /// The group.
    pub group_id: GroupId,
    /// What to do with the group's snapshot row.
    pub snapshot: SnapshotWrite,
    /// Prior-epoch records to upsert or delete.
    pub epochs: Vec<EpochWrite>,
    /// Journal rows to insert, in order (see the [module docs](super#the-journal)). Their
    /// sequence numbers continue the group's journal: after a [`SnapshotWrite::Checkpoint`]
    /// they start at 0, otherwise they follow the rows already stored.
    pub journal: Vec<JournalRow>,
}

/// What a [`GroupWrite`] does to the group's snapshot row.
#[derive(Clone, PartialEq, Eq)]
pub enum SnapshotWrite {
    /// Leave the snapshot and the journal rows stored so far as they are (the write only adds
    /// journal rows).
    Unchanged,
    /// A checkpoint: upsert the snapshot (mls-rs' serialised state, secret) and delete every
    /// journal row of the group.
    Checkpoint(Zeroizing<Vec<u8>>),
    /// Delete the group with all its epoch records and journal rows.
    Delete,
}

impl SnapshotWrite {
    /// The snapshot a [`SnapshotWrite::Checkpoint`] writes.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            SnapshotWrite::Checkpoint(s) => Some(s),
            _ => None,
        }
    }
}

/// One row of a group's journal: what happened to the group since its snapshot, in the
/// engine's own encoding (opaque to the caller). The key is `(group, seq)`.
#[derive(Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// The row's position in the journal: 0, 1, 2, … since the last checkpoint.
    pub seq: u64,
    /// The entry (it may hold a received message's ciphertext).
    pub entry: Zeroizing<Vec<u8>>,
}

/// The write for one prior-epoch record of a group.
#[derive(Clone, PartialEq, Eq)]
pub struct EpochWrite {
    /// The epoch number.
    pub epoch: u64,
    /// `Some`: upsert (secret). `None`: delete.
    pub data: Option<Zeroizing<Vec<u8>>>,
}

/// The write for one KeyPackage's secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPackageWrite {
    /// The KeyPackage reference (RFC 9420 `KeyPackageRef`), the row's key.
    pub id: Vec<u8>,
    /// `Some`: upsert (secret). `None`: delete.
    pub data: Option<Zeroizing<Vec<u8>>>,
}

impl Changes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.key_packages.is_empty()
    }

    /// Appends `later` (the changes of an operation made after those in `self`), so that both
    /// can be written in one transaction. Later writes to a row replace earlier ones.
    pub fn merge(&mut self, later: Changes) {
        for g in later.groups {
            match self.groups.iter_mut().find(|w| w.group_id == g.group_id) {
                None => self.groups.push(g),
                Some(w) => {
                    match g.snapshot {
                        // Deleting the group deletes every epoch record and journal row,
                        // including those written earlier in the batch.
                        SnapshotWrite::Delete => {
                            *w = g;
                            continue;
                        }
                        // A checkpoint deletes the journal rows written earlier in the batch.
                        SnapshotWrite::Checkpoint(snapshot) => {
                            w.snapshot = SnapshotWrite::Checkpoint(snapshot);
                            w.journal = g.journal;
                        }
                        SnapshotWrite::Unchanged => w.journal.extend(g.journal),
                    }
                    for e in g.epochs {
                        match w.epochs.iter_mut().find(|x| x.epoch == e.epoch) {
                            Some(x) => *x = e,
                            None => w.epochs.push(e),
                        }
                    }
                }
            }
        }
        for k in later.key_packages {
            match self.key_packages.iter_mut().find(|x| x.id == k.id) {
                Some(x) => *x = k,
                None => self.key_packages.push(k),
            }
        }
    }
}

impl fmt::Debug for SnapshotWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotWrite::Unchanged => f.write_str("unchanged"),
            SnapshotWrite::Checkpoint(s) => write!(f, "checkpoint: {} bytes", s.len()),
            SnapshotWrite::Delete => f.write_str("delete"),
        }
    }
}

impl fmt::Debug for JournalRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "journal {}: {} bytes", self.seq, self.entry.len())
    }
}

fn len_of(data: &Option<Zeroizing<Vec<u8>>>) -> String {
    match data {
        Some(d) => format!("{} bytes", d.len()),
        None => "delete".into(),
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes").field("groups", &self.groups).field("key_packages", &self.key_packages).finish()
    }
}

impl fmt::Debug for GroupWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupWrite")
            .field("group_id", &self.group_id)
            .field("snapshot", &self.snapshot)
            .field("epochs", &self.epochs)
            .field("journal", &self.journal)
            .finish()
    }
}

impl fmt::Debug for EpochWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}: {}", self.epoch, len_of(&self.data))
    }
}

impl fmt::Debug for KeyPackageWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key package {}: {}", GroupId(self.id.clone()), len_of(&self.data))
    }
}

/// Every row the caller persisted (the sum of all [`Changes`] it applied), to rebuild an engine
/// with [`MlsEngine::load_with_rng`]. `Debug` prints only lengths.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct StoredState {
    /// The groups, each with its prior-epoch records.
    pub groups: Vec<StoredGroup>,
    /// KeyPackage secrets.
    pub key_packages: Vec<StoredKeyPackage>,
}

/// One group's stored rows.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredGroup {
    /// The group.
    pub group_id: GroupId,
    /// The snapshot.
    pub snapshot: Zeroizing<Vec<u8>>,
    /// The prior-epoch records, in any order.
    pub epochs: Vec<StoredEpoch>,
    /// The journal since the snapshot, in any order (the engine replays it by `seq`, which must
    /// run 0, 1, 2, … without a gap).
    pub journal: Vec<JournalRow>,
}

/// One stored prior-epoch record.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredEpoch {
    /// The epoch number.
    pub epoch: u64,
    /// The record.
    pub data: Zeroizing<Vec<u8>>,
}

/// One stored KeyPackage's secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKeyPackage {
    /// The KeyPackage reference.
    pub id: Vec<u8>,
    /// The secrets.
    pub data: Zeroizing<Vec<u8>>,
}

impl StoredState {
    /// Applies `changes` as a database would (upserts and deletes), e.g. to keep an in-memory
    /// copy of what was persisted.
    pub fn apply(&mut self, changes: &Changes) {
        for w in &changes.groups {
            let pos = self.groups.iter().position(|g| g.group_id == w.group_id);
            let group = match (&w.snapshot, pos) {
                (SnapshotWrite::Delete, Some(i)) => {
                    self.groups.remove(i);
                    continue;
                }
                (SnapshotWrite::Delete, None) => continue,
                (SnapshotWrite::Checkpoint(snapshot), Some(i)) => {
                    let group = &mut self.groups[i];
                    group.snapshot = snapshot.clone();
                    group.journal.clear();
                    group
                }
                (SnapshotWrite::Checkpoint(snapshot), None) => {
                    self.groups.push(StoredGroup {
                        group_id: w.group_id.clone(),
                        snapshot: snapshot.clone(),
                        epochs: Vec::new(),
                        journal: Vec::new(),
                    });
                    let last = self.groups.len() - 1;
                    &mut self.groups[last]
                }
                (SnapshotWrite::Unchanged, Some(i)) => &mut self.groups[i],
                // Journal rows of a group that has no snapshot: a database would keep them
                // (and the engine refuse to load them); there is no group here to add them to.
                (SnapshotWrite::Unchanged, None) => continue,
            };
            group.journal.extend(w.journal.iter().cloned());
            for e in &w.epochs {
                let at = group.epochs.iter().position(|x| x.epoch == e.epoch);
                match (&e.data, at) {
                    (Some(data), Some(i)) => group.epochs[i].data = data.clone(),
                    (Some(data), None) => group.epochs.push(StoredEpoch { epoch: e.epoch, data: data.clone() }),
                    (None, Some(i)) => {
                        group.epochs.remove(i);
                    }
                    (None, None) => {}
                }
            }
        }
        for k in &changes.key_packages {
            let at = self.key_packages.iter().position(|x| x.id == k.id);
            match (&k.data, at) {
                (Some(data), Some(i)) => self.key_packages[i].data = data.clone(),
                (Some(data), None) => self.key_packages.push(StoredKeyPackage { id: k.id.clone(), data: data.clone() }),
                (None, Some(i)) => {
                    self.key_packages.remove(i);
                }
                (None, None) => {}
            }
        }
    }

    /// The same rows in a canonical order (groups by id, epochs by number, KeyPackages by id),
    /// for comparisons.
    pub fn sorted(mut self) -> StoredState {
        self.groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        for g in &mut self.groups {
            g.epochs.sort_by_key(|e| e.epoch);
            g.journal.sort_by_key(|r| r.seq);
        }
        self.key_packages.sort_by(|a, b| a.id.cmp(&b.id));
        self
    }
}

impl fmt::Debug for StoredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredState").field("groups", &self.groups).field("key_packages", &self.key_packages).finish()
    }
}

impl fmt::Debug for StoredGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let epochs: Vec<String> = self.epochs.iter().map(|e| format!("{}: {} bytes", e.epoch, e.data.len())).collect();
        f.debug_struct("StoredGroup")
            .field("group_id", &self.group_id)
            .field("snapshot", &format_args!("{} bytes", self.snapshot.len()))
            .field("epochs", &epochs)
            .field("journal", &self.journal)
            .finish()
    }
}

impl fmt::Debug for StoredKeyPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key package {}: {} bytes", GroupId(self.id.clone()), self.data.len())
    }
}
