//! Tests of upload parsing: shapes, syntax errors with positions, limits and error caps.

use serde_json::{json, Value};

use super::*;
use crate::test_support::{body, full_json, id, minimal_json};

fn ndjson(lines: &[Value]) -> Vec<u8> {
    lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

fn shape(err: Result<Vec<Receipt>, BatchError>) -> String {
    match err {
        Err(BatchError::Shape(message)) => message,
        other => panic!("expected a shape error, got {other:?}"),
    }
}

// -- parse_json -----------------------------------------------------------------------------------

#[test]
fn a_json_body_gives_its_receipts_in_order() {
    let receipts =
        parse_json(&body(&[full_json(0), minimal_json(1), full_json(2)]), 10).expect("valid");
    let ids: Vec<&str> = receipts.iter().map(|r| r.receipt_id.as_str()).collect();
    assert_eq!(ids, [id(0), id(1), id(2)]);
}

#[test]
fn whitespace_around_the_body_is_fine() {
    let mut bytes = b" \n".to_vec();
    bytes.extend(body(&[minimal_json(0)]));
    bytes.extend(b"\n\n");
    assert_eq!(parse_json(&bytes, 10).map(|r| r.len()), Ok(1));
}

#[test]
fn malformed_json_reports_line_and_column() {
    let text = "{\"receipts\": [\n  {\"receipt_id\": \"x\",,}\n]}";
    match parse_json(text.as_bytes(), 10) {
        Err(BatchError::Malformed {
            line,
            column,
            message,
        }) => {
            assert_eq!((line, column), (2, 22));
            assert_eq!(message, "key must be a string");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn a_truncated_body_is_malformed() {
    let mut bytes = body(&[minimal_json(0)]);
    bytes.truncate(bytes.len() - 3);
    assert!(matches!(
        parse_json(&bytes, 10),
        Err(BatchError::Malformed { line: 1, .. })
    ));
}

#[test]
fn trailing_garbage_after_the_body_is_malformed() {
    let mut bytes = body(&[minimal_json(0)]);
    bytes.extend(b" x");
    match parse_json(&bytes, 10) {
        Err(BatchError::Malformed { message, .. }) => assert_eq!(message, "trailing characters"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn invalid_utf8_is_malformed() {
    let mut v = minimal_json(0);
    v["merchant"] = json!("SHOP");
    let bytes = body(&[v]);
    let text = String::from_utf8(bytes).expect("utf-8");
    let bad = text.replace("SHOP", "SH\u{0}P").into_bytes();
    // Replace the NUL with a lone continuation byte: invalid UTF-8 inside a string.
    let bad: Vec<u8> = bad
        .into_iter()
        .map(|b| if b == 0 { 0x80 } else { b })
        .collect();
    match parse_json(&bad, 10) {
        Err(BatchError::Malformed {
            line: 1, message, ..
        }) => {
            assert!(
                message.contains("unicode") || message.contains("UTF-8"),
                "{message}"
            )
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn a_body_that_is_not_an_object_is_a_shape_error() {
    assert_eq!(
        shape(parse_json(b"[1]", 10)),
        r#"the body must be a JSON object like {"receipts": [...]}, not an array"#
    );
    assert_eq!(
        shape(parse_json(b"\"receipts\"", 10)),
        r#"the body must be a JSON object like {"receipts": [...]}, not a string"#
    );
    assert_eq!(
        shape(parse_json(b"null", 10)),
        r#"the body must be a JSON object like {"receipts": [...]}, not null"#
    );
}

#[test]
fn an_unknown_top_level_field_is_a_shape_error() {
    assert_eq!(
        shape(parse_json(br#"{"receipts": [], "batch": 1}"#, 10)),
        r#"unknown top-level field "batch": the body must be {"receipts": [...]}"#
    );
}

#[test]
fn receipts_must_be_present_once_and_be_an_array() {
    assert_eq!(
        shape(parse_json(b"{}", 10)),
        r#"the body has no "receipts" array"#
    );
    assert_eq!(
        shape(parse_json(br#"{"receipts": {}}"#, 10)),
        r#""receipts" must be an array, not an object"#
    );
    assert_eq!(
        shape(parse_json(br#"{"receipts": 3}"#, 10)),
        r#""receipts" must be an array, not a number"#
    );
    assert_eq!(
        shape(parse_json(br#"{"receipts": [], "receipts": []}"#, 10)),
        r#"the "receipts" field appears twice"#
    );
}

#[test]
fn an_empty_batch_is_refused() {
    assert_eq!(shape(parse_json(br#"{"receipts": []}"#, 10)), "no receipts");
}

#[test]
fn too_many_receipts_stop_the_parse_before_the_rest_is_read() {
    let mut text = String::from_utf8(body(&[minimal_json(0), minimal_json(1), minimal_json(2)]))
        .expect("utf-8");
    // Whatever follows the third receipt is never looked at.
    text.truncate(text.len() - 2);
    text.push_str(", this is not JSON");
    assert_eq!(
        parse_json(text.as_bytes(), 2),
        Err(BatchError::TooManyReceipts { limit: 2 })
    );
    assert_eq!(
        parse_json(&body(&vec![minimal_json(0); 2]), 2).map(|r| r.len()),
        Ok(2)
    );
}

#[test]
fn invalid_receipts_report_every_error_capped_at_100_with_totals() {
    let mut receipts = Vec::new();
    for i in 0..150 {
        let mut v = minimal_json(i);
        v["total"] = json!(1);
        v["currency"] = json!("eur");
        receipts.push(v);
    }
    receipts.push(minimal_json(150));
    match parse_json(&body(&receipts), 1000) {
        Err(BatchError::Invalid {
            errors,
            total_errors,
            invalid_receipts,
        }) => {
            assert_eq!(errors.len(), MAX_REPORTED_ERRORS);
            assert_eq!(total_errors, 300);
            assert_eq!(invalid_receipts, 150);
            assert_eq!(errors[0].pointer, "/receipts/0/currency");
            assert_eq!(errors[1].pointer, "/receipts/0/total");
            assert_eq!(errors[99].pointer, "/receipts/49/total");
            assert_eq!(errors[99].receipt_id, Some(id(49)));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn the_invalid_error_reads_as_a_summary() {
    let mut v = minimal_json(0);
    v["total"] = json!(1);
    let err = parse_json(&body(&[v]), 10).expect_err("invalid");
    assert_eq!(err.to_string(), "1 invalid receipt(s) with 1 problem(s)");
}

#[test]
fn a_duplicate_receipt_id_in_one_upload_is_not_an_error() {
    assert_eq!(
        parse_json(&body(&[minimal_json(7), minimal_json(7)]), 10).map(|r| r.len()),
        Ok(2)
    );
}

#[test]
fn a_receipt_that_is_not_an_object_is_reported_at_its_index() {
    match parse_json(br#"{"receipts": [1]}"#, 10) {
        Err(BatchError::Invalid { errors, .. }) => {
            assert_eq!(errors[0].pointer, "/receipts/0");
            assert_eq!(errors[0].reason, "must be a JSON object, not a number");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// -- parse_ndjson -----------------------------------------------------------------------------------

#[test]
fn ndjson_gives_one_receipt_per_line() {
    let receipts = parse_ndjson(&ndjson(&[full_json(0), minimal_json(1)]), 10).expect("valid");
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[1].receipt_id, id(1));
}

#[test]
fn ndjson_blank_lines_are_ignored_and_do_not_count_as_indexes() {
    let mut bad = minimal_json(1);
    bad["total"] = json!("1.23456");
    let text = format!("\n{}\r\n  \n\t\n{}\n\n", minimal_json(0), bad);
    match parse_ndjson(text.as_bytes(), 10) {
        Err(BatchError::Invalid { errors, .. }) => {
            assert_eq!(errors[0].index, 1);
            assert_eq!(errors[0].pointer, "/receipts/1/total");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn ndjson_malformed_line_reports_its_physical_line_and_column() {
    let text = format!("{}\n\n{{\"receipt_id\": nope}}\n", minimal_json(0));
    match parse_ndjson(text.as_bytes(), 10) {
        Err(BatchError::Malformed { line, column, .. }) => assert_eq!((line, column), (3, 17)),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn ndjson_too_many_receipts_is_refused() {
    let text = ndjson(&[minimal_json(0), minimal_json(1), minimal_json(2)]);
    assert_eq!(
        parse_ndjson(&text, 2),
        Err(BatchError::TooManyReceipts { limit: 2 })
    );
}

#[test]
fn ndjson_without_receipts_is_refused() {
    assert_eq!(
        parse_ndjson(b"\n \n", 10),
        Err(BatchError::Shape("no receipts".into()))
    );
    assert_eq!(
        parse_ndjson(b"", 10),
        Err(BatchError::Shape("no receipts".into()))
    );
}

#[test]
fn ndjson_invalid_receipts_are_capped_like_json() {
    let lines: Vec<Value> = (0..120).map(|_| json!({})).collect();
    match parse_ndjson(&ndjson(&lines), 1000) {
        Err(BatchError::Invalid {
            errors,
            total_errors,
            invalid_receipts,
        }) => {
            assert_eq!(errors.len(), 100);
            assert_eq!(total_errors, 120 * 6);
            assert_eq!(invalid_receipts, 120);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}
