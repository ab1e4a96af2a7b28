//! The SQS adapter, the only code that calls the AWS SDK. Here: the calls the pipeline makes
//! (receive, delete, change visibility for heartbeat and release, send to the dead-letter
//! queue); in [`admin`]: depth, ping, raw receive and send, purge; in [`message`]: the
//! conversion from the SDK's message type; in [`verify`]: queue ARNs and sizes, and whether the
//! dead-letter queue can take what the agent sends it.
//!
//! Keeps the guarantee "Thousands of held messages keep their visibility": the extensions in
//! parallel groups, below.
//!
//! Batch calls can half-fail inside a 200 answer: every batch call here reads `failed`, retries
//! the entries SQS says are not the sender's fault, and returns what still failed. Visibility
//! changes go out [`VISIBILITY_CONCURRENCY`] groups of 10 at a time, so thousands of held
//! messages are extended in a few round trips rather than one call after another; deletes
//! [`DELETE_CONCURRENCY`] groups at a time, so a large batch's commit is acknowledged in a few
//! round trips too.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
};
use aws_sdk_sqs::Client;
use backon::{ExponentialBuilder, Retryable};
use futures_util::stream::{self, StreamExt as _};
use sluice_aws::{BatchRetry, Retrying};
use sluice_protocol::envelope::ENCODING_ATTRIBUTE;

use crate::config::QueueConfig;

/// SQS takes at most 10 entries per batch call and per receive.
pub const SQS_BATCH_MAX: usize = sluice_aws::MAX_BATCH_ENTRIES;
/// Message attribute naming why a message was dead-lettered.
pub const ERROR_ATTRIBUTE: &str = "sluice-error";
/// Message attribute naming the message the dead letter came from.
pub const SOURCE_ATTRIBUTE: &str = "sluice-source-message-id";
/// SQS limits attribute values with the message; a reason longer than this is cut.
const MAX_REASON_CHARS: usize = 4096;
/// ChangeMessageVisibilityBatch calls in flight at once (each of at most 10 entries).
pub const VISIBILITY_CONCURRENCY: usize = 8;
/// DeleteMessageBatch calls in flight at once (each of at most 10 entries).
pub const DELETE_CONCURRENCY: usize = 8;
/// Batch calls and the dead-letter send: 4 tries, 200 ms doubling to 5 s between them.
const BATCH_RETRY: BatchRetry = BatchRetry {
    tries: 4,
    min_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
};

mod admin;
mod message;
mod report;
mod roots;
mod verify;

pub use admin::Depth;
pub use message::{Attributes, Received};
pub use roots::NoRootCertificates;

/// Refuses a host without root certificates (the SDK's TLS setup would panic on it); for
/// every AWS client the agent builds.
pub fn check_roots() -> Result<(), NoRootCertificates> {
    roots::check()
}
pub use verify::{DeadLetterProblem, QueueFacts};

/// An SQS call failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{op} failed: {detail}")]
pub struct SqsError {
    pub op: &'static str,
    pub detail: String,
}

/// A message as received, not yet decoded.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub handle: Handle,
    pub body: String,
    pub encoding: Option<String>,
    pub receive_count: u32,
}

/// What identifies one delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Handle {
    pub message_id: String,
    pub receipt_handle: String,
}

/// Builds an SQS client from the standard AWS chain, with the region and endpoint overrides
/// from `[queue]`. A host without root certificates is refused first ([`roots::check`]): the
/// SDK's TLS setup would panic on it.
pub async fn client(cfg: &QueueConfig) -> Result<Client, NoRootCertificates> {
    roots::check()?;
    Ok(sluice_aws::sqs_client(cfg.region.as_deref(), cfg.endpoint.as_deref()).await)
}

/// One ReceiveMessage call: up to 10 messages with all message attributes, their receive count
/// and sent time; `op` names the call in the error. Shared by the pollers and the `dlq` tools.
async fn receive_messages(
    client: &Client,
    url: &str,
    wait_seconds: i32,
    visibility_timeout_seconds: i32,
    op: &'static str,
) -> Result<Vec<Received>, SqsError> {
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(SQS_BATCH_MAX as i32)
        .wait_time_seconds(wait_seconds)
        .visibility_timeout(visibility_timeout_seconds)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(|e| SqsError {
            op,
            detail: DisplayErrorContext(e).to_string(),
        })?;
    Ok(out
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(Received::from_sdk)
        .collect())
}

/// One queue (and its dead-letter queue) as the agent uses it.
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    url: String,
    dead_letter_url: Option<String>,
}

