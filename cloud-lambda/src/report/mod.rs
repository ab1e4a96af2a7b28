//! Upload-status reporting: the agents' chunk reports folded into the upload's item in the
//! records table, and the webhooks sent when an upload becomes final. (Reading the status back,
//! `GET /v1/batches/{batch_id}`, is `crate::routes`'s `batch_status`.)
//!
//! | module | job |
//! |---|---|
//! | [`store`] | the item's status attributes: fold once per chunk, complete, read, claim |
//! | `fold` | one status-queue message: chunk reports checked and folded |
//! | `deliver` | one webhook job: claimed, POSTed, recorded, re-queued with backoff |
//! | [`destination`] | where a webhook may go: the callback URL's rules, public addresses only |
//! | [`webhook`] | the signature, one POST, the retry schedule |
//! | [`consumer`] | locally: a background task that long-polls the status queue |
//! | [`lambda`] | on Lambda (`SLUICE_LAMBDA_HANDLER=status`): the SQS event source |
//!
//! A message that cannot be read, or a report that no accepted upload takes
//! ([`StatusError::Unbound`]: a report is folded only into the item the API wrote when it
//! accepted the upload, with the same chunk count), is a [`StatusError`] for which
//! [`StatusError::is_malformed`] holds: it is logged and left on the queue (on Lambda, a batch item failure), so the status
//! queue's redrive policy moves it to its DLQ. A DynamoDB or SQS failure leaves the message
//! too, and it is retried after its visibility timeout.

pub mod consumer;
mod deliver;
pub mod destination;
mod fold;
pub mod lambda;
pub mod store;
pub mod webhook;

use sluice_protocol::report::StatusDecodeError;

use crate::io::sqs::{self, Queue};
use crate::records::Records;
use crate::IngestConfig;
pub use store::StoreError;

/// Why a status-queue message was not consumed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("malformed status message: {0}")]
    Malformed(#[from] StatusDecodeError),
    #[error("malformed chunk report (batch {batch_id:?}, chunk {chunk_index}): {why}")]
    BadReport {
        batch_id: String,
        chunk_index: u32,
        why: String,
    },
    /// A well-formed report that no accepted upload takes: its batch id was never accepted, or
    /// its chunk count or index is not the accepted upload's. Nothing was folded.
    #[error("chunk report not bound to an accepted upload (batch {batch_id:?}, chunk {chunk_index}): {why}")]
    Unbound {
        batch_id: String,
        chunk_index: u32,
        why: String,
    },
    #[error("malformed webhook job: {0}")]
    BadJob(String),
    #[error("status message of unknown kind {0:?} (sluice-kind attribute)")]
    UnknownKind(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("SQS SendMessage of a webhook job to {queue} failed: {detail}")]
    Queue { queue: String, detail: String },
    #[error("a webhook is due but no queue takes webhook jobs (set SLUICE_STATUS_QUEUE_URL or SLUICE_WEBHOOK_QUEUE_URL)")]
    NoWebhookQueue,
}

impl StatusError {
    /// The message itself is wrong: retrying cannot help, it belongs in the DLQ.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            StatusError::Malformed(_)
                | StatusError::BadReport { .. }
                | StatusError::Unbound { .. }
                | StatusError::BadJob(_)
                | StatusError::UnknownKind(_)
        )
    }
}

/// Folds reports and delivers webhooks; shared by the local task and the Lambda handler.
#[derive(Debug, Clone)]
pub struct StatusService {
    records: Records,
    /// The client the local consumer receives with.
    sqs: sqs::Client,
    /// Where webhook jobs go.
    webhook_queue: Option<Queue>,
    sender: webhook::Sender,
}

impl StatusService {
    pub fn new(cfg: &IngestConfig, records: Records, sqs: sqs::Client) -> anyhow::Result<Self> {
        let webhook_queue = cfg
            .webhook_queue_url
            .clone()
            .or_else(|| cfg.status_queue_url.clone())
            .map(|url| Queue::new(sqs.clone(), url));
        Ok(StatusService {
            records,
            sqs,
            webhook_queue,
            sender: webhook::Sender::with_master(
                cfg.webhook_master(),
                cfg.webhook_destinations(),
                cfg.webhook_give_up_seconds,
            )?,
        })
    }

    /// Consumes one message: a webhook job when its `sluice-kind` attribute says so, else a
    /// status message of chunk reports.
    pub async fn handle(&self, kind: Option<&str>, body: &str) -> Result<(), StatusError> {
        match kind {
            None => self.fold_message(body).await,
            Some(webhook::KIND_WEBHOOK) => self.deliver(body).await,
            Some(other) => Err(StatusError::UnknownKind(other.to_owned())),
        }
    }

    /// Logs a message that was not consumed, with what identifies it.
    pub(crate) fn log_failure(message_id: &str, e: &StatusError) {
        if e.is_malformed() {
            tracing::error!(message_id, error = %e, "Status message refused; it stays on the status queue, whose redrive policy moves it to the DLQ.");
        } else {
            tracing::warn!(message_id, error = %e, "Status message not consumed; retried after its visibility timeout.");
        }
    }
}
