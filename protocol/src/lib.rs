//! Sluice's wire crate: the receipt model and its validation, the upload parsers, the chunk
//! envelope (SQS message format) and the splitting of an upload into messages.
//!
//! Pure data and functions: no async runtime, no AWS, no database. Both the ingest API and the
//! on-premise agent depend on it, so the two sides agree on one definition of a valid receipt
//! and of a message.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`receipt`] | [`Receipt`] and its parts, [`Decimal`], every field rule, [`FieldError`], [`Fingerprint`] |
//! | [`batch`] | parsing an upload body (`{"receipts":[…]}` or NDJSON) into receipts |
//! | [`envelope`] | the versioned [`Chunk`], compression, [`envelope::encode`] / [`envelope::decode`] |
//! | [`mod@split`] | cutting an upload into chunks that each fit one SQS message |
//! | [`report`] | the agent's chunk reports (status queue) and an upload's [`BatchStatus`] |

pub mod batch;
pub mod envelope;
pub mod receipt;
pub mod report;
pub mod split;

#[cfg(test)]
mod test_support;

pub use batch::{parse_json, parse_ndjson, BatchError, MAX_REPORTED_ERRORS};
pub use envelope::{
    decode, encode, Chunk, Compression, DecodeError, EncodeError, EncodedMessage,
    ENCODING_ATTRIBUTE, ENVELOPE_VERSION, ENVELOPE_VERSION_NEWEST, ENVELOPE_VERSION_PHOTOS,
    MAX_DECODED_BYTES,
};
pub use receipt::{Decimal, FieldError, Fingerprint, Image, Item, Receipt};
pub use report::{BatchState, BatchStatus, ChunkReport, Rejection};
pub use split::{split, Limits, SplitError, DEFAULT_MAX_MESSAGE_BYTES, SQS_MAX_MESSAGE_BYTES};
