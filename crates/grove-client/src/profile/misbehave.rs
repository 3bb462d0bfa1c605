//! A member who lies (cargo feature `testing`, for grove's own tests): a self-update commit
//! altered before it is posted, the way a modified client would. The server checks what it can
//! (signature, sender, epoch, public tree) and takes the rest on trust; these are the parts it
//! cannot check, which the tests of fault reports and voids (`tests/it/poison.rs`) attack.

use grove_proto::mls::engine::GroupId;
use grove_wire::api::RoomMode;

use super::{ClientError, Profile, Result};
use crate::core::Change;

/// What a lying member holds when it alters its commit.
#[derive(Debug, Clone)]
pub struct Forge {
    /// The commit as an honest client would post it.
    pub commit: Vec<u8>,
    /// The membership key of the commit's epoch (to make a membership tag that verifies).
    pub membership_key: Vec<u8>,
    /// The group context of the commit's epoch, TLS-encoded.
    pub context: Vec<u8>,
}

impl Profile {
    /// Makes a self-update commit in the MLS room `key`, posts `alter(forge)` instead of it, and
    /// applies the honest commit locally once the server took the altered one. Answers the
    /// entry's sequence number.
    pub async fn update_altered(&mut self, key: &str, alter: impl FnOnce(Forge) -> Vec<u8>) -> Result<u64> {
        self.commit_altered(key, &Change::Update, alter).await
    }

    /// [`Profile::update_altered`] for a commit removing `user`.
    pub async fn remove_altered(
        &mut self,
        key: &str,
        user: grove_wire::UserId,
        alter: impl FnOnce(Forge) -> Vec<u8>,
    ) -> Result<u64> {
        self.commit_altered(key, &Change::Remove(vec![user]), alter).await
    }

    async fn commit_altered(
        &mut self,
        key: &str,
        change: &Change,
        alter: impl FnOnce(Forge) -> Vec<u8>,
    ) -> Result<u64> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        if room.mode != RoomMode::Mls {
            return Err(ClientError::Invalid("only MLS commits can be altered".into()));
        }
        self.sync_room_locked(&room.link).await?;
        let stale = self.room_protocol(room.mode)?.drop_stale(&room)?;
        self.store.commit(stale)?;
        let identity = self.identity.clone();
        let mut prepared = self.room_protocol(room.mode)?.prepare(&room, &identity, change)?;
        self.store.commit(std::mem::take(&mut prepared.batch))?;
        let g = GroupId::new(room.group_id.clone());
        let engine = self.engine.get(&self.store, &self.identity)?;
        // The engine gives the epoch's membership key for a commit whose tag fails under it: a
        // copy of our own with its last byte (in the membership tag) flipped.
        let mut flipped = prepared.entry.body.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        let membership_key = engine
            .reveal_membership_key(&g, &flipped)?
            .ok_or_else(|| ClientError::Invalid("no membership key for the own commit".into()))?
            .to_vec();
        let context = engine.group_context(&g)?;
        prepared.entry.body = alter(Forge { commit: prepared.entry.body.clone(), membership_key, context });
        let appended = self.server(&room.server).append(&room.name, &prepared.entry).await?;
        let me = self.user_id();
        let (batch, _) = self.room_protocol(room.mode)?.accepted(&room, me, &prepared, appended.seq, appended.ts)?;
        self.store.commit(batch)?;
        Ok(appended.seq)
    }

    /// Makes and posts a self-update commit in the MLS room `key` whose path secrets are
    /// garbage for `users`: every copath node above one of them gets garbage (so a member who
    /// shares such a node with one of them cannot process it either). The others can; nothing
    /// the server can check is wrong.
    pub async fn update_garbling(&mut self, key: &str, users: &[grove_wire::UserId]) -> Result<()> {
        let room = self.active_room(key)?;
        let g = GroupId::new(room.group_id.clone());
        self.engine.get(&self.store, &self.identity)?.garble_seals_to(&g, users)?;
        let outcome = self.update(key).await;
        self.engine.get(&self.store, &self.identity)?.garble_seals_to(&g, &[])?;
        outcome
    }
}
