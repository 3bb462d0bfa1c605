//! The room core: what a room protocol does with a room's log and with a message to send,
//! without I/O (no sockets, no files, no clock, no tokio).
//!
//! MLS and Sender Keys are two implementations of one trait, [`RoomProtocol`]: the driver
//! ([`crate::profile::Profile`]) reads a page of the log and hands it to [`RoomProtocol::apply`],
//! which answers everything to persist (one [`Batch`]), the new cursor, the room's status and
//! what the driver must do next ([`FollowUp`]: commit cached proposals, rotate the own chain,
//! read the mailbox and come back); and it hands a plaintext to [`RoomProtocol::seal`], which
//! answers the ciphertext with the ratchet step to persist, or that the view is stale. The
//! driver does the HTTP, the SQLite and the lock; one sync loop and one send loop serve both
//! protocols.
//!
//! Membership changes go the same way: [`RoomProtocol::prepare`] makes the entry (an MLS
//! commit kept pending, or the next signed sender-keys membership) with what to persist before
//! it is posted; the driver posts it; [`RoomProtocol::accepted`] or [`RoomProtocol::refused`]
//! answer what to persist then. One retry loop in the driver (sync, prepare, post; on a lost
//! race: refused, sync, again) serves both protocols.
//!
//! Still driver-side, per protocol (the next step of this core): joining, leaving, invitation
//! delivery (an MLS Welcome, a sender-keys invitation over Olm) and the Olm distribution of
//! sender keys.

use grove_proto::identity::Identity;
use grove_proto::mls::engine::{Changes, GroupId, Incoming, MlsEngine};
use grove_proto::policy::Edit;
use grove_proto::senderkeys::room::{RoomError, SkEngine};
use grove_proto::senderkeys::SenderKeyError;
use grove_wire::api::{AppendEntry, Entry, EntryKind, FaultReport, ResyncOffer, RoomMode, Void};
use grove_wire::content::Content;
use grove_wire::membership::SignedMembership;
use grove_wire::policy::RoomPolicy;
use grove_wire::UserId;
use sha2::{Digest, Sha256};

use crate::profile::room_profile::{read_content, PolicyAt};
use crate::profile::sk::{load_sk_engine, sk_records};
use crate::profile::{describe, ClientError, Result};
use crate::store::{Batch, ClientStore, LocalRoom, Membership, Message, RoomStatus, Voided};

/// What the driver does after a page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct FollowUp {
    /// MLS: proposals were cached; commit them.
    pub commit_proposals: bool,
    /// Sender keys: a member was removed; rotate the own chain.
    pub rotate: bool,
    /// Sender keys: an entry's chain is unknown; read the mailbox (its distribution may be
    /// there), then read the log again from `cursor`.
    pub read_mailbox: bool,
    /// MLS: commits this member cannot process, to report to the server.
    pub reports: Vec<FaultReport>,
    /// MLS: what the resync of members who cannot process a commit asks of this member.
    pub resync: ResyncFollowUp,
}

/// MLS resync work for the driver (`profile::resync`; `grove_proto::mls::resync`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ResyncFollowUp {
    /// This member cannot process a commit of its epoch: (the epoch, who made the commit, its
    /// seq). Ask the members who could for a way back in.
    pub stuck: Option<(u64, UserId, u64)>,
    /// Members stuck at an earlier epoch than this member's asked: (their epoch, its resync key).
    pub requests: Vec<(u64, Vec<u8>)>,
    /// The newest offer for this member's epoch, from a later one (not from the member whose
    /// commit it could not process, if that commit is in the page).
    pub offer: Option<Offer>,
    /// Epochs that other members' commits in the page took this member out of, with their
    /// resync keys, for which the page shows no offer yet (the last few of the page): offer
    /// the members who could not process those commits a way back in at once (one round of
    /// syncs, not two: they find it on their first read after the commit).
    pub left: Vec<(u64, zeroize::Zeroizing<[u8; 32]>)>,
}

/// At most this many unasked resync offers per page of the log (for its last commits).
const UNASKED_OFFERS_PER_PAGE: usize = 4;

