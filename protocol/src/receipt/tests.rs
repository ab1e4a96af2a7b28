//! Tests of the receipt rules: one or more per rule, asserting the pointer and the reason a user sees.

use serde_json::{json, Value};

use super::*;
use crate::test_support::{full, full_json, id, minimal_json};

/// The (pointer, reason) pairs of a receipt's errors at index 3.
fn problems(value: &Value) -> Vec<(String, String)> {
    match Receipt::from_value(value, 3) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| (e.pointer, e.reason)).collect(),
    }
}

/// The one problem of `value`, which must have exactly one.
fn problem(value: &Value) -> (String, String) {
    let mut all = problems(value);
    assert_eq!(all.len(), 1, "expected exactly one problem, got {all:?}");
    all.remove(0)
}

fn with(field: &str, v: Value) -> Value {
    let mut r = full_json(3);
    r[field] = v;
    r
}

fn without(field: &str) -> Value {
    let mut r = full_json(3);
    if let Some(obj) = r.as_object_mut() {
        obj.remove(field);
    }
    r
}

fn pair(pointer: &str, reason: &str) -> (String, String) {
    (pointer.to_owned(), reason.to_owned())
}

fn accepted(value: &Value) -> bool {
    Receipt::from_value(value, 3).is_ok()
}

// -- whole receipt ------------------------------------------------------------------------------

#[test]
fn a_complete_receipt_is_accepted() {
    let r = Receipt::from_value(&full_json(3), 3).expect("valid");
    assert_eq!(r.receipt_id, id(3));
    assert_eq!(r.total.as_str(), "42.50");
    assert_eq!(r.items.len(), 2);
    assert_eq!(r.image.as_ref().map(|i| i.bytes), Some(123_456));
}

#[test]
fn a_receipt_with_only_required_fields_is_accepted() {
    let r = Receipt::from_value(&minimal_json(0), 0).expect("valid");
    assert_eq!(r.tax, None);
    assert!(r.items.is_empty());
    assert_eq!(r.metadata, None);
}

#[test]
fn null_optional_fields_count_as_absent() {
    let mut v = minimal_json(0);
    for field in [
        "submitted_by",
        "tax",
        "category",
        "image",
        "items",
        "metadata",
    ] {
        v[field] = Value::Null;
    }
    assert!(accepted(&v));
}

#[test]
fn a_receipt_that_is_not_an_object_is_rejected() {
    assert_eq!(
        problem(&json!([1, 2])),
        pair("/receipts/3", "must be a JSON object, not an array")
    );
}

#[test]
fn every_missing_required_field_is_reported_at_its_pointer() {
    for field in [
        "receipt_id",
        "tenant_id",
        "merchant",
        "issued_on",
        "currency",
        "total",
    ] {
        assert_eq!(
            problem(&without(field)),
            pair(&format!("/receipts/3/{field}"), "is required"),
        );
    }
}

#[test]
fn a_required_field_set_to_null_is_reported() {
    assert_eq!(
        problem(&with("merchant", Value::Null)),
        pair("/receipts/3/merchant", "is required and must not be null")
    );
}

#[test]
fn an_unknown_field_is_rejected_with_its_pointer() {
    let (pointer, reason) = problem(&with("amount/x~y", json!(1)));
    assert_eq!(pointer, "/receipts/3/amount~1x~0y");
    assert!(reason.starts_with("is not a known field; expected one of: receipt_id, tenant_id"));
}

#[test]
fn a_string_field_given_another_type_says_what_it_got() {
    assert_eq!(
        problem(&with("merchant", json!(12))),
        pair("/receipts/3/merchant", "must be a string, not a number")
    );
    assert_eq!(
        problem(&with("category", json!({}))),
        pair("/receipts/3/category", "must be a string, not an object")
    );
}

#[test]
fn all_problems_of_a_receipt_are_reported_together_in_field_order() {
    let mut v = full_json(3);
    v["tenant_id"] = json!("");
    v["currency"] = json!("eur");
    v["total"] = json!(42.5);
    v["colour"] = json!("red");
    let pointers: Vec<String> = problems(&v).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        pointers,
        [
            "/receipts/3/tenant_id",
            "/receipts/3/currency",
            "/receipts/3/total",
            "/receipts/3/colour"
        ]
    );
}

// -- receipt_id ---------------------------------------------------------------------------------

