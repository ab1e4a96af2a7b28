//! Receipt photos (issue 32, the cloud half): a receipt may declare its photo (`image` with
//! `sha256`, `bytes`, `content_type`, no `key`); the API answers with a presigned S3 PUT URL per
//! declared photo and holds the chunks that carry them until every photo of the chunk is
//! settled: checked and accepted, refused, or past its deadline.
//!
//! | step | where |
//! |---|---|
//! | hold: each held chunk written to S3 (`pending/{batch_id}/{chunk_index}.json`) and its photo record to the status table | [`PhotoService::hold`], from `routes` |
//! | check: each S3 ObjectCreated event; the photo read back, its size, SHA-256 and magic bytes compared with the declaration | [`PhotoService::handle_message`] |
//! | release: the chunk published with its accepted receipts' photos carried, the refused named in the upload's status | `release` |
//! | expiry: photos not uploaded by their deadline refused `image_missing`, their chunks released | [`PhotoService::sweep`] |
//!
//! **Where a held chunk lives.** Its receipts, already in their carried form (each declared
//! photo's `key` is its object key, `photos/{batch_id}/{receipt_id}`, so the splitter sized the
//! chunk as it will be sent), are the S3 object `pending/{batch_id}/{chunk_index}.json`: it
//! survives an ingest restart and is not bounded by DynamoDB's 400 KB item. Its *photo record*
//! is an item of the status table under the key `photochunk/{batch_id}/{chunk_index}` (never a
//! UUID, so never an upload's item): `declared` (receipt id → `sha256 bytes content_type`),
//! `photos` (how many), `deadline` (Unix s), `verdicts` (receipt id → `ok` or a refusal reason),
//! `released` and the release lease `releasing_until`.
//!
//! **Verdicts are idempotent.** A verdict is set with `attribute_not_exists(verdicts.<id>)`, so
//! a redelivered event, or a photo arriving after the sweep refused it `image_missing`, changes
//! nothing: the first verdict stands.
//!
//! **The last photo.** Whoever sets the last verdict (or finds every verdict set) releases the
//! chunk under a lease (`releasing_until`, a conditional update that also requires the chunk
//! not to be `released`): two concurrent last photos see one release. A release that dies
//! after publishing is redone when its lease lapses (by a redelivered event or the sweep): the
//! chunk may then be published twice, which the agent's idempotent write absorbs and the status
//! fold counts once (it folds each chunk index once); the refusals are recorded once per chunk
//! (`photo_refused`), the hold released once per chunk (`released_chunks`).
//!
//! **Refusals.** `image_checksum` (size other than declared, or another SHA-256),
//! `image_too_large` (above `SLUICE_PHOTO_MAX_BYTES`, or more pixels than
//! `SLUICE_PHOTO_MAX_PIXELS` by its header), `image_type` (the magic bytes are not the declared
//! type's, or an image's header names no pixel dimensions), `image_missing` (not uploaded by
//! the deadline). The reason is the code alone; the detail is logged. A chunk whose every receipt
//! is refused is never published: it is folded here as the agent would (every receipt
//! `rejected`), so the upload still ends.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sluice_protocol::envelope::{self, Chunk, Compression};
use sluice_protocol::report::{ChunkReport, Rejection};
use sluice_protocol::Receipt;

use crate::io::dynamodb::{AttributeValue, Item, Update, UpdateError};
use crate::io::s3::{Bucket, PutSpec, S3Error};
use crate::publish::{PublishError, Publisher};
use crate::records::{num, unix_now, Records, TTL_ATTRIBUTE};
use crate::report::store::{now_ms, number, StoreError};
use crate::report::{StatusError, StatusService};

pub mod consumer;
pub mod lambda;
pub mod processor;

pub use processor::{PhotoProcessor, IMAGE_FIELDS};

