//! `sluice-agent`: parse arguments, load configuration, run the command, map the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_agent::config::{AgentConfig, LogFormat};
use sluice_agent::{telemetry, Clients};
use tokio_util::sync::CancellationToken;

/// Exit code for an invalid configuration (EX_USAGE in sysexits.h).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-agent",
    version,
    about = "Drains the Sluice SQS queue into PostgreSQL under a rate limit."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent until SIGTERM or SIGINT.
    Run(ConfigArg),
    /// Create the schema and apply pending migrations, then exit.
    Migrate(ConfigArg),
    /// Validate the configuration and print it (secrets redacted); exit 64 if invalid.
    CheckConfig(ConfigArg),
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Path to agent.toml.
    #[arg(
        long,
        short,
        env = "SLUICE_CONFIG",
        default_value = "/etc/sluice/agent.toml"
    )]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Command::Run(arg) | Command::Migrate(arg) | Command::CheckConfig(arg)) = &cli.command;
    let cfg = match AgentConfig::load(&arg.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sluice-agent: {}: {e}", arg.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::CheckConfig(_) = cli.command {
        println!("{}: configuration is valid", arg.config.display());
        println!(
            "{}",
            serde_json::to_string_pretty(&cfg.redacted()).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let format = match cli.command {
        Command::Run(_) => cfg.log.format,
        _ => LogFormat::Pretty,
    };
    telemetry::init(format, &cfg.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate(_) => migrate(&cfg).await,
            _ => run(cfg).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "sluice-agent failed.");
            eprintln!("sluice-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(cfg: &AgentConfig) -> anyhow::Result<()> {
    let clients = Clients::connect(cfg).await?;
    clients.store.migrate(&cfg.database.schema).await?;
    println!("schema {} is up to date", cfg.database.schema);
    Ok(())
}

async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %cfg.redacted(),
        "sluice-agent starting."
    );
    let clients = Clients::connect(&cfg).await?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = wait_for_signal().await {
            tracing::error!(error = %e, "Cannot listen for signals; stopping.");
        }
        signals.cancel();
    });
    sluice_agent::run(cfg, clients, shutdown)
        .await
        .context("agent stopped with an error")
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
