//! Resync of MLS rooms (`grove_proto::mls::resync`): what a sync does when a member cannot
//! process a commit the room accepted (a split view, say), and what the members who could do
//! for it.
//!
//! - **Stuck** (a commit of this member's epoch failed): it sends the room a request, an
//!   application message of its epoch carrying that epoch's resync key, and remembers who made
//!   the commit (the suspect).
//! - **Ahead** (a request from an earlier epoch): it answers with a `resync` entry, a GroupInfo
//!   of its current epoch sealed under the request's key. Once per stuck epoch and page.
//! - **Offered** (a `resync` entry for this member's epoch, of a later one): it opens the offer
//!   with its own resync key, makes an external commit replacing its own leaf from a GroupInfo
//!   not signed by the suspect, and posts it. Taken: the group is the new one, the cursor moves
//!   to the commit (the entries between are of epochs it never entered), history says so, and it
//!   publishes the GroupInfo of its new epoch for the members still stuck where it was; what
//!   waits in its outbox is sealed anew (under its new leaf). Refused
//!   (another stuck member was first): it waits for the next offer.
//!
//! - **Went on** (this member processed other members' commits, and read the log to its
//!   head): for each epoch those commits left that no offer in the page covers yet, it offers a
//!   GroupInfo of its current epoch sealed under that epoch's resync key (noted by the engine
//!   before the commit was processed), unasked. A member who could not process the commit
//!   finds the offer on its first read after it: one round of syncs, not two. One offer per
//!   commit, by whoever reads it first (an offer for that epoch in the page stops the
//!   others; at most 4 a page); a member catching up from far back offers nothing.
//!
//! Every step is best effort: a failure is logged, and nothing here fails a sync. Requests and
//! offers are log entries, so members answer and resync on their next sync whenever they read
//! them. A request or offer that could not be posted (the server unreachable) is posted on the
//! next sync (`retry`); one the server refused is not (the room moved on: it helps nobody).

use grove_proto::mls::engine::GroupId;
use grove_proto::mls::resync::{open, seal};
use grove_wire::api::{AppendEntry, EntryKind, ResyncOffer};
use grove_wire::content::Content;
use grove_wire::UserId;
use rand::RngCore;

use super::{Profile, Result};

mod retry;
use crate::core::ResyncFollowUp;
use crate::store::{Batch, LocalRoom, Membership, Message};
use crate::transport::Server;

/// The meta key of a room's suspect: who made the commit this member could not process.
fn suspect_key(link: &str) -> String {
    format!("resync.suspect.{link}")
}

/// The largest GroupInfo (with its ratchet tree) a member offers unasked after another's
/// commit: about 16 KiB, a room of some 80 members. A larger room's offers would cost more
/// than the commits they follow; its stuck members ask, as before (two rounds of syncs).
pub(crate) const UNASKED_OFFER_MAX_BYTES: usize = 16 * 1024;

impl Profile {
    /// The commit this profile last could not process in the room: (its epoch, who made it,
    /// its seq).
    fn stuck_at(&self, link: &str) -> Result<Option<(u64, UserId, u64)>> {
        Ok(self.store.meta(&suspect_key(link))?.and_then(|v| {
            let v = String::from_utf8(v).ok()?;
            let mut parts = v.split(':');
            let epoch = parts.next()?.parse().ok()?;
            let user = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            Some((epoch, user, seq))
        }))
    }

