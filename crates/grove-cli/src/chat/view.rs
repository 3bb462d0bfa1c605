//! What the chat shows: history folded into lines (edits applied, reactions counted, deleted
//! messages marked) and the screen drawn from [`App`].

use std::collections::HashMap;

use chrono::{Local, TimeZone};
use grove_client::{Event, Membership, Message, RoomStatus};
use grove_wire::api::RoomMode;
use grove_wire::content::Content;
use grove_wire::UserId;
use ratatui::layout::{Constraint, Direction, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::app::{App, ConnState};
use crate::describe::{membership_sentence, size};

/// A member's message, with what later messages did to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Post {
    pub(crate) seq: u64,
    pub(crate) sender: UserId,
    pub(crate) ts: i64,
    pub(crate) text: String,
    pub(crate) reply_to: Option<u64>,
    pub(crate) edited: bool,
    pub(crate) deleted: bool,
    /// A kind this client does not show (a newer grove's).
    pub(crate) unsupported: bool,
    /// A file (`/save N` fetches it).
    pub(crate) file: bool,
    /// Reaction keys in order of first use, with who reacted.
    pub(crate) reactions: Vec<(String, Vec<UserId>)>,
}

/// One line of the timeline, before wrapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A member's message.
    Post(Post),
    /// A membership change, an unreadable entry, an old note: shown muted.
    Event { seq: u64, ts: i64, sender: UserId, what: EventLine },
}

/// What an event line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventLine {
    Membership(Membership),
    Unreadable(String),
    Note(String),
    RoomProfile(grove_wire::content::RoomProfile),
}

/// Folds history into timeline lines: edits, deletions and reactions change the message they
/// name (only the author's own edits and deletions count); profiles and rosters are not shown.
pub(crate) fn fold(history: &[Message]) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::with_capacity(history.len());
    let mut index: HashMap<u64, usize> = HashMap::new();
    for m in history {
        let post = |text: String, reply_to: Option<u64>, unsupported: bool| Post {
            seq: m.seq,
            sender: m.sender,
            ts: m.ts,
            text,
            reply_to,
            edited: false,
            deleted: false,
            unsupported,
            file: false,
            reactions: Vec::new(),
        };
        match m.event() {
            Event::Content(c) => match c {
                Content::Text { text } => {
                    index.insert(m.seq, lines.len());
                    lines.push(Line::Post(post(text, None, false)));
                }
                Content::Reply { to, text } => {
                    index.insert(m.seq, lines.len());
                    lines.push(Line::Post(post(text, Some(to), false)));
                }
                Content::Attachment { file, caption } => {
                    let text = format!(
                        "[file {}, {}, {}]{}",
                        grove_client::files::safe_file_name(&file.name),
                        size(file.size),
                        file.media_type,
                        caption.map(|c| format!(" {c}")).unwrap_or_default()
                    );
                    index.insert(m.seq, lines.len());
                    lines.push(Line::Post(Post { file: true, ..post(text, None, false) }));
                }
                Content::Edit { of, text } => {
                    if let Some(i) = target(&index, of) {
                        if let Line::Post(p) = &mut lines[i] {
                            if p.sender == m.sender && !p.deleted {
                                p.text = text;
                                p.edited = true;
                            }
                        }
                    }
                }
                Content::Delete { of } => {
                    if let Some(i) = target(&index, of) {
                        if let Line::Post(p) = &mut lines[i] {
                            if p.sender == m.sender {
                                p.deleted = true;
                                p.text.clear();
                                p.reactions.clear();
                            }
                        }
                    }
                }
                Content::Reaction { to, key, remove } => {
                    if let Some(i) = target(&index, to) {
                        if let Line::Post(p) = &mut lines[i] {
                            react(p, key, m.sender, remove);
                        }
                    }
                }
                Content::Profile(_) | Content::Roster { .. } => {}
                Content::RoomProfile(r) => {
                    lines.push(Line::Event { seq: m.seq, ts: m.ts, sender: m.sender, what: EventLine::RoomProfile(r) })
                }
                Content::Unsupported { kind, .. } => {
                    index.insert(m.seq, lines.len());
                    lines.push(Line::Post(post(format!("(a {kind:?} message: a newer grove shows it)"), None, true)));
                }
                _ => {
                    lines.push(Line::Post(post("(unsupported message)".into(), None, true)));
                }
            },
            Event::Membership(change) => {
                lines.push(Line::Event { seq: m.seq, ts: m.ts, sender: m.sender, what: EventLine::Membership(change) })
            }
            Event::Undecryptable(why) => {
                lines.push(Line::Event { seq: m.seq, ts: m.ts, sender: m.sender, what: EventLine::Unreadable(why) })
            }
            Event::Note(text) => {
                lines.push(Line::Event { seq: m.seq, ts: m.ts, sender: m.sender, what: EventLine::Note(text) })
            }
        }
    }
    lines
}

