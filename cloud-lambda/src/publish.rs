//! Sends encoded chunks to SQS with SendMessageBatch: at most 10 entries and at most the
//! message byte limit per call, several calls in flight (bounded), and every per-entry failure
//! SQS reports inside a 200 answer retried when it is not the sender's fault.
//!
//! The calls themselves go through the SQS adapter, `crate::io::sqs`.
//!
//! Succeeds only when SQS has accepted every chunk; otherwise the caller answers 503 and the
//! client retries the whole request, which is safe because receipts are idempotent by id.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use sluice_aws::{BatchRetry, Retrying};
use sluice_protocol::envelope::EncodedMessage;

use crate::io::sqs::{Client, Queue};

pub use sluice_aws::MAX_BATCH_ENTRIES;

/// Attempts per SendMessageBatch group before the request is answered 503, and the delays
/// between them (with jitter).
const SEND_RETRY: BatchRetry = BatchRetry {
    tries: 5,
    min_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(3),
};

/// Some chunks were not accepted by SQS.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} chunks not accepted by SQS: {detail}")]
pub struct PublishError {
    pub failed: usize,
    pub total: usize,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Publisher {
    queue: Queue,
    concurrency: usize,
    /// SQS caps a whole batch call at the same size as one message.
    max_batch_bytes: usize,
}

impl Publisher {
    pub fn new(
        client: Client,
        queue_url: String,
        concurrency: usize,
        max_batch_bytes: usize,
    ) -> Self {
        Self {
            queue: Queue::new(client, queue_url),
            concurrency: concurrency.max(1),
            max_batch_bytes,
        }
    }

    /// Sends every message; `Ok` only when SQS accepted all of them.
    pub async fn publish(&self, messages: &[EncodedMessage]) -> Result<(), PublishError> {
        let groups = group(messages, self.max_batch_bytes);
        let failures: Vec<(usize, String)> = stream::iter(groups)
            .map(|g| self.send_group(messages, g))
            .buffer_unordered(self.concurrency)
            .flat_map(stream::iter)
            .collect()
            .await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PublishError {
                failed: failures.len(),
                total: messages.len(),
                detail: failures
                    .first()
                    .map(|(i, e)| format!("chunk {i}: {e}"))
                    .unwrap_or_default(),
            })
        }
    }

    /// One group, retried with backoff; returns the chunks that still failed.
    async fn send_group(
        &self,
        messages: &[EncodedMessage],
        group: Vec<usize>,
    ) -> Vec<(usize, String)> {
        let send = |pending: Vec<(String, usize)>| async move {
            let chunks = pending.iter().map(|(id, i)| (id.as_str(), &messages[*i]));
            self.queue.send_chunks(chunks).await
        };
        SEND_RETRY
            .run(&group, send, |retrying| match retrying {
                Retrying::Entry { entry, reason } => {
                    tracing::warn!(chunk = entry, error = %reason, "SQS refused a chunk; retrying it.");
                }
                Retrying::Call { error, pending, .. } => {
                    tracing::warn!(error = %error, chunks = pending, "SendMessageBatch failed; retrying.");
                }
            })
            .await
    }
}

/// Groups message indexes into SendMessageBatch calls: ≤ 10 entries and ≤ `max_bytes` in total
/// per call, in order. A message is never larger than `max_bytes` (the splitter sees to it).
pub fn group(messages: &[EncodedMessage], max_bytes: usize) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (i, m) in messages.iter().enumerate() {
        let size = m.sqs_size();
        if !current.is_empty() && (current.len() == MAX_BATCH_ENTRIES || bytes + size > max_bytes) {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: usize) -> EncodedMessage {
        EncodedMessage {
            body: "x".repeat(len),
            encoding: None,
            chunk_index: 0,
            receipts: 1,
        }
    }

    #[test]
    fn groups_hold_at_most_ten_entries() {
        let ms: Vec<_> = (0..25).map(|_| msg(10)).collect();
        let g = group(&ms, 1_000_000);
        assert_eq!(g.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
        assert_eq!(g.concat(), (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn groups_stay_under_the_byte_limit() {
        let ms: Vec<_> = (0..6).map(|_| msg(400)).collect();
        let g = group(&ms, 1000);
        assert_eq!(g, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
        for grp in &g {
            let total: usize = grp.iter().map(|&i| ms[i].sqs_size()).sum();
            assert!(total <= 1000);
        }
    }
}
