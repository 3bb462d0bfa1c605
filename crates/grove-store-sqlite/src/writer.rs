//! The writer thread: the only connection that writes, committing queued ops in groups.
//!
//! The thread blocks for one op, drains whatever else is queued (up to [`MAX_BATCH`]), runs them
//! all inside one `BEGIN IMMEDIATE … COMMIT`, each under its own `SAVEPOINT` (except plain
//! appends, see below), and answers the callers only after `COMMIT` returned.
//!
//! Plain appends (no state update) are the hot path: they run one `INSERT` each, with no
//! savepoint — they cannot fail semantically, and a failing statement is undone by SQLite's
//! statement journal — and take their sequence numbers from a per-batch cache of room heads,
//! written back with one `UPDATE` per room just before `COMMIT`. An op's semantic outcome (conflict, name taken, full,
//! limit reached) is decided by reading inside the transaction before writing; an op that fails
//! with an error is rolled back to its savepoint without touching the rest of the batch. If the
//! transaction as a whole cannot commit, every op of the batch is answered with
//! [`StoreError::Backend`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use grove_store::{
    AppendOutcome, CreateRoomOutcome, DepositOutcome, MailboxQuota, NewEntry, NewMail, NewRoom, PublishOutcome, Result,
    RoomId, RoomRecord, StoreError,
};
use grove_wire::api::{ClaimedKey, KeyItemUpload, KeyKind};
use grove_wire::UserId;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{db_err, key_counts, key_kind_from_db, seq_from_db, seq_to_db, u64_from_db, u64_to_db, users_to_db};

/// The most ops committed in one transaction.
pub(crate) const MAX_BATCH: usize = 1_000;

/// A caller's reply slot.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A write, as sent to the writer thread.
pub(crate) enum Op {
    CreateRoom(NewRoom, u64, Reply<CreateRoomOutcome>),
    Append(RoomId, NewEntry, Reply<AppendOutcome>),
    Deposit(NewMail, MailboxQuota, Reply<DepositOutcome>),
    MailboxAck(UserId, u64, Reply<u64>),
    PurgeExpired(i64, Reply<u64>),
    PublishKeys(UserId, Vec<KeyItemUpload>, u64, Reply<PublishOutcome>),
    ClaimKey(UserId, KeyKind, Reply<Option<ClaimedKey>>),
    File(crate::files::FileOp),
}

/// Counters shared between the writer thread and the store handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) ops: AtomicU64,
}

/// An executed op whose reply waits for the commit.
pub(crate) trait Finish: Send {
    /// Whether the op itself failed (and must be rolled back to its savepoint).
    fn failed(&self) -> bool {
        self.error().is_some()
    }
    /// The op's own error, if it failed.
    fn error(&self) -> Option<&StoreError>;
    /// Sends the op's own result, or `err` if the transaction did not commit.
    fn finish(self: Box<Self>, err: Option<&StoreError>);
}

struct Pending<T> {
    reply: Reply<T>,
    result: Result<T>,
}

impl<T: Send> Finish for Pending<T> {
    fn error(&self) -> Option<&StoreError> {
        self.result.as_ref().err()
    }

    fn finish(self: Box<Self>, err: Option<&StoreError>) {
        let result = match err {
            Some(e) => Err(e.clone()),
            None => self.result,
        };
        // The caller may have gone away (its future dropped); the write stands regardless.
        let _ = self.reply.send(result);
    }
}

pub(crate) fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T>) -> Box<dyn Finish> {
    Box::new(Pending { reply, result })
}

/// A room's counters as the open transaction sees them.
#[derive(Debug, Clone, Copy)]
struct Head {
    epoch: u64,
    head: u64,
    state_version: u64,
    /// `head` moved past what the rooms table says; written back before COMMIT.
    dirty: bool,
}

/// Per-transaction cache of room heads. Valid only inside one transaction: the writer is the
/// only writer, so nothing else moves them meanwhile.
#[derive(Debug, Default)]
struct Heads(HashMap<RoomId, Head>);

