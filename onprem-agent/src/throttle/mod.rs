//! The throttle as it runs: decides the rate the token bucket ([`RowLimiter`]) refills at, and
//! caps concurrent transactions.
//!
//! The rate is the ceiling — the matching `[[throttle.schedule]]` window's rate, else
//! `throttle.rows_per_second` — in fixed mode, or the adaptive controller's rate ([`Aimd`])
//! under that ceiling. It is recomputed on a short tick (schedule windows, AIMD adjustments),
//! and at once on a reload. Every change is logged with its cause and shown as the
//! `sluice_rate_rows_per_second` gauge.
//!
//! Writers feed it what they see: commit latencies and overload errors. With
//! `max_active_backends` set (adaptive mode), [`run`] also polls `pg_stat_activity` once per
//! adjustment interval. In adaptive mode the foreground probe ([`probe`]) feeds it the latency
//! a foreground client sees, judged by [`controller`]. Why the rate is what it is shows as
//! `sluice_rate_reason` and in `status`.
//!
//! The figures in `[throttle]` are the database's total across agents: the throttle runs on
//! this agent's part of them ([`share`]), which changes as agents join and leave.
//!
//! With `throttle.max_database_share` set, in either mode, a writer also waits until the time
//! this agent's transactions took is paid off at its part of that cap ([`busy::BusyBudget`]):
//! the rate is then a ceiling the database's speed may keep it under, and the reason says so
//! (`database_share`).

pub(crate) mod adaptive;
pub(crate) mod busy;
pub(crate) mod controller;
mod explained;
pub(crate) mod limiter;
pub(crate) mod photo_bytes;
pub mod probe;
pub(crate) mod share;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::schedule::{LocalTime, Schedule};
use crate::config::{ThrottleConfig, ThrottleMode};
use crate::io::store::{Store, StoreError};
use crate::telemetry::names as m;
use adaptive::{Adjustment, Aimd, AimdParams};
use busy::{BusyBudget, BusyTime};
use controller::{GuardParams, LatencyGuard, IDLE_AFTER};
use limiter::RowLimiter;
use share::Share;

pub use explained::RateExplained;

/// How often the schedule and the adaptive controller are looked at. Schedules work in
/// minutes; the controller keeps its own interval and only acts once it has passed.
const TICK: Duration = Duration::from_millis(200);

/// A writer held back by the share cap looks again at least this often, so a reload that lifts
/// or raises the cap applies within it.
const CAP_RECHECK: Duration = Duration::from_secs(1);

/// The cap is named as the reason for the rate while a writer waited on it this recently.
const CAPPED_FOR: Duration = Duration::from_secs(2);

/// Why the rate changed: the `cause` label of `sluice_rate_changes_total` and the log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Start,
    Schedule,
    Reload,
    AdaptiveIncrease,
    AdaptiveDecrease,
    /// Another agent joined or left: this agent's part of the total changed.
    Share,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Start => "start",
            Cause::Schedule => "schedule",
            Cause::Reload => "reload",
            Cause::AdaptiveIncrease => "adaptive_increase",
            Cause::AdaptiveDecrease => "adaptive_decrease",
            Cause::Share => "share",
        }
    }
}

/// The rate limiter, the transaction slots, and what decides the rate.
#[derive(Debug)]
pub struct Throttle {
    limiter: RowLimiter,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// Until when this agent may write: the other agents count it in the live set (and so
    /// leave it its share) only while its heartbeat is fresh (`share`). `None` before the
    /// first heartbeat went through.
    lease: watch::Sender<Option<Instant>>,
}

