//! The client side of the API: `sluice-ingest upload FILE.ndjson --api URL` cuts a large NDJSON
//! file into requests, sends them in parallel (gzip), retries what may be retried, and reports
//! the batch ids, or the file lines of every refused receipt.
//!
//! Retrying is safe end to end: each request carries an `Idempotency-Key` derived from its
//! content (so a retry, or a later run over the same file, names the same batch), and receipts
//! are idempotent by `receipt_id` in the database. The file is read as a stream: at most
//! `parallel + 1` requests are held in memory, whatever the file's size.
//!
//! With `--wait`, [`wait`] then follows the batches on the status endpoint until they are
//! final, and [`outcome`] names the refused receipts by file line.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use serde::Serialize;
use tokio::sync::mpsc;

pub mod outcome;
pub mod wait;

/// Namespace for request keys (UUID v5 of the request body), fixed forever so that the same
/// lines always make the same key.
const KEY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x0d7e_45b1_93a6_4f0c_b8e2_51c4_7a90_3e16);

/// How to upload.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Base URL of the API, e.g. `https://abc.execute-api.eu-west-1.amazonaws.com`.
    pub api: String,
    /// Bearer token, if the API wants one.
    pub token: Option<String>,
    /// Receipts per request. 5,000 typical receipts gzip to about 1 MB, well under Lambda's
    /// 6 MB body limit, and one refused request then names at most that many lines.
    pub receipts_per_request: usize,
    /// Requests in flight at once.
    pub parallel: usize,
    /// Compress request bodies.
    pub gzip: bool,
    /// Attempts per request for retryable answers (429, 5xx, connection errors).
    pub max_attempts: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            api: String::new(),
            token: None,
            receipts_per_request: 5_000,
            parallel: 4,
            gzip: true,
            max_attempts: 8,
        }
    }
}

/// One request's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RequestOutcome {
    /// 1-based line of the file where the request's first receipt is.
    pub first_line: usize,
    /// 1-based line of the file where the request's last receipt is.
    pub last_line: usize,
    /// Receipts in the request.
    pub receipts: usize,
    /// The `Idempotency-Key` sent.
    pub idempotency_key: String,
    /// `batch_id` from the 202 answer.
    pub batch_id: Option<String>,
    /// SQS messages the API split the request into (202 answer).
    pub chunks: u64,
    /// Their size as SQS counts it (202 answer).
    pub bytes: u64,
    /// Attempts made.
    pub attempts: usize,
    /// Why it was refused, when it was: status and the API's message, then one line per
    /// refused receipt (`line N: /receipts/…: reason`).
    pub error: Option<String>,
}

/// What the whole upload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UploadReport {
    pub requests: Vec<RequestOutcome>,
    /// Receipts accepted (202).
    pub accepted: usize,
    /// Receipts in refused requests.
    pub refused: usize,
}

impl UploadReport {
    pub fn ok(&self) -> bool {
        self.refused == 0
    }
}

/// Why an upload could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--api {0:?} is not an http(s) URL")]
    BadApi(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Progress, reported after every finished request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub receipts_done: usize,
    pub requests_done: usize,
    pub retries: usize,
}

/// One request to make: the lines it carries and where they came from.
struct Part {
    /// NDJSON body: one receipt per line, blank lines dropped.
    body: Vec<u8>,
    /// File line of each receipt, to translate `/receipts/i` back to the file.
    lines: Vec<usize>,
}

/// Uploads `path`, calling `progress` after each request.
pub async fn upload_file(
    path: &Path,
    opts: &UploadOptions,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<UploadReport, UploadError> {
    if !(opts.api.starts_with("http://") || opts.api.starts_with("https://")) {
        return Err(UploadError::BadApi(opts.api.clone()));
    }
    let file = std::fs::File::open(path).map_err(|source| UploadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let client = http_client()?;
    let url = format!("{}/v1/batches", opts.api.trim_end_matches('/'));

    let parallel = opts.parallel.max(1);
    let (tx, rx) = mpsc::channel::<Part>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let progress = Arc::new(progress);
    let state = Arc::new(std::sync::Mutex::new((
        UploadReport::default(),
        Progress::default(),
    )));

    let mut workers = Vec::new();
    for _ in 0..parallel {
        let rx = rx.clone();
        let client = client.clone();
        let url = url.clone();
        let opts = opts.clone();
        let progress = progress.clone();
        let state = state.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(part) = rx.lock().await.recv().await else {
                    return;
                };
                let outcome = send_part(&client, &url, &opts, &part).await;
                let snapshot = {
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    let (report, prog) = &mut *s;
                    match outcome.error {
                        None => report.accepted += outcome.receipts,
                        Some(_) => report.refused += outcome.receipts,
                    }
                    prog.receipts_done += outcome.receipts;
                    prog.requests_done += 1;
                    prog.retries += outcome.attempts.saturating_sub(1);
                    report.requests.push(outcome);
                    *prog
                };
                progress(snapshot);
            }
        }));
    }

    // Read on a blocking thread: the file may be large and the disk slow.
    let per_request = opts.receipts_per_request.max(1);
    let reader_path = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_parts(file, per_request, &tx))
        .await
        .map_err(|e| UploadError::Read {
            path: reader_path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    reader.map_err(|source| UploadError::Read {
        path: reader_path,
        source,
    })?;
    for w in workers {
        // A worker only ends when the channel closes; a panic would be a bug, not input.
        let _ = w.await;
    }
    let mut report = std::mem::take(&mut state.lock().unwrap_or_else(|p| p.into_inner()).0);
    report.requests.sort_by_key(|r| r.first_line);
    Ok(report)
}

/// The HTTP client of the uploader and of `--wait`.
pub(crate) fn http_client() -> Result<reqwest::Client, UploadError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| UploadError::Client(e.to_string()))
}

