//! Writers: take a batch, wait for its tokens (and, when capped, for its part of the database's
//! time), settle it in transactions (`pipeline::settle`), then act on each message (delete,
//! keep, or release).
//!
//! Keeps the guarantee "A message is deleted only after its receipts are committed": a batch's
//! messages are acted on only once `settle` returns, and a write whose commit is unknown is
//! retried, never followed by a delete.
//!
//! Where an error leads depends on what it says:
//! - a refusal of some rows: they are dead-lettered with the SQLSTATE and message, the rest
//!   stored (`pipeline::settle`);
//! - a refusal of every row: systemic; the batch is released, receiving pauses and a probe
//!   retries with backoff (`pipeline::refusal`);
//! - a lost connection, a server shutdown, overload: the commit's outcome is unknown, so
//!   nothing is deleted; the same batch is retried with backoff (the write is idempotent)
//!   while the heartbeat keeps its messages invisible, and receiving pauses;
//! - timeouts again and again while the database takes a plain receipt at once: the batch is
//!   written in halves, and a message that still times out alone is released with a delay
//!   (`pipeline::slow`).
//!
//! Order is what keeps data safe: a message is deleted only after its receipts are committed
//! or its refused rows are on the dead-letter queue.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::io::sqs::Handle;
use crate::io::store::{dedup, is_lock_wait, Row, StoreError};
use crate::pipeline::backoff::outage_backoff;
use crate::pipeline::delivery::{Delivery, WriterContext};
use crate::pipeline::health::{BUDGET_LEASE_LAPSED, DATABASE_LOCK_WAIT, PHOTO_STORE_UNAVAILABLE};
use crate::pipeline::photos;
use crate::pipeline::refusal::canary;
use crate::pipeline::settle::{settle, Disposition, Settled, WriteError};
use crate::pipeline::slow::{RELEASE_DELAY, TIMEOUTS_BEFORE_SPLIT};
use crate::telemetry::names as m;

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
        // While every write is refused, what was received before the pause goes back.
        if cancel.is_cancelled() {
            release_at_shutdown(&ctx, &batch).await;
            continue;
        }
        if ctx.health.receiving_paused() {
            release(&ctx, &batch).await;
            continue;
        }
        // Without `[photos]`, a carried photo's message goes back, never stored without it.
        let batch = photos::without_unconfigured(&ctx, batch).await;
        if batch.is_empty() {
            continue;
        }
        let rows = u32::try_from(unique_rows(&batch)).unwrap_or(u32::MAX);
        let waited = Instant::now();
        let waiting = ctx.liveness.waiting();
        tokio::select! {
            _ = ctx.throttle.limiter().acquire(rows) => {}
            _ = cancel.cancelled() => { release_at_shutdown(&ctx, &batch).await; continue; }
        }
        // Then its part of the database's time, when `throttle.max_database_share` is set.
        tokio::select! {
            _ = ctx.throttle.within_database_share() => drop(waiting),
            _ = cancel.cancelled() => { release_at_shutdown(&ctx, &batch).await; continue; }
        }
        metrics::histogram!(m::LIMITER_WAIT_SECONDS).record(waited.elapsed().as_secs_f64());
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            _ = cancel.cancelled() => { release_at_shutdown(&ctx, &batch).await; continue; }
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
    let rows: Vec<Row<'_>> = batch.iter().flat_map(Delivery::store_rows).collect();
    dedup(&rows).len()
}

/// Writes a batch, retrying what may not have committed. A batch that keeps timing out while
/// the database takes a plain receipt at once is written in halves (`pipeline::slow`), one
/// after the other in arrival order.
async fn write_with_retry(ctx: &WriterContext, batch: Vec<Delivery>, cancel: &CancellationToken) {
    let mut pending = vec![batch];
    while let Some(batch) = pending.pop() {
        match write_until_settled(ctx, batch, cancel).await {
            Written::Settled => {}
            Written::Split(first, second) => {
                pending.push(second);
                pending.push(first);
            }
            Written::ShutDown => {
                for rest in pending.drain(..) {
                    release_at_shutdown(ctx, &rest).await;
                }
                return;
            }
        }
    }
}

