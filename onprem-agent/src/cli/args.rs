//! The command line: `sluice-agent run|migrate|check-config|status|dlq …`, each with
//! `--config FILE` (or `SLUICE_CONFIG`). Only the shapes of the arguments live here; each
//! command's body is in its own module of [`crate::cli`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-agent",
    version,
    about = "Drains the Sluice SQS queue into PostgreSQL under a rate limit."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent until SIGTERM or SIGINT.
    Run(ConfigArg),
    /// Create the schema and apply pending migrations, then exit.
    Migrate(ConfigArg),
    /// Validate the configuration and print it (secrets redacted); exit 64 if invalid.
    ///
    /// With --online, also ask SQS: both queues answer, the dead-letter queue is not the main
    /// queue (same ARN) and takes messages as large as the main queue's; and, for
    /// `target.kind = "procedure"`, ask PostgreSQL that the procedure exists with one jsonb
    /// argument and may be executed by the agent's role, and the status queue
    /// (`[status] queue_url`) answers (exit 64 if not; 69 when a queue or
    /// the database cannot be read).
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
    pub fn config_arg(&self) -> &ConfigArg {
        match self {
            Command::Run(a) | Command::Migrate(a) => a,
            Command::CheckConfig(a) => &a.config,
            Command::Status(a) => &a.config,
            Command::Dlq { action } => action.config_arg(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also check the queues against SQS (`run` checks them itself, and a dead-letter queue
    /// missing for now must not stop the start).
    #[arg(long)]
    pub online: bool,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Path to agent.toml.
    #[arg(
        long,
        short,
        env = "SLUICE_CONFIG",
        default_value = "/etc/sluice/agent.toml"
    )]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Refresh until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// One JSON object per report (one line each with --watch), for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
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
    pub fn config_arg(&self) -> &ConfigArg {
        match self {
            DlqAction::List { config, .. }
            | DlqAction::Redrive { config, .. }
            | DlqAction::Purge { config, .. } => config,
        }
    }
}
