//! Tests of `share`.

use super::*;
use crate::config::ScheduleWindowConfig;

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn shares_of_a_total_add_up_to_it_and_never_fall_below_one() {
    for total in [1u32, 2, 7, 100, 900, 1000, 65_537] {
        for live in 1..=7u32 {
            let parts: Vec<u32> = (0..live)
                .map(|rank| Share { live, rank }.split(total))
                .collect();
            if total >= live {
                assert_eq!(parts.iter().sum::<u32>(), total, "{total} over {live}");
            } else {
                assert!(
                    parts.iter().all(|p| *p == 1),
                    "{total} over {live}: {parts:?}"
                );
            }
            let (min, max) = (parts.iter().min(), parts.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{parts:?}");
        }
    }
    assert_eq!(Share { live: 3, rank: 0 }.split(900), 300);
    assert_eq!(Share { live: 2, rank: 1 }.split(900), 450);
    assert_eq!(Share { live: 3, rank: 0 }.split(1000), 334);
    assert_eq!(Share { live: 3, rank: 2 }.split(1000), 333);
    assert_eq!(Share::ALONE.split(900), 900);
}

#[test]
fn a_share_is_monotone_so_a_split_floor_stays_under_the_split_ceiling() {
    for live in 1..=5u32 {
        for rank in 0..live {
            let s = Share { live, rank };
            for total in 0..200u32 {
                assert!(s.split(total) <= s.split(total + 1));
            }
        }
    }
}

#[test]
fn the_live_set_counts_this_agent_once_and_ranks_by_id() {
    assert_eq!(Share::among(&[], "b"), Share::ALONE);
    assert_eq!(
        Share::among(&ids(&["c", "a"]), "b"),
        Share { live: 3, rank: 1 }
    );
    // Its own row among the others (a heartbeat read back) is not counted twice.
    assert_eq!(
        Share::among(&ids(&["b", "a"]), "b"),
        Share { live: 2, rank: 1 }
    );
    assert_eq!(
        Share::among(&ids(&["a", "a", "c"]), "d"),
        Share { live: 3, rank: 2 }
    );
}

#[test]
fn each_agent_takes_its_part_of_every_budget_figure_but_the_burst() {
    let total = ThrottleConfig {
        rows_per_second: 900,
        burst: 500,
        min_rows_per_second: 90,
        increase_rows_per_second: Some(45),
        max_concurrent_transactions: 4,
        max_active_backends: Some(20),
        max_database_share: Some(0.3),
        schedule: vec![ScheduleWindowConfig {
            days: Some("Mon-Fri".into()),
            hours: Some("08:00-18:00".into()),
            rows_per_second: 300,
        }],
        ..ThrottleConfig::default()
    };
    let mine = Share { live: 3, rank: 0 }.apply(&total);
    assert_eq!(
        (
            mine.rows_per_second,
            mine.burst,
            mine.min_rows_per_second,
            mine.increase_rows_per_second,
            mine.max_concurrent_transactions,
            mine.max_active_backends,
            mine.schedule[0].rows_per_second
        ),
        (300, 500, 30, Some(15), 2, Some(20), 100)
    );
    assert_eq!(
        Share { live: 3, rank: 2 }
            .apply(&total)
            .max_concurrent_transactions,
        1
    );
    // The database's time, shared evenly.
    let cap = mine.max_database_share.unwrap_or_default();
    assert!((cap - 0.1).abs() < 1e-12, "{cap}");
    assert_eq!(Share::ALONE.apply(&total).rows_per_second, 900);
    assert_eq!(Share::ALONE.apply(&total).max_database_share, Some(0.3));
}

const NIGHT: LocalTime = LocalTime {
    weekday: crate::config::schedule::Weekday::Tue,
    minute: 23 * 60,
};

#[tokio::test]
async fn a_new_share_moves_the_rate_and_the_transaction_slots_and_a_reload_keeps_it() {
    let t = Instant::now();
    let total = ThrottleConfig {
        rows_per_second: 900,
        max_concurrent_transactions: 3,
        ..ThrottleConfig::default()
    };
    let th = Throttle::new(&total, NIGHT, t).expect("valid");
    assert_eq!((th.rate(), th.transactions()), (900, 3));
    assert!(th.set_share(Share { live: 3, rank: 1 }, NIGHT, t));
    assert!(
        !th.set_share(Share { live: 3, rank: 1 }, NIGHT, t),
        "unchanged"
    );
    assert_eq!(
        (th.rate(), th.ceiling(), th.total_ceiling()),
        (300, 300, 900)
    );
    assert_eq!((th.transactions(), th.slots().available_permits()), (1, 1));
    let mut more = total.clone();
    more.rows_per_second = 1200;
    th.reload(&more, NIGHT, t).expect("valid");
    assert_eq!(th.rate(), 400, "a reload's total is split too");
    assert!(th.set_share(Share { live: 2, rank: 0 }, NIGHT, t));
    assert_eq!((th.rate(), th.slots().available_permits()), (600, 2));
}

#[test]
fn in_adaptive_mode_the_controller_works_within_its_share_of_floor_and_ceiling() {
    let mut t = Instant::now();
    let total = ThrottleConfig {
        mode: crate::config::ThrottleMode::Adaptive,
        rows_per_second: 900,
        min_rows_per_second: 90,
        increase_rows_per_second: Some(300),
        ..ThrottleConfig::default()
    };
    let th = Throttle::new(&total, NIGHT, t).expect("valid");
    th.set_share(Share { live: 3, rank: 0 }, NIGHT, t);
    assert_eq!(
        (th.rate(), th.ceiling()),
        (90, 300),
        "the rate is kept, within bounds"
    );
    for _ in 0..3 {
        th.observe_error(&crate::io::store::StoreError::Overloaded {
            code: "55P03".into(),
            message: "lock timeout".into(),
        });
        t += Duration::from_secs(1);
        th.update(NIGHT, t);
    }
    assert_eq!(
        th.rate(),
        30,
        "backs off to its share of the floor, no further"
    );
    for _ in 0..5 {
        th.observe_commit(Duration::from_millis(10));
        th.limiter().note_held_back();
        t += Duration::from_secs(1);
        th.update(NIGHT, t);
    }
    assert_eq!(
        th.rate(),
        300,
        "climbs to its share of the ceiling, no further"
    );
    th.set_share(Share { live: 2, rank: 0 }, NIGHT, t);
    assert_eq!(th.ceiling(), 450);
    th.observe_commit(Duration::from_millis(10));
    th.limiter().note_held_back();
    t += Duration::from_secs(1);
    th.update(NIGHT, t);
    assert_eq!(th.rate(), 450);
}
