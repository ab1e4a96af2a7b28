//! The adaptive rate controller (`throttle.mode = "adaptive"`): AIMD between a floor and a
//! ceiling, driven by the database's own signals.
//!
//! Every `adjust_interval_ms` the controller looks at what it saw since the last look:
//! - congested — the foreground probe's judged quantile above its limit ([`super::controller`]), an
//!   overload error (too many connections, lock or statement timeout, serialization failure,
//!   deadlock), a mean commit latency above `target_commit_ms`, or more active backends than
//!   `max_active_backends` — multiplies the rate by `decrease_factor` (never below the floor);
//! - healthy, with at least one commit and the probe within its limit — adds
//!   `increase_rows_per_second` (never above the ceiling). With no commits there is no evidence
//!   either way, so the rate stays: an idle agent does not creep up to the ceiling and then hit
//!   a busy database at full speed. Nor does it climb while the probe cannot judge (no
//!   baseline yet, a window refilling after a cut, a failing probe).
//!
//! [`Reason`] says why the rate is what it is, for `status` and `sluice_rate_reason`.
//!
//! It starts at the floor and climbs. Pure logic on injected time ([`Instant`]s passed in), so
//! it is unit-tested without a clock or a database.

use std::fmt;
use std::time::{Duration, Instant};

use super::controller::{Reading, Verdict};

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
    /// Healthy: rising (or at the ceiling).
    Climbing {
        at_ceiling: bool,
    },
    Congested(Congestion),
    /// No commits in the interval: no evidence, the rate holds. (Right after a cut, the cut
    /// stays the reason.)
    Idle,
    /// The probe cannot judge (learning, refilling, failing): the rate holds.
    Holding(Verdict),
}

impl Reason {
    /// Low-cardinality: the `reason` label of `sluice_rate_reason`.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Starting => "starting",
            Reason::Climbing { at_ceiling: true } => "ceiling",
            Reason::Climbing { at_ceiling: false } => "climbing",
            Reason::Congested(c) => c.code(),
            Reason::Idle => "idle",
            Reason::Holding(Verdict::Failing { .. }) => "probe_failing",
            Reason::Holding(Verdict::Settling) => "probe_settling",
            Reason::Holding(_) => "probe_learning",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Starting => write!(f, "starting at the floor"),
            Reason::Climbing { at_ceiling: true } => write!(f, "healthy, at the ceiling"),
            Reason::Climbing { at_ceiling: false } => write!(f, "healthy, climbing"),
            Reason::Congested(c) => write!(f, "backing off: {c}"),
            Reason::Idle => write!(f, "no commits: holding"),
            Reason::Holding(v) => write!(f, "holding: {v}"),
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
}

/// The AIMD controller.
#[derive(Debug, Clone)]
pub struct Aimd {
    params: AimdParams,
    rate: f64,
    seen: Observed,
    last_adjust: Instant,
    reason: Reason,
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
                self.rate =
                    (self.rate * self.params.decrease_factor).max(f64::from(self.params.floor));
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
            None => {
                self.rate = (self.rate + f64::from(self.params.increase))
                    .min(f64::from(self.params.ceiling));
                let to = self.rate();
                self.reason = Reason::Climbing {
                    at_ceiling: to >= self.params.ceiling,
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
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn params() -> AimdParams {
        AimdParams {
            floor: 50,
            ceiling: 1000,
            increase: 100,
            decrease_factor: 0.5,
            target_commit: Duration::from_millis(250),
            interval: SEC,
            max_active_backends: Some(8),
        }
    }

    fn healthy_second(c: &mut Aimd, t: &mut Instant) -> Option<Adjustment> {
        c.record_commit(Duration::from_millis(20));
        *t += SEC;
        c.tick(*t)
    }

    #[test]
    fn it_starts_at_the_floor_and_rises_additively_while_commits_are_fast() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        assert_eq!(c.rate(), 50);
        assert_eq!(
            healthy_second(&mut c, &mut t),
            Some(Adjustment::Increase { from: 50, to: 150 })
        );
        assert_eq!(
            healthy_second(&mut c, &mut t),
            Some(Adjustment::Increase { from: 150, to: 250 })
        );
    }

    #[test]
    fn it_never_rises_above_the_ceiling() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        for _ in 0..30 {
            healthy_second(&mut c, &mut t);
        }
        assert_eq!(c.rate(), 1000);
        assert_eq!(
            healthy_second(&mut c, &mut t),
            None,
            "no change at the ceiling"
        );
    }

