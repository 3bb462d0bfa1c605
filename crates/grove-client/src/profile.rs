//! A profile: one identity, its state file, and the operations of the `grove` command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use grove_proto::identity::Identity;
use grove_proto::mls::engine::{Changes, EngineError, GroupId, MlsEngine};
/// An edit of a room's policy ([`Profile::edit_policy`]).
pub use grove_proto::policy::Edit;
use grove_wire::api::{CreateRoom, KeyItemUpload, KeyKind, LogPage, MlsGroupState, RoomMode};
use grove_wire::policy::RoomPolicy;
use grove_wire::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};

mod files;
mod invitations;
mod joins;
mod link_join;
#[cfg(feature = "testing")]
pub mod misbehave;
pub(crate) mod names;
mod outbox;
mod resync;
pub(crate) mod room_profile;
pub(crate) mod sk;

pub use invitations::Invitation;
pub use joins::LinkJoined;
pub use outbox::{Sent, IN_FLIGHT_GRACE, SEAL_OVERHEAD};
pub use sk::{KeyPending, OLM_KEY_LOW, OLM_KEY_TARGET};

use crate::core::{protocol, Change, FollowUp, Prepared};
use crate::known::KnownServers;
use crate::lock::{LockGuard, ProfileLock};
use crate::net::{Net, NetConfig};
use crate::olm::Envelope;
use crate::proxy::Proxy;
use crate::store::{Batch, ClientStore, LocalRoom, Membership, Message, Passphrase, RoomStatus, StoreError};
use crate::transport::{Server, TransportError};

/// How many one-time KeyPackages a profile keeps published.
pub const KEY_PACKAGE_TARGET: usize = 20;
/// Replenish when fewer than this many are left.
pub const KEY_PACKAGE_LOW: u64 = 5;
/// How often a commit is retried after losing the epoch race.
const COMMIT_ATTEMPTS: usize = 8;
/// Log entries read per request while syncing.
const PAGE: u32 = 500;

/// Why an operation failed. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The profile has no identity yet.
    #[error("no identity in {0}: run `grove init --home URL` first")]
    NoIdentity(PathBuf),
    /// `init` on a profile that has one.
    #[error("this profile already has an identity ({0}); use another --profile for another identity")]
    AlreadyInitialised(String),
    /// An address is not `USERID@HOST:PORT`.
    #[error("{0:?} is not an address: it looks like USERID@HOST:PORT (the user's `grove whoami`)")]
    BadAddress(String),
    /// A room is not known to the profile.
    #[error("no room {0:?} in this profile: see `grove room list`, or use the room's link")]
    UnknownRoom(String),
    /// The room cannot be used any more.
    #[error("you can no longer use room {room:?}: you {why}")]
    NotActive {
        /// The room.
        room: String,
        /// "left it" or "were removed".
        why: &'static str,
    },
    /// A server refused or could not be reached.
    #[error(transparent)]
    Server(#[from] TransportError),
    /// The group protocol refused.
    #[error("group protocol: {0}")]
    Engine(#[from] EngineError),
    /// The local state failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Others kept committing first.
    #[error("room {0:?} is busy: others kept changing it first; try again")]
    Busy(String),
    /// The room moved on by a commit this client cannot process: not contention, nothing to
    /// retry. The commit is in the room's history as unreadable, with its sender, and was
    /// reported to the server.
    #[error(
        "room {room:?} is at epoch {room_epoch}, but this profile cannot get past epoch {ours}: a commit it \
         cannot process moved the room on (see the unreadable entry in its history, which names who made \
         it; it was reported to the server). Messages of epoch {ours} are still accepted for a while; the \
         room can be changed again once the server voids that commit (when members prove it faulty, or an \
         admin voids it because no member could process it), or once a member who could process it helps \
         this profile resync (a later sync does it)"
    )]
    Behind {
        /// The room's link.
        room: String,
        /// This profile's epoch (or membership version).
        ours: u64,
        /// The room's, on the server.
        room_epoch: u64,
    },
    /// Something in the profile is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The message could not be posted now (the server cannot be reached or is overloaded);
    /// it waits in the outbox and the next command that reaches the server posts it.
    #[error("queued: {why}; the message waits in the outbox (`grove outbox`) and the next grove command that reaches the server sends it")]
    Queued {
        /// The outbox item.
        id: i64,
        /// Why it could not go now.
        why: String,
    },
    /// A message larger than the room's server takes.
    #[error("the message is {size} bytes; this room's server takes at most {max} bytes per message: send it as a file, or split it")]
    TooLarge {
        /// The message's size (its content, encoded).
        size: u64,
        /// The most the server takes, less what encryption adds.
        max: u64,
    },
    /// An invitation for someone who is in the room already.
    #[error("{who} is already a member of {room}")]
    AlreadyMember {
        /// The member (name or short id).
        who: String,
        /// The room's name.
        room: String,
    },
    /// A removal of someone who is not in the room.
    #[error("{who} is not a member of {room}: see `grove room members {room}`")]
    NotAMember {
        /// The user (name or short id).
        who: String,
        /// The room's name.
        room: String,
    },
    /// A file could not be sent or saved.
    #[error(transparent)]
    File(Box<crate::files::FileError>),
    /// The profile's lock file could not be used.
    #[error("cannot lock the profile {path}: {source}")]
    Lock {
        /// The profile folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::files::FileError> for ClientError {
    fn from(e: crate::files::FileError) -> Self {
        ClientError::File(Box::new(e))
    }
}

/// Result alias.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A user's address: `USERID@HOST:PORT`, the user and their home server. The server is
/// reached over `https://` unless the address says `USERID@http://HOST:PORT` (or names a
/// loopback host, which defaults to `http://`); an address is written with its scheme
/// whenever that is not what reading it back would assume, so it keeps its scheme end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The user.
    pub user: UserId,
    /// The home server's base URL (`https://HOST:PORT` or `http://HOST:PORT`).
    pub home: String,
}

impl Address {
    /// Parses `USERID@HOST:PORT` or `USERID@SCHEME://HOST:PORT`.
    pub fn parse(s: &str) -> Result<Address> {
        let (user, home) = s.split_once('@').ok_or_else(|| ClientError::BadAddress(s.into()))?;
        let user = user.parse().map_err(|_| ClientError::BadAddress(s.into()))?;
        let home = server_url(home).ok_or_else(|| ClientError::BadAddress(s.into()))?;
        Ok(Address { user, home })
    }

    /// The home server's base URL.
    pub fn home_url(&self) -> String {
        self.home.clone()
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, written_server(&self.home))
    }
}

/// A server's base URL as an address writes it: `HOST:PORT` where [`server_url`] reads that
/// back to the same URL, the whole URL otherwise.
pub(crate) fn written_server(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let bare = host_port(url);
    if server_url(bare).as_deref() == Some(url) {
        bare.to_string()
    } else {
        url.to_string()
    }
}

