//! The agent's live figures, served as JSON on `GET /v1/status` and read by `sluice-agent
//! status`: [`LiveStatus`] is that answer on both sides.
//!
//! The figures are metrics the agent already records (rows written, the rate, the oldest
//! received message's age, readiness). [`Recording`] sits in front of the Prometheus recorder
//! and keeps a copy of those few as they are recorded, so the pipeline records each figure once
//! and `/v1/status` reads it without parsing `/metrics`.
//!
//! `GET /v1/status?database=1` (what the live page at `/` asks for) adds [`DatabaseFigures`]:
//! what `status` reads from PostgreSQL itself (the rate stored, receipts per message, the agents
//! sharing the budget), read on the store's probe connection at most once a
//! [`DATABASE_REFRESH`] however many pages poll.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use serde::{Deserialize, Serialize};

use crate::io::sqs::Depth;
use crate::io::store::agents::AgentRow;
use crate::io::store::{Store, StoreError};
use crate::pipeline::health::Condition;
use crate::pipeline::report::ReportView;
use crate::telemetry::names as m;
pub use crate::throttle::RateExplained;

/// Where the agent's HTTP server answers with [`LiveStatus`].
pub const PATH: &str = "/v1/status";

/// The rate stored is measured over this window of the chunk ledger's `committed_at`: long
/// enough to smooth batches of hundreds of rows, short enough to say "now".
pub const DB_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Receipts per message are averaged over this many of the latest chunk-ledger rows.
pub const LEDGER_SAMPLE: i64 = 200;
/// [`DatabaseFigures`] are read again after this long, however often they are asked for.
pub const DATABASE_REFRESH: Duration = Duration::from_secs(1);
/// How long PostgreSQL gets to answer each of those reads.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the running agent says about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// Receipts this agent process has stored since it started (`sluice_rows_written_total`).
    pub rows_written: u64,
    /// The rate the token bucket refills at now, in rows per second.
    pub rate_rows_per_second: Option<f64>,
    /// The configured rate (the schedule window's, the ceiling in adaptive mode).
    pub rate_configured_rows_per_second: Option<f64>,
    /// Age of the oldest message in the agent's latest receive.
    pub oldest_received_message_age_seconds: Option<f64>,
    /// This agent's part of the total rate across agents (0–1); absent from older agents.
    #[serde(default)]
    pub rate_share: Option<f64>,
    /// Seconds this agent's transactions took per second over the last 10 s
    /// (`sluice_database_share`); absent from older agents.
    #[serde(default)]
    pub database_share: Option<f64>,
    /// PostgreSQL and SQS both answered the agent's last check and no condition was raised.
    pub ready: Option<bool>,
    /// The conditions raised now (see `pipeline::health`); absent from older agents' answers.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Status reporting (`[status]`): absent when off, and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reports: Option<ReportView>,
    /// Why the rate is what it is, and the foreground probe's figures; absent from older
    /// agents' answers.
    #[serde(default)]
    pub throttle: Option<RateExplained>,
    /// The main queue's depth at the queue monitor's last read (every
    /// `ops::monitor::INTERVAL`); absent before it and from older agents.
    #[serde(default)]
    pub queue: Option<Depth>,
    /// The dead-letter queue's, likewise; absent without one.
    #[serde(default)]
    pub dlq: Option<Depth>,
    /// Seconds since the agent started: the clock its rate is measured on between two answers
    /// (a reader's own clock adds the network's jitter).
    #[serde(default)]
    pub uptime_seconds: Option<f64>,
    /// Only when asked for (`?database=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseFigures>,
}

/// What `status` reads from PostgreSQL, read by the agent for its live page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseFigures {
    /// Receipts stored per second over the last [`DB_RATE_WINDOW`].
    pub receipts_per_second: Option<f64>,
    pub window_seconds: u64,
    /// Average receipts per message over the latest [`LEDGER_SAMPLE`] chunk-ledger rows.
    pub receipts_per_message: Option<f64>,
    /// The agents sharing the budget, live ones first.
    pub agents: Vec<AgentRow>,
    /// What could not be read.
    pub problems: Vec<String>,
}

impl DatabaseFigures {
    /// Reads them on the store's probe connection (never a writer's).
    pub async fn read(store: &Store) -> Self {
        let mut problems = Vec::new();
        let t = DATABASE_TIMEOUT;
        let rate = tokio::time::timeout(t, store.recent_rate(DB_RATE_WINDOW)).await;
        let receipts_per_second = answered("rate stored", rate, &mut problems);
        let per = tokio::time::timeout(t, store.receipts_per_message(LEDGER_SAMPLE)).await;
        let receipts_per_message = answered("chunk ledger", per, &mut problems).flatten();
        let agents = tokio::time::timeout(t, store.agents(crate::throttle::share::EXPIRY)).await;
        let agents = answered("agents table", agents, &mut problems).unwrap_or_default();
        Self {
            receipts_per_second,
            window_seconds: DB_RATE_WINDOW.as_secs(),
            receipts_per_message,
            agents,
            problems: problems
                .iter()
                .map(|p| crate::config::secret::scrub(p).into_owned())
                .collect(),
        }
    }
}

