//! The ingest HTTP API: one axum `Router`, served by `lambda_http::run` on Lambda and by a
//! plain listener locally.
//!
//! Keeps the guarantees "An upload is all or nothing" (every receipt is validated before anything
//! is sent; 202 only once SQS took every chunk), "A gzip bomb cannot take the ingest's memory"
//! (`gunzip` inflates step by step and stops at the limit) and "API errors leak no internals".
//!
//! `POST /v1/batches` validates every receipt, splits them into chunks and enqueues them; it
//! answers 202 only once SQS has accepted every chunk. `GET /healthz` answers `ok`.
//!
//! An `Idempotency-Key` names one body of one caller: with the upload records table
//! (`records`), the batch id is derived from the caller (`identity::caller`, when the
//! authentication names one) and the key, and recorded with the body's SHA-256 before anything
//! is sent, so the same caller's key with another body is refused (422
//! `idempotency_key_reused`) and with the same body gets the same batch id. Two callers using
//! one key get two batches: neither is refused because of the other, nor learns the other used
//! it. A retry keeps the first accept's record (its callback among it). Without the table (a
//! fallback, warned about at startup) the batch id is derived from the caller, the key *and*
//! the digest: two bodies never share a batch id, but reuse cannot be answered 422.
//!
//! `Sluice-Callback` names a URL the final status is POSTed to (see `crate::report::webhook`);
//! `GET /v1/batches/{batch_id}` (module `batch_status`) answers an upload's status.
//!
//! 5xx answers carry a fixed message and a request id, never the SDK's error text (account
//! ids, queue and role ARNs); the log line with the same request id keeps the full error.

use std::io::Read as _;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use serde::Serialize;
use sluice_protocol::batch::{self, BatchError};
use sluice_protocol::split::{self, Limits, SplitError};
use sluice_protocol::FieldError;
use subtle::ConstantTimeEq as _;

use crate::config::IngestConfig;
use crate::photos::{HeldChunk, PhotoError, PhotoService, PhotoUpload};
use crate::publish::{PublishError, Publisher};
use crate::records::{RecordError, Records, UploadRecord};
use crate::report::webhook;

pub(crate) mod batch_status;
mod identity;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECONDS: u32 = 5;
/// Bytes decompressed at a time: the limit is checked after each step, so a gzip bomb is
/// refused having inflated at most the limit plus this much.
const INFLATE_STEP: usize = 64 * 1024;
/// Namespace for batch ids derived from `Idempotency-Key` (UUID v5), fixed forever so that the
/// same key always names the same batch.
const BATCH_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5f1c_e8a2_7d3b_4c41_9e0f_2b6a_8d4c_1e73);

/// Header naming a client's upload: the same key always gives the same batch id, and is echoed.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Shared state of the API.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<IngestConfig>,
    pub publisher: Publisher,
    /// The upload records (`SLUICE_STATUS_TABLE`), when configured.
    pub records: Option<Records>,
    /// Receipt photos (`SLUICE_PHOTO_BUCKET`), when configured: declared photos are refused
    /// without it.
    pub photos: Option<PhotoService>,
}

impl AppState {
    /// This state, holding the chunks of uploads with declared photos through `photos`.
    pub fn with_photos(mut self, photos: PhotoService) -> Self {
        self.photos = Some(photos);
        self
    }
}

/// The router, shared by the Lambda and the local server.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/batches", post(create_batch))
        .route("/v1/batches/{batch_id}", get(batch_status::get_batch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.json", get(openapi))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// The API's OpenAPI 3.1 document; `routes::tests` keeps it in step with the code.
pub const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// One structured log line per request: method, path, status, latency, and the
/// `Idempotency-Key` echoed back to the client so a retry can be matched to its first try.
async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let key = request.headers().get(IDEMPOTENCY_KEY).cloned();
    let mut response = next.run(request).await;
    if let Some(key) = key {
        response.headers_mut().insert(IDEMPOTENCY_KEY, key);
    }
    let status = response.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    if response.status().is_server_error() {
        tracing::warn!(%method, path, status, ms, "Request failed.");
    } else {
        tracing::info!(%method, path, status, ms, "Request served.");
    }
    response
}

/// 202 answer.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub batch_id: String,
    pub receipts: usize,
    pub chunks: usize,
    pub bytes: usize,
    /// One upload URL per declared photo (absent when none was declared).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub photos: Vec<PhotoUpload>,
}

