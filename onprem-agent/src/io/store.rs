//! The PostgreSQL adapter, the only code that runs SQL: the connection pool, the embedded
//! migrations, the one write the agent makes — a batch of receipts with their items and
//! chunk-ledger rows in one transaction, idempotent by `receipt_id`, a receipt stored under
//! another content fingerprint handled by `[write] on_conflict` (decided in [`plan`], its
//! statements in [`sql`]) — and the few reads that readiness, the throttle and `status` make,
//! and the status reporter's reads and marks of the ledger ([`report`]).
//!
//! Keeps the guarantees "Two consumers stay exactly once" (an id another writer took first is read
//! and planned again, so a late commit counts it as a duplicate), "Agents sharing a database do not
//! deadlock each other" (every write takes its ids, and its ledger rows, in one order) and
//! "`status` never scans `receipts`" (`RECENT_RATE` and `RECEIPTS_PER_MESSAGE` read the chunk
//! ledger through its index).
//!
//! Rows travel as arrays, one per column, through `INSERT … SELECT FROM UNNEST(…)`: one round
//! trip per table whatever the batch size, and a statement text that never changes (so it is
//! prepared once per connection). Decimals, dates and UUIDs are sent as text and cast by
//! PostgreSQL, which keeps money exact and the dependency tree small.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sluice_protocol::report::Rejection;
use sluice_protocol::{Fingerprint, Receipt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::config::{secret, DatabaseConfig, OnConflict, Target};

pub mod agents;
mod photos;
mod plan;
mod probe;
mod procedure;
mod report;
mod sql;
mod target;
mod timeouts;

/// Maps and sets keyed by receipt ids (and chunks) on the write path, hashed with foldhash:
/// std's SipHash of every 36-byte id, several times per receipt and write, was a twentieth of
/// the agent's CPU in a profile of the drain (BENCHMARKS.md). The ids are validated UUIDs and
/// the seed is random per process.
pub(crate) type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// See [`IdMap`].
pub(crate) type IdSet<K> = HashSet<K, foldhash::fast::RandomState>;

pub use probe::{ForegroundProbe, ProbeError, PROBE_STATEMENT_TIMEOUT};
pub use procedure::TargetProblem;

pub use timeouts::{is_lock_wait, WriteTimeouts};

/// Migrations embedded in the binary: the built-in target's (0001-0006 in `migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The procedure target's migrations (`migrations/procedure/`, from 10001): the ledger and the
/// fingerprints only. sqlx 0.8 keeps one `_sqlx_migrations` table per schema and cannot name
/// another, so both sets share it with versions that never collide, and this migrator ignores
/// the built-in target's versions (a schema first migrated for the built-in target can move to
/// a procedure; 0001-0003 stay as applied, their checksums untouched).
pub static PROCEDURE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/procedure")
};

mod error;

pub use error::StoreError;

/// One receipt to write, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub receipt: &'a Receipt,
    pub batch_id: &'a str,
    pub chunk_index: u32,
    /// The file of the photo the receipt carries, fetched and checked, to store in
    /// `receipt_photos` with it (`[photos] store = "database"`); `None` otherwise.
    pub photo: Option<&'a std::path::Path>,
}

/// One chunk-ledger row, with what became of the chunk's receipts. [`Store::write`] adds
/// what its own transaction stored and refused as conflicts for the chunk, and counts the
/// rest as duplicates: `receipts = stored + duplicates + conflicts + rejected`.
#[derive(Debug, Clone, Default)]
pub struct LedgerEntry {
    pub batch_id: String,
    pub chunk_index: u32,
    pub chunk_count: u32,
    pub receipts: u32,
    /// Stored by earlier transactions (the commits of a bisection).
    pub stored: u32,
    /// Conflicts found by earlier transactions.
    pub conflicts: u32,
    /// Refused by the database (dead-lettered), conflicts not included.
    pub rejected: u32,
    /// The refused receipts known so far, with the reason the dead-letter queue got.
    pub rejections: Vec<Rejection>,
    pub message_id: String,
}

/// A chunk: its batch id and index.
pub type ChunkKey = (String, u32);

