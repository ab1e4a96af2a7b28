//! Conflicts: receipts the write refused because their `receipt_id` is stored with other
//! content (`write.on_conflict = "reject"`). Each goes to the dead-letter queue as a
//! one-receipt chunk with a reason that starts with `conflict` and names both fingerprints; is
//! counted in `sluice_receipts_conflict_total`; and its chunk-ledger row counts it as rejected
//! (the store does that in the write's transaction). Without a dead-letter queue its message is
//! kept, so the queue's redrive policy moves it, as for rows the database refuses.

use super::{dead_letter_row, Disposition, Settled};
use crate::io::store::Conflict;
use crate::pipeline::delivery::{Delivery, WriterContext};
use crate::telemetry::names as m;

/// Settles the conflicts of a committed batch. A failed dead-letter send releases the message
/// (like a refused row's): it comes back, its committed rows count as duplicates and the
/// conflict is found again.
pub(super) async fn settle(ctx: &WriterContext, batch: &[Delivery], settled: &mut Settled) {
    metrics::counter!(m::RECEIPTS_UPDATED).increment(settled.outcome.updated);
    let conflicts = std::mem::take(&mut settled.outcome.conflicts);
    for c in &conflicts {
        let reason = c.reason();
        let Some(first) = batch.iter().position(|d| from_chunk(d, c)) else {
            // Every written row comes from the batch; kept visible in case that ever breaks.
            tracing::error!(receipt_id = %c.receipt.receipt_id, reason = %reason, "Conflict from no message of the batch; nothing dead-lettered.");
            continue;
        };
        if ctx.queue.has_dead_letter_queue() {
            // Logs one WARN with the receipt id and the reason (both fingerprints).
            match dead_letter_row(ctx, &batch[first], &c.receipt, &reason).await {
                Ok(()) => {
                    settled.dead_lettered += 1;
                    ctx.health.dead_letter_sent();
                }
                Err(e) => {
                    ctx.health.dead_letter_failed(&e);
                    tracing::warn!(receipt_id = %c.receipt.receipt_id, error = %e, "Dead-letter send of a conflict failed; the message will be released.");
                    mark(batch, settled, c, || Disposition::Release {
                        reason: reason.clone(),
                    });
                }
            }
        } else {
            tracing::warn!(receipt_id = %c.receipt.receipt_id, stored_sha256 = %c.stored, incoming_sha256 = %c.incoming, "Receipt re-sent with other content and no dead-letter queue configured; message kept for the queue's redrive policy.");
            mark(batch, settled, c, || Disposition::Keep {
                reason: reason.clone(),
            });
        }
        metrics::counter!(m::RECEIPTS_CONFLICT).increment(1);
    }
}

/// Gives every message carrying the conflict's chunk (a redelivered copy too: deleting any one
/// would delete the message) the disposition `to`, unless it is already kept or released.
fn mark(batch: &[Delivery], settled: &mut Settled, c: &Conflict, to: impl Fn() -> Disposition) {
    for (d, disp) in batch.iter().zip(settled.dispositions.iter_mut()) {
        if from_chunk(d, c) && *disp == Disposition::Delete {
            *disp = to();
        }
    }
}

/// Conflicts of `outcome` from the chunk `d` carries: what its ledger row counts and names.
pub(super) fn of_chunk<'c>(conflicts: &'c [Conflict], d: &Delivery) -> Vec<&'c Conflict> {
    conflicts.iter().filter(|c| from_chunk(d, c)).collect()
}

fn from_chunk(d: &Delivery, c: &Conflict) -> bool {
    d.carries(&c.batch_id, c.chunk_index, &c.receipt)
}
