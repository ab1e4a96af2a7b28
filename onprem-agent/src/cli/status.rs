//! `sluice-agent status`: one screen saying how much is waiting and how long it will take.
//!
//! It works with no agent running: queue and DLQ depth come from SQS (GetQueueAttributes), the
//! rate actually achieved from PostgreSQL (receipts committed in the last minute), and receipts
//! per message, both from the chunk ledger through its `committed_at` index (so `status --watch`
//! never scans `receipts`). When the agent answers on `server.listen` (`GET /v1/status`,
//! JSON), it adds the agent's live rate, its current limit (schedules and adaptive mode move it)
//! and the age of the oldest message it received — SQS itself has no oldest-message age in its
//! API.
//!
//! Depth is in messages; a message carries a chunk of up to `max_receipts_per_chunk` receipts,
//! so backlog receipts and the time to drain are estimates, and say so.

mod agents;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::agent::Clients;
use crate::config::{secret, AgentConfig};
use crate::io::sqs::Depth;
use crate::io::store::agents::AgentRow;
use crate::ops::live::{self, DatabaseFigures, LiveStatus, RateExplained};
use crate::pipeline::health::Condition;
use crate::pipeline::report::ReportView;

/// The windows of the database's figures: the same as the live page's (`ops::live`).
pub use crate::ops::live::{DB_RATE_WINDOW, LEDGER_SAMPLE};
/// How long the agent and PostgreSQL get to answer before they count as absent.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Between the two reads of the agent's figures a one-shot `status` takes to measure its rate.
pub const AGENT_SAMPLE: Duration = Duration::from_secs(2);

/// Everything `status` reports; `--json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub queue_url: String,
    /// Messages in the main queue.
    pub queue: Depth,
    pub dead_letter_url: Option<String>,
    /// Messages in the dead-letter queue, when one is configured and readable.
    pub dlq: Option<Depth>,
    /// Age of the oldest message in the agent's latest receive (only while the agent answers:
    /// SQS's API does not report an oldest-message age).
    pub oldest_message_age_seconds: Option<f64>,
    /// Average receipts per message over the latest chunk-ledger rows (an estimate).
    pub receipts_per_message: Option<f64>,
    /// Messages in the main queue × receipts per message (an estimate).
    pub backlog_receipts_estimate: Option<u64>,
    pub rate: Rate,
    /// Backlog receipts ÷ the current rate; `null` when nothing is draining or unknown.
    pub drain_seconds_at_current_rate: Option<f64>,
    /// Backlog receipts ÷ the limit: the best case.
    pub drain_seconds_at_limit: Option<f64>,
    pub agent: AgentView,
    /// The agents sharing the budget (the `agents` table), live ones first.
    pub agents: Vec<AgentRow>,
    /// What could not be read (the rest of the report stands).
    pub problems: Vec<String>,
}

/// Receipts per second, measured and allowed.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Receipts stored per second over the last [`DB_RATE_WINDOW`] (from the chunk ledger's
    /// `committed_at`).
    pub database_receipts_per_second: Option<f64>,
    pub database_window_seconds: u64,
    /// Receipts the agent stored per second between two reads of its figures.
    pub agent_receipts_per_second: Option<f64>,
    /// The limit in force: the agent's current rate when it answers, else the configured one.
    pub limit_rows_per_second: f64,
    /// `throttle.rows_per_second` from the configuration file.
    pub configured_rows_per_second: u32,
}

impl Rate {
    /// The best measure of "now": the agent's own figure, else the database's.
    pub fn current(&self) -> Option<f64> {
        self.agent_receipts_per_second
            .or(self.database_receipts_per_second)
    }
}

