//! Tests of `controller`.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn guard() -> LatencyGuard {
    LatencyGuard::new(GuardParams {
        ratio: 1.5,
        relearn: Some(Duration::from_secs(600)),
        quantile: 0.95,
        learn: WINDOW,
        window: WINDOW,
        first: 1,
    })
}

fn feed(g: &mut LatencyGuard, latency: Duration, idle: bool, n: usize, t: &mut Instant) {
    for _ in 0..n {
        *t += Duration::from_millis(200);
        g.record(latency, idle, *t);
    }
}

#[test]
fn quantiles_take_the_nearest_rank() {
    let s: Vec<Duration> = (1..=20).map(|i| MS * i).collect();
    assert_eq!(quantile(&s, 0.5), Some(MS * 10));
    assert_eq!(quantile(&s, 0.95), Some(MS * 19));
    assert_eq!(quantile(&s, 0.99), Some(MS * 20));
    assert_eq!(quantile(&s[..1], 0.0), Some(MS));
    assert_eq!(quantile(&[], 0.5), None);
}

#[test]
fn it_learns_while_idle_and_judges_the_p95_against_ratio_times_baseline() {
    let mut t = Instant::now();
    let mut g = guard();
    assert_eq!(g.verdict(), Verdict::Learning);
    assert!(g.wants_pause(t), "no baseline: pause to learn one");
    feed(&mut g, MS * 2, false, 50, &mut t);
    assert_eq!(g.baseline(), None, "busy samples never teach the baseline");
    feed(&mut g, MS * 2, true, WINDOW, &mut t);
    assert_eq!(g.baseline(), Some(MS * 2));
    assert_eq!(g.limit(), Some(MS * 3));
    assert!(!g.wants_pause(t));
    assert!(matches!(g.verdict(), Verdict::Within(_)));
    feed(&mut g, MS * 4, false, 1, &mut t);
    assert!(
        matches!(g.verdict(), Verdict::Within(_)),
        "1 slow of 25: above the p95"
    );
    feed(&mut g, MS * 4, false, 1, &mut t);
    assert_eq!(
        g.verdict(),
        Verdict::Breach(Reading {
            latency: MS * 4,
            quantile: 0.95,
            limit: MS * 3,
            baseline: MS * 2
        })
    );
}

#[test]
fn after_a_decrease_it_waits_for_fresh_samples() {
    let mut t = Instant::now();
    let mut g = guard();
    feed(&mut g, MS, true, WINDOW, &mut t);
    feed(&mut g, MS * 10, false, WINDOW, &mut t);
    assert!(matches!(g.verdict(), Verdict::Breach(_)));
    g.decreased();
    assert_eq!(g.verdict(), Verdict::Settling);
    feed(&mut g, MS, false, MIN_JUDGED, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)));
}

/// Right after a cut the window holds only a few fresh samples: one slow one among them is
/// their p99, but not yet evidence; five are.
#[test]
fn after_a_cut_a_breach_needs_five_slow_samples_not_one() {
    let mut t = Instant::now();
    let mut g = LatencyGuard::new(p99_of_100());
    feed(&mut g, MS, true, 100, &mut t);
    feed(&mut g, MS * 10, false, 100, &mut t);
    assert!(matches!(g.verdict(), Verdict::Breach(_)));
    g.decreased();
    feed(&mut g, MS, false, 19, &mut t);
    feed(&mut g, MS * 10, false, 1, &mut t);
    assert_eq!(
        g.recent_quantile(0.99),
        Some(MS * 10),
        "the p99 of 20 is its slowest"
    );
    assert_eq!(g.verdict(), Verdict::Settling, "one slow sample: no cut");
    feed(&mut g, MS * 10, false, TAIL_RANK as usize - 1, &mut t);
    assert!(matches!(g.verdict(), Verdict::Breach(_)), "five: a cut");
}

#[test]
fn the_baseline_is_the_median_of_learned_windows_so_one_noisy_window_barely_moves_it() {
    let mut t = Instant::now();
    let mut g = guard();
    for latency in [MS, MS, MS * 50, MS, MS] {
        feed(&mut g, latency, true, WINDOW, &mut t);
    }
    assert_eq!(g.baseline(), Some(MS));
}

