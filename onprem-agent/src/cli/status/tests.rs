//! Tests of the parent module.

use super::*;

#[test]
fn drain_time_is_backlog_over_rate_and_unknown_when_nothing_drains() {
    assert_eq!(drain_seconds(10_000, Some(500.0)), Some(20.0));
    assert_eq!(drain_seconds(0, None), Some(0.0));
    assert_eq!(drain_seconds(10, Some(0.0)), None);
    assert_eq!(drain_seconds(10, None), None);
    assert_eq!(drain_seconds(10, Some(f64::NAN)), None);
}

#[test]
fn backlog_receipts_are_messages_times_receipts_per_message() {
    assert_eq!(backlog_receipts(120, Some(99.5)), Some(11_940));
    assert_eq!(backlog_receipts(0, None), Some(0));
    assert_eq!(backlog_receipts(5, None), None);
}

#[test]
fn the_agent_rate_is_the_counter_delta_over_time() {
    let t0 = Instant::now();
    let sample = |at, rows_written| Sample {
        at,
        live: LiveStatus {
            rows_written,
            ..LiveStatus::default()
        },
    };
    let a = sample(t0, 1000);
    let b = sample(t0 + Duration::from_secs(2), 2000);
    assert_eq!(b.rate_since(&a), Some(500.0));
    assert_eq!(a.rate_since(&b), None, "time runs forwards");
}

#[test]
fn durations_and_counts_read_like_a_person_wrote_them() {
    assert_eq!(human_duration(12.4), "12s");
    assert_eq!(human_duration(245.0), "4m 05s");
    assert_eq!(human_duration(3720.0), "1h 02m");
    assert_eq!(human_duration(90_000.0), "1d 01h");
    assert_eq!(human_duration(f64::INFINITY), "unknown");
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(1234567), "1,234,567");
    assert_eq!(thousands(100), "100");
}

#[test]
fn a_wildcard_listen_address_is_reached_on_loopback() {
    let a: SocketAddr = "0.0.0.0:9187".parse().expect("addr");
    assert_eq!(reachable(a).to_string(), "127.0.0.1:9187");
    let b: SocketAddr = "10.0.0.5:9187".parse().expect("addr");
    assert_eq!(reachable(b), b);
}

fn status() -> Status {
    Status {
        queue_url: "http://q".into(),
        queue: Depth {
            visible: 100,
            in_flight: 20,
            delayed: 0,
        },
        dead_letter_url: Some("http://dlq".into()),
        dlq: Some(Depth::default()),
        oldest_message_age_seconds: None,
        receipts_per_message: Some(100.0),
        backlog_receipts_estimate: Some(12_000),
        rate: Rate {
            database_receipts_per_second: Some(400.0),
            database_window_seconds: 60,
            agent_receipts_per_second: None,
            limit_rows_per_second: 500.0,
            configured_rows_per_second: 500,
        },
        drain_seconds_at_current_rate: Some(30.0),
        drain_seconds_at_limit: Some(24.0),
        agent: AgentView {
            metrics_url: Some("http://127.0.0.1:9187/metrics".into()),
            reachable: false,
            ready: None,
            conditions: vec![],
            status_reports: None,
            throttle: None,
            rate_share: None,
            database_share: None,
        },
        agents: vec![],
        problems: vec![],
    }
}

#[test]
fn the_screen_names_each_raised_condition_with_its_reason() {
    let mut s = status();
    s.agent.reachable = true;
    s.agent.ready = Some(false);
    s.agent.conditions = vec![Condition {
        name: "dead_letter_unavailable".into(),
        reason: "SendMessage to the DLQ refused: queue does not exist".into(),
    }];
    let text = render(&s);
    assert!(
        text.contains("running, NOT ready (conditions below)"),
        "{text}"
    );
    assert!(
        text.contains(
            "condition     dead_letter_unavailable: SendMessage to the DLQ refused: queue does not exist"
        ),
        "{text}"
    );
}

#[test]
fn the_screen_shows_the_agents_share_of_the_database_time_when_it_answers() {
    let mut s = status();
    assert!(
        !render(&s).contains("db time"),
        "not shown without the agent"
    );
    s.agent.reachable = true;
    s.agent.database_share = Some(0.234);
    let text = render(&s);
    assert!(
        text.contains(
            "db time       234 ms of transactions per second over the last 10 s (23.4% of one \
             connection's time)"
        ),
        "{text}"
    );
}

#[test]
fn the_screen_names_depth_backlog_rate_and_drain_time_as_estimates() {
    let text = render(&status());
    assert!(
        text.contains("120 messages (visible 100, in flight 20, delayed 0)"),
        "{text}"
    );
    assert!(text.contains("≈ 12,000 receipts (estimate"), "{text}");
    assert!(text.contains("400/s stored over the last 60 s"), "{text}");
    assert!(text.contains("limit 500/s"), "{text}");
    assert!(
        text.contains("≈ 30s at the current rate, 24s at the limit"),
        "{text}"
    );
    assert!(text.contains("not answering"), "{text}");
    assert!(text.contains("ApproximateAgeOfOldestMessage"), "{text}");
}
