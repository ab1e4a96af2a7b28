//! `sluice-demo` (`make demo`): the whole bridge on one machine. It uploads receipts through the
//! real ingest API, shows the real agent draining them into PostgreSQL under its rate limit,
//! reads a summary back from the database and stops everything cleanly.
//!
//! It owns:
//! - the demo world, recreated on every run: database `sluice_demo`, queues `sluice-demo` and
//!   `sluice-demo-dlq`, and the directory `.sluice-dev/demo/` (`agent.toml`, `agent.log`,
//!   `ingest.log`, pid files);
//! - the two child processes, `sluice-agent run` and `sluice-ingest`, which it starts in their
//!   own process groups (so Ctrl-C reaches only the demo) and always stops itself;
//! - what the terminal shows: steps and the summary on stdout, the progress bar and the live
//!   drain on stderr (rewritten in place when stderr is a terminal).
//!
//! Exit codes: 0 when every uploaded receipt is stored exactly once, the dead-letter queue is
//! empty and both children stopped cleanly; 1 otherwise; 130 when interrupted (Ctrl-C,
//! SIGTERM, SIGHUP).

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgPool};
use tokio::signal::unix::{signal, Signal, SignalKind};

const DB_NAME: &str = "sluice_demo";
const QUEUE_NAME: &str = "sluice-demo";
const DLQ_NAME: &str = "sluice-demo-dlq";
/// Receives before SQS moves a message to the DLQ: enough to survive a few agent restarts or
/// moto's occasional double delivery, few enough that a poison message shows up quickly.
const MAX_RECEIVE_COUNT: u32 = 5;
/// Receipts per upload request: a realistic bulk upload, far under the API's 50,000 and 6 MB.
const RECEIPTS_PER_REQUEST: usize = 2_000;
/// Upload requests in flight at once.
const PARALLEL_REQUESTS: usize = 4;
/// Tries per upload request when the API answers 5xx (503 = SQS did not take every chunk).
const UPLOAD_TRIES: usize = 5;
/// The agent's batch size; the burst must be at least this (agent config validation).
const BATCH_MAX_ROWS: u32 = 500;
/// How long the children get to answer their health endpoints.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The drain gives up when the stored count has not moved for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child gets to exit after its stop signal: above the agent's 30 s grace period.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// The live receipts/s is measured over this window: batches commit in steps of up to 500
/// rows, so a one-second window would swing by ±500/s around the real rate.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Exit code after an interruption (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-demo",
    about = "Runs the whole Sluice bridge locally: uploads receipts through the ingest API and \
             shows the agent draining them into PostgreSQL under its rate limit."
)]
struct Args {
    /// Receipts to upload.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    receipts: u32,
    /// The agent's limit in receipts per second (burst: the larger of this and 500).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Seed for the generated receipts (the same seed gives the same receipts).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// After the summary, leave the API and the agent running until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

impl Args {
    fn burst(&self) -> u32 {
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
    let receipts =
        Arc::new(sluice_e2e::gen::Generator::new(args.seed).receipts(args.receipts as usize));

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
        &format!("{QUEUE_NAME}, {DLQ_NAME} (fresh, maxReceiveCount {MAX_RECEIVE_COUNT})"),
    );

    let Services {
        agent_url,
        ingest_url,
    } = start_services(args, paths, &world, children).await?;

    step(&format!(
        "Uploading {} receipts: POST /v1/batches, {} per request, {} in parallel",
        thousands(receipts.len() as u64),
        thousands(RECEIPTS_PER_REQUEST as u64),
        PARALLEL_REQUESTS
    ));
    let upload = upload(&ingest_url, &receipts, paths, children).await?;
    upload.print();

    step(&format!(
        "Draining into PostgreSQL at up to {} receipts/s",
        thousands(u64::from(args.rate))
    ));
    let drain = watch_drain(&world, children, upload.receipts, args.rate, paths).await?;
    println!(
        "  all {} stored {} after the upload began",
        thousands(upload.receipts),
        secs(drain.done_at.duration_since(upload.started))
    );
    wait_queue_empty(&world).await;

