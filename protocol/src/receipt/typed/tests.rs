//! The quick path is sound: whatever it accepts, the validation walk accepts too, as the same
//! receipt. Checked on valid receipts broken in many ways, and on the JSON shapes serde and
//! `serde_json::Value` read differently.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::test_support::{self, full_json, id, minimal_json, repeated_id_json};

/// The quick path on one receipt's JSON text.
fn quick(json: &str) -> Option<Receipt> {
    let Object(mut receipt) = serde_json::from_str::<Object<Receipt>>(json).ok()?;
    accept(&mut receipt).then_some(receipt)
}

/// The validation walk on the same text.
fn walk(json: &str) -> Result<Receipt, Vec<FieldError>> {
    let value: Value = serde_json::from_str(json).expect("the test builds JSON");
    Receipt::from_value(&value, 0)
}

/// Asserts the quick path is sound on `json` and returns whether it accepted it.
fn sound(json: &str) -> bool {
    match quick(json) {
        Some(receipt) => {
            assert_eq!(walk(json), Ok(receipt), "the walk disagrees on {json}");
            true
        }
        None => false,
    }
}

/// Values that break one rule or another, or that serde and the walk might read differently.
fn odd_values() -> Vec<Value> {
    let long = |n: usize| Value::String("x".repeat(n));
    vec![
        Value::Null,
        json!(true),
        json!(5),
        json!(-1),
        json!(-0),
        json!(1.5),
        json!(18_446_744_073_709_551_616_f64),
        json!(""),
        json!(" "),
        json!("x"),
        json!("EUR"),
        json!("eur"),
        json!("2024-02-30"),
        json!("2024-02-29"),
        json!("0000-01-01"),
        json!("1e3"),
        json!("+4"),
        json!("4.12345"),
        json!("4.50"),
        json!("ACME\u{1}"),
        json!("tab\there"),
        json!("\u{FFFE}"),
        json!(id(9).to_uppercase()),
        json!(format!("{{{}}}", id(9))),
        json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"),
        long(64),
        long(65),
        long(129),
        long(201),
        long(501),
        long(1025),
        json!([]),
        json!(["a", "b"]),
        json!({}),
        json!({"k": "\u{2}"}),
        json!({"\u{3}": 1}),
        json!({"big": "y".repeat(9000)}),
        json!({"list": [1, {"deep": "\u{4}"}]}),
        json!({"list": [{"\u{5}": true}]}),
        json!({"ok": ["a", {"b": null}], "z": {"y": [[]]}}),
        json!({"edge": "y".repeat(MAX_METADATA_BYTES - 11)}),
        json!({"edge": "y".repeat(MAX_METADATA_BYTES - 10)}),
        Value::Array(vec![full_json(0)["items"][0].clone(); MAX_ITEMS]),
        Value::Array(vec![full_json(0)["items"][0].clone(); MAX_ITEMS + 1]),
    ]
}

/// Every place in a receipt a value can be put: (pointer into the receipt, key).
const PLACES: &[&str] = &[
    "/receipt_id",
    "/tenant_id",
    "/submitted_by",
    "/merchant",
    "/issued_on",
    "/currency",
    "/total",
    "/tax",
    "/category",
    "/image",
    "/image/key",
    "/image/sha256",
    "/image/bytes",
    "/items",
    "/items/0",
    "/items/0/description",
    "/items/0/quantity",
    "/items/0/unit_price",
    "/items/0/amount",
    "/metadata",
    "/metadata/note",
    "/colour",
    "/image/colour",
    "/items/0/colour",
];

/// Puts `value` at `pointer` (adding the last key when its parent exists).
fn put(receipt: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    let Some(parent) = receipt.pointer_mut(parent) else {
        return;
    };
    match parent {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(list) => {
            if let Some(slot) = key.parse::<usize>().ok().and_then(|i| list.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

/// Takes the member at `pointer` out of its object, if it is there.
fn remove(receipt: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    if let Some(Value::Object(map)) = receipt.pointer_mut(parent) {
        map.remove(key);
    }
}

#[test]
fn every_fixture_receipt_takes_the_quick_path() {
    for receipt in [full_json(1), minimal_json(2)] {
        assert!(sound(&receipt.to_string()), "{receipt}");
    }
}

#[test]
fn one_odd_value_anywhere_is_accepted_only_when_the_walk_accepts_it() {
    let mut accepted = 0;
    let mut tried = 0;
    for place in PLACES {
        for value in odd_values() {
            let mut receipt = full_json(3);
            put(&mut receipt, place, value.clone());
            tried += 1;
            accepted += usize::from(sound(&receipt.to_string()));
            let mut receipt = full_json(3);
            remove(&mut receipt, place);
            sound(&receipt.to_string());
        }
    }
    // Both ways are exercised: most odd values are refused, and the valid ones (an uppercase
    // id or digest, a tab, lengths at their limit, null for an optional field) are accepted.
    assert!(
        accepted > 20 && accepted < tried / 2,
        "{accepted} of {tried}"
    );
}

#[test]
fn ids_and_digests_come_out_normalised_as_the_walk_makes_them() {
    let mut receipt = full_json(4);
    receipt["receipt_id"] = json!(id(4).to_uppercase());
    receipt["image"]["sha256"] =
        json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08");
    let accepted = quick(&receipt.to_string()).expect("valid");
    assert_eq!(accepted.receipt_id, id(4));
    assert!(accepted.image.expect("image").sha256.starts_with("9f86d0"));
}

#[test]
fn shapes_serde_would_read_but_the_walk_refuses_are_left_to_the_walk() {
    let full = full_json(5);
    let fields =
        |v: &Value| -> Vec<Value> { v.as_object().expect("object").values().cloned().collect() };
    // A receipt, an image or an item written as an array of its values.
    let as_array = Value::Array(fields(&minimal_json(5)));
    let mut image_array = full.clone();
    image_array["image"] = Value::Array(fields(&full["image"]));
    let mut item_array = full.clone();
    item_array["items"][0] = Value::Array(fields(&full["items"][0]));
    for json in [as_array, image_array, item_array] {
        let text = json.to_string();
        assert!(quick(&text).is_none(), "{text}");
        assert!(walk(&text).is_err(), "{text}");
    }
}

#[test]
fn a_repeated_key_is_left_to_the_walk_which_keeps_the_last() {
    let text = repeated_id_json(1, 2);
    assert_eq!(quick(&text), None);
    assert_eq!(walk(&text).expect("valid").receipt_id, id(2));
}

#[test]
fn null_items_are_left_to_the_walk_which_reads_them_as_none() {
    let mut receipt = minimal_json(6);
    receipt["items"] = Value::Null;
    let text = receipt.to_string();
    assert_eq!(quick(&text), None);
    assert_eq!(walk(&text).expect("valid").items, Vec::new());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_receipts_take_the_quick_path_as_the_walk_reads_them(r in test_support::receipt()) {
        let text = serde_json::to_string(&r).expect("serializes");
        prop_assert!(sound(&text));
    }

    #[test]
    fn a_broken_receipt_is_never_accepted_by_the_quick_path_alone(
        r in test_support::receipt(),
        place in 0..PLACES.len(),
        value in 0..64usize,
    ) {
        let mut receipt = serde_json::to_value(&r).expect("serializes");
        put(&mut receipt, PLACES[place], odd_values()[value % odd_values().len()].clone());
        sound(&receipt.to_string());
    }
}