/// A pause that learned in a noisy moment: the probe under the agent's load then answers
/// more than `ratio` times faster than that "idle" baseline, which cannot be, so it is
/// dropped and learned again; a baseline the loaded probe only comes near stays.
#[test]
fn a_baseline_the_loaded_probe_beats_by_more_than_the_ratio_is_learned_again() {
    let mut t = Instant::now();
    let mut g = guard();
    feed(&mut g, MS * 5, true, WINDOW, &mut t);
    assert_eq!(g.limit(), Some(Duration::from_micros(7500)));
    feed(&mut g, MS * 4, false, WINDOW, &mut t);
    assert_eq!(
        g.baseline(),
        Some(MS * 5),
        "4 ms × 1.5 is above 5 ms: plausible"
    );
    feed(&mut g, MS * 2, false, WINDOW - 1, &mut t);
    assert_eq!(g.baseline(), Some(MS * 5), "no full window at 2 ms yet");
    feed(&mut g, MS * 2, false, 1, &mut t);
    assert_eq!(g.baseline(), None, "2 ms × 1.5 is below 5 ms");
    assert_eq!(g.verdict(), Verdict::Learning, "the rate holds");
    g.pausing(t);
    assert!(!g.wants_pause(t + Duration::from_secs(59)));
    assert!(
        g.wants_pause(t + PAUSE_RETRY),
        "learned again after a while"
    );
    feed(&mut g, MS * 2, true, WINDOW, &mut t);
    assert_eq!(g.limit(), Some(MS * 3));
    feed(&mut g, MS * 4, false, WINDOW, &mut t);
    assert!(
        matches!(g.verdict(), Verdict::Breach(_)),
        "4 ms: within the noisy limit (7.5 ms), above the one learned again"
    );
}

/// Each check is on a window none of whose samples an earlier check judged: after a cut
/// empties the window, the next one waits for a whole fresh window. Only the implausible
/// learned windows go; the median of the rest stands.
#[test]
fn the_check_judges_whole_disjoint_windows_and_drops_only_what_it_beats() {
    let mut t = Instant::now();
    let mut g = guard();
    for latency in [MS * 3, MS * 4, MS * 4] {
        feed(&mut g, latency, true, WINDOW, &mut t);
    }
    assert_eq!(g.baseline(), Some(MS * 4), "median of 3, 4, 4");
    feed(&mut g, MS * 9, false, WINDOW, &mut t);
    assert_eq!(g.baseline(), Some(MS * 4));
    g.decreased();
    let judged = Duration::from_micros(2500);
    feed(&mut g, judged, false, WINDOW - 1, &mut t);
    assert_eq!(g.baseline(), Some(MS * 4));
    feed(&mut g, judged, false, 1, &mut t);
    assert_eq!(
        g.baseline(),
        Some(MS * 3),
        "2.5 ms × 1.5 drops both 4 ms windows; the 3 ms one stays"
    );
}

#[test]
fn a_sub_millisecond_probe_needs_more_than_scheduler_noise_to_breach() {
    let mut t = Instant::now();
    let mut g = guard();
    let fast = Duration::from_micros(100);
    feed(&mut g, fast, true, WINDOW, &mut t);
    assert_eq!(g.limit(), Some(fast + MIN_SLACK));
    feed(&mut g, Duration::from_micros(280), false, WINDOW, &mut t);
    assert!(
        matches!(g.verdict(), Verdict::Near { .. }),
        "within the limit (past halfway: holds)"
    );
    feed(&mut g, Duration::from_micros(500), false, WINDOW, &mut t);
    assert!(matches!(g.verdict(), Verdict::Breach(_)));
}

#[test]
fn failures_hold_and_a_timed_answer_clears_them() {
    let mut t = Instant::now();
    let mut g = guard();
    feed(&mut g, MS, true, WINDOW, &mut t);
    g.record_failure();
    g.record_failure();
    assert_eq!(g.verdict(), Verdict::Failing { errors: 2 });
    feed(&mut g, MS, false, 1, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)));
}

#[test]
fn it_relearns_after_the_period_and_retries_a_failed_pause_only_after_a_while() {
    let mut t = Instant::now();
    let mut g = guard();
    g.pausing(t);
    assert!(!g.wants_pause(t + Duration::from_secs(30)), "retry later");
    assert!(g.wants_pause(t + PAUSE_RETRY));
    feed(&mut g, MS, true, WINDOW, &mut t);
    assert!(!g.wants_pause(t + Duration::from_secs(59)));
    assert!(
        g.wants_pause(t + SPREAD),
        "one moment: pause again a minute on"
    );
    for _ in 1..LEARNED_KEPT {
        t += SPREAD;
        g.pausing(t);
        feed(&mut g, MS, true, WINDOW, &mut t);
    }
    assert_eq!(g.moments(), LEARNED_KEPT);
    assert!(!g.wants_pause(t + Duration::from_secs(599)));
    assert!(g.wants_pause(t + Duration::from_secs(600)));
    let mut idle_only = LatencyGuard::new(GuardParams {
        relearn: None,
        ..guard().params
    });
    feed(&mut idle_only, MS, true, WINDOW, &mut t);
    assert!(!idle_only.wants_pause(t + Duration::from_secs(86_400)));
}