/// The value of a timed read, or `None` with what went wrong in `problems`.
fn answered<T>(
    what: &str,
    r: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
    problems: &mut Vec<String>,
) -> Option<T> {
    match r {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            problems.push(format!("PostgreSQL ({what}): {e}"));
            None
        }
        Err(_) => {
            problems.push(format!("PostgreSQL ({what}): timed out"));
            None
        }
    }
}

/// [`DatabaseFigures`] read at most once a [`DATABASE_REFRESH`].
#[derive(Debug, Default)]
pub struct DatabaseCache {
    last: tokio::sync::Mutex<Option<(Instant, DatabaseFigures)>>,
}

impl DatabaseCache {
    /// The figures, read again when older than [`DATABASE_REFRESH`]. Concurrent callers wait
    /// for one read.
    pub async fn get(&self, store: &Store) -> DatabaseFigures {
        let mut last = self.last.lock().await;
        if let Some((at, figures)) = last.as_ref() {
            if at.elapsed() < DATABASE_REFRESH {
                return figures.clone();
            }
        }
        let figures = DatabaseFigures::read(store).await;
        *last = Some((Instant::now(), figures.clone()));
        figures
    }
}

/// A gauge never set: `null` in [`LiveStatus`].
const UNSET: u64 = u64::MAX;

/// The copies kept by [`Recording`].
#[derive(Debug)]
pub struct LiveFigures {
    rows_written: AtomicU64,
    rate: AtomicU64,
    rate_configured: AtomicU64,
    oldest_age: AtomicU64,
    ready: AtomicU64,
    rate_share: AtomicU64,
    database_share: AtomicU64,
    /// `sluice_queue_messages` by [`DEPTH_SLOTS`].
    depths: [AtomicU64; 6],
    started: Instant,
}

/// The `(queue, state)` label pairs of `sluice_queue_messages` kept, in [`LiveFigures::depths`].
const DEPTH_SLOTS: [(&str, &str); 6] = [
    ("main", "visible"),
    ("main", "in_flight"),
    ("main", "delayed"),
    ("dlq", "visible"),
    ("dlq", "in_flight"),
    ("dlq", "delayed"),
];

impl Default for LiveFigures {
    fn default() -> Self {
        Self {
            rows_written: AtomicU64::new(0),
            rate: AtomicU64::new(UNSET),
            rate_configured: AtomicU64::new(UNSET),
            oldest_age: AtomicU64::new(UNSET),
            ready: AtomicU64::new(UNSET),
            rate_share: AtomicU64::new(UNSET),
            database_share: AtomicU64::new(UNSET),
            depths: std::array::from_fn(|_| AtomicU64::new(UNSET)),
            started: Instant::now(),
        }
    }
}

impl LiveFigures {
    pub fn snapshot(&self) -> LiveStatus {
        let gauge = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
            UNSET => None,
            bits => Some(f64::from_bits(bits)),
        };
        LiveStatus {
            rows_written: self.rows_written.load(Ordering::Relaxed),
            rate_rows_per_second: gauge(&self.rate),
            rate_configured_rows_per_second: gauge(&self.rate_configured),
            oldest_received_message_age_seconds: gauge(&self.oldest_age),
            ready: gauge(&self.ready).map(|r| r > 0.0),
            rate_share: gauge(&self.rate_share),
            database_share: gauge(&self.database_share),
            conditions: Vec::new(),
            status_reports: None,
            throttle: None,
            queue: self.depth(0, gauge),
            dlq: self.depth(3, gauge),
            uptime_seconds: Some(self.started.elapsed().as_secs_f64()),
            database: None,
        }
    }

    /// The queue whose slots start at `first`, once all three states were recorded.
    fn depth(&self, first: usize, gauge: impl Fn(&AtomicU64) -> Option<f64>) -> Option<Depth> {
        let n = |i: usize| gauge(&self.depths[first + i]).map(|v| v.max(0.0).round() as u64);
        Some(Depth {
            visible: n(0)?,
            in_flight: n(1)?,
            delayed: n(2)?,
        })
    }

    /// The gauge copied for `key`, if any.
    fn gauge(&self, key: &Key) -> Option<&AtomicU64> {
        let name = key.name();
        if name == m::QUEUE_MESSAGES {
            let label = |l: &str| {
                key.labels()
                    .find(|x| x.key() == l)
                    .map(|x| x.value().to_owned())
            };
            let (queue, state) = (label("queue")?, label("state")?);
            let i = DEPTH_SLOTS
                .iter()
                .position(|(q, s)| *q == queue && *s == state)?;
            return Some(&self.depths[i]);
        }
        match name {
            m::RATE_CURRENT => Some(&self.rate),
            m::RATE_CONFIGURED => Some(&self.rate_configured),
            m::OLDEST_RECEIVED_AGE_SECONDS => Some(&self.oldest_age),
            m::READY => Some(&self.ready),
            m::RATE_SHARE => Some(&self.rate_share),
            m::DATABASE_SHARE => Some(&self.database_share),
            _ => None,
        }
    }
}