/// Where uploaded photos go: `photos/{batch_id}/{receipt_id}`.
pub const PHOTO_PREFIX: &str = "photos/";
/// Where held chunks go: `pending/{batch_id}/{chunk_index}.json`.
pub const PENDING_PREFIX: &str = "pending/";
/// The user metadata naming a photo's chunk (`x-amz-meta-sluice-chunk`), bound into its URL.
pub const CHUNK_METADATA: &str = "sluice-chunk";
/// A photo whose bytes, size or SHA-256 are not the declared ones.
pub const IMAGE_CHECKSUM: &str = "image_checksum";
/// A photo above `SLUICE_PHOTO_MAX_BYTES`.
pub const IMAGE_TOO_LARGE: &str = "image_too_large";
/// A photo whose magic bytes are not its declared type's.
pub const IMAGE_TYPE: &str = "image_type";
/// A photo not uploaded by its deadline.
pub const IMAGE_MISSING: &str = "image_missing";
/// The verdict of a photo that passed.
const OK: &str = "ok";
/// How long one release may take before another may redo it.
const RELEASE_LEASE_SECONDS: u64 = 60;
/// Seconds after a URL expired before its photo counts as missing: a PUT started just before
/// the URL expired, and its event, may still arrive.
pub const DEADLINE_GRACE_SECONDS: u64 = 5;
/// Largest held chunk read back.
const MAX_PENDING_BYTES: u64 = 64 * 1024 * 1024;

/// The object key of a declared photo.
pub fn object_key(batch_id: &str, receipt_id: &str) -> String {
    format!("{PHOTO_PREFIX}{batch_id}/{receipt_id}")
}

fn pending_key(batch_id: &str, chunk_index: u32) -> String {
    format!("{PENDING_PREFIX}{batch_id}/{chunk_index}.json")
}

fn record_key(batch_id: &str, chunk_index: u32) -> String {
    format!("photochunk/{batch_id}/{chunk_index}")
}

/// One entry of the 202 answer's `photos`: where to PUT the photo of `receipt_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhotoUpload {
    pub receipt_id: String,
    pub upload_url: String,
    /// Send every one of these headers with the PUT (length, type, SHA-256, the chunk).
    pub headers: BTreeMap<String, String>,
    /// RFC 3339, UTC: the URL's end; a photo not uploaded by then is refused `image_missing`.
    pub expires_at: String,
}

/// A chunk to hold: its encoded position and its receipts (declared photos already carrying
/// their object keys).
#[derive(Debug)]
pub struct HeldChunk {
    pub chunk_index: u32,
    pub chunk_count: u32,
    pub receipts: Vec<Receipt>,
}

/// Why a photo event, a hold or a sweep did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    /// The message or object cannot be taken: retrying cannot help.
    #[error("malformed photo event: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("S3 {op} failed: {detail}")]
    S3 { op: &'static str, detail: String },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("a held chunk cannot be encoded: {0}")]
    Encode(String),
    /// The photo processor failed: the photo stays unsettled, its event is retried.
    #[error("the photo processor failed on {key}: {detail}")]
    Processor { key: String, detail: String },
}

impl PhotoError {
    /// The message itself is wrong: it belongs in the DLQ.
    pub fn is_malformed(&self) -> bool {
        match self {
            PhotoError::Malformed(_) => true,
            PhotoError::Status(e) => e.is_malformed(),
            _ => false,
        }
    }

    fn s3(op: &'static str, detail: impl ToString) -> Self {
        PhotoError::S3 {
            op,
            detail: detail.to_string(),
        }
    }
}

/// The S3 client of `cfg` (`SLUICE_S3_ENDPOINT`: a local server, path-style).
pub async fn s3_client(cfg: &crate::IngestConfig) -> aws_sdk_s3::Client {
    let endpoint = cfg.s3_endpoint.as_deref();
    let sdk = sluice_aws::shared_config(None, endpoint).await;
    crate::io::s3::client(&sdk, endpoint.is_some())
}

/// Holds chunks, checks photos, releases chunks; shared by the API, the local task and the
/// Lambda handler.
#[derive(Debug, Clone)]
pub struct PhotoService {
    pub(crate) records: Records,
    pub(crate) bucket: Bucket,
    publisher: Publisher,
    status: StatusService,
    compression: Compression,
    max_bytes: u64,
    /// `SLUICE_PHOTO_MAX_PIXELS`: width × height above this is refused `image_too_large`.
    max_pixels: u64,
    url_seconds: u64,
    pub(crate) sqs: crate::io::sqs::Client,
    /// The receipt app's hook ([`processor`]), if one is plugged in.
    processor: Option<std::sync::Arc<dyn PhotoProcessor>>,
}

