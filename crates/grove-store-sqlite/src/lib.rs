//! grove-store-sqlite: the embedded default [`Store`] backend, one SQLite file.
//!
//! [`SqliteStore`] keeps rooms, room logs, mailboxes and the key directory in a single SQLite
//! database (bundled SQLite through `rusqlite`), in WAL mode. It passes the `grove-store`
//! conformance suite: the same semantics as [`grove_store::MemoryStore`], but durable.
//!
//! # Writes: one thread, group commit
//!
//! Every write (`create_room`, `append`, `deposit`, `mailbox_ack`, `purge_expired`,
//! `publish_keys`, `claim_key`) is sent over a bounded channel to one dedicated OS thread that
//! owns the only writing connection. The thread waits for an op, then takes whatever else is
//! queued (up to 1,000 ops) and runs the whole group in **one** `BEGIN IMMEDIATE … COMMIT`,
//! so many concurrent writers share one fsync. Callers are answered only after `COMMIT`
//! returned. Each op runs under its own `SAVEPOINT` and decides its outcome (`Conflict`,
//! `NameTaken`, `LimitReached`, `Full`) by reading inside the transaction before writing, so one
//! op's refusal or failure never affects the others in its group; if the group's `COMMIT` fails,
//! every op in it gets [`StoreError::Backend`]. Room heads, epochs and state versions live in
//! the `rooms` table and are read inside the transaction (nothing is cached across
//! transactions), so the ordering invariants hold even if another process writes the same file.
//! [`SqliteStore::stats`] reports how many transactions and ops the writer committed.
//!
//! # Durability
//!
//! An `Ok` from a write means the write survives `kill -9` **and** power loss. In WAL mode that
//! requires `PRAGMA synchronous = FULL`, which fsyncs the WAL at every commit; with `NORMAL` the
//! WAL is only synced at checkpoints, so a commit survives a process crash but the last commits
//! can be lost when the machine loses power. [`Synchronous::Full`] is therefore the default
//! (it also turns on `fullfsync`, which matters on macOS); [`Synchronous::Normal`] and
//! [`Synchronous::Off`] exist so that benchmarks can measure the cost. Group commit is what
//! makes `FULL` affordable: one fsync per group, not per write. When the store is dropped (or
//! [`SqliteStore::close`]d) the writer thread finishes every op already queued and exits.
//!
//! # Reads
//!
//! Reads (`room`, `public_rooms`, `read`, `removal`, `mailbox_read`, `key_counts`) use a small
//! pool of read-only connections inside `tokio::task::spawn_blocking`, so they never wait
//! behind the writer; WAL readers see every committed (hence every acknowledged) write. Every read returns
//! at most its `limit` rows. Statements are prepared once per connection and cached.
//!
//! # Schema
//!
//! Numbered migrations in `migrations/NNNN_*.sql`, embedded in the binary, are applied at
//! [`SqliteStore::open`] in order, each in its own transaction, tracked with
//! `PRAGMA user_version`. A database whose version is newer than this build knows is refused.
//! Stored data that does not decode (an unknown kind string, a user id that is not 32 bytes)
//! is reported as [`StoreError::Corrupt`], never a panic.
//!
//! # What it does not do
//!
//! It does not interpret entries (validation is the server's job), it does not encrypt at rest
//! (bodies are end-to-end ciphertext already; metadata is not hidden from whoever holds the
//! file), it does not back up, replicate or vacuum, and it never deletes room entries. It is
//! meant for one server process per file; several processes on one file are correct (SQLite
//! serialises their writers) but do not share a group commit.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use files::FileOp;
use grove_store::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, MailboxQuota, NewEntry, NewMail, NewRoom, PublishOutcome,
    Removal, Result, RoomId, RoomRecord, Store, StoreError,
};
use grove_store::{CreateFileOutcome, FilePartOutcome, FileQuota, FileRecord, FileTotals, NewFile};
use grove_wire::api::{ClaimedKey, Entry, KeyCount, KeyItemUpload, KeyKind, MailboxEntry};
use grove_wire::attachment::BlobId;
use grove_wire::UserId;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

mod admin;
mod codec;
mod files;
mod joins;
mod reports;
mod writer;