/// A recorder that hands everything to `inner` and keeps [`LiveFigures`] on the way. The
/// figures are unlabelled metrics (a counter's label sets would add up, a gauge's overwrite),
/// and the queue depths by their `queue` and `state` labels.
#[derive(Debug)]
pub struct Recording<R> {
    pub inner: R,
    pub live: Arc<LiveFigures>,
}

/// A counter recorded in two places.
struct TeeCounter {
    inner: Counter,
    live: Arc<LiveFigures>,
}

impl CounterFn for TeeCounter {
    fn increment(&self, value: u64) {
        self.inner.increment(value);
        self.live.rows_written.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.inner.absolute(value);
        self.live.rows_written.fetch_max(value, Ordering::Relaxed);
    }
}

/// A gauge recorded in two places; `key` picks the copy in [`LiveFigures`].
struct TeeGauge {
    inner: Gauge,
    live: Arc<LiveFigures>,
    key: Key,
}

impl TeeGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        if let Some(copy) = self.live.gauge(&self.key) {
            let _ = copy.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let now = if bits == UNSET {
                    0.0
                } else {
                    f64::from_bits(bits)
                };
                Some(f(now).to_bits())
            });
        }
    }
}

impl GaugeFn for TeeGauge {
    fn increment(&self, value: f64) {
        self.inner.increment(value);
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.inner.decrement(value);
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.inner.set(value);
        self.update(|_| value);
    }
}

impl<R: Recorder> Recorder for Recording<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let inner = self.inner.register_counter(key, metadata);
        if key.name() != m::ROWS_WRITTEN {
            return inner;
        }
        Counter::from_arc(Arc::new(TeeCounter {
            inner,
            live: self.live.clone(),
        }))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let inner = self.inner.register_gauge(key, metadata);
        if self.live.gauge(key).is_none() {
            return inner;
        }
        Gauge::from_arc(Arc::new(TeeGauge {
            inner,
            live: self.live.clone(),
            key: key.clone(),
        }))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records into a [`Recording`] in front of a recorder that keeps nothing.
    fn record(f: impl FnOnce()) -> LiveStatus {
        let recording = Recording {
            inner: metrics::NoopRecorder,
            live: Arc::new(LiveFigures::default()),
        };
        metrics::with_local_recorder(&recording, f);
        recording.live.snapshot()
    }

    #[test]
    fn the_live_figures_follow_the_metrics_as_they_are_recorded() {
        let live = record(|| {
            metrics::counter!(m::ROWS_WRITTEN).increment(1000);
            metrics::counter!(m::ROWS_WRITTEN).increment(500);
            metrics::gauge!(m::RATE_CURRENT).set(120.0);
            metrics::gauge!(m::READY).set(1.0);
        });
        assert_eq!(live.rows_written, 1500);
        assert_eq!(live.rate_rows_per_second, Some(120.0));
        assert_eq!(live.ready, Some(true));
        assert_eq!(live.rate_configured_rows_per_second, None, "never set");
        assert_eq!(live.oldest_received_message_age_seconds, None);
    }

    #[test]
    fn only_the_named_metrics_are_copied_and_label_sets_add_up() {
        let live = record(|| {
            metrics::counter!(m::ROWS_WRITTEN, "writer" => "a").increment(10);
            metrics::counter!(m::ROWS_WRITTEN, "writer" => "b").increment(5);
            metrics::counter!("sluice_rows_written_total_extra").increment(7);
            metrics::gauge!(m::READY).set(0.0);
            metrics::gauge!(m::OLDEST_RECEIVED_AGE_SECONDS).set(3.5);
            metrics::gauge!(m::OLDEST_RECEIVED_AGE_SECONDS).increment(1.0);
        });
        assert_eq!(live.rows_written, 15);
        assert_eq!(live.ready, Some(false));
        assert_eq!(live.oldest_received_message_age_seconds, Some(4.5));
    }

    #[test]
    fn the_queue_depths_are_kept_by_their_labels_once_every_state_was_read() {
        let set = |q: &'static str, s: &'static str, v: f64| {
            metrics::gauge!(m::QUEUE_MESSAGES, "queue" => q, "state" => s).set(v)
        };
        let live = record(|| {
            set("main", "visible", 120.0);
            set("main", "in_flight", 10.0);
            set("main", "delayed", 2.0);
            set("main", "visible", 118.0);
            set("dlq", "visible", 3.0);
        });
        assert_eq!(
            live.queue,
            Some(Depth {
                visible: 118,
                in_flight: 10,
                delayed: 2
            })
        );
        assert_eq!(live.dlq, None, "not every state of the DLQ was read");
        assert!(live.uptime_seconds.is_some_and(|u| u >= 0.0));
    }
}
