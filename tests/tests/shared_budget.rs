//! End to end: several agents, one budget. Three `sluice-agent` processes on one queue and one
//! database with `throttle.rows_per_second = 900` store 900 receipts/s together, each taking a
//! third; after one is killed (-9), the two left take half each within seconds and again store
//! 900/s together; nothing is lost or written twice. Rates are measured by the database's clock
//! from `receipts.ingested_at` over 30 s windows taken after each rebalance, on a backlog large
//! enough that no agent ever waits for work. A second test checks the live set's rules against
//! the database's clock with a row no agent heartbeats for.

use std::time::Duration;

use serde_json::Value;
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::shared_budget::{fleet_toml, wait_live};
use sluice_e2e::{wait_for, AgentProcess, Signal, TestEnv};

const TOTAL: u32 = 900;
/// ± 5 % of the total.
const TOLERANCE: f64 = 0.05;
const WINDOW: Duration = Duration::from_secs(30);
/// After a kill the two left must be back at the total within this.
const REBALANCE: Duration = Duration::from_secs(10);
/// About 80 s at the total rate, with a margin: startup, two windows, the rebalance.
const BACKLOG: usize = 90_000;
/// Generous for a loaded 2-core machine: agents start, see each other, drain the rest.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Drains the rest quickly (a reload raises the total, and it is split as well), then judges
/// the whole run: everything acknowledged stored once, nothing dead-lettered.
async fn drain_the_rest(
    env: &TestEnv,
    agents: &[AgentProcess],
    oracle: &Oracle,
) -> anyhow::Result<()> {
    for a in agents {
        env.rewrite_agent_config(a, &fleet_toml(100_000))?;
        a.signal(Signal::SIGHUP)?;
    }
    env.wait_drained(oracle.acknowledged() as i64, TIMEOUT)
        .await?;
    let dead = oracle.verify(env).await?;
    assert!(dead.is_empty(), "nothing is dead-lettered: {dead:?}");
    Ok(())
}

