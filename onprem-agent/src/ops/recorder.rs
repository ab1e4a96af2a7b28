//! The metrics recorder, installed once per process: Prometheus, with the live figures of
//! [`crate::ops::live`] kept on the way. The names recorded are in [`crate::telemetry::names`].

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::ops::live::{LiveFigures, Recording};
use crate::telemetry::names::{COMMIT_SECONDS, COUNTERS_FROM_ZERO};

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// What the installed recorder can be read through.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Answers `/v1/status`.
    pub live: Arc<LiveFigures>,
}

static HANDLE: OnceLock<Option<Installed>> = OnceLock::new();

/// Installs the global recorder once per process and returns its handles (`None` if another
/// recorder was installed first, e.g. by an embedding program).
pub fn install() -> Option<Installed> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(COMMIT_SECONDS.to_owned()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            let live = Arc::new(LiveFigures::default());
            metrics::set_global_recorder(Recording {
                inner: recorder,
                live: live.clone(),
            })
            .ok()?;
            // Histograms keep samples until upkeep folds them; without it memory grows with
            // every batch. A plain thread, so it outlives any one tokio runtime (tests run
            // several per process).
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "Cannot start metrics upkeep; histograms will grow.");
            }
            for name in COUNTERS_FROM_ZERO {
                metrics::counter!(*name).absolute(0);
            }
            Some(Installed {
                prometheus: handle,
                live,
            })
        })
        .clone()
}
