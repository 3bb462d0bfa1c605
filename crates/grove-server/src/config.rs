//! Server configuration: a TOML file whose every setting has a default.
//! `grove serve --print-config` prints [`EXAMPLE_CONFIG`], the commented example.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use grove_wire::api::{Limits, RoomCreationPolicy};
use grove_wire::UserId;
use serde::Deserialize;

/// The commented example configuration, listing every setting with its default.
pub const EXAMPLE_CONFIG: &str = include_str!("../grove.example.toml");

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: ServerSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[rooms]`
    pub rooms: RoomsSection,
    /// `[files]`
    pub files: FilesSection,
    /// `[connections]`
    pub connections: ConnectionsSection,
    /// `[quotas]`
    pub quotas: QuotasSection,
    /// `[privacy]`
    pub privacy: PrivacySection,
    /// `[tls]`
    pub tls: TlsSection,
}

/// `[privacy]`: what the server writes down about its users, and for how long it keeps what
/// they send. Mailbox messages expire after `limits.mailbox_ttl_secs` (published to clients)
/// and blobs after `files.retention_secs`; this section adds the rooms' logs and the log
/// lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    /// Whether log lines name client addresses (IP and port). Off by default: turn it on for
    /// abuse handling (the request lines, at debug level, then carry `client`, and refused
    /// connections their address).
    pub log_ip_addresses: bool,
    /// How long a room's application messages are kept, seconds; 0 (the default) keeps them.
    /// Older ones are deleted from the log (commits, proposals and membership entries stay:
    /// members catching up need them). A member away longer than this misses what was said.
    pub log_retention_secs: u64,
    /// How often the retention task runs (mailbox expiry and `log_retention_secs`), seconds.
    pub purge_interval_secs: u64,
}

impl Default for PrivacySection {
    fn default() -> Self {
        PrivacySection { log_ip_addresses: false, log_retention_secs: 0, purge_interval_secs: 60 }
    }
}

/// `[tls]`: the server terminates TLS itself when both files are set (otherwise it speaks
/// plain HTTP, for a reverse proxy in front of it to terminate TLS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// The certificate chain, PEM, the server's certificate first (e.g. Let's Encrypt's
    /// `fullchain.pem`). Read again on SIGHUP.
    pub cert: Option<PathBuf>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1). Read again on SIGHUP.
    pub key: Option<PathBuf>,
}

/// `[connections]`: what one TCP connection, and one client address, may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsSection {
    /// Most simultaneous connections from one client address (a trusted proxy's are not
    /// counted: see `server.trusted_proxies`). Further ones are closed as soon as they open.
    pub max_per_ip: usize,
    /// How long a client has to send a request's headers, counted from when the connection
    /// opens or from the end of its previous response: this also closes idle keep-alive
    /// connections and connections that never send anything.
    pub header_timeout_secs: u64,
    /// How long a client has to send a whole request body, counted from the end of its headers.
    pub body_timeout_secs: u64,
    /// With `[tls]`: how long a client has to complete the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// How often the server pings each push WebSocket; a socket from which nothing (not even
    /// a pong) arrived for two of these is closed, so dead peers do not hold connections.
    pub push_ping_secs: u64,
    /// A push WebSocket that follows no room and no mailbox for this long is closed.
    pub push_idle_secs: u64,
}

impl Default for ConnectionsSection {
    fn default() -> Self {
        ConnectionsSection {
            max_per_ip: 256,
            header_timeout_secs: 30,
            body_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            push_ping_secs: 30,
            push_idle_secs: 60,
        }
    }
}

/// `[quotas]`: what one socket, one sender or one claimer may use of what others share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasSection {
    /// Most rooms one push WebSocket may be subscribed to at once.
    pub push_subscriptions: usize,
    /// Largest key item (KeyPackage, Olm key), bytes.
    pub key_item_bytes: u64,
    /// Key items one user may claim of one other user per hour (bursts of this many).
    pub key_claims_per_pair_per_hour: u32,
    /// Key items that may be claimed of one user per hour, by everyone together (bursts of
    /// this many). Once spent, claims get 429 `rate_limited`; the user's last-resort items
    /// stay theirs to hand out after the one-time ones.
    pub key_claims_per_target_per_hour: u32,
    /// Deposits one sender may make to one mailbox per hour (bursts of this many).
    pub deposits_per_pair_per_hour: u32,
    /// Unread messages of one sender one mailbox holds at most (of `limits.mailbox_quota`), so
    /// that no sender, however slow, fills a mailbox alone.
    pub mailbox_share_per_sender: u64,
}

impl Default for QuotasSection {
    fn default() -> Self {
        QuotasSection {
            push_subscriptions: 1_000,
            key_item_bytes: 64 * 1024,
            key_claims_per_pair_per_hour: 20,
            key_claims_per_target_per_hour: 200,
            deposits_per_pair_per_hour: 600,
            mailbox_share_per_sender: 1_000,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The name shown in `/v1/info`.
    pub name: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Folder for the database and the server key.
    pub data_dir: PathBuf,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// SQLite synchronous mode: `full` (survives power loss; default), `normal` or `off`.
    pub sqlite_synchronous: String,
    /// `sqlite` (the default: `data_dir/grove.db`) or a `postgres://` URL.
    pub database: String,
    /// Addresses of reverse proxies / load balancers whose `X-Forwarded-For` header names the
    /// client for the per-IP rate limit. Empty (the default): the header is ignored, and the
    /// connection's address is the client's.
    pub trusted_proxies: Vec<IpAddr>,
    /// A loaded room nobody used for this long, with no push subscriber or long-poll waiting on
    /// it, is dropped from memory (it is loaded again from the store on its next use).
    pub room_idle_secs: u64,
    /// Free storage kept for messages: below it, new rooms and uploads are refused with
    /// `507 storage_full` while messages are still taken (see `storage`).
    pub storage_reserve_bytes: u64,
    /// SQLite only: a cap on the database's size in bytes (0: none). A write past it is
    /// refused with `507 storage_full`, as on a full disk.
    pub sqlite_max_bytes: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            name: "grove".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./grove-data"),
            max_connections: 10_000,
            sqlite_synchronous: "full".into(),
            database: "sqlite".into(),
            trusted_proxies: Vec::new(),
            room_idle_secs: 300,
            storage_reserve_bytes: 64 * 1024 * 1024,
            sqlite_max_bytes: 0,
        }
    }
}

