//! The agent's share of the database's time: how long its transactions kept its connections
//! busy, per second of wall time, over the last [`WINDOW`]. What the database's other users
//! feel is this share more than the rows per second (the same rows cost more on a busy
//! database), so it is shown beside the rate (`sluice_database_share`, `status`). With two
//! transactions in flight it can pass 1.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the share looks.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The transactions that ended within [`WINDOW`]: when each ended and how long it took.
#[derive(Debug, Default)]
pub struct BusyTime {
    spans: VecDeque<(Instant, Duration)>,
    /// Their total.
    sum: Duration,
}

impl BusyTime {
    /// A transaction that ended at `ended` after `took`.
    pub fn record(&mut self, ended: Instant, took: Duration) {
        self.spans.push_back((ended, took));
        self.sum += took;
        self.forget_before(ended);
    }

    /// Busy seconds per second over the [`WINDOW`] before `now`: the spans ended in it,
    /// each counted whole.
    pub fn share(&mut self, now: Instant) -> f64 {
        self.forget_before(now);
        self.sum.as_secs_f64() / WINDOW.as_secs_f64()
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&(ended, took)) = self.spans.front() {
            if now.saturating_duration_since(ended) <= WINDOW {
                break;
            }
            self.spans.pop_front();
            self.sum = self.sum.saturating_sub(took);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_busy_time_per_second_over_the_window_and_forgets_what_left_it() {
        let t0 = Instant::now();
        let mut busy = BusyTime::default();
        assert_eq!(busy.share(t0), 0.0);
        // 20 transactions of 50 ms over 10 s: 1 s busy in 10 s.
        for i in 1..=20u64 {
            busy.record(
                t0 + Duration::from_millis(500 * i),
                Duration::from_millis(50),
            );
        }
        let at_end = t0 + Duration::from_secs(10);
        assert!(
            (busy.share(at_end) - 0.1).abs() < 1e-9,
            "{}",
            busy.share(at_end)
        );
        // Over five seconds later the first half has left the window.
        let later = at_end + Duration::from_millis(5_250);
        assert!(
            (busy.share(later) - 0.05).abs() < 1e-9,
            "{}",
            busy.share(later)
        );
        // Idle for a whole window: nothing.
        assert_eq!(busy.share(later + WINDOW), 0.0);
    }

    #[test]
    fn two_connections_busy_at_once_count_twice() {
        let t0 = Instant::now();
        let mut busy = BusyTime::default();
        for i in 1..=10u64 {
            let ended = t0 + Duration::from_secs(i);
            busy.record(ended, Duration::from_millis(800));
            busy.record(ended, Duration::from_millis(800));
        }
        let share = busy.share(t0 + Duration::from_secs(10));
        assert!((share - 1.6).abs() < 1e-9, "{share}");
    }
}
