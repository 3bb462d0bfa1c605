//! The writer task: one connection that commits queued writes in groups.
//!
//! The task waits for one op, drains whatever else is queued (up to [`MAX_BATCH`]) and runs the
//! whole group in one transaction, answering the callers only after `COMMIT` returned. Every op
//! of a group was submitted before any of them was answered, so the ops are concurrent and any
//! order of them is a valid one: the writer runs them **by kind**, set-wise, in a fixed order
//! (appends, room creations, deposits, acks and purges, key publications, claims) and takes its
//! locks in a canonical order within each kind, which keeps lock waits between instances short
//! and deadlock-free in the common cases:
//!
//! - **Appends**: one `SELECT … ORDER BY id FOR UPDATE` locks every room of the group and reads
//!   its head, epoch and state version; sequence numbers and compare-and-set outcomes are then
//!   decided in memory under those locks, and the group is written with one multi-row
//!   `INSERT … SELECT FROM unnest(…)` of entries and one `UPDATE … FROM unnest(…)` of the rooms
//!   (one head bump per room), plus an upsert and a prune of `room_states` per state update,
//!   and, when updates removed or added members, one upsert and one delete of `removals`.
//! - **Room creations**: per creator, an advisory transaction lock serialises the count against
//!   `max_per_creator`; the name is unique by index (`ON CONFLICT DO NOTHING`).
//! - **Deposits**: the owners' `mailbox_heads` rows are created if missing and locked in owner
//!   order, the live counts read in one query, and the group written with one `INSERT` and one
//!   `UPDATE`.
//! - **Acks, purges, claims**: one statement each, pipelined. A claim is one
//!   `DELETE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING` that falls back to
//!   the last-resort item.
//! - **Key publications**: per owner, an advisory lock, a count, a delete and an insert.
//!
//! Independent statements are pipelined (sent together, executed in order by the server), so
//! a group costs a handful of round trips whatever its size. When the group's transaction has
//! appended to rooms or deposited mail, it ends with **one** `NOTIFY grove_entries` naming
//! them (see the `listener` module for the payload).
//!
//! The writer's session runs with `lock_timeout` 5 s, `statement_timeout` 30 s and
//! `idle_in_transaction_session_timeout` 15 s (unless the URL's `options` set them): a group
//! that waits longer for a lock another instance holds fails with
//! [`StoreError::Unavailable`] (all its ops; they are not retried one by one, which would only
//! wait again), and an instance that hangs inside a transaction loses it and its locks.
//!
//! No op needs a savepoint: every semantic outcome (conflict, name taken, full, limit reached)
//! is decided by reading under a lock before writing, never by catching an error. If the group
//! fails anyway, it is rolled back (nothing of it was answered) and:
//! - a deadlock or serialisation failure (another instance took locks in another order, which
//!   the canonical order makes rare: a purge against acks, or the same new room name from two
//!   creators) runs the whole group again, up to three times, after a short pause;
//! - a lost connection answers every op with [`StoreError::Unavailable`]; the next group
//!   reconnects;
//! - any other failure (an op that trips a constraint, data that does not decode) reruns the
//!   ops one per transaction, so the bad op fails alone.
//!
//! A `COMMIT` whose outcome is unknown (the connection broke while it was in flight) is never
//! retried: its ops get [`StoreError::Backend`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use grove_store::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, MailboxQuota, NewEntry, NewMail, NewRoom, PublishOutcome, Result,
    RoomId, RoomRecord, StoreError,
};
use grove_wire::api::{ClaimedKey, KeyItemUpload, KeyKind};
use grove_wire::UserId;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::codec::{col, db_err, key_counts_from_rows, seq_from_db, seq_to_db, u64_from_db, u64_to_db, users_to_db};

/// The most ops committed in one transaction.
pub(crate) const MAX_BATCH: usize = 1_000;

/// How often an op that failed with a deadlock or serialisation failure is tried alone.
const ATTEMPTS: usize = 3;

use crate::statements::Stmts;
use crate::NOTIFY_CHANNEL;

/// How long the writer waits for a row or advisory lock before giving up on its group
/// (`lock_timeout`), unless the connection's options set it: a hung instance that holds locks
/// must not stall the others forever.
const LOCK_TIMEOUT: &str = "5s";

/// How long one of the writer's statements may run (`statement_timeout`), unless set.
const STATEMENT_TIMEOUT: &str = "30s";

/// How long the writer's session may sit idle inside a transaction before PostgreSQL ends it
/// and releases its locks (`idle_in_transaction_session_timeout`), unless set: if this
/// instance hangs mid-transaction, the others get the rows back.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "15s";

/// Advisory lock namespaces (the first key of `pg_advisory_xact_lock(int4, int4)`).
const LOCK_CREATOR: i32 = 0x6772_0001;
const LOCK_KEY_OWNER: i32 = 0x6772_0002;

