//! grove-server: the grove HTTP server as a library.
//!
//! [`router`] builds the axum router over an [`AppState`]; [`run`] serves it on a listener until
//! a shutdown future resolves, then finishes in-flight requests (so every acknowledged write is
//! durable) and closes push connections. [`open`] prepares the default state: SQLite in a data
//! folder and the server's Ed25519 key. The `grove` binary is a thin shell over these.
//!
//! The server stores and forwards ciphertext only. For MLS rooms it holds the public group
//! state (never a group secret) to validate commits; for sender-keys rooms it checks
//! admin-signed membership lists. It never decides membership on its own.
//!
//! Not here: storage engines (grove-store-*), group cryptography (grove-proto), clients.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use ed25519_dalek::SigningKey;

pub mod admin;
mod auth;
pub mod backup;
pub mod config;
mod error;
mod files;
mod follow;
mod joins;
mod link_joins;
mod listener;
mod metrics;
pub mod objects;
mod push;
mod quota;
mod rooms;
mod routes;
mod serve;
mod state;
mod storage;
pub mod tls;

pub use backup::{backup, BackupReport};
pub use config::Config;
pub use error::AppError;
pub use listener::LimitedListener;
pub use state::{system_clock, AppState, Clock};

/// The OpenAPI 3.1 document of API v1, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The router of API v1 over `state`.
pub fn router(state: AppState) -> Router {
    use routes::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/keys", post(publish_keys).get(key_counts))
        .route("/v1/keys/{user}/claim", post(claim_key))
        .route("/v1/mailboxes/{user}", post(deposit))
        .route("/v1/mailbox", get(read_mailbox))
        .route("/v1/mailbox/ack", post(ack_mailbox))
        .route("/v1/rooms", get(public_rooms).post(create_room))
        .route("/v1/rooms/{room}", get(room_info))
        .route("/v1/rooms/{room}/log", get(read_log).post(append))
        .route("/v1/rooms/{room}/reports", post(report_fault))
        .route("/v1/rooms/{room}/tree", get(ratchet_tree))
        .route("/v1/rooms/{room}/membership", get(membership))
        .route("/v1/rooms/{room}/link", post(set_room_link).delete(revoke_room_link))
        .route("/v1/rooms/{room}/link/group-info", post(link_group_info).put(put_link_group_info))
        .route("/v1/rooms/{room}/link/join", post(link_join))
        .route("/v1/rooms/{room}/joins", get(join_requests).post(ask_to_join))
        .route("/v1/rooms/{room}/joins/{user}", delete(drop_join_request))
        .route("/v1/rooms/{room}/files", post(files::create_upload))
        .route("/v1/rooms/{room}/files/{blob}", get(files::download).put(files::upload_part))
        .route("/v1/rooms/{room}/files/{blob}/upload", get(files::upload_state))
        .route("/v1/push", get(push::push))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), track))
        .layer(from_fn_with_state(state.clone(), auth::ip_rate_limit))
        // Signed bodies are read with our own limit and error; no other route takes a body.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Counts and logs every answered request by its route template.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    // A client's address is written down only where the operator asked (`privacy`).
    let client = state.0.config.privacy.log_ip_addresses.then(|| {
        req.extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| auth::client_ip(c.0.ip(), req.headers(), &state.0.config.server.trusted_proxies).to_string())
    });
    let client = client.flatten();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    if resp.extensions().get::<storage::StoreFullAnswer>().is_some() {
        state.0.metrics.storage_watch().write_failed(&state);
    } else if resp.status().is_success() && !matches!(method, axum::http::Method::GET | axum::http::Method::HEAD) {
        state.0.metrics.storage_watch().write_succeeded(&state);
    }
    state.0.metrics.request(&route, method.as_str(), status);
    let took_us = started.elapsed().as_micros() as u64;
    match client {
        Some(client) => tracing::debug!(%method, %route, status, took_us, %client, "request"),
        None => tracing::debug!(%method, %route, status, took_us, "request"),
    }
    resp
}

/// Serves `state` on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish, closes push connections, and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let c = &state.0.config;
    let listener = LimitedListener::with_per_ip(
        listener,
        c.server.max_connections,
        c.connections.max_per_ip,
        c.server.trusted_proxies.clone(),
    )
    .log_addresses(c.privacy.log_ip_addresses);
    run_on(listener, state, shutdown).await
}

