//! The foreground probe's judgement ([`LatencyGuard`]): a rolling window of the probe's
//! latencies, the baseline learned while the agent does not write, and whether the probe stays
//! within `throttle.target_latency_ratio` × that baseline. The AIMD controller
//! ([`super::adaptive`]) acts on its [`Verdict`]: a breach is congestion (multiplicative
//! decrease), a probe within its limit lets the rate climb, anything else holds it.
//!
//! The baseline: samples taken while the agent is idle — no transaction in flight, none
//! committed in the last [`IDLE_AFTER`], no batch waiting on the limiter — are gathered into
//! learning windows of [`WINDOW_SPAN`] of samples ([`GuardParams::window_for`]); each full
//! window gives its quantile. Windows learned less than [`SPREAD`] after the first of theirs
//! make one *moment* (a pause's windows, or a minute of an idle agent's), whose figure is their
//! median; the baseline is the median of the last [`LEARNED_KEPT`] moments. An agent with no
//! backlog learns on its own; one that drains for long asks for a pause of its writes
//! ([`wants_pause`]: at start, every [`SPREAD`] until it has [`LEARNED_KEPT`] moments, then
//! when no window was learned for `baseline_relearn_minutes`).
//!
//! A learning window is five seconds, so a hundred samples whose p99 is the second slowest: one
//! window alone can learn twice the real baseline, and that baseline then sets the limit for
//! the whole drain. So there is no baseline until [`GuardParams::first`] windows are learned
//! (three, so fifteen seconds, at the default interval; the median of three outvotes one noisy
//! window), and a pause lasts as many windows as are missing ([`LatencyGuard::to_learn`]).
//! That is not enough: the database's idle latency wanders over minutes (a disk that stalls
//! for half a minute, a checkpoint's writes), and windows seconds apart share one moment of
//! it. Beside pgbench on the database's core, per-window p99s ranged 1.0–16 ms within six
//! minutes and the median of three consecutive ones 1.1–10.8 ms, while that of three
//! consecutive ones and four single windows a minute apart stayed within 1.2–2.1 ms wherever
//! it started; in the pinned bench, baselines learned in one start pause ranged 1.1–2.7 ms
//! while the foreground's idle p99 stayed near 2 ms. So the
//! median is over moments a minute apart, not over windows: a moment that fell on a stall is
//! outvoted by the others, and the baseline follows drift of tens of minutes through the
//! re-learning pauses.
//!
//! A window can still fall on a noisy moment (the checkpoint or autovacuum after a burst of
//! writes) and learn twice the real baseline. So every full judged window (each disjoint from
//! the last, [`TAIL_RANK`] samples above its quantile, so steadier than a learning window) also
//! checks what was learned: the database does not answer faster under the agent's load than
//! without it, so a learned window above `ratio` × that judged reading is not an idle baseline
//! and is dropped. With fewer than [`GuardParams::first`] left the rate holds and the agent
//! pauses to learn again (at most once per [`PAUSE_RETRY`]). What stays is always a measured
//! idle figure, never one derived from load.
//!
//! Judging: the probe's reading ([`LatencyGuard::judged`]) against the limit
//! `max(ratio × baseline, baseline + MIN_SLACK)` (the slack keeps a sub-millisecond probe from
//! reacting to scheduler noise). Above the limit is a breach; within it the rate may climb only
//! in the lower part ([`CLIMB_BAND`]), and holds near the limit ([`Verdict::Near`]), so the
//! loop settles below the limit instead of breaching it every cycle. The judged window is
//! [`WINDOW_SPAN`] of samples, or more when the quantile needs it: at least [`TAIL_RANK`]
//! samples lie above the judged quantile ([`GuardParams::judged_for`]), 500 for a p99. The
//! reading is the same statistic as the baseline: the upper median of the
//! `throttle.probe_quantile` (the p99 by default) of each learning window's worth of it (five
//! of 100 for a p99), not the quantile of all 500. The quantile of 500 samples over 25 s
//! catches the disk's occasional stalls, which a five-second window mostly misses: compared
//! with a baseline that was the median of five-second windows, it stood at twice that baseline
//! with the agent at 70/s and pgbench's p99 1.1–1.3 × idle, and the rate crawled at the floor.
//! One stray sample sets the p99 of one window of 100, not the median of five; a probe slow
//! [`TAIL_RANK`] times in a row (a lock, an overload) is judged at once. After a decrease
//! the window is emptied and the guard waits for a fifth of a learning window of fresh samples
//! (at least [`MIN_JUDGED`]), so the rate is cut once per breach, not once per interval while
//! old slow samples are still in the window; until the window is full again, a breach also
//! needs [`TAIL_RANK`] samples above the limit (the p99 of 20 fresh samples is their slowest,
//! and cutting on it took a rate from 550/s to the floor in four seconds in the bench). Before
//! the rate climbs again (after a start, a cut or an increase) a fifth of the judged window
//! must be fresh, so the window has seen a rate before the next step; a breach still cuts at
//! once. Pure logic on injected time.
//!
//! [`wants_pause`]: LatencyGuard::wants_pause

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// How long a span of samples a learning window holds, and the judged window at least.
pub const WINDOW_SPAN: Duration = Duration::from_secs(5);
/// Fewest samples judged (and per learning window), whatever the interval.
pub const WINDOW: usize = 25;
/// Samples the judged window holds above its quantile, at least: the p99 is judged over 500
/// samples, the p95 over 100.
pub const TAIL_RANK: f64 = 5.0;
/// Fewest fresh samples needed before the guard judges (after a start or a decrease); a fifth
/// of a learning window when that is more.
pub const MIN_JUDGED: usize = 5;
/// Moments the baseline is the median of.
pub const LEARNED_KEPT: usize = 5;
/// Windows learned within this long of a moment's first belong to it; a draining agent pauses
/// this often to learn until it has [`LEARNED_KEPT`] moments. Stalls of the disk last tens of
/// seconds: windows a minute apart see different ones.
pub const SPREAD: Duration = Duration::from_secs(60);
/// Windows learned before there is a baseline, at most: a median of three outvotes one noisy
/// window.
pub const FIRST_LEARNED: usize = 3;
/// The longest the windows a first baseline needs may take ([`GuardParams::first_for`]): at a
/// slow probe interval a window alone takes longer, and one window is then enough.
pub const FIRST_SPAN: Duration = Duration::from_secs(15);
/// The smallest margin above the baseline that counts as a breach. 0.5 ms let a trivial
/// probe's p95 reach 1.85 × its baseline while pgbench's p99 beside it reached 4.4 × idle
/// (the bench's adaptive row); 0.2 ms is still above the loopback round trip's jitter.
pub const MIN_SLACK: Duration = Duration::from_micros(200);
/// The agent counts as idle this long after its last commit: a write's effects (WAL flush,
/// dirty buffers) outlive its transaction a little.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);
/// The rate climbs only while the probe's reading is within this fraction of the way from
/// the baseline to the limit (with `target_latency_ratio = 2.0`: up to 1.5 × the baseline);
/// between there and the limit it holds. Climbing until the limit itself kept the probe at its
/// limit, cutting on half of all intervals, and the foreground a fifth above the target
/// (pgbench's p99 2.34 × idle beside a probe held to 2.0 ×): a p99 over a minute is set by
/// the worst moments, and a loop that climbs until it breaches makes one every cycle.
pub const CLIMB_BAND: f64 = 0.5;
/// Where a cut on a breach aims the reading, as a fraction of the way from the baseline to the
/// limit: the middle of the band where the rate holds ([`CLIMB_BAND`] to the limit), so the
/// next readings neither breach again at once nor climb at once ([`Reading::kept_on_cut`]).
/// Halving on every breach, however slight, kept the rate's mean far below the rate that
/// breached: adaptive 2.0 drained 72 % of a fixed rate that held 2.0 × in every pair.
pub const CUT_AIM: f64 = (1.0 + CLIMB_BAND) / 2.0;
/// Between two learning pauses while no baseline could be learned (a failing probe).
pub const PAUSE_RETRY: Duration = Duration::from_secs(60);

