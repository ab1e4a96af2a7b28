//! The agent's memory against its byte budget: peak RSS (VmHWM) of the real `sluice-agent`
//! draining a backlog of the largest valid receipts (about 1 MiB of JSON each, fifteen to a
//! message: each message nearly the 16 MiB a chunk may decode to), next to the goal
//! `batch.max_in_flight_bytes` + 64 MiB and the most the agent says it held. The agent runs
//! with the allocator settings its systemd unit gives it ([`unit_malloc_env`]).

use std::time::Duration;

use anyhow::Context as _;
use sluice_e2e::large::{send_backlog, LARGEST_PER_CHUNK};
use sluice_e2e::PrivatePostgres;

use crate::drain::{backlog_env, peak_rss_kib};
use crate::Table;

/// The byte budget measured: the agent's default.
const BOUND: u64 = 64 * 1024 * 1024;
/// What the goal allows above the bound: the process itself, its pools and transient decoding.
const OVERHEAD: u64 = 64 * 1024 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

/// Sends `receipts` largest receipts (rounded up to whole messages of fifteen) to a fresh
/// database on `pg`, drains them with the default byte budget, and adds the row.
pub(crate) async fn measure(
    pg: &PrivatePostgres,
    receipts: usize,
    table: &mut Table,
) -> anyhow::Result<()> {
    let env = backlog_env(pg).await?;
    let plan = vec![LARGEST_PER_CHUNK; receipts.div_ceil(LARGEST_PER_CHUNK)];
    eprintln!(
        "bench: a backlog of {} of the largest receipts in {} messages",
        plan.len() * LARGEST_PER_CHUNK,
        plan.len()
    );
    let backlog = send_backlog(&env, &plan, 0, false).await?;
    let malloc = unit_malloc_env();
    let mut agent = env.spawn_agent_with_env(
        "memory",
        &format!(
            "[queue]\nvisibility_timeout_seconds = 120\n[batch]\nmax_in_flight_bytes = {BOUND}\n\
             [log]\nformat = \"json\"\nlevel = \"warn\""
        ),
        &malloc,
    )?;
    eprintln!("bench: draining it");
    env.wait_drained(i64::try_from(backlog.count)?, Duration::from_secs(60 * 60))
        .await?;
    let rss = peak_rss_kib(agent.pid().context("the agent exited")?)? * 1024;
    let held = agent
        .metric("sluice_in_flight_bytes_max", &[])
        .await
        .unwrap_or(f64::NAN);
    table.row(
        format!(
            "agent peak RSS, draining {} of the largest receipts ({:.0} MiB decoded)",
            backlog.count,
            backlog.total_bytes as f64 / MIB
        ),
        format!("{:.0} MiB", rss as f64 / MIB),
        format!(
            "VmHWM; goal ≤ {:.0} MiB (batch.max_in_flight_bytes = {:.0} MiB + 64 MiB); \
             held at most {:.1} MiB (sluice_in_flight_bytes_max); messages of {:.1} MiB decoded; \
             environment as the unit's: {}",
            (BOUND + OVERHEAD) as f64 / MIB,
            BOUND as f64 / MIB,
            held / MIB,
            backlog.largest_message_bytes as f64 / MIB,
            malloc
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    agent.terminate(Duration::from_secs(60)).await?;
    env.cleanup().await;
    Ok(())
}

/// The shipped systemd unit, whose allocator settings the measured agent runs with.
const UNIT: &str = include_str!("../../../../deploy/systemd/sluice-agent.service");

/// The glibc allocator variables (`MALLOC_*`) the unit's `Environment=` lines set.
pub(crate) fn unit_malloc_env() -> Vec<(&'static str, &'static str)> {
    UNIT.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.starts_with("MALLOC_"))
        .collect()
}
