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
//!
//! With `--photos DIR`, [`photos`] finds each receipt's photo file and declares it in the line
//! (`image: {sha256, bytes, content_type}`), every file checked before anything is sent; after
//! each 202, [`put`] streams the request's photos to their presigned URLs, and the
//! [`journal`] records each one stored so that a re-run skips it.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use serde::Serialize;
use tokio::sync::mpsc;

pub mod journal;
pub mod outcome;
pub mod photos;
pub mod put;
pub mod wait;

use photos::{LocalPhoto, PhotoDir};
use put::{PhotoEnd, PhotoStage};

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
    /// Attempts per request for retryable answers (429, 5xx, connection errors); also per
    /// photo PUT.
    pub max_attempts: usize,
    /// `--photos DIR`: each receipt's photo declared and uploaded.
    pub photos: Option<PhotoOptions>,
}

/// How to find and upload photos.
#[derive(Debug, Clone)]
pub struct PhotoOptions {
    /// The photo directory.
    pub dir: PathBuf,
    /// The resume journal; `DIR/.sluice-upload.journal` when not given.
    pub journal: Option<PathBuf>,
    /// Photo PUTs in flight at once.
    pub parallel: usize,
    /// Refuse a receipt without a photo file (before anything is sent).
    pub require: bool,
    /// Largest photo sent.
    pub max_bytes: u64,
}

impl PhotoOptions {
    /// Options for `dir` with the defaults.
    pub fn new(dir: PathBuf) -> Self {
        PhotoOptions {
            dir,
            journal: None,
            parallel: 8,
            require: false,
            max_bytes: sluice_protocol::receipt::MAX_PHOTO_BYTES,
        }
    }

    /// Where the journal is.
    pub fn journal_path(&self) -> PathBuf {
        self.journal
            .clone()
            .unwrap_or_else(|| self.dir.join(journal::DEFAULT_NAME))
    }
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
            photos: None,
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
    /// With `--photos`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photos: Option<PhotoReport>,
}

impl UploadReport {
    pub fn ok(&self) -> bool {
        self.refused == 0 && self.photos.as_ref().is_none_or(|p| p.failed.is_empty())
    }
}

/// What `--photos` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhotoReport {
    /// Lines with a photo file.
    pub photos: usize,
    /// Their bytes.
    pub bytes: u64,
    /// PUT and answered 2xx in this run, and their bytes.
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// Already in the journal.
    pub skipped: usize,
    /// Receipts sent without a photo: no file for them.
    pub without_file: usize,
    /// Their first lines.
    pub without_file_lines: Vec<usize>,
    /// Requests sent again for fresh URLs.
    pub url_renewals: usize,
    /// PUTs retried.
    pub retries: usize,
    /// Photos not stored.
    pub failed: Vec<PhotoFailure>,
    /// The resume journal.
    pub journal: PathBuf,
}

/// A photo not stored, and why.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoFailure {
    pub line: usize,
    pub receipt_id: String,
    pub file: PathBuf,
    pub error: String,
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
    #[error("the photo directory {path}: {source}")]
    PhotoDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the journal {path}: {source} (give another file with --journal)")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Photos that cannot be sent: nothing was sent.
    #[error("{total} line(s) cannot be sent with their photo; nothing was sent:\n  {}{}", errors.join("\n  "), if *total > errors.len() { format!("\n  … and {} more", total - errors.len()) } else { String::new() })]
    Photos { errors: Vec<String>, total: usize },
}

/// Progress, reported after every finished request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub receipts_done: usize,
    pub requests_done: usize,
    pub retries: usize,
    /// With `--photos`: photos to send and their bytes (from the first look).
    pub photos_total: usize,
    pub photo_bytes_total: u64,
    /// Photos ended (stored, skipped or failed).
    pub photos_done: usize,
    /// Bytes of the photos ended.
    pub photo_bytes_done: u64,
    /// Bytes PUT in this run.
    pub photo_bytes_uploaded: u64,
    pub photos_failed: usize,
}

