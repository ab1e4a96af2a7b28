//! Wiring: builds the pipeline from a validated configuration, runs it, and shuts it down.
//!
//! Keeps the guarantee "SIGTERM loses nothing": the shutdown, below.
//!
//! ```text
//! pollers ──Delivery──▶ batcher ──Vec<Delivery>──▶ dispatcher ──(tokens, tx slot)──▶ writer tasks
//!    ▲  gates: database up, in-flight budget                                   │
//!    └── heartbeat extends visibility of everything held ◀────────────────────┘ delete / dead-letter / release
//! ```
//!
//! Shutdown: the token stops the pollers' receives; the channels then close in order, so the
//! batcher flushes, the dispatcher releases batches not yet started, and started transactions
//! finish. Whatever is still held when the grace period ends is released (visibility 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::schedule::LocalTime;
use crate::config::{AgentConfig, ThrottleMode};
use crate::io::sqs::{self, DeadLetterProblem, Queue};
use crate::io::store::agents::Registry;
use crate::io::store::{ForegroundProbe, Store};
use crate::ops::reload::Reloader;
use crate::ops::sd_notify::Notifier;
use crate::ops::server::{self, ServerState};
use crate::ops::watchdog;
use crate::ops::{dead_letter_check, monitor, recorder, target_check};
use crate::pipeline::backoff::outage_backoff;
use crate::pipeline::batcher;
use crate::pipeline::budget::Budget;
use crate::pipeline::consumer::{self, PollerContext};
use crate::pipeline::delivery::WriterContext;
use crate::pipeline::health::Health;
use crate::pipeline::inflight::{self, InFlight};
use crate::pipeline::liveness::Liveness;
use crate::pipeline::photos::Photos;
use crate::pipeline::receiving::Receiving;
use crate::pipeline::refusal::Refusals;
use crate::pipeline::report::Reporter;
use crate::pipeline::slow::SlowMessages;
use crate::pipeline::writer;
use crate::telemetry::names as m;
use crate::throttle::share::{Identity, Member};
use crate::throttle::{self, Throttle};

/// Decoded bytes in one batch, at most (a larger message is a batch of its own): the largest
/// message the agent decodes. A transaction's statement copies its batch, so this bounds that
/// copy whatever `batch.max_in_flight_bytes` is; ordinary batches (500 receipts of a few KiB)
/// stay far below it.
const MAX_BATCH_BYTES: usize = sluice_protocol::envelope::MAX_DECODED_BYTES;

/// The outside world the agent talks to. Built from the configuration by [`Clients::connect`],
/// or by a test harness with its own credentials.
#[derive(Debug, Clone)]
pub struct Clients {
    pub store: Store,
    pub queue: Queue,
}

impl Clients {
    pub async fn connect(cfg: &AgentConfig) -> anyhow::Result<Self> {
        let store = Store::connect_lazy(&cfg.database)?.with_target(target_of(cfg)?);
        let client = sqs::client(&cfg.queue).await?;
        let queue = Queue::new(
            client,
            cfg.queue.url.clone(),
            cfg.queue.dead_letter_url.clone(),
        );
        Ok(Self { store, queue })
    }
}

/// The write target of a validated configuration.
fn target_of(cfg: &AgentConfig) -> anyhow::Result<crate::config::Target> {
    cfg.target
        .target()
        .map_err(|e| anyhow::anyhow!("[target]: {e}"))
}

/// The agent refused to start: the configuration must change (`sluice-agent` exits 64).
#[derive(Debug, thiserror::Error)]
#[error("refusing to start: {0}")]
pub struct StartRefused(#[from] pub DeadLetterProblem);

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// Where `/metrics`, `/healthz` and `/readyz` answer, if enabled.
    pub server_addr: Option<SocketAddr>,
    reloader: Reloader,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningAgent {
    /// Applies a new configuration's `[throttle]` to the running agent (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Waits for the agent to stop (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("agent task panicked")?
    }
}

/// Runs until `shutdown` is cancelled and the pipeline has drained (or the grace period ended).
pub async fn run(
    cfg: AgentConfig,
    clients: Clients,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(cfg, clients, shutdown).await?.wait().await
}

