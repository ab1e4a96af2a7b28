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

// -- hostile input ----------------------------------------------------------------------------------
//
// Every input below must come back as a typed error the API maps to a 4xx, never a panic and
// never a receipt.

fn malformed(result: Result<Vec<Receipt>, BatchError>) -> (usize, usize, String) {
    match result {
        Err(BatchError::Malformed {
            line,
            column,
            message,
        }) => (line, column, message),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn invalid(result: Result<Vec<Receipt>, BatchError>) -> Vec<FieldError> {
    match result {
        Err(BatchError::Invalid { errors, .. }) => errors,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_duplicate_key_in_a_receipt_is_refused_with_its_position() {
    let text = format!(
        r#"{{"receipts": [{{"receipt_id": "{}", "total": "1.00", "total": "1000.00"}}]}}"#,
        id(0)
    );
    let (line, column, message) = malformed(parse_json(text.as_bytes(), 10));
    assert_eq!(message, r#"duplicate key "total" in an object"#);
    assert_eq!(line, 1);
    assert!(column > 60, "points at the second key: {column}");
}

#[test]
fn a_duplicate_key_deep_in_metadata_or_in_ndjson_is_refused() {
    let mut r = minimal_json(0).to_string();
    r.pop();
    r.push_str(r#", "metadata": {"a": {"b": 1, "b": 2}}}"#);
    let (line, _, message) = malformed(parse_ndjson(
        format!("{}\n{r}\n", minimal_json(1)).as_bytes(),
        10,
    ));
    assert_eq!(
        (line, message.as_str()),
        (2, r#"duplicate key "b" in an object"#)
    );
}

#[test]
fn deep_nesting_stops_at_the_parsers_recursion_limit() {
    let depth = 100_000;
    let mut text = r#"{"receipts": [{"metadata": "#.to_owned();
    text.push_str(&"[".repeat(depth));
    text.push_str(&"]".repeat(depth));
    text.push_str("}]}");
    let (_, _, message) = malformed(parse_json(text.as_bytes(), 10));
    assert_eq!(message, "recursion limit exceeded");
    let line = format!(
        r#"{{"metadata": {}{}}}"#,
        "{\"a\":".repeat(depth),
        "}".repeat(depth)
    );
    let (_, _, message) = malformed(parse_ndjson(line.as_bytes(), 10));
    assert_eq!(message, "recursion limit exceeded");
}

#[test]
fn invalid_utf8_in_a_string_is_malformed_in_both_formats() {
    let mut bytes = br#"{"receipts": [{"merchant": ""#.to_vec();
    bytes.extend([0xff, 0xfe]);
    bytes.extend(br#""}]}"#);
    let (_, _, message) = malformed(parse_json(&bytes, 10));
    assert_eq!(message, "invalid unicode code point");
    let (_, _, message) = malformed(parse_ndjson(&bytes[14..bytes.len() - 2], 10));
    assert_eq!(message, "invalid unicode code point");
}

#[test]
fn a_nul_or_u_ffff_inside_a_string_is_a_field_error() {
    for (text, reason) in [
        (
            "A\u{0}B",
            "contains the character U+0000 at position 2, which SQS does not accept",
        ),
        (
            "A\u{FFFF}",
            "contains the character U+FFFF at position 2, which SQS does not accept",
        ),
    ] {
        let mut r = minimal_json(0);
        r["merchant"] = json!(text);
        let errors = invalid(parse_json(&body(&[r]), 10));
        assert_eq!(errors[0].pointer, "/receipts/0/merchant");
        assert_eq!(errors[0].reason, reason);
    }
    // Escaped in the JSON text, the same characters are caught the same way.
    let text = minimal_json(0)
        .to_string()
        .replacen(r#""merchant":""#, r#""merchant":"\u0000"#, 1);
    let errors = invalid(parse_ndjson(text.as_bytes(), 10));
    assert_eq!(errors[0].pointer, "/receipts/0/merchant");
}

#[test]
fn hostile_amounts_are_field_errors_or_malformed() {
    for (total, reason) in [
        (json!("NaN"), "must be a finite number"),
        (json!("-Infinity"), "must be a finite number"),
        (json!("1e3"), "must not use exponent notation (write 1000, not 1e3)"),
        (
            json!("0.123456789012345678901234567890"),
            "must have at most 4 fraction digits",
        ),
        (
            json!("1234567890123"),
            "must be less than 10^12 in absolute value (at most 12 digits before the decimal point)",
        ),
        (json!(1.5), r#"must be a decimal string like "42.50", not a number"#),
    ] {
        let mut r = minimal_json(0);
        r["total"] = total.clone();
        let errors = invalid(parse_json(&body(&[r]), 10));
        assert_eq!(errors[0].pointer, "/receipts/0/total", "{total}");
        assert_eq!(errors[0].reason, reason, "{total}");
    }
    // A bare number too large for a double is refused by the JSON parser itself.
    let text = minimal_json(0)
        .to_string()
        .replacen(r#""total":"#, r#""total":1e400,"x":"#, 1);
    let (_, _, message) = malformed(parse_ndjson(text.as_bytes(), 10));
    assert_eq!(message, "number out of range");
}

proptest::proptest! {
    #[test]
    fn the_parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let _ = parse_json(&bytes, 100);
        let _ = parse_ndjson(&bytes, 100);
    }

    #[test]
    fn the_parsers_never_panic_on_mangled_receipts(cut in 0usize..400, byte in proptest::num::u8::ANY) {
        let mut text = body(&[full_json(0)]);
        let at = cut % text.len();
        text[at] = byte;
        let _ = parse_json(&text, 100);
        let _ = parse_ndjson(&text[14..], 100);
    }
}

// -- limits while parsing ---------------------------------------------------------------------------

/// `text` with `{"receipts":[<minimal receipt 0 with "field": <raw>>]}` (raw JSON spliced in).
fn with_raw(field: &str, raw: &str) -> Vec<u8> {
    let mut r = minimal_json(0).to_string();
    r.pop();
    format!(r#"{{"receipts": [{r}, "{field}": {raw}}}]}}"#).into_bytes()
}

fn first_error(result: Result<Vec<Receipt>, BatchError>) -> (String, String) {
    let errors = invalid(result);
    (errors[0].pointer.clone(), errors[0].reason.clone())
}

#[test]
fn a_metadata_array_of_millions_of_zeros_is_refused_by_its_kind() {
    let zeros = format!("[{}0]", "0,".repeat(2_000_000));
    assert_eq!(
        first_error(parse_json(&with_raw("metadata", &zeros), 10)),
        (
            "/receipts/0/metadata".to_owned(),
            "must be a JSON object, not an array".to_owned()
        )
    );
}

#[test]
fn an_oversized_metadata_object_is_refused_with_its_true_size() {
    let list = format!("[{}0]", "0,".repeat(100_000));
    let text = with_raw("metadata", &format!(r#"{{"zeros": {list}}}"#));
    let expected = format!(
        "must be at most 8192 bytes once serialized (got {})",
        r#"{"zeros":}"#.len() + list.len()
    );
    assert_eq!(
        first_error(parse_json(&text, 10)),
        ("/receipts/0/metadata".to_owned(), expected)
    );
}

#[test]
fn metadata_sizes_counted_while_parsing_match_the_serialized_size() {
    // At the limit, one byte over, and with escapes, floats and nesting: the streaming count
    // and the receipt rule agree to the byte. (Oversized metadata is refused for its size
    // alone: its characters are not walked.)
    let cases = [
        json!({"k": "v".repeat(8192 - 10)}),
        json!({"k": "v".repeat(8192 - 9)}),
        json!({"q\"\\\n": ["é\t", 1.5, -7, 18446744073709551615u64, null, true, false, {}], "n": {"a": [[]]}, "s": "x".repeat(8100)}),
        json!({"\u{1}": "\u{1f}", "s": "x".repeat(8100)}),
        json!({"f": [0.1, 1e300, -2.5e-7], "pad": "y".repeat(8150)}),
    ];
    for metadata in cases {
        let mut r = minimal_json(0);
        r["metadata"] = metadata.clone();
        let streamed = parse_json(&body(&[r.clone()]), 10).map(|_| ());
        let by_value = Receipt::from_value(&r, 0).map(|_| ());
        match (streamed, by_value) {
            (Ok(()), Ok(())) => {}
            (Err(BatchError::Invalid { errors, .. }), Err(expected)) => {
                assert_eq!(errors, expected, "{metadata}")
            }
            (streamed, by_value) => panic!("{metadata}: {streamed:?} vs {by_value:?}"),
        }
    }
}

#[test]
fn more_than_500_items_are_counted_not_built() {
    let items = format!("[{}0]", "{},".repeat(200_000));
    assert_eq!(
        first_error(parse_json(&with_raw("items", &items), 10)),
        (
            "/receipts/0/items".to_owned(),
            "must have at most 500 items (got 200001)".to_owned()
        )
    );
}

#[test]
fn an_object_with_too_many_fields_is_refused_where_it_is() {
    let fields: Vec<String> = (0..100).map(|i| format!(r#""f{i}": [1, 2]"#)).collect();
    let many = format!("{{{}}}", fields.join(", "));
    let text = format!(r#"{{"receipts": [{many}]}}"#);
    assert_eq!(
        first_error(parse_json(text.as_bytes(), 10)),
        (
            "/receipts/0".to_owned(),
            "must have at most 64 fields (got 100)".to_owned()
        )
    );
    let items = format!(
        r#"[{{"description": "x", "quantity": "1", "unit_price": "1", "amount": "1"}}, {many}]"#
    );
    assert_eq!(
        first_error(parse_json(&with_raw("items", &items), 10)),
        (
            "/receipts/0/items/1".to_owned(),
            "must have at most 64 fields (got 100)".to_owned()
        )
    );
}

#[test]
fn a_container_where_a_scalar_belongs_is_skimmed_and_named_by_kind() {
    let big = format!("[{}0]", "[0],".repeat(100_000));
    for (field, reason) in [
        ("merchant", "must be a string, not an array"),
        (
            "total",
            r#"must be a decimal string like "42.50", not an array"#,
        ),
    ] {
        let mut r = minimal_json(0);
        r.as_object_mut().expect("object").remove(field);
        let mut text = r.to_string();
        text.pop();
        let text = format!(r#"{{"receipts": [{text}, "{field}": {big}}}]}}"#);
        assert_eq!(
            first_error(parse_json(text.as_bytes(), 10)),
            (format!("/receipts/0/{field}"), reason.to_owned())
        );
    }
}

#[test]
fn one_receipt_id_with_two_contents_names_both_indexes() {
    let mut changed = minimal_json(1);
    changed["total"] = json!("99.99");
    let upload = [minimal_json(1), minimal_json(2), minimal_json(1), changed];
    let errors = invalid(parse_json(&body(&upload), 10));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].index, 3);
    assert_eq!(errors[0].pointer, "/receipts/3/receipt_id");
    assert_eq!(
        errors[0].reason,
        format!(
            "receipts[0] and receipts[3] share receipt_id {} with different content; send one version per upload",
            id(1)
        )
    );
    let errors = invalid(parse_ndjson(&ndjson(&upload), 10));
    assert_eq!(errors[0].pointer, "/receipts/3/receipt_id");
}