/// Everything a request can fail with, mapped to an HTTP status by [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("unsupported content type {0:?}: send application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
    #[error("unsupported content encoding {0:?}: send gzip or no Content-Encoding")]
    UnsupportedEncoding(String),
    #[error("request body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error(
        "gzip body decompresses to more than the limit of {limit} bytes; nothing was enqueued"
    )]
    InflatedTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("invalid Idempotency-Key: {0}")]
    BadIdempotencyKey(String),
    /// The body itself is refused: syntax, shape, receipt count or receipt fields.
    #[error("{}", batch_message(.0))]
    Batch(#[from] BatchError),
    #[error("Idempotency-Key {0:?} was already used with another body; nothing was enqueued. Use a new key for a new upload")]
    KeyReused(String),
    #[error("SQS did not accept every chunk; retry the same request: {0}")]
    Unavailable(#[from] PublishError),
    #[error("{0}")]
    RecordsUnavailable(String),
    #[error("invalid Sluice-Callback: {0}")]
    BadCallback(String),
    #[error("{count} receipts declare a photo to upload (image with content_type and no key; the first: {first}), but photo uploads are not configured on this API (SLUICE_PHOTO_BUCKET); nothing was enqueued. Give each image a key, or leave image out")]
    PhotosNotConfigured { count: usize, first: String },
    #[error("{0}")]
    PhotosUnavailable(PhotoError),
    #[error("Sluice-Callback given, but webhooks are not configured on this API (SLUICE_WEBHOOK_SECRET_ARN or SLUICE_WEBHOOK_SECRET, and SLUICE_STATUS_TABLE); nothing was enqueued")]
    WebhooksNotConfigured,
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_errors: Option<usize>,
    /// 5xx: names the log line that holds the full error.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl IngestError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use IngestError::*;
        match self {
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            UnsupportedMediaType(_) | UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            BodyTooLarge { .. } | InflatedTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            BadBody(_) | BadIdempotencyKey(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            BadCallback(_) => (StatusCode::BAD_REQUEST, "bad_callback"),
            WebhooksNotConfigured => (StatusCode::BAD_REQUEST, "webhooks_not_configured"),
            PhotosNotConfigured { .. } => (StatusCode::BAD_REQUEST, "photos_not_configured"),
            PhotosUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "photos_unavailable"),
            Batch(e) => match e {
                BatchError::TooManyReceipts { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "too_many_receipts")
                }
                BatchError::Malformed { .. } => (StatusCode::BAD_REQUEST, "malformed_json"),
                BatchError::Shape(_) => (StatusCode::BAD_REQUEST, "bad_shape"),
                BatchError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_receipts"),
            },
            KeyReused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable"),
            RecordsUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "records_unavailable"),
        }
    }

    /// The fixed words a client reads for a server-side failure (no SDK text), or `None`
    /// when the error's own message is meant for the client.
    fn public_message(&self) -> Option<&'static str> {
        match self {
            IngestError::Unavailable(_) => Some(
                "the queue did not accept every chunk; nothing is known to be enqueued; retry the same request",
            ),
            IngestError::RecordsUnavailable(_) => Some(
                "the upload records could not be written; nothing was enqueued; retry the same request",
            ),
            IngestError::PhotosUnavailable(_) => Some(
                "the chunks waiting for photos could not be held; retry the same request",
            ),
            _ => None,
        }
    }
}

