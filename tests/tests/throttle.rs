//! End-to-end tests of the throttle and of backpressure, with the real `sluice-agent` binary
//! (its own process, so its `/metrics` are its own): a SIGHUP reload applies a new rate, a cap
//! on the database's time holds the agent to it, and a PostgreSQL outage longer than
//! visibility timeout × maxReceiveCount loses nothing and dead-letters nothing.

use std::time::{Duration, Instant};

use sluice_e2e::gen::Generator;
use sluice_e2e::{wait_for, EnvOptions, PrivatePostgres, Signal, TestEnv, MAX_RECEIVE_COUNT};

/// Long enough for a drain on a loaded 2-core CI machine; a healthy run takes seconds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// The agent exits within its grace period (10 s in TestEnv's config) plus one long poll.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Receipts stored, and how many distinct.
async fn stored(env: &TestEnv) -> anyhow::Result<(i64, i64)> {
    Ok(
        sqlx::query_as("SELECT count(*), count(DISTINCT receipt_id) FROM sluice.receipts")
            .fetch_one(&env.pool)
            .await?,
    )
}

#[tokio::test]
async fn sighup_applies_a_new_rate_without_a_restart_and_refuses_an_invalid_file(
) -> anyhow::Result<()> {
    const OLD_RATE: f64 = 50.0;
    const BURST: f64 = 100.0;
    const RECEIPTS: i64 = 4_000;
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50")])
        .await?;
    let (status, answer) = ingest
        .upload_json(&Generator::new(31).receipts(RECEIPTS as usize))
        .await?;
    assert_eq!(status, 202, "{answer}");

    let throttle = |rate: u32, burst: u32| {
        format!(
            "[throttle]\nrows_per_second = {rate}\nburst = {burst}\n\
             [batch]\nmax_rows = 50\nmax_wait_ms = 20\n[log]\nformat = \"json\"\nlevel = \"info\""
        )
    };
    // No token can be taken before the process starts: time counts from here.
    let started = Instant::now();
    let mut agent = env.spawn_agent("agent", &throttle(50, 100))?;
    wait_for(DRAIN_TIMEOUT, "the agent to store receipts", || async {
        (env.count_receipts_or_zero().await >= 50).then_some(())
    })
    .await?;
    let rate = wait_for(Duration::from_secs(10), "the rate metric", || {
        agent.metric("sluice_rate_rows_per_second", &[])
    })
    .await?;
    assert_eq!(rate, OLD_RATE);

    // An invalid file is refused; the agent keeps running at the old rate.
    env.rewrite_agent_config(
        &agent,
        &throttle(50, 100).replace("rows_per_second = 50", "rows_per_second = 0"),
    )?;
    agent.signal(Signal::SIGHUP)?;
    wait_for(
        Duration::from_secs(20),
        "the refused reload in the log",
        || async { agent.log_text().contains("Reload refused").then_some(()) },
    )
    .await?;
    assert!(
        agent
            .log_text()
            .contains("throttle.rows_per_second: must be at least 1"),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        agent.metric("sluice_rate_rows_per_second", &[]).await,
        Some(OLD_RATE)
    );
    let (now, _) = stored(&env).await?;
    let t = started.elapsed().as_secs_f64();
    assert!(
        (now as f64) <= OLD_RATE * t + BURST,
        "{now} receipts after {t:.1} s: over the old rate"
    );

    // A valid one is applied: the new rate shows in the metric and the log, and the backlog
    // drains sooner than the old rate could ever have done it.
    env.rewrite_agent_config(&agent, &throttle(1000, 1000))?;
    agent.signal(Signal::SIGHUP)?;
    wait_for(
        Duration::from_secs(20),
        "the new rate in /metrics",
        || async {
            (agent.metric("sluice_rate_rows_per_second", &[]).await == Some(1000.0)).then_some(())
        },
    )
    .await?;
    let log = agent.log_text();
    assert!(log.contains("Configuration reloaded."), "{log}");
    assert!(log.contains("throttle.rows_per_second: 50 → 1000"), "{log}");
    assert!(log.contains("Rate changed."), "{log}");
    let old_rate_drain = (RECEIPTS as f64 - BURST) / OLD_RATE; // 78 s
    let left = Duration::from_secs_f64(old_rate_drain).saturating_sub(started.elapsed());
    wait_for(left, "every receipt stored at the new rate", || async {
        (env.count_receipts_or_zero().await >= RECEIPTS).then_some(())
    })
    .await?;

    assert_eq!(agent.terminate(STOP_TIMEOUT).await?.code(), Some(0));
    assert_eq!(stored(&env).await?, (RECEIPTS, RECEIPTS));
    Ok(())
}