use codec::{
    cursor_to_db, db_err, entry_from_row, key_counts, limit_to_db, mail_from_row, room_from_row, ROOM_COLUMNS,
};
use writer::{Counters, Op, Reply};

/// The schema migrations, in order; migration `i` (0-based) brings `user_version` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_room_states.sql"),
    include_str!("../migrations/0003_files.sql"),
    include_str!("../migrations/0004_removals.sql"),
    include_str!("../migrations/0005_blocked.sql"),
    include_str!("../migrations/0006_joins.sql"),
    include_str!("../migrations/0007_fault_reports.sql"),
    include_str!("../migrations/0008_link_group_infos.sql"),
    include_str!("../migrations/0009_file_parts.sql"),
];

/// How many read-only connections the read pool holds.
const READ_CONNECTIONS: usize = 4;

/// How many ops may wait for the writer before senders wait (asynchronously) too.
const QUEUE_CAPACITY: usize = 8 * writer::MAX_BATCH;

/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 64;

/// SQLite's `PRAGMA synchronous` for the writer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Synchronous {
    /// fsync the WAL at every commit: acknowledged writes survive power loss. The default.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash, may lose the last commits on
    /// power loss. For benchmarks.
    Normal,
    /// Never fsync: may lose or corrupt data on power loss. For benchmarks.
    Off,
}

impl Synchronous {
    /// `full`, `normal` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
            Synchronous::Off => "off",
        }
    }

    /// Inverse of [`Synchronous::as_str`] (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Some(Synchronous::Full),
            "normal" => Some(Synchronous::Normal),
            "off" => Some(Synchronous::Off),
            _ => None,
        }
    }
}

/// Options for [`SqliteStore::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteOptions {
    /// Durability of commits; [`Synchronous::Full`] unless benchmarking.
    pub synchronous: Synchronous,
    /// A cap on the database's size, in bytes (SQLite's `max_page_count`, rounded down to
    /// whole pages); `None`: as large as the disk allows. A write past the cap fails with
    /// [`StoreError::Full`], as it would on a full disk.
    pub max_bytes: Option<u64>,
}

/// What the writer thread has committed since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Committed transactions (groups).
    pub transactions: u64,
    /// Ops in those transactions; `ops / transactions` is the mean group size.
    pub ops: u64,
}

/// The SQLite [`Store`]. See the [crate documentation](crate).
pub struct SqliteStore {
    path: PathBuf,
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<ReadPool>,
    counters: Arc<Counters>,
    /// The page cap set on the writer (`max_page_count`), if any.
    max_pages: Option<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// Creates the database file readable by its owner only (0600; SQLite gives its `-wal` and
/// `-shm` files the same mode), or tightens an existing one that others can read, with a
/// warning.
fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = std::path::PathBuf::from(name);
            let Ok(meta) = std::fs::metadata(&file) else { continue };
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %file.display(), "the database was readable by other users; it is now private (0600)");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating the file and its parent folder if missing) the database at `path`,
    /// applies pending migrations and starts the writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let unavailable =
            |what: &str, e: &dyn std::fmt::Display| StoreError::unavailable(format!("{what} {}: {e}", path.display()));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| unavailable("cannot create the folder of", &e))?;
        }
        private_file(path).map_err(|e| unavailable("cannot make private", &e))?;
        let mut conn = Connection::open(path).map_err(|e| unavailable("cannot open", &e))?;
        configure_writer(&conn, options)?;
        migrate(&mut conn)?;
        let max_pages = cap_pages(&conn, options.max_bytes)?;
        sync_parent_dir(path);

        let mut readers = Vec::with_capacity(READ_CONNECTIONS);
        for _ in 0..READ_CONNECTIONS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(|e| unavailable("cannot open a reader of", &e))?;
            r.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
            r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            readers.push(r);
        }

        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let thread_counters = counters.clone();
        let answers = writer::Answers::on_current_runtime();
        let writer = std::thread::Builder::new()
            .name("grove-sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, thread_counters, answers))
            .map_err(|e| StoreError::unavailable(format!("cannot start the writer thread: {e}")))?;

        Ok(SqliteStore {
            path: path.to_path_buf(),
            tx: Some(tx),
            writer: Some(writer),
            readers: Arc::new(ReadPool { conns: Mutex::new(readers), available: Condvar::new() }),
            counters,
            max_pages,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has committed so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            ops: self.counters.ops.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting writes, lets the writer finish every op already queued, and waits for it.
    /// Dropping the store does the same; `close` also reports a writer thread that panicked.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        // Closing the channel makes the writer exit once the queue is empty.
        drop(self.tx.take());
        match self.writer.take() {
            Some(handle) => handle.join().map_err(|_| StoreError::backend("the sqlite writer thread panicked")),
            None => Ok(()),
        }
    }

    /// Sends a write to the writer thread and waits for its committed result.
    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T> {
        let stopped = || StoreError::unavailable("the sqlite writer has stopped");
        let sender = self.tx.as_ref().ok_or_else(stopped)?;
        let (reply, answer) = oneshot::channel();
        sender.send(make(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs a read on a pooled read-only connection on the blocking pool.
    async fn read_with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let lease = pool.get()?;
            f(lease.conn()?)
        })
        .await
        .map_err(|e| StoreError::backend(format!("read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("closing {}: {e}", self.path.display());
        }
    }
}

fn configure_writer(conn: &Connection, options: SqliteOptions) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::unavailable(format!("cannot use WAL mode (journal_mode is {mode})")));
    }
    conn.pragma_update(None, "synchronous", options.synchronous.as_str()).map_err(db_err)?;
    // On macOS a plain fsync does not flush the drive's cache; F_FULLFSYNC does. No-op elsewhere.
    let full = options.synchronous == Synchronous::Full;
    conn.pragma_update(None, "fullfsync", full).map_err(db_err)?;
    // Savepoint sub-journals and temporary indexes stay in memory.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(db_err)?;
    Ok(())
}

