//! The client commands: each opens the profile, calls grove-client, prints the result.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use grove_client::profile::{ConnectTo, Profile};
use std::collections::HashMap;

use grove_client::profile::Edit;
use grove_client::store::{Event, Message, RoomStatus};
use grove_wire::content::Content;
use grove_wire::policy::Role;
use grove_wire::UserId;
use serde_json::json;

use crate::describe::{member, membership_sentence, size, who};
use crate::{Command, RoomCommand};

/// `println!` that answers an error instead of panicking when stdout is closed
/// (`grove read ROOM | head -1`); `main` exits quietly on a broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

/// `$GROVE_HOME/<profile>`; `GROVE_HOME` defaults to the platform data folder.
pub fn profile_dir(profile: &str) -> anyhow::Result<PathBuf> {
    if profile.is_empty() || !profile.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(anyhow!("a profile name is letters, digits, - and _ (got {profile:?})"));
    }
    let home = match std::env::var_os("GROVE_HOME") {
        Some(h) => PathBuf::from(h),
        None => dirs::data_dir()
            .ok_or_else(|| anyhow!("no data folder on this system: set GROVE_HOME to a folder for grove's state"))?
            .join("grove"),
    };
    Ok(home.join(profile))
}

/// The `--connect-to PUBLIC=ACTUAL` rules.
pub fn connect_to(rules: &[String]) -> anyhow::Result<ConnectTo> {
    let mut c = ConnectTo::none();
    for rule in rules {
        let (public, actual) = ConnectTo::parse_rule(rule)?;
        c.add(&public, &actual);
    }
    Ok(c)
}

/// Opens the profile in `dir`, with the `--connect-to` rules.
fn open(dir: &std::path::Path, connect: &ConnectTo) -> anyhow::Result<Profile> {
    let mut p = Profile::open(dir)?;
    p.set_connect_to(connect.clone());
    Ok(p)
}

pub fn run(profile: &str, json_out: bool, connect: &ConnectTo, command: Command) -> anyhow::Result<()> {
    let dir = profile_dir(profile)?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        match command {
            Command::Init { home, name } => {
                // Check the name before anything is created.
                if let Some(n) = &name {
                    grove_wire::content::display_name(n).map_err(|e| anyhow!("--name: {e}"))?;
                }
                let mut p = Profile::init_with(&dir, &home, connect.clone()).await?;
                if let Some(n) = &name {
                    p.set_name(n).await?;
                }
                if json_out {
                    out!("{}", json!({"address": p.address().to_string(), "user_id": p.user_id().to_string(), "name": name}));
                } else {
                    out!("{}", p.address());
                    eprintln!("identity created in {}; give this address to people who want to invite you", dir.display());
                }
            }
            Command::Whoami => {
                let p = open(&dir, connect)?;
                if json_out {
                    out!("{}", json!({"address": p.address().to_string(), "user_id": p.user_id().to_string(), "home": p.home(), "name": p.name()?}));
                } else {
                    out!("{}", p.address());
                }
            }
            Command::Name { name } => {
                let mut p = open(&dir, connect)?;
                let told = p.set_name(&name).await?;
                if json_out {
                    out!("{}", json!({"name": p.name()?, "rooms_told": told}));
                } else {
                    eprintln!("you are now {:?} in {told} room(s)", p.name()?.unwrap_or_default());
                }
            }
            Command::Room(rc) => room(&dir, json_out, connect, rc).await?,
            Command::Send { room, file: Some(path), caption, .. } => {
                let mut p = open(&dir, connect)?;
                let seq = crate::files::send(&mut p, &room, &path, caption.as_deref()).await?;
                if json_out {
                    out!("{}", json!({"seq": seq}));
                }
            }
            Command::Save { room, seq, out, force } => {
                let mut p = open(&dir, connect)?;
                let saved = crate::files::save(&mut p, &room, seq, out.as_deref(), force, json_out).await?;
                if json_out {
                    out!("{saved}");
                } else {
                    out!("{}", saved["path"].as_str().unwrap_or_default());
                }
            }
            Command::Send { room, text, .. } => {
                let text = match text.as_deref() {
                    None | Some("-") => {
                        let mut buf = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
                            .context("reading the message from standard input")?;
                        buf.strip_suffix('\n').map(|b| b.strip_suffix('\r').unwrap_or(b)).unwrap_or(&buf).to_string()
                    }
                    Some(t) => t.to_string(),
                };
                if text.trim().is_empty() {
                    return Err(anyhow!("the message is empty: give it as an argument or on standard input"));
                }
                let mut p = open(&dir, connect)?;
                let seq = p.send(&room, &text).await?;
                if json_out {
                    out!("{}", json!({"seq": seq}));
                }
            }
            Command::Outbox => {
                let mut p = open(&dir, connect)?;
                let sent = p.flush_outbox().await?;
                let waiting = p.outbox()?;
                if json_out {
                    let rows: Vec<_> = waiting
                        .iter()
                        .map(|i| json!({"id": i.id, "room": i.room, "created": i.created, "kind": Content::decode(&i.content).kind(), "sealed": i.sealed.is_some()}))
                        .collect();
                    out!("{}", json!({"sent": sent, "waiting": rows}));
                } else {
                    if sent > 0 {
                        eprintln!("sent {sent} waiting message(s)");
                    }
                    if waiting.is_empty() {
                        eprintln!("the outbox is empty");
                    }
                    for i in &waiting {
                        let preview = match Content::decode(&i.content) {
                            Content::Text { text } => text,
                            c => format!("({})", c.kind()),
                        };
                        out!("{}\t{}\t{}", i.id, i.room, preview);
                    }
                }
            }
            Command::Read { room, follow, after } => {
                let mut p = open(&dir, connect)?;
                let link = p.room(&room)?.link;
                let mut status = match p.sync_room(&link).await {
                    Ok(s) => s,
                    // Offline: show what is here.
                    Err(grove_client::profile::ClientError::Server(e)) if !follow => {
                        eprintln!("grove: showing what this profile holds: {e}");
                        p.room(&room)?.status
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut shown = after;
                loop {
                    let names = p.display_names(&room)?;
                    let me = p.user_id();
                    for m in p.messages(&room, shown)? {
                        print_message(&m, json_out, me, &names)?;
                        shown = m.seq;
                    }
                    p.mark_seen(&room, shown).await?;
                    if !follow || status != RoomStatus::Active {
                        break;
                    }
                    status = p.wait_and_sync(&room, 30).await?;
                }
                if status == RoomStatus::Removed && !json_out {
                    eprintln!("you were removed from this room");
                }
            }
            Command::Sync => {
                let mut p = open(&dir, connect)?;
                let r = p.sync().await?;
                if json_out {
                    out!("{}", json!({"joined": r.joined, "new_messages": r.new_messages, "removed_from": r.removed_from}));
                } else {
                    for j in &r.joined {
                        out!("joined {j}");
                    }
                    for (room, n) in &r.new_messages {
                        out!("{room}: {n} new");
                    }
                    for room in &r.removed_from {
                        out!("removed from {room}");
                    }
                }
            }
            Command::Serve(_) | Command::Demo { .. } | Command::Chat { .. } | Command::Admin(_) => {
                unreachable!("handled in main")
            }
        }
        Ok(())
    })
}