/// Cuts the file into parts of `per_request` receipts and sends them down `tx`.
fn read_parts(
    file: std::fs::File,
    per_request: usize,
    tx: &mpsc::Sender<Part>,
) -> std::io::Result<()> {
    let reader = std::io::BufReader::new(file);
    let mut part = Part {
        body: Vec::new(),
        lines: Vec::new(),
    };
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        part.body.extend_from_slice(&line);
        part.body.push(b'\n');
        part.lines.push(n + 1);
        if part.lines.len() == per_request {
            let full = std::mem::replace(
                &mut part,
                Part {
                    body: Vec::new(),
                    lines: Vec::new(),
                },
            );
            if tx.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !part.lines.is_empty() {
        let _ = tx.blocking_send(part);
    }
    Ok(())
}

/// Whether an answer may be retried: the request was not judged, only not served.
fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

async fn send_part(
    client: &reqwest::Client,
    url: &str,
    opts: &UploadOptions,
    part: &Part,
) -> RequestOutcome {
    let key = format!("ndjson-{}", uuid::Uuid::new_v5(&KEY_NAMESPACE, &part.body));
    let body = if opts.gzip {
        gzip(&part.body)
    } else {
        part.body.clone()
    };
    let mut outcome = RequestOutcome {
        first_line: part.lines.first().copied().unwrap_or(0),
        last_line: part.lines.last().copied().unwrap_or(0),
        receipts: part.lines.len(),
        idempotency_key: key.clone(),
        batch_id: None,
        chunks: 0,
        bytes: 0,
        attempts: 0,
        error: None,
    };
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        outcome.attempts += 1;
        let mut req = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", &key)
            .body(body.clone());
        if opts.gzip {
            req = req.header("content-encoding", "gzip");
        }
        if let Some(t) = &opts.token {
            req = req.bearer_auth(t);
        }
        let (retry, retry_after, why) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let answer: serde_json::Value = resp.json().await.unwrap_or_default();
                if status == 202 {
                    outcome.batch_id = answer["batch_id"].as_str().map(str::to_owned);
                    outcome.chunks = answer["chunks"].as_u64().unwrap_or(0);
                    outcome.bytes = answer["bytes"].as_u64().unwrap_or(0);
                    return outcome;
                }
                let why = describe_refusal(status, &answer, &part.lines);
                (retryable(status), retry_after, why)
            }
            Err(e) => (true, None, format!("request failed: {e}")),
        };
        if !retry || outcome.attempts >= opts.max_attempts.max(1) {
            outcome.error = Some(why);
            return outcome;
        }
        let delay = retry_after
            .or_else(|| delays.next())
            .unwrap_or(Duration::from_secs(30));
        tracing::warn!(first_line = outcome.first_line, attempt = outcome.attempts, error = %why, retry_in = ?delay, "Upload request not accepted; retrying.");
        tokio::time::sleep(delay).await;
    }
}

/// The API's refusal in terms of the file: `/receipts/3/total` in a request starting at line
/// 10,001 is `line 10004`.
fn describe_refusal(status: u16, answer: &serde_json::Value, lines: &[usize]) -> String {
    let mut out = format!(
        "HTTP {status}: {}",
        answer["message"].as_str().unwrap_or("(no message)")
    );
    if let Some(errors) = answer["errors"].as_array() {
        for e in errors {
            let index = e["index"].as_u64().unwrap_or(0) as usize;
            let line = lines.get(index).copied().unwrap_or(0);
            out.push_str(&format!(
                "\n  line {line}: {}: {}",
                e["pointer"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or("")
            ));
        }
        let total = answer["total_errors"].as_u64().unwrap_or(0) as usize;
        if total > errors.len() {
            out.push_str(&format!(
                "\n  … and {} more problem(s)",
                total - errors.len()
            ));
        }
    }
    if let (Some(line), Some(column)) = (answer["line"].as_u64(), answer["column"].as_u64()) {
        // NDJSON: the API's line counts within the request.
        let file_line = lines.get(line as usize - 1).copied().unwrap_or(0);
        out.push_str(&format!(
            "\n  at line {file_line}, column {column} of the file"
        ));
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests;
