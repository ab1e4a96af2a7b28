//! The ingest side of `make bench`: how fast the API accepts receipts, and what the bridge
//! costs in billed SQS requests, with and without message compression.
//!
//! SQS bills every started 64 KiB of a request's payload as one request; a SendMessageBatch of
//! ten 100 KiB messages is 16 billed requests, not one. Sends are counted from the real grouping
//! the API uses (`sluice_cloud::publish::group`), receives as the agent makes them (up to 10
//! messages per ReceiveMessage, billed by the payload returned), deletes as DeleteMessageBatch
//! calls of 10 (small payloads: one billed request each). Empty long polls are left out: one per
//! 20 s per poller whatever the load.

use std::time::Instant;

use anyhow::Context as _;
use serde_json::Value;
use sluice_protocol::envelope::Compression;
use sluice_protocol::split::{self, Limits};
use sluice_protocol::{batch, Receipt};

use crate::TestEnv;

/// SQS's billing unit.
const BILLED_CHUNK: usize = 64 * 1024;
/// Messages per ReceiveMessage and entries per batch call.
const PER_CALL: usize = 10;

/// One compression setting's figures.
#[derive(Debug, Clone)]
pub struct IngestFigures {
    pub compression: Compression,
    /// Parse + validate + split + encode, receipts/s on one core (no network).
    pub cpu_receipts_per_second: f64,
    /// Through the HTTP API into the local SQS server, receipts/s.
    pub api_receipts_per_second: f64,
    /// SQS messages per million receipts.
    pub messages_per_million: f64,
    /// Billed SQS requests (send + receive + delete) per million receipts.
    pub billed_per_million: f64,
    /// Mean SQS message size, bytes.
    pub mean_message_bytes: f64,
}

/// Billed SQS requests to carry messages of these sizes end to end, with the API's grouping.
pub fn billed_requests(messages: &[sluice_protocol::EncodedMessage], max_bytes: usize) -> usize {
    let billed = |bytes: usize| bytes.div_ceil(BILLED_CHUNK).max(1);
    let sends: usize = sluice_cloud::publish::group(messages, max_bytes)
        .iter()
        .map(|g| billed(g.iter().map(|&i| messages[i].sqs_size()).sum()))
        .sum();
    let receives: usize = messages
        .chunks(PER_CALL)
        .map(|c| billed(c.iter().map(|m| m.sqs_size()).sum()))
        .sum();
    let deletes = messages.len().div_ceil(PER_CALL);
    sends + receives + deletes
}

/// Measures `receipts` with each compression: CPU throughput and billing from the pure code,
/// API throughput through an in-process API into the test's queue.
pub async fn measure(env: &TestEnv, receipts: &[Value]) -> anyhow::Result<Vec<IngestFigures>> {
    let body = serde_json::to_vec(&serde_json::json!({ "receipts": receipts }))?;
    let mut out = Vec::new();
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let limits = Limits {
            compression,
            ..Limits::default()
        };
        // CPU: what one Lambda invocation does before it talks to SQS.
        let started = Instant::now();
        let parsed: Vec<Receipt> =
            batch::parse_json(&body, receipts.len()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let messages = split::split(&uuid::Uuid::new_v4().to_string(), &parsed, &limits)?;
        let cpu = receipts.len() as f64 / started.elapsed().as_secs_f64();

        let n = receipts.len() as f64;
        let total_bytes: usize = messages.iter().map(|m| m.sqs_size()).sum();
        let billed = billed_requests(&messages, limits.max_message_bytes);

        // Through the API into the local SQS server, in requests of 5,000, 4 at a time.
        let ingest = env
            .start_ingest(&[("SLUICE_COMPRESSION", compression.as_str())])
            .await?;
        let started = Instant::now();
        let mut pending = Vec::new();
        for part in receipts.chunks(5_000) {
            let body = serde_json::to_vec(&serde_json::json!({ "receipts": part }))?;
            pending.push(ingest.post(body, "application/json", &[]));
            if pending.len() == 4 {
                for r in futures_util::future::join_all(pending.drain(..)).await {
                    let (status, answer) = r?;
                    anyhow::ensure!(status == 202, "upload refused: {answer}");
                }
            }
        }
        for r in futures_util::future::join_all(pending.drain(..)).await {
            let (status, answer) = r?;
            anyhow::ensure!(status == 202, "upload refused: {answer}");
        }
        let api = n / started.elapsed().as_secs_f64();
        purge(env)
            .await
            .context("emptying the queue between runs")?;

        out.push(IngestFigures {
            compression,
            cpu_receipts_per_second: cpu,
            api_receipts_per_second: api,
            messages_per_million: messages.len() as f64 * 1e6 / n,
            billed_per_million: billed as f64 * 1e6 / n,
            mean_message_bytes: total_bytes as f64 / messages.len().max(1) as f64,
        });
    }
    Ok(out)
}

async fn purge(env: &TestEnv) -> anyhow::Result<()> {
    env.sqs
        .purge_queue()
        .queue_url(&env.queue_url)
        .send()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::EncodedMessage;

    fn msg(bytes: usize) -> EncodedMessage {
        EncodedMessage {
            body: "x".repeat(bytes),
            encoding: None,
            chunk_index: 0,
            receipts: 1,
        }
    }

    #[test]
    fn every_started_64_kib_of_payload_is_one_billed_request() {
        // Ten 100 KiB messages: sends grouped under 256 KiB (2 per call: 5 calls of 200 KiB =
        // 4 billed each), receives of 10 (1000 KiB = 16 billed), one delete call.
        let ms: Vec<_> = (0..10).map(|_| msg(100 * 1024)).collect();
        assert_eq!(billed_requests(&ms, 256 * 1024), 5 * 4 + 16 + 1);
        // Small messages: one billed request per call of 10.
        let ms: Vec<_> = (0..20).map(|_| msg(1000)).collect();
        assert_eq!(billed_requests(&ms, 256 * 1024), 2 + 2 + 2);
    }
}
