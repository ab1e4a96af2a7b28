//! `sluice-agent`: parse arguments, load configuration, run the command, map the exit code.
//! Each command's body lives in `sluice_agent::cli`.

use std::process::ExitCode;

use clap::Parser as _;
use sluice_agent::cli::args::{Cli, Command};
use sluice_agent::cli::{self, EXIT_CONFIG, EXIT_UNAVAILABLE};
use sluice_agent::config::{secret, AgentConfig, LogFormat};
use sluice_agent::telemetry;

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
        return if args.online {
            cli::check_online(&cfg)
        } else {
            ExitCode::SUCCESS
        };
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
    let runtime = match cli::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let config_path = arg.config.clone();
    let result = match cli.command {
        Command::Status(args) => return runtime.block_on(cli::status_command(cfg, &args)),
        Command::Dlq { action } => return runtime.block_on(cli::dlq_command(cfg, action)),
        Command::Migrate(_) => runtime.block_on(cli::migrate(&cfg)),
        Command::Run(_) => runtime.block_on(cli::run(cfg, config_path)),
        // Answered above, before logging starts.
        Command::CheckConfig(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "sluice-agent failed.");
            eprintln!("sluice-agent: {}", secret::scrub(&format!("{e:#}")));
            // A refusal that only a configuration change can lift: exit 64, which the unit's
            // RestartPreventExitStatus keeps from restarting in a loop.
            if e.downcast_ref::<sluice_agent::StartRefused>().is_some()
                || e.downcast_ref::<sluice_agent::TargetRefused>().is_some()
                || e.downcast_ref::<sluice_agent::ProbeError>().is_some()
            {
                ExitCode::from(EXIT_CONFIG)
            } else if e
                .downcast_ref::<sluice_agent::NoRootCertificates>()
                .is_some()
            {
                // The host lacks what TLS needs: systemd's restarts pick it up once installed.
                ExitCode::from(EXIT_UNAVAILABLE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
