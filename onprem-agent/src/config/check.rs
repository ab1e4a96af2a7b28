//! Validation: one `check` per section, then the checks that compare sections. Each problem
//! names its full key, and all of them are listed at once.
//!
//! The loader checks whatever parsed: a section that did not parse is `None` here, its
//! problem already listed, and the checks across sections that need it are skipped.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use super::schedule::{Days, Hours, Schedule, Window};
use super::{
    valid_identifier, AgentConfig, BatchConfig, ConfigError, DatabaseConfig, LogConfig,
    QueueConfig, ServerConfig, ShutdownConfig, StatusConfig, ThrottleConfig, ThrottleMode,
    MAX_IN_FLIGHT_BYTES, MIN_IN_FLIGHT_BYTES,
};

/// The sections to check; `None` for one that did not parse.
pub(super) struct Parsed<'a> {
    pub queue: Option<&'a QueueConfig>,
    pub database: Option<&'a DatabaseConfig>,
    pub throttle: Option<&'a ThrottleConfig>,
    pub batch: Option<&'a BatchConfig>,
    pub server: Option<&'a ServerConfig>,
    pub log: Option<&'a LogConfig>,
    pub shutdown: Option<&'a ShutdownConfig>,
    pub status: Option<&'a StatusConfig>,
}

impl Parsed<'_> {
    /// Every problem, in section order.
    pub(super) fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(q) = self.queue {
            q.check(&mut p);
        }
        if let Some(d) = self.database {
            d.check(&mut p);
            if let Some(q) = self.queue {
                timeouts_below_visibility(d, q, &mut p);
            }
        }
        if let Some(t) = self.throttle {
            t.check(&mut p);
            // Across sections, listed with the throttle keys they name.
            if let Some(b) = self.batch {
                burst_holds_a_batch(t, b, &mut p);
            }
            if let Some(d) = self.database {
                transactions_fit_the_pool(t, d, &mut p);
            }
        }
        if let Some(b) = self.batch {
            b.check(&mut p);
        }
        if let Some(s) = self.server {
            s.check(&mut p);
        }
        if let Some(l) = self.log {
            l.check(&mut p);
        }
        if let Some(s) = self.shutdown {
            s.check(&mut p);
        }
        if let Some(s) = self.status {
            s.check(self.queue, &mut p);
        }
        p
    }
}

impl AgentConfig {
    /// Semantic checks, within and across sections. Lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = Parsed {
            queue: Some(&self.queue),
            database: Some(&self.database),
            throttle: Some(&self.throttle),
            batch: Some(&self.batch),
            server: Some(&self.server),
            log: Some(&self.log),
            shutdown: Some(&self.shutdown),
            status: Some(&self.status),
        }
        .check();
        let mut problems = problems;
        self.target.check(&mut problems);
        super::photos::check(
            self.photos.as_ref(),
            Some(&self.throttle),
            Some(&self.target),
            &mut problems,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

impl QueueConfig {
    fn check(&self, p: &mut Vec<String>) {
        check_http_url(p, "queue.url", &self.url);
        if let Some(dlq) = &self.dead_letter_url {
            check_http_url(p, "queue.dead_letter_url", dlq);
            if dlq == &self.url {
                p.push("queue.dead_letter_url: must differ from queue.url".to_owned());
            }
        }
        if let Some(ep) = &self.endpoint {
            check_http_url(p, "queue.endpoint", ep);
        }
        if let Some(r) = &self.region {
            if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                p.push(format!("queue.region: {r:?} is not an AWS region name"));
            }
        }
        check_range(p, "queue.pollers", self.pollers, 1..=64);
        if self.wait_seconds > 20 {
            p.push(format!(
                "queue.wait_seconds: {} is over SQS's maximum long poll of 20",
                self.wait_seconds
            ));
        }
        // Below 10 s the heartbeat (every half timeout) would chase its own tail; SQS's
        // maximum is 12 hours.
        check_range(
            p,
            "queue.visibility_timeout_seconds",
            self.visibility_timeout_seconds,
            10..=43_200,
        );
    }
}

