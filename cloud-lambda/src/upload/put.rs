//! The photos of an accepted request PUT to their presigned URLs: each file streamed from disk
//! (never held whole), at most `--photo-parallel` at once over the whole upload, transient
//! failures (5xx, 408, 429, connection errors) retried with backoff, each photo stored recorded
//! in the [`Journal`]. A URL that expired (S3's 403 "Request has expired", or past its
//! `expires_at` before the PUT starts) is renewed by sending the same request again (same
//! `Idempotency-Key`: the same batch, fresh URLs, the cloud's verdicts kept).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;

use super::journal::{Entry, Journal};
use super::photos::LocalPhoto;
use crate::photos::PhotoUpload;

/// Requests sent again for fresh URLs, at most, per request.
pub const MAX_RENEWALS: usize = 3;
/// A URL this close to its end is renewed rather than used.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Bytes read from disk per body chunk.
const BODY_STEP: usize = 64 * 1024;

/// Shared by every request of one upload.
#[derive(Debug)]
pub struct PhotoStage {
    pub client: reqwest::Client,
    pub journal: Journal,
    pub slots: Arc<Semaphore>,
    pub max_attempts: usize,
    /// The API, as the journal records it.
    pub api: String,
}

/// One photo's end in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhotoEnd {
    /// PUT and answered 2xx, after this many attempts.
    Stored { attempts: usize },
    /// In the journal already.
    Skipped,
    /// Not stored, with why.
    Failed(String),
}

/// The request sent again: fresh upload URLs, or why not.
pub type Renewal<'a> = futures_util::future::BoxFuture<'a, Result<Vec<PhotoUpload>, String>>;

/// Whether one PUT stored the photo, needs a fresh URL, or cannot.
#[derive(Debug)]
enum Put {
    Stored(usize),
    Expired(String),
    Failed(String),
}

