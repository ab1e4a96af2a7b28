//! The receipt model (the unit of data) and its validation.
//!
//! This module owns every rule a receipt must satisfy (docs/product.md, "Receipt") and the wording of
//! the errors a client sees. Validation walks a `serde_json::Value` by hand so that each problem
//! gets a JSON pointer (`/receipts/17/total`) and a plain reason; [`Receipt::from_value`] is the
//! only place the rules live, and [`Receipt::validate`] re-checks a typed receipt through it.
//!
//! The serde derives on the types below only check *shape* (and [`Decimal`]'s syntax); they are
//! what the envelope uses to (de)serialize receipts that were already validated.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest `tenant_id`, in characters. It is a key in the on-prem schema, kept short.
pub const MAX_TENANT_ID_CHARS: usize = 64;
/// Longest `submitted_by`, in characters (an e-mail address or a user name fits).
pub const MAX_SUBMITTED_BY_CHARS: usize = 128;
/// Longest `merchant`, in characters.
pub const MAX_MERCHANT_CHARS: usize = 200;
/// Longest `category`, in characters.
pub const MAX_CATEGORY_CHARS: usize = 64;
/// Longest `image.key`, in characters: S3 object keys are at most 1024 bytes.
pub const MAX_IMAGE_KEY_CHARS: usize = 1024;
/// Most line items per receipt: bounds the size of one receipt (and of one database write).
pub const MAX_ITEMS: usize = 500;
/// Longest item `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Largest `metadata` object once serialized as compact JSON, in bytes (the product rule: 8 KiB). Keeps
/// free-form data from crowding real receipts out of an SQS message.
pub const MAX_METADATA_BYTES: usize = 8192;
/// Most digits before the decimal point: |x| < 10^12 fits PostgreSQL `numeric(16,4)`.
pub const MAX_INTEGER_DIGITS: usize = 12;
/// Most digits after the decimal point: money to 1/10000 of a unit, as the product rules say (docs/product.md).
pub const MAX_FRACTION_DIGITS: usize = 4;

/// Field names of a receipt, in the order errors are reported.
const RECEIPT_FIELDS: &[&str] = &[
    "receipt_id",
    "tenant_id",
    "submitted_by",
    "merchant",
    "issued_on",
    "currency",
    "total",
    "tax",
    "category",
    "image",
    "items",
    "metadata",
];
const IMAGE_FIELDS: &[&str] = &["key", "sha256", "bytes"];
const ITEM_FIELDS: &[&str] = &["description", "quantity", "unit_price", "amount"];

// ---------------------------------------------------------------------------------------------
// Decimal
// ---------------------------------------------------------------------------------------------

/// A validated decimal number kept as its text, e.g. `"42.50"`, `"-3"`, `"0.0001"`.
///
/// Rule: an optional leading `-`, 1 to 12 integer digits, optionally a `.` followed by 1 to 4
/// digits. No `+`, no exponent, no spaces, no `NaN`/`Infinity`. Money never passes through a
/// float: the text goes to PostgreSQL `numeric` as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal(String);

impl Decimal {
    /// The decimal as written, e.g. `"42.50"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `s` against the decimal rule; the error is a plain reason ("must have at most 4
    /// fraction digits") meant to follow a field name.
    pub fn parse(s: &str) -> Result<Decimal, String> {
        if s.is_empty() {
            return Err(r#"must be a decimal string like "42.50", not an empty string"#.into());
        }
        if s.chars().any(char::is_whitespace) {
            return Err("must not contain spaces".into());
        }
        if s.starts_with('+') {
            return Err("must not have a '+' sign".into());
        }
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        let lower = unsigned.to_ascii_lowercase();
        if matches!(lower.as_str(), "nan" | "inf" | "infinity") {
            return Err("must be a finite number".into());
        }
        if unsigned.contains(['e', 'E']) {
            return Err("must not use exponent notation (write 1000, not 1e3)".into());
        }
        let (int, frac) = match unsigned.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (unsigned, None),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if unsigned.is_empty() || !all_digits(int) || !frac.is_none_or(all_digits) {
            return Err(r#"must be a decimal string like "42.50""#.into());
        }
        if int.is_empty() {
            return Err("must have at least one digit before the decimal point".into());
        }
        if frac == Some("") {
            return Err("must have digits after the decimal point".into());
        }
        if int.len() > MAX_INTEGER_DIGITS {
            return Err(format!(
                "must be less than 10^12 in absolute value (at most {MAX_INTEGER_DIGITS} digits before the decimal point)"
            ));
        }
        if frac.is_some_and(|f| f.len() > MAX_FRACTION_DIGITS) {
            return Err(format!(
                "must have at most {MAX_FRACTION_DIGITS} fraction digits"
            ));
        }
        Ok(Decimal(s.to_owned()))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Decimal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::parse(s)
    }
}

impl AsRef<str> for Decimal {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DecimalVisitor;
        impl serde::de::Visitor<'_> for DecimalVisitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a decimal string like "42.50""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
                Decimal::parse(v).map_err(|reason| E::custom(format!("decimal {reason}")))
            }
        }
        deserializer.deserialize_str(DecimalVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// Where the receipt's photo lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Object key, 1 to 1024 characters.
    pub key: String,
    /// SHA-256 of the photo: 64 hex digits, lowercase after validation.
    pub sha256: String,
    /// Size of the photo in bytes.
    pub bytes: u64,
}

/// One line of a receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// 1 to 500 characters.
    pub description: String,
    /// How many.
    pub quantity: Decimal,
    /// Price of one.
    pub unit_price: Decimal,
    /// Line total.
    pub amount: Decimal,
}