impl DatabaseConfig {
    fn check(&self, p: &mut Vec<String>) {
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            p.push(format!(
                "database.url: {:?} must start with postgres:// or postgresql://",
                self.url.redacted()
            ));
        }
        if self.password_file.is_some() && self.password.is_some() {
            p.push(
                "database.password_file and SLUICE__DATABASE__PASSWORD are both set; keep one"
                    .to_owned(),
            );
        }
        if let Some(pf) = &self.password_file {
            if let Err(e) = std::fs::metadata(pf) {
                p.push(format!(
                    "database.password_file: cannot read {}: {e}",
                    pf.display()
                ));
            }
        }
        if !valid_identifier(&self.schema) {
            p.push(format!(
                "database.schema: {:?} must be 1-63 of [a-z0-9_], not starting with a digit",
                self.schema
            ));
        }
        check_range(p, "database.max_connections", self.max_connections, 1..=100);
        check_range(
            p,
            "database.connect_timeout_seconds",
            self.connect_timeout_seconds,
            1..=300,
        );
        // Zero would mean "no timeout" to PostgreSQL: the stall these keys exist to prevent.
        check_range(
            p,
            "database.statement_timeout_ms",
            self.statement_timeout_ms,
            100..=3_600_000,
        );
        check_range(
            p,
            "database.lock_timeout_ms",
            self.lock_timeout_ms,
            100..=3_600_000,
        );
        if self.lock_timeout_ms > self.statement_timeout_ms {
            p.push(format!(
                "database.lock_timeout_ms: {} is above database.statement_timeout_ms ({}), which \
                 cancels the statement first; keep it at or below",
                self.lock_timeout_ms, self.statement_timeout_ms
            ));
        }
    }
}

impl ThrottleConfig {
    fn check(&self, p: &mut Vec<String>) {
        if self.rows_per_second == 0 {
            p.push("throttle.rows_per_second: must be at least 1".to_owned());
        }
        if self.max_concurrent_transactions == 0 {
            p.push("throttle.max_concurrent_transactions: must be at least 1".to_owned());
        }
        if let Err(problems) = self.parsed_schedule() {
            p.extend(problems);
        }
        if self.min_rows_per_second == 0 {
            p.push("throttle.min_rows_per_second: must be at least 1".to_owned());
        } else if self.mode == ThrottleMode::Adaptive
            && self.min_rows_per_second > self.rows_per_second
        {
            p.push(format!(
                "throttle.min_rows_per_second: {} is above throttle.rows_per_second ({}), the ceiling",
                self.min_rows_per_second, self.rows_per_second
            ));
        }
        check_range(
            p,
            "throttle.target_commit_ms",
            self.target_commit_ms,
            1..=600_000,
        );
        if self.max_active_backends == Some(0) {
            p.push("throttle.max_active_backends: must be at least 1 (or unset)".to_owned());
        }
        if let Some(cap) = self.max_database_share {
            let most = self.max_concurrent_transactions.max(1);
            if !(cap.is_finite() && cap > 0.0) {
                p.push(format!(
                    "throttle.max_database_share: {cap} must be above 0 (0.2: the agents' \
                     transactions take at most 200 ms of each second), or unset"
                ));
            } else if cap > f64::from(most) {
                p.push(format!(
                    "throttle.max_database_share: {cap} can never bind: with \
                     throttle.max_concurrent_transactions = {most} the agents' transactions \
                     take at most {most} s of each second; set it at or below {most}, or unset it"
                ));
            }
        }
        if self.increase_rows_per_second == Some(0) {
            p.push("throttle.increase_rows_per_second: must be at least 1 (or unset)".to_owned());
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            p.push(format!(
                "throttle.decrease_factor: {} must be above 0 and below 1",
                self.decrease_factor
            ));
        }
        check_range(
            p,
            "throttle.adjust_interval_ms",
            self.adjust_interval_ms,
            100..=60_000,
        );
        self.check_probe(p);
    }