/// The guard's settings, from `[throttle]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardParams {
    pub ratio: f64,
    /// `None`: learn only while idle.
    pub relearn: Option<Duration>,
    /// The quantile judged and learned, e.g. 0.99.
    pub quantile: f64,
    /// Samples per learning window: [`GuardParams::window_for`].
    pub learn: usize,
    /// Samples judged: [`GuardParams::judged_for`].
    pub window: usize,
    /// Learning windows there must be before there is a baseline: [`GuardParams::first_for`].
    pub first: usize,
}

impl GuardParams {
    /// Samples in [`WINDOW_SPAN`] at one probe per `interval`, at least [`WINDOW`].
    pub fn window_for(interval: Duration) -> usize {
        let per_span = WINDOW_SPAN.as_millis() / interval.as_millis().max(1);
        usize::try_from(per_span).unwrap_or(usize::MAX).max(WINDOW)
    }

    /// Samples judged at one probe per `interval` for `quantile`: the learning window, or
    /// enough that [`TAIL_RANK`] samples lie above the quantile when that is more.
    pub fn judged_for(interval: Duration, quantile: f64) -> usize {
        let tail = (1.0 - quantile).max(0.001);
        let needed = (TAIL_RANK / tail).ceil() as usize;
        Self::window_for(interval).max(needed)
    }

