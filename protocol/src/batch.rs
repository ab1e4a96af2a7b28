//! Parsing an upload body (`{"receipts":[…]}` or NDJSON) into validated receipts.
//!
//! Keeps the guarantee "Two versions of a receipt in one upload are never silent": one `receipt_id`
//! held twice with different content refuses the upload, naming both indexes.
//!
//! This module owns the upload's *shape* and the error report a client gets back: syntax errors
//! with line and column, shape errors, the receipt-count limit (checked while streaming, before
//! the whole body is materialised), one `receipt_id` held twice with different content, and
//! every receipt's field errors, capped at [`MAX_REPORTED_ERRORS`] with totals. Each receipt
//! is built under the size limits as it streams by (`shape`): no tree larger than a valid
//! receipt is ever built from the body.

use std::fmt;

use std::collections::HashMap;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::receipt::{FieldError, Receipt};

mod shape;

pub use shape::MAX_OBJECT_FIELDS;
use shape::{Refusals, Shaped};

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
    /// Index of the first receipt with each id, while the receipts are kept.
    first_with_id: HashMap<String, usize>,
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
            first_with_id: HashMap::new(),
            errors: Vec::new(),
            total_errors: 0,
            invalid_receipts: 0,
        }
    }

    /// Whether one more receipt would pass the limit.
    fn full(&self) -> bool {
        self.seen >= self.max_receipts
    }

    /// Checks one receipt as [`Shaped`] built it (`None`: refused whole, see `refused`).
    fn add(&mut self, value: Option<Value>, refused: Refusals) {
        let index = self.seen;
        self.seen += 1;
        let checked = match value {
            Some(value) => Receipt::from_parsed(&value, index, refused),
            None => Err(refused
                .into_iter()
                .map(|(at, reason)| FieldError {
                    index,
                    receipt_id: None,
                    pointer: format!("/receipts/{index}{at}"),
                    reason,
                })
                .collect()),
        };
        let checked = checked.and_then(|receipt| self.same_id_same_content(receipt, index));
        match checked {
            // Once the upload is known to be refused, valid receipts are not kept.
            Ok(receipt) if self.total_errors == 0 => {
                self.first_with_id
                    .entry(receipt.receipt_id.clone())
                    .or_insert(self.receipts.len());
                self.receipts.push(receipt);
            }
            Ok(_) => {}
            Err(errors) => {
                if self.total_errors == 0 {
                    self.receipts = Vec::new();
                    self.first_with_id = HashMap::new();
                }
                self.invalid_receipts += 1;
                self.total_errors += errors.len();
                let room = MAX_REPORTED_ERRORS.saturating_sub(self.errors.len());
                self.errors.extend(errors.into_iter().take(room));
            }
        }
    }

    /// A `receipt_id` seen earlier in the upload must come with the same content: an identical
    /// repeat is kept (the database stores it once), two versions are ambiguous and refused.
    /// Checked while the receipts are kept (the upload has no other problem yet).
    fn same_id_same_content(
        &self,
        receipt: Receipt,
        index: usize,
    ) -> Result<Receipt, Vec<FieldError>> {
        let Some(&first) = self.first_with_id.get(&receipt.receipt_id) else {
            return Ok(receipt);
        };
        match self.receipts.get(first) {
            Some(earlier) if *earlier != receipt => Err(vec![FieldError {
                index,
                receipt_id: Some(receipt.receipt_id.clone()),
                pointer: format!("/receipts/{index}/receipt_id"),
                reason: format!(
                    "receipts[{first}] and receipts[{index}] share receipt_id {} with different content; send one version per upload",
                    receipt.receipt_id
                ),
            }]),
            _ => Ok(receipt),
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
        let mut refused = Refusals::new();
        let mut de = serde_json::Deserializer::from_slice(line);
        let value = Shaped::receipt(&mut refused)
            .deserialize(&mut de)
            .and_then(|value| de.end().map(|()| value))
            .map_err(|err| BatchError::Malformed {
                line: n + 1,
                column: err.column(),
                message: bare_message(&err),
            })?;
        collector.add(value, refused);
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
            let mut refused = Refusals::new();
            match seq.next_element_seed(Shaped::receipt(&mut refused))? {
                Some(value) => self.state.collector.add(value, refused),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
