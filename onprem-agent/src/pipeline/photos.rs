//! The photos the bridge carries (issue 32): a receipt whose `image` has both a `key` and a
//! `content_type` is stored only with its photo.
//!
//! Before a batch's transaction, [`prepare`] fetches its carried photos from the bucket
//! (`photos.max_concurrent_fetches` at once, paced by `throttle.photo_bytes_per_second`) and
//! checks each again against its receipt (size, then SHA-256):
//! - each photo is streamed from S3 into a file as it is hashed, never whole in memory: for
//!   `store = "database"` a file in the agent's spool (below), read back one photo at a time
//!   into its `receipt_photos` row in the receipt's transaction; for `store = "directory"` a
//!   temporary file beside its place, fsynced and renamed into place once it matches;
//! - an object that does not exist (and is not already stored: a redelivery after the object
//!   was deleted) refuses its receipt with reason `image_missing`; one that does not match,
//!   `image_checksum`. `settle` dead-letters those receipts and stores the rest of the batch;
//! - S3 that cannot be asked (unreachable, a 5xx, access denied) fails the whole batch: nothing
//!   is stored or deleted, the writer retries it with backoff under `photo_store_unavailable`.
//!
//! After the commit, [`delete_committed`] deletes the objects of the photos now stored
//! (DeleteObjects; a failure is logged and counted, and the bucket's lifecycle rule removes the
//! object later). Objects of receipts dead-lettered are kept, so a redrive finds them.
//!
//! Without `[photos]`, [`without_unconfigured`] releases every message holding a carried photo
//! (with a delay) and raises `photos_not_configured`: such a receipt is never stored without
//! its photo.
//!
//! Memory: a fetch holds one write buffer ([`crate::io::photos`]), and the database store's
//! transaction one photo at a time (its bytes and the statement's copy of them), so the
//! agent's memory is bounded by the largest photo, not by the photos of a batch or the
//! backlog. The spool is `$CACHE_DIRECTORY/photo-spool` under systemd (`CacheDirectory=`,
//! emptied when the agent starts), else `sluice-photo-spool-<pid>` in the temporary directory
//! (removed when the agent stops, or by the next agent to start if it was killed); a batch's
//! files are removed once its attempt ends, committed or not.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sluice_protocol::{Image, Receipt};
use tokio::sync::Semaphore;

use crate::config::{PhotoStore, PhotosConfig};
use crate::io::photos::{files, FetchError, PhotoSource};
use crate::io::sqs::{Handle, NoRootCertificates};
use crate::io::store::{Row, Store};
use crate::pipeline::delivery::{Delivery, WriterContext};
use crate::pipeline::health::PHOTOS_NOT_CONFIGURED;
use crate::telemetry::names as m;
use crate::throttle::photo_bytes::PhotoByteLimiter;

/// Reason (first word) of a receipt dead-lettered because its photo's object does not exist.
pub const IMAGE_MISSING: &str = "image_missing";
/// Reason (first word) of a receipt dead-lettered because its photo does not match it.
pub const IMAGE_CHECKSUM: &str = "image_checksum";

/// How long a message holding a carried photo is kept invisible when released by an agent
/// without `[photos]`: it does not spin on it, and an agent configured for photos (or this
/// one, restarted) takes it soon after.
pub const UNCONFIGURED_RELEASE_DELAY: Duration = Duration::from_secs(5 * 60);

/// What fetching and storing photos needs, from `[photos]`.
#[derive(Debug)]
pub struct Photos {
    source: PhotoSource,
    store: PhotoStore,
    directory: Option<PathBuf>,
    pace: PhotoByteLimiter,
    max_concurrent: usize,
    /// Where fetched photos wait for their transaction (`store = "database"`).
    spool: Spool,
}

/// The directory fetched photos wait in for the database store's transaction, and the
/// number of the next file.
#[derive(Debug)]
struct Spool {
    dir: PathBuf,
    next: AtomicU64,
    /// Whether the directory is this process's own (removed when the agent stops).
    own: bool,
}