/// `throttle.max_database_share` on a real drain, with a rate far above what the database
/// takes: the agent's transactions keep to the cap (its measured share of the database's time
/// stays near it, not near what it takes uncapped), `status` and `/metrics` name the cap as the
/// reason, a reload that lifts it lets the rest drain at once, and every receipt is stored once.
#[tokio::test]
async fn a_database_share_cap_holds_the_agents_transactions_to_it_until_a_reload_lifts_it(
) -> anyhow::Result<()> {
    const CAP: f64 = 0.05;
    const RECEIPTS: i64 = 8_000;
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50")])
        .await?;
    let (status, answer) = ingest
        .upload_json(&Generator::new(37).receipts(RECEIPTS as usize))
        .await?;
    assert_eq!(status, 202, "{answer}");
    let config = |cap: &str| {
        format!(
            "[throttle]\nrows_per_second = 100000\nburst = 100000\n{cap}\n\
             [batch]\nmax_rows = 50\nmax_wait_ms = 20\n[log]\nformat = \"json\"\nlevel = \"info\""
        )
    };
    let mut agent = env.spawn_agent("agent", &config(&format!("max_database_share = {CAP}")))?;

    // A full window of the share's into the drain: the cap named as the reason, the share near
    // it (uncapped, this backlog drains in a second or two). A window's share may pass the cap
    // by the length of the transactions in flight at its edges, so the bound leaves room for
    // slow ones on a loaded machine.
    wait_for(DRAIN_TIMEOUT, "the agent to store receipts", || async {
        (env.count_receipts_or_zero().await >= 50).then_some(())
    })
    .await?;
    let mut highest: f64 = 0.0;
    let mut named = false;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        highest = highest.max(
            agent
                .metric("sluice_database_share", &[])
                .await
                .unwrap_or(0.0),
        );
        named |= agent
            .metric("sluice_rate_reason", &[("reason", "database_share")])
            .await
            == Some(1.0);
    }
    let (held, _) = stored(&env).await?;
    assert!(
        held < RECEIPTS,
        "the cap held nothing back: all {held} stored"
    );
    assert!(named, "sluice_rate_reason never named database_share");
    assert!(
        (CAP / 2.0..=3.0 * CAP).contains(&highest),
        "sluice_database_share reached {highest} under a cap of {CAP}"
    );
    let out = env
        .agent_cli(&[
            "status",
            "--json",
            "--config",
            &agent.config().to_string_lossy(),
        ])
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        report["agent"]["throttle"]["reason"], "database_share",
        "{report:#}"
    );
    let detail = report["agent"]["throttle"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail
            .starts_with("throttle.max_database_share holds this agent's transactions to 0.050 s"),
        "{detail}"
    );

    // Lifted by a reload: the reason is the rate again and the rest drains.
    env.rewrite_agent_config(&agent, &config(""))?;
    agent.signal(Signal::SIGHUP)?;
    wait_for(
        DRAIN_TIMEOUT,
        "every receipt stored once the cap is lifted",
        || async { (env.count_receipts_or_zero().await >= RECEIPTS).then_some(()) },
    )
    .await?;
    wait_for(
        Duration::from_secs(10),
        "the reason back to fixed",
        || async {
            (agent
                .metric("sluice_rate_reason", &[("reason", "fixed")])
                .await
                == Some(1.0))
            .then_some(())
        },
    )
    .await?;
    assert!(
        agent.log_text().contains("throttle.max_database_share"),
        "the reload names the lifted key: {}",
        agent.log_text()
    );
    assert_eq!(agent.terminate(STOP_TIMEOUT).await?.code(), Some(0));
    assert_eq!(stored(&env).await?, (RECEIPTS, RECEIPTS));
    Ok(())
}