#[test]
fn receipt_id_must_be_a_hyphenated_uuid() {
    let reason = r#"must be a UUID like "123e4567-e89b-12d3-a456-426614174000""#;
    for bad in [
        json!("abc"),
        json!("{0b6c0000-0000-4000-8000-000000000003}"),
        json!("0b6c0000000040008000000000000003"),
        json!("0b6c0000-0000-4000-8000-00000000000g"),
    ] {
        assert_eq!(
            problem(&with("receipt_id", bad)),
            pair("/receipts/3/receipt_id", reason)
        );
    }
    assert_eq!(
        problem(&with("receipt_id", json!(7))),
        pair("/receipts/3/receipt_id", "must be a string, not a number")
    );
}

#[test]
fn receipt_id_is_normalised_to_lowercase() {
    let upper = id(3).to_uppercase();
    let r = Receipt::from_value(&with("receipt_id", json!(upper)), 3).expect("valid");
    assert_eq!(r.receipt_id, id(3));
}

// -- tenant_id ----------------------------------------------------------------------------------

#[test]
fn tenant_id_must_be_1_to_64_allowed_characters() {
    assert!(accepted(&with("tenant_id", json!("a".repeat(64)))));
    assert_eq!(
        problem(&with("tenant_id", json!(""))),
        pair("/receipts/3/tenant_id", "must not be empty")
    );
    assert_eq!(
        problem(&with("tenant_id", json!("a".repeat(65)))),
        pair(
            "/receipts/3/tenant_id",
            "must be at most 64 characters (got 65)"
        )
    );
    assert_eq!(
        problem(&with("tenant_id", json!("acme eu"))),
        pair(
            "/receipts/3/tenant_id",
            "may contain only letters A-Z a-z, digits, '.', '_' and '-' (found U+0020 at position 5)"
        )
    );
    assert_eq!(
        problem(&with("tenant_id", json!("acmé"))).1,
        "may contain only letters A-Z a-z, digits, '.', '_' and '-' (found 'é' at position 4)"
    );
}

// -- free-text lengths --------------------------------------------------------------------------

#[test]
fn submitted_by_may_be_at_most_128_characters() {
    assert!(accepted(&with("submitted_by", json!("x".repeat(128)))));
    assert!(accepted(&with("submitted_by", json!(""))));
    assert_eq!(
        problem(&with("submitted_by", json!("x".repeat(129)))),
        pair(
            "/receipts/3/submitted_by",
            "must be at most 128 characters (got 129)"
        )
    );
}

#[test]
fn merchant_must_be_1_to_200_characters() {
    assert!(accepted(&with("merchant", json!("m".repeat(200)))));
    assert_eq!(
        problem(&with("merchant", json!(""))),
        pair("/receipts/3/merchant", "must not be empty")
    );
    assert_eq!(
        problem(&with("merchant", json!("m".repeat(201)))),
        pair(
            "/receipts/3/merchant",
            "must be at most 200 characters (got 201)"
        )
    );
}

#[test]
fn lengths_count_characters_not_bytes() {
    assert!(accepted(&with("merchant", json!("é".repeat(200)))));
    assert!(accepted(&with("merchant", json!("😀".repeat(200)))));
}

#[test]
fn category_may_be_at_most_64_characters() {
    assert!(accepted(&with("category", json!("c".repeat(64)))));
    assert_eq!(
        problem(&with("category", json!("c".repeat(65)))),
        pair(
            "/receipts/3/category",
            "must be at most 64 characters (got 65)"
        )
    );
}

// -- issued_on ----------------------------------------------------------------------------------

#[test]
fn issued_on_must_be_written_yyyy_mm_dd() {
    let reason = r#"must be a date as YYYY-MM-DD, like "2024-02-29""#;
    for bad in [
        "2024-2-29",
        "29.02.2024",
        "2024-02-29T00:00:00Z",
        "",
        "２０２４-02-29",
    ] {
        assert_eq!(
            problem(&with("issued_on", json!(bad))),
            pair("/receipts/3/issued_on", reason),
            "{bad}"
        );
    }
}

#[test]
fn leap_day_is_accepted_only_in_leap_years() {
    assert!(accepted(&with("issued_on", json!("2024-02-29"))));
    assert!(accepted(&with("issued_on", json!("2000-02-29"))));
    assert_eq!(
        problem(&with("issued_on", json!("2023-02-29"))),
        pair(
            "/receipts/3/issued_on",
            "is not a real date: 2023-02 has 28 days"
        )
    );
    assert_eq!(
        problem(&with("issued_on", json!("1900-02-29"))).1,
        "is not a real date: 1900-02 has 28 days"
    );
}

