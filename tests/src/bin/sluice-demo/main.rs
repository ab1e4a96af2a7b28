//! `sluice-demo` (`make demo`): the whole bridge on one machine. It uploads receipts through the
//! real ingest API, shows the real agent draining them into PostgreSQL under its rate limit,
//! reads a summary back from the database and stops everything cleanly.
//!
//! It owns:
//! - the demo world, recreated on every run: database `sluice_demo`, queues `sluice-demo`,
//!   `sluice-demo-dlq` and `sluice-demo-status` (the agent's reports, which the ingest folds
//!   into the upload's status), and the directory `.sluice-dev/demo/` (`agent.toml`, `agent.log`,
//!   `ingest.log`, pid files);
//! - the two child processes, `sluice-agent run` and `sluice-ingest`, which it starts in their
//!   own process groups (so Ctrl-C reaches only the demo) and always stops itself;
//! - what the terminal shows: steps and the summary on stdout, the progress bar and the live
//!   drain on stderr (rewritten in place when stderr is a terminal).
//!
//! Exit codes: 0 when every uploaded receipt is stored exactly once, the dead-letter queue is
//! empty and both children stopped cleanly; 1 otherwise; 130 when interrupted (Ctrl-C,
//! SIGTERM, SIGHUP).
//!
//! In order of a run: `paths` (the demo's directory, the binaries), `world` (database, queues,
//! the agent's config), `children` (the two processes, the stop signals), `upload`, `drain`
//! (the live view) beside `status` (each batch followed on `GET /v1/batches/{id}` from
//! accepted to stored), `summary` (read back from PostgreSQL), `format` (figures on screen).

mod children;
mod drain;
mod format;
mod paths;
mod status;
mod summary;
mod upload;
mod world;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

use children::{reap_stale, wait_ready, Children, Signals};
use drain::{wait_queue_empty, watch_drain};
use format::{secs, thousands};
use paths::Paths;
use summary::summarize;
use upload::upload;
use world::{agent_toml, World};

