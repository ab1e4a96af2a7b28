//! How a chunk's JSON is read: the envelope's fields, and its receipts either the quick way
//! ([`Accepted`]) or through the validation walk ([`Validated`]).

use std::fmt;

use serde::Deserialize;

use crate::receipt::{accept, FieldError, Object, Receipt};

/// The envelope as read off the queue, its receipts read as `R`: [`Accepted`] on the quick
/// path, [`Validated`] on the walk. No `deny_unknown_fields`: an optional field added by a
/// newer ingest is ignored.
#[derive(Deserialize)]
pub(super) struct RawChunk<R> {
    pub(super) v: u32,
    pub(super) batch_id: String,
    pub(super) chunk_index: u32,
    pub(super) chunk_count: u32,
    pub(super) receipts: R,
}

/// The `receipts` array read the quick way (see `receipt::typed`): each receipt built by serde
/// and accepted by the typed check. Any receipt it does not accept fails the whole parse, and
/// the chunk is read again as [`Validated`], which names every fault.
pub(super) struct Accepted(pub(super) Vec<Receipt>);

impl<'de> Deserialize<'de> for Accepted {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> serde::de::Visitor<'de> for Each {
            type Value = Accepted;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Accepted, A::Error> {
                let mut receipts = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(Object(mut receipt)) = seq.next_element::<Object<Receipt>>()? {
                    if !accept(&mut receipt) {
                        return Err(serde::de::Error::custom("a receipt needs the full check"));
                    }
                    receipts.push(receipt);
                }
                Ok(Accepted(receipts))
            }
        }
        deserializer.deserialize_seq(Each)
    }
}

impl From<RawChunk<Accepted>> for RawChunk<Validated> {
    fn from(raw: RawChunk<Accepted>) -> Self {
        let receipts = raw.receipts.0;
        RawChunk {
            v: raw.v,
            batch_id: raw.batch_id,
            chunk_index: raw.chunk_index,
            chunk_count: raw.chunk_count,
            receipts: Validated {
                count: receipts.len(),
                receipts,
                errors: Vec::new(),
            },
        }
    }
}

/// The `receipts` array, each receipt validated as soon as it is parsed: only one receipt's
/// JSON tree is alive at a time, never the whole chunk's next to the receipts built from it.
#[derive(Default)]
pub(super) struct Validated {
    pub(super) receipts: Vec<Receipt>,
    pub(super) errors: Vec<FieldError>,
    pub(super) count: usize,
}

impl<'de> Deserialize<'de> for Validated {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> serde::de::Visitor<'de> for Each {
            type Value = Validated;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Validated, A::Error> {
                let mut out = Validated::default();
                while let Some(value) = seq.next_element::<serde_json::Value>()? {
                    match Receipt::from_value(&value, out.count) {
                        Ok(receipt) => out.receipts.push(receipt),
                        Err(mut errs) => out.errors.append(&mut errs),
                    }
                    out.count += 1;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Each)
    }
}
