//! Where things are: the shared PostgreSQL and SQS-API servers (found once per process), the
//! repository root, the workspace's binaries, free loopback ports, and the tests' logging.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};

/// Where the shared servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// Superuser URL of the cluster (any database).
    pub database_url: String,
    /// The SQS-API endpoint.
    pub sqs_endpoint: String,
}

impl Servers {
    /// The SQS-API server's address (for a fault proxy in front of it).
    pub fn sqs_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.sqs_endpoint.trim_start_matches("http://").parse()?)
    }
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
pub(crate) fn init_test_logging() {
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

/// A free loopback address (bound, then released: a child process binds it a moment later).
pub fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
