//! The PostgreSQL adapter, the only code that runs SQL: the connection pool, the embedded
//! migrations, the one write the agent makes — a batch of receipts with their items and
//! chunk-ledger rows in one transaction, idempotent by `receipt_id` — and the few reads that
//! readiness, the adaptive throttle and `status` make.
//!
//! Rows travel as arrays, one per column, through `INSERT … SELECT FROM UNNEST(…)`: one round
//! trip per table whatever the batch size, and a statement text that never changes (so it is
//! prepared once per connection). Decimals, dates and UUIDs are sent as text and cast by
//! PostgreSQL, which keeps money exact and the dependency tree small.

use std::collections::HashSet;
use std::time::Duration;

use sluice_protocol::Receipt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::config::{secret, DatabaseConfig};

/// Migrations embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What went wrong talking to the database, sorted by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused a row's content (SQLSTATE class 22 or 23): retrying the same rows
    /// cannot help; the batch is split to find the rows at fault.
    #[error("database rejected the data ({code}): {message}")]
    Data { code: String, message: String },
    /// Anything else: connection lost, server shutting down, overload, timeouts, or an
    /// operator problem (permissions, missing table). Retried with backoff; the outcome of a
    /// commit that failed this way is unknown, so nothing is deleted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database is overloaded (SQLSTATE class 53 such as too_many_connections, 55P03
    /// lock_not_available, 57014 statement timeout, 40001 serialization_failure, 40P01
    /// deadlock): retried like `Unavailable`, and a signal for the adaptive throttle to back off.
    #[error("database overloaded ({code}): {message}")]
    Overloaded { code: String, message: String },
}

/// Whether a SQLSTATE means "too much load" rather than "down" or "bad data".
pub fn is_overload_code(code: &str) -> bool {
    code.starts_with("53") || matches!(code, "55P03" | "57014" | "40001" | "40P01")
}

impl StoreError {
    pub fn is_data(&self) -> bool {
        matches!(self, StoreError::Data { .. })
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Data { .. } => "data",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Overloaded { .. } => "overload",
        }
    }

    pub fn is_overload(&self) -> bool {
        matches!(self, StoreError::Overloaded { .. })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if let Some(code) = db.code() {
                // 22: data exception (bad value), 23: integrity constraint violation. 54000
                // (program limit, e.g. an index row too large) is also about one row's content.
                if code.starts_with("22") || code.starts_with("23") || code == "54000" {
                    return StoreError::Data {
                        code: code.into_owned(),
                        message: db.message().to_owned(),
                    };
                }
                if is_overload_code(&code) {
                    return StoreError::Overloaded {
                        code: code.into_owned(),
                        message: db.message().to_owned(),
                    };
                }
            }
        }
        StoreError::Unavailable(e.to_string())
    }
}

/// One receipt to write, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub receipt: &'a Receipt,
    pub batch_id: &'a str,
    pub chunk_index: u32,
}

/// One chunk-ledger row.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub batch_id: String,
    pub chunk_index: u32,
    pub chunk_count: u32,
    pub receipts: u32,
    pub rejected: u32,
    pub message_id: String,
}

/// What one committed write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Receipts newly stored.
    pub inserted: u64,
    /// Receipts already present (a redelivery, a re-upload) or repeated within the batch.
    pub duplicates: u64,
}

/// The database handle: the writers' pool, and a pool of one connection of its own for the
/// readiness probe, so `/readyz` answers even while every writer connection is busy (or waits
/// on a lock).
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    probe: PgPool,
    timeouts: WriteTimeouts,
}

