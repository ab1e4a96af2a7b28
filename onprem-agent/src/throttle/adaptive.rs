//! The adaptive rate controller (`throttle.mode = "adaptive"`): AIMD between a floor and a
//! ceiling, driven by the database's own signals.
//!
//! Every `adjust_interval_ms` the controller looks at what it saw since the last look:
//! - congested — the foreground probe's judged quantile above its limit
//!   ([`super::controller`]), an overload error (too many connections, lock or statement
//!   timeout, serialization failure, deadlock), a mean commit latency above `target_commit_ms`,
//!   or more active backends than `max_active_backends` — multiplies the rate by
//!   `decrease_factor` (never below the floor); a probe breach cuts in proportion to how far
//!   the reading is over its limit ([`Reading::kept_on_cut`]: by a little more than a quarter
//!   when just over, by `decrease_factor` at most), as Gradient2 scales its limit by how far
//!   its latency is from its target: the delay the agent adds follows its rate, and halving on
//!   a slight breach spends most of the cycle far below the rate the database bears;
//! - healthy, with at least one commit and the probe well within its limit (in the lower half
//!   between its baseline and its limit; nearer the limit the rate holds) — adds
//!   `increase_rows_per_second` (never above the ceiling). With no commits there is no evidence
//!   either way, so the rate stays: an idle agent does not creep up to the ceiling and then hit
//!   a busy database at full speed. Nor does it climb while the probe cannot judge (no
//!   baseline yet, a window refilling after a cut, a failing probe), nor while the rate is not
//!   what limits the writers (no batch had to wait for the rate since the last look: the
//!   queue, the transaction slots or the agent itself set the pace). A rate climbed far above
//!   what the agent drains would take several cuts to bite once the foreground suffers.
//!
//! [`Reason`] says why the rate is what it is, for `status` and `sluice_rate_reason`.
//!
//! It remembers the rate that last hurt (the rate a cut came from): within [`HURT_NEAR`] of it
//! the rate climbs by a quarter step, so it spends little time at the rate that breached rather
//! than overshooting it every cycle. The memory goes once the rate has passed that rate
//! healthily (the load changed), or after [`HURT_FORGOTTEN`].
//!
//! It starts at the floor and climbs. Pure logic on injected time ([`Instant`]s passed in), so
//! it is unit-tested without a clock or a database.

use std::fmt;
use std::time::{Duration, Instant};

use super::controller::{Reading, Verdict};

/// Within this fraction of the rate that last hurt, the rate climbs carefully.
pub const HURT_NEAR: f64 = 0.85;
/// Near the rate that last hurt, a climb is this fraction of `increase_rows_per_second`.
pub const CAREFUL_STEP: f64 = 0.25;
/// The rate that hurt is forgotten this long after the cut: the load has had time to change.
pub const HURT_FORGOTTEN: Duration = Duration::from_secs(300);

/// The controller's settings, from `[throttle]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AimdParams {
    pub floor: u32,
    pub ceiling: u32,
    pub increase: u32,
    pub decrease_factor: f64,
    pub target_commit: Duration,
    pub interval: Duration,
    pub max_active_backends: Option<u32>,
}

/// Why the rate went down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Congestion {
    ProbeLatency(Reading),
    Overload { errors: u32 },
    CommitLatency { mean: Duration },
    ActiveBackends { active: u32 },
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Congestion::ProbeLatency(reading) => reading.show(f, "above its limit"),
            Congestion::Overload { errors } => write!(f, "{errors} overload error(s)"),
            Congestion::CommitLatency { mean } => {
                write!(f, "mean commit latency {} ms", mean.as_millis())
            }
            Congestion::ActiveBackends { active } => write!(f, "{active} active backends"),
        }
    }
}

impl Congestion {
    pub fn code(&self) -> &'static str {
        match self {
            Congestion::ProbeLatency(_) => "probe_latency",
            Congestion::Overload { .. } => "overload",
            Congestion::CommitLatency { .. } => "commit_latency",
            Congestion::ActiveBackends { .. } => "active_backends",
        }
    }
}

/// Why the rate is what it is after the controller's latest look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// No look yet: the controller starts at the floor.
    Starting,
    /// Healthy: rising (or at the ceiling); `near_hurt`: by a careful step, close to the rate
    /// that last hurt.
    Climbing {
        at_ceiling: bool,
        near_hurt: Option<u32>,
    },
    Congested(Congestion),
    /// No commits in the interval: no evidence, the rate holds. (Right after a cut, the cut
    /// stays the reason.)
    Idle,
    /// The probe cannot judge (learning, refilling, failing): the rate holds.
    Holding(Verdict),
    /// Healthy, but `throttle.max_database_share` held the writers back: the rate was not what
    /// limited them, so it holds rather than climb to a level never tried.
    Capped,
    /// Healthy, but no batch waited for the rate: something else sets the pace, so the rate
    /// holds rather than climb to a level never tried.
    Unused,
}