#[derive(Debug)]
struct State {
    /// `[throttle]` as configured: the total across agents.
    total: ThrottleConfig,
    /// This agent's place among the live agents.
    share: Share,
    /// This agent's part of `total`: what the rest of the throttle runs on.
    cfg: ThrottleConfig,
    schedule: Schedule,
    /// The schedule window in force (its position), if any.
    window: Option<usize>,
    ceiling: u32,
    /// The ceiling before the split: the total across agents.
    total_ceiling: u32,
    aimd: Option<Aimd>,
    transactions: u32,
    /// The foreground probe's judge (adaptive mode).
    guard: Option<LatencyGuard>,
    last_commit: Option<Instant>,
    /// The time this agent's transactions took, for its share of the database's time.
    busy: BusyTime,
    /// The time owed under `max_database_share`.
    budget: BusyBudget,
    /// When a writer last waited on `max_database_share`.
    capped_at: Option<Instant>,
    /// The limiter's count of held-back batches at the last look ([`RowLimiter::held_back`]).
    held_back: u64,
    /// The `reason` label set to 1 now.
    reason: Option<&'static str>,
    /// The same reason in words, with the probe's figures: read by [`Throttle::explained`].
    explained: Option<RateExplained>,
}

/// What the probe task runs, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub sql: String,
    pub interval: Duration,
}

