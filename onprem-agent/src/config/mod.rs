//! The agent's configuration: the serde types that mirror `agent.toml`, the layered loader
//! (TOML file, then `SLUICE__SECTION__KEY` environment overrides), and validation that reports
//! every problem at once.
//!
//! These types are *what the operator wrote*. The runtime pieces (`limiter`, `store`, `consumer`)
//! take plain values out of them once validation has passed.

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `SLUICE__THROTTLE__ROWS_PER_SECOND=800`.
pub const ENV_PREFIX: &str = "SLUICE";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";

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
    pub url: String,
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
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("migrate_on_start", &self.migrate_on_start)
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
const fn default_connect_timeout_seconds() -> u32 {
    5
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
    /// Adaptive mode: the rate is multiplied by this on congestion (0 < f < 1).
    pub decrease_factor: f64,
    /// Adaptive mode: how often the rate is reconsidered.
    pub adjust_interval_ms: u64,
    /// `[[throttle.schedule]]`: rates by weekday and local time; first match wins.
    pub schedule: Vec<ScheduleWindowConfig>,
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
            schedule: Vec::new(),
        }
    }
}

impl ThrottleConfig {
    /// The schedule, parsed; or every problem, each with its key.
    pub fn parsed_schedule(&self) -> Result<crate::throttle::schedule::Schedule, Vec<String>> {
        use crate::throttle::schedule::{Days, Hours, Schedule, Window};
        let mut problems = Vec::new();
        let mut windows = Vec::new();
        for (i, w) in self.schedule.iter().enumerate() {
            let key = format!("throttle.schedule[{i}]");
            let days = match w.days.as_deref().map(Days::parse) {
                None => Some(Days::ALL),
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    problems.push(format!("{key}.days: {e}"));
                    None
                }
            };
            let hours = match w.hours.as_deref().map(Hours::parse) {
                None => Some(Hours::ALL_DAY),
                Some(Ok(h)) => Some(h),
                Some(Err(e)) => {
                    problems.push(format!("{key}.hours: {e}"));
                    None
                }
            };
            if w.rows_per_second == 0 {
                problems.push(format!("{key}.rows_per_second: must be at least 1"));
            }
            if let (Some(days), Some(hours)) = (days, hours) {
                windows.push(Window {
                    days,
                    hours,
                    rows_per_second: w.rows_per_second,
                });
            }
        }
        if problems.is_empty() {
            Ok(Schedule { windows })
        } else {
            Err(problems)
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
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 500,
            max_wait_ms: 250,
            max_in_flight_rows: 10_000,
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

const SECTIONS: &[&str] = &[
    "queue", "database", "throttle", "batch", "server", "log", "shutdown",
];

impl AgentConfig {
    /// Loads `path` with the process environment as overrides, then validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, vars)
    }

    /// Like [`AgentConfig::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_with_env(&text, env)
    }

    /// Parses TOML text, applies environment overrides, validates.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();