    /// An admin's way out of a commit nobody could process (so nobody can prove its fault or
    /// offer a resync: a wrong confirmation tag, say): asks the server to void the commit this
    /// profile is stuck behind, on this admin's word, and reads the void. Answers the void's
    /// seq. Refused (`forbidden`) for a member who is not an admin, and (`not_reportable`) if
    /// the commit is no longer the room's last. Do not use it while members may still resync
    /// (some member could process the commit): they would be ahead of the room after the void.
    pub async fn void_stuck_commit(&mut self, key: &str) -> Result<u64> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        self.sync_room_locked(&room.link).await?;
        let ours = self.engine.get(&self.store, &self.identity)?.epoch(&GroupId::new(room.group_id.clone()))?;
        let Some((_, _, seq)) = self.stuck_at(&room.link)?.filter(|(epoch, _, _)| *epoch == ours) else {
            return Err(super::ClientError::Invalid(format!(
                "this profile is not behind a commit it cannot process in {}",
                room.link
            )));
        };
        let report = grove_wire::api::FaultReport {
            seq,
            membership_key: None,
            reason: "voided by an admin: no member could process it".into(),
            admin_void: true,
        };
        let outcome = self.server(&room.server).report_fault(&room.name, &report).await?;
        self.sync_room_locked(&room.link).await?;
        outcome.void_seq.ok_or_else(|| super::ClientError::Invalid("the server voided nothing".into()))
    }

    /// Does what a page's resync follow-up asks. Answers the new cursor if this member resynced.
    pub(super) async fn resync_follow_up(
        &mut self,
        server: &Server,
        room: &LocalRoom,
        work: ResyncFollowUp,
    ) -> Result<Option<u64>> {
        if let Some((epoch, committer, seq)) = work.stuck {
            self.store.set_meta(&suspect_key(&room.link), format!("{epoch}:{committer}:{seq}").as_bytes())?;
        }
        if let Some(offer) = work.offer {
            match self.resync(server, room, &offer).await {
                Ok(Some(seq)) => return Ok(Some(seq)),
                Ok(None) => {}
                Err(e) => tracing::warn!(room = room.link, seq = offer.seq, error = %e, "a resync failed"),
            }
        }
        if let Some((epoch, _, _)) = work.stuck {
            match self.request_resync(server, room, epoch).await {
                Ok(()) => {}
                Err(super::ClientError::Server(e)) if e.is_transient() => {
                    tracing::warn!(room = room.link, error = %e, "asking for a resync failed; asked again on the next sync");
                    self.retry_later(&room.link, |r| r.request = Some(epoch))?;
                }
                Err(e) => tracing::warn!(room = room.link, error = %e, "asking for a resync failed"),
            }
        }

        let ours = self.engine.get(&self.store, &self.identity)?.epoch(&GroupId::new(room.group_id.clone()))?;
        let mut answered = Vec::new();
        for (epoch, key) in work.requests {
            if epoch >= ours || answered.contains(&epoch) {
                continue;
            }
            answered.push(epoch);
            let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else { continue };
            if let Err(e) = self.offer_resync(server, room, epoch, &key).await {
                tracing::warn!(room = room.link, stuck = epoch, error = %e, "answering a resync request failed");
            }
        }
        // Unasked offers, for the epochs no answer above covered.
        let left = work.left.into_iter().filter(|(epoch, _)| !answered.contains(epoch)).collect();
        self.offer_left(server, room, left).await?;
        Ok(None)
    }

    /// Offers the members stuck in the epochs `left` (other members' commits took this member
    /// out of them) the GroupInfo of this member's epoch, unasked. An offer that could not
    /// reach the server is posted on the next sync.
    async fn offer_left(
        &mut self,
        server: &Server,
        room: &LocalRoom,
        left: Vec<(u64, zeroize::Zeroizing<[u8; 32]>)>,
    ) -> Result<()> {
        if let Some(first) = left.first() {
            // Unasked offers cost every commit one entry holding the ratchet tree: kept to
            // small rooms. In a larger one a stuck member asks, and is answered (two rounds).
            let g = GroupId::new(room.group_id.clone());
            let size = self.engine.get(&self.store, &self.identity)?.resync_group_info(&g)?.len();
            if size > UNASKED_OFFER_MAX_BYTES {
                tracing::debug!(
                    room = room.link,
                    stuck = first.0,
                    size,
                    "no unasked resync offer in a room this large"
                );
                return Ok(());
            }
        }
        for (epoch, key) in left {
            match self.offer_resync(server, room, epoch, &key).await {
                Ok(()) => {}
                Err(super::ClientError::Server(e)) if e.is_transient() => {
                    tracing::warn!(room = room.link, stuck = epoch, error = %e, "offering a resync failed; offered again on the next sync");
                    self.retry_later(&room.link, |r| r.offers.push((epoch, key.to_vec())))?;
                }
                Err(e) => tracing::info!(room = room.link, stuck = epoch, error = %e, "a resync offer was not taken"),
            }
        }
        Ok(())
    }

    /// Sends the room this member's request: its epoch's resync key, in a message of that epoch.
    pub(super) async fn request_resync(&mut self, server: &Server, room: &LocalRoom, epoch: u64) -> Result<()> {
        let g = GroupId::new(room.group_id.clone());
        let engine = self.engine.get(&self.store, &self.identity)?;
        let key = engine.resync_key(&g)?;
        let plaintext = Content::ResyncRequest { epoch, key: key.to_vec() }.encode();
        let (body, epoch, changes) = engine.encrypt(&g, &plaintext)?;
        // The ratchet step is persisted before the ciphertext leaves.
        self.store.commit(Batch { changes: vec![changes], ..Batch::default() })?;
        server.append(&room.name, &AppendEntry { kind: EntryKind::Application, epoch, body }).await?;
        tracing::info!(room = room.link, epoch, "asked for a resync");
        self.retry_later(&room.link, |r| r.request = r.request.filter(|e| *e != epoch))?;
        Ok(())
    }

    /// Posts a GroupInfo of this member's epoch, sealed under the resync key of `stuck_epoch`.
    pub(super) async fn offer_resync(
        &mut self,
        server: &Server,
        room: &LocalRoom,
        stuck_epoch: u64,
        key: &[u8; 32],
    ) -> Result<()> {
        let g = GroupId::new(room.group_id.clone());
        let engine = self.engine.get(&self.store, &self.identity)?;
        let group_info = engine.resync_group_info(&g)?;
        let epoch = engine.epoch(&g)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let offer = ResyncOffer { stuck_epoch, sealed: seal(key, nonce, &group_info) };
        let body = serde_json::to_vec(&offer).map_err(|e| super::ClientError::Invalid(e.to_string()))?;
        server.append(&room.name, &AppendEntry { kind: EntryKind::Resync, epoch, body }).await?;
        tracing::info!(room = room.link, stuck_epoch, epoch, "offered a resync");
        Ok(())
    }

    /// Resyncs from `offer`. Answers the seq of the external commit if the server took it.
    async fn resync(&mut self, server: &Server, room: &LocalRoom, offer: &crate::core::Offer) -> Result<Option<u64>> {
        let g = GroupId::new(room.group_id.clone());
        let suspect = self.stuck_at(&room.link)?.map(|(_, user, _)| user);
        let engine = self.engine.get(&self.store, &self.identity)?;
        let stuck_epoch = engine.epoch(&g)?;
        let key = engine.resync_key(&g)?;
        let Ok(group_info) = open(&key, &offer.sealed) else {
            tracing::warn!(room = room.link, seq = offer.seq, "a resync offer that does not open under our key");
            return Ok(None);
        };
        let commit = engine.prepare_resync(&g, &group_info)?;
        if Some(commit.signer) == suspect || Some(offer.from) == suspect {
            engine.discard_resync(&g);
            tracing::warn!(
                room = room.link,
                seq = offer.seq,
                "ignored a resync offer from the member whose commit we could not process"
            );
            return Ok(None);
        }
        let entry = AppendEntry { kind: EntryKind::Commit, epoch: commit.epoch, body: commit.commit };
        // Until the outcome is known and applied: if it is lost (or this process dies), the next
        // sync asks again (`retry`).
        self.retry_later(&room.link, |r| r.request = Some(stuck_epoch))?;
        let appended = match server.append(&room.name, &entry).await {
            Ok(a) => a,
            Err(e) => {
                self.engine.get(&self.store, &self.identity)?.discard_resync(&g);
                if e.code().is_some() {
                    // Refused (another stuck member was first): this member holds the room's
                    // view of itself; the next offer will do.
                    self.retry_later(&room.link, |r| r.request = None)?;
                    tracing::info!(room = room.link, error = %e, "the resync commit was not taken; waiting for the next offer");
                } else {
                    tracing::warn!(room = room.link, error = %e, "the resync commit's outcome is unknown; asking again");
                }
                return Ok(None);
            }
        };
        let (epoch, _, changes) = self.engine.get(&self.store, &self.identity)?.apply_resync(&g)?;
        let mut batch = Batch { changes: vec![changes], ..Batch::default() };
        let line = Membership { resynced: Some(epoch), ..Membership::default() };
        batch.messages.push(Message::membership(&room.link, appended.seq, commit.signer, appended.ts, &line));
        batch.cursors.push((room.link.clone(), appended.seq));
        // What waits in the outbox sealed under the old leaf would reach nobody now (members
        // refuse a message whose sender's leaf is gone): sealed anew when it is posted.
        for item in self.store.outbox(Some(&room.link))? {
            if item.sealed.is_some() {
                batch.sealed.push((item.id, None));
            }
        }
        self.store.commit(batch)?;
        self.store.delete_meta(&suspect_key(&room.link))?;
        self.retry_later(&room.link, |r| r.request = None)?;
        tracing::warn!(room = room.link, stuck_epoch, epoch, seq = appended.seq, "resynced");
        // The members still stuck where this member was: the GroupInfo of the new epoch.
        match self.offer_resync(server, room, stuck_epoch, &key).await {
            Ok(()) => {}
            Err(super::ClientError::Server(e)) if e.is_transient() => {
                tracing::warn!(room = room.link, error = %e, "offering a resync after ours failed; offered again on the next sync");
                self.retry_later(&room.link, |r| r.offers.push((stuck_epoch, key.to_vec())))?;
            }
            Err(e) => tracing::warn!(room = room.link, error = %e, "offering a resync after ours failed"),
        }
        Ok(Some(appended.seq))
    }
}