/// How [`write_until_settled`] left a batch.
enum Written {
    /// Written, dead-lettered or released: each message has its outcome.
    Settled,
    /// Timed out again and again on its own: to be written as these two halves.
    Split(Vec<Delivery>, Vec<Delivery>),
    /// Shut down first; the batch was released.
    ShutDown,
}

async fn write_until_settled(
    ctx: &WriterContext,
    batch: Vec<Delivery>,
    cancel: &CancellationToken,
) -> Written {
    let mut delays = outage_backoff();
    let mut timeouts = 0;
    loop {
        if !ctx.throttle.holds_lease(Instant::now()) && !wait_for_lease(ctx, cancel).await {
            release_at_shutdown(ctx, &batch).await;
            return Written::ShutDown;
        }
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
                ctx.slow.committed(
                    batch.iter().map(|d| d.handle.message_id.as_str()),
                    Instant::now(),
                );
                ctx.report.committed();
                finish(ctx, batch, settled).await;
                return Written::Settled;
            }
            Err(WriteError::Systemic { error }) => {
                refused_everywhere(ctx, &batch, &error).await;
                return Written::Settled;
            }
            // A photo not read back from the spool is the agent's disk, not the database's
            // fault: the retry fetches the batch's photos again.
            Err(e @ (WriteError::Photos(_) | WriteError::Store(StoreError::Spool(_)))) => {
                metrics::counter!(m::ERRORS, "kind" => "photo_store").increment(1);
                ctx.health.raise(
                    PHOTO_STORE_UNAVAILABLE,
                    format!(
                        "the photos of a batch cannot be fetched or stored: {e}. Nothing is \
                         stored or deleted; retrying with backoff, messages kept (check \
                         photos.bucket, photos.endpoint, the agent's s3:GetObject permission, \
                         photos.directory, the disk of the photo spool)"
                    ),
                );
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, messages = batch.len(), retry_in = ?delay, "Photos of a batch not fetched; nothing stored or deleted, retrying it.");
                let _waiting = ctx.liveness.waiting();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => {
                        release_at_shutdown(ctx, &batch).await;
                        return Written::ShutDown;
                    }
                }
            }
            Err(WriteError::Store(e)) if e.is_refused() => {
                // Refused outside the rows' bisection (the chunk ledger): nothing to blame.
                refused_everywhere(ctx, &batch, &e).await;
                return Written::Settled;
            }
            Err(WriteError::Store(e)) => {
                metrics::counter!(m::ERRORS, "kind" => e.kind()).increment(1);
                ctx.throttle.observe_error(&e);
                if is_lock_wait(&e) {
                    timeouts += 1;
                    if timeouts >= TIMEOUTS_BEFORE_SPLIT {
                        timeouts = 0;
                        if takes_a_plain_receipt(ctx).await {
                            return split_or_release(ctx, batch, &e).await;
                        }
                    }
                    ctx.health
                        .raise(DATABASE_LOCK_WAIT, lock_wait_reason(&e, ctx));
                }
                // Overload is the throttle's to answer (it backs off); receiving pauses
                // only while the database does not take writes at all.
                if !e.is_overload() {
                    ctx.health.db_down(&e);
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                // The commit may or may not have happened (a connection lost at COMMIT): nothing
                // is deleted, and the retry is absorbed by the idempotent write either way.
                tracing::warn!(error = %e, messages = batch.len(), retry_in = ?delay, "Batch not confirmed committed; nothing deleted, retrying it.");
                let _waiting = ctx.liveness.waiting();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => {
                        release_at_shutdown(ctx, &batch).await;
                        return Written::ShutDown;
                    }
                }
            }
        }
    }
}

/// Whether the database writes a plain receipt (the canary, rolled back) without timing out:
/// then a batch that keeps timing out is slow because of its own rows.
async fn takes_a_plain_receipt(ctx: &WriterContext) -> bool {
    let _waiting = ctx.liveness.waiting_up_to(ctx.store.timeouts().deadline());
    matches!(canary(&ctx.store).await, Ok(None))
}

