//! An in-memory [`Store`]: one mutex over plain collections. For tests and the simulator;
//! nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use grove_wire::api::{ClaimedKey, Entry, KeyCount, KeyItemUpload, KeyKind, MailboxEntry};
use grove_wire::UserId;

use grove_wire::attachment::BlobId;

use crate::files::{CreateFileOutcome, FilePartOutcome, FileQuota, FileRecord, FileTotals, NewFile};
use crate::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, MailboxQuota, NewEntry, NewMail, NewRoom, PublishOutcome,
    Removal, Result, RoomId, RoomRecord, Store, StoreError,
};

/// An in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: Vec<(RoomRecord, Vec<Entry>)>,
    by_name: BTreeMap<String, RoomId>,
    mail: HashMap<UserId, Mailbox>,
    keys: HashMap<UserId, Keys>,
    states: HashMap<RoomId, BTreeMap<u64, Vec<u8>>>,
    removals: HashMap<(RoomId, UserId), Removal>,
    files: BTreeMap<BlobId, FileRecord>,
    /// Each recorded part's SHA-256, by blob and offset.
    part_hashes: BTreeMap<(BlobId, u64), [u8; 32]>,
    /// Rooms deleted (their slots in `rooms` stay, emptied, so that ids stay indexes).
    deleted: std::collections::HashSet<RoomId>,
    blocked: std::collections::BTreeSet<UserId>,
    links: HashMap<RoomId, crate::RoomLink>,
    joins: HashMap<RoomId, Vec<crate::JoinRequest>>,
    link_infos: HashMap<RoomId, crate::LinkGroupInfo>,
    /// Fault reports: per room, per reported commit, each reporter's revealed key.
    reports: HashMap<RoomId, BTreeMap<u64, CommitReports>>,
    false_reports: HashMap<(RoomId, UserId), u32>,
}

/// The reports of one commit: each reporter's revealed key.
type CommitReports = BTreeMap<UserId, Option<Vec<u8>>>;

#[derive(Debug, Default)]
struct Mailbox {
    last_seq: u64,
    entries: BTreeMap<u64, MailboxEntry>,
}

#[derive(Debug, Default)]
struct Keys {
    one_time: Vec<(KeyKind, Vec<u8>)>,
    last_resort: BTreeMap<&'static str, (KeyKind, Vec<u8>)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| StoreError::backend("memory store lock poisoned"))
    }
}

