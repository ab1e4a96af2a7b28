//! The upload: the receipts written to an NDJSON file and sent through the real ingest API with
//! the uploader `sluice-ingest upload` uses, with a progress bar.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::children::Children;
use crate::format::{secs, thousands};
use crate::paths::Paths;
use crate::{PARALLEL_REQUESTS, RECEIPTS_PER_REQUEST, UPLOAD_TRIES};

/// What the upload did.
#[derive(Debug)]
pub(crate) struct UploadStats {
    pub(crate) started: Instant,
    pub(crate) elapsed: Duration,
    pub(crate) receipts: u64,
    pub(crate) requests: u64,
    /// The batch ids the API answered, in file order.
    pub(crate) batches: Vec<String>,
    chunks: u64,
    bytes: u64,
    retries: u64,
    /// Photos PUT to S3, and their bytes.
    photos: u64,
    photo_bytes: u64,
}

impl UploadStats {
    pub(crate) fn print(&self) {
        println!(
            "  accepted {} receipts in {} gzip NDJSON requests as {} SQS messages, {} bytes, {}{}",
            thousands(self.receipts),
            self.requests,
            thousands(self.chunks),
            thousands(self.bytes),
            secs(self.elapsed),
            if self.retries > 0 {
                format!(", {} retries", self.retries)
            } else {
                String::new()
            }
        );
        if self.photos > 0 {
            println!(
                "  PUT {} photos ({:.1} MB) to S3; the ingest checked each before queueing its \
                 receipt",
                thousands(self.photos),
                self.photo_bytes as f64 / 1e6
            );
        }
    }
}

/// Writes a generated JPEG for each of `receipts` to `photos/<receipt_id>.jpg` in the demo's
/// directory, recreated (with no upload journal: the world is new), as a user's photo folder for
/// `sluice-ingest upload --photos`. `None` when there are none.
pub(crate) fn write_photos(
    paths: &Paths,
    receipts: &[Value],
) -> anyhow::Result<Option<std::path::PathBuf>> {
    let dir = paths.dir.join("photos");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if receipts.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, r) in receipts.iter().enumerate() {
        let id = r["receipt_id"]
            .as_str()
            .context("a generated receipt has an id")?;
        let path = dir.join(format!("{id}.jpg"));
        std::fs::write(&path, sluice_e2e::photos::jpeg(i, photo_size(i)))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Some(dir))
}

/// Photo `i`'s size: 60 kB to 400 kB, as phone photos of receipts go.
fn photo_size(i: usize) -> usize {
    60_000 + (i * 7_919) % 340_000
}

/// Writes the receipts to an NDJSON file and sends it with the uploader `sluice-ingest upload`
/// uses (`sluice_cloud::upload`), `PARALLEL_REQUESTS` requests at a time, with a progress bar.
pub(crate) async fn upload(
    base: &str,
    receipts: &[Value],
    photos: Option<&std::path::Path>,
    paths: &Paths,
    children: &mut Children,
) -> anyhow::Result<UploadStats> {
    let file = paths.dir.join("receipts.ndjson");
    let mut text = Vec::new();
    for r in receipts {
        serde_json::to_writer(&mut text, r)?;
        text.push(b'\n');
    }
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    let total = receipts.len() as u64;
    let bar = Arc::new(std::sync::Mutex::new(ProgressBar::new(total)));
    bar.lock().unwrap_or_else(|p| p.into_inner()).show(0, 0, 0);
    let opts = sluice_cloud::upload::UploadOptions {
        api: base.to_owned(),
        receipts_per_request: RECEIPTS_PER_REQUEST,
        parallel: PARALLEL_REQUESTS,
        max_attempts: UPLOAD_TRIES,
        photos: photos.map(|dir| sluice_cloud::upload::PhotoOptions::new(dir.to_owned())),
        ..Default::default()
    };
    let started = Instant::now();
    let shown = Arc::clone(&bar);
    let report = sluice_cloud::upload::upload_file(&file, &opts, move |p| {
        shown.lock().unwrap_or_else(|p| p.into_inner()).show(
            p.receipts_done as u64,
            p.requests_done as u64,
            p.photos_done as u64,
        );
    })
    .await;
    bar.lock().unwrap_or_else(|p| p.into_inner()).finish();
    let report = report.context("uploading")?;
    if !report.ok() {
        // A dead child is the likelier cause; say so first.
        children.check_alive()?;
        let refused: Vec<String> = report
            .requests
            .iter()
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("lines {}…: {e}", r.first_line))
            })
            .collect();
        let photos: Vec<String> = report
            .photos
            .iter()
            .flat_map(|p| &p.failed)
            .map(|f| format!("photo of line {}: {}", f.line, f.error))
            .collect();
        bail!(
            "{} receipts were refused, {} photos not stored; that is a bug:\n{}",
            report.refused,
            photos.len(),
            refused
                .into_iter()
                .chain(photos)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(UploadStats {
        started,
        elapsed: started.elapsed(),
        receipts: report.accepted as u64,
        requests: report.requests.len() as u64,
        batches: sluice_cloud::upload::outcome::batches_of(&report)
            .into_iter()
            .map(|b| b.batch_id)
            .collect(),
        chunks: report.requests.iter().map(|r| r.chunks).sum(),
        bytes: report.requests.iter().map(|r| r.bytes).sum(),
        retries: report
            .requests
            .iter()
            .map(|r| r.attempts.saturating_sub(1) as u64)
            .sum(),
        photos: report.photos.as_ref().map_or(0, |p| p.uploaded as u64),
        photo_bytes: report.photos.as_ref().map_or(0, |p| p.uploaded_bytes),
    })
}

/// `[#####.....] 12,000/20,000 receipts  6 requests  1.2 s` on stderr: in place on a terminal,
/// a plain line every tenth of the way otherwise.
#[derive(Debug)]
struct ProgressBar {
    total: u64,
    started: Instant,
    tty: bool,
    last_tenth: u64,
}

impl ProgressBar {
    const WIDTH: u64 = 30;

    fn new(total: u64) -> Self {
        Self {
            total,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn show(&mut self, done: u64, requests: u64, photos: u64) {
        let filled = (done * Self::WIDTH / self.total.max(1)) as usize;
        let photos = if photos > 0 {
            format!("  {} photos", thousands(photos))
        } else {
            String::new()
        };
        let line = format!(
            "[{}{}] {}/{} receipts  {} requests{photos}  {}",
            "#".repeat(filled),
            ".".repeat(Self::WIDTH as usize - filled),
            thousands(done),
            thousands(self.total),
            requests,
            secs(self.started.elapsed())
        );
        if self.tty {
            eprint!("\r  {line}\x1b[K");
            let _ = std::io::stderr().flush();
        } else {
            let tenth = done * 10 / self.total.max(1);
            if tenth > self.last_tenth || done == 0 {
                self.last_tenth = tenth;
                eprintln!("  {line}");
            }
        }
    }

    fn finish(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}
