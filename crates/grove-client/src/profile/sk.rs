//! The profile's sender-keys rooms: the same commands as MLS rooms, on grove-proto's
//! [`SkEngine`] with distributions and invitations carried by pairwise Olm sessions
//! ([`crate::olm`]) through the users' mailboxes.
//!
//! - create: the room at version 0 (the creator alone, admin).
//! - invite: the next membership version, signed, posted as a `membership` entry; then an
//!   invitation (the signed membership and the members' home servers) over Olm to the invitee.
//! - remove: the next version without the member; then a fresh own chain for the others.
//!   Every other member rotates as soon as its sync applies the removal.
//! - leave: the member posts the version without itself (the policy lets anyone leave). A
//!   leave request over Olm (what clients from before policies sent) is carried out by the
//!   first member who may remove and syncs.
//! - update: a fresh own chain, distributed.
//! - homes: each member's home server (its mailbox, its Olm keys) is read from the signed
//!   membership first ([`SkEngine::set_known_homes`] has the memberships this user signs name
//!   the homes it knows), then from the address book (homes a member signed in its own pairwise
//!   envelopes, or typed in an address), else the room's server.
//! - distribution: member by member; a member whose home cannot be reached (or refuses) does
//!   not hold up the others. The engine keeps who still waits, and every later sync of the
//!   room (`grove sync`; not entries pushed by the server) or send in it delivers the same
//!   distribution again to them ([`Profile::key_pending`] says who they are), so what was sent
//!   meanwhile becomes readable to them.
//! - send: sync first (the view must be the server's version); rotate if the chain is due
//!   (version changed, age, count); encrypt; persist; post.
//! - sync: mailbox (distributions, invitations), then the log in order (memberships, messages).

use std::collections::BTreeMap;

use grove_proto::senderkeys::room::{Record, RoomChanges, RoomError, SkEngine};
use grove_proto::senderkeys::RotationPolicy;
use grove_wire::api::{CreateRoom, KeyItemUpload, KeyKind, RoomMode};
use grove_wire::membership::SignedMembership;
use grove_wire::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    room_link, server_url, unix_seconds, written_server, Address, ClientError, MailMessage, Profile, Result, SyncReport,
};
use crate::core::Change;
use crate::olm::{Envelope, OlmDevice, OlmError};
use crate::store::{Batch, ClientStore, LocalRoom, Membership, Message, RoomStatus};

/// One-time Olm keys kept published.
pub const OLM_KEY_TARGET: usize = 20;
/// Replenish below this many.
pub const OLM_KEY_LOW: u64 = 5;

/// What travels inside a pairwise Olm message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Pairwise {
    /// A sender chain's distribution (`SenderKeyDistribution::to_bytes`).
    SenderKey {
        #[serde(with = "grove_wire::b64")]
        dist: Vec<u8>,
    },
    /// An invitation into a sender-keys room.
    Invite {
        room: String,
        /// The sequence number of the membership entry that added the invitee.
        seq: u64,
        membership: Box<SignedMembership>,
        /// Members' home servers, `HOST:PORT`.
        homes: Vec<(UserId, String)>,
    },
    /// The sender leaves the room and asks an admin to remove it.
    Leave { room: String },
}

impl From<RoomError> for ClientError {
    fn from(e: RoomError) -> Self {
        ClientError::Invalid(format!("sender keys: {e}"))
    }
}

impl From<OlmError> for ClientError {
    fn from(e: OlmError) -> Self {
        ClientError::Invalid(format!("pairwise session: {e}"))
    }
}

pub(crate) fn sk_records(c: RoomChanges) -> Vec<Record> {
    c.records.into_iter().map(|r| Record { key: format!("sk/{}", r.key), value: r.value }).collect()
}

fn home_record(user: &UserId, home: &str) -> Record {
    Record { key: format!("home/{user}"), value: Some(Zeroizing::new(home.as_bytes().to_vec())) }
}