/// A server's base URL from what a user wrote: `https://HOST[:PORT]` and `http://HOST[:PORT]`
/// as they are; a bare `HOST[:PORT]` is `https://`, except a loopback host (`localhost`,
/// `127.0.0.1`, `[::1]`), which is `http://`. None if it is not a server's address.
pub fn server_url(written: &str) -> Option<String> {
    let written = written.trim().trim_end_matches('/');
    let (scheme, rest) = if let Some(rest) = written.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = written.strip_prefix("http://") {
        ("http", rest)
    } else if crate::net::is_loopback(crate::net::host_of(written)) {
        ("http", written)
    } else {
        ("https", written)
    };
    let ok = !rest.is_empty()
        && !rest.contains(['/', '@', '?', '#', ' '])
        && !rest.contains("://")
        && !crate::net::host_of(rest).is_empty();
    ok.then(|| format!("{scheme}://{rest}"))
}

/// `http://HOST:PORT` → `HOST:PORT`.
fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/')
}

/// A room's link: `<server>/rooms/<name>`.
pub fn room_link(server: &str, name: &str) -> String {
    format!("{}/rooms/{name}", server.trim_end_matches('/'))
}

/// Splits a link into server and name.
pub fn parse_link(link: &str) -> Option<(String, String)> {
    let (server, name) = link.rsplit_once("/rooms/")?;
    if !(server.starts_with("http://") || server.starts_with("https://")) || name.is_empty() {
        return None;
    }
    Some((server.to_string(), name.to_string()))
}

/// What an inviter leaves in the invitee's mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MailMessage {
    /// An invitation to an MLS room.
    Invite {
        /// The room's link.
        room: String,
        /// The epoch the Welcome is for.
        epoch: u64,
        /// The sequence number of the commit that added the invitee.
        seq: u64,
        /// The MLS Welcome (without the ratchet tree).
        #[serde(with = "grove_wire::b64")]
        welcome: Vec<u8>,
    },
    /// A pairwise Olm message (sender-keys rooms: a sender key, an invitation, a leave).
    Pairwise {
        /// The Olm message and the sender's signed Olm identity.
        envelope: Envelope,
    },
}

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Rooms joined from invitations (pending until accepted: see [`Profile::accept`]).
    pub joined: Vec<String>,
    /// New history lines, per room link.
    pub new_messages: HashMap<String, usize>,
    /// Rooms this user was removed from.
    pub removed_from: Vec<String>,
}

/// One identity with its state.
pub struct Profile {
    dir: PathBuf,
    store: ClientStore,
    identity: Identity,
    engine: EngineSlot,
    home: String,
    connect_to: ConnectTo,
    /// Serialises the profile's writers across processes (see [`crate::lock`]).
    lock: ProfileLock,
    /// The state file's `data_version` when `engine` was loaded from it: when the file's
    /// differs, another process wrote, and `engine` is reloaded before it is used.
    data_version: i64,
    /// Outbox items a sync found already posted (item id → log sequence number).
    settled: HashMap<i64, u64>,
    /// Server handles by URL (see [`Profile::server`]).
    servers: std::sync::Mutex<HashMap<String, Server>>,
    /// How connections are made (TLS roots, a private CA).
    net: Net,
}

/// How a profile is made ([`Profile::create`]).
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Where to send the requests meant for some servers ([`ConnectTo`]).
    pub connect_to: ConnectTo,
    /// Lock the profile at rest with this passphrase.
    pub passphrase: Option<Passphrase>,
    /// Reach every server through this SOCKS5 proxy.
    pub proxy: Option<Proxy>,
    /// How connections are made (TLS roots, a private CA; the proxy above is added to it).
    pub net: Net,
}

/// Where to send the requests meant for a server URL, when that is not the URL itself — like
/// curl's `--connect-to`. Rooms and addresses name a server by its public URL (in links and
/// addresses); several instances behind a load balancer share that URL, and a client (or a
/// test, which has no load balancer) can pin its requests to one instance. URLs are compared
/// without a trailing `/`; an unlisted URL is used as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectTo(Vec<(String, String)>);

impl ConnectTo {
    /// No override.
    pub fn none() -> ConnectTo {
        ConnectTo::default()
    }

    /// Parses `PUBLIC=ACTUAL` (both `http://` or `https://` URLs).
    pub fn parse_rule(rule: &str) -> Result<(String, String)> {
        let bad = || {
            ClientError::Invalid(format!(
                "--connect-to takes PUBLIC_URL=ACTUAL_URL, e.g. https://chat.example=http://10.0.0.5:8080 (got {rule:?})"
            ))
        };
        let (public, actual) = rule.split_once('=').ok_or_else(bad)?;
        let url = |u: &str| (u.starts_with("http://") || u.starts_with("https://")) && u.len() > "https://".len();
        if !url(public) || !url(actual) {
            return Err(bad());
        }
        Ok((public.trim_end_matches('/').to_string(), actual.trim_end_matches('/').to_string()))
    }

    /// Adds a rule: requests for `public` go to `actual`.
    pub fn add(&mut self, public: &str, actual: &str) {
        self.0.push((public.trim_end_matches('/').to_string(), actual.trim_end_matches('/').to_string()));
    }

    /// Where requests for `url` go.
    pub fn resolve<'a>(&'a self, url: &'a str) -> &'a str {
        let url = url.trim_end_matches('/');
        self.0.iter().find(|(p, _)| p == url).map_or(url, |(_, a)| a.as_str())
    }
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("dir", &self.dir)
            .field("user", &self.identity.user_id())
            .finish_non_exhaustive()
    }
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.db")
}

impl Profile {
    /// Creates an identity in `dir`, publishes key material to `home` and answers the profile.
    pub async fn init(dir: &Path, home: &str) -> Result<Profile> {
        Self::init_with(dir, home, ConnectTo::none()).await
    }

    /// [`Profile::init`], sending the requests for the servers `connect_to` lists elsewhere.
    pub async fn init_with(dir: &Path, home: &str, connect_to: ConnectTo) -> Result<Profile> {
        Self::create(dir, home, InitOptions { connect_to, ..InitOptions::default() }).await
    }

    /// [`Profile::init_with`], making connections through `net` (e.g. trusting a private CA).
    pub async fn init_with_net(dir: &Path, home: &str, connect_to: ConnectTo, net: Net) -> Result<Profile> {
        Self::create(dir, home, InitOptions { connect_to, net, ..InitOptions::default() }).await
    }

