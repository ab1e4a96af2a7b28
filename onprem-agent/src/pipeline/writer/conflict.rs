//! Conflicts: receipts the write refused because their `receipt_id` is stored with other
//! content (`write.on_conflict = "reject"`). Each goes to the dead-letter queue as a
//! one-receipt chunk with a reason that starts with `conflict` and names both fingerprints; is
//! counted in `sluice_receipts_conflict_total`; and its chunk-ledger row counts it as rejected
//! (the store does that in the write's transaction). Without a dead-letter queue its message is
//! kept, so the queue's redrive policy moves it, as for rows the database refuses.

use sluice_protocol::Receipt;

use super::{dead_letter_row, Disposition, Settled, WriteError, WriterContext};
use crate::io::store::Conflict;
use crate::ops::metrics as m;
use crate::pipeline::consumer::Delivery;

/// Settles the conflicts of a committed batch; a failed dead-letter send fails the batch,
/// which is then retried whole (the write is idempotent, the conflicts are found again).
pub(super) async fn settle(
    ctx: &WriterContext,
    batch: &[Delivery],
    settled: &mut Settled,
) -> Result<(), WriteError> {
    metrics::counter!(m::RECEIPTS_UPDATED).increment(settled.outcome.updated);
    let conflicts = std::mem::take(&mut settled.outcome.conflicts);
    for c in &conflicts {
        let reason = reason(c);
        let Some(first) = batch.iter().position(|d| from_chunk(d, c)) else {
            // Every written row comes from the batch; kept visible in case that ever breaks.
            tracing::error!(receipt_id = %c.receipt.receipt_id, reason = %reason, "Conflict from no message of the batch; nothing dead-lettered.");
            continue;
        };
        if ctx.queue.has_dead_letter_queue() {
            // Logs one WARN with the receipt id and the reason (both fingerprints).
            dead_letter_row(ctx, &batch[first], &c.receipt, &reason).await?;
            settled.dead_lettered += 1;
        } else {
            tracing::warn!(receipt_id = %c.receipt.receipt_id, stored_sha256 = %c.stored, incoming_sha256 = %c.incoming, "Receipt re-sent with other content and no dead-letter queue configured; message kept for the queue's redrive policy.");
            // Every copy of the chunk in the batch: deleting any one would delete the message.
            for (d, disp) in batch.iter().zip(settled.dispositions.iter_mut()) {
                if from_chunk(d, c) && *disp == Disposition::Delete {
                    *disp = Disposition::Keep {
                        reason: reason.clone(),
                    };
                }
            }
        }
        metrics::counter!(m::RECEIPTS_CONFLICT).increment(1);
    }
    Ok(())
}

/// Conflicts of `outcome` from the chunk `d` carries: what its ledger row counts as rejected.
pub(super) fn in_chunk(conflicts: &[Conflict], d: &Delivery) -> usize {
    conflicts.iter().filter(|c| from_chunk(d, c)).count()
}

fn from_chunk(d: &Delivery, c: &Conflict) -> bool {
    d.chunk.batch_id == c.batch_id
        && d.chunk.chunk_index == c.chunk_index
        && d.chunk.receipts.iter().any(|r| same(r, &c.receipt))
}

fn same(a: &Receipt, b: &Receipt) -> bool {
    a.receipt_id == b.receipt_id && a == b
}

/// The dead letter's reason: machine-readable first word `conflict`, then both fingerprints.
pub(super) fn reason(c: &Conflict) -> String {
    format!(
        "conflict: receipt {} is stored with other content; stored_sha256={} incoming_sha256={} (write.on_conflict = \"reject\")",
        c.receipt.receipt_id, c.stored, c.incoming
    )
}
