//! The listener task: one connection per store that `LISTEN`s on [`NOTIFY_CHANNEL`] and turns
//! the other instances' notifications into [`ForeignWrites`] for the server.
//!
//! A notification's payload is `ORIGIN;ROOMS;MAILBOXES` (see [`payload`]): `ORIGIN` names the
//! store that committed the group, so a store ignores its own groups (its server saw those
//! writes directly); `ROOMS` lists the room ids appended to and `MAILBOXES` the owners (hex)
//! deposited to, each `*` when the list would not fit in PostgreSQL's 8,000-byte payload. A
//! room id written `-ID` names a room the operator deleted.
//!
//! PostgreSQL delivers a notification to every session that was listening when the notifying
//! transaction committed, and to no other. So after every (re)connection, once `LISTEN` is in
//! force, the task announces [`ForeignWrites::everything`]: whatever was committed while it was
//! not listening is then found by re-reading, and a missed notification delays entries but
//! never loses them. A connection that dies silently is found by a ping every
//! [`PING_EVERY`]; the task reconnects with a growing pause, up to [`MAX_PAUSE`].

use std::time::Duration;

use futures_util::StreamExt;
use grove_store::{ForeignWrites, RoomId, StoreError};
use grove_wire::UserId;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::codec::db_err;
use crate::NOTIFY_CHANNEL;

/// How often the listener checks that its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(5);

/// How long a ping may take before the connection counts as dead.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The first and the longest pause before reconnecting.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The longest list a payload carries (PostgreSQL's limit is 8,000 bytes for the whole).
const LIST_MAX: usize = 3_900;

/// The payload announcing a committed group: `ORIGIN;ROOMS;MAILBOXES`.
pub(crate) fn payload(origin: &str, rooms: &[RoomId], mailboxes: &[UserId]) -> String {
    let rooms = rooms.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let mailboxes = mailboxes.iter().map(UserId::to_string).collect::<Vec<_>>().join(",");
    let cap = |s: String| if s.len() > LIST_MAX { "*".to_string() } else { s };
    format!("{origin};{};{}", cap(rooms), cap(mailboxes))
}

/// What a payload announces, or `None` if it is this store's own (or not grove's).
pub(crate) fn parse(own_origin: &str, payload: &str) -> Option<ForeignWrites> {
    let mut parts = payload.splitn(3, ';');
    let (origin, rooms, mailboxes) = (parts.next()?, parts.next()?, parts.next()?);
    if origin == own_origin {
        return None;
    }
    let mut w = ForeignWrites::default();
    if rooms == "*" || mailboxes == "*" {
        w.everything = true;
        return Some(w);
    }
    for r in rooms.split(',').filter(|s| !s.is_empty()) {
        let (list, id) = match r.strip_prefix('-') {
            Some(deleted) => (&mut w.deleted_rooms, deleted),
            None => (&mut w.rooms, r),
        };
        match id.parse() {
            Ok(id) => list.push(id),
            Err(_) => return Some(ForeignWrites::everything()),
        }
    }
    for m in mailboxes.split(',').filter(|s| !s.is_empty()) {
        match m.parse() {
            Ok(u) => w.mailboxes.push(u),
            Err(_) => return Some(ForeignWrites::everything()),
        }
    }
    Some(w)
}

/// A listening connection: the client (kept to ping and to keep the session open) and the
/// notifications its connection task forwards.
pub(crate) struct Listening {
    client: Client,
    notes: mpsc::UnboundedReceiver<String>,
}

/// Connects and `LISTEN`s; notifications flow from the moment this returns.
pub(crate) async fn listen(config: &tokio_postgres::Config) -> Result<Listening, StoreError> {
    let mut config = config.clone();
    // Named apart from the writer and the readers, for operators (and tests) in pg_stat_activity.
    let name = format!("{}-listener", config.get_application_name().unwrap_or("grove"));
    config.application_name(&name);
    let (client, mut conn) = config.connect(NoTls).await.map_err(db_err)?;
    let (tx, notes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("postgres listener connection ended: {e}");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await.map_err(db_err)?;
    Ok(Listening { client, notes })
}

/// Forwards the other instances' notifications to `out` until the store is dropped (the task
/// is aborted), reconnecting as needed. `first` is the connection [`listen`] opened at start.
pub(crate) async fn run(
    config: tokio_postgres::Config,
    origin: String,
    first: Listening,
    out: broadcast::Sender<ForeignWrites>,
) {
    let mut current = Some(first);
    let mut pause = FIRST_PAUSE;
    loop {
        let Some(mut l) = current.take() else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
            match listen(&config).await {
                Ok(l) => {
                    tracing::info!("postgres listener reconnected");
                    // Whatever committed while nobody listened: re-check everything.
                    let _ = out.send(ForeignWrites::everything());
                    pause = FIRST_PAUSE;
                    current = Some(l);
                }
                Err(e) => tracing::warn!("postgres listener cannot reconnect: {e}"),
            }
            continue;
        };
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                note = l.notes.recv() => match note {
                    Some(p) => {
                        if let Some(w) = parse(&origin, &p) {
                            // No receiver (no server yet) is fine: nothing is loaded to refresh.
                            let _ = out.send(w);
                        }
                    }
                    None => break,
                },
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(PING_TIMEOUT, l.client.simple_query("")).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        tracing::warn!("postgres listener connection is not answering; reconnecting");
                        break;
                    }
                }
            }
        }
        // Connection lost: `current` stays `None`, so the next turn reconnects.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_own_ones_are_ignored() {
        let bob = UserId([7; 32]);
        let p = payload("a1", &[3, 9], &[bob]);
        assert_eq!(parse("a1", &p), None);
        assert_eq!(
            parse("b2", &p),
            Some(ForeignWrites { rooms: vec![3, 9], mailboxes: vec![bob], everything: false, deleted_rooms: vec![] })
        );
        assert_eq!(
            parse("b2", "admin;-7;"),
            Some(ForeignWrites { deleted_rooms: vec![7], ..ForeignWrites::default() }),
            "a deleted room"
        );
        let many: Vec<RoomId> = (0..1_000_000).step_by(997).collect();
        assert_eq!(parse("b2", &payload("a1", &many, &[])), Some(ForeignWrites::everything()));
        assert_eq!(parse("b2", "a1;x;"), Some(ForeignWrites::everything()));
        assert_eq!(parse("b2", "legacy payload"), None);
    }
}
