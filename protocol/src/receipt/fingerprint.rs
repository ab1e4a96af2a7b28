//! [`Fingerprint`]: the SHA-256 of a receipt's content in one canonical form, so that a
//! redelivery of the same receipt (a quiet duplicate) can be told from a re-send with other
//! content under the same `receipt_id` (a conflict).
//!
//! The canonical form is compact JSON with every field present (absent ones as `null`, no
//! items as `[]`), object keys sorted at every depth (so field order, and key order inside
//! `metadata`, do not count), decimals written by [`Decimal::canonical`] (so `"12.50"` and
//! `"12.5"` are the same content, as PostgreSQL `numeric` stores them), and ids and hashes in
//! lowercase. It is prefixed by a version tag: a change to the form is a new tag.

use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Decimal, Receipt};

/// Tag hashed before the canonical form; names its version.
const FORM: &[u8] = b"sluice-receipt-content-v1\n";

/// The digest of a receipt's content: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The 32 bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From 32 stored bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Receipt {
    /// The fingerprint of this receipt's whole content (every field, items included).
    pub fn fingerprint(&self) -> Fingerprint {
        let mut text = Vec::with_capacity(512);
        self.write_canonical(&mut text);
        let mut hasher = Sha256::new();
        hasher.update(FORM);
        hasher.update(&text);
        Fingerprint(hasher.finalize().into())
    }

    /// The canonical form, written field by field with the keys in sorted order (no JSON tree
    /// is built: this runs once per receipt drained).
    fn write_canonical(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"category\":");
        opt_str(out, self.category.as_deref());
        out.extend_from_slice(b",\"currency\":");
        string(out, &self.currency);
        out.extend_from_slice(b",\"image\":");
        match &self.image {
            None => out.extend_from_slice(b"null"),
            Some(i) => {
                out.extend_from_slice(b"{\"bytes\":");
                // A number, written as serde_json writes one: no `String` in between.
                let _ = serde_json::to_writer(&mut *out, &i.bytes);
                out.extend_from_slice(b",\"key\":");
                string(out, &i.key);
                out.extend_from_slice(b",\"sha256\":");
                lowercase(out, &i.sha256);
                out.push(b'}');
            }
        }
        out.extend_from_slice(b",\"issued_on\":");
        string(out, &self.issued_on);
        out.extend_from_slice(b",\"items\":[");
        for (n, i) in self.items.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"amount\":");
            decimal(out, &i.amount);
            out.extend_from_slice(b",\"description\":");
            string(out, &i.description);
            out.extend_from_slice(b",\"quantity\":");
            decimal(out, &i.quantity);
            out.extend_from_slice(b",\"unit_price\":");
            decimal(out, &i.unit_price);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"merchant\":");
        string(out, &self.merchant);
        out.extend_from_slice(b",\"metadata\":");
        match &self.metadata {
            None => out.extend_from_slice(b"null"),
            Some(m) => write_object(m, out),
        }
        out.extend_from_slice(b",\"receipt_id\":");
        lowercase(out, &self.receipt_id);
        out.extend_from_slice(b",\"submitted_by\":");
        opt_str(out, self.submitted_by.as_deref());
        out.extend_from_slice(b",\"tax\":");
        match &self.tax {
            None => out.extend_from_slice(b"null"),
            Some(t) => decimal(out, t),
        }
        out.extend_from_slice(b",\"tenant_id\":");
        string(out, &self.tenant_id);
        out.extend_from_slice(b",\"total\":");
        decimal(out, &self.total);
        out.push(b'}');
    }
}

/// A JSON string, as serde_json's own writer escapes it.
fn string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes only `"`, `\\` and the controls below U+0020: a string with none of
    // them (almost every one) is its own bytes between quotes, copied without serde_json's
    // per-byte escape walk (4 % of the agent's CPU in a profile of the drain).
    let b = s.as_bytes();
    if b.iter()
        .fold(true, |ok, &c| ok & (c >= 0x20) & (c != b'"') & (c != b'\\'))
    {
        out.reserve(b.len() + 2);
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
    } else {
        // Writing a `&str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(b"null"),
        Some(s) => string(out, s),
    }
}

/// An id or hash in lowercase (ASCII: validation allows nothing else in them).
fn lowercase(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        string(out, &s.to_ascii_lowercase());
    } else {
        string(out, s);
    }
}

/// A decimal in its canonical spelling, as a JSON string (digits, `-` and `.` need no
/// escaping).
fn decimal(out: &mut Vec<u8>, d: &Decimal) {
    let (negative, int, frac) = d.canonical_parts();
    out.push(b'"');
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(int.as_bytes());
    if !frac.is_empty() {
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
    out.push(b'"');
}

/// Compact JSON with object keys sorted at every depth.
fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(list) => {
            out.push(b'[');
            for (i, v) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(v, out);
            }
            out.push(b']');
        }
        // Strings are escaped by serde_json's own writer; numbers, booleans and null as given.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    // serde_json's map keeps its keys sorted unless its `preserve_order` feature is on
    // somewhere in the build: only then are they sorted here.
    if map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b) {
        write_entries(map.iter(), out);
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        write_entries(entries.into_iter(), out);
    }
}

/// An object's entries, in the order given.
fn write_entries<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        write_value(v, out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
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
            "image": r.image.as_ref().map(|i| json!({
                "key": i.key,
                "sha256": i.sha256.to_ascii_lowercase(),
                "bytes": i.bytes,
            })),
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
}