/// A caller's reply slot.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A write, as the writer runs it.
pub(crate) enum Request {
    CreateRoom(NewRoom, u64),
    Append(RoomId, NewEntry),
    Deposit(NewMail, MailboxQuota),
    MailboxAck(UserId, u64),
    PurgeExpired(i64),
    PublishKeys(UserId, Vec<KeyItemUpload>, u64),
    ClaimKey(UserId, KeyKind),
}

/// A write's result before it is sent.
pub(crate) enum Outcome {
    CreateRoom(CreateRoomOutcome),
    Append(AppendOutcome),
    Deposit(DepositOutcome),
    Count(u64),
    Publish(PublishOutcome),
    Claim(Option<ClaimedKey>),
}

/// Where a write's result goes.
pub(crate) enum ReplyTo {
    CreateRoom(Reply<CreateRoomOutcome>),
    Append(Reply<AppendOutcome>),
    Deposit(Reply<DepositOutcome>),
    Count(Reply<u64>),
    Publish(Reply<PublishOutcome>),
    Claim(Reply<Option<ClaimedKey>>),
}

/// A queued write.
pub(crate) struct Op {
    pub(crate) req: Request,
    pub(crate) reply: ReplyTo,
}

fn send<T>(tx: Reply<T>, r: Result<Outcome>, pick: impl FnOnce(Outcome) -> Option<T>) {
    let r = r.and_then(|o| pick(o).ok_or_else(|| StoreError::backend("internal: mismatched write outcome")));
    // The caller may have gone away (its future dropped); the write stands regardless.
    let _ = tx.send(r);
}

impl ReplyTo {
    fn send(self, r: Result<Outcome>) {
        match self {
            ReplyTo::CreateRoom(tx) => send(tx, r, |o| if let Outcome::CreateRoom(v) = o { Some(v) } else { None }),
            ReplyTo::Append(tx) => send(tx, r, |o| if let Outcome::Append(v) = o { Some(v) } else { None }),
            ReplyTo::Deposit(tx) => send(tx, r, |o| if let Outcome::Deposit(v) = o { Some(v) } else { None }),
            ReplyTo::Count(tx) => send(tx, r, |o| if let Outcome::Count(v) = o { Some(v) } else { None }),
            ReplyTo::Publish(tx) => send(tx, r, |o| if let Outcome::Publish(v) = o { Some(v) } else { None }),
            ReplyTo::Claim(tx) => send(tx, r, |o| if let Outcome::Claim(v) = o { Some(v) } else { None }),
        }
    }
}

/// Counters shared between the writer task and the store handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) ops: AtomicU64,
    pub(crate) max_batch: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
}

/// Why a group's transaction did not get to `COMMIT`.
enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    fn into_store(self) -> StoreError {
        match self {
            Fail::Db(e) => db_err(e),
            Fail::Store(e) => e,
        }
    }

    /// A lock wait or statement ran out of time (`lock_timeout`, `statement_timeout`): the
    /// database or another instance is stuck, and running the ops one by one would only wait
    /// again for each.
    fn timed_out(&self) -> bool {
        matches!(self, Fail::Db(e) if e.code().is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::QUERY_CANCELED))
    }

    /// A deadlock or serialisation failure: trying again may well succeed.
    fn retryable(&self) -> bool {
        matches!(self, Fail::Db(e) if e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE))
    }
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

type Param<'a> = &'a (dyn ToSql + Sync);

/// The writer's connection and its statements.
struct Conn {
    client: Client,
    st: Stmts,
}

/// Opens a connection and drives it on a task of its own.
pub(crate) async fn connect(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(db_err)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres writer connection ended: {e}");
        }
    });
    Ok(client)
}

/// Sets the writer session's lock, statement and idle-in-transaction timeouts, except those
/// the connection's `options` already set (`-c lock_timeout=…`).
async fn set_timeouts(config: &tokio_postgres::Config, client: &Client) -> Result<()> {
    let options = config.get_options().unwrap_or("");
    let mut sql = String::new();
    for (name, value) in [
        ("lock_timeout", LOCK_TIMEOUT),
        ("statement_timeout", STATEMENT_TIMEOUT),
        ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT),
    ] {
        if !options.contains(name) {
            sql.push_str(&format!("SET {name} = '{value}';"));
        }
    }
    client.batch_execute(&sql).await.map_err(db_err)
}

/// The writer task's state.
pub(crate) struct Writer {
    config: tokio_postgres::Config,
    conn: Option<Conn>,
    counters: Arc<Counters>,
    /// This store's name in notifications.
    origin: Arc<String>,
}

