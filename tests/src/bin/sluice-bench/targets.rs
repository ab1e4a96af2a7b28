//! The drain rate by write target: the same backlog drained unthrottled by the release
//! `sluice-agent` into Sluice's own tables, then through the example customer procedure of
//! `deploy/examples/expenses/` (its triggers included), each on a fresh database of the bench's
//! cluster, without a foreground load.

use std::time::{Duration, Instant};

use sluice_e2e::{expenses, wait_for, TestEnv};

use crate::drain::{backlog_env, upload_backlog};
use crate::{Table, BATCH};

/// Tenants the generator uses, all known to the example application.
const TENANTS: u32 = 25;

/// Drains `backlog` receipts into each target and adds one row per target and their ratio.
pub(crate) async fn measure(
    pg: &sluice_e2e::PrivatePostgres,
    backlog: usize,
    table: &mut Table,
) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for procedure in [false, true] {
        let env = backlog_env(pg).await?;
        let target = if procedure {
            expenses::load_with_tenants(&env.pool, TENANTS).await?;
            expenses::target_toml()
        } else {
            String::new()
        };
        let name = if procedure { "procedure" } else { "sluice" };
        eprintln!("bench: drain into target {name}, {backlog} receipts");
        upload_backlog(&env, backlog, 2).await?;
        let rate = drain(&env, &target, backlog).await?;
        let note = if procedure {
            format!(
                "`CALL {}($1::jsonb)` per batch of {BATCH}: the example's triggers (negative \
                 check, per-tenant totals) included",
                expenses::PROCEDURE
            )
        } else {
            format!("receipts + receipt_items, {BATCH} per transaction")
        };
        table.row(
            format!("drain into target.kind = \"{name}\", unthrottled, no foreground"),
            format!("{rate:.0}/s"),
            format!("{note}; first to last commit over {backlog} receipts"),
        );
        rates.push(rate);
        env.cleanup().await;
    }
    if let [sluice, procedure] = rates[..] {
        table.row(
            "procedure target / built-in target drain rate",
            format!("{:.2}", procedure / sluice),
            "same backlog, same agent settings",
        );
    }
    Ok(())
}

/// Runs the agent unthrottled until every receipt is written; receipts per second from its
/// first commit to its last.
async fn drain(env: &TestEnv, target: &str, backlog: usize) -> anyhow::Result<f64> {
    let extra = format!(
        "[queue]\nvisibility_timeout_seconds = 120\n[throttle]\nrows_per_second = 1000000\n\
         burst = 1000000\n[batch]\nmax_rows = {BATCH}\nmax_wait_ms = 50\n[log]\nformat = \"json\"\n\
         level = \"warn\"\n{target}"
    );
    let mut agent = env.spawn_agent("agent", &extra)?;
    let want = backlog as f64;
    let written = || async { agent.metric("sluice_rows_written_total", &[]).await };
    let first = wait_for(Duration::from_secs(120), "the first commit", || async {
        written()
            .await
            .filter(|n| *n > 0.0)
            .map(|n| (Instant::now(), n))
    })
    .await?;
    let last = wait_for(
        Duration::from_secs(1800),
        "every receipt written",
        || async {
            written()
                .await
                .filter(|n| *n >= want)
                .map(|n| (Instant::now(), n))
        },
    )
    .await?;
    agent.terminate(Duration::from_secs(60)).await?;
    Ok((last.1 - first.1) / last.0.duration_since(first.0).as_secs_f64().max(1e-3))
}
