//! Splitting an upload into chunks that each fit one SQS message.
//!
//! This module owns the packing: greedy, in upload order, each chunk within
//! `max_receipts_per_chunk` receipts and its message within `max_message_bytes` as SQS counts
//! them ([`EncodedMessage::sqs_size`]). Every receipt is serialized once; chunk bodies are
//! assembled from those pieces, byte for byte what `serde_json::to_string(&Chunk)` gives.
//!
//! Without compression the sizes are exact arithmetic. With compression they cannot be
//! predicted, so a chunk is filled by an estimated ratio, compressed, and shrunk (or grown once)
//! until it fits; then every chunk is encoded with its final `chunk_index`/`chunk_count`, and
//! any chunk that overflows at that point (the header's digits changed) is cut in two.

use std::ops::Range;

use crate::envelope::{
    attribute_size, finish, version_for, Compression, EncodeError, EncodedMessage,
    MAX_DECODED_BYTES,
};
use crate::receipt::{parse_uuid, Receipt};

/// SQS's hard limit on one message (body plus attributes), in bytes.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Default message limit: 256 KiB, SQS's limit for years and what most tooling still assumes;
/// smaller messages also cost less to redeliver.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;

/// Default receipts per chunk: one chunk is one unit the agent acknowledges; 500 matches the
/// agent's default `batch.max_rows`, so one message fills about one database transaction.
pub const DEFAULT_MAX_RECEIPTS_PER_CHUNK: usize = 500;

/// With compression, a chunk is first filled to this share of the byte limit by the estimated
/// ratio: compression ratios vary a little from chunk to chunk, and an overflow costs a retry.
const COMPRESSED_FILL: f64 = 0.92;

/// How chunks are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message as SQS counts it; values above [`SQS_MAX_MESSAGE_BYTES`] are treated as
    /// [`SQS_MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// Most receipts in one chunk; 0 is treated as 1.
    pub max_receipts_per_chunk: usize,
    /// How each message body is compressed.
    pub compression: Compression,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_receipts_per_chunk: DEFAULT_MAX_RECEIPTS_PER_CHUNK,
            compression: Compression::None,
        }
    }
}

/// Why an upload could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// One receipt alone makes a message over the limit.
    #[error("receipt {index} (id {receipt_id}) makes a {bytes}-byte message on its own, over the {limit}-byte limit")]
    ReceiptTooLarge {
        /// Position of the receipt in the upload.
        index: usize,
        /// Its id.
        receipt_id: String,
        /// Size of a message holding only this receipt.
        bytes: usize,
        /// The limit applied.
        limit: usize,
    },
    /// Serializing, compressing or assembling failed (e.g. `batch_id` is not a UUID).
    #[error("could not encode the chunks: {0}")]
    Encode(String),
}

/// Splits `receipts` into messages, in order; each message's `chunk_count` is the final count.
///
/// Returns no messages for no receipts. `batch_id` must be a UUID (it is written lowercase).
pub fn split(
    batch_id: &str,
    receipts: &[Receipt],
    limits: &Limits,
) -> Result<Vec<EncodedMessage>, SplitError> {
    if receipts.is_empty() {
        return Ok(Vec::new());
    }
    let batch_id =
        parse_uuid(batch_id).map_err(|reason| SplitError::Encode(format!("batch_id {reason}")))?;
    let parts = receipts
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SplitError::Encode(format!("could not serialize a receipt: {e}")))?;
    let packer = Packer::new(&batch_id, &parts, receipts, limits)?;
    match limits.compression {
        Compression::None => packer.plain(),
        compression => packer.compressed(compression),
    }
}

/// Decimal digits of `n`.
fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn to_u32(n: usize) -> Result<u32, SplitError> {
    u32::try_from(n).map_err(|_| SplitError::Encode(format!("{n} chunks is too many")))
}

/// The pieces of one upload and the arithmetic over them.
struct Packer<'a> {
    /// One version for every chunk of the upload: the one its receipts need.
    version: u32,
    batch_json: String,
    parts: &'a [String],
    receipts: &'a [Receipt],
    /// `prefix[i]` = total length of `parts[..i]`.
    prefix: Vec<usize>,
    /// Envelope bytes besides the two numbers and the receipts.
    fixed: usize,
    limit: usize,
    per_chunk: usize,
}

