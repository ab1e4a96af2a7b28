//! Locally: a background task of `sluice-ingest` that long-polls the status queue, consumes
//! each message through [`StatusService::handle`] and deletes what was consumed
//! ([`Queue::consume`]).

use std::sync::Arc;

use super::webhook::KIND_ATTRIBUTE;
use super::StatusService;
use crate::io::sqs::Queue;

/// Consumes `queue_url` until the task is dropped.
pub async fn run(service: Arc<StatusService>, queue_url: String) {
    tracing::info!(queue = %queue_url, "Folding the status queue.");
    let queue = Queue::new(service.sqs.clone(), queue_url);
    queue
        .consume(KIND_ATTRIBUTE, "status queue", |m| {
            let service = Arc::clone(&service);
            async move {
                match service.handle(m.kind.as_deref(), &m.body).await {
                    Ok(()) => true,
                    Err(e) => {
                        StatusService::log_failure(&m.message_id, &e);
                        false
                    }
                }
            }
        })
        .await;
}