/// What the agent's endpoint said.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// `http://…/metrics`, when `server.listen` is set.
    pub metrics_url: Option<String>,
    pub reachable: bool,
    /// The agent's own readiness (PostgreSQL and SQS answer it, no condition raised), when
    /// reachable.
    pub ready: Option<bool>,
    /// The conditions the agent has raised (see `pipeline::health`), when reachable.
    pub conditions: Vec<Condition>,
    /// Status reporting (`[status]`), when on and reachable.
    pub status_reports: Option<ReportView>,
    /// Why its rate is what it is, with the foreground probe's figures, when reachable.
    pub throttle: Option<RateExplained>,
    /// Its part of the total rate across agents (0–1), when reachable.
    pub rate_share: Option<f64>,
    /// Seconds its transactions took per second over the last 10 s, when reachable.
    pub database_share: Option<f64>,
}

/// Seconds to drain `backlog` receipts at `rate` per second; `None` when nothing drains.
pub fn drain_seconds(backlog: u64, rate: Option<f64>) -> Option<f64> {
    if backlog == 0 {
        return Some(0.0);
    }
    match rate {
        Some(r) if r > 0.0 && r.is_finite() => Some(backlog as f64 / r),
        _ => None,
    }
}

/// Messages × average receipts per message, rounded.
pub fn backlog_receipts(messages: u64, receipts_per_message: Option<f64>) -> Option<u64> {
    if messages == 0 {
        return Some(0);
    }
    receipts_per_message
        .filter(|r| r.is_finite() && *r >= 0.0)
        .map(|r| (messages as f64 * r).round() as u64)
}

/// The agent's figures as read at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    live: LiveStatus,
}

impl Sample {
    /// Rows per second from `earlier` to this sample.
    fn rate_since(&self, earlier: &Sample) -> Option<f64> {
        let dt = self.at.checked_duration_since(earlier.at)?.as_secs_f64();
        let d = self.live.rows_written as f64 - earlier.live.rows_written as f64;
        (dt > 0.0 && d >= 0.0).then(|| d / dt)
    }
}

