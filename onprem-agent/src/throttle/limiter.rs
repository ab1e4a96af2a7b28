//! The token bucket: receipts per second with a burst, on governor's GCRA, with a rate that can
//! change while the agent runs (schedules, SIGHUP reload, the adaptive controller).
//!
//! A batch of `n` receipts takes `n` tokens before its transaction starts. Governor can only
//! hand out up to `burst` tokens at once, so larger requests are taken in burst-sized pieces;
//! config validation keeps `burst ≥ batch.max_rows` so a full batch normally goes in one piece.
//!
//! Governor's quota is fixed per limiter, so a new rate means a new limiter, swapped in behind a
//! lock. The swap carries the bucket's level over: the tokens available in the old bucket (at
//! most the new burst) are what the new one starts with. A fresh governor limiter starts full,
//! which would hand out a whole burst at every change — with the adaptive controller adjusting
//! every second, that would be a second rate on top of the configured one. A waiter blocked on
//! the old bucket is woken and waits again on the new one.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::watch;

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One governor limiter and the quota it was built with.
struct Bucket<C: Clock> {
    gcra: Gcra<C>,
    rate: NonZeroU32,
    burst: NonZeroU32,
}

/// Rate limit in receipts (rows) per second; the clock is governor's (a fake one in tests).
pub struct RowLimiter<C: Clock = DefaultClock> {
    clock: C,
    current: RwLock<Arc<Bucket<C>>>,
    /// Bumped on every swap, so a waiter on the old bucket moves to the new one.
    changed: watch::Sender<u64>,
    /// Callers inside [`RowLimiter::acquire`] now: work waiting on the rate.
    waiting: AtomicU32,
}

/// Counts a caller inside `acquire` while it lives.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<C: Clock + Clone> fmt::Debug for RowLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (rate, burst) = self.quota();
        f.debug_struct("RowLimiter")
            .field("rows_per_second", &rate)
            .field("burst", &burst)
            .finish()
    }
}

impl RowLimiter<DefaultClock> {
    pub fn new(rows_per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_clock(rows_per_second, burst, DefaultClock::default())
    }

    /// Waits until `rows` tokens are available and takes them. If the rate changes meanwhile,
    /// the wait goes on at the new rate.
    pub async fn acquire(&self, rows: u32) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let mut left = rows;
        let mut changes = self.changed.subscribe();
        while left > 0 {
            // Subscribed before reading the bucket: a swap after this point wakes the wait.
            changes.borrow_and_update();
            let bucket = self.bucket();
            let Some(n) = NonZeroU32::new(left.min(bucket.burst.get())) else {
                return;
            };
            tokio::select! {
                // `n ≤ burst`, so governor cannot answer InsufficientCapacity.
                _ = bucket.gcra.until_n_ready(n) => left -= n.get(),
                _ = changes.changed() => {}
            }
        }
    }
}

impl<C: Clock + Clone> RowLimiter<C> {
    pub fn with_clock(rows_per_second: NonZeroU32, burst: NonZeroU32, clock: C) -> Self {
        let bucket = Bucket {
            gcra: RateLimiter::direct_with_clock(
                Quota::per_second(rows_per_second).allow_burst(burst),
                clock.clone(),
            ),
            rate: rows_per_second,
            burst,
        };
        Self {
            clock,
            current: RwLock::new(Arc::new(bucket)),
            changed: watch::Sender::new(0),
            waiting: AtomicU32::new(0),
        }
    }

    /// Callers waiting for tokens now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    fn bucket(&self) -> Arc<Bucket<C>> {
        // A poisoned lock only means a panic elsewhere mid-swap; the Arc inside is whole.
        match self.current.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// (rows per second, burst) in force.
    pub fn quota(&self) -> (u32, u32) {
        let b = self.bucket();
        (b.rate.get(), b.burst.get())
    }

    pub fn rows_per_second(&self) -> u32 {
        self.quota().0
    }

    pub fn burst(&self) -> u32 {
        self.quota().1
    }

