//! Tests of `report`.

use super::*;

fn report(i: u32) -> ChunkReport {
    ChunkReport {
        batch_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        chunk_index: i,
        chunk_count: 100,
        receipts: 3,
        stored: 3,
        duplicates: 0,
        conflicts: 0,
        rejected: 0,
        rejections: vec![],
        committed_at_ms: 1,
    }
}

#[test]
fn only_the_reports_of_the_bodies_taken_are_marked() {
    let reports: Vec<ChunkReport> = (0..40).map(report).collect();
    let bodies: Vec<String> = reports
        .chunks(10)
        .flat_map(|c| encode_reports(c, MAX_STATUS_MESSAGE_BYTES))
        .collect();
    assert_eq!(bodies.len(), 4);
    let taken = taken_reports(&bodies, &[(1, "InternalError: x".into())]);
    let indexes: Vec<u32> = taken.iter().map(|r| r.chunk_index).collect();
    let expected: Vec<u32> = (0..10).chain(20..40).collect();
    assert_eq!(indexes, expected);
    assert_eq!(taken_reports(&bodies, &[]).len(), 40);
}

#[test]
fn the_status_line_names_the_backlog_and_the_last_error() {
    let mut v = ReportView {
        unreported_chunks: 12,
        last_error: None,
    };
    assert_eq!(v.line(), "12 chunks not yet reported");
    v.last_error = Some("SendMessageBatch to the status queue: QueueDoesNotExist".into());
    assert_eq!(
        v.line(),
        "12 chunks not yet reported; sends failing: SendMessageBatch to the status queue: QueueDoesNotExist"
    );
}

#[test]
fn a_wake_without_a_reporter_does_nothing() {
    ReportWake::default().committed();
}
