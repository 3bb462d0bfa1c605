//! Sending: every message goes through the outbox.
//!
//! `send` writes the message's plaintext content to the outbox, then flushes the room's outbox
//! in order. Flushing one item: seal it (encrypt it under the next key, persisting the ratchet
//! step and the ciphertext in one transaction), post the ciphertext, and on the server's
//! answer drop the item and record the message in history (one transaction). So:
//!
//! - **Offline**: the server cannot be reached → the item stays, sealed or not;
//!   [`ClientError::Queued`]. The next command that reaches the server (any sync, send or
//!   read) posts it, in order.
//! - **Never twice under one key**: a sealed item is posted again as the same ciphertext until
//!   the server takes it; it is sealed again (a new key) only when the server said its epoch
//!   is over, i.e. it never entered the log.
//! - **Nothing duplicated**: before posting, the room is synced; an own entry in the log whose
//!   ciphertext is a sealed item's (a post whose answer was lost, or a process killed after
//!   posting) settles that item instead of posting it again. The time of every post is
//!   persisted before it leaves; an item posted less than [`IN_FLIGHT_GRACE`] ago by a
//!   process that died may still be on its way into the log, so it is posted again only after
//!   that grace and one more sync.
//! - **A crash at any point** leaves the item in one of those states; the next flush goes on.
//! - **Durability**: the item is queued and settled without waiting for the disk
//!   ([`crate::store::ClientStore::commit_relaxed`]): a crashed process loses neither (the OS
//!   holds the WAL), and the seal in between is a durable commit that syncs the queueing with
//!   it. A send that stops before sealing makes the queued item durable itself. A settle lost
//!   to a power loss is settled again from the log.
//!
//! All of it runs under the profile's lock ([`crate::lock`]), so two processes never flush
//! one item at once.

use std::collections::HashMap;

use grove_wire::api::{AppendEntry, EntryKind};
use grove_wire::content::Content;
use grove_wire::ErrorCode;

use super::{unix_seconds, ClientError, Profile, Result, COMMIT_ATTEMPTS};
use crate::core::Seal;
use crate::store::{Batch, LocalRoom, OutboxItem, RoomStatus};
use crate::transport::now_ms;

/// What encryption adds to a message, at most (MLS framing and padding, or the sender-keys
/// header, tag and signature), kept free under the server's entry limit.
pub const SEAL_OVERHEAD: u64 = 512;

