//! Locally: a background task of `sluice-ingest` that long-polls the photo events queue
//! (`SLUICE_PHOTO_EVENTS_QUEUE_URL`), checks each photo through
//! [`PhotoService::handle_message`] and deletes what was consumed ([`Queue::consume`]);
//! beside it, the sweep of photos past their deadline every `SLUICE_PHOTO_SWEEP_SECONDS`.

use std::sync::Arc;
use std::time::Duration;

use super::PhotoService;
use crate::io::sqs::Queue;

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
    let check = queue.consume("sluice-kind", "photo events queue", |m| {
        let service = Arc::clone(&service);
        async move {
            match service.handle_message(&m.body).await {
                Ok(()) => true,
                Err(e) => {
                    super::log_failure(&m.message_id, &e);
                    false
                }
            }
        }
    });
    tokio::pin!(check);
    tokio::select! {
        () = &mut check => {}
        stopped = sweep => {
            // Only a panic ends it: the photos past their deadline are no longer refused.
            tracing::error!(error = ?stopped.err(), "The photo sweep stopped; photos still get checked.");
            check.await;
        }
    }
}
