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
//! Still driver-side, per protocol (the next step of this core): membership changes (MLS
//! commits with their `wrong_epoch` retry, sender-keys membership versions), joining, leaving,
//! and the Olm distribution of sender keys.

use grove_proto::mls::engine::{GroupId, Incoming, MlsEngine};
use grove_proto::senderkeys::room::{RoomError, SkEngine};
use grove_proto::senderkeys::SenderKeyError;
use grove_wire::api::{Entry, EntryKind, RoomMode};
use grove_wire::content::Content;
use grove_wire::membership::SignedMembership;
use grove_wire::UserId;

use crate::profile::names::learn_names;
use crate::profile::sk::{load_sk_engine, sk_records};
use crate::profile::{describe, ClientError, Result};
use crate::store::{Batch, ClientStore, LocalRoom, Message, RoomStatus};

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

/// A room protocol, sans-IO.
pub(crate) trait RoomProtocol {
    /// Applies a page of the room's log, in order, from `room.cursor` on. `mailbox_read`: the
    /// mailbox was just read for this page, so an unknown chain is now unreadable for good.
    fn apply(&mut self, room: &LocalRoom, me: UserId, entries: Vec<Entry>, mailbox_read: bool) -> Result<Applied>;

    /// Seals a plaintext for the room. `view` is the epoch or version the server reported at
    /// the last sync; `now` is Unix seconds.
    fn seal(&mut self, room: &LocalRoom, plaintext: &[u8], view: u64, now: u64) -> Result<Seal>;

    /// Whether the own keys must be renewed (and, for sender keys, distributed) before sealing.
    fn needs_rotation(&self, room: &LocalRoom, now: u64) -> Result<bool>;

    /// The server no longer lets this member read the room: it was removed by an entry it has
    /// not seen. Answers what to persist.
    fn removed_unseen(&mut self, room: &LocalRoom) -> Batch;
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

impl RoomProtocol for MlsRoom<'_> {
    fn apply(&mut self, room: &LocalRoom, _me: UserId, mut entries: Vec<Entry>, _: bool) -> Result<Applied> {
        let g = GroupId::new(room.group_id.clone());
        let mut out = Applied { cursor: room.cursor, ..Applied::default() };
        // One engine call per page: the group's state is written once, not per entry. Each
        // entry's outcome is what `process` would have given for it, in order; after a commit
        // removing us the rest fail, and the loop below stops at that commit.
        let bodies: Vec<Vec<u8>> = entries.iter_mut().map(|e| std::mem::take(&mut e.body)).collect();
        let (outcomes, changes) = self.engine.process_many(&g, &bodies)?;
        out.batch.changes.push(changes);
        for ((e, outcome), body) in entries.into_iter().zip(outcomes).zip(bodies) {
            out.cursor = e.seq;
            match outcome {
                Ok(Incoming::Application { sender, plaintext }) => {
                    learn_names(&mut out.batch, &room.link, sender, &Content::decode(&plaintext));
                    out.batch.messages.push(Message::content(&room.link, e.seq, sender, e.ts, plaintext));
                }
                Ok(Incoming::Own) if e.kind == EntryKind::Application => out.own.push((e.seq, e.ts, body)),
                Ok(Incoming::Commit { added, removed, removed_me, .. }) => {
                    out.batch.messages.push(describe(&room.link, e.seq, e.ts, e.sender, &added, &removed));
                    if removed_me {
                        out.status = RoomStatus::Removed;
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
                    out.batch.messages.push(Message::undecryptable(
                        &room.link,
                        e.seq,
                        e.sender,
                        e.ts,
                        &err.to_string(),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn seal(&mut self, room: &LocalRoom, plaintext: &[u8], _view: u64, _now: u64) -> Result<Seal> {
        let (body, epoch, changes) = self.engine.encrypt(&GroupId::new(room.group_id.clone()), plaintext)?;
        Ok(Seal::Sealed { body, epoch, batch: Box::new(Batch { changes: vec![changes], ..Batch::default() }) })
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
    fn apply(&mut self, room: &LocalRoom, me: UserId, entries: Vec<Entry>, mailbox_read: bool) -> Result<Applied> {
        let link = room.link.as_str();
        let mut out = Applied { cursor: room.cursor, ..Applied::default() };
        for e in entries {
            match e.kind {
                EntryKind::Membership => {
                    let applied = serde_json::from_slice::<SignedMembership>(&e.body)
                        .map_err(|_| RoomError::BadMembership("not JSON"))
                        .and_then(|m| self.engine.apply_membership(link, &m));
                    match applied {
                        Ok((change, changes)) => {
                            out.batch.records.extend(sk_records(changes));
                            if !change.already_applied {
                                out.batch.messages.push(describe(
                                    link,
                                    e.seq,
                                    e.ts,
                                    e.sender,
                                    &change.added,
                                    &change.removed,
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
                        learn_names(&mut out.batch, link, d.sender, &Content::decode(&d.plaintext));
                        out.batch.messages.push(Message::content(link, e.seq, d.sender, e.ts, d.plaintext));
                    }
                    Err(RoomError::Cipher(SenderKeyError::UnknownChain | SenderKeyError::WrongRoom))
                        if !mailbox_read =>
                    {
                        // The sender's distribution may be in the mailbox: read it, then come
                        // back to this entry.
                        out.follow_up.read_mailbox = true;
                        return Ok(out);
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

    fn needs_rotation(&self, room: &LocalRoom, now: u64) -> Result<bool> {
        Ok(self.engine.needs_rotation(&room.link, now)?)
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
