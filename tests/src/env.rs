//! One test's world ([`TestEnv`]): its own database and queue pair on the shared servers, the
//! agent's configuration for them, what is stored and queued, and the wait for a drain. It owns
//! their teardown ([`crate::teardown`]): dropping it removes them, also when the test fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sluice_agent::config::AgentConfig;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::servers::init_test_logging;
use crate::teardown::{Leftovers, Teardown};
use crate::{create_database, create_queue_pair, servers, sqs_client, wait_for, Servers};

/// Receives before the queue's redrive policy moves a message to the DLQ in tests.
pub const MAX_RECEIVE_COUNT: u32 = 3;

/// One test's world: its own database and its own queue pair, removed when it is dropped
/// (with every other queue named after it, its upload records table and [`TestEnv::dir`]).
#[derive(Debug)]
pub struct TestEnv {
    pub servers: Servers,
    /// Name of this test's database (and the prefix of its queues).
    pub name: String,
    pub database_url: String,
    /// A pool on this test's database (search path: the agent's schema, then public).
    pub pool: PgPool,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
    teardown: Teardown,
}

/// Options for a test environment.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// The main queue's visibility timeout.
    pub visibility_timeout_seconds: u32,
    /// A superuser URL of another cluster than the shared one (e.g. a [`crate::PrivatePostgres`] the
    /// test will stop and start); the test's database is created there.
    pub database_url: Option<String>,
    /// The redrive policy's `maxReceiveCount` (receives before SQS moves a message to the DLQ).
    pub max_receive_count: u32,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            visibility_timeout_seconds: 30,
            database_url: None,
            max_receive_count: MAX_RECEIVE_COUNT,
        }
    }
}

