//! The agent's configuration: the serde types that mirror `agent.toml`, section by section,
//! each with its defaults written once.
//!
//! - `load`: the TOML file, then `SLUICE__SECTION__KEY` environment overrides, and the errors
//!   that name each full key (and the variable that set it);
//! - `check`: one `check` per section plus the checks across sections, every problem listed
//!   at once;
//! - `target`: `[target]`, Sluice's own tables or the customer's procedure;
//! - `schedule`: `[[throttle.schedule]]` parsed (weekdays, local time ranges) and matched
//!   against the local time.
//!
//! These types are *what the operator wrote*. The runtime pieces (`limiter`, `store`, `consumer`)
//! take plain values out of them once validation has passed.

mod check;
mod load;
mod photos;
mod report;
pub(crate) mod schedule;
pub mod secret;
mod target;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{ENV_PREFIX, ENV_SEPARATOR};
pub use photos::{PhotoStore, PhotosConfig, PHOTO_BURST_BYTES};
pub use report::StatusConfig;
pub use secret::{redact_url, DatabaseUrl};
pub use target::{ProcedureName, Target, TargetConfig, TargetKind};

/// The whole `agent.toml`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    pub queue: QueueConfig,
    pub database: DatabaseConfig,
    pub throttle: ThrottleConfig,
    pub batch: BatchConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub write: WriteConfig,
    pub status: StatusConfig,
    pub target: TargetConfig,
    /// `[photos]`: where the photos the bridge carries are fetched from and stored. Absent:
    /// a chunk holding a carried photo is released, never stored without it
    /// (`photos_not_configured`).
    pub photos: Option<PhotosConfig>,
}

/// `[queue]`: where messages come from and where the undecodable ones go. Required: `url` has
/// no default, so the section has none either.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub url: String,
    /// Where the agent puts messages it cannot use, with the reason as a message attribute.
    /// Without it, a poison message is left alone and the queue's own redrive policy moves it
    /// after `maxReceiveCount` receives (the reason is then only in the agent's log).
    #[serde(default)]
    pub dead_letter_url: Option<String>,
    /// AWS region; when absent, the standard AWS chain (`AWS_REGION`, profile) decides.
    #[serde(default)]
    pub region: Option<String>,
    /// An SQS-compatible endpoint (a local SQS-API server, a VPC endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_pollers")]
    pub pollers: u16,
    #[serde(default = "default_wait_seconds")]
    pub wait_seconds: u8,
    #[serde(default = "default_visibility_timeout_seconds")]
    pub visibility_timeout_seconds: u32,
}

const fn default_pollers() -> u16 {
    2
}
/// 20 s is SQS's longest long poll: the fewest empty receives, so the fewest billed requests.
const fn default_wait_seconds() -> u8 {
    20
}
const fn default_visibility_timeout_seconds() -> u32 {
    60
}

/// `[database]`: the on-premise PostgreSQL. Required: `url` has no default.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Shown (logs, `check-config`, errors) only with its password hidden.
    pub url: DatabaseUrl,
    /// A file holding the password (a systemd credential); trailing newline ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Only from the environment (`SLUICE__DATABASE__PASSWORD`); never in the TOML file.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u32,
    /// Apply pending migrations when `run` starts. Set to false where the writer role may not
    /// create tables, and run `sluice-agent migrate` with an owner role instead.
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
    /// `statement_timeout` of every write transaction (SET LOCAL): a statement that runs
    /// longer (a lock wait included) is cancelled and its batch retried with backoff. Below
    /// the visibility timeout, so a stuck write is seen long before its messages could lapse.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// `lock_timeout` of every write transaction: how long one statement waits for a lock (a
    /// DBA's `LOCK TABLE`, a long migration) before it is cancelled and retried.
    #[serde(default = "default_lock_timeout_ms")]
    pub lock_timeout_ms: u64,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .finish()
    }
}

fn default_schema() -> String {
    "sluice".to_owned()
}
/// Two connections: one transaction in flight while the next batch is prepared. The point of
/// the agent is to take little from the database.
const fn default_max_connections() -> u32 {
    2
}
pub(crate) const fn default_connect_timeout_seconds() -> u32 {
    5
}
/// Five seconds: a batch of 500 receipts commits in well under a second on a healthy
/// database, and the smallest visibility timeout allowed is 10 s.
pub(crate) const fn default_statement_timeout_ms() -> u64 {
    5_000
}
/// Two seconds: long enough to ride out a row lock held by a short transaction, short enough
/// that a table lock shows within seconds.
pub(crate) const fn default_lock_timeout_ms() -> u64 {
    2_000
}
const fn default_true() -> bool {
    true
}