/// The `message` a client reads for a refused body: worded for the HTTP API (line and column
/// of the body, what was not enqueued), where the protocol crate's own words are generic.
fn batch_message(e: &BatchError) -> String {
    match e {
        BatchError::Malformed {
            line,
            column,
            message,
        } => format!("malformed body at line {line}, column {column}: {message}"),
        BatchError::Shape(s) => s.clone(),
        BatchError::TooManyReceipts { limit } => {
            format!("more than {limit} receipts in one request; split the upload")
        }
        BatchError::Invalid {
            total_errors,
            invalid_receipts,
            ..
        } => format!(
            "{invalid_receipts} invalid receipts ({total_errors} errors); nothing was enqueued"
        ),
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (line, column) = match &self {
            IngestError::Batch(BatchError::Malformed { line, column, .. }) => {
                (Some(*line), Some(*column))
            }
            _ => (None, None),
        };
        let (errors, total_errors) = match &self {
            IngestError::Batch(BatchError::Invalid {
                errors,
                total_errors,
                ..
            }) => (Some(errors.as_slice()), Some(*total_errors)),
            _ => (None, None),
        };
        let (message, request_id) =
            public_error(status, self.public_message(), &self, "Upload not enqueued");
        let body = ErrorBody {
            error: code,
            message,
            line,
            column,
            errors,
            total_errors,
            request_id,
        };
        let mut resp = (status, Json(&body)).into_response();
        match self {
            IngestError::Unauthorized => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"sluice\""),
                );
            }
            IngestError::Unavailable(_)
            | IngestError::RecordsUnavailable(_)
            | IngestError::PhotosUnavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        resp
    }
}

