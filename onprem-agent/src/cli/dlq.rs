//! `sluice-agent dlq`: look at, send back and delete what the agent (or the queue's redrive
//! policy) put on the dead-letter queue.
//!
//! Keeps the guarantee "`dlq purge` never purges the main queue" (`purge`, below).
//!
//! - `list` receives the messages to read them and hands each back at once (visibility 0), so
//!   listing moves nothing, though it does add one to each message's receive count. Bodies are
//!   decoded with the chunk envelope; a body that does not decode is listed with the error.
//! - `redrive` sends each message back to the main queue — same body, same `sluice-encoding`,
//!   without the dead-letter attributes — then deletes it from the DLQ. A crash between the two
//!   leaves the message in both queues: harmless, because writes are idempotent by receipt id.
//! - `purge` deletes everything (PurgeQueue), only with `--yes`, and never the main queue: both
//!   URLs are resolved to queue ARNs first (SQS answers to several spellings of one URL), and
//!   the count it will destroy is said before it does.
//!
//! Why a message was dead-lettered is its `sluice-error` attribute (set by the agent). A message
//! moved by the queue's own redrive policy (`maxReceiveCount`) has none.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Serialize;
use sluice_protocol::envelope;

use crate::io::sqs::{
    DeadLetterProblem, Depth, Handle, Queue, Received, SqsError, ERROR_ATTRIBUTE, SOURCE_ATTRIBUTE,
};

/// While listing, messages already read stay hidden this long so the next receive returns
/// others; all are handed back (visibility 0) when the listing ends.
const LIST_HIDE_SECONDS: i32 = 60;
/// While redriving, a message is hidden this long between its receive and its delete.
const REDRIVE_HIDE_SECONDS: i32 = 120;
/// Long poll per receive: an empty answer after this many seconds means the DLQ is drained
/// (a short poll samples only some SQS servers and can answer empty while messages remain).
const RECEIVE_WAIT_SECONDS: i32 = 1;

/// What went wrong, sorted by the exit code the CLI gives.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The configuration names no dead-letter queue.
    #[error("queue.dead_letter_url is not set: there is no dead-letter queue to work on")]
    NotConfigured,
    /// `purge` without `--yes`.
    #[error(
        "refusing to purge {url} ({messages}) without --yes: every message in it is deleted \
         and cannot be brought back; `sluice-agent dlq list` shows what is there"
    )]
    NotConfirmed { url: String, messages: String },
    /// `purge` where the dead-letter URL names the main queue.
    #[error(
        "refusing to purge {dlq_url}: it is the main queue {queue_url} (both are {arn}); \
         queue.dead_letter_url must name the dead-letter queue"
    )]
    SameQueue {
        dlq_url: String,
        queue_url: String,
        arn: String,
    },
    /// A queue could not be resolved to its ARN before a purge.
    #[error(transparent)]
    Unverified(DeadLetterProblem),
    #[error(transparent)]
    Sqs(#[from] SqsError),
}

/// One dead letter, decoded as far as it goes.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    /// Why it was dead-lettered (`sluice-error`); `None` when the queue's redrive policy moved it.
    pub reason: Option<String>,
    /// The main-queue message it came from (`sluice-source-message-id`).
    pub source_message_id: Option<String>,
    /// SQS's ApproximateReceiveCount, this listing's receive included.
    pub receive_count: Option<u32>,
    /// Milliseconds since the epoch when it was sent to the DLQ.
    pub sent_timestamp_ms: Option<u64>,
    pub batch_id: Option<String>,
    pub chunk_index: Option<u32>,
    pub chunk_count: Option<u32>,
    pub receipts: Option<usize>,
    /// Receipt ids in the chunk (the first few), to find them in the upload.
    pub receipt_ids: Vec<String>,
    /// Why the body does not decode, when it does not.
    pub decode_error: Option<String>,
    pub bytes: usize,
}

/// Receipt ids shown per dead letter.
const RECEIPT_IDS_SHOWN: usize = 5;

fn dead_letter_queue(queue: &Queue) -> Result<Queue, DlqError> {
    queue.dead_letter_queue().ok_or(DlqError::NotConfigured)
}

