//! Sluice test harness: real PostgreSQL and a real SQS-API server (moto), each test with its
//! own database and its own queues, the ingest API and the agent running in-process on port 0
//! or as the real `sluice-agent` binary, and typed helpers to drive and inspect them.
//!
//! # Servers
//!
//! `SLUICE_TEST_DATABASE_URL` (a superuser URL) and `SLUICE_TEST_SQS_ENDPOINT` point the harness
//! at servers already running. When they are unset it runs `deploy/local/stack.sh up`, which
//! starts (or reuses) a throwaway cluster and moto under `.sluice-dev/stack`; `make test` does
//! that once before the suite.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | `servers` | where the shared servers are, the workspace's binaries, free ports |
//! | `env` | [`TestEnv`]: one test's database and queue pair, the agent's config, drain waits |
//! | `teardown` | what a test made, removed once when its [`TestEnv`] drops, also on a panic |
//! | `agent` | the agent under test: in-process ([`AgentHandle`]) or its binary ([`AgentProcess`]) |
//! | `process` | [`ChildProcess`]: a child with a log file, signalled with kill(2) |
//! | `metrics` | [`Metrics`]: Prometheus text parsed once, queried by name and labels |
//! | `notify` | [`NotifySocket`]: a `NOTIFY_SOCKET` the test reads systemd notifications from |
//! | `ingest` | [`IngestHandle`]: the ingest API in-process |
//! | `records` | the ingest's upload records table (DynamoDB on the local server) |
//! | `ingest_process` | [`IngestProcess`]: the real `sluice-ingest` binary |
//! | `photos` | [`PhotoBucket`]: a photo bucket and its events queue, the ingest holding photos; receipts carrying photos, generated JPEGs, the presigned PUTs |
//! | `status` | the status queue, the status endpoint polled, a [`WebhookReceiver`], signatures |
//! | `sqs` | the SQS client for the local server and queue pairs with a redrive policy |
//! | `container` | [`Container`]: a Debian container whose PID 1 is systemd (`make test-systemd`) |
//! | `postgres` | databases on a cluster, and [`PrivatePostgres`], a cluster a test may stop |
//! | [`gen`] | realistic receipts, deterministic from a seed |
//! | [`expenses`] | the example customer schema and procedure of `deploy/examples/expenses/` |
//! | [`large`] | the largest valid receipts, sent straight to a queue as a backlog |
//! | [`ingest_bench`] | `make bench`'s ingest rows: API receipts/s, billed SQS requests |
//! | [`oracle`] | the end-to-end verdict: acknowledged ⇒ stored once, intact; DLQ only the bad |
//! | [`proxy`] | a TCP proxy that injects latency, refusals, resets and cuts around `COMMIT` |
//! | [`sqs_proxy`] | an HTTP proxy that makes SQS batch calls half-fail inside a 200 |
//! | [`shared_budget`] | agents sharing one budget, their rate together by the database's clock |

mod agent;
mod container;
mod env;
mod ingest;
mod ingest_process;
mod metrics;
mod notify;
mod postgres;
mod process;
mod records;
mod servers;
mod sqs;
mod status;
mod teardown;

pub mod expenses;
pub mod gen;
pub mod ingest_bench;
pub mod large;
pub mod oracle;
pub mod photos;
pub mod proxy;
pub mod shared_budget;
pub mod sqs_proxy;

use std::time::{Duration, Instant};

pub use agent::{AgentHandle, AgentProcess, AGENT_PROCESS_ENV};
pub use container::{container_root, Container, RootTree};
pub use env::{DeadLetter, EnvOptions, Stored, TestEnv, MAX_RECEIVE_COUNT};
pub use ingest::IngestHandle;
pub use ingest_process::IngestProcess;
pub use metrics::Metrics;
pub use nix::sys::signal::Signal;
pub use notify::NotifySocket;
pub use photos::{s3_client, PhotoBucket};
pub use postgres::{create_database, with_database, PrivatePostgres};
pub use process::{signal, ChildProcess, Launch};
pub use records::dynamodb_client;
pub use servers::{binary, free_local_addr, repo_root, servers, Servers};
pub use sqs::{create_queue_pair, sqs_client, QueuePair};
pub use status::{
    accept_upload, assert_signed, block_merchant, is_final, Delivery, WebhookReceiver,
    WEBHOOK_SECRET,
};

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with the last
/// state described by `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