impl Reason {
    /// Low-cardinality: the `reason` label of `sluice_rate_reason`.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Starting => "starting",
            Reason::Climbing {
                at_ceiling: true, ..
            } => "ceiling",
            Reason::Climbing {
                at_ceiling: false, ..
            } => "climbing",
            Reason::Congested(c) => c.code(),
            Reason::Idle => "idle",
            Reason::Holding(Verdict::Failing { .. }) => "probe_failing",
            Reason::Holding(Verdict::Settling) => "probe_settling",
            Reason::Holding(Verdict::Near { .. }) => "probe_near_limit",
            Reason::Holding(_) => "probe_learning",
            Reason::Capped => "database_share",
            Reason::Unused => "rate_unused",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Starting => write!(f, "starting at the floor"),
            Reason::Climbing {
                at_ceiling: true, ..
            } => write!(f, "healthy, at the ceiling"),
            Reason::Climbing {
                at_ceiling: false,
                near_hurt: Some(hurt),
            } => write!(
                f,
                "healthy, climbing carefully: {hurt}/s, close by, is the rate that last backed off"
            ),
            Reason::Climbing {
                at_ceiling: false,
                near_hurt: None,
            } => write!(f, "healthy, climbing"),
            Reason::Congested(c) => write!(f, "backing off: {c}"),
            Reason::Idle => write!(f, "no commits: holding"),
            Reason::Holding(v) => write!(f, "holding: {v}"),
            Reason::Capped => write!(f, "holding: throttle.max_database_share binds first"),
            Reason::Unused => write!(
                f,
                "holding: no batch waited for the rate (the queue, the transaction slots or the \
                 agent itself set the pace)"
            ),
        }
    }
}

/// A change the controller made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adjustment {
    Increase {
        from: u32,
        to: u32,
    },
    Decrease {
        from: u32,
        to: u32,
        cause: Congestion,
    },
}

/// What was seen since the last adjustment.
#[derive(Debug, Clone, Copy, Default)]
struct Observed {
    commits: u32,
    latency_sum: Duration,
    overloads: u32,
    max_active: Option<u32>,
    /// The probe's latest verdict; `None` without a probe.
    probe: Option<Verdict>,
    /// Writers waited on `throttle.max_database_share`.
    capped: bool,
    /// A batch waited for the rate: the rate is what limits the writers.
    rate_bound: bool,
}

/// The AIMD controller.
#[derive(Debug, Clone)]
pub struct Aimd {
    params: AimdParams,
    rate: f64,
    seen: Observed,
    last_adjust: Instant,
    reason: Reason,
    /// The rate a cut came from, and when.
    hurt: Option<(f64, Instant)>,
}

impl Aimd {
    /// Starts at the floor; the first adjustment comes one interval after `now`.
    pub fn new(params: AimdParams, now: Instant) -> Self {
        let params = sanitize(params);
        Self {
            rate: f64::from(params.floor),
            params,
            seen: Observed::default(),
            last_adjust: now,
            reason: Reason::Starting,
            hurt: None,
        }
    }

    /// The current rate in rows per second.
    pub fn rate(&self) -> u32 {
        to_u32(self.rate)
    }

    /// New settings (a reload, or a schedule window that moved the ceiling). The current rate
    /// is kept, clamped into the new bounds.
    pub fn set_params(&mut self, params: AimdParams) {
        self.params = sanitize(params);
        self.rate = self
            .rate
            .clamp(f64::from(self.params.floor), f64::from(self.params.ceiling));
    }

    pub fn record_commit(&mut self, latency: Duration) {
        self.seen.commits += 1;
        self.seen.latency_sum += latency;
    }

    pub fn record_overload(&mut self) {
        self.seen.overloads += 1;
    }

    pub fn record_active_backends(&mut self, active: u32) {
        self.seen.max_active = Some(self.seen.max_active.map_or(active, |m| m.max(active)));
    }

    /// Writers waited on `throttle.max_database_share`: the rate did not limit them.
    pub fn record_capped(&mut self) {
        self.seen.capped = true;
    }

