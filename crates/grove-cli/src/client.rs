//! The client commands: each opens the profile, calls grove-client, prints the result.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use grove_client::net::{Net, NetConfig};
use grove_client::profile::{ConnectTo, InitOptions, Profile};
use grove_client::proxy::Proxy;
use grove_client::Passphrase;
use std::collections::HashMap;

use grove_client::profile::Edit;
use grove_client::{Event, Message, RoomStatus};
use grove_wire::content::Content;
use grove_wire::policy::{JoinRule, Role};
use grove_wire::UserId;
use serde_json::json;

use crate::describe::{member, membership_sentence, size, who};
use crate::{Command, RoomCommand, ServerCommand};

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

/// How this invocation reaches servers: where requests go (`--connect-to`) and how
/// connections are made (`--ca-file`).
#[derive(Debug, Clone)]
pub struct Reach {
    pub connect_to: ConnectTo,
    pub net: Net,
}

/// The `--connect-to PUBLIC=ACTUAL` rules and the `--ca-file`.
pub fn reach(rules: &[String], ca_file: Option<PathBuf>, proxy: Option<&str>) -> anyhow::Result<Reach> {
    let mut c = ConnectTo::none();
    for rule in rules {
        let (public, actual) = ConnectTo::parse_rule(rule)?;
        c.add(&public, &actual);
    }
    // `--proxy` (or GROVE_PROXY); else ALL_PROXY.
    let from_env = ["ALL_PROXY", "all_proxy"].iter().find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()));
    let proxy = match (proxy.filter(|s| !s.is_empty()), from_env) {
        (Some(p), _) => Some(Proxy::parse(p).map_err(|e| anyhow!("--proxy: {e}"))?),
        (None, Some(p)) => Some(Proxy::parse(&p).map_err(|e| anyhow!("ALL_PROXY: {e}; unset it or set GROVE_PROXY"))?),
        (None, None) => None,
    };
    let net = match (ca_file, proxy) {
        (None, None) => Net::shared_default(),
        (ca_file, proxy) => Net::new(&NetConfig { ca_file, proxy })?,
    };
    Ok(Reach { connect_to: c, net })
}

/// Opens the profile in `dir` (asking for its passphrase if it has one), reached as `reach`
/// says.
pub fn open(dir: &std::path::Path, reach: &Reach) -> anyhow::Result<Profile> {
    open_with(dir, reach, crate::passphrase::current(dir)?.as_ref())
}

/// [`open`] with the passphrase already known.
pub fn open_with(dir: &std::path::Path, reach: &Reach, passphrase: Option<&Passphrase>) -> anyhow::Result<Profile> {
    let mut p = Profile::open_with(dir, passphrase)?;
    p.set_connect_to(reach.connect_to.clone());
    p.set_net(reach.net.clone());
    Ok(p)
}