/// [`run`] on a Unix socket (`grove serve --listen unix:PATH`, for a Tor onion service or a
/// Lokinet SNApp in front): connections have no address, so `max_connections` bounds them
/// all and the per-IP rate limit counts them as one client.
#[cfg(unix)]
pub async fn run_unix(
    listener: tokio::net::UnixListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = LimitedListener::unix(listener, state.0.config.server.max_connections);
    run_on(listener, state, shutdown).await
}

async fn run_on(
    listener: LimitedListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let c = &state.0.config;
    let timeouts = serve::Timeouts {
        header: std::time::Duration::from_secs(c.connections.header_timeout_secs),
        body: std::time::Duration::from_secs(c.connections.body_timeout_secs),
        tls_handshake: std::time::Duration::from_secs(c.connections.tls_handshake_timeout_secs),
    };
    let tls = state.0.tls.get().cloned();
    #[cfg(unix)]
    let reload_on_hangup = tls.as_ref().map(|_| tokio::spawn(reload_tls_on_hangup(state.clone())));
    let purge = tokio::spawn(purge_expired_mail(state.clone()));
    let evict = tokio::spawn(evict_idle_rooms(state.clone()));
    let purge_files = tokio::spawn(files::purge_task(state.clone()));
    let blocklist = tokio::spawn(refresh_blocklist(state.clone()));
    #[cfg(unix)]
    let admin_socket = tokio::spawn(admin::serve_socket(state.clone()));
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        st.0.shutdown.send_replace(true);
    };
    serve::serve(listener, router(state.clone()), timeouts, tls, signal).await;
    state.0.shutdown.send_replace(true);
    #[cfg(unix)]
    if let Some(task) = reload_on_hangup {
        let _ = task.await;
    }
    let _ = purge.await;
    let _ = evict.await;
    let _ = purge_files.await;
    let _ = blocklist.await;
    #[cfg(unix)]
    let _ = admin_socket.await;
    Ok(())
}

