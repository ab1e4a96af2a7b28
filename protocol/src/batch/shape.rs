//! Building one receipt's JSON value under the size limits, while it streams by.
//!
//! A body is untrusted: 55 MB of `0,` inside one field would be 27 million `Value`s (gigabytes)
//! if built as a tree first and checked after. This module builds only what the receipt rules
//! can use, guided by the receipt's shape:
//!
//! - a field that must be a scalar keeps its scalar; an array or object there is skimmed (not
//!   built) and kept as an empty one of its kind, which is all the rule reports ("must be a
//!   string, not an array");
//! - `items` builds at most [`MAX_ITEMS`] items and only counts the rest;
//! - `metadata` counts its compact serialized size as it goes and stops building once past
//!   [`MAX_METADATA_BYTES`], only counting on;
//! - the receipt, `image` and each item hold at most [`MAX_OBJECT_FIELDS`] fields.
//!
//! A field refused here is left out of the value and its refusal (relative pointer, reason) is
//! handed to the receipt check, which reports it where it would have reported the rule. Object
//! keys must be unique in everything that is built (`{"total":"1","total":"1000"}` is
//! ambiguous money); nesting is bounded by the JSON parser's recursion limit (128).
//! Memory per receipt is thus bounded by the largest valid receipt, whatever the body holds.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::receipt::{MAX_ITEMS, MAX_METADATA_BYTES};

/// Most fields in the receipt object, in `image` and in one item: a valid receipt has 12, an
/// item 4. Past it the object is refused without reading its fields into memory.
pub const MAX_OBJECT_FIELDS: usize = 64;

/// Refusals of one receipt: (pointer relative to `/receipts/{i}`, reason).
pub(crate) type Refusals = Vec<(String, String)>;

/// What the value at a position must be, which decides how much of it is built.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Receipt,
    Image,
    Item,
    Items,
    Metadata,
    Scalar,
}

/// Seed for one value of a known [`Shape`] at `at` (relative pointer).
pub(crate) struct Shaped<'r> {
    shape: Shape,
    at: String,
    refused: &'r mut Refusals,
}

impl<'r> Shaped<'r> {
    /// The seed for one receipt of an upload.
    pub(crate) fn receipt(refused: &'r mut Refusals) -> Self {
        Shaped {
            shape: Shape::Receipt,
            at: String::new(),
            refused,
        }
    }

