//! Several agents, one budget: `sluice-agent` processes draining one queue into one database,
//! and the rate they store at together, measured by the database's own clock from
//! `receipts.ingested_at` (the storing transaction's start), so neither the test's scheduling
//! nor the agents' clocks enter the figure. The end-to-end test and `make bench` both use it.

use std::time::Duration;

use crate::{wait_for, AgentProcess, TestEnv};

/// Every agent's live-agent count, as its `/metrics` says.
pub const AGENTS_LIVE: &str = "sluice_agents_live";
/// A transaction that started inside a window has committed this long after it ends.
const SETTLE: Duration = Duration::from_secs(5);

/// `[throttle]` and `[batch]` for a fleet sharing `total` receipts/s: small batches (100
/// receipts, a burst of one batch) so a window's edges cut at most a batch per agent.
pub fn fleet_toml(total: u32) -> String {
    format!(
        "[throttle]\nrows_per_second = {total}\nburst = 100\n\
         [batch]\nmax_rows = 100\nmax_wait_ms = 50"
    )
}

impl TestEnv {
    /// Launches `n` agents named `{prefix}0`… on `extra`, each answering on its own port.
    pub async fn launch_fleet(
        &self,
        prefix: &str,
        n: usize,
        extra: &str,
    ) -> anyhow::Result<Vec<AgentProcess>> {
        let mut agents = Vec::with_capacity(n);
        for i in 0..n {
            agents.push(self.launch_agent(&format!("{prefix}{i}"), extra).await?);
        }
        Ok(agents)
    }

    /// The database's clock, in seconds since the epoch.
    pub async fn db_now(&self) -> anyhow::Result<f64> {
        Ok(
            sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Waits until the database's clock reads `at` or later.
    pub async fn wait_db_time(&self, at: f64, timeout: Duration) -> anyhow::Result<()> {
        wait_for(
            timeout,
            &format!("the database's clock to pass {at}"),
            || async {
                self.db_now()
                    .await
                    .ok()
                    .filter(|now| *now >= at)
                    .map(|_| ())
            },
        )
        .await
    }

    /// Receipts stored per second over `[from, from + window)` by the database's clock; waits
    /// until the window has passed and its last transactions have committed.
    pub async fn stored_rate(&self, from: f64, window: Duration) -> anyhow::Result<f64> {
        let to = from + window.as_secs_f64();
        self.wait_db_time(to + SETTLE.as_secs_f64(), window + SETTLE * 4)
            .await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sluice.receipts \
             WHERE ingested_at >= to_timestamp($1) AND ingested_at < to_timestamp($2)",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as f64 / window.as_secs_f64())
    }
}

/// Waits until every agent in `agents` counts `live` live agents.
pub async fn wait_live(
    agents: &[&AgentProcess],
    live: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for(
        timeout,
        &format!("every agent to count {live} live"),
        || async {
            for a in agents {
                if a.metric(AGENTS_LIVE, &[]).await != Some(live as f64) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
}
