//! Progress reports from the work loops (pollers, writers): a beat per round, or a guard held
//! through a legitimate wait (database outage, rate limit), or through a wait with its own
//! limit (a database write under its timeouts). The watchdog reads it; the loops
//! never touch systemd. Also the test-only fault switch [`STALL_SWITCH`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Progress reports from the work loops, read by the watchdog.
///
/// Loops call [`Liveness::beat`] when they complete a round (a receive returned, a batch was
/// settled or retried). A loop that waits for a legitimate reason holds a [`Waiting`] guard
/// for the duration. A loop that neither beats nor holds a guard is stuck.
#[derive(Debug, Clone)]
pub struct Liveness {
    inner: Arc<LivenessInner>,
}

#[derive(Debug)]
struct LivenessInner {
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last_beat_ms: AtomicU64,
    waiting: AtomicUsize,
    /// Bounded waits in progress: how many, and the latest time (ms since `origin`) any of
    /// them counts as alive until.
    bounded: Mutex<(usize, u64)>,
    /// Set by the test-only [`STALL_SWITCH`]: every report is ignored.
    stalled: AtomicBool,
}

/// TEST ONLY, off by default: when this variable is set in the agent's environment (to any
/// value), the pipeline's progress reports stop reaching the watchdog, as if every loop hung,
/// so systemd's watchdog kills and restarts the agent. The unit never sets it;
/// `make test-systemd` sets it in a drop-in to prove the restart under a real systemd.
pub const STALL_SWITCH: &str = "SLUICE_TEST_STALL_PIPELINE";

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LivenessInner {
                origin: Instant::now(),
                last_beat_ms: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                bounded: Mutex::new((0, 0)),
                stalled: AtomicBool::new(false),
            }),
        }
    }

    /// [`Liveness::new`], stalled when the test-only [`STALL_SWITCH`] is set (said in a
    /// warning).
    pub fn from_env() -> Self {
        let liveness = Self::new();
        if std::env::var_os(STALL_SWITCH).is_some() {
            tracing::warn!(
                switch = STALL_SWITCH,
                "Test-only fault switch set: the pipeline's progress no longer reaches the watchdog."
            );
            liveness.stall();
        }
        liveness
    }

    /// From now on the pipeline counts as stuck, whatever it reports (the test-only switch).
    pub fn stall(&self) {
        self.inner.stalled.store(true, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A loop completed a round.
    pub fn beat(&self) {
        self.inner
            .last_beat_ms
            .fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// A loop starts a wait that must end within `bound` (a database write under its
    /// timeouts): alive while it lasts, but only up to `bound`, so a wait that hangs past its
    /// own limit still stops the watchdog. Dropping the guard counts as a beat.
    pub fn waiting_up_to(&self, bound: Duration) -> Waiting {
        let bound = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        let until = self.now_ms().saturating_add(bound);
        let mut b = self.bounded();
        *b = (b.0 + 1, b.1.max(until));
        drop(b);
        Waiting {
            liveness: self.clone(),
            bounded: true,
        }
    }

    /// A loop starts a legitimate wait (database outage, rate limit); it ends when the guard is
    /// dropped, which also counts as a beat.
    pub fn waiting(&self) -> Waiting {
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            liveness: self.clone(),
            bounded: false,
        }
    }

    fn bounded(&self) -> std::sync::MutexGuard<'_, (usize, u64)> {
        // Two integers: a panic cannot leave them half-updated.
        self.inner
            .bounded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Time since the last beat.
    pub fn since_last_beat(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last_beat_ms.load(Ordering::Relaxed));
        self.inner.origin.elapsed().saturating_sub(last)
    }

    /// Loops currently in a legitimate wait.
    pub fn waiters(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Whether the pipeline counts as alive: it beat within `stale_after`, or some loop is
    /// legitimately waiting.
    pub fn is_alive(&self, stale_after: Duration) -> bool {
        if self.inner.stalled.load(Ordering::Relaxed) {
            return false;
        }
        let (bounded, until) = *self.bounded();
        let in_bounded_wait = bounded > 0 && self.now_ms() < until;
        in_bounded_wait || should_ping(self.since_last_beat(), self.waiters(), stale_after)
    }
}

/// The watchdog's rule, pure for tests.
pub fn should_ping(since_last_beat: Duration, waiters: usize, stale_after: Duration) -> bool {
    waiters > 0 || since_last_beat <= stale_after
}

/// How long without a beat counts as stuck: half the watchdog timeout, but never less than
/// one long poll plus slack (an idle poller beats once per `wait_seconds`).
pub fn stale_after(watchdog: Duration, wait_seconds: u8) -> Duration {
    (watchdog / 2).max(Duration::from_secs(u64::from(wait_seconds)) + Duration::from_secs(10))
}

/// See [`Liveness::waiting`] and [`Liveness::waiting_up_to`].
#[derive(Debug)]
pub struct Waiting {
    liveness: Liveness,
    bounded: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.liveness.beat();
        if self.bounded {
            let mut b = self.liveness.bounded();
            // The last bounded wait to end takes its limit with it.
            *b = match b.0 {
                0 | 1 => (0, 0),
                n => (n - 1, b.1),
            };
        } else {
            self.liveness.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_stops_the_pings_unless_it_is_waiting() {
        let stale = Duration::from_secs(30);
        assert!(should_ping(Duration::from_secs(5), 0, stale));
        assert!(should_ping(Duration::from_secs(30), 0, stale));
        assert!(!should_ping(Duration::from_secs(31), 0, stale));
        assert!(should_ping(Duration::from_secs(600), 1, stale));
    }

    #[test]
    fn stale_after_is_never_shorter_than_a_long_poll() {
        assert_eq!(
            stale_after(Duration::from_secs(60), 20),
            Duration::from_secs(30)
        );
        assert_eq!(
            stale_after(Duration::from_secs(10), 20),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_bounded_wait_counts_only_up_to_its_bound() {
        let l = Liveness::new();
        std::thread::sleep(Duration::from_millis(30));
        let g = l.waiting_up_to(Duration::from_secs(60));
        assert!(l.is_alive(Duration::ZERO), "within its bound");
        drop(g);
        let hung = l.waiting_up_to(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            !l.is_alive(Duration::from_millis(40)),
            "hung past its bound"
        );
        drop(hung);
        assert!(l.is_alive(Duration::from_millis(40)), "its end is a beat");
    }

    #[test]
    fn a_waiting_guard_counts_while_held_and_beats_when_dropped() {
        let l = Liveness::new();
        assert_eq!(l.waiters(), 0);
        let g = l.waiting();
        assert_eq!(l.waiters(), 1);
        assert!(l.is_alive(Duration::ZERO));
        drop(g);
        assert_eq!(l.waiters(), 0);
        assert!(l.since_last_beat() < Duration::from_secs(1));
    }

    #[test]
    fn the_test_only_stall_switch_ignores_beats_and_waits() {
        let l = Liveness::new();
        l.beat();
        let _waiting = l.waiting();
        let _bounded = l.waiting_up_to(Duration::from_secs(60));
        assert!(l.is_alive(Duration::from_secs(60)));
        l.stall();
        l.beat();
        assert!(
            !l.is_alive(Duration::from_secs(60)),
            "stalled whatever it reports"
        );
    }
}
