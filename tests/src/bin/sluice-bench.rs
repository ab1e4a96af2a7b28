//! `make bench`: Sluice's figures, printed as one table. Not a test: nothing is asserted.
//!
//! Against a throwaway PostgreSQL cluster of its own ([`PrivatePostgres`]) and the local SQS
//! server (`deploy/local/stack.sh`):
//! 1. write path — receipts/s committed by the agent's batched write (throttle off, one
//!    connection, 500 receipts per transaction) for each candidate statement shape, against a
//!    raw `COPY` of the same rows into the same tables;
//! 2. a backlog uploaded through the ingest API, drained by the real `sluice-agent` binary
//!    (release build) while `pgbench` runs a fixed-rate OLTP workload alongside: foreground
//!    p50/p99 idle, unthrottled, adaptive and at three fixed rates, with the drain rate each
//!    achieves; the fixed-rate windows double as the rate-accuracy runs (measured/configured);
//!    the rate is switched between windows by rewriting `agent.toml` and sending SIGHUP;
//! 3. the agent's peak RSS (VmHWM) over the whole drain.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use sluice_agent::{LedgerEntry, Row, Store};
use sluice_e2e::gen::Generator;
use sluice_e2e::{AgentProcess, EnvOptions, PrivatePostgres, TestEnv};
use sluice_protocol::Receipt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, Executor as _, PgPool};

#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Sluice benchmarks: prints one table.")]
struct Args {
    /// Smaller backlog and 10 s windows (about 3 minutes instead of about 12).
    #[arg(long)]
    quick: bool,
    /// Receipts in the backlog the agent drains (default 800,000; 200,000 with --quick).
    #[arg(long)]
    backlog: Option<usize>,
    /// Seconds per measured window (default 30; 10 with --quick).
    #[arg(long)]
    window: Option<u64>,
    /// Receipts per write-path candidate (default 50,000; 10,000 with --quick).
    #[arg(long)]
    write_rows: Option<usize>,
}

/// Receipts per transaction: the agent's default `batch.max_rows`.
const BATCH: usize = 500;
/// Fixed rates whose accuracy is measured (and whose foreground latency is compared).
const FIXED_RATES: [u32; 3] = [500, 1000, 2000];
/// The foreground workload: pgbench's simple-update script at a fixed transaction rate, so its
/// latency shows the database's headroom rather than pgbench's own saturation.
const PGBENCH_TPS: u32 = 200;
const PGBENCH_CLIENTS: u32 = 4;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

