//! The agent's HTTP endpoint on `server.listen`: `/metrics` (Prometheus text), `/healthz`
//! (the process answers), `/readyz` (PostgreSQL and SQS both answer and no condition is raised;
//! PostgreSQL is asked on the store's own probe connection, never a writer's)
//! and `/v1/status` (the live figures `sluice-agent status` reads, as JSON).
//!
//! Keeps the guarantee "Readiness never waits for the writers".

use std::sync::Arc;
use std::time::Duration;

use crate::config::secret;
use crate::io::sqs::Queue;
use crate::io::store::Store;
use crate::ops::live;
use crate::ops::recorder::Installed;
use crate::pipeline::health::Health;
use crate::pipeline::report::Reporter;
use crate::throttle::Throttle;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// A dependency check slower than this counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct ServerState {
    pub metrics: Option<Installed>,
    pub store: Store,
    pub queue: Queue,
    pub health: Health,
    /// The status reporter, when `[status]` is set.
    pub reporter: Option<Arc<Reporter>>,
    /// Read for why the rate is what it is.
    pub throttle: Arc<Throttle>,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(live::PATH, get(live_status))
        .with_state(state)
}

/// Without the recorder (another one was installed first) there is nothing to read.
fn not_installed() -> Response {
    (
        StatusCode::NOT_FOUND,
        "metrics recorder not installed in this process\n",
    )
        .into_response()
}

async fn metrics(State(s): State<ServerState>) -> Response {
    match &s.metrics {
        Some(h) => (
            [("content-type", "text/plain; version=0.0.4")],
            h.prometheus.render(),
        )
            .into_response(),
        None => not_installed(),
    }
}

async fn live_status(State(s): State<ServerState>) -> Response {
    match &s.metrics {
        Some(h) => {
            let mut live = h.live.snapshot();
            live.conditions = s.health.conditions();
            live.status_reports = s.reporter.as_ref().map(|r| r.view());
            live.throttle = s.throttle.explained();
            Json(live).into_response()
        }
        None => not_installed(),
    }
}

/// Readiness of both ends, with the reason when not ready.
pub async fn check_ready(store: &Store, queue: &Queue) -> (bool, serde_json::Value) {
    let db = match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    let sqs = match tokio::time::timeout(PROBE_TIMEOUT, queue.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.detail),
        Err(_) => Err("timed out".to_owned()),
    };
    // A driver's error text may quote the connection settings: scrubbed of the password.
    let show = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": secret::scrub(e)}),
    };
    (
        db.is_ok() && sqs.is_ok(),
        serde_json::json!({"postgres": show(&db), "sqs": show(&sqs)}),
    )
}

/// [`check_ready`], and no [`Health`] condition raised: what `/readyz` and `sluice_ready` say.
pub async fn readiness(store: &Store, queue: &Queue, health: &Health) -> (bool, serde_json::Value) {
    let (deps_ready, mut detail) = check_ready(store, queue).await;
    let conditions = health.conditions();
    if !conditions.is_empty() {
        detail["conditions"] = serde_json::json!(conditions);
    }
    (deps_ready && conditions.is_empty(), detail)
}

async fn readyz(State(s): State<ServerState>) -> Response {
    let (ready, detail) = readiness(&s.store, &s.queue, &s.health).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(detail)).into_response()
}
