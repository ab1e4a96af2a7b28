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
