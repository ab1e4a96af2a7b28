//! `sluice-agent run` (until SIGTERM or SIGINT, reloading `[throttle]` on SIGHUP) and
//! `sluice-agent migrate`.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::Clients;

/// `migrate`: creates the schema and applies pending migrations.
pub async fn migrate(cfg: &AgentConfig) -> anyhow::Result<()> {
    let clients = Clients::connect(cfg).await?;
    clients.store.migrate(&cfg.database.schema).await?;
    println!("schema {} is up to date", cfg.database.schema);
    Ok(())
}

/// `run`: the agent until a stop signal; `config_path` is read again on SIGHUP.
pub async fn run(cfg: AgentConfig, config_path: PathBuf) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %cfg.redacted(),
        "sluice-agent starting."
    );
    // Registered first: SIGHUP's default action would kill the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let clients = Clients::connect(&cfg).await?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = wait_for_signal().await {
            tracing::error!(error = %e, "Cannot listen for signals; stopping.");
        }
        signals.cancel();
    });
    let running = crate::start(cfg, clients, shutdown.clone()).await?;
    tokio::spawn(crate::on_sighup(
        hangup,
        config_path,
        running.reloader(),
        shutdown,
    ));
    running.wait().await.context("agent stopped with an error")
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received."),
        _ = int.recv() => tracing::info!("SIGINT received."),
    }
    Ok(())
}
