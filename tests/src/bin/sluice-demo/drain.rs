//! The live drain: one line a second — queue and DLQ depth, receipts stored, measured rate
//! against the limit, time left — until every uploaded receipt is stored, or the drain stalls.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::children::{log_tail, Children};
use crate::format::{eta, secs, thousands};
use crate::paths::Paths;
use crate::world::World;
use crate::{BATCH_MAX_ROWS, RATE_WINDOW, STALL_TIMEOUT};

#[derive(Debug)]
pub(crate) struct DrainStats {
    pub(crate) done_at: Instant,
}

/// One line a second until `expected` receipts are stored: queue depth, DLQ depth, stored,
/// measured rate against the limit, time left.
pub(crate) async fn watch_drain(
    world: &World,
    children: &mut Children,
    expected: u64,
    rate: u32,
    paths: &Paths,
) -> anyhow::Result<DrainStats> {
    let tty = std::io::stderr().is_terminal();
    // At very low limits a batch of 500 takes longer than a minute to earn its tokens.
    let stall_timeout = STALL_TIMEOUT.max(Duration::from_secs(
        3 * u64::from(BATCH_MAX_ROWS / rate.max(1)),
    ));
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let mut last_stored = 0;
    let mut last_progress = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        children.check_alive()?;
        let now = Instant::now();
        let stored = world.stored().await.unwrap_or(last_stored);
        let (visible, in_flight, _) = world.depth(&world.queue_url).await?;
        let (dv, di, dd) = world.depth(&world.dlq_url).await?;
        samples.push((now, stored));
        samples.retain(|(t, _)| now.duration_since(*t) <= RATE_WINDOW);
        // None until there are two samples to measure between.
        let measured = match samples.first() {
            Some((t0, s0)) if now.duration_since(*t0) >= Duration::from_millis(500) => {
                Some(stored.saturating_sub(*s0) as f64 / now.duration_since(*t0).as_secs_f64())
            }
            _ => None,
        };
        let remaining = expected.saturating_sub(stored);
        let left = if remaining == 0 {
            "done".to_owned()
        } else if let Some(r) = measured.filter(|r| *r >= 1.0) {
            format!("{} left", eta(remaining as f64 / r))
        } else {
            format!("~{} left", eta(remaining as f64 / f64::from(rate)))
        };
        let line = format!(
            "queue {:>6} visible {:>4} in flight │ dlq {:>3} │ stored {:>7}/{} │ {:>6}/s (limit {}) │ {left}",
            thousands(visible),
            thousands(in_flight),
            thousands(dv + di + dd),
            thousands(stored),
            thousands(expected),
            measured.map_or_else(|| "--".to_owned(), |r| thousands(r.round() as u64)),
            thousands(u64::from(rate)),
        );
        if tty {
            eprint!("\r  {line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("  {line}");
        }
        if stored >= expected {
            if tty {
                eprintln!();
            }
            return Ok(DrainStats { done_at: now });
        }
        if stored != last_stored {
            last_stored = stored;
            last_progress = now;
        } else if now.duration_since(last_progress) > stall_timeout {
            if tty {
                eprintln!();
            }
            let log = paths.log("agent");
            bail!(
                "nothing stored for {} ({} of {} so far); last lines of {}:\n{}",
                secs(stall_timeout),
                thousands(stored),
                thousands(expected),
                log.display(),
                log_tail(&log, 20)
            );
        }
    }
}

/// Waits (bounded) for the agent's deletes to catch up with its commits.
pub(crate) async fn wait_queue_empty(world: &World) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match world.depth(&world.queue_url).await {
            Ok((0, 0, 0)) => return,
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
