//! `sluice-agent status`: one screen saying how much is waiting and how long it will take.
//!
//! It works with no agent running: queue and DLQ depth come from SQS (GetQueueAttributes), the
//! rate actually achieved from PostgreSQL (receipts stored in the last minute), and receipts per
//! message from the chunk ledger. When the agent's `/metrics` on `server.listen` answers, it adds
//! the agent's live rate, its current limit (schedules and adaptive mode move it) and the age of
//! the oldest message it received — SQS itself has no oldest-message age in its API.
//!
//! Depth is in messages; a message carries a chunk of up to `max_receipts_per_chunk` receipts,
//! so backlog receipts and the time to drain are estimates, and say so.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::agent::Clients;
use crate::config::AgentConfig;
use crate::io::sqs::Depth;
use crate::io::store::Store;
use crate::ops::metrics as m;

/// The rate achieved is measured over this window of `ingested_at`: long enough to smooth
/// batches of hundreds of rows, short enough to say "now".
pub const DB_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Receipts per message are averaged over this many of the latest chunk-ledger rows.
pub const LEDGER_SAMPLE: i64 = 200;
/// How long the agent's `/metrics` and PostgreSQL get to answer before they count as absent.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Between the two `/metrics` reads a one-shot `status` takes to measure the agent's rate.
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
    /// What could not be read (the rest of the report stands).
    pub problems: Vec<String>,
}

/// Receipts per second, measured and allowed.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Receipts stored per second over the last [`DB_RATE_WINDOW`] (from `ingested_at`).
    pub database_receipts_per_second: Option<f64>,
    pub database_window_seconds: u64,
    /// Receipts the agent stored per second between two reads of its `/metrics`.
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
    /// The agent's own readiness (PostgreSQL and SQS answer it), when reachable.
    pub ready: Option<bool>,
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

/// The figures read from one `/metrics` scrape.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    pub at: Instant,
    pub rows_written: Option<f64>,
    pub rate_current: Option<f64>,
    pub rate_configured: Option<f64>,
    pub oldest_age: Option<f64>,
    pub ready: Option<f64>,
}

impl Scrape {
    pub fn parse(text: &str, at: Instant) -> Self {
        Self {
            at,
            rows_written: metric_value(text, m::ROWS_WRITTEN),
            rate_current: metric_value(text, m::RATE_CURRENT),
            rate_configured: metric_value(text, m::RATE_CONFIGURED),
            oldest_age: metric_value(text, m::OLDEST_RECEIVED_AGE_SECONDS),
            ready: metric_value(text, m::READY),
        }
    }

    /// Rows per second from `earlier` to this scrape.
    pub fn rate_since(&self, earlier: &Scrape) -> Option<f64> {
        let dt = self.at.checked_duration_since(earlier.at)?.as_secs_f64();
        let d = self.rows_written.unwrap_or(0.0) - earlier.rows_written.unwrap_or(0.0);
        (dt > 0.0 && d >= 0.0).then(|| d / dt)
    }
}

/// The sum of every series of `name` in Prometheus text (labels ignored).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // a longer name with this prefix
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}

