//! Tests of `adaptive`.

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn params() -> AimdParams {
    AimdParams {
        floor: 50,
        ceiling: 1000,
        increase: 100,
        decrease_factor: 0.5,
        target_commit: Duration::from_millis(250),
        interval: SEC,
        max_active_backends: Some(8),
    }
}

/// A second of fast commits with batches waiting for the rate.
fn healthy_second(c: &mut Aimd, t: &mut Instant) -> Option<Adjustment> {
    c.record_commit(Duration::from_millis(20));
    c.record_rate_bound();
    *t += SEC;
    c.tick(*t)
}

#[test]
fn it_starts_at_the_floor_and_rises_additively_while_commits_are_fast() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    assert_eq!(c.rate(), 50);
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 50, to: 150 })
    );
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 150, to: 250 })
    );
}

#[test]
fn it_never_rises_above_the_ceiling() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    for _ in 0..30 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.rate(), 1000);
    assert_eq!(
        healthy_second(&mut c, &mut t),
        None,
        "no change at the ceiling"
    );
}

#[test]
fn slow_commits_halve_the_rate_but_never_below_the_floor() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    for _ in 0..10 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.rate(), 1000);
    c.record_commit(Duration::from_millis(200));
    c.record_commit(Duration::from_millis(400));
    t += SEC;
    assert_eq!(
        c.tick(t),
        Some(Adjustment::Decrease {
            from: 1000,
            to: 500,
            cause: Congestion::CommitLatency {
                mean: Duration::from_millis(300)
            }
        })
    );
    for _ in 0..10 {
        c.record_commit(SEC);
        t += SEC;
        c.tick(t);
    }
    assert_eq!(c.rate(), 50);
}

#[test]
fn one_overload_error_backs_off_even_when_commits_are_fast() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    for _ in 0..3 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.rate(), 350);
    c.record_commit(Duration::from_millis(5));
    c.record_overload();
    t += SEC;
    assert_eq!(
        c.tick(t),
        Some(Adjustment::Decrease {
            from: 350,
            to: 175,
            cause: Congestion::Overload { errors: 1 }
        })
    );
}

#[test]
fn too_many_active_backends_back_off_only_when_a_threshold_is_set() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    healthy_second(&mut c, &mut t);
    c.record_active_backends(3);
    c.record_active_backends(9);
    c.record_commit(Duration::from_millis(5));
    t += SEC;
    assert!(matches!(
        c.tick(t),
        Some(Adjustment::Decrease {
            cause: Congestion::ActiveBackends { active: 9 },
            ..
        })
    ));

    let mut unbounded = Aimd::new(
        AimdParams {
            max_active_backends: None,
            ..params()
        },
        t,
    );
    unbounded.record_active_backends(500);
    assert!(matches!(
        healthy_second(&mut unbounded, &mut t),
        Some(Adjustment::Increase { .. })
    ));
}

fn within() -> Verdict {
    Verdict::Within(Reading {
        latency: Duration::from_millis(1),
        quantile: 0.99,
        limit: Duration::from_millis(3),
        baseline: Duration::from_millis(1),
    })
}

#[test]
fn a_probe_breach_backs_off_even_when_commits_are_fast_and_within_lets_it_climb() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    c.record_probe(within());
    assert!(matches!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 50, to: 150 })
    ));
    assert_eq!(c.reason().code(), "climbing");
    let nine = Reading {
        latency: Duration::from_millis(9),
        quantile: 0.99,
        limit: Duration::from_millis(3),
        baseline: Duration::from_millis(1),
    };
    let breach = Verdict::Breach(nine);
    c.record_probe(breach);
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Decrease {
            from: 150,
            to: 75,
            cause: Congestion::ProbeLatency(nine)
        })
    );
    assert_eq!(c.reason().code(), "probe_latency");
    assert_eq!(
        c.reason().to_string(),
        "backing off: probe p99 9.00 ms above its limit 3.00 ms"
    );
}