/// How long a post that got no answer may still be on its way into the room's log (a server
/// handles an append in milliseconds; this leaves room for a loaded one).
pub const IN_FLIGHT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A message sent ([`Profile::send_reporting`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its sequence number in the room's log.
    pub seq: u64,
    /// Sender keys: the members who have not got the sender's key yet (their home could not be
    /// reached); they read the message once it lands. Empty in MLS rooms.
    pub key_pending: Vec<super::KeyPending>,
}

impl Profile {
    /// Sends a message of any content kind to a room. Answers its sequence number in the log;
    /// [`ClientError::Queued`] if the server could not take it now (it waits in the outbox).
    pub async fn send_content(&mut self, key: &str, content: &Content) -> Result<u64> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        let plaintext = content.encode();
        // The server's limit, told before anything is encrypted (when the server can be asked:
        // offline, the message is queued and a refusal comes when it is posted).
        if let Ok(info) = self.server(&room.server).cached_info().await {
            let max = info.limits.max_entry_bytes;
            if plaintext.len() as u64 + SEAL_OVERHEAD > max {
                return Err(ClientError::TooLarge {
                    size: plaintext.len() as u64,
                    max: max.saturating_sub(SEAL_OVERHEAD),
                });
            }
        }
        // Writing into a room one was invited to accepts the invitation.
        self.accept_pending(&room.link)?;
        // Queued without waiting for the disk: sealing it (a durable commit) makes it durable;
        // a send that stops before sealing it makes it durable itself, below.
        let id = self.store.outbox_add_relaxed(&room.link, &plaintext, unix_seconds() as i64)?;
        let flushed = self.flush_room(&room).await;
        if flushed.is_err() {
            self.store.make_durable()?;
        }
        let posted = flushed.map_err(|e| queued(e, id))?;
        match posted.get(&id) {
            Some(seq) => Ok(*seq),
            None => Err(ClientError::Invalid("the message left the outbox without being posted".into())),
        }
    }

    /// [`Profile::send_content`], answering also who in the room has not got this user's
    /// sender key yet ([`Profile::key_pending`]): they read the message once their home takes
    /// the key, on a later sync or send of this user.
    pub async fn send_reporting(&mut self, key: &str, content: &Content) -> Result<Sent> {
        let seq = self.send_content(key, content).await?;
        Ok(Sent { seq, key_pending: self.key_pending(key)? })
    }

    /// What waits in the outbox, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxItem>> {
        Ok(self.store.outbox(None)?)
    }

    /// Posts what waits in every active room's outbox. Answers how many were posted; a room
    /// whose server cannot be reached keeps its items.
    pub async fn flush_outbox(&mut self) -> Result<usize> {
        let _lock = self.lock().await?;
        let mut rooms: Vec<String> = self.store.outbox(None)?.into_iter().map(|i| i.room).collect();
        rooms.dedup();
        let mut posted = 0;
        for link in rooms {
            let room = self.room(&link)?;
            if room.status != RoomStatus::Active {
                // Nobody will ever take these: say so in history, then drop them.
                self.drop_items(&room, "you are no longer a member of this room")?;
                continue;
            }
            match self.flush_room(&room).await {
                Ok(p) => posted += p.len(),
                Err(ClientError::Server(e)) if e.is_transient() => {
                    tracing::info!(room = link, error = %e, "the outbox waits for the server");
                }
                Err(e) => tracing::warn!(room = link, error = %e, "could not post from the outbox"),
            }
        }
        Ok(posted)
    }

    fn drop_items(&mut self, room: &LocalRoom, why: &str) -> Result<()> {
        let items = self.store.outbox(Some(&room.link))?;
        if items.is_empty() {
            return Ok(());
        }
        for i in &items {
            tracing::warn!(room = room.link, id = i.id, why, "dropping a message from the outbox");
        }
        self.store.commit(Batch { sent: items.iter().map(|i| i.id).collect(), ..Batch::default() })?;
        Ok(())
    }

    /// Posts the room's outbox in order. Answers the log sequence number of each item posted
    /// (or found already posted), by item id.
    pub(super) async fn flush_room(&mut self, room: &LocalRoom) -> Result<HashMap<i64, u64>> {
        let mut done = HashMap::new();
        if self.store.outbox(Some(&room.link))?.is_empty() {
            return Ok(done);
        }
        let server = self.server(&room.server);
        let mut attempts = 0;
        let mut version = None;
        // The room's cursor after the last sync (and own posts right after it).
        let mut cursor = 0;
        let mut waited = std::collections::HashSet::new();
        loop {
            if version.is_none() && attempts == 0 {
                // A push connection that follows the room live has brought everything up to
                // where this profile has applied: a read would find nothing more, so the first
                // attempt of a fresh item skips it (sealed items read the log first: their post
                // may be in it).
                if let Some(v) = self.live_view(&server, room)? {
                    version = Some(v);
                    cursor = self.room(&room.link)?.cursor;
                }
            }
            if version.is_none() {
                // Apply what others did, and settle own posts already in the log.
                let (status, v) = self.sync_room_locked(&room.link).await?;
                done.extend(std::mem::take(&mut self.settled));
                if status != RoomStatus::Active {
                    self.drop_items(room, "you are no longer a member of this room")?;
                    self.active_room(&room.link)?;
                }
                version = Some(v);
                cursor = self.room(&room.link)?.cursor;
            }
            let Some(item) = self.store.outbox(Some(&room.link))?.into_iter().next() else { return Ok(done) };
            if let (Some(_), Some(at)) = (&item.sealed, item.attempted) {
                let age = now_ms().saturating_sub(at).max(0) as u128;
                if age < IN_FLIGHT_GRACE.as_millis() && waited.insert(item.id) {
                    // An earlier post of this ciphertext may still be entering the log: wait it
                    // out, then look again before posting the same bytes.
                    tokio::time::sleep(IN_FLIGHT_GRACE - std::time::Duration::from_millis(age as u64)).await;
                    version = None;
                    continue;
                }
            }
            let (body, epoch) = match item.sealed.clone() {
                Some(sealed) => {
                    self.store.commit(Batch { attempted: vec![(item.id, now_ms())], ..Batch::default() })?;
                    sealed
                }
                // Sealing marks the item attempted in the same transaction.
                None => match self.seal(room, &item, version.unwrap_or(0)).await? {
                    Some(sealed) => sealed,
                    None => {
                        // The view was stale: sync and seal again.
                        attempts += 1;
                        if attempts >= COMMIT_ATTEMPTS {
                            return Err(ClientError::Busy(room.link.clone()));
                        }
                        version = None;
                        continue;
                    }
                },
            };
            let entry = AppendEntry { kind: EntryKind::Application, epoch, body };
            match server.append(&room.name, &entry).await {
                Ok(a) => {
                    let mut batch = Batch { sent: vec![item.id], ..Batch::default() };
                    if a.seq == cursor + 1 {
                        // Nothing came between the last sync and this post: the log is read
                        // up to it (the profile lock keeps other processes from applying
                        // meanwhile), so the next sync need not read it back to settle it.
                        batch.cursors.push((room.link.clone(), a.seq));
                        cursor = a.seq;
                    }
                    self.read_own_content(&mut batch, &room.link, (a.seq, a.ts), item.content);
                    // The entry is in the log: if this record is lost (a power loss), the
                    // next sync settles the item from the log.
                    self.store.commit_relaxed(batch)?;
                    done.insert(item.id, a.seq);
                }
                Err(e) if matches!(e.code(), Some(ErrorCode::WrongEpoch | ErrorCode::EpochTooOld)) => {
                    // The ciphertext never entered the log: forget it; it is sealed again,
                    // under a new key, after the sync.
                    self.store.commit(Batch { sealed: vec![(item.id, None)], ..Batch::default() })?;
                    self.check_not_behind(room, &e).await?;
                    attempts += 1;
                    if attempts >= COMMIT_ATTEMPTS {
                        return Err(ClientError::Busy(room.link.clone()));
                    }
                    version = None;
                }
                Err(e) if e.code() == Some(ErrorCode::NotMember) => {
                    // Removed since the sync above: the server still serves the log up to the
                    // entry that removed this member, so read it (it says who, in history),
                    // and give up on the room's queue.
                    let (status, _) = self.sync_room_locked(&room.link).await?;
                    if status == RoomStatus::Active {
                        // The removal is a commit this profile could not process, which members
                        // may prove faulty: the message waits for its void.
                        return Err(ClientError::Queued {
                            id: item.id,
                            why: "the server says a commit this profile could not process removed it; until \
                                  members prove it faulty and the server voids it"
                                .into(),
                        });
                    }
                    self.store.commit(Batch { sent: vec![item.id], ..Batch::default() })?;
                    self.drop_items(room, "you are no longer a member of this room")?;
                    self.active_room(&room.link)?;
                    return Err(e.into());
                }
                Err(e) if e.is_transient() => {
                    if e.code().is_some() {
                        // The server answered "not now": this post is not on its way into the
                        // log, so the next attempt need not wait out the in-flight grace.
                        self.store.commit(Batch { attempted: vec![(item.id, 0)], ..Batch::default() })?;
                    }
                    return Err(e.into());
                }
                Err(e) => {
                    // Refused for good (too large, not a member): it would block the queue.
                    tracing::warn!(room = room.link, id = item.id, error = %e, "the server refused a message for good");
                    self.store.commit(Batch { sent: vec![item.id], ..Batch::default() })?;
                    return Err(e.into());
                }
            }
        }
    }

    /// The room's view (its epoch or membership version, as a sync would answer it) if the
    /// push connection follows it live, this profile has applied every entry it brought, and
    /// the room's first outbox item is fresh (never sealed); `None`: read the log first.
    fn live_view(&mut self, server: &crate::transport::Server, room: &LocalRoom) -> Result<Option<u64>> {
        let Some(through) = server.live_through(&room.name) else { return Ok(None) };
        let now = self.room(&room.link)?;
        if now.status != RoomStatus::Active || now.cursor < through {
            return Ok(None);
        }
        if self.store.outbox(Some(&room.link))?.first().is_none_or(|i| i.sealed.is_some()) {
            return Ok(None);
        }
        Ok(Some(self.room_protocol(room.mode)?.local_view(&now)?))
    }

    /// Encrypts an outbox item under the room's next key and persists the ratchet step with
    /// the ciphertext. `None`: the view is stale; sync first.
    async fn seal(&mut self, room: &LocalRoom, item: &OutboxItem, view: u64) -> Result<Option<(Vec<u8>, u64)>> {
        let now = unix_seconds();
        if self.room_protocol(room.mode)?.needs_rotation(room, now)? {
            // Fresh own keys, distributed, before the next message.
            self.update(&room.link).await?;
        } else if room.mode == grove_wire::api::RoomMode::SenderKeys && self.sk_delivery_waits(room)? {
            // Members the own key has not reached yet: tried again (those still unreachable
            // wait; the message goes to the others now and is readable to them once it lands).
            self.sk_deliver(room).await?;
        }
        let sealed = self.room_protocol(room.mode)?.seal(room, &item.content, view, now)?;
        let Seal::Sealed { body, epoch, mut batch } = sealed else { return Ok(None) };
        // The ratchet has moved: persisted, with the ciphertext, before it leaves.
        batch.sealed.push((item.id, Some((body.clone(), epoch))));
        batch.attempted.push((item.id, now_ms()));
        self.store.commit(*batch)?;
        Ok(Some((body, epoch)))
    }

    /// An own application entry seen in the log: if it is a sealed outbox item, the post went
    /// through; record it in history and drop the item.
    pub(super) fn settle_own_entry(
        &mut self,
        batch: &mut Batch,
        link: &str,
        seq: u64,
        ts: i64,
        body: &[u8],
    ) -> Result<()> {
        if let Some(item) = self.store.outbox_item_posted_as(link, body)? {
            batch.sent.push(item.id);
            self.settled.insert(item.id, seq);
            self.read_own_content(batch, link, (seq, ts), item.content);
        }
        Ok(())
    }
}

/// A send whose server could not be reached waits in the outbox.
fn queued(e: ClientError, id: i64) -> ClientError {
    match e {
        ClientError::Server(e) if e.is_transient() => ClientError::Queued { id, why: e.to_string() },
        // The room went on by a commit this profile cannot process: the message waits.
        e @ ClientError::Behind { .. } => ClientError::Queued { id, why: e.to_string() },
        e => e,
    }
}
