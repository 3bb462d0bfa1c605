//! Display names, end to end encrypted.
//!
//! A member's name in a room is what that member's own signed profile says
//! ([`grove_wire::content::SignedProfile`]), carried inside the group as a `profile` message:
//! the server never sees it, and no member can set another's (the signature is the named
//! user's, and a user id is its key). An inviter passes the profiles it knows on to a new
//! member in one `roster` message, so the newcomer learns the names of those who spoke before
//! it joined; a newer revision of a profile always wins over an older one passed on again.

use std::collections::HashMap;

use grove_wire::content::{display_name, Content, SignedProfile};
use grove_wire::UserId;

use super::{ClientError, Profile, Result};
use crate::store::{Batch, RoomStatus};

const NAME: &str = "display_name";
const REV: &str = "profile_rev";

impl Profile {
    /// The user's own display name, if set.
    pub fn name(&self) -> Result<Option<String>> {
        Ok(self.store.meta(NAME)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets the user's display name and tells every active room (through the outbox: a room
    /// whose server cannot be reached gets it later). Answers the rooms told now.
    pub async fn set_name(&mut self, name: &str) -> Result<usize> {
        let name = display_name(name).map_err(|e| ClientError::Invalid(format!("{e} (got {name:?})")))?.to_string();
        let _lock = self.lock().await?;
        let rev = self.profile_rev()? + 1;
        self.store.set_meta(NAME, name.as_bytes())?;
        self.store.set_meta(REV, &rev.to_be_bytes())?;
        let mut told = 0;
        let pending: Vec<String> = self.store.invitations()?.into_iter().map(|(room, _, _)| room).collect();
        for room in self.store.rooms()? {
            // A room not yet accepted learns the name when it is.
            if room.status != RoomStatus::Active || pending.contains(&room.link) {
                continue;
            }
            match self.announce_profile(&room.link).await {
                Ok(()) => told += 1,
                Err(ClientError::Queued { .. }) => {}
                Err(e) => tracing::warn!(room = room.link, error = %e, "could not tell the room the new name"),
            }
        }
        Ok(told)
    }

    fn profile_rev(&self) -> Result<u64> {
        Ok(self
            .store
            .meta(REV)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// The user's own profile for a room, signed; `None` without a name.
    pub(super) fn own_profile(&self, link: &str) -> Result<Option<SignedProfile>> {
        let Some(name) = self.name()? else { return Ok(None) };
        let user = self.user_id();
        let rev = self.profile_rev()?;
        let sig = self.identity.sign(&SignedProfile::signing_bytes(link, &user, rev, &name)).to_vec();
        Ok(Some(SignedProfile { user, name, rev, sig }))
    }

    /// Sends the own profile into a room, if the user has a name.
    pub(super) async fn announce_profile(&mut self, link: &str) -> Result<()> {
        if let Some(p) = self.own_profile(link)? {
            self.send_content(link, &Content::Profile(p)).await?;
        }
        Ok(())
    }

    /// After an invitation: pass the profiles known in the room on to the new member.
    pub(super) async fn send_roster(&mut self, link: &str) -> Result<()> {
        let mut profiles: Vec<SignedProfile> = self
            .store
            .names(link)?
            .into_iter()
            .filter_map(|n| serde_json::from_slice::<SignedProfile>(&n.profile).ok())
            .filter(|p| p.user != self.user_id())
            .collect();
        profiles.extend(self.own_profile(link)?);
        if profiles.is_empty() {
            return Ok(());
        }
        self.send_content(link, &Content::Roster { profiles }).await.map(|_| ())
    }

    /// How to call each member of a room whose name is known: the name, or, where two members
    /// share one, the name and a short id. Members without a name are absent (show their short
    /// id).
    pub fn display_names(&self, key: &str) -> Result<HashMap<UserId, String>> {
        let room = self.room(key)?;
        let names = self.store.names(&room.link)?;
        let mut count: HashMap<&str, usize> = HashMap::new();
        for n in &names {
            *count.entry(n.name.as_str()).or_default() += 1;
        }
        Ok(names
            .iter()
            .map(|n| {
                let shown = if count[n.name.as_str()] > 1 {
                    format!("{} ({})", n.name, n.user.short())
                } else {
                    n.name.clone()
                };
                (n.user, shown)
            })
            .collect())
    }
}

/// Learns the names a message carries: a `profile` only from the user it names, a
/// `roster` entry only with its user's valid signature.
pub(crate) fn learn_names(batch: &mut Batch, link: &str, sender: UserId, content: &Content) {
    match content {
        Content::Profile(p) if p.user == sender && p.verify(link) => batch.names.push((link.to_string(), p.clone())),
        Content::Profile(p) => {
            tracing::warn!(room = link, sender = %sender.short(), user = %p.user.short(), "ignoring a profile not signed by its sender")
        }
        Content::Roster { profiles } => {
            for p in profiles {
                if p.verify(link) {
                    batch.names.push((link.to_string(), p.clone()));
                } else {
                    tracing::warn!(room = link, user = %p.user.short(), "ignoring a forged profile in a roster");
                }
            }
        }
        _ => {}
    }
}
