//! MLS link joins by external commit (grove-proto `mls::links`), the client's side.
//!
//! - **Members who hold the link's secret** (its maker, whoever used it to come in, and the
//!   members an admin shared it with: `Content::LinkKey`) keep the room's GroupInfo on the room's
//!   server, sealed under a key derived from the secret, while the room's join rule is `link`:
//!   on making the link, and on every sync after which the room's epoch is not the one last
//!   uploaded ([`Profile::keep_link_group_infos`]).
//! - **A link holder** (`grove join LINK`) fetches it with the link's token, opens it, makes an
//!   external commit that adds itself, and posts it with the token
//!   ([`Profile::join_by_external_commit`]): it is a member at once, with no admin online. When
//!   the server has no GroupInfo for the link (a sender-keys room, a room whose join rule is
//!   `approval`, a link nobody uploaded for yet) or the one it has is of an epoch the room left
//!   (it was uploaded before a commit by a member who does not hold the secret), the holder
//!   asks to join instead, and an admin's client lets it in (`joins`).

use grove_proto::mls::engine::GroupId;
use grove_proto::mls::links::{group_info_key, open, seal};
use grove_wire::api::{LinkJoin, LinkToken, PutLinkGroupInfo, RoomMode};
use grove_wire::content::Content;
use grove_wire::policy::JoinRule;
use grove_wire::ErrorCode;
use rand::RngCore;

use super::{unix_seconds, Profile, Result};
use crate::store::{Batch, LocalRoom, Membership, Message, RoomStatus};

/// The meta key of the epoch of the GroupInfo this profile last kept for the room's link.
fn uploaded_key(room_link: &str) -> String {
    format!("link_group_info.{room_link}")
}

/// How often a link join is tried again when the room moved on between fetching its GroupInfo
/// and posting the commit.
const ATTEMPTS: usize = 3;

impl Profile {
    /// Seals the room's current GroupInfo under the link's key and keeps it on the room's
    /// server, if this profile holds the room's link secret, the room is an active MLS room
    /// whose join rule is `link`, and the epoch is not the one kept last. Answers whether it
    /// uploaded one.
    pub(super) async fn keep_link_group_info(&mut self, room: &LocalRoom) -> Result<bool> {
        if room.mode != RoomMode::Mls || room.status != RoomStatus::Active {
            return Ok(false);
        }
        let Some(secret) = self.link_secret(&room.link) else { return Ok(false) };
        if !matches!(self.policy(&room.link)?, Some(p) if p.join == JoinRule::Link) {
            return Ok(false);
        }
        let g = GroupId::new(room.group_id.clone());
        let engine = self.engine.get(&self.store, &self.identity)?;
        let epoch = engine.epoch(&g)?;
        let tag = format!("{}:{epoch}", grove_wire::hex::encode(&grove_wire::invite::token(&secret)[..8]));
        if self.store.meta(&uploaded_key(&room.link))?.as_deref() == Some(tag.as_bytes()) {
            return Ok(false);
        }
        let group_info = engine.resync_group_info(&g)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let req = PutLinkGroupInfo {
            token_hash: grove_wire::invite::token_hash(&grove_wire::invite::token(&secret)).to_vec(),
            epoch,
            sealed: seal(&group_info_key(&secret), nonce, &group_info),
        };
        if let Err(e) = self.server(&room.server).put_link_group_info(&room.name, &req).await {
            if e.code() == Some(ErrorCode::LinkInvalid) {
                // The link was reset or revoked: this secret opens nothing any more.
                self.store.delete_meta(&super::joins::secret_key(&room.link))?;
            }
            return Err(e.into());
        }
        self.store.set_meta(&uploaded_key(&room.link), tag.as_bytes())?;
        tracing::debug!(room = room.link, epoch, "kept the room's GroupInfo for its link");
        Ok(true)
    }

    /// Keeps the state of every MLS room whose join rule is `link` and whose link this profile
    /// holds on the room's server, where the epoch moved since (see the module); a failure
    /// waits for the next call. `sync` calls it; a long-running client (`grove chat`) calls it
    /// now and then.
    pub async fn keep_link_group_infos(&mut self) {
        let Ok(rooms) = self.store.rooms() else { return };
        for room in rooms {
            if let Err(e) = self.keep_link_group_info(&room).await {
                tracing::warn!(room = room.link, error = %e, "could not keep the room's GroupInfo for its link");
            }
        }
    }