/// A resync offer found in the log for this member's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    /// Its entry.
    pub seq: u64,
    /// The epoch of its GroupInfo.
    pub epoch: u64,
    /// The GroupInfo, sealed under the resync key of this member's epoch.
    pub sealed: Vec<u8>,
    /// Who posted it.
    pub from: UserId,
}

/// One page applied.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Everything to persist, in one transaction: state changes, history lines, names, cursor,
    /// status.
    pub batch: Batch,
    /// The last entry consumed (the page's next read starts after it).
    pub cursor: u64,
    /// The room's status after the page.
    pub status: RoomStatus,
    /// Own application entries seen: (seq, ts, ciphertext), for the driver to settle against
    /// its outbox.
    pub own: Vec<(u64, i64, Vec<u8>)>,
    /// What to do next.
    pub follow_up: FollowUp,
}

/// A plaintext sealed, or why not.
#[derive(Debug)]
pub(crate) enum Seal {
    /// The ciphertext and the epoch (MLS) or membership version (sender keys) it is for; the
    /// ratchet step in `batch` is persisted before the ciphertext leaves.
    Sealed {
        /// The ciphertext.
        body: Vec<u8>,
        /// Its epoch or version.
        epoch: u64,
        /// The state change.
        batch: Box<Batch>,
    },
    /// The view is stale: sync, then seal again.
    Stale,
}

/// A membership change to make.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Add members: an MLS room needs their claimed KeyPackages, a sender-keys room their ids.
    Add {
        /// The users.
        users: Vec<UserId>,
        /// Their KeyPackages (MLS).
        key_packages: Vec<Vec<u8>>,
    },
    /// Remove members.
    Remove(Vec<UserId>),
    /// MLS: a self-update commit.
    Update,
    /// MLS: commit the proposals cached from the log.
    CommitProposals,
    /// Leave: MLS proposes the own removal (another member commits it); a sender-keys member
    /// posts the version without itself (a member may always leave).
    Leave,
    /// Edit the room's policy: a role, a ban (removing a banned member), an unban.
    Policy(Edit),
}

/// A change made, ready to post.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The entry to post.
    pub entry: AppendEntry,
    /// What to persist before posting (an MLS pending commit: if the server takes it and the
    /// process dies, the next sync recognises it in the log and applies it).
    pub batch: Batch,
    /// MLS add: the Welcome for the new members (for the epoch after `entry.epoch`).
    pub welcome: Option<Vec<u8>>,
    /// Sender keys: the signed membership posted.
    pub membership: Option<SignedMembership>,
}

/// A room protocol, sans-IO.
pub(crate) trait RoomProtocol {
    /// Drops what an earlier, interrupted change left (an MLS pending commit the sync did not
    /// find in the log is dead).
    fn drop_stale(&mut self, room: &LocalRoom) -> Result<Batch>;

    /// Makes `change` as the room is now.
    fn prepare(&mut self, room: &LocalRoom, identity: &Identity, change: &Change) -> Result<Prepared>;

    /// The server took the prepared entry as `seq`: apply it. Answers what to persist and
    /// what to do next.
    fn accepted(
        &mut self,
        room: &LocalRoom,
        me: UserId,
        prepared: &Prepared,
        seq: u64,
        ts: i64,
    ) -> Result<(Batch, FollowUp)>;

    /// The server refused the prepared entry (lost race or for good): undo it.
    fn refused(&mut self, room: &LocalRoom, prepared: &Prepared) -> Result<Batch>;

    /// The room's policy (roles, bans, rights), as this member's state says; `None` for an MLS
    /// room created before rooms had policies.
    fn policy(&self, room: &LocalRoom) -> Result<Option<RoomPolicy>>;

    /// What to forget once this member has left.
    fn forget(&mut self, room: &LocalRoom) -> Batch;

    /// The members, as this member's state says.
    fn members(&self, room: &LocalRoom) -> Result<Vec<UserId>>;

    /// The epoch (MLS) or membership version (sender keys), and a value equal for all members
    /// in sync (the epoch authenticator; a digest of the signed membership).
    fn epoch(&self, room: &LocalRoom) -> Result<(u64, Vec<u8>)>;

    /// Decrypts an application message's body with the current state. The state changes this
    /// makes must not be persisted: the driver reloads afterwards.
    fn peek(&mut self, room: &LocalRoom, body: &[u8]) -> Result<Vec<u8>>;