/// Reads the agent's live figures (`GET /v1/status`) from its server on `addr`.
async fn fetch_live(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<Sample> {
    let url = format!("http://{}{}", reachable(addr), live::PATH);
    let live = async {
        http.get(&url)
            .send()
            .await?
            .error_for_status()?
            .json::<LiveStatus>()
            .await
    }
    .await
    .with_context(|| format!("reading {url}"))?;
    Ok(Sample {
        at: Instant::now(),
        live,
    })
}

/// A wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Reads the figures; keeps the agent's previous figures to measure its rate.
#[derive(Debug)]
pub struct Reporter {
    cfg: AgentConfig,
    clients: Clients,
    http: reqwest::Client,
    last_sample: Option<Sample>,
}

impl Reporter {
    pub async fn new(cfg: AgentConfig) -> anyhow::Result<Self> {
        let clients = Clients::connect(&cfg).await?;
        Self::with_clients(cfg, clients)
    }

    /// With the SQS and PostgreSQL handles given (tests).
    pub fn with_clients(cfg: AgentConfig, clients: Clients) -> anyhow::Result<Self> {
        // `server.listen` is a local endpoint: plain HTTP, never through a proxy.
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            cfg,
            clients,
            http,
            last_sample: None,
        })
    }

    /// One report. `sample`: when there is no earlier sample, wait this long between two reads
    /// of the agent's figures to measure its rate (zero: do not measure).
    pub async fn report(&mut self, sample: Duration) -> anyhow::Result<Status> {
        let mut problems = Vec::new();
        let queue = self.clients.queue.clone();
        let main = queue
            .depth()
            .await
            .with_context(|| format!("reading the depth of {}", queue.url()))?;
        let dlq = match queue.dead_letter_queue() {
            Some(dlq) => match dlq.depth().await {
                Ok(d) => Some(d),
                Err(e) => {
                    problems.push(format!("dead-letter queue: {e}"));
                    None
                }
            },
            None => None,
        };

        // The same reads as the agent's live page, each timed and named when it fails.
        let db = DatabaseFigures::read(&self.clients.store).await;
        problems.extend(db.problems);
        let (db_rate, per_message, agents) =
            (db.receipts_per_second, db.receipts_per_message, db.agents);

        let mut agent = AgentView {
            metrics_url: self
                .cfg
                .server
                .addr()
                .map(|a| format!("http://{}/metrics", reachable(a))),
            reachable: false,
            ready: None,
            conditions: Vec::new(),
            status_reports: None,
            throttle: None,
            rate_share: None,
            database_share: None,
        };
        let mut latest = None;
        let mut agent_rate = None;
        if let Some(addr) = self.cfg.server.addr() {
            match fetch_live(&self.http, addr).await {
                Ok(mut now) => {
                    let earlier = match self.last_sample.take() {
                        Some(s) => Some(s),
                        None if !sample.is_zero() => {
                            tokio::time::sleep(sample).await;
                            match fetch_live(&self.http, addr).await {
                                Ok(second) => Some(std::mem::replace(&mut now, second)),
                                Err(_) => None,
                            }
                        }
                        None => None,
                    };
                    agent_rate = earlier.and_then(|e| now.rate_since(&e));
                    agent.reachable = true;
                    agent.ready = now.live.ready;
                    agent.conditions = now.live.conditions.clone();
                    agent.status_reports = now.live.status_reports.clone();
                    agent.throttle = now.live.throttle.clone();
                    agent.rate_share = now.live.rate_share;
                    agent.database_share = now.live.database_share;
                    latest = Some(now);
                }
                Err(e) => problems.push(format!(
                    "agent metrics not answering ({e:#}): figures from SQS and PostgreSQL only"
                )),
            }
        }
        self.last_sample = latest.clone();
        let latest = latest.map(|s| s.live);

        let configured = self.cfg.throttle.rows_per_second;
        let limit = latest
            .as_ref()
            .and_then(|s| s.rate_rows_per_second.or(s.rate_configured_rows_per_second))
            .unwrap_or(f64::from(configured));
        let rate = Rate {
            database_receipts_per_second: db_rate,
            database_window_seconds: DB_RATE_WINDOW.as_secs(),
            agent_receipts_per_second: agent_rate,
            limit_rows_per_second: limit,
            configured_rows_per_second: configured,
        };
        let backlog = backlog_receipts(main.total(), per_message);
        // A driver's error text may quote the connection settings.
        let problems = problems
            .iter()
            .map(|p| secret::scrub(p).into_owned())
            .collect();
        Ok(Status {
            queue_url: queue.url().to_owned(),
            queue: main,
            dead_letter_url: queue.dead_letter_url().map(str::to_owned),
            dlq,
            oldest_message_age_seconds: latest
                .as_ref()
                .and_then(|s| s.oldest_received_message_age_seconds),
            receipts_per_message: per_message,
            backlog_receipts_estimate: backlog,
            drain_seconds_at_current_rate: backlog.and_then(|b| drain_seconds(b, rate.current())),
            drain_seconds_at_limit: backlog.and_then(|b| drain_seconds(b, Some(limit))),
            rate,
            agent,
            agents,
            problems,
        })
    }
}

/// `1h 02m`, `4m 05s`, `12s`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "unknown".to_owned();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_text(r: f64) -> String {
    if r >= 10.0 {
        thousands(r.round() as u64)
    } else {
        format!("{r:.1}")
    }
}

