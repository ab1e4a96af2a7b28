//! Locally: a background task of `sluice-ingest` that long-polls the status queue, consumes
//! each message through [`StatusService::handle`] and deletes what was consumed.

use std::sync::Arc;
use std::time::Duration;

use sluice_aws::{BatchRetry, Retrying};

use super::webhook::KIND_ATTRIBUTE;
use super::StatusService;
use crate::io::sqs::Queue;

/// Long-poll wait per receive.
const WAIT_SECONDS: i32 = 20;
/// Longest pause between receives after the queue failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Deletes are tried three times, quickly: a message left on the queue is only folded again.
const DELETE_RETRY: BatchRetry = BatchRetry {
    tries: 3,
    min_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
};

/// A consumed message: its id (for the log) and its receipt handle.
type Consumed = (String, Option<String>);

/// Consumes `queue_url` until the task is dropped.
pub async fn run(service: Arc<StatusService>, queue_url: String) {
    tracing::info!(queue = %queue_url, "Folding the status queue.");
    let queue = Queue::new(service.sqs.clone(), queue_url);
    let mut backoff = Duration::from_secs(1);
    loop {
        let messages = match queue.receive(WAIT_SECONDS, KIND_ATTRIBUTE).await {
            Ok(messages) => {
                backoff = Duration::from_secs(1);
                messages
            }
            Err(e) => {
                tracing::warn!(queue = %queue.url(), error = %e, retry_in_s = backoff.as_secs(), "Cannot receive from the status queue.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let work = messages.into_iter().map(|m| {
            let service = Arc::clone(&service);
            async move {
                match service.handle(m.kind.as_deref(), &m.body).await {
                    Ok(()) => Some((m.message_id, m.receipt_handle)),
                    Err(e) => {
                        StatusService::log_failure(&m.message_id, &e);
                        None
                    }
                }
            }
        });
        let consumed: Vec<Consumed> = futures_util::future::join_all(work)
            .await
            .into_iter()
            .flatten()
            .collect();
        delete_consumed(&queue, &consumed).await;
    }
}

/// Deletes what was consumed in DeleteMessageBatch calls (a receive holds at most 10), the
/// entries SQS refuses through no fault of the sender tried again; a delete that still fails
/// only means the message is folded again, which is harmless.
async fn delete_consumed(queue: &Queue, consumed: &[Consumed]) {
    let delete = |pending: Vec<(String, Consumed)>| async move {
        let entries = pending
            .iter()
            .map(|(id, (_, handle))| (id.as_str(), handle.as_deref()));
        queue.delete_batch(entries).await
    };
    let failed = DELETE_RETRY
        .run(consumed, delete, |retrying| match retrying {
            Retrying::Entry { entry, reason } => {
                tracing::debug!(message_id = %entry.0, error = %reason, "SQS refused to delete a folded status message; retrying.");
            }
            Retrying::Call { error, pending, .. } => {
                tracing::debug!(error = %error, messages = pending, "DeleteMessageBatch of folded status messages failed; retrying.");
            }
        })
        .await;
    for ((message_id, _), error) in failed {
        tracing::warn!(message_id = %message_id, error = %error, "Cannot delete a folded status message; folding it again is harmless.");
    }
}