/// `[limits]`: see [`Limits`] for the meaning of each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct LimitsSection {
    pub max_body_bytes: u64,
    pub max_entry_bytes: u64,
    pub max_page_entries: u32,
    pub max_wait_secs: u64,
    pub mailbox_quota: u64,
    pub mailbox_ttl_secs: u64,
    pub user_requests_per_sec: u32,
    pub ip_requests_per_sec: u32,
    pub rooms_per_user: u64,
    pub members_per_room: u64,
    pub key_items_per_user: u64,
    pub epoch_window: u64,
    pub clock_skew_secs: u64,
    pub join_requests_per_ip_per_hour: u32,
    pub join_requests_per_room_per_hour: u32,
    pub pending_joins_per_room: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_body_bytes: 4 * 1024 * 1024,
            max_entry_bytes: 2 * 1024 * 1024,
            max_page_entries: 1_000,
            max_wait_secs: 60,
            mailbox_quota: 10_000,
            mailbox_ttl_secs: 30 * 24 * 3600,
            user_requests_per_sec: 500,
            ip_requests_per_sec: 2_000,
            rooms_per_user: 100,
            members_per_room: 10_000,
            key_items_per_user: 1_000,
            epoch_window: 3,
            clock_skew_secs: 300,
            join_requests_per_ip_per_hour: 30,
            join_requests_per_room_per_hour: 120,
            pending_joins_per_room: 100,
        }
    }
}