/// The one screen.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let depth = |d: &Depth| {
        format!(
            "{} messages (visible {}, in flight {}, delayed {})",
            thousands(d.total()),
            thousands(d.visible),
            thousands(d.in_flight),
            thousands(d.delayed)
        )
    };
    let _ = writeln!(out, "queue         {}", depth(&s.queue));
    match (s.backlog_receipts_estimate, s.receipts_per_message) {
        (Some(b), Some(per)) if s.queue.total() > 0 => {
            let _ = writeln!(
                out,
                "backlog       ≈ {} receipts (estimate: {per:.1} receipts per message over the latest {LEDGER_SAMPLE} chunks)",
                thousands(b)
            );
        }
        (Some(_), _) => {
            let _ = writeln!(out, "backlog       none");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "backlog       unknown in receipts (no chunk committed yet to estimate receipts per message)"
            );
        }
    }
    let dlq = match (&s.dlq, &s.dead_letter_url) {
        (Some(d), _) => depth(d),
        (None, Some(_)) => "unreadable (see below)".to_owned(),
        (None, None) => "not configured (queue.dead_letter_url)".to_owned(),
    };
    let _ = writeln!(out, "dead letters  {dlq}");
    let oldest = match s.oldest_message_age_seconds {
        Some(a) => format!("{} (oldest message in the agent's latest receive)", human_duration(a)),
        None => "n/a: SQS's API has no oldest-message age (CloudWatch: ApproximateAgeOfOldestMessage); the agent reports it while it runs".to_owned(),
    };
    let _ = writeln!(out, "oldest        {oldest}");
    let mut rate = String::new();
    if let Some(a) = s.rate.agent_receipts_per_second {
        let _ = write!(rate, "{}/s now (agent) · ", rate_text(a));
    }
    match s.rate.database_receipts_per_second {
        Some(d) => {
            let _ = write!(
                rate,
                "{}/s stored over the last {} s (database) · ",
                rate_text(d),
                s.rate.database_window_seconds
            );
        }
        None => rate.push_str("database unreadable · "),
    }
    let _ = write!(
        rate,
        "limit {}/s (configured {}/s)",
        rate_text(s.rate.limit_rows_per_second),
        thousands(u64::from(s.rate.configured_rows_per_second))
    );
    let _ = writeln!(out, "receipts/s    {rate}");
    let drain = match (s.drain_seconds_at_current_rate, s.drain_seconds_at_limit) {
        (Some(0.0), _) => "nothing to drain".to_owned(),
        (Some(now), Some(lim)) => format!(
            "≈ {} at the current rate, {} at the limit (estimates)",
            human_duration(now),
            human_duration(lim)
        ),
        (None, Some(lim)) => format!(
            "nothing is draining now; ≈ {} at the limit (estimate)",
            human_duration(lim)
        ),
        _ => "unknown".to_owned(),
    };
    let _ = writeln!(out, "drain time    {drain}");
    let agent = match (&s.agent.metrics_url, s.agent.reachable, s.agent.ready) {
        (None, _, _) => "metrics endpoint off (server.listen = \"\")".to_owned(),
        (Some(u), true, Some(true)) => format!("{u}: running, ready"),
        (Some(u), true, Some(false)) if !s.agent.conditions.is_empty() => {
            format!("{u}: running, NOT ready (conditions below)")
        }
        (Some(u), true, Some(false)) => {
            format!("{u}: running, NOT ready (PostgreSQL or SQS not answering it)")
        }
        (Some(u), true, None) => format!("{u}: running"),
        (Some(u), false, _) => format!("{u}: not answering"),
    };
    let _ = writeln!(out, "agent         {agent}");
    if let Some(t) = &s.agent.throttle {
        let _ = writeln!(out, "rate reason   {t}");
    }
    if let Some(share) = s.agent.database_share {
        let _ = writeln!(
            out,
            "db time       {:.0} ms of transactions per second over the last {} s ({:.1}% of \
             one connection's time)",
            share * 1000.0,
            crate::throttle::busy::WINDOW.as_secs(),
            share * 100.0
        );
    }
    agents::render(&mut out, &s.agents, s.agent.rate_share);
    for c in &s.agent.conditions {
        let _ = writeln!(out, "condition     {}: {}", c.name, c.reason);
    }
    if let Some(r) = &s.agent.status_reports {
        let _ = writeln!(out, "status queue  {}", r.line());
    }
    for p in &s.problems {
        let _ = writeln!(out, "note          {p}");
    }
    out
}

#[cfg(test)]
mod tests;
