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
//! | [`ingest_bench`] | `make bench`'s ingest rows: API receipts/s, billed SQS requests |
//! | [`oracle`] | the end-to-end verdict: acknowledged ⇒ stored once, intact; DLQ only the bad |
//! | [`proxy`] | a TCP proxy that injects latency, refusals, resets and cuts around `COMMIT` |
//! | [`sqs_proxy`] | an HTTP proxy that makes SQS batch calls half-fail inside a 200 |

pub mod gen;
pub mod ingest_bench;
pub mod oracle;
pub mod proxy;
pub mod sqs_proxy;

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
    sluice_aws::sqs_client_with_credentials(
        "us-east-1",
        endpoint,
        aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "sluice-test"),
    )
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
    /// A superuser URL of another cluster than the shared one (e.g. a [`PrivatePostgres`] the
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
            "maxReceiveCount": opts.max_receive_count.to_string(),
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
        let store = sluice_agent::Store::connect_lazy(&cfg.database)?;
        let queue = sluice_agent::Queue::new(
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
        // The endpoint the API was configured with (a test may put a proxy there).
        let client = sqs_client(
            cfg.sqs_endpoint
                .as_deref()
                .unwrap_or(&self.servers.sqs_endpoint),
        );
        let app = sluice_cloud::app(sluice_cloud::state(cfg, client));
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

    /// (visible, in flight, delayed) of a queue, read as the agent's monitor reads it.
    pub async fn depth(&self, queue_url: &str) -> anyhow::Result<(u64, u64, u64)> {
        let queue = sluice_agent::Queue::new(self.sqs.clone(), queue_url.to_owned(), None);
        let d = queue.depth().await?;
        Ok((d.visible, d.in_flight, d.delayed))
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

/// A PostgreSQL cluster of one test's own — on a free port, with its data and socket in a temp
/// dir — that the test may stop and start again (the shared cluster serves every other test
/// running in parallel, so it must stay up). As root, `initdb` and the server run as the
/// unprivileged user `postgres`, like `deploy/local/stack.sh` does (initdb refuses root).
/// Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// `initdb` and start; about a second.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = find_pg_bin().context(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; run: bash deploy/local/stack.sh prereqs",
        )?;
        let as_postgres = is_root().await;
        // Short: a Unix socket path must stay under 108 bytes.
        let dir = std::env::temp_dir().join(format!(
            "sluice-pg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        if as_postgres {
            run_checked(
                tokio::process::Command::new("chown")
                    .arg("postgres:")
                    .arg(&pg.dir),
            )
            .await?;
        }
        let data = pg.dir.join("data");
        run_checked(
            pg.command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
                .args(["--locale=C", "--no-sync"]),
        )
        .await
        .context("initdb")?;
        pg.resume().await?;
        Ok(pg)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server binaries (`pg_ctl`, `pgbench`, …).
    pub fn bin_dir(&self) -> &std::path::Path {
        &self.bin
    }

    /// A superuser URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`pg_ctl stop -m fast`: open connections are cut, as in a crash or a
    /// failover).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.stop_with("fast").await
    }

    /// Stops the server in immediate mode: no shutdown checkpoint, every backend killed
    /// mid-statement, crash recovery on the next start — the closest to pulling the plug.
    pub async fn crash(&self) -> anyhow::Result<()> {
        self.stop_with("immediate").await
    }

    async fn stop_with(&self, mode: &str) -> anyhow::Result<()> {
        run_checked(
            self.command("pg_ctl")
                .args(["stop", "-w", "-m", mode, "-D"])
                .arg(self.dir.join("data")),
        )
        .await
        .with_context(|| format!("pg_ctl stop -m {mode}"))
    }

    /// Starts the server again on the same port; returns once it accepts connections.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        run_checked(
            self.command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .arg("-o")
                .arg(opts),
        )
        .await
        .context("pg_ctl start")
    }

    fn command(&self, tool: &str) -> tokio::process::Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            tokio::process::Command::new(exe)
        };
        cmd.stdin(std::process::Stdio::null());
        cmd
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        let _ = cmd
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn is_root() -> bool {
    match tokio::process::Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

async fn run_checked(cmd: &mut tokio::process::Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The PostgreSQL server binaries' directory, found like `deploy/local/stack.sh` finds it:
/// `pg_config --bindir`, then `/usr/lib/postgresql/*/bin` (highest version first), then `PATH`.
pub fn find_pg_bin() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e
                    .file_name()
                    .to_string_lossy()
                    .split('.')
                    .next()?
                    .parse()
                    .ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|d| {
        d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("postgres").is_file()
    })
}

// ---------------------------------------------------------------------------------------------
// The agent as a separate process (operations tests: its own metrics registry, signals,
// NOTIFY_SOCKET, the `status` and `dlq` commands).

/// A free loopback address (bound, then released: the agent binds it a moment later).
pub fn free_local_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Environment for a `sluice-agent` process: throwaway AWS credentials, no instance metadata.
pub const AGENT_PROCESS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

impl TestEnv {
    /// Writes [`TestEnv::agent_toml`] (with `extra`) to a file in a temp directory of this
    /// test's own, for the `sluice-agent` binary.
    pub fn write_agent_config(&self, file: &str, extra: &str) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(&self.name);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        std::fs::write(&path, self.agent_toml(extra))?;
        Ok(path)
    }

    /// Runs `sluice-agent ARGS` to completion (a CLI command such as `status` or `dlq list`).
    pub async fn agent_cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let out = tokio::process::Command::new(binary("sluice-agent")?)
            .args(args)
            .envs(AGENT_PROCESS_ENV.iter().copied())
            .env_remove("SLUICE_CONFIG")
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .with_context(|| format!("sluice-agent {args:?} did not finish"))?
            .with_context(|| format!("running sluice-agent {args:?}"))
    }

    /// Starts `sluice-agent run` as a process with `config`, logging to a file next to it.
    pub fn spawn_agent_process(
        &self,
        config: &std::path::Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        let log = config.with_extension("log");
        let child = tokio::process::Command::new(binary("sluice-agent")?)
            .args(["run", "--config"])
            .arg(config)
            // Not the test runner's own systemd notification socket, unless the test gives one.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(AGENT_PROCESS_ENV.iter().copied())
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting sluice-agent run")?;
        Ok(AgentProcess { child, log })
    }
}

/// A `sluice-agent run` process, killed if dropped.
#[derive(Debug)]
pub struct AgentProcess {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` (`"TERM"`, `"HUP"`, `"STOP"`, …).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        signal(self.child.id().context("the agent already exited")?, sig)
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        self.signal("TERM")?;
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("the agent did not exit within {timeout:?} of SIGTERM"))?
            .context("waiting for the agent")
    }
}

/// Sends signal `sig` (`"TERM"`, `"HUP"`, `"KILL"`, …) to process `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .context("running kill")?
        .success();
    anyhow::ensure!(ok, "kill -{sig} {pid} failed");
    Ok(())
}

/// GETs `http://addr/path`; `None` while nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}
