//! `grove serve`.

use anyhow::Context;
use grove_server::Config;

use crate::ServeArgs;

/// Where `grove serve` listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket's path (`unix:PATH`).
    Unix(std::path::PathBuf),
}

/// Parses `--listen`: `HOST:PORT` or `unix:PATH`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    match s.strip_prefix("unix:") {
        Some("") => Err("unix: needs a path, e.g. unix:/run/grove/grove.sock".into()),
        Some(path) => Ok(Listen::Unix(path.into())),
        None => s.parse().map(Listen::Tcp).map_err(|_| {
            format!("{s:?} is neither an address like 127.0.0.1:8080 nor a Unix socket like unix:/run/grove/grove.sock")
        }),
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", grove_server::config::EXAMPLE_CONFIG);
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let mut unix = None;
    match args.listen {
        Some(Listen::Tcp(listen)) => config.server.listen = listen,
        Some(Listen::Unix(path)) => unix = Some(path),
        None => {}
    }
    if let Some(data) = args.data {
        config.server.data_dir = data;
    }
    if let Some(db) = args.database {
        config.server.database = db;
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        config.tls.cert = args.tls_cert.or(config.tls.cert);
        config.tls.key = args.tls_key.or(config.tls.key);
    }
    config.validate()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listen = config.server.listen;
        let state = grove_server::open(config).await?;
        if let Some(path) = unix {
            return serve_unix(&path, state).await;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (is another server running there? use --listen)"))?;
        let addr = listener.local_addr()?;
        let scheme = if state.config().tls.cert.is_some() { "https" } else { "http" };
        let public_key = grove_wire::UserId(state.public_key());
        tracing::info!(%addr, %public_key, "grove listening on {scheme}://{addr}");
        grove_server::run(listener, state, shutdown_signal()).await?;
        tracing::info!("grove stopped");
        Ok(())
    })
}

/// Serves on a Unix socket at `path`. A socket file left by a server that is gone is replaced;
/// one a running server answers on is not, and nothing else at the path is touched.
#[cfg(unix)]
async fn serve_unix(path: &std::path::Path, state: grove_server::AppState) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket: choose another path for --listen unix:", path.display());
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("a server is already listening on {} (use another --listen)", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot replace the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the Unix socket {} (does its folder exist?)", path.display()))?;
    tracing::info!(path = %path.display(), public_key = %grove_wire::UserId(state.public_key()), "grove listening on unix:{}", path.display());
    let result = grove_server::run_unix(listener, state, shutdown_signal()).await;
    let _ = std::fs::remove_file(path);
    result?;
    tracing::info!("grove stopped");
    Ok(())
}

#[cfg(not(unix))]
async fn serve_unix(_: &std::path::Path, _: grove_server::AppState) -> anyhow::Result<()> {
    anyhow::bail!("Unix sockets need a Unix system: use --listen HOST:PORT")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