fn assert_near_total(rate: f64, what: &str) {
    let total = f64::from(TOTAL);
    eprintln!("{what}: {rate:.1} receipts/s (configured total {TOTAL})");
    assert!(
        (rate - total).abs() <= total * TOLERANCE,
        "{what}: {rate:.1} receipts/s stored, configured total {TOTAL} ± {:.0} %",
        TOLERANCE * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_agents_share_one_budget_and_two_take_it_over_when_one_is_killed(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut oracle = Oracle::new();
    let receipts = Generator::new(14).receipts(BACKLOG);
    env.upload_acknowledged(&mut oracle, &receipts, "100")
        .await?;
    drop(receipts);

    let mut agents = env.launch_fleet("agent", 3, &fleet_toml(TOTAL)).await?;
    wait_live(&agents.iter().collect::<Vec<_>>(), 3, TIMEOUT).await?;
    for a in &agents {
        assert_eq!(
            a.metric("sluice_rate_rows_per_second", &[]).await,
            Some(f64::from(TOTAL / 3)),
            "each of three takes a third; log:\n{}",
            a.log_text()
        );
        let share = a.metric("sluice_rate_share", &[]).await.unwrap_or_default();
        assert!(
            (share - 1.0 / 3.0).abs() < 1e-3,
            "sluice_rate_share {share}"
        );
        assert!(
            a.log_text().contains("Budget share changed."),
            "{}",
            a.log_text()
        );
    }
    // The first second after a share changes may spend a bucket's burst: start after it.
    let from = env.db_now().await? + 2.0;
    let together = env.stored_rate(from, WINDOW).await?;
    assert_near_total(together, "three agents together");

    let mut killed = agents.pop().expect("three agents");
    killed.kill().await?;
    let killed_at = env.db_now().await?;
    let survivors: Vec<_> = agents.iter().collect();
    wait_live(&survivors, 2, REBALANCE).await?;
    for a in &survivors {
        assert_eq!(
            a.metric("sluice_rate_rows_per_second", &[]).await,
            Some(f64::from(TOTAL / 2)),
            "each of two takes half"
        );
    }
    let after = env
        .stored_rate(killed_at + REBALANCE.as_secs_f64(), WINDOW)
        .await?;
    assert_near_total(after, "the two agents left, from 10 s after the kill");

    // `status` lists the two live agents with their shares, and the killed one as gone.
    let out = env
        .agent_cli(&[
            "status",
            "--json",
            "--config",
            &agents[0].config().to_string_lossy(),
        ])
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let listed = report["agents"].as_array().cloned().unwrap_or_default();
    let live: Vec<_> = listed.iter().filter(|a| a["live"] == true).collect();
    assert_eq!((listed.len(), live.len()), (3, 2), "{report:#}");
    assert!(
        live.iter().all(|a| a["share_rows_per_second"] == 450),
        "{report:#}"
    );
    let share = report["agent"]["rate_share"].as_f64().unwrap_or_default();
    assert!((share - 0.5).abs() < 1e-3, "{report:#}");
    // Mid-drain, its share of the database's time (its transactions' seconds per second over
    // the last 10 s) is shown by status and by /metrics.
    let db_time = report["agent"]["database_share"]
        .as_f64()
        .unwrap_or_default();
    assert!(db_time > 0.0 && db_time < 1.0, "{report:#}");
    let metric = agents[0]
        .metric("sluice_database_share", &[])
        .await
        .unwrap_or_default();
    assert!(
        metric > 0.0 && metric < 1.0,
        "sluice_database_share {metric}"
    );

    drain_the_rest(&env, &agents, &oracle).await?;

    // A clean stop leaves the table at once; the killed agent's row stays until pruned.
    for a in agents {
        a.stop().await?;
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.agents")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(left, 1, "only the killed agent's row is left");
    Ok(())
}

/// A row of the agents table nobody heartbeats for: another host's agent, as the others see it.
const GHOST: &str = "00000000-0000-4000-8000-000000000001";

async fn ghost_heartbeat(env: &TestEnv, age: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO sluice.agents (agent_id, host, pid, heartbeat_at) \
         VALUES ($1::uuid, 'ghost', 1, now() - $2::interval) \
         ON CONFLICT (agent_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
    )
    .bind(GHOST)
    .bind(age)
    .execute(&env.pool)
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_set_is_judged_by_the_database_clock_and_long_expired_rows_are_pruned(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let agent = env.launch_agent("agent", &fleet_toml(TOTAL)).await?;
    wait_live(&[&agent], 1, TIMEOUT).await?;
    let rate = || agent.metric("sluice_rate_rows_per_second", &[]);
    assert_eq!(
        rate().await,
        Some(f64::from(TOTAL)),
        "alone: the whole total"
    );

    // Another agent heartbeating (by the database's clock): the budget is split in two.
    wait_for(
        Duration::from_secs(30),
        "the agent to take half",
        || async {
            ghost_heartbeat(&env, "0 s").await.ok()?;
            (rate().await == Some(f64::from(TOTAL / 2))).then_some(())
        },
    )
    .await?;
    assert!(
        agent.log_text().contains("Budget share changed."),
        "{}",
        agent.log_text()
    );

    // A heartbeat 6 s old is expired (5 s): the agent takes the whole total again.
    ghost_heartbeat(&env, "6 s").await?;
    wait_live(&[&agent], 1, Duration::from_secs(30)).await?;
    assert_eq!(rate().await, Some(f64::from(TOTAL)));
    let ghost: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.agents WHERE host = 'ghost'")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(
        ghost, 1,
        "an expired row stays a while, shown as gone by status"
    );

    // Expired for over ten minutes: the next heartbeat deletes it.
    ghost_heartbeat(&env, "11 min").await?;
    wait_for(
        Duration::from_secs(30),
        "the long-expired row pruned",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sluice.agents WHERE host = 'ghost'")
                    .fetch_one(&env.pool)
                    .await
                    .ok()?;
            (n == 0).then_some(())
        },
    )
    .await?;

    agent.stop().await?;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.agents")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(left, 0, "a clean stop leaves the table");
    Ok(())
}

/// Two agents share 600 receipts/s. A test transaction then locks one agent's row in the
/// agents table: its heartbeats stop going through while its writes still would. The other
/// counts it out after 5 s and takes the whole budget; the locked one must stop writing once
/// its lease ends (`budget_lease_lapsed`), so together they stay within the budget rather than
/// writing 1.5 times it. Unlocked, it rejoins and everything is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_whose_heartbeats_fail_while_writes_succeed_stops_writing_so_the_total_holds(
) -> anyhow::Result<()> {
    const BUDGET: u32 = 600;
    let env = TestEnv::new().await?;
    let mut oracle = Oracle::new();
    let receipts = Generator::new(15).receipts(40_000);
    env.upload_acknowledged(&mut oracle, &receipts, "100")
        .await?;
    drop(receipts);
    let agents = env.launch_fleet("agent", 2, &fleet_toml(BUDGET)).await?;
    let (free, locked) = (&agents[0], &agents[1]);
    wait_live(&[free, locked], 2, TIMEOUT).await?;

    let locked_id: String =
        sqlx::query_scalar("SELECT agent_id::text FROM sluice.agents WHERE pid = $1")
            .bind(i32::try_from(locked.pid().unwrap_or_default())?)
            .fetch_one(&env.pool)
            .await?;
    let mut lock = env.pool.begin().await?;
    sqlx::query("SELECT 1 FROM sluice.agents WHERE agent_id = $1::uuid FOR UPDATE")
        .bind(&locked_id)
        .execute(&mut *lock)
        .await?;
    wait_live(&[free], 1, REBALANCE).await?;
    wait_for(
        REBALANCE,
        "budget_lease_lapsed on the locked agent",
        || async {
            let raised = locked
                .metric("sluice_condition", &[("condition", "budget_lease_lapsed")])
                .await?;
            (raised == 1.0).then_some(())
        },
    )
    .await?;
    let from = env.db_now().await? + 1.0;
    let window = Duration::from_secs(20);
    let together = env.stored_rate(from, window).await?;
    eprintln!("two agents, one locked out of the agents table: {together:.1} receipts/s");
    let budget = f64::from(BUDGET);
    assert!(
        together <= budget * (1.0 + TOLERANCE),
        "{together:.1} receipts/s stored with one agent's heartbeats failing: the budget is {BUDGET}"
    );
    assert!(
        together >= budget * 0.8,
        "{together:.1} receipts/s: the free agent should have taken the whole budget"
    );

    lock.rollback().await?;
    wait_live(&[free, locked], 2, REBALANCE * 3).await?;
    wait_for(REBALANCE, "budget_lease_lapsed cleared", || async {
        let raised = locked
            .metric("sluice_condition", &[("condition", "budget_lease_lapsed")])
            .await?;
        (raised == 0.0).then_some(())
    })
    .await?;
    drain_the_rest(&env, &agents, &oracle).await?;
    for a in agents {
        a.stop().await?;
    }
    Ok(())
}
