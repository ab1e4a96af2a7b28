//! `sluice-agent check-config --online`: beyond the file, what SQS and PostgreSQL say — both
//! queues answer, the dead-letter queue is another queue that takes messages as large as the
//! main queue's, the status queue answers, and a procedure target exists and may be executed.

use std::process::ExitCode;

use super::{runtime, EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::config::{secret, AgentConfig};
use crate::Clients;

/// Both checks; the queues' failure wins when both fail.
pub fn check(cfg: &AgentConfig) -> ExitCode {
    let queues = check_queues(cfg);
    let target = check_target(cfg);
    if queues == ExitCode::SUCCESS {
        target
    } else {
        queues
    }
}

/// `check-config --online`: the queues as SQS sees them.
fn check_queues(cfg: &AgentConfig) -> ExitCode {
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

/// `check-config --online` for `target.kind = "procedure"`: the procedure exists with one
/// `jsonb` IN argument and the configured role may use its schema and execute it (exit 64 when
/// not; 69 when PostgreSQL cannot be asked).
fn check_target(cfg: &AgentConfig) -> ExitCode {
    let Some(procedure) = &cfg.target.procedure else {
        return ExitCode::SUCCESS;
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let checked = runtime.block_on(async {
        let clients = Clients::connect(cfg).await?;
        anyhow::Ok(clients.store.verify_target().await)
    });
    match checked {
        Err(e) => {
            eprintln!("sluice-agent: {}", secret::scrub(&format!("{e:#}")));
            ExitCode::FAILURE
        }
        Ok(Err(problem)) => {
            eprintln!("sluice-agent: {}", secret::scrub(&problem.to_string()));
            if problem.is_definite() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::from(EXIT_UNAVAILABLE)
            }
        }
        Ok(Ok(())) => {
            println!("procedure {procedure}(jsonb) exists and the agent's role may execute it");
            ExitCode::SUCCESS
        }
    }
}