/// A receipt, the unit of data (docs/product.md, "Receipt").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Canonical lowercase hyphenated UUID; the idempotency key end to end.
    pub receipt_id: String,
    /// 1 to 64 of `[A-Za-z0-9._-]`.
    pub tenant_id: String,
    /// At most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// 1 to 200 characters.
    pub merchant: String,
    /// `YYYY-MM-DD`, a real date, year 0001 to 9999.
    pub issued_on: String,
    /// Three uppercase ASCII letters (ISO 4217).
    pub currency: String,
    /// Receipt total.
    pub total: Decimal,
    /// Tax included in the total, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<Decimal>,
    /// At most 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Where the photo lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// At most 500 line items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
    /// Free-form JSON object, at most 8 KiB once serialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// One problem with one field of one receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Position of the receipt in the upload (0-based).
    pub index: usize,
    /// The receipt's id, when it has a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
    /// JSON pointer to the field, e.g. `/receipts/17/total`.
    pub pointer: String,
    /// Plain reason, e.g. `must have at most 4 fraction digits`.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.receipt_id {
            Some(id) => write!(f, "receipt {} (id {id}): ", self.index)?,
            None => write!(f, "receipt {}: ", self.index)?,
        }
        write!(f, "{}: {}", self.pointer, self.reason)
    }
}

impl std::error::Error for FieldError {}

impl Receipt {
    /// Validates one receipt given as a JSON value; `index` is its position in the upload.
    ///
    /// Pointers are `/receipts/{index}/field[/sub…]`. Returns every problem of this receipt, in
    /// field order. On success the receipt is normalised: `receipt_id` and `image.sha256` are
    /// lowercase.
    pub fn from_value(value: &Value, index: usize) -> Result<Receipt, Vec<FieldError>> {
        let mut c = Checker::new(index);
        let receipt = c.receipt(value);
        match receipt {
            Some(receipt) if c.problems.is_empty() => Ok(receipt),
            _ => Err(c.into_errors(receipt_id_of(value))),
        }
    }

