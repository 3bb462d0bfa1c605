//! `grove`: the grove command. Thin: it parses arguments and wires libraries together.

// The workspace denies unwrap/expect/panic and warns on unreachable `pub`; a binary relaxes them:
// its modules' `pub` items are the binary's own, and its errors are anyhow's.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: mls-rs clones and drops the whole ratchet tree for
/// every commit it makes or processes, and with glibc's malloc that allocation churn was most
/// of the time at 10,000 members (`grove-bench mls`, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod chat;
mod client;
mod demo;
mod describe;
mod files;
mod passphrase;
mod serve;

/// grove: user-hosted, end-to-end encrypted group messaging.
#[derive(Debug, Parser)]
#[command(name = "grove", version, about, propagate_version = true)]
struct Cli {
    /// Profile to act as: one identity with its own state (folder $GROVE_HOME/NAME).
    #[arg(long, global = true, default_value = "default", env = "GROVE_PROFILE")]
    profile: String,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Send the requests meant for server PUBLIC_URL to ACTUAL_URL instead (like curl's
    /// --connect-to): pins this client to one instance of a server run as several behind one
    /// public URL. Repeatable; in the environment, comma-separated.
    #[arg(long, global = true, value_name = "PUBLIC_URL=ACTUAL_URL", env = "GROVE_CONNECT_TO", value_delimiter = ',')]
    connect_to: Vec<String>,
    /// Reach every server through this SOCKS5 proxy, host names resolved by the proxy (so
    /// .onion and .loki servers work): Tor's is socks5h://127.0.0.1:9050. Every request and
    /// WebSocket goes through it; if it cannot be reached, commands fail rather than connect
    /// directly. Without it, ALL_PROXY is used when set.
    #[arg(long, global = true, value_name = "socks5h://HOST:PORT", env = "GROVE_PROXY")]
    proxy: Option<String>,
    /// Trust the CA certificates in this PEM file besides the built-in roots (a server whose
    /// certificate a private CA signed).
    #[arg(long, global = true, value_name = "PATH", env = "GROVE_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a grove server (SQLite in a data folder by default).
    Serve(ServeArgs),
    /// Administer a grove server: rooms, users, blocks, statistics, backups. Reaches the
    /// running server through the admin socket in its data folder, or acts on its database
    /// directly when it is not running.
    Admin(admin::AdminArgs),
    /// Create this profile's identity and publish its keys to a home server.
    Init {
        /// The home server, e.g. `https://chat.example:8443` (`HOST:PORT` alone means https://,
        /// or http:// for a loopback address; plain http:// elsewhere only when written out).
        #[arg(long, value_name = "URL")]
        home: String,
        /// Your display name, shown to the members of your rooms (`grove name` changes it).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Lock the profile at rest: its identity secret, group secrets and history are
        /// encrypted under a key derived from a passphrase (asked twice, or GROVE_PASSPHRASE),
        /// which every later command then needs (the prompt, or GROVE_PASSPHRASE).
        #[arg(long)]
        passphrase: bool,
    },
    /// Change the passphrase of a profile made with `grove init --passphrase` (the current one
    /// from the prompt or GROVE_PASSPHRASE, the new one from the prompt or GROVE_NEW_PASSPHRASE).
    Passphrase,
    /// Print this profile's address (give it to people who want to invite you).
    Whoami,
    /// Rooms: create, invite, remove, leave, list, members, update, role, ban, unban, bans,
    /// profile, policy, link, requests, approve, deny.
    #[command(subcommand)]
    Room(RoomCommand),
    /// The servers' keys this profile remembers from its first contact with each.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Send a message, or a file, to a room.
    Send {
        /// The room's link or short name.
        room: String,
        /// The message; without it (or with `-`), the text is read from standard input.
        #[arg(conflicts_with = "file")]
        text: Option<String>,
        /// Send this file instead (end to end encrypted; the server stores what it cannot read).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// A text shown with the file.
        #[arg(long, value_name = "TEXT", requires = "file")]
        caption: Option<String>,
    },
    /// Save a file sent to a room: download it, decrypt it and check it is the one sent.
    Save {
        /// The room's link or short name.
        room: String,
        /// The file's message number (the `[N]` of `grove read`).
        seq: u64,
        /// Where to write it: a path, or a folder to put it in [default: its name, in the
        /// current folder].
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Replace an existing file at the output path.
        #[arg(long)]
        force: bool,
    },
    /// Set your display name, in every room you are in (end to end encrypted: the servers
    /// never see it).
    Name {
        /// The name (at most 64 characters).
        name: String,
    },
    /// Show the messages waiting to be sent (written while a server could not be reached),
    /// after trying to send them.
    Outbox,
    /// Show a room's messages (syncing first).
    Read {
        /// The room's link or short name.
        room: String,
        /// Keep waiting for new messages.
        #[arg(long)]
        follow: bool,
        /// Only messages after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Fetch invitations and new messages of every room.
    Sync,
    /// Ask to join a room with its invite link (`grove room link` makes one). Under the room's
    /// `link` policy an admin's client lets you in on its next sync, under `approval` an admin
    /// decides; then `grove sync` joins.
    Join {
        /// The invite link: the room's link with a secret after `#`.
        link: String,
    },
    /// The interactive client: rooms, live conversation, commands (/help inside).
    Chat {
        /// The room to open first (link or short name).
        room: Option<String>,
        /// How often, in seconds, the chat lets in the join requests of rooms whose join policy
        /// is `link` and keeps their state for link joins (as `grove sync` does).
        #[arg(long, value_name = "SECS", default_value_t = 30, env = "GROVE_CHAT_LINK_JOINS_SECS",
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        link_joins_every: u64,
    },
    /// Start a private server and three profiles, and run a whole conversation.
    Demo {
        /// The rooms' protocol: mls or sender-keys.
        #[arg(long, default_value = "mls", value_parser = ["mls", "sender-keys"])]
        mode: String,
    },
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// List the servers met and the key each presented first.
    List,
    /// Accept a server's new key after its operator replaced it on purpose (grove refuses a
    /// changed key until then, and its error names the command to run).
    Trust {
        /// The server's URL, as in the error (e.g. `https://chat.example:8443`).
        url: String,
        /// The new key (64 hex characters), as the error and the operator say.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// Create a room (MLS or Sender Keys) on a server; prints the room's link.
    Create {
        /// Name, unique on the server: a-z, 0-9, - and _.
        name: String,
        /// The server that hosts the room [default: your home server].
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// The room's protocol.
        #[arg(long, default_value = "mls", value_parser = ["mls", "sender-keys"])]
        mode: String,
    },
    /// Invite someone by address (USERID@HOST:PORT).
    Invite {
        /// The room's link or short name.
        room: String,
        /// The invitee's address (their `grove whoami`).
        address: String,
    },
    /// Remove a member.
    Remove {
        /// The room's link or short name.
        room: String,
        /// The member's user id (64 hex characters) or address.
        user: String,
    },
    /// Leave a room.
    Leave {
        /// The room's link or short name.
        room: String,
    },
    /// Accept an invitation: the room learns your name (sending into it accepts too).
    Accept {
        /// The room's link or short name.
        room: String,
    },
    /// Decline an invitation: leave the room without telling it your name.
    Decline {
        /// The room's link or short name.
        room: String,
    },
    /// List this profile's rooms.
    List,
    /// List a room's members.
    Members {
        /// The room's link or short name.
        room: String,
    },
    /// Refresh your keys in a room (post-compromise security).
    Update {
        /// The room's link or short name.
        room: String,
    },
    /// Admins: void the commit this profile cannot process, when no member could process it
    /// (nobody can then prove it faulty or help others resync); the room goes back to the
    /// epoch before it. See docs/security.md.
    VoidStuck {
        /// The room's link or short name.
        room: String,
    },
    /// Give a member a role: owner, admin, moderator or member (the room's policy says who may).
    Role {
        /// The room's link or short name.
        room: String,
        /// The member's name in the room, user id or address.
        user: String,
        /// owner, admin, moderator or member.
        role: String,
    },
    /// Ban a user: removes them if they are a member, and keeps them out (invitations of them
    /// are refused).
    Ban {
        /// The room's link or short name.
        room: String,
        /// The user's name in the room, user id or address.
        user: String,
    },
    /// Lift a ban.
    Unban {
        /// The room's link or short name.
        room: String,
        /// The user's user id or address (or name, if the room still knows it).
        user: String,
    },
    /// List the users banned from a room.
    Bans {
        /// The room's link or short name.
        room: String,
    },
    /// Show a room: its link, mode, name and topic, members, join policy and your role
    /// (syncing first).
    Info {
        /// The room's link or short name.
        room: String,
    },
    /// Set how people who were not invited come in: invite-only (every new room), link (a
    /// holder of the room's link joins at once), approval (an admin approves each request).
    /// The room's policy says who may (admins by default).
    Policy {
        /// The room's link or short name.
        room: String,
        /// invite-only, link or approval.
        join: String,
    },
    /// Make the room's invite link (replacing any other, which stops working), or revoke it.
    /// Hand it out privately: whoever holds it may ask to join.
    Link {
        /// The room's link or short name.
        room: String,
        /// How many people may use it [default: no limit].
        #[arg(long, value_name = "N", conflicts_with = "revoke")]
        uses: Option<u64>,
        /// How long it works: a number with s, m, h or d (`30m`, `7d`) [default: until revoked].
        #[arg(long, value_name = "DURATION", conflicts_with = "revoke")]
        expires: Option<String>,
        /// Revoke the room's link instead.
        #[arg(long)]
        revoke: bool,
    },
    /// List the requests to join a room that wait for an admin.
    Requests {
        /// The room's link or short name.
        room: String,
    },
    /// Let a waiting request in (an invitation, judged by the room's policy like any other).
    Approve {
        /// The room's link or short name.
        room: String,
        /// The user id (or address) of the one asking.
        user: String,
    },
    /// Deny a waiting request.
    Deny {
        /// The room's link or short name.
        room: String,
        /// The user id (or address) of the one asking.
        user: String,
    },
    /// Show a room's name and topic, or change them (end-to-end encrypted; the room's policy
    /// says who may: admins by default).
    Profile {
        /// The room's link or short name.
        room: String,
        /// The room's new name (an empty one clears it).
        #[arg(long)]
        name: Option<String>,
        /// The room's new topic (an empty one clears it).
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's server.listen], or
    /// `unix:PATH` for a Unix socket (to publish the server as a Tor onion service or a
    /// Lokinet SNApp: see docs/operating.md).
    #[arg(long, value_name = "ADDR", value_parser = serve::parse_listen)]
    listen: Option<serve::Listen>,
    /// Data folder for the database and server key [default: ./grove-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Database: `sqlite` (default, in the data folder) or a postgres:// URL.
    #[arg(long, value_name = "URL", env = "GROVE_DATABASE")]
    database: Option<String>,
    /// Configuration file (TOML); see `grove serve --print-config`.
    #[arg(long, value_name = "FILE", env = "GROVE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the commented example configuration with every default, and exit.
    #[arg(long)]
    print_config: bool,
    /// Terminate TLS: the certificate chain (PEM; the config file's tls.cert). Read again on
    /// SIGHUP, without a restart.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM; the config file's tls.key). Read again on SIGHUP.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How to log: `text` (for people, on standard error) or `json` (one JSON object per line
    /// on standard output, for log collectors: journald, Docker, Loki...).
    #[arg(long, value_name = "FORMAT", default_value = "text", env = "GROVE_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GROVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    match &cli.command {
        Command::Serve(ServeArgs { log_format: LogFormat::Json, .. }) => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stdout)
            .init(),
        Command::Chat { .. } => {
            // The terminal is the chat's screen: the log goes to chat.log in the profile folder.
            let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
            let file = client::profile_dir(&cli.profile).ok().filter(|d| d.is_dir()).and_then(|d| {
                let mut o = std::fs::OpenOptions::new();
                o.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                o.open(d.join("chat.log")).ok()
            });
            match file {
                Some(f) => logs.with_writer(std::sync::Mutex::new(f)).init(),
                None => logs.with_writer(std::io::sink).init(),
            }
        }
        _ => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Demo { mode } => demo::run(&mode),
        Command::Chat { room, link_joins_every } => client::reach(&cli.connect_to, cli.ca_file, cli.proxy.as_deref())
            .and_then(|c| {
                let every = std::time::Duration::from_secs(link_joins_every);
                chat::run(&client::profile_dir(&cli.profile)?, &c, room, every)
            }),
        Command::Admin(args) => admin::run(args, cli.json),
        command => client::reach(&cli.connect_to, cli.ca_file, cli.proxy.as_deref())
            .and_then(|c| client::run(&cli.profile, cli.json, &c, command)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // EX_TEMPFAIL: the message is queued, not lost; the next command that reaches the
        // server sends it.
        Err(e)
            if e.downcast_ref::<grove_client::profile::ClientError>()
                .is_some_and(|c| matches!(c, grove_client::profile::ClientError::Queued { .. })) =>
        {
            eprintln!("grove: {e:#}");
            std::process::ExitCode::from(75)
        }
        // The reader went away (`grove read ROOM | head`): nothing more to say to it.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("grove: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
