//! The chat's worker: the one task that changes the profile. It takes the screen's commands
//! and the push client's feed, one at a time, and tells the screen what changed. Everything
//! it does goes through grove-client's profile (the room core); the screen only reads.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use grove_client::profile::{ClientError, Profile};
use grove_client::push::{Feed, Link, PushClient};
use grove_client::RoomStatus;
use grove_wire::api::RoomMode;
use grove_wire::content::Content;
use grove_wire::ErrorCode;
use tokio::sync::mpsc;

/// What the screen asks of the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cmd {
    /// Post a message (text, reply, edit, delete, reaction).
    Send { link: String, content: Content },
    /// Create a room on the home server.
    Create { name: String, mode: RoomMode },
    /// Invite someone by address.
    Invite { link: String, address: String },
    /// Remove a member (a name in the room, a user id or an address).
    Remove { link: String, who: String },
    /// Leave a room.
    Leave { link: String },
    /// Accept the invitation to a room (the room learns the user's name).
    Accept { link: String },
    /// Decline the invitation to a room (leave it).
    Decline { link: String },
    /// Refresh own keys in a room.
    Update { link: String },
    /// Set the display name.
    Name { name: String },
    /// The screen showed a room up to `seq`.
    Seen { link: String, seq: u64 },
    /// Send a file (encrypted, uploaded, then announced in the room).
    SendFile { link: String, path: std::path::PathBuf, caption: Option<String> },
    /// Save the file of message `seq` (to `out`, else its name in the current folder).
    Save { link: String, seq: u64, out: Option<std::path::PathBuf> },
}

/// What the worker tells the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// The profile changed (a room's history, the room list, the outbox): read it again.
    Changed,
    /// A server's connection changed state.
    Link { server: String, link: Link },
    /// A sentence for the status line.
    Info(String),
    /// A failure for the status line.
    Error(String),
    /// A room to show (just created or joined).
    Show(String),
}

/// How often messages waiting in the outbox are tried again.
const OUTBOX_RETRY: Duration = Duration::from_secs(5);

/// Runs until the screen goes away. Every `link_joins_every` (`grove chat --link-joins-every`,
/// 30 s by default) it lets in the join requests of rooms whose join policy is `link` and keeps
/// the MLS rooms' state for link joins, as `grove sync` does.
pub(crate) async fn run(
    mut profile: Profile,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    notes: mpsc::UnboundedSender<Note>,
    link_joins_every: Duration,
) {
    let (feed_tx, mut feed) = mpsc::channel(1024);
    let mut push = PushClient::new(feed_tx);
    let mut w = Worker { notes, links: HashMap::new() };
    if let Err(e) = w.follow_all(&profile, &mut push) {
        w.error(e);
    }
    let mut retry = tokio::time::interval(OUTBOX_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut joins = tokio::time::interval(link_joins_every);
    joins.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(cmd) => w.command(&mut profile, &mut push, cmd).await,
                None => return,
            },
            Some(first) = feed.recv() => {
                // Entries arrive one frame each: take what else is already here, so a
                // backlog is applied a page at a time, not an entry at a time.
                let mut batch = vec![first];
                while batch.len() < 500 {
                    match feed.try_recv() {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    }
                }
                for f in merge(batch) {
                    w.feed(&mut profile, &mut push, f).await;
                }
            }
            _ = joins.tick() => {
                if w.any_live() {
                    if profile.carry_out_link_joins().await > 0 {
                        w.tell(Note::Changed);
                    }
                    profile.keep_link_group_infos().await;
                }
            }
            _ = retry.tick() => {
                if profile.outbox_len(None).unwrap_or(0) > 0 && w.any_live() {
                    match profile.flush_outbox().await {
                        Ok(n) if n > 0 => w.tell(Note::Changed),
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "outbox still waiting"),
                    }
                }
            }
        }
    }
}

/// Joins consecutive entries of one room into one item.
fn merge(batch: Vec<Feed>) -> Vec<Feed> {
    let mut out: Vec<Feed> = Vec::with_capacity(batch.len());
    for f in batch {
        if let (Some(Feed::Entries { server: s0, room: r0, entries: e0 }), Feed::Entries { server, room, entries }) =
            (out.last_mut(), &f)
        {
            if s0 == server && r0 == room {
                e0.extend(entries.iter().cloned());
                continue;
            }
        }
        out.push(f);
    }
    out
}

