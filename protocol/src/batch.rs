//! Parsing an upload body (`{"receipts":[…]}` or NDJSON) into validated receipts.
//!
//! This module owns the upload's *shape* and the error report a client gets back: syntax errors
//! with line and column, shape errors, the receipt-count limit (checked while streaming, before
//! the whole body is materialised), and every receipt's field errors, capped at
//! [`MAX_REPORTED_ERRORS`] with totals.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::receipt::{FieldError, Receipt};

/// Most field errors returned in [`BatchError::Invalid`]: enough to fix a client, small enough
/// for one HTTP response when a whole upload is wrong the same way.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Why an upload was refused. Nothing of a refused upload is enqueued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not JSON (or not UTF-8): where the parser stopped.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Malformed {
        /// 1-based line, as serde_json gives it.
        line: usize,
        /// 1-based column, as serde_json gives it.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// Valid JSON of the wrong shape, or no receipts at all.
    #[error("{0}")]
    Shape(String),
    /// More receipts than one upload may carry.
    #[error("too many receipts: at most {limit} per upload")]
    TooManyReceipts {
        /// The limit that was passed.
        limit: usize,
    },
    /// Some receipts break the rules.
    #[error("{invalid_receipts} invalid receipt(s) with {total_errors} problem(s)")]
    Invalid {
        /// The first [`MAX_REPORTED_ERRORS`] problems, in upload order.
        errors: Vec<FieldError>,
        /// How many problems there are in all.
        total_errors: usize,
        /// How many receipts have at least one problem.
        invalid_receipts: usize,
    },
}

/// serde_json's message without its " at line L column C" suffix (we report those apart).
pub(crate) fn bare_message(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match full.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => full,
    }
}

fn malformed(err: &serde_json::Error) -> BatchError {
    BatchError::Malformed {
        line: err.line(),
        column: err.column(),
        message: bare_message(err),
    }
}

/// Receipts and problems gathered so far.
struct Collector {
    max_receipts: usize,
    seen: usize,
    receipts: Vec<Receipt>,
    errors: Vec<FieldError>,
    total_errors: usize,
    invalid_receipts: usize,
}

impl Collector {
    fn new(max_receipts: usize) -> Self {
        Collector {
            max_receipts,
            seen: 0,
            receipts: Vec::new(),
            errors: Vec::new(),
            total_errors: 0,
            invalid_receipts: 0,
        }
    }

    /// Whether one more receipt would pass the limit.
    fn full(&self) -> bool {
        self.seen >= self.max_receipts
    }

    fn add(&mut self, value: &Value) {
        let index = self.seen;
        self.seen += 1;
        match Receipt::from_value(value, index) {
            // Once the upload is known to be refused, valid receipts are not kept.
            Ok(receipt) if self.total_errors == 0 => self.receipts.push(receipt),
            Ok(_) => {}
            Err(errors) => {
                if self.total_errors == 0 {
                    self.receipts = Vec::new();
                }
                self.invalid_receipts += 1;
                self.total_errors += errors.len();
                let room = MAX_REPORTED_ERRORS.saturating_sub(self.errors.len());
                self.errors.extend(errors.into_iter().take(room));
            }
        }
    }

    fn finish(self) -> Result<Vec<Receipt>, BatchError> {
        if self.total_errors > 0 {
            return Err(BatchError::Invalid {
                errors: self.errors,
                total_errors: self.total_errors,
                invalid_receipts: self.invalid_receipts,
            });
        }
        if self.receipts.is_empty() {
            return Err(BatchError::Shape("no receipts".into()));
        }
        Ok(self.receipts)
    }
}

/// Parses `{"receipts":[…]}`, validating each receipt as it streams by.
///
/// Stops as soon as a receipt past `max_receipts` appears (without reading it into a tree).
pub fn parse_json(body: &[u8], max_receipts: usize) -> Result<Vec<Receipt>, BatchError> {
    let mut state = State {
        collector: Collector::new(max_receipts),
        abort: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Top { state: &mut state }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(abort) = state.abort {
        return Err(abort);
    }
    match parsed {
        Ok(()) => state.collector.finish(),
        Err(err) => Err(malformed(&err)),
    }
}

/// Parses one receipt per line. Blank lines are ignored and do not count as receipts.
pub fn parse_ndjson(body: &[u8], max_receipts: usize) -> Result<Vec<Receipt>, BatchError> {
    let mut collector = Collector::new(max_receipts);
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        if collector.full() {
            return Err(BatchError::TooManyReceipts {
                limit: max_receipts,
            });
        }
        let value = serde_json::from_slice::<StrictValue>(line)
            .map_err(|err| BatchError::Malformed {
                line: n + 1,
                column: err.column(),
                message: bare_message(&err),
            })?
            .0;
        collector.add(&value);
    }
    collector.finish()
}

