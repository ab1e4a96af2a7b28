//! `make bench`: Sluice's figures, printed as one table. Not a test: nothing is asserted.
//!
//! Against a throwaway PostgreSQL cluster of its own ([`PrivatePostgres`]) and the local SQS
//! server (`deploy/local/stack.sh`):
//! 1. write path — receipts/s committed by the agent's batched write (throttle off, one
//!    connection, 500 receipts per transaction) for each candidate statement shape, against a
//!    raw `COPY` of the same rows into the same tables;
//! 2. a backlog uploaded through the ingest API, drained by the real `sluice-agent` binary
//!    (release build) while `pgbench` runs a fixed-rate OLTP workload alongside: foreground
//!    p50/p99 idle, unthrottled and at three fixed rates, with the drain rate each achieves;
//!    the fixed-rate windows double as the rate-accuracy runs (measured/configured); then
//!    (`protect`) the fastest fixed rate that keeps the foreground p99 within 1.5 × idle,
//!    bisected, and adaptive mode with `target_latency_ratio = 1.5` beside it; the rate is
//!    switched between windows by rewriting `agent.toml` and sending SIGHUP;
//! 3. the agent's peak RSS (VmHWM) over the whole drain (1,000,000 receipts by default);
//! 4. the agent's peak RSS draining a backlog of the largest valid receipts, against its byte
//!    budget + 64 MiB (`memory`);
//! 5. the drain rate into each write target, Sluice's own tables and the example customer
//!    procedure (`targets`);
//! 6. end to end, unthrottled, no foreground: the agent's receipts/s and CPU per receipt
//!    against raw COPY, and the Vector peer beside it when `VECTOR_BIN` is set (`peer`);
//! 7. the rate accuracy of three agents sharing one budget (`shared_budget`);
//! 8. receipt photos: photos/s and MB/s end to end, unthrottled by store and at a byte budget,
//!    and the agent's peak RSS draining photos of 10 MiB (`photos`);
//! 9. the status traffic: SQS and DynamoDB requests per million receipts that reporting an
//!    upload's fate adds, beside the data path's, and the time from the agent's commit to
//!    `stored` on the status endpoint (`status`);
//! 10. `sluice-ingest upload --photos` against the local S3: photos/s and MB/s for 200 photos
//!     of 1 MB (`photo_upload`).
//!
//! `write_path` measures 1, `drain` measures 2 and 3 with `pgbench` as the foreground; the
//! ingest rows come from the harness (`sluice_e2e::ingest_bench`).

mod drain;
mod ingest_bomb;
mod memory;
mod peer;
mod pgbench;
mod photo_upload;
mod photos;
mod pinned;
mod procfs;
mod protect;
mod shared_budget;
mod status;
mod targets;
mod write_path;

use std::time::{Duration, Instant};

use clap::Parser;
use sluice_e2e::gen::Generator;
use sluice_e2e::{PrivatePostgres, TestEnv};
use sqlx::Connection as _;

