//! The token bucket: receipts per second with a burst, on governor's GCRA.
//!
//! A batch of `n` receipts takes `n` tokens before its transaction starts. Governor can only
//! hand out up to `burst` tokens at once, so larger requests are taken in burst-sized pieces;
//! config validation keeps `burst ≥ batch.max_rows` so a full batch normally goes in one piece.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Rate limit in receipts (rows) per second.
#[derive(Debug)]
pub struct RowLimiter {
    inner: DefaultDirectRateLimiter,
    rate: NonZeroU32,
    burst: NonZeroU32,
}

impl RowLimiter {
    pub fn new(rows_per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(rows_per_second).allow_burst(burst);
        Self {
            inner: RateLimiter::direct(quota),
            rate: rows_per_second,
            burst,
        }
    }

    pub fn rows_per_second(&self) -> u32 {
        self.rate.get()
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Waits until `rows` tokens are available and takes them.
    pub async fn acquire(&self, rows: u32) {
        let mut left = rows;
        while let Some(n) = NonZeroU32::new(left.min(self.burst.get())) {
            // `n ≤ burst`, so governor cannot answer InsufficientCapacity.
            let _ = self.inner.until_n_ready(n).await;
            left -= n.get();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn burst_is_available_at_once_then_tokens_refill_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let lim = RateLimiter::direct_with_clock(
            Quota::per_second(nz(100)).allow_burst(nz(500)),
            clock.clone(),
        );
        assert!(lim.check_n(nz(500)).expect("fits").is_ok());
        assert!(lim.check_n(nz(1)).expect("fits").is_err(), "bucket empty");
        clock.advance(Duration::from_millis(1000));
        assert!(
            lim.check_n(nz(100)).expect("fits").is_ok(),
            "one second refills 100"
        );
        assert!(lim.check_n(nz(1)).expect("fits").is_err());
    }

    #[test]
    fn a_request_above_the_burst_can_never_pass_in_one_piece() {
        let lim = RateLimiter::direct(Quota::per_second(nz(10)).allow_burst(nz(20)));
        assert!(lim.check_n(nz(21)).is_err());
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
        assert_eq!(lim.burst(), 10);
        assert_eq!(lim.rows_per_second(), 1000);
    }
}
