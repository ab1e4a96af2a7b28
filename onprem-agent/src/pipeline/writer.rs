//! Writers: take a batch, wait for its tokens, commit it in one transaction, then settle every
//! message in it (delete, dead-letter the rows the database refused, or release).
//!
//! Order is what keeps data safe: a message is deleted only after its receipts are committed
//! or its refused rows are on the dead-letter queue. When a commit fails for any other reason
//! its outcome is unknown, so nothing is deleted; the same batch is retried with backoff (the
//! write is idempotent) while the heartbeat keeps its messages invisible, and receiving pauses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::envelope::{self, Chunk, Compression, ENVELOPE_VERSION};
use sluice_protocol::Receipt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::io::sqs::{Handle, Queue, SqsError};
use crate::io::store::{dedup, is_lock_wait, LedgerEntry, Row, Store, StoreError, WriteOutcome};
use crate::ops::metrics as m;
use crate::pipeline::backoff::outage_backoff;
use crate::pipeline::consumer::Delivery;
use crate::pipeline::health::{Health, DATABASE_LOCK_WAIT};
use crate::pipeline::inflight::InFlight;
use crate::pipeline::liveness::Liveness;
use crate::throttle::Throttle;

/// What a writer needs.
#[derive(Debug, Clone)]
pub struct WriterContext {
    pub store: Store,
    pub queue: Queue,
    pub inflight: Arc<InFlight>,
    pub health: Health,
    /// The token bucket, the transaction slots, and where commit latencies and overload
    /// errors are reported.
    pub throttle: Arc<Throttle>,
    /// Where settled batches and legitimate waits are reported to the systemd watchdog.
    pub liveness: Liveness,
}

/// Why a batch could not be settled this time; always retried.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not dead-letter a refused row: {0}")]
    DeadLetter(#[from] SqsError),
}

/// What happens to one SQS message once its batch is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Every receipt is committed (or dead-lettered with its reason): delete it.
    Delete,
    /// Some receipts were refused and there is no dead-letter queue to put them: keep the
    /// message, so the queue's redrive policy moves it after `maxReceiveCount` receives.
    Keep { reason: String },
}

/// The result of settling one batch.
#[derive(Debug, Default)]
struct Settled {
    outcome: WriteOutcome,
    dead_lettered: u64,
    dispositions: Vec<Disposition>,
}

/// Receives batches until the batcher closes the channel. After `cancel`, batches not yet
/// started are released instead of written; transactions already started finish.
pub async fn run(
    ctx: WriterContext,
    mut input: mpsc::Receiver<Vec<Delivery>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = ctx.throttle.slots();
    while let Some(batch) = input.recv().await {
        if cancel.is_cancelled() {
            release(&ctx, &batch).await;
            continue;
        }
        let rows = u32::try_from(unique_rows(&batch)).unwrap_or(u32::MAX);
        let waited = Instant::now();
        let waiting = ctx.liveness.waiting();
        tokio::select! {
            _ = ctx.throttle.limiter().acquire(rows) => drop(waiting),
            _ = cancel.cancelled() => { release(&ctx, &batch).await; continue; }
        }
        metrics::histogram!(m::LIMITER_WAIT_SECONDS).record(waited.elapsed().as_secs_f64());
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            _ = cancel.cancelled() => { release(&ctx, &batch).await; continue; }
        };
        let Ok(slot) = slot else {
            release(&ctx, &batch).await;
            continue;
        };
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            write_with_retry(&ctx, batch, &cancel).await;
            drop(slot);
        });
    }
}

/// Rows the batch will write once repeated receipt ids are removed: what the limiter charges.
fn unique_rows(batch: &[Delivery]) -> usize {
    let rows: Vec<Row<'_>> = batch.iter().flat_map(rows_of).collect();
    dedup(&rows).len()
}

