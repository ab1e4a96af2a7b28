//! The receipt model (the unit of data) and its validation.
//!
//! This module owns every rule a receipt must satisfy (docs/product.md, "Receipt") and the
//! wording of the errors a client sees. Validation (`check`) walks a `serde_json::Value` by hand
//! so that each problem gets a JSON pointer (`/receipts/17/total`) and a plain reason;
//! [`Receipt::from_value`] is the only way in, and [`Receipt::validate`] re-checks a typed
//! receipt through it. [`Decimal`] (`decimal`) keeps money as text; [`Fingerprint`]
//! (`fingerprint`) is the digest of a receipt's content that tells a redelivery from a
//! correction.
//!
//! The serde derives on the types below only check *shape* (and [`Decimal`]'s syntax); they are
//! what the envelope uses to (de)serialize receipts that were already validated.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod check;
mod decimal;
mod fingerprint;
mod rules;
mod typed;

pub use decimal::Decimal;
pub use fingerprint::Fingerprint;
pub(crate) use rules::parse_uuid;
#[cfg(test)]
pub(crate) use rules::sqs_allows;
pub(crate) use typed::{accept, Object};

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
/// The media types a receipt photo may have: what the cloud's check recognises from the bytes.
pub const PHOTO_CONTENT_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/heic",
    "application/pdf",
];
/// Largest photo, in bytes (the product's photos are 0.2 to 10 MB; a deployment may set less).
pub const MAX_PHOTO_BYTES: u64 = 20 * 1024 * 1024;
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
const IMAGE_FIELDS: &[&str] = &["key", "sha256", "bytes", "content_type"];
const ITEM_FIELDS: &[&str] = &["description", "quantity", "unit_price", "amount"];

/// The receipt's photo: a reference to an object kept elsewhere (`key` without
/// `content_type`), a photo declared for upload (`content_type` without `key`: the API answers
/// with a URL to `PUT` it to), or a photo the bridge carries (both: checked in the cloud, the
/// agent fetches it by `key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Object key, 1 to 1024 characters; absent on a photo declared for upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// SHA-256 of the photo: 64 hex digits, lowercase after validation.
    pub sha256: String,
    /// Size of the photo in bytes.
    pub bytes: u64,
    /// The photo's media type, one of [`PHOTO_CONTENT_TYPES`]; set on a photo declared for
    /// upload and on one the bridge carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

impl Image {
    /// A photo declared for upload: the API hands out a URL to `PUT` it to.
    pub fn is_declared(&self) -> bool {
        self.key.is_none()
    }

    /// A photo the bridge carries: checked in the cloud, fetched by the agent by `key`.
    pub fn is_carried(&self) -> bool {
        self.key.is_some() && self.content_type.is_some()
    }
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "typed::optional_object"
    )]
    pub image: Option<Image>,
    /// At most 500 line items.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "typed::objects"
    )]
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
        check::receipt(value, index)
    }

    /// Validates one receipt as the upload parser built it: `refused` lists the values it left
    /// out for breaking a size limit (pointer relative to the receipt, reason), reported with
    /// the receipt's other problems.
    pub(crate) fn from_parsed(
        value: &Value,
        index: usize,
        refused: Vec<(String, String)>,
    ) -> Result<Receipt, Vec<FieldError>> {
        check::receipt_with(value, index, refused)
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

#[cfg(test)]
mod tests;