/// The sender-keys engine as the profile's records hold it, knowing the homes of the address
/// book and this user's own.
pub(crate) fn load_sk_engine(store: &ClientStore, me: UserId) -> Result<SkEngine> {
    let records = store.records("sk/")?;
    let mut engine = SkEngine::load(me, RotationPolicy::default(), records.iter().map(|(k, v)| (k, &v[..])))?;
    let mut homes = address_book(store)?;
    if let Some(home) = store.meta("home")? {
        homes.insert(me, written_server(&String::from_utf8_lossy(&home)));
    }
    engine.set_known_homes(homes);
    Ok(engine)
}

/// The address book: members' home servers (`HOST:PORT`) learned from their own signed
/// pairwise envelopes, from addresses this user typed, or from an invitation's list.
fn address_book(store: &ClientStore) -> Result<BTreeMap<UserId, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in store.records("home/")? {
        if let Ok(u) = k.parse::<UserId>() {
            out.insert(u, String::from_utf8_lossy(&v).into_owned());
        }
    }
    Ok(out)
}

/// A member who has not got this user's current sender key in a room yet: its home server
/// could not be reached (or refused). The delivery is retried on every later sync or send of
/// the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPending {
    /// The member.
    pub user: UserId,
    /// The home server the key is delivered to.
    pub home: String,
}

impl Profile {
    pub(super) fn sk_engine(&self) -> Result<SkEngine> {
        load_sk_engine(&self.store, self.user_id())
    }

    fn olm_device(&self) -> Result<OlmDevice> {
        let records = self.store.records("olm/")?;
        let home = written_server(&self.home);
        Ok(match self.store.pickle_key() {
            Some(key) => OlmDevice::load_with_key(self.identity.clone(), &home, &records, key)?,
            None => OlmDevice::load(self.identity.clone(), &home, &records)?,
        })
    }

    fn homes(&self) -> Result<BTreeMap<UserId, String>> {
        address_book(&self.store)
    }

    /// A member's home server URL: as the room's signed membership names it, else from the
    /// address book, else the room's server.
    fn home_of(&self, user: &UserId, room: &LocalRoom) -> Result<String> {
        if *user == self.user_id() {
            return Ok(self.home.clone());
        }
        let engine = self.sk_engine()?;
        let signed = engine.view(&room.link).ok().and_then(|v| v.home_of(user).map(str::to_string));
        let written = match signed {
            Some(h) => Some(h),
            None => self.homes()?.remove(user),
        };
        // Written as in an address: `HOST:PORT` (https, or http on loopback) or a whole URL.
        Ok(written.and_then(|h| server_url(&h)).unwrap_or_else(|| room.server.clone()))
    }

    /// The members of sender-keys room `key` who have not got this user's current sender key
    /// yet (their home could not be reached); empty for an MLS room.
    pub fn key_pending(&self, key: &str) -> Result<Vec<KeyPending>> {
        let room = self.room(key)?;
        if room.mode != RoomMode::SenderKeys || room.status != RoomStatus::Active {
            return Ok(Vec::new());
        }
        let engine = self.sk_engine()?;
        let Some(waiting) = engine.undelivered(&room.link)? else { return Ok(Vec::new()) };
        waiting.members.into_iter().map(|user| Ok(KeyPending { user, home: self.home_of(&user, &room)? })).collect()
    }

