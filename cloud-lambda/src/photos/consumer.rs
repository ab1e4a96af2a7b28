//! Locally: a background task of `sluice-ingest` that long-polls the photo events queue
//! (`SLUICE_PHOTO_EVENTS_QUEUE_URL`), checks each photo through
//! [`PhotoService::handle_message`] and deletes what was consumed; beside it, the sweep of
//! photos past their deadline every `SLUICE_PHOTO_SWEEP_SECONDS`.

use std::sync::Arc;
use std::time::Duration;

use super::PhotoService;
use crate::io::sqs::Queue;

/// Long-poll wait per receive.
const WAIT_SECONDS: i32 = 20;
/// Longest pause between receives after the queue failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Consumes `queue_url` and sweeps every `sweep_every` until the task is dropped.
pub async fn run(service: Arc<PhotoService>, queue_url: String, sweep_every: Duration) {
    tracing::info!(queue = %queue_url, "Checking uploaded photos.");
    let sweeper = Arc::clone(&service);
    let sweep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.sweep().await {
                tracing::warn!(error = %e, "Photo sweep failed; tried again at the next tick.");
            }
        }
    });
    let queue = Queue::new(service.sqs.clone(), queue_url);
    let mut backoff = Duration::from_secs(1);
    loop {
        let messages = match queue.receive(WAIT_SECONDS, "sluice-kind").await {
            Ok(messages) => {
                backoff = Duration::from_secs(1);
                messages
            }
            Err(e) => {
                tracing::warn!(queue = %queue.url(), error = %e, retry_in_s = backoff.as_secs(), "Cannot receive from the photo events queue.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let work = messages.into_iter().map(|m| {
            let service = Arc::clone(&service);
            async move {
                match service.handle_message(&m.body).await {
                    Ok(()) => Some((m.message_id, m.receipt_handle)),
                    Err(e) => {
                        super::log_failure(&m.message_id, &e);
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
        if consumed.is_empty() {
            continue;
        }
        // A message left on the queue is only checked again, which is harmless.
        let entries = consumed
            .iter()
            .enumerate()
            .map(|(i, (_, h))| (i.to_string(), h.as_deref()));
        let entries: Vec<(String, Option<&str>)> = entries.collect();
        if let Err(e) = queue
            .delete_batch(entries.iter().map(|(id, h)| (id.as_str(), *h)))
            .await
        {
            tracing::warn!(error = %e, "Cannot delete checked photo events; they are checked again.");
        }
        if sweep.is_finished() {
            tracing::error!("The photo sweep stopped.");
        }
    }
}