impl Writer {
    pub(crate) async fn new(
        config: tokio_postgres::Config,
        client: Client,
        counters: Arc<Counters>,
        origin: String,
    ) -> Result<Writer> {
        set_timeouts(&config, &client).await?;
        let st = Stmts::prepare(&client).await.map_err(db_err)?;
        Ok(Writer { config, conn: Some(Conn { client, st }), counters, origin: Arc::new(origin) })
    }

    /// Runs until every sender is gone and the queue is empty.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
        // `recv` yields every op still queued before it reports the closed channel, so whatever
        // was sent before the store was dropped is executed and answered.
        while let Some(op) = rx.recv().await {
            batch.push(op);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.run_batch(&mut batch).await;
        }
        tracing::debug!("postgres writer task exiting");
    }

    /// The connection, reconnecting if it was lost.
    async fn conn(&mut self) -> Result<&Conn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = connect(&self.config).await?;
            set_timeouts(&self.config, &client).await?;
            let st = Stmts::prepare(&client).await.map_err(db_err)?;
            tracing::info!("postgres writer reconnected");
            self.conn = Some(Conn { client, st });
        }
        self.conn.as_ref().ok_or_else(|| StoreError::unavailable("no postgres connection"))
    }

    /// Whether the writer has no usable connection (it was lost, or could not be opened).
    fn connection_lost(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.client.is_closed())
    }

    async fn run_batch(&mut self, batch: &mut Vec<Op>) {
        let n = batch.len();
        let (reqs, replies): (Vec<Request>, Vec<ReplyTo>) = batch.drain(..).map(|op| (op.req, op.reply)).unzip();
        let all: Vec<&Request> = reqs.iter().collect();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.transaction(&all).await {
                // A deadlock with another instance: the whole group again, after a pause.
                Err(f) if f.retryable() && attempt < ATTEMPTS => backoff(attempt).await,
                r => break r,
            }
        };
        match result {
            Ok(Committed::Yes(outcomes)) => {
                self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                self.counters.ops.fetch_add(n as u64, Ordering::Relaxed);
                self.counters.max_batch.fetch_max(n as u64, Ordering::Relaxed);
                for (reply, o) in replies.into_iter().zip(outcomes) {
                    reply.send(Ok(o));
                }
            }
            Ok(Committed::Unknown(e)) => {
                for reply in replies {
                    reply.send(Err(e.clone()));
                }
            }
            // Nothing to isolate, or no database to isolate it on: every op gets the error.
            Err(fail) if fail.timed_out() => {
                let e = StoreError::unavailable(
                    "the database did not answer in time (a lock held elsewhere, or an overloaded server)",
                )
                .caused_by(fail.into_store());
                tracing::warn!("postgres write of {n} ops timed out: {}", e.detail());
                for reply in replies {
                    reply.send(Err(e.clone()));
                }
            }
            Err(fail) if n == 1 || self.connection_lost() => {
                let e = fail.into_store();
                tracing::warn!("postgres write of {n} ops failed: {}", e.detail());
                for reply in replies {
                    reply.send(Err(e.clone()));
                }
            }
            Err(fail) => {
                // Rolled back: run every op alone, so that one bad op fails alone.
                self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("postgres group of {n} failed ({}); retrying its ops one by one", fail.into_store());
                for (req, reply) in reqs.iter().zip(replies) {
                    let r = self.alone(req).await;
                    reply.send(r);
                }
            }
        }
    }

    /// Runs one op in its own transaction, retrying deadlocks and serialisation failures.
    async fn alone(&mut self, req: &Request) -> Result<Outcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transaction(&[req]).await {
                Ok(Committed::Yes(mut o)) => {
                    self.counters.transactions.fetch_add(1, Ordering::Relaxed);
                    self.counters.ops.fetch_add(1, Ordering::Relaxed);
                    return o.pop().ok_or_else(|| StoreError::backend("internal: no outcome"));
                }
                Ok(Committed::Unknown(e)) => return Err(e),
                Err(f) if f.retryable() && attempt < ATTEMPTS => backoff(attempt).await,
                Err(f) => return Err(f.into_store()),
            }
        }
    }

    /// Runs `reqs` in one transaction: `Err` means it was rolled back (or never began).
    async fn transaction(&mut self, reqs: &[&Request]) -> Result<Committed, Fail> {
        let origin = self.origin.clone();
        let origin = origin.as_str();
        let c = self.conn().await?;
        // Pipelined: `BEGIN` goes out in the same write as the group's first statements (the
        // first poll of each future queues its message, in order, on the one connection), and
        // the group's `NOTIFY` in the same write as `COMMIT`; the database runs them in order.
        let outcome = async {
            let begin = async { c.client.execute(&c.st.begin, &[]).await.map_err(Fail::from) };
            let ((), outcomes) =
                futures_util::future::try_join(async { begin.await.map(drop) }, run_group(c, reqs)).await?;
            Ok::<_, Fail>(outcomes)
        }
        .await;
        let outcomes = match outcome {
            Ok(o) => o,
            Err(f) => {
                if !c.client.is_closed() {
                    if let Err(e) = c.client.execute(&c.st.rollback, &[]).await {
                        tracing::error!("postgres rollback failed: {e}");
                    }
                }
                return Err(f);
            }
        };
        let payload = notify_payload(origin, reqs, &outcomes);
        let notify = async {
            match &payload {
                Some(p) => c.client.execute(&c.st.notify, &[&NOTIFY_CHANNEL, p]).await.map(drop),
                None => Ok(()),
            }
        };
        let (notified, committed) = futures_util::future::join(notify, c.client.execute(&c.st.commit, &[])).await;
        if let Err(e) = notified {
            // The transaction was aborted by the failed NOTIFY, so its COMMIT rolled it back.
            if !c.client.is_closed() {
                if let Err(e) = c.client.execute(&c.st.rollback, &[]).await {
                    tracing::error!("postgres rollback failed: {e}");
                }
            }
            return Err(Fail::Db(e));
        }
        match committed {
            Ok(_) => Ok(Committed::Yes(outcomes)),
            // The server answered with an error: the transaction was rolled back.
            Err(e) if e.as_db_error().is_some() => Err(Fail::Db(e)),
            Err(e) => {
                tracing::error!("postgres commit outcome unknown: {e}");
                Ok(Committed::Unknown(StoreError::backend(format!("commit outcome unknown: {e}"))))
            }
        }
    }
}

