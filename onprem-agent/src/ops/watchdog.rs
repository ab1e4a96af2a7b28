//! The watchdog that proves the pipeline is still moving: [`supervise`] sends `READY=1` once
//! PostgreSQL and SQS both answer, then pings systemd's watchdog every `WATCHDOG_USEC / 2`, only
//! while [`Liveness`] says the pipeline moved recently or is legitimately waiting. A stuck loop
//! stops the pings and systemd restarts the agent.
//!
//! Keeps the guarantee "A stuck pipeline is restarted".

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::io::sqs::Queue;
use crate::io::store::Store;
use crate::ops::sd_notify::{watchdog_timeout_from_env, Notifier, State};
use crate::ops::server::check_ready;
use crate::pipeline::liveness::{stale_after, Liveness};

/// How often readiness is re-checked before `READY=1`.
const READY_RETRY: Duration = Duration::from_secs(1);

/// Tells systemd about the agent's life: `READY=1` once PostgreSQL and SQS answer, then
/// `WATCHDOG=1` every half watchdog interval while the pipeline is alive, until `stop`.
/// Returns at once when systemd is not listening.
pub async fn supervise(
    notifier: Notifier,
    liveness: Liveness,
    store: Store,
    queue: Queue,
    wait_seconds: u8,
    stop: CancellationToken,
) {
    if !notifier.is_enabled() {
        return;
    }
    loop {
        let (ready, detail) = tokio::select! {
            _ = stop.cancelled() => return,
            r = check_ready(&store, &queue) => r,
        };
        if ready {
            notifier.ready("Draining: PostgreSQL and SQS answer.");
            tracing::info!("Ready: notified systemd.");
            break;
        }
        notifier.notify(&[State::Status(format!("Waiting for dependencies: {detail}"))]);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(READY_RETRY) => {}
        }
    }
    let Some(timeout) = watchdog_timeout_from_env() else {
        return;
    };
    let tick = timeout / 2;
    let stale = stale_after(timeout, wait_seconds);
    tracing::info!(watchdog = ?timeout, ping_every = ?tick, stale_after = ?stale, "Watchdog enabled.");
    watchdog(&notifier, &liveness, tick, stale, &stop).await;
}

/// Every `tick`, sends `WATCHDOG=1` if the pipeline is alive (see [`Liveness::is_alive`]);
/// logs once when it stops being so. Until `stop`.
pub async fn watchdog(
    notifier: &Notifier,
    liveness: &Liveness,
    tick: Duration,
    stale: Duration,
    stop: &CancellationToken,
) {
    let mut stuck_reported = false;
    loop {
        if liveness.is_alive(stale) {
            notifier.watchdog();
            stuck_reported = false;
        } else if !stuck_reported {
            stuck_reported = true;
            tracing::error!(since_last_progress = ?liveness.since_last_beat(), "Pipeline made no progress; watchdog pings stopped, systemd will restart the agent.");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::sd_notify::abstract_addr;
    use std::io;
    use std::os::unix::net::UnixDatagram;

    const WAIT: Duration = Duration::from_millis(400);

    /// Whether a `WATCHDOG=1` arrives within `wait`.
    async fn ping_within(listener: &tokio::net::UnixDatagram, wait: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(wait, listener.recv(&mut buf)).await,
            Ok(Ok(n)) if &buf[..n] == b"WATCHDOG=1\n"
        )
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_stuck_pipeline_stops_the_watchdog_pings_and_progress_resumes_them() -> io::Result<()>
    {
        let name = format!("sluice-watchdog-test-{}", std::process::id());
        let std_listener = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes())?)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixDatagram::from_std(std_listener)?;
        let notifier = Notifier::to_socket(&format!("@{name}"))?;
        let liveness = Liveness::new();
        let stop = CancellationToken::new();
        let tick = Duration::from_millis(50);
        let stale = Duration::from_millis(500);
        let task = {
            let (n, l, s) = (notifier.clone(), liveness.clone(), stop.clone());
            tokio::spawn(async move { watchdog(&n, &l, tick, stale, &s).await })
        };
        // Beating: alive (retried, so a slow test machine cannot make the beat stale first).
        let mut pinged = false;
        for _ in 0..5 {
            liveness.beat();
            if ping_within(&listener, WAIT).await {
                pinged = true;
                break;
            }
        }
        assert!(pinged, "pings while the loop beats");
        // No beats for longer than `stale`: the pings stop.
        tokio::time::sleep(stale + tick * 2).await;
        while ping_within(&listener, Duration::from_millis(10)).await {}
        assert!(!ping_within(&listener, WAIT).await, "no ping while stuck");
        // A legitimate wait counts as alive.
        let waiting = liveness.waiting();
        assert!(ping_within(&listener, WAIT).await, "pings while waiting");
        drop(waiting);
        stop.cancel();
        task.await.map_err(io::Error::other)?;
        Ok(())
    }
}
