//! The data path: pollers take messages from SQS, the batcher groups them, writers commit each
//! batch in one transaction and then delete what is settled.
//!
//! | module | job |
//! |---|---|
//! | [`consumer`] | pollers: long-poll, decode, gate on database health and the in-flight budget |
//! | [`budget`] | the in-flight budget: receipts and decoded bytes held, and their gauges |
//! | [`batcher`] | groups messages into batches by rows and wait time |
//! | [`writer`] | one transaction per batch, isolation of refused rows, then delete |
//! | [`inflight`] | messages held, heartbeat (visibility extension), release on shutdown |
//! | [`health`] | database up/down, shared by writers and pollers |
//! | [`liveness`] | progress reports from the loops, read by the watchdog |
//! | [`backoff`] | the retry delays through an outage |

pub(crate) mod backoff;
pub(crate) mod batcher;
pub(crate) mod budget;
pub(crate) mod consumer;
pub(crate) mod health;
pub(crate) mod inflight;
pub(crate) mod liveness;
pub(crate) mod writer;