/// The line of the message `seq`, if it is on screen.
fn target(index: &HashMap<u64, usize>, seq: u64) -> Option<usize> {
    index.get(&seq).copied()
}

fn react(p: &mut Post, key: String, who: UserId, remove: bool) {
    if p.deleted {
        return;
    }
    match p.reactions.iter_mut().find(|(k, _)| *k == key) {
        Some((_, users)) if remove => users.retain(|u| *u != who),
        Some((_, users)) => {
            if !users.contains(&who) {
                users.push(who);
            }
        }
        None if remove => {}
        None => p.reactions.push((key, vec![who])),
    }
    p.reactions.retain(|(_, users)| !users.is_empty());
}

const MUTED: Style = Style::new().fg(Color::DarkGray);

/// A member's colour: stable per user, one of a few readable ones.
fn colour(user: &UserId) -> Color {
    const COLOURS: [Color; 6] = [Color::Cyan, Color::Green, Color::Magenta, Color::Blue, Color::Yellow, Color::Red];
    COLOURS[user.0[0] as usize % COLOURS.len()]
}

fn local(ts: i64) -> Option<chrono::DateTime<Local>> {
    if ts <= 0 {
        return None;
    }
    Local.timestamp_millis_opt(ts).single()
}

fn clock(ts: i64) -> String {
    local(ts).map(|t| t.format("%H:%M").to_string()).unwrap_or_else(|| "     ".into())
}

