//! The agent's HTTP endpoint on `server.listen`: `/metrics` (Prometheus text), `/healthz`
//! (the process answers) and `/readyz` (PostgreSQL and SQS both answer).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::io::sqs::Queue;
use crate::io::store::Store;

/// A dependency check slower than this counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct ServerState {
    pub metrics: Option<PrometheusHandle>,
    pub store: Store,
    pub queue: Queue,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<ServerState>) -> Response {
    match &s.metrics {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed in this process\n",
        )
            .into_response(),
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
    let show = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    (
        db.is_ok() && sqs.is_ok(),
        serde_json::json!({"postgres": show(&db), "sqs": show(&sqs)}),
    )
}

async fn readyz(State(s): State<ServerState>) -> Response {
    let (ready, detail) = check_ready(&s.store, &s.queue).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(detail)).into_response()
}
