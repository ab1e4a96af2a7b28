//! Shared test fixtures: valid receipts as JSON and typed, and proptest strategies for them.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::receipt::{sqs_allows, Decimal, Image, Item, Receipt};

/// A deterministic valid receipt id for position `i`.
pub(crate) fn id(i: usize) -> String {
    uuid::Uuid::from_u128(0x0b6c_0000_0000_4000_8000_0000_0000_0000 + i as u128)
        .hyphenated()
        .to_string()
}

/// A valid receipt with every field set, as JSON.
pub(crate) fn full_json(i: usize) -> Value {
    json!({
        "receipt_id": id(i),
        "tenant_id": "acme-eu.1_x",
        "submitted_by": "jane@example.com",
        "merchant": "Café Ünter den Linden",
        "issued_on": "2024-02-29",
        "currency": "EUR",
        "total": "42.50",
        "tax": "6.79",
        "category": "meals",
        "image": {
            "key": "tenants/acme/2024/02/29/receipt.jpg",
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "bytes": 123456
        },
        "items": [
            {"description": "Soup", "quantity": "1", "unit_price": "7.50", "amount": "7.50"},
            {"description": "Tea\twith lemon", "quantity": "2", "unit_price": "17.50", "amount": "35.00"}
        ],
        "metadata": {"source": "app", "nested": {"list": [1, "two", null, true]}}
    })
}

/// A valid receipt with only the required fields, as JSON.
pub(crate) fn minimal_json(i: usize) -> Value {
    json!({
        "receipt_id": id(i),
        "tenant_id": "acme",
        "merchant": "Shop",
        "issued_on": "2023-12-31",
        "currency": "USD",
        "total": "-3"
    })
}

/// A minimal receipt as JSON text with `receipt_id` given twice, ids `first` then `second`:
/// text a `serde_json::Value` cannot hold.
pub(crate) fn repeated_id_json(first: usize, second: usize) -> String {
    format!(
        r#"{{"receipt_id":"{}","receipt_id":"{}","tenant_id":"t","merchant":"m","issued_on":"2024-01-01","currency":"EUR","total":"1"}}"#,
        id(first),
        id(second)
    )
}

/// [`full_json`] as a typed receipt.
pub(crate) fn full(i: usize) -> Receipt {
    match Receipt::from_value(&full_json(i), i) {
        Ok(r) => r,
        Err(errors) => panic!("fixture is invalid: {errors:?}"),
    }
}

/// A JSON body `{"receipts":[…]}` from values.
pub(crate) fn body(receipts: &[Value]) -> Vec<u8> {
    json!({ "receipts": receipts }).to_string().into_bytes()
}

// -- proptest strategies ------------------------------------------------------------------------

/// Text of `min..=max` characters that SQS accepts (tabs, newlines, astral planes included).
pub(crate) fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        any::<char>().prop_filter("SQS-safe", |c| sqs_allows(*c)),
        min..=max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

pub(crate) fn decimal() -> impl Strategy<Value = Decimal> {
    (
        any::<bool>(),
        0u64..1_000_000_000_000,
        0usize..=4,
        0u32..10_000,
    )
        .prop_map(|(negative, int, frac_digits, frac)| {
            let sign = if negative { "-" } else { "" };
            let s = if frac_digits == 0 {
                format!("{sign}{int}")
            } else {
                let frac = frac % 10u32.pow(frac_digits as u32);
                format!("{sign}{int}.{frac:0width$}", width = frac_digits)
            };
            match Decimal::parse(&s) {
                Ok(d) => d,
                Err(reason) => panic!("generated decimal {s:?} {reason}"),
            }
        })
}

fn item() -> impl Strategy<Value = Item> {
    (text(1, 24), decimal(), decimal(), decimal()).prop_map(
        |(description, quantity, unit_price, amount)| Item {
            description,
            quantity,
            unit_price,
            amount,
        },
    )
}

/// A reference (a key alone) or a photo the bridge carries (a key and its type).
fn image() -> impl Strategy<Value = Image> {
    (
        text(1, 32),
        "[0-9a-f]{64}",
        any::<u64>(),
        proptest::option::of(proptest::sample::select(
            crate::receipt::PHOTO_CONTENT_TYPES,
        )),
    )
        .prop_map(|(key, sha256, bytes, content_type)| Image {
            key: Some(key),
            sha256,
            bytes,
            content_type: content_type.map(str::to_owned),
        })
}

fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        text(0, 20).prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    proptest::collection::btree_map(text(0, 10), leaf, 0..3)
        .prop_map(|m| m.into_iter().collect::<Map<String, Value>>())
}

/// Valid receipts of a few hundred bytes up to about 1.3 KB.
pub(crate) fn receipt() -> impl Strategy<Value = Receipt> {
    (
        (
            any::<u128>(),
            "[A-Za-z0-9._-]{1,16}",
            proptest::option::of(text(0, 20)),
            text(1, 40),
            (1u32..=9999, 1u32..=12, 1u32..=28),
            "[A-Z]{3}",
        ),
        (
            decimal(),
            proptest::option::of(decimal()),
            proptest::option::of(text(0, 16)),
            proptest::option::of(image()),
            proptest::collection::vec(item(), 0..4),
            proptest::option::of(metadata()),
        ),
    )
        .prop_map(
            |(
                (id, tenant_id, submitted_by, merchant, (y, m, d), currency),
                (total, tax, category, image, items, metadata),
            )| Receipt {
                receipt_id: uuid::Uuid::from_u128(id).hyphenated().to_string(),
                tenant_id,
                submitted_by,
                merchant,
                issued_on: format!("{y:04}-{m:02}-{d:02}"),
                currency,
                total,
                tax,
                category,
                image,
                items,
                metadata,
            },
        )
}