    /// Applies a page of the room's log, in order, from `room.cursor` on. `mailbox_read`: the
    /// mailbox was just read for this page, so a message whose chain is still unknown is recorded
    /// as unreadable and held (sender keys) until its key comes ([`RoomProtocol::release_held`]).
    fn apply(&mut self, room: &LocalRoom, me: UserId, entries: Vec<Entry>, mailbox_read: bool) -> Result<Applied>;

    /// Seals a plaintext for the room. `view` is the epoch or version the server reported at
    /// the last sync; `now` is Unix seconds.
    fn seal(&mut self, room: &LocalRoom, plaintext: &[u8], view: u64, now: u64) -> Result<Seal>;

    /// The view [`RoomProtocol::seal`] takes, as this member holds it (the server's, once every
    /// entry of the log is applied).
    fn local_view(&self, room: &LocalRoom) -> Result<u64>;

    /// Whether the own keys must be renewed (and, for sender keys, distributed) before sealing.
    fn needs_rotation(&self, room: &LocalRoom, now: u64) -> Result<bool>;

    /// The server no longer lets this member read the room: it was removed by an entry it has
    /// not seen. Answers what to persist.
    fn removed_unseen(&mut self, room: &LocalRoom) -> Batch;

    /// Sender keys: messages recorded as unreadable because their sender's key had not arrived,
    /// decrypted now that it has (their history lines replaced). Answers what to persist.
    fn release_held(&mut self, _room: &LocalRoom) -> Result<Batch> {
        Ok(Batch::default())
    }
}

/// The protocol of a room of `mode`: the one place where the mode is looked at.
pub(crate) fn protocol<'a>(
    engine: &'a mut MlsEngine,
    store: &ClientStore,
    me: UserId,
    mode: RoomMode,
) -> Result<Box<dyn RoomProtocol + 'a>> {
    Ok(match mode {
        RoomMode::Mls => Box::new(MlsRoom { engine }),
        RoomMode::SenderKeys => Box::new(SkRoom { engine: load_sk_engine(store, me)? }),
    })
}

/// MLS rooms, over the profile's engine.
pub(crate) struct MlsRoom<'a> {
    /// The engine (its in-memory state is the profile's, reloaded under the lock).
    pub engine: &'a mut MlsEngine,
}

/// A void entry: the server went back on a commit that members proved faulty. This member,
/// which could not process that commit, is still in the epoch the room went back to; one that
/// did process it (only its committer, for a bad membership tag) is ahead of the room.
fn read_void(out: &mut Applied, room: &LocalRoom, v: Entry) {
    out.cursor = out.cursor.max(v.seq);
    match serde_json::from_slice::<Void>(&v.body) {
        Ok(void) => {
            tracing::warn!(room = room.link, voided = void.voided, committer = %void.committer, "a commit was voided");
            let change =
                Membership { voided: Some(Voided { seq: void.voided, epoch: void.epoch }), ..Membership::default() };
            out.batch.messages.push(Message::membership(&room.link, v.seq, void.committer, v.ts, &change));
        }
        Err(e) => out.batch.messages.push(Message::undecryptable(
            &room.link,
            v.seq,
            v.sender,
            v.ts,
            &format!("a void entry that does not decode: {e}"),
        )),
    }
}

fn batch_of(changes: Changes) -> Batch {
    Batch { changes: vec![changes], ..Batch::default() }
}

