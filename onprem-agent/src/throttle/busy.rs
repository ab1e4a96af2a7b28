//! The agent's share of the database's time: how long its transactions kept its connections
//! busy, per second of wall time, over the last [`WINDOW`]. What the database's other users
//! feel is this share more than the rows per second (the same rows cost more on a busy
//! database), so it is shown beside the rate (`sluice_database_share`, `status`). With two
//! transactions in flight it can pass 1.
//!
//! An operator may cap it (`throttle.max_database_share`): [`BusyBudget`] then holds the next
//! transaction back until the time the last ones took is paid for at the cap.

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

/// The cap on the share (`throttle.max_database_share`), kept as the time the next transaction
/// may start: each transaction, when it ends, moves that time to `took / cap` after its own
/// start (or after the time already set, if later). One transaction at a time then runs
/// `took` out of every `took / cap`; several at once add up the same way. Over any span the
/// agent's transactions take at most `cap` of it, plus what the transactions in flight at its
/// end take; so receipts per second follow the database's speed: when each transaction takes
/// twice as long, half as many start.
#[derive(Debug, Default)]
pub struct BusyBudget {
    next: Option<Instant>,
}

impl BusyBudget {
    /// A transaction that ended at `ended` after `took`, under a cap of `cap` (> 0).
    pub fn charge(&mut self, cap: f64, ended: Instant, took: Duration) {
        let started = ended.checked_sub(took).unwrap_or(ended);
        let from = self.next.map_or(started, |next| next.max(started));
        let owed = Duration::try_from_secs_f64(took.as_secs_f64() / cap).unwrap_or(Duration::MAX);
        self.next = Some(from.checked_add(owed).unwrap_or(from));
    }

    /// How long a transaction must wait at `now`.
    pub fn wait(&self, now: Instant) -> Duration {
        self.next
            .map_or(Duration::ZERO, |next| next.saturating_duration_since(now))
    }

    /// Forgets what is owed: the cap was lifted (a cap set again starts from nothing owed).
    pub fn clear(&mut self) {
        self.next = None;
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

    #[test]
    fn a_capped_budget_starts_fewer_transactions_when_each_takes_longer() {
        // Transactions start as soon as the budget allows and take `took`: how many start in
        // 60 s, and what share of the time they took.
        let run = |took: Duration| {
            let cap = 0.2;
            let t0 = Instant::now();
            let end = t0 + Duration::from_secs(60);
            let mut budget = BusyBudget::default();
            let (mut now, mut started, mut busy) = (t0, 0u32, Duration::ZERO);
            while now < end {
                now += budget.wait(now);
                started += 1;
                now += took;
                busy += took;
                budget.charge(cap, now, took);
            }
            (started, busy.as_secs_f64() / (now - t0).as_secs_f64())
        };
        let (fast, fast_share) = run(Duration::from_millis(10));
        let (slow, slow_share) = run(Duration::from_millis(40));
        assert!((fast_share - 0.2).abs() < 0.01, "{fast_share}");
        assert!((slow_share - 0.2).abs() < 0.01, "{slow_share}");
        // Four times the time per transaction: a quarter of the transactions.
        assert!((fast / 4).abs_diff(slow) <= 2, "{fast} then {slow}");
    }

    #[test]
    fn what_is_owed_is_the_time_taken_over_the_cap_from_the_start_and_never_saved_up() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // In whole milliseconds: the cap divides.
        let wait = |b: &BusyBudget, ms: u64| (b.wait(at(ms)).as_secs_f64() * 1e3).round();
        let mut budget = BusyBudget::default();
        assert_eq!(wait(&budget, 0), 0.0);
        // 50 ms from 0 to 50 at 0.1: the next may start at 500.
        budget.charge(0.1, at(50), Duration::from_millis(50));
        assert_eq!(wait(&budget, 50), 450.0);
        assert_eq!(wait(&budget, 200), 300.0);
        // Two at once, both started at 500: 100 ms each at 0.1 moves it 2 s on.
        budget.charge(0.1, at(600), Duration::from_millis(100));
        budget.charge(0.1, at(600), Duration::from_millis(100));
        assert_eq!(wait(&budget, 600), 1900.0);
        // Idle for long: nothing owed, and no credit saved up for a burst later.
        assert_eq!(wait(&budget, 60_000), 0.0);
        budget.charge(0.1, at(60_010), Duration::from_millis(10));
        assert_eq!(wait(&budget, 60_010), 90.0);
        budget.clear();
        assert_eq!(wait(&budget, 60_010), 0.0);
    }
}