impl PhotoService {
    pub fn new(
        cfg: &crate::IngestConfig,
        records: Records,
        s3: crate::io::s3::Client,
        sqs: crate::io::sqs::Client,
    ) -> anyhow::Result<Self> {
        let bucket = cfg
            .photo_bucket
            .clone()
            .ok_or_else(|| anyhow::anyhow!("SLUICE_PHOTO_BUCKET is not set"))?;
        Ok(PhotoService {
            status: StatusService::new(cfg, records.clone(), sqs.clone())?,
            records,
            bucket: Bucket::new(s3, bucket),
            publisher: Publisher::new(
                sqs.clone(),
                cfg.queue_url.clone(),
                cfg.publish_concurrency,
                cfg.max_message_bytes,
            ),
            compression: cfg.compression,
            max_bytes: cfg.photo_max_bytes,
            max_pixels: cfg.photo_max_pixels,
            url_seconds: cfg.photo_url_seconds,
            sqs,
            processor: None,
        })
    }

    /// This service, handing each photo that passes the check to `processor` for the fields
    /// of its receipt ([`processor`]).
    pub fn with_processor(mut self, processor: std::sync::Arc<dyn PhotoProcessor>) -> Self {
        self.processor = Some(processor);
        self
    }

    /// Holds `chunks` of `batch_id` (each photo record, then each chunk's receipts) and
    /// answers each declared photo's upload URL. Safe to repeat for a retried upload: a
    /// verdict already given stays.
    pub async fn hold(
        &self,
        batch_id: &str,
        chunks: &[HeldChunk],
        declared: &std::collections::HashSet<String>,
    ) -> Result<Vec<PhotoUpload>, PhotoError> {
        let deadline = unix_now() + self.url_seconds;
        let expires_at = jiff::Timestamp::from_second(deadline as i64)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mut uploads = Vec::new();
        for chunk in chunks {
            let mut listed = HashMap::new();
            for r in &chunk.receipts {
                let Some(image) = r
                    .image
                    .as_ref()
                    .filter(|_| declared.contains(&r.receipt_id))
                else {
                    continue;
                };
                let content_type = image.content_type.clone().unwrap_or_default();
                listed.insert(
                    r.receipt_id.clone(),
                    AttributeValue::S(format!("{} {} {content_type}", image.sha256, image.bytes)),
                );
                let digest = hex_decode(&image.sha256).unwrap_or_default();
                let key = object_key(batch_id, &r.receipt_id);
                let metadata = [(CHUNK_METADATA, chunk.chunk_index.to_string())];
                let put = self
                    .bucket
                    .presign_put(
                        &PutSpec {
                            key: &key,
                            bytes: image.bytes,
                            content_type: &content_type,
                            sha256_base64: base64::engine::general_purpose::STANDARD.encode(digest),
                            metadata: &metadata,
                        },
                        Duration::from_secs(self.url_seconds),
                    )
                    .await
                    .map_err(|e| PhotoError::s3("presign PutObject", e))?;
                uploads.push(PhotoUpload {
                    receipt_id: r.receipt_id.clone(),
                    upload_url: put.url,
                    headers: put.headers,
                    expires_at: expires_at.clone(),
                });
            }
            let body = serde_json::to_vec(&Chunk::new(
                batch_id.to_owned(),
                chunk.chunk_index,
                chunk.chunk_count,
                chunk.receipts.clone(),
            ))
            .map_err(|e| PhotoError::Encode(e.to_string()))?;
            self.bucket
                .put_json(&pending_key(batch_id, chunk.chunk_index), body)
                .await
                .map_err(|e| PhotoError::s3("PutObject (held chunk)", e))?;
            let update = Update::default()
                .name("#ttl", TTL_ATTRIBUTE)
                .value(":declared", AttributeValue::M(listed.clone()))
                .value(":photos", num(listed.len() as u64))
                .value(":deadline", num(deadline))
                .value(":empty", AttributeValue::M(HashMap::new()))
                .value(":expires", num(unix_now() + self.records.ttl_seconds))
                .expression(
                    "SET declared = if_not_exists(declared, :declared), \
                     photos = if_not_exists(photos, :photos), deadline = :deadline, \
                     verdicts = if_not_exists(verdicts, :empty), #ttl = :expires",
                );
            self.records
                .table
                .update(&record_key(batch_id, chunk.chunk_index), update)
                .await
                .map_err(|e| self.store_error("UpdateItem (photo record)", e))?;
        }
        Ok(uploads)
    }

