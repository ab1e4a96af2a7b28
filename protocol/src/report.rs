//! Upload status: what the agent reports upward about each chunk it settled, and what the
//! status endpoint (`GET /v1/batches/{batch_id}`) and the webhooks answer about an upload.
//!
//! The agent sends [`ChunkReport`]s on the status queue, packed into [`StatusMessage`]s (gzip,
//! then base64, each under [`MAX_STATUS_MESSAGE_BYTES`]). A report is a pure function of the
//! chunk ledger row it came from, so sending one twice is harmless: the cloud side folds each
//! `(batch_id, chunk_index)` once. The agent's chunk ledger stays the truth; reports are re-sent
//! from it until the status queue has taken them.

use std::io::{Read as _, Write as _};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Version of [`StatusMessage`]. The same rule as the chunk envelope: a field may be added
/// (readers ignore unknown fields); a change readers must understand bumps the version.
pub const STATUS_VERSION: u32 = 1;

/// The largest status message body the agent sends (SQS allows 256 KiB; room is left for
/// attributes).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 240 * 1024;

/// Largest decompressed status message a reader accepts.
pub const MAX_STATUS_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// At most this many refused receipts are named per chunk report, and per batch by the status
/// endpoint; the counts stay exact.
pub const MAX_REJECTIONS: usize = 100;

/// Longest reason a [`Rejection`] carries, in bytes. A database's message can be as long as a
/// trigger makes it; capped, the [`MAX_REJECTIONS`] reasons of a chunk report and of an upload's
/// record stay far below DynamoDB's 400 KB item limit (100 × 1 KiB, twice over while a fold
/// appends before it trims), so no reason can make a fold fail and an upload never end.
pub const MAX_REASON_BYTES: usize = 1024;

/// One refused receipt and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub receipt_id: String,
    /// What the database said (SQLSTATE and message), or `conflict: …` with both fingerprints;
    /// at most [`MAX_REASON_BYTES`].
    pub reason: String,
}

impl Rejection {
    /// A rejection whose reason is cut to [`MAX_REASON_BYTES`] (at a character boundary, with
    /// `…` saying so).
    pub fn new(receipt_id: impl Into<String>, reason: &str) -> Self {
        Self {
            receipt_id: receipt_id.into(),
            reason: cap_reason(reason),
        }
    }
}

/// `reason`, cut to at most [`MAX_REASON_BYTES`] bytes at a character boundary, ending in `…`
/// when cut.
pub fn cap_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    const MORE: &str = "…";
    let mut end = MAX_REASON_BYTES - MORE.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &reason[..end])
}

/// What became of one chunk, as committed to the agent's chunk ledger.
///
/// `receipts == stored + duplicates + conflicts + rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReport {
    pub batch_id: String,
    pub chunk_index: u32,
    pub chunk_count: u32,
    /// Receipts in the chunk.
    pub receipts: u32,
    /// Newly stored (or replaced, under `on_conflict = "update"`).
    pub stored: u32,
    /// Already stored with the same content (or, under `on_conflict = "ignore"`, other content).
    pub duplicates: u32,
    /// Refused because the id is stored with other content (`on_conflict = "reject"`).
    pub conflicts: u32,
    /// Refused by the database (a trigger, a constraint), dead-lettered with the reason.
    pub rejected: u32,
    /// The conflicting and refused receipts, at most [`MAX_REJECTIONS`].
    #[serde(default)]
    pub rejections: Vec<Rejection>,
    /// When the chunk's ledger row was committed (Unix milliseconds).
    pub committed_at_ms: u64,
}

/// One status-queue message: many chunk reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    pub v: u32,
    pub reports: Vec<ChunkReport>,
}

/// Why a status message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusDecodeError {
    #[error("status message is not base64: {0}")]
    Base64(String),
    #[error("status message is not gzip, or inflates beyond {MAX_STATUS_DECODED_BYTES} bytes")]
    Gzip,
    #[error("status message is not valid JSON: {0}")]
    Json(String),
    #[error(
        "status message version {0} is not supported (this build reads version {STATUS_VERSION})"
    )]
    UnsupportedVersion(u32),
}

