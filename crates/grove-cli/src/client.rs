//! The client commands: each opens the profile, calls grove-client, prints the result.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use grove_client::profile::{Address, ConnectTo, Profile};
use grove_client::store::{Message, MessageKind, RoomStatus};
use grove_wire::UserId;
use serde_json::json;

use crate::{Command, RoomCommand};

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
            Command::Init { home } => {
                let p = Profile::init_with(&dir, &home, connect.clone()).await?;
                if json_out {
                    println!("{}", json!({"address": p.address().to_string(), "user_id": p.user_id().to_string()}));
                } else {
                    println!("{}", p.address());
                    eprintln!("identity created in {}; give this address to people who want to invite you", dir.display());
                }
            }
            Command::Whoami => {
                let p = open(&dir, connect)?;
                if json_out {
                    println!("{}", json!({"address": p.address().to_string(), "user_id": p.user_id().to_string(), "home": p.home()}));
                } else {
                    println!("{}", p.address());
                }
            }
            Command::Room(rc) => room(&dir, json_out, connect, rc).await?,
            Command::Send { room, text } => {
                let mut p = open(&dir, connect)?;
                let seq = p.send(&room, &text).await?;
                if json_out {
                    println!("{}", json!({"seq": seq}));
                }
            }
            Command::Read { room, follow, after } => {
                let mut p = open(&dir, connect)?;
                let mut status = p.sync_room(&p.room(&room)?.link).await?;
                let mut shown = after;
                loop {
                    for m in p.messages(&room, shown)? {
                        print_message(&m, json_out, p.user_id());
                        shown = m.seq;
                    }
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
                    println!("{}", json!({"joined": r.joined, "new_messages": r.new_messages, "removed_from": r.removed_from}));
                } else {
                    for j in &r.joined {
                        println!("joined {j}");
                    }
                    for (room, n) in &r.new_messages {
                        println!("{room}: {n} new");
                    }
                    for room in &r.removed_from {
                        println!("removed from {room}");
                    }
                }
            }
            Command::Serve(_) | Command::Demo { .. } => unreachable!("handled in main"),
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
                println!("{}", json!({"link": room.link, "name": room.name, "mode": room.mode.as_str()}));
            } else {
                println!("{}", room.link);
            }
        }
        RoomCommand::Invite { room, address } => {
            p.invite(&room, &address).await?;
            if !json_out {
                eprintln!("invited; they join with `grove sync`");
            }
        }
        RoomCommand::Remove { room, user } => {
            let user: UserId = match Address::parse(&user) {
                Ok(a) => a.user,
                Err(_) => user.parse().map_err(|_| {
                    anyhow!("{user:?} is neither a user id nor an address: see `grove room members {room}`")
                })?,
            };
            p.remove(&room, &user).await?;
        }
        RoomCommand::Leave { room } => p.leave(&room).await?,
        RoomCommand::Update { room } => p.update(&room).await?,
        RoomCommand::List => {
            let rooms = p.rooms()?;
            if json_out {
                let rows: Vec<_> = rooms
                    .iter()
                    .map(|r| json!({"link": r.link, "name": r.name, "mode": r.mode.as_str(), "status": format!("{:?}", r.status).to_lowercase(), "cursor": r.cursor}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for r in rooms {
                    let status = match r.status {
                        RoomStatus::Active => "",
                        RoomStatus::Left => " (left)",
                        RoomStatus::Removed => " (removed)",
                    };
                    println!("{}\t{}{}", r.name, r.link, status);
                }
            }
        }
        RoomCommand::Members { room } => {
            let link = p.room(&room)?.link;
            p.sync_room(&link).await?;
            let members = p.members(&room)?;
            if json_out {
                println!("{}", json!(members.iter().map(|m| m.to_string()).collect::<Vec<_>>()));
            } else {
                for m in members {
                    let me = if m == p.user_id() { " (you)" } else { "" };
                    println!("{m}{me}");
                }
            }
        }
    }
    Ok(())
}

fn print_message(m: &Message, json_out: bool, me: UserId) {
    let body = String::from_utf8_lossy(&m.body);
    if json_out {
        let kind = match m.kind {
            MessageKind::Text => "text",
            MessageKind::Event => "event",
            MessageKind::Undecryptable => "undecryptable",
        };
        println!("{}", json!({"seq": m.seq, "kind": kind, "sender": m.sender.to_string(), "ts": m.ts, "text": body}));
        return;
    }
    let who = if m.sender == me { "you".to_string() } else { m.sender.short() };
    match m.kind {
        MessageKind::Text => println!("[{}] {who}: {body}", m.seq),
        MessageKind::Event => println!("[{}] * {body}", m.seq),
        MessageKind::Undecryptable => println!("[{}] ! unreadable entry from {who}: {body}", m.seq),
    }
}
