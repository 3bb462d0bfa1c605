//! The push client: new log entries of the profile's rooms and new mailbox messages as they
//! arrive, over one push WebSocket (`/v1/push`) per server, or by long polls where a proxy
//! refuses WebSockets.
//!
//! It keeps, per server, the last sequence number it delivered of each room and of the
//! mailbox. A (re)connection subscribes from those cursors, so what it delivers has no gap and
//! no duplicate however often the connection drops: the server sends the backlog after each
//! cursor, then live entries, in order. Reconnection waits with exponential backoff and jitter.
//!
//! The client does not apply anything: it hands [`Feed`] items to whoever owns the profile
//! (see [`crate::profile::Profile::apply_pushed`]), which checks them against its own cursors
//! once more (another process on the profile may have applied some meanwhile).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grove_wire::api::{Appended, Entry, MailboxEntry, PushEvent, PushRequest, RoomCursor};
use grove_wire::ApiError;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite;

use crate::transport::{Server, SocketSend, TransportError};

/// How long a long poll waits on the server.
const POLL_WAIT: u64 = 25;
/// Entries asked for per long poll.
const POLL_PAGE: u32 = 500;
/// Feed items read from the socket and not yet taken by the feed's reader, at most.
const PENDING_FEED: usize = 4096;
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the push client reaches one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected over the push WebSocket.
    Live,
    /// WebSockets are refused on the way (a proxy): long polls instead.
    Polling,
    /// Not connected; the next attempt is in `retry_in`.
    Down {
        /// Why the last attempt failed.
        error: String,
        /// When the next attempt starts.
        retry_in: Duration,
        /// Attempts since the last success.
        attempt: u32,
    },
}

/// What the push client hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// New entries of a room, in order, each after the previous one delivered.
    Entries {
        /// The room's server (its public URL, as in the room's link).
        server: String,
        /// The room's name on that server.
        room: String,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// New mailbox messages on the home server.
    Mail {
        /// The messages.
        entries: Vec<MailboxEntry>,
    },
    /// The server refused a room's subscription or ended it (e.g. `not_member`).
    RoomError {
        /// The room's server.
        server: String,
        /// The room's name.
        room: String,
        /// What the server said.
        error: ApiError,
    },
    /// The connection to a server changed state.
    Link {
        /// The server.
        server: String,
        /// Its state.
        link: Link,
    },
}

/// Subscribes more rooms (or the mailbox) on a running server connection.
#[derive(Debug)]
enum Command {
    Room { name: String, after: u64 },
}

/// One server's connection task.
#[derive(Debug)]
struct Connection {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    /// The handle whose appends the connection carries while it is open.
    server: Server,
}

/// The push client of one profile: a connection task per server.
#[derive(Debug)]
pub struct PushClient {
    feed: mpsc::Sender<Feed>,
    connections: HashMap<String, Connection>,
}

impl Drop for PushClient {
    fn drop(&mut self) {
        for c in self.connections.values() {
            c.task.abort();
            // Appends go back to HTTP at once, not only once the task has wound down.
            c.server.attach_socket(None);
        }
    }
}

impl PushClient {
    /// A push client that hands what arrives to `feed`.
    pub fn new(feed: mpsc::Sender<Feed>) -> PushClient {
        PushClient { feed, connections: HashMap::new() }
    }