/// Reads the agent's `/metrics` over plain HTTP/1.0 (loopback, no TLS: `server.listen` is a
/// local endpoint), so the CLI needs no HTTP client library.
pub async fn fetch_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let addr = reachable(addr);
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let raw = tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .context("timed out")?
        .with_context(|| format!("reading http://{addr}/metrics"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status == "200", "http://{addr}/metrics answered {status}");
    Ok(body.to_owned())
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

/// Reads the figures; keeps the previous `/metrics` scrape to measure the agent's rate.
#[derive(Debug)]
pub struct Reporter {
    cfg: AgentConfig,
    clients: Clients,
    last_scrape: Option<Scrape>,
}

impl Reporter {
    pub async fn new(cfg: AgentConfig) -> anyhow::Result<Self> {
        let clients = Clients::connect(&cfg).await?;
        Ok(Self {
            cfg,
            clients,
            last_scrape: None,
        })
    }

    /// With the SQS and PostgreSQL handles given (tests).
    pub fn with_clients(cfg: AgentConfig, clients: Clients) -> Self {
        Self {
            cfg,
            clients,
            last_scrape: None,
        }
    }

    /// One report. `sample`: when there is no earlier scrape, wait this long between two reads
    /// of `/metrics` to measure the agent's rate (zero: do not measure).
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

        let (db_rate, per_message) = database_figures(&self.clients.store, &mut problems).await;

        let mut agent = AgentView {
            metrics_url: self
                .cfg
                .server
                .addr()
                .map(|a| format!("http://{}/metrics", reachable(a))),
            reachable: false,
            ready: None,
        };
        let mut scrape = None;
        let mut agent_rate = None;
        if let Some(addr) = self.cfg.server.addr() {
            match fetch_metrics(addr).await {
                Ok(text) => {
                    let mut now = Scrape::parse(&text, Instant::now());
                    let earlier = match self.last_scrape.take() {
                        Some(s) => Some(s),
                        None if !sample.is_zero() => {
                            tokio::time::sleep(sample).await;
                            match fetch_metrics(addr).await {
                                Ok(text) => {
                                    let first = now;
                                    now = Scrape::parse(&text, Instant::now());
                                    Some(first)
                                }
                                Err(_) => None,
                            }
                        }
                        None => None,
                    };
                    agent_rate = earlier.and_then(|e| now.rate_since(&e));
                    agent.reachable = true;
                    agent.ready = now.ready.map(|r| r > 0.0);
                    scrape = Some(now);
                }
                Err(e) => problems.push(format!(
                    "agent metrics not answering ({e:#}): figures from SQS and PostgreSQL only"
                )),
            }
        }
        self.last_scrape = scrape;

        let configured = self.cfg.throttle.rows_per_second;
        let limit = scrape
            .and_then(|s| s.rate_current.or(s.rate_configured))
            .unwrap_or(f64::from(configured));
        let rate = Rate {
            database_receipts_per_second: db_rate,
            database_window_seconds: DB_RATE_WINDOW.as_secs(),
            agent_receipts_per_second: agent_rate,
            limit_rows_per_second: limit,
            configured_rows_per_second: configured,
        };
        let backlog = backlog_receipts(main.total(), per_message);
        Ok(Status {
            queue_url: queue.url().to_owned(),
            queue: main,
            dead_letter_url: queue.dead_letter_url().map(str::to_owned),
            dlq,
            oldest_message_age_seconds: scrape.and_then(|s| s.oldest_age),
            receipts_per_message: per_message,
            backlog_receipts_estimate: backlog,
            drain_seconds_at_current_rate: backlog.and_then(|b| drain_seconds(b, rate.current())),
            drain_seconds_at_limit: backlog.and_then(|b| drain_seconds(b, Some(limit))),
            rate,
            agent,
            problems,
        })
    }
}

