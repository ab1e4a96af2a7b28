//! The foreground probe as it runs (adaptive mode): `throttle.probe_sql` on its own connection
//! every `throttle.probe_interval_ms`, each latency handed to the throttle's
//! [`LatencyGuard`](super::controller::LatencyGuard) with whether the agent was idle.
//!
//! The baseline is learned while the agent is idle (no backlog: nothing to do); an agent that
//! drains for long pauses its writes for a few seconds to learn it — at start, before its first
//! write, once a minute until the baseline is the median of five moments a minute apart, and
//! then when no baseline was learned for `throttle.baseline_relearn_minutes`. A pause
//! takes every transaction slot (so no new transaction starts and those in flight finish),
//! lets the database settle for [`SETTLE`], then probes as many learning windows' worth of
//! times (five seconds of samples each) as the guard asks: the windows a first baseline needs
//! at start (fifteen seconds at the default interval), one when re-learning.
//!
//! Also here: the check at start that the statement runs, read-only and fast, on the database
//! (a refusal stops the start, naming the key). The probe's keys are checked with the rest of
//! the configuration (`config::check`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::controller::GuardParams;
use super::Throttle;
use crate::config::ThrottleConfig;
use crate::io::store::{ForegroundProbe, ProbeError, PROBE_STATEMENT_TIMEOUT};
use crate::telemetry::names as m;

/// After the last transaction of a pause finishes, before the first learning sample.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a pause waits for the transactions in flight to finish before giving up.
const PAUSE_WAIT: Duration = Duration::from_secs(10);
/// While the throttle is in fixed mode, how often the probe looks whether it should run.
const DORMANT: Duration = Duration::from_secs(1);
/// The statement as it is run: without a trailing `;`.
pub fn statement(cfg: &ThrottleConfig) -> String {
    let sql = cfg.probe_sql.trim();
    sql.strip_suffix(';').unwrap_or(sql).trim_end().to_owned()
}