/// A slight breach cuts the rate by a little more than a quarter, not by half: aimed at the
/// middle of the band where the rate holds, if the delay the agent adds follows its rate. A far
/// one, or a gentler `decrease_factor`, cuts by `decrease_factor`.
#[test]
fn a_probe_breach_cuts_in_proportion_to_how_far_it_is_over() {
    let over = |latency_us: u64| Reading {
        latency: Duration::from_micros(latency_us),
        quantile: 0.99,
        limit: Duration::from_millis(3),
        baseline: Duration::from_millis(1),
    };
    // The limit allows 2 ms above the baseline; the cut aims at 1.5 ms above it.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(
        close(over(3_100).kept_on_cut(0.5), 1.5 / 2.1),
        "just over: near a quarter"
    );
    assert!(close(over(4_000).kept_on_cut(0.5), 0.5), "1.5 / 3.0");
    assert!(close(over(3_500).kept_on_cut(0.5), 0.6), "1.5 / 2.5");
    assert_eq!(
        over(9_000).kept_on_cut(0.5),
        0.5,
        "far over: decrease_factor"
    );
    assert_eq!(over(3_100).kept_on_cut(0.9), 0.9, "a gentler factor wins");

    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    for _ in 0..4 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.rate(), 450);
    c.record_probe(Verdict::Breach(over(3_500)));
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Decrease {
            from: 450,
            to: 270,
            cause: Congestion::ProbeLatency(over(3_500))
        })
    );
    // Other congestion still cuts by decrease_factor.
    c.record_commit(Duration::from_millis(400));
    t += SEC;
    assert!(matches!(
        c.tick(t),
        Some(Adjustment::Decrease {
            from: 270,
            to: 135,
            ..
        })
    ));
}

/// Past halfway from its baseline to its limit the probe is not breaching, but the rate
/// holds there rather than climb into the limit; a breach still cuts.
#[test]
fn near_its_limit_the_probe_holds_the_rate_and_says_so() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    c.record_probe(within());
    healthy_second(&mut c, &mut t);
    assert_eq!(c.rate(), 150);
    let near = Verdict::Near {
        reading: Reading {
            latency: Duration::from_micros(2500),
            quantile: 0.99,
            limit: Duration::from_millis(3),
            baseline: Duration::from_millis(1),
        },
        climb_below: Duration::from_millis(2),
    };
    c.record_probe(near);
    assert_eq!(healthy_second(&mut c, &mut t), None);
    assert_eq!(c.rate(), 150);
    assert_eq!(c.reason().code(), "probe_near_limit");
    assert_eq!(
        c.reason().to_string(),
        "holding: probe p99 2.50 ms within 3.00 ms but above 2.00 ms, where the rate climbs"
    );
    c.record_probe(within());
    assert!(
        healthy_second(&mut c, &mut t).is_some(),
        "well within: climbs"
    );
}

#[test]
fn the_rate_holds_while_the_probe_cannot_judge() {
    for (verdict, code) in [
        (Verdict::Learning, "probe_learning"),
        (Verdict::Settling, "probe_settling"),
        (Verdict::Failing { errors: 3 }, "probe_failing"),
    ] {
        let mut t = Instant::now();
        let mut c = Aimd::new(params(), t);
        c.record_probe(verdict);
        assert_eq!(healthy_second(&mut c, &mut t), None, "{verdict:?}");
        assert_eq!(c.rate(), 50);
        assert_eq!(c.reason().code(), code);
    }
}

#[test]
fn the_reason_names_the_ceiling_and_an_idle_spell() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    assert_eq!(c.reason().code(), "starting");
    for _ in 0..12 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.reason().code(), "ceiling");
    t += SEC;
    c.tick(t);
    assert_eq!(c.reason().code(), "idle");
    c.record_overload();
    c.record_commit(Duration::from_millis(5));
    t += SEC;
    c.tick(t);
    assert_eq!(c.reason().code(), "overload");
    t += SEC;
    c.tick(t);
    c.record_probe(Verdict::Settling);
    c.record_commit(Duration::from_millis(5));
    t += SEC;
    c.tick(t);
    assert_eq!(
        c.reason().code(),
        "overload",
        "a hold after a cut names the cut"
    );
}

#[test]
fn nothing_changes_before_an_interval_has_passed() {
    let t = Instant::now();
    let mut c = Aimd::new(params(), t);
    c.record_overload();
    assert_eq!(c.tick(t + Duration::from_millis(999)), None);
    // The overload seen early still counts at the interval's end.
    assert_eq!(c.tick(t + SEC), None, "already at the floor");
    assert_eq!(c.rate(), 50);
}

#[test]
fn with_no_commits_the_rate_holds() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    healthy_second(&mut c, &mut t);
    for _ in 0..5 {
        t += SEC;
        assert_eq!(c.tick(t), None);
    }
    assert_eq!(c.rate(), 150);
}

#[test]
fn new_bounds_clamp_the_current_rate() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    for _ in 0..5 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.rate(), 550);
    c.set_params(AimdParams {
        ceiling: 200,
        ..params()
    });
    assert_eq!(c.rate(), 200);
    c.set_params(AimdParams {
        floor: 300,
        ceiling: 2000,
        ..params()
    });
    assert_eq!(c.rate(), 300);
}