impl<'a> Packer<'a> {
    fn new(
        batch_id: &str,
        parts: &'a [String],
        receipts: &'a [Receipt],
        limits: &Limits,
    ) -> Result<Self, SplitError> {
        let batch_json = serde_json::to_string(batch_id)
            .map_err(|e| SplitError::Encode(format!("could not serialize batch_id: {e}")))?;
        let mut prefix = Vec::with_capacity(parts.len() + 1);
        prefix.push(0);
        let mut total = 0usize;
        for part in parts {
            total = total.saturating_add(part.len());
            prefix.push(total);
        }
        let mut packer = Packer {
            version: version_for(receipts),
            batch_json,
            parts,
            receipts,
            prefix,
            fixed: 0,
            limit: limits.max_message_bytes.min(SQS_MAX_MESSAGE_BYTES),
            per_chunk: limits.max_receipts_per_chunk.max(1),
        };
        // header(0, 0) has two 1-digit numbers; the closing "]}" adds 2.
        packer.fixed = packer.header(0, 0).len() - 2 + 2;
        Ok(packer)
    }

    /// The envelope up to and including the receipts' opening bracket, exactly as serde_json
    /// writes a [`crate::Chunk`] (field order, no spaces).
    fn header(&self, index: usize, count: usize) -> String {
        format!(
            r#"{{"v":{},"batch_id":{},"chunk_index":{index},"chunk_count":{count},"receipts":["#,
            self.version, self.batch_json
        )
    }

    /// Length of the receipts' JSON in `range`, commas included.
    fn receipts_len(&self, range: &Range<usize>) -> usize {
        self.prefix[range.end] - self.prefix[range.start] + range.len().saturating_sub(1)
    }

    /// Uncompressed body length for `range` with numbers of the given digit counts.
    fn body_len(&self, range: &Range<usize>, index_digits: usize, count_digits: usize) -> usize {
        self.fixed + index_digits + count_digits + self.receipts_len(range)
    }

