//! `sluice-ingest`: the ingest API. On Lambda (`AWS_LAMBDA_RUNTIME_API` set) it serves the
//! router through `lambda_http::run`; elsewhere it listens on `--listen`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use sluice_cloud::IngestConfig;

/// Exit code for an invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-ingest",
    version,
    about = "Sluice ingest API (POST /v1/batches)."
)]
struct Cli {
    /// Address to listen on when not running on Lambda.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match IngestConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-ingest: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-ingest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli, cfg: IngestConfig) -> anyhow::Result<()> {
    let client = sluice_cloud::sqs_client(&cfg).await;
    tracing::info!(config = ?cfg, "sluice-ingest starting.");
    let app = sluice_cloud::app(sluice_cloud::state(cfg, client));
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_http::run(app)
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"));
    }
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "Listening.");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