/// Copies the database at `db` into a new file `to`, consistent as of one instant, while the
/// database may be in use: another process (a running server) keeps reading and writing, since
/// the copy is one read transaction of SQLite's `VACUUM INTO` on a connection of its own (WAL
/// readers do not block the writer). Everything committed before the copy began is in it. The
/// copy is made private (0600) and fsynced; `to` must not exist.
pub fn backup(db: &Path, to: &Path) -> Result<(), StoreError> {
    if to.exists() {
        return Err(StoreError::backend(format!("{} exists already: back up to a new file", to.display())));
    }
    if !db.exists() {
        return Err(StoreError::unavailable(format!("no database at {}", db.display())));
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::unavailable(format!("cannot open {}: {e}", db.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // Created private first, so that the copy is never readable by others, even for a moment;
    // VACUUM INTO refuses an existing non-empty file only, and writes into this empty one.
    private_file(to).map_err(|e| StoreError::backend(format!("cannot create {}: {e}", to.display())))?;
    let target = to.to_str().ok_or_else(|| StoreError::backend(format!("{} is not UTF-8", to.display())))?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(db_err)?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::backend(format!("cannot sync {}: {e}", to.display())))?;
    sync_parent_dir(to);
    Ok(())
}

/// Sets the writer's page cap for `max_bytes` (after the migrations, which must not be capped
/// out of a database that grew past a lowered cap); answers the cap in pages.
fn cap_pages(conn: &Connection, max_bytes: Option<u64>) -> Result<Option<u64>> {
    let Some(max_bytes) = max_bytes else { return Ok(None) };
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).map_err(db_err)?;
    let pages = max_bytes / u64::try_from(page_size.max(1)).unwrap_or(4096);
    let pages = i64::try_from(pages.max(1)).unwrap_or(i64::MAX);
    // SQLite never sets the cap below the current size; it answers the cap in force.
    let set: i64 = conn.pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0)).map_err(db_err)?;
    Ok(Some(u64::try_from(set).unwrap_or(0)))
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
#[cfg(unix)]
fn filesystem_free(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(unix))]
fn filesystem_free(_path: &Path) -> Option<u64> {
    None
}

