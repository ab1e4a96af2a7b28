//! Tests of `report`.

use super::*;

fn report(i: u32, rejections: usize) -> ChunkReport {
    ChunkReport {
        batch_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        chunk_index: i,
        chunk_count: 1000,
        receipts: 500,
        stored: 490,
        duplicates: 5,
        conflicts: 2,
        rejected: 3,
        rejections: (0..rejections)
            .map(|j| Rejection {
                receipt_id: format!("7c9e6679-7425-40de-944b-e07fc1f9{j:04}"),
                reason: format!("P0001: tax must not exceed total (row {j})"),
            })
            .collect(),
        committed_at_ms: 1_790_000_000_000 + u64::from(i),
    }
}

#[test]
fn reports_round_trip_through_packed_messages_each_under_the_bound() {
    let reports: Vec<ChunkReport> = (0..300).map(|i| report(i, 5)).collect();
    let bodies = encode_reports(&reports, 1024);
    assert!(
        bodies.len() > 1,
        "300 reports should not fit one 1 KiB message"
    );
    let mut back = Vec::new();
    for body in &bodies {
        assert!(body.len() <= 1024, "body of {} bytes", body.len());
        back.extend(decode_message(body).expect("decodes").reports);
    }
    assert_eq!(back, reports);
}

#[test]
fn a_report_larger_than_the_bound_is_sent_alone() {
    let reports = vec![report(0, 100), report(1, 0)];
    let bodies = encode_reports(&reports, 64);
    assert_eq!(bodies.len(), 2);
}

#[test]
fn malformed_status_messages_are_named() {
    assert!(matches!(
        decode_message("not base64 !"),
        Err(StatusDecodeError::Base64(_))
    ));
    let plain = base64::engine::general_purpose::STANDARD.encode(b"{\"v\":1}");
    assert!(matches!(
        decode_message(&plain),
        Err(StatusDecodeError::Gzip)
    ));
    let gz = |s: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(s.as_bytes()).expect("vec");
        base64::engine::general_purpose::STANDARD.encode(e.finish().expect("vec"))
    };
    let err = decode_message(&gz("{\"v\":2,\"reports\":[]}")).expect_err("v2");
    assert_eq!(
        err.to_string(),
        "status message version 2 is not supported (this build reads version 1)"
    );
    assert!(matches!(
        decode_message(&gz("{\"v\":1}")),
        Err(StatusDecodeError::Json(_))
    ));
}

#[test]
fn the_state_follows_the_settled_chunks_and_refusals() {
    assert_eq!(BatchState::of(3, 0, 0), BatchState::Accepted);
    assert_eq!(BatchState::of(3, 2, 1), BatchState::Storing);
    assert_eq!(BatchState::of(3, 3, 0), BatchState::Stored);
    assert_eq!(BatchState::of(3, 3, 1), BatchState::StoredWithRejections);
    assert!(!BatchState::Storing.is_final());
    assert_eq!(
        serde_json::to_string(&BatchState::StoredWithRejections).expect("json"),
        "\"stored_with_rejections\""
    );
}

#[test]
fn a_long_reason_is_cut_at_a_character_boundary_and_says_so() {
    let short = Rejection::new("id", "refused (P0001): too long");
    assert_eq!(short.reason, "refused (P0001): too long");
    let long = Rejection::new("id", &"é".repeat(5_000));
    assert!(
        long.reason.len() <= MAX_REASON_BYTES,
        "{}",
        long.reason.len()
    );
    assert!(long.reason.ends_with('…'));
    assert!(
        long.reason.len() > MAX_REASON_BYTES - 8,
        "cut close to the cap"
    );
    assert_eq!(
        cap_reason(&"x".repeat(MAX_REASON_BYTES)).len(),
        MAX_REASON_BYTES
    );
}