/// The timeline's rows for a width: day separators, wrapped lines, muted events.
pub(crate) fn rows(app: &App, width: u16) -> Vec<TextLine<'static>> {
    let width = usize::from(width.max(8));
    let mut out = Vec::new();
    let mut day = None;
    if app.more_above {
        out.push(TextLine::styled("  ↑ PageUp for earlier messages", MUTED));
    }
    for line in &app.lines {
        let (seq, ts) = match line {
            Line::Post(p) => (p.seq, p.ts),
            Line::Event { seq, ts, .. } => (*seq, *ts),
        };
        if let Some(t) = local(ts) {
            let d = t.date_naive();
            if day != Some(d) {
                day = Some(d);
                let label = format!(" {} ", t.format("%A %-d %B %Y"));
                let side = width.saturating_sub(label.width()) / 2;
                out.push(TextLine::styled(format!("{}{label}{}", "─".repeat(side), "─".repeat(side)), MUTED));
            }
        }
        let gutter = format!("{seq:>4} {} ", clock(ts));
        let indent = gutter.width();
        match line {
            Line::Post(p) => {
                if let Some(to) = p.reply_to {
                    let quoted = app
                        .lines
                        .iter()
                        .find_map(|l| match l {
                            Line::Post(q) if q.seq == to => Some(format!("{}: {}", app.call(&q.sender), preview(q))),
                            _ => None,
                        })
                        .unwrap_or_else(|| format!("message {to}"));
                    out.extend(wrap(
                        vec![Span::styled(format!("{}↳ reply to #{to} {quoted}", " ".repeat(indent)), MUTED)],
                        width,
                        indent + 2,
                    ));
                }
                let name =
                    Span::styled(app.call(&p.sender), Style::new().fg(colour(&p.sender)).add_modifier(Modifier::BOLD));
                let mut spans = vec![Span::styled(gutter, MUTED), name, Span::raw(": ")];
                if p.deleted {
                    spans.push(Span::styled("(deleted)", MUTED.add_modifier(Modifier::ITALIC)));
                } else if p.unsupported {
                    spans.push(Span::styled(p.text.clone(), MUTED.add_modifier(Modifier::ITALIC)));
                } else {
                    spans.push(Span::raw(p.text.clone()));
                }
                if p.edited && !p.deleted {
                    spans.push(Span::styled(" (edited)", MUTED));
                }
                out.extend(wrap(spans, width, indent));
                if !p.reactions.is_empty() {
                    let r: Vec<String> = p.reactions.iter().map(|(k, who)| format!("{k} {}", who.len())).collect();
                    out.extend(wrap(
                        vec![Span::styled(format!("{}{}", " ".repeat(indent), r.join("  ")), MUTED)],
                        width,
                        indent,
                    ));
                }
            }
            Line::Event { sender, what, .. } => {
                let (text, style) = match what {
                    EventLine::Membership(change) => {
                        let names = app.names.clone();
                        (format!("* {}", membership_sentence(sender, change, app.me, &names)), MUTED)
                    }
                    EventLine::Unreadable(why) => (
                        format!("! an unreadable message from {}: {why}", app.call(sender)),
                        Style::new().fg(Color::Yellow),
                    ),
                    EventLine::Note(text) => (format!("* {text}"), MUTED),
                    EventLine::RoomProfile(r) => {
                        let by = if *sender == app.me { "you".to_string() } else { app.call(sender) };
                        (format!("* {}", crate::describe::room_profile_sentence(&by, r)), MUTED)
                    }
                };
                out.extend(wrap(vec![Span::styled(gutter, MUTED), Span::styled(text, style)], width, indent));
            }
        }
    }
    for text in &app.pending {
        let spans = vec![
            Span::styled("   … ", MUTED),
            Span::styled(app.call(&app.me), MUTED.add_modifier(Modifier::BOLD)),
            Span::styled(format!(": {text} (waiting to be sent)"), MUTED),
        ];
        out.extend(wrap(spans, width, 11));
    }
    if let Some(by) = app.room().and_then(|r| r.invited_by) {
        let text = format!(
            "{} invited you. /accept tells the room your name; /decline leaves it. Writing here accepts too.",
            app.call(&by)
        );
        out.extend(wrap(vec![Span::styled(text, Style::new().fg(Color::Yellow))], width, 2));
    }
    out
}

fn preview(p: &Post) -> String {
    if p.deleted {
        return "(deleted)".into();
    }
    let mut s: String = p.text.chars().take(40).collect();
    if p.text.chars().count() > 40 {
        s.push('…');
    }
    s
}