    /// Joins the MLS room at `room_link` (on `server_url`, named `name`) by an external commit,
    /// with the link's `secret`. Answers `None` when the room takes this link holder by a join
    /// request instead (the server keeps no GroupInfo for the link, or only one of an epoch the
    /// room left); refusals (a ban, a revoked or used-up link) are errors.
    pub(super) async fn join_by_external_commit(
        &mut self,
        room_link: &str,
        server_url: &str,
        name: &str,
        secret: &[u8; 32],
    ) -> Result<Option<LocalRoom>> {
        let _lock = self.lock().await?;
        let server = self.server(server_url);
        let token = grove_wire::invite::token(secret).to_vec();
        for _ in 0..ATTEMPTS {
            let sealed = match server.link_group_info(name, &LinkToken { token: token.clone() }).await {
                Ok(s) => s,
                Err(e) if matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::WrongKind)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let Ok(group_info) = open(&group_info_key(secret), &sealed.sealed) else {
                tracing::warn!(room = room_link, "the room's GroupInfo on its server does not open with this link");
                return Ok(None);
            };
            // Back after a removal or a leave: the old membership's group state goes (its
            // history stays).
            if let Ok(old) = self.room(room_link) {
                let engine = self.engine.get(&self.store, &self.identity)?;
                if let Ok(forgotten) = engine.forget_group(&GroupId::new(old.group_id.clone())) {
                    self.store.commit(Batch { changes: vec![forgotten], ..Batch::default() })?;
                }
            }
            let (g, commit) = self.engine.get(&self.store, &self.identity)?.join_by_link(&group_info)?;
            let req = LinkJoin { token: token.clone(), epoch: commit.epoch, commit: commit.commit };
            let appended = match server.link_join(name, &req).await {
                Ok(a) => a,
                Err(e) => {
                    self.engine.get(&self.store, &self.identity)?.discard_resync(&g);
                    if e.code() == Some(ErrorCode::WrongEpoch) {
                        // The room moved on since the GroupInfo was kept: a newer one may be
                        // there now; if not, the next attempt finds the same and asks.
                        if self.stale_info(&server, name, &token, sealed.epoch).await {
                            return Ok(None);
                        }
                        continue;
                    }
                    return Err(e.into());
                }
            };
            let (epoch, members, changes) = self.engine.get(&self.store, &self.identity)?.apply_resync(&g)?;
            let again = self.room(room_link).is_ok();
            let local = LocalRoom {
                link: room_link.to_string(),
                server: server_url.to_string(),
                name: name.to_string(),
                mode: RoomMode::Mls,
                group_id: g.into_bytes(),
                cursor: appended.seq,
                status: RoomStatus::Active,
            };
            let joined = Membership { joined: Some(members.len()), again, ..Membership::default() };
            let event = Message::membership(room_link, appended.seq, self.user_id(), appended.ts, &joined);
            self.store.commit(Batch {
                changes: vec![changes],
                rooms: vec![local.clone()],
                messages: vec![event],
                ..Batch::default()
            })?;
            // This member holds the link now: it keeps the GroupInfo of the epoch its commit
            // started for the next holder (nobody else who holds the link may be online).
            self.store.set_meta(&super::joins::secret_key(room_link), secret)?;
            if let Err(e) = self.keep_link_group_info(&local).await {
                tracing::warn!(room = room_link, error = %e, "could not keep the room's GroupInfo for its link");
            }
            // The members learn this user's name from its first message.
            if let Some(profile) = self.own_profile(room_link)? {
                self.store.outbox_add(room_link, &Content::Profile(profile).encode(), unix_seconds() as i64)?;
            }
            tracing::info!(room = room_link, epoch, seq = appended.seq, "joined by the link (an external commit)");
            return Ok(Some(local));
        }
        Ok(None)
    }

    /// Whether the GroupInfo the server keeps for the link is still of `epoch` (no member who
    /// holds the link kept a newer one since): then a link join cannot succeed now.
    async fn stale_info(&self, server: &crate::transport::Server, name: &str, token: &[u8], epoch: u64) -> bool {
        match server.link_group_info(name, &LinkToken { token: token.to_vec() }).await {
            Ok(s) => s.epoch <= epoch,
            Err(_) => true,
        }
    }
}