impl LimitsSection {
    /// The limits as published in `/v1/info`, with the blob store's from `files`: the one
    /// conversion between the two, field by field (a field added to either struct fails to
    /// compile here until it is mapped; the test `limits_reach_the_wire_field_by_field` checks
    /// no two are swapped).
    pub fn to_wire(&self, files: &FilesSection) -> Limits {
        let LimitsSection {
            max_body_bytes,
            max_entry_bytes,
            max_page_entries,
            max_wait_secs,
            mailbox_quota,
            mailbox_ttl_secs,
            user_requests_per_sec,
            ip_requests_per_sec,
            rooms_per_user,
            members_per_room,
            key_items_per_user,
            epoch_window,
            clock_skew_secs,
            join_requests_per_ip_per_hour,
            join_requests_per_room_per_hour,
            pending_joins_per_room,
        } = self.clone();
        Limits {
            max_body_bytes,
            max_entry_bytes,
            max_page_entries,
            max_wait_secs,
            mailbox_quota,
            mailbox_ttl_secs,
            user_requests_per_sec,
            ip_requests_per_sec,
            rooms_per_user,
            members_per_room,
            key_items_per_user,
            epoch_window,
            clock_skew_secs,
            join_requests_per_ip_per_hour,
            join_requests_per_room_per_hour,
            pending_joins_per_room,
            files: files.to_wire(),
        }
    }
}

/// `[files]`: the blob store of encrypted attachments. See
/// [`FileLimits`](grove_wire::api::FileLimits) for what is published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSection {
    /// Where blobs are kept: empty (the default) for the folder `files` in `server.data_dir`,
    /// an absolute path for another folder, `s3://BUCKET/PREFIX` for an S3-compatible store
    /// (see `s3`), or `memory` (tests only: nothing survives).
    pub store: String,
    /// `[files.s3]`: how to reach the bucket of an `s3://` store.
    pub s3: S3Section,
    /// The largest file, before encryption: a blob may be as long as this file's encryption
    /// (`grove_proto::attachment::ciphertext_len`).
    pub max_file_bytes: u64,
    /// Upload part length (every part but the last), bytes.
    pub part_bytes: u64,
    /// Blob bytes one user may hold.
    pub user_quota_bytes: u64,
    /// Blob bytes one room may hold.
    pub room_quota_bytes: u64,
    /// How long a complete blob is kept, seconds; 0 keeps it.
    pub retention_secs: u64,
    /// How long an upload may stay incomplete, seconds.
    pub upload_ttl_secs: u64,
}

/// `[files.s3]`: the S3-compatible service of `files.store = "s3://BUCKET/PREFIX"`. The
/// credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, or a role: see `objects`), never from this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    /// The service's URL (MinIO, Ceph, Garage, moto...); empty for AWS itself.
    pub endpoint: String,
    /// The region; empty: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// Plain HTTP to the endpoint: only for an endpoint on a loopback address.
    pub allow_http: bool,
}

impl Default for FilesSection {
    fn default() -> Self {
        FilesSection {
            store: String::new(),
            s3: S3Section::default(),
            max_file_bytes: 100 * 1024 * 1024,
            part_bytes: 8 * 1024 * 1024,
            user_quota_bytes: 1024 * 1024 * 1024,
            room_quota_bytes: 10 * 1024 * 1024 * 1024,
            retention_secs: 30 * 24 * 3600,
            upload_ttl_secs: 24 * 3600,
        }
    }
}

impl FilesSection {
    /// The limits as published in `/v1/info` (`limits.files`), field by field.
    pub fn to_wire(&self) -> grove_wire::api::FileLimits {
        let FilesSection {
            store: _,
            s3: _,
            max_file_bytes,
            part_bytes,
            user_quota_bytes,
            room_quota_bytes,
            retention_secs,
            upload_ttl_secs,
        } = self.clone();
        grove_wire::api::FileLimits {
            max_file_bytes,
            part_bytes,
            user_quota_bytes,
            room_quota_bytes,
            retention_secs,
            upload_ttl_secs,
        }
    }
}