/// At start: runs the probe once. `Err` when the statement itself is refused (a write, a
/// syntax error, a missing table, too slow); an unreachable database is not the statement's
/// fault and passes (the probe retries as it runs).
pub async fn verify(probe: &ForegroundProbe, cfg: &ThrottleConfig) -> Result<(), ProbeError> {
    match probe.run(&statement(cfg)).await {
        Ok(_) | Err(ProbeError::Unavailable(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Probes until `stop`, while the throttle is adaptive.
pub async fn run(throttle: Arc<Throttle>, probe: ForegroundProbe, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let Some(settings) = throttle.probe_settings() else {
            if sleep_or_stop(DORMANT, &stop).await {
                return;
            }
            continue;
        };
        if throttle.probe_wants_pause(Instant::now()) {
            learn(&throttle, &probe, &settings.sql, settings.interval, &stop).await;
            continue;
        }
        let started = Instant::now();
        let idle_before = throttle.is_idle(started);
        let answer = probe.run(&settings.sql).await;
        let idle = idle_before && throttle.is_idle(Instant::now());
        failing = observe(&throttle, answer, idle, failing);
        if sleep_or_stop(settings.interval.saturating_sub(started.elapsed()), &stop).await {
            return;
        }
    }
}

/// Hands one answer to the throttle; logs the first failure of a streak and its end. Returns
/// whether the probe is failing now.
fn observe(
    throttle: &Throttle,
    answer: Result<Duration, ProbeError>,
    idle: bool,
    was_failing: bool,
) -> bool {
    let now = Instant::now();
    match answer {
        Ok(took) => throttle.observe_probe(took, idle, now),
        // Cancelled by its statement_timeout: at least that slow.
        Err(ProbeError::TooSlow) => throttle.observe_probe(PROBE_STATEMENT_TIMEOUT, idle, now),
        Err(e) => {
            metrics::counter!(m::PROBE_ERRORS).increment(1);
            if !was_failing {
                tracing::warn!(error = %e, "The foreground probe failed; the adaptive rate holds until it answers.");
            }
            throttle.observe_probe_failure();
            return true;
        }
    }
    if was_failing {
        tracing::info!("The foreground probe answers again.");
    }
    false
}

/// A learning pause: every transaction slot held, the database left to settle, then one
/// learning window of idle samples.
async fn learn(
    throttle: &Throttle,
    probe: &ForegroundProbe,
    sql: &str,
    interval: Duration,
    stop: &CancellationToken,
) {
    throttle.probe_pausing(Instant::now());
    let slots = throttle.slots();
    let all = throttle.transactions();
    let held = tokio::select! {
        held = tokio::time::timeout(PAUSE_WAIT, slots.acquire_many_owned(all)) => held,
        _ = stop.cancelled() => return,
    };
    let Ok(Ok(held)) = held else {
        tracing::info!("Transactions did not finish in time for a baseline pause; trying later.");
        return;
    };
    let samples = throttle
        .probe_to_learn()
        .unwrap_or_else(|| GuardParams::window_for(interval));
    tracing::info!(
        samples,
        seconds = GuardParams::span(interval, samples).as_secs(),
        "Pausing writes to learn the foreground probe's baseline."
    );
    if sleep_or_stop(SETTLE, stop).await {
        return;
    }
    let mut failing = false;
    for _ in 0..samples {
        let started = Instant::now();
        failing = observe(throttle, probe.run(sql).await, true, failing);
        if sleep_or_stop(interval.saturating_sub(started.elapsed()), stop).await {
            return;
        }
    }
    drop(held);
    tracing::info!(
        baseline_ms = throttle.probe_baseline().map(|b| b.as_secs_f64() * 1000.0),
        moments = throttle.probe_moments(),
        "Writes resume after the baseline pause."
    );
}

/// Sleeps; `true` when stopped first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::{LocalTime, Weekday};
    use crate::config::ThrottleMode;

    const NOON: LocalTime = LocalTime {
        weekday: Weekday::Wed,
        minute: 12 * 60,
    };

    /// The throttle with synthetic probe latencies: learns, climbs while the probe is within
    /// its limit, cuts on a breach and says why.
    #[test]
    fn the_throttle_climbs_while_the_probe_is_fast_and_cuts_when_it_slows() {
        let cfg = ThrottleConfig {
            mode: ThrottleMode::Adaptive,
            rows_per_second: 1000,
            min_rows_per_second: 100,
            increase_rows_per_second: Some(100),
            ..ThrottleConfig::default()
        };
        let mut t = Instant::now();
        let th = Throttle::new(&cfg, NOON, t).expect("valid");
        let ms = Duration::from_millis;
        assert!(th.probe_wants_pause(t), "no baseline yet");
        th.probe_pausing(t);
        let pause = th.probe_to_learn().expect("adaptive");
        assert_eq!(pause, 300, "three windows of 5 s at 20 a second");
        for _ in 0..pause {
            t += ms(cfg.probe_interval_ms);
            th.observe_probe(ms(2), true, t);
        }
        assert_eq!(th.probe_baseline(), Some(ms(2)));
        let mut second = |probe: Duration| {
            for _ in 0..1000 / cfg.probe_interval_ms {
                t += ms(cfg.probe_interval_ms);
                th.observe_probe(probe, false, t);
            }
            th.observe_commit(ms(10));
            th.limiter().note_held_back();
            th.update(NOON, t);
            th.rate()
        };
        // The default p99 at 20 a second: judged over 500 samples; a fifth of them (5 s) must
        // have seen a rate before the next step.
        assert_eq!(second(ms(2)), 200);
        for s in 1..5 {
            assert_eq!(
                second(ms(2)),
                200,
                "second {s} at 200/s: the window has not seen it"
            );
            assert_eq!(th.lock().reason, Some("probe_settling"));
        }
        assert_eq!(
            second(ms(2)),
            300,
            "five seconds at 200/s, still fast: climbs"
        );
        assert_eq!(
            second(ms(9)),
            150,
            "p99 9 ms above 1.5 × 2 ms: halved at once, without waiting"
        );
        assert_eq!(th.lock().reason, Some("probe_latency"));
        for _ in 1..5 {
            assert_eq!(second(ms(2)), 150, "the emptied window refills");
        }
        assert_eq!(second(ms(2)), 250, "fast again on fresh samples");
    }

    fn problems(f: impl FnOnce(&mut ThrottleConfig)) -> Vec<String> {
        let mut cfg = ThrottleConfig::default();
        f(&mut cfg);
        let mut p = Vec::new();
        cfg.check_probe(&mut p);
        p
    }

    #[test]
    fn the_defaults_pass_and_a_trailing_semicolon_is_dropped() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
        let cfg = ThrottleConfig {
            probe_sql: "  SELECT count(*) FROM app.orders ;  ".into(),
            ..ThrottleConfig::default()
        };
        assert_eq!(statement(&cfg), "SELECT count(*) FROM app.orders");
        assert_eq!(
            problems(|c| c.probe_sql = cfg.probe_sql.clone()),
            Vec::<String>::new()
        );
    }
}
