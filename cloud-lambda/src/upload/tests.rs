//! Tests of `upload`.

use super::*;
use serde_json::json;

#[test]
fn refusals_name_file_lines_not_request_indexes() {
    let answer = json!({
        "error": "invalid_receipts",
        "message": "2 invalid receipts (3 errors); nothing was enqueued",
        "errors": [
            {"index": 0, "pointer": "/receipts/0/total", "reason": "must have at most 4 fraction digits"},
            {"index": 2, "pointer": "/receipts/2/currency", "reason": "must be 3 uppercase letters"},
        ],
        "total_errors": 3,
    });
    let text = describe_refusal(400, &answer, &[10_001, 10_002, 10_004]);
    assert_eq!(
        text,
        "HTTP 400: 2 invalid receipts (3 errors); nothing was enqueued\n  \
         line 10001: /receipts/0/total: must have at most 4 fraction digits\n  \
         line 10004: /receipts/2/currency: must be 3 uppercase letters\n  \
         … and 1 more problem(s)"
    );
}

#[test]
fn a_malformed_line_is_named_in_the_file() {
    let answer = json!({"error": "malformed_json", "message": "malformed body at line 2, column 5: x", "line": 2, "column": 5});
    let text = describe_refusal(400, &answer, &[7, 9]);
    assert!(text.ends_with("at line 9, column 5 of the file"), "{text}");
}

#[test]
fn only_unserved_answers_are_retried() {
    for s in [429, 500, 502, 503, 504] {
        assert!(retryable(s), "{s}");
    }
    for s in [400, 401, 403, 413, 415] {
        assert!(!retryable(s), "{s}");
    }
}

#[test]
fn the_file_is_cut_into_parts_skipping_blank_lines() {
    let dir = std::env::temp_dir().join(format!("sluice-upload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("parts.ndjson");
    std::fs::write(&path, "a\n\nb\nc\r\n  \nd\ne").expect("write");
    let (tx, mut rx) = mpsc::channel(10);
    read_parts(std::fs::File::open(&path).expect("open"), 2, None, &tx).expect("read");
    drop(tx);
    let mut parts = Vec::new();
    while let Ok(p) = rx.try_recv() {
        parts.push((String::from_utf8(p.body).expect("utf-8"), p.lines));
    }
    assert_eq!(
        parts,
        vec![
            ("a\nb\n".to_owned(), vec![1, 3]),
            ("c\r\nd\n".to_owned(), vec![4, 6]),
            ("e\n".to_owned(), vec![7]),
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_same_lines_make_the_same_key() {
    let a = uuid::Uuid::new_v5(&KEY_NAMESPACE, b"x\n");
    assert_eq!(a, uuid::Uuid::new_v5(&KEY_NAMESPACE, b"x\n"));
    assert_ne!(a, uuid::Uuid::new_v5(&KEY_NAMESPACE, b"y\n"));
}