pub fn run(profile: &str, json_out: bool, connect: &Reach, command: Command) -> anyhow::Result<()> {
    let dir = profile_dir(profile)?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        match command {
            Command::Init { home, name, passphrase } => {
                // Check the name before anything is created.
                if let Some(n) = &name {
                    grove_wire::content::display_name(n).map_err(|e| anyhow!("--name: {e}"))?;
                }
                let passphrase =
                    if passphrase { Some(crate::passphrase::choose(crate::passphrase::ENV)?) } else { None };
                let options = InitOptions {
                    connect_to: connect.connect_to.clone(),
                    passphrase,
                    proxy: None,
                    net: connect.net.clone(),
                };
                let mut p = Profile::create(&dir, &home, options).await?;
                if let Some(n) = &name {
                    p.set_name(n).await?;
                }
                let encrypted = p.is_encrypted();
                if json_out {
                    out!("{}", json!({"address": p.address().to_string(), "user_id": p.user_id().to_string(), "name": name, "encrypted": encrypted}));
                } else {
                    out!("{}", p.address());
                    eprintln!("identity created in {}; give this address to people who want to invite you", dir.display());
                    if encrypted {
                        eprintln!("the profile is encrypted at rest: every grove command asks for its passphrase (or reads GROVE_PASSPHRASE); a lost passphrase cannot be recovered");
                    } else {
                        eprintln!("the profile is NOT encrypted at rest: whoever can read {} can read your identity and history (`grove init --passphrase` locks a new profile)", dir.display());
                    }
                }
            }
            Command::Passphrase => {
                if !Profile::is_locked(&dir)? {
                    return Err(grove_client::StoreError::NotEncrypted.into());
                }
                let mut p = open(&dir, connect)?;
                let new = crate::passphrase::choose(crate::passphrase::NEW_ENV)?;
                p.change_passphrase(&new).await?;
                if json_out {
                    out!("{}", json!({"changed": true}));
                } else {
                    eprintln!("passphrase changed: the old one no longer opens this profile");
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
                let pending = p.key_pending(&room)?;
                key_pending(&p, &room, &pending);
                if json_out {
                    let pending: Vec<String> = pending.iter().map(|k| k.user.to_string()).collect();
                    out!("{}", json!({"seq": seq, "key_pending": pending}));
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
                let sent = p.send_reporting(&room, &Content::text(&text)).await?;
                key_pending(&p, &room, &sent.key_pending);
                if json_out {
                    let pending: Vec<String> = sent.key_pending.iter().map(|k| k.user.to_string()).collect();
                    out!("{}", json!({"seq": sent.seq, "key_pending": pending}));
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
            Command::Join { link } => {
                let mut p = open(&dir, connect)?;
                let rule = match p.join_link(&link).await? {
                    grove_client::profile::LinkJoined::Joined => {
                        let room = grove_wire::invite::parse(&link).map(|(r, _)| r).unwrap_or_default();
                        if json_out {
                            out!("{}", json!({"join": "joined", "room": room}));
                        } else {
                            eprintln!("joined {room}");
                        }
                        return Ok(());
                    }
                    grove_client::profile::LinkJoined::Asked(rule) => rule,
                };
                if json_out {
                    out!("{}", json!({"join": rule.as_str()}));
                } else if rule == JoinRule::Approval {
                    eprintln!("asked to join; an admin of the room decides, then `grove sync` joins");
                } else {
                    eprintln!("asked to join; an admin's client lets you in shortly, then `grove sync` joins");
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
                        if let Ok(Some(i)) = p.invitation(j) {
                            let names = p.display_names(j).unwrap_or_default();
                            let by = crate::describe::who(&i.inviter, p.user_id(), &names);
                            let name = p.room(j).map(|r| r.name).unwrap_or_else(|_| j.clone());
                            out!("  {by} invited you: read it with `grove read {name}`; `grove room accept {name}` tells the room your name, `grove room decline {name}` leaves it");
                        }
                    }
                    for (room, n) in &r.new_messages {
                        out!("{room}: {n} new");
                    }
                    for room in &r.removed_from {
                        out!("removed from {room}");
                    }
                }
            }
            Command::Server(sc) => server(&dir, json_out, sc)?,
            Command::Serve(_) | Command::Demo { .. } | Command::Chat { .. } | Command::Admin(_) => {
                unreachable!("handled in main")
            }
        }
        Ok(())
    })
}

/// `grove server list` and `grove server trust URL KEY`.
fn server(dir: &std::path::Path, json_out: bool, sc: ServerCommand) -> anyhow::Result<()> {
    let known = Profile::open(dir)?.known_servers();
    match sc {
        ServerCommand::List => {
            let all = known.list().with_context(|| format!("reading {}", dir.display()))?;
            if json_out {
                let all: Vec<_> = all.iter().map(|(u, k)| json!({"url": u, "key": k.to_string()})).collect();
                out!("{}", json!(all));
            } else {
                for (url, key) in all {
                    out!("{url} {key}");
                }
            }
        }
        ServerCommand::Trust { url, key } => {
            let url = grove_client::profile::server_url(&url)
                .ok_or_else(|| anyhow!("{url:?} is not a server URL like https://chat.example:8443"))?;
            let key: UserId = key
                .parse()
                .map_err(|_| anyhow!("{key:?} is not a server key (64 hex characters, as the error said)"))?;
            let old = known.trust(&url, &key).with_context(|| format!("writing {}", dir.display()))?;
            if json_out {
                out!("{}", json!({"url": url, "key": key.to_string(), "replaced": old.map(|k| k.to_string())}));
            } else {
                match old {
                    Some(old) if old != key => eprintln!("{url}: key {key} accepted (it replaces {old})"),
                    Some(_) => eprintln!("{url}: that key was already the one remembered"),
                    None => eprintln!("{url}: key {key} remembered"),
                }
            }
        }
    }
    Ok(())
}

async fn room(dir: &std::path::Path, json_out: bool, connect: &Reach, rc: RoomCommand) -> anyhow::Result<()> {
    let mut p = open(dir, connect)?;
    match rc {
        RoomCommand::Create { name, server, mode } => {
            let server = match server {
                None => p.home().to_string(),
                Some(s) => grove_client::profile::server_url(&s)
                    .ok_or_else(|| anyhow!("--server must be a server like https://chat.example:8443, not {s:?}"))?,
            };
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
        RoomCommand::Info { room } => {
            let r = p.room(&room)?;
            p.sync_room(&r.link).await?;
            let r = p.room(&room)?;
            let profile = p.room_profile(&r.link)?;
            let policy = p.policy(&r.link)?;
            let active = r.status == RoomStatus::Active;
            let members = if active { p.members(&r.link)?.len() } else { 0 };
            let me = p.user_id();
            let role = policy.as_ref().map_or(Role::Member, |pol| pol.role_of(&me));
            let join = policy.as_ref().map_or(JoinRule::InviteOnly, |pol| pol.join);
            let status = format!("{:?}", r.status).to_lowercase();
            if json_out {
                out!(
                    "{}",
                    json!({"link": r.link, "mode": r.mode.as_str(), "title": profile.name, "topic": profile.topic, "members": members, "join": join.as_str(), "role": role.as_str(), "status": status})
                );
            } else {
                out!("link:\t{}", r.link);
                out!("mode:\t{}", r.mode.as_str());
                out!("name:\t{}", profile.name);
                out!("topic:\t{}", profile.topic);
                out!("members:\t{members}");
                out!("join:\t{join}");
                out!("you:\t{role} ({status})");
            }
        }
        RoomCommand::Policy { room, join } => {
            let rule: JoinRule = join.parse()?;
            p.set_join_rule(&room, rule).await?;
            if !json_out {
                eprintln!("the room's join policy is now {rule}");
            }
        }
        RoomCommand::Link { room, revoke: true, .. } => {
            let existed = p.revoke_link(&room).await?;
            if json_out {
                out!("{}", json!({"revoked": existed}));
            } else if existed {
                eprintln!("revoked: the link no longer works");
            } else {
                eprintln!("the room had no link");
            }
        }
        RoomCommand::Link { room, uses, expires, .. } => {
            let expires = expires.map(|e| parse_duration(&e)).transpose()?;
            let (link, info) = p.make_link(&room, uses, expires).await?;
            if json_out {
                out!("{}", json!({"link": link, "max_uses": info.max_uses, "expires_at": info.expires_at}));
            } else {
                out!("{link}");
                if p.policy(&room)?.is_some_and(|pol| pol.join == JoinRule::InviteOnly) {
                    eprintln!("the room is invite-only: nobody can use the link until `grove room policy {room} link` (or approval)");
                }
            }
        }
        RoomCommand::Requests { room } => {
            let requests = p.join_requests(&room).await?;
            if json_out {
                let rows: Vec<_> = requests
                    .iter()
                    .map(|r| json!({"user_id": r.user.to_string(), "home": r.home, "at": r.at}))
                    .collect();
                out!("{}", serde_json::Value::Array(rows));
            } else {
                for r in requests {
                    out!("{}\t{}", r.user, r.home);
                }
            }
        }
        RoomCommand::Approve { room, user } => {
            let user = asker(&user)?;
            p.approve(&room, &user).await?;
            if !json_out {
                eprintln!("approved: they join with `grove sync`");
            }
        }
        RoomCommand::Deny { room, user } => {
            let user = asker(&user)?;
            if !p.deny(&room, &user).await? {
                return Err(anyhow!("{} has no request waiting: see `grove room requests {room}`", user.short()));
            }
        }
        RoomCommand::Profile { room, name, topic } => {
            let profile = if name.is_none() && topic.is_none() {
                let link = p.room(&room)?.link;
                p.sync_room(&link).await?;
                p.room_profile(&link)?
            } else {
                p.set_room_profile(&room, name.as_deref(), topic.as_deref()).await?
            };
            if json_out {
                out!("{}", json!({"name": profile.name, "topic": profile.topic}));
            } else {
                out!("name:\t{}", profile.name);
                out!("topic:\t{}", profile.topic);
            }
        }
        RoomCommand::Leave { room } => p.leave(&room).await?,
        RoomCommand::Accept { room } => p.accept(&room).await?,
        RoomCommand::Decline { room } => p.decline(&room).await?,
        RoomCommand::Update { room } => {
            p.update(&room).await?;
            key_pending(&p, &room, &p.key_pending(&room)?);
        }
        RoomCommand::VoidStuck { room } => {
            let seq = p.void_stuck_commit(&room).await?;
            out!("the commit was voided (entry {seq}); the room is back at the epoch before it");
        }
        RoomCommand::List => {
            let rooms = p.rooms()?;
            let invitations = p.invitations()?;
            let invited_by = |link: &str| invitations.iter().find(|i| i.room == link).map(|i| i.inviter);
            if json_out {
                let mut rows = Vec::new();
                for r in &rooms {
                    let invited_by = invited_by(&r.link).map(|u| u.to_string());
                    let profile = p.room_profile(&r.link)?;
                    rows.push(json!({"link": r.link, "name": r.name, "mode": r.mode.as_str(), "status": format!("{:?}", r.status).to_lowercase(), "cursor": r.cursor, "unread": p.unread(&r.link)?, "invited_by": invited_by, "title": profile.name, "topic": profile.topic}));
                }
                out!("{}", serde_json::Value::Array(rows));
            } else {
                for r in rooms {
                    let status = match (r.status, invited_by(&r.link)) {
                        (RoomStatus::Active, Some(by)) => {
                            let names = p.display_names(&r.link)?;
                            format!(
                                " (invited by {}: `grove room accept {}` or `decline`)",
                                crate::describe::who(&by, p.user_id(), &names),
                                r.name
                            )
                        }
                        (RoomStatus::Active, None) => String::new(),
                        (RoomStatus::Left, _) => " (left)".into(),
                        (RoomStatus::Removed, _) => " (removed)".into(),
                    };
                    let unread = p.unread(&r.link)?;
                    let unread = if unread > 0 { format!("{unread} unread") } else { "-".to_string() };
                    let profile = p.room_profile(&r.link)?;
                    let title = if profile.name.is_empty() { String::new() } else { format!("\t\"{}\"", profile.name) };
                    out!("{}\t{}\t{}\t{}{}{}", r.name, r.mode.as_str(), unread, r.link, status, title);
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

/// Who asks to join: a user id or an address (a request names no display name the room knows).
fn asker(who: &str) -> anyhow::Result<UserId> {
    if let Ok(a) = grove_client::profile::Address::parse(who) {
        return Ok(a.user);
    }
    who.parse::<UserId>().map_err(|_| anyhow!("{who:?} is not a user id: see `grove room requests ROOM`"))
}

/// `30s`, `15m`, `12h`, `7d` (or a bare number of seconds) as seconds.
fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let bad = || anyhow!("{s:?} is not a duration: write a number with s, m, h or d, like 30m or 7d");
    let t = s.trim();
    let (n, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_lowercase()),
        _ => (t, 's'),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if secs == 0 {
        return Err(anyhow!("a link that expires at once is no link: give a duration above 0"));
    }
    Ok(secs)
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
                Content::RoomProfile(r) => (
                    format!("* {}", crate::describe::room_profile_sentence(&sender, &r)),
                    json!({"name": r.name, "topic": r.topic}),
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
                json!({"text": text, "added": change.added, "removed": change.removed, "joined": change.joined, "again": change.again, "removed_unseen": change.removed_unseen, "voided": change.voided, "roles": change.roles, "banned": change.banned, "unbanned": change.unbanned, "rights": change.rights, "join": change.join, "resynced": change.resynced}),
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

/// Says on standard error which members of a sender-keys room have not got this user's key yet
/// (their home server could not be reached), and that it is retried.
fn key_pending(p: &Profile, room: &str, pending: &[grove_client::profile::KeyPending]) {
    if let Some(sentence) = crate::describe::key_pending_sentence(p, room, pending) {
        eprintln!("{sentence}");
    }
}