impl Heads {
    fn get(&mut self, conn: &Connection, room: RoomId) -> Result<Option<Head>> {
        if let Some(h) = self.0.get(&room) {
            return Ok(Some(*h));
        }
        let row = conn
            .prepare_cached("SELECT epoch, head, state_version FROM rooms WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([room], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))).optional()
            })
            .map_err(db_err)?;
        let Some((epoch, head, state_version)) = row else { return Ok(None) };
        let h = Head {
            epoch: u64_from_db(epoch),
            head: seq_from_db(head)?,
            state_version: u64_from_db(state_version),
            dirty: false,
        };
        self.0.insert(room, h);
        Ok(Some(h))
    }

    /// Writes back every head that moved.
    fn flush(&mut self, conn: &Connection) -> Result<()> {
        for (room, h) in self.0.iter_mut().filter(|(_, h)| h.dirty) {
            let head = seq_to_db(h.head)?;
            conn.prepare_cached("UPDATE rooms SET head = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![room, head]))
                .map_err(db_err)?;
            h.dirty = false;
        }
        Ok(())
    }
}

impl Op {
    /// Whether the op runs without its own savepoint.
    fn is_plain_append(&self) -> bool {
        matches!(self, Op::Append(_, entry, _) if entry.update.is_none())
    }

    /// Runs the op on the writer connection, inside the open transaction.
    fn run(self, conn: &Connection, heads: &mut Heads) -> Box<dyn Finish> {
        match self {
            Op::CreateRoom(room, max, reply) => pending(reply, create_room(conn, room, max)),
            Op::Append(room, entry, reply) => pending(reply, append(conn, heads, room, entry)),
            Op::Deposit(mail, quota, reply) => pending(reply, deposit(conn, mail, quota)),
            Op::MailboxAck(owner, up_to, reply) => pending(reply, mailbox_ack(conn, &owner, up_to)),
            Op::PurgeExpired(now, reply) => pending(reply, purge_expired(conn, now)),
            Op::PublishKeys(owner, items, cap, reply) => pending(reply, publish_keys(conn, &owner, items, cap)),
            Op::ClaimKey(owner, kind, reply) => pending(reply, claim_key(conn, &owner, kind)),
            Op::File(op) => op.run(conn),
        }
    }

    /// Answers the op without running it.
    fn fail(self, err: &StoreError) {
        let e = err.clone();
        // As in `Pending::finish`: a caller that went away needs no answer.
        match self {
            Op::CreateRoom(_, _, r) => drop(r.send(Err(e))),
            Op::Append(_, _, r) => drop(r.send(Err(e))),
            Op::Deposit(_, _, r) => drop(r.send(Err(e))),
            Op::MailboxAck(_, _, r) => drop(r.send(Err(e))),
            Op::PurgeExpired(_, r) => drop(r.send(Err(e))),
            Op::PublishKeys(_, _, _, r) => drop(r.send(Err(e))),
            Op::ClaimKey(_, _, r) => drop(r.send(Err(e))),
            Op::File(op) => op.fail(e),
        }
    }
}

/// Where a committed batch's answers are sent from.
///
/// Answering each caller from the writer thread wakes the async runtime once per op: the
/// runtime's thread, on the same core, preempts the writer, runs the woken task (which queues
/// its next op), parks again, and the next answer wakes it again: two context switches and a
/// syscall per op (perf: a quarter of the writer thread's time under load). Handing the whole
/// batch to one task on the runtime wakes it once; that task then wakes the callers from
/// inside the runtime, where a wake is a push onto its own run queue.
pub(crate) struct Answers(Option<mpsc::UnboundedSender<Vec<Box<dyn Finish>>>>);

impl Answers {
    /// A task on the runtime this is called from (none outside one: answers then come from the
    /// writer thread).
    pub(crate) fn on_current_runtime() -> Answers {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return Answers(None) };
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Box<dyn Finish>>>();
        runtime.spawn(async move {
            while let Some(batch) = rx.recv().await {
                for d in batch {
                    d.finish(None);
                }
            }
        });
        Answers(Some(tx))
    }

    /// Answers every op of a committed batch.
    fn committed(&self, done: Vec<Box<dyn Finish>>) {
        let done = match &self.0 {
            // The runtime is gone (shutting down): answer from here.
            Some(tx) => match tx.send(done) {
                Ok(()) => return,
                Err(mpsc::error::SendError(done)) => done,
            },
            None => done,
        };
        for d in done {
            d.finish(None);
        }
    }
}

