//! `throttle.photo_bytes_per_second`: photo bytes fetched from S3 per second, a token bucket
//! of bytes beside the row limiter. Its burst is the larger of one second's bytes and one
//! largest photo (20 MiB), so any photo can pass; a fetch takes its photo's declared bytes
//! before it starts. Unset: fetches are not paced (only `photos.max_concurrent_fetches`
//! bounds them).

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::PHOTO_BURST_BYTES;

/// Paces photo fetches by their bytes.
#[derive(Debug)]
pub struct PhotoByteLimiter {
    gcra: Option<DefaultDirectRateLimiter>,
    burst: u32,
}

impl PhotoByteLimiter {
    /// A limiter of `bytes_per_second` (`None`: not limited).
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        let Some(rate) = bytes_per_second else {
            return Self {
                gcra: None,
                burst: 0,
            };
        };
        let rate = u32::try_from(rate).unwrap_or(u32::MAX).max(1);
        let burst = rate.max(u32::try_from(PHOTO_BURST_BYTES).unwrap_or(u32::MAX));
        let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            gcra: Some(RateLimiter::direct(quota)),
            burst,
        }
    }

    /// Waits until `bytes` may be fetched (in burst-sized pieces, so a declared size above the
    /// burst still passes).
    pub async fn acquire(&self, bytes: u64) {
        let Some(gcra) = &self.gcra else {
            return;
        };
        let mut left = bytes;
        while left > 0 {
            let piece = u32::try_from(left).unwrap_or(u32::MAX).min(self.burst);
            let Some(n) = NonZeroU32::new(piece) else {
                return;
            };
            // A piece never exceeds the burst, so it always becomes ready.
            let _ = gcra.until_n_ready(n).await;
            left -= u64::from(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_largest_photo_passes_at_once_and_the_next_waits_for_the_rate() {
        let l = PhotoByteLimiter::new(Some(10 * 1024 * 1024));
        let t = std::time::Instant::now();
        l.acquire(PHOTO_BURST_BYTES).await;
        assert!(t.elapsed() < std::time::Duration::from_millis(200));
        l.acquire(1024 * 1024).await;
        assert!(
            t.elapsed() >= std::time::Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn unset_takes_nothing() {
        PhotoByteLimiter::new(None).acquire(u64::MAX).await;
    }
}