    step(&format!(
        "Summary (read from PostgreSQL, database {DB_NAME})"
    ));
    let problems = summarize(&world, &receipts, &upload, args).await?;
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
    let agent_addr = free_addr()?;
    let ingest_addr = free_addr()?;
    std::fs::write(paths.agent_toml(), agent_toml(args, world, &agent_addr))
        .with_context(|| format!("writing {}", paths.agent_toml().display()))?;
    let config = paths.agent_toml().display().to_string();
    children.agent = Some(Proc::spawn(
        paths,
        "agent",
        &paths.agent_bin,
        &["run", "--config", &config],
        &world.child_env(),
        StopSignal::Term,
    )?);
    children.ingest = Some(Proc::spawn(
        paths,
        "ingest",
        &paths.ingest_bin,
        &["--listen", &ingest_addr],
        &world.child_env(),
        // sluice-ingest shuts down gracefully on Ctrl-C only; SIGTERM would kill it outright.
        StopSignal::Int,
    )?);
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

// ---------------------------------------------------------------------------------------------
// Paths and binaries

/// Where the demo keeps its files and finds the binaries it runs.
#[derive(Debug)]
struct Paths {
    dir: PathBuf,
    agent_bin: PathBuf,
    ingest_bin: PathBuf,
}

impl Paths {
    fn locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the demo's own executable")?;
        let bin_dir = exe
            .parent()
            .context("the demo's executable has no parent directory")?;
        let agent_bin = bin_dir.join("sluice-agent");
        let ingest_bin = bin_dir.join("sluice-ingest");
        for bin in [&agent_bin, &ingest_bin] {
            if !bin.is_file() {
                bail!(
                    "{} not found: run `cargo build --workspace --bins` first",
                    bin.display()
                );
            }
        }
        let dir = sluice_e2e::repo_root().join(".sluice-dev").join("demo");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            agent_bin,
            ingest_bin,
        })
    }

    fn agent_toml(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pid"))
    }
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_addr() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.to_string())
}

// ---------------------------------------------------------------------------------------------
// The demo world: database and queues

/// The demo's database and queues, recreated empty.
#[derive(Debug)]
struct World {
    database_url: String,
    pool: PgPool,
    sqs: aws_sdk_sqs::Client,
    sqs_endpoint: String,
    queue_url: String,
    dlq_url: String,
}

impl World {
    async fn reset(servers: &sluice_e2e::Servers) -> anyhow::Result<Self> {
        let mut admin = sqlx::PgConnection::connect(&servers.database_url)
            .await
            .with_context(|| format!("connecting to {}", servers.database_url))?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .context("dropping the demo database")?;
        sqlx::query(&format!("CREATE DATABASE {DB_NAME}"))
            .execute(&mut admin)
            .await
            .context("creating the demo database")?;
        admin.close().await.ok();
        let database_url = sluice_e2e::with_database(&servers.database_url, DB_NAME);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database_url)
            .await
            .context("connecting to the demo database")?;

        let sqs = sluice_e2e::sqs_client(&servers.sqs_endpoint);
        // Delete first: creating a queue that exists with other attributes is an error.
        for name in [QUEUE_NAME, DLQ_NAME] {
            if let Ok(found) = sqs.get_queue_url().queue_name(name).send().await {
                if let Some(url) = found.queue_url {
                    sqs.delete_queue()
                        .queue_url(&url)
                        .send()
                        .await
                        .with_context(|| format!("deleting queue {name}"))?;
                }
            }
        }
        let dlq_url = create_queue(
            &sqs,
            DLQ_NAME,
            &[(
                QueueAttributeName::MessageRetentionPeriod,
                "1209600".to_owned(),
            )],
        )
        .await?;
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .context("reading the DLQ's ARN")?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .context("the DLQ has no ARN")?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
        });
        let queue_url = create_queue(
            &sqs,
            QUEUE_NAME,
            &[
                (QueueAttributeName::VisibilityTimeout, "60".to_owned()),
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            ],
        )
        .await?;
        Ok(Self {
            database_url,
            pool,
            sqs,
            sqs_endpoint: servers.sqs_endpoint.clone(),
            queue_url,
            dlq_url,
        })
    }

    /// Environment for both children: throwaway credentials for the local SQS-API server.
    fn child_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            // Their logs go to files: no colour codes.
            ("NO_COLOR", "1".to_owned()),
            ("SLUICE_QUEUE_URL", self.queue_url.clone()),
            ("SLUICE_SQS_ENDPOINT", self.sqs_endpoint.clone()),
        ]
    }

    /// Receipts stored, or `None` while the agent has not created its schema yet.
    async fn stored(&self) -> Option<u64> {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sluice.receipts")
            .fetch_one(&self.pool)
            .await
            .ok()
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    /// Messages in a queue: (visible, in flight, delayed).
    async fn depth(&self, queue_url: &str) -> anyhow::Result<(u64, u64, u64)> {
        let queue = sluice_agent::Queue::new(self.sqs.clone(), queue_url.to_owned(), None);
        let d = queue.depth().await?;
        Ok((d.visible, d.in_flight, d.delayed))
    }
}