/// Binds the server, then runs the pipeline in the background.
pub async fn start(
    cfg: AgentConfig,
    clients: Clients,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningAgent> {
    let prometheus = recorder::install();
    let throttle = Arc::new(
        Throttle::new(&cfg.throttle, LocalTime::now(), Instant::now())
            .context("building the throttle")?,
    );
    let health = Health::new();
    let reloader = Reloader::new(throttle.clone(), cfg.clone()).with_health(health.clone());
    let server_stop = CancellationToken::new();
    // A DLQ that is the main queue or too small refuses the start; one that cannot be read now
    // is a condition, checked again until it passes.
    if !dead_letter_check::at_start(&clients.queue, &health)
        .await
        .map_err(StartRefused)?
    {
        tokio::spawn(dead_letter_check::recheck(
            clients.queue.clone(),
            health.clone(),
            server_stop.clone(),
        ));
    }
    let reporter = cfg
        .status
        .queue_url
        .as_ref()
        .map(|url| Reporter::new(clients.store.clone(), clients.queue.sibling(url.clone())));
    let mut server_addr = None;
    let mut server_task = None;
    if let Some(addr) = cfg.server.addr() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding server.listen {addr}"))?;
        server_addr = Some(listener.local_addr()?);
        let app = server::router(ServerState {
            metrics: prometheus,
            store: clients.store.clone(),
            queue: clients.queue.clone(),
            health: health.clone(),
            reporter: reporter.clone(),
            throttle: throttle.clone(),
            database: Default::default(),
        });
        let stop = server_stop.clone();
        server_task = Some(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "Metrics server failed.");
            }
        }));
    }
    let task = tokio::spawn(async move {
        let result = pipeline(cfg, clients, throttle, health, reporter, shutdown).await;
        server_stop.cancel();
        if let Some(server) = server_task {
            let _ = server.await;
        }
        result
    });
    Ok(RunningAgent {
        server_addr,
        reloader,
        task,
    })
}