struct Table(Vec<(String, String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>, note: impl Into<String>) {
        let (a, b, c) = (what.into(), figure.into(), note.into());
        eprintln!("  {a}: {b} {c}");
        self.0.push((a, b, c));
    }

    fn print(&self) {
        let w0 = self
            .0
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0);
        let w1 = self
            .0
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0);
        println!("| {:w0$} | {:>w1$} | note |", "measure", "figure");
        println!("|{}|{}:|---|", "-".repeat(w0 + 2), "-".repeat(w1 + 1));
        for (a, b, c) in &self.0 {
            println!("| {a:w0$} | {b:>w1$} | {c} |");
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let backlog = args
        .backlog
        .unwrap_or(if args.quick { 200_000 } else { 800_000 });
    let window = Duration::from_secs(args.window.unwrap_or(if args.quick { 10 } else { 30 }));
    let write_rows = args
        .write_rows
        .unwrap_or(if args.quick { 10_000 } else { 50_000 });
    let started = Instant::now();
    let mut table = Table(Vec::new());

    eprintln!("bench: starting a throwaway PostgreSQL cluster");
    let pg = PrivatePostgres::start().await?;
    let version: String = {
        let mut c = sqlx::PgConnection::connect(&pg.url()).await?;
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut c)
            .await?
    };
    println!("# Sluice benchmarks");
    println!();
    println!("{}", machine(&version));
    println!();

    // 1. Write path.
    eprintln!("bench: write path, {write_rows} receipts per candidate");
    let receipts = generate(write_rows, 1);
    let raw = raw_copy(&pg, &receipts).await?;
    let unnest = batched(&pg, &receipts, Shape::Unnest, BATCH).await?;
    let staged = batched(&pg, &receipts, Shape::CopyStaging, BATCH).await?;
    let unnest_big = batched(&pg, &receipts, Shape::Unnest, 4 * BATCH).await?;
    table.row(
        "write path: raw COPY (receipts + items, one stream)",
        format!("{raw:.0}/s"),
        "no conflict handling, no ledger: the ceiling",
    );
    table.row(
        format!(
            "write path: INSERT … SELECT FROM UNNEST … ON CONFLICT (kept), {BATCH} per transaction"
        ),
        format!("{unnest:.0}/s"),
        format!("{:.2} × raw COPY", unnest / raw),
    );
    table.row(
        format!(
            "write path: COPY into staging, INSERT … SELECT … ON CONFLICT, {BATCH} per transaction"
        ),
        format!("{staged:.0}/s"),
        format!("{:.2} × raw COPY", staged / raw),
    );
    table.row(
        format!("write path: UNNEST, {} receipts per transaction", 4 * BATCH),
        format!("{unnest_big:.0}/s"),
        format!(
            "{:.2} × raw COPY (batch.max_rows = {})",
            unnest_big / raw,
            4 * BATCH
        ),
    );
    drop(receipts);

    // The ingest side: API throughput and billed SQS requests, by message compression.
    let ingest_receipts = if args.quick { 20_000 } else { 50_000 };
    eprintln!("bench: ingest API, {ingest_receipts} receipts per compression");
    let ingest_env = TestEnv::new().await?;
    let receipts = Generator::new(3).receipts(ingest_receipts);
    for f in sluice_e2e::ingest_bench::measure(&ingest_env, &receipts).await? {
        let c = f.compression;
        table.row(
            format!("ingest: parse + validate + split + encode, compression {c}"),
            format!("{:.0}/s", f.cpu_receipts_per_second),
            "one core, no network: the Lambda's own work",
        );
        table.row(
            format!("ingest: accepted through the API into local SQS, compression {c}"),
            format!("{:.0}/s", f.api_receipts_per_second),
            "requests of 5,000, 4 in parallel; moto on the same two cores is the bottleneck",
        );
        table.row(
            format!("SQS billed requests per million receipts, compression {c}"),
            format!("{:.0}", f.billed_per_million),
            format!(
                "send + receive + delete, each 64 KiB of payload billed as a request; \
                 {:.0} messages/M of {:.0} KiB mean",
                f.messages_per_million,
                f.mean_message_bytes / 1024.0
            ),
        );
    }
    drop(receipts);
    ingest_env.cleanup().await;

    // 2. The drain, with pgbench alongside.
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 120,
        database_url: Some(pg.url()),
        ..EnvOptions::default()
    })
    .await?;
    eprintln!("bench: uploading a backlog of {backlog} receipts through the ingest API");
    upload_backlog(&env, backlog).await?;
    let oltp = Pgbench::init(&pg).await?;

    eprintln!("bench: foreground alone");
    let idle = oltp.run(window).await?;
    table.row(
        "foreground p50 / p99, idle",
        idle.show(),
        format!("pgbench -N, {PGBENCH_CLIENTS} clients at {PGBENCH_TPS} tx/s"),
    );

    let agent = BenchAgent::spawn(&env, Throttle::Fixed(FIXED_RATES[0])).await?;
    let mut runs: Vec<(String, Latency, f64)> = Vec::new();
    // Cheapest on the backlog first, so the unthrottled window still has one.
    let plan = FIXED_RATES
        .iter()
        .map(|r| Throttle::Fixed(*r))
        .chain([Throttle::Adaptive, Throttle::Fixed(1_000_000)]);
    for throttle in plan {
        agent.set(&env, throttle).await?;
        // Let the rate settle (adaptive: let the controller find its level).
        let warmup = match throttle {
            Throttle::Adaptive => window.min(Duration::from_secs(20)),
            Throttle::Fixed(_) => Duration::from_secs(3),
        };
        tokio::time::sleep(warmup).await;
        eprintln!("bench: foreground while draining, {}", throttle.label());
        let before = agent.counters().await;
        let (latency, samples) = tokio::join!(oltp.run(window), agent.sample_rows(window));
        let latency = latency?;
        let after = agent.counters().await;
        let rate = commit_rate(&samples);
        let commit_ms = 1000.0 * (after.1 - before.1) / (after.2 - before.2).max(1.0);
        let in_force = agent
            .metric("sluice_rate_rows_per_second")
            .await
            .unwrap_or(0.0);
        let (visible, _, _) = env.depth(&env.queue_url).await?;
        let note = if visible == 0 {
            "backlog ran out during the window: rate understated".to_owned()
        } else {
            String::new()
        };
        table.row(
            format!("foreground p50 / p99, draining {}", throttle.label()),
            latency.show(),
            format!(
                "{:.2} × idle p99; drain {rate:.0} receipts/s; agent commit {commit_ms:.0} ms mean; \
                 rate in force at the end {in_force:.0}/s {note}",
                latency.p99 / idle.p99
            ),
        );
        if let Throttle::Fixed(r) = throttle {
            if r < 1_000_000 {
                runs.push((format!("{r}/s"), latency, rate));
            }
        }
        if let Throttle::Adaptive = throttle {
            runs.push(("adaptive".into(), latency, rate));
        }
    }
    for (name, _, rate) in runs.iter().filter(|r| r.0 != "adaptive") {
        let configured: f64 = name.trim_end_matches("/s").parse().unwrap_or(f64::NAN);
        table.row(
            format!("rate accuracy at {name}"),
            format!("{:.3}", rate / configured),
            format!("measured/configured over {} s", window.as_secs()),
        );
    }
    let rss = agent.peak_rss_kib()?;
    table.row(
        format!("agent peak RSS, draining a backlog of {backlog} receipts"),
        format!("{:.0} MiB", rss as f64 / 1024.0),
        "VmHWM; batch.max_in_flight_rows = 10000",
    );
    agent.stop().await?;
    std::fs::remove_dir_all(std::env::temp_dir().join(&env.name)).ok();
    std::fs::remove_dir_all(&oltp.dir).ok();
    env.cleanup().await;
    drop(pg);

    println!();
    table.print();
    println!();
    println!("(total {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Receipts per second between the first and the last commit seen in the samples. Commits
/// come in whole batches, so counting from the window's edges would be off by up to a batch
/// at each end; measured from commit to commit it is not.
fn commit_rate(samples: &[(f64, f64)]) -> f64 {
    let changes: Vec<(f64, f64)> = samples
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .map(|w| w[1])
        .collect();
    match (changes.first(), changes.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / (b.0 - a.0),
        _ => 0.0,
    }
}

fn machine(pg_version: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.0} GiB", k / 1024.0 / 1024.0));
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{date}; {cpu}, {cores} cores, {mem} RAM; PostgreSQL {pg_version}")
}