/// What one committed write did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    /// Receipts newly stored.
    pub inserted: u64,
    /// Receipts that replaced a version with other content (`on_conflict = "update"`).
    pub updated: u64,
    /// Receipts already present with the same content (a redelivery, a re-upload) or repeated
    /// within the batch; with `on_conflict = "ignore"`, also those with other content.
    pub duplicates: u64,
    /// Receipts not written because their id is stored with other content
    /// (`on_conflict = "reject"`); the chunk-ledger rows of this write count them as rejected.
    pub conflicts: Vec<Conflict>,
    /// Receipts stored (inserted or replacing another version) per chunk.
    pub stored_by_chunk: IdMap<ChunkKey, u32>,
    /// Photo bytes written to `receipt_photos`.
    pub photo_bytes: u64,
}

/// An incoming receipt whose `receipt_id` is stored (or earlier in the same batch) with other
/// content, refused under `on_conflict = "reject"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The incoming version, not written.
    pub receipt: Receipt,
    pub batch_id: String,
    pub chunk_index: u32,
    /// The fingerprint of the version that stays.
    pub stored: Fingerprint,
    /// The fingerprint of the incoming version.
    pub incoming: Fingerprint,
}

impl Conflict {
    /// The reason the dead-letter queue and the status report give: machine-readable first
    /// word `conflict`, then both fingerprints.
    pub fn reason(&self) -> String {
        format!(
            "conflict: receipt {} is stored with other content; stored_sha256={} incoming_sha256={} (write.on_conflict = \"reject\")",
            self.receipt.receipt_id, self.stored, self.incoming
        )
    }

    /// The conflict as a status report names it.
    pub fn rejection(&self) -> Rejection {
        Rejection::new(self.receipt.receipt_id.clone(), &self.reason())
    }
}

/// The database handle: the writers' pool, and a pool of one connection of its own for the
/// readiness probe, so `/readyz` answers even while every writer connection is busy (or waits
/// on a lock).
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    on_conflict: OnConflict,
    target: Target,
    probe: PgPool,
    /// The status reporter's own connection (see [`report`]).
    report: PgPool,
    /// Whether new ledger rows wait for the status reporter (`[status]` is set); without it
    /// they are written as reported, so the reporter's index stays empty.
    reporting: bool,
    timeouts: WriteTimeouts,
}

/// `Debug` by hand: the pools' own `Debug` prints their connect options, password included.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool_size", &self.pool.size())
            .field("timeouts", &self.timeouts)
            .field("on_conflict", &self.on_conflict)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Rounds of one write: the first inserts without reading (every id taken for new), and an id
