//! The SQS adapter: the only module of the ingest that calls the SQS SDK. Out go an upload's
//! encoded chunks (SendMessageBatch) and webhook jobs (SendMessage); in comes the status queue
//! (ReceiveMessage), and what was consumed is deleted (DeleteMessageBatch).
//!
//! What an answer means (retry, log, count) stays with the caller: a batch call returns what
//! [`sluice_aws::BatchRetry::run`] takes.

use std::time::Duration;

use aws_sdk_sqs::error::{BuildError, DisplayErrorContext};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use sluice_protocol::envelope::{EncodedMessage, ENCODING_ATTRIBUTE};

pub use aws_sdk_sqs::Client;

/// What one batch call answers: SQS's `Failed` list, or the whole call's error.
pub type BatchAnswer = Result<Vec<BatchResultErrorEntry>, String>;

/// A Lambda SQS event source's partial batch response naming the messages `failed` (their ids):
/// those stay on the queue, for another receive or, past `maxReceiveCount`, its DLQ.
pub fn batch_response(
    failed: impl IntoIterator<Item = String>,
) -> lambda_http::aws_lambda_events::sqs::SqsBatchResponse {
    let mut response = lambda_http::aws_lambda_events::sqs::SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = lambda_http::aws_lambda_events::sqs::BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

/// SQS's longest DelaySeconds (15 minutes).
const MAX_DELAY_SECONDS: u64 = 900;

/// One queue: the client and the queue's URL.
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    url: String,
}

/// A message received, as the status consumer reads it.
#[derive(Debug)]
pub struct Received {
    pub message_id: String,
    /// The string value of the message attribute asked for, if the message has it.
    pub kind: Option<String>,
    pub body: String,
    pub receipt_handle: Option<String>,
}

/// Why a SendMessage did not put its message on the queue.
#[derive(Debug)]
pub enum SendError {
    /// The message could not be built.
    Build(String),
    /// SQS did not take it (the SDK's full text, for the log only).
    Call(String),
}

impl Queue {
    pub fn new(client: Client, url: String) -> Self {
        Queue { client, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One SendMessageBatch of encoded chunks, each with its id within the call; a chunk whose
    /// entry cannot be built is left out of the call.
    pub async fn send_chunks<'a>(
        &self,
        chunks: impl IntoIterator<Item = (&'a str, &'a EncodedMessage)>,
    ) -> BatchAnswer {
        let entries = chunks
            .into_iter()
            .filter_map(|(id, m)| chunk_entry(id, m))
            .collect();
        sluice_aws::batch_call!(self.client, &self.url, send_message_batch, entries)
    }

    /// One SendMessage of `body` with the string message attribute `(name, value)`, delivered
    /// after `delay` (at most 15 minutes).
    pub async fn send(
        &self,
        body: String,
        (name, value): (&str, &str),
        delay: Duration,
    ) -> Result<(), SendError> {
        let value = string_attribute(value).map_err(|e| SendError::Build(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay.as_secs().min(MAX_DELAY_SECONDS) as i32)
            .message_attributes(name, value)
            .send()
            .await
            .map_err(|e| SendError::Call(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }

    /// One long-poll ReceiveMessage of up to 10 messages, waiting up to `wait_seconds`; each
    /// message's `kind` is its message attribute `kind_attribute`. The error is the SDK's full
    /// text.
    pub async fn receive(
        &self,
        wait_seconds: i32,
        kind_attribute: &str,
    ) -> Result<Vec<Received>, String> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(sluice_aws::MAX_BATCH_ENTRIES as i32)
            .wait_time_seconds(wait_seconds)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Received {
                message_id: m.message_id.unwrap_or_default(),
                kind: m
                    .message_attributes
                    .as_ref()
                    .and_then(|a| a.get(kind_attribute))
                    .and_then(|v| v.string_value.clone()),
                body: m.body.unwrap_or_default(),
                receipt_handle: m.receipt_handle,
            })
            .collect())
    }

    /// One DeleteMessageBatch of `(id within the call, receipt handle)` pairs; an entry without
    /// a handle is left out of the call.
    pub async fn delete_batch<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> BatchAnswer {
        let entries = entries
            .into_iter()
            .filter_map(|(id, handle)| delete_entry(id, handle))
            .collect();
        sluice_aws::batch_call!(self.client, &self.url, delete_message_batch, entries)
    }
}

/// A message attribute of type `String`.
fn string_attribute(value: &str) -> Result<MessageAttributeValue, BuildError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
}

