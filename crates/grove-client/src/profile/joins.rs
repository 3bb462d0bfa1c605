//! Invite links and join requests, the client's side.
//!
//! A link is the room's link with a secret in its fragment (`grove_wire::invite`); the room's
//! server gets only the hash of a token derived from the secret. `join_link` asks the room's
//! server to let this user in, with a proof that it holds the link (grove-proto's `invite`:
//! an HMAC keyed from the secret, which the server cannot make); the request waits there. An
//! admin's client carries requests out as ordinary invitations: by itself on every sync while
//! the room's join rule is `link` — only a member whose role may invite and who holds the secret
//! (sealed in the profile: its maker, and the members it shared it with inside the group, end
//! to end encrypted, as a `link_key` message that every client takes only from a sender whose
//! role may change the settings), and only requests whose proof verifies, so a server cannot make it add someone
//! who does not hold the link —, on `approve` (an admin's decision) otherwise. The invitation is a commit or signed membership like any other, so the room's
//! policy judges it again (a user banned since asking is refused), on the server and in every
//! client.
//!
//! MLS rooms whose join rule is `link` are joined at once by an external commit instead, with
//! no admin online (`link_join`), as long as a member who holds the link kept the room's
//! GroupInfo on its server; otherwise, and under `approval`, they are joined this way too (a
//! Welcome from the admin's client). See docs/security.md, "Invite links".

use grove_proto::policy::{may_invite, Edit};
use grove_wire::api::{AskToJoin, JoinRequestItem, RoomLinkInfo, SetRoomLink};
use grove_wire::policy::JoinRule;
use grove_wire::{ErrorCode, UserId};

use super::{parse_link, unix_seconds, Address, ClientError, Profile, Result};
use crate::store::RoomStatus;

/// What `grove join LINK` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkJoined {
    /// This user is a member already: an MLS room whose join rule is `link`, joined by an
    /// external commit (`link_join`).
    Joined,
    /// The request waits, and is decided as the room's join rule says: `link`, an admin's
    /// client lets this user in on its next sync; `approval`, an admin decides. The
    /// invitation then arrives like any other (`sync`).
    Asked(JoinRule),
}

/// The meta key of the room's link secret as this user holds it: made it, joined by it, or was
/// given it inside the group (`Content::LinkKey`; empty: revoked). The last of these wins.
pub(crate) fn secret_key(room_link: &str) -> String {
    format!("invite_secret.{room_link}")
}

fn asked_key(room_link: &str) -> String {
    format!("join_asked.{room_link}")
}

impl Profile {
    /// The secret of the room's link, if this user holds it (see [`secret_key`]).
    pub(super) fn link_secret(&self, room_link: &str) -> Option<[u8; 32]> {
        self.store.meta(&secret_key(room_link)).ok().flatten().and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
    }

    /// Shares the room's link secret (`None`: revoked) inside the group, end to end encrypted,
    /// so that the members whose role may invite can carry out its requests and (MLS) keep the
    /// room's state for link joins. Best effort: a failure waits in the outbox.
    async fn share_link_secret(&mut self, room_link: &str, secret: Option<&[u8; 32]>) {
        let content = grove_wire::content::Content::LinkKey { secret: secret.map(|s| s.to_vec()).unwrap_or_default() };
        if let Err(e) = self.send_content(room_link, &content).await {
            tracing::warn!(room = room_link, error = %e, "could not share the link's secret with the room");
        }
    }

    /// Sets how people not invited come into the room (`invite-only`, `link`, `approval`). The
    /// room's policy says who may (admins by default).
    pub async fn set_join_rule(&mut self, key: &str, rule: JoinRule) -> Result<()> {
        self.edit_policy(key, Edit::SetJoin(rule)).await?;
        let room = self.room(key)?;
        if let Err(e) = self.keep_link_group_info(&room).await {
            tracing::warn!(room = room.link, error = %e, "could not keep the room's GroupInfo for its link; the next sync tries again");
        }
        Ok(())
    }

    /// Makes the room's invite link, replacing any other (the old one stops working): at most
    /// `max_uses` requests, until `expires_in_secs` from now. Answers the link to hand out.
    pub async fn make_link(
        &mut self,
        key: &str,
        max_uses: Option<u64>,
        expires_in_secs: Option<u64>,
    ) -> Result<(String, RoomLinkInfo)> {
        let room = self.room(key)?;
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        let token = grove_wire::invite::token(&secret);
        let expires_at = expires_in_secs.map(|s| unix_seconds().saturating_add(s).saturating_mul(1000));
        let req = SetRoomLink { token_hash: grove_wire::invite::token_hash(&token).to_vec(), max_uses, expires_at };
        let info = self.server(&room.server).set_room_link(&room.name, &req).await?;
        self.store.set_meta(&secret_key(&room.link), &secret)?;
        self.share_link_secret(&room.link, Some(&secret)).await;
        // MLS, join rule `link`: the room's GroupInfo for the new link's holders, at once.
        if let Err(e) = self.keep_link_group_info(&room).await {
            tracing::warn!(room = room.link, error = %e, "could not keep the room's GroupInfo for its link; the next sync tries again");
        }
        Ok((grove_wire::invite::link(&room.link, &secret), info))
    }

    /// Revokes the room's invite link; whether there was one.
    pub async fn revoke_link(&mut self, key: &str) -> Result<bool> {
        let room = self.room(key)?;
        let existed = self.server(&room.server).revoke_room_link(&room.name).await?.existed;
        self.store.delete_meta(&secret_key(&room.link))?;
        self.share_link_secret(&room.link, None).await;
        Ok(existed)
    }