    /// Follows the rooms `rooms` (name and last applied sequence number) on the server whose
    /// public URL is `public` (reached through `server`), and its mailbox after
    /// `mailbox_after` if this is the home server. A server already followed gets the rooms
    /// it does not follow yet added.
    pub fn follow(&mut self, public: &str, server: Server, rooms: Vec<(String, u64)>, mailbox_after: Option<u64>) {
        if let Some(c) = self.connections.get(public) {
            if !c.task.is_finished() {
                for (name, after) in rooms {
                    let _ = c.commands.send(Command::Room { name, after });
                }
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Followed {
            public: public.to_string(),
            server: server.clone(),
            rooms: rooms.into_iter().collect(),
            mailbox: mailbox_after,
            pending: VecDeque::new(),
            feed: self.feed.clone(),
        };
        let task = tokio::spawn(state.run(rx));
        self.connections.insert(public.to_string(), Connection { commands: tx, task, server });
    }

    /// The servers followed (public URLs).
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.connections.keys().map(String::as_str)
    }
}

/// What one connection task follows, with the cursors of what it handed over.
struct Followed {
    /// What was read from the socket and is not yet handed over, in order (the cursors
    /// above count it as delivered).
    pending: VecDeque<Feed>,
    public: String,
    server: Server,
    rooms: HashMap<String, u64>,
    mailbox: Option<u64>,
    feed: mpsc::Sender<Feed>,
}

/// How a connection attempt ended.
enum Ended {
    /// The feed's receiver is gone: stop.
    Stop,
    /// Dropped or failed; try again.
    Retry(String),
    /// The WebSocket upgrade was refused with this HTTP status: poll instead.
    Refused(String),
}

impl Followed {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut attempt: u32 = 0;
        loop {
            let ended = self.websocket(&mut commands, &mut attempt).await;
            // What was read before the connection ended is handed over before anything else.
            while let Some(feed) = self.pending.pop_front() {
                if !self.tell(feed).await {
                    return;
                }
            }
            match ended {
                Ended::Stop => return,
                Ended::Refused(why) => {
                    tracing::info!(server = self.public, why, "the push WebSocket is refused; long polling instead");
                    self.poll(commands).await;
                    return;
                }
                Ended::Retry(error) => {
                    attempt = attempt.saturating_add(1);
                    let retry_in = backoff(attempt);
                    let link = Link::Down { error, retry_in, attempt };
                    if !self.tell(Feed::Link { server: self.public.clone(), link }).await {
                        return;
                    }
                    let sleep = tokio::time::sleep(retry_in);
                    tokio::pin!(sleep);
                    // Rooms joined while down are followed on the next connection.
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            cmd = commands.recv() => match cmd {
                                Some(Command::Room { name, after }) => { self.rooms.entry(name).or_insert(after); }
                                None => return,
                            },
                        }
                    }
                }
            }
        }
    }

    async fn tell(&self, feed: Feed) -> bool {
        self.feed.send(feed).await.is_ok()
    }

    fn subscribe_frame(&self, rooms: Vec<RoomCursor>, mailbox_after: Option<u64>) -> String {
        serde_json::to_string(&PushRequest::Subscribe { rooms, mailbox_after }).unwrap_or_default()
    }

    /// One WebSocket connection, from connecting to its end. While it is open, the server
    /// handle's appends go over it (see [`Server::append`]).
    async fn websocket(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>, attempt: &mut u32) -> Ended {
        let (sends, mut outgoing) = mpsc::unbounded_channel();
        let ended = self.connected(commands, attempt, sends, &mut outgoing).await;
        self.server.attach_socket(None);
        ended
    }

    async fn connected(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        attempt: &mut u32,
        sends: crate::transport::SocketSender,
        outgoing: &mut mpsc::UnboundedReceiver<SocketSend>,
    ) -> Ended {
        let offer = grove_wire::push::Offer::new(&mut rand::rngs::OsRng);
        let request = match self.server.push_request(Some(&offer)).await {
            Ok(r) => r,
            Err(e) => return Ended::Retry(e.to_string()),
        };
        let config = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(16 << 20));
        let (mut ws, frames) = match self.server.net().websocket(request, config).await {
            Ok((ws, response)) => {
                let header =
                    |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let answer =
                    header(grove_wire::push::HEADER_PUSH_KEY).zip(header(grove_wire::push::HEADER_PUSH_SIGNATURE));
                let frames = match (answer, self.server.server_key().await) {
                    (Some((half, signature)), Ok(server_key)) => {
                        match offer.accept(&self.server.user(), &server_key, &half, &signature) {
                            Ok(key) => Some(key),
                            Err(e) => {
                                return Ended::Retry(format!(
                                    "{}: the push connection's binding: {e}",
                                    self.server.base()
                                ))
                            }
                        }
                    }
                    // A server from before sending on the socket: appends keep going over HTTP.
                    _ => None,
                };
                (ws, frames)
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                // A grove error body (e.g. a refused signature) is the server's answer, not a
                // proxy's: retrying with a fresh signature is right.
                let body = resp.body().as_deref().unwrap_or_default();
                if let Ok(api) = serde_json::from_slice::<ApiError>(body) {
                    return Ended::Retry(format!("{}: {api}", self.server.base()));
                }
                return Ended::Refused(format!("HTTP {status}"));
            }
            Err(e) => {
                let why = crate::net::describe(&e);
                return Ended::Retry(format!("cannot reach the grove server at {}: {why}", self.server.base()));
            }
        };
        let rooms = self.rooms.iter().map(|(room, after)| RoomCursor { room: room.clone(), after: *after }).collect();
        let frame = self.subscribe_frame(rooms, self.mailbox);
        if let Err(e) = ws.send(tungstenite::Message::text(frame)).await {
            return Ended::Retry(e.to_string());
        }
        if !self.tell(Feed::Link { server: self.public.clone(), link: Link::Live }).await {
            return Ended::Stop;
        }
        *attempt = 0;
        if frames.is_some() {
            self.server.attach_socket(Some(sends));
        }
        // Appends sent and not yet answered, in the order sent (the server answers in order).
        let mut waiting: VecDeque<(u64, tokio::sync::oneshot::Sender<Result<Appended, TransportError>>)> =
            VecDeque::new();
        let mut next_id: u64 = 0;
        let feed = self.feed.clone();
        loop {
            tokio::select! {
                Some(send) = outgoing.recv(), if frames.is_some() => {
                    let Some(key) = &frames else { continue };
                    next_id += 1;
                    let mac = key.mac(next_id, &send.room, &send.entry);
                    let request = PushRequest::Send { id: next_id, room: send.room, entry: send.entry, mac };
                    let text = serde_json::to_string(&request).unwrap_or_default();
                    if let Err(e) = ws.send(tungstenite::Message::text(text)).await {
                        return Ended::Retry(e.to_string());
                    }
                    waiting.push_back((next_id, send.reply));
                }
                permit = feed.reserve(), if !self.pending.is_empty() => {
                    let Ok(permit) = permit else { return Ended::Stop };
                    if let Some(feed) = self.pending.pop_front() {
                        permit.send(feed);
                    }
                }
                // While the feed's reader is busy (it may be waiting for one of these sends'
                // answers), the socket is still read, up to a bound.
                msg = ws.next(), if self.pending.len() < PENDING_FEED => {
                    let text = match msg {
                        Some(Ok(tungstenite::Message::Text(t))) => t,
                        Some(Ok(tungstenite::Message::Close(_))) | None => return Ended::Retry("the server closed the connection".into()),
                        Some(Err(e)) => return Ended::Retry(format!("the connection dropped: {e}")),
                        Some(Ok(_)) => continue,
                    };
                    let event = match serde_json::from_str::<PushEvent>(text.as_str()) {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(server = self.public, error = %e, "ignoring a push frame that is not grove's");
                            continue;
                        }
                    };
                    let answer = match event {
                        PushEvent::Sent { id, appended } => Some((id, Ok(appended))),
                        PushEvent::Refused { id, error } => {
                            Some((id, Err(TransportError::Api { url: self.server.base().to_string(), error })))
                        }
                        event => {
                            if let Some(feed) = self.deliver(event) {
                                self.pending.push_back(feed);
                            }
                            None
                        }
                    };
                    if let Some((id, result)) = answer {
                        match waiting.pop_front() {
                            Some((expected, reply)) if expected == id => {
                                let _ = reply.send(result);
                            }
                            _ => return Ended::Retry(format!("the server answered send {id} out of order")),
                        }
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Room { name, after }) => {
                        if self.rooms.contains_key(&name) {
                            continue;
                        }
                        self.rooms.insert(name.clone(), after);
                        let frame = self.subscribe_frame(vec![RoomCursor { room: name, after }], None);
                        if let Err(e) = ws.send(tungstenite::Message::text(frame)).await {
                            return Ended::Retry(e.to_string());
                        }
                    }
                    None => return Ended::Stop,
                },
            }
        }
    }

    /// What of an event is to be handed over (nothing if it was handed over already).
    fn deliver(&mut self, event: PushEvent) -> Option<Feed> {
        match event {
            PushEvent::Entry { room, entry } => {
                let after = self.rooms.get_mut(&room)?;
                if entry.seq <= *after {
                    return None;
                }
                *after = entry.seq;
                self.server.note_received(&room, Some(entry.seq), false);
                Some(Feed::Entries { server: self.public.clone(), room, entries: vec![entry] })
            }
            PushEvent::Live { room, seq } => {
                // The backlog is out; entries come live from here.
                let after = *self.rooms.get(&room)?;
                self.server.note_received(&room, Some(seq.max(after)), true);
                None
            }
            PushEvent::Mail { entry } => {
                let after = self.mailbox.as_mut()?;
                if entry.seq <= *after {
                    return None;
                }
                *after = entry.seq;
                Some(Feed::Mail { entries: vec![entry] })
            }
            PushEvent::Error { room: Some(room), error } => {
                // The subscription ended: follow it no more on this connection.
                self.rooms.remove(&room);
                self.server.note_received(&room, None, false);
                Some(Feed::RoomError { server: self.public.clone(), room, error })
            }
            PushEvent::Error { room: None, error } => {
                tracing::warn!(server = self.public, %error, "the push server refused a request");
                None
            }
            // Answers to sends are taken by the connection loop before this.
            PushEvent::Sent { .. } | PushEvent::Refused { .. } => None,
        }
    }

    /// Long polls: one task per room and one for the mailbox, each handing over what its
    /// reads return, for as long as the feed is received.
    async fn poll(self, mut commands: mpsc::UnboundedReceiver<Command>) {
        if !self.tell(Feed::Link { server: self.public.clone(), link: Link::Polling }).await {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (room, after) in &self.rooms {
            tasks.spawn(poll_room(self.public.clone(), self.server.clone(), room.clone(), *after, self.feed.clone()));
        }
        if let Some(after) = self.mailbox {
            tasks.spawn(poll_mailbox(self.server.clone(), after, self.feed.clone()));
        }
        let mut followed: std::collections::HashSet<String> = self.rooms.keys().cloned().collect();
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Room { name, after }) => {
                        if followed.insert(name.clone()) {
                            tasks.spawn(poll_room(self.public.clone(), self.server.clone(), name, after, self.feed.clone()));
                        }
                    }
                    None => return,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            if self.feed.is_closed() {
                return;
            }
        }
    }
}