/// `Debug` by hand: the pools' own `Debug` prints their connect options, password included.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool_size", &self.pool.size())
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

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
    fn from_config(cfg: &DatabaseConfig) -> Self {
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

/// Statements in one write transaction: the timeouts, receipts, items, ledger, COMMIT.
const STATEMENTS_PER_WRITE: u32 = 5;

/// Whether `e` is a write cancelled by `lock_timeout` (55P03) or `statement_timeout` (57014):
/// the database is up but something holds the agent's tables (a `LOCK TABLE`, a long
/// migration). Retried like any overload; shown as the `database_lock_wait` condition.
pub fn is_lock_wait(e: &StoreError) -> bool {
    matches!(e, StoreError::Overloaded { code, .. } if code == "55P03" || code == "57014")
}

/// Connection options for `cfg`, with the password from its file or the environment and the
/// search path set to the agent's schema. Every password found is registered with
/// [`secret::register`], so no text leaving the process carries it.
pub fn connect_options(cfg: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    use anyhow::Context as _;
    cfg.register_secrets();
    // sqlx's parse errors do not echo the URL; the context names it hidden ([`DatabaseUrl`]).
    let mut opts: PgConnectOptions = cfg
        .url
        .expose()
        .parse()
        .with_context(|| format!("database.url {:?}", cfg.url.redacted()))?;
    if let Some(file) = &cfg.password_file {
        let pw = std::fs::read_to_string(file)
            .with_context(|| format!("reading database.password_file {}", file.display()))?;
        let pw = pw.trim_end_matches(['\n', '\r']);
        secret::register(pw);
        opts = opts.password(pw);
    } else if let Some(pw) = &cfg.password {
        opts = opts.password(pw);
    }
    // `search_path` puts the agent's tables (and sqlx's migration table) in its own schema;
    // `public` is not on it, so nothing lands there by accident.
    Ok(opts
        .options([("search_path", cfg.schema.as_str())])
        .application_name("sluice-agent"))
}

/// The readiness probe's own pool: one connection, opened on demand, so a probe never waits
/// for the writers and never takes one of their connections.
const PROBE_CONNECTIONS: u32 = 1;

impl Store {
    /// A lazily connecting pool: the agent starts (and reports not ready) while the database
    /// is down, instead of failing.
    pub fn connect_lazy(cfg: &DatabaseConfig) -> anyhow::Result<Self> {
        let opts = connect_options(cfg)?;
        let timeouts = WriteTimeouts::from_config(cfg);
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .min_connections(0)
            .acquire_timeout(timeouts.acquire)
            .idle_timeout(Some(Duration::from_secs(300)))
            // A connection that died while idle (server restart) is found before use, not by
            // a failed batch.
            .test_before_acquire(true)
            .connect_lazy_with(opts.clone());
        let probe = PgPoolOptions::new()
            .max_connections(PROBE_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(timeouts.acquire)
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(false)
            .connect_lazy_with(opts.application_name("sluice-agent-probe"));
        Ok(Self {
            pool,
            probe,
            timeouts,
        })
    }

    /// A store on an existing pool (tests, benchmarks): the probe shares it, and the write
    /// timeouts are the defaults.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            probe: pool.clone(),
            pool,
            timeouts: WriteTimeouts::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The limits every write transaction runs under.
    pub fn timeouts(&self) -> WriteTimeouts {
        self.timeouts
    }

    /// Creates the schema if needed and applies pending migrations.
    pub async fn migrate(&self, schema: &str) -> anyhow::Result<()> {
        use anyhow::Context as _;
        anyhow::ensure!(
            crate::config::valid_identifier(schema),
            "invalid schema name {schema:?}"
        );
        self.pool
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await
            .with_context(|| format!("creating schema {schema}"))?;
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying migrations")?;
        Ok(())
    }

    /// `SELECT 1` on the probe's own connection: is the database answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.probe).await?;
        Ok(())
    }

    /// Client backends running a statement right now, other than this query's own: the
    /// adaptive throttle's optional load signal.
    pub async fn active_backends(&self) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Receipts committed per second over the last `window`, from the chunk ledger (see
    /// [`RECENT_RATE`]).
    pub async fn recent_rate(&self, window: Duration) -> Result<f64, StoreError> {
        let window = window.as_secs_f64();
        let n: i64 = sqlx::query_scalar(RECENT_RATE)
            .bind(window)
            .fetch_one(&self.probe)
            .await?;
        Ok(n as f64 / window)
    }

    /// Receipts per message, averaged over the latest `sample` chunk-ledger rows; `None` while
    /// the ledger is empty.
    pub async fn receipts_per_message(&self, sample: i64) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(RECEIPTS_PER_MESSAGE)
            .bind(sample)
            .fetch_one(&self.probe)
            .await?)
    }

    /// Writes `rows` and `ledger` in one transaction. Rows whose `receipt_id` is already
    /// stored, or repeated earlier in `rows`, are skipped; items are written only for receipts
    /// this call inserted, so a redelivery adds nothing.
    pub async fn write(
        &self,
        rows: &[Row<'_>],
        ledger: &[LedgerEntry],
    ) -> Result<WriteOutcome, StoreError> {
        // Every receipt given counts: as inserted, or as a duplicate (already stored, or
        // repeated within this batch).
        let given = rows.len() as u64;
        let rows = dedup(rows);
        let deadline = self.timeouts.deadline();
        let written = tokio::time::timeout(deadline, self.write_once(&rows, ledger)).await;
        let inserted = match written {
            Ok(result) => result?,
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "the write did not finish within {deadline:?} (no answer from PostgreSQL)"
                )))
            }
        };
        Ok(WriteOutcome {
            inserted,
            duplicates: given - inserted,
        })
    }

    /// One write transaction under the configured timeouts; returns how many receipts it
    /// inserted.
    async fn write_once(
        &self,
        rows: &[Row<'_>],
        ledger: &[LedgerEntry],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Local to this transaction: a pooled connection carries no setting to the next user.
        sqlx::query(SET_WRITE_TIMEOUTS)
            .bind(format!("{}ms", self.timeouts.statement.as_millis()))
            .bind(format!("{}ms", self.timeouts.lock.as_millis()))
            .execute(&mut *tx)
            .await?;
        let inserted: Vec<String> = if rows.is_empty() {
            Vec::new()
        } else {
            insert_receipts(&mut tx, rows).await?
        };
        if !inserted.is_empty() {
            let new: HashSet<&str> = inserted.iter().map(String::as_str).collect();
            insert_items(&mut tx, rows, &new).await?;
        }
        if !ledger.is_empty() {
            insert_ledger(&mut tx, ledger).await?;
        }
        tx.commit().await?;
        Ok(inserted.len() as u64)
    }
}