/// found taken then (stored before, or inserted by another writer between this write's read of
/// the stored fingerprints and its insert) is read and planned once more.
const WRITE_ROUNDS: usize = 4;

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
        let one = |name: &str| {
            PgPoolOptions::new()
                .max_connections(PROBE_CONNECTIONS)
                .min_connections(0)
                .acquire_timeout(timeouts.acquire)
                .idle_timeout(Some(Duration::from_secs(300)))
                .test_before_acquire(false)
                .connect_lazy_with(opts.clone().application_name(name))
        };
        Ok(Self {
            probe: one("sluice-agent-probe"),
            report: one("sluice-agent-status"),
            pool,
            reporting: false,
            timeouts,
            on_conflict: OnConflict::default(),
            target: Target::default(),
        })
    }

    /// A store on an existing pool (tests, benchmarks): the probe shares it, the write
    /// timeouts are the defaults and `on_conflict` is `reject`.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            probe: pool.clone(),
            report: pool.clone(),
            pool,
            reporting: false,
            timeouts: WriteTimeouts::default(),
            on_conflict: OnConflict::default(),
            target: Target::default(),
        }
    }

    /// What [`Store::write`] does with a receipt stored under another fingerprint.
    pub fn with_on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.on_conflict = on_conflict;
        self
    }

    /// Whether new ledger rows wait for the status reporter (`[status] queue_url` is set).
    pub fn with_status_reporting(mut self, reporting: bool) -> Self {
        self.reporting = reporting;
        self
    }

    /// Where [`Store::write`] puts new receipts (Sluice's tables by default).
    pub fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Whether the configured procedure exists with the expected signature and may be called
    /// (always `Ok` for Sluice's own tables).
    pub async fn verify_target(&self) -> Result<(), TargetProblem> {
        match &self.target {
            Target::Sluice => Ok(()),
            Target::Procedure(name) => procedure::verify(&self.pool, name).await,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The limits every write transaction runs under.
    pub fn timeouts(&self) -> WriteTimeouts {
        self.timeouts
    }

    /// Creates the schema if needed and applies the target's pending migrations.
    pub async fn migrate(&self, schema: &str) -> anyhow::Result<()> {
        use anyhow::Context as _;
        anyhow::ensure!(
            crate::config::valid_identifier(schema),
            "invalid schema name {schema:?}"
        );
        // Only when missing: `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even
        // when the schema exists, which a writer role given its own schema does not have.
        let exists: bool = sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
            .bind(schema)
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("looking for schema {schema}"))?;
        if !exists {
            self.pool
                .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                .await
                .with_context(|| format!("creating schema {schema}"))?;
        }
        let migrator = match self.target {
            Target::Sluice => &MIGRATOR,
            Target::Procedure(_) => &PROCEDURE_MIGRATOR,
        };
        migrator
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

    /// Whether `receipt_photos` holds photo `sha256` of receipt `receipt_id`.
    pub async fn photo_stored(&self, receipt_id: &str, sha256: &str) -> Result<bool, StoreError> {
        photos::stored(&self.pool, receipt_id, sha256).await
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

    /// Writes `rows` and `ledger` in one transaction. A row whose `receipt_id` is stored, or
    /// repeated earlier in `rows`, with the same content fingerprint is skipped as a duplicate;
    /// with another fingerprint it follows `on_conflict` (see `plan`). Items are written for
    /// the receipts this call inserts or replaces, so a redelivery adds nothing.
    pub async fn write(
        &self,
        rows: &[Row<'_>],
        ledger: &[LedgerEntry],
    ) -> Result<WriteOutcome, StoreError> {
        // Every receipt given counts: inserted, updated, a conflict, or a duplicate.
        let given = rows.len() as u64;
        let deadline = self.timeouts.deadline();
        match tokio::time::timeout(deadline, self.write_once(given, rows, ledger)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the write did not finish within {deadline:?} (no answer from PostgreSQL)"
            ))),
        }
    }

    /// One write transaction under the configured timeouts.
    async fn write_once(
        &self,
        given: u64,
        rows: &[Row<'_>],
        ledger: &[LedgerEntry],
    ) -> Result<WriteOutcome, StoreError> {
        let mut outcome = WriteOutcome::default();
        let mut pending: Vec<(Row<'_>, Fingerprint)> =
            rows.iter().map(|r| (*r, r.receipt.fingerprint())).collect();
        // Every writer takes its ids' row locks in one order, so agents sharing a database
        // wait for each other instead of deadlocking (40P01) on ids in two batches at once. A
        // stable sort: rows of one id keep their order, which the plan's "first wins" reads.
        pending.sort_by(|(a, _), (b, _)| a.receipt.receipt_id.cmp(&b.receipt.receipt_id));
        let mut tx = self.begin_write().await?;
        let mut target = target::Writes::new(&self.target);
        for round in 0..WRITE_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let (rows, fps): (Vec<Row<'_>>, Vec<Fingerprint>) = pending.iter().copied().unzip();
            // The first round plans as if no id were stored (the common case: a backlog of new
            // receipts), saving a read of every id; an id the insert finds taken is read and
            // planned again in the next round, like an id raced by another writer.
            let stored = if round == 0 {
                IdMap::default()
            } else {
                target.stored_fingerprints(&mut tx, &rows).await?
            };
            let plan = plan::resolve(&rows, &fps, &stored, self.on_conflict);
            let pick = |idx: &[usize]| -> Vec<(Row<'_>, Fingerprint)> {
                idx.iter().map(|&i| (rows[i], fps[i])).collect()
            };
            let updates = pick(&plan.updates);
            if !updates.is_empty() {
                target.update(&mut tx, &updates).await?;
            }
            let inserts = pick(&plan.inserts);
            let inserted: IdSet<String> = if inserts.is_empty() {
                IdSet::default()
            } else {
                target.insert(&mut tx, &inserts).await?
            };
            let (written, taken): (Vec<_>, Vec<_>) = inserts
                .into_iter()
                .partition(|(r, _)| inserted.contains(&r.receipt.receipt_id));
            target.contents(&mut tx, &updates, &written).await?;
            if matches!(self.target, Target::Sluice) {
                outcome.photo_bytes += photos::write(&mut tx, &updates, &written).await?;
            }
            // Every row of an id found taken goes to the next round; this round counts the rest.
            let taken: IdSet<&str> = taken
                .iter()
                .map(|(r, _)| r.receipt.receipt_id.as_str())
                .collect();
            let plan = plan.without(&rows, &taken);
            // A batch holds a few chunks: count per chunk in a short list first, so the map's
            // owned key is made once per chunk, not once per receipt.
            let mut per_chunk: Vec<(&str, u32, u32)> = Vec::new();
            for &i in &plan.stored {
                let r = rows[i];
                match per_chunk
                    .iter_mut()
                    .find(|(b, c, _)| *c == r.chunk_index && *b == r.batch_id)
                {
                    Some((_, _, n)) => *n += 1,
                    None => per_chunk.push((r.batch_id, r.chunk_index, 1)),
                }
            }
            for (batch_id, chunk_index, n) in per_chunk {
                *outcome
                    .stored_by_chunk
                    .entry((batch_id.to_owned(), chunk_index))
                    .or_default() += n;
            }
            outcome.inserted += written.len() as u64;
            outcome.updated += plan.replaced.len() as u64;
            outcome
                .conflicts
                .extend(plan.conflicts.iter().map(|&(i, stored)| Conflict {
                    receipt: rows[i].receipt.clone(),
                    batch_id: rows[i].batch_id.to_owned(),
                    chunk_index: rows[i].chunk_index,
                    stored,
                    incoming: fps[i],
                }));
            pending.retain(|(r, _)| taken.contains(r.receipt.receipt_id.as_str()));
        }
        target.finish(&mut tx).await?;
        if !ledger.is_empty() {
            let mut ledger = sql::with_outcome(ledger, &outcome);
            // In one order too, for a message two agents hold at once (a redelivery).
            ledger.sort_by(|a, b| (&a.batch_id, a.chunk_index).cmp(&(&b.batch_id, b.chunk_index)));
            sql::insert_ledger(&mut tx, &ledger, self.reporting).await?;
        }
        tx.commit().await?;
        // Still raced after every round: stored by another writer, counted as duplicates.
        outcome.duplicates = given
            .saturating_sub(outcome.inserted + outcome.updated)
            .saturating_sub(outcome.conflicts.len() as u64);
        Ok(outcome)
    }

    /// Inserts `rows` (and their items) in a transaction that is rolled back: would the
    /// database take them? Leaves nothing behind but what is not transactional (for a
    /// procedure target, the procedure runs on the rows: a sequence it advances stays
    /// advanced).
    pub async fn try_write(&self, rows: &[Row<'_>]) -> Result<(), StoreError> {
        if let Target::Procedure(name) = &self.target {
            let mut tx = self.begin_write().await?;
            procedure::canary(&mut tx, name, rows).await?;
            tx.rollback().await?;
            return Ok(());
        }
        let rows: Vec<(Row<'_>, Fingerprint)> = dedup(rows)
            .into_iter()
            .map(|r| (r, r.receipt.fingerprint()))
            .collect();
        let mut tx = self.begin_write().await?;
        let inserted = sql::insert_receipts(&mut tx, &rows).await?;
        let with_items: Vec<Row<'_>> = rows
            .iter()
            .filter(|(r, _)| inserted.contains(&r.receipt.receipt_id))
            .map(|(r, _)| *r)
            .collect();
        sql::replace_items(&mut tx, &[], &with_items).await?;
        tx.rollback().await?;
        Ok(())
    }

    /// Begins a write transaction with the statement and lock timeouts set for it alone (a
    /// pooled connection carries no setting to its next user).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin_with(begin_write_sql(self.timeouts)).await?)
    }
}

/// `BEGIN` with the statement and lock timeouts of one write transaction, in the same round
/// trip (one simple query; the values are whole milliseconds from the validated config).
fn begin_write_sql(t: WriteTimeouts) -> String {
    format!(
        "BEGIN; SET LOCAL statement_timeout = '{}ms'; SET LOCAL lock_timeout = '{}ms'",
        t.statement.as_millis(),
        t.lock.as_millis()
    )
}

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
    let mut seen = IdSet::with_capacity_and_hasher(rows.len(), Default::default());
    rows.iter()
        .filter(|r| seen.insert(r.receipt.receipt_id.as_str()))
        .copied()
        .collect()
}
