//! The largest valid receipts, and a backlog of them sent straight to a test's queue as
//! zstd-compressed chunks: what the agent's byte budget (`batch.max_in_flight_bytes`) is for.
//!
//! A receipt at every limit of the upload format — 500 line items of 500 characters, every
//! string at its longest, metadata just under 8 KiB — written in four-byte UTF-8 characters (the
//! widest SQS carries), so its JSON is about 1 MiB. A chunk holds up to fifteen of them: just
//! under the 16 MiB a message may decode to, while the compressed message stays far below SQS's
//! 1 MiB.

use anyhow::Context as _;
use serde_json::{json, Map, Value};
use sluice_protocol::envelope::{self, Chunk, Compression, ENCODING_ATTRIBUTE};
use sluice_protocol::receipt::{
    MAX_CATEGORY_CHARS, MAX_DESCRIPTION_CHARS, MAX_IMAGE_KEY_CHARS, MAX_ITEMS, MAX_MERCHANT_CHARS,
    MAX_METADATA_BYTES, MAX_SUBMITTED_BY_CHARS, MAX_TENANT_ID_CHARS,
};
use sluice_protocol::Receipt;

use crate::TestEnv;

/// Largest receipts one chunk can hold under the decoded-size cap.
pub const LARGEST_PER_CHUNK: usize = 15;

/// Four-byte characters (outside the Basic Multilingual Plane), cycled through the text.
const WIDE: &[char] = &['😀', '🧾', '💶', '🏷', '📦', '🚆', '🍜', '☕'];

/// `n` characters of [`WIDE`], starting at `offset` in the cycle.
fn wide(n: usize, offset: usize) -> String {
    (0..n).map(|i| WIDE[(i + offset) % WIDE.len()]).collect()
}

/// The `n`-th largest valid receipt (its id and text derived from `n`).
pub fn largest_receipt(n: u64) -> Value {
    let offset = usize::try_from(n % 8).unwrap_or(0);
    let items: Vec<Value> = (0..MAX_ITEMS)
        .map(|i| {
            json!({
                "description": wide(MAX_DESCRIPTION_CHARS, offset + i),
                "quantity": "999999999999.9999",
                "unit_price": "999999999999.9999",
                "amount": "999999999999.9999",
            })
        })
        .collect();
    // One string member: its JSON is the key, the quotes and the value; stay under the cap.
    let note_chars = (MAX_METADATA_BYTES - 64) / 4;
    let mut metadata = Map::new();
    metadata.insert("note".into(), json!(wide(note_chars, offset)));
    json!({
        "receipt_id": uuid::Uuid::from_u64_pair(0x5107_ce00_0000_4000, 0x8000_0000_0000_0000 | n).to_string(),
        "tenant_id": "t".repeat(MAX_TENANT_ID_CHARS),
        "submitted_by": wide(MAX_SUBMITTED_BY_CHARS, offset),
        "merchant": wide(MAX_MERCHANT_CHARS, offset),
        "issued_on": "2026-02-28",
        "currency": "EUR",
        "total": "999999999999.9999",
        "tax": "999999999999.9999",
        "category": wide(MAX_CATEGORY_CHARS, offset),
        "image": {
            "key": wide(MAX_IMAGE_KEY_CHARS, offset),
            "sha256": "ab".repeat(32),
            "bytes": 4_000_000_000u64,
        },
        "items": items,
        "metadata": metadata,
    })
}

/// What [`send_backlog`] put on the queue.
#[derive(Debug, Default)]
pub struct Backlog {
    /// The receipts, when asked to keep them (for the oracle).
    pub receipts: Vec<Value>,
    /// How many receipts were sent.
    pub count: usize,
    /// Decoded JSON of the largest message, in bytes: what the agent charges it.
    pub largest_message_bytes: usize,
    /// Decoded JSON of all messages, in bytes.
    pub total_bytes: usize,
}

/// Sends one chunk per entry of `plan` (that many largest receipts each, at most
/// [`LARGEST_PER_CHUNK`]) to the test's queue, zstd-compressed, as one upload. Receipts are
/// numbered from `first`; `keep` keeps them in [`Backlog::receipts`].
pub async fn send_backlog(
    env: &TestEnv,
    plan: &[usize],
    first: u64,
    keep: bool,
) -> anyhow::Result<Backlog> {
    let batch_id = uuid::Uuid::new_v4().to_string();
    let chunk_count = u32::try_from(plan.len())?;
    let mut backlog = Backlog::default();
    let mut n = first;
    for (index, &size) in plan.iter().enumerate() {
        let values: Vec<Value> = (0..size)
            .map(|_| {
                n += 1;
                largest_receipt(n)
            })
            .collect();
        let receipts = values
            .iter()
            .enumerate()
            .map(|(i, v)| Receipt::from_value(v, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("a largest receipt is invalid: {e:?}"))?;
        let chunk = Chunk::new(
            batch_id.clone(),
            u32::try_from(index)?,
            chunk_count,
            receipts,
        );
        let message = envelope::encode(&chunk, Compression::Zstd)
            .with_context(|| format!("encoding a chunk of {size} largest receipts"))?;
        let decoded = envelope::decode_measured(&message.body, message.encoding)
            .context("decoding what was just encoded")?;
        backlog.largest_message_bytes = backlog.largest_message_bytes.max(decoded.json_bytes);
        backlog.total_bytes += decoded.json_bytes;
        backlog.count += size;
        let encoding = message.encoding.unwrap_or("zstd");
        env.send_raw(&message.body, &[(ENCODING_ATTRIBUTE, encoding)])
            .await?;
        if keep {
            backlog.receipts.extend(values);
        }
    }
    Ok(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_receipt_is_valid_and_about_a_mebibyte() {
        let v = largest_receipt(1);
        let r = Receipt::from_value(&v, 0).expect("valid");
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.len() > 1_000_000, "{} bytes", json.len());
    }

    #[test]
    fn a_full_chunk_of_them_fits_the_decoded_cap_and_one_sqs_message() {
        let receipts = (0..LARGEST_PER_CHUNK as u64)
            .map(|n| Receipt::from_value(&largest_receipt(n), 0).expect("valid"))
            .collect();
        let chunk = Chunk::new(uuid::Uuid::new_v4().to_string(), 0, 1, receipts);
        let message = envelope::encode(&chunk, Compression::Zstd).expect("under the cap");
        assert!(message.sqs_size() < sluice_protocol::split::SQS_MAX_MESSAGE_BYTES);
        let json = serde_json::to_string(&chunk).expect("json").len();
        assert!(json > envelope::MAX_DECODED_BYTES - 1_200_000, "{json}");
    }
}
