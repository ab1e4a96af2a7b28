//! `sluice-ingest upload --wait` as a user meets it, against a stand-in API on loopback: the
//! flags it refuses, the refused lines it names, and each exit code.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the stand-in's status endpoint answers.
#[derive(Clone, Copy)]
enum Mode {
    /// `stored_with_rejections`, refusing two receipts.
    Refusing,
    /// `stored`.
    Clean,
    /// `accepted`, forever.
    Stuck,
    /// 404 for every batch.
    NoStatus,
}

async fn stand_in(mode: Mode) -> SocketAddr {
    let app = Router::new()
        .route(
            "/v1/batches",
            post(|| async { (StatusCode::ACCEPTED, Json(json!({"batch_id": "b-1", "chunks": 1, "bytes": 10}))) }),
        )
        .route(
            "/v1/batches/{id}",
            get(|State(mode): State<Arc<Mode>>, Path(id): Path<String>| async move {
                let (state, stored, conflicts, rejected, rejections) = match *mode {
                    Mode::NoStatus => return Err(StatusCode::NOT_FOUND),
                    Mode::Stuck => ("accepted", 0, 0, 0, json!([])),
                    Mode::Clean => ("stored", 4, 0, 0, json!([])),
                    Mode::Refusing => (
                        "stored_with_rejections",
                        2,
                        1,
                        1,
                        json!([
                            {"receipt_id": "r-3", "reason": "P0001: tax must not exceed total"},
                            {"receipt_id": "r-2", "reason": "conflict: stored with content aa, sent bb"},
                        ]),
                    ),
                };
                let done = u64::from(state != "accepted");
                Ok(Json(json!({
                    "batch_id": id, "state": state, "receipts": 4, "chunks": 1, "chunks_done": done,
                    "stored": stored, "duplicates": 0, "conflicts": conflicts, "rejected": rejected,
                    "rejections": rejections, "rejections_total": conflicts + rejected,
                    "accepted_at": "2026-01-01T00:00:00Z", "completed_at": null,
                })))
            }),
        )
        .with_state(Arc::new(mode));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A four-receipt file with a blank line 2: receipts on lines 1, 3, 4, 5.
fn file(name: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("sluice-wait-{name}-{}.ndjson", std::process::id()));
    let lines = ["r-1", "", "r-2", "r-3", "r-4"]
        .map(|id| match id {
            "" => String::new(),
            id => format!("{{\"receipt_id\":\"{id}\"}}"),
        })
        .join("\n");
    std::fs::write(&path, lines).expect("write");
    path
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
            .arg("upload")
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("sluice-ingest runs")
    })
    .await
    .expect("joined")
}

async fn upload_wait(mode: Mode, name: &str, extra: &[&str]) -> (Output, String, String) {
    let addr = stand_in(mode).await;
    let path = file(name);
    let mut args = vec![
        path.to_string_lossy().into_owned(),
        "--api".to_owned(),
        format!("http://{addr}"),
        "--wait".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = run(args).await;
    std::fs::remove_file(&path).ok();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[tokio::test]
async fn refused_receipts_are_named_by_file_line_and_exit_1() {
    let (out, stdout, stderr) = upload_wait(Mode::Refusing, "refusing", &[]).await;
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "line 3: receipt r-2: conflict: stored with content aa, sent bb\n\
             line 4: receipt r-3: P0001: tax must not exceed total\n"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "1 of 1 batches final; 4 receipts: 2 stored, 0 duplicates, 1 conflicts, 1 rejected"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("receipts settled"),
        "a progress line: {stderr}"
    );
}

#[tokio::test]
async fn a_clean_upload_exits_0_and_json_carries_the_final_statuses() {
    let (out, stdout, stderr) = upload_wait(Mode::Clean, "clean", &["--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(report["accepted"], 4);
    assert_eq!(report["wait"]["end"], "final");
    assert_eq!(report["wait"]["batches"][0]["status"]["state"], "stored");
    assert_eq!(report["wait"]["totals"]["stored"], 4);
    assert_eq!(report["wait"]["refused"], json!([]));
}

#[tokio::test]
async fn a_batch_that_never_finishes_times_out_with_exit_75() {
    let (out, stdout, stderr) = upload_wait(Mode::Stuck, "stuck", &["--wait-timeout", "2s"]).await;
    assert_eq!(out.status.code(), Some(75), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("0 of 1 batches NOT final: --wait-timeout passed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_api_without_a_status_endpoint_exits_69() {
    let (out, stdout, stderr) = upload_wait(Mode::NoStatus, "nostatus", &[]).await;
    assert_eq!(out.status.code(), Some(69), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the API answered 404 for every batch (is its status table configured?)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn malformed_wait_flags_are_usage_errors() {
    let path = file("flags");
    let p = path.to_string_lossy().into_owned();
    for (args, needle) in [
        (
            vec!["--wait", "--wait-timeout", "0"],
            "invalid value '0' for '--wait-timeout <WAIT_TIMEOUT>': must be at least 1 second",
        ),
        (
            vec!["--wait", "--wait-timeout", "5d"],
            "\"5d\" is not a duration like 90, 90s, 15m or 2h",
        ),
        (vec!["--wait-timeout", "5m"], "--wait"),
    ] {
        let mut all = vec![
            p.clone(),
            "--api".to_owned(),
            "http://127.0.0.1:1".to_owned(),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let out = run(all).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "clap's usage error for {args:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    std::fs::remove_file(&path).ok();
}