/// `[throttle]`: how fast rows may reach the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    pub mode: ThrottleMode,
    /// Receipts per second (the token bucket's refill rate).
    pub rows_per_second: u32,
    /// Receipts that may go at once after a quiet spell; must be ≥ `batch.max_rows`.
    pub burst: u32,
    /// Transactions in flight at once (each holds one pool connection).
    pub max_concurrent_transactions: u32,
    /// Adaptive mode: the rate never goes below this.
    pub min_rows_per_second: u32,
    /// Adaptive mode: a mean commit time above this (over one adjustment interval) backs off.
    pub target_commit_ms: u64,
    /// Adaptive mode: back off while more client backends than this are active
    /// (`pg_stat_activity`, polled every interval). Unset: not polled.
    pub max_active_backends: Option<u32>,
    /// Adaptive mode: rows/s added per healthy interval. Unset: a twentieth of the ceiling,
    /// so the climb from the floor to the ceiling takes about twenty intervals.
    pub increase_rows_per_second: Option<u32>,
    /// Adaptive mode: the rate is multiplied by this on congestion (0 < f < 1); a breach of
    /// the foreground probe cuts in proportion to how far it is over, this deep at most.
    pub decrease_factor: f64,
    /// Adaptive mode: how often the rate is reconsidered.
    pub adjust_interval_ms: u64,
    /// Adaptive mode: the foreground probe, one read-only statement run on its own connection
    /// several times a second; what the database's other users see (see `throttle::probe`).
    pub probe_sql: String,
    /// Adaptive mode: back off while the probe's `probe_quantile` is above this × its
    /// baseline (> 1).
    pub target_latency_ratio: f64,
    /// Adaptive mode: the quantile of the probe's latency judged and learned, 0.5 to 0.99.
    pub probe_quantile: f64,
    /// Adaptive mode: how often the probe runs.
    pub probe_interval_ms: u64,
    /// Adaptive mode: the probe's baseline is learned again (writes paused a few seconds)
    /// when none was learned while idle for this long; 0: learn only while idle.
    pub baseline_relearn_minutes: u32,
    /// `[[throttle.schedule]]`: rates by weekday and local time; first match wins.
    pub schedule: Vec<ScheduleWindowConfig>,
    /// The share of the database's time the agents' transactions may take: seconds of
    /// transaction per second (0.2: 200 ms a second), the total across agents, in either
    /// mode. Receipts per second then follow the database's speed. Unset: not capped.
    #[serde(deserialize_with = "a_number_when_set")]
    pub max_database_share: Option<f64>,
    /// Photo bytes fetched from S3 per second (`[photos]`); unset: not limited. The bucket
    /// holds at least one largest photo (20 MiB), so any photo can pass.
    pub photo_bytes_per_second: Option<u64>,
}

/// An optional number that, once its key is written, must be a number: the TOML reader
/// turns `nan` (and an environment value of `nan`) into "no value", which would otherwise
/// read as "unset" and silently lift a cap the operator meant to set.
fn a_number_when_set<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom(
            "is not a number (nan is not one); write a number such as 0.2, or remove the key",
        )),
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            mode: ThrottleMode::default(),
            rows_per_second: 500,
            burst: 1000,
            max_concurrent_transactions: 1,
            min_rows_per_second: 50,
            target_commit_ms: 250,
            max_active_backends: None,
            increase_rows_per_second: None,
            // Halving: the classic AIMD back-off, quick to relieve a database in trouble.
            decrease_factor: 0.5,
            // One second is several commits at any useful rate, so the mean latency means
            // something, and still quick to react.
            adjust_interval_ms: 1000,
            // A round trip whose commit waits for the WAL flush, as every writer's does: it
            // writes one small WAL record (a transactional logical-decoding message, no row),
            // which a read-only transaction may do. A bare transaction id does not wait: a
            // commit that wrote no WAL before it is flushed asynchronously (100 of them made
            // one fsync, 100 of these made 100). An operator gives a real read of their
            // application to see their tables too, keeping the message in it.
            probe_sql: "SELECT pg_logical_emit_message(true, 'sluice-probe', '')".to_owned(),
            target_latency_ratio: 1.5,
            // The p99: a foreground's p99 is what the target protects, and a probe's p95
            // barely moves while a foreground's p99 triples (BENCHMARKS.md, "what the probe
            // sees").
            probe_quantile: 0.99,
            // Twenty a second: the p99 is judged over the last 500 samples (25 s) and learned
            // over five-second windows of 100; a trivial read at this pace is next to nothing
            // for the database.
            probe_interval_ms: 50,
            baseline_relearn_minutes: 10,
            schedule: Vec::new(),
            max_database_share: None,
            photo_bytes_per_second: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThrottleMode {
    /// A token bucket at `rows_per_second` (or the matching schedule window's rate).
    #[default]
    Fixed,
    /// AIMD between `min_rows_per_second` and that rate, from the database's signals.
    Adaptive,
}