/// The statement and lock timeouts of one write transaction, in one round trip.
const SET_WRITE_TIMEOUTS: &str =
    "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true)";

/// Receipts committed over the last `$1` seconds: the chunk ledger's rows committed in the
/// window (index `chunks_committed_at_idx`), each counting the receipts it stored. The ledger
/// has one row per message, not per receipt, so this reads little and puts no index on the
/// hot `receipts` table. A redelivered chunk adds no ledger row, so it is not counted twice.
pub const RECENT_RATE: &str = "\
SELECT coalesce(sum(receipts - rejected), 0)::int8 FROM chunks
WHERE committed_at > now() - make_interval(secs => $1)";

/// Mean receipts per message over the latest `$1` ledger rows (index
/// `chunks_committed_at_idx`, read backwards).
pub const RECEIPTS_PER_MESSAGE: &str = "\
SELECT avg(receipts)::float8 FROM
    (SELECT receipts FROM chunks ORDER BY committed_at DESC LIMIT $1) AS latest";

/// Keeps the first occurrence of each `receipt_id`: one statement must not touch a row twice,
/// and a chunk delivered twice inside one receive would otherwise do so.
pub fn dedup<'a>(rows: &[Row<'a>]) -> Vec<Row<'a>> {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.iter()
        .filter(|r| seen.insert(r.receipt.receipt_id.as_str()))
        .copied()
        .collect()
}

const INSERT_RECEIPTS: &str = "\
INSERT INTO receipts (receipt_id, tenant_id, submitted_by, merchant, issued_on, currency, total, tax,
                      category, image_key, image_sha256, image_bytes, metadata, batch_id, chunk_index)
SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::date[], $6::text[],
                     $7::numeric[], $8::numeric[], $9::text[], $10::text[], $11::text[],
                     $12::numeric[], $13::jsonb[], $14::uuid[], $15::int4[])
ON CONFLICT (receipt_id) DO NOTHING
RETURNING receipt_id::text";

