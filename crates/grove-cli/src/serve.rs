//! `grove serve`.

use anyhow::Context;
use grove_server::Config;

use crate::ServeArgs;

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", grove_server::config::EXAMPLE_CONFIG);
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
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