#[test]
fn the_window_spans_five_seconds_of_samples_at_least_twenty_five() {
    assert_eq!(GuardParams::window_for(Duration::from_millis(50)), 100);
    assert_eq!(GuardParams::window_for(Duration::from_millis(20)), 250);
    assert_eq!(GuardParams::window_for(Duration::from_millis(200)), WINDOW);
    assert_eq!(GuardParams::window_for(Duration::from_secs(1)), WINDOW);
    assert_eq!(label(0.99), "p99");
    assert_eq!(label(0.95), "p95");
}

/// The p99 judged over, and learned over, a hundred samples.
fn p99_of_100() -> GuardParams {
    GuardParams {
        quantile: 0.99,
        learn: 100,
        window: 100,
        ..guard().params
    }
}

/// The p99 of a hundred samples sees what touches one in fifty: the tail a foreground
/// client's p99 feels, which a p95 misses.
#[test]
fn judging_the_p99_over_a_hundred_samples_catches_a_tail_the_p95_misses() {
    let mut t = Instant::now();
    let mut g = LatencyGuard::new(p99_of_100());
    feed(&mut g, MS, true, 100, &mut t);
    assert_eq!(g.baseline(), Some(MS));
    feed(&mut g, MS, false, 99, &mut t);
    feed(&mut g, MS * 5, false, 1, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)), "1 in 100");
    feed(&mut g, MS * 5, false, 1, &mut t);
    assert_eq!(
        g.verdict(),
        Verdict::Breach(Reading {
            latency: MS * 5,
            quantile: 0.99,
            limit: Duration::from_micros(1500),
            baseline: MS
        }),
        "2 in 100: the p99"
    );
    assert_eq!(g.recent_quantile(0.95), Some(MS), "the p95 never saw it");
    assert_eq!(g.verdict().to_string(), "probe p99 5.00 ms above 1.50 ms");
    g.decreased();
    feed(&mut g, MS, false, 19, &mut t);
    assert_eq!(
        g.verdict(),
        Verdict::Settling,
        "a fifth of the window first"
    );
    feed(&mut g, MS, false, 1, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)));
}

#[test]
fn the_judged_window_holds_five_samples_above_its_quantile() {
    let ms = Duration::from_millis;
    assert_eq!(GuardParams::judged_for(ms(50), 0.99), 500, "25 s at 20/s");
    assert_eq!(GuardParams::judged_for(ms(20), 0.99), 500, "10 s at 50/s");
    assert_eq!(GuardParams::judged_for(ms(200), 0.95), 100);
    assert_eq!(GuardParams::judged_for(ms(200), 0.5), WINDOW);
    assert_eq!(
        GuardParams::judged_for(ms(10), 0.95),
        500,
        "five seconds' worth when that is more"
    );
}

/// After a climb, the window still holds samples of the lower rate: no further climb
/// until a fifth of it has seen the new one, but a breach cuts at once.
#[test]
fn after_an_increase_it_climbs_again_only_on_fresh_samples_but_cuts_at_once() {
    let mut t = Instant::now();
    let mut g = guard();
    feed(&mut g, MS, true, WINDOW, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)));
    g.increased();
    assert_eq!(
        g.verdict(),
        Verdict::Settling,
        "nothing seen at the new rate"
    );
    feed(&mut g, MS, false, MIN_JUDGED - 1, &mut t);
    assert_eq!(g.verdict(), Verdict::Settling);
    feed(&mut g, MS, false, 1, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)));
    g.increased();
    feed(&mut g, MS * 10, false, 2, &mut t);
    assert!(
        matches!(g.verdict(), Verdict::Breach(_)),
        "two slow of 25 breach the p95 before the window refreshed"
    );
}

#[test]
fn a_reload_to_another_quantile_or_interval_learns_again() {
    let mut t = Instant::now();
    let mut g = guard();
    feed(&mut g, MS, true, WINDOW, &mut t);
    assert_eq!(g.baseline(), Some(MS));
    g.set_params(GuardParams {
        ratio: 2.0,
        ..guard().params
    });
    assert_eq!(g.baseline(), Some(MS), "a new ratio keeps what was learned");
    g.set_params(p99_of_100());
    assert_eq!(g.baseline(), None, "another statistic: learned again");
    assert!(g.wants_pause(t));
}