/// `[rooms]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsSection {
    /// `open`, `allowlist` or `closed`.
    pub creation: RoomCreationPolicy,
    /// With `allowlist`: the user ids allowed to create rooms.
    pub allowlist: Vec<UserId>,
}

impl Default for RoomsSection {
    fn default() -> Self {
        RoomsSection { creation: RoomCreationPolicy::Open, allowlist: Vec::new() }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, from the TOML parser.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {0}")]
    Invalid(String),
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml(text: &str, path: PathBuf) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse { path, message: e.to_string() })?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml(&text, path.to_path_buf())
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_string()));
        if l.max_body_bytes < 1024 {
            return bad("limits.max_body_bytes: at least 1024");
        }
        if l.max_entry_bytes == 0 || l.max_entry_bytes > l.max_body_bytes {
            return bad("limits.max_entry_bytes: between 1 and limits.max_body_bytes");
        }
        if l.max_page_entries == 0 || l.user_requests_per_sec == 0 || l.ip_requests_per_sec == 0 {
            return bad("limits.max_page_entries, user_requests_per_sec and ip_requests_per_sec must be positive");
        }
        let db = &self.server.database;
        if db != "sqlite" && !db.starts_with("postgres://") && !db.starts_with("postgresql://") {
            return bad("server.database: \"sqlite\" or a postgres:// URL");
        }
        if !matches!(self.server.sqlite_synchronous.as_str(), "full" | "normal" | "off") {
            return bad("server.sqlite_synchronous: one of full, normal, off");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key: set both (the server terminates TLS) or neither (plain HTTP)");
        }
        if self.connections.tls_handshake_timeout_secs == 0 {
            return bad("connections.tls_handshake_timeout_secs: at least 1");
        }
        let f = &self.files;
        if f.max_file_bytes == 0 || f.max_file_bytes > 1 << 40 {
            return bad("files.max_file_bytes: between 1 and 2^40 (1 TiB)");
        }
        if !(64 * 1024..=1 << 30).contains(&f.part_bytes) {
            return bad("files.part_bytes: between 65536 (64 KiB) and 2^30 (1 GiB)");
        }
        if f.upload_ttl_secs == 0 || f.upload_ttl_secs > 365 * 24 * 3600 || f.retention_secs > 100 * 365 * 24 * 3600 {
            return bad("files.upload_ttl_secs: 1 s to a year; files.retention_secs: at most 100 years");
        }
        let c = &self.connections;
        if c.max_per_ip == 0 || c.header_timeout_secs == 0 || c.body_timeout_secs == 0 {
            return bad("connections.max_per_ip, header_timeout_secs and body_timeout_secs must be positive");
        }
        if !(1..=3600).contains(&c.push_ping_secs) || !(1..=24 * 3600).contains(&c.push_idle_secs) {
            return bad("connections.push_ping_secs: 1 s to an hour; connections.push_idle_secs: 1 s to a day");
        }
        let q = &self.quotas;
        if q.push_subscriptions == 0
            || q.key_item_bytes == 0
            || q.key_claims_per_pair_per_hour == 0
            || q.key_claims_per_target_per_hour == 0
            || q.deposits_per_pair_per_hour == 0
            || q.mailbox_share_per_sender == 0
        {
            return bad("every [quotas] setting must be positive");
        }
        let p = &self.privacy;
        if p.purge_interval_secs == 0 || p.purge_interval_secs > 24 * 3600 {
            return bad("privacy.purge_interval_secs: 1 s to a day");
        }
        if p.log_retention_secs > 100 * 365 * 24 * 3600 {
            return bad("privacy.log_retention_secs: at most 100 years (0 keeps messages)");
        }
        crate::objects::check(f).map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let c = Config::from_toml(EXAMPLE_CONFIG, "example".into()).unwrap();
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.server.data_dir, d.server.data_dir);
        assert_eq!(c.limits.to_wire(&c.files), d.limits.to_wire(&d.files));
        assert_eq!(c.rooms.creation, d.rooms.creation);
        assert_eq!(c.files.to_wire(), d.files.to_wire());
        assert_eq!(c.files.store, d.files.store);
        assert_eq!(format!("{:?}", c.connections), format!("{:?}", d.connections));
        assert_eq!(format!("{:?}", c.quotas), format!("{:?}", d.quotas));
        assert_eq!(format!("{:?}", c.privacy), format!("{:?}", d.privacy));
    }

    /// Every `[limits]` setting, set to a value no other has, reaches the field of the same
    /// name in `/v1/info`'s limits, and nothing else does.
    #[test]
    fn limits_reach_the_wire_field_by_field() {
        let names = [
            "max_body_bytes",
            "max_entry_bytes",
            "max_page_entries",
            "max_wait_secs",
            "mailbox_quota",
            "mailbox_ttl_secs",
            "user_requests_per_sec",
            "ip_requests_per_sec",
            "rooms_per_user",
            "members_per_room",
            "key_items_per_user",
            "epoch_window",
            "clock_skew_secs",
            "join_requests_per_ip_per_hour",
            "join_requests_per_room_per_hour",
            "pending_joins_per_room",
        ];
        let value = |i: usize| 1_000_001 + i as u64;
        let toml: String = names.iter().enumerate().map(|(i, n)| format!("{n} = {}\n", value(i))).collect();
        let c: Config = toml::from_str(&format!("[limits]\n{toml}")).unwrap();
        let wire = serde_json::to_value(c.limits.to_wire(&c.files)).unwrap();
        let wire = wire.as_object().unwrap();
        assert_eq!(wire.len(), names.len() + 1, "{wire:?}");
        for (i, n) in names.iter().enumerate() {
            assert_eq!(wire.get(*n).and_then(|v| v.as_u64()), Some(value(i)), "{n}");
        }
        assert_eq!(wire["files"], serde_json::to_value(c.files.to_wire()).unwrap());
        let files = [
            "max_file_bytes",
            "part_bytes",
            "user_quota_bytes",
            "room_quota_bytes",
            "retention_secs",
            "upload_ttl_secs",
        ];
        let value = |i: usize| 2_000_001 + i as u64;
        let toml: String = files.iter().enumerate().map(|(i, n)| format!("{n} = {}\n", value(i))).collect();
        let c: Config = toml::from_str(&format!("[files]\n{toml}")).unwrap();
        let wire = serde_json::to_value(c.limits.to_wire(&c.files)).unwrap();
        let wire = wire["files"].as_object().unwrap().clone();
        assert_eq!(wire.len(), files.len(), "{wire:?}");
        for (i, n) in files.iter().enumerate() {
            assert_eq!(wire.get(*n).and_then(|v| v.as_u64()), Some(value(i)), "{n}");
        }
    }

    #[test]
    fn unknown_settings_and_bad_values_are_refused() {
        assert!(Config::from_toml("[server]\nlisten_on = 1\n", "x".into()).is_err());
        assert!(Config::from_toml("[limits]\nmax_body_bytes = 5\n", "x".into()).is_err());
        assert!(Config::from_toml("[rooms]\ncreation = \"maybe\"\n", "x".into()).is_err());
        assert!(Config::from_toml("[files]\npart_bytes = 10\n", "x".into()).is_err());
        assert!(Config::from_toml("[files]\nmax_file_bytes = 0\n", "x".into()).is_err());
        assert!(Config::from_toml("[files]\nstore = \"relative/path\"\n", "x".into()).is_err());
        assert!(Config::from_toml("[privacy]\npurge_interval_secs = 0\n", "x".into()).is_err());
        assert!(Config::from_toml("[privacy]\nlog_ips = true\n", "x".into()).is_err());
    }
}
