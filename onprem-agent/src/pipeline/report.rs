//! The status reporter: tells the cloud, through the status queue (`[status] queue_url`), what
//! became of each settled chunk, outbound only.
//!
//! Keeps the guarantee "What became of each chunk reaches the cloud": a chunk's report is sent from
//! its ledger row until the status queue has taken it.
//!
//! The chunk ledger is the truth: each row carries its chunk's figures (written with the row,
//! in the chunk's first commit) and `reported_at`, NULL until the status queue has taken its
//! report. The reporter reads the unreported rows oldest first, packs them into compressed
//! messages ([`encode_reports`]), sends them with SendMessageBatch, and marks exactly the rows
//! whose messages SQS took. A report is a pure function of its row, so sending one twice (the
//! agent killed between the send and the mark) is harmless: the cloud folds each chunk once.
//!
//! It is woken after commits ([`ReportWake::committed`], which never waits), waits
//! [`DEBOUNCE`] so one call carries many chunks, and also runs every [`RESEND_INTERVAL`], so
//! what could not be sent (the status queue down, the agent killed) goes later; at start it
//! sends what is pending, at shutdown it flushes once within [`FLUSH_AT_STOP`]. It reads and
//! marks on a connection of its own, never a writer's.
//!
//! A status queue that is down delays status only: the data path never waits for the reporter,
//! and it is not a readiness failure (the receipts are stored; `/readyz` answers for the data
//! path). It shows as one WARN per outage (an INFO when reports flow again),
//! `sluice_status_send_failures_total`, `sluice_status_unreported_chunks` and the last error
//! in `sluice-agent status`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_protocol::report::{
    decode_message, encode_reports, ChunkReport, MAX_STATUS_MESSAGE_BYTES,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::io::sqs::Queue;
use crate::io::store::Store;
use crate::pipeline::backoff::outage_backoff;
use crate::telemetry::names as m;

/// After a wake-up, how long the reporter lets commits gather before it sends: what keeps
/// the status traffic a small share of the data path's (one SendMessageBatch, and one receive
/// and delete on the cloud side, per 5 s of draining however fast it drains: about 20 rounds
/// per million receipts at 10,000/s), at the cost of status lagging commits by up to 5 s.
pub const DEBOUNCE: Duration = Duration::from_secs(5);
/// How often the reporter looks for unreported rows without being woken.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(10);
/// The bound on the flush at shutdown.
pub const FLUSH_AT_STOP: Duration = Duration::from_secs(5);
/// The bound on one flush while running: an SQS or PostgreSQL call that hangs ends as a
/// failed send, tried again later.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Ledger rows read per round (each round is one or a few SendMessageBatch calls).
const PAGE: i64 = 2000;

/// Wakes the reporter after a commit; does nothing when reporting is off. Never waits.
#[derive(Debug, Clone, Default)]
pub struct ReportWake(Option<Arc<Notify>>);

impl ReportWake {
    /// A chunk-ledger row was committed.
    pub fn committed(&self) {
        if let Some(n) = &self.0 {
            n.notify_one();
        }
    }
}

/// What `sluice-agent status` shows about reporting (in `/v1/status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportView {
    /// Ledger rows the status queue has not taken yet, at the reporter's last look.
    pub unreported_chunks: u64,
    /// The last send's error, while sends fail.
    pub last_error: Option<String>,
}

impl ReportView {
    /// The `status queue` line of `sluice-agent status`.
    pub fn line(&self) -> String {
        let n = self.unreported_chunks;
        match &self.last_error {
            None => format!("{n} chunks not yet reported"),
            Some(e) => format!("{n} chunks not yet reported; sends failing: {e}"),
        }
    }
}

/// The reporter, shared with the HTTP server (for `/v1/status`).
#[derive(Debug)]
pub struct Reporter {
    store: Store,
    queue: Queue,
    wake: Arc<Notify>,
    view: Mutex<ReportView>,
}

/// What one flush did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flushed {
    sent: u64,
    /// The first reason a message was not taken, if any was not.
    failed: Option<String>,
}

impl Reporter {
    /// A reporter reading `store`'s ledger (on its own connection) and sending to `queue`.
    pub fn new(store: Store, queue: Queue) -> Arc<Self> {
        Arc::new(Self {
            store,
            queue,
            wake: Arc::new(Notify::new()),
            view: Mutex::new(ReportView::default()),
        })
    }

    /// The handle writers wake the reporter with.
    pub fn wake(&self) -> ReportWake {
        ReportWake(Some(self.wake.clone()))
    }