/// One receive from the DLQ, its messages hidden for `hide_seconds`.
async fn receive(dlq: &Queue, hide_seconds: i32) -> Result<Vec<Received>, SqsError> {
    dlq.receive_with_attributes(RECEIVE_WAIT_SECONDS, hide_seconds)
        .await
        .map_err(|e| SqsError {
            op: "ReceiveMessage (dead-letter queue)",
            ..e
        })
}

/// Decodes one dead letter for display.
fn describe(m: &Received) -> DeadLetter {
    let string_attr = |name| m.attributes.string(name).map(str::to_owned);
    let encoding = m.attributes.string(envelope::ENCODING_ATTRIBUTE);
    let mut out = DeadLetter {
        message_id: m.handle.message_id.clone(),
        reason: string_attr(ERROR_ATTRIBUTE),
        source_message_id: string_attr(SOURCE_ATTRIBUTE),
        receive_count: m.receive_count,
        sent_timestamp_ms: m.sent_timestamp_ms,
        batch_id: None,
        chunk_index: None,
        chunk_count: None,
        receipts: None,
        receipt_ids: Vec::new(),
        decode_error: None,
        bytes: m.body.len(),
    };
    match envelope::decode(&m.body, encoding) {
        Ok(chunk) => {
            out.batch_id = Some(chunk.batch_id.clone());
            out.chunk_index = Some(chunk.chunk_index);
            out.chunk_count = Some(chunk.chunk_count);
            out.receipts = Some(chunk.receipts.len());
            out.receipt_ids = chunk
                .receipts
                .iter()
                .take(RECEIPT_IDS_SHOWN)
                .map(|r| r.receipt_id.clone())
                .collect();
        }
        Err(e) => out.decode_error = Some(e.to_string()),
    }
    out
}

/// Lists up to `max` dead letters, handing each back to the DLQ afterwards.
pub async fn list(queue: &Queue, max: usize) -> Result<Vec<DeadLetter>, DlqError> {
    let dlq = dead_letter_queue(queue)?;
    let mut seen: Vec<Received> = Vec::new();
    let mut result = Ok(());
    while seen.len() < max {
        match receive(&dlq, LIST_HIDE_SECONDS).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                for m in batch {
                    // A message delivered twice in one listing is shown once.
                    if !seen
                        .iter()
                        .any(|s| s.handle.message_id == m.handle.message_id)
                    {
                        seen.push(m);
                    }
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let handles: Vec<Handle> = seen.iter().map(|m| m.handle.clone()).collect();
    for (h, e) in dlq.change_visibility(&handles, 0).await {
        tracing::warn!(message_id = %h.message_id, error = %e, "Could not hand a listed message back; it reappears after its visibility timeout.");
    }
    result?;
    Ok(seen.iter().take(max).map(describe).collect())
}

/// What a redrive did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Redriven {
    /// Sent to the main queue and deleted from the DLQ.
    pub moved: u64,
    /// Left on the DLQ (sending failed); each with its error.
    pub failed: Vec<(String, String)>,
    /// Sent, but the delete from the DLQ failed: the message is in both queues (harmless).
    pub not_deleted: u64,
}

/// Moves dead letters back to the main queue, at most `rate` messages per second, stopping at
/// the first empty receive or after the number of messages the DLQ held when it started (so
/// a message that fails again and comes straight back is not redriven in a loop).
pub async fn redrive(queue: &Queue, rate: Option<NonZeroU32>) -> Result<Redriven, DlqError> {
    let dlq = dead_letter_queue(queue)?;
    let at_start = dlq.depth().await?;
    let limit = at_start.visible + at_start.delayed;
    let mut pace = rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.get())));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut done = Redriven::default();
    let mut handled = 0u64;
    while handled < limit {
        let batch = receive(&dlq, REDRIVE_HIDE_SECONDS).await?;
        if batch.is_empty() {
            break;
        }
        let mut sent = Vec::new();
        let mut unsent = Vec::new();
        for m in batch {
            if handled >= limit {
                unsent.push(m.handle);
                continue;
            }
            handled += 1;
            if let Some(p) = pace.as_mut() {
                p.tick().await;
            }
            match send_back(queue, &m).await {
                Ok(()) => {
                    tracing::info!(message_id = %m.handle.message_id, "Dead letter sent back to the queue.");
                    sent.push(m.handle);
                }
                Err(e) => {
                    tracing::warn!(message_id = %m.handle.message_id, error = %e, "Could not send a dead letter back; it stays on the DLQ.");
                    done.failed
                        .push((m.handle.message_id.clone(), e.to_string()));
                    unsent.push(m.handle);
                }
            }
        }
        let not_deleted = dlq.delete(&sent).await;
        for (h, e) in &not_deleted {
            tracing::warn!(message_id = %h.message_id, error = %e, "Sent back but not deleted from the DLQ; it is now in both queues (harmless: writes are idempotent).");
        }
        done.not_deleted += not_deleted.len() as u64;
        done.moved += (sent.len() - not_deleted.len()) as u64;
        for (h, e) in dlq.change_visibility(&unsent, 0).await {
            tracing::warn!(message_id = %h.message_id, error = %e, "Could not hand a message back to the DLQ; it reappears after its visibility timeout.");
        }
    }
    Ok(done)
}

