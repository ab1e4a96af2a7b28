//! The agents' registry (table `agents`): the SQL behind "several agents, one budget"
//! (`throttle::share`). Each agent upserts its row on a heartbeat and reads back the live set
//! in the same statement, on a connection of its own ([`Registry`]), so a heartbeat never
//! waits for a writer's connection or a writer for it. "Live" is judged by the database's
//! clock (`now()`), never the agents', so hosts with skewed clocks agree on the set.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::{Store, StoreError};

/// One agent's heartbeat: who it is and what it took at its last look.
#[derive(Debug, Clone, Copy)]
pub struct Beat<'a> {
    pub agent_id: &'a str,
    pub host: &'a str,
    pub pid: u32,
    pub share_rows_per_second: u32,
    pub share_transactions: u32,
    pub live_agents: u32,
}

/// A registered agent, as `status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct AgentRow {
    pub agent_id: String,
    pub host: String,
    pub pid: i32,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_seconds: f64,
    pub share_rows_per_second: i32,
    pub share_transactions: i32,
    pub live_agents: i32,
    /// Its heartbeat is young enough to count it in the live set.
    pub live: bool,
}

/// Upserts the caller's row, prunes rows long expired (never the caller's), and returns the
/// other live agents' ids in order. The CTEs see the table as it was before the statement, so
/// the caller's own row is left out here and added by the caller.
const BEAT: &str = "\
WITH beat AS (
    INSERT INTO agents (agent_id, host, pid, share_rows_per_second, share_transactions, live_agents)
    VALUES ($1::uuid, $2, $3, $4, $5, $6)
    ON CONFLICT (agent_id) DO UPDATE SET
        heartbeat_at = now(),
        share_rows_per_second = EXCLUDED.share_rows_per_second,
        share_transactions = EXCLUDED.share_transactions,
        live_agents = EXCLUDED.live_agents
    RETURNING agent_id
), pruned AS (
    DELETE FROM agents
    WHERE heartbeat_at < now() - make_interval(secs => $8) AND agent_id <> $1::uuid
)
SELECT agent_id::text FROM agents
WHERE heartbeat_at >= now() - make_interval(secs => $7) AND agent_id <> $1::uuid
ORDER BY agent_id";

/// Every registered agent, live ones first (`$1`: the live set's expiry in seconds).
const LIST: &str = "\
SELECT agent_id::text AS agent_id, host, pid,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds,
       share_rows_per_second, share_transactions, live_agents,
       heartbeat_at >= now() - make_interval(secs => $1) AS live
FROM agents
ORDER BY live DESC, agent_id";

/// The heartbeat's own pool: one connection, opened on demand.
#[derive(Clone)]
pub struct Registry {
    pool: PgPool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A pool of one connection to `store`'s database, with its settings (schema, password);
    /// `timeout` bounds each wait for that connection.
    pub fn new(store: &Store, timeout: Duration) -> Self {
        let opts = (*store.pool.connect_options())
            .clone()
            .application_name("sluice-agent-registry");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(false)
            .connect_lazy_with(opts);
        Self { pool }
    }

    /// Heartbeats `beat`; returns the other agents whose heartbeat is at most `expiry` old,
    /// ordered by id. Rows older than `prune` are deleted on the way.
    pub async fn beat(
        &self,
        beat: &Beat<'_>,
        expiry: Duration,
        prune: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        Ok(sqlx::query_scalar(BEAT)
            .bind(beat.agent_id)
            .bind(beat.host)
            .bind(int(beat.pid))
            .bind(int(beat.share_rows_per_second))
            .bind(int(beat.share_transactions))
            .bind(int(beat.live_agents))
            .bind(expiry.as_secs_f64())
            .bind(prune.as_secs_f64())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Deletes the agent's row (a clean stop): the others rebalance at their next heartbeat.
    pub async fn leave(&self, agent_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM agents WHERE agent_id = $1::uuid")
            .bind(agent_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// The registered agents (on the probe's connection), `expiry` deciding which are live.
    pub async fn agents(&self, expiry: Duration) -> Result<Vec<AgentRow>, StoreError> {
        Ok(sqlx::query_as(LIST)
            .bind(expiry.as_secs_f64())
            .fetch_all(&self.probe)
            .await?)
    }
}
