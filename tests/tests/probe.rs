//! End-to-end tests of the adaptive throttle's foreground probe, with the real `sluice-agent`
//! binary against the real PostgreSQL and SQS-API server: a foreground slowdown the agent's own
//! commits do not see (a lock held on the table the probe reads) brings the rate down, and it
//! climbs again once the lock is gone; a probe that writes or hangs refuses the start; the
//! default probe runs on the read-only connection. Only directions are asserted, never timings.

use std::time::Duration;

use sluice_e2e::gen::Generator;
use sluice_e2e::{wait_for, AgentProcess, TestEnv};

/// Long enough on a loaded 2-core machine; a healthy run takes seconds.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
const RECEIPTS: usize = 30_000;
const FLOOR: f64 = 50.0;
const CEILING: f64 = 1_000.0;

/// `sluice_rate_reason{reason}` is 1 for the reason in force.
async fn reason_is(agent: &AgentProcess, reason: &str) -> bool {
    agent
        .metric("sluice_rate_reason", &[("reason", reason)])
        .await
        .is_some_and(|v| v == 1.0)
}

async fn rate(agent: &AgentProcess) -> Option<f64> {
    agent.metric("sluice_rate_rows_per_second", &[]).await
}

#[tokio::test]
async fn a_lock_on_the_probed_table_brings_the_rate_down_and_it_climbs_once_released(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    sqlx::query("CREATE TABLE public.foreground (id int PRIMARY KEY, note text)")
        .execute(&env.pool)
        .await?;
    sqlx::query("INSERT INTO public.foreground VALUES (1, 'an order')")
        .execute(&env.pool)
        .await?;
    env.upload_acknowledged(
        &mut sluice_e2e::oracle::Oracle::default(),
        &Generator::new(13).receipts(RECEIPTS),
        "100",
    )
    .await?;

    let agent = env
        .launch_agent(
            "agent",
            &format!(
                "[throttle]\nmode = \"adaptive\"\nrows_per_second = {CEILING}\nburst = 1000\n\
                 min_rows_per_second = {FLOOR}\nincrease_rows_per_second = 250\n\
                 adjust_interval_ms = 500\nprobe_interval_ms = 100\nprobe_quantile = 0.95\n\
                 probe_sql = \"SELECT note FROM public.foreground WHERE id = 1\"\n\
                 [batch]\nmax_rows = 100\nmax_wait_ms = 20"
            ),
        )
        .await?;

    // Healthy: the baseline is learned (a pause before the first write) and the rate climbs.
    wait_for(
        PHASE_TIMEOUT,
        "the rate to climb with the probe fast",
        || async { (rate(&agent).await? >= CEILING * 0.75).then_some(()) },
    )
    .await?;
    let baseline = wait_for(PHASE_TIMEOUT, "the probe's baseline", || {
        agent.metric("sluice_probe_baseline_seconds", &[])
    })
    .await?;
    assert!(baseline > 0.0 && baseline < 1.0, "baseline {baseline} s");
    let high = rate(&agent).await.unwrap_or(CEILING);

    // A foreground transaction holds the table the probe reads: the agent's commits stay fast
    // (it writes elsewhere), but the probe waits, and the rate comes down for it.
    let mut lock = env.pool.begin().await?;
    sqlx::query("LOCK TABLE public.foreground IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;
    wait_for(
        PHASE_TIMEOUT,
        "the rate to come down for the probe",
        || async {
            let now = rate(&agent).await?;
            (now < high && reason_is(&agent, "probe_latency").await).then_some(())
        },
    )
    .await?;
    let low = wait_for(PHASE_TIMEOUT, "the rate to reach the floor", || async {
        let now = rate(&agent).await?;
        (now <= FLOOR * 2.0).then_some(now)
    })
    .await?;
    let p99 = agent
        .metric("sluice_probe_latency_seconds", &[("quantile", "0.99")])
        .await
        .unwrap_or_default();
    assert!(p99 > baseline, "the probe's p99 {p99} s shows the wait");
    let status = env
        .agent_cli(&[
            "status",
            "--config",
            agent.config().to_str().unwrap_or_default(),
        ])
        .await?;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("rate reason   probe_latency: backing off: probe p95"),
        "{text}"
    );

    // The lock goes: the probe is fast again and the rate climbs back.
    lock.rollback().await?;
    wait_for(PHASE_TIMEOUT, "the rate to climb again", || async {
        let now = rate(&agent).await?;
        (now > low * 2.0).then_some(())
    })
    .await?;
    assert!(
        !reason_is(&agent, "probe_latency").await,
        "no longer backing off for the probe"
    );

    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_probe_that_writes_or_hangs_refuses_the_start_naming_the_key() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    sqlx::query("CREATE TABLE public.foreground (id int)")
        .execute(&env.pool)
        .await?;
    for (sql, needle) in [
        (
            "INSERT INTO public.foreground VALUES (1)",
            "throttle.probe_sql must be a read-only statement; PostgreSQL refused it: \
             cannot execute INSERT in a read-only transaction",
        ),
        (
            "SELECT pg_sleep(5)",
            "throttle.probe_sql took longer than its 1000 ms statement_timeout",
        ),
        (
            "SELECT * FROM public.missing",
            "throttle.probe_sql failed (42P01): relation \"public.missing\" does not exist",
        ),
    ] {
        let config = env.write_agent_config(
            "refused.toml",
            &format!("[throttle]\nmode = \"adaptive\"\nprobe_sql = {sql:?}"),
        )?;
        let config = config.to_str().unwrap_or_default();
        let out = env.agent_cli(&["run", "--config", config]).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{sql}: {stderr}");
        assert!(stderr.contains("refusing to start"), "{sql}: {stderr}");
        assert!(stderr.contains(needle), "{sql}: {stderr}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM public.foreground")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(rows, 0, "the refused probe wrote nothing");
    Ok(())
}

/// The default probe (`SELECT pg_logical_emit_message(true, 'sluice-probe', '')`: it writes one
/// WAL record, so its commit waits for the WAL flush) runs on the probe's read-only
/// connection: an idle agent in adaptive mode learns its baseline from it, without a probe
/// error.
#[tokio::test]
async fn the_default_probe_runs_read_only_and_learns_a_baseline() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let agent = env
        .launch_agent("agent", "[throttle]\nmode = \"adaptive\"")
        .await?;
    let baseline = wait_for(PHASE_TIMEOUT, "the probe's baseline", || {
        agent.metric("sluice_probe_baseline_seconds", &[])
    })
    .await?;
    assert!(baseline > 0.0 && baseline < 1.0, "baseline {baseline} s");
    assert_eq!(
        agent
            .metric("sluice_probe_errors_total", &[])
            .await
            .unwrap_or(0.0),
        0.0,
        "the default statement is accepted on the read-only connection"
    );
    agent.stop().await?;
    Ok(())
}
