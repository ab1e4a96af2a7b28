//! The validation walk: checks a `serde_json::Value` field by field, collecting every problem
//! with its JSON pointer and a plain reason. The only place the receipt rules live.

use serde_json::{Map, Value};

use super::rules::{check_chars, check_date, check_len, parse_uuid};
use super::*;

/// Validates one receipt given as a JSON value (see [`Receipt::from_value`]).
pub(super) fn receipt(value: &Value, index: usize) -> Result<Receipt, Vec<FieldError>> {
    receipt_with(value, index, Vec::new())
}

/// Validates one receipt whose fields were partly refused while parsing: `refused` holds
/// (pointer relative to `/receipts/{index}`, reason) for values left out of `value`, each
/// reported where the rule for that field would be.
pub(crate) fn receipt_with(
    value: &Value,
    index: usize,
    refused: Vec<(String, String)>,
) -> Result<Receipt, Vec<FieldError>> {
    let mut c = Checker::new(index);
    c.refused = refused
        .into_iter()
        .map(|(at, reason)| (format!("/receipts/{index}{at}"), reason))
        .collect();
    let mut receipt = c.receipt(value);
    // A refusal no rule claimed still refuses the receipt: never dropped in silence.
    for (pointer, reason) in std::mem::take(&mut c.refused) {
        c.report(pointer, reason);
        receipt = None;
    }
    match receipt {
        Some(receipt) if c.problems.is_empty() => Ok(receipt),
        _ => Err(c.into_errors(receipt_id_of(value))),
    }
}

/// The id to show next to a receipt's errors: its canonical UUID when it has a valid one.
fn receipt_id_of(value: &Value) -> Option<String> {
    value
        .get("receipt_id")
        .and_then(Value::as_str)
        .and_then(|s| parse_uuid(s).ok())
}

/// What kind of JSON value `v` is, with its article: "a number", "an array".
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 6901 escaping of one pointer segment.
fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Collects the problems of one receipt.
struct Checker {
    index: usize,
    /// (pointer, reason)
    problems: Vec<(String, String)>,
    /// Values the parser refused and left out: (pointer, reason), reported by the rule at
    /// that pointer (see [`receipt_with`]).
    refused: Vec<(String, String)>,
}

/// Whether a field may be absent (or `null`).
#[derive(Clone, Copy, PartialEq)]
enum Need {
    Required,
    Optional,
}

impl Checker {
    fn new(index: usize) -> Self {
        Checker {
            index,
            problems: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Reports the parser's refusal at `pointer`, if there is one.
    fn refused_at(&mut self, pointer: &str) -> bool {
        match self.refused.iter().position(|(p, _)| p == pointer) {
            Some(at) => {
                let (pointer, reason) = self.refused.swap_remove(at);
                self.report(pointer, reason);
                true
            }
            None => false,
        }
    }

    fn into_errors(self, receipt_id: Option<String>) -> Vec<FieldError> {
        let index = self.index;
        self.problems
            .into_iter()
            .map(|(pointer, reason)| FieldError {
                index,
                receipt_id: receipt_id.clone(),
                pointer,
                reason,
            })
            .collect()
    }

    fn report(&mut self, pointer: String, reason: impl Into<String>) {
        self.problems.push((pointer, reason.into()));
    }

    /// Records `result`'s error at the field `name` of the object at `base`, returning the value
    /// on success. The pointer is only written out for an error (this runs for every field of
    /// every receipt drained).
    fn keep_at<T>(&mut self, base: &str, name: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(reason) => {
                self.report(format!("{base}/{name}"), reason);
                None
            }
        }
    }

    /// Reports every key of `obj` not in `known`.
    fn unknown_fields(&mut self, obj: &Map<String, Value>, known: &[&str], base: &str) {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            let reason = format!(
                "is not a known field; expected one of: {}",
                known.join(", ")
            );
            self.report(format!("{base}/{}", escape_pointer(key)), reason);
        }
    }