/// Parse state shared by the visitors; `abort` carries a [`BatchError`] out through serde.
struct State {
    collector: Collector,
    abort: Option<BatchError>,
}

impl State {
    fn fail<E: de::Error>(&mut self, error: BatchError) -> E {
        let message = error.to_string();
        self.abort = Some(error);
        E::custom(message)
    }
}

/// What a JSON value is, for shape errors: "an array", "a string".
fn unexpected(what: de::Unexpected<'_>) -> &'static str {
    match what {
        de::Unexpected::Bool(_) => "a boolean",
        de::Unexpected::Unsigned(_) | de::Unexpected::Signed(_) | de::Unexpected::Float(_) => {
            "a number"
        }
        de::Unexpected::Str(_) => "a string",
        de::Unexpected::Unit => "null",
        de::Unexpected::Seq => "an array",
        de::Unexpected::Map => "an object",
        _ => "something else",
    }
}

/// Implements the scalar `visit_*` methods of a visitor as "wrong shape" errors.
macro_rules! wrong_shape_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
            Err(self.wrong(de::Unexpected::Bool(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            Err(self.wrong(de::Unexpected::Signed(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            Err(self.wrong(de::Unexpected::Unsigned(v)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            Err(self.wrong(de::Unexpected::Float(v)))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Err(self.wrong(de::Unexpected::Str("")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Err(self.wrong(de::Unexpected::Unit))
        }
    };
}

/// The top-level object.
struct Top<'s> {
    state: &'s mut State,
}

impl Top<'_> {
    fn wrong<E: de::Error>(self, what: de::Unexpected<'_>) -> E {
        let message = format!(
            r#"the body must be a JSON object like {{"receipts": [...]}}, not {}"#,
            unexpected(what)
        );
        self.state.fail(BatchError::Shape(message))
    }
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a JSON object like {"receipts": [...]}"#)
    }

    wrong_shape_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.wrong(de::Unexpected::Seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen_receipts = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "receipts" {
                let message = format!(
                    r#"unknown top-level field {key:?}: the body must be {{"receipts": [...]}}"#
                );
                return Err(self.state.fail(BatchError::Shape(message)));
            }
            if seen_receipts {
                let message = r#"the "receipts" field appears twice"#.to_owned();
                return Err(self.state.fail(BatchError::Shape(message)));
            }
            seen_receipts = true;
            map.next_value_seed(Receipts {
                state: &mut *self.state,
            })?;
        }
        if !seen_receipts {
            let message = r#"the body has no "receipts" array"#.to_owned();
            return Err(self.state.fail(BatchError::Shape(message)));
        }
        Ok(())
    }
}

/// The `receipts` array, visited element by element.
struct Receipts<'s> {
    state: &'s mut State,
}

impl Receipts<'_> {
    fn wrong<E: de::Error>(self, what: de::Unexpected<'_>) -> E {
        let message = format!(r#""receipts" must be an array, not {}"#, unexpected(what));
        self.state.fail(BatchError::Shape(message))
    }
}

impl<'de> DeserializeSeed<'de> for Receipts<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Receipts<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of receipts")
    }

    wrong_shape_scalars!();

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.wrong(de::Unexpected::Map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            if self.state.collector.full() {
                // Skim (not build) the next element just to learn whether there is one.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    let limit = self.state.collector.max_receipts;
                    return Err(self.state.fail(BatchError::TooManyReceipts { limit }));
                }
                return Ok(());
            }
            match seq.next_element::<StrictValue>()? {
                Some(StrictValue(value)) => self.state.collector.add(&value),
                None => return Ok(()),
            }
        }
    }
}

/// A JSON value in which no object has the same key twice.
///
/// `serde_json::Value` keeps the last of two equal keys, so `{"total":"1","total":"1000"}`
/// would pass with whichever value the client's library happened to write last. A receipt is
/// money: an ambiguous one is refused, with the position of the second key.
struct StrictValue(Value);

impl<'de> de::Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot spell NaN or infinity, and serde_json refuses numbers that overflow
        // (1e400) before they get here; `from_f64` is total for what is left.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            list.push(v);
        }
        Ok(Value::Array(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key {key:?} in an object"
                )));
            }
            let StrictValue(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

#[cfg(test)]
mod tests;