    /// How long `samples` probes take at one per `interval`.
    pub fn span(interval: Duration, samples: usize) -> Duration {
        interval.saturating_mul(u32::try_from(samples).unwrap_or(u32::MAX))
    }

    /// Learning windows a first baseline needs at one probe per `interval`: [`FIRST_LEARNED`]
    /// when they fit in [`FIRST_SPAN`], fewer (at least one) when they do not, so a start
    /// pause stays short whatever the interval.
    pub fn first_for(interval: Duration) -> usize {
        let window = Self::span(interval, Self::window_for(interval));
        let fit = FIRST_SPAN.as_millis() / window.as_millis().max(1);
        usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .clamp(1, FIRST_LEARNED)
    }

    /// Fresh samples needed before judging (after a start or a cut): a fifth of a learning
    /// window, so a probe slowed to its timeout still judges every few seconds.
    fn min_judged(&self) -> usize {
        (self.learn / 5).max(MIN_JUDGED)
    }

    /// Fresh samples needed before the rate may climb again: a fifth of the judged window.
    fn min_fresh(&self) -> usize {
        (self.window / 5).max(self.min_judged())
    }
}

/// The probe's judged quantile against its limit: what a verdict, and a cut it causes, report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub latency: Duration,
    /// Which quantile `latency` is, e.g. 0.99.
    pub quantile: f64,
    pub limit: Duration,
    /// The baseline the limit was set from.
    pub baseline: Duration,
}

impl Reading {
    /// What a cut on this reading keeps of the rate: the share that, if the delay the agent
    /// adds to the probe (the reading above its baseline) follows its rate, brings the reading
    /// to [`CUT_AIM`] of the way from the baseline to the limit, the middle of the band where
    /// the rate holds. Never below `deepest` (`throttle.decrease_factor`); a breach cuts by
    /// more than a quarter (the reading is above the limit), a reading far above its limit (a
    /// stall, a lock) by `deepest`.
    pub fn kept_on_cut(&self, deepest: f64) -> f64 {
        let allowed = self.limit.saturating_sub(self.baseline).as_secs_f64();
        let added = self.latency.saturating_sub(self.baseline).as_secs_f64();
        let aimed = if added > 0.0 {
            CUT_AIM * allowed / added
        } else {
            deepest
        };
        aimed.min(CUT_AIM).max(deepest)
    }

    /// `probe p99 3.00 ms {relation} 1.50 ms`.
    pub fn show(&self, f: &mut fmt::Formatter<'_>, relation: &str) -> fmt::Result {
        write!(
            f,
            "probe {} {} {relation} {}",
            label(self.quantile),
            ms(self.latency),
            ms(self.limit)
        )
    }
}

/// `p99` for 0.99.
fn label(quantile: f64) -> String {
    format!("p{}", (quantile * 100.0).round())
}

/// What the guard says about the probe now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// No baseline yet.
    Learning,
    /// Too few samples since the start or the last decrease.
    Settling,
    /// The last probe failed (not a timeout: an error); no evidence.
    Failing {
        errors: u32,
    },
    Within(Reading),
    /// Within the limit, but above where the rate may climb ([`CLIMB_BAND`]): the rate holds.
    Near {
        reading: Reading,
        climb_below: Duration,
    },
    Breach(Reading),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Learning => write!(f, "probe baseline not learned yet"),
            Verdict::Settling => write!(f, "probe window refilling"),
            Verdict::Failing { errors } => write!(f, "probe failing ({errors} in a row)"),
            Verdict::Within(reading) => reading.show(f, "within"),
            Verdict::Near {
                reading,
                climb_below,
            } => {
                reading.show(f, "within")?;
                write!(f, " but above {}, where the rate climbs", ms(*climb_below))
            }
            Verdict::Breach(reading) => reading.show(f, "above"),
        }
    }
}

/// `1.25 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Learning windows within [`SPREAD`] of each other: one moment of the database.
#[derive(Debug, Clone)]
struct Moment {
    /// When its first window was learned.
    at: Instant,
    /// Each window's quantile; at most one per [`WINDOW_SPAN`], so a dozen.
    windows: Vec<Duration>,
}

impl Moment {
    fn figure(&self) -> Option<Duration> {
        quantile(&self.windows, 0.5)
    }
}