        // Secrets never sit in the file: checked on the file alone, before the overrides.
        let file_only = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::one(format!("not valid TOML: {e}")))?;
        if file_only.get_string("database.password").is_ok() {
            problems.push(
                "database.password: secrets must not be in the file; use database.password_file \
                 or the SLUICE__DATABASE__PASSWORD environment variable"
                    .to_owned(),
            );
        }

        let env_map: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        let origins = Origins::from_env(env_map.keys());
        let layered = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .try_parsing(true)
                    .source(Some(env_map)),
            )
            .build()
            .map_err(|e| ConfigError::one(format!("cannot load configuration: {e}")))?;

        // Each section is deserialized on its own so that one bad value does not hide the rest.
        let root = layered
            .clone()
            .try_deserialize::<config::Map<String, config::Value>>()
            .map_err(|e| ConfigError::one(format!("cannot load configuration: {e}")))?;
        let mut unknown: Vec<&String> = root
            .keys()
            .filter(|k| !SECTIONS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            problems.push(format!(
                "unknown section [{k}] (known: {})",
                SECTIONS.join(", ")
            ));
        }

        let mut sections = Sections {
            cfg: &layered,
            origins: &origins,
            problems: &mut problems,
        };
        let queue = sections.required::<QueueConfig>("queue");
        let database = sections.required::<DatabaseConfig>("database");
        let throttle = sections.optional::<ThrottleConfig>("throttle");
        let batch = sections.optional::<BatchConfig>("batch");
        let server = sections.optional::<ServerConfig>("server");
        let log = sections.optional::<LogConfig>("log");
        let shutdown = sections.optional::<ShutdownConfig>("shutdown");

        match (queue, database, throttle, batch, server, log, shutdown) {
            (
                Some(queue),
                Some(database),
                Some(throttle),
                Some(batch),
                Some(server),
                Some(log),
                Some(shutdown),
            ) if problems.is_empty() => {
                let cfg = AgentConfig {
                    queue,
                    database,
                    throttle,
                    batch,
                    server,
                    log,
                    shutdown,
                };
                cfg.validate()?;
                Ok(cfg)
            }
            (queue, database, throttle, batch, server, log, shutdown) => {
                // Still check the sections that did parse, so the operator sees everything.
                let partial = AgentConfig {
                    queue: queue.unwrap_or_else(placeholder_queue),
                    database: database.unwrap_or_else(placeholder_database),
                    throttle: throttle.unwrap_or_default(),
                    batch: batch.unwrap_or_default(),
                    server: server.unwrap_or_default(),
                    log: log.unwrap_or_default(),
                    shutdown: shutdown.unwrap_or_default(),
                };
                if let Err(e) = partial.validate() {
                    problems.extend(e.problems);
                }
                problems.dedup();
                Err(ConfigError { problems })
            }
        }
    }

    /// Semantic checks across keys. Lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let q = &self.queue;
        check_url(&mut p, "queue.url", &q.url, true);
        if let Some(dlq) = &q.dead_letter_url {
            check_url(&mut p, "queue.dead_letter_url", dlq, true);
            if dlq == &q.url {
                p.push("queue.dead_letter_url: must differ from queue.url".to_owned());
            }
        }
        if let Some(ep) = &q.endpoint {
            check_url(&mut p, "queue.endpoint", ep, true);
        }
        if let Some(r) = &q.region {
            if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                p.push(format!("queue.region: {r:?} is not an AWS region name"));
            }
        }
        if !(1..=64).contains(&q.pollers) {
            p.push(format!(
                "queue.pollers: {} is out of range 1..=64",
                q.pollers
            ));
        }
        if q.wait_seconds > 20 {
            p.push(format!(
                "queue.wait_seconds: {} is over SQS's maximum long poll of 20",
                q.wait_seconds
            ));
        }
        // Below 10 s the heartbeat (every half timeout) would chase its own tail; SQS's
        // maximum is 12 hours.
        if !(10..=43_200).contains(&q.visibility_timeout_seconds) {
            p.push(format!(
                "queue.visibility_timeout_seconds: {} is out of range 10..=43200",
                q.visibility_timeout_seconds
            ));
        }

        let d = &self.database;
        if !(d.url.starts_with("postgres://") || d.url.starts_with("postgresql://")) {
            p.push(format!(
                "database.url: {:?} must start with postgres:// or postgresql://",
                redact_url(&d.url)
            ));
        }
        if d.password_file.is_some() && d.password.is_some() {
            p.push(
                "database.password_file and SLUICE__DATABASE__PASSWORD are both set; keep one"
                    .to_owned(),
            );
        }
        if let Some(pf) = &d.password_file {
            if let Err(e) = std::fs::metadata(pf) {
                p.push(format!(
                    "database.password_file: cannot read {}: {e}",
                    pf.display()
                ));
            }
        }
        if !valid_identifier(&d.schema) {
            p.push(format!(
                "database.schema: {:?} must be 1-63 of [a-z0-9_], not starting with a digit",
                d.schema
            ));
        }
        if !(1..=100).contains(&d.max_connections) {
            p.push(format!(
                "database.max_connections: {} is out of range 1..=100",
                d.max_connections
            ));
        }
        if !(1..=300).contains(&d.connect_timeout_seconds) {
            p.push(format!(
                "database.connect_timeout_seconds: {} is out of range 1..=300",
                d.connect_timeout_seconds
            ));
        }

        let t = &self.throttle;
        if t.rows_per_second == 0 {
            p.push("throttle.rows_per_second: must be at least 1".to_owned());
        }
        if t.burst < self.batch.max_rows {
            p.push(format!(
                "throttle.burst: {} is below batch.max_rows ({}); a full batch could never pass",
                t.burst, self.batch.max_rows
            ));
        }
        if t.max_concurrent_transactions == 0 {
            p.push("throttle.max_concurrent_transactions: must be at least 1".to_owned());
        } else if t.max_concurrent_transactions > d.max_connections {
            p.push(format!(
                "throttle.max_concurrent_transactions: {} is above database.max_connections ({})",
                t.max_concurrent_transactions, d.max_connections
            ));
        }

        if let Err(problems) = t.parsed_schedule() {
            p.extend(problems);
        }
        if t.min_rows_per_second == 0 {
            p.push("throttle.min_rows_per_second: must be at least 1".to_owned());
        } else if t.mode == ThrottleMode::Adaptive && t.min_rows_per_second > t.rows_per_second {
            p.push(format!(
                "throttle.min_rows_per_second: {} is above throttle.rows_per_second ({}), the ceiling",
                t.min_rows_per_second, t.rows_per_second
            ));
        }
        if !(1..=600_000).contains(&t.target_commit_ms) {
            p.push(format!(
                "throttle.target_commit_ms: {} is out of range 1..=600000",
                t.target_commit_ms
            ));
        }
        if t.max_active_backends == Some(0) {
            p.push("throttle.max_active_backends: must be at least 1 (or unset)".to_owned());
        }
        if t.increase_rows_per_second == Some(0) {
            p.push("throttle.increase_rows_per_second: must be at least 1 (or unset)".to_owned());
        }
        if !(t.decrease_factor > 0.0 && t.decrease_factor < 1.0) {
            p.push(format!(
                "throttle.decrease_factor: {} must be above 0 and below 1",
                t.decrease_factor
            ));
        }
        if !(100..=60_000).contains(&t.adjust_interval_ms) {
            p.push(format!(
                "throttle.adjust_interval_ms: {} is out of range 100..=60000",
                t.adjust_interval_ms
            ));
        }

        let b = &self.batch;
        if !(1..=50_000).contains(&b.max_rows) {
            p.push(format!(
                "batch.max_rows: {} is out of range 1..=50000",
                b.max_rows
            ));
        }
        if b.max_wait_ms > 60_000 {
            p.push(format!(
                "batch.max_wait_ms: {} is over 60000 (one minute)",
                b.max_wait_ms
            ));
        }
        if b.max_in_flight_rows < b.max_rows {
            p.push(format!(
                "batch.max_in_flight_rows: {} is below batch.max_rows ({})",
                b.max_in_flight_rows, b.max_rows
            ));
        }

        if !self.server.listen.is_empty() && self.server.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "server.listen: {:?} is not an address like 127.0.0.1:9187 (\"\" turns it off)",
                self.server.listen
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.push(format!(
                "log.level: {:?} is not a valid filter: {e}",
                self.log.level
            ));
        }
        if !(1..=3600).contains(&self.shutdown.grace_seconds) {
            p.push(format!(
                "shutdown.grace_seconds: {} is out of range 1..=3600",
                self.shutdown.grace_seconds
            ));
        }

        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }

    /// The effective configuration as TOML-like JSON with secrets removed, for the startup log
    /// line and `check-config`.
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(url) = v.pointer_mut("/database/url") {
            *url = serde_json::Value::String(redact_url(&self.database.url));
        }
        v
    }
}