/// A chunk's SendMessageBatch entry: its body, and its encoding as a message attribute.
fn chunk_entry(id: &str, m: &EncodedMessage) -> Option<SendMessageBatchRequestEntry> {
    let mut b = SendMessageBatchRequestEntry::builder()
        .id(id)
        .message_body(&m.body);
    if let Some(enc) = m.encoding {
        b = b.message_attributes(ENCODING_ATTRIBUTE, string_attribute(enc).ok()?);
    }
    b.build().ok()
}

/// A message's DeleteMessageBatch entry; none without a receipt handle.
fn delete_entry(id: &str, handle: Option<&str>) -> Option<DeleteMessageBatchRequestEntry> {
    DeleteMessageBatchRequestEntry::builder()
        .id(id)
        .set_receipt_handle(handle.map(str::to_owned))
        .build()
        .ok()
}

/// Long-poll wait per receive of [`Queue::consume`].
const CONSUME_WAIT_SECONDS: i32 = 20;
/// Longest pause between receives after the queue failed.
const CONSUME_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Deletes are tried three times, quickly: a message left on the queue is only handled again.
const DELETE_RETRY: sluice_aws::BatchRetry = sluice_aws::BatchRetry {
    tries: 3,
    min_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
};

impl Queue {
    /// Locally, what the Lambda SQS event source does on AWS: long-polls this queue until the
    /// task is dropped, hands each message to `handle` (at most 10 at once) and deletes those it
    /// consumed (`true`). A failed receive is retried with backoff (1 s doubling to 30 s) and
    /// logged; a message not consumed, or whose delete failed, comes back after its visibility
    /// timeout, which handlers take as harmless. `what` names the queue in the log.
    pub async fn consume<F, Fut>(&self, kind_attribute: &str, what: &str, handle: F)
    where
        F: Fn(Received) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut backoff = Duration::from_secs(1);
        loop {
            let messages = match self.receive(CONSUME_WAIT_SECONDS, kind_attribute).await {
                Ok(messages) => {
                    backoff = Duration::from_secs(1);
                    messages
                }
                Err(e) => {
                    tracing::warn!(queue = %self.url, error = %e, retry_in_s = backoff.as_secs(), "Cannot receive from the {what}.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(CONSUME_MAX_BACKOFF);
                    continue;
                }
            };
            let work = messages.into_iter().map(|m| {
                let (id, handle_of) = (m.message_id.clone(), m.receipt_handle.clone());
                let done = handle(m);
                async move { done.await.then_some((id, handle_of)) }
            });
            let consumed: Vec<(String, Option<String>)> = futures_util::future::join_all(work)
                .await
                .into_iter()
                .flatten()
                .collect();
            if !consumed.is_empty() {
                self.delete_consumed(&consumed, what).await;
            }
        }
    }

    /// Deletes what was consumed in DeleteMessageBatch calls (a receive holds at most 10), the
    /// entries SQS refuses through no fault of the sender tried again.
    async fn delete_consumed(&self, consumed: &[(String, Option<String>)], what: &str) {
        use sluice_aws::Retrying;
        let delete = |pending: Vec<(String, (String, Option<String>))>| async move {
            let entries = pending
                .iter()
                .map(|(id, (_, handle))| (id.as_str(), handle.as_deref()));
            self.delete_batch(entries).await
        };
        let failed = DELETE_RETRY
            .run(consumed, delete, |retrying| match retrying {
                Retrying::Entry { entry, reason } => {
                    tracing::debug!(message_id = %entry.0, error = %reason, "SQS refused to delete a message of the {what}; retrying.");
                }
                Retrying::Call { error, pending, .. } => {
                    tracing::debug!(error = %error, messages = pending, "DeleteMessageBatch on the {what} failed; retrying.");
                }
            })
            .await;
        for ((message_id, _), error) in failed {
            tracing::warn!(message_id = %message_id, error = %error, "Cannot delete a consumed message of the {what}; handling it again is harmless.");
        }
    }
}