impl RoomProtocol for MlsRoom<'_> {
    fn drop_stale(&mut self, room: &LocalRoom) -> Result<Batch> {
        let g = GroupId::new(room.group_id.clone());
        if self.engine.has_pending_commit(&g)? {
            return Ok(batch_of(self.engine.discard_pending(&g)?));
        }
        Ok(Batch::default())
    }

    fn prepare(&mut self, room: &LocalRoom, _identity: &Identity, change: &Change) -> Result<Prepared> {
        let g = GroupId::new(room.group_id.clone());
        let (pending, changes) = match change {
            Change::Add { key_packages, .. } => self.engine.commit_add(&g, key_packages)?,
            Change::Remove(users) => self.engine.commit_remove(&g, users)?,
            Change::Update => self.engine.commit_update(&g)?,
            Change::CommitProposals => self.engine.commit_pending_proposals(&g)?,
            Change::Policy(edit) => self.engine.commit_policy(&g, *edit)?,
            Change::Leave => {
                let (proposal, changes) = self.engine.propose_leave(&g)?;
                let epoch = self.engine.epoch(&g)?;
                let entry = AppendEntry { kind: EntryKind::Proposal, epoch, body: proposal };
                return Ok(Prepared { entry, batch: batch_of(changes), welcome: None, membership: None });
            }
        };
        let entry = AppendEntry { kind: EntryKind::Commit, epoch: pending.epoch, body: pending.commit };
        Ok(Prepared { entry, batch: batch_of(changes), welcome: pending.welcome, membership: None })
    }

    fn accepted(
        &mut self,
        room: &LocalRoom,
        me: UserId,
        prepared: &Prepared,
        seq: u64,
        ts: i64,
    ) -> Result<(Batch, FollowUp)> {
        if prepared.entry.kind == EntryKind::Proposal {
            // A leave proposal: another member commits it.
            return Ok((Batch::default(), FollowUp::default()));
        }
        let g = GroupId::new(room.group_id.clone());
        let before = self.engine.policy(&g)?;
        let (applied, changes) = self.engine.apply_pending(&g)?;
        let after = self.engine.policy(&g).ok().flatten();
        let mut batch = batch_of(changes);
        batch.messages.push(describe(
            &room.link,
            (seq, ts),
            me,
            (&applied.added, &applied.removed),
            before.as_ref(),
            after.as_ref(),
        ));
        Ok((batch, FollowUp::default()))
    }

    fn refused(&mut self, room: &LocalRoom, prepared: &Prepared) -> Result<Batch> {
        if prepared.entry.kind == EntryKind::Proposal {
            return Ok(Batch::default());
        }
        Ok(batch_of(self.engine.discard_pending(&GroupId::new(room.group_id.clone()))?))
    }

    fn policy(&self, room: &LocalRoom) -> Result<Option<RoomPolicy>> {
        Ok(self.engine.policy(&GroupId::new(room.group_id.clone()))?)
    }

    fn forget(&mut self, _: &LocalRoom) -> Batch {
        // The group state stays until the commit removing this member is seen or the member
        // is invited back.
        Batch::default()
    }

    fn members(&self, room: &LocalRoom) -> Result<Vec<UserId>> {
        Ok(self.engine.members(&GroupId::new(room.group_id.clone()))?)
    }

    fn epoch(&self, room: &LocalRoom) -> Result<(u64, Vec<u8>)> {
        let g = GroupId::new(room.group_id.clone());
        Ok((self.engine.epoch(&g)?, self.engine.epoch_authenticator(&g)?))
    }

    fn peek(&mut self, room: &LocalRoom, body: &[u8]) -> Result<Vec<u8>> {
        match self.engine.process(&GroupId::new(room.group_id.clone()), body)? {
            (Incoming::Application { plaintext, .. }, _) => Ok(plaintext),
            _ => Err(ClientError::Invalid("the entry is not an application message".into())),
        }
    }

    fn apply(&mut self, room: &LocalRoom, me: UserId, entries: Vec<Entry>, _: bool) -> Result<Applied> {
        let g = GroupId::new(room.group_id.clone());
        let mut out = Applied { cursor: room.cursor, ..Applied::default() };
        // Void entries are the server's, and resync offers members' sealed GroupInfos, not MLS
        // messages: they are read, not processed.
        let (voids, entries): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| e.kind == EntryKind::Void);
        let (offers, mut entries): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.kind == EntryKind::Resync);
        // One engine call per page: the group's state is written once, not per entry. Each
        // entry's outcome is what `process` would have given for it, in order; after a commit
        // removing us the rest fail, and the loop below stops at that commit.
        let bodies: Vec<Vec<u8>> = entries.iter_mut().map(|e| std::mem::take(&mut e.body)).collect();
        // The policy as the log goes: a room profile counts if its sender may set it there.
        let mut policy = self.engine.policy(&g).ok();
        let (outcomes, changes) = self.engine.process_many(&g, &bodies)?;
        let left_keys = self.engine.take_left_resync_keys(&g);
        // The epochs other members' commits of this page took this member out of.
        let mut left = Vec::new();
        // The seqs of the requests in `out.follow_up.resync.requests`, in step.
        let mut request_seqs = Vec::new();
        out.batch.changes.push(changes);
        let mut failed_commits = Vec::new();
        // The first commit a void in this page goes back on (with every handshake after it).
        let voided_from =
            voids.iter().filter_map(|v| serde_json::from_slice::<Void>(&v.body).ok()).map(|v| v.voided).min();
        let mut voids = voids.into_iter().peekable();
        for ((e, outcome), body) in entries.into_iter().zip(outcomes).zip(bodies) {
            while let Some(v) = voids.next_if(|v| v.seq < e.seq) {
                read_void(&mut out, room, v);
            }
            out.cursor = e.seq;
            match outcome {
                Ok(Incoming::Application { sender, plaintext }) => {
                    if let Content::ResyncRequest { epoch, key } = Content::decode(&plaintext) {
                        // A member stuck at `epoch` asks for a way back in (not a history line).
                        if sender != me {
                            out.follow_up.resync.requests.push((epoch, key));
                            request_seqs.push(e.seq);
                        }
                        continue;
                    }
                    let at = policy.as_ref().map_or(PolicyAt::Unknown, |p| p.as_ref().into());
                    read_content(&mut out.batch, &room.link, (e.seq, e.ts), sender, plaintext, at);
                }
                Ok(Incoming::Own) if e.kind == EntryKind::Application => out.own.push((e.seq, e.ts, body)),
                Ok(Incoming::Commit { epoch: new_epoch, added, removed, removed_me, policy: changed, .. }) => {
                    left.push(new_epoch.saturating_sub(1));
                    let before = policy.clone().flatten();
                    if let Some(p) = changed {
                        policy = Some(Some(p));
                    }
                    let after = policy.clone().flatten();
                    out.batch.messages.push(describe(
                        &room.link,
                        (e.seq, e.ts),
                        e.sender,
                        (&added, &removed),
                        before.as_ref(),
                        after.as_ref(),
                    ));
                    if removed_me {
                        out.status = RoomStatus::Removed;
                        // Nothing after this commit is read: not even a void after it.
                        voids = Vec::new().into_iter().peekable();
                        break;
                    }
                }
                Ok(Incoming::Proposal { .. }) => out.follow_up.commit_proposals = true,
                // An own handshake entry, already applied when it was posted.
                Ok(_) => {}
                Err(err) => {
                    // A forged or garbled entry: the engine's state is unchanged; record it and
                    // move on, so one bad entry cannot wedge the room.
                    tracing::warn!(room = room.link, seq = e.seq, error = %err, "undecryptable entry");
                    // A commit of a later epoch than this member's (it is behind) is not
                    // reported: only a commit of its own epoch is.
                    let behind = matches!(err, grove_proto::mls::engine::EngineError::WrongEpoch { .. });
                    let why = if e.kind == EntryKind::Commit && !behind {
                        format!("a commit this member cannot process ({err}); reported to the server")
                    } else {
                        err.to_string()
                    };
                    out.batch.messages.push(Message::undecryptable(&room.link, e.seq, e.sender, e.ts, &why));
                    if e.kind == EntryKind::Commit {
                        failed_commits.push((e.seq, e.epoch, e.sender, body, err.to_string()));
                    }
                }
            }
        }
        for v in voids {
            read_void(&mut out, room, v);
        }
        let epoch = self.engine.epoch(&g).ok();
        // The committer of the commit of this member's epoch that it could not process: its
        // offers are not taken (`grove_proto::mls::resync`).
        let suspect = failed_commits.iter().find(|f| Some(f.1) == epoch).map(|f| f.2);
        if out.status == RoomStatus::Active {
            for o in offers {
                out.cursor = out.cursor.max(o.seq);
                let Ok(offer) = serde_json::from_slice::<ResyncOffer>(&o.body) else {
                    tracing::debug!(room = room.link, seq = o.seq, "a resync entry that does not decode");
                    continue;
                };
                // One unasked offer per commit: someone already made it.
                left.retain(|e| *e != offer.stuck_epoch);
                // Someone already offered the members stuck there a GroupInfo as new as ours: an
                // answer from this member adds nothing.
                if epoch.is_some_and(|ours| o.epoch >= ours) {
                    // (A request made after the offer is answered: its maker could not use it.)
                    let requests = std::mem::take(&mut out.follow_up.resync.requests);
                    let (kept, seqs): (Vec<_>, Vec<_>) = requests
                        .into_iter()
                        .zip(std::mem::take(&mut request_seqs))
                        .filter(|((e, _), seq)| *e != offer.stuck_epoch || *seq > o.seq)
                        .unzip();
                    (out.follow_up.resync.requests, request_seqs) = (kept, seqs);
                }
                // An offer for this member's epoch, of a later one: the newest is the one to use.
                if Some(offer.stuck_epoch) == epoch
                    && epoch.is_some_and(|ours| o.epoch > ours)
                    && Some(o.sender) != suspect
                {
                    out.follow_up.resync.offer =
                        Some(Offer { seq: o.seq, epoch: o.epoch, sealed: offer.sealed, from: o.sender });
                }
            }
            // At most the page's last few: a stuck member is stuck at the first commit it could
            // not process, and a page of many commits is read by one catching up, after others.
            let mut kept: Vec<_> = left_keys.into_iter().filter(|(e, _)| left.contains(e)).collect();
            kept.drain(..kept.len().saturating_sub(UNASKED_OFFERS_PER_PAGE));
            out.follow_up.resync.left = kept;
        }
        // A commit of the epoch this member is still in, which it could not process: the room
        // went on without it. Report it, with the proof if its fault is provable, and ask for a
        // resync.
        for (seq, commit_epoch, committer, body, reason) in failed_commits {
            if Some(commit_epoch) != epoch || voided_from.is_some_and(|from| from <= seq) {
                continue;
            }
            out.follow_up.resync.stuck = Some((commit_epoch, committer, seq));
            // Bytes that are not even an MLS commit (a hostile server's) prove nothing, and must
            // not stop the page: reported without a key.
            let membership_key = match self.engine.reveal_membership_key(&g, &body) {
                Ok(key) => key.map(|k| k.to_vec()),
                Err(e) => {
                    tracing::debug!(room = room.link, seq, error = %e, "no proof for a commit that cannot be parsed");
                    None
                }
            };
            out.follow_up.reports.push(FaultReport { seq, membership_key, reason, admin_void: false });
        }
        Ok(out)
    }

    fn seal(&mut self, room: &LocalRoom, plaintext: &[u8], _view: u64, _now: u64) -> Result<Seal> {
        let (body, epoch, changes) = self.engine.encrypt(&GroupId::new(room.group_id.clone()), plaintext)?;
        Ok(Seal::Sealed { body, epoch, batch: Box::new(Batch { changes: vec![changes], ..Batch::default() }) })
    }

    fn local_view(&self, _: &LocalRoom) -> Result<u64> {
        // Sealing in MLS takes no view: the group's epoch is the engine's.
        Ok(0)
    }

    fn needs_rotation(&self, _: &LocalRoom, _: u64) -> Result<bool> {
        // MLS has no sender chains: a member's keys move with every commit.
        Ok(false)
    }

    fn removed_unseen(&mut self, room: &LocalRoom) -> Batch {
        Batch { statuses: vec![(room.link.clone(), RoomStatus::Removed)], ..Batch::default() }
    }
}

