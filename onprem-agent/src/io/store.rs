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

use crate::config::DatabaseConfig;

/// Migrations embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

mod error;

pub use error::StoreError;

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

/// The database handle.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

/// Connection options for `cfg`, with the password from its file or the environment and the
/// search path set to the agent's schema.
pub fn connect_options(cfg: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    use anyhow::Context as _;
    let mut opts: PgConnectOptions = cfg
        .url
        .parse()
        .with_context(|| format!("database.url {:?}", crate::config::redact_url(&cfg.url)))?;
    if let Some(file) = &cfg.password_file {
        let pw = std::fs::read_to_string(file)
            .with_context(|| format!("reading database.password_file {}", file.display()))?;
        opts = opts.password(pw.trim_end_matches(['\n', '\r']));
    } else if let Some(pw) = &cfg.password {
        opts = opts.password(pw);
    }
    // `search_path` puts the agent's tables (and sqlx's migration table) in its own schema;
    // `public` is not on it, so nothing lands there by accident.
    Ok(opts
        .options([("search_path", cfg.schema.as_str())])
        .application_name("sluice-agent"))
}

impl Store {
    /// A lazily connecting pool: the agent starts (and reports not ready) while the database
    /// is down, instead of failing.
    pub fn connect_lazy(cfg: &DatabaseConfig) -> anyhow::Result<Self> {
        let opts = connect_options(cfg)?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(u64::from(cfg.connect_timeout_seconds)))
            .idle_timeout(Some(Duration::from_secs(300)))
            // A connection that died while idle (server restart) is found before use, not by
            // a failed batch.
            .test_before_acquire(true)
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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

    /// `SELECT 1`: is the database answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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

    /// Receipts stored per second over the last `window` (by `ingested_at`).
    pub async fn recent_rate(&self, window: Duration) -> Result<f64, StoreError> {
        let window = window.as_secs_f64();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM receipts WHERE ingested_at > now() - make_interval(secs => $1)",
        )
        .bind(window)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as f64 / window)
    }

    /// Receipts per message, averaged over the latest `sample` chunk-ledger rows; `None` while
    /// the ledger is empty.
    pub async fn receipts_per_message(&self, sample: i64) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT avg(receipts)::float8 FROM \
             (SELECT receipts FROM chunks ORDER BY committed_at DESC LIMIT $1) AS latest",
        )
        .bind(sample)
        .fetch_one(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let inserted: Vec<String> = if rows.is_empty() {
            Vec::new()
        } else {
            insert_receipts(&mut tx, &rows).await?
        };
        if !inserted.is_empty() {
            let new: HashSet<&str> = inserted.iter().map(String::as_str).collect();
            insert_items(&mut tx, &rows, &new).await?;
        }
        if !ledger.is_empty() {
            insert_ledger(&mut tx, ledger).await?;
        }
        tx.commit().await?;
        let inserted = inserted.len() as u64;
        Ok(WriteOutcome {
            inserted,
            duplicates: given - inserted,
        })
    }

    /// Inserts `rows` (and their items) in a transaction that is rolled back: would the
    /// database take them? Leaves nothing behind.
    pub async fn try_write(&self, rows: &[Row<'_>]) -> Result<(), StoreError> {
        let rows = dedup(rows);
        let mut tx = self.pool.begin().await?;
        let inserted = insert_receipts(&mut tx, &rows).await?;
        if !inserted.is_empty() {
            let new: HashSet<&str> = inserted.iter().map(String::as_str).collect();
            insert_items(&mut tx, &rows, &new).await?;
        }
        tx.rollback().await?;
        Ok(())
    }
}

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
