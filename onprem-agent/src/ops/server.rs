//! The agent's HTTP endpoint on `server.listen`: `/metrics` (Prometheus text), `/healthz`
//! (the process answers), `/readyz` (PostgreSQL and SQS both answer and no condition is raised;
//! PostgreSQL is asked on the store's own probe connection, never a writer's),
//! `/v1/status` (the live figures `sluice-agent status` reads, as JSON) and `/` (the live
//! page, [`PAGE`], which follows `/v1/status?database=1` every second and starts its charts
//! from `/v1/status/history`).
//!
//! Every route is a GET that reads: nothing here can change the agent.
//!
//! Keeps the guarantee "Readiness never waits for the writers".

use std::sync::Arc;
use std::time::Duration;

use crate::config::secret;
use crate::io::sqs::Queue;
use crate::io::store::Store;
use crate::ops::history::{self, History};
use crate::ops::live::{self, DatabaseCache};
use crate::ops::recorder::Installed;
use crate::pipeline::health::Health;
use crate::pipeline::report::Reporter;
use crate::throttle::Throttle;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// The live page: one self-contained HTML file (inline CSS, inline script drawing SVG charts),
/// no request leaves the agent's own address (its Content-Security-Policy says so too).
pub const PAGE: &str = include_str!("page.html");

/// What the page may load: only from the agent itself, and only its own inline script and
/// style; it cannot be framed or submit anything.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
    /// What the live page asks of PostgreSQL, read at most once a second.
    pub database: Arc<DatabaseCache>,
}

/// `/v1/status?database=1` adds [`live::DatabaseFigures`].
#[derive(Debug, Default, serde::Deserialize)]
struct StatusQuery {
    #[serde(default)]
    database: Option<u8>,
}

/// The routes; starts sampling the live page's [`History`] (when the recorder is installed),
/// which ends with the router.
pub fn router(state: ServerState) -> Router {
    let history = Arc::new(History::default());
    if let Some(h) = &state.metrics {
        history.start(h.live.clone(), state.throttle.clone());
    }
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(live::PATH, get(live_status))
        .route(
            history::PATH,
            get(move || {
                let points = history.points();
                async move { Json(points) }
            }),
        )
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

async fn page() -> Response {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            ("content-security-policy", PAGE_POLICY),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

async fn live_status(State(s): State<ServerState>, Query(q): Query<StatusQuery>) -> Response {
    match &s.metrics {
        Some(h) => {
            let mut live = h.live.snapshot();
            live.conditions = s.health.conditions();
            live.status_reports = s.reporter.as_ref().map(|r| r.view());
            live.throttle = s.throttle.explained();
            if q.database.unwrap_or(0) != 0 {
                live.database = Some(s.database.get(&s.store).await);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_live_page_is_html_that_loads_nothing_from_elsewhere() {
        let res = page().await;
        assert_eq!(res.status(), StatusCode::OK);
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), "text/html; charset=utf-8");
        let policy = header("content-security-policy");
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");

        // No URL but the SVG namespace (a name, never fetched); no tag that loads anything.
        let without_ns = PAGE.replace("\"http://www.w3.org/2000/svg\"", "");
        for needle in [
            "http://", "https://", "//cdn", "<link", "<iframe", "<img", "src=", "@import", "url(",
        ] {
            assert!(!without_ns.contains(needle), "the page contains {needle:?}");
        }
        // It reads the live JSON and nothing else, with GETs only.
        assert!(PAGE.contains(&format!("\"{}?database=1\"", live::PATH)));
        assert!(PAGE.contains(&format!("\"{}\"", history::PATH)));
        assert_eq!(PAGE.matches("fetch(").count(), 2);
        for needle in ["method:", "POST", "PUT", "DELETE", "<form"] {
            assert!(!PAGE.contains(needle), "the page contains {needle:?}");
        }
    }
}