/// Sender-keys rooms, over the engine as the profile's records hold it.
pub(crate) struct SkRoom {
    /// The engine, loaded from the profile's records.
    pub engine: SkEngine,
}

impl RoomProtocol for SkRoom {
    fn drop_stale(&mut self, _: &LocalRoom) -> Result<Batch> {
        // Nothing is kept between preparing and posting a membership version.
        Ok(Batch::default())
    }

    fn prepare(&mut self, room: &LocalRoom, identity: &Identity, change: &Change) -> Result<Prepared> {
        let key = identity.signing_key();
        let m = match change {
            Change::Add { users, .. } => self.engine.next_membership(&room.link, key, users, &[])?,
            Change::Remove(users) => self.engine.next_membership(&room.link, key, &[], users)?,
            Change::Leave => self.engine.next_membership(&room.link, key, &[], &[identity.user_id()])?,
            Change::Policy(edit) => self.engine.next_policy(&room.link, key, *edit)?,
            Change::Update | Change::CommitProposals => {
                return Err(ClientError::Invalid(
                    "a sender-keys room changes keys by rotating, not by a log entry".into(),
                ))
            }
        };
        let body = serde_json::to_vec(&m).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let entry = AppendEntry { kind: EntryKind::Membership, epoch: m.version, body };
        Ok(Prepared { entry, batch: Batch::default(), welcome: None, membership: Some(m) })
    }

