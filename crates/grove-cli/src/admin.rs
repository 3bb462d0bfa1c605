//! `grove admin`: the operator's commands, over `grove_server::admin`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use grove_server::admin::{AdminAnswer, AdminRequest, RoomRow};
use grove_server::Config;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's data folder [default: ./grove-data, or the config file's server.data_dir].
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// The server's configuration file (TOML), as given to `grove serve`.
    #[arg(long, value_name = "FILE", env = "GROVE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Database: `sqlite` (in the data folder) or a postgres:// URL, as given to `grove serve`.
    #[arg(long, value_name = "URL", env = "GROVE_DATABASE", global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// List every room: mode, members, entries, bytes, last activity.
    Rooms,
    /// Show or delete one room.
    Room {
        #[command(subcommand)]
        command: RoomAdmin,
    },
    /// List every key the server knows: rooms, mailbox and key-directory usage, blocks.
    Users,
    /// Block a key: every request it signs is refused (`blocked`), and its mailbox takes nothing.
    Block {
        /// The user id (64 hex characters).
        user: String,
    },
    /// Lift a block.
    Unblock {
        /// The user id.
        user: String,
    },
    /// Totals: rooms, entries, users, mailboxes, keys, files, free storage.
    Stats,
    /// Copy the database and the server key into the new folder PATH, consistently, while the
    /// server keeps serving (SQLite; for PostgreSQL see docs/operating.md).
    Backup {
        /// A new (or empty) folder.
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RoomAdmin {
    /// A room's details and members.
    Show {
        /// The room's name.
        name: String,
    },
    /// Stop hosting a room: delete its log, its state and its attachments. Its members are
    /// answered `room_not_found` from then on. Cannot be undone.
    Delete {
        /// The room's name.
        name: String,
    },
}

fn config(args: &AdminArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(data) = &args.data {
        config.server.data_dir = data.clone();
    }
    if let Some(db) = &args.database {
        config.server.database = db.clone();
        config.validate()?;
    }
    Ok(config)
}

pub fn run(args: AdminArgs, json: bool) -> anyhow::Result<()> {
    let config = config(&args)?;
    let req = match args.command {
        AdminCommand::Backup { path } => {
            let report = grove_server::backup(&config, &path)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"database": report.database, "key": report.key, "bytes": report.bytes})
                );
            } else {
                println!(
                    "backed up {} bytes to {} (with the server key, {}): `grove serve --data {}` serves it",
                    report.bytes,
                    report.database.display(),
                    report.key.display(),
                    path.display()
                );
            }
            return Ok(());
        }
        AdminCommand::Rooms => AdminRequest::Rooms,
        AdminCommand::Room { command: RoomAdmin::Show { name } } => AdminRequest::Room { name },
        AdminCommand::Room { command: RoomAdmin::Delete { name } } => AdminRequest::DeleteRoom { name },
        AdminCommand::Users => AdminRequest::Users,
        AdminCommand::Block { user } => AdminRequest::Block { user },
        AdminCommand::Unblock { user } => AdminRequest::Unblock { user },
        AdminCommand::Stats => AdminRequest::Stats,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let (answer, _running) = runtime.block_on(grove_server::admin::run_command(config, req))?;
    if json {
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    print_answer(&answer);
    Ok(())
}

fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

fn room_line(r: &RoomRow) -> String {
    format!(
        "{:<24} {:<11} {:>7} {:>9} {:>12}  {}",
        r.name,
        r.mode,
        r.members,
        r.entries,
        r.bytes,
        when(r.last_activity)
    )
}

fn print_answer(answer: &AdminAnswer) {
    match answer {
        AdminAnswer::Rooms { rooms } => {
            if rooms.is_empty() {
                println!("no rooms");
                return;
            }
            println!("{:<24} {:<11} {:>7} {:>9} {:>12}  last activity", "room", "mode", "members", "entries", "bytes");
            for r in rooms {
                println!("{}", room_line(r));
            }
        }
        AdminAnswer::Room { room } => {
            println!("room:          {}", room.row.name);
            println!("mode:          {}{}", room.row.mode, if room.row.public { ", public" } else { "" });
            println!("created:       {} by {}", when(room.created_at), room.created_by);
            println!("epoch:         {}", room.epoch);
            println!("entries:       {} ({} bytes)", room.row.entries, room.row.bytes);
            println!("last activity: {}", when(room.row.last_activity));
            println!("members ({}):", room.member_ids.len());
            for m in &room.member_ids {
                let admin = if room.admin_ids.contains(m) { "  (admin)" } else { "" };
                println!("  {m}{admin}");
            }
        }
        AdminAnswer::Deleted { name, entries, files } => {
            println!("room {name} deleted: {entries} entries and {files} attachments removed; its members now get room_not_found");
        }
        AdminAnswer::Users { users } => {
            if users.is_empty() {
                println!("no users");
                return;
            }
            println!("{:<64} {:>5} {:>8} {:>12} {:>5}", "user", "rooms", "mailbox", "mailbox-B", "keys");
            for u in users {
                let blocked = if u.blocked { "  BLOCKED" } else { "" };
                println!(
                    "{:<64} {:>5} {:>8} {:>12} {:>5}{blocked}",
                    u.user, u.rooms, u.mailbox_messages, u.mailbox_bytes, u.key_items
                );
            }
        }
        AdminAnswer::Block { user, blocked, changed } => match (blocked, changed) {
            (true, true) => println!("{user} is blocked: its requests are refused and its mailbox takes nothing"),
            (true, false) => println!("{user} was blocked already"),
            (false, true) => println!("{user} is no longer blocked"),
            (false, false) => println!("{user} was not blocked"),
        },
        AdminAnswer::Stats { stats } => {
            println!("rooms:            {}", stats.rooms);
            println!("entries:          {} ({} bytes)", stats.entries, stats.entry_bytes);
            println!("users:            {} ({} blocked)", stats.users, stats.blocked);
            println!("mailbox messages: {} ({} bytes)", stats.mailbox_messages, stats.mailbox_bytes);
            println!("key items:        {}", stats.key_items);
            println!("files:            {} ({} bytes)", stats.files, stats.file_bytes);
            match stats.headroom_bytes {
                Some(h) => println!("free storage:     {h} bytes"),
                None => println!("free storage:     unknown (ask the database server)"),
            }
        }
    }
}