impl PhotoStage {
    /// Puts `photos` of `batch_id` to `urls`; `renew` sends the request again and answers
    /// fresh URLs. `done` is told of each photo as it ends.
    pub async fn put_all<'a>(
        &self,
        batch_id: &str,
        photos: &[LocalPhoto],
        urls: Vec<PhotoUpload>,
        renew: &(dyn Fn() -> Renewal<'a> + Send + Sync + 'a),
        done: &(dyn Fn(&LocalPhoto, &PhotoEnd) + Send + Sync),
    ) -> usize {
        let mut urls: HashMap<String, PhotoUpload> = urls
            .into_iter()
            .map(|u| (u.receipt_id.to_ascii_lowercase(), u))
            .collect();
        let mut todo: Vec<&LocalPhoto> = Vec::new();
        for p in photos {
            if self
                .journal
                .contains(batch_id, &p.receipt_id, &p.sha256, &self.api)
            {
                done(p, &PhotoEnd::Skipped);
            } else {
                todo.push(p);
            }
        }
        let mut renewals = 0;
        loop {
            // Every PUT of the request at once, each waiting for one of the upload's slots.
            let mut puts = Vec::with_capacity(todo.len());
            for p in todo {
                let url = urls.get(&p.receipt_id).cloned();
                puts.push(async move {
                    let Some(url) = url else {
                        let why = "the API answered no upload URL for this receipt";
                        return (p, Put::Failed(why.to_owned()));
                    };
                    let _slot = self.slots.acquire().await;
                    (p, self.put(&url, p).await)
                });
            }
            let results = futures_util::future::join_all(puts).await;
            let mut expired = Vec::new();
            for (p, put) in results {
                let end = match put {
                    Put::Stored(attempts) => {
                        let entry = Entry {
                            batch_id: batch_id.to_owned(),
                            receipt_id: p.receipt_id.clone(),
                            sha256: p.sha256.clone(),
                            api: self.api.clone(),
                        };
                        if let Err(e) = self.journal.record(&entry) {
                            tracing::warn!(journal = %self.journal.path.display(), error = %e, "Cannot append to the journal; a re-run uploads this photo again.");
                        }
                        PhotoEnd::Stored { attempts }
                    }
                    Put::Failed(why) => PhotoEnd::Failed(why),
                    Put::Expired(why) if renewals >= MAX_RENEWALS => {
                        PhotoEnd::Failed(format!("{why}; still after {MAX_RENEWALS} fresh URLs"))
                    }
                    Put::Expired(_) => {
                        expired.push(p);
                        continue;
                    }
                };
                done(p, &end);
            }
            if expired.is_empty() {
                return renewals;
            }
            renewals += 1;
            tracing::info!(
                batch_id,
                photos = expired.len(),
                "Upload URLs expired; sending the request again for fresh ones."
            );
            match renew().await {
                Ok(fresh) => {
                    urls = fresh
                        .into_iter()
                        .map(|u| (u.receipt_id.to_ascii_lowercase(), u))
                        .collect();
                    todo = expired;
                }
                Err(why) => {
                    for p in expired {
                        done(
                            p,
                            &PhotoEnd::Failed(format!(
                                "its upload URL expired and the request sent again for a fresh one failed: {why}"
                            )),
                        );
                    }
                    return renewals;
                }
            }
        }
    }

    /// One photo, retried while S3 does not judge it.
    async fn put(&self, url: &PhotoUpload, photo: &LocalPhoto) -> Put {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(20))
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempts = 0;
        loop {
            if expiring(&url.expires_at) {
                return Put::Expired(format!("its upload URL expired at {}", url.expires_at));
            }
            attempts += 1;
            let why = match self.send(url, photo).await {
                Ok(resp) if resp.status().is_success() => return Put::Stored(attempts),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    let why = format!("S3 answered HTTP {status}: {}", s3_message(&text));
                    if status == 403
                        && (text.to_ascii_lowercase().contains("expired")
                            || expiring(&url.expires_at))
                    {
                        return Put::Expired(why);
                    }
                    if !transient(status) {
                        return Put::Failed(why);
                    }
                    why
                }
                Err(Failure::Local(why)) => return Put::Failed(why),
                Err(Failure::Http(why)) => why,
            };
            if attempts >= self.max_attempts.max(1) {
                return Put::Failed(format!("{why} (after {attempts} attempts)"));
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(20));
            tracing::warn!(receipt_id = %photo.receipt_id, attempt = attempts, error = %why, retry_in = ?delay, "Photo PUT failed; retrying.");
            tokio::time::sleep(delay).await;
        }
    }

    /// One PUT, the body streamed from the file.
    async fn send(
        &self,
        url: &PhotoUpload,
        photo: &LocalPhoto,
    ) -> Result<reqwest::Response, Failure> {
        let shown = photo.path.display();
        let file = tokio::fs::File::open(&photo.path)
            .await
            .map_err(|e| Failure::Local(format!("{shown}: {e}")))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Failure::Local(format!("{shown}: {e}")))?
            .len();
        if len != photo.bytes {
            return Err(Failure::Local(format!(
                "{shown} changed since the upload read it ({} bytes, now {len}); run the upload again",
                photo.bytes
            )));
        }
        let body = futures_util::stream::try_unfold(file.take(photo.bytes), |mut f| async move {
            let mut buf = vec![0u8; BODY_STEP];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((buf, f)))
        });
        let mut req = self
            .client
            .put(&url.upload_url)
            // A minute, and a second per 64 KiB: 20 MiB may take 6 minutes on a slow link.
            .timeout(Duration::from_secs(60 + photo.bytes / (64 * 1024)))
            .body(reqwest::Body::wrap_stream(body));
        for (k, v) in &url.headers {
            req = req.header(k, v);
        }
        if !url
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-length"))
        {
            req = req.header(reqwest::header::CONTENT_LENGTH, photo.bytes);
        }
        req.send()
            .await
            .map_err(|e| Failure::Http(format!("PUT failed: {}", error_chain(&e))))
    }
}

/// Why a PUT was not answered: the file (not worth retrying) or the connection.
#[derive(Debug)]
enum Failure {
    Local(String),
    Http(String),
}

/// An answer that did not judge the photo.
pub(crate) fn transient(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// Whether an RFC 3339 `expires_at` is past, or nearly; an unreadable one never is.
pub(crate) fn expiring(expires_at: &str) -> bool {
    expires_at
        .parse::<jiff::Timestamp>()
        .is_ok_and(|end| jiff::Timestamp::now() + EXPIRY_MARGIN >= end)
}

/// S3's `<Code>` and `<Message>` of an XML error, else the start of the text.
pub(crate) fn s3_message(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_owned())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => {
            let t: String = text.trim().chars().take(200).collect();
            if t.is_empty() {
                "(no message)".to_owned()
            } else {
                t
            }
        }
    }
}

/// The error and its sources, which hold the useful part (`connection refused`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