/// Creates a queue, retrying briefly if the server still remembers a queue of that name.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> anyhow::Result<String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut req = sqs.create_queue().queue_name(name);
        for (k, v) in attributes {
            req = req.attributes(k.clone(), v);
        }
        match req.send().await {
            Ok(out) => {
                return out
                    .queue_url
                    .with_context(|| format!("queue {name} has no URL"))
            }
            Err(_) if tries < 5 => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(sqs_error(&format!("creating queue {name}"), e)),
        }
    }
}

/// An SQS error with its whole chain of causes (the SDK's own `Display` shows only the top).
fn sqs_error<E: std::error::Error>(what: &str, e: E) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))
}

/// The agent's configuration for this run (format: `onprem-agent/src/config.rs`).
fn agent_toml(args: &Args, world: &World, listen: &str) -> String {
    format!(
        r#"# Written by sluice-demo for one run; recreated every time.
[queue]
url = {queue:?}
dead_letter_url = {dlq:?}
endpoint = {endpoint:?}
region = "us-east-1"
pollers = 2
wait_seconds = 2
visibility_timeout_seconds = 60

[database]
url = {db:?}

[throttle]
rows_per_second = {rate}
burst = {burst}

[batch]
max_rows = {BATCH_MAX_ROWS}
max_wait_ms = 250

[server]
listen = {listen:?}

[log]
format = "pretty"
level = "warn"
"#,
        queue = world.queue_url,
        dlq = world.dlq_url,
        endpoint = world.sqs_endpoint,
        db = world.database_url,
        rate = args.rate,
        burst = args.burst(),
    )
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// How a child is asked to stop.
#[derive(Debug, Clone, Copy)]
enum StopSignal {
    Term,
    Int,
}

impl StopSignal {
    fn flag(self) -> &'static str {
        match self {
            Self::Term => "-TERM",
            Self::Int => "-INT",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Int => "SIGINT",
        }
    }
}

/// One running child, its output going to a log file.
#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    pid_file: PathBuf,
    stop: StopSignal,
}

impl Proc {
    fn spawn(
        paths: &Paths,
        name: &'static str,
        bin: &Path,
        args: &[&str],
        env: &[(&'static str, String)],
        stop: StopSignal,
    ) -> anyhow::Result<Self> {
        let log = paths.log(name);
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: Ctrl-C reaches only the demo, which then stops the children
            // in order and reports how they exited.
            .process_group(0)
            // Last resort if the demo itself fails without stopping them.
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let pid_file = paths.pid_file(name);
        std::fs::write(&pid_file, format!("{pid}\n")).ok();
        Ok(Self {
            name,
            child,
            pid,
            log,
            pid_file,
            stop,
        })
    }

    /// Fails (with the tail of the log) if the child has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "sluice-{} exited unexpectedly ({}); last lines of {}:\n{}",
                self.name,
                describe(status),
                self.log.display(),
                log_tail(&self.log, 20)
            ),
            Err(e) => bail!("cannot check on sluice-{}: {e}", self.name),
        }
    }

    /// Sends the stop signal and waits; a second interruption or the timeout kills it.
    /// Returns a problem to report, if any.
    async fn stop(mut self, signals: &mut Signals) -> Option<String> {
        let started = Instant::now();
        let name = format!("sluice-{}", self.name);
        let result = match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{name} had already exited ({})", describe(status))),
            _ => {
                eprint!("  stopping {name} ({}) ... ", self.stop.name());
                let _ = std::io::stderr().flush();
                send_signal(self.pid, self.stop.flag()).await;
                let waited = tokio::select! {
                    r = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()) => match r {
                        Ok(Ok(status)) => Ok(status),
                        Ok(Err(e)) => Err(format!("cannot wait for it: {e}")),
                        Err(_) => Err(format!("still running after {}", secs(STOP_TIMEOUT))),
                    },
                    sig = signals.recv() => Err(format!("{sig} received again")),
                };
                match waited {
                    Ok(status) if status.success() => {
                        eprintln!("exited 0 in {}", secs(started.elapsed()));
                        None
                    }
                    Ok(status) => {
                        eprintln!("{} in {}", describe(status), secs(started.elapsed()));
                        Some(format!(
                            "{name} did not stop cleanly: {} (log {})",
                            describe(status),
                            self.log.display()
                        ))
                    }
                    Err(why) => {
                        eprintln!("{why}: killing it");
                        let _ = self.child.kill().await;
                        Some(format!("{name} had to be killed: {why}"))
                    }
                }
            }
        };
        std::fs::remove_file(&self.pid_file).ok();
        result
    }
}