fn generate(n: usize, seed: u64) -> Vec<Receipt> {
    let mut g = Generator::new(seed);
    (0..n)
        .filter_map(|_| serde_json::from_value(g.receipt()).ok())
        .collect()
}

/// A fresh database on the cluster with the agent's schema, and a one-connection pool on it.
async fn fresh_db(pg: &PrivatePostgres, name: &str) -> anyhow::Result<PgPool> {
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let opts: PgConnectOptions = sluice_e2e::with_database(&pg.url(), name).parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts.options([("search_path", "sluice")]))
        .await?;
    Store::from_pool(pool.clone()).migrate("sluice").await?;
    Ok(pool)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Unnest,
    CopyStaging,
}

/// Receipts/s committed in 500-receipt transactions, each with its ledger rows.
async fn batched(
    pg: &PrivatePostgres,
    receipts: &[Receipt],
    shape: Shape,
    batch: usize,
) -> anyhow::Result<f64> {
    let pool = fresh_db(pg, &format!("wp_{shape:?}_{batch}").to_lowercase()).await?;
    let store = Store::from_pool(pool.clone());
    let batch_id = uuid::Uuid::new_v4().to_string();
    if shape == Shape::CopyStaging {
        pool.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_receipts (LIKE receipts INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
             CREATE TEMP TABLE IF NOT EXISTS stage_items (LIKE receipt_items) ON COMMIT DELETE ROWS",
        )
        .await?;
    }
    let t = Instant::now();
    let mut inserted = 0u64;
    for (i, chunk) in receipts.chunks(batch).enumerate() {
        let index = u32::try_from(i)?;
        let rows: Vec<Row<'_>> = chunk
            .iter()
            .map(|r| Row {
                receipt: r,
                batch_id: &batch_id,
                chunk_index: index,
            })
            .collect();
        let ledger = LedgerEntry {
            batch_id: batch_id.clone(),
            chunk_index: index,
            chunk_count: 1,
            receipts: u32::try_from(chunk.len())?,
            rejected: 0,
            message_id: format!("m{i}"),
        };
        inserted += match shape {
            Shape::Unnest => store.write(&rows, &[ledger]).await?.inserted,
            Shape::CopyStaging => copy_staging_write(&pool, &rows, &ledger).await?,
        };
    }
    let secs = t.elapsed().as_secs_f64();
    if inserted != receipts.len() as u64 {
        bail!("{shape:?} inserted {inserted} of {}", receipts.len());
    }
    pool.close().await;
    Ok(receipts.len() as f64 / secs)
}

