//! Queue monitoring: how many messages wait in the queue and its dead-letter queue, read with
//! GetQueueAttributes every few seconds and exported as gauges next to the agent's own figures.
//!
//! SQS answers with visible, in-flight (received, not yet deleted) and delayed counts, all
//! approximate. It has no age of the oldest message: that is CloudWatch's
//! `ApproximateAgeOfOldestMessage`, not an attribute of the queue. The agent instead exports the
//! age of the oldest message it received ([`crate::telemetry::names::OLDEST_RECEIVED_AGE_SECONDS`], set
//! by [`crate::io::sqs::Queue::receive`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::io::sqs::{Depth, Queue};
use crate::io::store::Store;
use crate::ops::sd_notify::{Notifier, State};
use crate::ops::server::readiness;
use crate::pipeline::health::Health;
use crate::telemetry::names as m;

/// How often the queues are read. Each read is two GetQueueAttributes calls (about 35,000 a
/// day, a cent at SQS prices); SQS's own figures only refresh about once a minute anyway.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Reads the queues and readiness every [`INTERVAL`] until `stop`, setting the gauges; while
/// ready, also shows the depth in `systemctl status` (systemd's `STATUS=`).
pub async fn run(
    queue: Queue,
    store: Store,
    health: Health,
    notifier: Notifier,
    stop: CancellationToken,
) {
    let mut targets = vec![("main", queue.clone())];
    if let Some(dlq) = queue.dead_letter_queue() {
        targets.push(("dlq", dlq));
    }
    let mut failing = vec![false; targets.len()];
    loop {
        let mut depths = Vec::new();
        for ((label, target), failing) in targets.iter().zip(failing.iter_mut()) {
            match target.depth().await {
                Ok(d) => {
                    record(label, d);
                    depths.push((*label, d));
                    metrics::gauge!(m::QUEUE_MONITOR_UP, "queue" => *label).set(1.0);
                    if std::mem::replace(failing, false) {
                        tracing::info!(queue = %target.url(), "Queue attributes readable again.");
                    }
                }
                Err(e) => {
                    metrics::gauge!(m::QUEUE_MONITOR_UP, "queue" => *label).set(0.0);
                    metrics::counter!(m::ERRORS, "kind" => "sqs_attributes").increment(1);
                    if !std::mem::replace(failing, true) {
                        tracing::warn!(queue = %target.url(), error = %e, "Cannot read queue attributes; depth gauges are stale.");
                    }
                }
            }
        }
        let (ready, _) = readiness(&store, &queue, &health).await;
        metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
        if ready && !depths.is_empty() {
            notifier.notify(&[State::Status(status_line(&depths))]);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// `Draining: 1204 messages waiting (24 in flight); 0 dead letters.`
fn status_line(depths: &[(&str, Depth)]) -> String {
    let mut line = "Draining:".to_owned();
    for (label, d) in depths {
        match *label {
            "main" => line.push_str(&format!(
                " {} messages waiting ({} in flight);",
                d.visible + d.delayed,
                d.in_flight
            )),
            _ => line.push_str(&format!(" {} dead letters;", d.total())),
        }
    }
    line.pop();
    line.push('.');
    line
}

fn record(label: &'static str, d: Depth) {
    for (state, n) in [
        ("visible", d.visible),
        ("in_flight", d.in_flight),
        ("delayed", d.delayed),
    ] {
        metrics::gauge!(m::QUEUE_MESSAGES, "queue" => label, "state" => state).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `sluice_…` metric the suggested alert rules use is one the agent exports (named in
    /// `telemetry/names.rs`), so renaming a metric cannot silently disarm an alert.
    #[test]
    fn every_metric_in_the_alert_rules_exists() {
        let rules = include_str!("../../../deploy/prometheus/sluice-alerts.yml");
        let known = include_str!("../telemetry/names.rs");
        let mut names: Vec<&str> = Vec::new();
        let mut rest = rules;
        while let Some(i) = rest.find("sluice_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(&tail[..end]);
            rest = &tail[end..];
        }
        assert!(names.len() >= 6, "{names:?}");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                known.contains(&format!("\"{base}\"")),
                "alert rules use {name}, which telemetry/names.rs does not define"
            );
        }
    }

    /// The Grafana dashboard (deploy/grafana/sluice.json) queries only metrics the agent
    /// exports, and every alert rule links to a panel of it by id, under that panel's title.
    #[test]
    fn the_dashboard_uses_real_metrics_and_every_alert_links_to_its_panel() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/grafana/sluice.json"))
                .expect("sluice.json is JSON");
        let known = include_str!("../telemetry/names.rs");
        let mut titles = std::collections::HashMap::new();
        let mut exprs = 0;
        for p in dashboard["panels"].as_array().into_iter().flatten() {
            titles.insert(
                p["id"].as_u64().unwrap_or(0),
                p["title"].as_str().unwrap_or(""),
            );
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                exprs += 1;
                let mut rest = expr;
                while let Some(i) = rest.find("sluice_") {
                    let tail = &rest[i..];
                    let end = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len());
                    let name = &tail[..end];
                    let base = name.strip_suffix("_bucket").unwrap_or(name);
                    assert!(
                        known.contains(&format!("\"{base}\"")),
                        "the dashboard queries {name}, which telemetry/names.rs does not define"
                    );
                    rest = &tail[end..];
                }
            }
        }
        assert!(exprs >= 20, "{exprs} expressions");
        let rules = include_str!("../../../deploy/prometheus/sluice-alerts.yml");
        let links: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("dashboard: "))
            .collect();
        let named: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("panel: "))
            .collect();
        assert_eq!(
            links.len(),
            rules.matches("- alert:").count(),
            "one link per rule"
        );
        for (link, title) in links.iter().zip(&named) {
            let id: u64 = link
                .trim_matches('"')
                .strip_prefix("/d/sluice-agent/sluice?viewPanel=")
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("{link} is not a panel of uid sluice-agent"));
            assert_eq!(titles.get(&id), Some(&title.trim_matches('"')), "{link}");
        }
    }

    #[test]
    fn the_systemd_status_line_shows_both_queues() {
        let main = Depth {
            visible: 1200,
            in_flight: 24,
            delayed: 4,
        };
        let dlq = Depth {
            visible: 2,
            ..Depth::default()
        };
        assert_eq!(
            status_line(&[("main", main), ("dlq", dlq)]),
            "Draining: 1204 messages waiting (24 in flight); 2 dead letters."
        );
        assert_eq!(
            status_line(&[("main", Depth::default())]),
            "Draining: 0 messages waiting (0 in flight)."
        );
    }
}