#[test]
fn a_floor_above_the_ceiling_is_lowered_to_it() {
    let c = Aimd::new(
        AimdParams {
            floor: 500,
            ceiling: 100,
            ..params()
        },
        Instant::now(),
    );
    assert_eq!(c.rate(), 100);
}

#[test]
fn held_back_by_the_share_cap_the_rate_holds_but_congestion_still_cuts_it() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    healthy_second(&mut c, &mut t);
    assert_eq!(c.rate(), 150);
    // Healthy commits, but the writers waited on the cap: no climb.
    c.record_capped();
    assert_eq!(healthy_second(&mut c, &mut t), None);
    assert_eq!((c.rate(), c.reason()), (150, Reason::Capped));
    assert_eq!(c.reason().code(), "database_share");
    // Slow commits still back off, cap or not.
    c.record_capped();
    c.record_commit(Duration::from_millis(900));
    t += SEC;
    assert!(matches!(
        c.tick(t),
        Some(Adjustment::Decrease {
            from: 150,
            to: 75,
            ..
        })
    ));
    // Once the cap stops binding, it climbs again: carefully, as 150/s just hurt.
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 75, to: 100 })
    );
}

#[test]
fn near_the_rate_that_hurt_it_climbs_by_a_quarter_step_until_that_rate_passes_healthily() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    while c.rate() < 650 {
        healthy_second(&mut c, &mut t);
    }
    c.record_commit(Duration::from_millis(900));
    t += SEC;
    assert!(matches!(
        c.tick(t),
        Some(Adjustment::Decrease {
            from: 650,
            to: 325,
            ..
        })
    ));
    // Far below 650/s: full steps.
    let mut climbs = Vec::new();
    while c.rate() < 660 {
        match healthy_second(&mut c, &mut t) {
            Some(Adjustment::Increase { to, .. }) => climbs.push(to),
            other => panic!("a healthy second climbs: {other:?}"),
        }
    }
    // 0.85 × 650 = 552.5: a full step from 425 would reach 525, one from 525 would pass it.
    assert_eq!(climbs, vec![425, 525, 550, 575, 600, 625, 650, 675]);
    // A healthy second above 650/s forgets it: full steps again.
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 675, to: 775 })
    );
    assert_eq!(c.reason().to_string(), "healthy, climbing");
}

#[test]
fn the_reason_names_the_rate_that_hurt_and_the_memory_fades_after_five_minutes() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    for _ in 0..3 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.rate(), 350);
    c.record_overload();
    c.record_commit(Duration::from_millis(20));
    t += SEC;
    c.tick(t);
    assert_eq!(c.rate(), 175);
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 175, to: 275 })
    );
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 275, to: 300 })
    );
    assert_eq!(c.reason().code(), "climbing");
    assert_eq!(
        c.reason().to_string(),
        "healthy, climbing carefully: 350/s, close by, is the rate that last backed off"
    );
    // Idle for five minutes (no commits, no evidence): the memory of 350/s is gone.
    t += HURT_FORGOTTEN;
    assert_eq!(c.tick(t), None);
    assert_eq!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 300, to: 400 })
    );
}

#[test]
fn healthy_but_not_limited_by_the_rate_it_holds_and_a_cut_still_bites() {
    let mut t = Instant::now();
    let mut c = Aimd::new(params(), t);
    for _ in 0..3 {
        healthy_second(&mut c, &mut t);
    }
    assert_eq!(c.rate(), 350);
    // Fast commits, but no batch waited for the rate (the queue or the agent set the pace):
    // the rate holds where the agent last used it, however long this lasts.
    for _ in 0..10 {
        c.record_commit(Duration::from_millis(20));
        t += SEC;
        assert_eq!(c.tick(t), None);
    }
    assert_eq!((c.rate(), c.reason()), (350, Reason::Unused));
    assert_eq!(c.reason().code(), "rate_unused");
    assert_eq!(
        c.reason().to_string(),
        "holding: no batch waited for the rate (the queue, the transaction slots or the agent \
         itself set the pace)"
    );
    // Congestion still cuts, used or not.
    c.record_commit(Duration::from_millis(900));
    t += SEC;
    assert!(matches!(
        c.tick(t),
        Some(Adjustment::Decrease {
            from: 350,
            to: 175,
            ..
        })
    ));
    // Once batches wait for the rate again, it climbs.
    assert!(matches!(
        healthy_second(&mut c, &mut t),
        Some(Adjustment::Increase { from: 175, .. })
    ));
}