/// PostgreSQL goes away for longer than visibility timeout × maxReceiveCount (10 s × 3): the
/// agent stops receiving, keeps what it holds invisible (heartbeat) while it retries, and
/// resumes by itself when the database is back. Every receipt is stored exactly once and
/// nothing reaches the DLQ.
#[tokio::test]
async fn a_postgres_outage_longer_than_visibility_times_max_receives_loses_and_dead_letters_nothing(
) -> anyhow::Result<()> {
    const VISIBILITY: u32 = 10;
    const RECEIPTS: i64 = 3_000;
    let outage = Duration::from_secs(u64::from(VISIBILITY * MAX_RECEIVE_COUNT) + 8);
    let pg = PrivatePostgres::start().await?;
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: VISIBILITY,
        database_url: Some(pg.url()),
        ..EnvOptions::default()
    })
    .await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50")])
        .await?;
    let (status, answer) = ingest
        .upload_json(&Generator::new(32).receipts(RECEIPTS as usize))
        .await?;
    assert_eq!(status, 202, "{answer}");

    let mut agent = env.spawn_agent(
        "agent",
        &format!(
            "[queue]\nvisibility_timeout_seconds = {VISIBILITY}\n\
             [database]\nconnect_timeout_seconds = 2\n\
             [throttle]\nrows_per_second = 200\nburst = 200\n\
             [batch]\nmax_rows = 50\nmax_wait_ms = 20\nmax_in_flight_rows = 300\n\
             [log]\nformat = \"json\"\nlevel = \"info\""
        ),
    )?;
    wait_for(DRAIN_TIMEOUT, "the agent to store receipts", || async {
        (env.count_receipts_or_zero().await >= 400).then_some(())
    })
    .await?;

    pg.stop().await?;
    let down_since = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "the agent to see the outage",
        || async { (agent.metric("sluice_database_up", &[]).await == Some(0.0)).then_some(()) },
    )
    .await?;
    // A long poll already under way when the outage was seen may still bring messages in:
    // the baseline is the visible count once it has held still for two seconds.
    let mut last = (env.depth(&env.queue_url).await?.0, Instant::now());
    let visible_at_pause = loop {
        anyhow::ensure!(
            down_since.elapsed() < outage / 2,
            "the agent kept receiving during the outage"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (visible, _, _) = env.depth(&env.queue_url).await?;
        if visible != last.0 {
            last = (visible, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            break visible;
        }
    };
    // Through the rest of the outage: nothing is received (the visible count holds still),
    // nothing is dead-lettered. Sampled once a second until the outage has lasted long enough.
    let mut samples = 0;
    while down_since.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (visible, _, _) = env.depth(&env.queue_url).await?;
        let (dlq, dlq_in_flight, _) = env.depth(&env.dlq_url).await?;
        assert_eq!(
            (dlq, dlq_in_flight),
            (0, 0),
            "dead-lettered during the outage"
        );
        assert_eq!(
            visible,
            visible_at_pause,
            "received during the outage, or a held message came back ({:?} in)",
            down_since.elapsed()
        );
        samples += 1;
    }
    assert!(samples > 15, "the outage was watched ({samples} samples)");
    assert!(
        visible_at_pause > 0,
        "the outage came before the drain ended"
    );

    pg.resume().await?;
    env.wait_drained(RECEIPTS, DRAIN_TIMEOUT).await?;

    let log = agent.log_text();
    assert!(log.contains("PostgreSQL is not taking writes"), "{log}");
    assert!(log.contains("PostgreSQL is taking writes again"), "{log}");
    assert_eq!(agent.terminate(STOP_TIMEOUT).await?.code(), Some(0));
    assert_eq!(stored(&env).await?, (RECEIPTS, RECEIPTS));
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.chunks")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(chunks, RECEIPTS / 50, "one ledger row per chunk");
    let dead = env.drain_dlq().await?;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    Ok(())
}
