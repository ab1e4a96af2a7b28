//! The dead-letter queue check at start-up: a definite misconfiguration (the DLQ is the main
//! queue, or takes smaller messages) refuses the start; a DLQ that cannot be read now (missing,
//! no permission, SQS unreachable) raises `dead_letter_unavailable` and is checked again with
//! backoff until it passes, so the agent drains meanwhile instead of restarting in a loop.
//!
//! Keeps the guarantee "A misconfigured DLQ is caught before it loses anything".

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::io::sqs::{DeadLetterProblem, Queue};
use crate::pipeline::backoff::outage_backoff;
use crate::pipeline::health::{Health, DEAD_LETTER_UNAVAILABLE};

/// Checks the dead-letter queue once. `Err` for a definite misconfiguration (refuse to start);
/// otherwise `Ok(true)` when it passed and `Ok(false)` when the condition was raised and the
/// caller should keep checking with [`recheck`].
pub async fn at_start(queue: &Queue, health: &Health) -> Result<bool, DeadLetterProblem> {
    match queue.verify_dead_letter().await {
        Ok(()) => Ok(true),
        Err(p) if p.is_definite() => Err(p),
        Err(p) => {
            health.raise(DEAD_LETTER_UNAVAILABLE, p.to_string());
            Ok(false)
        }
    }
}

/// Checks again with backoff (500 ms doubling to 30 s) until the dead-letter queue passes,
/// then clears the condition; a definite problem found now keeps it raised with that reason.
pub async fn recheck(queue: Queue, health: Health, stop: CancellationToken) {
    let mut delays = outage_backoff();
    loop {
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        match queue.verify_dead_letter().await {
            Ok(()) => {
                health.clear(DEAD_LETTER_UNAVAILABLE);
                return;
            }
            Err(p) => health.raise(DEAD_LETTER_UNAVAILABLE, p.to_string()),
        }
    }
}
