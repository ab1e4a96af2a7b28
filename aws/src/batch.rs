//! Partial failures of SQS batch calls (SendMessageBatch, DeleteMessageBatch,
//! ChangeMessageVisibilityBatch): a 200 answer can still list entries in `Failed`. Here, once:
//! calls of at most 10 entries, the entries refused through no fault of the sender (and every
//! entry of a call that failed as a whole) tried again with backoff, and what still failed
//! returned with its reason.
//!
//! Keeps the guarantee "SQS trouble loses nothing" for the batch calls of both sides.
//!
//! What a call sends, and what the caller counts or logs, stay with the caller.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::BatchResultErrorEntry;
use backon::{BackoffBuilder, ExponentialBuilder};

/// SQS takes at most 10 entries per batch call (and returns at most 10 messages per receive).
pub const MAX_BATCH_ENTRIES: usize = 10;

/// How a batch call is retried: `tries` calls at most, exponential backoff with jitter from
/// `min_delay` up to `max_delay` between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRetry {
    /// Calls per group of entries, the first one included; 0 counts as 1.
    pub tries: usize,
    /// The first delay, doubled after every call.
    pub min_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

/// A retry about to happen, handed to the caller (to log it) before the delay.
#[derive(Debug)]
pub enum Retrying<'a, T> {
    /// The call failed as a whole (network, throttling, …): all its entries go again.
    Call {
        /// What failed, as the caller's call reported it.
        error: &'a str,
        /// The call that failed, from 1.
        attempt: usize,
        /// How many entries go again.
        pending: usize,
    },
    /// SQS refused this entry through no fault of the sender: it goes again.
    Entry {
        /// The caller's entry.
        entry: &'a T,
        /// `Code: Message` from SQS.
        reason: &'a str,
    },
}

impl BatchRetry {
    /// The delays between calls: `tries` of them at most, with jitter.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.tries)
            .with_jitter()
    }

    /// Sends `entries` in calls of at most [`MAX_BATCH_ENTRIES`], one group after the other.
    ///
    /// `call` makes one batch call with `(id, entry)` pairs (the ids are unique within the call)
    /// and returns SQS's `Failed` list, or the whole call's error as text. A refused entry is
    /// tried again unless SQS says it is the sender's fault, at most `tries` calls in all;
    /// `notify` hears of every retry before its delay. Returns the entries that still failed,
    /// each with its reason (`Code: Message`, or the last call's error), in the order they
    /// failed for good.
    pub async fn run<T, F, Fut>(
        &self,
        entries: &[T],
        call: F,
        mut notify: impl FnMut(Retrying<'_, T>),
    ) -> Vec<(T, String)>
    where
        T: Clone,
        F: Fn(Vec<(String, T)>) -> Fut,
        Fut: Future<Output = Result<Vec<BatchResultErrorEntry>, String>>,
    {
        let mut failed = Vec::new();
        for group in entries.chunks(MAX_BATCH_ENTRIES) {
            failed.extend(self.run_group(group, &call, &mut notify).await);
        }
        failed
    }

    /// One group of at most [`MAX_BATCH_ENTRIES`] for [`BatchRetry::run`].
    async fn run_group<T, F, Fut>(
        &self,
        group: &[T],
        call: &F,
        notify: &mut impl FnMut(Retrying<'_, T>),
    ) -> Vec<(T, String)>
    where
        T: Clone,
        F: Fn(Vec<(String, T)>) -> Fut,
        Fut: Future<Output = Result<Vec<BatchResultErrorEntry>, String>>,
    {
        let tries = self.tries.max(1);
        let mut pending: Vec<(String, T)> = group
            .iter()
            .enumerate()
            .map(|(i, entry)| (i.to_string(), entry.clone()))
            .collect();
        let mut failed_for_good = Vec::new();
        let mut delays = self.backoff().build();
        for attempt in 1..=tries {
            let last = attempt == tries;
            match call(pending.clone()).await {
                Ok(refused) => {
                    let mut retry = Vec::new();
                    for f in refused {
                        let Some((_, entry)) = pending.iter().find(|(id, _)| *id == f.id) else {
                            continue;
                        };
                        let reason = format!("{}: {}", f.code, f.message.unwrap_or_default());
                        if f.sender_fault || last {
                            failed_for_good.push((entry.clone(), reason));
                        } else {
                            notify(Retrying::Entry {
                                entry,
                                reason: &reason,
                            });
                            retry.push((f.id, entry.clone()));
                        }
                    }
                    pending = retry;
                }
                Err(error) if last => {
                    failed_for_good
                        .extend(pending.drain(..).map(|(_, entry)| (entry, error.clone())));
                }
                Err(error) => notify(Retrying::Call {
                    error: &error,
                    attempt,
                    pending: pending.len(),
                }),
            }
            if pending.is_empty() {
                break;
            }
            if let Some(delay) = delays.next() {
                tokio::time::sleep(delay).await;
            }
        }
        failed_for_good
    }
}

/// The answer of an SQS batch call: the entries it lists in `Failed`.
pub trait BatchOutput {
    /// The entries SQS refused.
    fn failed(self) -> Vec<BatchResultErrorEntry>;
}

macro_rules! batch_outputs {
    ($($output:ty),*) => {$(
        impl BatchOutput for $output {
            fn failed(self) -> Vec<BatchResultErrorEntry> {
                self.failed
            }
        }
    )*};
}

batch_outputs!(
    SendMessageBatchOutput,
    DeleteMessageBatchOutput,
    ChangeMessageVisibilityBatchOutput
);

/// Sends one SQS batch call — `batch_call!(client, queue_url, delete_message_batch, entries)`
/// — and answers as [`BatchRetry::run`]'s `call` returns ([`failed_entries`]): the one way
/// both sides write a batch call.
#[macro_export]
macro_rules! batch_call {
    ($client:expr, $url:expr, $call:ident, $entries:expr) => {
        $crate::failed_entries(
            $client
                .$call()
                .queue_url($url)
                .set_entries(Some($entries))
                .send()
                .await,
        )
    };
}

/// One batch call's `.send().await` as [`BatchRetry::run`]'s `call` returns it: SQS's `Failed`
/// list, or the whole call's error with its chain of causes (the SDK's own `Display` shows only
/// the top).
pub fn failed_entries<O, E, R>(
    sent: Result<O, SdkError<E, R>>,
) -> Result<Vec<BatchResultErrorEntry>, String>
where
    O: BatchOutput,
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    sent.map(BatchOutput::failed)
        .map_err(|e| DisplayErrorContext(e).to_string())
}

#[cfg(test)]
mod tests;
