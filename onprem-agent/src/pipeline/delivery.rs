//! What the pipeline's stages hand each other: a decoded [`Delivery`] (its rows for the store,
//! its chunk-ledger row), and [`WriterContext`], what writing and settling a batch need.
//!
//! A leaf of the pipeline: the pollers make deliveries, the writer and `settle` consume them,
//! and this module imports none of those stages.

use std::sync::Arc;

use sluice_protocol::envelope::Chunk;
use sluice_protocol::Receipt;

use crate::io::sqs::{Handle, Queue};
use crate::io::store::{LedgerEntry, Row, Store};
use crate::pipeline::batcher::Rows;
use crate::pipeline::budget::Share;
use crate::pipeline::health::Health;
use crate::pipeline::inflight::InFlight;
use crate::pipeline::liveness::Liveness;
use crate::pipeline::receiving::Receiving;
use crate::pipeline::refusal::Refusals;
use crate::pipeline::report::ReportWake;
use crate::pipeline::slow::SlowMessages;
use crate::throttle::Throttle;

/// One decoded delivery, holding its share of the in-flight budget until it is dropped.
#[derive(Debug)]
pub struct Delivery {
    pub handle: Handle,
    pub chunk: Chunk,
    pub share: Share,
}

impl Rows for Delivery {
    fn rows(&self) -> usize {
        self.chunk.receipts.len()
    }
    /// The decoded bytes held, and the declared bytes of the photos it carries, which are
    /// fetched for its batch's transaction: batches stay bounded in photo bytes too.
    fn bytes(&self) -> usize {
        self.share
            .bytes()
            .saturating_add(crate::pipeline::photos::declared_bytes(self))
    }
}

impl Delivery {
    /// The chunk's receipts as the store writes them.
    pub fn store_rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.chunk.receipts.iter().map(move |r| Row {
            receipt: r,
            batch_id: &self.chunk.batch_id,
            chunk_index: self.chunk.chunk_index,
            photo: None,
        })
    }

    /// Whether this message carries `receipt` of chunk `chunk_index` of `batch_id`: that chunk,
    /// and a receipt with that content (another version of the same id is another receipt).
    pub fn carries(&self, batch_id: &str, chunk_index: u32, receipt: &Receipt) -> bool {
        self.chunk.batch_id == batch_id
            && self.chunk.chunk_index == chunk_index
            && self
                .chunk
                .receipts
                .iter()
                .any(|r| r.receipt_id == receipt.receipt_id && r == receipt)
    }

    /// The chunk's ledger row before anything is counted (the write adds what it did).
    pub fn ledger_entry(&self) -> LedgerEntry {
        LedgerEntry {
            batch_id: self.chunk.batch_id.clone(),
            chunk_index: self.chunk.chunk_index,
            chunk_count: self.chunk.chunk_count,
            receipts: u32::try_from(self.chunk.receipts.len()).unwrap_or(u32::MAX),
            message_id: self.handle.message_id.clone(),
            ..LedgerEntry::default()
        }
    }
}

/// What a writer needs, and `settle` with it.
#[derive(Debug, Clone)]
pub struct WriterContext {
    pub store: Store,
    pub queue: Queue,
    pub inflight: Arc<InFlight>,
    pub health: Health,
    /// The token bucket, the transaction slots, and where commit latencies and overload
    /// errors are reported.
    pub throttle: Arc<Throttle>,
    /// Where settled batches and legitimate waits are reported to the systemd watchdog.
    pub liveness: Liveness,
    /// Whether every write is refused, and the probe that retries them.
    pub refusals: Arc<Refusals>,
    /// `[photos]`: where carried photos are fetched from and stored; `None` without it.
    pub photos: crate::pipeline::photos::SharedPhotos,
    /// The messages released for timing out alone, named by `slow_message`.
    pub slow: SlowMessages,
    /// Wakes the status reporter after a commit (never waits).
    pub report: ReportWake,
    /// The pollers' receives on their way: a release at shutdown waits for them.
    pub receiving: Receiving,
}