    pub fn view(&self) -> ReportView {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Sends what is pending, then after every wake-up (debounced) and every
    /// [`RESEND_INTERVAL`], until `stop`; then flushes once within [`FLUSH_AT_STOP`].
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut delays = outage_backoff();
        let mut failing = false;
        loop {
            let flushed = tokio::select! {
                f = tokio::time::timeout(FLUSH_TIMEOUT, self.flush()) => f.unwrap_or_else(|_| {
                    Err(format!("no answer within {FLUSH_TIMEOUT:?}"))
                }),
                _ = stop.cancelled() => break,
            };
            let delay = match flushed {
                Ok(Flushed { failed: None, sent }) => {
                    if failing {
                        tracing::info!(sent, "Status reports are sent again.");
                        failing = false;
                    }
                    self.set_error(None);
                    delays = outage_backoff();
                    None
                }
                Ok(Flushed {
                    failed: Some(e), ..
                })
                | Err(e) => {
                    metrics::counter!(m::STATUS_SEND_FAILURES).increment(1);
                    if !failing {
                        tracing::warn!(queue = %self.queue.url(), error = %e, "Cannot send status reports; the data path goes on, reports are re-sent from the chunk ledger once the status queue takes them.");
                        failing = true;
                    }
                    self.set_error(Some(e));
                    Some(
                        delays
                            .next()
                            .unwrap_or(RESEND_INTERVAL)
                            .min(RESEND_INTERVAL),
                    )
                }
            };
            self.refresh_unreported().await;
            let woken = match delay {
                // Failing: wait the backoff, whatever commits happen meanwhile.
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => false,
                    _ = stop.cancelled() => break,
                },
                None => tokio::select! {
                    _ = self.wake.notified() => true,
                    _ = tokio::time::sleep(RESEND_INTERVAL) => false,
                    _ = stop.cancelled() => break,
                },
            };
            if woken {
                tokio::select! {
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        match tokio::time::timeout(FLUSH_AT_STOP, self.flush()).await {
            Ok(Ok(Flushed { failed: None, sent })) => {
                tracing::debug!(sent, "Status reports flushed at shutdown.");
            }
            Ok(Ok(Flushed {
                failed: Some(e), ..
            }))
            | Ok(Err(e)) => {
                tracing::warn!(error = %e, "Status reports not all sent at shutdown; they go at the next start.");
            }
            Err(_) => {
                tracing::warn!(
                    within = ?FLUSH_AT_STOP,
                    "Status reports not all sent at shutdown; they go at the next start."
                );
            }
        }
    }

    /// Sends every unreported row, page by page, marking what the status queue took. Stops at
    /// the first page that did not all go.
    async fn flush(&self) -> Result<Flushed, String> {
        let mut done = Flushed::default();
        loop {
            let reports = self
                .store
                .unreported(PAGE)
                .await
                .map_err(|e| format!("reading the chunk ledger: {e}"))?;
            if reports.is_empty() {
                return Ok(done);
            }
            let full = reports.len() as i64 == PAGE;
            let bodies = encode_reports(&reports, MAX_STATUS_MESSAGE_BYTES);
            let failed = self.queue.send_bodies(&bodies).await;
            let taken = taken_reports(&bodies, &failed);
            self.store
                .mark_reported(&taken.iter().collect::<Vec<_>>())
                .await
                .map_err(|e| format!("marking reported chunks: {e}"))?;
            done.sent += taken.len() as u64;
            metrics::counter!(m::STATUS_REPORTS_SENT).increment(taken.len() as u64);
            if let Some((_, reason)) = failed.into_iter().next() {
                done.failed = Some(format!("SendMessageBatch to the status queue: {reason}"));
                return Ok(done);
            }
            if !full {
                return Ok(done);
            }
        }
    }

    async fn refresh_unreported(&self) {
        if let Ok(n) = self.store.count_unreported().await {
            metrics::gauge!(m::STATUS_UNREPORTED).set(n as f64);
            if let Ok(mut v) = self.view.lock() {
                v.unreported_chunks = n;
            }
        }
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut v) = self.view.lock() {
            v.last_error = e;
        }
    }
}

/// The reports of the bodies SQS took (every body but the `failed` indexes).
fn taken_reports(bodies: &[String], failed: &[(usize, String)]) -> Vec<ChunkReport> {
    bodies
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.iter().any(|(f, _)| f == i))
        // Our own encoding reads back; a body that did not would only be re-sent.
        .filter_map(|(_, b)| decode_message(b).ok())
        .flat_map(|m| m.reports)
        .collect()
}

#[cfg(test)]
mod tests;