    /// Looks a field up. `Ok(None)` when an optional field is absent or null.
    fn field<'v>(
        obj: &'v Map<String, Value>,
        name: &str,
        need: Need,
    ) -> Result<Option<&'v Value>, String> {
        match (obj.get(name), need) {
            (None, Need::Required) => Err("is required".into()),
            (Some(Value::Null), Need::Required) => Err("is required and must not be null".into()),
            (None | Some(Value::Null), Need::Optional) => Ok(None),
            (Some(v), _) => Ok(Some(v)),
        }
    }

    /// A string field: presence, type, the SQS character rule, then `rule`.
    fn string(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
        name: &str,
        need: Need,
        rule: impl FnOnce(&str) -> Result<String, String>,
    ) -> Option<Option<String>> {
        let result = Self::field(obj, name, need).and_then(|v| match v {
            None => Ok(None),
            Some(Value::String(s)) => {
                check_chars(s)?;
                rule(s).map(Some)
            }
            Some(other) => Err(format!("must be a string, not {}", kind(other))),
        });
        self.keep_at(base, name, result)
    }

    /// A required string field.
    fn required(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
        name: &str,
        rule: impl FnOnce(&str) -> Result<String, String>,
    ) -> Option<String> {
        self.string(obj, base, name, Need::Required, rule).flatten()
    }

    /// A decimal field (a JSON string holding a [`Decimal`]).
    fn decimal(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
        name: &str,
        need: Need,
    ) -> Option<Option<Decimal>> {
        let result = Self::field(obj, name, need).and_then(|v| match v {
            None => Ok(None),
            Some(Value::String(s)) => {
                check_chars(s)?;
                Decimal::parse(s).map(Some)
            }
            Some(other) => Err(format!(
                r#"must be a decimal string like "42.50", not {}"#,
                kind(other)
            )),
        });
        self.keep_at(base, name, result)
    }

    fn receipt(&mut self, value: &Value) -> Option<Receipt> {
        let base = format!("/receipts/{}", self.index);
        let Some(obj) = value.as_object() else {
            self.report(base, format!("must be a JSON object, not {}", kind(value)));
            return None;
        };
        let b = base.as_str();
        let receipt_id = self.required(obj, b, "receipt_id", parse_uuid);
        let tenant_id = self.required(obj, b, "tenant_id", |s| {
            rules::tenant_id(s).map(|()| s.to_owned())
        });
        let submitted_by = self.string(obj, b, "submitted_by", Need::Optional, |s| {
            check_len(s, 0, MAX_SUBMITTED_BY_CHARS).map(|()| s.to_owned())
        });
        let merchant = self.required(obj, b, "merchant", |s| {
            check_len(s, 1, MAX_MERCHANT_CHARS).map(|()| s.to_owned())
        });
        let issued_on = self.required(obj, b, "issued_on", |s| {
            check_date(s).map(|()| s.to_owned())
        });
        let currency = self.required(obj, b, "currency", |s| {
            rules::currency(s).map(|()| s.to_owned())
        });
        let total = self.decimal(obj, b, "total", Need::Required).flatten();
        let tax = self.decimal(obj, b, "tax", Need::Optional);
        let category = self.string(obj, b, "category", Need::Optional, |s| {
            check_len(s, 0, MAX_CATEGORY_CHARS).map(|()| s.to_owned())
        });
        let image = self.image(obj, b);
        let items = self.items(obj, b);
        let metadata = self.metadata(obj, b);
        self.unknown_fields(obj, RECEIPT_FIELDS, b);

        Some(Receipt {
            receipt_id: receipt_id?,
            tenant_id: tenant_id?,
            submitted_by: submitted_by?,
            merchant: merchant?,
            issued_on: issued_on?,
            currency: currency?,
            total: total?,
            tax: tax?,
            category: category?,
            image: image?,
            items: items?,
            metadata: metadata?,
        })
    }

    fn image(&mut self, obj: &Map<String, Value>, base: &str) -> Option<Option<Image>> {
        let pointer = format!("{base}/image");
        if self.refused_at(&pointer) {
            return None;
        }
        let value = match Self::field(obj, "image", Need::Optional) {
            Ok(Some(v)) => v,
            Ok(None) => return Some(None),
            Err(reason) => {
                self.report(pointer, reason);
                return None;
            }
        };
        let Some(img) = value.as_object() else {
            self.report(
                pointer,
                format!("must be a JSON object, not {}", kind(value)),
            );
            return None;
        };
        let p = pointer.as_str();
        let key = self.string(img, p, "key", Need::Optional, |s| {
            check_len(s, 1, MAX_IMAGE_KEY_CHARS).map(|()| s.to_owned())
        });
        let sha256 = self.required(img, p, "sha256", |s| {
            rules::sha256(s).map(|()| s.to_ascii_lowercase())
        });
        let bytes_result = Self::field(img, "bytes", Need::Required).and_then(|v| match v {
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| format!("must be a whole number from 0 to {}", u64::MAX)),
            Some(other) => Err(format!("must be a whole number, not {}", kind(other))),
            None => Err("is required".into()),
        });
        let bytes = self.keep_at(p, "bytes", bytes_result);
        let content_type = self.string(img, p, "content_type", Need::Optional, |s| {
            rules::content_type(s).map(|()| s.to_owned())
        });
        self.unknown_fields(img, IMAGE_FIELDS, p);
        let (key, sha256, bytes, content_type) = (key?, sha256?, bytes?, content_type?);
        if key.is_none() {
            // A photo declared for upload: what it is and how big, so the upload URL can be
            // bound to them.
            if content_type.is_none() {
                self.report(
                    format!("{p}/content_type"),
                    format!(
                        "is required when the image has no key (a photo to upload): one of {}",
                        PHOTO_CONTENT_TYPES.join(", ")
                    ),
                );
                return None;
            }
            if let Err(reason) = rules::photo_bytes(bytes) {
                self.report(format!("{p}/bytes"), reason);
                return None;
            }
        }
        Some(Some(Image {
            key,
            sha256,
            bytes,
            content_type,
        }))
    }

    fn items(&mut self, obj: &Map<String, Value>, base: &str) -> Option<Vec<Item>> {
        let pointer = format!("{base}/items");
        if self.refused_at(&pointer) {
            return None;
        }
        let list = match Self::field(obj, "items", Need::Optional) {
            Ok(None) => return Some(Vec::new()),
            Ok(Some(Value::Array(list))) => list,
            Ok(Some(other)) => {
                self.report(pointer, format!("must be an array, not {}", kind(other)));
                return None;
            }
            Err(reason) => {
                self.report(pointer, reason);
                return None;
            }
        };
        let mut ok = true;
        if list.len() > MAX_ITEMS {
            let reason = format!("must have at most {MAX_ITEMS} items (got {})", list.len());
            self.report(pointer.clone(), reason);
            ok = false;
        }
        let mut items = Vec::with_capacity(list.len().min(MAX_ITEMS));
        for (j, value) in list.iter().enumerate() {
            let p = format!("{pointer}/{j}");
            if self.refused_at(&p) {
                ok = false;
                continue;
            }
            let Some(item) = value.as_object() else {
                self.report(p, format!("must be a JSON object, not {}", kind(value)));
                ok = false;
                continue;
            };
            let description = self.required(item, &p, "description", |s| {
                check_len(s, 1, MAX_DESCRIPTION_CHARS).map(|()| s.to_owned())
            });
            let quantity = self.decimal(item, &p, "quantity", Need::Required).flatten();
            let unit_price = self
                .decimal(item, &p, "unit_price", Need::Required)
                .flatten();
            let amount = self.decimal(item, &p, "amount", Need::Required).flatten();
            self.unknown_fields(item, ITEM_FIELDS, &p);
            match (description, quantity, unit_price, amount) {
                (Some(description), Some(quantity), Some(unit_price), Some(amount)) => {
                    items.push(Item {
                        description,
                        quantity,
                        unit_price,
                        amount,
                    })
                }
                _ => ok = false,
            }
        }
        ok.then_some(items)
    }

    fn metadata(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
    ) -> Option<Option<Map<String, Value>>> {
        let pointer = format!("{base}/metadata");
        if self.refused_at(&pointer) {
            return None;
        }
        let map = match Self::field(obj, "metadata", Need::Optional) {
            Ok(None) => return Some(None),
            Ok(Some(Value::Object(map))) => map,
            Ok(Some(other)) => {
                self.report(
                    pointer,
                    format!("must be a JSON object, not {}", kind(other)),
                );
                return None;
            }
            Err(reason) => {
                self.report(pointer, reason);
                return None;
            }
        };
        self.metadata_map(&pointer, map).then(|| Some(map.clone()))
    }

    /// Checks a metadata object's size and every key and string inside it; `pointer` is where
    /// it sits.
    fn metadata_map(&mut self, pointer: &str, map: &Map<String, Value>) -> bool {
        let mut ok = true;
        match serialized_len(map) {
            Ok(len) if len <= MAX_METADATA_BYTES => {}
            Ok(len) => {
                let reason = format!(
                    "must be at most {MAX_METADATA_BYTES} bytes once serialized (got {len})"
                );
                self.report(pointer.to_owned(), reason);
                ok = false;
            }
            Err(err) => {
                self.report(
                    pointer.to_owned(),
                    format!("could not be serialized: {err}"),
                );
                ok = false;
            }
        }
        // Every key and string inside, walked with an explicit stack (no recursion limit).
        let mut stack: Vec<(String, &Value)> = Vec::new();
        ok &= push_members(&mut stack, &mut self.problems, pointer, map);
        while let Some((p, v)) = stack.pop() {
            match v {
                Value::String(s) => {
                    if let Err(reason) = check_chars(s) {
                        self.report(p, reason);
                        ok = false;
                    }
                }
                Value::Array(list) => {
                    for (j, v) in list.iter().enumerate().rev() {
                        stack.push((format!("{p}/{j}"), v));
                    }
                }
                Value::Object(m) => ok &= push_members(&mut stack, &mut self.problems, &p, m),
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        ok
    }
}

/// Whether a metadata object passes the metadata rule (size, and the SQS character rule on
/// every key and string inside).
///
/// The quick path's form of [`Checker::metadata_map`]: the walk made without a pointer string
/// per member (those allocations, with the serialized copy both once made to measure the map,
/// were a fortieth of the agent's CPU); a map it refuses is walked by `metadata_map` for the
/// report.
pub(super) fn metadata_ok(map: &Map<String, Value>) -> bool {
    if !serialized_len(map).is_ok_and(|len| len <= MAX_METADATA_BYTES) {
        return false;
    }
    // Queues an object's values; whether its keys are clean.
    fn members<'v>(m: &'v Map<String, Value>, stack: &mut Vec<&'v Value>) -> bool {
        stack.extend(m.values());
        m.keys().all(|k| check_chars(k).is_ok())
    }
    let mut stack: Vec<&Value> = Vec::new();
    if !members(map, &mut stack) {
        return false;
    }
    while let Some(v) = stack.pop() {
        let clean = match v {
            Value::String(s) => check_chars(s).is_ok(),
            Value::Array(list) => {
                stack.extend(list);
                true
            }
            Value::Object(m) => members(m, &mut stack),
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
        };
        if !clean {
            return false;
        }
    }
    true
}

/// The length of `map` serialized as compact JSON, counted without the text.
fn serialized_len(map: &Map<String, Value>) -> serde_json::Result<usize> {
    let mut size = ByteCount(0);
    serde_json::to_writer(&mut size, map)?;
    Ok(size.0)
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks the keys of `map` and queues its values (in order) for the metadata walk.
fn push_members<'v>(
    stack: &mut Vec<(String, &'v Value)>,
    problems: &mut Vec<(String, String)>,
    at: &str,
    map: &'v Map<String, Value>,
) -> bool {
    let mut clean = true;
    for (k, v) in map.iter().rev() {
        let p = format!("{at}/{}", escape_pointer(k));
        if let Err(reason) = check_chars(k) {
            problems.push((p.clone(), format!("has a key that {reason}")));
            clean = false;
        }
        stack.push((p, v));
    }
    clean
}