fn counts(keys: &Keys) -> Vec<KeyCount> {
    let mut out: Vec<KeyCount> = Vec::new();
    for kind in [KeyKind::MlsKeyPackage, KeyKind::OlmOneTime, KeyKind::OlmFallback] {
        let one_time = keys.one_time.iter().filter(|(k, _)| *k == kind).count() as u64;
        let last_resort = keys.last_resort.contains_key(kind.as_str());
        if one_time > 0 || last_resort {
            out.push(KeyCount { kind, one_time, last_resort });
        }
    }
    out
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_room(&self, room: NewRoom, max_per_creator: u64) -> Result<CreateRoomOutcome> {
        let mut g = self.lock()?;
        if g.by_name.contains_key(&room.name) {
            return Ok(CreateRoomOutcome::NameTaken);
        }
        let owned =
            g.rooms.iter().filter(|(r, _)| r.created_by == room.created_by && !g.deleted.contains(&r.id)).count()
                as u64;
        if owned >= max_per_creator {
            return Ok(CreateRoomOutcome::LimitReached);
        }
        let id = g.rooms.len() as RoomId + 1;
        let rec = RoomRecord {
            id,
            name: room.name.clone(),
            mode: room.mode,
            public: room.public,
            created_by: room.created_by,
            created_at: room.created_at,
            epoch: room.epoch,
            head: 0,
            state_version: 0,
            state: room.state,
            members: room.members,
            admins: room.admins,
        };
        g.states.entry(id).or_default().insert(rec.epoch, rec.state.clone());
        g.by_name.insert(room.name, id);
        g.rooms.push((rec.clone(), Vec::new()));
        Ok(CreateRoomOutcome::Created(rec))
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>> {
        let g = self.lock()?;
        Ok(g.by_name.get(name).map(|id| g.rooms[(*id - 1) as usize].0.clone()))
    }

    async fn public_rooms(&self, after_name: &str, limit: u32) -> Result<Vec<RoomRecord>> {
        let g = self.lock()?;
        Ok(g.by_name
            .range::<str, _>((std::ops::Bound::Excluded(after_name), std::ops::Bound::Unbounded))
            .map(|(_, id)| &g.rooms[(*id - 1) as usize].0)
            .filter(|r| r.public)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn append(&self, room: RoomId, entry: NewEntry) -> Result<AppendOutcome> {
        let mut guard = self.lock()?;
        let g = &mut *guard;
        if g.deleted.contains(&room) {
            return Ok(AppendOutcome::NoSuchRoom);
        }
        let Some((rec, log)) = usize::try_from(room - 1).ok().and_then(|i| g.rooms.get_mut(i)) else {
            return Ok(AppendOutcome::NoSuchRoom);
        };
        if let Some(update) = entry.update {
            if update.expected_state_version != rec.state_version {
                return Ok(AppendOutcome::Conflict {
                    epoch: rec.epoch,
                    head: rec.head,
                    state_version: rec.state_version,
                });
            }
            rec.state_version += 1;
            rec.epoch = update.new_epoch;
            rec.state = update.state.clone();
            let states = g.states.entry(room).or_default();
            states.insert(update.new_epoch, update.state);
            if let Some(oldest) = update.new_epoch.checked_sub(crate::STATE_HISTORY) {
                states.retain(|e, _| *e > oldest);
            }
            rec.members = update.members;
            rec.admins = update.admins;
            let removal = Removal { seq: rec.head + 1, epoch: rec.epoch };
            for user in update.removed {
                g.removals.insert((room, user), removal);
            }
            for user in update.added {
                g.removals.remove(&(room, user));
            }
        }
        rec.head += 1;
        log.push(Entry {
            seq: rec.head,
            kind: entry.kind,
            epoch: entry.epoch,
            sender: entry.sender,
            ts: entry.ts,
            body: entry.body,
        });
        Ok(AppendOutcome::Appended { seq: rec.head, epoch: rec.epoch })
    }

    async fn room_state(&self, room: RoomId, epoch: u64) -> Result<Option<Vec<u8>>> {
        let g = self.lock()?;
        Ok(g.states.get(&room).and_then(|s| s.get(&epoch)).cloned())
    }

    async fn read(&self, room: RoomId, after: u64, limit: u32) -> Result<Vec<Entry>> {
        let g = self.lock()?;
        let Some((_, log)) = usize::try_from(room - 1).ok().and_then(|i| g.rooms.get(i)) else {
            return Ok(Vec::new());
        };
        // In seq order, with gaps where retention deleted messages.
        let start = log.partition_point(|e| e.seq <= after);
        Ok(log[start..].iter().take(limit as usize).cloned().collect())
    }

    async fn removal(&self, room: RoomId, user: &UserId) -> Result<Option<Removal>> {
        Ok(self.lock()?.removals.get(&(room, *user)).copied())
    }

    async fn deposit(&self, mail: NewMail, quota: MailboxQuota) -> Result<DepositOutcome> {
        let mut g = self.lock()?;
        let mb = g.mail.entry(mail.owner).or_default();
        let live = || mb.entries.values().filter(|e| e.expires_at > mail.ts);
        if live().count() as u64 >= quota.total {
            return Ok(DepositOutcome::Full);
        }
        if live().filter(|e| e.sender == mail.sender).count() as u64 >= quota.per_sender {
            return Ok(DepositOutcome::SenderFull);
        }
        mb.last_seq += 1;
        let seq = mb.last_seq;
        mb.entries.insert(
            seq,
            MailboxEntry { seq, sender: mail.sender, ts: mail.ts, expires_at: mail.expires_at, body: mail.body },
        );
        Ok(DepositOutcome::Deposited { seq })
    }

    async fn mailbox_read(&self, owner: &UserId, after: u64, limit: u32, now: i64) -> Result<Vec<MailboxEntry>> {
        let g = self.lock()?;
        Ok(g.mail
            .get(owner)
            .map(|mb| {
                mb.entries
                    .range(after.saturating_add(1)..)
                    .map(|(_, e)| e)
                    .filter(|e| e.expires_at > now)
                    .take(limit as usize)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn mailbox_ack(&self, owner: &UserId, up_to: u64) -> Result<u64> {
        let mut g = self.lock()?;
        let Some(mb) = g.mail.get_mut(owner) else { return Ok(0) };
        let keep = mb.entries.split_off(&up_to.saturating_add(1));
        let removed = mb.entries.len() as u64;
        mb.entries = keep;
        Ok(removed)
    }

    async fn purge_expired(&self, now: i64) -> Result<u64> {
        let mut g = self.lock()?;
        let mut removed = 0;
        for mb in g.mail.values_mut() {
            let before = mb.entries.len();
            mb.entries.retain(|_, e| e.expires_at > now);
            removed += (before - mb.entries.len()) as u64;
        }
        Ok(removed)
    }

    async fn publish_keys(&self, owner: &UserId, items: Vec<KeyItemUpload>, cap: u64) -> Result<PublishOutcome> {
        let mut g = self.lock()?;
        let keys = g.keys.entry(*owner).or_default();
        let mut one_time = keys.one_time.len() as u64;
        let mut lr: Vec<&str> = keys.last_resort.keys().copied().collect();
        for it in &items {
            if it.last_resort {
                if !lr.contains(&it.kind.as_str()) {
                    lr.push(it.kind.as_str());
                }
            } else {
                one_time += 1;
            }
        }
        // Last-resort items (one per kind, replaced in place) do not count: a user at the cap can
        // always replace them.
        if one_time > cap {
            return Ok(PublishOutcome::LimitReached);
        }
        for it in items {
            if it.last_resort {
                keys.last_resort.insert(it.kind.as_str(), (it.kind, it.data));
            } else {
                keys.one_time.push((it.kind, it.data));
            }
        }
        Ok(PublishOutcome::Stored(counts(keys)))
    }

    async fn claim_key(&self, owner: &UserId, kind: KeyKind) -> Result<Option<ClaimedKey>> {
        let mut g = self.lock()?;
        let Some(keys) = g.keys.get_mut(owner) else { return Ok(None) };
        if let Some(pos) = keys.one_time.iter().position(|(k, _)| *k == kind) {
            let (_, data) = keys.one_time.remove(pos);
            return Ok(Some(ClaimedKey { user: *owner, kind, last_resort: false, data }));
        }
        Ok(keys.last_resort.get(kind.as_str()).map(|(_, data)| ClaimedKey {
            user: *owner,
            kind,
            last_resort: true,
            data: data.clone(),
        }))
    }

    async fn key_counts(&self, owner: &UserId) -> Result<Vec<KeyCount>> {
        let g = self.lock()?;
        Ok(g.keys.get(owner).map(counts).unwrap_or_default())
    }

    async fn create_file(&self, file: NewFile, quota: FileQuota) -> Result<CreateFileOutcome> {
        let mut g = self.lock()?;
        let sum = |keep: &dyn Fn(&FileRecord) -> bool| -> u64 {
            g.files.values().filter(|f| keep(f)).map(|f| f.size).fold(0u64, u64::saturating_add)
        };
        let user_used = sum(&|f| f.owner == file.owner);
        if user_used.saturating_add(file.size) > quota.per_user {
            return Ok(CreateFileOutcome::UserQuota { used: user_used });
        }
        let room_used = sum(&|f| f.room == file.room);
        if room_used.saturating_add(file.size) > quota.per_room {
            return Ok(CreateFileOutcome::RoomQuota { used: room_used });
        }
        if g.files.contains_key(&file.blob) {
            return Err(StoreError::backend(format!("blob {} exists already", file.blob)));
        }
        let rec = FileRecord {
            blob: file.blob,
            room: file.room,
            owner: file.owner,
            size: file.size,
            part_bytes: file.part_bytes,
            received: 0,
            created_at: file.created_at,
            expires_at: file.expires_at,
        };
        g.files.insert(file.blob, rec.clone());
        Ok(CreateFileOutcome::Created(rec))
    }

    async fn file(&self, blob: &BlobId) -> Result<Option<FileRecord>> {
        Ok(self.lock()?.files.get(blob).cloned())
    }

    async fn file_part(
        &self,
        blob: &BlobId,
        offset: u64,
        len: u64,
        sha256: &[u8; 32],
        expires_when_complete: i64,
    ) -> Result<FilePartOutcome> {
        let mut guard = self.lock()?;
        let g = &mut *guard;
        let Some(f) = g.files.get_mut(blob) else { return Ok(FilePartOutcome::NoSuchFile) };
        let end = offset.checked_add(len).filter(|&e| e <= f.size);
        match end {
            Some(end) if f.received == offset => {
                f.received = end;
                if f.complete() {
                    f.expires_at = expires_when_complete;
                }
                g.part_hashes.insert((*blob, offset), *sha256);
                Ok(FilePartOutcome::Recorded(f.clone()))
            }
            _ if g.part_hashes.get(&(*blob, offset)) == Some(sha256) => Ok(FilePartOutcome::Held(f.clone())),
            _ => Ok(FilePartOutcome::Conflict(f.clone())),
        }
    }

    async fn file_part_hashes(&self, blob: &BlobId) -> Result<Vec<(u64, [u8; 32])>> {
        let g = self.lock()?;
        Ok(g.part_hashes.range((*blob, 0)..=(*blob, u64::MAX)).map(|((_, at), h)| (*at, *h)).collect())
    }

    async fn expired_files(&self, now: i64, limit: u32) -> Result<Vec<FileRecord>> {
        let g = self.lock()?;
        let mut out: Vec<FileRecord> = g.files.values().filter(|f| f.expires_at <= now).cloned().collect();
        out.sort_by_key(|f| (f.expires_at, f.blob));
        out.truncate(limit as usize);
        Ok(out)
    }

    async fn delete_file(&self, blob: &BlobId) -> Result<bool> {
        let mut g = self.lock()?;
        g.part_hashes.retain(|(b, _), _| b != blob);
        Ok(g.files.remove(blob).is_some())
    }

    async fn rooms_overview(&self) -> Result<Vec<crate::RoomOverview>> {
        let g = self.lock()?;
        Ok(g.by_name
            .values()
            .map(|id| {
                let (rec, log) = &g.rooms[(*id - 1) as usize];
                crate::RoomOverview {
                    room: rec.clone(),
                    bytes: log.iter().map(|e| e.body.len() as u64).sum(),
                    last_activity: log.last().map_or(rec.created_at, |e| e.ts),
                }
            })
            .collect())
    }

    async fn delete_room(&self, name: &str) -> Result<Option<crate::DeletedRoom>> {
        let mut guard = self.lock()?;
        let g = &mut *guard;
        let Some(id) = g.by_name.remove(name) else { return Ok(None) };
        g.deleted.insert(id);
        g.states.remove(&id);
        g.links.remove(&id);
        g.joins.remove(&id);
        g.link_infos.remove(&id);
        g.reports.remove(&id);
        g.false_reports.retain(|(room, _), _| *room != id);
        let entries = g.rooms.get_mut((id - 1) as usize).map_or(0, |(_, log)| std::mem::take(log).len() as u64);
        let files: Vec<FileRecord> = g.files.values().filter(|f| f.room == id).cloned().collect();
        for f in &files {
            g.files.remove(&f.blob);
            g.part_hashes.retain(|(b, _), _| *b != f.blob);
        }
        Ok(Some(crate::DeletedRoom { id, entries, files }))
    }

    async fn users_usage(&self) -> Result<Vec<crate::UserUsage>> {
        let g = self.lock()?;
        let mut out: BTreeMap<UserId, crate::UserUsage> = BTreeMap::new();
        let blank = |user: UserId| crate::UserUsage { user, mailbox_messages: 0, mailbox_bytes: 0, key_items: 0 };
        for (user, mb) in &g.mail {
            if !mb.entries.is_empty() {
                let u = out.entry(*user).or_insert_with(|| blank(*user));
                u.mailbox_messages = mb.entries.len() as u64;
                u.mailbox_bytes = mb.entries.values().map(|m| m.body.len() as u64).sum();
            }
        }
        for (user, k) in &g.keys {
            let n = (k.one_time.len() + k.last_resort.len()) as u64;
            if n > 0 {
                out.entry(*user).or_insert_with(|| blank(*user)).key_items = n;
            }
        }
        Ok(out.into_values().collect())
    }

    async fn purge_messages(&self, before: i64) -> Result<u64> {
        let mut g = self.lock()?;
        let mut removed = 0;
        for (_, log) in g.rooms.iter_mut() {
            let n = log.len();
            log.retain(|e| !(e.kind == grove_wire::api::EntryKind::Application && e.ts < before));
            removed += (n - log.len()) as u64;
        }
        Ok(removed)
    }

    async fn set_blocked(&self, user: &UserId, blocked: bool, _at: i64) -> Result<bool> {
        let mut g = self.lock()?;
        Ok(if blocked { g.blocked.insert(*user) } else { g.blocked.remove(user) })
    }

    async fn blocked_users(&self) -> Result<Vec<UserId>> {
        Ok(self.lock()?.blocked.iter().copied().collect())
    }

    async fn set_room_link(&self, room: RoomId, link: Option<crate::RoomLink>) -> Result<()> {
        let mut g = self.lock()?;
        match link {
            Some(l) => g.links.insert(room, l),
            None => g.links.remove(&room),
        };
        Ok(())
    }

    async fn room_link(&self, room: RoomId) -> Result<Option<crate::RoomLink>> {
        Ok(self.lock()?.links.get(&room).cloned())
    }

    async fn request_join(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        request: crate::JoinRequest,
        max_pending: u64,
    ) -> Result<crate::JoinOutcome> {
        let mut guard = self.lock()?;
        let g = &mut *guard;
        if let Err(refused) = crate::joins::admits(g.links.get(&room), &token_hash, request.at) {
            return Ok(refused);
        }
        let waiting = g.joins.entry(room).or_default();
        if waiting.iter().any(|r| r.user == request.user) {
            return Ok(crate::JoinOutcome::AlreadyRequested);
        }
        if waiting.len() as u64 >= max_pending {
            return Ok(crate::JoinOutcome::TooManyPending);
        }
        waiting.push(request);
        if let Some(l) = g.links.get_mut(&room) {
            l.uses += 1;
        }
        Ok(crate::JoinOutcome::Requested)
    }

    async fn use_link(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<std::result::Result<(), crate::JoinOutcome>> {
        let mut g = self.lock()?;
        if let Err(refused) = crate::joins::admits(g.links.get(&room), &token_hash, now) {
            return Ok(Err(refused));
        }
        if let Some(l) = g.links.get_mut(&room) {
            l.uses += 1;
        }
        Ok(Ok(()))
    }

    async fn set_link_group_info(&self, room: RoomId, info: crate::LinkGroupInfo) -> Result<bool> {
        let mut g = self.lock()?;
        if !crate::joins::replaces(g.link_infos.get(&room), &info) {
            return Ok(false);
        }
        g.link_infos.insert(room, info);
        Ok(true)
    }

    async fn link_group_info(&self, room: RoomId) -> Result<Option<crate::LinkGroupInfo>> {
        Ok(self.lock()?.link_infos.get(&room).cloned())
    }

    async fn join_requests(&self, room: RoomId) -> Result<Vec<crate::JoinRequest>> {
        Ok(self.lock()?.joins.get(&room).cloned().unwrap_or_default())
    }

    async fn delete_join_request(&self, room: RoomId, user: &UserId) -> Result<bool> {
        let mut g = self.lock()?;
        let Some(waiting) = g.joins.get_mut(&room) else { return Ok(false) };
        let before = waiting.len();
        waiting.retain(|r| r.user != *user);
        Ok(waiting.len() < before)
    }

    async fn record_report(
        &self,
        room: RoomId,
        seq: u64,
        reporter: &UserId,
        key: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Vec<(UserId, Option<Vec<u8>>)>> {
        let mut g = self.lock()?;
        let commits = g.reports.entry(room).or_default();
        commits.entry(seq).or_default().insert(*reporter, key);
        while commits.len() > keep.max(1) {
            let Some(oldest) = commits.keys().copied().find(|s| *s != seq) else { break };
            commits.remove(&oldest);
        }
        Ok(commits.get(&seq).map(|r| r.iter().map(|(u, k)| (*u, k.clone())).collect()).unwrap_or_default())
    }

    async fn false_reports(&self, room: RoomId, user: &UserId, add: bool) -> Result<u32> {
        let mut g = self.lock()?;
        let n = g.false_reports.entry((room, *user)).or_default();
        if add {
            *n += 1;
        }
        Ok(*n)
    }

    async fn forget_reports(&self, room: RoomId, seq: u64) -> Result<()> {
        if let Some(commits) = self.lock()?.reports.get_mut(&room) {
            commits.retain(|s, _| *s < seq);
        }
        Ok(())
    }

    async fn file_totals(&self) -> Result<FileTotals> {
        let g = self.lock()?;
        let bytes = g.files.values().map(|f| f.size).fold(0u64, u64::saturating_add);
        Ok(FileTotals { files: g.files.len() as u64, bytes })
    }
}

#[cfg(test)]
mod tests {
    crate::conformance_tests!(|| async { std::sync::Arc::new(crate::MemoryStore::new()) });
}