/// Wraps styled text to `width` columns, at spaces where it can; continuation rows start
/// `indent` columns in.
pub(crate) fn wrap(spans: Vec<Span<'static>>, width: usize, indent: usize) -> Vec<TextLine<'static>> {
    let indent = indent.min(width / 2);
    let mut rows: Vec<TextLine<'static>> = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0usize;
    for span in spans {
        let style = span.style;
        // What others wrote reaches the terminal as text only: no control characters (escape
        // sequences, carriage returns), which could repaint the screen.
        let content: String = span.content.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        for word in content.split_inclusive(' ') {
            let w = word.width();
            if used + w.min(width.saturating_sub(indent)) > width && used > indent {
                rows.push(TextLine::from(std::mem::take(&mut row)));
                row.push(Span::raw(" ".repeat(indent)));
                used = indent;
                if word == " " {
                    continue;
                }
            }
            if used + w <= width {
                row.push(Span::styled(word.to_string(), style));
                used += w;
                continue;
            }
            // A word longer than a row: split it by characters.
            let mut piece = String::new();
            for c in word.chars() {
                let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
                if used + cw > width {
                    row.push(Span::styled(std::mem::take(&mut piece), style));
                    rows.push(TextLine::from(std::mem::take(&mut row)));
                    row.push(Span::raw(" ".repeat(indent)));
                    used = indent;
                }
                piece.push(c);
                used += cw;
            }
            row.push(Span::styled(piece, style));
        }
    }
    rows.push(TextLine::from(row));
    rows
}

/// The help text.
pub(crate) const HELP: &[&str] = &[
    "Type a message and press Enter. Commands:",
    "  /create NAME [--mode sender-keys]   a room on your home server",
    "  /invite ADDRESS                     invite someone (their `grove whoami`)",
    "  /remove NAME                        remove a member",
    "  /leave   /update   /name NAME       leave; fresh keys; your display name",
    "  /accept   /decline                  answer an invitation (writing accepts too)",
    "  /reply N TEXT   /edit N TEXT        N: the number left of a message",
    "  /delete N   /react N EMOJI          the same reaction again withdraws it",
    "  /file PATH [CAPTION]   /save N [PATH]   send a file; save the file of message N",
    "  /members   /help   /quit            members pane; this help; leave the chat",
    "Keys: Tab / Shift-Tab next / previous room (with text: complete a name),",
    "  PageUp / PageDown or the mouse wheel scroll, Up / Down recall what you typed,",
    "  Esc closes this help, Ctrl-C quits.",
];

/// Draws the whole screen.
pub(crate) fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    let [main, input, status] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(1), Constraint::Length(1), Constraint::Length(1)])
        .areas(area);
    let show_rooms = area.width >= 60;
    let show_members = app.show_members && area.width >= 90;
    let mut cols = Vec::new();
    if show_rooms {
        cols.push(Constraint::Length(22));
    }
    cols.push(Constraint::Min(20));
    if show_members {
        cols.push(Constraint::Length(22));
    }
    let panes = Layout::default().direction(Direction::Horizontal).constraints(cols).split(main);
    let mut panes = panes.iter().copied();
    if show_rooms {
        if let Some(r) = panes.next() {
            render_rooms(f, app, r);
        }
    }
    if let Some(t) = panes.next() {
        render_timeline(f, app, t);
    }
    if show_members {
        if let Some(m) = panes.next() {
            render_members(f, app, m);
        }
    }
    render_input(f, app, input);
    render_status(f, app, status);
}

fn mode_word(mode: RoomMode) -> &'static str {
    match mode {
        RoomMode::Mls => "mls",
        RoomMode::SenderKeys => "sk",
    }
}