/// The writer thread's body: runs until every sender is gone and the queue is empty.
pub(crate) fn run(conn: Connection, mut rx: mpsc::Receiver<Op>, counters: Arc<Counters>, answers: Answers) {
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    // `blocking_recv` yields every op still queued before it reports the closed channel, so
    // whatever was sent before the store was dropped is executed and answered.
    while let Some(op) = rx.blocking_recv() {
        batch.push(op);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        run_batch(&conn, &mut batch, &counters, &answers);
    }
    tracing::debug!("sqlite writer thread exiting");
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop).map_err(db_err)
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = exec(conn, "ROLLBACK") {
            tracing::error!("sqlite rollback failed: {}", e.detail());
        }
    }
}

/// Runs one batch in one transaction and answers every op in it.
fn run_batch(conn: &Connection, batch: &mut Vec<Op>, counters: &Counters, answers: &Answers) {
    let n = batch.len() as u64;
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::error!("sqlite begin failed: {}", e.detail());
        rollback(conn);
        for op in batch.drain(..) {
            op.fail(&e);
        }
        return;
    }
    let mut done: Vec<Box<dyn Finish>> = Vec::with_capacity(batch.len());
    let mut abort: Option<StoreError> = None;
    let mut heads = Heads::default();
    let mut ops = batch.drain(..);
    for op in ops.by_ref() {
        if op.is_plain_append() {
            let d = op.run(conn, &mut heads);
            let ended = ended_by(d.error(), conn);
            done.push(d);
            // Some errors (I/O, disk full) end the whole transaction, not just the statement.
            if let Some(e) = ended {
                abort = Some(e);
                break;
            }
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT op") {
            op.fail(&e);
            abort = Some(e);
            break;
        }
        let d = op.run(conn, &mut heads);
        if let Some(e) = ended_by(d.error(), conn) {
            done.push(d);
            abort = Some(e);
            break;
        }
        let end = if d.failed() {
            // The cache needs no repair: an op moves it only after all its statements succeeded.
            exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op"))
        } else {
            exec(conn, "RELEASE op")
        };
        done.push(d);
        if let Err(e) = end {
            abort = Some(e);
            break;
        }
    }
    if abort.is_none() {
        if let Err(e) = heads.flush(conn) {
            abort = Some(e);
        }
    }
    if let Some(e) = abort {
        tracing::error!("sqlite batch aborted: {}", e.detail());
        rollback(conn);
        for op in ops {
            op.fail(&e);
        }
        for d in done {
            d.finish(Some(&e));
        }
        return;
    }
    drop(ops);
    if let Err(e) = exec(conn, "COMMIT") {
        tracing::error!("sqlite commit failed: {}", e.detail());
        rollback(conn);
        let e = match e {
            StoreError::Full { .. } => StoreError::full("commit failed").caused_by(e),
            e => StoreError::backend("commit failed").caused_by(e),
        };
        for d in done {
            d.finish(Some(&e));
        }
        return;
    }
    counters.transactions.fetch_add(1, Ordering::Relaxed);
    counters.ops.fetch_add(n, Ordering::Relaxed);
    answers.committed(done);
}

/// When an op's error ended the whole transaction (SQLite rolls it back on some errors: I/O,
/// disk full), the error the whole batch is answered with: `Full` stays `Full`, so that every
/// caller learns the storage is full rather than "failed".
fn ended_by(error: Option<&StoreError>, conn: &Connection) -> Option<StoreError> {
    let e = error?;
    if !conn.is_autocommit() {
        return None;
    }
    Some(match e {
        StoreError::Full { .. } => StoreError::full("the transaction ended: the storage is full").caused_by(e.clone()),
        _ => StoreError::backend("the transaction ended after a failed write").caused_by(e.clone()),
    })
}

fn create_room(conn: &Connection, room: NewRoom, max_per_creator: u64) -> Result<CreateRoomOutcome> {
    let taken = conn
        .prepare_cached("SELECT 1 FROM rooms WHERE name = ?1")
        .and_then(|mut s| s.exists([&room.name]))
        .map_err(db_err)?;
    if taken {
        return Ok(CreateRoomOutcome::NameTaken);
    }
    let owned: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM rooms WHERE created_by = ?1")
        .and_then(|mut s| s.query_row([room.created_by.as_bytes().as_slice()], |r| r.get(0)))
        .map_err(db_err)?;
    if seq_from_db(owned)? >= max_per_creator {
        return Ok(CreateRoomOutcome::LimitReached);
    }
    conn.prepare_cached(
        "INSERT INTO rooms (name, mode, public, created_by, created_at, epoch, head, \
         state_version, state, members, admins) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            room.name,
            room.mode.as_str(),
            room.public,
            room.created_by.as_bytes().as_slice(),
            room.created_at,
            u64_to_db(room.epoch),
            room.state,
            users_to_db(&room.members),
            users_to_db(&room.admins),
        ])
    })
    .map_err(db_err)?;
    let id = conn.last_insert_rowid();
    record_state(conn, id, room.epoch, &room.state)?;
    Ok(CreateRoomOutcome::Created(RoomRecord {
        id,
        name: room.name,
        mode: room.mode,
        public: room.public,
        created_by: room.created_by,
        created_at: room.created_at,
        epoch: room.epoch,
        head: 0,
        state_version: 0,
        state: room.state,
        members: room.members,
        admins: room.admins,
    }))
}

