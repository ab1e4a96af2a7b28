//! The SQS message format: the versioned chunk envelope, its compression, encode and decode.
//!
//! A message body is the compact JSON of a [`Chunk`]
//! (`{"v":1,"batch_id":…,"chunk_index":…,"chunk_count":…,"receipts":[…]}`), either as is or
//! compressed (gzip or zstd) and then standard base64, with the encoding named in the
//! [`ENCODING_ATTRIBUTE`] message attribute. [`decode`] trusts nothing: it caps the decoded size
//! and re-validates every receipt, because the queue may hold anything.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::receipt::{parse_uuid, FieldError, Receipt};
use read::{Accepted, RawChunk, Validated};

/// Version written in every envelope's `v`; [`decode`] refuses any other.
///
/// Compatibility rule: adding an optional envelope field keeps the version (an older agent
/// ignores fields it does not know); any change an older agent would misread (a field renamed,
/// retyped or made required, a new meaning, receipts of a new shape) bumps it, and an agent
/// that meets a version it does not know hands the message back to the queue untouched.
///
/// Version 1 is written for every chunk that holds no photo the bridge carries, so agents that
/// read only version 1 go on draining them; [`ENVELOPE_VERSION_PHOTOS`] for the others.
pub const ENVELOPE_VERSION: u32 = 1;

/// The version of a chunk holding at least one photo the bridge carries
/// ([`crate::Image::is_carried`]): an agent that reads only version 1 would store such a
/// receipt without fetching its photo (and refuse the new `content_type` field), so it
/// releases the chunk untouched instead, under `envelope_version_unknown`.
pub const ENVELOPE_VERSION_PHOTOS: u32 = 2;

/// The newest envelope version this build reads (it reads every version from 1 up).
pub const ENVELOPE_VERSION_NEWEST: u32 = ENVELOPE_VERSION_PHOTOS;

/// Whether this build reads envelope version `v`.
pub fn reads_version(v: u32) -> bool {
    (ENVELOPE_VERSION..=ENVELOPE_VERSION_NEWEST).contains(&v)
}

/// The version a chunk of these receipts is written in: the oldest that can carry them.
pub fn version_for(receipts: &[Receipt]) -> u32 {
    if receipts
        .iter()
        .any(|r| r.image.as_ref().is_some_and(crate::Image::is_carried))
    {
        ENVELOPE_VERSION_PHOTOS
    } else {
        ENVELOPE_VERSION
    }
}

/// SQS message attribute carrying the body encoding ("gzip" | "zstd"); absent = plain JSON.
pub const ENCODING_ATTRIBUTE: &str = "sluice-encoding";

/// SQS data type of [`ENCODING_ATTRIBUTE`]; its length counts against the message size.
pub const ENCODING_ATTRIBUTE_TYPE: &str = "String";

/// Largest body [`decode`] will handle once decoded (and decompressed), in bytes. A 1 MiB SQS
/// message of well-compressed JSON stays far below this; a zip bomb stops here instead of
/// exhausting the agent's memory. [`mod@crate::split`] never builds a chunk larger than this.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// zstd level: 3 is zstd's own default, a good ratio at several hundred MB/s, so compressing
/// does not dominate the ingest Lambda's time.
const ZSTD_LEVEL: i32 = 3;

/// Largest zstd window the decoder accepts (2^24 = 16 MiB = [`MAX_DECODED_BYTES`]): a frame
/// cannot make the decoder allocate more than the output we are willing to hold anyway.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// How a message body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain JSON, no attribute.
    #[default]
    None,
    /// gzip, then base64.
    Gzip,
    /// zstd, then base64.
    Zstd,
}