/// One request to make: the lines it carries and where they came from.
struct Part {
    /// NDJSON body: one receipt per line, blank lines dropped.
    body: Vec<u8>,
    /// File line of each receipt, to translate `/receipts/i` back to the file.
    lines: Vec<usize>,
    /// The photos its lines declare.
    photos: Vec<LocalPhoto>,
}

/// Uploads `path`, calling `progress` after each request (and with `--photos`, each photo).
pub async fn upload_file(
    path: &Path,
    opts: &UploadOptions,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<UploadReport, UploadError> {
    if !(opts.api.starts_with("http://") || opts.api.starts_with("https://")) {
        return Err(UploadError::BadApi(opts.api.clone()));
    }
    let read_error = |source| UploadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let client = http_client()?;
    let url = format!("{}/v1/batches", opts.api.trim_end_matches('/'));
    let progress = Arc::new(progress);
    let state = Arc::new(std::sync::Mutex::new((
        UploadReport::default(),
        Progress::default(),
    )));

    // Photos: every file looked at before anything is sent, then the journal opened.
    let (photo_dir, stage) = match &opts.photos {
        None => (None, None),
        Some(p) => {
            let (dir, stage, report) = prepare_photos(path, opts, p).await?;
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.1.photos_total = report.photos;
            s.1.photo_bytes_total = report.bytes;
            s.0.photos = Some(report);
            (Some(dir), Some(Arc::new(stage)))
        }
    };

    let parallel = opts.parallel.max(1);
    let (tx, rx) = mpsc::channel::<Part>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..parallel {
        let rx = rx.clone();
        let client = client.clone();
        let url = url.clone();
        let opts = opts.clone();
        let progress = progress.clone();
        let state = state.clone();
        let stage = stage.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(part) = rx.lock().await.recv().await else {
                    return;
                };
                let (outcome, urls) = send_part(&client, &url, &opts, &part).await;
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
                    *prog
                };
                progress(snapshot);
                if let (Some(stage), Some(batch_id)) = (&stage, &outcome.batch_id) {
                    if !part.photos.is_empty() {
                        let (st, pr) = (state.clone(), progress.clone());
                        let done = move |photo: &LocalPhoto, end: &PhotoEnd| {
                            let snapshot = {
                                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                                let (report, prog) = &mut *s;
                                photo_ended(report, prog, photo, end);
                                *prog
                            };
                            pr(snapshot);
                        };
                        let (c, u, o, p) = (&client, &url, &opts, &part);
                        let renew = move || -> put::Renewal<'_> {
                            Box::pin(async move {
                                let (again, urls) = send_part(c, u, o, p).await;
                                match again.error {
                                    None => Ok(urls),
                                    Some(e) => Err(e),
                                }
                            })
                        };
                        let renewals = stage
                            .put_all(batch_id, &part.photos, urls, &renew, &done)
                            .await;
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(r) = s.0.photos.as_mut() {
                            r.url_renewals += renewals;
                        }
                    }
                }
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.0.requests.push(outcome);
            }
        }));
    }

    // Read on a blocking thread: the file may be large and the disk slow.
    let per_request = opts.receipts_per_request.max(1);
    let reader_path = path.to_owned();
    let reader =
        tokio::task::spawn_blocking(move || read_parts(file, per_request, photo_dir.as_ref(), &tx))
            .await
            .map_err(|e| UploadError::Read {
                path: reader_path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
    reader.map_err(read_error)?;
    for w in workers {
        // A worker only ends when the channel closes; a panic would be a bug, not input.
        let _ = w.await;
    }
    let mut report = std::mem::take(&mut state.lock().unwrap_or_else(|p| p.into_inner()).0);
    report.requests.sort_by_key(|r| r.first_line);
    if let Some(p) = report.photos.as_mut() {
        p.failed.sort_by_key(|f| f.line);
    }
    Ok(report)
}

/// The first look at every photo (refusing the upload if any cannot be sent), the journal, and
/// the PUT stage.
async fn prepare_photos(
    path: &Path,
    opts: &UploadOptions,
    p: &PhotoOptions,
) -> Result<(PhotoDir, PhotoStage, PhotoReport), UploadError> {
    match std::fs::metadata(&p.dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(UploadError::PhotoDir {
                path: p.dir.clone(),
                source: std::io::Error::other("not a directory"),
            })
        }
        Err(source) => {
            return Err(UploadError::PhotoDir {
                path: p.dir.clone(),
                source,
            })
        }
    }
    let dir = PhotoDir {
        dir: p.dir.clone(),
        max_bytes: p.max_bytes,
    };
    let (look_dir, look_path, require) = (dir.clone(), path.to_owned(), p.require);
    let plan = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&look_path)?;
        photos::plan(std::io::BufReader::new(file), &look_dir, require)
    })
    .await
    .map_err(|e| UploadError::Read {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?
    .map_err(|source| UploadError::Read {
        path: path.to_owned(),
        source,
    })?;
    if plan.total_errors > 0 {
        return Err(UploadError::Photos {
            errors: plan.errors,
            total: plan.total_errors,
        });
    }
    let journal_path = p.journal_path();
    let journal = journal::Journal::open(&journal_path).map_err(|source| UploadError::Journal {
        path: journal_path.clone(),
        source,
    })?;
    if journal.torn {
        tracing::info!(journal = %journal_path.display(), "The journal's last line was cut short (a crash); that photo is uploaded again.");
    }
    let stage = PhotoStage {
        client: photo_client()?,
        journal,
        slots: Arc::new(tokio::sync::Semaphore::new(p.parallel.max(1))),
        max_attempts: opts.max_attempts,
        api: opts.api.trim_end_matches('/').to_owned(),
    };
    let report = PhotoReport {
        photos: plan.photos,
        bytes: plan.bytes,
        without_file: plan.missing,
        without_file_lines: plan.missing_lines,
        journal: journal_path,
        ..PhotoReport::default()
    };
    Ok((dir, stage, report))
}

/// Counts one photo's end.
fn photo_ended(report: &mut UploadReport, prog: &mut Progress, photo: &LocalPhoto, end: &PhotoEnd) {
    prog.photos_done += 1;
    prog.photo_bytes_done += photo.bytes;
    let Some(r) = report.photos.as_mut() else {
        return;
    };
    match end {
        PhotoEnd::Stored { attempts } => {
            r.uploaded += 1;
            r.uploaded_bytes += photo.bytes;
            r.retries += attempts.saturating_sub(1);
            prog.photo_bytes_uploaded += photo.bytes;
        }
        PhotoEnd::Skipped => r.skipped += 1,
        PhotoEnd::Failed(why) => {
            prog.photos_failed += 1;
            r.failed.push(PhotoFailure {
                line: photo.line,
                receipt_id: photo.receipt_id.clone(),
                file: photo.path.clone(),
                error: why.clone(),
            });
        }
    }
}

const MB: f64 = 1_000_000.0;

/// The photo progress line: `photos 120/200, 120.0/200.0 MB, 35.2 MB/s, 3 requests sent`.
pub fn photo_progress_line(p: &Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut line = format!(
        "photos {}/{}, {:.1}/{:.1} MB, {:.1} MB/s, {} requests sent",
        p.photos_done,
        p.photos_total,
        p.photo_bytes_done as f64 / MB,
        p.photo_bytes_total as f64 / MB,
        p.photo_bytes_uploaded as f64 / MB / secs,
        p.requests_done,
    );
    if p.photos_failed > 0 {
        line.push_str(&format!(", {} FAILED", p.photos_failed));
    }
    line
}

/// The summary of `--photos`, one line.
pub fn describe_photos(r: &PhotoReport, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut line = format!(
        "photos: {} uploaded ({:.1} MB, {:.1} MB/s), {} already stored (journal {})",
        r.uploaded,
        r.uploaded_bytes as f64 / MB,
        r.uploaded_bytes as f64 / MB / secs,
        r.skipped,
        r.journal.display()
    );
    if !r.failed.is_empty() {
        line.push_str(&format!(", {} NOT STORED", r.failed.len()));
    }
    if r.url_renewals > 0 {
        line.push_str(&format!(
            ", {} request(s) sent again for fresh URLs",
            r.url_renewals
        ));
    }
    if r.without_file > 0 {
        let lines: Vec<String> = r.without_file_lines.iter().map(usize::to_string).collect();
        let more = if r.without_file > lines.len() {
            ", …"
        } else {
            ""
        };
        line.push_str(&format!(
            "; {} receipt(s) sent without a photo, no file for them (lines {}{more})",
            r.without_file,
            lines.join(", ")
        ));
    }
    line
}

/// The HTTP client of the photo PUTs: no overall timeout (each PUT sets its own, by size).
fn photo_client() -> Result<reqwest::Client, UploadError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| UploadError::Client(e.to_string()))
}

