//! Sluice's AWS-facing code that the ingest API and the on-premise agent share: building the
//! SQS client (and every client of a local test server), and retrying the entries an SQS batch
//! call refuses inside a 200 answer.
//!
//! `sluice-protocol` stays free of AWS (pure data and functions); whatever names the SDK and
//! is needed on both sides lives here, once.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | `client` | [`sqs_client`] and [`shared_config`] (the standard AWS chain); [`local_sqs`] and [`local_dynamodb`]: a local server's client settings, fixed test credentials |
//! | `batch` | [`BatchRetry`]: calls of at most [`MAX_BATCH_ENTRIES`], refused entries retried; [`failed_entries`]: one call's answer as `run` takes it |

mod batch;
mod client;

pub use batch::{failed_entries, BatchOutput, BatchRetry, Retrying, MAX_BATCH_ENTRIES};
pub use client::{local_dynamodb, local_sqs, shared_config, sqs_client};