async fn room(dir: &std::path::Path, json_out: bool, connect: &ConnectTo, rc: RoomCommand) -> anyhow::Result<()> {
    let mut p = open(dir, connect)?;
    match rc {
        RoomCommand::Create { name, server, mode } => {
            let server = server.unwrap_or_else(|| p.home().to_string());
            let mode = grove_wire::api::RoomMode::parse(&mode)
                .ok_or_else(|| anyhow::anyhow!("--mode must be mls or sender-keys, not {mode:?}"))?;
            let room = p.create_room_with_mode(&server, &name, mode).await?;
            if json_out {
                out!("{}", json!({"link": room.link, "name": room.name, "mode": room.mode.as_str()}));
            } else {
                out!("{}", room.link);
            }
        }
        RoomCommand::Invite { room, address } => {
            p.invite(&room, &address).await?;
            if !json_out {
                eprintln!("invited; they join with `grove sync`");
            }
        }
        RoomCommand::Remove { room, user } => {
            let user = member(&mut p, &room, &user)?;
            p.remove(&room, &user).await?;
        }
        RoomCommand::Role { room, user, role } => {
            let role: Role = role.parse()?;
            let user = member(&mut p, &room, &user)?;
            p.edit_policy(&room, Edit::SetRole(user, role)).await?;
        }
        RoomCommand::Ban { room, user } => {
            let user = member(&mut p, &room, &user)?;
            p.edit_policy(&room, Edit::Ban(user)).await?;
        }
        RoomCommand::Unban { room, user } => {
            let user = member(&mut p, &room, &user)?;
            p.edit_policy(&room, Edit::Unban(user)).await?;
        }
        RoomCommand::Bans { room } => {
            let link = p.room(&room)?.link;
            p.sync_room(&link).await?;
            let bans: Vec<UserId> = p.policy(&room)?.map(|p| p.bans.into_iter().collect()).unwrap_or_default();
            let names = p.display_names(&room)?;
            if json_out {
                let rows: Vec<_> =
                    bans.iter().map(|u| json!({"user_id": u.to_string(), "name": names.get(u)})).collect();
                out!("{}", serde_json::Value::Array(rows));
            } else {
                for u in bans {
                    out!("{}\t{u}", names.get(&u).cloned().unwrap_or_else(|| u.short()));
                }
            }
        }
        RoomCommand::Leave { room } => p.leave(&room).await?,
        RoomCommand::Update { room } => p.update(&room).await?,
        RoomCommand::List => {
            let rooms = p.rooms()?;
            if json_out {
                let mut rows = Vec::new();
                for r in &rooms {
                    rows.push(json!({"link": r.link, "name": r.name, "mode": r.mode.as_str(), "status": format!("{:?}", r.status).to_lowercase(), "cursor": r.cursor, "unread": p.unread(&r.link)?}));
                }
                out!("{}", serde_json::Value::Array(rows));
            } else {
                for r in rooms {
                    let status = match r.status {
                        RoomStatus::Active => "",
                        RoomStatus::Left => " (left)",
                        RoomStatus::Removed => " (removed)",
                    };
                    let unread = p.unread(&r.link)?;
                    let unread = if unread > 0 { format!("{unread} unread") } else { "-".to_string() };
                    out!("{}\t{}\t{}\t{}{}", r.name, r.mode.as_str(), unread, r.link, status);
                }
            }
        }
        RoomCommand::Members { room } => {
            let link = p.room(&room)?.link;
            p.sync_room(&link).await?;
            let members = p.members(&room)?;
            let names = p.display_names(&room)?;
            let policy = p.policy(&room)?;
            let role = |m: &UserId| policy.as_ref().map_or(Role::Member, |p| p.role_of(m));
            let me = p.user_id();
            if json_out {
                let rows: Vec<_> = members
                    .iter()
                    .map(|m| json!({"user_id": m.to_string(), "name": names.get(m), "you": *m == me, "role": role(m).as_str()}))
                    .collect();
                out!("{}", serde_json::Value::Array(rows));
            } else {
                for m in members {
                    let you = if m == me { " (you)" } else { "" };
                    let r = role(&m);
                    match names.get(&m) {
                        Some(n) => out!("{n}{you}\t{r}\t{m}"),
                        None => out!("{}{you}\t{r}\t{m}", m.short()),
                    }
                }
            }
        }
    }
    Ok(())
}