    /// A batch waited for the rate: it is what limits the writers, and may climb.
    pub fn record_rate_bound(&mut self) {
        self.seen.rate_bound = true;
    }

    /// The foreground probe's verdict now (the latest one counts at the interval's end).
    pub fn record_probe(&mut self, verdict: Verdict) {
        self.seen.probe = Some(verdict);
    }

    /// Why the rate is what it is.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Adjusts the rate if an interval has passed since the last adjustment; returns the
    /// change, if the rate (in whole rows per second) moved.
    pub fn tick(&mut self, now: Instant) -> Option<Adjustment> {
        if now.saturating_duration_since(self.last_adjust) < self.params.interval {
            return None;
        }
        self.last_adjust = now;
        let seen = std::mem::take(&mut self.seen);
        let from = self.rate();
        let probe_holds = seen
            .probe
            .filter(|v| !matches!(v, Verdict::Within(_) | Verdict::Breach(_)));
        match self.congestion(&seen) {
            Some(cause) => {
                self.reason = Reason::Congested(cause);
                self.hurt = Some((self.rate, now));
                let deepest = self.params.decrease_factor;
                let kept = match cause {
                    Congestion::ProbeLatency(reading) => reading.kept_on_cut(deepest),
                    _ => deepest,
                };
                self.rate = (self.rate * kept).max(f64::from(self.params.floor));
                let to = self.rate();
                (to != from).then_some(Adjustment::Decrease { from, to, cause })
            }
            // A hold right after a cut (no commit yet at the lower rate, the probe's window
            // refilling) keeps naming the cut: it is still why the rate is what it is.
            None if seen.commits == 0 => {
                if !matches!(self.reason, Reason::Congested(_)) {
                    self.reason = Reason::Idle;
                }
                None
            }
            None if probe_holds.is_some() => {
                let settling = probe_holds == Some(Verdict::Settling);
                if !(settling && matches!(self.reason, Reason::Congested(_))) {
                    self.reason = probe_holds.map_or(Reason::Idle, Reason::Holding);
                }
                None
            }
            None if seen.capped => {
                self.reason = Reason::Capped;
                None
            }
            None if !seen.rate_bound => {
                self.reason = Reason::Unused;
                None
            }
            None => {
                // Healthy above the rate that hurt, or long after: the load has changed.
                self.hurt = self.hurt.filter(|&(hurt, at)| {
                    self.rate <= hurt && now.saturating_duration_since(at) < HURT_FORGOTTEN
                });
                let step = f64::from(self.params.increase);
                let near_hurt = self
                    .hurt
                    .map(|(hurt, _)| hurt)
                    .filter(|&hurt| self.rate + step > HURT_NEAR * hurt);
                let step = if near_hurt.is_some() {
                    (step * CAREFUL_STEP).max(1.0)
                } else {
                    step
                };
                self.rate = (self.rate + step).min(f64::from(self.params.ceiling));
                let to = self.rate();
                self.reason = Reason::Climbing {
                    at_ceiling: to >= self.params.ceiling,
                    near_hurt: near_hurt.map(to_u32),
                };
                (to != from).then_some(Adjustment::Increase { from, to })
            }
        }
    }

    fn congestion(&self, seen: &Observed) -> Option<Congestion> {
        if let Some(Verdict::Breach(reading)) = seen.probe {
            return Some(Congestion::ProbeLatency(reading));
        }
        if seen.overloads > 0 {
            return Some(Congestion::Overload {
                errors: seen.overloads,
            });
        }
        if seen.commits > 0 {
            let mean = seen.latency_sum / seen.commits;
            if mean > self.params.target_commit {
                return Some(Congestion::CommitLatency { mean });
            }
        }
        match (seen.max_active, self.params.max_active_backends) {
            (Some(active), Some(max)) if active > max => {
                Some(Congestion::ActiveBackends { active })
            }
            _ => None,
        }
    }
}

/// Keeps the maths well defined whatever the caller passes (validation refuses these anyway).
fn sanitize(mut p: AimdParams) -> AimdParams {
    p.ceiling = p.ceiling.max(1);
    p.floor = p.floor.clamp(1, p.ceiling);
    p.increase = p.increase.max(1);
    if !(p.decrease_factor > 0.0 && p.decrease_factor < 1.0) {
        p.decrease_factor = 0.5;
    }
    p
}

fn to_u32(rate: f64) -> u32 {
    // `rate` stays within [floor, ceiling] ⊂ [1, u32::MAX].
    rate.round().clamp(1.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests;
