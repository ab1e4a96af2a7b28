//! The foreground probe's connection: one connection of its own (never a writer's, never the
//! readiness probe's), opened with `default_transaction_read_only = on` and a short
//! `statement_timeout`, on which `throttle.probe_sql` runs as one prepared statement (the
//! extended protocol refuses several statements in one). So the probe can neither write nor
//! hang: a write is refused by PostgreSQL (25006), a slow read cancelled (57014).

use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The probe's `statement_timeout`: a probe that takes longer counts as this slow.
pub const PROBE_STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a probe gave no latency.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("throttle.probe_sql must be a read-only statement; PostgreSQL refused it: {0}")]
    NotReadOnly(String),
    #[error(
        "throttle.probe_sql took longer than its {} ms statement_timeout",
        PROBE_STATEMENT_TIMEOUT.as_millis()
    )]
    TooSlow,
    #[error("throttle.probe_sql failed ({code}): {message}")]
    Statement { code: String, message: String },
    #[error("the probe's connection failed: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for ProbeError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.as_str() {
                    "25006" => ProbeError::NotReadOnly(db.message().to_owned()),
                    "57014" => ProbeError::TooSlow,
                    // Connection exceptions and shutdowns: the database, not the statement.
                    c if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                        ProbeError::Unavailable(db.message().to_owned())
                    }
                    _ => ProbeError::Statement {
                        code,
                        message: db.message().to_owned(),
                    },
                }
            }
            _ => ProbeError::Unavailable(crate::config::secret::scrub(&e.to_string()).into_owned()),
        }
    }
}

/// The probe's own connection.
#[derive(Clone)]
pub struct ForegroundProbe {
    pool: PgPool,
}

impl std::fmt::Debug for ForegroundProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForegroundProbe").finish_non_exhaustive()
    }
}

impl ForegroundProbe {
    /// Connects on first use (the agent starts while the database is down).
    pub fn connect_lazy(cfg: &DatabaseConfig) -> anyhow::Result<Self> {
        let timeout = format!("{}ms", PROBE_STATEMENT_TIMEOUT.as_millis());
        let opts = super::connect_options(cfg)?
            .options([
                ("default_transaction_read_only", "on"),
                ("statement_timeout", timeout.as_str()),
            ])
            .application_name("sluice-agent-foreground-probe");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(super::WriteTimeouts::from_config(cfg).acquire)
            // Every probe is one round trip, as a foreground client's query.
            .test_before_acquire(false)
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }

    /// Runs `sql` once (its rows read and dropped) and says how long it took.
    pub async fn run(&self, sql: &str) -> Result<Duration, ProbeError> {
        // The pool connects on demand: the connection is made before the clock starts.
        let mut conn = self.pool.acquire().await?;
        let started = Instant::now();
        let answer = tokio::time::timeout(
            PROBE_STATEMENT_TIMEOUT * 3,
            sqlx::query(sql).execute(&mut *conn),
        )
        .await;
        let took = started.elapsed();
        match answer {
            Ok(Ok(_)) => Ok(took),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                // No answer at all: the connection is in an unknown state; drop it.
                conn.detach();
                Err(ProbeError::Unavailable(format!(
                    "no answer within {} ms",
                    took.as_millis()
                )))
            }
        }
    }
}