/// Reads the TLS certificate and key again on every SIGHUP (what certificate renewal tools
/// send), until the server stops.
#[cfg(unix)]
async fn reload_tls_on_hangup(state: AppState) {
    let mut stop = state.0.shutdown.subscribe();
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: the TLS certificate is reloaded only by a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                if let Err(e) = state.reload_tls() {
                    tracing::error!(error = %e, "SIGHUP: cannot reload the TLS certificate; the previous one stays in use");
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Looks for idle rooms to evict every half idle period, whether or not requests come.
async fn evict_idle_rooms(state: AppState) {
    let mut stop = state.0.shutdown.subscribe();
    let half = std::time::Duration::from_secs(state.0.config.server.room_idle_secs.max(2) / 2);
    let mut tick = tokio::time::interval(half);
    loop {
        tokio::select! {
            _ = tick.tick() => state.0.rooms.sweep_if_due(&state, state.now()),
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Re-reads the blocked keys every [`admin::BLOCKLIST_REFRESH`] (blocks made through another
/// instance on the same database).
async fn refresh_blocklist(state: AppState) {
    let mut stop = state.0.shutdown.subscribe();
    let mut tick = tokio::time::interval(admin::BLOCKLIST_REFRESH);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = admin::load_blocklist(&state).await {
                    tracing::warn!(error = %e.detail(), "cannot re-read the blocked keys");
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Retention, every `privacy.purge_interval_secs`: expired mailbox messages, and room
/// messages older than `privacy.log_retention_secs` (when set).
async fn purge_expired_mail(state: AppState) {
    let mut stop = state.0.shutdown.subscribe();
    let privacy = state.0.config.privacy.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(privacy.purge_interval_secs));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match state.0.store.purge_expired(state.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired mailbox messages purged"),
                    Err(e) => tracing::warn!(error = %e, "mailbox purge failed"),
                }
                if privacy.log_retention_secs > 0 {
                    let keep_ms = i64::try_from(privacy.log_retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                    match state.0.store.purge_messages(state.now().saturating_sub(keep_ms)).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "room messages past log_retention_secs purged"),
                        Err(e) => tracing::warn!(error = %e, "room log purge failed"),
                    }
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data folder or key file could not be used.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path concerned.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("the server key {0} is corrupt (expected 32 bytes); restore it from a backup")]
    BadKey(std::path::PathBuf),
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] grove_store::StoreError),
    /// The configuration names a backend this build leaves out (a cargo feature of
    /// grove-server: `sqlite`, `postgres`).
    #[error("this build of grove has no {0} backend (cargo feature `{0}` of grove-server)")]
    NotBuiltIn(&'static str),
    /// The TLS certificate or key (`[tls]`) cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The blob store (`[files]`) does not take blobs: an unreachable endpoint, a missing bucket,
    /// refused credentials, an unwritable folder.
    #[error(
        "the blob store {store} cannot be used: {message}. Check files.store and [files.s3] (endpoint, region), \
         that the bucket exists, and the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    )]
    Blobs {
        /// `files.store`, described.
        store: String,
        /// What failed.
        message: String,
    },
}

/// Loads the server key from `dir/server.key`, creating it (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<SigningKey, OpenError> {
    let path = dir.join("server.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let secret = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| OpenError::BadKey(path.clone()))?;
            Ok(SigningKey::from_bytes(&secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            write_private(&path, &key.to_bytes()).map_err(|source| OpenError::Io {
                context: "cannot write the server key",
                path: path.clone(),
                source,
            })?;
            tracing::info!(path = %path.display(), "created the server key");
            Ok(key)
        }
        Err(source) => Err(OpenError::Io { context: "cannot read the server key", path, source }),
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates the data folder private to the server's user (0700: the database, the server key
/// and the blobs are beneath it), or tightens an existing one that others can enter, with a
/// warning.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            return std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        }
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(folder = %dir.display(), "the data folder was open to other users; it is now private (0700)");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// The default state: the server key at `data_dir/server.key`, and the database the
/// configuration names — SQLite at `data_dir/grove.db` (created on first start, WAL) unless
/// `server.database` is a `postgres://` URL.
pub async fn open(config: Config) -> Result<AppState, OpenError> {
    let dir = config.server.data_dir.clone();
    private_dir(&dir).map_err(|source| OpenError::Io {
        context: "cannot create the data folder (or make it private)",
        path: dir.clone(),
        source,
    })?;
    let key = load_or_create_key(&dir)?;
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(tls::TlsFiles::load(cert, key)?),
        _ => None,
    };
    let store = open_store(&config, &dir).await?;
    let mut state = AppState::new(config, store, key);
    if let Some(tls) = tls {
        state = state.with_tls(tls);
    }
    admin::load_blocklist(&state).await?;
    state.0.files.check(&state).await.map_err(|e| OpenError::Blobs {
        store: objects::describe(&state.0.config.files, &state.0.config.server.data_dir),
        message: e,
    })?;
    Ok(state)
}

/// The backend `server.database` names, if this build has it (cargo features `sqlite` and
/// `postgres`, both on by default).
async fn open_store(config: &Config, dir: &Path) -> Result<Arc<dyn grove_store::Store>, OpenError> {
    if config.server.database == "sqlite" {
        #[cfg(feature = "sqlite")]
        {
            let synchronous = grove_store_sqlite::Synchronous::parse(&config.server.sqlite_synchronous)
                .unwrap_or(grove_store_sqlite::Synchronous::Full);
            let db = dir.join("grove.db");
            let max_bytes = Some(config.server.sqlite_max_bytes).filter(|b| *b > 0);
            let options = grove_store_sqlite::SqliteOptions { synchronous, max_bytes };
            let store = grove_store_sqlite::SqliteStore::open(&db, options)?;
            tracing::info!(path = %db.display(), synchronous = synchronous.as_str(), "database open (SQLite)");
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "sqlite"))]
        return Err(OpenError::NotBuiltIn("sqlite"));
    }
    let _ = dir;
    #[cfg(feature = "postgres")]
    {
        let store = grove_store_postgres::PostgresStore::connect(&config.server.database).await?;
        tracing::info!("database open (PostgreSQL)");
        Ok(Arc::new(store))
    }
    #[cfg(not(feature = "postgres"))]
    Err(OpenError::NotBuiltIn("postgres"))
}
