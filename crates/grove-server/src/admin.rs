//! The operator's commands (`grove admin`): list rooms and users, show and delete a room, block
//! and unblock a key, statistics.
//!
//! One implementation, [`execute`], over an [`AppState`], reached two ways:
//!
//! - **a running server** listens on a Unix socket in its data folder, `admin.sock`, created
//!   owner-only (0600, in the 0700 folder): only the account the server runs as (and root) can
//!   connect, which is the whole authentication. One JSON request per line, one JSON answer per
//!   line ([`AdminRequest`], [`AdminReply`]). With several instances on PostgreSQL each has its
//!   own socket; a command sent to any one acts on the shared database, and the others follow
//!   (room deletions through the store's announcements, blocks within [`BLOCKLIST_REFRESH`]).
//! - **no server running**: the command opens the data folder's database itself
//!   ([`crate::open`]) and runs the same [`execute`].
//!
//! Every command that changes something is logged (`tracing`, target `grove::admin`) and
//! appended to `admin.log` in the data folder (JSON lines, 0600), whichever way it came.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use grove_wire::UserId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::config::Config;
use crate::state::AppState;

/// How often a running server re-reads the blocked keys from the store (for blocks made
/// through another instance on the same PostgreSQL database).
pub const BLOCKLIST_REFRESH: Duration = Duration::from_secs(5);

/// The longest request line the socket reads.
const MAX_REQUEST: usize = 64 * 1024;

/// The socket of the running server whose data folder `config` names.
pub fn socket_path(config: &Config) -> PathBuf {
    config.server.data_dir.join("admin.sock")
}

/// A command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Every room.
    Rooms,
    /// One room, with its members.
    Room {
        /// Its name.
        name: String,
    },
    /// Stop hosting a room: its log, state and attachments are deleted.
    DeleteRoom {
        /// Its name.
        name: String,
    },
    /// Every key the server knows.
    Users,
    /// Refuse every request signed by a key, and deposits to its mailbox.
    Block {
        /// The user id (64 hex characters).
        user: String,
    },
    /// Lift a block.
    Unblock {
        /// The user id.
        user: String,
    },
    /// Totals.
    Stats,
}

impl AdminRequest {
    fn changes_something(&self) -> bool {
        matches!(self, AdminRequest::DeleteRoom { .. } | AdminRequest::Block { .. } | AdminRequest::Unblock { .. })
    }
}

/// A room as `grove admin rooms` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRow {
    /// Name.
    pub name: String,
    /// `mls` or `sender-keys`.
    pub mode: String,
    /// Listed publicly.
    pub public: bool,
    /// Current members.
    pub members: usize,
    /// Entries in its log (its head).
    pub entries: u64,
    /// Bytes of those entries' bodies.
    pub bytes: u64,
    /// Last entry (or creation), Unix ms.
    pub last_activity: i64,
}

/// One room in detail (`grove admin room show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDetail {
    /// The overview.
    #[serde(flatten)]
    pub row: RoomRow,
    /// Creator.
    pub created_by: String,
    /// Creation, Unix ms.
    pub created_at: i64,
    /// Epoch (MLS) or membership version (sender-keys).
    pub epoch: u64,
    /// Member user ids.
    pub member_ids: Vec<String>,
    /// Admin user ids (sender-keys rooms).
    pub admin_ids: Vec<String>,
}

/// A user as `grove admin users` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    /// User id.
    pub user: String,
    /// Rooms they are a member of.
    pub rooms: u64,
    /// Messages waiting in their mailbox.
    pub mailbox_messages: u64,
    /// Bytes of those.
    pub mailbox_bytes: u64,
    /// Key-directory items they published.
    pub key_items: u64,
    /// Blocked by the operator.
    pub blocked: bool,
}

