//! Settling one batch: commit it whole; if the database refuses it, isolate the rows at fault
//! (`pipeline::isolate`), commit the rest, and decide each message's fate — delete it, keep it
//! for the queue's redrive policy (no dead-letter queue), or release it (its refused row could
//! not be dead-lettered). A refusal of every row is systemic and settles nothing.
//!
//! Keeps the guarantees "A failed dead-letter send loses nothing and blocks nothing" and "Without a
//! DLQ an upload still ends" (a kept message's chunk still gets its ledger row, naming each refused
//! receipt).
//!
//! A failed dead-letter send blocks nothing: the batch's other rows stay committed and its
//! other messages are deleted; the message whose row could not be dead-lettered is released
//! (visibility 0, not deleted) so it comes back, its committed rows then count as duplicates,
//! and the queue's redrive policy moves it after `maxReceiveCount` receives. The
//! `dead_letter_unavailable` condition shows it until a dead-letter send succeeds.

use std::collections::HashSet;
use std::time::Instant;

use sluice_protocol::envelope::{self, Chunk, Compression};
use sluice_protocol::report::{Rejection, MAX_REJECTIONS};
use sluice_protocol::Receipt;

use crate::io::sqs::SqsError;
use crate::io::store::{LedgerEntry, Row, StoreError, WriteOutcome};
use crate::pipeline::delivery::{Delivery, WriterContext};
use crate::pipeline::health::PHOTO_STORE_UNAVAILABLE;
use crate::pipeline::isolate::{by_receipt, isolate, Isolation, RowWriter as _};
use crate::pipeline::photos::{self, PhotoError, Prepared};
use crate::telemetry::names as m;

/// Why a batch could not be settled this time.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Retried with backoff (an outage or overload; a refusal outside the rows' bisection is
    /// handled as systemic).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every row is refused the same way: not the rows' fault. Nothing is dead-lettered.
    #[error("every row refused: {error}")]
    Systemic { error: StoreError },
    /// The batch's carried photos could not be fetched or written (S3 unreachable, a photo
    /// file not written): retried with backoff, nothing deleted (`photo_store_unavailable`).
    #[error(transparent)]
    Photos(#[from] PhotoError),
}

/// What happens to one SQS message once its batch is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Every receipt is committed (or dead-lettered with its reason): delete it.
    Delete,
    /// Some receipts were refused and there is no dead-letter queue to put them: keep the
    /// message, so the queue's redrive policy moves it after `maxReceiveCount` receives.
    Keep { reason: String },
    /// A refused receipt could not be dead-lettered: hand the message back at once (its other
    /// receipts are committed and will count as duplicates).
    Release { reason: String },
}

/// The result of settling one batch.
#[derive(Debug, Default)]
pub struct Settled {
    pub outcome: WriteOutcome,
    pub dead_lettered: u64,
    pub dispositions: Vec<Disposition>,
    /// Receipts of the batch not stored (refused by the database or for their photo).
    pub unstored: HashSet<String>,
}

mod conflict;

/// Fetches the batch's carried photos (`pipeline::photos`), commits the batch with them, then
/// settles the receipts it refused as conflicts (`conflict`) and deletes the objects of the
/// photos now stored.
pub async fn settle(ctx: &WriterContext, batch: &[Delivery]) -> Result<Settled, WriteError> {
    let prepared = photos::prepare(ctx, batch).await?;
    if ctx.photos.is_some() {
        ctx.health.clear(PHOTO_STORE_UNAVAILABLE);
    }
    let mut settled = commit(ctx, batch, prepared.as_ref()).await?;
    let mut unstored = std::mem::take(&mut settled.unstored);
    unstored.extend(
        settled
            .outcome
            .conflicts
            .iter()
            .map(|c| c.receipt.receipt_id.clone()),
    );
    metrics::counter!(m::PHOTO_BYTES_STORED).increment(settled.outcome.photo_bytes);
    conflict::settle(ctx, batch, &mut settled).await;
    if let Some(p) = &prepared {
        photos::delete_committed(ctx, p, &unstored).await;
    }
    Ok(settled)
}