    fn child(&mut self, shape: Shape, at: String) -> Shaped<'_> {
        Shaped {
            shape,
            at,
            refused: &mut *self.refused,
        }
    }

    /// The shape of field `key` of an object of this shape.
    fn field_shape(&self, key: &str) -> Shape {
        match (self.shape, key) {
            (Shape::Receipt, "image") => Shape::Image,
            (Shape::Receipt, "items") => Shape::Items,
            (Shape::Receipt, "metadata") => Shape::Metadata,
            _ => Shape::Scalar,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Shaped<'_> {
    /// `None` when the value was refused (and recorded) here.
    type Value = Option<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shaped<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(Some(float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Option<Value>, A::Error> {
        if self.shape != Shape::Items {
            // No rule looks inside an array here: skim it, keep its kind.
            while seq.next_element::<Skim>()?.is_some() {}
            return Ok(Some(Value::Array(Vec::new())));
        }
        let mut items = Vec::new();
        let mut count = 0usize;
        loop {
            if count < MAX_ITEMS {
                let at = format!("{}/{count}", self.at);
                match seq.next_element_seed(self.child(Shape::Item, at))? {
                    Some(item) => items.push(item.unwrap_or(Value::Null)),
                    None => break,
                }
            } else if seq.next_element::<Skim>()?.is_none() {
                break;
            }
            count += 1;
        }
        if count > MAX_ITEMS {
            let reason = format!("must have at most {MAX_ITEMS} items (got {count})");
            self.refused.push((self.at, reason));
            return Ok(None);
        }
        Ok(Some(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Option<Value>, A::Error> {
        match self.shape {
            Shape::Scalar | Shape::Items => {
                while map.next_entry::<IgnoredAny, Skim>()?.is_some() {}
                return Ok(Some(Value::Object(Map::new())));
            }
            Shape::Metadata => {
                let mut size = 0usize;
                let built = map_value(&mut map, &mut size)?;
                if size > MAX_METADATA_BYTES {
                    let reason = format!(
                        "must be at most {MAX_METADATA_BYTES} bytes once serialized (got {size})"
                    );
                    self.refused.push((self.at, reason));
                    return Ok(None);
                }
                return Ok(built);
            }
            Shape::Receipt | Shape::Image | Shape::Item => {}
        }
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(duplicate(&key));
            }
            if obj.len() == MAX_OBJECT_FIELDS {
                let mut count = obj.len() + 1;
                map.next_value::<Skim>()?;
                while map.next_entry::<IgnoredAny, Skim>()?.is_some() {
                    count += 1;
                }
                let reason = format!("must have at most {MAX_OBJECT_FIELDS} fields (got {count})");
                self.refused.push((self.at, reason));
                return Ok(None);
            }
            let at = format!("{}/{}", self.at, key.replace('~', "~0").replace('/', "~1"));
            let shape = self.field_shape(&key);
            if let Some(value) = map.next_value_seed(self.child(shape, at))? {
                obj.insert(key, value);
            }
        }
        Ok(Some(Value::Object(obj)))
    }
}

/// A value read and dropped without building anything. Unlike [`IgnoredAny`] it goes through
/// `deserialize_any`, so the parser's recursion limit (128) still applies to what it skims.
struct Skim;

impl<'de> de::Deserialize<'de> for Skim {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Skim, D::Error> {
        d.deserialize_any(SkimVisitor)
    }
}

struct SkimVisitor;

impl<'de> Visitor<'de> for SkimVisitor {
    type Value = Skim;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skim, E> {
        Ok(Skim)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skim, A::Error> {
        while seq.next_element::<Skim>()?.is_some() {}
        Ok(Skim)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skim, A::Error> {
        while map.next_entry::<IgnoredAny, Skim>()?.is_some() {}
        Ok(Skim)
    }
}

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format!("duplicate key {key:?} in an object"))
}

/// A double as a JSON value. JSON text cannot spell NaN or infinity, and serde_json refuses
/// numbers that overflow (1e400) before they get here; `from_f64` is total for what is left.
fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Length of `s` as serde_json writes it between quotes (compact).
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Compact serialized length of a scalar value.
fn scalar_len(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => escaped_len(s) + 2,
        Value::Array(_) | Value::Object(_) => 2,
    }
}

/// Seed for a metadata value: adds its compact serialized size to `size` and builds it while
/// `size` stays within [`MAX_METADATA_BYTES`] (`None` once past it).
struct Counted<'s> {
    size: &'s mut usize,
}

impl Counted<'_> {
    fn keep(&self, v: Value) -> Option<Value> {
        (*self.size <= MAX_METADATA_BYTES).then_some(v)
    }

    fn scalar(self, v: Value) -> Option<Value> {
        *self.size += scalar_len(&v);
        self.keep(v)
    }
}

impl<'de> DeserializeSeed<'de> for Counted<'_> {
    type Value = Option<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counted<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(self.scalar(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(self.scalar(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(self.scalar(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(self.scalar(float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Value>, E> {
        *self.size += escaped_len(v) + 2;
        Ok((*self.size <= MAX_METADATA_BYTES).then(|| Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Value>, E> {
        Ok(self.scalar(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
        *self.size += 2;
        let mut list = Some(Vec::new());
        let mut n = 0usize;
        while let Some(v) = seq.next_element_seed(Counted {
            size: &mut *self.size,
        })? {
            *self.size += usize::from(n > 0);
            n += 1;
            match (&mut list, v) {
                (Some(l), Some(v)) if *self.size <= MAX_METADATA_BYTES => l.push(v),
                _ => list = None,
            }
        }
        Ok(list.and_then(|l| self.keep(Value::Array(l))))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        map_value(&mut map, self.size)
    }
}

/// A metadata object (or one nested in it), counted and built as [`Counted`] does.
fn map_value<'de, A: MapAccess<'de>>(
    map: &mut A,
    size: &mut usize,
) -> Result<Option<Value>, A::Error> {
    *size += 2;
    let mut obj = Some(Map::new());
    let mut entries = 0usize;
    while let Some(key) = map.next_key::<String>()? {
        if let Some(o) = &obj {
            if o.contains_key(&key) {
                return Err(duplicate(&key));
            }
        }
        *size += escaped_len(&key) + 3 + usize::from(entries > 0);
        entries += 1;
        let value = map.next_value_seed(Counted { size: &mut *size })?;
        match (&mut obj, value) {
            (Some(o), Some(v)) if *size <= MAX_METADATA_BYTES => {
                o.insert(key, v);
            }
            _ => obj = None,
        }
    }
    Ok(obj
        .filter(|_| *size <= MAX_METADATA_BYTES)
        .map(Value::Object))
}