    /// [`Profile::init`] with [`InitOptions`]: with a passphrase, the profile is locked at
    /// rest (its secrets and history sealed under a key only the passphrase opens: see
    /// [`crate::Passphrase`], and every later open needs it); with a proxy, every connection
    /// goes through it.
    pub async fn create(dir: &Path, home: &str, options: InitOptions) -> Result<Profile> {
        let InitOptions { connect_to, passphrase, proxy, net } = options;
        let net = match proxy {
            None => net,
            Some(proxy) => {
                Net::new_or_failing(&NetConfig { ca_file: net.config().ca_file.clone(), proxy: Some(proxy) })
            }
        };
        if ClientStore::is_locked(&state_file(dir))? {
            return Err(ClientError::AlreadyInitialised(format!("locked with a passphrase, in {}", dir.display())));
        }
        private_dir(dir)
            .map_err(|e| ClientError::Invalid(format!("cannot create the profile folder {}: {e}", dir.display())))?;
        let lock = ProfileLock::open(dir).map_err(|source| ClientError::Lock { path: dir.to_path_buf(), source })?;
        let (_guard, _) =
            lock.acquire().await.map_err(|source| ClientError::Lock { path: dir.to_path_buf(), source })?;
        let store = ClientStore::open(&state_file(dir))?;
        if let Some(secret) = store.meta("identity")? {
            let id = identity_from(&secret)?;
            let home = String::from_utf8_lossy(&store.meta("home")?.unwrap_or_default()).into_owned();
            return Err(ClientError::AlreadyInitialised(Address { user: id.user_id(), home }.to_string()));
        }
        let home = server_url(home).ok_or_else(|| {
            ClientError::Invalid(format!("--home must be a server like https://chat.example:8443, not {home:?}"))
        })?;
        // Check the server answers (and remember its key) before creating anything.
        let known = KnownServers::in_profile(dir);
        let url = connect_to.resolve(&home);
        Server::with_net(url, ed25519_dalek::SigningKey::from_bytes(&[0; 32]), net.clone(), Some(known))
            .cached_info()
            .await?;
        let identity = Identity::generate(&mut rand::rngs::OsRng);
        let mut store = store;
        if let Some(passphrase) = &passphrase {
            store.lock_new(passphrase)?;
        }
        store.set_meta("home", home.as_bytes())?;
        store.set_meta("identity", &identity.secret_bytes())?;
        let engine = MlsEngine::with_rng(identity.clone(), rand::rngs::OsRng).with_clock(unix_seconds);
        let data_version = store.data_version()?;
        let mut p = Profile {
            dir: dir.to_path_buf(),
            store,
            identity,
            engine: EngineSlot::new(engine),
            home,
            connect_to,
            lock,
            data_version,
            settled: HashMap::new(),
            servers: Default::default(),
            net,
        };
        p.replenish_keys().await?;
        p.replenish_olm_keys().await?;
        Ok(p)
    }

    /// Opens the profile in `dir` (one without a passphrase).
    pub fn open(dir: &Path) -> Result<Profile> {
        Self::open_with(dir, None)
    }

    /// Whether the profile in `dir` is locked with a passphrase.
    pub fn is_locked(dir: &Path) -> Result<bool> {
        Ok(ClientStore::is_locked(&state_file(dir))?)
    }

    /// Opens the profile in `dir`, with its passphrase if it has one. A wrong passphrase
    /// answers [`StoreError::WrongPassphrase`] and changes nothing.
    pub fn open_with(dir: &Path, passphrase: Option<&Passphrase>) -> Result<Profile> {
        let file = state_file(dir);
        if !file.exists() {
            return Err(ClientError::NoIdentity(dir.to_path_buf()));
        }
        private_dir(dir).map_err(|e| ClientError::Invalid(format!("cannot make {} private: {e}", dir.display())))?;
        let store = ClientStore::open_with(&file, passphrase)?;
        let secret = store.meta("identity")?.ok_or_else(|| ClientError::NoIdentity(dir.to_path_buf()))?;
        let identity = identity_from(&secret)?;
        let home = String::from_utf8_lossy(&store.meta("home")?.unwrap_or_default()).into_owned();
        let lock = ProfileLock::open(dir).map_err(|source| ClientError::Lock { path: dir.to_path_buf(), source })?;
        // Read before the state: a write landing in between only makes the next lock reload.
        let data_version = store.data_version()?;
        let engine = load_engine(&store, &identity)?;
        Ok(Profile {
            dir: dir.to_path_buf(),
            store,
            identity,
            engine: EngineSlot::new(engine),
            home,
            connect_to: ConnectTo::none(),
            lock,
            data_version,
            settled: HashMap::new(),
            servers: Default::default(),
            net: Net::shared_default(),
        })
    }

    /// Takes the profile's cross-process lock (see [`crate::lock`]); the outermost hold first
    /// reloads the group state if another process wrote since it was loaded. Every operation
    /// that encrypts, commits, processes entries or writes the state file holds it throughout.
    pub(crate) async fn lock(&mut self) -> Result<LockGuard> {
        let (guard, outermost) =
            self.lock.acquire().await.map_err(|source| ClientError::Lock { path: self.dir.clone(), source })?;
        if outermost {
            self.refresh()?;
        }
        Ok(guard)
    }