#[test]
fn a_first_baseline_needs_three_windows_when_they_fit_in_fifteen_seconds() {
    let ms = Duration::from_millis;
    assert_eq!(GuardParams::first_for(ms(50)), 3, "3 × 5 s");
    assert_eq!(GuardParams::first_for(ms(20)), 3);
    assert_eq!(GuardParams::first_for(ms(200)), 3, "3 × 25 samples × 0.2 s");
    assert_eq!(GuardParams::first_for(ms(300)), 2, "2 × 7.5 s");
    assert_eq!(GuardParams::first_for(ms(1000)), 1, "one window is 25 s");
    assert_eq!(GuardParams::first_for(Duration::from_secs(10)), 1);
}

/// [`guard`], with no baseline until three windows are learned (the default interval's).
fn guard_of_three() -> LatencyGuard {
    LatencyGuard::new(GuardParams {
        first: FIRST_LEARNED,
        ..guard().params
    })
}

/// One noisy learning window (the start pause fell on a checkpoint) no longer sets the limit
/// for the whole drain: there is no baseline until three are learned, the pause asks for all
/// three, and their median outvotes the noisy one.
#[test]
fn the_first_baseline_is_the_median_of_three_windows_so_a_noisy_one_does_not_set_it() {
    let mut t = Instant::now();
    let mut g = guard_of_three();
    assert!(g.wants_pause(t));
    assert_eq!(g.to_learn(), 3 * WINDOW, "the pause learns three windows");
    feed(&mut g, MS, true, WINDOW, &mut t);
    assert_eq!(g.baseline(), None, "one window is no baseline");
    assert_eq!(g.verdict(), Verdict::Learning);
    assert_eq!(g.to_learn(), 2 * WINDOW, "the two missing");
    feed(&mut g, MS, true, WINDOW, &mut t);
    feed(&mut g, MS * 3, true, WINDOW, &mut t);
    assert_eq!(g.baseline(), Some(MS), "median of 1, 1, 3 ms");
    assert_eq!(g.to_learn(), WINDOW, "re-learning adds one window");
    assert!(!g.wants_pause(t));
}

/// When the check drops learned windows and fewer than the first baseline needs are left,
/// there is no baseline: the rate holds and the next pause learns the missing ones.
#[test]
fn dropping_below_the_first_windows_learns_the_missing_ones_again() {
    let mut t = Instant::now();
    let mut g = guard_of_three();
    for latency in [MS, MS * 5, MS * 5] {
        feed(&mut g, latency, true, WINDOW, &mut t);
    }
    assert_eq!(g.baseline(), Some(MS * 5));
    feed(&mut g, MS * 2, false, WINDOW, &mut t);
    assert_eq!(
        g.baseline(),
        None,
        "2 ms × 1.5 beats both 5 ms windows; one is left"
    );
    assert_eq!(g.verdict(), Verdict::Learning, "the rate holds");
    assert!(g.wants_pause(t));
    assert_eq!(g.to_learn(), 2 * WINDOW);
}

/// Within the limit (1.5 × 2 ms = 3 ms) the rate may climb only up to halfway there (2.5 ms);
/// above that the verdict is `Near`, which holds; above the limit, a breach.
#[test]
fn past_halfway_to_the_limit_the_verdict_is_near_not_within() {
    let mut t = Instant::now();
    let mut g = guard();
    feed(&mut g, MS * 2, true, WINDOW, &mut t);
    assert_eq!(g.limit(), Some(MS * 3));
    feed(&mut g, Duration::from_micros(2400), false, WINDOW, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)), "2.4 ms: climbs");
    feed(&mut g, Duration::from_micros(2800), false, WINDOW, &mut t);
    assert_eq!(
        g.verdict(),
        Verdict::Near {
            reading: Reading {
                latency: Duration::from_micros(2800),
                quantile: 0.95,
                limit: MS * 3,
                baseline: MS * 2
            },
            climb_below: Duration::from_micros(2500)
        }
    );
    feed(&mut g, MS * 4, false, WINDOW, &mut t);
    assert!(matches!(g.verdict(), Verdict::Breach(_)));
}

/// Learns one window in a pause at each of `figures`, a minute apart.
fn moments_of(g: &mut LatencyGuard, figures: &[Duration], t: &mut Instant) {
    for &f in figures {
        *t += SPREAD;
        assert!(g.wants_pause(*t), "a pause is due");
        g.pausing(*t);
        feed(g, f, true, WINDOW, t);
    }
}