    /// Takes `rows` tokens if they are all there now (`rows ≤ burst`); otherwise how long until
    /// they would be. Never waits.
    pub fn try_acquire(&self, rows: NonZeroU32) -> Result<(), Duration> {
        let bucket = self.bucket();
        match bucket.gcra.check_n(rows) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More than the burst can never pass at once.
            Err(_) => Err(Duration::MAX),
        }
    }

    /// Switches to a new quota, carrying the bucket's level over (capped at the new burst).
    /// No-op when the quota is unchanged.
    pub fn set_quota(&self, rows_per_second: NonZeroU32, burst: NonZeroU32) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let old = guard.clone();
        if old.rate == rows_per_second && old.burst == burst {
            return;
        }
        let level = self.level(&old);
        let gcra = RateLimiter::direct_with_clock(
            Quota::per_second(rows_per_second).allow_burst(burst),
            self.clock.clone(),
        );
        // A new limiter is full; take away what the old one did not have.
        if let Some(spent) = NonZeroU32::new(burst.get().saturating_sub(level)) {
            let _ = gcra.check_n(spent);
        }
        *guard = Arc::new(Bucket {
            gcra,
            rate: rows_per_second,
            burst,
        });
        drop(guard);
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Tokens available in `bucket` now. Takes them: only for a bucket being replaced.
    fn level(&self, bucket: &Bucket<C>) -> u32 {
        let burst = bucket.burst;
        match bucket.gcra.check_n(burst) {
            Ok(Ok(())) => burst.get(),
            Ok(Err(not_until)) => {
                // GCRA: the whole burst is back after (burst − level) / rate.
                let wait = not_until.wait_time_from(self.clock.now());
                let missing = wait.as_secs_f64() * f64::from(bucket.rate.get());
                let missing = missing.ceil().clamp(0.0, f64::from(burst.get())) as u32;
                burst.get() - missing
            }
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn fake(rate: u32, burst: u32) -> (RowLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            RowLimiter::with_clock(nz(rate), nz(burst), clock.clone()),
            clock,
        )
    }

    #[test]
    fn burst_is_available_at_once_then_tokens_refill_at_the_rate() {
        let (lim, clock) = fake(100, 500);
        assert!(lim.try_acquire(nz(500)).is_ok());
        assert_eq!(
            lim.try_acquire(nz(1)),
            Err(Duration::from_millis(10)),
            "bucket empty: one token every 10 ms"
        );
        clock.advance(Duration::from_millis(1000));
        assert!(lim.try_acquire(nz(100)).is_ok(), "one second refills 100");
        assert!(lim.try_acquire(nz(1)).is_err());
    }

    #[test]
    fn a_request_above_the_burst_can_never_pass_in_one_piece() {
        let (lim, _) = fake(10, 20);
        assert_eq!(lim.try_acquire(nz(21)), Err(Duration::MAX));
    }

    #[test]
    fn committed_rows_stay_within_rate_times_time_plus_burst() {
        // Taking 50-row batches as fast as allowed for 10 simulated seconds at 200/s, burst 300.
        let (lim, clock) = fake(200, 300);
        let mut taken = 0u32;
        for _ in 0..1000 {
            while lim.try_acquire(nz(50)).is_ok() {
                taken += 50;
            }
            clock.advance(Duration::from_millis(10));
        }
        // 10 s × 200 + 300, and no more than one batch short of it.
        assert!(taken <= 2300, "{taken}");
        assert!(taken >= 2250, "{taken}");
    }

    #[test]
    fn a_new_rate_keeps_an_empty_bucket_empty() {
        let (lim, clock) = fake(100, 500);
        assert!(lim.try_acquire(nz(500)).is_ok());
        lim.set_quota(nz(1000), nz(500));
        assert_eq!(lim.rows_per_second(), 1000);
        assert!(
            lim.try_acquire(nz(1)).is_err(),
            "a rate change must not hand out a fresh burst"
        );
        clock.advance(Duration::from_millis(100));
        assert!(lim.try_acquire(nz(100)).is_ok(), "refills at the new rate");
        assert!(lim.try_acquire(nz(1)).is_err());
    }

    #[test]
    fn a_new_rate_carries_a_partly_full_bucket_over() {
        let (lim, clock) = fake(100, 500);
        assert!(lim.try_acquire(nz(500)).is_ok());
        clock.advance(Duration::from_millis(2000)); // 200 tokens back
        lim.set_quota(nz(50), nz(500));
        assert!(lim.try_acquire(nz(200)).is_ok());
        assert!(lim.try_acquire(nz(1)).is_err());
    }

    #[test]
    fn a_smaller_burst_caps_what_is_carried_over() {
        let (lim, _) = fake(100, 500);
        lim.set_quota(nz(100), nz(200));
        assert_eq!(lim.burst(), 200);
        assert!(lim.try_acquire(nz(200)).is_ok());
        assert!(lim.try_acquire(nz(1)).is_err());
    }

    #[tokio::test]
    async fn acquire_splits_requests_larger_than_the_burst() {
        // 1,000 rows/s with a burst of 10: 25 rows need the burst plus 15 refills (15 ms).
        let lim = RowLimiter::new(nz(1000), nz(10));
        let t = std::time::Instant::now();
        lim.acquire(25).await;
        assert!(
            t.elapsed() >= Duration::from_millis(14),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_waiter_moves_to_the_new_rate_when_it_changes() {
        // At 1 row/s the second row would take a second; raised to 1,000/s it comes at once.
        let lim = Arc::new(RowLimiter::new(nz(1), nz(1)));
        lim.acquire(1).await;
        let waiter = tokio::spawn({
            let lim = lim.clone();
            async move { lim.acquire(1).await }
        });
        // Let the waiter start waiting on the 1 row/s bucket.
        tokio::task::yield_now().await;
        lim.set_quota(nz(1000), nz(1));
        tokio::time::timeout(Duration::from_millis(500), waiter)
            .await
            .expect("woken by the new rate")
            .expect("no panic");
    }
}
