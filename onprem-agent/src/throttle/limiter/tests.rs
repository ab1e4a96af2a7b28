//! Tests of `limiter`.

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

#[tokio::test]
async fn only_a_call_that_finds_too_few_tokens_counts_as_held_back_by_the_rate() {
    // 1,000 rows/s, a burst of 100: the first 100 rows pass at once, the next 50 wait.
    let lim = RowLimiter::new(nz(1000), nz(100));
    lim.acquire(60).await;
    lim.acquire(40).await;
    assert_eq!(lim.held_back(), 0, "the burst was there");
    lim.acquire(50).await;
    assert_eq!(
        lim.held_back(),
        1,
        "the bucket was empty: the rate held it back"
    );
    // A request taken in several burst-sized pieces counts once.
    lim.acquire(250).await;
    assert_eq!(lim.held_back(), 2);
}