impl TestEnv {
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_options(EnvOptions::default()).await
    }

    pub async fn with_options(opts: EnvOptions) -> anyhow::Result<Self> {
        init_test_logging();
        let mut servers = servers()?;
        if let Some(url) = &opts.database_url {
            servers.database_url = url.clone();
        }
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let name = name[..20].to_owned();
        let database_url = create_database(&servers.database_url, &name, false).await?;
        let teardown = Teardown::new(Leftovers {
            name: name.clone(),
            admin_url: servers.database_url.clone(),
            endpoint: servers.sqs_endpoint.clone(),
            dir: None,
            table: None,
        });
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET search_path = sluice, public")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect(&database_url)
            .await
            .context("connecting to the test database")?;

        let sqs = sqs_client(&servers.sqs_endpoint);
        let queues = create_queue_pair(
            &sqs,
            &name,
            opts.visibility_timeout_seconds,
            opts.max_receive_count,
        )
        .await?;
        let mut env = Self {
            servers,
            name,
            database_url,
            pool,
            sqs,
            queue_url: queues.queue_url,
            dlq_url: queues.dlq_url,
            teardown,
        };
        let (dir, table) = (env.dir(), env.status_table());
        env.teardown.also(dir, table);
        Ok(env)
    }

    /// An agent configuration for this environment, with `extra` TOML lines appended to the
    /// sections (e.g. `[throttle]\nrows_per_second = 100`). Metrics listen on port 0.
    pub fn agent_toml(&self, extra: &str) -> String {
        let mut sections: Vec<(String, Vec<String>)> = vec![
            (
                "queue".into(),
                vec![
                    format!("url = {:?}", self.queue_url),
                    format!("dead_letter_url = {:?}", self.dlq_url),
                    "region = \"us-east-1\"".into(),
                    format!("endpoint = {:?}", self.servers.sqs_endpoint),
                    "wait_seconds = 1".into(),
                    "visibility_timeout_seconds = 30".into(),
                ],
            ),
            (
                "database".into(),
                vec![format!("url = {:?}", self.database_url)],
            ),
            (
                "throttle".into(),
                vec!["rows_per_second = 100000".into(), "burst = 100000".into()],
            ),
            (
                "batch".into(),
                vec!["max_rows = 500".into(), "max_wait_ms = 50".into()],
            ),
            ("server".into(), vec!["listen = \"127.0.0.1:0\"".into()]),
            ("shutdown".into(), vec!["grace_seconds = 10".into()]),
        ];
        // Later keys for the same section replace earlier ones.
        let mut current: Option<usize> = None;
        for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(sec) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(match sections.iter().position(|(n, _)| n == sec) {
                    Some(i) => i,
                    None => {
                        sections.push((sec.to_owned(), Vec::new()));
                        sections.len() - 1
                    }
                });
            } else if let Some(i) = current {
                let key = line.split('=').next().unwrap_or("").trim().to_owned();
                sections[i]
                    .1
                    .retain(|l| l.split('=').next().unwrap_or("").trim() != key);
                sections[i].1.push(line.to_owned());
            }
        }
        let mut out = String::new();
        for (name, lines) in sections {
            out.push_str(&format!("[{name}]\n"));
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    }

    /// Parses [`TestEnv::agent_toml`].
    pub fn agent_config(&self, extra: &str) -> anyhow::Result<AgentConfig> {
        AgentConfig::from_toml_with_env(&self.agent_toml(extra), Vec::new())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// This test's own temp directory: agent configs and logs, removed with the test's other
    /// leftovers (kept when the test panics, to be read).
    pub fn dir(&self) -> PathBuf {
        std::env::temp_dir().join(&self.name)
    }

    /// Writes [`TestEnv::agent_toml`] (with `extra`) to `file` in [`TestEnv::dir`], for the
    /// `sluice-agent` binary.
    pub fn write_agent_config(&self, file: &str, extra: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        std::fs::write(&path, self.agent_toml(extra))?;
        Ok(path)
    }

    /// Receipts stored.
    pub async fn count_receipts(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM sluice.receipts")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Receipts stored, or 0 while the schema does not exist yet.
    pub async fn count_receipts_or_zero(&self) -> i64 {
        self.count_receipts().await.unwrap_or(0)
    }

    /// Creates the agent's schema `sluice` in this test's database, as the agent does at start.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sluice_agent::Store::from_pool(self.pool.clone())
            .migrate("sluice")
            .await
    }

    /// (visible, in flight, delayed) of a queue, read as the agent's monitor reads it.
    pub async fn depth(&self, queue_url: &str) -> anyhow::Result<(u64, u64, u64)> {
        let queue = sluice_agent::Queue::new(self.sqs.clone(), queue_url.to_owned(), None);
        let d = queue.depth().await?;
        Ok((d.visible, d.in_flight, d.delayed))
    }

    /// `Some` once a queue holds nothing, visible, in flight or delayed (for [`wait_for`]).
    pub async fn queue_empty(&self, queue_url: &str) -> Option<()> {
        let (visible, in_flight, delayed) = self.depth(queue_url).await.ok()?;
        (visible + in_flight + delayed == 0).then_some(())
    }

    /// Waits up to `timeout` until `expected` receipts are stored and the main queue holds
    /// nothing, visible or not ([`TestEnv::wait_drained_in`] Sluice's own table).
    pub async fn wait_drained(&self, expected: i64, timeout: Duration) -> anyhow::Result<()> {
        self.wait_drained_in(Stored::Receipts, expected, timeout)
            .await
    }

    /// Waits up to `timeout` until `expected` rows are stored in `table` and the main queue
    /// holds nothing, visible or not.
    /// On a time-out the error says what it saw last: the rows stored, the queue's depth
    /// and the DLQ's, so a message moved to the DLQ is told from one still held.
    pub async fn wait_drained_in(
        &self,
        table: Stored,
        expected: i64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let last = std::cell::Cell::new((0, (0, 0, 0)));
        let drained = wait_for(
            timeout,
            &format!("{expected} {} stored and the queue empty", table.noun()),
            || async {
                let stored = table.count(self).await;
                let depth = self.depth(&self.queue_url).await.ok()?;
                last.set((stored, depth));
                (stored >= expected && depth == (0, 0, 0)).then_some(())
            },
        )
        .await;
        let Err(e) = drained else { return Ok(()) };
        let (stored, (visible, in_flight, delayed)) = last.get();
        let dlq = match self.depth(&self.dlq_url).await {
            Ok((v, f, d)) => format!("{}", v + f + d),
            Err(e) => format!("unreadable ({e:#})"),
        };
        Err(e.context(format!(
            "last seen: {stored} stored; queue {visible} visible, {in_flight} in flight, \
             {delayed} delayed; DLQ {dlq} messages"
        )))
    }

    /// Sends a raw body to the main queue, with optional message attributes.
    pub async fn send_raw(&self, body: &str, attrs: &[(&str, &str)]) -> anyhow::Result<()> {
        self.send_raw_to(&self.queue_url, body, attrs).await
    }

    /// Sends a raw body to any queue (e.g. the DLQ), with optional string attributes.
    pub async fn send_raw_to(
        &self,
        queue_url: &str,
        body: &str,
        attrs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut req = self
            .sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body);
        for (k, v) in attrs {
            req = req.message_attributes(
                *k,
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(*v)
                    .build()?,
            );
        }
        req.send().await?;
        Ok(())
    }

    /// How often each message visible on the main queue had been received before this look:
    /// it receives each once (hidden for 60 s, so none is seen twice), then makes them all
    /// visible again. The look itself counts as one more receive of each.
    pub async fn peek_receive_counts(&self) -> anyhow::Result<Vec<u32>> {
        let mut counts = Vec::new();
        let mut handles = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
                )
                .send()
                .await?;
            let msgs = got.messages.unwrap_or_default();
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                let count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                    })
                    .context("a message without ApproximateReceiveCount")?
                    .parse::<u32>()?;
                counts.push(count.saturating_sub(1));
                handles.extend(m.receipt_handle);
            }
        }
        for h in handles {
            self.sqs
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(h)
                .visibility_timeout(0)
                .send()
                .await?;
        }
        Ok(counts)
    }

    /// Drains the DLQ: every message's body and attributes.
    pub async fn drain_dlq(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await?;
            let msgs = got.messages.unwrap_or_default();
            if msgs.is_empty() {
                return Ok(out);
            }
            for m in msgs {
                let attrs = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
                    .collect();
                out.push(DeadLetter {
                    body: m.body.unwrap_or_default(),
                    attributes: attrs,
                });
                if let Some(h) = m.receipt_handle {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.dlq_url)
                        .receipt_handle(h)
                        .send()
                        .await?;
                }
            }
        }
    }

    /// Removes what [`TestEnv`] owns now rather than when it is dropped (for a program that goes
    /// on after one test's world, such as the bench).
    pub async fn cleanup(mut self) {
        self.pool.close().await;
        self.teardown.now().await;
    }
}

/// Where a drain's receipts end, for [`TestEnv::wait_drained_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Sluice's own `sluice.receipts` (`target.kind = "sluice"`).
    Receipts,
    /// The example customer's `expenses.expenses`, written by their procedure
    /// ([`crate::expenses`]).
    Expenses,
}

impl Stored {
    fn noun(self) -> &'static str {
        match self {
            Stored::Receipts => "receipts",
            Stored::Expenses => "expenses",
        }
    }

    /// Rows stored so far (0 while the table does not exist).
    async fn count(self, env: &TestEnv) -> i64 {
        match self {
            Stored::Receipts => env.count_receipts_or_zero().await,
            Stored::Expenses => crate::expenses::stored(&env.pool).await,
        }
    }
}

/// A message read from the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: String,
    pub attributes: HashMap<String, String>,
}