/// The probe's window, baseline and judgement.
#[derive(Debug, Clone)]
pub struct LatencyGuard {
    params: GuardParams,
    recent: VecDeque<Duration>,
    learning: Vec<Duration>,
    learned: VecDeque<Moment>,
    /// Samples recorded since the judged window last checked the learned ones.
    since_check: usize,
    /// Samples recorded since the last change of rate.
    fresh: usize,
    last_learned: Option<Instant>,
    last_pause: Option<Instant>,
    failures: u32,
    heard: bool,
}

impl LatencyGuard {
    pub fn new(params: GuardParams) -> Self {
        Self {
            recent: VecDeque::with_capacity(params.window),
            learning: Vec::with_capacity(params.learn),
            params,
            learned: VecDeque::with_capacity(LEARNED_KEPT),
            since_check: 0,
            fresh: 0,
            last_learned: None,
            last_pause: None,
            failures: 0,
            heard: false,
        }
    }

    pub fn set_params(&mut self, params: GuardParams) {
        if params.learn != self.params.learn || params.quantile != self.params.quantile {
            // Samples and windows learned at another interval or quantile measure another
            // thing: start over.
            self.recent.clear();
            self.learning.clear();
            self.learned.clear();
            self.since_check = 0;
        }
        self.params = params;
    }

    /// A probe that answered after `latency` (a timeout counts, at the timeout); `idle`: the
    /// agent was idle throughout.
    pub fn record(&mut self, latency: Duration, idle: bool, now: Instant) {
        self.heard = true;
        self.failures = 0;
        while self.recent.len() >= self.params.window {
            self.recent.pop_front();
        }
        self.recent.push_back(latency);
        self.fresh = self.fresh.saturating_add(1);
        self.since_check = self.since_check.saturating_add(1);
        if self.recent.len() >= self.params.window && self.since_check >= self.params.window {
            // A full window none of whose samples an earlier check judged.
            self.since_check = 0;
            self.drop_implausible();
        }
        if !idle {
            return;
        }
        self.learning.push(latency);
        if self.learning.len() >= self.params.learn {
            let learned = quantile(&self.learning, self.params.quantile).unwrap_or_default();
            self.learning.clear();
            match self.learned.back_mut() {
                Some(m) if now.saturating_duration_since(m.at) < SPREAD => m.windows.push(learned),
                _ => {
                    if self.learned.len() == LEARNED_KEPT {
                        self.learned.pop_front();
                    }
                    self.learned.push_back(Moment {
                        at: now,
                        windows: vec![learned],
                    });
                }
            }
            self.last_learned = Some(now);
        }
    }

    /// A probe that failed with an error (not a timeout).
    pub fn record_failure(&mut self) {
        self.heard = true;
        self.failures = self.failures.saturating_add(1);
    }

    /// Has a probe run (or tried to)? Until then the controller goes by its other signals.
    pub fn heard(&self) -> bool {
        self.heard
    }

    /// Drops every learned window above `ratio` × the judged reading: the probe
    /// answered that much faster with the agent writing, so the window learned a noisy
    /// moment, not the idle database.
    fn drop_implausible(&mut self) {
        let Some(judged) = self.judged() else {
            return;
        };
        let most = judged.mul_f64(self.params.ratio.max(1.0));
        for m in &mut self.learned {
            m.windows.retain(|&b| b <= most);
        }
        self.learned.retain(|m| !m.windows.is_empty());
        if self.learned.is_empty() {
            self.last_learned = None;
        }
    }

    /// The median of the learned moments' figures, once [`GuardParams::first`] windows are
    /// learned.
    pub fn baseline(&self) -> Option<Duration> {
        if self.windows() < self.params.first.max(1) {
            return None;
        }
        let figures: Vec<Duration> = self.learned.iter().filter_map(Moment::figure).collect();
        quantile(&figures, 0.5)
    }

    /// Learned windows kept, over all moments.
    fn windows(&self) -> usize {
        self.learned.iter().map(|m| m.windows.len()).sum()
    }

    /// Moments the baseline is the median of.
    pub fn moments(&self) -> usize {
        self.learned.len()
    }

    /// Idle samples a learning pause should take now: the windows a baseline still lacks, or
    /// one window (a new moment) when it has one.
    pub fn to_learn(&self) -> usize {
        let missing = self.params.first.saturating_sub(self.windows()).max(1);
        missing.saturating_mul(self.params.learn)
    }