/// Totals (`grove admin stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Rooms.
    pub rooms: u64,
    /// Entries in every log.
    pub entries: u64,
    /// Bytes of their bodies.
    pub entry_bytes: u64,
    /// Keys known (members, mailbox owners, key publishers, blocked).
    pub users: u64,
    /// Mailbox messages waiting.
    pub mailbox_messages: u64,
    /// Bytes of those.
    pub mailbox_bytes: u64,
    /// Key-directory items.
    pub key_items: u64,
    /// Attachment blobs (complete or not).
    pub files: u64,
    /// Their declared bytes.
    pub file_bytes: u64,
    /// Blocked keys.
    pub blocked: u64,
    /// Bytes the store can still take, if it can tell.
    pub headroom_bytes: Option<u64>,
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum AdminAnswer {
    /// `rooms`.
    Rooms {
        /// By name.
        rooms: Vec<RoomRow>,
    },
    /// `room show`.
    Room {
        /// The room.
        room: RoomDetail,
    },
    /// `room delete`.
    Deleted {
        /// The room's name.
        name: String,
        /// Entries deleted.
        entries: u64,
        /// Attachment blobs deleted.
        files: u64,
    },
    /// `users`.
    Users {
        /// By user id.
        users: Vec<UserRow>,
    },
    /// `block` / `unblock`.
    Block {
        /// The user.
        user: String,
        /// Blocked now.
        blocked: bool,
        /// Whether that changed anything.
        changed: bool,
    },
    /// `stats`.
    Stats {
        /// The totals.
        stats: Stats,
    },
}

/// The answer on the socket: the command's, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminReply {
    /// Done.
    Ok(AdminAnswer),
    /// Not done, and why (for the operator).
    Error(String),
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The command cannot be done as asked (no such room, not a user id).
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] grove_store::StoreError),
    /// The socket or the data folder could not be used.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not be opened (no server running, direct mode).
    #[error(transparent)]
    Open(#[from] crate::OpenError),
}

/// The keys the operator blocked, as this instance knows them.
#[derive(Debug)]
pub(crate) struct Blocklist {
    keys: RwLock<HashSet<UserId>>,
    /// Bumped whenever a key is blocked: open push connections look whether it is theirs.
    changed: watch::Sender<u64>,
}

impl Default for Blocklist {
    fn default() -> Self {
        Blocklist { keys: RwLock::default(), changed: watch::channel(0).0 }
    }
}