/// One `[[throttle.schedule]]` window, as written. `rows_per_second` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleWindowConfig {
    /// `"Mon-Fri"`, `"Sat,Sun"`; absent: every day.
    #[serde(default)]
    pub days: Option<String>,
    /// `"08:00-18:00"`, `"22:00-06:00"` (overnight); absent: all day.
    #[serde(default)]
    pub hours: Option<String>,
    /// The rate while the window matches (the ceiling in adaptive mode).
    pub rows_per_second: u32,
}

/// `[batch]`: how messages are grouped into transactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    pub max_rows: u32,
    pub max_wait_ms: u64,
    /// Receipts held in memory at once (received, not yet written). Receiving pauses at the cap,
    /// so memory stays bounded whatever the backlog.
    pub max_in_flight_rows: u32,
    /// Decoded bytes held in memory at once: the JSON of every message received and not yet
    /// settled (batched, being written), decompressed. Receiving pauses at the cap. At least
    /// [`MIN_IN_FLIGHT_BYTES`], so the largest message the agent decodes always fits.
    pub max_in_flight_bytes: u64,
}

/// The smallest `batch.max_in_flight_bytes`: the largest message body the agent decodes
/// (16 MiB, the protocol's cap), so any valid message can be admitted.
pub const MIN_IN_FLIGHT_BYTES: u64 = sluice_protocol::envelope::MAX_DECODED_BYTES as u64;

/// The largest `batch.max_in_flight_bytes`: 1 TiB, far beyond any host; a larger figure is a
/// typo.
pub const MAX_IN_FLIGHT_BYTES: u64 = 1 << 40;

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 500,
            max_wait_ms: 250,
            max_in_flight_rows: 10_000,
            // 64 MiB: four of the largest messages, or about 300 messages of 200 KiB, enough to
            // keep batches full while staying small next to any database host.
            max_in_flight_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[server]`: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen; `""` turns the endpoint off.
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9187".to_owned(),
        }
    }
}

impl ServerConfig {
    /// The parsed address, `None` when the endpoint is off. Validation has checked it parses.
    pub fn addr(&self) -> Option<SocketAddr> {
        if self.listen.is_empty() {
            None
        } else {
            self.listen.parse().ok()
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, or `sluice_agent=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

/// `[shutdown]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM: how long in-flight transactions may take before what is left is released
    /// back to the queue (visibility 0). Keep the unit's `TimeoutStopSec` above this.
    pub grace_seconds: u32,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_seconds: 30 }
    }
}

/// `[write]`: what a write does with a receipt whose `receipt_id` is already stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteConfig {
    /// A receipt whose id is stored with other content (another fingerprint).
    pub on_conflict: OnConflict,
}

/// `write.on_conflict`. The same content again is always a quiet duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// The stored row stays; the incoming version goes to the dead-letter queue with reason
    /// `conflict` and both fingerprints.
    #[default]
    Reject,
    /// The incoming version replaces the row and its items, in the same transaction.
    Update,
    /// The stored row stays and the incoming version is counted as a duplicate.
    Ignore,
}

/// Every problem found in a configuration, listed at once.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problems):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

impl AgentConfig {
    /// The effective configuration as TOML-like JSON with secrets removed, for the startup log
    /// line and `check-config`: the password is never serialized, and the URL serializes with
    /// its password hidden ([`DatabaseUrl`]).
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl DatabaseConfig {
    /// Registers every password this section gives (in the URL, from the environment) with
    /// [`secret::register`], so that any text leaving the process is scrubbed of them. The
    /// password file is registered when it is read.
    pub fn register_secrets(&self) {
        for pw in self.url.passwords() {
            secret::register(&pw);
        }
        if let Some(pw) = &self.password {
            secret::register(pw);
        }
    }
}

/// A PostgreSQL identifier that needs no quoting.
pub fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