fn append(conn: &Connection, heads: &mut Heads, room: RoomId, entry: NewEntry) -> Result<AppendOutcome> {
    let Some(current) = heads.get(conn, room)? else {
        return Ok(AppendOutcome::NoSuchRoom);
    };
    let seq = current.head.checked_add(1).ok_or_else(|| StoreError::backend(format!("room {room} log is full")))?;
    let seq_db = seq_to_db(seq)?;
    let mut next = Head { head: seq, dirty: true, ..current };
    if let Some(update) = &entry.update {
        if update.expected_state_version != current.state_version {
            return Ok(AppendOutcome::Conflict {
                epoch: current.epoch,
                head: current.head,
                state_version: current.state_version,
            });
        }
        next.epoch = update.new_epoch;
        next.state_version = current.state_version.wrapping_add(1);
        conn.prepare_cached(
            "UPDATE rooms SET head = ?2, epoch = ?3, state_version = ?4, state = ?5, \
             members = ?6, admins = ?7 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                room,
                seq_db,
                u64_to_db(next.epoch),
                u64_to_db(next.state_version),
                &update.state,
                users_to_db(&update.members),
                users_to_db(&update.admins),
            ])
        })
        .map_err(db_err)?;
        record_state(conn, room, next.epoch, &update.state)?;
        record_removals(conn, room, seq_db, next.epoch, &update.removed, &update.added)?;
        next.dirty = false;
    }
    conn.prepare_cached(
        "INSERT INTO entries (room, seq, kind, epoch, sender, ts, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            room,
            seq_db,
            entry.kind.as_str(),
            u64_to_db(entry.epoch),
            entry.sender.as_bytes().as_slice(),
            entry.ts,
            entry.body,
        ])
    })
    .map_err(db_err)?;
    // Only now, with every statement done, does the cache move on.
    heads.0.insert(room, next);
    Ok(AppendOutcome::Appended { seq, epoch: next.epoch })
}

/// Keeps the room's state as of `epoch`, and forgets epochs older than the history window.
fn record_state(conn: &Connection, room: RoomId, epoch: u64, state: &[u8]) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO room_states (room, epoch, state) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![room, u64_to_db(epoch), state]))
        .map_err(db_err)?;
    if let Some(oldest) = epoch.checked_sub(grove_store::STATE_HISTORY) {
        conn.prepare_cached("DELETE FROM room_states WHERE room = ?1 AND epoch <= ?2")
            .and_then(|mut s| s.execute(params![room, u64_to_db(oldest)]))
            .map_err(db_err)?;
    }
    Ok(())
}

