//! grove-store-postgres: the shared [`Store`] backend, on PostgreSQL.
//!
//! [`PostgresStore`] keeps rooms, room logs, mailboxes and the key directory in one PostgreSQL
//! database, which several grove server instances may share. It passes the `grove-store`
//! conformance suite: the same semantics as [`grove_store::MemoryStore`], durable, and with the
//! ordering invariants enforced by the database so that they hold across instances:
//!
//! - per-room sequence numbers are strictly increasing and gap-free: they are assigned while
//!   the writer holds the room row's lock (`SELECT … FOR UPDATE`), and the new head is written
//!   back in the same transaction;
//! - exactly one state update applies per expected state version: the compare-and-set is
//!   decided under the same row lock;
//! - a one-time key is handed out once: a claim is
//!   `DELETE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING …`;
//! - mailbox sequence numbers are never reused: they come from a per-owner `mailbox_heads` row,
//!   locked while a deposit is numbered, that outlives acknowledged and purged messages;
//! - a creator's room count and a user's key count are checked under a per-user advisory
//!   transaction lock, so concurrent instances cannot both slip under the limit.
//!
//! # Writes: one task per instance, group commit
//!
//! Every write is sent over a bounded channel to one writer task that owns a dedicated
//! connection. It takes whatever is queued (up to 1,000 ops) and runs the group in **one**
//! transaction, set-wise: a group of appends is one row-locking `SELECT`, one multi-row
//! `INSERT … SELECT FROM unnest(…)` and one `UPDATE` of the rooms (one head bump per room),
//! whatever its size, and independent statements are pipelined. Callers are answered only after
//! `COMMIT` returned, with `synchronous_commit` left on, so an `Ok` is durable. See the `writer`
//! module source for how each kind of write is run and how a failing group degrades to one
//! transaction per op. [`PostgresStore::stats`] reports the groups committed.
//!
//! # Notifications: following the other instances
//!
//! Each committed group that appended entries or deposited mail sends **one** `NOTIFY` on
//! [`NOTIFY_CHANNEL`] (`grove_entries`), inside its transaction (so it is delivered only if the
//! group commits), with the payload `ORIGIN;ROOMS;MAILBOXES`: this store's name, the room ids
//! and the mailbox owners (hex) it wrote to, a list being `*` if it would not fit PostgreSQL's
//! 8,000-byte payload. One per group, not per message, matters: PostgreSQL serialises committing
//! transactions that notified, and per message that costs 2–3× of the commit rate.
//!
//! Each store also keeps one connection (`application_name` `grove-listener`) that `LISTEN`s
//! and turns the *other* stores' notifications into [`ForeignWrites`], offered through
//! [`Store::foreign_writes`]; the server uses them to wake its subscribers and refresh its
//! cached room state. After every reconnection (and a ping every 5 s finds dead connections)
//! it announces [`ForeignWrites::everything`], so whatever was committed while it was not
//! listening is re-read: a missed notification delays entries, never loses them.
//!
//! # Timeouts
//!
//! The writer's session sets `lock_timeout` (5 s), `statement_timeout` (30 s) and
//! `idle_in_transaction_session_timeout` (15 s) unless the URL's `options` set them: a group
//! that waits longer for another instance's lock fails with [`StoreError::Unavailable`], and a
//! hung instance's open transaction is ended by the server, releasing its locks.
//!
//! # Reads
//!
//! Reads run on a small [`deadpool_postgres`] pool of connections with cached prepared
//! statements, never behind the writer; each returns at most its `limit` rows. They see every
//! committed, hence every acknowledged, write.
//!
//! # Schema
//!
//! Numbered migrations in `migrations/NNNN_*.sql`, embedded in the binary, are applied by
//! [`PostgresStore::connect`] in one transaction that first takes
//! `pg_advisory_xact_lock`, so several instances can start at once; applied versions are
//! recorded in the `grove_migrations` table. A database whose schema is newer than this build
//! knows is refused. Stored data that does not decode is [`StoreError::Corrupt`], never a panic.
//!
//! # What it does not do
//!
//! No TLS yet (`NoTls`: use a local socket or a trusted network). It does not interpret
//! entries, does not encrypt at rest (bodies are end-to-end ciphertext; metadata is visible to
//! whoever reads the database), and never deletes room entries.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use grove_store::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, ForeignWrites, MailboxQuota, NewEntry, NewMail, NewRoom,
    PublishOutcome, Removal, Result, RoomId, RoomRecord, Store, StoreError,
};
use grove_store::{CreateFileOutcome, FilePartOutcome, FileQuota, FileRecord, FileTotals, NewFile};
use grove_wire::api::{ClaimedKey, Entry, KeyCount, KeyItemUpload, KeyKind, MailboxEntry};
use grove_wire::attachment::BlobId;
use grove_wire::UserId;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

