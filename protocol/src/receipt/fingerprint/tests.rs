//! Tests of `fingerprint`.

use proptest::strategy::Strategy as _;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::receipt::{Decimal, Receipt};
use crate::test_support::{full, full_json};

fn receipt(v: &Value) -> Receipt {
    match Receipt::from_value(v, 0) {
        Ok(r) => r,
        Err(e) => panic!("invalid fixture: {e:?}"),
    }
}

#[test]
fn decimals_are_compared_by_value() {
    for (a, b) in [
        ("12.50", "12.5"),
        ("12.0", "12"),
        ("012.5000", "12.5"),
        ("-0.00", "0"),
        ("0.0001", "0.0001"),
        ("-3.10", "-3.1"),
    ] {
        let (a, b) = (
            Decimal::parse(a).expect("valid"),
            Decimal::parse(b).expect("valid"),
        );
        assert_eq!(a.canonical(), b.canonical(), "{a} vs {b}");
    }
    let mut v = full_json(1);
    let base = receipt(&v).fingerprint();
    v["total"] = json!("42.5000");
    v["items"][0]["unit_price"] = json!("7.5");
    v["items"][1]["quantity"] = json!("2.0");
    assert_eq!(receipt(&v).fingerprint(), base);
}

#[test]
fn field_and_key_order_do_not_count() {
    let v = full_json(2);
    let base = receipt(&v).fingerprint();
    // The same object built with its keys (and metadata's keys) in reverse order.
    let reversed = |o: &serde_json::Map<String, Value>| -> Value {
        Value::Object(
            o.iter()
                .rev()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    let mut r = v.as_object().expect("object").clone();
    if let Some(Value::Object(m)) = r.get("metadata").cloned() {
        r.insert("metadata".into(), reversed(&m));
    }
    assert_eq!(receipt(&reversed(&r)).fingerprint(), base);
    let text = r#"{"metadata":{"nested":{"list":[1,"two",null,true]},"source":"app"}}"#;
    let mut w = v.clone();
    w["metadata"] = serde_json::from_str::<Value>(text).expect("json")["metadata"].clone();
    assert_eq!(receipt(&w).fingerprint(), base);
}

#[test]
fn any_change_of_content_changes_it() {
    let v = full_json(3);
    let base = receipt(&v).fingerprint();
    let changes: Vec<(&str, Value)> = vec![
        ("/tenant_id", json!("other-tenant")),
        ("/submitted_by", json!("joe@example.com")),
        ("/merchant", json!("Another shop")),
        ("/issued_on", json!("2024-03-01")),
        ("/currency", json!("USD")),
        ("/total", json!("42.51")),
        ("/tax", json!("6.80")),
        ("/category", json!("travel")),
        ("/image/key", json!("other.jpg")),
        (
            "/image/sha256",
            json!("0f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        ),
        ("/image/bytes", json!(1)),
        ("/items/0/description", json!("Stew")),
        ("/items/0/quantity", json!("3")),
        ("/items/1/unit_price", json!("17.51")),
        ("/items/1/amount", json!("35.01")),
        ("/metadata/source", json!("web")),
    ];
    for (pointer, new) in changes {
        let mut w = v.clone();
        *w.pointer_mut(pointer).expect(pointer) = new;
        assert_ne!(receipt(&w).fingerprint(), base, "{pointer}");
    }
    let mut id = v.clone();
    id["receipt_id"] = json!(full(4).receipt_id);
    assert_ne!(receipt(&id).fingerprint(), base, "receipt_id");
    for field in [
        "submitted_by",
        "tax",
        "category",
        "image",
        "items",
        "metadata",
    ] {
        let mut w = v.clone();
        w.as_object_mut().expect("object").remove(field);
        assert_ne!(receipt(&w).fingerprint(), base, "without {field}");
    }
    let mut swapped = v.clone();
    let items = swapped["items"].as_array_mut().expect("items");
    items.swap(0, 1);
    assert_ne!(receipt(&swapped).fingerprint(), base, "item order");
}

#[test]
fn it_shows_as_64_hex_digits_and_round_trips_through_bytes() {
    let fp = full(5).fingerprint();
    let hex = fp.to_string();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(super::Fingerprint::from_slice(fp.as_bytes()), Some(fp));
    assert_eq!(super::Fingerprint::from_slice(&[0; 31]), None);
}

/// The canonical form as first written: a JSON tree with every field, keys sorted at
/// every depth. The streaming writer must give exactly these bytes, or every stored
/// fingerprint would stop matching its redelivery.
fn tree_form(r: &Receipt) -> Vec<u8> {
    let decimal = |d: &Decimal| Value::String(d.canonical());
    let items: Vec<Value> = r
        .items
        .iter()
        .map(|i| {
            json!({
                "description": i.description,
                "quantity": decimal(&i.quantity),
                "unit_price": decimal(&i.unit_price),
                "amount": decimal(&i.amount),
            })
        })
        .collect();
    let tree = json!({
        "receipt_id": r.receipt_id.to_ascii_lowercase(),
        "tenant_id": r.tenant_id,
        "submitted_by": r.submitted_by,
        "merchant": r.merchant,
        "issued_on": r.issued_on,
        "currency": r.currency,
        "total": decimal(&r.total),
        "tax": r.tax.as_ref().map(decimal),
        "category": r.category,
        "image": r.image.as_ref().map(|i| {
            let mut image = json!({
                "key": i.key,
                "sha256": i.sha256.to_ascii_lowercase(),
                "bytes": i.bytes,
            });
            // The type is in the canonical form only where set (older fingerprints unchanged).
            if let Some(c) = &i.content_type {
                image["content_type"] = json!(c);
            }
            image
        }),
        "items": items,
        "metadata": r.metadata.clone().map(Value::Object).unwrap_or(Value::Null),
    });
    let mut out = Vec::new();
    super::write_value(&tree, &mut out);
    out
}

fn streamed(r: &Receipt) -> Vec<u8> {
    let mut out = Vec::new();
    r.write_canonical(&mut out);
    out
}

#[test]
fn the_streamed_form_is_the_tree_form_byte_for_byte() {
    for i in 0..20 {
        let r = full(i);
        assert_eq!(
            String::from_utf8_lossy(&streamed(&r)),
            String::from_utf8_lossy(&tree_form(&r))
        );
    }
    let mut odd = full(1);
    odd.receipt_id = odd.receipt_id.to_ascii_uppercase();
    odd.merchant = "Caf\u{e9} \"quoted\" \\ back\nline\t\u{1}".into();
    odd.tax = None;
    odd.image = None;
    odd.items.clear();
    assert_eq!(streamed(&odd), tree_form(&odd));
}

/// A fingerprint pinned: the form may not drift.
#[test]
fn a_known_receipt_keeps_its_fingerprint() {
    let v = json!({
        "receipt_id": "5D1C2A10-3B4E-4F60-9A7B-8C9D0E1F2A3B", "tenant_id": "t-1",
        "merchant": "Caf\u{e9} \"Nord\"", "issued_on": "2024-03-01", "currency": "EUR",
        "total": "012.50", "tax": "2.0",
        "image": {"key": "k.jpg", "sha256": "AB".repeat(32), "bytes": 1234},
        "items": [{"description": "tea", "quantity": "1", "unit_price": "12.5", "amount": "12.50"}],
        "metadata": {"z": [1, "two", null], "a": {"y": true, "b": 1.5}}
    });
    let r = receipt(&v);
    let mut hasher = sha2::Sha256::new();
    sha2::Digest::update(&mut hasher, super::FORM);
    sha2::Digest::update(&mut hasher, tree_form(&r));
    let want: [u8; 32] = sha2::Digest::finalize(hasher).into();
    assert_eq!(r.fingerprint().as_bytes(), &want);
    // Computed apart from this code, from the form's description (sorted keys, compact).
    assert_eq!(
        r.fingerprint().to_string(),
        "d006b0e6b85eec7f677288028c9b3b3ffd1371aa133f521a85d8a7372236d788"
    );
}

proptest::proptest! {
    #[test]
    fn a_string_is_written_as_serde_json_writes_it(
        s in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<char>(),
                proptest::strategy::Just('"'),
                proptest::strategy::Just('\\'),
                proptest::strategy::Just('\u{1f}'),
                proptest::strategy::Just('\u{7f}'),
                proptest::strategy::Just('a'),
            ],
            0..16,
        ).prop_map(|c| c.into_iter().collect::<String>()),
    ) {
        let mut ours = Vec::new();
        super::string(&mut ours, &s);
        proptest::prop_assert_eq!(ours, serde_json::to_vec(&s).expect("a string"));
    }

    #[test]
    fn any_valid_receipt_streams_to_its_tree_form(r in crate::test_support::receipt()) {
        proptest::prop_assert_eq!(streamed(&r), tree_form(&r));
    }
}