/// The message a client reads and the request id: for a 5xx with a `fixed` message, that
/// message naming a fresh request id, and one ERROR line (`what`, the id, the full error);
/// otherwise the error's own words.
fn public_error(
    status: StatusCode,
    fixed: Option<&str>,
    error: &dyn std::fmt::Display,
    what: &str,
) -> (String, Option<String>) {
    match fixed.filter(|_| status.is_server_error()) {
        Some(fixed) => {
            let id = uuid::Uuid::new_v4().to_string();
            tracing::error!(request_id = %id, error = %error, "{what}; answered {status}.");
            (format!("{fixed} (request id {id})"), Some(id))
        }
        None => (error.to_string(), None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    NdJson,
}

async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), IngestError> {
    let cfg = &state.config;
    authorize(cfg, &headers)?;
    let format = content_type(&headers)?;
    let gzip = content_encoding(&headers)?;
    let key = idempotency_key(&headers)?;
    let owner = identity::caller(&extensions);
    let callback = callback(&state, &headers)?;
    let raw = read_limited(body, cfg.max_body_bytes).await?;
    let (bytes, digest) = if gzip {
        let plain = gunzip(&raw, cfg.max_body_bytes)?;
        // Never hold the compressed and the plain body at once longer than needed.
        drop(raw);
        plain
    } else {
        let digest = format!("{:x}", Sha256::digest(&raw));
        (raw, digest)
    };
    let batch_id = match (&state.records, &key) {
        (_, None) => uuid::Uuid::new_v4().to_string(),
        (Some(_), Some(key)) => keyed_batch_id(owner.as_deref(), key),
        (None, Some(key)) => unrecorded_batch_id(owner.as_deref(), key, &digest),
    };
    let mut receipts = match format {
        Format::Json => batch::parse_json(&bytes, cfg.max_receipts_per_request)?,
        Format::NdJson => batch::parse_ndjson(&bytes, cfg.max_receipts_per_request)?,
    };
    drop(bytes);
    // Declared photos: each gets its object key now, so the chunks are split as they will be
    // sent (the photo carried), and the chunks holding them wait for them.
    let declared: std::collections::HashSet<String> = receipts
        .iter()
        .filter(|r| r.image.as_ref().is_some_and(|i| i.is_declared()))
        .map(|r| r.receipt_id.clone())
        .collect();
    let photos = match (&state.photos, declared.is_empty()) {
        (_, true) => None,
        (Some(photos), false) if state.records.is_some() => Some(photos),
        _ => {
            let first = receipts
                .iter()
                .position(|r| declared.contains(&r.receipt_id))
                .map(|i| format!("/receipts/{i}/image, receipt_id {}", receipts[i].receipt_id))
                .unwrap_or_default();
            return Err(IngestError::PhotosNotConfigured {
                count: declared.len(),
                first,
            });
        }
    };
    if photos.is_some() {
        for r in &mut receipts {
            if let Some(image) = r.image.as_mut().filter(|i| i.is_declared()) {
                image.key = Some(crate::photos::object_key(&batch_id, &r.receipt_id));
            }
        }
    }
    let limits = Limits {
        max_message_bytes: cfg.max_message_bytes,
        max_receipts_per_chunk: cfg.max_receipts_per_chunk,
        compression: cfg.compression,
    };
    let messages = split::split(&batch_id, &receipts, &limits).map_err(|e| match e {
        SplitError::ReceiptTooLarge {
            index,
            receipt_id,
            bytes,
            limit,
        } => BatchError::Invalid {
            errors: vec![FieldError {
                index,
                receipt_id: Some(receipt_id),
                pointer: format!("/receipts/{index}"),
                reason: format!(
                    "encodes to {bytes} bytes, over the {limit}-byte SQS message limit"
                ),
            }],
            total_errors: 1,
            invalid_receipts: 1,
        },
        SplitError::Encode(msg) => BatchError::Shape(format!("could not encode the batch: {msg}")),
    })?;
    let total_bytes = messages.iter().map(|m| m.sqs_size()).sum();
    // The chunks holding a declared photo, with their receipts (chunks are consecutive runs).
    let mut held = Vec::new();
    if photos.is_some() {
        let mut start = 0;
        for m in &messages {
            let part = &receipts[start..start + m.receipts];
            start += m.receipts;
            if part.iter().any(|r| declared.contains(&r.receipt_id)) {
                held.push(HeldChunk {
                    chunk_index: m.chunk_index,
                    chunk_count: messages.len() as u32,
                    receipts: part.to_vec(),
                });
            }
        }
    }
    if let Some(records) = &state.records {
        let record = UploadRecord {
            batch_id: batch_id.clone(),
            idempotency_key: key.clone(),
            body_sha256: digest,
            receipts: receipts.len(),
            chunks: messages.len(),
            owner,
            callback,
            held_chunks: held.len(),
        };
        records.put(&record).await.map_err(|e| match e {
            RecordError::KeyReused => IngestError::KeyReused(key.clone().unwrap_or_default()),
            RecordError::Unavailable(_) => IngestError::RecordsUnavailable(e.to_string()),
        })?;
    }
    let uploads = match photos {
        Some(photos) => photos
            .hold(&batch_id, &held, &declared)
            .await
            .map_err(IngestError::PhotosUnavailable)?,
        None => Vec::new(),
    };
    let held_indexes: std::collections::HashSet<u32> = held.iter().map(|c| c.chunk_index).collect();
    let now: Vec<_> = messages
        .into_iter()
        .filter(|m| !held_indexes.contains(&m.chunk_index))
        .collect();
    state.publisher.publish(&now).await?;
    let chunks = now.len() + held.len();
    tracing::info!(batch_id = %batch_id, receipts = receipts.len(), chunks, held = held.len(), photos = uploads.len(), bytes = total_bytes, "Batch enqueued.");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            batch_id,
            receipts: receipts.len(),
            chunks,
            bytes: total_bytes,
            photos: uploads,
        }),
    ))
}