mod admin;
mod codec;
mod files;
mod joins;
mod listener;
mod reports;
mod statements;
mod writer;

use codec::{
    col, cursor_to_db, db_err, entry_from_row, key_counts_from_rows, limit_to_db, mail_from_row, room_from_row,
    text_prefix, u64_to_db, KEY_COUNTS_SQL, ROOM_COLUMNS,
};
use writer::{Counters, Op, Reply, ReplyTo, Request};

/// The channel on which each committed group of appends is announced: one `NOTIFY` per group,
/// its payload the comma-separated ids of the rooms appended to, or `"*"` for very many.
pub const NOTIFY_CHANNEL: &str = "grove_entries";

/// The schema migrations, in order: `(version, name, SQL)`.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "files", include_str!("../migrations/0002_files.sql")),
    (3, "removals", include_str!("../migrations/0003_removals.sql")),
    (4, "blocked", include_str!("../migrations/0004_blocked.sql")),
    (5, "joins", include_str!("../migrations/0005_joins.sql")),
    (6, "fault_reports", include_str!("../migrations/0006_fault_reports.sql")),
    (7, "link_group_infos", include_str!("../migrations/0007_link_group_infos.sql")),
    (8, "file_parts", include_str!("../migrations/0008_file_parts.sql")),
];

/// The advisory lock (`pg_advisory_xact_lock(bigint)`) that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6772_6f76_655f_6d67; // "grove_mg"

/// How many connections the read pool holds.
const READ_CONNECTIONS: usize = 4;

/// How many ops may wait for the writer before senders wait (asynchronously) too.
const QUEUE_CAPACITY: usize = 8 * writer::MAX_BATCH;

/// How long opening a connection may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many announcements of other instances' writes may wait for a slow server before it
/// lags (and then re-checks everything).
const FOREIGN_CAPACITY: usize = 1024;

/// How long a read waits for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// What the writer task has committed since the store was connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Committed transactions (groups, and single ops run alone after a group failed).
    pub transactions: u64,
    /// Ops in those transactions; `ops / transactions` is the mean group size.
    pub ops: u64,
    /// The largest group committed in one transaction.
    pub max_batch: u64,
    /// Groups that failed and were retried one op per transaction.
    pub fallbacks: u64,
}