pub(crate) const DB_NAME: &str = "sluice_demo";
pub(crate) const QUEUE_NAME: &str = "sluice-demo";
pub(crate) const DLQ_NAME: &str = "sluice-demo-dlq";
pub(crate) const STATUS_QUEUE_NAME: &str = "sluice-demo-status";
/// How long the batches' status may lag behind the database once the drain is done: the
/// agent's report, then the ingest's fold.
const STATUS_LAG_TIMEOUT: Duration = Duration::from_secs(60);
/// Receives before SQS moves a message to the DLQ: enough to survive a few agent restarts or
/// moto's occasional double delivery, few enough that a poison message shows up quickly.
pub(crate) const MAX_RECEIVE_COUNT: u32 = 5;
/// Receipts per upload request: a realistic bulk upload, far under the API's 50,000 and 6 MB.
pub(crate) const RECEIPTS_PER_REQUEST: usize = 2_000;
/// Upload requests in flight at once.
pub(crate) const PARALLEL_REQUESTS: usize = 4;
/// Tries per upload request when the API answers 5xx (503 = SQS did not take every chunk).
pub(crate) const UPLOAD_TRIES: usize = 5;
/// The agent's batch size; the burst must be at least this (agent config validation).
pub(crate) const BATCH_MAX_ROWS: u32 = 500;
/// How long the children get to answer their health endpoints.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The drain gives up when the stored count has not moved for this long.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child gets to exit after its stop signal: above the agent's 30 s grace period.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// The live receipts/s is measured over this window: batches commit in steps of up to 500
/// rows, so a one-second window would swing by ±500/s around the real rate.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Exit code after an interruption (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-demo",
    about = "Runs the whole Sluice bridge locally: uploads receipts through the ingest API and \
             shows the agent draining them into PostgreSQL under its rate limit."
)]
pub(crate) struct Args {
    /// Receipts to upload.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) receipts: u32,
    /// The agent's limit in receipts per second (burst: the larger of this and 500).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate: u32,
    /// Receipts (the first ones) uploaded with a generated photo each (0: none). Their photos
    /// go to moto's S3 through the URLs the API answers, are checked by the ingest and stored
    /// by the agent in `sluice.receipt_photos`.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub(crate) photos: u32,
    /// Seed for the generated receipts (the same seed gives the same receipts).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// After the summary, leave the API and the agent running until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

impl Args {
    pub(crate) fn burst(&self) -> u32 {
        self.rate.max(BATCH_MAX_ROWS)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the session, raced against Ctrl-C; whatever happens, stops the children it started.
async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install()?;
    let paths = Paths::locate()?;
    let mut children = Children::default();

    let outcome = tokio::select! {
        r = session(&args, &paths, &mut children) => Some(r),
        sig = signals.recv() => {
            eprintln!("\n{sig} received: stopping.");
            None
        }
    };
    let outcome = match outcome {
        Some(Ok(report)) if args.keep_running => {
            report.print_services(&paths);
            let sig = signals.recv().await;
            eprintln!("\n{sig} received: stopping.");
            Some(Ok(report))
        }
        other => other,
    };

    let mut problems = children.stop(&mut signals).await;
    match outcome {
        None => {
            eprintln!("interrupted");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Some(Err(e)) => {
            eprintln!("sluice-demo: {e:#}");
            Ok(ExitCode::FAILURE)
        }
        Some(Ok(report)) => {
            problems.splice(0..0, report.problems);
            if problems.is_empty() {
                println!(
                    "\nOK: all {} receipts stored exactly once, dead-letter queue empty, clean stop.",
                    thousands(u64::from(args.receipts))
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("\nFAILED:");
                for p in &problems {
                    println!("  - {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// What a finished session hands back: what differs from the expected outcome, and where the
/// services are (for `--keep-running`).
#[derive(Debug)]
struct Report {
    problems: Vec<String>,
    ingest_url: String,
    agent_url: String,
    database_url: String,
    queue_url: String,
}

impl Report {
    fn print_services(&self, paths: &Paths) {
        println!("\nStill running (Ctrl-C to stop):");
        let rows = [
            ("ingest API", format!("POST {}/v1/batches", self.ingest_url)),
            ("agent", format!("{0}/metrics  {0}/readyz", self.agent_url)),
            ("database", self.database_url.clone()),
            ("queue", self.queue_url.clone()),
            ("agent config", paths.agent_toml().display().to_string()),
            ("logs", paths.dir.display().to_string()),
        ];
        for (k, v) in rows {
            println!("  {k:<14}{v}");
        }
    }
}

/// The demo from start to summary. Children it starts are put in `children`, so the caller
/// can stop them however this ends.
async fn session(args: &Args, paths: &Paths, children: &mut Children) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut receipts = sluice_e2e::gen::Generator::new(args.seed).receipts(args.receipts as usize);
    // The first ones come with a photo file instead of a reference to an archived image
    // (`upload --photos` leaves a line that already has an `image` as it is).
    for r in receipts.iter_mut().take(args.photos as usize) {
        if let Some(o) = r.as_object_mut() {
            o.remove("image");
        }
    }
    let receipts = Arc::new(receipts);

    step("Local stack");
    let servers = tokio::task::spawn_blocking(sluice_e2e::servers)
        .await
        .context("stack discovery panicked")??;
    detail("PostgreSQL", &servers.database_url);
    detail("SQS (moto)", &servers.sqs_endpoint);

    reap_stale(&paths.pid_file("agent"), "sluice-agent").await;
    reap_stale(&paths.pid_file("ingest"), "sluice-ingest").await;
    let world = World::reset(&servers).await?;
    detail("database", &format!("{DB_NAME} (fresh)"));
    detail(
        "queues",
        &format!(
            "{QUEUE_NAME}, {DLQ_NAME} (fresh, maxReceiveCount {MAX_RECEIVE_COUNT}), \
             {STATUS_QUEUE_NAME} (the agent's reports)"
        ),
    );

    let Services {
        agent_url,
        ingest_url,
    } = start_services(args, paths, &world, children).await?;

    let photos = (args.photos as usize).min(receipts.len());
    let photo_dir = upload::write_photos(paths, &receipts[..photos])?;
    step(&format!(
        "Uploading {} receipts, {} with a photo: POST /v1/batches, {} per request, {} in \
         parallel; each photo PUT to its presigned S3 URL",
        thousands(receipts.len() as u64),
        thousands(photos as u64),
        thousands(RECEIPTS_PER_REQUEST as u64),
        PARALLEL_REQUESTS
    ));
    let upload = upload(
        &ingest_url,
        &receipts,
        photo_dir.as_deref(),
        paths,
        children,
    )
    .await?;
    upload.print();

    step(&format!(
        "Draining into PostgreSQL at up to {} receipts/s",
        thousands(u64::from(args.rate))
    ));
    let (drain_failed, failed) = tokio::sync::oneshot::channel::<()>();
    let drain = async {
        let drain = watch_drain(&world, children, upload.receipts, args.rate, paths).await;
        if drain.is_err() {
            let _ = drain_failed.send(());
        }
        drain
    };
    let expected_drain = Duration::from_secs(upload.receipts / u64::from(args.rate.max(1)));
    let status = status::watch_status(
        &ingest_url,
        &upload.batches,
        upload.started,
        expected_drain * 2 + STATUS_LAG_TIMEOUT,
        async {
            // Stop following when the drain failed; otherwise until every batch is final.
            if failed.await.is_err() {
                std::future::pending::<()>().await;
            }
        },
    );
    let (drain, status) = tokio::join!(drain, status);
    let drain = drain?;
    println!(
        "  all {} stored {} after the upload began",
        thousands(upload.receipts),
        secs(drain.done_at.duration_since(upload.started))
    );
    wait_queue_empty(&world).await;

    step("Upload status (GET /v1/batches/{id}, from the agent's reports)");
    let status = status?;
    status.print();

    step(&format!(
        "Summary (read from PostgreSQL, database {DB_NAME})"
    ));
    let mut problems = summarize(&world, &receipts, &upload, args).await?;
    if let Some(dir) = &photo_dir {
        problems.extend(summary::photos(&world, dir, &receipts[..photos]).await?);
    }
    problems.extend(status.problems());
    println!("  demo time {}", secs(started.elapsed()));
    Ok(Report {
        problems,
        ingest_url,
        agent_url,
        database_url: world.database_url.clone(),
        queue_url: world.queue_url.clone(),
    })
}

/// The running children's addresses.
#[derive(Debug)]
struct Services {
    agent_url: String,
    ingest_url: String,
}

/// Writes the agent's config, starts both children and waits until they answer.
async fn start_services(
    args: &Args,
    paths: &Paths,
    world: &World,
    children: &mut Children,
) -> anyhow::Result<Services> {
    step("Starting sluice-agent and sluice-ingest");
    let agent_addr = sluice_e2e::free_local_addr()?;
    let ingest_addr = sluice_e2e::free_local_addr()?;
    std::fs::write(
        paths.agent_toml(),
        agent_toml(args, world, &agent_addr.to_string()),
    )
    .with_context(|| format!("writing {}", paths.agent_toml().display()))?;
    children.start_agent(paths, agent_addr, world.child_env())?;
    children.start_ingest(paths, ingest_addr, world.child_env())?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;
    let agent_url = format!("http://{agent_addr}");
    let ingest_url = format!("http://{ingest_addr}");
    wait_ready(&http, &format!("{ingest_url}/healthz"), children).await?;
    wait_ready(&http, &format!("{agent_url}/readyz"), children).await?;
    detail(
        "agent",
        &format!(
            "{agent_url}  limit {}/s, burst {}, batches of {BATCH_MAX_ROWS}  (log {})",
            thousands(u64::from(args.rate)),
            thousands(u64::from(args.burst())),
            paths.log("agent").display()
        ),
    );
    detail(
        "ingest API",
        &format!("{ingest_url}  (log {})", paths.log("ingest").display()),
    );
    Ok(Services {
        agent_url,
        ingest_url,
    })
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn detail(label: &str, value: &str) {
    println!("  {label:<12}{value}");
}
