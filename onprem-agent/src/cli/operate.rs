//! `sluice-agent status` and `sluice-agent dlq …` as commands: their output on stdout (text,
//! or JSON for scripts), refreshing with `--watch`, and their exit codes. What they report is
//! computed in [`super::status`] and [`super::dlq`].

use std::process::ExitCode;

use anyhow::Context as _;

use super::args::{DlqAction, StatusArgs};
use super::{EXIT_CONFIG, EXIT_USAGE};
use crate::config::{secret, AgentConfig};
use crate::Clients;

/// Runs `status`, printing any error and mapping it to the exit code.
pub async fn status(cfg: AgentConfig, args: &StatusArgs) -> ExitCode {
    exit_code(watch_status(cfg, args).await)
}

/// Runs `dlq …`, printing any error and mapping it to the exit code.
pub async fn dlq(cfg: AgentConfig, action: DlqAction) -> ExitCode {
    exit_code(dead_letters(cfg, action).await)
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    use super::dlq::DlqError;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-agent: {}", secret::scrub(&format!("{e:#}")));
            match e.downcast_ref::<DlqError>() {
                Some(DlqError::NotConfirmed { .. }) => ExitCode::from(EXIT_USAGE),
                Some(DlqError::NotConfigured | DlqError::SameQueue { .. }) => {
                    ExitCode::from(EXIT_CONFIG)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn watch_status(cfg: AgentConfig, args: &StatusArgs) -> anyhow::Result<()> {
    use super::status::{render, Reporter, AGENT_SAMPLE};
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

async fn dead_letters(cfg: AgentConfig, action: DlqAction) -> anyhow::Result<()> {
    use super::dlq;
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