/// The children of this run.
#[derive(Debug, Default)]
struct Children {
    agent: Option<Proc>,
    ingest: Option<Proc>,
}

impl Children {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in [&mut self.agent, &mut self.ingest].into_iter().flatten() {
            p.check_alive()?;
        }
        Ok(())
    }

    /// Stops the agent (it may still be finishing a batch), then the API. Returns problems.
    async fn stop(&mut self, signals: &mut Signals) -> Vec<String> {
        let mut problems = Vec::new();
        if self.agent.is_some() || self.ingest.is_some() {
            eprintln!("\n== Stopping");
        }
        for p in [self.agent.take(), self.ingest.take()]
            .into_iter()
            .flatten()
        {
            problems.extend(p.stop(signals).await);
        }
        problems
    }
}

async fn send_signal(pid: u32, flag: &str) {
    // No libc/nix in this crate: `kill(1)` does it.
    let _ = tokio::process::Command::new("kill")
        .arg(flag)
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .await;
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(n)..];
            if tail.is_empty() {
                "    (empty)".to_owned()
            } else {
                tail.iter().map(|l| format!("    {l}\n")).collect()
            }
        }
        Err(e) => format!("    (cannot read: {e})"),
    }
}

/// Stops a child left over from an earlier demo that was killed outright (its pid file is still
/// there and the process still runs that binary), so it does not drain the fresh queue.
async fn reap_stale(pid_file: &Path, bin_name: &str) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let running = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(bin_name))
            .unwrap_or(false)
    };
    if running(pid) {
        println!("  stopping {bin_name} (pid {pid}) left over from an earlier demo");
        send_signal(pid, "-TERM").await;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while running(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if running(pid) {
            send_signal(pid, "-KILL").await;
        }
    }
    std::fs::remove_file(pid_file).ok();
}

/// Polls `url` until it answers 200, failing early if a child exits.
async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    children: &mut Children,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        children.check_alive()?;
        let last = match http.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if start.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "{url} did not answer 200 within {}; last: {last}",
                secs(STARTUP_TIMEOUT)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Signals

/// Ctrl-C, SIGTERM and SIGHUP (terminal closed), all meaning "stop".
#[derive(Debug)]
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "Ctrl-C",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upload

/// What the upload did.
#[derive(Debug)]
struct UploadStats {
    started: Instant,
    elapsed: Duration,
    receipts: u64,
    requests: u64,
    chunks: u64,
    bytes: u64,
    retries: u64,
}

impl UploadStats {
    fn print(&self) {
        println!(
            "  accepted {} receipts in {} gzip NDJSON requests as {} SQS messages, {} bytes, {}{}",
            thousands(self.receipts),
            self.requests,
            thousands(self.chunks),
            thousands(self.bytes),
            secs(self.elapsed),
            if self.retries > 0 {
                format!(", {} retries", self.retries)
            } else {
                String::new()
            }
        );
    }
}