    /// Re-checks an already-typed receipt against the same rules as [`Receipt::from_value`].
    pub fn validate(&self, index: usize) -> Result<(), Vec<FieldError>> {
        match serde_json::to_value(self) {
            Ok(value) => Receipt::from_value(&value, index).map(|_| ()),
            Err(err) => Err(vec![FieldError {
                index,
                receipt_id: None,
                pointer: format!("/receipts/{index}"),
                reason: format!("could not be serialized: {err}"),
            }]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The id to show next to a receipt's errors: its canonical UUID when it has a valid one.
fn receipt_id_of(value: &Value) -> Option<String> {
    value
        .get("receipt_id")
        .and_then(Value::as_str)
        .and_then(|s| parse_uuid(s).ok())
}

/// Parses a hyphenated UUID in any case and returns its canonical lowercase form.
pub(crate) fn parse_uuid(s: &str) -> Result<String, String> {
    let reason = || r#"must be a UUID like "123e4567-e89b-12d3-a456-426614174000""#.to_owned();
    // Only the 36-character hyphenated form: `Uuid::try_parse` also takes braces, `urn:uuid:`
    // and the bare 32-digit form, which would make two spellings of one idempotency key.
    if s.len() != 36 {
        return Err(reason());
    }
    uuid::Uuid::try_parse(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| reason())
}

/// Whether SQS accepts `c` in a message: #x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD
/// #x10000–#x10FFFF (surrogates cannot occur in a Rust `char`).
pub(crate) fn sqs_allows(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Checks the SQS character rule on one string.
fn check_chars(s: &str) -> Result<(), String> {
    match s.chars().enumerate().find(|(_, c)| !sqs_allows(*c)) {
        Some((pos, c)) => Err(format!(
            "contains the character U+{:04X} at position {}, which SQS does not accept",
            u32::from(c),
            pos + 1
        )),
        None => Ok(()),
    }
}

/// How a character is shown inside a reason: quoted when printable, as U+XXXX otherwise.
fn show_char(c: char) -> String {
    if c.is_alphanumeric() || c.is_ascii_punctuation() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
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
pub(crate) fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Checks `YYYY-MM-DD`, a real date with year 0001..=9999.
fn check_date(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(r#"must be a date as YYYY-MM-DD, like "2024-02-29""#.into());
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    if year == 0 {
        return Err("is not a real date: the year must be 0001 to 9999".into());
    }
    if !(1..=12).contains(&month) {
        return Err("is not a real date: the month must be 01 to 12".into());
    }
    let last = days_in_month(year, month);
    if day == 0 || day > last {
        return Err(format!(
            "is not a real date: {year:04}-{month:02} has {last} days"
        ));
    }
    Ok(())
}

fn check_len(s: &str, min: usize, max: usize) -> Result<(), String> {
    if min > 0 && s.is_empty() {
        return Err("must not be empty".into());
    }
    let n = s.chars().count();
    if n > max {
        return Err(format!("must be at most {max} characters (got {n})"));
    }
    Ok(())
}

/// Collects the problems of one receipt.
struct Checker {
    index: usize,
    /// (pointer, reason)
    problems: Vec<(String, String)>,
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

    /// Records `result`'s error at `pointer`, returning the value on success.
    fn keep<T>(&mut self, pointer: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(reason) => {
                self.report(pointer.to_owned(), reason);
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
        let pointer = format!("{base}/{name}");
        let result = Self::field(obj, name, need).and_then(|v| match v {
            None => Ok(None),
            Some(Value::String(s)) => {
                check_chars(s)?;
                rule(s).map(Some)
            }
            Some(other) => Err(format!("must be a string, not {}", kind(other))),
        });
        self.keep(&pointer, result)
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
        let pointer = format!("{base}/{name}");
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
        self.keep(&pointer, result)
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
            check_len(s, 1, MAX_TENANT_ID_CHARS)?;
            let bad = s
                .chars()
                .enumerate()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
            match bad {
                Some((pos, c)) => Err(format!(
                    "may contain only letters A-Z a-z, digits, '.', '_' and '-' (found {} at position {})",
                    show_char(c),
                    pos + 1
                )),
                None => Ok(s.to_owned()),
            }
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
            if s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase()) {
                Ok(s.to_owned())
            } else {
                Err(r#"must be 3 uppercase letters (an ISO 4217 code like "EUR")"#.into())
            }
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
        let key = self.required(img, p, "key", |s| {
            check_len(s, 1, MAX_IMAGE_KEY_CHARS).map(|()| s.to_owned())
        });
        let sha256 = self.required(img, p, "sha256", |s| {
            if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
                Ok(s.to_ascii_lowercase())
            } else {
                Err("must be exactly 64 hexadecimal characters (a SHA-256 digest)".into())
            }
        });
        let bytes_result = Self::field(img, "bytes", Need::Required).and_then(|v| match v {
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| format!("must be a whole number from 0 to {}", u64::MAX)),
            Some(other) => Err(format!("must be a whole number, not {}", kind(other))),
            None => Err("is required".into()),
        });
        let bytes = self.keep(&format!("{p}/bytes"), bytes_result);
        self.unknown_fields(img, IMAGE_FIELDS, p);
        Some(Some(Image {
            key: key?,
            sha256: sha256?,
            bytes: bytes?,
        }))
    }

    fn items(&mut self, obj: &Map<String, Value>, base: &str) -> Option<Vec<Item>> {
        let pointer = format!("{base}/items");
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
        let mut ok = true;
        match serde_json::to_string(map) {
            Ok(text) if text.len() <= MAX_METADATA_BYTES => {}
            Ok(text) => {
                let reason = format!(
                    "must be at most {MAX_METADATA_BYTES} bytes once serialized (got {})",
                    text.len()
                );
                self.report(pointer.clone(), reason);
                ok = false;
            }
            Err(err) => {
                self.report(pointer.clone(), format!("could not be serialized: {err}"));
                ok = false;
            }
        }
        // Every key and string inside, walked with an explicit stack (no recursion limit).
        let mut stack: Vec<(String, &Value)> = Vec::new();
        ok &= push_members(&mut stack, &mut self.problems, &pointer, map);
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
        ok.then(|| Some(map.clone()))
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

#[cfg(test)]
mod tests;