/// A short, growing pause before trying a deadlocked transaction again.
async fn backoff(attempt: usize) {
    tokio::time::sleep(Duration::from_millis(5 * attempt as u64)).await;
}

/// How a transaction ended that reached `COMMIT`.
enum Committed {
    /// Committed; the outcomes in op order.
    Yes(Vec<Outcome>),
    /// The connection failed during `COMMIT`: it may or may not have committed.
    Unknown(StoreError),
}

/// Runs a group of ops inside the open transaction; the outcomes in op order.
async fn run_group(c: &Conn, reqs: &[&Request]) -> Result<Vec<Outcome>, Fail> {
    let mut out: Vec<Option<Outcome>> = reqs.iter().map(|_| None).collect();
    appends(c, reqs, &mut out).await?;
    creates(c, reqs, &mut out).await?;
    deposits(c, reqs, &mut out).await?;
    acks_and_purges(c, reqs, &mut out).await?;
    publishes(c, reqs, &mut out).await?;
    claims(c, reqs, &mut out).await?;
    out.into_iter().map(|o| o.ok_or_else(|| Fail::Store(StoreError::backend("internal: an op was not run")))).collect()
}

/// The payload of the group's one `NOTIFY`, sent inside its transaction (so it is delivered
/// only if the group commits), naming the rooms appended to and the mailboxes deposited to;
/// none if neither.
fn notify_payload(origin: &str, reqs: &[&Request], out: &[Outcome]) -> Option<String> {
    let mut rooms: Vec<RoomId> = Vec::new();
    let mut owners: Vec<UserId> = Vec::new();
    for (r, o) in reqs.iter().zip(out) {
        match (r, o) {
            (Request::Append(room, _), Outcome::Append(AppendOutcome::Appended { .. })) => rooms.push(*room),
            (Request::Deposit(mail, _), Outcome::Deposit(DepositOutcome::Deposited { .. })) => owners.push(mail.owner),
            _ => {}
        }
    }
    if rooms.is_empty() && owners.is_empty() {
        return None;
    }
    rooms.sort_unstable();
    rooms.dedup();
    owners.sort_unstable_by_key(|u| u.0);
    owners.dedup();
    Some(crate::listener::payload(origin, &rooms, &owners))
}

/// Where a removed member's reading ends, as stored: (seq, epoch).
type RemovedAt = (i64, i64);

/// A room as the open transaction sees it, under its row lock.
struct Head<'a> {
    epoch: u64,
    head: u64,
    state_version: u64,
    moved: bool,
    state: Option<(&'a [u8], Vec<u8>, Vec<u8>)>,
}

