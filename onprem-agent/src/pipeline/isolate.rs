//! Finding the rows at fault in a batch the database refused: bisection, committing every part
//! that is taken, until each refused row stands alone.
//!
//! When the first rows isolated fail with one SQLSTATE and nothing has committed, the parts
//! not yet tried are tried whole once: if none commits, all fail the same way and the canary
//! (`pipeline::refusal`) is refused the same way too, every row is refused for one reason
//! (schema drift, permissions) and the batch is [`Isolation::Systemic`]; no row is blamed. This
//! costs about twice the bisection depth in transactions instead of one per row.

use crate::io::store::{Row, Store, StoreError, WriteOutcome};
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

/// Bisects `rows` (distinct receipts, refused as a whole with `first_error`). Errors other than
/// a refusal end it: the caller retries the batch.
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
                let (a, b) = part.split_at(part.len() / 2);
                stack.push(Part::Untried(b));
                stack.push(Part::Untried(a));
                continue;
            }
        }
        if committed || confirmed || refused.len() < 2 || !same_code(&refused) {
            continue;
        }
        // Two rows refused the same way and nothing taken yet: try the rest whole, once.
        confirmed = true;
        for p in std::mem::take(&mut stack) {
            stack.push(match p {
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
    for (chunk, n) in o.stored_by_chunk {
        *total.stored_by_chunk.entry(chunk).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    use sluice_protocol::Receipt;

    /// Refuses rows whose merchant is in `bad` (with their own SQLSTATE), or every row with
    /// `all`; counts transactions.
    struct Fake {
        bad: Vec<(&'static str, &'static str)>,
        all: Option<&'static str>,
        calls: Cell<usize>,
    }

    impl RowWriter for Fake {
        async fn write_rows(&self, rows: &[Row<'_>]) -> Result<WriteOutcome, StoreError> {
            self.calls.set(self.calls.get() + 1);
            let refused = |code: &str| StoreError::Refused {
                code: code.into(),
                message: "refused".into(),
            };
            if let Some(code) = self.all {
                return Err(refused(code));
            }
            for r in rows {
                if let Some((_, code)) = self.bad.iter().find(|(m, _)| *m == r.receipt.merchant) {
                    return Err(refused(code));
                }
            }
            Ok(WriteOutcome {
                inserted: rows.len() as u64,
                ..WriteOutcome::default()
            })
        }

        async fn refuses_everything(&self, error: &StoreError) -> Result<bool, StoreError> {
            Ok(self.all.is_some() && self.all == error.refused_code())
        }
    }

    fn receipts(merchants: &[&str]) -> Vec<Receipt> {
        merchants
            .iter()
            .enumerate()
            .map(|(i, m)| {
                serde_json::from_value(serde_json::json!({
                    "receipt_id": format!("00000000-0000-4000-8000-{i:012}"),
                    "tenant_id": "t", "merchant": m, "issued_on": "2026-01-02",
                    "currency": "EUR", "total": "1.00", "items": [],
                }))
                .expect("a valid receipt")
            })
            .collect()
    }

    fn rows(receipts: &[Receipt]) -> Vec<Row<'_>> {
        receipts
            .iter()
            .map(|receipt| Row {
                receipt,
                batch_id: "b",
                chunk_index: 0,
            })
            .collect()
    }

    fn whole(code: &str) -> StoreError {
        StoreError::Refused {
            code: code.into(),
            message: "refused".into(),
        }
    }

    fn merchants(n: usize, bad: &[(usize, &'static str)]) -> Vec<&'static str> {
        (0..n)
            .map(|i| bad.iter().find(|(j, _)| *j == i).map_or("ok", |(_, m)| *m))
            .collect()
    }

    #[tokio::test]
    async fn one_bad_row_stands_alone_and_the_rest_commit() {
        let rs = receipts(&merchants(1000, &[(637, "pill")]));
        let fake = Fake {
            bad: vec![("pill", "P0001")],
            all: None,
            calls: Cell::new(0),
        };
        let Isolation::Found {
            outcome,
            committed,
            refused,
        } = isolate(&fake, &rows(&rs), whole("P0001"))
            .await
            .expect("isolated")
        else {
            panic!("not systemic");
        };
        assert!(committed);
        assert_eq!(outcome.inserted, 999);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0.receipt.merchant, "pill");
        assert_eq!(refused[0].1.refused_code(), Some("P0001"));
        assert!(
            fake.calls.get() <= 2 * 10,
            "{} transactions",
            fake.calls.get()
        );
    }

    #[tokio::test]
    async fn two_neighbours_refused_the_same_way_are_not_systemic() {
        let rs = receipts(&merchants(8, &[(0, "pill"), (1, "pill")]));
        let fake = Fake {
            bad: vec![("pill", "23514")],
            all: None,
            calls: Cell::new(0),
        };
        let got = isolate(&fake, &rows(&rs), whole("23514"))
            .await
            .expect("isolated");
        let Isolation::Found {
            outcome, refused, ..
        } = got
        else {
            panic!("two bad rows among good ones are the rows' fault: {got:?}");
        };
        assert_eq!(outcome.inserted, 6);
        assert_eq!(refused.len(), 2);
    }

    #[tokio::test]
    async fn rows_all_bad_while_the_canary_is_taken_are_each_blamed() {
        let rs = receipts(&merchants(
            4,
            &[(0, "pill"), (1, "pill"), (2, "pill"), (3, "pill")],
        ));
        let fake = Fake {
            bad: vec![("pill", "23514")],
            all: None,
            calls: Cell::new(0),
        };
        let got = isolate(&fake, &rows(&rs), whole("23514"))
            .await
            .expect("isolated");
        let Isolation::Found {
            committed, refused, ..
        } = got
        else {
            panic!("the database takes a plain receipt: the rows are at fault: {got:?}");
        };
        assert!(!committed);
        assert_eq!(refused.len(), 4);
    }

    #[tokio::test]
    async fn every_row_refused_one_way_is_systemic_in_few_transactions() {
        let rs = receipts(&merchants(500, &[]));
        let fake = Fake {
            bad: Vec::new(),
            all: Some("23502"),
            calls: Cell::new(0),
        };
        let got = isolate(&fake, &rows(&rs), whole("23502"))
            .await
            .expect("isolated");
        let Isolation::Systemic { error } = got else {
            panic!("every row refused: {got:?}");
        };
        assert_eq!(error.refused_code(), Some("23502"));
        assert!(
            fake.calls.get() <= 2 * 9 + 2,
            "{} transactions",
            fake.calls.get()
        );
    }

    #[tokio::test]
    async fn two_rows_refused_the_same_way_are_systemic() {
        let rs = receipts(&merchants(2, &[]));
        let fake = Fake {
            bad: Vec::new(),
            all: Some("42501"),
            calls: Cell::new(0),
        };
        let got = isolate(&fake, &rows(&rs), whole("42501"))
            .await
            .expect("isolated");
        assert!(matches!(got, Isolation::Systemic { .. }), "{got:?}");
    }

    #[tokio::test]
    async fn a_one_row_batch_blames_its_row() {
        let rs = receipts(&merchants(1, &[]));
        let fake = Fake {
            bad: Vec::new(),
            all: Some("23502"),
            calls: Cell::new(0),
        };
        let got = isolate(&fake, &rows(&rs), whole("23502"))
            .await
            .expect("isolated");
        let Isolation::Found {
            committed, refused, ..
        } = got
        else {
            panic!("one row cannot prove a systemic fault: {got:?}");
        };
        assert!(!committed);
        assert_eq!(refused.len(), 1);
        assert_eq!(fake.calls.get(), 0, "the batch's own failure is the proof");
    }
}