const RECEIPT_COLUMNS: &str =
    "receipt_id, tenant_id, submitted_by, merchant, issued_on, currency, total, tax, \
     category, image_key, image_sha256, image_bytes, metadata, batch_id, chunk_index";
const ITEM_COLUMNS: &str = "receipt_id, line_no, description, quantity, unit_price, amount";

/// The candidate: COPY the batch into session-temporary staging tables, then one statement
/// inserts the new receipts and the items of exactly those.
async fn copy_staging_write(
    pool: &PgPool,
    rows: &[Row<'_>],
    ledger: &LedgerEntry,
) -> anyhow::Result<u64> {
    let (receipts, items) = copy_text(rows.iter().map(|r| (r.receipt, r.batch_id, r.chunk_index)));
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY stage_receipts ({RECEIPT_COLUMNS}) FROM STDIN"
        ))
        .await?;
    copy.send(receipts.into_bytes()).await?;
    copy.finish().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY stage_items ({ITEM_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(items.into_bytes()).await?;
    copy.finish().await?;
    let inserted: i64 = sqlx::query_scalar(&format!(
        "WITH ins AS (
            INSERT INTO receipts ({RECEIPT_COLUMNS}) SELECT {RECEIPT_COLUMNS} FROM stage_receipts
            ON CONFLICT (receipt_id) DO NOTHING RETURNING receipt_id),
         items AS (
            INSERT INTO receipt_items ({ITEM_COLUMNS}) SELECT {ITEM_COLUMNS} FROM stage_items
            WHERE receipt_id IN (SELECT receipt_id FROM ins) ON CONFLICT DO NOTHING)
         SELECT count(*) FROM ins"
    ))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO chunks (batch_id, chunk_index, chunk_count, receipts, rejected, message_id)
         VALUES ($1::uuid, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&ledger.batch_id)
    .bind(i32::try_from(ledger.chunk_index)?)
    .bind(i32::try_from(ledger.chunk_count)?)
    .bind(i32::try_from(ledger.receipts)?)
    .bind(i32::try_from(ledger.rejected)?)
    .bind(&ledger.message_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(u64::try_from(inserted)?)
}

/// Rows in COPY's text format: (receipts, items).
fn copy_text<'a>(rows: impl Iterator<Item = (&'a Receipt, &'a str, u32)>) -> (String, String) {
    let mut rs = String::new();
    let mut is = String::new();
    for (r, batch_id, chunk) in rows {
        let metadata = r
            .metadata
            .as_ref()
            .map(|m| serde_json::Value::Object(m.clone()).to_string());
        let bytes = r.image.as_ref().map(|i| i.bytes.to_string());
        let chunk = chunk.to_string();
        let fields: [Option<&str>; 15] = [
            Some(&r.receipt_id),
            Some(&r.tenant_id),
            r.submitted_by.as_deref(),
            Some(&r.merchant),
            Some(&r.issued_on),
            Some(&r.currency),
            Some(r.total.as_str()),
            r.tax.as_ref().map(|t| t.as_str()),
            r.category.as_deref(),
            r.image.as_ref().map(|i| i.key.as_str()),
            r.image.as_ref().map(|i| i.sha256.as_str()),
            bytes.as_deref(),
            metadata.as_deref(),
            Some(batch_id),
            Some(&chunk),
        ];
        push_line(&mut rs, &fields);
        for (n, item) in r.items.iter().enumerate() {
            let line = (n + 1).to_string();
            push_line(
                &mut is,
                &[
                    Some(&r.receipt_id),
                    Some(&line),
                    Some(&item.description),
                    Some(item.quantity.as_str()),
                    Some(item.unit_price.as_str()),
                    Some(item.amount.as_str()),
                ],
            );
        }
    }
    (rs, is)
}