async fn appends(c: &Conn, reqs: &[&Request], out: &mut [Option<Outcome>]) -> Result<(), Fail> {
    let ops: Vec<(usize, RoomId, &NewEntry)> = reqs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Request::Append(room, entry) => Some((i, *room, entry)),
            _ => None,
        })
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<i64> = ops.iter().map(|(_, room, _)| *room).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = c.client.query(&c.st.lock_rooms, &[&ids]).await?;
    let mut heads: BTreeMap<RoomId, Head<'_>> = BTreeMap::new();
    for row in &rows {
        heads.insert(
            col(row, 0)?,
            Head {
                epoch: u64_from_db(col(row, 1)?),
                head: seq_from_db(col(row, 2)?)?,
                state_version: u64_from_db(col(row, 3)?),
                moved: false,
                state: None,
            },
        );
    }

    let n = ops.len();
    let (mut e_room, mut e_seq, mut e_kind, mut e_epoch) = (
        Vec::<i64>::with_capacity(n),
        Vec::<i64>::with_capacity(n),
        Vec::<&str>::with_capacity(n),
        Vec::<i64>::with_capacity(n),
    );
    let (mut e_sender, mut e_ts, mut e_body) =
        (Vec::<&[u8]>::with_capacity(n), Vec::<i64>::with_capacity(n), Vec::<&[u8]>::with_capacity(n));
    // Each state update's (room, epoch, state, prune bound), in order.
    let mut history: Vec<(i64, i64, &[u8], Option<i64>)> = Vec::new();
    // Each (room, user) a state update removed (where its reading ends: seq, epoch) or added
    // back (`None`): the last update of the group wins, as one at a time.
    let mut removals: BTreeMap<(RoomId, &[u8]), Option<RemovedAt>> = BTreeMap::new();
    for (i, room, entry) in ops {
        let Some(h) = heads.get_mut(&room) else {
            out[i] = Some(Outcome::Append(AppendOutcome::NoSuchRoom));
            continue;
        };
        if let Some(u) = &entry.update {
            if u.expected_state_version != h.state_version {
                out[i] = Some(Outcome::Append(AppendOutcome::Conflict {
                    epoch: h.epoch,
                    head: h.head,
                    state_version: h.state_version,
                }));
                continue;
            }
        }
        let seq = h.head.checked_add(1).ok_or_else(|| StoreError::backend(format!("room {room} log is full")))?;
        let seq_db = seq_to_db(seq)?;
        if let Some(u) = &entry.update {
            h.epoch = u.new_epoch;
            h.state_version = h.state_version.wrapping_add(1);
            h.state = Some((&u.state, users_to_db(&u.members), users_to_db(&u.admins)));
            let prune = u.new_epoch.checked_sub(grove_store::STATE_HISTORY).map(u64_to_db);
            history.push((room, u64_to_db(u.new_epoch), &u.state, prune));
            for user in &u.removed {
                removals.insert((room, user.as_bytes().as_slice()), Some((seq_db, u64_to_db(u.new_epoch))));
            }
            for user in &u.added {
                removals.insert((room, user.as_bytes().as_slice()), None);
            }
        }
        h.head = seq;
        h.moved = true;
        e_room.push(room);
        e_seq.push(seq_db);
        e_kind.push(entry.kind.as_str());
        e_epoch.push(u64_to_db(entry.epoch));
        e_sender.push(entry.sender.as_bytes().as_slice());
        e_ts.push(entry.ts);
        e_body.push(&entry.body);
        out[i] = Some(Outcome::Append(AppendOutcome::Appended { seq, epoch: h.epoch }));
    }
    if e_room.is_empty() {
        return Ok(());
    }

    let moved: Vec<(&RoomId, &Head<'_>)> = heads.iter().filter(|(_, h)| h.moved).collect();
    let u_id: Vec<i64> = moved.iter().map(|(id, _)| **id).collect();
    let u_head: Vec<i64> = moved.iter().map(|(_, h)| seq_to_db(h.head)).collect::<Result<_>>()?;
    let u_epoch: Vec<i64> = moved.iter().map(|(_, h)| u64_to_db(h.epoch)).collect();
    let u_version: Vec<i64> = moved.iter().map(|(_, h)| u64_to_db(h.state_version)).collect();
    let u_state: Vec<Option<&[u8]>> = moved.iter().map(|(_, h)| h.state.as_ref().map(|s| s.0)).collect();
    let u_members: Vec<Option<&[u8]>> = moved.iter().map(|(_, h)| h.state.as_ref().map(|s| s.1.as_slice())).collect();
    let u_admins: Vec<Option<&[u8]>> = moved.iter().map(|(_, h)| h.state.as_ref().map(|s| s.2.as_slice())).collect();
    let insert_p: [Param<'_>; 7] = [&e_room, &e_seq, &e_kind, &e_epoch, &e_sender, &e_ts, &e_body];
    let update_p: [Param<'_>; 7] = [&u_id, &u_head, &u_epoch, &u_version, &u_state, &u_members, &u_admins];
    let history_p: Vec<([Param<'_>; 3], Option<[Param<'_>; 2]>)> = history
        .iter()
        .map(|(r, e, s, prune)| ([r as Param<'_>, e, s], prune.as_ref().map(|p| [r as Param<'_>, p])))
        .collect();
    let (mut r_room, mut r_user, mut r_seq, mut r_epoch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut a_room, mut a_user) = (Vec::new(), Vec::new());
    for ((room, user), removal) in &removals {
        match removal {
            Some((seq, epoch)) => {
                r_room.push(*room);
                r_user.push(*user);
                r_seq.push(*seq);
                r_epoch.push(*epoch);
            }
            None => {
                a_room.push(*room);
                a_user.push(*user);
            }
        }
    }
    let removed_p: [Param<'_>; 4] = [&r_room, &r_user, &r_seq, &r_epoch];
    let added_p: [Param<'_>; 2] = [&a_room, &a_user];
    // Pipelined: sent together, run in this order. Each state update upserts its epoch's state
    // and then prunes, in the order of the updates, as `MemoryStore` does them one at a time.
    let mut futs: Vec<BoxFut<'_>> = vec![
        Box::pin(c.client.execute(&c.st.insert_entries, &insert_p)),
        Box::pin(c.client.execute(&c.st.update_rooms, &update_p)),
    ];
    for (upsert, prune) in &history_p {
        futs.push(Box::pin(c.client.execute(&c.st.upsert_state, upsert)));
        if let Some(prune) = prune {
            futs.push(Box::pin(c.client.execute(&c.st.prune_states, prune)));
        }
    }
    if !r_room.is_empty() {
        futs.push(Box::pin(c.client.execute(&c.st.upsert_removals, &removed_p)));
    }
    if !a_room.is_empty() {
        futs.push(Box::pin(c.client.execute(&c.st.delete_removals, &added_p)));
    }
    try_join_all(futs).await?;
    Ok(())
}

/// The second key of an advisory lock for a user: the first four bytes of the id.
fn user_lock_key(u: &UserId) -> i32 {
    let b = u.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

async fn creates(c: &Conn, reqs: &[&Request], out: &mut [Option<Outcome>]) -> Result<(), Fail> {
    let mut ops: Vec<(usize, &NewRoom, u64)> = reqs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Request::CreateRoom(room, max) => Some((i, room, *max)),
            _ => None,
        })
        .collect();
    // Advisory locks in key order, the same order in every instance.
    ops.sort_by_key(|(i, room, _)| (user_lock_key(&room.created_by), *i));
    for (i, room, max) in ops {
        let creator = room.created_by.as_bytes().as_slice();
        let key = user_lock_key(&room.created_by);
        let lock_p: [Param<'_>; 2] = [&LOCK_CREATOR, &key];
        let check_p: [Param<'_>; 2] = [&room.name, &creator];
        // Pipelined; the check's snapshot is taken after the lock is held, so it sees every
        // room that another instance committed for this creator.
        let (_, check) = futures_util::future::try_join(
            c.client.execute(&c.st.advisory_lock, &lock_p),
            c.client.query_one(&c.st.create_check, &check_p),
        )
        .await?;
        let taken: bool = col(&check, 0)?;
        let owned = seq_from_db(col(&check, 1)?)?;
        if taken {
            out[i] = Some(Outcome::CreateRoom(CreateRoomOutcome::NameTaken));
            continue;
        }
        if owned >= max {
            out[i] = Some(Outcome::CreateRoom(CreateRoomOutcome::LimitReached));
            continue;
        }
        let (epoch, members, admins) = (u64_to_db(room.epoch), users_to_db(&room.members), users_to_db(&room.admins));
        let insert_p: [Param<'_>; 9] = [
            &room.name,
            &room.mode.as_str(),
            &room.public,
            &creator,
            &room.created_at,
            &epoch,
            &room.state,
            &members,
            &admins,
        ];
        let row = c.client.query_opt(&c.st.create_insert, &insert_p).await?;
        out[i] = Some(Outcome::CreateRoom(match row {
            // Another instance took the name after our check.
            None => CreateRoomOutcome::NameTaken,
            Some(row) => CreateRoomOutcome::Created(RoomRecord {
                id: col(&row, 0)?,
                name: room.name.clone(),
                mode: room.mode,
                public: room.public,
                created_by: room.created_by,
                created_at: room.created_at,
                epoch: room.epoch,
                head: 0,
                state_version: 0,
                state: room.state.clone(),
                members: room.members.clone(),
                admins: room.admins.clone(),
            }),
        }));
    }
    Ok(())
}

async fn deposits(c: &Conn, reqs: &[&Request], out: &mut [Option<Outcome>]) -> Result<(), Fail> {
    let mut ops: Vec<(usize, &NewMail, MailboxQuota)> = reqs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Request::Deposit(mail, quota) => Some((i, mail, *quota)),
            _ => None,
        })
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    ops.sort_by_key(|(i, mail, _)| (mail.owner.0, *i));
    let mut owners: Vec<&[u8]> = ops.iter().map(|(_, m, _)| m.owner.as_bytes().as_slice()).collect();
    owners.dedup();
    let d_owner: Vec<&[u8]> = ops.iter().map(|(_, m, _)| m.owner.as_bytes().as_slice()).collect();
    let d_sender: Vec<&[u8]> = ops.iter().map(|(_, m, _)| m.sender.as_bytes().as_slice()).collect();
    let d_ts: Vec<i64> = ops.iter().map(|(_, m, _)| m.ts).collect();
    let owners_p: [Param<'_>; 1] = [&owners];
    let live_p: [Param<'_>; 3] = [&d_owner, &d_sender, &d_ts];
    // Pipelined: create missing heads, lock them in owner order, then count (after the locks).
    let (_, heads, live) = futures_util::future::try_join3(
        c.client.execute(&c.st.heads_ensure, &owners_p),
        c.client.query(&c.st.heads_lock, &owners_p),
        c.client.query(&c.st.mail_live, &live_p),
    )
    .await?;
    let mut last: HashMap<&[u8], u64> = HashMap::with_capacity(heads.len());
    for row in &heads {
        last.insert(col(row, 0)?, seq_from_db(col(row, 1)?)?);
    }
    if live.len() != ops.len() {
        return Err(StoreError::backend("mailbox count query returned the wrong number of rows").into());
    }
    let (mut m_owner, mut m_seq, mut m_sender) = (Vec::new(), Vec::new(), Vec::<&[u8]>::new());
    let (mut m_ts, mut m_exp, mut m_body) = (Vec::new(), Vec::new(), Vec::<&[u8]>::new());
    for ((i, mail, quota), row) in ops.iter().zip(&live) {
        let owner = mail.owner.as_bytes().as_slice();
        let (stored, stored_mine) = (seq_from_db(col(row, 0)?)?, seq_from_db(col(row, 1)?)?);
        // Deposits accepted earlier in this group count too.
        let sender = mail.sender.as_bytes().as_slice();
        let earlier = m_owner.iter().zip(&m_sender).zip(&m_exp).filter(|((o, _), e)| **o == owner && **e > mail.ts);
        let (earlier, earlier_mine) = earlier.fold((0, 0), |(n, m), ((_, s), _)| (n + 1, m + u64::from(*s == sender)));
        if stored + earlier >= quota.total {
            out[*i] = Some(Outcome::Deposit(DepositOutcome::Full));
            continue;
        }
        if stored_mine + earlier_mine >= quota.per_sender {
            out[*i] = Some(Outcome::Deposit(DepositOutcome::SenderFull));
            continue;
        }
        let head = last.get_mut(owner).ok_or_else(|| StoreError::backend("mailbox head row missing under its lock"))?;
        let seq = head.checked_add(1).ok_or_else(|| StoreError::backend("mailbox sequence exhausted"))?;
        *head = seq;
        m_owner.push(owner);
        m_seq.push(seq_to_db(seq)?);
        m_sender.push(mail.sender.as_bytes().as_slice());
        m_ts.push(mail.ts);
        m_exp.push(mail.expires_at);
        m_body.push(&mail.body);
        out[*i] = Some(Outcome::Deposit(DepositOutcome::Deposited { seq }));
    }
    if m_owner.is_empty() {
        return Ok(());
    }
    let h_owner: Vec<&[u8]> = last.keys().copied().collect();
    let h_seq: Vec<i64> = last.values().map(|s| seq_to_db(*s)).collect::<Result<_>>()?;
    let insert_p: [Param<'_>; 6] = [&m_owner, &m_seq, &m_sender, &m_ts, &m_exp, &m_body];
    let heads_p: [Param<'_>; 2] = [&h_owner, &h_seq];
    futures_util::future::try_join(
        c.client.execute(&c.st.mail_insert, &insert_p),
        c.client.execute(&c.st.heads_set, &heads_p),
    )
    .await?;
    Ok(())
}

async fn acks_and_purges(c: &Conn, reqs: &[&Request], out: &mut [Option<Outcome>]) -> Result<(), Fail> {
    let mut bounds: Vec<(usize, &[u8], i64)> = Vec::new();
    let mut purges: Vec<(usize, i64)> = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        match r {
            Request::MailboxAck(owner, up_to) => {
                bounds.push((i, owner.as_bytes().as_slice(), i64::try_from(*up_to).unwrap_or(i64::MAX)))
            }
            Request::PurgeExpired(now) => purges.push((i, *now)),
            _ => {}
        }
    }
    if bounds.is_empty() && purges.is_empty() {
        return Ok(());
    }
    bounds.sort_by_key(|(i, owner, _)| (*owner, *i));
    let mut ops: Vec<(usize, Vec<Param<'_>>, bool)> = Vec::with_capacity(bounds.len() + purges.len());
    for (i, owner, up_to) in &bounds {
        ops.push((*i, vec![owner as Param<'_>, up_to], true));
    }
    for (i, now) in &purges {
        ops.push((*i, vec![now as Param<'_>], false));
    }
    let futs = ops.iter().map(|(_, p, ack)| {
        let st = if *ack { &c.st.mail_ack } else { &c.st.mail_purge };
        c.client.execute(st, p)
    });
    let counts = try_join_all(futs).await?;
    for ((i, _, _), n) in ops.iter().zip(counts) {
        out[*i] = Some(Outcome::Count(n));
    }
    Ok(())
}

async fn publishes(c: &Conn, reqs: &[&Request], out: &mut [Option<Outcome>]) -> Result<(), Fail> {
    let mut ops: Vec<(usize, &UserId, &Vec<KeyItemUpload>, u64)> = reqs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Request::PublishKeys(owner, items, cap) => Some((i, owner, items, *cap)),
            _ => None,
        })
        .collect();
    ops.sort_by_key(|(i, owner, _, _)| (user_lock_key(owner), *i));
    for (i, owner, items, cap) in ops {
        let owner_b = owner.as_bytes().as_slice();
        let key = user_lock_key(owner);
        let lock_p: [Param<'_>; 2] = [&LOCK_KEY_OWNER, &key];
        let owner_p: [Param<'_>; 1] = [&owner_b];
        let (_, rows) = futures_util::future::try_join(
            c.client.execute(&c.st.advisory_lock, &lock_p),
            c.client.query(&c.st.key_counts, &owner_p),
        )
        .await?;
        let counts = key_counts_from_rows(&rows)?;
        let mut one_time: u64 = counts.iter().map(|k| k.one_time).sum();
        let mut lr_kinds: Vec<KeyKind> = counts.iter().filter(|k| k.last_resort).map(|k| k.kind).collect();
        for it in items {
            if it.last_resort {
                if !lr_kinds.contains(&it.kind) {
                    lr_kinds.push(it.kind);
                }
            } else {
                one_time += 1;
            }
        }
        // Last-resort items (one per kind, replaced in place) do not count: a user at the cap can
        // always replace them.
        if one_time > cap {
            out[i] = Some(Outcome::Publish(PublishOutcome::LimitReached));
            continue;
        }
        // A later last-resort item of a kind replaces an earlier one of the same upload.
        let keep = |j: usize, it: &KeyItemUpload| {
            !it.last_resort || !items[j + 1..].iter().any(|later| later.last_resort && later.kind == it.kind)
        };
        let kept: Vec<&KeyItemUpload> =
            items.iter().enumerate().filter(|(j, it)| keep(*j, it)).map(|(_, it)| it).collect();
        let replaced: Vec<&str> = kept.iter().filter(|it| it.last_resort).map(|it| it.kind.as_str()).collect();
        let k_kind: Vec<&str> = kept.iter().map(|it| it.kind.as_str()).collect();
        let k_lr: Vec<bool> = kept.iter().map(|it| it.last_resort).collect();
        let k_data: Vec<&[u8]> = kept.iter().map(|it| it.data.as_slice()).collect();
        let delete_p: [Param<'_>; 2] = [&owner_b, &replaced];
        let insert_p: [Param<'_>; 4] = [&owner_b, &k_kind, &k_lr, &k_data];
        let (_, _, rows) = futures_util::future::try_join3(
            c.client.execute(&c.st.key_delete_lr, &delete_p),
            c.client.execute(&c.st.key_insert, &insert_p),
            c.client.query(&c.st.key_counts, &owner_p),
        )
        .await?;
        out[i] = Some(Outcome::Publish(PublishOutcome::Stored(key_counts_from_rows(&rows)?)));
    }
    Ok(())
}

async fn claims(c: &Conn, reqs: &[&Request], out: &mut [Option<Outcome>]) -> Result<(), Fail> {
    let ops: Vec<(usize, &UserId, KeyKind, &[u8], &str)> = reqs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Request::ClaimKey(owner, kind) => Some((i, owner, *kind, owner.as_bytes().as_slice(), kind.as_str())),
            _ => None,
        })
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    let params: Vec<[Param<'_>; 2]> = ops.iter().map(|(_, _, _, o, k)| [o as Param<'_>, k]).collect();
    let rows = try_join_all(params.iter().map(|p| c.client.query_opt(&c.st.claim, p))).await?;
    for ((i, owner, kind, _, _), row) in ops.iter().zip(rows) {
        let claimed = match row {
            None => None,
            Some(row) => {
                Some(ClaimedKey { user: **owner, kind: *kind, last_resort: col(&row, 1)?, data: col(&row, 0)? })
            }
        };
        out[*i] = Some(Outcome::Claim(claimed));
    }
    Ok(())
}
