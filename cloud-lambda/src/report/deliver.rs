//! One webhook job: the delivery claimed in the upload's item, one signed POST, its outcome
//! recorded under that claim, and on failure the job queued again with a growing delay until
//! the give-up time. Delivery is at least once: a POST whose outcome could not be recorded is
//! sent again once its claim lapses, so receivers deduplicate by `batch_id`.
//!
//! Keeps the guarantee "Every webhook job ends".

use std::time::Duration;

use super::store::{batch_status, newly_final, number, text, Claim, Recorded};
use super::webhook::{retry_delay, Job, KIND_ATTRIBUTE, KIND_WEBHOOK};
use super::{StatusError, StatusService};
use crate::io::dynamodb::Item;
use crate::io::sqs::SendError;
use crate::records::unix_now;

/// How long a claim holds off other consumers: beyond one POST's time limit.
const CLAIM_SECONDS: u64 = 60;

impl StatusService {
    /// Queues the webhook job of `batch_id`, delivered after `delay` (at most 15 minutes).
    pub(super) async fn queue_job(
        &self,
        batch_id: &str,
        delay: Duration,
    ) -> Result<(), StatusError> {
        let queue = self
            .webhook_queue
            .as_ref()
            .ok_or(StatusError::NoWebhookQueue)?;
        let body = serde_json::to_string(&Job {
            batch_id: batch_id.to_owned(),
        })
        .unwrap_or_default();
        queue
            .send(body, (KIND_ATTRIBUTE, KIND_WEBHOOK), delay)
            .await
            .map_err(|e| match e {
                SendError::Build(why) => StatusError::BadJob(why),
                SendError::Call(detail) => StatusError::Queue {
                    queue: queue.url().to_owned(),
                    detail,
                },
            })
    }

    /// Claims the delivery of `batch_id`: the item as claimed and the claim's token, or `None`
    /// when there is nothing to send now (delivered, given up, no callback, or another
    /// consumer holds it: then the job is queued again for when that claim lapses).
    ///
    /// A job for an upload whose chunks are all folded but that is not marked complete (the
    /// fold that made it final stopped before `complete`, or the job came before it got
    /// there) completes it as that fold would have, then claims once more: re-queueing it
    /// instead would go on for as long as the item lives, with give-up never checked.
    async fn claim(&self, batch_id: &str) -> Result<Option<(Item, String)>, StatusError> {
        let mut completed = false;
        loop {
            match self.records.claim_webhook(batch_id, CLAIM_SECONDS).await? {
                Claim::Won { item, token } => return Ok(Some((*item, token))),
                Claim::HeldUntil(until) => {
                    let wait = until.saturating_sub(unix_now()) + 1;
                    self.queue_job(batch_id, Duration::from_secs(wait)).await?;
                    return Ok(None);
                }
                Claim::Done if completed => return Ok(None),
                Claim::Done => {
                    let unfinished = self
                        .records
                        .get(batch_id)
                        .await?
                        .is_some_and(|i| i.contains_key("callback") && newly_final(&i));
                    if !unfinished {
                        return Ok(None);
                    }
                    if self.records.complete(batch_id, true).await? {
                        tracing::info!(batch_id, webhook = true, "Upload complete (by its webhook job: the fold that made it final did not get to complete it).");
                    }
                    completed = true;
                }
            }
        }
    }

    /// Delivers the webhook a job names, at most once at a time.
    pub(super) async fn deliver(&self, body: &str) -> Result<(), StatusError> {
        let job: Job =
            serde_json::from_str(body).map_err(|e| StatusError::BadJob(e.to_string()))?;
        if uuid::Uuid::parse_str(&job.batch_id).is_err() {
            return Err(StatusError::BadJob(format!(
                "batch_id {:?} is not a UUID",
                job.batch_id
            )));
        }
        let Some((item, token)) = self.claim(&job.batch_id).await? else {
            return Ok(());
        };
        let url = text(&item, "callback").unwrap_or_default().to_owned();
        let mut status = batch_status(&job.batch_id, &item);
        status.webhook = None;
        let payload = serde_json::to_vec(&status).unwrap_or_default();
        let attempts = number(&item, "webhook_attempts").unwrap_or(0) + 1;
        match self
            .sender
            .post_for(&url, text(&item, "owner"), payload)
            .await
        {
            Ok(()) => {
                let recorded = self
                    .records
                    .record_webhook(&job.batch_id, &token, attempts, Ok(()), false)
                    .await?;
                if recorded == Recorded::ClaimLost {
                    tracing::warn!(batch_id = %job.batch_id, attempts, "Webhook delivered after its claim was taken over; the newer claim's outcome stands (receivers deduplicate by batch_id).");
                    return Ok(());
                }
                tracing::info!(batch_id = %job.batch_id, attempts, "Webhook delivered.");
                Ok(())
            }
            Err(why) => {
                let final_since = number(&item, "completed_at_ms").unwrap_or(0) / 1000;
                let give_up = unix_now().saturating_sub(final_since) >= self.sender.give_up_seconds;
                let recorded = self
                    .records
                    .record_webhook(&job.batch_id, &token, attempts, Err(&why), give_up)
                    .await?;
                if recorded == Recorded::ClaimLost {
                    // Another consumer holds the delivery now and re-queues it if need be.
                    tracing::warn!(batch_id = %job.batch_id, attempts, error = %why, "Webhook not delivered, and its claim was taken over; the newer claim's outcome stands.");
                    return Ok(());
                }
                if give_up {
                    tracing::error!(batch_id = %job.batch_id, attempts, error = %why, "Webhook given up: not delivered within SLUICE_WEBHOOK_GIVE_UP_SECONDS.");
                    return Ok(());
                }
                let delay = retry_delay(attempts);
                tracing::warn!(batch_id = %job.batch_id, attempts, error = %why, retry_in_s = delay.as_secs(), "Webhook not delivered; retrying.");
                self.queue_job(&job.batch_id, delay).await
            }
        }
    }
}