/// Sends one dead letter to the main queue: its body and attributes, without the ones the
/// agent added when it dead-lettered it.
async fn send_back(queue: &Queue, m: &Received) -> Result<(), SqsError> {
    queue
        .send_raw(
            &m.body,
            m.attributes.without(&[ERROR_ATTRIBUTE, SOURCE_ATTRIBUTE]),
        )
        .await
        .map_err(|e| SqsError {
            op: "SendMessage (redrive)",
            ..e
        })
}

/// Deletes every message on the DLQ (PurgeQueue); refuses unless `confirmed`, and refuses when
/// the dead-letter URL resolves to the main queue's ARN. `announce` is told what will go
/// (URL and depth) before the purge. Returns the number of messages the DLQ held just before
/// (SQS finishes a purge within 60 s).
pub async fn purge(
    queue: &Queue,
    confirmed: bool,
    announce: impl FnOnce(&str, &Depth),
) -> Result<u64, DlqError> {
    let dlq = dead_letter_queue(queue)?;
    match queue.dead_letter_facts().await {
        Ok(_) => {}
        Err(DeadLetterProblem::SameQueue { dlq_url, arn }) => {
            return Err(DlqError::SameQueue {
                dlq_url,
                queue_url: queue.url().to_owned(),
                arn,
            })
        }
        Err(e) => return Err(DlqError::Unverified(e)),
    }
    let before = dlq.depth().await;
    if !confirmed {
        return Err(DlqError::NotConfirmed {
            url: dlq.url().to_owned(),
            messages: match before {
                Ok(d) => describe_depth(&d),
                Err(_) => "depth unreadable".to_owned(),
            },
        });
    }
    let before = before?;
    announce(dlq.url(), &before);
    dlq.purge().await?;
    tracing::info!(queue = %dlq.url(), messages = before.total(), "Dead-letter queue purged.");
    Ok(before.total())
}

/// "N messages now: V waiting (ApproximateNumberOfMessages), I in flight, D delayed".
pub fn describe_depth(d: &Depth) -> String {
    format!(
        "{} messages now: {} waiting (ApproximateNumberOfMessages), {} in flight, {} delayed",
        d.total(),
        d.visible,
        d.in_flight,
        d.delayed
    )
}

/// The listing as a table, one dead letter per block.
pub fn render(letters: &[DeadLetter]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if letters.is_empty() {
        out.push_str("The dead-letter queue is empty.\n");
        return out;
    }
    for d in letters {
        let _ = writeln!(out, "message  {}", d.message_id);
        match (&d.batch_id, &d.decode_error) {
            (Some(b), _) => {
                let _ = writeln!(
                    out,
                    "  batch {b}  chunk {}/{}  {} receipts{}",
                    d.chunk_index.map_or(0, |i| i + 1),
                    d.chunk_count.unwrap_or(0),
                    d.receipts.unwrap_or(0),
                    if d.receipt_ids.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", d.receipt_ids.join(", "))
                    }
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "  body does not decode ({} bytes): {e}", d.bytes);
            }
            (None, None) => {}
        }
        let _ = writeln!(
            out,
            "  reason: {}",
            d.reason.as_deref().unwrap_or(
                "(none: moved by the queue's redrive policy after maxReceiveCount receives; see the agent's log)"
            )
        );
        let _ = writeln!(
            out,
            "  received {} times{}",
            d.receive_count.map_or("?".to_owned(), |n| n.to_string()),
            d.source_message_id
                .as_deref()
                .map(|s| format!(", from message {s}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "{} dead letters.", letters.len());
    out
}

#[cfg(test)]
mod tests;
