//! Tests of `sql`.

use sluice_protocol::report::Rejection;
use sluice_protocol::{Fingerprint, Receipt};

use super::*;
use crate::io::store::Conflict;

fn receipt(id: u32) -> Receipt {
    let v = serde_json::json!({
        "receipt_id": format!("00000000-0000-4000-8000-{id:012}"),
        "tenant_id": "t", "merchant": "m", "issued_on": "2024-01-01",
        "currency": "EUR", "total": "1.00",
    });
    Receipt::from_value(&v, 0).unwrap_or_else(|e| panic!("invalid fixture: {e:?}"))
}

fn entry(chunk: u32, receipts: u32) -> LedgerEntry {
    LedgerEntry {
        batch_id: "b".into(),
        chunk_index: chunk,
        chunk_count: 2,
        receipts,
        message_id: format!("m{chunk}"),
        ..LedgerEntry::default()
    }
}

#[test]
fn each_chunk_counts_its_own_stored_conflicts_and_the_rest_as_duplicates() {
    let conflict = Conflict {
        receipt: receipt(7),
        batch_id: "b".into(),
        chunk_index: 1,
        stored: Fingerprint::from_slice(&[1; 32]).expect("32 bytes"),
        incoming: Fingerprint::from_slice(&[2; 32]).expect("32 bytes"),
    };
    let outcome = WriteOutcome {
        conflicts: vec![conflict.clone()],
        stored_by_chunk: [(("b".to_owned(), 0), 4), (("b".to_owned(), 1), 2)]
            .into_iter()
            .collect(),
        ..WriteOutcome::default()
    };
    // Chunk 1 had a refused row found earlier (a bisection): counted before this write.
    let earlier = LedgerEntry {
        rejected: 1,
        ..entry(1, 5)
    };
    let got = with_outcome(&[entry(0, 5), earlier], &outcome);
    let figures: Vec<(u32, u32, u32, u32)> = got
        .iter()
        .map(|l| (l.stored, duplicates(l), l.conflicts, l.rejected))
        .collect();
    assert_eq!(figures, vec![(4, 1, 0, 0), (2, 1, 1, 1)]);
    assert!(got[0].rejections.is_empty());
    assert_eq!(
        got[1].rejections,
        vec![Rejection {
            receipt_id: conflict.receipt.receipt_id.clone(),
            reason: format!(
                "conflict: receipt {} is stored with other content; stored_sha256={} incoming_sha256={} (write.on_conflict = \"reject\")",
                conflict.receipt.receipt_id, conflict.stored, conflict.incoming
            ),
        }]
    );
}