/// Applies pending migrations, each in its own transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let latest = MIGRATIONS.len() as i64;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        // Read inside the write transaction: another process may be migrating the same file.
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db_err)?;
        if version == latest {
            return tx.commit().map_err(db_err);
        }
        let next = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)).ok_or_else(|| {
            StoreError::unavailable(format!(
                "database schema version {version} is not one this build knows (0..={latest})"
            ))
        })?;
        tx.execute_batch(next).map_err(db_err)?;
        tx.pragma_update(None, "user_version", version + 1).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        tracing::info!("sqlite schema migrated to version {}", version + 1);
    }
}

/// Makes the database file's directory entry durable (a new file's name lives in its folder).
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Err(e) = std::fs::File::open(parent).and_then(|d| d.sync_all()) {
            tracing::warn!("cannot fsync {}: {e}", parent.display());
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Read-only connections, lent out one at a time.
struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    available: Condvar,
}

struct Lease<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl ReadPool {
    fn get(&self) -> Result<Lease<'_>> {
        let poisoned = || StoreError::backend("sqlite read pool lock poisoned");
        let mut conns = self.conns.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(conn) = conns.pop() {
                return Ok(Lease { pool: self, conn: Some(conn) });
            }
            conns = self.available.wait(conns).map_err(|_| poisoned())?;
        }
    }
}