    /// Joins the room behind `link`: at once by an external commit in an MLS room whose join
    /// rule is `link` (if a member left the room's state for the link on its server), else by a
    /// request. Answers which ([`LinkJoined`]).
    pub async fn join_link(&mut self, link: &str) -> Result<LinkJoined> {
        let (room_link, secret) = grove_wire::invite::parse(link).ok_or_else(|| {
            ClientError::Invalid(format!(
                "{link:?} is not an invite link: it is a room's link with a secret after `#`, as `grove room link` prints it"
            ))
        })?;
        let (server, name) = parse_link(&room_link)
            .ok_or_else(|| ClientError::Invalid(format!("{room_link:?} is not a room's link")))?;
        if let Ok(r) = self.room(&room_link) {
            if r.status == RoomStatus::Active {
                return Err(ClientError::Invalid(format!("you are in {name} already")));
            }
        }
        // MLS, join rule `link`: in at once by an external commit, if a member left the
        // room's state for the link on its server.
        if self.join_by_external_commit(&room_link, &server, &name, &secret).await?.is_some() {
            return Ok(LinkJoined::Joined);
        }
        let proof = grove_proto::invite::proof(&secret, &room_link, &self.user_id()).to_vec();
        let req = AskToJoin { token: grove_wire::invite::token(&secret).to_vec(), home: self.home.clone(), proof };
        let join = self.server(&server).ask_to_join(&name, &req).await?.join;
        self.store.set_meta(&asked_key(&room_link), b"1")?;
        // A holder of the link: once in, it keeps the room's state for the next holder (MLS).
        self.store.set_meta(&secret_key(&room_link), &secret)?;
        Ok(LinkJoined::Asked(join))
    }

    /// After a sync joined rooms: an invitation to a room this user asked to join is accepted
    /// at once (it asked; the room learns its name). Called with the profile lock held.
    pub(super) fn accept_asked(&mut self, joined: &[String]) {
        for link in joined {
            if !matches!(self.store.meta(&asked_key(link)), Ok(Some(_))) {
                continue;
            }
            if let Err(e) = self.accept_pending(link) {
                tracing::warn!(room = link, error = %e, "could not accept the invitation asked for");
            }
            if let Err(e) = self.store.delete_meta(&asked_key(link)) {
                tracing::warn!(room = link, error = %e, "could not forget the join request");
            }
        }
    }

    /// The join requests waiting in the room.
    pub async fn join_requests(&mut self, key: &str) -> Result<Vec<JoinRequestItem>> {
        let room = self.room(key)?;
        Ok(self.server(&room.server).join_requests(&room.name).await?.requests)
    }

    /// Lets `user`'s waiting request in: invites it (the room's policy judges the invitation
    /// like any other), then drops the request.
    pub async fn approve(&mut self, key: &str, user: &UserId) -> Result<()> {
        let room = self.room(key)?;
        let request = self.join_requests(&room.link).await?.into_iter().find(|r| r.user == *user).ok_or_else(|| {
            ClientError::Invalid(format!("{} has no join request waiting in {}", user.short(), room.name))
        })?;
        self.carry_out(&room.link, &room.server, &room.name, &request).await
    }

    /// Denies `user`'s waiting request; whether there was one.
    pub async fn deny(&mut self, key: &str, user: &UserId) -> Result<bool> {
        let room = self.room(key)?;
        Ok(self.server(&room.server).drop_join_request(&room.name, user).await?.existed)
    }

    async fn carry_out(&mut self, link: &str, server: &str, name: &str, request: &JoinRequestItem) -> Result<()> {
        let address = Address { user: request.user, home: request.home.clone() };
        let outcome = self.invite(link, &address.to_string()).await;
        let settled = match &outcome {
            Ok(()) | Err(ClientError::AlreadyMember { .. }) => true,
            // Banned since it asked, or the policy changed: the request is void.
            Err(ClientError::Server(e)) => e.code() == Some(ErrorCode::NotAllowed),
            Err(_) => false,
        };
        if settled {
            self.server(server).drop_join_request(name, &request.user).await?;
        }
        outcome
    }

    /// An admin's sync: in every active room whose join rule is `link`, where this user's role
    /// may invite and which link this user holds (made it, or was given it by an admin inside
    /// the group: `Content::LinkKey`), carries out the waiting requests
    /// whose proof verifies under the link's secret (others wait for an admin's `approve`). A
    /// failure waits for the next sync. `sync` calls it; a long-running client (`grove chat`)
    /// calls it now and then. Answers how many were let in.
    pub async fn carry_out_link_joins(&mut self) -> usize {
        let mut done = 0;
        let Ok(rooms) = self.store.rooms() else { return done };
        let me = self.user_id();
        for room in rooms.into_iter().filter(|r| r.status == RoomStatus::Active) {
            let Ok(Some(policy)) = self.policy(&room.link) else { continue };
            if policy.join != JoinRule::Link || !may_invite(&policy, &me) {
                continue;
            }
            let Some(secret) = self.link_secret(&room.link) else { continue };
            let requests = match self.server(&room.server).join_requests(&room.name).await {
                Ok(r) => r.requests,
                Err(e) => {
                    tracing::warn!(room = room.link, error = %e, "could not read the room's join requests");
                    continue;
                }
            };
            for request in requests {
                if !grove_proto::invite::verify(&secret, &room.link, &request.user, &request.proof) {
                    tracing::warn!(room = room.link, user = %request.user.short(), "a join request without a valid proof of the link: left for an admin");
                    continue;
                }
                match self.carry_out(&room.link, &room.server, &room.name, &request).await {
                    Ok(()) => done += 1,
                    Err(e) => {
                        tracing::warn!(room = room.link, user = %request.user.short(), error = %e, "a join request was not carried out")
                    }
                }
            }
        }
        done
    }
}