/// Receipts stored per second over the window, and receipts per message from the ledger.
async fn database_figures(store: &Store, problems: &mut Vec<String>) -> (Option<f64>, Option<f64>) {
    let rate = match tokio::time::timeout(PROBE_TIMEOUT, store.recent_rate(DB_RATE_WINDOW)).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            problems.push(format!("PostgreSQL: {e}"));
            return (None, None);
        }
        Err(_) => {
            problems.push("PostgreSQL: timed out".to_owned());
            return (None, None);
        }
    };
    let per_message = store.receipts_per_message(LEDGER_SAMPLE);
    let per_message = match tokio::time::timeout(PROBE_TIMEOUT, per_message).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            problems.push(format!("PostgreSQL (chunk ledger): {e}"));
            None
        }
        Err(_) => None,
    };
    (rate, per_message)
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
        (Some(u), true, Some(false)) => {
            format!("{u}: running, NOT ready (PostgreSQL or SQS not answering it)")
        }
        (Some(u), true, None) => format!("{u}: running"),
        (Some(u), false, _) => format!("{u}: not answering"),
    };
    let _ = writeln!(out, "agent         {agent}");
    for p in &s.problems {
        let _ = writeln!(out, "note          {p}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_time_is_backlog_over_rate_and_unknown_when_nothing_drains() {
        assert_eq!(drain_seconds(10_000, Some(500.0)), Some(20.0));
        assert_eq!(drain_seconds(0, None), Some(0.0));
        assert_eq!(drain_seconds(10, Some(0.0)), None);
        assert_eq!(drain_seconds(10, None), None);
        assert_eq!(drain_seconds(10, Some(f64::NAN)), None);
    }

    #[test]
    fn backlog_receipts_are_messages_times_receipts_per_message() {
        assert_eq!(backlog_receipts(120, Some(99.5)), Some(11_940));
        assert_eq!(backlog_receipts(0, None), Some(0));
        assert_eq!(backlog_receipts(5, None), None);
    }

    #[test]
    fn metric_values_are_read_from_prometheus_text_summing_label_sets() {
        let text = "# HELP sluice_rows_written_total x\n\
                    # TYPE sluice_rows_written_total counter\n\
                    sluice_rows_written_total 1500\n\
                    sluice_rows_written_total_extra 7\n\
                    sluice_queue_messages{queue=\"main\",state=\"visible\"} 12\n\
                    sluice_queue_messages{queue=\"main\",state=\"in_flight\"} 3\n";
        assert_eq!(
            metric_value(text, "sluice_rows_written_total"),
            Some(1500.0)
        );
        assert_eq!(metric_value(text, "sluice_queue_messages"), Some(15.0));
        assert_eq!(metric_value(text, "sluice_absent"), None);
    }

    #[test]
    fn the_agent_rate_is_the_counter_delta_over_time() {
        let t0 = Instant::now();
        let a = Scrape::parse("sluice_rows_written_total 1000\n", t0);
        let b = Scrape::parse(
            "sluice_rows_written_total 2000\n",
            t0 + Duration::from_secs(2),
        );
        assert_eq!(b.rate_since(&a), Some(500.0));
        assert_eq!(a.rate_since(&b), None, "time runs forwards");
    }

    #[test]
    fn durations_and_counts_read_like_a_person_wrote_them() {
        assert_eq!(human_duration(12.4), "12s");
        assert_eq!(human_duration(245.0), "4m 05s");
        assert_eq!(human_duration(3720.0), "1h 02m");
        assert_eq!(human_duration(90_000.0), "1d 01h");
        assert_eq!(human_duration(f64::INFINITY), "unknown");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let a: SocketAddr = "0.0.0.0:9187".parse().expect("addr");
        assert_eq!(reachable(a).to_string(), "127.0.0.1:9187");
        let b: SocketAddr = "10.0.0.5:9187".parse().expect("addr");
        assert_eq!(reachable(b), b);
    }

    fn status() -> Status {
        Status {
            queue_url: "http://q".into(),
            queue: Depth {
                visible: 100,
                in_flight: 20,
                delayed: 0,
            },
            dead_letter_url: Some("http://dlq".into()),
            dlq: Some(Depth::default()),
            oldest_message_age_seconds: None,
            receipts_per_message: Some(100.0),
            backlog_receipts_estimate: Some(12_000),
            rate: Rate {
                database_receipts_per_second: Some(400.0),
                database_window_seconds: 60,
                agent_receipts_per_second: None,
                limit_rows_per_second: 500.0,
                configured_rows_per_second: 500,
            },
            drain_seconds_at_current_rate: Some(30.0),
            drain_seconds_at_limit: Some(24.0),
            agent: AgentView {
                metrics_url: Some("http://127.0.0.1:9187/metrics".into()),
                reachable: false,
                ready: None,
            },
            problems: vec![],
        }
    }

    #[test]
    fn the_screen_names_depth_backlog_rate_and_drain_time_as_estimates() {
        let text = render(&status());
        assert!(
            text.contains("120 messages (visible 100, in flight 20, delayed 0)"),
            "{text}"
        );
        assert!(text.contains("≈ 12,000 receipts (estimate"), "{text}");
        assert!(text.contains("400/s stored over the last 60 s"), "{text}");
        assert!(text.contains("limit 500/s"), "{text}");
        assert!(
            text.contains("≈ 30s at the current rate, 24s at the limit"),
            "{text}"
        );
        assert!(text.contains("not answering"), "{text}");
        assert!(text.contains("ApproximateAgeOfOldestMessage"), "{text}");
    }
}