    /// Keeps enough one-time Olm keys and a fallback key on the home server.
    pub async fn replenish_olm_keys(&mut self) -> Result<usize> {
        let _lock = self.lock().await?;
        let home = self.server(&self.home);
        let counts = home.key_counts().await?;
        let one_time = counts.counts.iter().find(|c| c.kind == KeyKind::OlmOneTime).map(|c| c.one_time).unwrap_or(0);
        let has_fallback = counts.counts.iter().any(|c| c.kind == KeyKind::OlmFallback && c.last_resort);
        if one_time >= OLM_KEY_LOW && has_fallback {
            return Ok(0);
        }
        let n = if one_time >= OLM_KEY_LOW { 0 } else { OLM_KEY_TARGET - one_time as usize };
        let mut device = self.olm_device()?;
        let (one_time, fallback) = device.new_keys(n, !has_fallback);
        // The private halves are stored before the public halves leave this machine.
        self.store.commit(Batch { records: device.take_changes(), ..Batch::default() })?;
        let mut items: Vec<KeyItemUpload> = one_time
            .into_iter()
            .map(|data| KeyItemUpload { kind: KeyKind::OlmOneTime, last_resort: false, data })
            .collect();
        if let Some(data) = fallback {
            items.push(KeyItemUpload { kind: KeyKind::OlmFallback, last_resort: true, data });
        }
        let n = items.len();
        if n > 0 {
            home.publish_keys(items).await?;
        }
        Ok(n)
    }

    /// Creates a room of `mode` named `name` on `server` with this user alone in it.
    pub async fn create_room_with_mode(&mut self, server: &str, name: &str, mode: RoomMode) -> Result<LocalRoom> {
        let _lock = self.lock().await?;
        if mode == RoomMode::Mls {
            return self.create_room(server, name).await;
        }
        let server_url = server.trim_end_matches('/').to_string();
        let link = room_link(&server_url, name);
        let mut engine = self.sk_engine()?;
        let changes = engine.create_room(&link, name)?;
        let req = CreateRoom { name: name.to_string(), mode: RoomMode::SenderKeys, public: false, mls: None };
        self.server(&server_url).create_room(&req).await?;
        let room = LocalRoom {
            link,
            server: server_url,
            name: name.to_string(),
            mode: RoomMode::SenderKeys,
            group_id: Vec::new(),
            cursor: 0,
            status: RoomStatus::Active,
        };
        self.store.commit(Batch { rooms: vec![room.clone()], records: sk_records(changes), ..Batch::default() })?;
        self.replenish_olm_keys().await?;
        self.announce_profile_quietly(&room.link).await;
        Ok(room)
    }

    pub(super) async fn sk_invite(&mut self, room: &LocalRoom, addr: &Address) -> Result<()> {
        // A session first: an invitee without published Olm keys is refused before the
        // membership changes.
        self.ensure_session(&addr.user, &addr.home_url()).await?;
        self.store.commit(Batch {
            records: vec![home_record(&addr.user, &written_server(&addr.home))],
            ..Batch::default()
        })?;
        let add = Change::Add { users: vec![addr.user], key_packages: Vec::new() };
        let (seq, prepared) = self.change_membership(room, &add).await?;
        let m = prepared.membership.ok_or_else(|| ClientError::Invalid("no membership was prepared".into()))?;
        let homes = self.homes()?;
        let mut list: Vec<(UserId, String)> =
            m.members.iter().filter_map(|u| homes.get(u).map(|h| (*u, h.clone()))).collect();
        list.push((self.user_id(), written_server(&self.home)));
        let invite = Pairwise::Invite { room: room.link.clone(), seq, membership: Box::new(m), homes: list };
        self.send_pairwise(&addr.user, &addr.home_url(), &invite).await?;
        self.send_roster_quietly(&room.link).await;
        Ok(())
    }

    /// A fresh own chain, distributed to every other current member. Answers the members it
    /// could not reach yet (see [`Profile::sk_deliver`]).
    pub(super) async fn sk_rotate(&mut self, room: &LocalRoom) -> Result<Vec<KeyPending>> {
        let mut engine = self.sk_engine()?;
        let (_rotation, changes) = engine.rotate(&room.link, &mut rand::rngs::OsRng, unix_seconds())?;
        // The chain and who must get it are stored before any distribution leaves.
        self.store.commit(Batch { records: sk_records(changes), ..Batch::default() })?;
        self.sk_deliver(room).await
    }