async fn write_with_retry(ctx: &WriterContext, batch: Vec<Delivery>, cancel: &CancellationToken) {
    let mut delays = outage_backoff();
    loop {
        // Waiting on the database is a known wait, as long as a write may take (its
        // statements under the transaction's timeouts, the whole under the store's deadline);
        // a settle that hangs past that stops the watchdog.
        let waiting = ctx.liveness.waiting_up_to(ctx.store.timeouts().deadline());
        let settled = settle(ctx, &batch).await;
        drop(waiting);
        match settled {
            Ok(settled) => {
                ctx.health.db_up();
                ctx.health.clear(DATABASE_LOCK_WAIT);
                finish(ctx, batch, settled).await;
                return;
            }
            Err(e) => {
                let kind = match &e {
                    WriteError::Store(s) => s.kind(),
                    WriteError::DeadLetter(_) => "dead_letter",
                };
                metrics::counter!(m::ERRORS, "kind" => kind).increment(1);
                if let WriteError::Store(s) = &e {
                    ctx.throttle.observe_error(s);
                    if is_lock_wait(s) {
                        ctx.health
                            .raise(DATABASE_LOCK_WAIT, lock_wait_reason(s, ctx));
                    }
                    // Overload is the throttle's to answer (it backs off); receiving pauses
                    // only while the database does not take writes at all.
                    if !s.is_overload() {
                        ctx.health.db_down(&e);
                    }
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                // The commit may or may not have happened (a connection lost at COMMIT): nothing
                // is deleted, and the retry is absorbed by the idempotent write either way.
                tracing::warn!(error = %e, messages = batch.len(), retry_in = ?delay, "Batch not confirmed committed; nothing deleted, retrying it.");
                let _waiting = ctx.liveness.waiting();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => {
                        release(ctx, &batch).await;
                        return;
                    }
                }
            }
        }
    }
}

/// What `/readyz` and `status` say while writes wait on a lock.
fn lock_wait_reason(e: &StoreError, ctx: &WriterContext) -> String {
    let t = ctx.store.timeouts();
    format!(
        "writes to PostgreSQL are cancelled by database.lock_timeout_ms ({}) or \
         statement_timeout_ms ({}): another session holds a lock on the agent's tables (see \
         pg_locks), or a statement is too slow; retrying with backoff, messages kept ({e})",
        t.lock.as_millis(),
        t.statement.as_millis()
    )
}

fn rows_of(d: &Delivery) -> impl Iterator<Item = Row<'_>> {
    d.chunk.receipts.iter().map(move |r| Row {
        receipt: r,
        batch_id: &d.chunk.batch_id,
        chunk_index: d.chunk.chunk_index,
    })
}

fn ledger_entry(d: &Delivery, rejected: usize) -> LedgerEntry {
    LedgerEntry {
        batch_id: d.chunk.batch_id.clone(),
        chunk_index: d.chunk.chunk_index,
        chunk_count: d.chunk.chunk_count,
        receipts: u32::try_from(d.chunk.receipts.len()).unwrap_or(u32::MAX),
        rejected: u32::try_from(rejected).unwrap_or(u32::MAX),
        message_id: d.handle.message_id.clone(),
    }
}

/// Commits the batch; if the database refuses some rows, finds them (per message, then by
/// bisection), commits the rest and dead-letters each refused row with the database's reason.
async fn settle(ctx: &WriterContext, batch: &[Delivery]) -> Result<Settled, WriteError> {
    let rows: Vec<Row<'_>> = batch.iter().flat_map(rows_of).collect();
    let ledger: Vec<LedgerEntry> = batch.iter().map(|d| ledger_entry(d, 0)).collect();
    let started = Instant::now();
    match ctx.store.write(&rows, &ledger).await {
        Ok(outcome) => {
            let took = started.elapsed();
            metrics::histogram!(m::COMMIT_SECONDS).record(took.as_secs_f64());
            ctx.throttle.observe_commit(took);
            return Ok(Settled {
                outcome,
                dead_lettered: 0,
                dispositions: vec![Disposition::Delete; batch.len()],
            });
        }
        Err(e) if e.is_data() => {
            tracing::warn!(error = %e, messages = batch.len(), rows = rows.len(), "Batch refused by the database; isolating the rows at fault.");
        }
        Err(e) => return Err(e.into()),
    }

    let mut settled = Settled::default();
    for d in batch {
        let rows: Vec<Row<'_>> = rows_of(d).collect();
        let first_error = match ctx.store.write(&rows, &[ledger_entry(d, 0)]).await {
            Ok(o) => {
                add(&mut settled.outcome, o);
                settled.dispositions.push(Disposition::Delete);
                continue;
            }
            Err(e) if e.is_data() => e,
            Err(e) => return Err(e.into()),
        };
        let (outcome, refused) = isolate(&ctx.store, &rows, first_error).await?;
        add(&mut settled.outcome, outcome);
        if !ctx.queue.has_dead_letter_queue() {
            let reason = refused
                .iter()
                .map(|(r, why)| format!("receipt {}: {why}", r.receipt_id))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::error!(message_id = %d.handle.message_id, refused = refused.len(), reason = %reason, "Rows refused by the database and no dead-letter queue configured; message kept for the queue's redrive policy.");
            settled.dispositions.push(Disposition::Keep { reason });
            continue;
        }
        for (receipt, why) in &refused {
            dead_letter_row(ctx, d, receipt, why).await?;
        }
        ctx.store
            .write(&[], &[ledger_entry(d, refused.len())])
            .await?;
        settled.dead_lettered += refused.len() as u64;
        settled.dispositions.push(Disposition::Delete);
    }
    Ok(settled)
}

