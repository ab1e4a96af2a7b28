//! The write target's check at start-up: for `target.kind = "procedure"`, the procedure must
//! exist with one `jsonb` IN argument and the agent's role must be allowed to call it. A
//! definite problem refuses the start (exit 64, like the dead-letter queue's); a database that
//! does not answer yet is asked again with backoff, as the migrations are.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::io::store::{Store, TargetProblem};
use crate::pipeline::backoff::outage_backoff;

/// The configured procedure cannot be called: the configuration or the database must change
/// (`sluice-agent` exits 64).
#[derive(Debug, thiserror::Error)]
#[error("refusing to start: {0}")]
pub struct TargetRefused(pub String);

/// Checks the target until the database answers. `Ok(false)` if shut down first.
pub async fn at_start(store: &Store, shutdown: &CancellationToken) -> Result<bool, TargetRefused> {
    let mut delays = outage_backoff();
    loop {
        match store.verify_target().await {
            Ok(()) => return Ok(true),
            Err(TargetProblem::Definite(problem)) => return Err(TargetRefused(problem)),
            Err(e @ TargetProblem::Unavailable(_)) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::error!(error = %e, retry_in = ?delay, "Cannot check target.procedure; retrying.");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
