//! Sending to the status queue (`[status] queue_url`): message bodies in SendMessageBatch calls
//! of at most 10 entries and [`MAX_SEND_BATCH_BYTES`], entries SQS refuses through no fault of
//! the sender tried again, and what still failed returned, so the caller marks only what the
//! queue took.

use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use sluice_aws::{BatchRetry, Retrying};

use super::{Queue, SQS_BATCH_MAX};

/// SQS caps one SendMessageBatch request at 256 KiB of bodies in all.
pub const MAX_SEND_BATCH_BYTES: usize = 256 * 1024;

/// Status sends are tried twice, quickly: the reporter re-sends from the ledger later anyway.
const STATUS_RETRY: BatchRetry = BatchRetry {
    tries: 2,
    min_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(1),
};

/// The groups `bodies` go out in (as index ranges): at most 10 bodies and
/// [`MAX_SEND_BATCH_BYTES`] each (a body alone over the cap goes alone, and SQS refuses it).
pub fn send_groups(bodies: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, b) in bodies.iter().enumerate() {
        let full = i - start == SQS_BATCH_MAX || bytes + b.len() > MAX_SEND_BATCH_BYTES;
        if i > start && full {
            groups.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += b.len();
    }
    if start < bodies.len() {
        groups.push(start..bodies.len());
    }
    groups
}

impl Queue {
    /// A queue on the same client (region, endpoint, credentials) at `url`.
    pub fn sibling(&self, url: String) -> Queue {
        Queue::new(self.client.clone(), url, None)
    }

    /// Sends `bodies` (one message each) in [`send_groups`]; returns the indexes of the
    /// bodies that were not taken, each with the reason.
    pub async fn send_bodies(&self, bodies: &[String]) -> Vec<(usize, String)> {
        let mut failed = Vec::new();
        for group in send_groups(bodies) {
            let entries: Vec<usize> = group.collect();
            let call = |pairs: Vec<(String, usize)>| async move {
                let req = pairs
                    .iter()
                    .filter_map(|(id, i)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(id)
                            .message_body(&bodies[*i])
                            .build()
                            .ok()
                    })
                    .collect();
                sluice_aws::batch_call!(self.client, &self.url, send_message_batch, req)
            };
            failed.extend(STATUS_RETRY.run(&entries, call, log_retry).await);
        }
        failed
    }
}

fn log_retry(r: Retrying<'_, usize>) {
    if let Retrying::Call { error, attempt, .. } = r {
        tracing::debug!(error = %error, attempt, "Status send failed; retrying.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_at_most_ten_bodies_and_the_request_cap() {
        let small: Vec<String> = (0..23).map(|_| "x".repeat(100)).collect();
        assert_eq!(send_groups(&small), vec![0..10, 10..20, 20..23]);
        let big: Vec<String> = (0..5).map(|_| "x".repeat(100 * 1024)).collect();
        assert_eq!(send_groups(&big), vec![0..2, 2..4, 4..5]);
        assert!(send_groups(&[]).is_empty());
        let over = vec!["x".repeat(300 * 1024), "y".into()];
        assert_eq!(send_groups(&over), vec![0..1, 1..2]);
    }
}
