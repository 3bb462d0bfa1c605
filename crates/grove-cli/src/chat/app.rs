//! The chat's state and what keys do to it. Pure: it reads the profile (never writes it) and
//! answers [`Action`]s, which the event loop carries out; so tests drive it without a terminal.

use std::collections::HashMap;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind};
use grove_client::profile::Profile;
use grove_client::push::Link;
use grove_client::{Message, RoomStatus};
use grove_wire::api::RoomMode;
use grove_wire::content::Content;
use grove_wire::UserId;

use super::view::{self, Line};
use super::worker::{Cmd, Note};

/// History lines read per screen load; PageUp past them reads more.
const PAGE: usize = 200;

/// A room in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomRow {
    pub(crate) link: String,
    pub(crate) name: String,
    pub(crate) mode: RoomMode,
    pub(crate) unread: u64,
    pub(crate) status: RoomStatus,
    /// Who invited this user, while the invitation waits for /accept or /decline.
    pub(crate) invited_by: Option<UserId>,
}

/// What the event loop does after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Worker(Cmd),
    Quit,
}

/// The input line with its history.
#[derive(Debug, Default, Clone)]
pub(crate) struct Input {
    pub(crate) text: String,
    /// Cursor position, in characters.
    pub(crate) cursor: usize,
    history: Vec<String>,
    recalled: Option<usize>,
}

impl Input {
    fn byte_at(&self, chars: usize) -> usize {
        self.text.char_indices().nth(chars).map(|(i, _)| i).unwrap_or(self.text.len())
    }

    fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
    }

    fn backspace(&mut self) {
        if self.cursor > 0 {
            let at = self.byte_at(self.cursor - 1);
            self.text.remove(at);
            self.cursor -= 1;
        }
    }

    fn delete(&mut self) {
        if self.cursor < self.text.chars().count() {
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    fn set(&mut self, text: String) {
        self.cursor = text.chars().count();
        self.text = text;
    }

    fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.recalled = None;
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
        }
        text
    }

    fn recall(&mut self, older: bool) {
        if self.history.is_empty() {
            return;
        }
        let next = match (self.recalled, older) {
            (None, true) => Some(self.history.len() - 1),
            (None, false) => None,
            (Some(i), true) => Some(i.saturating_sub(1)),
            (Some(i), false) if i + 1 < self.history.len() => Some(i + 1),
            (Some(_), false) => None,
        };
        self.recalled = next;
        let text = next.and_then(|i| self.history.get(i).cloned()).unwrap_or_default();
        self.set(text);
    }
}

/// The whole screen's state.
pub(crate) struct App {
    pub(crate) me: UserId,
    pub(crate) my_name: Option<String>,
    pub(crate) rooms: Vec<RoomRow>,
    pub(crate) selected: usize,
    /// The selected room's lines (the last `limit` history lines, folded: edits, reactions).
    pub(crate) lines: Vec<Line>,
    /// The selected room's history holds more than was read.
    pub(crate) more_above: bool,
    limit: usize,
    pub(crate) names: HashMap<UserId, String>,
    pub(crate) members: Vec<UserId>,
    /// The selected room's name and topic (end-to-end encrypted, set by its admins).
    pub(crate) room_profile: grove_wire::content::RoomProfile,
    /// Messages of the selected room still in the outbox (text previews).
    pub(crate) pending: Vec<String>,
    pub(crate) outbox: usize,
    pub(crate) input: Input,
    /// Rows scrolled up from the bottom of the timeline.
    pub(crate) scroll: usize,
    pub(crate) show_members: bool,
    pub(crate) show_help: bool,
    pub(crate) links: HashMap<String, Link>,
    pub(crate) notice: Option<(String, bool)>,
    seen: HashMap<String, u64>,
    completion: Option<(String, usize)>,
    /// A room to select on the next load (just created or joined).
    pub(crate) pending_show: Option<String>,
    /// The profile must be read again (another room selected, more history wanted).
    pub(crate) reload_wanted: bool,
    /// Rows the timeline had at the last draw (set while drawing).
    pub(crate) total_rows: std::cell::Cell<usize>,
}

