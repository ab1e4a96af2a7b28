//! The one hook for a receipt app whose records' fields come from the photo itself: a
//! [`PhotoProcessor`] receives each photo once it passed the check and returns fields to set on
//! its receipt. The bridge has no OCR of its own: reading a receipt is the receipt app's job.
//!
//! Plugging one in: build your own `sluice-ingest`-like binary on this library and give the
//! service one with [`super::PhotoService::with_processor`]; the stock binary has none, and a
//! service without one behaves exactly as before.
//!
//! What happens to the fields:
//! - they are kept beside the photo's verdict in the photo record (`fields_{receipt_id}`, the
//!   fields as JSON), so a redelivered event does not call the processor twice for a settled
//!   photo, and they survive a restart;
//! - when the chunk is released, each accepted receipt gets them set over its own top-level
//!   fields (`"merchant"`, `"total"`, `"items"`…; `"receipt_id"` and `"image"` are never
//!   replaced) and is validated again as an upload's receipt is. One that is then invalid is
//!   refused with reason [`IMAGE_FIELDS`] (the detail is logged), the others go on;
//! - a processor error leaves the photo unsettled: the event is retried (and, on AWS, reaches
//!   the photo events DLQ after its receives), so a processor outage delays, never refuses.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};
use sluice_protocol::Receipt;

/// Reason of a receipt refused because the fields its photo's processor returned do not make a
/// valid receipt.
pub const IMAGE_FIELDS: &str = "image_fields";

/// Fields to set on a receipt (top-level receipt fields).
pub type Fields = Map<String, Value>;

/// What [`PhotoProcessor::fields`] answers.
pub type FieldsFuture<'a> = Pin<Box<dyn Future<Output = Result<Fields, String>> + Send + 'a>>;

/// Reads fields from a photo. See the module's documentation.
pub trait PhotoProcessor: std::fmt::Debug + Send + Sync {
    /// The fields photo `photo` (of `content_type`, already checked against its declaration)
    /// gives receipt `receipt_id`: empty for none. An error is retried later.
    fn fields<'a>(
        &'a self,
        receipt_id: &'a str,
        content_type: &'a str,
        photo: &'a [u8],
    ) -> FieldsFuture<'a>;
}

/// The photo record's attribute holding `receipt_id`'s fields.
pub(crate) fn attribute(receipt_id: &str) -> String {
    format!("fields_{receipt_id}")
}

/// `receipt` with `fields` set over its own (never its id or image), validated again.
pub(crate) fn apply(receipt: &Receipt, fields: &Fields) -> Result<Receipt, String> {
    let mut value = serde_json::to_value(receipt).map_err(|e| e.to_string())?;
    let Some(object) = value.as_object_mut() else {
        return Err("a receipt is not a JSON object".to_owned());
    };
    for (k, v) in fields {
        if k != "receipt_id" && k != "image" {
            object.insert(k.clone(), v.clone());
        }
    }
    Receipt::from_value(&value, 0).map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                let field = e.pointer.strip_prefix("/receipts/0").unwrap_or(&e.pointer);
                format!("{field}: {}", e.reason)
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn receipt() -> Receipt {
        Receipt::from_value(
            &json!({
                "receipt_id": "00000000-0000-4000-8000-000000000001", "tenant_id": "acme",
                "merchant": "As typed", "issued_on": "2026-04-15", "currency": "EUR",
                "total": "1.00",
                "image": {"key": "photos/b/r", "sha256": "ab".repeat(32), "bytes": 10,
                          "content_type": "image/jpeg"},
            }),
            0,
        )
        .expect("valid")
    }

    #[test]
    fn fields_are_set_over_the_receipts_but_never_its_id_or_image() {
        let fields: Fields = serde_json::from_value(json!({
            "merchant": "Read from the photo", "total": "42.50",
            "receipt_id": "00000000-0000-4000-8000-000000000002",
            "image": null,
        }))
        .expect("a map");
        let r = apply(&receipt(), &fields).expect("valid");
        assert_eq!(r.merchant, "Read from the photo");
        assert_eq!(r.total.to_string(), "42.50");
        assert_eq!(r.receipt_id, "00000000-0000-4000-8000-000000000001");
        assert!(r.image.is_some_and(|i| i.is_carried()));
    }

    #[test]
    fn fields_that_make_an_invalid_receipt_are_refused_with_the_reason() {
        let fields: Fields = serde_json::from_value(json!({"total": "forty-two"})).expect("a map");
        let err = apply(&receipt(), &fields).expect_err("invalid");
        assert_eq!(err, "/total: must be a decimal string like \"42.50\"");
    }
}