/// The wait before connection attempt `attempt + 1`: exponential from half a second up to
/// 30 seconds, with ±50 % jitter so that clients cut off together do not return together.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let base = base.min(MAX_BACKOFF);
    base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

async fn poll_room(public: String, server: Server, room: String, mut after: u64, feed: mpsc::Sender<Feed>) {
    let mut attempt = 0u32;
    loop {
        match server.read_log(&room, after, POLL_PAGE, POLL_WAIT).await {
            Ok(page) => {
                attempt = 0;
                let Some(last) = page.entries.last().map(|e| e.seq) else { continue };
                after = last;
                let entries = page.entries;
                if feed.send(Feed::Entries { server: public.clone(), room: room.clone(), entries }).await.is_err() {
                    return;
                }
            }
            Err(TransportError::Api { error, .. }) => {
                let _ = feed.send(Feed::RoomError { server: public.clone(), room, error }).await;
                return;
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                let retry_in = backoff(attempt);
                let link = Link::Down { error: e.to_string(), retry_in, attempt };
                if feed.send(Feed::Link { server: public.clone(), link }).await.is_err() {
                    return;
                }
                tokio::time::sleep(retry_in).await;
                if feed.send(Feed::Link { server: public.clone(), link: Link::Polling }).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn poll_mailbox(server: Server, mut after: u64, feed: mpsc::Sender<Feed>) {
    let mut attempt = 0u32;
    loop {
        match server.read_mailbox(after, POLL_WAIT).await {
            Ok(page) => {
                attempt = 0;
                let Some(last) = page.entries.last().map(|e| e.seq) else { continue };
                after = last;
                if feed.send(Feed::Mail { entries: page.entries }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = %e, "mailbox long poll failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                if feed.is_closed() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_ceiling_with_jitter() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(750), "{first:?}");
            let late = backoff(40);
            assert!(late >= MAX_BACKOFF / 2 && late <= MAX_BACKOFF.mul_f64(1.5), "{late:?}");
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(3).as_millis()).collect();
        assert!(spread.len() > 1, "backoff has no jitter");
    }
}
