//! `whisper-api`: parse the configuration, set up logging, bind, run until SIGTERM/ctrl-c.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use whisper_api::Config;

/// whisper.cpp logs every model load in detail; keep its chatter to warnings by default.
const DEFAULT_LOG_FILTER: &str = "info,whisper_rs=warn,tower_http=warn";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env_and_args();
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour codes only on a terminal: `docker logs | grep` should see plain text.
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(config = ?config.loggable(), "starting whisper-api {}", env!("CARGO_PKG_VERSION"));

    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    if let Err(e) = whisper_api::run(listener, config, shutdown_signal()).await {
        tracing::error!("{e:#}");
        eprintln!("whisper-api: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