/// The `Sluice-Callback` header, checked; refused when webhooks cannot be sent from here.
fn callback(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, IngestError> {
    let Some(v) = headers.get(webhook::CALLBACK_HEADER) else {
        return Ok(None);
    };
    if !state.config.webhooks_configured() || state.records.is_none() {
        return Err(IngestError::WebhooksNotConfigured);
    }
    let raw = v
        .to_str()
        .map_err(|_| IngestError::BadCallback("not visible ASCII".to_owned()))?;
    state
        .config
        .webhook_destinations()
        .check(raw.trim())
        .map(Some)
        .map_err(IngestError::BadCallback)
}

fn authorize(cfg: &IngestConfig, headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(expected) = &cfg.api_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(IngestError::Unauthorized)
    }
}

/// Compares in constant time (`subtle`), so response time does not reveal how much of the
/// token matched; only a difference in length is told at once.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn content_type(headers: &HeaderMap) -> Result<Format, IngestError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            Ok(Format::NdJson)
        }
        _ => Err(IngestError::UnsupportedMediaType(raw.to_owned())),
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<bool, IngestError> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None => Ok(false),
        Some(v) if v.trim().eq_ignore_ascii_case("identity") => Ok(false),
        Some(v) if v.trim().eq_ignore_ascii_case("gzip") => Ok(true),
        Some(v) => Err(IngestError::UnsupportedEncoding(v.to_owned())),
    }
}

/// The `Idempotency-Key` header, checked: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, IngestError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| IngestError::BadIdempotencyKey("not visible ASCII".to_owned()))?;
    if key.is_empty() || key.len() > 255 {
        return Err(IngestError::BadIdempotencyKey(
            "must be 1 to 255 characters".to_owned(),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// A stable batch id from `owner` and its `Idempotency-Key` (the same caller's key always gives
/// the same id; another caller's same key another id). Used with the upload records, which bind
/// the id to one body. Without an owner (the local bearer token names no one) the id is the
/// key's alone, as it always was; with one, the name carries both, so it never equals a name of
/// the key alone (a key has no newline).
fn keyed_batch_id(owner: Option<&str>, key: &str) -> String {
    let name = match owner {
        None => key.to_owned(),
        Some(owner) => format!("owner={owner}\nkey={key}"),
    };
    uuid::Uuid::new_v5(&BATCH_NAMESPACE, name.as_bytes()).to_string()
}

/// Without the upload records: the batch id of the owner, the key *and* the body's digest, so
/// that two bodies sent with one key never share a batch id (a retry of the same body still
/// does), nor two callers' uploads.
fn unrecorded_batch_id(owner: Option<&str>, key: &str, digest: &str) -> String {
    let name = match owner {
        None => format!("{key}\n{digest}"),
        Some(owner) => format!("owner={owner}\nkey={key}\nsha256={digest}"),
    };
    uuid::Uuid::new_v5(&BATCH_NAMESPACE, name.as_bytes()).to_string()
}

async fn read_limited(body: Body, limit: usize) -> Result<Bytes, IngestError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(IngestError::BodyTooLarge { limit })
        }
        Err(e) => Err(IngestError::BadBody(e.to_string())),
    }
}

/// Inflates a gzip body step by step, refusing it as soon as it passes `limit` (a bomb is never
/// inflated whole), and hashes it on the way. Returns the body and its SHA-256 (hex).
fn gunzip(raw: &[u8], limit: usize) -> Result<(Bytes, String), IngestError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(raw);
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let mut hasher = Sha256::new();
    let mut step = vec![0u8; INFLATE_STEP];
    loop {
        let n = decoder
            .read(&mut step)
            .map_err(|e| IngestError::BadBody(format!("gzip body could not be decoded: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(IngestError::InflatedTooLarge { limit });
        }
        hasher.update(&step[..n]);
        out.extend_from_slice(&step[..n]);
    }
    Ok((Bytes::from(out), format!("{:x}", hasher.finalize())))
}

#[cfg(test)]
mod tests;
