//! The token bucket: receipts per second with a burst, on governor's GCRA, with a rate that can
//! change while the agent runs (schedules, SIGHUP reload, the adaptive controller).
//!
//! Keeps the guarantee "The database gets at most the configured rate": rows committed stay within
//! rate × time + burst.
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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// Calls of [`RowLimiter::acquire`] that found too few tokens and had to wait: the rate,
    /// not something else, limited them.
    held_back: AtomicU64,
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
        let mut held = false;
        let mut changes = self.changed.subscribe();
        while left > 0 {
            // Subscribed before reading the bucket: a swap after this point wakes the wait.
            changes.borrow_and_update();
            let bucket = self.bucket();
            let Some(n) = NonZeroU32::new(left.min(bucket.burst.get())) else {
                return;
            };
            if let Ok(Ok(())) = bucket.gcra.check_n(n) {
                left -= n.get();
                continue;
            }
            if !held {
                held = true;
                self.held_back.fetch_add(1, Ordering::Relaxed);
            }
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
            held_back: AtomicU64::new(0),
        }
    }

    /// Callers waiting for tokens now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Calls of `acquire` so far that had to wait for tokens (a running count: compare two
    /// readings). Whether the rate is what limits the writers.
    pub fn held_back(&self) -> u64 {
        self.held_back.load(Ordering::Relaxed)
    }

    /// Counts one call held back, as `acquire` does: for tests of what reads the count.
    #[cfg(test)]
    pub fn note_held_back(&self) {
        self.held_back.fetch_add(1, Ordering::Relaxed);
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
mod tests;