    fn accepted(
        &mut self,
        room: &LocalRoom,
        me: UserId,
        prepared: &Prepared,
        seq: u64,
        ts: i64,
    ) -> Result<(Batch, FollowUp)> {
        let m = prepared.membership.as_ref().ok_or_else(|| ClientError::Invalid("no membership prepared".into()))?;
        let before = self.engine.view(&room.link).ok().map(|v| v.policy.clone());
        let (change, changes) = self.engine.apply_membership(&room.link, m)?;
        let mut batch = Batch { records: sk_records(changes), ..Batch::default() };
        batch.messages.push(describe(
            &room.link,
            (seq, ts),
            me,
            (&change.added, &change.removed),
            before.as_ref(),
            Some(&m.policy),
        ));
        if change.removed_me {
            batch.statuses.push((room.link.clone(), RoomStatus::Left));
        }
        // Everyone rotates on a removal; the remover right away.
        let follow_up = FollowUp { rotate: !change.removed.is_empty() && !change.removed_me, ..FollowUp::default() };
        Ok((batch, follow_up))
    }

    fn refused(&mut self, _: &LocalRoom, _: &Prepared) -> Result<Batch> {
        Ok(Batch::default())
    }

    fn policy(&self, room: &LocalRoom) -> Result<Option<RoomPolicy>> {
        Ok(Some(self.engine.view(&room.link)?.policy.clone()))
    }

