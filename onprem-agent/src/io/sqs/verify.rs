//! Is the dead-letter queue usable? What SQS says about a queue (its ARN and largest message,
//! one GetQueueAttributes call) and the checks `check-config --online`, start-up and
//! `dlq purge` make with it.
//!
//! Queues are compared by ARN, never by URL: SQS answers to several spellings of one queue
//! (`localhost` or `127.0.0.1`, the account-less path), so two different URL strings can name
//! the same queue.
//!
//! Size rule: the dead-letter queue's `MaximumMessageSize` must be at least the main queue's.
//! Every dead letter carries a body that came off the main queue (a whole message, or one row of
//! it re-encoded, which is smaller), so the main queue's limit bounds what the agent sends. The
//! agent's own attributes ride on top (`sluice-error` is cut at 4,096 characters): a body within
//! a few KiB of the limit fits only when the dead-letter queue's limit is that much larger.

use aws_sdk_sqs::types::QueueAttributeName;

use super::admin::failed;
use super::{Queue, SqsError};

/// What SQS says about one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFacts {
    /// The queue's ARN (`arn:aws:sqs:REGION:ACCOUNT:NAME`): its identity.
    pub arn: String,
    /// Largest message it accepts, in bytes.
    pub max_message_bytes: u64,
}

/// Why the dead-letter queue cannot take what the agent would send it.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterProblem {
    /// Both URLs name the same queue: dead letters would come straight back.
    #[error(
        "queue.dead_letter_url {dlq_url} is the main queue itself ({arn}); dead letters would \
         be received again. Point it at the queue's dead-letter queue"
    )]
    SameQueue { dlq_url: String, arn: String },
    /// The dead-letter queue takes smaller messages than the main queue holds.
    #[error(
        "the dead-letter queue {dlq_url} accepts messages up to {dlq_bytes} bytes, below the \
         main queue's {main_bytes}: a large message could not be dead-lettered. Raise its \
         MaximumMessageSize to at least {main_bytes}"
    )]
    TooSmall {
        dlq_url: String,
        dlq_bytes: u64,
        main_bytes: u64,
    },
    /// A queue did not answer (missing, no permission, SQS unreachable).
    #[error("cannot read the {which} {url}: {error}")]
    Unreadable {
        which: &'static str,
        url: String,
        error: SqsError,
    },
}

impl DeadLetterProblem {
    /// A definite misconfiguration (the configuration must change), as opposed to a queue that
    /// could not be read now and may come back.
    pub fn is_definite(&self) -> bool {
        !matches!(self, DeadLetterProblem::Unreadable { .. })
    }
}

impl Queue {
    /// The queue's ARN and `MaximumMessageSize` (one GetQueueAttributes call).
    pub async fn facts(&self) -> Result<QueueFacts, SqsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .map_err(failed("GetQueueAttributes"))?;
        let attrs = out.attributes.unwrap_or_default();
        let arn = attrs
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .ok_or_else(|| SqsError {
                op: "GetQueueAttributes",
                detail: "the answer holds no QueueArn".to_owned(),
            })?;
        // SQS's default when the attribute is missing: 256 KiB.
        let max_message_bytes = attrs
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
            .unwrap_or(262_144);
        Ok(QueueFacts {
            arn,
            max_message_bytes,
        })
    }

    /// Reads both queues; `Ok(None)` when no dead-letter queue is configured.
    pub async fn dead_letter_facts(
        &self,
    ) -> Result<Option<(QueueFacts, QueueFacts)>, DeadLetterProblem> {
        let Some(dlq) = self.dead_letter_queue() else {
            return Ok(None);
        };
        let read = |q: &Queue, which| {
            let url = q.url.clone();
            let q = q.clone();
            async move {
                q.facts()
                    .await
                    .map_err(|error| DeadLetterProblem::Unreadable { which, url, error })
            }
        };
        let main = read(self, "main queue").await?;
        let dead = read(&dlq, "dead-letter queue").await?;
        if main.arn == dead.arn {
            return Err(DeadLetterProblem::SameQueue {
                dlq_url: dlq.url,
                arn: dead.arn,
            });
        }
        Ok(Some((main, dead)))
    }

    /// Checks that the dead-letter queue exists, is not the main queue and takes the largest
    /// message the main queue can hold. `Ok(())` when no dead-letter queue is configured.
    pub async fn verify_dead_letter(&self) -> Result<(), DeadLetterProblem> {
        let Some((main, dead)) = self.dead_letter_facts().await? else {
            return Ok(());
        };
        if dead.max_message_bytes < main.max_message_bytes {
            return Err(DeadLetterProblem::TooSmall {
                dlq_url: self.dead_letter_url.clone().unwrap_or_default(),
                dlq_bytes: dead.max_message_bytes,
                main_bytes: main.max_message_bytes,
            });
        }
        Ok(())
    }
}
