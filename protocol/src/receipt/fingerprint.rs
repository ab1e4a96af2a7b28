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
                // `content_type` only where set, so the fingerprints of receipts without a
                // photo type stay what they were.
                if let Some(c) = &i.content_type {
                    out.extend_from_slice(b",\"content_type\":");
                    string(out, c);
                }
                out.extend_from_slice(b",\"key\":");
                match &i.key {
                    Some(k) => string(out, k),
                    None => out.extend_from_slice(b"null"),
                }
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
mod tests;