#[test]
fn month_13_and_day_zero_are_not_real_dates() {
    assert_eq!(
        problem(&with("issued_on", json!("2023-13-01"))),
        pair(
            "/receipts/3/issued_on",
            "is not a real date: the month must be 01 to 12"
        )
    );
    assert_eq!(
        problem(&with("issued_on", json!("2023-04-31"))).1,
        "is not a real date: 2023-04 has 30 days"
    );
    assert_eq!(
        problem(&with("issued_on", json!("2023-04-00"))).1,
        "is not a real date: 2023-04 has 30 days"
    );
}

#[test]
fn years_run_from_0001_to_9999() {
    assert!(accepted(&with("issued_on", json!("0001-01-01"))));
    assert!(accepted(&with("issued_on", json!("9999-12-31"))));
    assert_eq!(
        problem(&with("issued_on", json!("0000-01-01"))),
        pair(
            "/receipts/3/issued_on",
            "is not a real date: the year must be 0001 to 9999"
        )
    );
}

// -- currency -----------------------------------------------------------------------------------

#[test]
fn currency_must_be_three_uppercase_letters() {
    let reason = r#"must be 3 uppercase letters (an ISO 4217 code like "EUR")"#;
    for bad in ["eur", "EU", "EURO", "E1R", "ÉUR"] {
        assert_eq!(
            problem(&with("currency", json!(bad))),
            pair("/receipts/3/currency", reason),
            "{bad}"
        );
    }
}

// -- decimals -----------------------------------------------------------------------------------

#[test]
fn decimals_accept_plain_numbers_up_to_4_fraction_digits() {
    for ok in [
        "42.50",
        "-3",
        "0.0001",
        "0",
        "-0.00",
        "999999999999.9999",
        "007",
    ] {
        assert_eq!(
            Decimal::parse(ok).map(|d| d.as_str().to_owned()),
            Ok(ok.to_owned())
        );
    }
}