impl Compression {
    /// The name used in configuration: `none`, `gzip` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The value of [`ENCODING_ATTRIBUTE`] for this compression; `None` means no attribute.
    pub fn attribute(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            other => Some(other.as_str()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compression name that is not `none`, `gzip` or `zstd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: expected none, gzip or zstd")]
pub struct ParseCompressionError(pub String);

impl FromStr for Compression {
    type Err = ParseCompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(ParseCompressionError(other.to_owned())),
        }
    }
}

/// One SQS message's content: a slice of one upload. Unknown fields are ignored (see
/// [`ENVELOPE_VERSION`] for the compatibility rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Envelope version, [`ENVELOPE_VERSION`].
    pub v: u32,
    /// The upload this chunk belongs to (a UUID).
    pub batch_id: String,
    /// Position of this chunk in the upload, `0..chunk_count`.
    pub chunk_index: u32,
    /// How many chunks the upload was split into.
    pub chunk_count: u32,
    /// The receipts, in upload order; never empty.
    pub receipts: Vec<Receipt>,
}

impl Chunk {
    /// A chunk in the version its receipts need ([`version_for`]).
    pub fn new(
        batch_id: String,
        chunk_index: u32,
        chunk_count: u32,
        receipts: Vec<Receipt>,
    ) -> Self {
        Chunk {
            v: version_for(&receipts),
            batch_id,
            chunk_index,
            chunk_count,
            receipts,
        }
    }
}

/// A chunk ready to send: the body and the encoding attribute to send with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    /// The SQS message body.
    pub body: String,
    /// Value of [`ENCODING_ATTRIBUTE`]; `None` = send no attribute.
    pub encoding: Option<&'static str>,
    /// The chunk's `chunk_index`.
    pub chunk_index: u32,
    /// How many receipts the chunk holds.
    pub receipts: usize,
}

impl EncodedMessage {
    /// Bytes SQS counts against its size limit: body + each attribute's name, type ("String")
    /// and value.
    pub fn sqs_size(&self) -> usize {
        self.body.len() + attribute_size(self.encoding)
    }
}

/// Bytes the encoding attribute adds to a message.
pub(crate) fn attribute_size(encoding: Option<&str>) -> usize {
    encoding.map_or(0, |value| {
        ENCODING_ATTRIBUTE.len() + ENCODING_ATTRIBUTE_TYPE.len() + value.len()
    })
}

/// Why a chunk could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The header would not decode (bad batch id, index out of range, no receipts, wrong `v`).
    #[error("bad envelope header: {0}")]
    BadHeader(String),
    /// The chunk's JSON is over [`MAX_DECODED_BYTES`], which [`decode`] would refuse.
    #[error("chunk is {bytes} bytes of JSON, over the {limit}-byte limit")]
    TooLarge {
        /// Size of the chunk's JSON.
        bytes: usize,
        /// [`MAX_DECODED_BYTES`].
        limit: usize,
    },
    /// Serializing to JSON failed.
    #[error("could not serialize the chunk: {0}")]
    Json(String),
    /// The compressor failed.
    #[error("could not compress the chunk: {0}")]
    Compress(String),
}

/// Why a message body could not be decoded; every variant means the message is poison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The encoding attribute names something other than gzip or zstd.
    #[error(
        "unknown body encoding {0:?} in the {ENCODING_ATTRIBUTE} attribute (expected gzip or zstd)"
    )]
    UnknownEncoding(String),
    /// A compressed body is not valid base64.
    #[error("compressed body is not valid base64: {0}")]
    Base64(String),
    /// A compressed body could not be decompressed.
    #[error("compressed body could not be decompressed: {0}")]
    Decompress(String),
    /// The body, once decoded, is over the limit.
    #[error("body is larger than {limit} bytes once decoded")]
    TooLarge {
        /// [`MAX_DECODED_BYTES`].
        limit: usize,
    },
    /// The body is not JSON of the envelope's shape.
    #[error("body is not a valid chunk envelope (line {line}, column {column}): {message}")]
    Json {
        /// 1-based line, as serde_json reports it.
        line: usize,
        /// 1-based column, as serde_json reports it.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// The envelope's `v` is not one this build reads.
    #[error("envelope version {0} is not supported (this build reads versions {ENVELOPE_VERSION} to {ENVELOPE_VERSION_NEWEST})")]
    UnsupportedVersion(u32),
    /// The envelope's header is inconsistent.
    #[error("bad envelope header: {0}")]
    BadHeader(String),
    /// Some receipts break the receipt rules.
    #[error("{} invalid receipt field(s){}", .0.len(), first_error(.0))]
    InvalidReceipts(Vec<FieldError>),
}

fn first_error(errors: &[FieldError]) -> String {
    errors
        .first()
        .map_or_else(String::new, |e| format!(", first: {e}"))
}

/// Checks an envelope header; the reason is shared by [`encode`] and [`decode`].
fn check_header(
    batch_id: &str,
    chunk_index: u32,
    chunk_count: u32,
    receipts: usize,
) -> Result<String, String> {
    if batch_id.is_empty() {
        return Err("batch_id is empty".into());
    }
    let batch_id = parse_uuid(batch_id).map_err(|_| "batch_id is not a UUID".to_owned())?;
    if chunk_count == 0 {
        return Err("chunk_count is 0".into());
    }
    if chunk_index >= chunk_count {
        return Err(format!(
            "chunk_index {chunk_index} is not below chunk_count {chunk_count}"
        ));
    }
    if receipts == 0 {
        return Err("the chunk holds no receipts".into());
    }
    Ok(batch_id)
}

/// Serializes, compresses and base64-encodes one chunk.
pub fn encode(chunk: &Chunk, compression: Compression) -> Result<EncodedMessage, EncodeError> {
    let needed = version_for(&chunk.receipts);
    if chunk.v != needed {
        return Err(EncodeError::BadHeader(format!(
            "v is {}, these receipts are written in version {needed}",
            chunk.v
        )));
    }
    check_header(
        &chunk.batch_id,
        chunk.chunk_index,
        chunk.chunk_count,
        chunk.receipts.len(),
    )
    .map_err(EncodeError::BadHeader)?;
    let json = serde_json::to_string(chunk).map_err(|e| EncodeError::Json(e.to_string()))?;
    finish(json, chunk.chunk_index, chunk.receipts.len(), compression)
}

/// Turns a chunk's JSON into a message: size check, then compression and base64 if asked.
pub(crate) fn finish(
    json: String,
    chunk_index: u32,
    receipts: usize,
    compression: Compression,
) -> Result<EncodedMessage, EncodeError> {
    if json.len() > MAX_DECODED_BYTES {
        return Err(EncodeError::TooLarge {
            bytes: json.len(),
            limit: MAX_DECODED_BYTES,
        });
    }
    let compress_err = |e: std::io::Error| EncodeError::Compress(e.to_string());
    let body = match compression {
        Compression::None => json,
        Compression::Gzip => {
            // Level 6 (the default): gzip's usual balance; higher levels gain little on JSON.
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(json.as_bytes()).map_err(compress_err)?;
            let bytes = encoder.finish().map_err(compress_err)?;
            base64::engine::general_purpose::STANDARD.encode(bytes)
        }
        Compression::Zstd => {
            let bytes = zstd::bulk::compress(json.as_bytes(), ZSTD_LEVEL).map_err(compress_err)?;
            base64::engine::general_purpose::STANDARD.encode(bytes)
        }
    };
    Ok(EncodedMessage {
        body,
        encoding: compression.attribute(),
        chunk_index,
        receipts,
    })
}

/// Just the version, read when the full envelope does not parse: a newer envelope should be
/// reported as [`DecodeError::UnsupportedVersion`], not as a JSON error.
#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

/// Decodes and fully re-validates one message body (the queue may hold anything).
///
/// `encoding` is the [`ENCODING_ATTRIBUTE`] value (`None`, or `"none"`, = plain JSON). The decoded size is
/// capped at [`MAX_DECODED_BYTES`]. Receipts come back normalised, as [`Receipt::from_value`]
/// returns them; error pointers are `/receipts/{i}/…` within the chunk.
pub fn decode(body: &str, encoding: Option<&str>) -> Result<Chunk, DecodeError> {
    decode_measured(body, encoding).map(|d| d.chunk)
}

/// A decoded chunk and the length of its JSON once decompressed (at most
/// [`MAX_DECODED_BYTES`]): what holding it costs, known without serializing it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The validated chunk.
    pub chunk: Chunk,
    /// Bytes of the chunk's JSON, decompressed.
    pub json_bytes: usize,
}

/// [`decode`], also returning the decoded JSON's length.
pub fn decode_measured(body: &str, encoding: Option<&str>) -> Result<Decoded, DecodeError> {
    let compression = match encoding {
        None => Compression::None,
        Some(name) => name
            .parse::<Compression>()
            .map_err(|_| DecodeError::UnknownEncoding(name.to_owned()))?,
    };
    // base64 only shrinks, so an over-long body is over the limit whatever its encoding.
    if body.len() > MAX_DECODED_BYTES {
        return Err(DecodeError::TooLarge {
            limit: MAX_DECODED_BYTES,
        });
    }
    let (raw, json_bytes) = match compression {
        Compression::None => (parse(body.as_bytes())?, body.len()),
        Compression::Gzip | Compression::Zstd => {
            let compressed = base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| DecodeError::Base64(e.to_string()))?;
            // A long body that does not parse is decompressed again in full, to name its fault
            // as exactly as a plain one's.
            match parse_compressed(&compressed, compression) {
                Some(parsed) => parsed?,
                None => {
                    let json = decompress(&compressed, compression)?;
                    (parse(&json)?, json.len())
                }
            }
        }
    };
    if !reads_version(raw.v) {
        return Err(DecodeError::UnsupportedVersion(raw.v));
    }
    let batch_id = check_header(
        &raw.batch_id,
        raw.chunk_index,
        raw.chunk_count,
        raw.receipts.count,
    )
    .map_err(DecodeError::BadHeader)?;
    if !raw.receipts.errors.is_empty() {
        return Err(DecodeError::InvalidReceipts(raw.receipts.errors));
    }
    let chunk = Chunk {
        v: raw.v,
        batch_id,
        chunk_index: raw.chunk_index,
        chunk_count: raw.chunk_count,
        receipts: raw.receipts.receipts,
    };
    Ok(Decoded { chunk, json_bytes })
}

/// Parses a chunk's JSON; a body that is not an envelope this build reads but says it is
/// another version is [`DecodeError::UnsupportedVersion`].
fn parse(json: &[u8]) -> Result<RawChunk<Validated>, DecodeError> {
    // The quick path checks the UTF-8 of the whole chunk once and parses it as text: parsed
    // from bytes, serde_json checks every string on its own, a call per string that cost about
    // a twentieth of the agent's CPU. Anything it refuses (invalid UTF-8 too) is read again
    // from the bytes below, which names the fault as before.
    if let Ok(text) = std::str::from_utf8(json) {
        if let Ok(quick) = serde_json::from_str::<RawChunk<Accepted>>(text) {
            return Ok(quick.into());
        }
    }
    serde_json::from_slice(json).map_err(|err| {
        if let Ok(probe) = serde_json::from_slice::<VersionProbe>(json) {
            if !reads_version(probe.v) {
                return DecodeError::UnsupportedVersion(probe.v);
            }
        }
        DecodeError::Json {
            line: err.line(),
            column: err.column(),
            message: crate::batch::bare_message(&err),
        }
    })
}

/// Decompressed JSON at most this long is held whole and parsed from memory: twice the
/// largest chunk the ingest makes by default (256 KiB messages), a fixed cost per decode next
/// to the byte budget's 16 MiB minimum.
const WHOLE_DECODE_BYTES: usize = 1024 * 1024;

/// Parses a compressed chunk, with its JSON's length. `None` when the caller must decompress
/// it whole and parse it again to name its fault: it does not decompress, or it is a long chunk
/// that fails (a JSON error, more than [`MAX_DECODED_BYTES`], or a receipt the quick path does
/// not accept).
///
/// The first [`WHOLE_DECODE_BYTES`] are decompressed into memory. A chunk that ends there
/// (every default-sized one) is parsed from that slice, several times faster than off a
/// reader. A longer one is parsed the quick way from those bytes followed by the rest of the
/// decompressor, so its JSON (up to 16 MiB) is never held whole next to the receipts. Only a
/// long chunk that fails, which the caller decompresses again to name its faults, is held
/// whole; a short one's fault is named from the slice it was parsed from.
fn parse_compressed(
    compressed: &[u8],
    compression: Compression,
) -> Option<Result<(RawChunk<Validated>, usize), DecodeError>> {
    let mut rest = decompressor(compressed, compression).ok()?.take(cap());
    let mut head = Vec::with_capacity(compressed.len().saturating_mul(4).min(WHOLE_DECODE_BYTES));
    let whole = u64::try_from(WHOLE_DECODE_BYTES).ok()?.saturating_add(1);
    (&mut rest).take(whole).read_to_end(&mut head).ok()?;
    if head.len() <= WHOLE_DECODE_BYTES {
        return Some(parse(&head).map(|raw| (raw, head.len())));
    }
    let mut counted = Counted {
        inner: std::io::Cursor::new(head).chain(rest),
        bytes: 0,
    };
    // serde_json reads a byte at a time: buffer the decompressor's output. Only the quick
    // path streams; a chunk it does not accept is decompressed again by the caller, whole.
    let reader = std::io::BufReader::with_capacity(64 * 1024, &mut counted);
    let raw = serde_json::from_reader::<_, RawChunk<Accepted>>(reader).ok()?;
    (counted.bytes <= MAX_DECODED_BYTES).then(|| Ok((raw.into(), counted.bytes)))
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    bytes: usize,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes = self.bytes.saturating_add(n);
        Ok(n)
    }
}

/// One byte over [`MAX_DECODED_BYTES`]: reading that much tells "exactly at the limit" from
/// "over it".
fn cap() -> u64 {
    u64::try_from(MAX_DECODED_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// A reader of `raw` decompressed.
fn decompressor(raw: &[u8], compression: Compression) -> Result<Box<dyn Read + '_>, DecodeError> {
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(raw)),
        Compression::Zstd => {
            let err = |e: std::io::Error| DecodeError::Decompress(e.to_string());
            let mut decoder = zstd::stream::read::Decoder::new(raw).map_err(err)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(err)?;
            Box::new(decoder)
        }
        Compression::None => Box::new(raw),
    })
}

/// Decompresses at most [`MAX_DECODED_BYTES`].
fn decompress(raw: &[u8], compression: Compression) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    decompressor(raw, compression)?
        .take(cap())
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Decompress(e.to_string()))?;
    if out.len() > MAX_DECODED_BYTES {
        return Err(DecodeError::TooLarge {
            limit: MAX_DECODED_BYTES,
        });
    }
    Ok(out)
}

mod read;
#[cfg(test)]
mod tests;