fn push_line(out: &mut String, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match f {
            None => out.push_str("\\N"),
            Some(s) => {
                for c in s.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out.push('\n');
}

/// Receipts/s of one plain COPY per table, all rows, one transaction.
async fn raw_copy(pg: &PrivatePostgres, receipts: &[Receipt]) -> anyhow::Result<f64> {
    let pool = fresh_db(pg, "wp_raw_copy").await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let t = Instant::now();
    let (rs, is) = copy_text(
        receipts
            .iter()
            .enumerate()
            .map(|(i, r)| (r, batch_id.as_str(), u32::try_from(i / BATCH).unwrap_or(0))),
    );
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY receipts ({RECEIPT_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(rs.into_bytes()).await?;
    copy.finish().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY receipt_items ({ITEM_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(is.into_bytes()).await?;
    copy.finish().await?;
    tx.commit().await?;
    let secs = t.elapsed().as_secs_f64();
    pool.close().await;
    Ok(receipts.len() as f64 / secs)
}

async fn upload_backlog(env: &TestEnv, n: usize) -> anyhow::Result<()> {
    let ingest = env
        .start_ingest(&[
            ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "500"),
            ("SLUICE_COMPRESSION", "zstd"),
        ])
        .await?;
    // Under the API's 6 MB body limit.
    let per_request = 5_000;
    let mut g = Generator::new(2);
    let mut sent = 0;
    while sent < n {
        let k = per_request.min(n - sent);
        let (status, answer) = ingest.upload_json(&g.receipts(k)).await?;
        if status != 202 {
            bail!("upload answered {status}: {answer}");
        }
        sent += k;
        eprint!("\r  {sent}/{n} receipts on the queue");
    }
    eprintln!();
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    tps: f64,
}

impl Latency {
    fn show(&self) -> String {
        format!(
            "{:.1} / {:.1} ms ({:.0} tx/s)",
            self.p50, self.p99, self.tps
        )
    }
}

struct Pgbench {
    exe: PathBuf,
    port: u16,
    dir: PathBuf,
}

impl Pgbench {
    async fn init(pg: &PrivatePostgres) -> anyhow::Result<Self> {
        let exe = pg.bin_dir().join("pgbench");
        let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
        admin.execute("DROP DATABASE IF EXISTS oltp").await?;
        admin.execute("CREATE DATABASE oltp").await?;
        let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let me = Self {
            exe,
            port: pg.port(),
            dir,
        };
        let out = me
            .command()
            .args(["-i", "-q", "-s", "10", "oltp"])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "pgbench -i failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(me)
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.exe);
        c.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &self.port.to_string(),
        ])
        .stdin(Stdio::null())
        .current_dir(&self.dir);
        c
    }

    /// Runs the foreground workload for `d`; latency per transaction counts from its scheduled
    /// start (pgbench's own convention under `--rate`), so waiting for the database counts.
    async fn run(&self, d: Duration) -> anyhow::Result<Latency> {
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let out = self
            .command()
            .args(["-n", "-N", "-l", "--log-prefix=tx"])
            .args(["-c", &PGBENCH_CLIENTS.to_string(), "-j", "2"])
            .args([
                "-R",
                &PGBENCH_TPS.to_string(),
                "-T",
                &d.as_secs().to_string(),
            ])
            .arg("oltp")
            .output()
            .await?;
        if !out.status.success() {
            bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut lat = Vec::new();
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let text = std::fs::read_to_string(e.path())?;
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                // client tx time_us script epoch epoch_us [lag_us]
                let time: f64 = f.get(2).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                let lag: f64 = f.get(6).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                if time.is_finite() {
                    lat.push((time + lag) / 1000.0);
                }
            }
        }
        if lat.is_empty() {
            bail!("pgbench logged no transactions in {}", self.dir.display());
        }
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        Ok(Latency {
            p50: q(0.50),
            p99: q(0.99),
            tps: lat.len() as f64 / d.as_secs_f64(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Throttle {
    Fixed(u32),
    Adaptive,
}

impl Throttle {
    fn label(&self) -> String {
        match self {
            Throttle::Fixed(r) if *r >= 1_000_000 => "unthrottled".into(),
            Throttle::Fixed(r) => format!("at a fixed {r}/s"),
            Throttle::Adaptive => "adaptive".into(),
        }
    }

    fn toml(&self) -> String {
        match self {
            Throttle::Fixed(r) => format!(
                "[throttle]\nmode = \"fixed\"\nrows_per_second = {r}\nburst = {}\n",
                (*r).max(1000)
            ),
            Throttle::Adaptive => {
                "[throttle]\nmode = \"adaptive\"\nrows_per_second = 20000\nburst = 2000\n\
                 min_rows_per_second = 200\ntarget_commit_ms = 30\nincrease_rows_per_second = 250\n"
                    .into()
            }
        }
    }
}

/// The release `sluice-agent` binary on a config file rewritten (and SIGHUPed) per window.
struct BenchAgent {
    process: AgentProcess,
    pid: u32,
    config: PathBuf,
    metrics_url: String,
}

impl BenchAgent {
    fn toml(env: &TestEnv, t: Throttle, port: u16) -> String {
        env.agent_toml(&format!(
            "[queue]\nvisibility_timeout_seconds = 120\n[database]\nmax_connections = 2\n{}\
             [batch]\nmax_rows = {BATCH}\nmax_wait_ms = 50\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [log]\nformat = \"json\"\nlevel = \"warn\"",
            t.toml()
        ))
    }

    async fn spawn(env: &TestEnv, t: Throttle) -> anyhow::Result<Self> {
        let port = sluice_e2e::free_local_addr()?.port();
        let dir = std::env::temp_dir().join(&env.name);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("agent.toml");
        std::fs::write(&config, Self::toml(env, t, port))?;
        let process = env.spawn_agent_process(&config, &[])?;
        let pid = process.child.id().context("the agent exited at once")?;
        let agent = Self {
            process,
            pid,
            config,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.metric("sluice_rate_rows_per_second").await.is_none() {
            if Instant::now() > deadline {
                bail!("the agent did not answer on {}", agent.metrics_url);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(agent)
    }

    async fn set(&self, env: &TestEnv, t: Throttle) -> anyhow::Result<()> {
        let port = self
            .metrics_url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        std::fs::write(&self.config, Self::toml(env, t, port))?;
        self.process.signal("HUP")
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(&self.metrics_url)
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// `sluice_rows_written_total` every 50 ms for `d`: (seconds since the start, receipts).
    async fn sample_rows(&self, d: Duration) -> Vec<(f64, f64)> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        while t0.elapsed() < d {
            if let Some(v) = self.metric("sluice_rows_written_total").await {
                out.push((t0.elapsed().as_secs_f64(), v));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out
    }

    /// (receipts written, commit seconds summed, commits).
    async fn counters(&self) -> (f64, f64, f64) {
        (
            self.metric("sluice_rows_written_total")
                .await
                .unwrap_or(0.0),
            self.metric("sluice_commit_seconds_sum")
                .await
                .unwrap_or(0.0),
            self.metric("sluice_commit_seconds_count")
                .await
                .unwrap_or(0.0),
        )
    }

    fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.process.terminate(Duration::from_secs(60)).await?;
        Ok(())
    }
}