/// Writes the receipts to an NDJSON file and sends it with the uploader `sluice-ingest upload`
/// uses (`sluice_cloud::upload`), `PARALLEL_REQUESTS` requests at a time, with a progress bar.
async fn upload(
    base: &str,
    receipts: &[Value],
    paths: &Paths,
    children: &mut Children,
) -> anyhow::Result<UploadStats> {
    let file = paths.dir.join("receipts.ndjson");
    let mut text = Vec::new();
    for r in receipts {
        serde_json::to_writer(&mut text, r)?;
        text.push(b'\n');
    }
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    let total = receipts.len() as u64;
    let bar = Arc::new(std::sync::Mutex::new(ProgressBar::new(total)));
    bar.lock().unwrap_or_else(|p| p.into_inner()).show(0, 0);
    let opts = sluice_cloud::upload::UploadOptions {
        api: base.to_owned(),
        receipts_per_request: RECEIPTS_PER_REQUEST,
        parallel: PARALLEL_REQUESTS,
        max_attempts: UPLOAD_TRIES,
        ..Default::default()
    };
    let started = Instant::now();
    let shown = Arc::clone(&bar);
    let report = sluice_cloud::upload::upload_file(&file, &opts, move |p| {
        shown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .show(p.receipts_done as u64, p.requests_done as u64);
    })
    .await;
    bar.lock().unwrap_or_else(|p| p.into_inner()).finish();
    let report = report.context("uploading")?;
    if !report.ok() {
        // A dead child is the likelier cause; say so first.
        children.check_alive()?;
        let refused: Vec<String> = report
            .requests
            .iter()
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("lines {}…: {e}", r.first_line))
            })
            .collect();
        bail!(
            "{} receipts were refused; that is a bug:\n{}",
            report.refused,
            refused.join("\n")
        );
    }
    Ok(UploadStats {
        started,
        elapsed: started.elapsed(),
        receipts: report.accepted as u64,
        requests: report.requests.len() as u64,
        chunks: report.requests.iter().map(|r| r.chunks).sum(),
        bytes: report.requests.iter().map(|r| r.bytes).sum(),
        retries: report
            .requests
            .iter()
            .map(|r| r.attempts.saturating_sub(1) as u64)
            .sum(),
    })
}

/// `[#####.....] 12,000/20,000 receipts  6 requests  1.2 s` on stderr: in place on a terminal,
/// a plain line every tenth of the way otherwise.
#[derive(Debug)]
struct ProgressBar {
    total: u64,
    started: Instant,
    tty: bool,
    last_tenth: u64,
}

impl ProgressBar {
    const WIDTH: u64 = 30;