async fn insert_receipts(
    tx: &mut sqlx::PgConnection,
    rows: &[Row<'_>],
) -> Result<Vec<String>, StoreError> {
    let n = rows.len();
    let mut id = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut submitted_by = Vec::with_capacity(n);
    let mut merchant = Vec::with_capacity(n);
    let mut issued_on = Vec::with_capacity(n);
    let mut currency = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    let mut tax = Vec::with_capacity(n);
    let mut category = Vec::with_capacity(n);
    let mut image_key = Vec::with_capacity(n);
    let mut image_sha = Vec::with_capacity(n);
    let mut image_bytes = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut batch = Vec::with_capacity(n);
    let mut chunk = Vec::with_capacity(n);
    for row in rows {
        let r = row.receipt;
        id.push(r.receipt_id.as_str());
        tenant.push(r.tenant_id.as_str());
        submitted_by.push(r.submitted_by.as_deref());
        merchant.push(r.merchant.as_str());
        issued_on.push(r.issued_on.as_str());
        currency.push(r.currency.as_str());
        total.push(r.total.as_str());
        tax.push(r.tax.as_ref().map(|t| t.as_str()));
        category.push(r.category.as_deref());
        image_key.push(r.image.as_ref().map(|i| i.key.as_str()));
        image_sha.push(r.image.as_ref().map(|i| i.sha256.as_str()));
        image_bytes.push(r.image.as_ref().map(|i| i.bytes.to_string()));
        metadata.push(
            r.metadata
                .as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string()),
        );
        batch.push(row.batch_id);
        chunk.push(i32::try_from(row.chunk_index).unwrap_or(i32::MAX));
    }
    let ids = sqlx::query_scalar::<_, String>(INSERT_RECEIPTS)
        .bind(id)
        .bind(tenant)
        .bind(submitted_by)
        .bind(merchant)
        .bind(issued_on)
        .bind(currency)
        .bind(total)
        .bind(tax)
        .bind(category)
        .bind(image_key)
        .bind(image_sha)
        .bind(image_bytes)
        .bind(metadata)
        .bind(batch)
        .bind(chunk)
        .fetch_all(&mut *tx)
        .await?;
    Ok(ids)
}

const INSERT_ITEMS: &str = "\
INSERT INTO receipt_items (receipt_id, line_no, description, quantity, unit_price, amount)
SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::numeric[], $5::numeric[], $6::numeric[])
ON CONFLICT (receipt_id, line_no) DO NOTHING";

async fn insert_items(
    tx: &mut sqlx::PgConnection,
    rows: &[Row<'_>],
    new: &HashSet<&str>,
) -> Result<(), StoreError> {
    let mut id = Vec::new();
    let mut line = Vec::new();
    let mut description = Vec::new();
    let mut quantity = Vec::new();
    let mut unit_price = Vec::new();
    let mut amount = Vec::new();
    for row in rows {
        let r = row.receipt;
        if !new.contains(r.receipt_id.as_str()) {
            continue;
        }
        for (i, item) in r.items.iter().enumerate() {
            id.push(r.receipt_id.as_str());
            // Items are capped at 500 per receipt by validation.
            line.push(i32::try_from(i + 1).unwrap_or(i32::MAX));
            description.push(item.description.as_str());
            quantity.push(item.quantity.as_str());
            unit_price.push(item.unit_price.as_str());
            amount.push(item.amount.as_str());
        }
    }
    if id.is_empty() {
        return Ok(());
    }
    sqlx::query(INSERT_ITEMS)
        .bind(id)
        .bind(line)
        .bind(description)
        .bind(quantity)
        .bind(unit_price)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

const INSERT_LEDGER: &str = "\
INSERT INTO chunks (batch_id, chunk_index, chunk_count, receipts, rejected, message_id)
SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::int4[], $4::int4[], $5::int4[], $6::text[])
ON CONFLICT (batch_id, chunk_index) DO NOTHING";

async fn insert_ledger(
    tx: &mut sqlx::PgConnection,
    ledger: &[LedgerEntry],
) -> Result<(), StoreError> {
    let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    sqlx::query(INSERT_LEDGER)
        .bind(
            ledger
                .iter()
                .map(|l| l.batch_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            ledger
                .iter()
                .map(|l| to_i32(l.chunk_index))
                .collect::<Vec<_>>(),
        )
        .bind(
            ledger
                .iter()
                .map(|l| to_i32(l.chunk_count))
                .collect::<Vec<_>>(),
        )
        .bind(
            ledger
                .iter()
                .map(|l| to_i32(l.receipts))
                .collect::<Vec<_>>(),
        )
        .bind(
            ledger
                .iter()
                .map(|l| to_i32(l.rejected))
                .collect::<Vec<_>>(),
        )
        .bind(
            ledger
                .iter()
                .map(|l| l.message_id.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_sqlstates_are_told_apart_from_outages_and_bad_data() {
        for code in ["53300", "53400", "55P03", "57014", "40001", "40P01"] {
            assert!(is_overload_code(code), "{code}");
        }
        for code in ["08006", "57P01", "22P02", "23505", "42P01"] {
            assert!(!is_overload_code(code), "{code}");
        }
    }
}