/// Records where the removed members' reading ends (this entry), and forgets the removal of
/// the members added (back).
fn record_removals(
    conn: &Connection,
    room: RoomId,
    seq: i64,
    epoch: u64,
    removed: &[UserId],
    added: &[UserId],
) -> Result<()> {
    for user in removed {
        conn.prepare_cached("INSERT OR REPLACE INTO removals (room, user, seq, epoch) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![room, user.as_bytes().as_slice(), seq, u64_to_db(epoch)]))
            .map_err(db_err)?;
    }
    for user in added {
        conn.prepare_cached("DELETE FROM removals WHERE room = ?1 AND user = ?2")
            .and_then(|mut s| s.execute(params![room, user.as_bytes().as_slice()]))
            .map_err(db_err)?;
    }
    Ok(())
}

fn deposit(conn: &Connection, mail: NewMail, quota: MailboxQuota) -> Result<DepositOutcome> {
    let owner = mail.owner.as_bytes().as_slice();
    let (live, mine): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(sender = ?3), 0) FROM mailbox WHERE owner = ?1 AND expires_at > ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![owner, mail.ts, mail.sender.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .map_err(db_err)?;
    if seq_from_db(live)? >= quota.total {
        return Ok(DepositOutcome::Full);
    }
    if seq_from_db(mine)? >= quota.per_sender {
        return Ok(DepositOutcome::SenderFull);
    }
    let last: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM mailbox_heads WHERE owner = ?1")
        .and_then(|mut s| s.query_row([owner], |r| r.get(0)).optional())
        .map_err(db_err)?;
    let seq = seq_from_db(last.unwrap_or(0))?
        .checked_add(1)
        .ok_or_else(|| StoreError::backend("mailbox sequence exhausted"))?;
    let seq_db = seq_to_db(seq)?;
    conn.prepare_cached(
        "INSERT INTO mailbox_heads (owner, last_seq) VALUES (?1, ?2) \
         ON CONFLICT (owner) DO UPDATE SET last_seq = excluded.last_seq",
    )
    .and_then(|mut s| s.execute(params![owner, seq_db]))
    .map_err(db_err)?;
    conn.prepare_cached(
        "INSERT INTO mailbox (owner, seq, sender, ts, expires_at, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![owner, seq_db, mail.sender.as_bytes().as_slice(), mail.ts, mail.expires_at, mail.body,])
    })
    .map_err(db_err)?;
    Ok(DepositOutcome::Deposited { seq })
}

fn mailbox_ack(conn: &Connection, owner: &UserId, up_to: u64) -> Result<u64> {
    let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
    let n = conn
        .prepare_cached("DELETE FROM mailbox WHERE owner = ?1 AND seq <= ?2")
        .and_then(|mut s| s.execute(params![owner.as_bytes().as_slice(), up_to]))
        .map_err(db_err)?;
    Ok(n as u64)
}

fn purge_expired(conn: &Connection, now: i64) -> Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM mailbox WHERE expires_at <= ?1")
        .and_then(|mut s| s.execute([now]))
        .map_err(db_err)?;
    Ok(n as u64)
}

fn publish_keys(conn: &Connection, owner: &UserId, items: Vec<KeyItemUpload>, cap: u64) -> Result<PublishOutcome> {
    let owner_b = owner.as_bytes().as_slice();
    let one_time: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM key_items WHERE owner = ?1 AND last_resort = 0")
        .and_then(|mut s| s.query_row([owner_b], |r| r.get(0)))
        .map_err(db_err)?;
    let mut one_time = seq_from_db(one_time)?;
    let mut lr_kinds: Vec<KeyKind> = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT kind FROM key_items WHERE owner = ?1 AND last_resort = 1")
            .map_err(db_err)?;
        let mut rows = stmt.query([owner_b]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let kind: String = row.get(0).map_err(db_err)?;
            lr_kinds.push(key_kind_from_db(&kind)?);
        }
    }
    for it in &items {
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
        return Ok(PublishOutcome::LimitReached);
    }
    for it in items {
        if it.last_resort {
            conn.prepare_cached("DELETE FROM key_items WHERE owner = ?1 AND kind = ?2 AND last_resort = 1")
                .and_then(|mut s| s.execute(params![owner_b, it.kind.as_str()]))
                .map_err(db_err)?;
        }
        conn.prepare_cached("INSERT INTO key_items (owner, kind, last_resort, data) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![owner_b, it.kind.as_str(), it.last_resort, it.data]))
            .map_err(db_err)?;
    }
    Ok(PublishOutcome::Stored(key_counts(conn, owner)?))
}

fn claim_key(conn: &Connection, owner: &UserId, kind: KeyKind) -> Result<Option<ClaimedKey>> {
    let owner_b = owner.as_bytes().as_slice();
    let one_time: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT id, data FROM key_items WHERE owner = ?1 AND kind = ?2 AND last_resort = 0 \
             ORDER BY id LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![owner_b, kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_err)?;
    if let Some((id, data)) = one_time {
        conn.prepare_cached("DELETE FROM key_items WHERE id = ?1").and_then(|mut s| s.execute([id])).map_err(db_err)?;
        return Ok(Some(ClaimedKey { user: *owner, kind, last_resort: false, data }));
    }
    let last_resort: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT data FROM key_items WHERE owner = ?1 AND kind = ?2 AND last_resort = 1 \
             ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![owner_b, kind.as_str()], |r| r.get(0)).optional())
        .map_err(db_err)?;
    Ok(last_resort.map(|data| ClaimedKey { user: *owner, kind, last_resort: true, data }))
}