impl Throttle {
    /// Builds the throttle for a validated `[throttle]` at local time `at`.
    pub fn new(cfg: &ThrottleConfig, at: LocalTime, now: Instant) -> anyhow::Result<Self> {
        let schedule = cfg
            .parsed_schedule()
            .map_err(|p| anyhow::anyhow!("throttle.schedule: {}", p.join("; ")))?;
        let nz = |v: u32| std::num::NonZeroU32::new(v.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let throttle = Self {
            limiter: RowLimiter::new(nz(cfg.rows_per_second), nz(cfg.burst)),
            slots: Arc::new(Semaphore::new(
                cfg.max_concurrent_transactions.max(1) as usize
            )),
            state: Mutex::new(State {
                total: cfg.clone(),
                share: Share::ALONE,
                cfg: cfg.clone(),
                schedule,
                window: None,
                ceiling: cfg.rows_per_second,
                total_ceiling: cfg.rows_per_second,
                aimd: None,
                transactions: cfg.max_concurrent_transactions.max(1),
                guard: None,
                last_commit: None,
                busy: BusyTime::default(),
                budget: BusyBudget::default(),
                capped_at: None,
                held_back: 0,
                reason: None,
                explained: None,
            }),
            lease: watch::Sender::new(None),
        };
        {
            let mut st = throttle.lock();
            throttle.recompute(&mut st, at, now, Cause::Start);
        }
        metrics::gauge!(m::RATE_CURRENT).set(f64::from(throttle.limiter.rows_per_second()));
        Ok(throttle)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in the critical sections panics; if something did, the state is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limiter(&self) -> &RowLimiter {
        &self.limiter
    }

    /// One permit per transaction in flight (`throttle.max_concurrent_transactions`).
    pub fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    /// The rate in force, rows per second.
    pub fn rate(&self) -> u32 {
        self.limiter.rows_per_second()
    }

    /// The configured (or scheduled) rate: the rate in fixed mode, the ceiling in adaptive.
    pub fn ceiling(&self) -> u32 {
        self.lock().ceiling
    }

    /// The ceiling before this agent's share was taken: the total across agents.
    pub fn total_ceiling(&self) -> u32 {
        self.lock().total_ceiling
    }

    /// This agent's place among the live agents ([`Share::ALONE`] until told otherwise).
    pub fn share(&self) -> Share {
        self.lock().share
    }

    /// Transactions this agent may have in flight (its share of the total; a baseline pause
    /// holds all of them).
    pub fn transactions(&self) -> u32 {
        self.lock().transactions
    }

    /// A heartbeat went through: this agent may write until `until` (see [`share`]).
    pub fn renew_lease(&self, until: Instant) {
        self.lease.send_if_modified(|lease| {
            let later = lease.is_none_or(|l| l < until);
            if later {
                *lease = Some(until);
            }
            later
        });
    }

    /// Whether this agent holds its share of the budget now: a heartbeat went through recently
    /// enough that the other agents still count it.
    pub fn holds_lease(&self, now: Instant) -> bool {
        self.lease.borrow().is_some_and(|until| now < until)
    }

    /// Waits until this agent holds its lease ([`Throttle::holds_lease`]).
    pub async fn leased(&self) {
        let mut lease = self.lease.subscribe();
        loop {
            if lease
                .borrow_and_update()
                .is_some_and(|until| Instant::now() < until)
            {
                return;
            }
            // The sender lives as long as the throttle, so this only ends by a renewal.
            if lease.changed().await.is_err() {
                return;
            }
        }
    }

    /// Takes a new share of the total (agents joined or left); `false` if it is the same.
    pub fn set_share(&self, share: Share, at: LocalTime, now: Instant) -> bool {
        let mut st = self.lock();
        if st.share == share {
            return false;
        }
        st.share = share;
        st.cfg = share.apply(&st.total);
        self.take_transactions(&mut st);
        self.recompute(&mut st, at, now, Cause::Share);
        true
    }

    pub fn mode(&self) -> ThrottleMode {
        self.lock().cfg.mode
    }

    /// A transaction committed after `latency`.
    pub fn observe_commit(&self, latency: Duration) {
        let mut st = self.lock();
        let now = Instant::now();
        st.last_commit = Some(now);
        st.busy.record(now, latency);
        if let Some(cap) = st.cfg.max_database_share {
            st.budget.charge(cap, now, latency);
        }
        if let Some(a) = st.aimd.as_mut() {
            a.record_commit(latency);
        }
    }

    /// Waits until this agent's transactions are within its part of
    /// `throttle.max_database_share`; at once when it is unset.
    pub async fn within_database_share(&self) {
        loop {
            let wait = {
                let mut st = self.lock();
                if st.cfg.max_database_share.is_none() {
                    return;
                }
                let now = Instant::now();
                let wait = st.budget.wait(now);
                if wait.is_zero() {
                    return;
                }
                st.capped_at = Some(now);
                if let Some(a) = st.aimd.as_mut() {
                    a.record_capped();
                }
                wait
            };
            tokio::time::sleep(wait.min(CAP_RECHECK)).await;
        }
    }

    /// The probe's statement and interval; `None` outside adaptive mode.
    pub fn probe_settings(&self) -> Option<ProbeSettings> {
        let st = self.lock();
        (st.cfg.mode == ThrottleMode::Adaptive).then(|| ProbeSettings {
            sql: probe::statement(&st.cfg),
            interval: Duration::from_millis(st.cfg.probe_interval_ms),
        })
    }

    /// No transaction in flight, none waiting on the rate, none committed lately: what the
    /// probe sees now is the database without this agent.
    pub fn is_idle(&self, now: Instant) -> bool {
        let st = self.lock();
        self.slots.available_permits() >= st.transactions as usize
            && self.limiter.waiting() == 0
            && st
                .last_commit
                .is_none_or(|t| now.saturating_duration_since(t) >= IDLE_AFTER)
    }

    pub fn probe_wants_pause(&self, now: Instant) -> bool {
        self.lock()
            .guard
            .as_ref()
            .is_some_and(|g| g.wants_pause(now))
    }

    pub fn probe_pausing(&self, now: Instant) {
        if let Some(g) = self.lock().guard.as_mut() {
            g.pausing(now);
        }
    }

    /// Idle samples the next learning pause takes: [`LatencyGuard::to_learn`].
    pub fn probe_to_learn(&self) -> Option<usize> {
        self.lock().guard.as_ref().map(LatencyGuard::to_learn)
    }

    pub fn probe_baseline(&self) -> Option<Duration> {
        self.lock().guard.as_ref().and_then(LatencyGuard::baseline)
    }

    /// Moments the baseline is the median of: [`LatencyGuard::moments`].
    pub fn probe_moments(&self) -> usize {
        self.lock().guard.as_ref().map_or(0, LatencyGuard::moments)
    }

    /// A probe answered after `latency`; `idle`: the agent was idle throughout.
    pub fn observe_probe(&self, latency: Duration, idle: bool, now: Instant) {
        let mut st = self.lock();
        let Some(g) = st.guard.as_mut() else { return };
        g.record(latency, idle, now);
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let (p50, p95, p99) = (
            secs(g.recent_quantile(0.5)),
            secs(g.recent_quantile(0.95)),
            secs(g.recent_quantile(0.99)),
        );
        let (baseline, limit) = (secs(g.baseline()), secs(g.limit()));
        let reading = baseline.and_then(|_| secs(g.judged()));
        for (q, v) in [("0.5", p50), ("0.95", p95), ("0.99", p99)] {
            if let Some(v) = v {
                metrics::gauge!(m::PROBE_LATENCY, "quantile" => q).set(v);
            }
        }
        if let (Some(b), Some(l)) = (baseline, limit) {
            metrics::gauge!(m::PROBE_BASELINE).set(b);
            metrics::gauge!(m::PROBE_LIMIT).set(l);
        }
        if let Some(r) = reading {
            metrics::gauge!(m::PROBE_READING).set(r);
        }
        let e = st.explained.get_or_insert_with(RateExplained::default);
        e.probe_p50_seconds = p50;
        e.probe_p99_seconds = p99;
        e.probe_baseline_seconds = baseline;
        e.probe_limit_seconds = limit;
        e.probe_reading_seconds = reading;
    }

    /// Why the rate is what it is now, with the probe's figures (`None` before the first
    /// decision): what `/v1/status` serves.
    pub fn explained(&self) -> Option<RateExplained> {
        self.lock().explained.clone()
    }

    /// A probe failed with an error (not a timeout).
    pub fn observe_probe_failure(&self) {
        if let Some(g) = self.lock().guard.as_mut() {
            g.record_failure();
        }
    }

    /// A write failed; overload errors make the adaptive controller back off.
    pub fn observe_error(&self, e: &StoreError) {
        if e.is_overload() {
            if let Some(a) = self.lock().aimd.as_mut() {
                a.record_overload();
            }
        }
    }

    pub fn observe_active_backends(&self, active: u32) {
        metrics::gauge!(m::ACTIVE_BACKENDS).set(f64::from(active));
        if let Some(a) = self.lock().aimd.as_mut() {
            a.record_active_backends(active);
        }
    }

    /// `Some(interval)` when `pg_stat_activity` should be polled (adaptive mode with
    /// `max_active_backends` set).
    pub fn backends_poll_interval(&self) -> Option<Duration> {
        let st = self.lock();
        (st.cfg.mode == ThrottleMode::Adaptive && st.cfg.max_active_backends.is_some())
            .then(|| Duration::from_millis(st.cfg.adjust_interval_ms))
    }

    /// Looks at the schedule and the adaptive controller; applies any change.
    pub fn update(&self, at: LocalTime, now: Instant) {
        let mut st = self.lock();
        // Every tick, so the share falls back to 0 when the agent stops writing.
        metrics::gauge!(m::DATABASE_SHARE).set(st.busy.share(now));
        self.recompute(&mut st, at, now, Cause::Schedule);
    }

    /// Applies a new, validated `[throttle]`: rate, burst, schedule, mode and adaptive keys,
    /// transaction cap. Work in flight is not touched; a waiter moves to the new rate.
    pub fn reload(&self, cfg: &ThrottleConfig, at: LocalTime, now: Instant) -> anyhow::Result<()> {
        let schedule = cfg
            .parsed_schedule()
            .map_err(|p| anyhow::anyhow!("throttle.schedule: {}", p.join("; ")))?;
        let mut st = self.lock();
        if st.cfg.mode != cfg.mode {
            st.aimd = None;
        }
        if st.total.mode != cfg.mode || st.total.probe_sql != cfg.probe_sql {
            // Another statement, another baseline.
            st.guard = None;
        }
        st.total = cfg.clone();
        st.cfg = st.share.apply(cfg);
        st.schedule = schedule;
        // Re-announce the window, whatever it is, under the new schedule.
        st.window = None;
        self.take_transactions(&mut st);
        self.recompute(&mut st, at, now, Cause::Reload);
        Ok(())
    }

    /// Resizes the transaction slots to this agent's part of the cap.
    fn take_transactions(&self, st: &mut State) {
        let want = st.cfg.max_concurrent_transactions.max(1);
        self.resize_slots(st.transactions, want);
        st.transactions = want;
    }

    fn resize_slots(&self, have: u32, want: u32) {
        if want > have {
            self.slots.add_permits((want - have) as usize);
        } else if want < have {
            let excess = (have - want) as usize;
            let forgotten = self.slots.forget_permits(excess);
            if forgotten < excess {
                // The rest are held by transactions in flight: take them as they finish.
                let slots = self.slots.clone();
                let rest = u32::try_from(excess - forgotten).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(rest).await {
                        p.forget();
                    }
                });
            }
        }
    }