    fn forget(&mut self, room: &LocalRoom) -> Batch {
        Batch { records: sk_records(self.engine.forget_room(&room.link)), ..Batch::default() }
    }

    fn members(&self, room: &LocalRoom) -> Result<Vec<UserId>> {
        Ok(self.engine.view(&room.link)?.members.clone())
    }

    fn epoch(&self, room: &LocalRoom) -> Result<(u64, Vec<u8>)> {
        let view = self.engine.view(&room.link)?;
        let digest = Sha256::digest(serde_json::to_vec(&view.signed).unwrap_or_default()).to_vec();
        Ok((view.version, digest))
    }

    fn peek(&mut self, room: &LocalRoom, body: &[u8]) -> Result<Vec<u8>> {
        Ok(self.engine.decrypt(&room.link, body).map(|(d, _)| d.plaintext)?)
    }

    fn apply(&mut self, room: &LocalRoom, me: UserId, entries: Vec<Entry>, mailbox_read: bool) -> Result<Applied> {
        let link = room.link.as_str();
        let mut out = Applied { cursor: room.cursor, ..Applied::default() };
        for e in entries {
            match e.kind {
                EntryKind::Membership => {
                    let before = self.engine.view(link).ok().map(|v| v.policy.clone());
                    let applied = serde_json::from_slice::<SignedMembership>(&e.body)
                        .map_err(|_| RoomError::BadMembership("not JSON"))
                        .and_then(|m| self.engine.apply_membership(link, &m).map(|r| (r, m.policy)));
                    match applied {
                        Ok(((change, changes), after)) => {
                            out.batch.records.extend(sk_records(changes));
                            if !change.already_applied {
                                out.batch.messages.push(describe(
                                    link,
                                    (e.seq, e.ts),
                                    e.sender,
                                    (&change.added, &change.removed),
                                    before.as_ref(),
                                    Some(&after),
                                ));
                            }
                            if change.removed_me {
                                out.status = RoomStatus::Removed;
                            } else if !change.removed.is_empty() {
                                out.follow_up.rotate = true;
                            }
                        }
                        Err(err) => {
                            tracing::warn!(room = link, seq = e.seq, error = %err, "refused a membership entry");
                            out.batch.messages.push(Message::undecryptable(
                                link,
                                e.seq,
                                e.sender,
                                e.ts,
                                &err.to_string(),
                            ));
                        }
                    }
                }
                EntryKind::Application if e.sender == me => out.own.push((e.seq, e.ts, e.body)),
                EntryKind::Application => match self.engine.decrypt(link, &e.body) {
                    Ok((d, changes)) => {
                        out.batch.records.extend(sk_records(changes));
                        let at = self.engine.view(link).map_or(PolicyAt::Unknown, |v| PolicyAt::Policy(&v.policy));
                        read_content(&mut out.batch, link, (e.seq, e.ts), d.sender, d.plaintext, at);
                    }
                    Err(RoomError::Cipher(SenderKeyError::UnknownChain | SenderKeyError::WrongRoom))
                        if !mailbox_read =>
                    {
                        // The sender's distribution may be in the mailbox: read it, then come
                        // back to this entry.
                        out.follow_up.read_mailbox = true;
                        return Ok(out);
                    }
                    Err(err) if err.is_missing_chain() => {
                        // The sender's key may still be on its way (its delivery to this member's
                        // home is retried): held, and read when it comes.
                        let (held, changes) = self.engine.hold_message(link, e.seq, e.ts, &e.body)?;
                        out.batch.records.extend(sk_records(changes));
                        let why = if held {
                            "the sender's key has not arrived yet: it is read when the key comes".to_string()
                        } else {
                            err.to_string()
                        };
                        tracing::info!(room = link, seq = e.seq, held, "a message whose sender key has not arrived");
                        out.batch.messages.push(Message::undecryptable(link, e.seq, e.sender, e.ts, &why));
                    }
                    Err(err) => {
                        tracing::warn!(room = link, seq = e.seq, error = %err, "undecryptable entry");
                        out.batch.messages.push(Message::undecryptable(link, e.seq, e.sender, e.ts, &err.to_string()));
                    }
                },
                _ => out.batch.messages.push(Message::undecryptable(
                    link,
                    e.seq,
                    e.sender,
                    e.ts,
                    "not a sender-keys entry",
                )),
            }
            out.cursor = e.seq;
            if out.status != RoomStatus::Active {
                break;
            }
        }
        Ok(out)
    }

