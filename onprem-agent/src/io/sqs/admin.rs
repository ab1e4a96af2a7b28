//! The queue calls beside the pipeline's: depth and reachability (the monitor, `/readyz`,
//! `status`), and the raw receive, send and purge the `dlq` tools work with.

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use serde::{Deserialize, Serialize};

use super::{receive_messages, Attributes, Queue, Received, SqsError};

/// Messages in one queue, by state (SQS's approximate counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted (or released).
    pub in_flight: u64,
    /// Sent with a delay that has not passed yet.
    pub delayed: u64,
}

impl Depth {
    /// Every message the queue holds.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// Maps an SDK error to [`SqsError`] for `op`.
pub(super) fn failed<E: std::error::Error>(op: &'static str) -> impl FnOnce(E) -> SqsError {
    move |e| SqsError {
        op,
        detail: DisplayErrorContext(e).to_string(),
    }
}

impl Queue {
    /// The dead-letter queue as a queue of its own (it has no dead-letter queue itself).
    pub fn dead_letter_queue(&self) -> Option<Queue> {
        let url = self.dead_letter_url.clone()?;
        Some(Queue::new(self.client.clone(), url, None))
    }

    /// The queue's depth (one GetQueueAttributes call).
    pub async fn depth(&self) -> Result<Depth, SqsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(failed("GetQueueAttributes"))?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |k: QueueAttributeName| -> u64 {
            attrs
                .get(&k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_default()
        };
        Ok(Depth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    /// Does the queue answer? (The same GetQueueAttributes call as [`Queue::depth`].)
    pub async fn ping(&self) -> Result<(), SqsError> {
        self.depth().await.map(drop)
    }

    /// Up to 10 messages with every attribute, hidden for `hide_seconds`; an empty answer after
    /// `wait_seconds` of long polling means none are visible.
    pub async fn receive_with_attributes(
        &self,
        wait_seconds: i32,
        hide_seconds: i32,
    ) -> Result<Vec<Received>, SqsError> {
        receive_messages(
            &self.client,
            &self.url,
            wait_seconds,
            hide_seconds,
            "ReceiveMessage",
        )
        .await
    }

    /// Sends `body` with `attributes` as they are (one SendMessage call, no retry).
    pub async fn send_raw(&self, body: &str, attributes: Attributes) -> Result<(), SqsError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .set_message_attributes(attributes.into_sdk())
            .send()
            .await
            .map(drop)
            .map_err(failed("SendMessage"))
    }

    /// Deletes every message in the queue (PurgeQueue; SQS finishes within 60 s).
    pub async fn purge(&self) -> Result<(), SqsError> {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .map(drop)
            .map_err(failed("PurgeQueue"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_depth_counts_every_state() {
        let d = Depth {
            visible: 5,
            in_flight: 2,
            delayed: 1,
        };
        assert_eq!(d.total(), 8);
    }
}
