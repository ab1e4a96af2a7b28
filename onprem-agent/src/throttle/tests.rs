//! Tests of the parent module.

use super::*;
use crate::config::schedule::Weekday;
use crate::config::ScheduleWindowConfig;

fn cfg(mode: ThrottleMode) -> ThrottleConfig {
    ThrottleConfig {
        mode,
        rows_per_second: 1000,
        burst: 1000,
        min_rows_per_second: 100,
        increase_rows_per_second: Some(100),
        schedule: vec![ScheduleWindowConfig {
            days: Some("Mon-Fri".into()),
            hours: Some("08:00-18:00".into()),
            rows_per_second: 300,
        }],
        ..ThrottleConfig::default()
    }
}

const OFFICE: LocalTime = LocalTime {
    weekday: Weekday::Tue,
    minute: 10 * 60,
};
const NIGHT: LocalTime = LocalTime {
    weekday: Weekday::Tue,
    minute: 23 * 60,
};

#[test]
fn a_schedule_window_sets_the_rate_and_leaving_it_restores_the_base_rate() {
    let t = Instant::now();
    let th = Throttle::new(&cfg(ThrottleMode::Fixed), OFFICE, t).expect("valid");
    assert_eq!((th.rate(), th.ceiling()), (300, 300));
    th.update(NIGHT, t);
    assert_eq!(th.rate(), 1000);
    th.update(OFFICE, t);
    assert_eq!(th.rate(), 300);
}

#[tokio::test]
async fn a_reload_applies_the_new_rate_burst_and_transaction_cap() {
    let t = Instant::now();
    let th = Throttle::new(&cfg(ThrottleMode::Fixed), NIGHT, t).expect("valid");
    assert_eq!(th.slots().available_permits(), 1);
    let mut new = cfg(ThrottleMode::Fixed);
    new.rows_per_second = 40;
    new.burst = 2000;
    new.max_concurrent_transactions = 3;
    th.reload(&new, NIGHT, t).expect("valid");
    assert_eq!(th.limiter().quota(), (40, 2000));
    assert_eq!(th.slots().available_permits(), 3);
    new.max_concurrent_transactions = 2;
    th.reload(&new, NIGHT, t).expect("valid");
    assert_eq!(th.slots().available_permits(), 2);
}

#[test]
fn adaptive_mode_starts_at_the_floor_climbs_to_the_scheduled_ceiling_and_backs_off() {
    let mut t = Instant::now();
    let th = Throttle::new(&cfg(ThrottleMode::Adaptive), OFFICE, t).expect("valid");
    assert_eq!((th.rate(), th.ceiling()), (100, 300));
    for _ in 0..5 {
        th.observe_commit(Duration::from_millis(10));
        th.limiter().note_held_back();
        t += Duration::from_secs(1);
        th.update(OFFICE, t);
    }
    assert_eq!(th.rate(), 300, "capped by the schedule window");
    th.observe_error(&StoreError::Overloaded {
        code: "55P03".into(),
        message: "lock timeout".into(),
    });
    t += Duration::from_secs(1);
    th.update(OFFICE, t);
    assert_eq!(th.rate(), 150);
    th.observe_error(&StoreError::Unavailable("connection refused".into()));
    th.observe_commit(Duration::from_millis(10));
    th.limiter().note_held_back();
    t += Duration::from_secs(1);
    th.update(OFFICE, t);
    assert_eq!(th.rate(), 250, "an outage is not overload");
}

#[test]
fn adaptive_climbs_only_while_batches_wait_for_the_rate() {
    let mut t = Instant::now();
    let th = Throttle::new(&cfg(ThrottleMode::Adaptive), NIGHT, t).expect("valid");
    // Fast commits, but no batch was held back by the limiter: the rate is not what limits.
    for _ in 0..3 {
        th.observe_commit(Duration::from_millis(10));
        t += Duration::from_secs(1);
        th.update(NIGHT, t);
    }
    assert_eq!(th.rate(), 100);
    assert_eq!(th.explained().map(|e| e.reason), Some("rate_unused".into()));
    // A batch waited for the rate: it climbs.
    th.observe_commit(Duration::from_millis(10));
    th.limiter().note_held_back();
    t += Duration::from_secs(1);
    th.update(NIGHT, t);
    assert_eq!(th.rate(), 200);
    // The count is compared with the last look: an old wait does not count again.
    th.observe_commit(Duration::from_millis(10));
    t += Duration::from_secs(1);
    th.update(NIGHT, t);
    assert_eq!(th.rate(), 200);
}

#[test]
fn switching_to_fixed_mode_on_reload_goes_straight_to_the_rate() {
    let t = Instant::now();
    let th = Throttle::new(&cfg(ThrottleMode::Adaptive), NIGHT, t).expect("valid");
    assert_eq!(th.rate(), 100);
    th.reload(&cfg(ThrottleMode::Fixed), NIGHT, t)
        .expect("valid");
    assert_eq!(th.rate(), 1000);
}

#[tokio::test]
async fn the_share_cap_holds_writers_back_names_itself_and_lifts_on_reload() {
    let mut capped = cfg(ThrottleMode::Fixed);
    capped.max_database_share = Some(0.1);
    let th = Throttle::new(&capped, NIGHT, Instant::now()).expect("valid");
    // Nothing owed yet: the first transaction goes at once.
    th.within_database_share().await;
    // 100 ms of transaction at 0.1 s per second: the next waits about a second.
    th.observe_commit(Duration::from_millis(100));
    let held = tokio::time::timeout(Duration::from_millis(50), th.within_database_share()).await;
    assert!(held.is_err(), "a writer went on while its time was owed");
    th.update(NIGHT, Instant::now());
    let why = th.explained().expect("explained");
    assert_eq!(why.reason, "database_share", "{why:?}");
    assert!(
        why.detail
            .starts_with("throttle.max_database_share holds this agent's transactions to 0.100 s"),
        "{}",
        why.detail
    );
    assert_eq!(th.rate(), 1000, "the rate stays the ceiling under the cap");

    // The cap lifted by a reload: nothing is owed any more, and the reason is the rate again.
    th.reload(&cfg(ThrottleMode::Fixed), NIGHT, Instant::now())
        .expect("valid");
    tokio::time::timeout(Duration::from_secs(5), th.within_database_share())
        .await
        .expect("no wait without a cap");
    assert_eq!(th.explained().expect("explained").reason, "fixed");
}

#[tokio::test]
async fn without_a_cap_nothing_is_owed() {
    let th = Throttle::new(&cfg(ThrottleMode::Fixed), NIGHT, Instant::now()).expect("valid");
    th.observe_commit(Duration::from_secs(3));
    tokio::time::timeout(Duration::from_secs(5), th.within_database_share())
        .await
        .expect("no wait without a cap");
}
