//! Sluice ingest API: takes bulk receipt uploads over HTTP, validates every receipt, splits
//! them into chunks and puts the chunks on SQS.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`config`] | settings from the environment, every problem listed at once |
//! | [`routes`] | the axum `Router` shared by Lambda and the local server; errors → HTTP status |
//! | [`publish`] | the chunks' SendMessageBatch calls: grouping, bounded parallel calls, per-entry retries |
//! | [`records`] | the upload records in DynamoDB: an `Idempotency-Key` bound to its body |
//! | [`photos`] | receipt photos: upload URLs, held chunks, each photo checked, chunks released |
//! | [`report`] | upload-status reporting: the agents' chunk reports folded into the records; webhooks |
//! | [`upload`] | the client: a large NDJSON file cut into parallel, retried requests |
//! | `io` | the adapters: the only modules that call the AWS SDK (`sqs`, `dynamodb`) |
//!
//! Validation and splitting are pure and live in `sluice-protocol`.

pub mod config;
mod io;
pub mod photos;
pub mod publish;
pub mod records;
pub mod report;
pub mod routes;
#[cfg(test)]
mod test_stack;
pub mod upload;

use std::sync::Arc;

pub use config::IngestConfig;
pub use routes::{app, AppState};

/// The application state for `cfg`, sending with `client`, recording uploads in `records`.
pub fn state(
    cfg: IngestConfig,
    client: io::sqs::Client,
    records: Option<records::Records>,
) -> AppState {
    let publisher = publish::Publisher::new(
        client,
        cfg.queue_url.clone(),
        cfg.publish_concurrency,
        cfg.max_message_bytes,
    );
    AppState {
        config: Arc::new(cfg),
        publisher,
        records,
        photos: None,
    }
}