impl Spool {
    /// `$CACHE_DIRECTORY/photo-spool` (systemd's `CacheDirectory=`: one agent per unit, so
    /// what an earlier run left is removed), else a directory of this process's own in the
    /// temporary directory.
    fn new() -> Self {
        let cache = std::env::var_os("CACHE_DIRECTORY")
            .and_then(|v| std::env::split_paths(&v).next())
            .filter(|p| p.is_absolute());
        let (dir, own) = match cache {
            Some(base) => {
                let dir = base.join("photo-spool");
                let _ = std::fs::remove_dir_all(&dir);
                (dir, false)
            }
            None => {
                let tmp = std::env::temp_dir();
                remove_dead_spools(&tmp);
                (
                    tmp.join(format!("{SPOOL_PREFIX}{}", std::process::id())),
                    true,
                )
            }
        };
        Self {
            dir,
            next: AtomicU64::new(0),
            own,
        }
    }

    /// A new file name in the spool, the directory created if missing.
    async fn file(&self) -> std::io::Result<PathBuf> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(self.dir.join(format!("{n}.photo")))
    }
}

/// The name of an agent's own spool in the temporary directory, before its process id.
const SPOOL_PREFIX: &str = "sluice-photo-spool-";

/// Removes the spools in `tmp` of agents no longer running (killed before they could remove
/// their own); a process id in use again keeps its directory.
fn remove_dead_spools(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPOOL_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.own {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Photos {
    pub async fn connect(
        cfg: &PhotosConfig,
        bytes_per_second: Option<u64>,
    ) -> Result<Self, NoRootCertificates> {
        Ok(Self {
            source: PhotoSource::connect(cfg).await?,
            store: cfg.store,
            directory: cfg.directory.clone(),
            pace: PhotoByteLimiter::new(bytes_per_second),
            max_concurrent: usize::try_from(cfg.max_concurrent_fetches)
                .unwrap_or(1)
                .max(1),
            spool: Spool::new(),
        })
    }
}

/// Whether `r` carries a photo the agent must fetch.
fn carried(r: &Receipt) -> Option<(&Image, &str)> {
    let image = r.image.as_ref().filter(|i| i.is_carried())?;
    Some((image, image.key.as_deref()?))
}

/// The declared bytes of the photos a delivery carries (what its batch size counts).
pub fn declared_bytes(d: &Delivery) -> usize {
    d.chunk
        .receipts
        .iter()
        .filter_map(carried)
        .map(|(i, _)| usize::try_from(i.bytes).unwrap_or(usize::MAX))
        .fold(0usize, usize::saturating_add)
}

/// A receipt refused for its photo, with the reason its dead letter gets.
#[derive(Debug, Clone)]
pub struct Refused {
    pub batch_id: String,
    pub chunk_index: u32,
    pub receipt_id: String,
    pub sha256: String,
    pub reason: String,
}

impl Refused {
    /// Whether `row` is this receipt (this chunk, this id, this photo).
    pub fn is(&self, row: &Row<'_>) -> bool {
        row.chunk_index == self.chunk_index
            && row.batch_id == self.batch_id
            && row.receipt.receipt_id == self.receipt_id
            && carried(row.receipt).is_some_and(|(i, _)| i.sha256 == self.sha256)
    }
}

/// A batch's photos, ready for its transaction.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Fetched and checked photos to store in the transaction, by (receipt id, sha256): their
    /// files in the spool (`store = "database"`), removed when this is dropped.
    spooled: HashMap<(String, String), PathBuf>,
    /// Receipts whose photo is missing or does not match.
    pub refused: Vec<Refused>,
    /// (receipt id, object key) of the photos fetched and checked: deleted once stored.
    fetched: Vec<(String, String)>,
}

impl Prepared {
    /// `row` with its photo to store, if it has one waiting.
    pub fn attach<'a>(&'a self, row: Row<'a>) -> Row<'a> {
        let photo = carried(row.receipt).and_then(|(i, _)| {
            self.spooled
                .get(&(row.receipt.receipt_id.clone(), i.sha256.clone()))
                .map(PathBuf::as_path)
        });
        Row { photo, ..row }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for path in self.spooled.values() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One fetch's outcome.
enum Fetched {
    /// Checked; its spool file when the transaction stores it (database), none when its file
    /// is in place already (directory).
    Stored(Option<PathBuf>),
    /// Already stored by an earlier commit (its object deleted since): nothing to do.
    AlreadyStored,
    Refused(String),
}

/// Why a batch's photos could not be prepared: retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PhotoError(pub String);

/// Fetches, checks and (directory) stores the carried photos of `batch`; `Ok(None)` when it
/// carries none.
pub async fn prepare(
    ctx: &WriterContext,
    batch: &[Delivery],
) -> Result<Option<Prepared>, PhotoError> {
    let Some(photos) = ctx.photos.as_deref() else {
        return Ok(None);
    };
    // One fetch per photo of each receipt version (a redelivered copy in the same batch
    // shares it).
    let mut seen = HashSet::new();
    let mut wanted = Vec::new();
    for d in batch {
        for r in &d.chunk.receipts {
            let Some((image, key)) = carried(r) else {
                continue;
            };
            if seen.insert((r.receipt_id.as_str(), image.sha256.as_str(), key)) {
                wanted.push((d, r, image, key));
            }
        }
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let slots = Semaphore::new(photos.max_concurrent);
    let mut fetches = Vec::with_capacity(wanted.len());
    for &(_, r, image, key) in &wanted {
        fetches.push(fetch_in_slot(&slots, photos, &ctx.store, r, image, key));
    }
    let results = join_all(fetches).await;
    let mut prepared = Prepared::default();
    let mut first_error = None;
    for ((d, r, image, key), out) in wanted.into_iter().zip(results) {
        match out {
            Ok(Fetched::Stored(data)) => {
                prepared
                    .fetched
                    .push((r.receipt_id.clone(), key.to_owned()));
                if let Some(path) = data {
                    let old = prepared
                        .spooled
                        .insert((r.receipt_id.clone(), image.sha256.clone()), path);
                    if let Some(old) = old {
                        let _ = std::fs::remove_file(old);
                    }
                }
            }
            Ok(Fetched::AlreadyStored) => {}
            Ok(Fetched::Refused(reason)) => prepared.refused.push(Refused {
                batch_id: d.chunk.batch_id.clone(),
                chunk_index: d.chunk.chunk_index,
                receipt_id: r.receipt_id.clone(),
                sha256: image.sha256.clone(),
                reason,
            }),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Some(prepared)),
    }
}

/// [`fetch_one`] once one of `slots` (`photos.max_concurrent_fetches`) is free.
async fn fetch_in_slot(
    slots: &Semaphore,
    photos: &Photos,
    store: &Store,
    r: &Receipt,
    image: &Image,
    key: &str,
) -> Result<Fetched, PhotoError> {
    let _slot = slots
        .acquire()
        .await
        .map_err(|e| PhotoError(e.to_string()))?;
    fetch_one(photos, store, r, image, key).await
}

/// Fetches one photo into its file, checks it, and (directory) puts the file in its place.
async fn fetch_one(
    photos: &Photos,
    store: &Store,
    r: &Receipt,
    image: &Image,
    key: &str,
) -> Result<Fetched, PhotoError> {
    let waited = Instant::now();
    photos.pace.acquire(image.bytes).await;
    metrics::histogram!(m::PHOTO_LIMITER_WAIT_SECONDS).record(waited.elapsed().as_secs_f64());
    let bucket = photos.source.bucket();
    let into = match (&photos.store, &photos.directory) {
        (PhotoStore::Directory, Some(dir)) => {
            let (dir, sha256) = (dir.clone(), image.sha256.clone());
            blocking(move || files::incoming(&dir, &sha256)).await
        }
        _ => photos.spool.file().await,
    };
    let into = into.map_err(|e| {
        PhotoError(format!(
            "cannot make a file for the photo of receipt {}: {e}",
            r.receipt_id
        ))
    })?;
    let (len, sha) = match photos.source.fetch_into(key, image.bytes, &into).await {
        Ok(fetched) => fetched,
        Err(FetchError::Missing { .. }) => {
            if already_stored(photos, store, r, image).await? {
                return Ok(Fetched::AlreadyStored);
            }
            metrics::counter!(m::PHOTOS_REFUSED, "reason" => IMAGE_MISSING).increment(1);
            return Ok(Fetched::Refused(format!(
                "{IMAGE_MISSING}: receipt {}: its photo s3://{bucket}/{key} does not exist",
                r.receipt_id
            )));
        }
        Err(FetchError::TooLarge { .. }) => {
            metrics::counter!(m::PHOTOS_REFUSED, "reason" => IMAGE_CHECKSUM).increment(1);
            return Ok(Fetched::Refused(format!(
                "{IMAGE_CHECKSUM}: receipt {}: its photo s3://{bucket}/{key} holds more than the \
                 {} bytes declared",
                r.receipt_id, image.bytes
            )));
        }
        Err(e @ (FetchError::Unavailable { .. } | FetchError::Local { .. })) => {
            return Err(PhotoError(e.to_string()))
        }
    };
    metrics::counter!(m::PHOTO_BYTES_FETCHED).increment(len);
    if len != image.bytes || sha != image.sha256 {
        let _ = tokio::fs::remove_file(&into).await;
        metrics::counter!(m::PHOTOS_REFUSED, "reason" => IMAGE_CHECKSUM).increment(1);
        return Ok(Fetched::Refused(format!(
            "{IMAGE_CHECKSUM}: receipt {}: its photo s3://{bucket}/{key} has {len} bytes, sha256 \
             {sha}; the receipt declares {} bytes, sha256 {}",
            r.receipt_id, image.bytes, image.sha256
        )));
    }
    match (&photos.store, &photos.directory) {
        (PhotoStore::Directory, Some(dir)) => {
            let (dir, sha256) = (dir.clone(), image.sha256.clone());
            blocking(move || files::keep(&dir, &sha256, &into))
                .await
                .map_err(|e| {
                    PhotoError(format!(
                        "cannot write the photo of receipt {} under photos.directory: {e}",
                        r.receipt_id
                    ))
                })?;
            metrics::counter!(m::PHOTO_BYTES_STORED).increment(len);
            Ok(Fetched::Stored(None))
        }
        _ => Ok(Fetched::Stored(Some(into))),
    }
}

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Whether the photo of `r` is stored already (an earlier commit, its object deleted since).
async fn already_stored(
    photos: &Photos,
    store: &Store,
    r: &Receipt,
    image: &Image,
) -> Result<bool, PhotoError> {
    match (&photos.store, &photos.directory) {
        (PhotoStore::Directory, Some(dir)) => Ok(files::exists(dir, &image.sha256)),
        _ => store
            .photo_stored(&r.receipt_id, &image.sha256)
            .await
            .map_err(|e| PhotoError(format!("looking for a stored photo: {e}"))),
    }
}

/// Deletes the objects of the photos now stored; `unstored` names the receipts of the batch
/// that were not (refused, conflicts): their objects stay for a redrive.
pub async fn delete_committed(
    ctx: &WriterContext,
    prepared: &Prepared,
    unstored: &HashSet<String>,
) {
    let Some(photos) = ctx.photos.as_deref() else {
        return;
    };
    let keys: Vec<String> = prepared
        .fetched
        .iter()
        .filter(|(id, _)| !unstored.contains(id))
        .map(|(_, key)| key.clone())
        .collect();
    if keys.is_empty() {
        return;
    }
    let failed = photos.source.delete(&keys).await;
    if !failed.is_empty() {
        metrics::counter!(m::PHOTO_DELETE_FAILURES).increment(failed.len() as u64);
        for (key, why) in failed.iter().take(5) {
            tracing::warn!(key = %key, error = %why, "Could not delete a stored photo's object; the bucket's lifecycle rule will.");
        }
    }
}

/// Without `[photos]`: the messages of `batch` holding a carried photo are released (with
/// [`UNCONFIGURED_RELEASE_DELAY`]) and `photos_not_configured` raised; the rest is returned.
pub async fn without_unconfigured(ctx: &WriterContext, batch: Vec<Delivery>) -> Vec<Delivery> {
    if ctx.photos.is_some() {
        return batch;
    }
    let (carrying, rest): (Vec<Delivery>, Vec<Delivery>) = batch
        .into_iter()
        .partition(|d| d.chunk.receipts.iter().any(|r| carried(r).is_some()));
    if carrying.is_empty() {
        return rest;
    }
    ctx.health.raise(
        PHOTOS_NOT_CONFIGURED,
        "messages hold receipts with photos the bridge carries (image.key and \
         image.content_type) and this agent has no [photos] section: they are released to the \
         queue, not stored without their photos; add [photos] (bucket, store) and restart",
    );
    for d in &carrying {
        tracing::warn!(message_id = %d.handle.message_id, batch_id = %d.chunk.batch_id, chunk_index = d.chunk.chunk_index, retry_in = ?UNCONFIGURED_RELEASE_DELAY, "Message holds carried photos and [photos] is not configured; released, not stored.");
    }
    let handles: Vec<Handle> = carrying.iter().map(|d| d.handle.clone()).collect();
    ctx.inflight
        .release(&ctx.queue, &handles, UNCONFIGURED_RELEASE_DELAY)
        .await;
    rest
}

/// The shared handle the writers hold.
pub type SharedPhotos = Option<Arc<Photos>>;