async fn pipeline(
    cfg: AgentConfig,
    clients: Clients,
    throttle: Arc<Throttle>,
    health: Health,
    reporter: Option<Arc<Reporter>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Clients { store, queue } = clients;
    let store = store.with_target(target_of(&cfg)?);
    if cfg.database.migrate_on_start
        && !migrate_until_up(&store, &cfg.database.schema, &shutdown).await
    {
        return Ok(());
    }
    // A procedure that is missing, takes other arguments or may not be called refuses the
    // start (exit 64).
    if !target_check::at_start(&store, &shutdown).await? {
        return Ok(());
    }

    metrics::gauge!(m::DB_UP).set(1.0);
    // The foreground probe's own connection; its statement must run, read-only and fast,
    // before the first write (a refusal names throttle.probe_sql; exit 64).
    let foreground = ForegroundProbe::connect_lazy(&cfg.database)?;
    if cfg.throttle.mode == ThrottleMode::Adaptive {
        throttle::probe::verify(&foreground, &cfg.throttle)
            .await
            .map_err(|e| anyhow::Error::new(e).context("refusing to start"))?;
    }
    // Join the other agents before the first write, so a newcomer starts at its share.
    let mut member = Member::new(
        throttle.clone(),
        Registry::new(&store, store.timeouts().acquire),
        Identity::of_this_process(),
    );
    member.beat().await;

    let inflight = InFlight::new();
    // Operations: systemd readiness and watchdog (fed by the pollers' and writers' progress).
    let liveness = Liveness::from_env();
    let notifier = Notifier::from_env();
    let visibility = Duration::from_secs(u64::from(cfg.queue.visibility_timeout_seconds));
    // The background tasks (heartbeat, gauges, watchdog, queue monitor, throttle controller)
    // outlive the pipeline: they stop on `heartbeat_stop`, after the writers, and are joined.
    let heartbeat_stop = CancellationToken::new();
    let background = TaskTracker::new();
    background.spawn(inflight::heartbeat(
        queue.clone(),
        inflight.clone(),
        visibility,
        heartbeat_stop.clone(),
    ));

    let budget = Budget::new(cfg.batch.max_in_flight_rows, cfg.batch.max_in_flight_bytes);
    let tracker = TaskTracker::new();
    // Channels hold at most a few batches: the in-flight budget is what bounds memory.
    let (delivery_tx, delivery_rx) = mpsc::channel(64);
    let (batch_tx, batch_rx) = mpsc::channel(4);

    let poller_ctx = PollerContext {
        queue: queue.clone(),
        inflight: inflight.clone(),
        health: health.clone(),
        budget: budget.clone(),
        wait_seconds: cfg.queue.wait_seconds,
        visibility_timeout_seconds: cfg.queue.visibility_timeout_seconds,
        liveness: liveness.clone(),
        versions: Arc::default(),
        receiving: Receiving::default(),
    };
    for _ in 0..cfg.queue.pollers {
        tracker.spawn(consumer::poll(
            poller_ctx.clone(),
            delivery_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(delivery_tx);
    tracker.spawn(batcher::run(
        delivery_rx,
        batch_tx,
        cfg.batch.max_rows as usize,
        MAX_BATCH_BYTES,
        Duration::from_millis(cfg.batch.max_wait_ms),
    ));
    let refusals = Refusals::new(health.clone());
    // Probes while every write is refused; stops with the heartbeat, after the writers.
    background.spawn(refusals.clone().run(store.clone(), heartbeat_stop.clone()));
    // Reports every settled chunk from the ledger; stops with the heartbeat, after the
    // writers, with one bounded flush.
    let report = reporter.as_ref().map(|r| r.wake()).unwrap_or_default();
    if let Some(r) = reporter {
        background.spawn(r.run(heartbeat_stop.clone()));
    }
    let slow = SlowMessages::new(health.clone());
    background.spawn(slow.clone().run(heartbeat_stop.clone()));
    let photos = match &cfg.photos {
        Some(p) => Some(Arc::new(
            Photos::connect(p, cfg.throttle.photo_bytes_per_second).await?,
        )),
        None => None,
    };
    let writer_ctx = WriterContext {
        store: store
            .clone()
            .with_on_conflict(cfg.write.on_conflict)
            .with_status_reporting(cfg.status.enabled()),
        queue: queue.clone(),
        inflight: inflight.clone(),
        health: health.clone(),
        throttle: throttle.clone(),
        liveness: liveness.clone(),
        refusals,
        photos,
        slow,
        report,
        receiving: poller_ctx.receiving.clone(),
    };
    tracker.spawn(writer::run(
        writer_ctx,
        batch_rx,
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.close();

    // Operations: READY=1 / WATCHDOG=1 to systemd, queue depth gauges. Both stop with the
    // heartbeat, after the pipeline has drained.
    background.spawn(watchdog::supervise(
        notifier.clone(),
        liveness,
        store.clone(),
        queue.clone(),
        cfg.queue.wait_seconds,
        heartbeat_stop.clone(),
    ));
    background.spawn(monitor::run(
        queue.clone(),
        store.clone(),
        health.clone(),
        notifier.clone(),
        heartbeat_stop.clone(),
    ));

    tracing::info!(
        queue = %cfg.queue.url,
        pollers = cfg.queue.pollers,
        mode = ?cfg.throttle.mode,
        rows_per_second = throttle.rate(),
        ceiling = throttle.ceiling(),
        burst = cfg.throttle.burst,
        "Agent running."
    );
    // This agent's share of the budget; leaves the agents table after the writers stopped.
    background.spawn(member.run(heartbeat_stop.clone()));
    // Schedules and the adaptive controller; stops with the heartbeat, after the writers.
    background.spawn(throttle::run(
        throttle.clone(),
        store.clone(),
        heartbeat_stop.clone(),
    ));
    background.spawn(throttle::probe::run(
        throttle.clone(),
        foreground,
        heartbeat_stop.clone(),
    ));

    shutdown.cancelled().await;
    notifier.stopping();
    let grace = Duration::from_secs(u64::from(cfg.shutdown.grace_seconds));
    tracing::info!(grace = ?grace, held = inflight.len(), held_bytes = budget.held_bytes(), "Shutting down: receiving stopped, finishing in-flight work.");
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            held = inflight.len(),
            "Grace period over; releasing what is still held."
        );
    }
    let released = inflight.release_all(&queue).await;
    heartbeat_stop.cancel();
    background.close();
    background.wait().await;
    tracing::info!(released, "Agent stopped.");
    Ok(())
}

/// Applies migrations, retrying while the database is unreachable. `false` if shut down first.
async fn migrate_until_up(store: &Store, schema: &str, shutdown: &CancellationToken) -> bool {
    let mut delays = outage_backoff();
    loop {
        match store.migrate(schema).await {
            Ok(()) => return true,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::error!(error = format!("{e:#}"), retry_in = ?delay, "Cannot apply migrations; retrying.");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