    #[test]
    fn slow_commits_halve_the_rate_but_never_below_the_floor() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        for _ in 0..10 {
            healthy_second(&mut c, &mut t);
        }
        assert_eq!(c.rate(), 1000);
        c.record_commit(Duration::from_millis(200));
        c.record_commit(Duration::from_millis(400));
        t += SEC;
        assert_eq!(
            c.tick(t),
            Some(Adjustment::Decrease {
                from: 1000,
                to: 500,
                cause: Congestion::CommitLatency {
                    mean: Duration::from_millis(300)
                }
            })
        );
        for _ in 0..10 {
            c.record_commit(SEC);
            t += SEC;
            c.tick(t);
        }
        assert_eq!(c.rate(), 50);
    }

    #[test]
    fn one_overload_error_backs_off_even_when_commits_are_fast() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        for _ in 0..3 {
            healthy_second(&mut c, &mut t);
        }
        assert_eq!(c.rate(), 350);
        c.record_commit(Duration::from_millis(5));
        c.record_overload();
        t += SEC;
        assert_eq!(
            c.tick(t),
            Some(Adjustment::Decrease {
                from: 350,
                to: 175,
                cause: Congestion::Overload { errors: 1 }
            })
        );
    }

    #[test]
    fn too_many_active_backends_back_off_only_when_a_threshold_is_set() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        healthy_second(&mut c, &mut t);
        c.record_active_backends(3);
        c.record_active_backends(9);
        c.record_commit(Duration::from_millis(5));
        t += SEC;
        assert!(matches!(
            c.tick(t),
            Some(Adjustment::Decrease {
                cause: Congestion::ActiveBackends { active: 9 },
                ..
            })
        ));

        let mut unbounded = Aimd::new(
            AimdParams {
                max_active_backends: None,
                ..params()
            },
            t,
        );
        unbounded.record_active_backends(500);
        assert!(matches!(
            healthy_second(&mut unbounded, &mut t),
            Some(Adjustment::Increase { .. })
        ));
    }

    fn within() -> Verdict {
        Verdict::Within(Reading {
            latency: Duration::from_millis(1),
            quantile: 0.99,
            limit: Duration::from_millis(3),
        })
    }

    #[test]
    fn a_probe_breach_backs_off_even_when_commits_are_fast_and_within_lets_it_climb() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        c.record_probe(within());
        assert!(matches!(
            healthy_second(&mut c, &mut t),
            Some(Adjustment::Increase { from: 50, to: 150 })
        ));
        assert_eq!(c.reason().code(), "climbing");
        let nine = Reading {
            latency: Duration::from_millis(9),
            quantile: 0.99,
            limit: Duration::from_millis(3),
        };
        let breach = Verdict::Breach(nine);
        c.record_probe(breach);
        assert_eq!(
            healthy_second(&mut c, &mut t),
            Some(Adjustment::Decrease {
                from: 150,
                to: 75,
                cause: Congestion::ProbeLatency(nine)
            })
        );
        assert_eq!(c.reason().code(), "probe_latency");
        assert_eq!(
            c.reason().to_string(),
            "backing off: probe p99 9.00 ms above its limit 3.00 ms"
        );
    }

    #[test]
    fn the_rate_holds_while_the_probe_cannot_judge() {
        for (verdict, code) in [
            (Verdict::Learning, "probe_learning"),
            (Verdict::Settling, "probe_settling"),
            (Verdict::Failing { errors: 3 }, "probe_failing"),
        ] {
            let mut t = Instant::now();
            let mut c = Aimd::new(params(), t);
            c.record_probe(verdict);
            assert_eq!(healthy_second(&mut c, &mut t), None, "{verdict:?}");
            assert_eq!(c.rate(), 50);
            assert_eq!(c.reason().code(), code);
        }
    }

    #[test]
    fn the_reason_names_the_ceiling_and_an_idle_spell() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        assert_eq!(c.reason().code(), "starting");
        for _ in 0..12 {
            healthy_second(&mut c, &mut t);
        }
        assert_eq!(c.reason().code(), "ceiling");
        t += SEC;
        c.tick(t);
        assert_eq!(c.reason().code(), "idle");
        c.record_overload();
        c.record_commit(Duration::from_millis(5));
        t += SEC;
        c.tick(t);
        assert_eq!(c.reason().code(), "overload");
        t += SEC;
        c.tick(t);
        c.record_probe(Verdict::Settling);
        c.record_commit(Duration::from_millis(5));
        t += SEC;
        c.tick(t);
        assert_eq!(
            c.reason().code(),
            "overload",
            "a hold after a cut names the cut"
        );
    }

    #[test]
    fn nothing_changes_before_an_interval_has_passed() {
        let t = Instant::now();
        let mut c = Aimd::new(params(), t);
        c.record_overload();
        assert_eq!(c.tick(t + Duration::from_millis(999)), None);
        // The overload seen early still counts at the interval's end.
        assert_eq!(c.tick(t + SEC), None, "already at the floor");
        assert_eq!(c.rate(), 50);
    }

    #[test]
    fn with_no_commits_the_rate_holds() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        healthy_second(&mut c, &mut t);
        for _ in 0..5 {
            t += SEC;
            assert_eq!(c.tick(t), None);
        }
        assert_eq!(c.rate(), 150);
    }

    #[test]
    fn new_bounds_clamp_the_current_rate() {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        for _ in 0..5 {
            healthy_second(&mut c, &mut t);
        }
        assert_eq!(c.rate(), 550);
        c.set_params(AimdParams {
            ceiling: 200,
            ..params()
        });
        assert_eq!(c.rate(), 200);
        c.set_params(AimdParams {
            floor: 300,
            ceiling: 2000,
            ..params()
        });
        assert_eq!(c.rate(), 300);
    }

    #[test]
    fn a_floor_above_the_ceiling_is_lowered_to_it() {
        let c = Aimd::new(
            AimdParams {
                floor: 500,
                ceiling: 100,
                ..params()
            },
            Instant::now(),
        );
        assert_eq!(c.rate(), 100);
    }
}