/// Commits the batch; if the database refuses some rows, finds them by bisection, commits the
/// rest and dead-letters each refused row with the database's reason. Receipts refused for
/// their photo (`prepared`) are left out of the write and dead-lettered the same way.
async fn commit(
    ctx: &WriterContext,
    batch: &[Delivery],
    prepared: Option<&Prepared>,
) -> Result<Settled, WriteError> {
    let mut all: Vec<Row<'_>> = Vec::new();
    let mut photo_refused: Vec<(Row<'_>, String)> = Vec::new();
    for row in batch.iter().flat_map(Delivery::store_rows) {
        match prepared {
            Some(p) => match p.refused.iter().find(|r| r.is(&row)) {
                Some(r) => photo_refused.push((row, r.reason.clone())),
                None => all.push(p.attach(row)),
            },
            None => all.push(row),
        }
    }
    // With receipts refused for their photo, the ledger rows follow the dead letters, as for
    // rows the database refuses.
    let ledger: Vec<LedgerEntry> = if photo_refused.is_empty() {
        batch.iter().map(Delivery::ledger_entry).collect()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let (outcome, mut refused) = match ctx.store.write(&all, &ledger).await {
        Ok(outcome) => {
            let took = started.elapsed();
            metrics::histogram!(m::COMMIT_SECONDS).record(took.as_secs_f64());
            ctx.throttle.observe_commit(took);
            ctx.refusals.committed();
            if photo_refused.is_empty() {
                return Ok(Settled {
                    outcome,
                    dead_lettered: 0,
                    dispositions: vec![Disposition::Delete; batch.len()],
                    unstored: HashSet::new(),
                });
            }
            (outcome, Vec::new())
        }
        Err(e) if e.is_refused() => isolate_refused(ctx, batch.len(), &all, e).await?,
        Err(e) => return Err(e.into()),
    };
    refused.extend(photo_refused);
    let mut settled = Settled {
        outcome,
        unstored: refused
            .iter()
            .map(|(r, _)| r.receipt.receipt_id.clone())
            .collect(),
        ..Settled::default()
    };
    let failed = dead_letter_refused(ctx, batch, &refused, &mut settled).await;
    let mut ledger = Vec::new();
    for d in batch {
        // The refused rows this message carries (by content: another version of the same id
        // may have been stored).
        let mine: Vec<usize> = (0..refused.len())
            .filter(|&i| carries(d, &refused[i].0))
            .collect();
        let reason = || {
            mine.iter()
                .map(|&i| refused[i].1.clone())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let disposition = if mine.is_empty() {
            Disposition::Delete
        } else if !ctx.queue.has_dead_letter_queue() {
            let reason = reason();
            tracing::error!(message_id = %d.handle.message_id, refused = mine.len(), reason = %reason, "Rows refused by the database and no dead-letter queue configured; message kept for the queue's redrive policy.");
            Disposition::Keep { reason }
        } else if mine.iter().any(|i| failed.contains(i)) {
            let reason = reason();
            tracing::warn!(message_id = %d.handle.message_id, reason = %reason, "A refused row could not be dead-lettered; message released to come back later.");
            Disposition::Release { reason }
        } else {
            Disposition::Delete
        };
        // A kept message's chunk is final too: its refused rows will be refused again (the
        // queue's redrive policy decides where they go), and without this row its upload would
        // stay `storing` for ever. A released one is not: it comes back and is settled then.
        if !matches!(disposition, Disposition::Release { .. }) {
            let kept = matches!(disposition, Disposition::Keep { .. });
            ledger.push(isolated_entry(d, &settled.outcome, &mine, &refused, kept));
        }
        settled.dispositions.push(disposition);
    }
    if !ledger.is_empty() {
        ctx.store.write(&[], &ledger).await?;
    }
    Ok(settled)
}

/// The rows of `all` the database refuses, found by bisection, each with its reason; and what
/// the bisection's commits stored. A refusal of every row is systemic.
async fn isolate_refused<'a>(
    ctx: &WriterContext,
    messages: usize,
    all: &[Row<'a>],
    first_error: StoreError,
) -> Result<(WriteOutcome, Vec<(Row<'a>, String)>), WriteError> {
    tracing::warn!(error = %first_error, messages, rows = all.len(), "Batch refused by the database; isolating the rows at fault.");
    let rows = by_receipt(all);
    let (outcome, committed, mut refused) = match isolate(&ctx.store, &rows, first_error).await? {
        Isolation::Systemic { error } => return Err(WriteError::Systemic { error }),
        Isolation::Found {
            outcome,
            committed,
            refused,
        } => (outcome, committed, refused),
    };
    if committed {
        ctx.refusals.committed();
    } else if let [(_, error)] = refused.as_slice() {
        // A one-row batch cannot tell the row's fault from the table's: the canary can.
        if ctx.store.refuses_everything(error).await? {
            let (_, error) = refused.swap_remove(0);
            return Err(WriteError::Systemic { error });
        }
    }
    let refused = refused
        .into_iter()
        .map(|(r, why)| {
            let reason = refused_reason(&r.receipt.receipt_id, &why);
            (r, reason)
        })
        .collect();
    Ok((outcome, refused))
}

/// Whether the message `d` carries `row` (its chunk, and a receipt with its content).
fn carries(d: &Delivery, row: &Row<'_>) -> bool {
    d.carries(row.batch_id, row.chunk_index, row.receipt)
}

/// The ledger row of a chunk settled by bisection: what the bisection's commits stored for
/// it, its conflicts and its refused receipts (`mine`, indexes into `refused`), each with the
/// dead letter's reason; `kept`: there is no dead-letter queue, and the reason says where the
/// receipt stays instead.
fn isolated_entry(
    d: &Delivery,
    outcome: &WriteOutcome,
    mine: &[usize],
    refused: &[(Row<'_>, String)],
    kept: bool,
) -> LedgerEntry {
    let key = (d.chunk.batch_id.clone(), d.chunk.chunk_index);
    let conflicts = conflict::of_chunk(&outcome.conflicts, d);
    let mut rejections: Vec<Rejection> = conflicts.iter().map(|c| c.rejection()).collect();
    rejections.extend(mine.iter().map(|&i| {
        let (r, reason) = &refused[i];
        let mut reason = reason.clone();
        if kept {
            reason.push_str(KEPT_WITHOUT_DLQ);
        }
        Rejection::new(r.receipt.receipt_id.clone(), &reason)
    }));
    rejections.truncate(MAX_REJECTIONS);
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    LedgerEntry {
        stored: outcome.stored_by_chunk.get(&key).copied().unwrap_or(0),
        conflicts: count(conflicts.len()),
        rejected: count(mine.len()),
        rejections,
        ..d.ledger_entry()
    }
}

/// Added to a refused receipt's reported reason when there is no dead-letter queue to hold it.
const KEPT_WITHOUT_DLQ: &str = "; no dead-letter queue is configured: its message stays on the \
     queue, and the queue's redrive policy decides where it goes";

/// The reason a receipt the database refused is dead-lettered (and reported) with.
fn refused_reason(id: &str, why: &StoreError) -> String {
    format!("receipt {id} refused by the database: {why}")
}

/// Dead-letters each refused row once (from the first message carrying it); returns the
/// indexes into `refused` of the rows that could not be dead-lettered.
async fn dead_letter_refused(
    ctx: &WriterContext,
    batch: &[Delivery],
    refused: &[(Row<'_>, String)],
    settled: &mut Settled,
) -> HashSet<usize> {
    let mut failed = HashSet::new();
    if !ctx.queue.has_dead_letter_queue() {
        return failed;
    }
    for (i, (row, reason)) in refused.iter().enumerate() {
        let id = row.receipt.receipt_id.as_str();
        let Some(d) = batch.iter().find(|d| carries(d, row)) else {
            continue;
        };
        match dead_letter_row(ctx, d, row.receipt, reason).await {
            Ok(()) => {
                settled.dead_lettered += 1;
                ctx.health.dead_letter_sent();
            }
            Err(e) => {
                ctx.health.dead_letter_failed(&e);
                tracing::warn!(message_id = %d.handle.message_id, receipt_id = %id, error = %e, "Dead-letter send failed; the message will be released.");
                failed.insert(i);
            }
        }
    }
    failed
}

/// Puts one refused receipt on the dead-letter queue as a one-receipt chunk of its original
/// batch with `reason`, so `dlq redrive` can send it back unchanged once the cause is fixed.
async fn dead_letter_row(
    ctx: &WriterContext,
    d: &Delivery,
    receipt: &Receipt,
    reason: &str,
) -> Result<(), SqsError> {
    let chunk = Chunk::new(
        d.chunk.batch_id.clone(),
        d.chunk.chunk_index,
        d.chunk.chunk_count,
        vec![receipt.clone()],
    );
    let encoded = envelope::encode(&chunk, Compression::None).map_err(|e| SqsError {
        op: "encode dead letter",
        detail: e.to_string(),
    })?;
    ctx.queue
        .dead_letter(&d.handle, &encoded.body, encoded.encoding, reason)
        .await?;
    tracing::warn!(message_id = %d.handle.message_id, receipt_id = %receipt.receipt_id, reason = %reason, "Receipt dead-lettered.");
    metrics::counter!(m::RECEIPTS_DEAD_LETTERED).increment(1);
    Ok(())
}