    fn store_error(&self, op: &'static str, detail: impl ToString) -> StoreError {
        StoreError {
            op,
            table: self.records.table.name().to_owned(),
            detail: detail.to_string(),
        }
    }

    /// One message of the photo events queue: an S3 event notification, each ObjectCreated
    /// record under `photos/` checked. S3's `s3:TestEvent` is consumed and ignored.
    pub async fn handle_message(&self, body: &str) -> Result<(), PhotoError> {
        let keys = event_keys(body)?;
        let mut bad = None;
        for key in keys {
            match self.check(&key).await {
                Ok(()) => {}
                Err(e) if e.is_malformed() => bad = Some(e),
                Err(e) => return Err(e),
            }
        }
        bad.map_or(Ok(()), Err)
    }

    /// Checks the photo at `key` once and releases its chunk when it was the last.
    pub async fn check(&self, key: &str) -> Result<(), PhotoError> {
        let (batch_id, receipt_id) = parse_photo_key(key)?;
        let object = match self.bucket.get(key, self.max_bytes.saturating_add(1)).await {
            Ok(o) => o,
            Err(S3Error::NotFound(_)) => {
                tracing::warn!(
                    key,
                    "Photo event for an object that is gone; nothing to check."
                );
                return Ok(());
            }
            Err(S3Error::Failed(e)) => return Err(PhotoError::s3("GetObject (photo)", e)),
        };
        let chunk_index: u32 = object
            .metadata
            .get(CHUNK_METADATA)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                PhotoError::Malformed(format!(
                    "{key} has no x-amz-meta-{CHUNK_METADATA}: not uploaded with the headers the API answered"
                ))
            })?;
        let record = record_key(&batch_id, chunk_index);
        let item = self
            .records
            .get(&record)
            .await?
            .ok_or_else(|| PhotoError::Malformed(format!("{key}: no held chunk {record}")))?;
        let Some(declared) = map_text(&item, "declared", &receipt_id) else {
            return Err(PhotoError::Malformed(format!(
                "{key}: receipt {receipt_id} declared no photo in chunk {chunk_index}"
            )));
        };
        let item = if map_text(&item, "verdicts", &receipt_id).is_some() {
            item
        } else {
            let (verdict, detail) = judge(
                &declared,
                &object.body,
                object.size,
                self.max_bytes,
                self.max_pixels,
            );
            if verdict != OK {
                tracing::info!(batch_id, receipt_id, verdict, detail, "Photo refused.");
            }
            let fields = match (&self.processor, verdict == OK) {
                (Some(processor), true) => {
                    let content_type = declared.split(' ').nth(2).unwrap_or_default();
                    let fields = processor
                        .fields(&receipt_id, content_type, &object.body)
                        .await
                        .map_err(|detail| PhotoError::Processor {
                            key: key.to_owned(),
                            detail,
                        })?;
                    (!fields.is_empty())
                        .then(|| serde_json::to_string(&fields))
                        .transpose()
                        .map_err(|e| PhotoError::Encode(e.to_string()))?
                }
                _ => None,
            };
            self.set_verdict(&record, &receipt_id, verdict, fields)
                .await?
        };
        self.settle(&batch_id, chunk_index, &item).await
    }

    /// Sets one verdict unless one is set; the photo record afterwards.
    async fn set_verdict(
        &self,
        record: &str,
        receipt_id: &str,
        verdict: &str,
        fields: Option<String>,
    ) -> Result<Item, PhotoError> {
        let update = Update::default()
            .name("#id", receipt_id)
            .value(":v", AttributeValue::S(verdict.to_owned()));
        let update = match fields {
            Some(json) => update
                .name("#f", &processor::attribute(receipt_id))
                .value(":f", AttributeValue::S(json))
                .expression("SET verdicts.#id = :v, #f = :f"),
            None => update.expression("SET verdicts.#id = :v"),
        };
        let update = update
            .condition("attribute_exists(verdicts) AND attribute_not_exists(verdicts.#id)")
            .returning_new();
        match self.records.table.update(record, update).await {
            Ok(item) => Ok(item.unwrap_or_default()),
            Err(UpdateError::Condition) => Ok(self.records.get(record).await?.unwrap_or_default()),
            Err(e) => Err(self.store_error("UpdateItem (photo verdict)", e).into()),
        }
    }

    /// Releases the chunk when every photo of its record has a verdict and nobody else is
    /// releasing it.
    async fn settle(
        &self,
        batch_id: &str,
        chunk_index: u32,
        item: &Item,
    ) -> Result<(), PhotoError> {
        let photos = number(item, "photos").unwrap_or(u64::MAX);
        let settled = match item.get("verdicts") {
            Some(AttributeValue::M(m)) => m.len() as u64,
            _ => 0,
        };
        if item.contains_key("released") || settled < photos {
            return Ok(());
        }
        let record = record_key(batch_id, chunk_index);
        let now = unix_now();
        let claim = Update::default()
            .value(":until", num(now + RELEASE_LEASE_SECONDS))
            .value(":now", num(now))
            .expression("SET releasing_until = :until")
            .condition(
                "attribute_not_exists(released) AND \
                 (attribute_not_exists(releasing_until) OR releasing_until < :now)",
            );
        match self.records.table.update(&record, claim).await {
            Ok(_) => {}
            // Released, or another consumer is releasing it now.
            Err(UpdateError::Condition) => return Ok(()),
            Err(e) => return Err(self.store_error("UpdateItem (release lease)", e).into()),
        }
        self.release(batch_id, chunk_index, item).await
    }

    /// Publishes the chunk's accepted receipts (or folds a chunk all refused), names the
    /// refused in the upload's status, and marks the chunk released.
    async fn release(
        &self,
        batch_id: &str,
        chunk_index: u32,
        item: &Item,
    ) -> Result<(), PhotoError> {
        let pending = pending_key(batch_id, chunk_index);
        let object = self
            .bucket
            .get(&pending, MAX_PENDING_BYTES)
            .await
            .map_err(|e| PhotoError::s3("GetObject (held chunk)", e))?;
        let chunk: Chunk = serde_json::from_slice(&object.body)
            .map_err(|e| PhotoError::Encode(format!("{pending}: {e}")))?;
        let verdicts = match item.get("verdicts") {
            Some(AttributeValue::M(m)) => m.clone(),
            _ => HashMap::new(),
        };
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for r in chunk.receipts {
            match verdicts.get(&r.receipt_id) {
                Some(AttributeValue::S(v)) if v != OK => {
                    refused.push(Rejection::new(r.receipt_id.clone(), v));
                }
                _ => match with_fields(r, item) {
                    Ok(r) => accepted.push(r),
                    Err((receipt_id, detail)) => {
                        tracing::info!(
                            batch_id,
                            receipt_id,
                            detail,
                            "The fields read from the photo make an invalid receipt; refused."
                        );
                        refused.push(Rejection::new(receipt_id, IMAGE_FIELDS));
                    }
                },
            }
        }
        if accepted.is_empty() {
            // Never published: folded here as the agent would have.
            let n = refused.len() as u32;
            let report = ChunkReport {
                batch_id: batch_id.to_owned(),
                chunk_index,
                chunk_count: chunk.chunk_count,
                receipts: n,
                stored: 0,
                duplicates: 0,
                conflicts: 0,
                rejected: n,
                rejections: refused
                    .into_iter()
                    .take(sluice_protocol::report::MAX_REJECTIONS)
                    .collect(),
                committed_at_ms: now_ms(),
            };
            self.status.fold_report(&report).await?;
        } else {
            if !refused.is_empty() {
                self.records
                    .record_photo_refusals(batch_id, chunk_index, &refused)
                    .await?;
            }
            let kept = accepted.len();
            let message = envelope::encode(
                &Chunk::new(
                    batch_id.to_owned(),
                    chunk_index,
                    chunk.chunk_count,
                    accepted,
                ),
                self.compression,
            )
            .map_err(|e| PhotoError::Encode(e.to_string()))?;
            self.publisher
                .publish(std::slice::from_ref(&message))
                .await?;
            tracing::info!(
                batch_id,
                chunk_index,
                receipts = kept,
                refused = refused.len(),
                "Held chunk released."
            );
        }
        let record = record_key(batch_id, chunk_index);
        let done = Update::default()
            .value(":now", num(now_ms()))
            .expression("SET released = :now REMOVE releasing_until");
        self.records
            .table
            .update(&record, done)
            .await
            .map_err(|e| self.store_error("UpdateItem (released)", e))?;
        self.records.release_held(batch_id, chunk_index).await?;
        if let Err(e) = self.bucket.delete(&pending).await {
            tracing::warn!(key = %pending, error = %e, "Cannot delete a released chunk; the sweep deletes it.");
        }
        Ok(())
    }

    /// Refuses every photo past its deadline `image_missing` and releases its chunk; releases
    /// any chunk whose photos are all settled but that is not released (a release that died);
    /// deletes the held copies of released chunks. Returns how many chunks it looked at.
    pub async fn sweep(&self) -> Result<usize, PhotoError> {
        let keys = self
            .bucket
            .list(PENDING_PREFIX)
            .await
            .map_err(|e| PhotoError::s3("ListObjectsV2 (held chunks)", e))?;
        let now = unix_now();
        let mut looked = 0;
        for key in keys {
            let Some((batch_id, chunk_index)) = parse_pending_key(&key) else {
                tracing::warn!(
                    key,
                    "An object under pending/ that is not a held chunk; ignored."
                );
                continue;
            };
            looked += 1;
            let record = record_key(&batch_id, chunk_index);
            let Some(mut item) = self.records.get(&record).await? else {
                continue;
            };
            if item.contains_key("released") {
                if let Err(e) = self.bucket.delete(&key).await {
                    tracing::warn!(key, error = %e, "Cannot delete a released chunk.");
                }
                continue;
            }
            let deadline = number(&item, "deadline").unwrap_or(0);
            if now > deadline + DEADLINE_GRACE_SECONDS {
                let missing: Vec<String> = match (item.get("declared"), item.get("verdicts")) {
                    (Some(AttributeValue::M(d)), Some(AttributeValue::M(v))) => d
                        .keys()
                        .filter(|id| !v.contains_key(*id))
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                };
                for id in &missing {
                    tracing::info!(batch_id, receipt_id = %id, "Photo not uploaded by its deadline; refused.");
                    item = self.set_verdict(&record, id, IMAGE_MISSING, None).await?;
                }
            }
            self.settle(&batch_id, chunk_index, &item).await?;
        }
        Ok(looked)
    }
}