    fn body(&self, range: &Range<usize>, index: usize, count: usize) -> String {
        let mut body = self.header(index, count);
        body.reserve(self.receipts_len(range) + 2);
        for (i, part) in self.parts[range.clone()].iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(part);
        }
        body.push_str("]}");
        body
    }

    fn too_large(&self, index: usize, bytes: usize) -> SplitError {
        SplitError::ReceiptTooLarge {
            index,
            receipt_id: self
                .receipts
                .get(index)
                .map_or_else(String::new, |r| r.receipt_id.clone()),
            bytes,
            limit: self.limit,
        }
    }

    /// Encodes `range` as chunk `index` of `count`.
    fn encode(
        &self,
        range: &Range<usize>,
        index: usize,
        count: usize,
        compression: Compression,
    ) -> Result<EncodedMessage, SplitError> {
        let body = self.body(range, index, count);
        let plain_len = body.len();
        match finish(body, to_u32(index)?, range.len(), compression) {
            Ok(message) => Ok(message),
            Err(EncodeError::TooLarge { .. }) if range.len() == 1 => {
                Err(self.too_large(range.start, plain_len))
            }
            Err(e) => Err(SplitError::Encode(e.to_string())),
        }
    }

    /// Exact greedy packing without compression.
    fn plain(&self) -> Result<Vec<EncodedMessage>, SplitError> {
        let n = self.parts.len();
        // Size headers for the largest possible chunk_count first, then, if fewer chunks came
        // out, once more for the actual count's digits: smaller headers only pack tighter, so
        // the count cannot grow back and every header is sized right.
        let mut count_digits = digits(n);
        let mut ranges = self.plan_plain(count_digits)?;
        if digits(ranges.len()) < count_digits {
            count_digits = digits(ranges.len());
            ranges = self.plan_plain(count_digits)?;
        }
        self.emit(&ranges, Compression::None)?
            .map_err(|_| SplitError::Encode("a plain chunk came out over the limit".into()))
    }

    fn plan_plain(&self, count_digits: usize) -> Result<Vec<Range<usize>>, SplitError> {
        let n = self.parts.len();
        let mut ranges = Vec::new();
        let mut start = 0;
        for i in 0..n {
            if i > start {
                let candidate = start..i + 1;
                let size = self.body_len(&candidate, digits(ranges.len()), count_digits);
                if candidate.len() <= self.per_chunk && size <= self.limit {
                    continue;
                }
                ranges.push(start..i);
                start = i;
            }
            let size = self.body_len(&(i..i + 1), digits(ranges.len()), count_digits);
            if size > self.limit {
                return Err(self.too_large(i, size));
            }
        }
        ranges.push(start..n);
        Ok(ranges)
    }

    /// Encodes every range with its final header. The inner `Err` lists the chunks that came
    /// out over the limit (only possible with compression), for the caller to re-cut.
    fn emit(
        &self,
        ranges: &[Range<usize>],
        compression: Compression,
    ) -> Result<Result<Vec<EncodedMessage>, Vec<usize>>, SplitError> {
        let count = ranges.len();
        to_u32(count)?;
        let mut messages = Vec::with_capacity(count);
        let mut over = Vec::new();
        for (k, range) in ranges.iter().enumerate() {
            let message = self.encode(range, k, count, compression)?;
            if message.sqs_size() > self.limit {
                if range.len() == 1 {
                    return Err(self.too_large(range.start, message.sqs_size()));
                }
                over.push(k);
            } else if over.is_empty() {
                messages.push(message);
            }
        }
        Ok(if over.is_empty() {
            Ok(messages)
        } else {
            Err(over)
        })
    }

    /// The end of the longest run from `start` whose uncompressed body stays within `budget`
    /// (and [`MAX_DECODED_BYTES`]) and `per_chunk`; at least one receipt.
    fn fill(&self, start: usize, budget: usize, count_digits: usize) -> usize {
        let budget = budget.min(MAX_DECODED_BYTES);
        let max_end = self.parts.len().min(start.saturating_add(self.per_chunk));
        let mut end = start + 1;
        while end < max_end
            && self.body_len(&(start..end + 1), count_digits, count_digits) <= budget
        {
            end += 1;
        }
        end
    }

    /// Packing with compression: estimate, encode, adjust.
    fn compressed(&self, compression: Compression) -> Result<Vec<EncodedMessage>, SplitError> {
        let n = self.parts.len();
        let attr = attribute_size(compression.attribute());
        let room = self.limit.saturating_sub(attr).max(1);
        // While fitting, headers carry the widest numbers they could need.
        let d = digits(n);
        // JSON bytes expected to fill a message at `ratio` (encoded bytes per JSON byte).
        let budget = |ratio: f64| -> usize {
            let budget = room as f64 / ratio.max(1e-6) * COMPRESSED_FILL;
            if budget >= MAX_DECODED_BYTES as f64 {
                MAX_DECODED_BYTES
            } else {
                budget as usize
            }
        };

        // First estimate of the ratio (encoded bytes per JSON byte) from about one message's
        // worth of JSON; later chunks use what the previous chunk measured.
        let sample_end = self.fill(0, self.limit, d);
        let sample = self.encode(&(0..sample_end), n, n, compression)?;
        let mut ratio = sample.body.len() as f64 / self.body_len(&(0..sample_end), d, d) as f64;

        let mut ranges = Vec::new();
        let mut start = 0;
        while start < n {
            let mut end = self.fill(start, budget(ratio), d);
            let mut fitted: Option<usize> = None;
            let mut grown = false;
            loop {
                let range = start..end;
                let message = self.encode(&range, n, n, compression)?;
                let size = message.sqs_size();
                let plain = self.body_len(&range, d, d);
                let measured = size.saturating_sub(attr).max(1) as f64 / plain.max(1) as f64;
                if size <= self.limit {
                    ratio = measured;
                    fitted = Some(end);
                    // Grow once when clearly underfilled and more receipts are left.
                    if !grown && size < self.limit / 4 * 3 && end < n {
                        grown = true;
                        let bigger = self.fill(start, budget(measured), d);
                        if bigger > end {
                            end = bigger;
                            continue;
                        }
                    }
                    break;
                }
                if let Some(fit) = fitted {
                    end = fit;
                    break;
                }
                if range.len() == 1 {
                    return Err(self.too_large(start, size));
                }
                let target =
                    (plain as f64 * self.limit as f64 / size as f64 * COMPRESSED_FILL) as usize;
                end = self.fill(start, target, d).min(end - 1).max(start + 1);
            }
            ranges.push(start..end);
            start = end;
        }

        self.finalize(ranges, compression)
    }

    /// Encodes the ranges with their final headers; a chunk that overflows now (the header's
    /// digits changed its compressed size) is cut in two and everything re-emitted, as the
    /// count changed. Ranges only get shorter, so this ends.
    fn finalize(
        &self,
        mut ranges: Vec<Range<usize>>,
        compression: Compression,
    ) -> Result<Vec<EncodedMessage>, SplitError> {
        loop {
            let over = match self.emit(&ranges, compression)? {
                Ok(messages) => return Ok(messages),
                Err(over) => over,
            };
            let mut next = Vec::with_capacity(ranges.len() + over.len());
            for (k, range) in ranges.iter().enumerate() {
                if over.contains(&k) {
                    let mid = range.start + range.len() / 2;
                    next.push(range.start..mid);
                    next.push(mid..range.end);
                } else {
                    next.push(range.clone());
                }
            }
            ranges = next;
        }
    }
}

#[cfg(test)]
mod tests;