#[derive(Debug, Parser)]
#[command(name = "sluice-bench", about = "Sluice benchmarks: prints one table.")]
struct Args {
    /// Smaller backlog and 10 s windows (about 3 minutes instead of about 12).
    #[arg(long)]
    quick: bool,
    /// Receipts in the backlog the agent drains (default 1,000,000; 200,000 with --quick).
    #[arg(long)]
    backlog: Option<usize>,
    /// Seconds per measured window (default 30; 10 with --quick).
    #[arg(long)]
    window: Option<u64>,
    /// Bisection steps for the fastest fixed rate within the foreground target (default 5; 3
    /// with --quick).
    #[arg(long)]
    steps: Option<u32>,
    /// Receipts per write-path candidate (default 50,000; 10,000 with --quick).
    #[arg(long)]
    write_rows: Option<usize>,
    /// Largest receipts (about 1 MiB each) in the memory backlog (default 300; 90 with --quick).
    #[arg(long)]
    memory_receipts: Option<usize>,
    /// Measure only the agent's memory against its byte budget (row 4), skipping the rest.
    #[arg(long)]
    only_memory: bool,
    /// Receipts drained into each write target (default 100,000; 20,000 with --quick).
    #[arg(long)]
    target_receipts: Option<usize>,
    /// Measure only the drain rate by write target (rows 5), skipping the rest.
    #[arg(long)]
    only_targets: bool,
    /// Measure only the rate accuracy of three agents sharing one budget (row 7).
    #[arg(long)]
    only_shared_budget: bool,
    /// Receipts uploaded and drained for the status traffic (default 100,000; 50,000 with
    /// --quick).
    #[arg(long)]
    status_receipts: Option<usize>,
    /// Measure only the status traffic (row 9), skipping the rest.
    #[arg(long)]
    only_status: bool,
    /// Measure only the photo rows (row 8), skipping the rest.
    #[arg(long)]
    only_photos: bool,
    /// Measure only the speed rows: the write path against raw COPY, and the end-to-end
    /// drain (with the Vector peer when `VECTOR_BIN` is set).
    #[arg(long)]
    only_speed: bool,
    /// Measure only the protection rows: the drain beside pgbench (bisected fixed rate and
    /// adaptive).
    #[arg(long)]
    only_protection: bool,
    /// Photos of 1 MB uploaded by `upload --photos` (default 200; 50 with --quick).
    #[arg(long)]
    upload_photos: Option<usize>,
    /// Measure only `upload --photos` against the local S3 (row 10).
    #[arg(long)]
    only_photo_upload: bool,
    /// Measure only protection on the database's own core (pinned, durable cluster, ABAB).
    #[arg(long)]
    only_pinned: bool,
    /// Pinned: idle/draining pairs per setting (default 3; 1 with --quick).
    #[arg(long)]
    pinned_pairs: Option<u32>,
    /// Pinned: seconds per window (default 60; 15 with --quick).
    #[arg(long)]
    pinned_window: Option<u64>,
    /// Pinned: pgbench's -R for each foreground, comma-separated (default 200,400; 200 with
    /// --quick).
    #[arg(long)]
    pinned_foregrounds: Option<String>,
    /// Pinned: the agent's settings, comma-separated kind:value with kind fixed (receipts/s),
    /// share (throttle.max_database_share) or adaptive (target_latency_ratio). Default
    /// fixed:250,fixed:1000,share:0.1,share:0.2,adaptive:1.5,adaptive:2.0.
    #[arg(long)]
    pinned_settings: Option<String>,
    /// Pinned: receipts in its backlog (default 1,500,000; 100,000 with --quick).
    #[arg(long)]
    pinned_backlog: Option<usize>,
}

/// Receipts per transaction: the agent's default `batch.max_rows`.
pub(crate) const BATCH: usize = 500;
/// Fixed rates whose accuracy is measured (and whose foreground latency is compared).
pub(crate) const FIXED_RATES: [u32; 3] = [500, 1000, 2000];
/// The foreground workload: pgbench's simple-update script at a fixed transaction rate, so its
/// latency shows the database's headroom rather than pgbench's own saturation.
pub(crate) const PGBENCH_TPS: u32 = 200;
pub(crate) const PGBENCH_CLIENTS: u32 = 4;

/// The parts of the bench, each one or more rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The write path against raw COPY, and the end-to-end drain beside the peer.
    Speed,
    /// The ingest API's throughput and billed SQS requests.
    Ingest,
    /// The drain beside pgbench: bisected fixed rate, adaptive.
    Protection,
    Memory,
    Targets,
    SharedBudget,
    Photos,
    Status,
    PhotoUpload,
    /// Protection on the database's own core: pinned, durable, ABAB.
    Pinned,
}

impl Args {
    /// Whether `part` runs: every part, unless one `--only-…` flag names one.
    fn runs(&self, part: Part) -> bool {
        let only = [
            (self.only_memory, Part::Memory),
            (self.only_targets, Part::Targets),
            (self.only_shared_budget, Part::SharedBudget),
            (self.only_status, Part::Status),
            (self.only_photos, Part::Photos),
            (self.only_speed, Part::Speed),
            (self.only_protection, Part::Protection),
            (self.only_photo_upload, Part::PhotoUpload),
            (self.only_pinned, Part::Pinned),
        ];
        let chosen: Vec<Part> = only.iter().filter(|(on, _)| *on).map(|(_, p)| *p).collect();
        chosen.is_empty() || chosen.contains(&part)
    }

