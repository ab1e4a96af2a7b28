//! The demo world, recreated on every run: database `sluice_demo`, queues `sluice-demo`,
//! `sluice-demo-dlq` and `sluice-demo-status`, the upload records table, the photo bucket
//! `sluice-demo-photos` with its events queue `sluice-demo-photo-events`, the agent's
//! configuration for them, and what they hold.

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::{
    Args, BATCH_MAX_ROWS, DB_NAME, DLQ_NAME, MAX_RECEIVE_COUNT, QUEUE_NAME, STATUS_QUEUE_NAME,
};

/// The ingest's upload records (Idempotency-Key binding, status, photo verdicts).
const STATUS_TABLE: &str = "sluice-demo-uploads";

/// The main queue's visibility timeout, and the agent's.
const VISIBILITY_TIMEOUT_SECONDS: u32 = 60;

/// The demo's database and queues, recreated empty.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) database_url: String,
    pub(crate) pool: PgPool,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) sqs_endpoint: String,
    pub(crate) queue_url: String,
    pub(crate) dlq_url: String,
    /// The agent's chunk reports, folded by the ingest into the upload's status.
    pub(crate) status_queue_url: String,
    /// Where receipt photos are uploaded, checked and fetched from.
    pub(crate) photos: sluice_e2e::photos::PhotoBucket,
}

impl World {
    pub(crate) async fn reset(servers: &sluice_e2e::Servers) -> anyhow::Result<Self> {
        let database_url = sluice_e2e::create_database(&servers.database_url, DB_NAME, true)
            .await
            .context("resetting the demo database")?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database_url)
            .await
            .context("connecting to the demo database")?;

        let sqs = sluice_e2e::sqs_client(&servers.sqs_endpoint);
        // Delete first: creating a queue that exists with other attributes is an error.
        for name in [QUEUE_NAME, DLQ_NAME, STATUS_QUEUE_NAME] {
            if let Ok(found) = sqs.get_queue_url().queue_name(name).send().await {
                if let Some(url) = found.queue_url {
                    sqs.delete_queue()
                        .queue_url(&url)
                        .send()
                        .await
                        .with_context(|| format!("deleting queue {name}"))?;
                }
            }
        }
        let queues = sluice_e2e::create_queue_pair(
            &sqs,
            QUEUE_NAME,
            VISIBILITY_TIMEOUT_SECONDS,
            MAX_RECEIVE_COUNT,
        )
        .await?;
        // The same receipts make the same batch ids: records of an earlier run would make
        // this upload a replay of it.
        let dynamodb = sluice_e2e::dynamodb_client(&servers.sqs_endpoint);
        if let Err(e) = dynamodb
            .delete_table()
            .table_name(STATUS_TABLE)
            .send()
            .await
        {
            if !e
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception())
            {
                return Err(anyhow::Error::new(e).context("deleting the upload records table"));
            }
        }
        let photos =
            sluice_e2e::photos::PhotoBucket::create(&sqs, &servers.sqs_endpoint, QUEUE_NAME)
                .await
                .context("creating the photo bucket")?;
        photos.empty().await.context("emptying the photo bucket")?;
        sqs.purge_queue()
            .queue_url(&photos.events_url)
            .send()
            .await
            .context("purging the photo events queue")?;
        let status_queue_url = sqs
            .create_queue()
            .queue_name(STATUS_QUEUE_NAME)
            .send()
            .await
            .context("creating the status queue")?
            .queue_url
            .context("the status queue has no URL")?;
        Ok(Self {
            database_url,
            pool,
            sqs,
            sqs_endpoint: servers.sqs_endpoint.clone(),
            queue_url: queues.queue_url,
            dlq_url: queues.dlq_url,
            status_queue_url,
            photos,
        })
    }

    /// Environment for both children: throwaway credentials for the local SQS-API server.
    pub(crate) fn child_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            // Their logs go to files: no colour codes.
            ("NO_COLOR", "1"),
            ("SLUICE_QUEUE_URL", &self.queue_url),
            ("SLUICE_SQS_ENDPOINT", &self.sqs_endpoint),
            // The ingest's upload records (Idempotency-Key binding) on the same local server.
            ("SLUICE_STATUS_TABLE", STATUS_TABLE),
            ("SLUICE_DYNAMODB_ENDPOINT", &self.sqs_endpoint),
            // The ingest folds the agent's reports into that table.
            ("SLUICE_STATUS_QUEUE_URL", &self.status_queue_url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        // The ingest's photos: URLs valid 5 minutes, the missing looked for every 10 s.
        env.extend(self.photos.ingest_vars(300, 10));
        env
    }

    /// Photos stored with their receipts: (receipt id, data).
    pub(crate) async fn stored_photos(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        sqlx::query_as("SELECT receipt_id::text, data FROM sluice.receipt_photos")
            .fetch_all(&self.pool)
            .await
            .context("reading sluice.receipt_photos")
    }

    /// Receipts stored, or `None` while the agent has not created its schema yet.
    pub(crate) async fn stored(&self) -> Option<u64> {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sluice.receipts")
            .fetch_one(&self.pool)
            .await
            .ok()
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    /// Messages in a queue: (visible, in flight, delayed).
    pub(crate) async fn depth(&self, queue_url: &str) -> anyhow::Result<(u64, u64, u64)> {
        let queue = sluice_agent::Queue::new(self.sqs.clone(), queue_url.to_owned(), None);
        let d = queue.depth().await?;
        Ok((d.visible, d.in_flight, d.delayed))
    }
}

/// The agent's configuration for this run (format: `sluice_agent::config`).
pub(crate) fn agent_toml(args: &Args, world: &World, listen: &str) -> String {
    format!(
        r#"# Written by sluice-demo for one run; recreated every time.
[queue]
url = {queue:?}
dead_letter_url = {dlq:?}
endpoint = {endpoint:?}
region = "us-east-1"
pollers = 2
wait_seconds = 2
visibility_timeout_seconds = {VISIBILITY_TIMEOUT_SECONDS}

[database]
url = {db:?}

[throttle]
rows_per_second = {rate}
burst = {burst}

[batch]
max_rows = {BATCH_MAX_ROWS}
max_wait_ms = 250

[status]
queue_url = {status:?}

[server]
listen = {listen:?}

{photos}

[log]
format = "pretty"
level = "warn"
"#,
        queue = world.queue_url,
        dlq = world.dlq_url,
        status = world.status_queue_url,
        endpoint = world.sqs_endpoint,
        db = world.database_url,
        rate = args.rate,
        burst = args.burst(),
        photos = world
            .photos
            .agent_section(&world.sqs_endpoint, "store = \"database\""),
    )
}