/// Which keys the environment set, to say so next to a bad value.
struct Origins(Vec<(String, String)>);

impl Origins {
    /// `SLUICE__BATCH__MAX_ROWS` → (`batch.max_rows`, the variable's name).
    fn from_env<'a>(vars: impl Iterator<Item = &'a String>) -> Self {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        Self(
            vars.filter_map(|v| {
                let path = v
                    .strip_prefix(&prefix)?
                    .to_ascii_lowercase()
                    .replace(ENV_SEPARATOR, ".");
                Some((path, v.clone()))
            })
            .collect(),
        )
    }

    fn note(&self, path: &str) -> String {
        match self.0.iter().find(|(p, _)| p == path) {
            Some((_, var)) => format!(" (set by the environment variable {var})"),
            None => String::new(),
        }
    }
}

/// Deserializes sections one by one, each error naming its full key (`queue.pollers`).
struct Sections<'a> {
    cfg: &'a config::Config,
    origins: &'a Origins,
    problems: &'a mut Vec<String>,
}

impl Sections<'_> {
    /// `Ok(None)`: the section is absent.
    fn get<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ()> {
        // Through serde_json::Value so that serde_path_to_error can name the field: the
        // `config` crate's own errors only name the section.
        let value = match self.cfg.get::<serde_json::Value>(key) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => return Ok(None),
            Err(e) => {
                self.problems.push(format!("[{key}]: {e}"));
                return Err(());
            }
        };
        if !value.is_object() {
            self.problems.push(format!(
                "{key}: must be a table ([{key}]), not a single value"
            ));
            return Err(());
        }
        serde_path_to_error::deserialize::<_, T>(value)
            .map(Some)
            .map_err(|e| {
                let field = e.path().to_string();
                let path = if field == "." {
                    key.to_owned()
                } else {
                    format!("{key}.{field}")
                };
                let note = self.origins.note(&path);
                self.problems.push(format!("{path}: {}{note}", e.inner()));
            })
    }

    fn required<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.get(key) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                self.problems.push(format!("missing section [{key}]"));
                None
            }
            Err(()) => None,
        }
    }

    fn optional<T: serde::de::DeserializeOwned + Default>(&mut self, key: &str) -> Option<T> {
        match self.get(key) {
            Ok(v) => Some(v.unwrap_or_default()),
            Err(()) => None,
        }
    }
}

fn placeholder_queue() -> QueueConfig {
    QueueConfig {
        url: "https://placeholder.invalid/q".to_owned(),
        dead_letter_url: None,
        region: None,
        endpoint: None,
        pollers: default_pollers(),
        wait_seconds: default_wait_seconds(),
        visibility_timeout_seconds: default_visibility_timeout_seconds(),
    }
}

fn placeholder_database() -> DatabaseConfig {
    DatabaseConfig {
        url: "postgres://placeholder".to_owned(),
        password_file: None,
        password: None,
        schema: default_schema(),
        max_connections: 100,
        connect_timeout_seconds: default_connect_timeout_seconds(),
        migrate_on_start: true,
    }
}

fn check_url(p: &mut Vec<String>, key: &str, value: &str, http: bool) {
    let ok = if http {
        (value.starts_with("https://") || value.starts_with("http://"))
            && value.len() > "https://".len()
            && !value.contains(char::is_whitespace)
    } else {
        !value.is_empty()
    };
    if !ok {
        p.push(format!("{key}: {value:?} is not an http(s) URL"));
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

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}
