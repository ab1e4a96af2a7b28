use super::*;
use crate::upload::RequestOutcome;
use sluice_protocol::{BatchState, Rejection};

fn request(first: usize, last: usize, batch: Option<&str>) -> RequestOutcome {
    RequestOutcome {
        first_line: first,
        last_line: last,
        receipts: last - first + 1,
        idempotency_key: String::new(),
        batch_id: batch.map(str::to_owned),
        chunks: 1,
        bytes: 0,
        attempts: 1,
        error: batch.is_none().then(|| "HTTP 400".to_owned()),
    }
}

fn status(id: &str, receipts: u64, done: (u64, u64), rejections: &[(&str, &str)]) -> BatchStatus {
    let (stored, duplicates) = done;
    let conflicts = rejections
        .iter()
        .filter(|r| r.1.starts_with("conflict"))
        .count() as u64;
    let rejected = rejections.len() as u64 - conflicts;
    let settled = stored + duplicates + conflicts + rejected;
    BatchStatus {
        batch_id: id.into(),
        state: BatchState::of(1, u64::from(settled == receipts), conflicts + rejected),
        receipts,
        chunks: 1,
        chunks_done: u64::from(settled == receipts),
        stored,
        duplicates,
        conflicts,
        rejected,
        rejections: rejections
            .iter()
            .map(|(id, reason)| Rejection {
                receipt_id: (*id).into(),
                reason: (*reason).into(),
            })
            .collect(),
        rejections_total: conflicts + rejected,
        accepted_at: None,
        completed_at: None,
        webhook: None,
    }
}

fn line(id: &str) -> String {
    format!("{{\"receipt_id\":\"{id}\",\"total\":\"1.00\"}}\n")
}

#[test]
fn batches_are_followed_once_each_with_all_their_line_ranges() {
    let report = UploadReport {
        requests: vec![
            request(1, 3, Some("a")),
            request(4, 6, None),
            request(7, 9, Some("b")),
            request(10, 12, Some("a")),
        ],
        accepted: 9,
        refused: 3,
        photos: None,
    };
    let batches = batches_of(&report);
    let got: Vec<(&str, &[(usize, usize)])> = batches
        .iter()
        .map(|b| (b.batch_id.as_str(), b.lines.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![("a", &[(1, 3), (10, 12)][..]), ("b", &[(7, 9)][..])]
    );
}

#[test]
fn refused_receipts_are_named_by_the_line_of_their_own_batch() {
    // Line 2 is blank; "r-dup" is on line 3 (batch a) and line 6 (batch b), refused in b only.
    let file = [
        line("r-1"),
        "\n".to_owned(),
        line("r-dup"),
        line("r-2"),
        line("r-3"),
        line("r-dup"),
        "not json\n".to_owned(),
    ]
    .concat();
    let batches = vec![
        FollowedBatch {
            batch_id: "a".into(),
            lines: vec![(1, 4)],
            status: Some(status(
                "a",
                3,
                (2, 0),
                &[("r-1", "P0001: tax exceeds total")],
            )),
        },
        FollowedBatch {
            batch_id: "b".into(),
            lines: vec![(5, 7)],
            status: Some(status(
                "b",
                2,
                (1, 0),
                &[("r-dup", "conflict: stored aa…, sent bb…")],
            )),
        },
    ];
    let (refused, unlisted) = refused_lines(file.as_bytes(), &batches).expect("reads");
    let text: Vec<String> = refused.iter().map(describe_refused).collect();
    assert_eq!(
        text,
        vec![
            "line 1: receipt r-1: P0001: tax exceeds total",
            "line 6: receipt r-dup: conflict: stored aa…, sent bb…",
        ]
    );
    assert!(unlisted.is_empty());
}

#[test]
fn an_id_missing_from_the_file_and_unlisted_refusals_are_still_reported() {
    let mut s = status("a", 300, (100, 0), &[("gone", "P0001: no")]);
    s.rejected = 200;
    s.rejections_total = 200;
    let batches = vec![FollowedBatch {
        batch_id: "a".into(),
        lines: vec![(1, 1)],
        status: Some(s),
    }];
    let (refused, unlisted) = refused_lines(line("r-1").as_bytes(), &batches).expect("reads");
    assert_eq!(
        describe_refused(&refused[0]),
        "line ?: receipt gone (batch a, not found in the file's lines): P0001: no"
    );
    assert_eq!(
        unlisted,
        vec![Unlisted {
            batch_id: "a".into(),
            count: 199
        }]
    );
}

#[test]
fn totals_and_exit_codes() {
    let clean = vec![FollowedBatch {
        batch_id: "a".into(),
        lines: vec![(1, 10)],
        status: Some(status("a", 10, (8, 2), &[])),
    }];
    let t = totals(&clean);
    assert_eq!((t.batches_final, t.settled(), t.refused()), (1, 10, 0));
    assert_eq!(exit_code(0, WaitEnd::Final, &t), EXIT_STORED);
    assert_eq!(exit_code(1, WaitEnd::Final, &t), EXIT_REFUSED);
    assert_eq!(exit_code(0, WaitEnd::TimedOut, &t), EXIT_TIMEOUT);
    assert_eq!(exit_code(0, WaitEnd::NoStatusEndpoint, &t), EXIT_NO_STATUS);
    assert_eq!(exit_code(0, WaitEnd::Interrupted, &t), EXIT_INTERRUPTED);
    assert_eq!(
        describe_totals(&t, WaitEnd::Final),
        "1 of 1 batches final; 10 receipts: 8 stored, 2 duplicates, 0 conflicts, 0 rejected"
    );

    let refused = vec![FollowedBatch {
        batch_id: "a".into(),
        lines: vec![(1, 10)],
        status: Some(status(
            "a",
            10,
            (8, 0),
            &[("x", "conflict: c"), ("y", "P0001")],
        )),
    }];
    let t = totals(&refused);
    assert_eq!((t.conflicts, t.rejected), (1, 1));
    // A known refusal wins over an unfinished wait: the user has to act on it either way.
    assert_eq!(exit_code(0, WaitEnd::Final, &t), EXIT_REFUSED);
    assert_eq!(exit_code(0, WaitEnd::TimedOut, &t), EXIT_REFUSED);
}

#[test]
fn the_progress_bar_fills_with_settled_receipts() {
    let batches = vec![
        FollowedBatch {
            batch_id: "a".into(),
            lines: vec![(1, 10)],
            status: Some(status("a", 10, (4, 0), &[("x", "P0001")])),
        },
        FollowedBatch {
            batch_id: "b".into(),
            lines: vec![(11, 20)],
            status: None,
        },
    ];
    let t = totals(&batches);
    assert_eq!(
        progress_line(&t, 10),
        "[#####-----] 5/10 receipts settled, 1 refused, 0/2 batches final"
    );
    assert_eq!(
        progress_line(&Totals::default(), 4),
        "[----] 0/0 receipts settled, 0 refused, 0/0 batches final"
    );
}