fn render_rooms(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default().borders(Borders::RIGHT).title(" rooms ").border_style(MUTED);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut lines = Vec::new();
    for (i, r) in app.rooms.iter().enumerate() {
        let mut style = Style::new();
        if r.status != RoomStatus::Active {
            style = MUTED;
        } else if r.unread > 0 || r.invited_by.is_some() {
            style = style.add_modifier(Modifier::BOLD);
        }
        if i == app.selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let badge = match r.status {
            RoomStatus::Active if r.invited_by.is_some() => " invited".into(),
            RoomStatus::Active if r.unread > 0 => format!(" {}", r.unread),
            RoomStatus::Active => String::new(),
            RoomStatus::Left => " left".into(),
            RoomStatus::Removed => " gone".into(),
        };
        let mode = mode_word(r.mode);
        let room_width = usize::from(inner.width).saturating_sub(badge.width() + mode.len() + 2);
        let mut name: String = r.name.chars().take(room_width).collect();
        let pad = room_width.saturating_sub(name.width());
        name.push_str(&" ".repeat(pad));
        lines.push(TextLine::from(vec![
            Span::styled(format!("{name}{badge} "), style),
            Span::styled(format!("{mode} "), if i == app.selected { style } else { MUTED }),
        ]));
    }
    if app.rooms.is_empty() {
        lines.push(TextLine::styled("no rooms yet", MUTED));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn render_timeline(f: &mut Frame, app: &App, area: Rect) {
    let [head, body] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Min(0)])
        .areas(area);
    let title = match app.room() {
        Some(r) => {
            let state = match r.status {
                RoomStatus::Active => format!("{} members", app.members.len()),
                RoomStatus::Left => "you left".into(),
                RoomStatus::Removed => "you were removed".into(),
            };
            let mut head = format!(" {}", r.name);
            for part in [&app.room_profile.name, &app.room_profile.topic] {
                if !part.is_empty() {
                    head.push_str(&format!(" · {part}"));
                }
            }
            format!("{head} · {} · {state}", mode_word(r.mode))
        }
        None => " grove".into(),
    };
    f.render_widget(Paragraph::new(title).style(Style::new().add_modifier(Modifier::REVERSED)), head);
    if app.show_help {
        let help: Vec<TextLine> = HELP.iter().map(|l| TextLine::raw(*l)).collect();
        f.render_widget(Paragraph::new(help), body);
        return;
    }
    let mut rows = if app.room().is_none() {
        vec![
            TextLine::raw("No rooms yet."),
            TextLine::raw("/create NAME makes one; an invitation shows up here by itself."),
            TextLine::raw("/help lists the commands."),
        ]
    } else {
        rows(app, body.width)
    };
    app.total_rows.set(rows.len());
    let height = usize::from(body.height);
    let end = rows.len().saturating_sub(app.scroll.min(rows.len().saturating_sub(height.min(rows.len()))));
    let start = end.saturating_sub(height);
    let shown: Vec<TextLine> = rows.drain(start..end).collect();
    // Bottom-aligned, as a chat is.
    let pad = height.saturating_sub(shown.len());
    let body = Rect { y: body.y + pad as u16, height: body.height - pad as u16, ..body };
    f.render_widget(Paragraph::new(shown), body);
}

fn render_members(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default().borders(Borders::LEFT).title(" members ").border_style(MUTED);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let lines: Vec<TextLine> = app
        .members
        .iter()
        .map(|u| {
            let mut name = app.call(u);
            if *u == app.me {
                name.push_str(" (you)");
            }
            TextLine::styled(name, Style::new().fg(colour(u)))
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn render_input(f: &mut Frame, app: &App, area: Rect) {
    let prompt = "> ";
    let width = usize::from(area.width).saturating_sub(prompt.len() + 1).max(1);
    let before: String = app.input.text.chars().take(app.input.cursor).collect();
    // Scroll the line so the cursor stays visible.
    let skip = before.width().saturating_sub(width);
    let mut shown = String::new();
    let mut w = 0;
    for c in app.input.text.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w >= skip {
            shown.push(c);
        }
        w += cw;
    }
    f.render_widget(Paragraph::new(TextLine::from(vec![Span::styled(prompt, MUTED), Span::raw(shown)])), area);
    let x = area.x + (prompt.len() + before.width() - skip).min(usize::from(area.width.saturating_sub(1))) as u16;
    f.set_cursor_position(Position { x, y: area.y });
}

fn render_status(f: &mut Frame, app: &App, area: Rect) {
    let (conn, detail, state) = app.connection();
    let (dot, colour) = match state {
        ConnState::Up => ("●", Color::Green),
        ConnState::Trying => ("◌", Color::Yellow),
        ConnState::Offline => ("○", Color::Red),
    };
    // Most important first: a narrow terminal cuts the end.
    let mut spans = vec![Span::styled(format!("{dot} {conn}"), Style::new().fg(colour))];
    if app.outbox > 0 {
        spans.push(Span::styled(format!(" · {} waiting to be sent", app.outbox), Style::new().fg(Color::Yellow)));
    }
    let me = app.my_name.clone().unwrap_or_else(|| app.me.short());
    spans.push(Span::styled(format!(" · {me}"), MUTED));
    if let Some((text, error)) = &app.notice {
        let style = if *error { Style::new().fg(Color::Red) } else { Style::new() };
        spans.push(Span::styled(format!(" · {text}"), style));
    }
    if let Some(detail) = detail {
        spans.push(Span::styled(format!(" · {detail}"), MUTED));
    }
    f.render_widget(Paragraph::new(TextLine::from(spans)), area);
}
