//! The protection figures: with pgbench at its fixed rate alongside, the fastest fixed rate
//! whose foreground p99 stays within [`TARGET_RATIO`] × the idle p99, found by bisection, and
//! then adaptive mode with `target_latency_ratio` = [`TARGET_RATIO`] on the same backlog: its
//! drain rate against that fixed rate, and its own foreground p99 ratio. Side by side in one
//! run, so the two see the same machine.

use std::time::Duration;

use sluice_e2e::{AgentProcess, TestEnv};

use crate::drain::{show_probe, window_with, Throttle, Window};
use crate::pgbench::{Latency, Pgbench};
use crate::Table;

/// The foreground p99 allowed, × its idle p99 (the target).
pub(crate) const TARGET_RATIO: f64 = 1.5;
/// The bisection's bounds, receipts/s: the lowest rate tried, and a rate above any this kind of
/// machine drains at.
const LOW: f64 = 50.0;
const HIGH: f64 = 32_000.0;

/// Bisects the fixed rate (geometrically: rates span two orders of magnitude), then runs
/// adaptive; adds the rows.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn measure(
    env: &TestEnv,
    agent: &AgentProcess,
    oltp: &Pgbench,
    (idle, idle_probe): (&Latency, (f64, f64)),
    window: Duration,
    steps: u32,
    table: &mut Table,
) -> anyhow::Result<()> {
    let (mut lo, mut hi) = (LOW, HIGH);
    let mut best: Option<(f64, Window)> = None;
    for step in 0..steps {
        let rate = (lo * hi).sqrt().round();
        let w = window_with(env, agent, oltp, Throttle::Fixed(rate as u32), window).await?;
        let ratio = w.latency.p99 / idle.p99;
        eprintln!(
            "bench: bisection step {} at {rate:.0}/s: p99 {ratio:.2} × idle, drain {:.0}/s",
            step + 1,
            w.drain
        );
        if ratio <= TARGET_RATIO && !w.ran_out {
            lo = rate;
            best = Some((rate, w));
        } else {
            hi = rate;
        }
    }
    let (fixed_rate, fixed) = match best {
        Some((r, w)) => (r, w),
        None => {
            // Even the lowest rate breached the target: measure it so the row says so.
            let w = window_with(env, agent, oltp, Throttle::Fixed(LOW as u32), window).await?;
            (LOW, w)
        }
    };
    table.row(
        format!("fastest fixed rate with foreground p99 ≤ {TARGET_RATIO} × idle (bisected)"),
        format!("{:.0} receipts/s", fixed.drain),
        format!(
            "configured {fixed_rate:.0}/s after {steps} steps in [{LOW:.0}, {HIGH:.0}]; p99 {:.2} × idle ({})",
            fixed.latency.p99 / idle.p99,
            fixed.latency.show()
        ),
    );

    let adaptive = Throttle::Adaptive {
        ratio: TARGET_RATIO,
        ceiling: HIGH as u32,
    };
    // `window_with` lets the controller learn its baseline and find its level first.
    let w = window_with(env, agent, oltp, adaptive, window).await?;
    let seconds = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.2} ms", s * 1000.0));
    const PROBE: &str = "sluice_probe_latency_seconds";
    let probe = format!(
        "the agent's probe at the end: p99 {} (p95 {}) against baseline {} (limit {})",
        seconds(agent.metric(PROBE, &[("quantile", "0.99")]).await),
        seconds(agent.metric(PROBE, &[("quantile", "0.95")]).await),
        seconds(agent.metric("sluice_probe_baseline_seconds", &[]).await),
        seconds(agent.metric("sluice_probe_limit_seconds", &[]).await),
    );
    table.row(
        format!("adaptive, target_latency_ratio = {TARGET_RATIO}: drain"),
        format!("{:.0} receipts/s", w.drain),
        format!(
            "{:.0} % of the bisected fixed rate; foreground p99 {:.2} × idle ({}); {}; {probe}; {}",
            100.0 * w.drain / fixed.drain.max(1.0),
            w.latency.p99 / idle.p99,
            w.latency.show(),
            w.note,
            show_probe(w.probe, Some(idle_probe))
        ),
    );
    Ok(())
}