/// Logs a message that was not consumed, with what identifies it.
pub(crate) fn log_failure(message_id: &str, e: &PhotoError) {
    if e.is_malformed() {
        tracing::error!(message_id, error = %e, "Photo event refused; it stays on the queue, whose redrive policy moves it to the DLQ.");
    } else {
        tracing::warn!(message_id, error = %e, "Photo event not consumed; retried after its visibility timeout.");
    }
}

/// The text under `key` of the map attribute `map`.
fn map_text(item: &Item, map: &str, key: &str) -> Option<String> {
    match item.get(map) {
        Some(AttributeValue::M(m)) => match m.get(key) {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The verdict on a photo of `size` bytes whose first bytes are `body`, declared as
/// `sha256 bytes content_type`; with the detail for the log.
pub(crate) fn judge(
    declared: &str,
    body: &[u8],
    size: u64,
    max_bytes: u64,
    max_pixels: u64,
) -> (&'static str, String) {
    let mut parts = declared.split(' ');
    let (sha256, bytes, content_type) = (
        parts.next().unwrap_or(""),
        parts
            .next()
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0),
        parts.next().unwrap_or(""),
    );
    if size > max_bytes {
        return (
            IMAGE_TOO_LARGE,
            format!("{size} bytes, above the limit of {max_bytes}"),
        );
    }
    if size != bytes || body.len() as u64 != size {
        return (
            IMAGE_CHECKSUM,
            format!("{size} bytes uploaded, {bytes} declared"),
        );
    }
    let digest = format!("{:x}", Sha256::digest(body));
    if digest != sha256 {
        return (
            IMAGE_CHECKSUM,
            format!("SHA-256 {digest}, {sha256} declared"),
        );
    }
    match sniff(body) {
        Some(t) if t == content_type => pixels(t, body, max_pixels),
        Some(t) => (
            IMAGE_TYPE,
            format!("the bytes are {t}, {content_type} declared"),
        ),
        None => (
            IMAGE_TYPE,
            format!("the bytes are none of the photo types, {content_type} declared"),
        ),
    }
}

/// The media type the magic bytes say: JPEG `FF D8 FF`, PNG `89 50 4E 47`, WebP
/// `RIFF….WEBP`, HEIC `….ftyp` + `heic`/`heix`/`mif1`, PDF `%PDF-`.
pub fn sniff(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if b.starts_with(&[0x89, 0x50, 0x4E, 0x47]) {
        Some("image/png")
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else if b.len() >= 12
        && &b[4..8] == b"ftyp"
        && matches!(&b[8..12], b"heic" | b"heix" | b"mif1")
    {
        Some("image/heic")
    } else if b.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `r` with the fields its photo's processor gave it, if any; its id and why when they make it
/// invalid.
fn with_fields(r: Receipt, item: &Item) -> Result<Receipt, (String, String)> {
    let Some(AttributeValue::S(json)) = item.get(&processor::attribute(&r.receipt_id)) else {
        return Ok(r);
    };
    serde_json::from_str::<processor::Fields>(json)
        .map_err(|e| e.to_string())
        .and_then(|fields| processor::apply(&r, &fields))
        .map_err(|detail| (r.receipt_id.clone(), detail))
}

/// The verdict on a photo of `content_type` by its pixel dimensions, read from its header: an
/// image whose header names none is not one (`image_type`), one above `max_pixels` is refused
/// `image_too_large`. A PDF has no pixel dimensions and passes.
fn pixels(content_type: &str, body: &[u8], max_pixels: u64) -> (&'static str, String) {
    if content_type == "application/pdf" {
        return (OK, String::new());
    }
    match imagesize::blob_size(body) {
        Ok(d) if d.width == 0 || d.height == 0 => (
            IMAGE_TYPE,
            format!(
                "its {content_type} header gives {} × {} pixels",
                d.width, d.height
            ),
        ),
        Ok(d) if (d.width as u64).saturating_mul(d.height as u64) > max_pixels => (
            IMAGE_TOO_LARGE,
            format!(
                "{} × {} pixels, above the limit of {max_pixels}",
                d.width, d.height
            ),
        ),
        Ok(_) => (OK, String::new()),
        Err(e) => (
            IMAGE_TYPE,
            format!("its {content_type} header gives no pixel dimensions ({e})"),
        ),
    }
}

/// `photos/{batch_id}/{receipt_id}`, both UUIDs.
fn parse_photo_key(key: &str) -> Result<(String, String), PhotoError> {
    let bad = || {
        PhotoError::Malformed(format!(
            "object key {key:?} is not photos/<batch id>/<receipt id>"
        ))
    };
    let rest = key.strip_prefix(PHOTO_PREFIX).ok_or_else(bad)?;
    let (batch, receipt) = rest.split_once('/').ok_or_else(bad)?;
    if uuid::Uuid::parse_str(batch).is_err() || uuid::Uuid::parse_str(receipt).is_err() {
        return Err(bad());
    }
    Ok((batch.to_owned(), receipt.to_owned()))
}

/// `pending/{batch_id}/{chunk_index}.json`.
fn parse_pending_key(key: &str) -> Option<(String, u32)> {
    let rest = key.strip_prefix(PENDING_PREFIX)?;
    let (batch, file) = rest.split_once('/')?;
    uuid::Uuid::parse_str(batch).ok()?;
    let index = file.strip_suffix(".json")?.parse().ok()?;
    Some((batch.to_owned(), index))
}

#[derive(Deserialize)]
struct S3Event {
    #[serde(rename = "Records", default)]
    records: Option<Vec<S3EventRecord>>,
    #[serde(rename = "Event", default)]
    event: Option<String>,
}

#[derive(Deserialize)]
struct S3EventRecord {
    #[serde(rename = "eventName")]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
}

/// The object keys of an S3 event notification's ObjectCreated records (URL-decoded, as S3
/// encodes them); none for S3's `s3:TestEvent`.
pub(crate) fn event_keys(body: &str) -> Result<Vec<String>, PhotoError> {
    let event: S3Event = serde_json::from_str(body)
        .map_err(|e| PhotoError::Malformed(format!("not an S3 event notification: {e}")))?;
    match (event.records, event.event.as_deref()) {
        (Some(records), _) => Ok(records
            .into_iter()
            .filter(|r| r.event_name.starts_with("ObjectCreated:"))
            .map(|r| url_decode(&r.s3.object.key))
            .collect()),
        (None, Some("s3:TestEvent")) => Ok(Vec::new()),
        (None, _) => Err(PhotoError::Malformed(
            "an S3 event notification without Records".to_owned(),
        )),
    }
}

/// S3's key encoding in events: `+` for a space, `%XX` for a byte.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod e2e;
#[cfg(test)]
mod tests;
