//! Tests of `isolate`.

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
            photo: None,
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

/// A [`Fake`] that also logs every part it is asked to write, as `merchant` lists.
struct Logged {
    inner: Fake,
    parts: std::cell::RefCell<Vec<Vec<String>>>,
}

impl RowWriter for Logged {
    async fn write_rows(&self, rows: &[Row<'_>]) -> Result<WriteOutcome, StoreError> {
        self.parts
            .borrow_mut()
            .push(rows.iter().map(|r| r.receipt.merchant.clone()).collect());
        self.inner.write_rows(rows).await
    }

    async fn refuses_everything(&self, error: &StoreError) -> Result<bool, StoreError> {
        self.inner.refuses_everything(error).await
    }
}

/// Receipts named by merchant; `same_id` pairs (later, earlier) give the later one the
/// earlier one's `receipt_id`: a correction of it.
fn versions(merchants: &[&str], same_id: &[(usize, usize)]) -> Vec<Receipt> {
    let mut rs = receipts(merchants);
    for &(later, earlier) in same_id {
        rs[later].receipt_id = rs[earlier].receipt_id.clone();
    }
    rs
}

#[test]
fn by_receipt_keeps_each_version_beside_its_original_and_drops_exact_copies() {
    // v1 and v2 share an id; the copy of "c" is the same row delivered twice.
    let rs = versions(&["v1", "b", "v2", "c", "c"], &[(2, 0), (4, 3)]);
    let grouped = by_receipt(&rows(&rs));
    let merchants: Vec<&str> = grouped
        .iter()
        .map(|r| r.receipt.merchant.as_str())
        .collect();
    assert_eq!(merchants, ["v1", "v2", "b", "c"]);
}

#[test]
fn a_part_is_cut_between_two_ids_nearest_its_middle() {
    let rs = versions(&["a1", "a2", "a3", "b", "c", "d"], &[(1, 0), (2, 0)]);
    let grouped = by_receipt(&rows(&rs));
    assert_eq!(cut(&grouped), 3, "not inside a's three versions");
    let rs = versions(
        &["a", "b1", "b2", "b3", "b4", "c"],
        &[(2, 1), (3, 1), (4, 1)],
    );
    let grouped = by_receipt(&rows(&rs));
    assert_eq!(
        cut(&grouped),
        1,
        "the boundary after a is as near the middle as any"
    );
    let rs = versions(&["x1", "x2", "x3"], &[(1, 0), (2, 0)]);
    assert_eq!(
        cut(&by_receipt(&rows(&rs))),
        1,
        "one id: the first version alone"
    );
}

#[tokio::test]
async fn a_correction_is_written_with_its_original_in_order_while_a_bad_row_is_isolated() {
    // The original, a refused row, the correction and two good rows, as one batch holds them.
    let rs = versions(&["v1", "pill", "v2", "ok", "ok2"], &[(2, 0)]);
    let writer = Logged {
        inner: Fake {
            bad: vec![("pill", "P0001")],
            all: None,
            calls: Cell::new(0),
        },
        parts: Default::default(),
    };
    let grouped = by_receipt(&rows(&rs));
    let Isolation::Found { refused, .. } = isolate(&writer, &grouped, whole("P0001"))
        .await
        .expect("isolated")
    else {
        panic!("not systemic");
    };
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0.receipt.merchant, "pill");
    let parts = writer.parts.borrow();
    for part in parts.iter() {
        let v1 = part.iter().position(|m| m == "v1");
        let v2 = part.iter().position(|m| m == "v2");
        assert_eq!(
            v1.is_some(),
            v2.is_some(),
            "versions cut apart in {parts:?}"
        );
        assert!(v1 <= v2, "the correction before its original in {part:?}");
    }
    assert!(
        parts.iter().any(|p| p.contains(&"v2".to_owned())),
        "the correction was written: {parts:?}"
    );
}

#[tokio::test]
async fn a_refused_part_of_one_receipts_versions_is_tried_one_version_at_a_time_in_order() {
    let rs = versions(&["v1", "v2"], &[(1, 0)]);
    let writer = Logged {
        inner: Fake {
            bad: vec![("v1", "P0001")],
            all: None,
            calls: Cell::new(0),
        },
        parts: Default::default(),
    };
    let grouped = by_receipt(&rows(&rs));
    let Isolation::Found {
        outcome, refused, ..
    } = isolate(&writer, &grouped, whole("P0001"))
        .await
        .expect("isolated")
    else {
        panic!("not systemic");
    };
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0.receipt.merchant, "v1");
    assert_eq!(outcome.inserted, 1, "the correction stands on its own");
    assert_eq!(*writer.parts.borrow(), [vec!["v1"], vec!["v2"]]);
}