struct Worker {
    notes: mpsc::UnboundedSender<Note>,
    links: HashMap<String, Link>,
}

impl Worker {
    fn tell(&self, note: Note) {
        let _ = self.notes.send(note);
    }

    fn error(&self, e: impl std::fmt::Display) {
        self.tell(Note::Error(e.to_string()));
    }

    /// A transfer's progress, said on the status line at most four times a second.
    fn progress(&self, label: String) -> impl FnMut(u64, u64) + Send + 'static {
        let notes = self.notes.clone();
        let mut last: Option<std::time::Instant> = None;
        move |done, total| {
            if last.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
                last = Some(std::time::Instant::now());
                let pct = done.saturating_mul(100) / total.max(1);
                let _ = notes.send(Note::Info(format!("{label}: {pct} %")));
            }
        }
    }

    fn any_live(&self) -> bool {
        self.links.values().any(|l| matches!(l, Link::Live | Link::Polling))
    }

    /// Follows every active room on its server, and the mailbox on the home server.
    fn follow_all(&self, p: &Profile, push: &mut PushClient) -> anyhow::Result<()> {
        let mut by_server: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        by_server.entry(p.home().to_string()).or_default();
        for r in p.rooms()? {
            if r.status == RoomStatus::Active {
                by_server.entry(r.server.clone()).or_default().push((r.name.clone(), r.cursor));
            }
        }
        let mailbox = p.mailbox_cursor()?;
        for (server, rooms) in by_server {
            let mail = (server == p.home()).then_some(mailbox);
            push.follow(&server, p.server_for(&server), rooms, mail);
        }
        Ok(())
    }

    fn follow_room(&self, p: &Profile, push: &mut PushClient, link: &str) {
        if let Ok(r) = p.room(link) {
            push.follow(&r.server, p.server_for(&r.server), vec![(r.name.clone(), r.cursor)], None);
        }
    }

    async fn feed(&mut self, p: &mut Profile, push: &mut PushClient, feed: Feed) {
        match feed {
            Feed::Entries { server, room, entries } => match p.apply_pushed(&server, &room, entries).await {
                Ok(Some((link, status))) => {
                    if status == RoomStatus::Removed {
                        self.tell(Note::Info(format!("you were removed from {}", short(&link))));
                    }
                    self.tell(Note::Changed);
                }
                Ok(None) => {}
                Err(e) => self.error(e),
            },
            Feed::Mail { .. } => match p.receive_mail().await {
                Ok(report) => {
                    for link in &report.joined {
                        self.follow_room(p, push, link);
                        let by = match p.invitation(link) {
                            Ok(Some(i)) => {
                                let names = p.display_names(link).unwrap_or_default();
                                crate::describe::who(&i.inviter, p.user_id(), &names)
                            }
                            _ => "someone".to_string(),
                        };
                        self.tell(Note::Info(format!(
                            "{by} invited you to {}: open it to read, /accept to join in, /decline to leave",
                            short(link)
                        )));
                    }
                    self.tell(Note::Changed);
                }
                Err(e) => self.error(e),
            },
            Feed::RoomError { server, room, error } => {
                let link = grove_client::profile::room_link(&server, &room);
                if error.code == ErrorCode::NotMember {
                    // Read what the server still gives; the profile records the removal.
                    match p.sync_room(&link).await {
                        Ok(RoomStatus::Active) => {}
                        Ok(_) => self.tell(Note::Info(format!("you are no longer in {}", short(&link)))),
                        Err(e) => self.error(e),
                    }
                    self.tell(Note::Changed);
                } else {
                    self.error(format!("{}: {error}", short(&link)));
                }
            }
            Feed::Link { server, link } => {
                let came_back = matches!(link, Link::Live | Link::Polling)
                    && !matches!(self.links.get(&server), Some(Link::Live | Link::Polling));
                self.links.insert(server.clone(), link.clone());
                self.tell(Note::Link { server, link });
                if came_back && p.outbox_len(None).unwrap_or(0) > 0 {
                    match p.flush_outbox().await {
                        Ok(_) => self.tell(Note::Changed),
                        Err(e) => tracing::debug!(error = %e, "outbox still waiting"),
                    }
                }
            }
        }
    }

    async fn command(&mut self, p: &mut Profile, push: &mut PushClient, cmd: Cmd) {
        let result: anyhow::Result<()> = async {
            match cmd {
                Cmd::Send { link, content } => match p.send_reporting(&link, &content).await {
                    Ok(sent) => {
                        if let Some(s) = crate::describe::key_pending_sentence(p, &link, &sent.key_pending) {
                            self.tell(Note::Info(s));
                        }
                    }
                    Err(e @ ClientError::Queued { .. }) => self.tell(Note::Info(e.to_string())),
                    Err(e) => return Err(e.into()),
                },
                Cmd::Create { name, mode } => {
                    let home = p.home().to_string();
                    let room = p.create_room_with_mode(&home, &name, mode).await?;
                    self.follow_room(p, push, &room.link);
                    self.tell(Note::Info(format!("created {}; invite people with /invite ADDRESS", room.link)));
                    self.tell(Note::Show(room.link));
                }
                Cmd::Invite { link, address } => {
                    p.invite(&link, &address).await?;
                    self.tell(Note::Info(format!("invited {address}")));
                }
                Cmd::Remove { link, who } => {
                    let user = crate::describe::member(p, &link, &who)?;
                    p.remove(&link, &user).await?;
                }
                Cmd::Leave { link } => {
                    p.leave(&link).await?;
                    self.tell(Note::Info(format!("you left {}", short(&link))));
                }
                Cmd::Accept { link } => {
                    p.accept(&link).await?;
                    self.tell(Note::Info(format!("you accepted the invitation to {}", short(&link))));
                }
                Cmd::Decline { link } => {
                    p.decline(&link).await?;
                    self.tell(Note::Info(format!("you declined the invitation to {} and left it", short(&link))));
                }
                Cmd::Update { link } => {
                    p.update(&link).await?;
                    self.tell(Note::Info("your keys in this room are fresh".into()));
                }
                Cmd::Name { name } => {
                    let n = p.set_name(&name).await?;
                    self.tell(Note::Info(format!("you are now {name:?} in {n} room(s)")));
                }
                Cmd::Seen { link, seq } => p.mark_seen(&link, seq).await?,
                Cmd::SendFile { link, path, caption } => {
                    let name = grove_client::files::file_name_of(&path);
                    let mut progress = self.progress(format!("sending {name}"));
                    match p.send_file(&link, &path, caption.as_deref(), &mut progress).await {
                        Ok(_) => self.tell(Note::Info(format!("sent {name}"))),
                        Err(e @ ClientError::Queued { .. }) => self.tell(Note::Info(e.to_string())),
                        Err(e) => return Err(e.into()),
                    }
                }
                Cmd::Save { link, seq, out } => {
                    let (file, _) = p.attachment(&link, seq)?;
                    let path = grove_client::files::output_path(out.as_deref(), &file.name);
                    let mut progress = self.progress(format!("saving {}", path.display()));
                    let size = p.save_file(&link, &file, &path, false, &mut progress).await?;
                    self.tell(Note::Info(format!("saved {} ({})", path.display(), crate::describe::size(size))));
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.error(format!("{e:#}"));
        }
        self.tell(Note::Changed);
    }
}

/// A room's name from its link.
pub(crate) fn short(link: &str) -> &str {
    link.rsplit_once("/rooms/").map(|(_, n)| n).unwrap_or(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grove_wire::api::Entry;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            kind: grove_wire::api::EntryKind::Application,
            epoch: 0,
            sender: grove_wire::UserId([1; 32]),
            ts: 0,
            body: vec![],
        }
    }

    #[test]
    fn a_backlog_is_applied_a_room_at_a_time() {
        let e = |room: &str, seq| Feed::Entries { server: "s".into(), room: room.into(), entries: vec![entry(seq)] };
        let merged = merge(vec![e("a", 1), e("a", 2), e("b", 1), e("a", 3)]);
        assert_eq!(merged.len(), 3);
        match &merged[0] {
            Feed::Entries { entries, .. } => assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]),
            other => panic!("{other:?}"),
        }
    }
}