    fn new(total: u64) -> Self {
        Self {
            total,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn show(&mut self, done: u64, requests: u64) {
        let filled = (done * Self::WIDTH / self.total.max(1)) as usize;
        let line = format!(
            "[{}{}] {}/{} receipts  {} requests  {}",
            "#".repeat(filled),
            ".".repeat(Self::WIDTH as usize - filled),
            thousands(done),
            thousands(self.total),
            requests,
            secs(self.started.elapsed())
        );
        if self.tty {
            eprint!("\r  {line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else {
            let tenth = done * 10 / self.total.max(1);
            if tenth > self.last_tenth || done == 0 {
                self.last_tenth = tenth;
                eprintln!("  {line}");
            }
        }
    }

    fn finish(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Drain

#[derive(Debug)]
struct DrainStats {
    done_at: Instant,
}

/// One line a second until `expected` receipts are stored: queue depth, DLQ depth, stored,
/// measured rate against the limit, time left.
async fn watch_drain(
    world: &World,
    children: &mut Children,
    expected: u64,
    rate: u32,
    paths: &Paths,
) -> anyhow::Result<DrainStats> {
    let tty = std::io::stderr().is_terminal();
    // At very low limits a batch of 500 takes longer than a minute to earn its tokens.
    let stall_timeout = STALL_TIMEOUT.max(Duration::from_secs(
        3 * u64::from(BATCH_MAX_ROWS / rate.max(1)),
    ));
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let mut last_stored = 0;
    let mut last_progress = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        children.check_alive()?;
        let now = Instant::now();
        let stored = world.stored().await.unwrap_or(last_stored);
        let (visible, in_flight, _) = world.depth(&world.queue_url).await?;
        let (dv, di, dd) = world.depth(&world.dlq_url).await?;
        samples.push((now, stored));
        samples.retain(|(t, _)| now.duration_since(*t) <= RATE_WINDOW);
        // None until there are two samples to measure between.
        let measured = match samples.first() {
            Some((t0, s0)) if now.duration_since(*t0) >= Duration::from_millis(500) => {
                Some(stored.saturating_sub(*s0) as f64 / now.duration_since(*t0).as_secs_f64())
            }
            _ => None,
        };
        let remaining = expected.saturating_sub(stored);
        let left = if remaining == 0 {
            "done".to_owned()
        } else if let Some(r) = measured.filter(|r| *r >= 1.0) {
            format!("{} left", eta(remaining as f64 / r))
        } else {
            format!("~{} left", eta(remaining as f64 / f64::from(rate)))
        };
        let line = format!(
            "queue {:>6} visible {:>4} in flight │ dlq {:>3} │ stored {:>7}/{} │ {:>6}/s (limit {}) │ {left}",
            thousands(visible),
            thousands(in_flight),
            thousands(dv + di + dd),
            thousands(stored),
            thousands(expected),
            measured.map_or_else(|| "--".to_owned(), |r| thousands(r.round() as u64)),
            thousands(u64::from(rate)),
        );
        if tty {
            eprint!("\r  {line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("  {line}");
        }
        if stored >= expected {
            if tty {
                eprintln!();
            }
            return Ok(DrainStats { done_at: now });
        }
        if stored != last_stored {
            last_stored = stored;
            last_progress = now;
        } else if now.duration_since(last_progress) > stall_timeout {
            if tty {
                eprintln!();
            }
            let log = paths.log("agent");
            bail!(
                "nothing stored for {} ({} of {} so far); last lines of {}:\n{}",
                secs(stall_timeout),
                thousands(stored),
                thousands(expected),
                log.display(),
                log_tail(&log, 20)
            );
        }
    }
}

/// Waits (bounded) for the agent's deletes to catch up with its commits.
async fn wait_queue_empty(world: &World) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match world.depth(&world.queue_url).await {
            Ok((0, 0, 0)) => return,
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Summary

/// Reads the summary from the database, prints it, and returns what differs from the upload.
async fn summarize(
    world: &World,
    uploaded: &[Value],
    upload: &UploadStats,
    args: &Args,
) -> anyhow::Result<Vec<String>> {
    let summary = Summary::read(world, uploaded).await?;
    let expected = expected_totals(uploaded);
    summary.print(upload, args, &expected);
    Ok(summary.problems(uploaded.len() as i64, upload, &expected))
}

/// What the database (and the queues) say after the drain.
#[derive(Debug)]
struct Summary {
    stored: i64,
    distinct: i64,
    /// Uploaded receipt ids found in the table.
    found: i64,
    batches: i64,
    complete: i64,
    chunks: i64,
    rejected: i64,
    items: i64,
    /// Seconds from the first commit to the last.
    span: Option<f64>,
    /// (currency, receipts, sum of totals as PostgreSQL prints a numeric)
    currencies: Vec<(String, i64, String)>,
    merchants: Vec<(String, i64)>,
    dlq: u64,
    queue_left: (u64, u64, u64),
}

impl Summary {
    async fn read(world: &World, uploaded: &[Value]) -> anyhow::Result<Self> {
        let pool = &world.pool;
        let (stored, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT receipt_id) FROM sluice.receipts")
                .fetch_one(pool)
                .await
                .context("counting receipts")?;
        let ids: Vec<&str> = uploaded
            .iter()
            .filter_map(|r| r.get("receipt_id").and_then(Value::as_str))
            .collect();
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sluice.receipts WHERE receipt_id = ANY($1::text[]::uuid[])",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .context("looking up the uploaded ids")?;
        let (batches, complete, chunks, rejected): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE complete), \
             coalesce(sum(chunk_count), 0)::int8, coalesce(sum(rejected), 0)::int8 \
             FROM sluice.batches",
        )
        .fetch_one(pool)
        .await
        .context("reading sluice.batches")?;
        let items: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.receipt_items")
            .fetch_one(pool)
            .await
            .context("counting line items")?;
        let span: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM max(ingested_at) - min(ingested_at))::float8 \
             FROM sluice.receipts",
        )
        .fetch_one(pool)
        .await
        .context("reading commit times")?;
        let currencies = sqlx::query_as(
            "SELECT currency::text, count(*), sum(total)::text FROM sluice.receipts \
             GROUP BY currency ORDER BY currency",
        )
        .fetch_all(pool)
        .await
        .context("totals per currency")?;
        let merchants = sqlx::query_as(
            "SELECT merchant, count(*) FROM sluice.receipts GROUP BY merchant \
             ORDER BY count(*) DESC, merchant LIMIT 5",
        )
        .fetch_all(pool)
        .await
        .context("top merchants")?;
        let (dv, di, dd) = world.depth(&world.dlq_url).await?;
        Ok(Self {
            stored,
            distinct,
            found,
            batches,
            complete,
            chunks,
            rejected,
            items,
            span,
            currencies,
            merchants,
            dlq: dv + di + dd,
            queue_left: world.depth(&world.queue_url).await?,
        })
    }

    fn print(&self, upload: &UploadStats, args: &Args, expected: &[(String, i128)]) {
        let n = upload.receipts;
        let rows = [
            (
                "receipts uploaded",
                format!(
                    "{} in {} requests, {}",
                    thousands(n),
                    upload.requests,
                    secs(upload.elapsed)
                ),
            ),
            ("receipts stored", count(self.stored)),
            (
                "distinct receipt ids",
                format!(
                    "{}  {}",
                    count(self.distinct),
                    if self.distinct == self.stored {
                        "no duplicates"
                    } else {
                        "DUPLICATES"
                    }
                ),
            ),
            (
                "uploaded ids found",
                format!("{} of {}", count(self.found), thousands(n)),
            ),
            (
                "batches complete",
                format!(
                    "{} of {}  ({} chunks, {} rows rejected)",
                    count(self.complete),
                    count(self.batches),
                    count(self.chunks),
                    count(self.rejected)
                ),
            ),
            ("line items", count(self.items)),
            ("average drain rate", self.drain_rate(args)),
            (
                "queue left",
                format!(
                    "{} visible, {} in flight, {} delayed",
                    self.queue_left.0, self.queue_left.1, self.queue_left.2
                ),
            ),
            (
                "dead-letter queue",
                format!("{} messages", thousands(self.dlq)),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &rows {
            println!("  {k:<width$}  {v}");
        }

        println!();
        let mut table = vec![vec![
            "currency".to_owned(),
            "receipts".to_owned(),
            "total".to_owned(),
            "as uploaded".to_owned(),
        ]];
        for (currency, receipts, total) in &self.currencies {
            let same = total_matches(expected, currency, total);
            table.push(vec![
                currency.clone(),
                count(*receipts),
                money(total),
                if same { "yes" } else { "NO" }.to_owned(),
            ]);
        }
        print_table(&table, &[false, true, true, false]);

        println!();
        let mut table = vec![vec!["top merchants".to_owned(), "receipts".to_owned()]];
        for (merchant, receipts) in &self.merchants {
            table.push(vec![merchant.clone(), count(*receipts)]);
        }
        print_table(&table, &[false, true]);
    }

    /// The token bucket lets `burst` receipts through at once, then `rate` per second: the
    /// average after the burst is the figure to hold against the limit.
    fn drain_rate(&self, args: &Args) -> String {
        let burst = u64::from(args.burst());
        let stored = u64::try_from(self.stored).unwrap_or(0);
        match self.span {
            Some(span) if span > 0.0 && stored > burst => format!(
                "{}/s after the initial burst of {} (limit {}/s), first to last commit {}",
                thousands(((stored - burst) as f64 / span).round() as u64),
                thousands(burst),
                thousands(u64::from(args.rate)),
                secs(Duration::from_secs_f64(span))
            ),
            _ => format!(
                "all within the initial burst of {} (limit {}/s)",
                thousands(burst),
                thousands(u64::from(args.rate))
            ),
        }
    }

    /// Everything that differs from "each uploaded receipt stored once, DLQ empty".
    fn problems(&self, n: i64, upload: &UploadStats, expected: &[(String, i128)]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.stored != n {
            problems.push(format!(
                "{} receipts stored, {} uploaded",
                count(self.stored),
                count(n)
            ));
        }
        if self.distinct != self.stored {
            problems.push(format!(
                "{} duplicate rows",
                count(self.stored - self.distinct)
            ));
        }
        if self.found != n {
            problems.push(format!(
                "{} uploaded receipts are missing",
                count(n - self.found)
            ));
        }
        if self.complete != self.batches || self.batches != upload.requests as i64 {
            problems.push(format!(
                "{} of {} batches complete, {} requests uploaded",
                count(self.complete),
                count(self.batches),
                upload.requests
            ));
        }
        for (currency, _, total) in &self.currencies {
            if !total_matches(expected, currency, total) {
                problems.push(format!(
                    "the {currency} total in the database ({total}) differs from the upload"
                ));
            }
        }
        if self.dlq != 0 {
            problems.push(format!(
                "{} messages in the dead-letter queue",
                thousands(self.dlq)
            ));
        }
        problems
    }
}

/// Whether the database's sum for `currency` equals the uploaded one (exact decimals).
fn total_matches(expected: &[(String, i128)], currency: &str, total: &str) -> bool {
    let want = expected
        .iter()
        .find(|(c, _)| c == currency)
        .map(|(_, t)| *t);
    want.is_some() && parse_decimal(total) == want
}

/// A database count with thousands separators.
fn count(v: i64) -> String {
    thousands(u64::try_from(v).unwrap_or(0))
}

/// Sum of `total` per currency over the uploaded receipts, in units of 10^-4.
fn expected_totals(uploaded: &[Value]) -> Vec<(String, i128)> {
    let mut sums: Vec<(String, i128)> = Vec::new();
    for r in uploaded {
        let (Some(c), Some(t)) = (
            r.get("currency").and_then(Value::as_str),
            r.get("total")
                .and_then(Value::as_str)
                .and_then(parse_decimal),
        ) else {
            continue;
        };
        match sums.iter_mut().find(|(k, _)| k == c) {
            Some((_, sum)) => *sum += t,
            None => sums.push((c.to_owned(), t)),
        }
    }
    sums
}

/// `"-12.5"` → `-125000` (units of 10^-4); `None` for anything else or more than 4 decimals.
fn parse_decimal(s: &str) -> Option<i128> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || frac.len() > 4
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut v: i128 = int.parse().ok()?;
    for i in 0..4 {
        v = v * 10 + frac.as_bytes().get(i).map_or(0, |b| i128::from(b - b'0'));
    }
    Some(if neg { -v } else { v })
}

/// `"1234567.5000"` → `"1,234,567.50"`; `"123456.0000"` → `"123,456"`.
fn money(s: &str) -> String {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = frac.trim_end_matches('0');
    let int = int
        .parse::<u64>()
        .map(thousands)
        .unwrap_or_else(|_| int.to_owned());
    if frac.is_empty() {
        format!("{neg}{int}")
    } else {
        format!("{neg}{int}.{frac:0<2}")
    }
}

/// Prints rows as columns; `right[i]` right-aligns column i. The first row is the header.
fn print_table(rows: &[Vec<String>], right: &[bool]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| display_width(c))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(display_width(cell)));
            let _ = if right.get(i).copied().unwrap_or(false) {
                write!(line, " {pad}{cell}")
            } else {
                write!(line, " {cell}{pad}")
            };
        }
        println!("{}", line.trim_end());
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Terminal columns a string takes, roughly: East Asian wide characters and emoji take two.
/// (Enough for the generated merchants; no width crate in this workspace.)
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// `20000` → `"20,000"`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.23 s`, one decimal.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Seconds left as `42 s` or `3 min 05 s`.
fn eta(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(20_000), "20,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(display_width("Ikea Malmö"), 10);
        assert_eq!(display_width("東京ラーメン 一番"), 17);
        assert_eq!(display_width("Starbucks 🌟 Reserve"), 20);
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("42.5"), Some(425_000));
        assert_eq!(parse_decimal("-0.0001"), Some(-1));
        assert_eq!(parse_decimal("123456.0000"), Some(1_234_560_000));
        assert_eq!(parse_decimal("1.23456"), None);
        assert_eq!(parse_decimal("1e3"), None);
    }

    #[test]
    fn money_keeps_cents_and_drops_empty_fractions() {
        assert_eq!(money("1234567.5000"), "1,234,567.50");
        assert_eq!(money("123456.0000"), "123,456");
        assert_eq!(money("0.1234"), "0.1234");
    }
}