    /// Whether the own chain's distribution in `room` still waits for some member (a cheap
    /// look at the records, before loading the engine).
    pub(super) fn sk_delivery_waits(&self, room: &LocalRoom) -> Result<bool> {
        Ok(!self.store.records(&format!("sk/out/{}", room.link))?.is_empty())
    }

    /// On an explicit sync of the room (not on pushed entries: a home that cannot be reached
    /// may take the connect timeout): delivers the own sender key to the members it has not
    /// reached yet, if any. A failure is logged; they stay waiting.
    pub(super) async fn sk_deliver_quietly(&mut self, link: &str) -> Result<()> {
        let room = self.room(link)?;
        if room.mode != RoomMode::SenderKeys || !self.sk_delivery_waits(&room)? {
            return Ok(());
        }
        if let Err(e) = self.sk_deliver(&room).await {
            tracing::warn!(room = link, error = %e, "delivering the sender key failed; retried on the next sync or send");
        }
        Ok(())
    }

    /// Delivers the own chain's distribution to each member who has not got it yet, over Olm to
    /// that member's home. A member whose home cannot be reached (or refuses) is skipped and
    /// stays waiting; the others are recorded as served. Answers who still waits.
    pub(super) async fn sk_deliver(&mut self, room: &LocalRoom) -> Result<Vec<KeyPending>> {
        let engine = self.sk_engine()?;
        let Some(waiting) = engine.undelivered(&room.link)? else { return Ok(Vec::new()) };
        let dist = waiting.distribution;
        let mut delivered = Vec::new();
        let mut pending = Vec::new();
        for user in waiting.members {
            let home = self.home_of(&user, room)?;
            match self.send_pairwise(&user, &home, &Pairwise::SenderKey { dist: dist.to_vec() }).await {
                Ok(()) => delivered.push(user),
                Err(e) => {
                    tracing::warn!(room = room.link, to = %user.short(), home, error = %e, "a sender key could not be delivered yet; retried on the next sync or send");
                    pending.push(KeyPending { user, home });
                }
            }
        }
        if !delivered.is_empty() {
            let changes = self.sk_engine()?.mark_delivered(&room.link, &delivered)?;
            self.store.commit(Batch { records: sk_records(changes), ..Batch::default() })?;
        }
        Ok(pending)
    }

    async fn ensure_session(&mut self, user: &UserId, home_url: &str) -> Result<()> {
        let mut device = self.olm_device()?;
        if device.has_session(user) {
            return Ok(());
        }
        let home = self.server(home_url);
        let claimed = match home.claim_key(user, KeyKind::OlmOneTime).await {
            Ok(k) => k,
            Err(e) if e.code() == Some(ErrorCode::NoKeyMaterial) => {
                home.claim_key(user, KeyKind::OlmFallback).await.map_err(|e| match e.code() {
                    Some(ErrorCode::NoKeyMaterial) => ClientError::Invalid(format!(
                        "{} has published no Olm keys on {home_url}: they must run `grove sync` once",
                        user.short()
                    )),
                    _ => e.into(),
                })?
            }
            Err(e) => return Err(e.into()),
        };
        device.start_session(user, &claimed.data)?;
        self.store.commit(Batch { records: device.take_changes(), ..Batch::default() })?;
        Ok(())
    }

    async fn send_pairwise(&mut self, user: &UserId, home_url: &str, payload: &Pairwise) -> Result<()> {
        self.ensure_session(user, home_url).await?;
        let plaintext = Zeroizing::new(serde_json::to_vec(payload).map_err(|e| ClientError::Invalid(e.to_string()))?);
        let mut device = self.olm_device()?;
        let envelope = device.encrypt(user, &plaintext)?;
        // The session has moved: stored before the message leaves.
        self.store.commit(Batch { records: device.take_changes(), ..Batch::default() })?;
        let body =
            serde_json::to_vec(&MailMessage::Pairwise { envelope }).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.server(home_url).deposit(user, body).await?;
        Ok(())
    }