impl Blocklist {
    /// A receiver that wakes when a key is blocked.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn contains(&self, user: &UserId) -> bool {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).contains(user)
    }

    fn set(&self, user: UserId, blocked: bool) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if blocked {
            keys.insert(user);
        } else {
            keys.remove(&user);
        }
        drop(keys);
        if blocked {
            self.changed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    fn replace(&self, users: Vec<UserId>) {
        let fresh: HashSet<UserId> = users.into_iter().collect();
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let more = fresh.iter().any(|u| !keys.contains(u));
        *keys = fresh;
        drop(keys);
        if more {
            self.changed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

impl AppState {
    /// Reads the keys the operator blocked from the store (`open` and `run` do; a state built
    /// with [`AppState::new`] starts with none until this is called).
    pub async fn reload_blocklist(&self) -> Result<(), grove_store::StoreError> {
        load_blocklist(self).await
    }
}

/// Reads the blocked keys from the store into the state.
pub(crate) async fn load_blocklist(state: &AppState) -> Result<(), grove_store::StoreError> {
    let users = state.0.store.blocked_users().await?;
    state.0.blocked.replace(users);
    Ok(())
}

fn parse_user(s: &str) -> Result<UserId, AdminError> {
    s.parse().map_err(|_| AdminError::Refused(format!("{s:?} is not a user id (64 hex characters)")))
}

fn row(o: &grove_store::RoomOverview) -> RoomRow {
    RoomRow {
        name: o.room.name.clone(),
        mode: o.room.mode.as_str().to_string(),
        public: o.room.public,
        members: o.room.members.len(),
        entries: o.room.head,
        bytes: o.bytes,
        last_activity: o.last_activity,
    }
}

/// Runs a command on `state`'s store (and, for a running server, its in-memory state), logging
/// it if it changes something.
pub async fn execute(state: &AppState, req: AdminRequest) -> Result<AdminAnswer, AdminError> {
    let answer = run(state, &req).await;
    if req.changes_something() {
        audit(state, &req, &answer);
    }
    answer
}

async fn run(state: &AppState, req: &AdminRequest) -> Result<AdminAnswer, AdminError> {
    let store = &state.0.store;
    match req {
        AdminRequest::Rooms => {
            Ok(AdminAnswer::Rooms { rooms: store.rooms_overview().await?.iter().map(row).collect() })
        }
        AdminRequest::Room { name } => {
            let all = store.rooms_overview().await?;
            let o = all
                .iter()
                .find(|o| o.room.name == *name)
                .ok_or_else(|| AdminError::Refused(format!("no room named {name:?} on this server")))?;
            Ok(AdminAnswer::Room {
                room: RoomDetail {
                    row: row(o),
                    created_by: o.room.created_by.to_string(),
                    created_at: o.room.created_at,
                    epoch: o.room.epoch,
                    member_ids: o.room.members.iter().map(UserId::to_string).collect(),
                    admin_ids: o.room.admins.iter().map(UserId::to_string).collect(),
                },
            })
        }
        AdminRequest::DeleteRoom { name } => {
            let deleted = store
                .delete_room(name)
                .await?
                .ok_or_else(|| AdminError::Refused(format!("no room named {name:?} on this server")))?;
            state.0.rooms.forget(name);
            let mut files = 0;
            if !deleted.files.is_empty() {
                let objects = state.0.files.objects(state).map_err(|e| AdminError::Refused(e.to_string()))?;
                for f in &deleted.files {
                    if crate::files::delete_parts(&objects, f).await {
                        files += 1;
                    }
                }
                crate::files::refresh_totals(state).await;
            }
            Ok(AdminAnswer::Deleted { name: name.clone(), entries: deleted.entries, files })
        }
        AdminRequest::Users => Ok(AdminAnswer::Users { users: users(state).await?.into_values().collect() }),
        AdminRequest::Block { user } | AdminRequest::Unblock { user } => {
            let id = parse_user(user)?;
            let blocked = matches!(req, AdminRequest::Block { .. });
            let changed = store.set_blocked(&id, blocked, state.now()).await?;
            state.0.blocked.set(id, blocked);
            Ok(AdminAnswer::Block { user: id.to_string(), blocked, changed })
        }
        AdminRequest::Stats => {
            let rooms = store.rooms_overview().await?;
            let users = users(state).await?;
            let files = store.file_totals().await?;
            Ok(AdminAnswer::Stats {
                stats: Stats {
                    rooms: rooms.len() as u64,
                    entries: rooms.iter().map(|r| r.room.head).sum(),
                    entry_bytes: rooms.iter().map(|r| r.bytes).sum(),
                    users: users.len() as u64,
                    mailbox_messages: users.values().map(|u| u.mailbox_messages).sum(),
                    mailbox_bytes: users.values().map(|u| u.mailbox_bytes).sum(),
                    key_items: users.values().map(|u| u.key_items).sum(),
                    files: files.files,
                    file_bytes: files.bytes,
                    blocked: users.values().filter(|u| u.blocked).count() as u64,
                    headroom_bytes: store.headroom().await?,
                },
            })
        }
    }
}

/// Every key the store knows of: room members and creators, mailbox owners, key publishers,
/// blocked keys.
async fn users(state: &AppState) -> Result<BTreeMap<UserId, UserRow>, AdminError> {
    let store = &state.0.store;
    let mut out: BTreeMap<UserId, UserRow> = BTreeMap::new();
    let blank = |u: &UserId| UserRow {
        user: u.to_string(),
        rooms: 0,
        mailbox_messages: 0,
        mailbox_bytes: 0,
        key_items: 0,
        blocked: false,
    };
    for o in store.rooms_overview().await? {
        for m in &o.room.members {
            out.entry(*m).or_insert_with(|| blank(m)).rooms += 1;
        }
        out.entry(o.room.created_by).or_insert_with(|| blank(&o.room.created_by));
    }
    for u in store.users_usage().await? {
        let r = out.entry(u.user).or_insert_with(|| blank(&u.user));
        r.mailbox_messages = u.mailbox_messages;
        r.mailbox_bytes = u.mailbox_bytes;
        r.key_items = u.key_items;
    }
    for b in store.blocked_users().await? {
        out.entry(b).or_insert_with(|| blank(&b)).blocked = true;
    }
    Ok(out)
}

/// Logs a command that changes something, and appends it to `admin.log`.
fn audit(state: &AppState, req: &AdminRequest, answer: &Result<AdminAnswer, AdminError>) {
    let outcome = match answer {
        Ok(a) => serde_json::to_value(a).unwrap_or(serde_json::Value::Null),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    let request = serde_json::to_value(req).unwrap_or(serde_json::Value::Null);
    match answer {
        Ok(_) => tracing::info!(target: "grove::admin", %request, %outcome, "admin command"),
        Err(_) => tracing::warn!(target: "grove::admin", %request, %outcome, "admin command failed"),
    }
    let line = serde_json::json!({ "ts": state.now(), "request": request, "outcome": outcome });
    let path = state.0.config.server.data_dir.join("admin.log");
    if let Err(e) = append_line(&path, &line.to_string()) {
        tracing::warn!(target: "grove::admin", path = %path.display(), error = %e, "cannot append to the admin log");
    }
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    writeln!(f, "{line}")?;
    f.sync_data()
}

// ------------------------------------------------------------------ the socket

/// Listens on [`socket_path`] until shutdown, answering one command per line. A stale socket
/// file (left by a server that was killed) is replaced; one that a live server answers on is
/// not (then this server runs without one, with a warning).
#[cfg(unix)]
pub(crate) async fn serve_socket(state: AppState) {
    let path = socket_path(&state.0.config);
    let listener = match bind(&path).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no admin socket: grove admin acts on the database directly");
            return;
        }
    };
    tracing::info!(path = %path.display(), "admin socket listening");
    let mut stop = state.0.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    tokio::spawn(answer(state.clone(), conn));
                }
                Err(e) => tracing::warn!(error = %e, "admin socket accept failed"),
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

#[cfg(unix)]
async fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another server answers on it"));
        }
        std::fs::remove_file(path)?;
    }
    // Bound with a umask-independent mode: the folder is 0700 already, and the socket is
    // narrowed to 0600 before anything can act on it.
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(unix)]
async fn answer(state: AppState, conn: tokio::net::UnixStream) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(req) => match execute(&state, req).await {
                Ok(a) => AdminReply::Ok(a),
                Err(e) => AdminReply::Error(e.to_string()),
            },
            Err(e) => AdminReply::Error(format!("not an admin request: {e}")),
        };
        let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"error\":\"unencodable answer\"}".into());
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sends `req` to the server running on `config`'s data folder; `Ok(None)` when none answers
/// there (no socket, or a stale one).
#[cfg(unix)]
pub async fn request(config: &Config, req: &AdminRequest) -> Result<Option<AdminReply>, AdminError> {
    let path = socket_path(config);
    let io = |context: &'static str| {
        let path = path.clone();
        move |source| AdminError::Io { context, path, source }
    };
    let conn = match tokio::net::UnixStream::connect(&path).await {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) => return Err(io("cannot reach the server's admin socket")(e)),
    };
    let (read, mut write) = conn.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| AdminError::Refused(e.to_string()))?;
    line.push('\n');
    write.write_all(line.as_bytes()).await.map_err(io("cannot write to"))?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await
        .map_err(io("cannot read from"))?
        .ok_or_else(|| AdminError::Refused("the server closed the admin socket without answering".into()))?;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| AdminError::Refused(format!("the server's answer does not decode: {e}")))
}

/// Runs `req` on the server of `config`: through its admin socket if it is running, else on
/// its database directly. Answers whether a running server did it.
pub async fn run_command(config: Config, req: AdminRequest) -> Result<(AdminAnswer, bool), AdminError> {
    #[cfg(unix)]
    if let Some(reply) = request(&config, &req).await? {
        return match reply {
            AdminReply::Ok(a) => Ok((a, true)),
            AdminReply::Error(e) => Err(AdminError::Refused(e)),
        };
    }
    if config.server.database == "sqlite" && !config.server.data_dir.join("grove.db").exists() {
        return Err(AdminError::Refused(format!(
            "no grove database in {}: pass the server's data folder with --data (or its --config)",
            config.server.data_dir.display()
        )));
    }
    let state = crate::open(config).await?;
    let answer = execute(&state, req).await;
    state.0.shutdown.send_replace(true);
    answer.map(|a| (a, false))
}