impl Queue {
    pub fn new(client: Client, url: String, dead_letter_url: Option<String>) -> Self {
        Self {
            client,
            url,
            dead_letter_url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dead_letter_url.as_deref()
    }

    pub fn has_dead_letter_queue(&self) -> bool {
        self.dead_letter_url.is_some()
    }

    /// Long-polls for up to 10 messages.
    pub async fn receive(
        &self,
        wait_seconds: u8,
        visibility_timeout_seconds: u32,
    ) -> Result<Vec<RawMessage>, SqsError> {
        let received = receive_messages(
            &self.client,
            &self.url,
            i32::from(wait_seconds),
            visibility_timeout_seconds as i32,
            "ReceiveMessage",
        )
        .await?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        let oldest_sent_ms = received.iter().filter_map(|m| m.sent_timestamp_ms).min();
        // What the agent can tell about the backlog's age: SQS has no such queue attribute.
        let age_ms = oldest_sent_ms.map_or(0, |sent| now_ms.saturating_sub(sent));
        metrics::gauge!(crate::telemetry::names::OLDEST_RECEIVED_AGE_SECONDS)
            .set(age_ms as f64 / 1000.0);
        Ok(received.into_iter().map(RawMessage::from).collect())
    }

    /// Deletes the messages; returns those that could not be deleted, with the reason.
    pub async fn delete(&self, handles: &[Handle]) -> Vec<(Handle, String)> {
        self.batch_with_retry(
            "DeleteMessageBatch",
            DELETE_CONCURRENCY,
            handles,
            |entries| async move {
                let req = entries
                    .iter()
                    .filter_map(|(id, h)| delete_entry(id, h))
                    .collect();
                sluice_aws::batch_call!(self.client, &self.url, delete_message_batch, req)
            },
        )
        .await
    }

    /// Sets the visibility timeout of the messages: extends it (heartbeat) or, with 0, hands
    /// them back to the queue at once (release).
    pub async fn change_visibility(
        &self,
        handles: &[Handle],
        seconds: u32,
    ) -> Vec<(Handle, String)> {
        self.batch_with_retry(
            "ChangeMessageVisibilityBatch",
            VISIBILITY_CONCURRENCY,
            handles,
            |entries| async move {
                let req = entries
                    .iter()
                    .filter_map(|(id, h)| visibility_entry(id, h, seconds))
                    .collect();
                sluice_aws::batch_call!(
                    self.client,
                    &self.url,
                    change_message_visibility_batch,
                    req
                )
            },
        )
        .await
    }

    /// Puts `body` on the dead-letter queue with the reason. Errors when no dead-letter queue is
    /// configured or SQS refuses: the caller must then keep the original message.
    pub async fn dead_letter(
        &self,
        source: &Handle,
        body: &str,
        encoding: Option<&str>,
        reason: &str,
    ) -> Result<(), SqsError> {
        let Some(dlq) = &self.dead_letter_url else {
            return Err(SqsError {
                op: "SendMessage (dead letter)",
                detail: "no queue.dead_letter_url configured".to_owned(),
            });
        };
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
        };
        let send = || async {
            let mut req = self
                .client
                .send_message()
                .queue_url(dlq)
                .message_body(body)
                .message_attributes(ERROR_ATTRIBUTE, attr(&reason).map_err(|e| e.to_string())?)
                .message_attributes(
                    SOURCE_ATTRIBUTE,
                    attr(&source.message_id).map_err(|e| e.to_string())?,
                );
            if let Some(enc) = encoding {
                req = req
                    .message_attributes(ENCODING_ATTRIBUTE, attr(enc).map_err(|e| e.to_string())?);
            }
            req.send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(e).to_string())
        };
        send.retry(backoff())
            .notify(|err, after| {
                tracing::warn!(error = %err, retry_in = ?after, "Dead-letter send failed; retrying.");
            })
            .await
            .map_err(|detail| SqsError {
                op: "SendMessage (dead letter)",
                detail,
            })
    }

    /// Runs `call` on `handles` in groups of at most 10 (SQS's batch limit), at most
    /// `concurrency` groups at once, retrying the entries SQS reports in `Failed` through no
    /// fault of ours. Returns what still failed.
    async fn batch_with_retry<F, Fut>(
        &self,
        op: &'static str,
        concurrency: usize,
        handles: &[Handle],
        call: F,
    ) -> Vec<(Handle, String)>
    where
        F: Fn(Vec<(String, Handle)>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<BatchResultErrorEntry>, String>>,
    {
        let call = &call;
        // Owned groups: a stream over borrowed slices trips the compiler's `Send` inference
        // for the spawned tasks that call this.
        let groups: Vec<Vec<Handle>> = handles
            .chunks(SQS_BATCH_MAX)
            .map(<[Handle]>::to_vec)
            .collect();
        stream::iter(groups)
            .map(|group| async move { BATCH_RETRY.run(&group, call, |r| log_retry(op, r)).await })
            .buffer_unordered(concurrency.max(1))
            .concat()
            .await
    }
}

/// Logs a batch call about to be tried again.
fn log_retry(op: &'static str, retrying: Retrying<'_, Handle>) {
    if let Retrying::Call { error, attempt, .. } = retrying {
        tracing::warn!(op, error = %error, attempt, "SQS batch call failed; retrying.");
    }
}

/// Exponential backoff with jitter for SQS calls: 200 ms doubling to 5 s, a handful of tries.
fn backoff() -> ExponentialBuilder {
    BATCH_RETRY.backoff()
}

/// One DeleteMessageBatch entry (`None` only if the SDK's builder refuses it).
fn delete_entry(id: &str, h: &Handle) -> Option<DeleteMessageBatchRequestEntry> {
    DeleteMessageBatchRequestEntry::builder()
        .id(id)
        .receipt_handle(&h.receipt_handle)
        .build()
        .ok()
}

/// One ChangeMessageVisibilityBatch entry (`None` only if the SDK's builder refuses it).
fn visibility_entry(
    id: &str,
    h: &Handle,
    seconds: u32,
) -> Option<ChangeMessageVisibilityBatchRequestEntry> {
    ChangeMessageVisibilityBatchRequestEntry::builder()
        .id(id)
        .receipt_handle(&h.receipt_handle)
        .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
        .build()
        .ok()
}