/// A batch times out while the database takes other writes: two halves to write apart, or,
/// for one message, a release with a delay under the `slow_message` condition.
async fn split_or_release(
    ctx: &WriterContext,
    mut batch: Vec<Delivery>,
    e: &StoreError,
) -> Written {
    // The database takes writes: the wait is this batch's, not the tables'.
    ctx.health.clear(DATABASE_LOCK_WAIT);
    if batch.len() > 1 {
        let second = batch.split_off(batch.len() / 2);
        tracing::warn!(error = %e, messages = batch.len() + second.len(), "Batch keeps timing out while the database takes a plain receipt at once; writing its halves apart.");
        return Written::Split(batch, second);
    }
    for d in &batch {
        tracing::warn!(error = %e, message_id = %d.handle.message_id, batch_id = %d.chunk.batch_id, chunk_index = d.chunk.chunk_index, retry_in = ?RELEASE_DELAY, "Message keeps timing out on its own; released to the queue, the rest goes on.");
        ctx.slow.released(&d.handle.message_id, e, Instant::now());
    }
    release_after(ctx, &batch, RELEASE_DELAY).await;
    Written::Settled
}

/// Waits, as a known wait, until this agent holds its share of the budget again (a heartbeat
/// went through), with `budget_lease_lapsed` raised meanwhile; `false` if shut down first.
async fn wait_for_lease(ctx: &WriterContext, cancel: &CancellationToken) -> bool {
    ctx.health.raise(
        BUDGET_LEASE_LAPSED,
        "no heartbeat of this agent went through the agents table within its lease, so the \
         other agents may have taken its share of the budget: writing is paused until one does \
         (check the database connection and locks on the agents table)",
    );
    let _waiting = ctx.liveness.waiting();
    let leased = tokio::select! {
        _ = ctx.throttle.leased() => true,
        _ = cancel.cancelled() => false,
    };
    if leased {
        ctx.health.clear(BUDGET_LEASE_LAPSED);
    }
    leased
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

async fn finish(ctx: &WriterContext, batch: Vec<Delivery>, settled: Settled) {
    let pick = |want: fn(&Disposition) -> bool| -> Vec<Handle> {
        batch
            .iter()
            .zip(&settled.dispositions)
            .filter(|(_, disp)| want(disp))
            .map(|(d, _)| d.handle.clone())
            .collect()
    };
    let to_delete = pick(|d| *d == Disposition::Delete);
    let to_release = pick(|d| matches!(d, Disposition::Release { .. }));
    let failed = ctx.queue.delete(&to_delete).await;
    for (h, e) in &failed {
        // The data is committed; the redelivery will be absorbed by the idempotent write.
        tracing::warn!(message_id = %h.message_id, error = %e, "Could not delete a committed message; its redelivery will be absorbed.");
    }
    ctx.inflight
        .release(&ctx.queue, &to_release, Duration::ZERO)
        .await;
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
        released = to_release.len(),
        "Batch committed."
    );
}

/// Every row of the batch is refused the same way: release it, pause receiving and let the
/// probe retry (one ERROR, from the condition).
async fn refused_everywhere(ctx: &WriterContext, batch: &[Delivery], error: &StoreError) {
    metrics::counter!(m::ERRORS, "kind" => error.kind()).increment(1);
    ctx.refusals.systemic(error);
    release(ctx, batch).await;
}

/// [`release`] once no receive of this agent is on its way, so none takes the batch again.
async fn release_at_shutdown(ctx: &WriterContext, batch: &[Delivery]) {
    ctx.receiving.settled().await;
    release(ctx, batch).await;
}

/// Hands the batch's messages back to the queue at once (visibility 0).
async fn release(ctx: &WriterContext, batch: &[Delivery]) {
    release_after(ctx, batch, Duration::ZERO).await;
}

/// Hands the batch's messages back to the queue, visible again after `delay`.
async fn release_after(ctx: &WriterContext, batch: &[Delivery], delay: Duration) {
    let handles: Vec<Handle> = batch.iter().map(|d| d.handle.clone()).collect();
    ctx.inflight.release(&ctx.queue, &handles, delay).await;
}