    /// The pinned part's plan, from the flags and their defaults.
    fn pinned_plan(&self) -> anyhow::Result<pinned::Plan> {
        let q = self.quick;
        let foregrounds = self
            .pinned_foregrounds
            .as_deref()
            .unwrap_or(if q { "200" } else { "200,400" })
            .split(',')
            .map(|r| {
                r.trim()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--pinned-foregrounds {r:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<u32>>>()?;
        let settings = pinned::parse_settings(self.pinned_settings.as_deref().unwrap_or(if q {
            "fixed:250,share:0.2"
        } else {
            "fixed:250,fixed:1000,share:0.1,share:0.2,adaptive:1.5,adaptive:2.0"
        }))
        .map_err(|e| anyhow::anyhow!("--pinned-settings: {e:#}"))?;
        Ok(pinned::Plan {
            backlog: self
                .pinned_backlog
                .unwrap_or(if q { 100_000 } else { 1_500_000 }),
            pairs: self.pinned_pairs.unwrap_or(if q { 1 } else { 3 }),
            window: Duration::from_secs(self.pinned_window.unwrap_or(if q { 15 } else { 60 })),
            foregrounds,
            settings,
        })
    }

    /// Seconds per measured window.
    fn window(&self) -> Duration {
        Duration::from_secs(self.window.unwrap_or(if self.quick { 10 } else { 30 }))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// The figures, printed as a Markdown table at the end (and each on stderr as it comes).
pub(crate) struct Table(Vec<(String, String, String)>);

impl Table {
    pub(crate) fn row(
        &mut self,
        what: impl Into<String>,
        figure: impl Into<String>,
        note: impl Into<String>,
    ) {
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

    let window = args.window();
    if args.runs(Part::Speed) {
        measure_speed(&pg, &args, &mut table).await?;
    }
    if args.runs(Part::Ingest) {
        measure_ingest(&args, &mut table).await?;
    }
    if args.runs(Part::PhotoUpload) {
        let photos = args
            .upload_photos
            .unwrap_or(if args.quick { 50 } else { 200 });
        eprintln!("bench: upload --photos, {photos} photos of 1 MB");
        photo_upload::measure(photos, &mut table).await?;
    }
    if args.runs(Part::Protection) {
        let backlog = args
            .backlog
            .unwrap_or(if args.quick { 200_000 } else { 1_000_000 });
        let steps = args.steps.unwrap_or(if args.quick { 3 } else { 5 });
        drain::measure(&pg, backlog, window, steps, &mut table).await?;
    }
    if args.runs(Part::Pinned) {
        pinned::measure(&args.pinned_plan()?, &mut table).await?;
    }
    if args.runs(Part::SharedBudget) {
        shared_budget::measure(window, &mut table).await?;
    }

    // 3. Memory against the byte budget, with the largest receipts.
    if args.runs(Part::Memory) {
        let memory_receipts = args
            .memory_receipts
            .unwrap_or(if args.quick { 90 } else { 300 });
        memory::measure(&pg, memory_receipts, &mut table).await?;
    }

    // 5. The drain rate by write target.
    if args.runs(Part::Targets) {
        let receipts = args
            .target_receipts
            .unwrap_or(if args.quick { 20_000 } else { 100_000 });
        targets::measure(&pg, receipts, &mut table).await?;
    }

    // 8. Receipt photos.
    if args.runs(Part::Photos) {
        photos::measure(&pg, window, &mut table).await?;
    }

    // 9. The status traffic beside the data path's.
    if args.runs(Part::Status) {
        let receipts = args
            .status_receipts
            .unwrap_or(if args.quick { 50_000 } else { 100_000 });
        status::measure(&pg, receipts, &mut table).await?;
    }
    drop(pg);

    println!();
    table.print();
    println!();
    println!("(total {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// The write path against raw COPY, then the end-to-end drain (and the peer) against it.
async fn measure_speed(pg: &PrivatePostgres, args: &Args, table: &mut Table) -> anyhow::Result<()> {
    let write_rows = args
        .write_rows
        .unwrap_or(if args.quick { 10_000 } else { 50_000 });
    let raw_copy = write_path::measure(pg, write_rows, table).await?;
    let peer_receipts = if args.quick { 50_000 } else { 200_000 };
    peer::measure(pg, peer_receipts, raw_copy, table).await
}

/// The ingest side: API throughput and billed SQS requests, by message compression.
async fn measure_ingest(args: &Args, table: &mut Table) -> anyhow::Result<()> {
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
    eprintln!("bench: ingest peak RSS on a gzip bomb");
    ingest_bomb::measure(table).await
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