fn print_message(m: &Message, json_out: bool, me: UserId, names: &HashMap<UserId, String>) -> std::io::Result<()> {
    let sender = who(&m.sender, me, names);
    let (kind, text, extra): (&str, String, serde_json::Value) = match m.event() {
        Event::Content(c) => {
            let kind = c.kind().to_string();
            let (text, extra) = match c {
                Content::Text { text } => (format!("{sender}: {text}"), json!({"text": text})),
                Content::Reply { to, text } => {
                    (format!("{sender} (reply to {to}): {text}"), json!({"text": text, "to": to}))
                }
                Content::Edit { of, text } => {
                    (format!("* {sender} edited {of}: {text}"), json!({"text": text, "of": of}))
                }
                Content::Delete { of } => (format!("* {sender} deleted {of}"), json!({"of": of})),
                Content::Reaction { to, key, remove } => {
                    let verb = if remove { "withdrew" } else { "reacted" };
                    (format!("* {sender} {verb} {key} on {to}"), json!({"to": to, "key": key, "remove": remove}))
                }
                Content::Attachment { file, caption } => {
                    // The sender's words: shown as the name `grove save` would write, and
                    // without the key (`grove save` fetches it from history).
                    let name = grove_client::files::safe_file_name(&file.name);
                    (
                        format!(
                            "{sender}: [file {name}, {}, {}]{}",
                            size(file.size),
                            file.media_type.escape_default(),
                            caption.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
                        ),
                        json!({"file": {"name": name, "size": file.size, "media_type": file.media_type, "blob": file.blob}, "caption": caption}),
                    )
                }
                Content::Profile(p) => {
                    (format!("* {} is called {}", m.sender.short(), p.name), json!({"name": p.name}))
                }
                Content::Roster { profiles } => (
                    format!("* {sender} passed on {} member name(s)", profiles.len()),
                    json!({"names": profiles.len()}),
                ),
                Content::Unsupported { kind, .. } => (
                    format!("{sender}: (unsupported message of kind {kind:?}: a newer grove shows it)"),
                    json!({"unsupported": kind}),
                ),
                _ => (format!("{sender}: (unsupported message)"), json!({})),
            };
            return emit(m, json_out, &kind, &sender, &text, extra);
        }
        Event::Membership(change) => {
            let text = membership_sentence(&m.sender, &change, me, names);
            (
                "event",
                format!("* {text}"),
                json!({"text": text, "added": change.added, "removed": change.removed, "joined": change.joined, "again": change.again, "removed_unseen": change.removed_unseen}),
            )
        }
        Event::Undecryptable(why) => {
            ("undecryptable", format!("! unreadable entry from {sender}: {why}"), json!({"text": why}))
        }
        Event::Note(text) => ("event", format!("* {text}"), json!({"text": text})),
    };
    emit(m, json_out, kind, &sender, &text, extra)
}

fn emit(
    m: &Message,
    json_out: bool,
    kind: &str,
    sender: &str,
    line: &str,
    extra: serde_json::Value,
) -> std::io::Result<()> {
    if json_out {
        let mut v =
            json!({"seq": m.seq, "kind": kind, "sender": m.sender.to_string(), "sender_name": sender, "ts": m.ts});
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        out!("{v}");
    } else {
        out!("[{}] {line}", m.seq);
    }
    Ok(())
}
