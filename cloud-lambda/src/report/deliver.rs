//! One webhook job: the delivery claimed in the upload's item, one signed POST, its outcome
//! recorded, and on failure the job queued again with a growing delay until the give-up time.

use std::time::Duration;

use super::store::{batch_status, newly_final, number, text, Claim};
use super::webhook::{retry_delay, Job, KIND_ATTRIBUTE, KIND_WEBHOOK};
use super::{StatusError, StatusService};
use crate::io::sqs::SendError;
use crate::records::unix_now;

/// How long a claim holds off other consumers: beyond one POST's time limit.
const CLAIM_SECONDS: u64 = 60;
/// How soon a job that came before its upload was marked complete is tried again.
const EARLY_JOB_DELAY: Duration = Duration::from_secs(5);

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
        let item = match self
            .records
            .claim_webhook(&job.batch_id, CLAIM_SECONDS)
            .await?
        {
            Claim::Won(item) => *item,
            Claim::HeldUntil(until) => {
                let wait = until.saturating_sub(unix_now()) + 1;
                return self
                    .queue_job(&job.batch_id, Duration::from_secs(wait))
                    .await;
            }
            Claim::Done => {
                // Come before the fold marked the upload complete: try again shortly.
                let early = self
                    .records
                    .get(&job.batch_id)
                    .await?
                    .is_some_and(|i| i.contains_key("callback") && newly_final(&i));
                if early {
                    return self.queue_job(&job.batch_id, EARLY_JOB_DELAY).await;
                }
                return Ok(());
            }
        };
        let url = text(&item, "callback").unwrap_or_default().to_owned();
        let mut status = batch_status(&job.batch_id, &item);
        status.webhook = None;
        let payload = serde_json::to_vec(&status).unwrap_or_default();
        let attempts = number(&item, "webhook_attempts").unwrap_or(0) + 1;
        match self.sender.post(&url, payload).await {
            Ok(()) => {
                self.records
                    .record_webhook(&job.batch_id, attempts, Ok(()), false)
                    .await?;
                tracing::info!(batch_id = %job.batch_id, attempts, "Webhook delivered.");
                Ok(())
            }
            Err(why) => {
                let final_since = number(&item, "completed_at_ms").unwrap_or(0) / 1000;
                let give_up = unix_now().saturating_sub(final_since) >= self.sender.give_up_seconds;
                self.records
                    .record_webhook(&job.batch_id, attempts, Err(&why), give_up)
                    .await?;
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