    /// The schedule, parsed; or every problem, each with its key.
    pub fn parsed_schedule(&self) -> Result<Schedule, Vec<String>> {
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

/// A full batch must fit in the bucket, or it could never pass.
fn burst_holds_a_batch(t: &ThrottleConfig, b: &BatchConfig, p: &mut Vec<String>) {
    if t.burst < b.max_rows {
        p.push(format!(
            "throttle.burst: {} is below batch.max_rows ({}); a full batch could never pass",
            t.burst, b.max_rows
        ));
    }
}

/// A write that may wait as long as the visibility timeout would let its messages lapse and be
/// received again (by this agent's heartbeat race or another agent) while it still waits.
fn timeouts_below_visibility(d: &DatabaseConfig, q: &QueueConfig, p: &mut Vec<String>) {
    let visibility_ms = u64::from(q.visibility_timeout_seconds) * 1000;
    for (key, value) in [
        ("database.statement_timeout_ms", d.statement_timeout_ms),
        ("database.lock_timeout_ms", d.lock_timeout_ms),
    ] {
        if value >= visibility_ms {
            p.push(format!(
                "{key}: {value} ms is not below queue.visibility_timeout_seconds ({} s); a \
                 write must give up (and be retried) well before its messages become visible \
                 again",
                q.visibility_timeout_seconds
            ));
        }
    }
}

/// Each transaction in flight holds a pool connection. Zero is the throttle's own problem.
fn transactions_fit_the_pool(t: &ThrottleConfig, d: &DatabaseConfig, p: &mut Vec<String>) {
    if t.max_concurrent_transactions > d.max_connections && t.max_concurrent_transactions != 0 {
        p.push(format!(
            "throttle.max_concurrent_transactions: {} is above database.max_connections ({})",
            t.max_concurrent_transactions, d.max_connections
        ));
    }
}

impl BatchConfig {
    fn check(&self, p: &mut Vec<String>) {
        check_range(p, "batch.max_rows", self.max_rows, 1..=50_000);
        if self.max_wait_ms > 60_000 {
            p.push(format!(
                "batch.max_wait_ms: {} is over 60000 (one minute)",
                self.max_wait_ms
            ));
        }
        if self.max_in_flight_rows < self.max_rows {
            p.push(format!(
                "batch.max_in_flight_rows: {} is below batch.max_rows ({})",
                self.max_in_flight_rows, self.max_rows
            ));
        }
        if self.max_in_flight_bytes < MIN_IN_FLIGHT_BYTES {
            p.push(format!(
                "batch.max_in_flight_bytes: {} is below {MIN_IN_FLIGHT_BYTES} (16 MiB), the largest \
                 decoded message the agent may have to hold",
                self.max_in_flight_bytes
            ));
        } else if self.max_in_flight_bytes > MAX_IN_FLIGHT_BYTES {
            p.push(format!(
                "batch.max_in_flight_bytes: {} is over {MAX_IN_FLIGHT_BYTES} (1 TiB)",
                self.max_in_flight_bytes
            ));
        }
    }
}

impl ServerConfig {
    fn check(&self, p: &mut Vec<String>) {
        if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "server.listen: {:?} is not an address like 127.0.0.1:9187 (\"\" turns it off)",
                self.listen
            ));
        }
    }
}

impl LogConfig {
    fn check(&self, p: &mut Vec<String>) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            p.push(format!(
                "log.level: {:?} is not a valid filter: {e}",
                self.level
            ));
        }
    }
}

impl ShutdownConfig {
    fn check(&self, p: &mut Vec<String>) {
        check_range(p, "shutdown.grace_seconds", self.grace_seconds, 1..=3600);
    }
}

/// `value` must be within `range`.
fn check_range<T: PartialOrd + fmt::Display + fmt::Debug>(
    p: &mut Vec<String>,
    key: &str,
    value: T,
    range: RangeInclusive<T>,
) {
    if !range.contains(&value) {
        p.push(format!("{key}: {value} is out of range {range:?}"));
    }
}

/// `value` must be an http(s) URL.
pub(super) fn check_http_url(p: &mut Vec<String>, key: &str, value: &str) {
    let ok = (value.starts_with("https://") || value.starts_with("http://"))
        && value.len() > "https://".len()
        && !value.contains(char::is_whitespace);
    if !ok {
        p.push(format!("{key}: {value:?} is not an http(s) URL"));
    }
}

/// The longest `probe_sql` accepted.
const MAX_SQL_LEN: usize = 4096;

impl ThrottleConfig {
    /// The probe's keys (adaptive mode's foreground probe).
    pub(crate) fn check_probe(&self, p: &mut Vec<String>) {
        let sql = self.probe_sql.trim();
        let body = sql.strip_suffix(';').unwrap_or(sql).trim_end();
        if body.is_empty() {
            p.push("throttle.probe_sql: must be one read-only SQL statement, not empty".to_owned());
        } else if body.contains(';') {
            p.push(format!(
                "throttle.probe_sql: {sql:?} holds several statements; give one read-only statement"
            ));
        } else if sql.len() > MAX_SQL_LEN {
            p.push(format!(
                "throttle.probe_sql: {} characters is above {MAX_SQL_LEN}; give a short read",
                sql.len()
            ));
        }
        let ratio = self.target_latency_ratio;
        if !(ratio.is_finite() && ratio > 1.0 && ratio <= 100.0) {
            p.push(format!(
                "throttle.target_latency_ratio: {ratio} must be above 1 and at most 100"
            ));
        }
        if !(0.5..=0.99).contains(&self.probe_quantile) {
            p.push(format!(
                "throttle.probe_quantile: {} is out of range 0.5..=0.99 (0.99 judges the p99)",
                self.probe_quantile
            ));
        }
        if !(20..=10_000).contains(&self.probe_interval_ms) {
            p.push(format!(
                "throttle.probe_interval_ms: {} is out of range 20..=10000",
                self.probe_interval_ms
            ));
        }
        if self.baseline_relearn_minutes > 1440 {
            p.push(format!(
                "throttle.baseline_relearn_minutes: {} is out of range 0..=1440 (0: learn only while idle)",
                self.baseline_relearn_minutes
            ));
        }
    }
}
