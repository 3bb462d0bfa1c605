//! Invitations, accepted or declined by the person invited.
//!
//! An invitation is a member adding this user to a room (an MLS Welcome, a sender-keys
//! membership). The client joins at once, so the room's history can be read before deciding,
//! as a messenger shows a message request; but until the person accepts, the room is only
//! *pending*: the user's display name is not told to it (as Signal shares a profile only with
//! accepted groups). Accepting tells the room the name; sending into the room accepts it;
//! declining leaves it.

use grove_wire::content::Content;
use grove_wire::UserId;

use super::{unix_seconds, ClientError, Profile, Result};
use crate::store::Batch;

/// An invitation waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The room's link.
    pub room: String,
    /// Who invited this user.
    pub inviter: UserId,
    /// When it arrived (Unix seconds).
    pub at: i64,
}

impl Profile {
    /// The invitations not yet accepted or declined, oldest first.
    pub fn invitations(&self) -> Result<Vec<Invitation>> {
        Ok(self.store.invitations()?.into_iter().map(|(room, inviter, at)| Invitation { room, inviter, at }).collect())
    }

    /// The invitation waiting for a room, if any.
    pub fn invitation(&self, key: &str) -> Result<Option<Invitation>> {
        let room = self.room(key)?;
        Ok(self.invitations()?.into_iter().find(|i| i.room == room.link))
    }

    /// Accepts the invitation to a room: the room is no longer pending and is told the user's
    /// name (through the outbox, so an unreachable server gets it later).
    pub async fn accept(&mut self, key: &str) -> Result<()> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        if self.invitation(&room.link)?.is_none() {
            return Err(ClientError::Invalid(format!(
                "no invitation to {} is waiting: you are already in it",
                room.link
            )));
        }
        self.accept_pending(&room.link)?;
        if let Err(e) = self.flush_room(&room).await {
            tracing::info!(room = room.link, error = %e, "your name waits in the outbox");
        }
        Ok(())
    }

    /// Declines the invitation to a room: leaves it, without ever telling it the user's name.
    pub async fn decline(&mut self, key: &str) -> Result<()> {
        let room = self.room(key)?;
        if self.invitation(&room.link)?.is_none() {
            return Err(ClientError::Invalid(format!(
                "no invitation to {} is waiting; to leave it, use `grove room leave`",
                room.link
            )));
        }
        self.leave(&room.link).await
    }

    /// If the room is pending, accepts it: forgets the invitation and queues the user's profile
    /// ahead of anything else this user sends there. Called with the profile lock held.
    pub(super) fn accept_pending(&mut self, link: &str) -> Result<()> {
        if self.invitation(link)?.is_none() {
            return Ok(());
        }
        self.store.commit(Batch { accepted: vec![link.to_string()], ..Batch::default() })?;
        if let Some(profile) = self.own_profile(link)? {
            self.store.outbox_add(link, &Content::Profile(profile).encode(), unix_seconds() as i64)?;
        }
        Ok(())
    }
}