    /// The protocol of a room of `mode` over this profile's fresh state ([`crate::core`]).
    fn room_protocol(&mut self, mode: RoomMode) -> Result<Box<dyn crate::core::RoomProtocol + '_>> {
        let me = self.identity.user_id();
        protocol(self.engine.get(&self.store, &self.identity)?, &self.store, me, mode)
    }

    /// Reloads the in-memory group state if another process wrote the state file since it was
    /// loaded. Reading alone needs no lock: the state is read in one transaction.
    fn refresh(&mut self) -> Result<()> {
        let version = self.store.data_version()?;
        if version != self.data_version {
            // Reloaded when next used: an operation that finds nothing to do (a follower
            // whose page another process already applied) pays nothing.
            self.engine.stale = true;
            self.data_version = version;
        }
        Ok(())
    }

    /// Whether the profile is locked at rest with a passphrase.
    pub fn is_encrypted(&self) -> bool {
        self.store.is_encrypted()
    }

    /// Changes the passphrase of a locked profile (opened with the current one).
    pub async fn change_passphrase(&mut self, new: &Passphrase) -> Result<()> {
        let _guard = self.lock().await?;
        Ok(self.store.change_passphrase(new)?)
    }

    /// The user's id.
    pub fn user_id(&self) -> UserId {
        self.identity.user_id()
    }

    /// The user's address.
    pub fn address(&self) -> Address {
        Address { user: self.user_id(), home: self.home.clone() }
    }

    /// The home server's URL.
    pub fn home(&self) -> &str {
        &self.home
    }

    /// Sends the requests for the servers `connect_to` lists elsewhere from now on.
    pub fn set_connect_to(&mut self, connect_to: ConnectTo) {
        self.connect_to = connect_to;
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Makes connections through `net` from now on (e.g. trusting a private CA).
    pub fn set_net(&mut self, net: Net) {
        self.net = net;
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The servers' keys this profile remembers (see [`KnownServers`]).
    pub fn known_servers(&self) -> KnownServers {
        KnownServers::in_profile(&self.dir)
    }

    /// Sends every request and opens every WebSocket through `proxy` from now on (`None`:
    /// directly).
    pub fn set_proxy(&mut self, proxy: Option<Proxy>) {
        if self.net.config().proxy != proxy {
            let config = NetConfig { ca_file: self.net.config().ca_file.clone(), proxy };
            self.set_net(Net::new_or_failing(&config));
        }
    }

    /// A handle on a server, kept for the life of the profile: one HTTP connection pool and
    /// one `/v1/info` per server, not one per call.
    fn server(&self, base: &str) -> Server {
        let url = self.connect_to.resolve(base).to_string();
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers
            .entry(url.clone())
            .or_insert_with(|| {
                let key = self.identity.signing_key().clone();
                Server::with_net(&url, key, self.net.clone(), Some(self.known_servers()))
            })
            .clone()
    }

    /// Keeps enough one-time KeyPackages and a last-resort one on the home server.
    pub async fn replenish_keys(&mut self) -> Result<usize> {
        let _lock = self.lock().await?;
        let home = self.server(&self.home);
        let counts = home.key_counts().await?;
        let mls = counts.counts.iter().find(|c| c.kind == KeyKind::MlsKeyPackage);
        let one_time = mls.map(|c| c.one_time).unwrap_or(0);
        let has_last_resort = mls.is_some_and(|c| c.last_resort);
        if one_time >= KEY_PACKAGE_LOW && has_last_resort {
            return Ok(0);
        }
        let n = if one_time >= KEY_PACKAGE_LOW { 0 } else { KEY_PACKAGE_TARGET - one_time as usize };
        let (one_time, last_resort, changes) =
            self.engine.get(&self.store, &self.identity)?.key_packages(n, !has_last_resort)?;
        // The private keys are stored before the public halves leave this machine.
        self.store.commit(Batch { changes: vec![changes], ..Batch::default() })?;
        let mut items: Vec<KeyItemUpload> = one_time
            .into_iter()
            .map(|data| KeyItemUpload { kind: KeyKind::MlsKeyPackage, last_resort: false, data })
            .collect();
        if let Some(data) = last_resort {
            items.push(KeyItemUpload { kind: KeyKind::MlsKeyPackage, last_resort: true, data });
        }
        let published = items.len();
        home.publish_keys(items).await?;
        Ok(published)
    }

    /// Every room of the profile.
    pub fn rooms(&self) -> Result<Vec<LocalRoom>> {
        Ok(self.store.rooms()?)
    }

    /// Finds a room by link or, among the profile's rooms, by name.
    pub fn room(&self, key: &str) -> Result<LocalRoom> {
        let rooms = self.store.rooms()?;
        if let Some(r) = rooms.iter().find(|r| r.link == key) {
            return Ok(r.clone());
        }
        let by_name: Vec<&LocalRoom> = rooms.iter().filter(|r| r.name == key).collect();
        match by_name.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ClientError::UnknownRoom(key.into())),
            _ => Err(ClientError::Invalid(format!("several rooms are named {key:?}: use the room's link"))),
        }
    }

    fn active_room(&self, key: &str) -> Result<LocalRoom> {
        let room = self.room(key)?;
        match room.status {
            RoomStatus::Active => Ok(room),
            RoomStatus::Left => Err(ClientError::NotActive { room: room.link, why: "left it" }),
            RoomStatus::Removed => Err(ClientError::NotActive { room: room.link, why: "were removed from it" }),
        }
    }

    /// A room's history after `after`.
    pub fn messages(&self, key: &str, after: u64) -> Result<Vec<Message>> {
        let room = self.room(key)?;
        Ok(self.store.messages(&room.link, after)?)
    }

    /// How a user is called in a room: the display name, else the short id.
    fn call(&self, link: &str, user: &UserId) -> String {
        self.display_names(link).ok().and_then(|n| n.get(user).cloned()).unwrap_or_else(|| user.short())
    }

    /// Marks a room's history as read up to `seq` (for unread counts).
    pub async fn mark_seen(&mut self, key: &str, seq: u64) -> Result<()> {
        let room = self.room(key)?;
        if seq > 0 {
            let _lock = self.lock().await?;
            self.store.commit(Batch { seen: vec![(room.link, seq)], ..Batch::default() })?;
        }
        Ok(())
    }

    /// How many messages from others in a room have not been shown by `grove read`.
    pub fn unread(&self, key: &str) -> Result<u64> {
        let room = self.room(key)?;
        Ok(self.store.unread(&room.link, &self.user_id())?)
    }

    /// The members of a room, as this member's group state says.
    pub fn members(&mut self, key: &str) -> Result<Vec<UserId>> {
        self.refresh()?;
        let room = self.active_room(key)?;
        self.room_protocol(room.mode)?.members(&room)
    }

    /// The room's current epoch and epoch authenticator (equal for all members in sync).
    pub fn epoch(&mut self, key: &str) -> Result<(u64, Vec<u8>)> {
        self.refresh()?;
        let room = self.active_room(key)?;
        self.room_protocol(room.mode)?.epoch(&room)
    }

    /// Writes every MLS group's full state and empties its journal (see grove-proto's engine
    /// docs, "The journal"): afterwards the state file holds no key from which a message already
    /// read could be decrypted again, and the next start-up replays nothing. The engine does
    /// this by itself every few hundred messages or few commits; call it after deleting history
    /// or before copying the state file.
    pub async fn checkpoint(&mut self) -> Result<()> {
        let _lock = self.lock().await?;
        let mut changes = Vec::new();
        for g in self.engine.get(&self.store, &self.identity)?.group_ids() {
            changes.push(self.engine.get(&self.store, &self.identity)?.checkpoint(&g)?);
        }
        self.store.commit(Batch { changes, ..Batch::default() })?;
        Ok(())
    }

    /// Creates an MLS room `name` on `server` with this user alone in it.
    pub async fn create_room(&mut self, server: &str, name: &str) -> Result<LocalRoom> {
        let _lock = self.lock().await?;
        let server_url = server.trim_end_matches('/').to_string();
        let (gid, public, changes) = self.engine.get(&self.store, &self.identity)?.create_group()?;
        self.store.commit(Batch { changes: vec![changes], ..Batch::default() })?;
        let req = CreateRoom {
            name: name.to_string(),
            mode: RoomMode::Mls,
            public: false,
            mls: Some(MlsGroupState { group_info: public.group_info, ratchet_tree: public.ratchet_tree }),
        };
        self.server(&server_url).create_room(&req).await?;
        let room = LocalRoom {
            link: room_link(&server_url, name),
            server: server_url,
            name: name.to_string(),
            mode: RoomMode::Mls,
            group_id: gid.into_bytes(),
            cursor: 0,
            status: RoomStatus::Active,
        };
        self.store.commit(Batch { rooms: vec![room.clone()], ..Batch::default() })?;
        self.announce_profile_quietly(&room.link).await;
        Ok(room)
    }

    /// Announces the own profile in a room; a failure only delays others' learning the name.
    async fn announce_profile_quietly(&mut self, link: &str) {
        match self.announce_profile(link).await {
            Ok(()) | Err(ClientError::Queued { .. }) => {}
            Err(e) => tracing::warn!(room = link, error = %e, "could not announce the display name"),
        }
    }

    /// Invites the user at `address` into the room: claims a KeyPackage from their home server,
    /// commits the add, and leaves the Welcome in their mailbox.
    pub async fn invite(&mut self, key: &str, address: &str) -> Result<()> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        let addr = Address::parse(address)?;
        self.sync_room_locked(&room.link).await?;
        let room = self.active_room(key)?;
        if self.members(&room.link)?.contains(&addr.user) {
            return Err(ClientError::AlreadyMember { who: self.call(&room.link, &addr.user), room: room.name });
        }
        if room.mode == RoomMode::SenderKeys {
            return self.sk_invite(&room, &addr).await;
        }
        let home = self.server(&addr.home_url());
        let claimed = home.claim_key(&addr.user, KeyKind::MlsKeyPackage).await.map_err(|e| match e.code() {
            Some(ErrorCode::NoKeyMaterial) => ClientError::Invalid(format!(
                "{} has no key packages left on {}: they must run `grove sync` once, which publishes new ones",
                addr.user.short(),
                addr.home
            )),
            _ => e.into(),
        })?;
        let kp = claimed.data;
        let add = Change::Add { users: vec![addr.user], key_packages: vec![kp] };
        let (seq, prepared) = self.change_membership(&room, &add).await?;
        let welcome =
            prepared.welcome.ok_or_else(|| ClientError::Invalid("the add commit produced no Welcome".into()))?;
        let invite = MailMessage::Invite { room: room.link.clone(), epoch: prepared.entry.epoch + 1, seq, welcome };
        let body = serde_json::to_vec(&invite).map_err(|e| ClientError::Invalid(e.to_string()))?;
        home.deposit(&addr.user, body).await?;
        self.send_roster_quietly(&room.link).await;
        Ok(())
    }

    /// Passes the room's known names on to a new member, and its name and topic if this
    /// member may set them; a failure only delays its learning.
    async fn send_roster_quietly(&mut self, link: &str) {
        match self.send_roster(link).await {
            Ok(()) | Err(ClientError::Queued { .. }) => {}
            Err(e) => tracing::warn!(room = link, error = %e, "could not pass the room's names on"),
        }
        match self.pass_room_profile_on(link).await {
            Ok(()) | Err(ClientError::Queued { .. }) => {}
            Err(e) => tracing::warn!(room = link, error = %e, "could not pass the room's profile on"),
        }
    }

    /// Removes a member.
    pub async fn remove(&mut self, key: &str, user: &UserId) -> Result<()> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        self.sync_room_locked(&room.link).await?;
        let room = self.active_room(key)?;
        if !self.members(&room.link)?.contains(user) {
            return Err(ClientError::NotAMember { who: self.call(&room.link, user), room: room.name });
        }
        self.change_membership(&room, &Change::Remove(vec![*user])).await?;
        Ok(())
    }

    /// Changes the room's policy: a member's role, a ban (which removes the user if it is a
    /// member), an unban. The server refuses with `not_allowed` what the policy does not let
    /// this user do ([`grove_proto::policy`]).
    pub async fn edit_policy(&mut self, key: &str, edit: Edit) -> Result<()> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        self.sync_room_locked(&room.link).await?;
        let room = self.active_room(key)?;
        if let Edit::SetRole(user, _) = edit {
            if !self.members(&room.link)?.contains(&user) {
                return Err(ClientError::NotAMember { who: self.call(&room.link, &user), room: room.name });
            }
        }
        self.change_membership(&room, &Change::Policy(edit)).await?;
        Ok(())
    }

    /// The room's policy as this member's state says (`None`: an MLS room created before rooms
    /// had policies).
    pub fn policy(&mut self, key: &str) -> Result<Option<RoomPolicy>> {
        let room = self.room(key)?;
        self.room_protocol(room.mode)?.policy(&room)
    }

    /// A self-update: fresh leaf keys, so a leaked copy of the old state stops working.
    pub async fn update(&mut self, key: &str) -> Result<()> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        if room.mode == RoomMode::SenderKeys {
            // Members whose home could not be reached get the key on a later sync or send.
            return self.sk_rotate(&room).await.map(|_| ());
        }
        self.change_membership(&room, &Change::Update).await?;
        Ok(())
    }

    /// Leaves: proposes the own removal (another member commits it) and stops using the room.
    pub async fn leave(&mut self, key: &str) -> Result<()> {
        let _lock = self.lock().await?;
        let room = self.active_room(key)?;
        self.change_membership(&room, &Change::Leave).await?;
        let mut batch = self.room_protocol(room.mode)?.forget(&room);
        batch.statuses.push((room.link.clone(), RoomStatus::Left));
        self.store.commit(batch)?;
        Ok(())
    }

    /// Sends a text message. Answers its sequence number in the room's log;
    /// [`ClientError::Queued`] if it waits in the outbox.
    pub async fn send(&mut self, key: &str, text: &str) -> Result<u64> {
        self.send_content(key, &grove_wire::content::Content::text(text)).await
    }

    /// Makes a membership change, posts it, and applies it once the server accepted it; on a
    /// lost race (`wrong_epoch`, `membership_version`), undoes it, syncs (which applies the
    /// winner) and makes the change again. The one retry loop of membership changes, for both
    /// protocols ([`crate::core`]). Answers the entry's sequence number and what was prepared
    /// (an MLS Welcome, a sender-keys membership).
    pub(super) async fn change_membership(&mut self, room: &LocalRoom, change: &Change) -> Result<(u64, Prepared)> {
        let server = self.server(&room.server);
        let me = self.user_id();
        for _ in 0..COMMIT_ATTEMPTS {
            self.sync_room_locked(&room.link).await?;
            self.active_room(&room.link)?;
            // A change left by an earlier failure was either applied by the sync above (the
            // server had taken it) or is dead.
            let stale = self.room_protocol(room.mode)?.drop_stale(room)?;
            self.store.commit(stale)?;
            let identity = self.identity.clone();
            let mut prepared = self.room_protocol(room.mode)?.prepare(room, &identity, change)?;
            self.store.commit(std::mem::take(&mut prepared.batch))?;
            match server.append(&room.name, &prepared.entry).await {
                Ok(a) => {
                    // Others' entries that the server put before ours (a message racing the
                    // change, say from a member it removes) are read first: once the change is
                    // applied, a removed sender's message of the old epoch or view no longer
                    // decrypts (MLS finds no such member; sender keys forgot the old chains).
                    let cursor = self.room(&room.link)?.cursor;
                    if a.seq > cursor + 1 {
                        self.sync_room_from(&room.link, None, Some(a.seq - 1)).await?;
                    }
                    let (batch, follow_up) =
                        self.room_protocol(room.mode)?.accepted(room, me, &prepared, a.seq, a.ts)?;
                    self.store.commit(batch)?;
                    if follow_up.rotate {
                        Box::pin(self.update(&room.link)).await?;
                    }
                    return Ok((a.seq, prepared));
                }
                Err(e) if matches!(e.code(), Some(ErrorCode::WrongEpoch | ErrorCode::MembershipVersion)) => {
                    let undo = self.room_protocol(room.mode)?.refused(room, &prepared)?;
                    self.store.commit(undo)?;
                    self.check_not_behind(room, &e).await?;
                    continue;
                }
                // The outcome is unknown: keep what is pending; the next sync settles it.
                Err(e @ TransportError::Unreachable { .. }) => return Err(e.into()),
                Err(e) => {
                    let undo = self.room_protocol(room.mode)?.refused(room, &prepared)?;
                    self.store.commit(undo)?;
                    return Err(e.into());
                }
            }
        }
        Err(ClientError::Busy(room.link.clone()))
    }

    /// After the server said the room is at another epoch: syncs, and answers
    /// [`ClientError::Behind`] if this profile still cannot reach the epoch the server named
    /// (a commit it cannot process is in the way: retrying would not help).
    pub(super) async fn check_not_behind(&mut self, room: &LocalRoom, refusal: &TransportError) -> Result<()> {
        let TransportError::Api { error, .. } = refusal else { return Ok(()) };
        let Some(room_epoch) = error.current_epoch else { return Ok(()) };
        self.sync_room_locked(&room.link).await?;
        if self.room(&room.link)?.status != RoomStatus::Active {
            return Ok(());
        }
        let ours = self.room_protocol(room.mode)?.epoch(room)?.0;
        if ours < room_epoch {
            return Err(ClientError::Behind { room: room.link.clone(), ours, room_epoch });
        }
        Ok(())
    }

    /// Reads the mailbox (joining rooms from invitations) and every active room.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        let _lock = self.lock().await?;
        let mut report = SyncReport::default();
        self.sync_mailbox(&mut report).await?;
        self.accept_asked(&report.joined);
        for room in self.store.rooms()? {
            if room.status != RoomStatus::Active {
                continue;
            }
            let before = self.store.messages(&room.link, room.cursor)?.len();
            let (status, _) = self.sync_room_locked(&room.link).await?;
            if status == RoomStatus::Active {
                self.sk_deliver_quietly(&room.link).await?;
            }
            let after = self.store.messages(&room.link, room.cursor)?.len();
            if after > before {
                report.new_messages.insert(room.link.clone(), after - before);
            }
            if status == RoomStatus::Removed {
                report.removed_from.push(room.link.clone());
            }
        }
        self.replenish_keys().await?;
        self.replenish_olm_keys().await?;
        self.flush_outbox().await?;
        self.carry_out_link_joins().await;
        self.keep_link_group_infos().await;
        Ok(report)
    }

    async fn sync_mailbox(&mut self, report: &mut SyncReport) -> Result<()> {
        let home = self.server(&self.home);
        let mut after = self.store.mailbox_cursor()?;
        let mut leaves = Vec::new();
        loop {
            let page = home.read_mailbox(after, 0).await?;
            if page.entries.is_empty() {
                break;
            }
            for entry in page.entries {
                let mut batch = Batch { mailbox_cursor: Some(entry.seq), ..Batch::default() };
                match serde_json::from_slice::<MailMessage>(&entry.body) {
                    Ok(MailMessage::Invite { room, epoch, seq, welcome }) => {
                        match self.join(&room, epoch, seq, &welcome).await {
                            Ok((local, changes, event)) => {
                                report.joined.push(local.link.clone());
                                batch.invitations.push((local.link.clone(), entry.sender, unix_seconds() as i64));
                                batch.changes.push(changes);
                                batch.rooms.push(local);
                                batch.messages.push(event);
                            }
                            Err(e) => tracing::warn!(room, error = %e, "an invitation could not be used"),
                        }
                    }
                    Ok(MailMessage::Pairwise { envelope }) => {
                        if let Some(leave) = self.sk_receive(entry.sender, entry.seq, &envelope, &mut batch, report)? {
                            leaves.push(leave);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(seq = entry.seq, error = %e, "ignoring a mailbox message that is not a grove invitation")
                    }
                }
                after = entry.seq;
                self.store.commit(batch)?;
            }
            home.ack_mailbox(after).await?;
        }
        // Tree hygiene: a new member commits an update right away, so the group does not keep
        // the blank tree nodes that make everyone's commits large. The user's name waits until
        // the invitation is accepted.
        for link in report.joined.clone() {
            if let Err(e) = self.update(&link).await {
                tracing::warn!(room = link, error = %e, "post-join update failed; it will be retried by the next `grove room update`");
            }
        }
        self.sk_handle_leaves(leaves).await;
        Ok(())
    }

    async fn join(
        &mut self,
        link: &str,
        epoch: u64,
        seq: u64,
        welcome: &[u8],
    ) -> Result<(LocalRoom, Changes, Message)> {
        let (server_url, name) =
            parse_link(link).ok_or_else(|| ClientError::Invalid(format!("bad room link {link:?}")))?;
        if let Ok(existing) = self.room(link) {
            if existing.status == RoomStatus::Active {
                return Err(ClientError::Invalid(format!("already in {link}")));
            }
        }
        let server = self.server(&server_url);
        let tree = server.ratchet_tree_at(&name, epoch).await?;
        // Invited back after a removal or a leave: the old membership's group state goes (its
        // history stays); the new one starts at this invitation.
        let mut forgotten = Changes::default();
        let mut again = false;
        if let Ok(old) = self.room(link) {
            again = true;
            let engine = self.engine.get(&self.store, &self.identity)?;
            if let Ok(c) = engine.forget_group(&GroupId::new(old.group_id.clone())) {
                forgotten = c;
            }
        }
        let (gid, info, mut changes) =
            match self.engine.get(&self.store, &self.identity)?.join(welcome, &tree.ratchet_tree) {
                Ok(x) => x,
                Err(e) => {
                    // The forgotten group is gone from memory only: reload from the file.
                    self.engine.stale = true;
                    return Err(e.into());
                }
            };
        forgotten.merge(changes);
        changes = forgotten;
        let room = LocalRoom {
            link: link.to_string(),
            server: server_url,
            name,
            mode: RoomMode::Mls,
            group_id: gid.into_bytes(),
            cursor: seq,
            status: RoomStatus::Active,
        };
        let joined = Membership { joined: Some(info.members.len()), again, ..Membership::default() };
        let event = Message::membership(link, seq, self.user_id(), 0, &joined);
        Ok((room, changes, event))
    }

    /// Applies the room's new log entries, in order, persisting state, history and cursor per
    /// page in one transaction, then posts what waits in the room's outbox. Answers the room's
    /// status afterwards.
    pub async fn sync_room(&mut self, link: &str) -> Result<RoomStatus> {
        let _lock = self.lock().await?;
        let (status, _) = self.sync_room_locked(link).await?;
        if status == RoomStatus::Active {
            self.sk_deliver_quietly(link).await?;
            self.flush_room_quietly(link).await?;
        }
        Ok(self.room(link)?.status)
    }

    /// [`Profile::sync_room`] without the outbox, for callers holding the lock: reads the
    /// log page by page and hands each page to the room's protocol ([`crate::core`]),
    /// persisting what it answers in one transaction per page. Answers the status and the
    /// epoch or membership version the server reported.
    pub(super) async fn sync_room_locked(&mut self, link: &str) -> Result<(RoomStatus, u64)> {
        self.sync_room_from(link, None, None).await
    }

    /// [`Profile::sync_room_locked`] starting with a page read before the lock was taken (its
    /// entries at or before the cursor are skipped: another process applied them meanwhile),
    /// and stopping after entry `until` if given (then without the follow-ups: see
    /// `change_membership`).
    async fn sync_room_from(
        &mut self,
        link: &str,
        mut first: Option<LogPage>,
        until: Option<u64>,
    ) -> Result<(RoomStatus, u64)> {
        let room = self.room(link)?;
        if room.status != RoomStatus::Active {
            return Ok((room.status, 0));
        }
        let server = self.server(&room.server);
        let me = self.user_id();
        let mut cursor = room.cursor;
        let mut mailbox_read = false;
        let mut follow_up = FollowUp::default();
        // A page read before (a long poll's answer, pushed entries) says how far the server's
        // log went: once applied to there, this sync is done (the next poll or push goes on).
        let mut stop_at = None;
        let view = loop {
            if until.is_some_and(|u| cursor >= u) {
                break 0;
            }
            let fetched = match first.take() {
                Some(mut page) => {
                    stop_at = Some(page.head);
                    page.entries.retain(|e| e.seq > cursor);
                    if page.entries.is_empty() {
                        if page.head <= cursor {
                            // Another process applied all of it, and there was no more.
                            break page.epoch;
                        }
                        // Nothing new in it for us; the server holds more.
                        continue;
                    }
                    Ok(page)
                }
                None => {
                    let limit = until.map_or(PAGE, |u| u32::try_from(u - cursor).unwrap_or(PAGE).min(PAGE));
                    server.read_log(&room.name, cursor, limit, 0).await
                }
            };
            let page = match fetched {
                Ok(p) => p,
                Err(e) if e.code() == Some(ErrorCode::NotMember) => {
                    if self.removal_disputed(&room.link, cursor)? {
                        // The entry that removed us is a commit we could not process (and
                        // reported): if members prove it faulty, the server voids it and we are
                        // a member again. Not removed, then: a later sync reads on.
                        tracing::warn!(
                            room = room.link,
                            seq = cursor,
                            "the server says a commit this profile could not process removed it; waiting for its void"
                        );
                        return Ok((RoomStatus::Active, 0));
                    }
                    // Removed by an entry we have not seen (the server no longer lets us read).
                    let mut batch = self.room_protocol(room.mode)?.removed_unseen(&room);
                    // Say so in history, after the last entry this profile read.
                    let gone = Membership { removed_unseen: true, ..Membership::default() };
                    batch.messages.push(Message::membership(&room.link, cursor + 1, me, 0, &gone));
                    self.store.commit(batch)?;
                    return Ok((RoomStatus::Removed, 0));
                }
                Err(e) => return Err(e.into()),
            };
            if page.entries.is_empty() {
                break page.epoch;
            }
            let (page_epoch, page_head) = (page.epoch, page.head);
            let at = LocalRoom { cursor, ..room.clone() };
            let mut applied = self.room_protocol(room.mode)?.apply(&at, me, page.entries, mailbox_read)?;
            for (seq, ts, body) in std::mem::take(&mut applied.own) {
                self.settle_own_entry(&mut applied.batch, link, seq, ts, &body)?;
            }
            cursor = applied.cursor;
            applied.batch.cursors.push((room.link.clone(), cursor));
            if applied.status != RoomStatus::Active {
                applied.batch.statuses.push((room.link.clone(), applied.status));
            }
            // A page applied records what the server holds: a power loss that takes it takes
            // the cursor with it, and the page is read again (`ClientStore::commit_relaxed`).
            // Whatever this profile sends next is a durable commit, which syncs this one too.
            self.store.commit_relaxed(applied.batch)?;
            if applied.status != RoomStatus::Active {
                return Ok((applied.status, 0));
            }
            for report in std::mem::take(&mut applied.follow_up.reports) {
                report_fault(&server, &room.name, &report).await;
            }
            let mut resync = std::mem::take(&mut applied.follow_up.resync);
            if cursor < page_head {
                // Catching up: the members stuck behind these commits were offered a way back
                // in by those who read them first.
                resync.left.clear();
            }
            if resync != crate::core::ResyncFollowUp::default() {
                if let Some(seq) = self.resync_follow_up(&server, &room, resync).await? {
                    cursor = seq;
                }
            }
            follow_up.commit_proposals |= applied.follow_up.commit_proposals;
            follow_up.rotate |= applied.follow_up.rotate;
            if applied.follow_up.read_mailbox {
                mailbox_read = true;
                let mut report = SyncReport::default();
                Box::pin(self.sync_mailbox(&mut report)).await?;
            }
            if stop_at.is_some_and(|head| cursor >= head) {
                break page_epoch;
            }
        };
        if until.is_some() {
            return Ok((RoomStatus::Active, view));
        }
        if room.mode == RoomMode::Mls {
            // Resync requests and offers that could not reach the server before.
            if let Err(e) = self.retry_resync(&server, &room).await {
                tracing::warn!(room = link, error = %e, "posting resync requests or offers again failed");
            }
        }
        if follow_up.commit_proposals {
            // Someone proposed (e.g. to leave): commit it. Losing the race to another member
            // who commits it first is fine, and so is finding nothing left to commit.
            let updated = self.room(link)?;
            if updated.status == RoomStatus::Active {
                match Box::pin(self.change_membership(&updated, &Change::CommitProposals)).await {
                    Ok(_) | Err(ClientError::Busy(_)) | Err(ClientError::Engine(EngineError::NothingToCommit)) => {}
                    // Behind the room (a commit this profile cannot process): nothing to commit
                    // into; the sync itself went fine.
                    Err(ClientError::Behind { .. }) => {}
                    Err(ClientError::Engine(EngineError::LeaveProposed)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let room = self.room(link)?;
        if room.mode == RoomMode::SenderKeys && !self.store.records("sk/held/")?.is_empty() {
            // Messages whose sender key arrived since they were read: readable now.
            let released = self.room_protocol(room.mode)?.release_held(&room)?;
            self.store.commit(released)?;
        }
        if follow_up.rotate {
            if let Err(e) = Box::pin(self.sk_rotate(&room)).await {
                tracing::warn!(room = link, error = %e, "rotation after a removal failed; the next send rotates");
            }
        }
        Ok((RoomStatus::Active, view))
    }

    /// Whether the entry at `seq`, the last this profile read before the server stopped letting
    /// it read, is a commit it could not process: a removal it cannot verify (a poisoned commit
    /// may remove members, and be voided later).
    fn removal_disputed(&self, link: &str, seq: u64) -> Result<bool> {
        let line = self.store.messages(link, seq.saturating_sub(1))?.into_iter().next().filter(|m| m.seq == seq);
        Ok(line.is_some_and(|m| m.kind == crate::store::MessageKind::Undecryptable))
    }

    /// The body of one of the room's log entries, as the server holds it.
    pub async fn raw_entry(&self, key: &str, seq: u64) -> Result<Vec<u8>> {
        let room = self.room(key)?;
        let page = self.server(&room.server).read_log(&room.name, seq.saturating_sub(1), 1, 0).await?;
        page.entries
            .into_iter()
            .find(|e| e.seq == seq)
            .map(|e| e.body)
            .ok_or_else(|| ClientError::Invalid(format!("no entry {seq} in {}", room.link)))
    }

    /// Tries to decrypt an application message with the profile's current group state, without
    /// persisting anything: afterwards the engine is rebuilt from the state file, so it and the
    /// file agree again (the engine's journal must not run ahead of the file's).
    pub fn decrypt_entry(&mut self, key: &str, body: &[u8]) -> Result<Vec<u8>> {
        self.refresh()?;
        let room = self.room(key)?;
        let outcome = self.room_protocol(room.mode)?.peek(&room, body);
        self.data_version = self.store.data_version()?;
        self.engine.stale = true;
        outcome
    }

    /// Waits up to `wait` seconds for something new in the room (holding no lock), then syncs
    /// it.
    pub async fn wait_and_sync(&mut self, key: &str, wait: u64) -> Result<RoomStatus> {
        let room = self.active_room(key)?;
        let server = self.server(&room.server);
        // The long-poll's answer is the first page: read without the lock, so a follower holds
        // the lock only to apply what came (what other processes applied meanwhile is skipped).
        let first = match server.read_log(&room.name, room.cursor, PAGE, wait).await {
            Ok(page) => Some(page),
            Err(e) if e.code() == Some(ErrorCode::NotMember) => None,
            Err(e) => return Err(e.into()),
        };
        let _lock = self.lock().await?;
        let (status, _) = self.sync_room_from(&room.link, first, None).await?;
        if status == RoomStatus::Active {
            self.flush_room_quietly(&room.link).await?;
        }
        Ok(self.room(&room.link)?.status)
    }

    /// Applies entries the push client handed over ([`crate::push::Feed::Entries`]) for the
    /// room `name` on `server` (public URL), then posts what waits in its outbox. Entries this
    /// profile already has (another process applied them) are skipped; if they do not follow
    /// on from what it has, the room is read from the server instead, so nothing is missed.
    /// Answers the room's link and status, or `None` for a room the profile does not have.
    pub async fn apply_pushed(
        &mut self,
        server: &str,
        name: &str,
        entries: Vec<grove_wire::api::Entry>,
    ) -> Result<Option<(String, RoomStatus)>> {
        let link = room_link(server, name);
        let Ok(room) = self.room(&link) else { return Ok(None) };
        let _lock = self.lock().await?;
        let room = self.room(&room.link)?;
        if room.status != RoomStatus::Active {
            return Ok(Some((room.link, room.status)));
        }
        let head = entries.last().map(|e| e.seq).unwrap_or(0);
        let follows_on = entries.iter().find(|e| e.seq > room.cursor).is_none_or(|e| e.seq == room.cursor + 1);
        let (status, _) = if follows_on {
            self.sync_room_from(&room.link, Some(LogPage { entries, head, epoch: 0 }), None).await?
        } else {
            self.sync_room_locked(&room.link).await?
        };
        if status == RoomStatus::Active {
            self.flush_room_quietly(&room.link).await?;
        }
        Ok(Some((room.link.clone(), self.room(&room.link)?.status)))
    }

    /// Reads the mailbox (joining rooms from invitations, taking sender keys), as [`Profile::sync`]
    /// does first; for a push client's [`crate::push::Feed::Mail`].
    pub async fn receive_mail(&mut self) -> Result<SyncReport> {
        let _lock = self.lock().await?;
        let mut report = SyncReport::default();
        self.sync_mailbox(&mut report).await?;
        self.accept_asked(&report.joined);
        Ok(report)
    }

    /// The request handle for a server's public URL (after `--connect-to`), e.g. for the push
    /// client.
    pub fn server_for(&self, public: &str) -> Server {
        self.server(public)
    }

    /// The last `limit` lines of a room's history before `before` (all if `None`), in order:
    /// history is read a screen at a time, never held whole.
    pub fn messages_before(&self, key: &str, before: Option<u64>, limit: usize) -> Result<Vec<Message>> {
        let room = self.room(key)?;
        Ok(self.store.messages_before(&room.link, before.unwrap_or(u64::MAX), limit)?)
    }

    /// The last mailbox message this profile read (for a push client's subscription).
    pub fn mailbox_cursor(&self) -> Result<u64> {
        Ok(self.store.mailbox_cursor()?)
    }

    /// How many messages wait in the outbox of a room (`None`: of every room).
    pub fn outbox_len(&self, key: Option<&str>) -> Result<usize> {
        let link = match key {
            Some(k) => Some(self.room(k)?.link),
            None => None,
        };
        Ok(self.store.outbox(link.as_deref())?.len())
    }

    async fn flush_room_quietly(&mut self, link: &str) -> Result<()> {
        let room = self.room(link)?;
        if let Err(e) = self.flush_room(&room).await {
            tracing::warn!(room = link, error = %e, "the outbox could not be posted yet");
        }
        Ok(())
    }
}

/// The MLS engine, reloaded from the state file on first use after another process wrote.
struct EngineSlot {
    engine: MlsEngine,
    stale: bool,
}

impl EngineSlot {
    fn new(engine: MlsEngine) -> EngineSlot {
        EngineSlot { engine, stale: false }
    }

    /// The engine, as fresh as the state file.
    fn get(&mut self, store: &ClientStore, identity: &Identity) -> Result<&mut MlsEngine> {
        if self.stale {
            self.engine = load_engine(store, identity)?;
            self.stale = false;
        }
        Ok(&mut self.engine)
    }
}

/// Creates the profile folder private to its owner (0700, and so any parent it creates), or
/// tightens an existing one that others can enter, with a warning.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            return std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        }
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(folder = %dir.display(), "the profile folder was open to others; it is now private (0700)");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// The engine as the state file holds it.
fn load_engine(store: &ClientStore, identity: &Identity) -> Result<MlsEngine> {
    Ok(MlsEngine::load_with_rng(identity.clone(), store.engine_state()?, rand::rngs::OsRng)?.with_clock(unix_seconds))
}

/// The engine's clock: the client is where the system clock is read.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn identity_from(secret: &[u8]) -> Result<Identity> {
    let secret =
        <[u8; 32]>::try_from(secret).map_err(|_| ClientError::Invalid("the stored identity is corrupt".into()))?;
    Ok(Identity::from_secret_bytes(secret))
}

/// The history line of a membership change `by` made.
/// Tells the room's server that this member cannot process the commit `report` names. The
/// answer changes nothing here: a void it leads to comes as an entry of the log. A report that
/// does not reach the server is not retried (the member stays behind, as without reports).
async fn report_fault(server: &Server, room: &str, report: &grove_wire::api::FaultReport) {
    match server.report_fault(room, report).await {
        Ok(outcome) => tracing::warn!(
            room,
            seq = report.seq,
            proof = report.membership_key.is_some(),
            reports = outcome.reports,
            agreeing = outcome.agreeing,
            voided_by = ?outcome.void_seq,
            "reported a commit this member cannot process"
        ),
        Err(e) => tracing::warn!(room, seq = report.seq, error = %e, "the report of a faulty commit failed"),
    }
}

/// The history line of a membership or policy change made by `by`: who it added and removed,
/// and what it changed of the room's policy (`before`, `after`).
pub(crate) fn describe(
    link: &str,
    (seq, ts): (u64, i64),
    by: UserId,
    (added, removed): (&[UserId], &[UserId]),
    before: Option<&RoomPolicy>,
    after: Option<&RoomPolicy>,
) -> Message {
    let change = Membership { added: added.to_vec(), removed: removed.to_vec(), ..Membership::default() }
        .with_policy_change(before, after);
    Message::membership(link, seq, by, ts, &change)
}