impl App {
    /// An app showing nothing yet (see [`App::load`]).
    pub(crate) fn new(me: UserId) -> App {
        App {
            me,
            my_name: None,
            rooms: Vec::new(),
            selected: 0,
            lines: Vec::new(),
            more_above: false,
            limit: PAGE,
            names: HashMap::new(),
            members: Vec::new(),
            room_profile: Default::default(),
            pending: Vec::new(),
            outbox: 0,
            input: Input::default(),
            scroll: 0,
            show_members: true,
            show_help: false,
            links: HashMap::new(),
            notice: None,
            seen: HashMap::new(),
            completion: None,
            pending_show: None,
            reload_wanted: false,
            total_rows: std::cell::Cell::new(0),
        }
    }

    /// The selected room, if any.
    pub(crate) fn room(&self) -> Option<&RoomRow> {
        self.rooms.get(self.selected)
    }

    /// Reads what the screen shows from the profile. Answers the `Seen` command to send when
    /// the selected room shows lines it had not shown.
    pub(crate) fn load(&mut self, p: &mut Profile) -> anyhow::Result<Option<Cmd>> {
        self.reload_wanted = false;
        let selected = self.pending_show.take().or_else(|| self.room().map(|r| r.link.clone()));
        self.my_name = p.name()?;
        let mut rooms = Vec::new();
        let invitations = p.invitations()?;
        for r in p.rooms()? {
            let unread = p.unread(&r.link)?;
            let invited_by = invitations.iter().find(|i| i.room == r.link).map(|i| i.inviter);
            rooms.push(RoomRow { link: r.link, name: r.name, mode: r.mode, unread, status: r.status, invited_by });
        }
        // Rooms one is in first, then by name.
        rooms.sort_by(|a, b| (a.status != RoomStatus::Active, &a.name).cmp(&(b.status != RoomStatus::Active, &b.name)));
        self.rooms = rooms;
        self.selected = selected.and_then(|l| self.rooms.iter().position(|r| r.link == l)).unwrap_or(0);
        self.outbox = p.outbox_len(None)?;
        let Some(room) = self.room().cloned() else {
            self.lines.clear();
            self.members.clear();
            self.pending.clear();
            return Ok(None);
        };
        let history = p.messages_before(&room.link, None, self.limit + 1)?;
        self.more_above = history.len() > self.limit;
        let history: &[Message] = if self.more_above { &history[1..] } else { &history };
        self.names = p.display_names(&room.link)?;
        self.room_profile = p.room_profile(&room.link)?;
        self.lines = view::fold(history);
        self.members =
            if room.status == RoomStatus::Active { p.members(&room.link).unwrap_or_default() } else { Vec::new() };
        let mut members = std::mem::take(&mut self.members);
        members.sort_by_key(|u| (*u != self.me, self.call(u).to_lowercase()));
        self.members = members;
        self.pending = p
            .outbox()?
            .into_iter()
            .filter(|i| i.room == room.link)
            .map(|i| match Content::decode(&i.content) {
                Content::Text { text } | Content::Reply { text, .. } => text,
                c => format!("({})", c.kind()),
            })
            .collect();
        let last = history.last().map(|m| m.seq).unwrap_or(0);
        if room.unread > 0 && self.seen.get(&room.link).copied().unwrap_or(0) < last {
            self.seen.insert(room.link.clone(), last);
            return Ok(Some(Cmd::Seen { link: room.link, seq: last }));
        }
        Ok(None)
    }

    /// How a user is called in the selected room.
    pub(crate) fn call(&self, user: &UserId) -> String {
        if *user == self.me {
            return self.my_name.clone().unwrap_or_else(|| "you".into());
        }
        self.names.get(user).cloned().unwrap_or_else(|| user.short())
    }

    /// A worker's note arrived. Answers whether the profile must be read again.
    pub(crate) fn on_note(&mut self, note: Note) -> bool {
        match note {
            Note::Changed => true,
            Note::Link { server, link } => {
                self.links.insert(server, link);
                false
            }
            Note::Info(s) => {
                self.notice = Some((s, false));
                false
            }
            Note::Error(s) => {
                self.notice = Some((s, true));
                false
            }
            Note::Show(link) => {
                self.pending_show = Some(link);
                true
            }
        }
    }

