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

use serde_json::{json, Map, Value};
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
        let mut text = String::new();
        write_canonical(&self.canonical_value(), &mut text);
        let mut hasher = Sha256::new();
        hasher.update(FORM);
        hasher.update(text.as_bytes());
        Fingerprint(hasher.finalize().into())
    }

    /// The receipt as JSON with every field present and decimals canonical.
    fn canonical_value(&self) -> Value {
        let decimal = |d: &Decimal| Value::String(d.canonical());
        let items: Vec<Value> = self
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
        json!({
            "receipt_id": self.receipt_id.to_ascii_lowercase(),
            "tenant_id": self.tenant_id,
            "submitted_by": self.submitted_by,
            "merchant": self.merchant,
            "issued_on": self.issued_on,
            "currency": self.currency,
            "total": decimal(&self.total),
            "tax": self.tax.as_ref().map(decimal),
            "category": self.category,
            "image": self.image.as_ref().map(|i| json!({
                "key": i.key,
                "sha256": i.sha256.to_ascii_lowercase(),
                "bytes": i.bytes,
            })),
            "items": items,
            "metadata": self.metadata.clone().map(Value::Object).unwrap_or(Value::Null),
        })
    }
}

/// Compact JSON with object keys sorted at every depth.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(list) => {
            out.push('[');
            for (i, v) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        // Strings are escaped by serde_json's own writer; numbers, booleans and null as given.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

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
}