    fn recompute(&self, st: &mut State, at: LocalTime, now: Instant, cause: Cause) {
        if st.cfg.max_database_share.is_none() {
            // Lifted: nothing is owed, and a cap set again starts afresh.
            st.budget.clear();
            st.capped_at = None;
        }
        let window = st.schedule.window_at(at);
        let index = window.map(|(i, _)| i);
        // The schedule holds the configured (total) rates; this agent runs on its part.
        let total_ceiling = window.map_or(st.total.rows_per_second, |(_, w)| w.rows_per_second);
        let ceiling = st.share.split(total_ceiling);
        st.total_ceiling = total_ceiling;
        let window_changed = index != st.window;
        if window_changed {
            match window {
                Some((i, w)) => tracing::info!(
                    window = i,
                    days = ?w.days,
                    hours = ?w.hours,
                    rows_per_second = w.rows_per_second,
                    local_time = %at,
                    "Schedule window in force."
                ),
                None if cause != Cause::Start => tracing::info!(
                    rows_per_second = st.cfg.rows_per_second,
                    local_time = %at,
                    "No schedule window in force; the base rate applies."
                ),
                None => {}
            }
        }
        st.window = index;
        st.ceiling = ceiling;
        metrics::gauge!(m::RATE_CONFIGURED).set(f64::from(ceiling));

        let mut cause = cause;
        let mut detail = String::new();
        let rate = match st.cfg.mode {
            ThrottleMode::Fixed => {
                st.aimd = None;
                st.guard = None;
                match index {
                    Some(i) => {
                        self.explain(st, "schedule", format!("window {i} of throttle.schedule"))
                    }
                    None => self.explain(st, "fixed", "throttle.rows_per_second".into()),
                }
                ceiling
            }
            ThrottleMode::Adaptive => {
                let params = aimd_params(&st.cfg, ceiling);
                let gparams = guard_params(&st.cfg);
                let guard = st
                    .guard
                    .get_or_insert_with(|| LatencyGuard::new(gparams.clone()));
                guard.set_params(gparams);
                let verdict = guard.heard().then(|| guard.verdict());
                let aimd = st
                    .aimd
                    .get_or_insert_with(|| Aimd::new(params.clone(), now));
                aimd.set_params(params);
                if let Some(v) = verdict {
                    aimd.record_probe(v);
                }
                // A batch held back since the last look, or one waiting now (a long wait that
                // began before it), says the rate is what limits the writers.
                let held_back = self.limiter.held_back();
                if held_back != st.held_back || self.limiter.waiting() > 0 {
                    aimd.record_rate_bound();
                }
                st.held_back = held_back;
                if cause == Cause::Schedule && !window_changed {
                    match aimd.tick(now) {
                        Some(Adjustment::Increase { .. }) => cause = Cause::AdaptiveIncrease,
                        Some(Adjustment::Decrease { cause: why, .. }) => {
                            cause = Cause::AdaptiveDecrease;
                            detail = why.to_string();
                        }
                        None => {}
                    }
                }
                let (rate, reason) = (aimd.rate(), aimd.reason());
                if let Some(g) = st.guard.as_mut() {
                    match cause {
                        Cause::AdaptiveDecrease => g.decreased(),
                        Cause::AdaptiveIncrease => g.increased(),
                        _ => {}
                    }
                }
                self.explain(st, reason.code(), reason.to_string());
                rate
            }
        };
        if let Some(cap) = st.cfg.max_database_share {
            if st
                .capped_at
                .is_some_and(|t| now.saturating_duration_since(t) < CAPPED_FOR)
            {
                let detail = format!(
                    "throttle.max_database_share holds this agent's transactions to {cap:.3} s \
                     of each second ({:.3} over the last {} s), under the rate of {rate}/s",
                    st.busy.share(now),
                    busy::WINDOW.as_secs()
                );
                self.explain(st, "database_share", detail);
            }
        }
        let burst = st.cfg.burst;
        let (old_rate, old_burst) = self.limiter.quota();
        if (rate, burst) == (old_rate, old_burst) {
            return;
        }
        let nz = |v: u32| std::num::NonZeroU32::new(v.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        self.limiter.set_quota(nz(rate), nz(burst));
        metrics::gauge!(m::RATE_CURRENT).set(f64::from(rate));
        metrics::counter!(m::RATE_CHANGES, "cause" => cause.as_str()).increment(1);
        tracing::info!(
            from = old_rate,
            to = rate,
            burst,
            ceiling,
            mode = ?st.cfg.mode,
            cause = cause.as_str(),
            reason = %detail,
            "Rate changed."
        );
    }
}

impl Throttle {
    /// Publishes why the rate is what it is: `sluice_rate_reason{reason}` (1 for the one in
    /// force) and the live figures `status` reads.
    fn explain(&self, st: &mut State, code: &'static str, detail: String) {
        if st.reason != Some(code) {
            if let Some(old) = st.reason {
                metrics::gauge!(m::RATE_REASON, "reason" => old).set(0.0);
            }
            metrics::gauge!(m::RATE_REASON, "reason" => code).set(1.0);
            st.reason = Some(code);
        }
        let e = st.explained.get_or_insert_with(RateExplained::default);
        e.reason = code.to_owned();
        e.detail = detail;
    }
}

/// The probe judge's settings.
pub fn guard_params(cfg: &ThrottleConfig) -> GuardParams {
    let interval = Duration::from_millis(cfg.probe_interval_ms);
    GuardParams {
        ratio: cfg.target_latency_ratio,
        relearn: (cfg.baseline_relearn_minutes > 0)
            .then(|| Duration::from_secs(u64::from(cfg.baseline_relearn_minutes) * 60)),
        quantile: cfg.probe_quantile,
        learn: GuardParams::window_for(interval),
        window: GuardParams::judged_for(interval, cfg.probe_quantile),
        first: GuardParams::first_for(interval),
    }
}

/// The controller's settings for a ceiling (the base rate or a schedule window's).
pub fn aimd_params(cfg: &ThrottleConfig, ceiling: u32) -> AimdParams {
    AimdParams {
        floor: cfg.min_rows_per_second,
        ceiling,
        increase: cfg
            .increase_rows_per_second
            .unwrap_or_else(|| (cfg.rows_per_second / 20).max(1)),
        decrease_factor: cfg.decrease_factor,
        target_commit: Duration::from_millis(cfg.target_commit_ms),
        interval: Duration::from_millis(cfg.adjust_interval_ms),
        max_active_backends: cfg.max_active_backends,
    }
}

/// Ticks the throttle until `stop`: schedule windows, adaptive adjustments, and (when
/// configured) the active-backend poll.
pub async fn run(throttle: Arc<Throttle>, store: Store, stop: CancellationToken) {
    let mut last_poll: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if let Some(every) = throttle.backends_poll_interval() {
            if last_poll.is_none_or(|t| t.elapsed() >= every) {
                last_poll = Some(Instant::now());
                match store.active_backends().await {
                    Ok(n) => throttle.observe_active_backends(n),
                    Err(e) => {
                        tracing::debug!(error = %e, "Cannot count active backends.");
                        throttle.observe_error(&e);
                    }
                }
            }
        }
        throttle.update(LocalTime::now(), Instant::now());
    }
}

#[cfg(test)]
mod tests;
