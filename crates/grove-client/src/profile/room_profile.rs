//! A room's profile (name and topic), end to end encrypted.
//!
//! It travels inside the group as a `room_profile` message ([`RoomProfile`]), so the server
//! never reads it and cannot check who sent it. Every client therefore checks: a room profile
//! counts only if its sender's role, under the room's policy *at that point of the log*, may
//! change the room's settings ([`grove_proto::policy::may_change_settings`]); one from anyone
//! else is kept in history as ignored. The newest accepted one is the room's profile, kept in
//! the profile's sealed metadata.

use grove_proto::policy::may_change_settings;
use grove_wire::content::{Content, RoomProfile};
use grove_wire::policy::{Role, RoomPolicy};
use grove_wire::UserId;

use super::names::learn_names;
use super::{ClientError, Profile, Result};
use crate::store::{Batch, Message};

fn meta_key(link: &str) -> String {
    format!("room_profile.{link}")
}

/// The room's policy at a point of its log, as a reader of the log knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PolicyAt<'a> {
    /// The room's policy.
    Policy(&'a RoomPolicy),
    /// An MLS room created before rooms had policies: every member may do everything.
    NoPolicy,
    /// Not known (the group state could not be read): nobody's settings count.
    Unknown,
}

impl<'a> From<Option<&'a RoomPolicy>> for PolicyAt<'a> {
    fn from(p: Option<&'a RoomPolicy>) -> PolicyAt<'a> {
        p.map_or(PolicyAt::NoPolicy, PolicyAt::Policy)
    }
}

fn may_set(policy: PolicyAt<'_>, sender: &UserId) -> bool {
    match policy {
        PolicyAt::Policy(p) => may_change_settings(p, sender),
        PolicyAt::NoPolicy => true,
        PolicyAt::Unknown => false,
    }
}

/// Reads a member's application message into `batch`: the names it carries, the room's profile
/// if it is one its sender may set, and its history line.
pub(crate) fn read_content(
    batch: &mut Batch,
    link: &str,
    (seq, ts): (u64, i64),
    sender: UserId,
    plaintext: Vec<u8>,
    policy: PolicyAt<'_>,
) {
    let content = Content::decode(&plaintext);
    if let Content::LinkKey { secret } = &content {
        // Not a history line: the room's link secret, from a member who may share it.
        if may_set(policy, &sender) {
            batch.meta.push((super::joins::secret_key(link), secret.clone()));
        } else {
            tracing::warn!(room = link, seq, sender = %sender.short(), "ignoring a link key from a member who may not change the room's settings");
        }
        return;
    }
    learn_names(batch, link, sender, &content);
    if let Content::RoomProfile(p) = &content {
        if !may_set(policy, &sender) {
            tracing::warn!(room = link, seq, sender = %sender.short(), "ignoring a room profile from a member who may not change the room's settings");
            batch.messages.push(Message::note(
                link,
                seq,
                sender,
                ts,
                &format!(
                    "{} tried to change the room's name or topic, which their role does not allow: ignored",
                    sender.short()
                ),
            ));
            return;
        }
        batch.meta.push((meta_key(link), serde_json::to_vec(p).unwrap_or_default()));
    }
    batch.messages.push(Message::content(link, seq, sender, ts, plaintext));
}

impl Profile {
    /// After an invitation: the new member cannot read what was said before it joined, so a
    /// member who may set the room's profile sends it again (one whose role may not would be
    /// ignored; the newcomer then learns it when an admin next invites or sets it).
    pub(super) async fn pass_room_profile_on(&mut self, link: &str) -> Result<()> {
        let profile = self.room_profile(link)?;
        if profile == RoomProfile::default() {
            return Ok(());
        }
        let policy = self.policy(link)?;
        if !may_set(policy.as_ref().into(), &self.user_id()) {
            return Ok(());
        }
        self.send_content(link, &Content::RoomProfile(profile)).await.map(|_| ())
    }

    /// Reads this member's own message, taken by the server as `seq`, into `batch` (as
    /// [`read_content`], under the room's policy now).
    pub(super) fn read_own_content(&mut self, batch: &mut Batch, link: &str, at: (u64, i64), plaintext: Vec<u8>) {
        let me = self.user_id();
        let policy = self.policy(link);
        let policy = match &policy {
            Ok(p) => p.as_ref().into(),
            Err(_) => PolicyAt::Unknown,
        };
        read_content(batch, link, at, me, plaintext, policy);
    }

    /// The room's profile (name and topic; empty when unset), as the newest accepted
    /// `room_profile` message said.
    pub fn room_profile(&self, key: &str) -> Result<RoomProfile> {
        let room = self.room(key)?;
        Ok(self.store.meta(&meta_key(&room.link))?.and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_default())
    }

    /// Changes the room's name and/or topic (`None` keeps it; an empty string clears it) and
    /// sends the new profile into the room. Refused here if this member's role may not change
    /// the room's settings (every other client would ignore it). Answers the new profile.
    pub async fn set_room_profile(
        &mut self,
        key: &str,
        name: Option<&str>,
        topic: Option<&str>,
    ) -> Result<RoomProfile> {
        let room = self.room(key)?;
        self.sync_room(&room.link).await?;
        let mut profile = self.room_profile(&room.link)?;
        if let Some(name) = name {
            profile.name = name.trim().to_string();
        }
        if let Some(topic) = topic {
            profile.topic = topic.trim().to_string();
        }
        profile.check().map_err(|e| ClientError::Invalid(e.to_string()))?;
        let policy = self.policy(&room.link)?;
        if !may_set(policy.as_ref().into(), &self.user_id()) {
            let (has, needs) =
                policy.map(|p| (p.role_of(&self.user_id()), p.rights.settings)).unwrap_or((Role::Member, Role::Admin));
            return Err(ClientError::Invalid(format!(
                "you are {has} in {} and changing its name or topic needs {needs}: ask an admin",
                room.name
            )));
        }
        self.send_content(&room.link, &Content::RoomProfile(profile.clone())).await?;
        Ok(profile)
    }
}