/// The start pause fell on a slow minute of the disk (its three windows agree on 2 ms: they
/// share one moment). Windows learned a minute apart afterwards outvote it, and windows within
/// a minute of each other count as one moment, not as votes of their own. (With a ratio of 2,
/// so that the check against the judged window, which drops what the probe beats by more than
/// the ratio, leaves the slow moment to the median.)
#[test]
fn a_start_pause_on_a_slow_minute_is_outvoted_by_moments_a_minute_apart() {
    let mut t = Instant::now();
    let mut g = LatencyGuard::new(GuardParams {
        ratio: 2.0,
        ..guard_of_three().params
    });
    let us = Duration::from_micros;
    for latency in [us(2000), us(2100), us(2000)] {
        feed(&mut g, latency, true, WINDOW, &mut t);
    }
    assert_eq!(g.moments(), 1, "fifteen seconds of windows: one moment");
    assert_eq!(g.baseline(), Some(us(2000)));
    moments_of(&mut g, &[us(1200)], &mut t);
    assert_eq!(g.baseline(), Some(us(1200)), "the lower of two");
    moments_of(&mut g, &[us(1400), us(1100)], &mut t);
    assert_eq!(g.moments(), 4);
    assert_eq!(
        g.baseline(),
        Some(us(1200)),
        "median of 2, 1.2, 1.4, 1.1 ms"
    );
    moments_of(&mut g, &[us(1300)], &mut t);
    assert_eq!(g.baseline(), Some(us(1300)));
    assert!(
        !g.wants_pause(t + SPREAD),
        "five moments: the relearn period"
    );
    t += Duration::from_secs(600) - SPREAD;
    moments_of(&mut g, &[us(1100)], &mut t);
    assert_eq!(g.moments(), LEARNED_KEPT, "the oldest moment goes");
    assert_eq!(g.baseline(), Some(us(1200)), "1.2, 1.4, 1.1, 1.3, 1.1 ms");
}

/// An idle agent learns a window every five seconds on its own: a minute of them is one
/// moment, whose figure is their median.
#[test]
fn windows_within_a_minute_are_one_moment_with_their_median() {
    let mut t = Instant::now();
    let mut g = guard();
    for latency in [MS, MS * 5, MS * 5, MS, MS] {
        feed(&mut g, latency, true, WINDOW, &mut t);
    }
    assert_eq!(g.moments(), 1);
    assert_eq!(g.baseline(), Some(MS));
    feed(&mut g, MS * 5, true, WINDOW * 8, &mut t);
    assert_eq!(g.moments(), 2, "past a minute: a new moment");
}

/// The p99 judged over 500 samples, learned over 100: the default interval's.
fn p99_of_500_in_windows_of_100() -> LatencyGuard {
    LatencyGuard::new(GuardParams {
        ratio: 2.0,
        quantile: 0.99,
        learn: 100,
        window: 500,
        ..guard().params
    })
}

/// The reading is the same statistic as the baseline, the median of five-second windows'
/// p99s: a stall of the disk that slows a few probes in one window of five leaves it where it
/// was (the p99 of all 500 would be the stall's), a slowdown in most windows is a breach.
#[test]
fn the_reading_is_the_median_of_windows_p99s_like_the_baseline() {
    let mut t = Instant::now();
    let mut g = p99_of_500_in_windows_of_100();
    feed(&mut g, MS, true, 100, &mut t);
    assert_eq!(g.limit(), Some(MS * 2));
    feed(&mut g, Duration::from_micros(1200), false, 300, &mut t);
    for _ in 0..6 {
        feed(&mut g, MS * 10, false, 1, &mut t);
        feed(&mut g, Duration::from_micros(1200), false, 15, &mut t);
    }
    feed(&mut g, Duration::from_micros(1200), false, 4, &mut t);
    assert_eq!(g.recent_quantile(0.99), Some(MS * 10), "the p99 of all 500");
    assert_eq!(g.judged(), Some(Duration::from_micros(1200)));
    assert!(
        matches!(g.verdict(), Verdict::Within(_)),
        "one stall: climbs"
    );
    assert_eq!(
        g.baseline(),
        Some(MS),
        "nor does the check drop the baseline"
    );
    for _ in 0..3 {
        feed(&mut g, Duration::from_micros(1200), false, 97, &mut t);
        feed(&mut g, MS * 3, false, 3, &mut t);
    }
    assert_eq!(g.judged(), Some(MS * 3), "three windows of five slowed");
    assert!(matches!(g.verdict(), Verdict::Breach(_)));
    feed(&mut g, Duration::from_micros(1200), false, 500, &mut t);
    assert!(matches!(g.verdict(), Verdict::Within(_)));
    feed(&mut g, MS * 4, false, TAIL_RANK as usize, &mut t);
    assert_eq!(g.judged(), Some(MS * 4), "slow five times in a row");
    assert!(matches!(g.verdict(), Verdict::Breach(_)), "cuts at once");
}
