//! Locally: a background task of `sluice-ingest` that long-polls the status queue, consumes
//! each message through [`StatusService::handle`] and deletes what was consumed.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use super::webhook::KIND_ATTRIBUTE;
use super::StatusService;

/// Long-poll wait per receive.
const WAIT_SECONDS: i32 = 20;
/// Longest pause between receives after the queue failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Consumes `queue_url` until the task is dropped.
pub async fn run(service: Arc<StatusService>, queue_url: String) {
    tracing::info!(queue = %queue_url, "Folding the status queue.");
    let mut backoff = Duration::from_secs(1);
    loop {
        let received = service
            .sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECONDS)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        let messages = match received {
            Ok(out) => {
                backoff = Duration::from_secs(1);
                out.messages.unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(queue = %queue_url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), retry_in_s = backoff.as_secs(), "Cannot receive from the status queue.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let work = messages.into_iter().map(|m| {
            let service = Arc::clone(&service);
            async move {
                let id = m.message_id.clone().unwrap_or_default();
                let kind = m
                    .message_attributes
                    .as_ref()
                    .and_then(|a| a.get(KIND_ATTRIBUTE))
                    .and_then(|v| v.string_value.clone());
                let body = m.body.as_deref().unwrap_or_default();
                match service.handle(kind.as_deref(), body).await {
                    Ok(()) => Some((id, m.receipt_handle)),
                    Err(e) => {
                        StatusService::log_failure(&id, &e);
                        None
                    }
                }
            }
        });
        let consumed: Vec<(String, Option<String>)> = futures_util::future::join_all(work)
            .await
            .into_iter()
            .flatten()
            .collect();
        delete_consumed(&service, &queue_url, consumed).await;
    }
}

/// Deletes what was consumed in one DeleteMessageBatch (a receive holds at most 10); a delete
/// that fails only means the message is folded again, which is harmless.
async fn delete_consumed(
    service: &StatusService,
    queue_url: &str,
    consumed: Vec<(String, Option<String>)>,
) {
    if consumed.is_empty() {
        return;
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = consumed
        .iter()
        .enumerate()
        .filter_map(|(i, (_, handle))| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(handle.clone())
                .build()
                .ok()
        })
        .collect();
    let sent = service
        .sqs
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await;
    let failed: Vec<String> = match sent {
        Ok(out) => out
            .failed
            .iter()
            .filter_map(|f| f.id.parse::<usize>().ok())
            .filter_map(|i| consumed.get(i).map(|(id, _)| id.clone()))
            .collect(),
        Err(e) => {
            tracing::warn!(messages = consumed.len(), error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "Cannot delete folded status messages; folding them again is harmless.");
            return;
        }
    };
    for id in failed {
        tracing::warn!(message_id = %id, "Cannot delete a folded status message; folding it again is harmless.");
    }
}