    /// The judged reading: the upper median of the judged quantile of each learning window's
    /// worth of the most recent samples (the same statistic as a learned window's; with no
    /// full one yet, right after a cut, the quantile of what there is), or the fastest of the
    /// last [`TAIL_RANK`] samples when that is more: a probe slow five times in a row (a lock,
    /// an overload, a probe timing out once a second) is judged at once, not once it has
    /// slowed most of the windows.
    pub fn judged(&self) -> Option<Duration> {
        let q = self.params.quantile;
        let size = self.params.learn.max(1);
        let recent: Vec<Duration> = self.recent.iter().copied().collect();
        let full = recent.len() / size;
        let windows = if full == 0 {
            quantile(&recent, q)?
        } else {
            let newest = &recent[recent.len() - full * size..];
            let mut figures: Vec<Duration> =
                newest.chunks(size).filter_map(|c| quantile(c, q)).collect();
            figures.sort_unstable();
            figures.get(figures.len() / 2).copied()?
        };
        let last_run = recent
            .len()
            .checked_sub(TAIL_RANK as usize)
            .and_then(|from| recent[from..].iter().min().copied());
        Some(last_run.map_or(windows, |r| r.max(windows)))
    }

    /// The `q` quantile of the recent window.
    pub fn recent_quantile(&self, q: f64) -> Option<Duration> {
        let recent: Vec<Duration> = self.recent.iter().copied().collect();
        quantile(&recent, q)
    }

    /// The latency above which the probe is in breach.
    pub fn limit(&self) -> Option<Duration> {
        self.baseline().map(|b| self.limit_over(b))
    }

    /// The limit over `baseline`: `max(ratio × baseline, baseline + MIN_SLACK)`.
    fn limit_over(&self, baseline: Duration) -> Duration {
        let scaled = baseline.mul_f64(self.params.ratio.max(1.0));
        scaled.max(baseline + MIN_SLACK)
    }

    pub fn verdict(&self) -> Verdict {
        if self.failures > 0 {
            return Verdict::Failing {
                errors: self.failures,
            };
        }
        let Some(baseline) = self.baseline() else {
            return Verdict::Learning;
        };
        let limit = self.limit_over(baseline);
        if self.recent.len() < self.params.min_judged() {
            return Verdict::Settling;
        }
        let quantile = self.params.quantile;
        let latency = self.judged().unwrap_or_default();
        let reading = Reading {
            latency,
            quantile,
            limit,
            baseline,
        };
        // A full window's reading above the limit is the upper median of its learning
        // windows' quantiles, so at least half of them hold samples above it (six for the
        // default p99: two in each of three windows of 100), or a run of TAIL_RANK.
        let evidence = self.recent.len() >= self.params.window
            || self.recent.iter().filter(|&&l| l > limit).count() >= TAIL_RANK as usize;
        if latency > limit && evidence {
            Verdict::Breach(reading)
        } else if latency > limit || self.fresh < self.params.min_fresh() {
            // Above the limit on too few samples to tell (right after a cut the p99 of 20
            // is their slowest), or within it on too little of the window since the rate
            // changed.
            Verdict::Settling
        } else {
            let climb_below = baseline + limit.saturating_sub(baseline).mul_f64(CLIMB_BAND);
            if latency > climb_below {
                Verdict::Near {
                    reading,
                    climb_below,
                }
            } else {
                Verdict::Within(reading)
            }
        }
    }

    /// The rate was cut: judge again on fresh samples only.
    pub fn decreased(&mut self) {
        self.recent.clear();
        self.fresh = 0;
    }

    /// The rate went up: no further climb until fresh samples have seen this one.
    pub fn increased(&mut self) {
        self.fresh = 0;
    }

    /// Should the agent pause its writes now to learn the baseline? At start (no baseline),
    /// every [`SPREAD`] while it has fewer than [`LEARNED_KEPT`] moments, and when none was
    /// learned for the relearn period; never more often than [`PAUSE_RETRY`] while learning
    /// keeps failing. With no relearn period (learn only while idle), only at start.
    pub fn wants_pause(&self, now: Instant) -> bool {
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let since_pause = since(self.last_pause);
        if since_pause.is_some_and(|s| s < PAUSE_RETRY) {
            return false;
        }
        match (self.baseline(), self.params.relearn) {
            (None, _) => true,
            (Some(_), Some(every)) => {
                let every = if self.learned.len() < LEARNED_KEPT {
                    every.min(SPREAD)
                } else {
                    every
                };
                since(self.last_learned).is_none_or(|s| s >= every)
                    && since_pause.is_none_or(|s| s >= every)
            }
            (Some(_), None) => false,
        }
    }

    /// A learning pause starts now.
    pub fn pausing(&mut self, now: Instant) {
        self.heard = true;
        self.last_pause = Some(now);
        // The window learned in the pause is made of pause samples only.
        self.learning.clear();
    }
}

/// Nearest-rank quantile; `None` for no samples.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests;