/// Bisects `rows` (which failed as a whole with `first_error`) until every refused row stands
/// alone; commits the rest. Returns what was committed and the refused rows with reasons.
async fn isolate<'a>(
    store: &Store,
    rows: &[Row<'a>],
    first_error: StoreError,
) -> Result<(WriteOutcome, Vec<(&'a Receipt, String)>), StoreError> {
    let mut outcome = WriteOutcome::default();
    let mut refused = Vec::new();
    if rows.len() == 1 {
        refused.push((rows[0].receipt, first_error.to_string()));
        return Ok((outcome, refused));
    }
    let (a, b) = rows.split_at(rows.len() / 2);
    let mut stack = vec![b, a];
    while let Some(part) = stack.pop() {
        match store.write(part, &[]).await {
            Ok(o) => add(&mut outcome, o),
            Err(e) if e.is_data() && part.len() == 1 => {
                refused.push((part[0].receipt, e.to_string()));
            }
            Err(e) if e.is_data() => {
                let (a, b) = part.split_at(part.len() / 2);
                stack.push(b);
                stack.push(a);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((outcome, refused))
}

fn add(total: &mut WriteOutcome, o: WriteOutcome) {
    total.inserted += o.inserted;
    total.duplicates += o.duplicates;
}

/// Puts one refused receipt on the dead-letter queue as a one-receipt chunk of its original
/// batch, so `dlq redrive` can send it back unchanged once the cause is fixed.
async fn dead_letter_row(
    ctx: &WriterContext,
    d: &Delivery,
    receipt: &Receipt,
    why: &str,
) -> Result<(), SqsError> {
    let chunk = Chunk {
        v: ENVELOPE_VERSION,
        batch_id: d.chunk.batch_id.clone(),
        chunk_index: d.chunk.chunk_index,
        chunk_count: d.chunk.chunk_count,
        receipts: vec![receipt.clone()],
    };
    let encoded = envelope::encode(&chunk, Compression::None).map_err(|e| SqsError {
        op: "encode dead letter",
        detail: e.to_string(),
    })?;
    let reason = format!(
        "receipt {} refused by the database: {why}",
        receipt.receipt_id
    );
    ctx.queue
        .dead_letter(&d.handle, &encoded.body, encoded.encoding, &reason)
        .await?;
    tracing::warn!(message_id = %d.handle.message_id, receipt_id = %receipt.receipt_id, reason = %reason, "Receipt dead-lettered.");
    metrics::counter!(m::RECEIPTS_DEAD_LETTERED).increment(1);
    Ok(())
}

async fn finish(ctx: &WriterContext, batch: Vec<Delivery>, settled: Settled) {
    let to_delete: Vec<Handle> = batch
        .iter()
        .zip(&settled.dispositions)
        .filter(|(_, disp)| **disp == Disposition::Delete)
        .map(|(d, _)| d.handle.clone())
        .collect();
    let failed = ctx.queue.delete(&to_delete).await;
    for (h, e) in &failed {
        // The data is committed; the redelivery will be absorbed by the idempotent write.
        tracing::warn!(message_id = %h.message_id, error = %e, "Could not delete a committed message; its redelivery will be absorbed.");
    }
    ctx.inflight.untrack(batch.iter().map(|d| &d.handle));
    metrics::counter!(m::ROWS_WRITTEN).increment(settled.outcome.inserted);
    metrics::counter!(m::RECEIPTS_DUPLICATE).increment(settled.outcome.duplicates);
    metrics::counter!(m::MESSAGES_DELETED).increment((to_delete.len() - failed.len()) as u64);
    metrics::counter!(m::BATCHES).increment(1);
    tracing::debug!(
        messages = batch.len(),
        inserted = settled.outcome.inserted,
        duplicates = settled.outcome.duplicates,
        dead_lettered = settled.dead_lettered,
        "Batch committed."
    );
}

/// Hands the batch's messages back to the queue at once (visibility 0).
async fn release(ctx: &WriterContext, batch: &[Delivery]) {
    let handles: Vec<Handle> = batch.iter().map(|d| d.handle.clone()).collect();
    for (h, e) in ctx.queue.change_visibility(&handles, 0).await {
        tracing::warn!(message_id = %h.message_id, error = %e, "Could not release a message; it returns after its visibility timeout.");
    }
    ctx.inflight.untrack(&handles);
    metrics::counter!(m::MESSAGES_RELEASED).increment(handles.len() as u64);
}
