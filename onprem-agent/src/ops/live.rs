//! The agent's live figures, served as JSON on `GET /v1/status` and read by `sluice-agent
//! status`: [`LiveStatus`] is that answer on both sides.
//!
//! The figures are metrics the agent already records (rows written, the rate, the oldest
//! received message's age, readiness). [`Recording`] sits in front of the Prometheus recorder
//! and keeps a copy of those few as they are recorded, so the pipeline records each figure once
//! and `/v1/status` reads it without parsing `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use serde::{Deserialize, Serialize};

use crate::pipeline::health::Condition;
use crate::pipeline::report::ReportView;
use crate::telemetry::names as m;
pub use crate::throttle::RateExplained;

/// Where the agent's HTTP server answers with [`LiveStatus`].
pub const PATH: &str = "/v1/status";

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
}

impl Default for LiveFigures {
    fn default() -> Self {
        Self {
            rows_written: AtomicU64::new(0),
            rate: AtomicU64::new(UNSET),
            rate_configured: AtomicU64::new(UNSET),
            oldest_age: AtomicU64::new(UNSET),
            ready: AtomicU64::new(UNSET),
            rate_share: AtomicU64::new(UNSET),
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
            conditions: Vec::new(),
            status_reports: None,
            throttle: None,
        }
    }

    /// The gauge copied for metric `name`, if any.
    fn gauge(&self, name: &str) -> Option<&AtomicU64> {
        match name {
            m::RATE_CURRENT => Some(&self.rate),
            m::RATE_CONFIGURED => Some(&self.rate_configured),
            m::OLDEST_RECEIVED_AGE_SECONDS => Some(&self.oldest_age),
            m::READY => Some(&self.ready),
            m::RATE_SHARE => Some(&self.rate_share),
            _ => None,
        }
    }
}

/// A recorder that hands everything to `inner` and keeps [`LiveFigures`] on the way. The
/// figures are unlabelled metrics; a counter's label sets would add up, a gauge's overwrite.
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

/// A gauge recorded in two places; `name` picks the copy in [`LiveFigures`].
struct TeeGauge {
    inner: Gauge,
    live: Arc<LiveFigures>,
    name: KeyName,
}

impl TeeGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        if let Some(copy) = self.live.gauge(self.name.as_str()) {
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
        if self.live.gauge(key.name()).is_none() {
            return inner;
        }
        Gauge::from_arc(Arc::new(TeeGauge {
            inner,
            live: self.live.clone(),
            name: key.name_shared(),
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
}