    fn seal(&mut self, room: &LocalRoom, plaintext: &[u8], view: u64, now: u64) -> Result<Seal> {
        match self.engine.encrypt(&room.link, plaintext, view, now) {
            Ok((body, epoch, changes)) => {
                let batch = Box::new(Batch { records: sk_records(changes), ..Batch::default() });
                Ok(Seal::Sealed { body, epoch, batch })
            }
            Err(RoomError::StaleView { .. } | RoomError::NeedsRotation) => Ok(Seal::Stale),
            Err(e) => Err(ClientError::from(e)),
        }
    }

    fn local_view(&self, room: &LocalRoom) -> Result<u64> {
        Ok(self.engine.view(&room.link)?.version)
    }

    fn needs_rotation(&self, room: &LocalRoom, now: u64) -> Result<bool> {
        Ok(self.engine.needs_rotation(&room.link, now)?)
    }

    fn release_held(&mut self, room: &LocalRoom) -> Result<Batch> {
        let mut batch = Batch::default();
        if self.engine.held_len(&room.link) == 0 {
            return Ok(batch);
        }
        let (readable, changes) = self.engine.take_readable(&room.link)?;
        batch.records.extend(sk_records(changes));
        let view = self.engine.view(&room.link);
        for r in readable {
            let d = r.decrypted;
            // Read as any message is (names learned, a room profile judged by the policy), its
            // line replacing the one that said the key had not arrived.
            let mut read = Batch::default();
            let at = view.as_ref().map_or(PolicyAt::Unknown, |v| PolicyAt::Policy(&v.policy));
            read_content(&mut read, &room.link, (r.seq, r.ts), d.sender, d.plaintext, at);
            batch.names.append(&mut read.names);
            batch.meta.append(&mut read.meta);
            batch.replaced.append(&mut read.messages);
        }
        Ok(batch)
    }

    fn removed_unseen(&mut self, room: &LocalRoom) -> Batch {
        Batch {
            records: sk_records(self.engine.forget_room(&room.link)),
            statuses: vec![(room.link.clone(), RoomStatus::Removed)],
            ..Batch::default()
        }
    }
}

#[cfg(test)]
mod tests;
