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
    let sweep = async move {
        let mut tick = tokio::time::interval(sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Each sweep in a task of its own: a panic (a bug) is reported and the next tick
            // sweeps again, so photos past their deadline keep being refused.
            let once = Arc::clone(&sweeper);
            match tokio::spawn(async move { once.sweep().await }).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Photo sweep failed; tried again at the next tick.");
                }
                Err(e) => {
                    tracing::error!(error = %e, "Photo sweep panicked; tried again at the next tick.");
                }
            }
        }
    };
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
    tokio::select! {
        () = check => {}
        () = sweep => {}
    }
}