/// Packs reports into as few message bodies as fit under `max_bytes` each (gzip, base64).
/// A report that alone exceeds the bound is sent alone (a chunk report is a few KiB at most).
pub fn encode_reports(reports: &[ChunkReport], max_bytes: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    pack(reports, max_bytes, &mut bodies);
    bodies
}

/// Encodes `reports` whole when it fits, else each half: O(n log n) encodes, and the
/// messages stay close to full because similar reports compress well together.
fn pack(reports: &[ChunkReport], max_bytes: usize, bodies: &mut Vec<String>) {
    if reports.is_empty() {
        return;
    }
    let body = encode_one(reports);
    if body.len() <= max_bytes || reports.len() == 1 {
        bodies.push(body);
        return;
    }
    let (left, right) = reports.split_at(reports.len() / 2);
    pack(left, max_bytes, bodies);
    pack(right, max_bytes, bodies);
}

fn encode_one(reports: &[ChunkReport]) -> String {
    let message = StatusMessage {
        v: STATUS_VERSION,
        reports: reports.to_vec(),
    };
    // Serializing plain data to a Vec cannot fail; writing to a Vec cannot either.
    let json = serde_json::to_vec(&message).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&json);
    let bytes = gz.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads one status message body.
pub fn decode_message(body: &str) -> Result<StatusMessage, StatusDecodeError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| StatusDecodeError::Base64(e.to_string()))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .take(MAX_STATUS_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|_| StatusDecodeError::Gzip)?;
    if json.len() > MAX_STATUS_DECODED_BYTES {
        return Err(StatusDecodeError::Gzip);
    }
    #[derive(Deserialize)]
    struct Probe {
        v: u32,
    }
    let probe: Probe =
        serde_json::from_slice(&json).map_err(|e| StatusDecodeError::Json(e.to_string()))?;
    if probe.v != STATUS_VERSION {
        return Err(StatusDecodeError::UnsupportedVersion(probe.v));
    }
    serde_json::from_slice(&json).map_err(|e| StatusDecodeError::Json(e.to_string()))
}

/// Where an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Accepted and queued; no chunk settled yet.
    Accepted,
    /// Accepted with declared photos: some chunks are held in the cloud until each of their
    /// photos is uploaded and checked (or refused, or past its deadline).
    AwaitingPhotos,
    /// Some chunks settled.
    Storing,
    /// Every chunk settled, every receipt stored or a duplicate. Final.
    Stored,
    /// Every chunk settled, some receipts refused (conflicts or database refusals). Final.
    StoredWithRejections,
}

impl BatchState {
    /// The state of an upload of `chunks` chunks with `chunks_done` settled and `refused`
    /// receipts (conflicts + rejected) among them.
    pub fn of(chunks: u64, chunks_done: u64, refused: u64) -> BatchState {
        match (chunks_done, refused) {
            (0, _) => BatchState::Accepted,
            (d, _) if d < chunks => BatchState::Storing,
            (_, 0) => BatchState::Stored,
            _ => BatchState::StoredWithRejections,
        }
    }

    /// Whether no further report can change the state.
    pub fn is_final(self) -> bool {
        matches!(self, BatchState::Stored | BatchState::StoredWithRejections)
    }
}

/// The answer of `GET /v1/batches/{batch_id}`, and the body of a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStatus {
    pub batch_id: String,
    pub state: BatchState,
    pub receipts: u64,
    pub chunks: u64,
    pub chunks_done: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub rejected: u64,
    /// The first [`MAX_REJECTIONS`] refused receipts.
    pub rejections: Vec<Rejection>,
    /// How many refused receipts there are in all (`conflicts + rejected`).
    pub rejections_total: u64,
    /// RFC 3339, UTC.
    pub accepted_at: Option<String>,
    /// RFC 3339, UTC; set once the state is final.
    pub completed_at: Option<String>,
    /// The webhook's delivery, when the upload named a `Sluice-Callback` (absent in webhook
    /// bodies themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
}

/// Where a webhook's delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Not yet final, or being sent, or waiting for its next attempt.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up after the bounded retry time.
    Failed,
}

/// A webhook's delivery, as the status endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStatus {
    pub state: WebhookState,
    /// POSTs made so far.
    pub attempts: u64,
    /// Why the last attempt failed (HTTP status or connection error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

#[cfg(test)]
mod tests;