impl Lease<'_> {
    fn conn(&self) -> Result<&Connection> {
        self.conn.as_ref().ok_or_else(|| StoreError::backend("sqlite read connection already returned"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // A poisoned lock only means another reader panicked; the vector is still valid.
            let mut conns = self.pool.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.push(conn);
            drop(conns);
            self.pool.available.notify_one();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_room(&self, room: NewRoom, max_per_creator: u64) -> Result<CreateRoomOutcome> {
        self.write(|r| Op::CreateRoom(room, max_per_creator, r)).await
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>> {
        let name = name.to_owned();
        self.read_with(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = ?1")).map_err(db_err)?;
            let mut rows = stmt.query([&name]).map_err(db_err)?;
            match rows.next().map_err(db_err)? {
                Some(row) => room_from_row(row).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn public_rooms(&self, after_name: &str, limit: u32) -> Result<Vec<RoomRecord>> {
        let after = after_name.to_owned();
        self.read_with(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ROOM_COLUMNS} FROM rooms WHERE public = 1 AND name > ?1 \
                     ORDER BY name LIMIT ?2"
                ))
                .map_err(db_err)?;
            let mut rows = stmt.query(rusqlite::params![after, limit_to_db(limit)]).map_err(db_err)?;
            let mut out = Vec::new();
            while out.len() < limit as usize {
                let Some(row) = rows.next().map_err(db_err)? else {
                    break;
                };
                out.push(room_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn append(&self, room: RoomId, entry: NewEntry) -> Result<AppendOutcome> {
        self.write(|r| Op::Append(room, entry, r)).await
    }

    async fn room_state(&self, room: RoomId, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.read_with(move |conn| {
            conn.prepare_cached("SELECT state FROM room_states WHERE room = ?1 AND epoch = ?2")
                .and_then(|mut s| {
                    rusqlite::OptionalExtension::optional(
                        s.query_row(rusqlite::params![room, codec::u64_to_db(epoch)], |r| r.get(0)),
                    )
                })
                .map_err(db_err)
        })
        .await
    }

    async fn read(&self, room: RoomId, after: u64, limit: u32) -> Result<Vec<Entry>> {
        let Some(after) = cursor_to_db(after) else {
            return Ok(Vec::new());
        };
        self.read_with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, kind, epoch, sender, ts, body FROM entries \
                     WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(db_err)?;
            let mut rows = stmt.query(rusqlite::params![room, after, limit_to_db(limit)]).map_err(db_err)?;
            let mut out = Vec::with_capacity((limit as usize).min(1_024));
            while out.len() < limit as usize {
                let Some(row) = rows.next().map_err(db_err)? else {
                    break;
                };
                out.push(entry_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn removal(&self, room: RoomId, user: &UserId) -> Result<Option<Removal>> {
        let user = *user;
        self.read_with(move |conn| {
            let row = conn
                .prepare_cached("SELECT seq, epoch FROM removals WHERE room = ?1 AND user = ?2")
                .and_then(|mut s| {
                    rusqlite::OptionalExtension::optional(
                        s.query_row(rusqlite::params![room, user.as_bytes().as_slice()], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        }),
                    )
                })
                .map_err(db_err)?;
            row.map(|(seq, epoch)| Ok(Removal { seq: codec::seq_from_db(seq)?, epoch: codec::u64_from_db(epoch) }))
                .transpose()
        })
        .await
    }

    async fn deposit(&self, mail: NewMail, quota: MailboxQuota) -> Result<DepositOutcome> {
        self.write(|r| Op::Deposit(mail, quota, r)).await
    }

    async fn mailbox_read(&self, owner: &UserId, after: u64, limit: u32, now: i64) -> Result<Vec<MailboxEntry>> {
        let Some(after) = cursor_to_db(after) else {
            return Ok(Vec::new());
        };
        let owner = *owner;
        self.read_with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, sender, ts, expires_at, body FROM mailbox \
                     WHERE owner = ?1 AND seq > ?2 AND expires_at > ?3 ORDER BY seq LIMIT ?4",
                )
                .map_err(db_err)?;
            let mut rows = stmt
                .query(rusqlite::params![owner.as_bytes().as_slice(), after, now, limit_to_db(limit)])
                .map_err(db_err)?;
            let mut out = Vec::with_capacity((limit as usize).min(1_024));
            while out.len() < limit as usize {
                let Some(row) = rows.next().map_err(db_err)? else {
                    break;
                };
                out.push(mail_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn mailbox_ack(&self, owner: &UserId, up_to: u64) -> Result<u64> {
        let owner = *owner;
        self.write(|r| Op::MailboxAck(owner, up_to, r)).await
    }

    async fn purge_expired(&self, now: i64) -> Result<u64> {
        self.write(|r| Op::PurgeExpired(now, r)).await
    }

    async fn publish_keys(&self, owner: &UserId, items: Vec<KeyItemUpload>, cap: u64) -> Result<PublishOutcome> {
        let owner = *owner;
        self.write(|r| Op::PublishKeys(owner, items, cap, r)).await
    }

    async fn claim_key(&self, owner: &UserId, kind: KeyKind) -> Result<Option<ClaimedKey>> {
        let owner = *owner;
        self.write(|r| Op::ClaimKey(owner, kind, r)).await
    }

    async fn key_counts(&self, owner: &UserId) -> Result<Vec<KeyCount>> {
        let owner = *owner;
        self.read_with(move |conn| key_counts(conn, &owner)).await
    }

    async fn create_file(&self, file: NewFile, quota: FileQuota) -> Result<CreateFileOutcome> {
        self.write(|r| Op::File(FileOp::Create(file, quota, r))).await
    }

    async fn file(&self, blob: &BlobId) -> Result<Option<FileRecord>> {
        let blob = *blob;
        self.read_with(move |conn| files::read(conn, &blob)).await
    }

    async fn file_part(
        &self,
        blob: &BlobId,
        offset: u64,
        len: u64,
        sha256: &[u8; 32],
        expires_when_complete: i64,
    ) -> Result<FilePartOutcome> {
        let (blob, sha256) = (*blob, *sha256);
        self.write(|r| Op::File(FileOp::Part(blob, offset, len, sha256, expires_when_complete, r))).await
    }

    async fn file_part_hashes(&self, blob: &BlobId) -> Result<Vec<(u64, [u8; 32])>> {
        let blob = *blob;
        self.read_with(move |conn| files::part_hashes(conn, &blob)).await
    }

    async fn expired_files(&self, now: i64, limit: u32) -> Result<Vec<FileRecord>> {
        self.read_with(move |conn| files::expired(conn, now, limit)).await
    }

    async fn delete_file(&self, blob: &BlobId) -> Result<bool> {
        let blob = *blob;
        self.write(|r| Op::File(FileOp::Delete(blob, r))).await
    }

    async fn file_totals(&self) -> Result<FileTotals> {
        self.read_with(files::totals).await
    }

    async fn rooms_overview(&self) -> Result<Vec<grove_store::RoomOverview>> {
        self.read_with(admin::rooms_overview).await
    }

    async fn delete_room(&self, name: &str) -> Result<Option<grove_store::DeletedRoom>> {
        let (path, name) = (self.path.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || admin::delete_room(&path, &name))
            .await
            .map_err(|e| StoreError::backend(format!("delete task failed: {e}")))?
    }

    async fn users_usage(&self) -> Result<Vec<grove_store::UserUsage>> {
        self.read_with(admin::users_usage).await
    }

    async fn purge_messages(&self, before: i64) -> Result<u64> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || admin::purge_messages(&path, before))
            .await
            .map_err(|e| StoreError::backend(format!("purge task failed: {e}")))?
    }

    async fn set_blocked(&self, user: &UserId, blocked: bool, at: i64) -> Result<bool> {
        let (path, user) = (self.path.clone(), *user);
        tokio::task::spawn_blocking(move || admin::set_blocked(&path, &user, blocked, at))
            .await
            .map_err(|e| StoreError::backend(format!("block task failed: {e}")))?
    }

    async fn blocked_users(&self) -> Result<Vec<UserId>> {
        self.read_with(admin::blocked_users).await
    }

    async fn set_room_link(&self, room: RoomId, link: Option<grove_store::RoomLink>) -> Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || joins::set_room_link(&path, room, link))
            .await
            .map_err(|e| StoreError::backend(format!("link task failed: {e}")))?
    }

    async fn room_link(&self, room: RoomId) -> Result<Option<grove_store::RoomLink>> {
        self.read_with(move |conn| joins::room_link(conn, room)).await
    }

    async fn request_join(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        request: grove_store::JoinRequest,
        max_pending: u64,
    ) -> Result<grove_store::JoinOutcome> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || joins::request_join(&path, room, token_hash, request, max_pending))
            .await
            .map_err(|e| StoreError::backend(format!("join task failed: {e}")))?
    }

    async fn use_link(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<std::result::Result<(), grove_store::JoinOutcome>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || joins::use_link(&path, room, token_hash, now))
            .await
            .map_err(|e| StoreError::backend(format!("join task failed: {e}")))?
    }

    async fn set_link_group_info(&self, room: RoomId, info: grove_store::LinkGroupInfo) -> Result<bool> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || joins::set_link_group_info(&path, room, info))
            .await
            .map_err(|e| StoreError::backend(format!("join task failed: {e}")))?
    }

    async fn link_group_info(&self, room: RoomId) -> Result<Option<grove_store::LinkGroupInfo>> {
        self.read_with(move |conn| joins::link_group_info(conn, room)).await
    }

    async fn join_requests(&self, room: RoomId) -> Result<Vec<grove_store::JoinRequest>> {
        self.read_with(move |conn| joins::join_requests(conn, room)).await
    }

    async fn delete_join_request(&self, room: RoomId, user: &UserId) -> Result<bool> {
        let (path, user) = (self.path.clone(), *user);
        tokio::task::spawn_blocking(move || joins::delete_join_request(&path, room, &user))
            .await
            .map_err(|e| StoreError::backend(format!("join task failed: {e}")))?
    }

    async fn record_report(
        &self,
        room: RoomId,
        seq: u64,
        reporter: &UserId,
        key: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Vec<(UserId, Option<Vec<u8>>)>> {
        let (path, reporter) = (self.path.clone(), *reporter);
        tokio::task::spawn_blocking(move || reports::record(&path, room, seq, &reporter, key, keep))
            .await
            .map_err(|e| StoreError::backend(format!("report task failed: {e}")))?
    }

    async fn false_reports(&self, room: RoomId, user: &UserId, add: bool) -> Result<u32> {
        let (path, user) = (self.path.clone(), *user);
        tokio::task::spawn_blocking(move || reports::false_reports(&path, room, &user, add))
            .await
            .map_err(|e| StoreError::backend(format!("report task failed: {e}")))?
    }

    async fn forget_reports(&self, room: RoomId, seq: u64) -> Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || reports::forget(&path, room, seq))
            .await
            .map_err(|e| StoreError::backend(format!("report task failed: {e}")))?
    }

    async fn headroom(&self) -> Result<Option<u64>> {
        let max_pages = self.max_pages;
        let path = self.path.clone();
        self.read_with(move |conn| {
            let under_cap = match max_pages {
                None => None,
                Some(max) => {
                    let pragma = |name: &str| -> Result<u64> {
                        let v: i64 = conn.pragma_query_value(None, name, |r| r.get(0)).map_err(db_err)?;
                        Ok(u64::try_from(v).unwrap_or(0))
                    };
                    let (count, free, size) = (pragma("page_count")?, pragma("freelist_count")?, pragma("page_size")?);
                    Some(max.saturating_sub(count).saturating_add(free).saturating_mul(size))
                }
            };
            Ok(match (under_cap, filesystem_free(&path)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh temporary folder, removed after the store is dropped.
    fn temp_store() -> grove_store::conformance::Guarded<SqliteStore, tempfile::TempDir> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("grove.db"), SqliteOptions::default()).expect("open");
        grove_store::conformance::Guarded::new(store, dir)
    }

    grove_store::conformance_tests!(|| async { Arc::new(temp_store()) });

    #[test]
    fn synchronous_round_trips() {
        for s in [Synchronous::Full, Synchronous::Normal, Synchronous::Off] {
            assert_eq!(Synchronous::parse(s.as_str()), Some(s));
        }
        assert_eq!(Synchronous::default(), Synchronous::Full);
        assert_eq!(Synchronous::parse("extra"), None);
    }

    #[tokio::test]
    async fn corrupt_rows_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grove.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open");
        let creator = UserId([1; 32]);
        let room = NewRoom {
            name: "r".into(),
            mode: grove_wire::api::RoomMode::Mls,
            public: true,
            created_by: creator,
            created_at: 1,
            epoch: 0,
            state: vec![],
            members: vec![creator],
            admins: vec![],
        };
        let CreateRoomOutcome::Created(rec) = store.create_room(room, 10).await.expect("create") else {
            panic!("not created")
        };
        let entry = NewEntry {
            kind: grove_wire::api::EntryKind::Application,
            epoch: 0,
            sender: creator,
            ts: 1,
            body: b"x".to_vec(),
            update: None,
        };
        store.append(rec.id, entry).await.expect("append");
        store
            .publish_keys(
                &creator,
                vec![KeyItemUpload { kind: KeyKind::OlmOneTime, last_resort: false, data: vec![1] }],
                10,
            )
            .await
            .expect("publish");
        {
            let conn = Connection::open(&path).expect("open raw");
            conn.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
            conn.execute_batch(
                "UPDATE rooms SET members = x'0102'; \
                 UPDATE entries SET kind = 'bogus'; \
                 UPDATE key_items SET kind = 'bogus';",
            )
            .expect("corrupt");
        }
        assert!(matches!(store.room("r").await, Err(StoreError::Corrupt { .. })));
        assert!(matches!(store.public_rooms("", 10).await, Err(StoreError::Corrupt { .. })));
        assert!(matches!(store.read(rec.id, 0, 10).await, Err(StoreError::Corrupt { .. })));
        assert!(matches!(store.key_counts(&creator).await, Err(StoreError::Corrupt { .. })));
        // A failed write does not stop the writer: the next one succeeds.
        assert!(matches!(
            store
                .publish_keys(
                    &creator,
                    vec![KeyItemUpload { kind: KeyKind::OlmOneTime, last_resort: false, data: vec![2] }],
                    10
                )
                .await,
            Ok(PublishOutcome::LimitReached) | Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(store.purge_expired(0).await, Ok(0)));
        store.close().expect("close");
    }

    #[tokio::test]
    async fn reopening_keeps_the_schema_and_refuses_newer_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("grove.db");
        SqliteStore::open(&path, SqliteOptions::default()).expect("open").close().expect("close");
        SqliteStore::open(&path, SqliteOptions { synchronous: Synchronous::Normal, ..SqliteOptions::default() })
            .expect("reopen")
            .close()
            .expect("close");
        {
            let conn = Connection::open(&path).expect("open raw");
            conn.pragma_update(None, "user_version", 99).expect("bump");
        }
        assert!(matches!(SqliteStore::open(&path, SqliteOptions::default()), Err(StoreError::Unavailable { .. })));
    }
}