#[test]
fn decimals_reject_everything_else_with_a_plain_reason() {
    let cases = [
        ("1e3", "must not use exponent notation (write 1000, not 1e3)"),
        ("NaN", "must be a finite number"),
        ("-Infinity", "must be a finite number"),
        ("42.12345", "must have at most 4 fraction digits"),
        (
            "1000000000000",
            "must be less than 10^12 in absolute value (at most 12 digits before the decimal point)",
        ),
        (" 1", "must not contain spaces"),
        ("1 ", "must not contain spaces"),
        ("+1", "must not have a '+' sign"),
        ("", r#"must be a decimal string like "42.50", not an empty string"#),
        (".5", "must have at least one digit before the decimal point"),
        ("5.", "must have digits after the decimal point"),
        ("-", r#"must be a decimal string like "42.50""#),
        ("1,50", r#"must be a decimal string like "42.50""#),
        ("1.2.3", r#"must be a decimal string like "42.50""#),
        ("--1", r#"must be a decimal string like "42.50""#),
        ("0x10", r#"must be a decimal string like "42.50""#),
    ];
    for (input, reason) in cases {
        assert_eq!(Decimal::parse(input), Err(reason.to_owned()), "{input:?}");
    }
}

#[test]
fn total_is_a_required_decimal_string_never_a_number() {
    assert_eq!(
        problem(&with("total", json!(42.5))),
        pair(
            "/receipts/3/total",
            r#"must be a decimal string like "42.50", not a number"#
        )
    );
    assert_eq!(
        problem(&with("total", json!("42.12345"))),
        pair("/receipts/3/total", "must have at most 4 fraction digits")
    );
}

#[test]
fn tax_follows_the_decimal_rule() {
    assert_eq!(
        problem(&with("tax", json!("1e3"))),
        pair(
            "/receipts/3/tax",
            "must not use exponent notation (write 1000, not 1e3)"
        )
    );
    assert_eq!(
        problem(&with("tax", json!(true))),
        pair(
            "/receipts/3/tax",
            r#"must be a decimal string like "42.50", not a boolean"#
        )
    );
}

#[test]
fn decimal_deserialization_validates_and_serializes_as_a_string() {
    let d: Decimal = serde_json::from_str(r#""42.50""#).expect("valid");
    assert_eq!(serde_json::to_string(&d).expect("serializes"), r#""42.50""#);
    let err = serde_json::from_str::<Decimal>(r#""42.12345""#).expect_err("invalid");
    assert!(
        err.to_string().contains("at most 4 fraction digits"),
        "{err}"
    );
    assert!(serde_json::from_str::<Decimal>("42.5").is_err());
}

// -- image --------------------------------------------------------------------------------------

fn with_image(field: &str, v: Value) -> Value {
    let mut r = full_json(3);
    r["image"][field] = v;
    r
}

#[test]
fn image_must_be_an_object() {
    assert_eq!(
        problem(&with("image", json!("s3://bucket/key"))),
        pair("/receipts/3/image", "must be a JSON object, not a string")
    );
}

#[test]
fn image_key_must_be_1_to_1024_characters() {
    assert!(accepted(&with_image("key", json!("k".repeat(1024)))));
    assert_eq!(
        problem(&with_image("key", json!(""))),
        pair("/receipts/3/image/key", "must not be empty")
    );
    assert_eq!(
        problem(&with_image("key", json!("k".repeat(1025)))),
        pair(
            "/receipts/3/image/key",
            "must be at most 1024 characters (got 1025)"
        )
    );
}

#[test]
fn image_sha256_must_be_64_hex_digits_and_is_lowercased() {
    let reason = "must be exactly 64 hexadecimal characters (a SHA-256 digest)";
    for bad in ["a".repeat(63), "a".repeat(65), "g".repeat(64)] {
        assert_eq!(
            problem(&with_image("sha256", json!(bad))),
            pair("/receipts/3/image/sha256", reason)
        );
    }
    let r = Receipt::from_value(&with_image("sha256", json!("AB".repeat(32))), 3).expect("valid");
    assert_eq!(r.image.map(|i| i.sha256), Some("ab".repeat(32)));
}

#[test]
fn image_bytes_must_be_a_whole_non_negative_number() {
    let range = "must be a whole number from 0 to 18446744073709551615";
    assert_eq!(
        problem(&with_image("bytes", json!(-1))),
        pair("/receipts/3/image/bytes", range)
    );
    assert_eq!(
        problem(&with_image("bytes", json!(1.5))),
        pair("/receipts/3/image/bytes", range)
    );
    assert_eq!(
        problem(&with_image("bytes", json!("5"))),
        pair(
            "/receipts/3/image/bytes",
            "must be a whole number, not a string"
        )
    );
    assert!(accepted(&with_image("bytes", json!(u64::MAX))));
}

#[test]
fn image_fields_are_required_and_unknown_ones_rejected() {
    let mut v = full_json(3);
    v["image"] = json!({"key": "k", "sha256": "a".repeat(64), "size": 1});
    let found = problems(&v);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0], pair("/receipts/3/image/bytes", "is required"));
    assert_eq!(
        found[1],
        pair(
            "/receipts/3/image/size",
            "is not a known field; expected one of: key, sha256, bytes, content_type"
        )
    );
}

#[test]
fn a_photo_declared_for_upload_needs_its_type_and_a_size_within_bounds() {
    let declared = |image: Value| {
        let mut v = full_json(3);
        v["image"] = image;
        v
    };
    let sha = "a".repeat(64);
    let ok = declared(json!({"sha256": sha, "bytes": 250_000, "content_type": "image/jpeg"}));
    let r = Receipt::from_value(&ok, 3).expect("a declared photo is valid");
    let image = r.image.expect("image");
    assert!(image.is_declared() && !image.is_carried());
    assert_eq!(
        problem(&declared(json!({"sha256": sha, "bytes": 250_000}))),
        pair(
            "/receipts/3/image/content_type",
            "is required when the image has no key (a photo to upload): one of image/jpeg, \
             image/png, image/webp, image/heic, application/pdf"
        )
    );
    assert_eq!(
        problem(&declared(
            json!({"sha256": sha, "bytes": 250_000, "content_type": "image/gif"})
        )),
        pair(
            "/receipts/3/image/content_type",
            "must be one of image/jpeg, image/png, image/webp, image/heic, application/pdf"
        )
    );
    for bytes in [0, MAX_PHOTO_BYTES + 1] {
        assert_eq!(
            problem(&declared(
                json!({"sha256": sha, "bytes": bytes, "content_type": "image/png"})
            )),
            pair(
                "/receipts/3/image/bytes",
                "must be from 1 to 20971520 for a photo to upload (20 MiB)"
            ),
            "{bytes}"
        );
    }
    // A reference keeps its old rules: any size, no type needed.
    assert!(accepted(&declared(
        json!({"key": "k.jpg", "sha256": sha, "bytes": 0})
    )));
    // A photo the bridge carries: a key and its type.
    let carried = declared(
        json!({"key": "photos/x", "sha256": sha, "bytes": 9, "content_type": "application/pdf"}),
    );
    let image = Receipt::from_value(&carried, 3)
        .expect("valid")
        .image
        .expect("image");
    assert!(image.is_carried());
}

// -- items --------------------------------------------------------------------------------------

fn item() -> Value {
    json!({"description": "Soup", "quantity": "1", "unit_price": "7.50", "amount": "7.50"})
}

fn with_item(field: &str, v: Value) -> Value {
    let mut r = full_json(3);
    r["items"][1][field] = v;
    r
}

#[test]
fn items_must_be_an_array_of_at_most_500() {
    assert!(accepted(&with("items", json!(vec![item(); 500]))));
    assert_eq!(
        problem(&with("items", json!(vec![item(); 501]))),
        pair("/receipts/3/items", "must have at most 500 items (got 501)")
    );
    assert_eq!(
        problem(&with("items", json!({}))),
        pair("/receipts/3/items", "must be an array, not an object")
    );
    assert_eq!(
        problem(&with("items", json!([item(), "soup"]))),
        pair("/receipts/3/items/1", "must be a JSON object, not a string")
    );
}

#[test]
fn item_description_must_be_1_to_500_characters() {
    assert!(accepted(&with_item("description", json!("d".repeat(500)))));
    assert_eq!(
        problem(&with_item("description", json!(""))),
        pair("/receipts/3/items/1/description", "must not be empty")
    );
    assert_eq!(
        problem(&with_item("description", json!("d".repeat(501)))),
        pair(
            "/receipts/3/items/1/description",
            "must be at most 500 characters (got 501)"
        )
    );
}

#[test]
fn item_amounts_are_required_decimals() {
    for field in ["quantity", "unit_price", "amount"] {
        let mut v = full_json(3);
        if let Some(obj) = v["items"][1].as_object_mut() {
            obj.remove(field);
        }
        assert_eq!(
            problem(&v),
            pair(&format!("/receipts/3/items/1/{field}"), "is required")
        );
        assert_eq!(
            problem(&with_item(field, json!(2))),
            pair(
                &format!("/receipts/3/items/1/{field}"),
                r#"must be a decimal string like "42.50", not a number"#
            )
        );
    }
    assert_eq!(
        problem(&with_item("amount", json!("NaN"))),
        pair("/receipts/3/items/1/amount", "must be a finite number")
    );
}

#[test]
fn item_unknown_fields_are_rejected() {
    assert_eq!(
        problem(&with_item("sku", json!("X1"))),
        pair(
            "/receipts/3/items/1/sku",
            "is not a known field; expected one of: description, quantity, unit_price, amount"
        )
    );
}

// -- metadata -----------------------------------------------------------------------------------

#[test]
fn metadata_must_be_an_object() {
    assert_eq!(
        problem(&with("metadata", json!(["a"]))),
        pair(
            "/receipts/3/metadata",
            "must be a JSON object, not an array"
        )
    );
}

#[test]
fn metadata_may_be_at_most_8192_bytes_once_serialized() {
    // {"k":"…"} is 8 bytes plus the value.
    let fits = json!({"k": "v".repeat(8192 - 8)});
    assert_eq!(fits.to_string().len(), 8192);
    assert!(accepted(&with("metadata", fits)));
    assert_eq!(
        problem(&with("metadata", json!({"k": "v".repeat(8192 - 7)}))),
        pair(
            "/receipts/3/metadata",
            "must be at most 8192 bytes once serialized (got 8193)"
        )
    );
}

// -- characters SQS rejects -----------------------------------------------------------------------

#[test]
fn strings_with_characters_sqs_rejects_are_refused_wherever_they_are() {
    assert_eq!(
        problem(&with("merchant", json!("Shop\u{0}"))),
        pair(
            "/receipts/3/merchant",
            "contains the character U+0000 at position 5, which SQS does not accept"
        )
    );
    assert_eq!(
        problem(&with_item("description", json!("\u{FFFF}"))),
        pair(
            "/receipts/3/items/1/description",
            "contains the character U+FFFF at position 1, which SQS does not accept"
        )
    );
    assert_eq!(
        problem(&with("total", json!("1\u{8}"))),
        pair(
            "/receipts/3/total",
            "contains the character U+0008 at position 2, which SQS does not accept"
        )
    );
    assert_eq!(
        problem(&with(
            "metadata",
            json!({"a/b": {"list": ["ok", "bell\u{7}"]}})
        )),
        pair(
            "/receipts/3/metadata/a~1b/list/1",
            "contains the character U+0007 at position 5, which SQS does not accept"
        )
    );
    assert_eq!(
        problem(&with("metadata", json!({"key\u{FFFE}": 1}))),
        pair(
            "/receipts/3/metadata/key\u{FFFE}",
            "has a key that contains the character U+FFFE at position 4, which SQS does not accept"
        )
    );
}

#[test]
fn tab_newline_carriage_return_and_astral_characters_are_allowed() {
    assert!(accepted(&with(
        "merchant",
        json!("a\tb\nc\rd \u{E000} \u{FFFD} \u{10FFFF} 😀")
    )));
    assert!(accepted(&with("metadata", json!({"\t": "\n"}))));
}

// -- errors ---------------------------------------------------------------------------------------

#[test]
fn errors_carry_the_receipt_id_only_when_it_is_valid() {
    let errors = Receipt::from_value(&with("total", json!(1)), 3).expect_err("invalid");
    assert_eq!(errors[0].receipt_id, Some(id(3)));
    assert_eq!(errors[0].index, 3);

    let mut v = with("total", json!(1));
    v["receipt_id"] = json!("nope");
    let errors = Receipt::from_value(&v, 3).expect_err("invalid");
    assert!(errors.iter().all(|e| e.receipt_id.is_none()));
}

#[test]
fn field_error_display_names_receipt_id_pointer_and_reason() {
    let mut e = FieldError {
        index: 17,
        receipt_id: Some(id(17)),
        pointer: "/receipts/17/total".into(),
        reason: "must have at most 4 fraction digits".into(),
    };
    assert_eq!(
        e.to_string(),
        format!(
            "receipt 17 (id {}): /receipts/17/total: must have at most 4 fraction digits",
            id(17)
        )
    );
    e.receipt_id = None;
    assert_eq!(
        e.to_string(),
        "receipt 17: /receipts/17/total: must have at most 4 fraction digits"
    );
}

#[test]
fn field_error_serializes_without_receipt_id_when_unknown() {
    let e = FieldError {
        index: 17,
        receipt_id: None,
        pointer: "/receipts/17/total".into(),
        reason: "r".into(),
    };
    assert_eq!(
        serde_json::to_value(&e).expect("serializes"),
        json!({"index": 17, "pointer": "/receipts/17/total", "reason": "r"})
    );
    let e = FieldError {
        receipt_id: Some("x".into()),
        ..e
    };
    assert_eq!(
        serde_json::to_value(&e).expect("serializes")["receipt_id"],
        "x"
    );
}

// -- typed receipts ---------------------------------------------------------------------------------

#[test]
fn validate_rechecks_a_typed_receipt_with_the_same_rules() {
    let mut r = full(5);
    assert_eq!(r.validate(5), Ok(()));
    r.merchant = String::new();
    r.currency = "usd".into();
    let errors = r.validate(5).expect_err("invalid");
    let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(pointers, ["/receipts/5/merchant", "/receipts/5/currency"]);
    assert_eq!(errors[0].receipt_id, Some(id(5)));
}

#[test]
fn a_typed_receipt_serializes_to_a_value_that_validates_back_to_itself() {
    let r = full(1);
    let value = serde_json::to_value(&r).expect("serializes");
    assert_eq!(Receipt::from_value(&value, 1), Ok(r.clone()));
    let back: Receipt = serde_json::from_value(value).expect("deserializes");
    assert_eq!(back, r);
}

#[test]
fn absent_options_and_empty_items_are_left_out_when_serialized() {
    let r = Receipt::from_value(&minimal_json(0), 0).expect("valid");
    let value = serde_json::to_value(&r).expect("serializes");
    assert_eq!(value, minimal_json(0));
}

#[test]
fn serde_deserialization_rejects_unknown_fields() {
    let v = with("colour", json!("red"));
    assert!(serde_json::from_value::<Receipt>(v).is_err());
}
