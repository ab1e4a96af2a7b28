//! `sluice-agent`: parse arguments, load configuration, run the command, map the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_agent::config::{secret, AgentConfig, LogFormat};
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
    ///
    /// With --online, also ask SQS: both queues answer, the dead-letter queue is not the main
    /// queue (same ARN) and takes messages as large as the main queue's (exit 64 if not; 69
    /// when a queue cannot be read), and the status queue (`[status] queue_url`) answers.
    CheckConfig(CheckConfigArgs),
    /// Queue and DLQ depth, oldest message age, receipts/s against the limit, time to drain.
    ///
    /// Works with no agent running (asks SQS and PostgreSQL); adds the agent's live figures
    /// when it answers on server.listen (GET /v1/status).
    Status(StatusArgs),
    /// Dead letters: list them with their reasons, send them back, or delete them.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

impl Command {
    fn config_arg(&self) -> &ConfigArg {
        match self {
            Command::Run(a) | Command::Migrate(a) => a,
            Command::CheckConfig(a) => &a.config,
            Command::Status(a) => &a.config,
            Command::Dlq { action } => action.config_arg(),
        }
    }
}

#[derive(Debug, clap::Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also check the queues against SQS (the unit's ExecStartPre does not: `run` checks them
    /// itself, and a dead-letter queue missing for now must not stop the start).
    #[arg(long)]
    online: bool,
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
    let arg = cli.command.config_arg();
    let cfg = match AgentConfig::load(&arg.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sluice-agent: {}: {e}", arg.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // From here on, no text the process writes carries the database password.
    cfg.database.register_secrets();
    if let Command::CheckConfig(args) = &cli.command {
        println!("{}: configuration is valid", arg.config.display());
        println!(
            "{}",
            serde_json::to_string_pretty(&cfg.redacted()).unwrap_or_default()
        );
        if !args.online {
            return ExitCode::SUCCESS;
        }
        return check_queues(&cfg);
    }
    let format = match cli.command {
        Command::Run(_) => cfg.log.format,
        _ => LogFormat::Pretty,
    };
    // The operator commands print their answer on stdout; their log (stderr) keeps to
    // problems, without the AWS SDK's start-up chatter.
    let level = match cli.command {
        Command::Status(_) | Command::Dlq { .. } => "warn",
        _ => cfg.log.level.as_str(),
    };
    telemetry::init(format, level);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if let Command::Status(_) | Command::Dlq { .. } = cli.command {
        return runtime.block_on(operate(cli.command, cfg));
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate(_) => migrate(&cfg).await,
            _ => run(cfg, arg.config.clone()).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "sluice-agent failed.");
            eprintln!("sluice-agent: {}", secret::scrub(&format!("{e:#}")));
            // A refusal that only a configuration change can lift: exit 64, which the unit's
            // RestartPreventExitStatus keeps from restarting in a loop.
            if e.downcast_ref::<sluice_agent::StartRefused>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The async runtime the commands run on; when it cannot start, says so on stderr.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("sluice-agent: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `check-config --online`: the queues as SQS sees them.
fn check_queues(cfg: &AgentConfig) -> ExitCode {
    /// EX_UNAVAILABLE in sysexits.h: a queue could not be read.
    const EXIT_UNAVAILABLE: u8 = 69;
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let checked = runtime.block_on(async {
        let clients = Clients::connect(cfg).await?;
        let main = clients.queue.facts().await;
        let status = match &cfg.status.queue_url {
            Some(url) => Some(clients.queue.sibling(url.clone()).ping().await),
            None => None,
        };
        anyhow::Ok((main, clients.queue.verify_dead_letter().await, status))
    });
    let checked = match checked {
        Ok((_, _, Some(Err(e)))) => {
            eprintln!(
                "sluice-agent: cannot read the status queue {}: {e}",
                cfg.status.queue_url.as_deref().unwrap_or_default()
            );
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
        Ok((main, dlq, _)) => Ok((main, dlq)),
        Err(e) => Err(e),
    };
    match checked {
        Err(e) => {
            eprintln!("sluice-agent: {e:#}");
            ExitCode::FAILURE
        }
        Ok((Err(e), _)) => {
            eprintln!(
                "sluice-agent: cannot read the main queue {}: {e}",
                cfg.queue.url
            );
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Ok((Ok(_), Err(problem))) => {
            eprintln!("sluice-agent: {problem}");
            if problem.is_definite() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::from(EXIT_UNAVAILABLE)
            }
        }
        Ok((Ok(main), Ok(()))) => {
            println!("queue {} answers ({})", cfg.queue.url, main.arn);
            if let Some(dlq) = &cfg.queue.dead_letter_url {
                println!(
                    "dead-letter queue {dlq} answers, is another queue and takes messages as large as the main queue's"
                );
            }
            if let Some(status) = &cfg.status.queue_url {
                println!("status queue {status} answers");
            }
            ExitCode::SUCCESS
        }
    }
}

async fn migrate(cfg: &AgentConfig) -> anyhow::Result<()> {
    let clients = Clients::connect(cfg).await?;
    clients.store.migrate(&cfg.database.schema).await?;
    println!("schema {} is up to date", cfg.database.schema);
    Ok(())
}

async fn run(cfg: AgentConfig, config_path: PathBuf) -> anyhow::Result<()> {
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
    let running = sluice_agent::start(cfg, clients, shutdown.clone()).await?;
    tokio::spawn(sluice_agent::on_sighup(
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

// ---------------------------------------------------------------------------------------------
// Operating commands: `status` and `dlq` (logic in `sluice_agent::status` and `sluice_agent::cli::dlq`).

/// Exit code for a command refused as given (like clap's own usage errors).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Refresh until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// One JSON object per report (one line each with --watch), for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Show each dead letter: batch, chunk, receipts, reason, receive count.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Show at most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max: u64,
        /// JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Send the dead letters back to the main queue (after fixing their cause).
    Redrive {
        #[command(flatten)]
        config: ConfigArg,
        /// At most this many messages per second (default: as fast as SQS takes them).
        #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
    },
    /// Delete every dead letter. Cannot be undone; needs --yes.
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

impl DlqAction {
    fn config_arg(&self) -> &ConfigArg {
        match self {
            DlqAction::List { config, .. }
            | DlqAction::Redrive { config, .. }
            | DlqAction::Purge { config, .. } => config,
        }
    }
}

async fn operate(command: Command, cfg: AgentConfig) -> ExitCode {
    let result = match command {
        Command::Status(args) => status(cfg, &args).await,
        Command::Dlq { action } => dlq(cfg, action).await,
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-agent: {}", secret::scrub(&format!("{e:#}")));
            match e.downcast_ref::<sluice_agent::cli::dlq::DlqError>() {
                Some(sluice_agent::cli::dlq::DlqError::NotConfirmed { .. }) => {
                    ExitCode::from(EXIT_USAGE)
                }
                Some(
                    sluice_agent::cli::dlq::DlqError::NotConfigured
                    | sluice_agent::cli::dlq::DlqError::SameQueue { .. },
                ) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn status(cfg: AgentConfig, args: &StatusArgs) -> anyhow::Result<()> {
    use sluice_agent::cli::status::{render, Reporter, AGENT_SAMPLE};
    use std::io::IsTerminal as _;
    let mut reporter = Reporter::new(cfg).await?;
    let sample = if args.watch {
        std::time::Duration::ZERO
    } else {
        AGENT_SAMPLE
    };
    let clear = args.watch && !args.json && std::io::stdout().is_terminal();
    loop {
        let report = reporter.report(sample).await?;
        if args.json {
            if !out(&format!("{}\n", serde_json::to_string(&report)?))? {
                return Ok(());
            }
        } else {
            let mut screen = String::new();
            if clear {
                screen.push_str("\x1b[2J\x1b[H");
            }
            screen.push_str(&render(&report));
            if args.watch {
                screen.push_str(&format!("(every {} s; Ctrl-C to stop)\n", args.interval));
            }
            if !out(&screen)? {
                return Ok(());
            }
        }
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs(args.interval)) => {}
        }
    }
}

async fn dlq(cfg: AgentConfig, action: DlqAction) -> anyhow::Result<()> {
    use sluice_agent::cli::dlq;
    let clients = Clients::connect(&cfg).await?;
    let queue = &clients.queue;
    match action {
        DlqAction::List { max, json, .. } => {
            let letters = dlq::list(queue, usize::try_from(max).unwrap_or(usize::MAX)).await?;
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&letters)?))?;
            } else {
                out(&dlq::render(&letters))?;
            }
        }
        DlqAction::Redrive { rate, .. } => {
            let done = dlq::redrive(queue, rate.and_then(std::num::NonZeroU32::new)).await?;
            out(&format!(
                "{} messages sent back to {}{}\n",
                done.moved,
                queue.url(),
                if done.not_deleted > 0 {
                    format!(
                        "; {} also still on the dead-letter queue (delete failed)",
                        done.not_deleted
                    )
                } else {
                    String::new()
                }
            ))?;
            if !done.failed.is_empty() {
                for (id, e) in &done.failed {
                    eprintln!("  not sent back: {id}: {e}");
                }
                anyhow::bail!("{} messages could not be sent back", done.failed.len());
            }
        }
        DlqAction::Purge { yes, .. } => {
            let n = dlq::purge(queue, yes, |url, depth| {
                eprintln!(
                    "sluice-agent: purging {url}: {} will be deleted",
                    dlq::describe_depth(depth)
                );
            })
            .await?;
            out(&format!(
                "purge requested: {n} messages deleted from {} (SQS finishes within 60 s)\n",
                queue.dead_letter_url().unwrap_or_default()
            ))?;
        }
    }
    Ok(())
}

/// Writes to stdout; `false` when the reader has gone. A closed pipe (`sluice-agent status |
/// head -3`) ends the output quietly instead of panicking as `print!` would.
fn out(text: &str) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}
