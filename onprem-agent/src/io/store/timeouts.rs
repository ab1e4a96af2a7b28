//! The limits on one write transaction: PostgreSQL's `statement_timeout` and `lock_timeout`
//! (set locally in each transaction) and the agent's own deadline for the whole write, and
//! which errors mean "someone holds the agent's tables".
//!
//! Keeps the guarantee "A table lock stalls nothing and loses nothing": a write waits at most these
//! limits, and a write they cancel is known for a lock wait.

use std::time::Duration;

use super::StoreError;
use crate::config::DatabaseConfig;

/// The limits set on every write transaction (`SET LOCAL`), and the client-side deadline
/// derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTimeouts {
    pub statement: Duration,
    pub lock: Duration,
    /// Waiting for a pool connection.
    pub acquire: Duration,
}

impl Default for WriteTimeouts {
    fn default() -> Self {
        Self {
            statement: Duration::from_millis(crate::config::default_statement_timeout_ms()),
            lock: Duration::from_millis(crate::config::default_lock_timeout_ms()),
            acquire: Duration::from_secs(u64::from(
                crate::config::default_connect_timeout_seconds(),
            )),
        }
    }
}

impl WriteTimeouts {
    pub(super) fn from_config(cfg: &DatabaseConfig) -> Self {
        Self {
            statement: Duration::from_millis(cfg.statement_timeout_ms),
            lock: Duration::from_millis(cfg.lock_timeout_ms),
            acquire: Duration::from_secs(u64::from(cfg.connect_timeout_seconds)),
        }
    }

    /// How long one write may take in all, whatever the network does: a connection, then at
    /// most [`STATEMENTS_PER_WRITE`] statements each bounded by the statement timeout, plus
    /// slack. PostgreSQL enforces its timeouts only while it hears from the client; this
    /// bounds a write on a connection that went silent, so a writer never waits unseen.
    pub fn deadline(&self) -> Duration {
        self.acquire + self.statement * STATEMENTS_PER_WRITE + Duration::from_secs(5)
    }
}

/// Statements in one write transaction without a race: the timeouts, the stored fingerprints,
/// updates, inserts, the items (delete and insert), the ledger, COMMIT.
const STATEMENTS_PER_WRITE: u32 = 8;

/// Whether `e` is a write cancelled by `lock_timeout` (55P03) or `statement_timeout` (57014):
/// the database is up but something holds the agent's tables (a `LOCK TABLE`, a long
/// migration). Retried like any overload; shown as the `database_lock_wait` condition.
pub fn is_lock_wait(e: &StoreError) -> bool {
    matches!(e, StoreError::Overloaded { code, .. } if code == "55P03" || code == "57014")
}