    /// A terminal event. `rows` is the timeline's height (for paging).
    pub(crate) fn on_event(&mut self, ev: Event, rows: usize) -> Vec<Action> {
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.on_key(k, rows),
            Event::Mouse(m) => {
                match m.kind {
                    MouseEventKind::ScrollUp => self.scroll_up(3, rows),
                    MouseEventKind::ScrollDown => self.scroll = self.scroll.saturating_sub(3),
                    _ => {}
                }
                Vec::new()
            }
            Event::Paste(text) => {
                for c in text.chars().filter(|c| !c.is_control()) {
                    self.input.insert(c);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn scroll_up(&mut self, by: usize, rows: usize) {
        let total = self.total_rows.get();
        self.scroll = self.scroll.saturating_add(by).min(total.saturating_sub(rows.min(total)));
        // Near the top of what was read: read a page more.
        if self.more_above && self.scroll + rows + by >= total {
            self.limit += PAGE;
            self.reload_wanted = true;
        }
    }

    fn on_key(&mut self, k: KeyEvent, rows: usize) -> Vec<Action> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if k.code != KeyCode::Tab {
            self.completion = None;
        }
        match k.code {
            KeyCode::Char('c' | 'd') if ctrl => return vec![Action::Quit],
            KeyCode::Char('l') if ctrl => self.notice = None,
            KeyCode::Char('u') if ctrl => self.input.set(String::new()),
            KeyCode::Char(c) => self.input.insert(c),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.cursor = self.input.cursor.saturating_sub(1),
            KeyCode::Right => self.input.cursor = (self.input.cursor + 1).min(self.input.text.chars().count()),
            KeyCode::Home => self.input.cursor = 0,
            KeyCode::End => self.input.cursor = self.input.text.chars().count(),
            KeyCode::Up => self.input.recall(true),
            KeyCode::Down => self.input.recall(false),
            KeyCode::PageUp => self.scroll_up(rows.saturating_sub(2).max(1), rows),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(rows.saturating_sub(2).max(1)),
            KeyCode::Esc => {
                self.notice = None;
                self.show_help = false;
            }
            KeyCode::Tab if self.input.text.is_empty() => self.next_room(1),
            KeyCode::Tab => self.complete(),
            KeyCode::BackTab => self.next_room(self.rooms.len().saturating_sub(1)),
            KeyCode::Enter => {
                let text = self.input.take();
                return self.submit(&text);
            }
            _ => {}
        }
        Vec::new()
    }

    fn next_room(&mut self, by: usize) {
        if !self.rooms.is_empty() {
            self.selected = (self.selected + by) % self.rooms.len();
            self.scroll = 0;
            self.limit = PAGE;
            self.reload_wanted = true;
        }
    }

    /// Completes the member name before the cursor; Tab again cycles through the matches.
    fn complete(&mut self) {
        let before: String = self.input.text.chars().take(self.input.cursor).collect();
        let (prefix, start) = match &self.completion {
            Some((prefix, _)) => {
                let start = before.rfind(' ').map(|i| i + 1).unwrap_or(0);
                (prefix.clone(), start)
            }
            None => {
                let start = before.rfind(' ').map(|i| i + 1).unwrap_or(0);
                (before[start..].trim_start_matches('@').to_lowercase(), start)
            }
        };
        if prefix.is_empty() && self.completion.is_none() {
            return;
        }
        let mut matches: Vec<String> = self
            .members
            .iter()
            .filter(|u| **u != self.me)
            .map(|u| self.call(u))
            .filter(|n| n.to_lowercase().starts_with(&prefix))
            .collect();
        matches.sort();
        matches.dedup();
        if matches.is_empty() {
            return;
        }
        let turn = self.completion.as_ref().map(|(_, i)| i + 1).unwrap_or(0) % matches.len();
        let name = &matches[turn];
        let suffix = if start == 0 { ": " } else { " " };
        let after: String = self.input.text.chars().skip(self.input.cursor).collect();
        let head = &before[..start];
        let text = format!("{head}{name}{suffix}");
        let cursor = text.chars().count();
        self.input.text = format!("{text}{after}");
        self.input.cursor = cursor;
        self.completion = Some((prefix, turn));
    }

    /// The input line, submitted.
    pub(crate) fn submit(&mut self, text: &str) -> Vec<Action> {
        let text = text.trim_end();
        if text.trim().is_empty() {
            return Vec::new();
        }
        self.scroll = 0;
        if let Some(rest) = text.strip_prefix("//") {
            return self.send(Content::text(format!("/{rest}")));
        }
        let Some(command) = text.strip_prefix('/') else {
            return self.send(Content::text(text));
        };
        let (verb, args) = command.split_once(' ').map(|(v, a)| (v, a.trim())).unwrap_or((command, ""));
        match self.command(verb, args) {
            Ok(actions) => actions,
            Err(e) => {
                self.notice = Some((e, true));
                Vec::new()
            }
        }
    }

    fn send(&mut self, content: Content) -> Vec<Action> {
        match self.active_link() {
            Ok(link) => vec![Action::Worker(Cmd::Send { link, content })],
            Err(e) => {
                self.notice = Some((e, true));
                Vec::new()
            }
        }
    }

    fn active_link(&self) -> Result<String, String> {
        match self.room() {
            None => Err("no room yet: /create NAME makes one, or wait for an invitation".into()),
            Some(r) if r.status != RoomStatus::Active => {
                Err(format!("you are no longer in {}: choose another room with Tab", r.name))
            }
            Some(r) => Ok(r.link.clone()),
        }
    }

    fn command(&mut self, verb: &str, args: &str) -> Result<Vec<Action>, String> {
        let one = |what: &str| -> Result<String, String> {
            if args.is_empty() || args.contains(char::is_whitespace) && what != "NAME" {
                return Err(format!("/{verb} takes {what}: see /help"));
            }
            Ok(args.to_string())
        };
        let seq_and_rest = |what: &str| -> Result<(u64, String), String> {
            let (seq, rest) = args.split_once(' ').map(|(s, r)| (s, r.trim())).unwrap_or((args, ""));
            let seq = seq
                .trim_start_matches('#')
                .parse::<u64>()
                .map_err(|_| format!("/{verb} takes the message's number (shown at its left) then {what}"))?;
            if rest.is_empty() && !what.is_empty() {
                return Err(format!("/{verb} {seq} takes {what} too"));
            }
            Ok((seq, rest.to_string()))
        };
        let worker = |cmd: Cmd| Ok(vec![Action::Worker(cmd)]);
        match verb {
            "quit" | "q" | "exit" => Ok(vec![Action::Quit]),
            "help" | "h" | "?" => {
                self.show_help = !self.show_help;
                Ok(Vec::new())
            }
            "members" => {
                self.show_members = !self.show_members;
                Ok(Vec::new())
            }
            "create" => {
                let mut words = args.split_whitespace();
                let name = words.next().ok_or("/create takes a NAME: /create NAME [--mode sender-keys]")?.to_string();
                let mode = match (words.next(), words.next()) {
                    (None, _) => RoomMode::Mls,
                    (Some("--mode"), Some("mls")) => RoomMode::Mls,
                    (Some("--mode"), Some("sender-keys")) => RoomMode::SenderKeys,
                    _ => return Err("/create NAME [--mode mls|sender-keys]".into()),
                };
                worker(Cmd::Create { name, mode })
            }
            "invite" => {
                worker(Cmd::Invite { link: self.active_link()?, address: one("an ADDRESS (their `grove whoami`)")? })
            }
            "remove" | "kick" => {
                if args.is_empty() {
                    return Err("/remove takes a member's name, user id or address".into());
                }
                worker(Cmd::Remove { link: self.active_link()?, who: args.to_string() })
            }
            "leave" => worker(Cmd::Leave { link: self.active_link()? }),
            "accept" | "decline" => {
                let link = self.active_link()?;
                if self.room().and_then(|r| r.invited_by).is_none() {
                    return Err(format!("no invitation waits in this room (/{verb} answers one)"));
                }
                worker(if verb == "accept" { Cmd::Accept { link } } else { Cmd::Decline { link } })
            }
            "update" => worker(Cmd::Update { link: self.active_link()? }),
            "name" | "nick" => {
                if args.is_empty() {
                    return Err("/name takes your new display name".into());
                }
                worker(Cmd::Name { name: args.to_string() })
            }
            "file" => {
                if args.is_empty() {
                    return Err("/file takes a PATH, then an optional caption".into());
                }
                // The whole argument if it names a file, else its first word, then the caption.
                let (path, caption) = if expand(args).exists() {
                    (args, None)
                } else {
                    args.split_once(' ').map(|(p, c)| (p, Some(c.trim().to_string()))).unwrap_or((args, None))
                };
                let path = expand(path);
                if !path.is_file() {
                    return Err(format!("no file {}", path.display()));
                }
                worker(Cmd::SendFile { link: self.active_link()?, path, caption })
            }
            "save" => {
                let (seq, out) = seq_and_rest("")?;
                match self.post(seq) {
                    Some(p) if p.file => {}
                    Some(_) => return Err(format!("message {seq} is not a file")),
                    None => return Err(format!("no message {seq} on screen")),
                }
                let link = self.room().map(|r| r.link.clone()).ok_or("no room")?;
                let out = (!out.is_empty()).then(|| expand(&out));
                worker(Cmd::Save { link, seq, out })
            }
            "reply" => {
                let (to, text) = seq_and_rest("your reply")?;
                Ok(self.send(Content::Reply { to, text }))
            }
            "edit" => {
                let (of, text) = seq_and_rest("the new text")?;
                match self.post(of) {
                    Some(p) if p.sender == self.me => Ok(self.send(Content::Edit { of, text })),
                    Some(_) => Err("you can edit only your own messages".into()),
                    None => Err(format!("no message {of} on screen")),
                }
            }
            "delete" => {
                let (of, _) = seq_and_rest("")?;
                match self.post(of) {
                    Some(p) if p.sender == self.me => Ok(self.send(Content::Delete { of })),
                    Some(_) => Err("you can delete only your own messages".into()),
                    None => Err(format!("no message {of} on screen")),
                }
            }
            "react" => {
                let (to, key) = seq_and_rest("a reaction (an emoji)")?;
                let Some(post) = self.post(to) else { return Err(format!("no message {to} on screen")) };
                // The same reaction again withdraws it.
                let remove = post.reactions.iter().any(|(k, who)| *k == key && who.contains(&self.me));
                Ok(self.send(Content::Reaction { to, key, remove }))
            }
            other => Err(format!("unknown command /{other}: /help lists them (// sends a message starting with /)")),
        }
    }

    fn post(&self, seq: u64) -> Option<&view::Post> {
        self.lines.iter().find_map(|l| match l {
            Line::Post(p) if p.seq == seq => Some(p),
            _ => None,
        })
    }

    /// The status line's connection part: a short state, the details, and its colour.
    pub(crate) fn connection(&self) -> (String, Option<String>, ConnState) {
        if self.links.is_empty() {
            return ("connecting…".into(), None, ConnState::Trying);
        }
        let down = self.links.iter().find_map(|(s, l)| match l {
            Link::Down { error, retry_in, attempt } => Some((s, error, retry_in, attempt)),
            _ => None,
        });
        if let Some((server, error, retry_in, attempt)) = down {
            let state = if *attempt >= 3 { ConnState::Offline } else { ConnState::Trying };
            let word = if state == ConnState::Offline { "offline" } else { "reconnecting" };
            return (
                format!("{word}, trying again in {}s", retry_in.as_secs().max(1)),
                Some(format!("{server}: {error}")),
                state,
            );
        }
        if self.links.values().any(|l| *l == Link::Polling) {
            return ("connected (polling)".into(), Some("WebSockets are refused on the way".into()), ConnState::Up);
        }
        ("connected".into(), None, ConnState::Up)
    }
}

/// How the status line colours the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Up,
    Trying,
    Offline,
}

/// A path as typed: `~/` is the home folder.
fn expand(path: &str) -> std::path::PathBuf {
    match (path.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => std::path::PathBuf::from(path),
    }
}