/// The PostgreSQL [`Store`]. See the [crate documentation](crate).
pub struct PostgresStore {
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    listener: JoinHandle<()>,
    foreign: broadcast::Sender<ForeignWrites>,
    pool: Pool,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/dbname`, or a key=value
    /// string; no TLS), applies pending migrations and starts the writer task. Must be called
    /// inside a Tokio runtime, which then runs the writer task.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::unavailable(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("grove");
        }

        let mut client = writer::connect(&config).await?;
        migrate(&mut client).await?;

        let origin = origin();
        // Listening before the first write: from here on no other instance's group is missed.
        let first = listener::listen(&config).await?;
        let (foreign, _) = broadcast::channel(FOREIGN_CAPACITY);
        let listener = tokio::spawn(listener::run(config.clone(), origin.clone(), first, foreign.clone()));

        let counters = Arc::new(Counters::default());
        let task = match writer::Writer::new(config.clone(), client, counters.clone(), origin).await {
            Ok(t) => t,
            Err(e) => {
                listener.abort();
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = tokio::spawn(task.run(rx));

        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(READ_CONNECTIONS)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::unavailable(format!("cannot build the read pool: {e}")))?;

        Ok(PostgresStore { tx: Some(tx), writer: Some(writer), listener, foreign, pool, counters })
    }

    /// What the writer has committed so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            ops: self.counters.ops.load(Ordering::Relaxed),
            max_batch: self.counters.max_batch.load(Ordering::Relaxed),
            fallbacks: self.counters.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting writes, lets the writer finish every op already queued, waits for it
    /// and closes the read pool. Dropping the store also lets the queued ops finish, without
    /// waiting.
    pub async fn close(mut self) -> Result<(), StoreError> {
        drop(self.tx.take());
        self.listener.abort();
        self.pool.close();
        match self.writer.take() {
            Some(handle) => handle.await.map_err(|e| StoreError::backend(format!("the postgres writer failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Sends a write to the writer task and waits for its committed result.
    async fn write<T>(&self, req: Request, reply: fn(Reply<T>) -> ReplyTo) -> Result<T> {
        let stopped = || StoreError::unavailable("the postgres writer has stopped");
        let sender = self.tx.as_ref().ok_or_else(stopped)?;
        let (tx, rx) = oneshot::channel();
        sender.send(Op { req, reply: reply(tx) }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs a read statement on a pooled connection.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client.prepare_cached(sql).await.map_err(db_err)?;
        client.query(&stmt, params).await.map_err(db_err)
    }
}

pub(crate) fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db_err(e),
        other => StoreError::unavailable(format!("postgres read pool: {other}")),
    }
}

/// Applies pending migrations in one transaction, serialised across instances.
async fn migrate(client: &mut Client) -> Result<()> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS grove_migrations (\
             version    integer     PRIMARY KEY, \
             name       text        NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db_err)?;
    let row = tx.query_one("SELECT COALESCE(max(version), 0) FROM grove_migrations", &[]).await.map_err(db_err)?;
    let current: i32 = col(&row, 0)?;
    if current > latest {
        return Err(StoreError::unavailable(format!(
            "database schema version {current} is newer than this build knows ({latest})"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await.map_err(db_err)?;
        tx.execute("INSERT INTO grove_migrations (version, name) VALUES ($1, $2)", &[version, name])
            .await
            .map_err(db_err)?;
        tracing::info!("postgres schema migrated to version {version} ({name})");
    }
    tx.commit().await.map_err(db_err)
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the channel makes the writer exit once the queue is empty.
        drop(self.tx.take());
        self.listener.abort();
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_room(&self, room: NewRoom, max_per_creator: u64) -> Result<CreateRoomOutcome> {
        if room.name.contains('\0') {
            return Err(StoreError::backend("a room name cannot contain NUL"));
        }
        self.write(Request::CreateRoom(room, max_per_creator), ReplyTo::CreateRoom).await
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>> {
        let (name, cut) = text_prefix(name);
        if cut {
            return Ok(None);
        }
        let rows = self.query(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE name = $1"), &[&name]).await?;
        rows.first().map(room_from_row).transpose()
    }

    async fn public_rooms(&self, after_name: &str, limit: u32) -> Result<Vec<RoomRecord>> {
        // No stored name contains NUL, so `name > "a\0…"` is `name > "a"`.
        let (after, _) = text_prefix(after_name);
        let rows = self
            .query(
                &format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE public AND name > $1 ORDER BY name LIMIT $2"),
                &[&after, &limit_to_db(limit)],
            )
            .await?;
        rows.iter().take(limit as usize).map(room_from_row).collect()
    }

    async fn append(&self, room: RoomId, entry: NewEntry) -> Result<AppendOutcome> {
        self.write(Request::Append(room, entry), ReplyTo::Append).await
    }

    async fn room_state(&self, room: RoomId, epoch: u64) -> Result<Option<Vec<u8>>> {
        let rows = self
            .query("SELECT state FROM room_states WHERE room = $1 AND epoch = $2", &[&room, &u64_to_db(epoch)])
            .await?;
        rows.first().map(|r| col(r, 0)).transpose()
    }

    async fn read(&self, room: RoomId, after: u64, limit: u32) -> Result<Vec<Entry>> {
        let Some(after) = cursor_to_db(after) else {
            return Ok(Vec::new());
        };
        let rows = self
            .query(
                "SELECT seq, kind, epoch, sender, ts, body FROM entries \
                 WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&room, &after, &limit_to_db(limit)],
            )
            .await?;
        rows.iter().take(limit as usize).map(entry_from_row).collect()
    }

    async fn removal(&self, room: RoomId, user: &UserId) -> Result<Option<Removal>> {
        let rows = self
            .query(
                "SELECT seq, epoch FROM removals WHERE room = $1 AND \"user\" = $2",
                &[&room, &user.as_bytes().as_slice()],
            )
            .await?;
        rows.first()
            .map(|r| Ok(Removal { seq: codec::seq_from_db(col(r, 0)?)?, epoch: codec::u64_from_db(col(r, 1)?) }))
            .transpose()
    }

    async fn deposit(&self, mail: NewMail, quota: MailboxQuota) -> Result<DepositOutcome> {
        self.write(Request::Deposit(mail, quota), ReplyTo::Deposit).await
    }

    async fn mailbox_read(&self, owner: &UserId, after: u64, limit: u32, now: i64) -> Result<Vec<MailboxEntry>> {
        let Some(after) = cursor_to_db(after) else {
            return Ok(Vec::new());
        };
        let rows = self
            .query(
                "SELECT seq, sender, ts, expires_at, body FROM mailbox \
                 WHERE owner = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4",
                &[&owner.as_bytes().as_slice(), &after, &now, &limit_to_db(limit)],
            )
            .await?;
        rows.iter().take(limit as usize).map(mail_from_row).collect()
    }

    async fn mailbox_ack(&self, owner: &UserId, up_to: u64) -> Result<u64> {
        self.write(Request::MailboxAck(*owner, up_to), ReplyTo::Count).await
    }

    async fn purge_expired(&self, now: i64) -> Result<u64> {
        self.write(Request::PurgeExpired(now), ReplyTo::Count).await
    }

    async fn publish_keys(&self, owner: &UserId, items: Vec<KeyItemUpload>, cap: u64) -> Result<PublishOutcome> {
        self.write(Request::PublishKeys(*owner, items, cap), ReplyTo::Publish).await
    }

    async fn claim_key(&self, owner: &UserId, kind: KeyKind) -> Result<Option<ClaimedKey>> {
        self.write(Request::ClaimKey(*owner, kind), ReplyTo::Claim).await
    }

    async fn key_counts(&self, owner: &UserId) -> Result<Vec<KeyCount>> {
        let rows = self.query(KEY_COUNTS_SQL, &[&owner.as_bytes().as_slice()]).await?;
        key_counts_from_rows(&rows)
    }

    async fn create_file(&self, file: NewFile, quota: FileQuota) -> Result<CreateFileOutcome> {
        self.files_create(file, quota).await
    }

    async fn file(&self, blob: &BlobId) -> Result<Option<FileRecord>> {
        self.files_get(blob).await
    }

    async fn file_part(
        &self,
        blob: &BlobId,
        offset: u64,
        len: u64,
        sha256: &[u8; 32],
        expires_when_complete: i64,
    ) -> Result<FilePartOutcome> {
        self.files_part(blob, offset, len, sha256, expires_when_complete).await
    }

    async fn file_part_hashes(&self, blob: &BlobId) -> Result<Vec<(u64, [u8; 32])>> {
        self.files_part_hashes(blob).await
    }

    async fn expired_files(&self, now: i64, limit: u32) -> Result<Vec<FileRecord>> {
        self.files_expired(now, limit).await
    }

    async fn delete_file(&self, blob: &BlobId) -> Result<bool> {
        self.files_delete(blob).await
    }

    async fn file_totals(&self) -> Result<FileTotals> {
        self.files_totals().await
    }

    async fn rooms_overview(&self) -> Result<Vec<grove_store::RoomOverview>> {
        self.admin_rooms().await
    }

    async fn delete_room(&self, name: &str) -> Result<Option<grove_store::DeletedRoom>> {
        self.admin_delete_room(name).await
    }

    async fn users_usage(&self) -> Result<Vec<grove_store::UserUsage>> {
        self.admin_users().await
    }

    async fn purge_messages(&self, before: i64) -> Result<u64> {
        self.admin_purge_messages(before).await
    }

    async fn set_blocked(&self, user: &UserId, blocked: bool, at: i64) -> Result<bool> {
        self.admin_set_blocked(user, blocked, at).await
    }

    async fn blocked_users(&self) -> Result<Vec<UserId>> {
        self.admin_blocked().await
    }

    async fn set_room_link(&self, room: RoomId, link: Option<grove_store::RoomLink>) -> Result<()> {
        self.pg_set_room_link(room, link).await
    }

    async fn room_link(&self, room: RoomId) -> Result<Option<grove_store::RoomLink>> {
        self.pg_room_link(room).await
    }

    async fn request_join(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        request: grove_store::JoinRequest,
        max_pending: u64,
    ) -> Result<grove_store::JoinOutcome> {
        self.pg_request_join(room, token_hash, request, max_pending).await
    }

    async fn use_link(
        &self,
        room: RoomId,
        token_hash: [u8; 32],
        now: i64,
    ) -> Result<std::result::Result<(), grove_store::JoinOutcome>> {
        self.pg_use_link(room, token_hash, now).await
    }

    async fn set_link_group_info(&self, room: RoomId, info: grove_store::LinkGroupInfo) -> Result<bool> {
        self.pg_set_link_group_info(room, info).await
    }

    async fn link_group_info(&self, room: RoomId) -> Result<Option<grove_store::LinkGroupInfo>> {
        self.pg_link_group_info(room).await
    }

    async fn join_requests(&self, room: RoomId) -> Result<Vec<grove_store::JoinRequest>> {
        self.pg_join_requests(room).await
    }

    async fn delete_join_request(&self, room: RoomId, user: &UserId) -> Result<bool> {
        self.pg_delete_join_request(room, user).await
    }

    async fn record_report(
        &self,
        room: RoomId,
        seq: u64,
        reporter: &UserId,
        key: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Vec<(UserId, Option<Vec<u8>>)>> {
        self.reports_record(room, seq, reporter, key, keep).await
    }

    async fn false_reports(&self, room: RoomId, user: &UserId, add: bool) -> Result<u32> {
        self.reports_false(room, user, add).await
    }

    async fn forget_reports(&self, room: RoomId, seq: u64) -> Result<()> {
        self.reports_forget(room, seq).await
    }

    fn foreign_writes(&self) -> Option<broadcast::Receiver<ForeignWrites>> {
        Some(self.foreign.subscribe())
    }
}

/// A name for this store among all that share the database: process id, start time and a
/// counter (several stores may live in one process, as in tests).
fn origin() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}.{nanos:x}.{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