    /// Handles one pairwise mailbox message the server says `from` deposited, adding what it
    /// changed to `batch`. Hostile or stale input is logged and dropped. Answers a room and
    /// user whose removal was asked of us (a member leaving).
    pub(super) fn sk_receive(
        &mut self,
        from: UserId,
        seq: u64,
        envelope: &Envelope,
        batch: &mut Batch,
        report: &mut SyncReport,
    ) -> Result<Option<(String, UserId)>> {
        let mut device = self.olm_device()?;
        let plaintext = match device.decrypt(&from, envelope) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(seq, from = %from.short(), error = %e, "dropping a pairwise message");
                return Ok(None);
            }
        };
        batch.records.extend(device.take_changes());
        // The sender's home, signed by the sender with its Olm key.
        if grove_wire::membership::valid_home(&envelope.home) {
            batch.records.push(home_record(&from, &envelope.home));
        }
        let payload: Pairwise = match serde_json::from_slice(&plaintext) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(seq, error = %e, "a pairwise message that is not a grove payload");
                return Ok(None);
            }
        };
        let mut engine = self.sk_engine()?;
        match payload {
            Pairwise::SenderKey { dist } => match engine.receive_distribution(&from, &dist) {
                Ok((_, changes)) => batch.records.extend(sk_records(changes)),
                Err(e) => tracing::warn!(seq, from = %from.short(), error = %e, "refused a sender key"),
            },
            Pairwise::Invite { room, seq: at, membership, homes } => {
                let Some((server, name)) = super::parse_link(&room) else {
                    tracing::warn!(room, "an invitation with a bad room link");
                    return Ok(None);
                };
                if let Ok(existing) = self.room(&room) {
                    if existing.status == RoomStatus::Active {
                        return Ok(None);
                    }
                    // Rejoining a room left earlier: start afresh.
                    batch.records.extend(sk_records(engine.forget_room(&room)));
                }
                match engine.join_room(&room, &from, &membership) {
                    Ok(changes) => {
                        batch.records.extend(sk_records(changes));
                        // Homes come from the signed membership; the inviter's own list only
                        // from an inviter whose membership names none (a client from before).
                        if membership.homes.is_empty() {
                            for (u, h) in homes {
                                if u != self.user_id() && grove_wire::membership::valid_home(&h) {
                                    batch.records.push(home_record(&u, &h));
                                }
                            }
                        }
                        batch.rooms.push(LocalRoom {
                            link: room.clone(),
                            server,
                            name,
                            mode: RoomMode::SenderKeys,
                            group_id: Vec::new(),
                            cursor: at,
                            status: RoomStatus::Active,
                        });
                        let again = self.room(&room).is_ok();
                        let joined =
                            Membership { joined: Some(membership.members.len()), again, ..Membership::default() };
                        batch.messages.push(Message::membership(&room, at, self.user_id(), 0, &joined));
                        batch.invitations.push((room.clone(), from, unix_seconds() as i64));
                        report.joined.push(room);
                    }
                    Err(e) => tracing::warn!(room, error = %e, "an invitation could not be used"),
                }
            }
            Pairwise::Leave { room } => return Ok(Some((room, from))),
        }
        Ok(None)
    }

    /// Removes the members who asked to leave, where this user may remove members.
    pub(super) async fn sk_handle_leaves(&mut self, leaves: Vec<(String, UserId)>) {
        for (link, user) in leaves {
            let Ok(room) = self.active_room(&link) else { continue };
            let Ok(engine) = self.sk_engine() else { continue };
            let Ok(view) = engine.view(&link) else { continue };
            let policy = &view.policy;
            if policy.role_of(&self.user_id()) < policy.rights.remove || !view.members.contains(&user) {
                continue;
            }
            if let Err(e) = self.remove(&room.link, &user).await {
                tracing::warn!(room = link, error = %e, "could not remove a member who left");
            }
        }
    }
}
