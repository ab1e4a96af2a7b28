//! The data path: pollers take messages from SQS, the batcher groups them, writers commit each
//! batch in one transaction and then delete what is settled.
//!
//! | module | job |
//! |---|---|
//! | [`consumer`] | pollers: long-poll, decode, gate on database health and the in-flight budget |
//! | [`budget`] | the in-flight budget: receipts and decoded bytes held, and their gauges |
//! | [`delivery`] | what the stages hand each other: a decoded message, what writing a batch needs |
//! | [`batcher`] | groups messages into batches by rows and wait time |
//! | [`writer`] | one transaction per batch, then delete, keep or release each message |
//! | [`settle`] | commit a batch, or isolate its refused rows and dead-letter them |
//! | [`isolate`] | bisection of a refused batch; every row refused one way is systemic |
//! | [`refusal`] | systemic refusals: pause receiving, probe with backoff, `write_refused` |
//! | [`slow`] | batches that time out while the database takes other writes: split, released, `slow_message` |
//! | [`receiving`] | the receives on their way, which shutdown's releases wait for |
//! | [`inflight`] | messages held, heartbeat (visibility extension), release on shutdown |
//! | [`health`] | database up/down, shared by writers and pollers |
//! | [`liveness`] | progress reports from the loops, read by the watchdog |
//! | [`backoff`] | the retry delays through an outage |
//! | [`photos`] | carried photos: fetched, checked and stored with their receipts; `image_missing`, `image_checksum` |
//! | [`report`] | the status reporter: each settled chunk's figures, from the ledger, to the status queue |
//! | [`unknown_version`] | envelope versions this agent does not read: released, reported |

pub(crate) mod backoff;
pub(crate) mod batcher;
pub(crate) mod budget;
pub(crate) mod consumer;
pub(crate) mod delivery;
pub(crate) mod health;
pub(crate) mod inflight;
pub(crate) mod isolate;
pub(crate) mod liveness;
pub(crate) mod photos;
pub(crate) mod receiving;
pub(crate) mod refusal;
pub(crate) mod report;
pub(crate) mod settle;
pub(crate) mod slow;
pub(crate) mod unknown_version;
pub(crate) mod writer;
