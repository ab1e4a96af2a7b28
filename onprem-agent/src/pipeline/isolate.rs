//! Finding the rows at fault in a batch the database refused: bisection, committing every part
//! that is taken, until each refused row stands alone.
//!
//! Keeps the guarantees "Poison never stops the agent" (the rows at fault stand alone, every other
//! row is committed) and "A correction is never lost while a batch is bisected" (`by_receipt`,
//! below).
//!
//! When the first rows isolated fail with one SQLSTATE and nothing has committed, the parts
//! not yet tried are tried whole once: if none commits, all fail the same way and the canary
//! (`pipeline::refusal`) is refused the same way too, every row is refused for one reason
//! (schema drift, permissions) and the batch is [`Isolation::Systemic`]; no row is blamed. This
//! costs about twice the bisection depth in transactions instead of one per row.
//!
//! The versions of one receipt stay together: [`by_receipt`] puts the rows of each id side by
//! side in arrival order, and a part is only cut between two ids, so each write sees a
//! correction after its original, as the batch's own write would have (the later version is
//! then a conflict or an update, `[write] on_conflict`, never lost). Parts are written in
//! arrival order. A part holding only the versions of one id that is refused is tried one
//! version at a time, the first first.

use crate::io::store::{IdMap, Row, Store, StoreError, WriteOutcome};
use crate::pipeline::refusal::canary;

/// Commits rows without ledger entries: the store, or a fake in tests.
pub(crate) trait RowWriter {
    async fn write_rows(&self, rows: &[Row<'_>]) -> Result<WriteOutcome, StoreError>;

    /// Whether a plain receipt is refused just like `error` too (the canary).
    async fn refuses_everything(&self, error: &StoreError) -> Result<bool, StoreError>;
}

impl RowWriter for Store {
    async fn write_rows(&self, rows: &[Row<'_>]) -> Result<WriteOutcome, StoreError> {
        self.write(rows, &[]).await
    }

    async fn refuses_everything(&self, error: &StoreError) -> Result<bool, StoreError> {
        Ok(canary(self).await?.is_some_and(|e| e.same_refusal(error)))
    }
}

/// What the bisection found.
#[derive(Debug)]
pub(crate) enum Isolation<'a> {
    /// Each refused row alone with its error; every other row committed.
    Found {
        outcome: WriteOutcome,
        /// Whether any transaction committed (a sign that writes are taken).
        committed: bool,
        refused: Vec<(Row<'a>, StoreError)>,
    },
    /// Every row tried was refused with `error`'s SQLSTATE, nothing committed, and the canary
    /// was refused the same way.
    Systemic { error: StoreError },
}

enum Part<'r, 'a> {
    Untried(&'r [Row<'a>]),
    Failed(&'r [Row<'a>], StoreError),
}

/// The rows to bisect: each id's versions side by side, ids in the order they first came,
/// versions in the order they came; an exact copy of a row already kept (a chunk delivered
/// twice) is dropped, so it is neither written nor dead-lettered twice.
pub(crate) fn by_receipt<'a>(rows: &[Row<'a>]) -> Vec<Row<'a>> {
    let mut groups: IdMap<&str, Vec<Row<'a>>> =
        IdMap::with_capacity_and_hasher(rows.len(), Default::default());
    let mut order: Vec<&str> = Vec::new();
    for row in rows {
        let id = row.receipt.receipt_id.as_str();
        let group = groups.entry(id).or_insert_with(|| {
            order.push(id);
            Vec::new()
        });
        if !group.iter().any(|kept| kept.receipt == row.receipt) {
            group.push(*row);
        }
    }
    order
        .into_iter()
        .flat_map(|id| groups.remove(id).unwrap_or_default())
        .collect()
}

/// Where to cut a part of at least two rows: the boundary between two ids nearest its middle,
/// or after the first row when the part holds only the versions of one id.
fn cut(part: &[Row<'_>]) -> usize {
    let id = |i: usize| part[i].receipt.receipt_id.as_str();
    let mid = part.len() / 2;
    (0..part.len())
        .flat_map(|d| [mid.saturating_sub(d), mid + d])
        .find(|&i| i > 0 && i < part.len() && id(i - 1) != id(i))
        .unwrap_or(1)
}

/// Bisects `rows` (from [`by_receipt`], refused as a whole with `first_error`). Errors other
/// than a refusal end it: the caller retries the batch.
pub(crate) async fn isolate<'a>(
    writer: &impl RowWriter,
    rows: &[Row<'a>],
    first_error: StoreError,
) -> Result<Isolation<'a>, StoreError> {
    let mut outcome = WriteOutcome::default();
    let mut committed = false;
    let mut confirmed = false;
    let mut refused: Vec<(Row<'a>, StoreError)> = Vec::new();
    let mut stack = vec![Part::Failed(rows, first_error)];
    while let Some(part) = stack.pop() {
        let (part, error) = match part {
            Part::Failed(p, e) => (p, e),
            Part::Untried(p) => match writer.write_rows(p).await {
                Ok(o) => {
                    add(&mut outcome, o);
                    committed = true;
                    continue;
                }
                Err(e) if e.is_refused() => (p, e),
                Err(e) => return Err(e),
            },
        };
        match part {
            [] => {}
            [row] => refused.push((*row, error)),
            _ => {
                let (a, b) = part.split_at(cut(part));
                stack.push(Part::Untried(b));
                stack.push(Part::Untried(a));
                continue;
            }
        }
        if committed || confirmed || refused.len() < 2 || !same_code(&refused) {
            continue;
        }
        // Two rows refused the same way and nothing taken yet: try the rest whole, once, in
        // arrival order (the top of the stack first).
        confirmed = true;
        let mut tried = Vec::new();
        for p in std::mem::take(&mut stack).into_iter().rev() {
            tried.push(match p {
                Part::Untried(rows) => match writer.write_rows(rows).await {
                    Ok(o) => {
                        add(&mut outcome, o);
                        committed = true;
                        continue;
                    }
                    Err(e) if e.is_refused() => Part::Failed(rows, e),
                    Err(e) => return Err(e),
                },
                failed => failed,
            });
        }
        tried.reverse();
        stack = tried;
        let Some(code) = refused[0].1.refused_code().map(str::to_owned) else {
            continue;
        };
        let all_same = stack.iter().all(|p| match p {
            Part::Failed(_, e) => e.refused_code() == Some(code.as_str()),
            Part::Untried(_) => false,
        });
        if !committed && all_same && writer.refuses_everything(&refused[0].1).await? {
            let error = refused.swap_remove(0).1;
            return Ok(Isolation::Systemic { error });
        }
    }
    Ok(Isolation::Found {
        outcome,
        committed,
        refused,
    })
}

fn same_code(refused: &[(Row<'_>, StoreError)]) -> bool {
    let first = refused.first().and_then(|(_, e)| e.refused_code());
    refused.iter().all(|(_, e)| e.refused_code() == first)
}

pub(crate) fn add(total: &mut WriteOutcome, o: WriteOutcome) {
    total.inserted += o.inserted;
    total.updated += o.updated;
    total.duplicates += o.duplicates;
    total.conflicts.extend(o.conflicts);
    total.photo_bytes += o.photo_bytes;
    for (chunk, n) in o.stored_by_chunk {
        *total.stored_by_chunk.entry(chunk).or_default() += n;
    }
}

#[cfg(test)]
mod tests;
