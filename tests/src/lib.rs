//! Sluice test harness: real PostgreSQL and a real SQS-API server (moto), each test with its
//! own database and its own queues, the ingest API and the agent running in-process on port 0,
//! and typed helpers to drive and inspect them.
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
//! | (root) | [`Servers`], [`TestEnv`]: per-test database and queues, agent and API handles |
//! | [`gen`] | realistic receipts, deterministic from a seed |

pub mod gen;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aws_sdk_sqs::types::QueueAttributeName;
use sluice_agent::config::AgentConfig;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;

/// Where the shared servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// Superuser URL of the cluster (any database).
    pub database_url: String,
    /// The SQS-API endpoint.
    pub sqs_endpoint: String,
}

/// The repository root (the workspace this crate sits in).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

static SERVERS: OnceLock<Result<Servers, String>> = OnceLock::new();

/// The shared servers, started once per process if the environment does not name them.
pub fn servers() -> anyhow::Result<Servers> {
    SERVERS
        .get_or_init(|| discover().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn discover() -> anyhow::Result<Servers> {
    if let (Ok(db), Ok(sqs)) = (
        std::env::var("SLUICE_TEST_DATABASE_URL"),
        std::env::var("SLUICE_TEST_SQS_ENDPOINT"),
    ) {
        return Ok(Servers {
            database_url: db,
            sqs_endpoint: sqs,
        });
    }
    let script = repo_root().join("deploy/local/stack.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("up")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} up failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let vars: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    Ok(Servers {
        database_url: vars
            .get("SLUICE_TEST_DATABASE_URL")
            .context("stack.sh printed no SLUICE_TEST_DATABASE_URL")?
            .to_string(),
        sqs_endpoint: vars
            .get("SLUICE_TEST_SQS_ENDPOINT")
            .context("stack.sh printed no SLUICE_TEST_SQS_ENDPOINT")?
            .to_string(),
    })
}

/// Logs are silent unless `TEST_LOG=1`.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
    }
}

/// An SQS client for the local server, with throwaway credentials.
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "sluice-test",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// Receives before the queue's redrive policy moves a message to the DLQ in tests.
pub const MAX_RECEIVE_COUNT: u32 = 3;

/// One test's world: its own database and its own queue pair.
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
}

/// Options for a test environment.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// The main queue's visibility timeout.
    pub visibility_timeout_seconds: u32,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            visibility_timeout_seconds: 30,
        }
    }
}

impl TestEnv {
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_options(EnvOptions::default()).await
    }

    pub async fn with_options(opts: EnvOptions) -> anyhow::Result<Self> {
        init_test_logging();
        let servers = servers()?;
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let name = name[..20].to_owned();

        let mut admin = sqlx::PgConnection::connect(&servers.database_url)
            .await
            .with_context(|| format!("connecting to {}", servers.database_url))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("creating the test database")?;
        admin.close().await.ok();
        let database_url = with_database(&servers.database_url, &name);
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
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .send()
            .await
            .context("creating the DLQ")?
            .queue_url
            .context("no DLQ url")?;
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .context("no DLQ arn")?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
        });
        let queue_url = sqs
            .create_queue()
            .queue_name(&name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                opts.visibility_timeout_seconds.to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .context("creating the queue")?
            .queue_url
            .context("no queue url")?;
        Ok(Self {
            servers,
            name,
            database_url,
            pool,
            sqs,
            queue_url,
            dlq_url,
        })
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

    /// Starts an agent in this process with the test's SQS credentials.
    pub async fn start_agent(&self, cfg: AgentConfig) -> anyhow::Result<AgentHandle> {
        let store = sluice_agent::store::Store::connect_lazy(&cfg.database)?;
        let queue = sluice_agent::sqs::Queue::new(
            sqs_client(&self.servers.sqs_endpoint),
            cfg.queue.url.clone(),
            cfg.queue.dead_letter_url.clone(),
        );
        let shutdown = CancellationToken::new();
        let running = sluice_agent::start(
            cfg,
            sluice_agent::Clients { store, queue },
            shutdown.clone(),
        )
        .await?;
        Ok(AgentHandle {
            server_addr: running.server_addr,
            shutdown,
            running: Some(running),
        })
    }

    /// Starts the ingest API in this process on port 0, with `vars` as its environment
    /// (`SLUICE_QUEUE_URL` and `SLUICE_SQS_ENDPOINT` are filled in).
    pub async fn start_ingest(&self, vars: &[(&str, &str)]) -> anyhow::Result<IngestHandle> {
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.entry("SLUICE_QUEUE_URL".into())
            .or_insert_with(|| self.queue_url.clone());
        env.entry("SLUICE_SQS_ENDPOINT".into())
            .or_insert_with(|| self.servers.sqs_endpoint.clone());
        let cfg = sluice_cloud::IngestConfig::from_lookup(|k| env.get(k).cloned())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = sluice_cloud::app(sluice_cloud::state(
            cfg,
            sqs_client(&self.servers.sqs_endpoint),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum_serve(listener, app, s).await;
        });
        Ok(IngestHandle {
            addr,
            http: reqwest::Client::new(),
            _stop: stop.drop_guard(),
        })
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

    /// (visible, in flight, delayed) of a queue.
    pub async fn depth(&self, queue_url: &str) -> anyhow::Result<(u64, u64, u64)> {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        let get =
            |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0u64);
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }

    /// Sends a raw body to the main queue, with optional message attributes.
    pub async fn send_raw(&self, body: &str, attrs: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut req = self
            .sqs
            .send_message()
            .queue_url(&self.queue_url)
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

    /// Drops the test database (best effort; a failing test leaves it for inspection).
    pub async fn cleanup(self) {
        self.pool.close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.servers.database_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
        }
        let _ = self
            .sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await;
        let _ = self
            .sqs
            .delete_queue()
            .queue_url(&self.dlq_url)
            .send()
            .await;
    }
}

async fn axum_serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// A message read from the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: String,
    pub attributes: HashMap<String, String>,
}

/// A running in-process agent.
#[derive(Debug)]
pub struct AgentHandle {
    pub server_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    running: Option<sluice_agent::RunningAgent>,
}

impl AgentHandle {
    /// Cancels (as SIGTERM does) and waits for the agent to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.running.take() {
            Some(r) => r.wait().await,
            None => Ok(()),
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running in-process ingest API.
#[derive(Debug)]
pub struct IngestHandle {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl IngestHandle {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs `{"receipts": …}` as JSON.
    pub async fn upload_json(
        &self,
        receipts: &[serde_json::Value],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let body = serde_json::to_vec(&serde_json::json!({ "receipts": receipts }))?;
        self.post(body, "application/json", &[]).await
    }

    /// POSTs a raw body with a content type and extra headers; returns status and JSON body.
    pub async fn post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = self
            .http
            .post(self.url("/v1/batches"))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, json))
    }
}

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
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `postgres://…/postgres` → `postgres://…/{db}` (keeps any query string).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Path of a workspace binary (`sluice-agent`, `sluice-ingest`) built next to the running
/// executable's target directory. `make test` builds them first (`cargo build --bins`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    // target/debug/deps/<test>-<hash> or target/debug/<bin>: look in each ancestor.
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "binary {name} not found near {}; run: cargo build --workspace --bins",
        exe.display()
    )
}