/// The HTTP client of the uploader and of `--wait`.
pub(crate) fn http_client() -> Result<reqwest::Client, UploadError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| UploadError::Client(e.to_string()))
}

/// Cuts the file into parts of `per_request` receipts and sends them down `tx`; with `photos`,
/// each line's photo is read through and declared in the line.
fn read_parts(
    file: std::fs::File,
    per_request: usize,
    photos: Option<&PhotoDir>,
    tx: &mpsc::Sender<Part>,
) -> std::io::Result<()> {
    let reader = std::io::BufReader::new(file);
    let empty = || Part {
        body: Vec::new(),
        lines: Vec::new(),
        photos: Vec::new(),
    };
    let mut part = empty();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match photos
            .map(|dir| declared_line(dir, &line, n + 1))
            .transpose()
        {
            Ok(Some(Some((body, photo)))) => {
                part.body.extend_from_slice(&body);
                part.photos.push(photo);
            }
            Ok(_) => part.body.extend_from_slice(&line),
            Err(why) => return Err(std::io::Error::other(format!("line {}: {why}", n + 1))),
        }
        part.body.push(b'\n');
        part.lines.push(n + 1);
        if part.lines.len() == per_request {
            let full = std::mem::replace(&mut part, empty());
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

/// The line with its photo declared, and the photo; `None` for a line sent as it is.
fn declared_line(
    dir: &PhotoDir,
    line: &[u8],
    number: usize,
) -> Result<Option<(Vec<u8>, LocalPhoto)>, String> {
    match dir.lookup(line)? {
        photos::Lookup::Untouched { .. } => Ok(None),
        photos::Lookup::Photo {
            fields,
            receipt_id,
            file,
        } => {
            let sha256 = photos::digest(&file.path, file.bytes)?;
            let body = photos::declare(fields, &sha256, &file);
            Ok(Some((
                body,
                LocalPhoto {
                    line: number,
                    receipt_id,
                    path: file.path,
                    bytes: file.bytes,
                    sha256,
                    content_type: file.content_type,
                },
            )))
        }
    }
}

/// Whether an answer may be retried: the request was not judged, only not served.
fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

/// One request, retried while it may be; with the 202's upload URLs.
async fn send_part(
    client: &reqwest::Client,
    url: &str,
    opts: &UploadOptions,
    part: &Part,
) -> (RequestOutcome, Vec<crate::photos::PhotoUpload>) {
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
                    let urls = match answer.get("photos") {
                        Some(p) => serde_json::from_value(p.clone()).unwrap_or_default(),
                        None => Vec::new(),
                    };
                    return (outcome, urls);
                }
                let why = describe_refusal(status, &answer, &part.lines);
                (retryable(status), retry_after, why)
            }
            Err(e) => (true, None, format!("request failed: {e}")),
        };
        if !retry || outcome.attempts >= opts.max_attempts.max(1) {
            outcome.error = Some(why);
            return (outcome, Vec::new());
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
