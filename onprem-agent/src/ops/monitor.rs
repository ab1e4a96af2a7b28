//! Queue monitoring: how many messages wait in the queue and its dead-letter queue, read with
//! GetQueueAttributes every few seconds and exported as gauges next to the agent's own figures.
//!
//! SQS answers with visible, in-flight (received, not yet deleted) and delayed counts, all
//! approximate. It has no age of the oldest message: that is CloudWatch's
//! `ApproximateAgeOfOldestMessage`, not an attribute of the queue. The agent instead exports the
//! age of the oldest message it received ([`crate::ops::metrics::OLDEST_RECEIVED_AGE_SECONDS`], set
//! by [`crate::io::sqs::Queue::receive`]).

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::io::sqs::{Queue, SqsError};
use crate::io::store::Store;
use crate::ops::metrics as m;
use crate::ops::sd_notify::{Notifier, State};
use crate::ops::server::check_ready;

/// How often the queues are read. Each read is two GetQueueAttributes calls (about 35,000 a
/// day, a cent at SQS prices); SQS's own figures only refresh about once a minute anyway.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Messages in one queue, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted (or released).
    pub in_flight: u64,
    /// Sent with a delay that has not passed yet.
    pub delayed: u64,
}

impl Depth {
    /// Every message the queue holds.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// Reads a queue's depth.
pub async fn depth(client: &Client, url: &str) -> Result<Depth, SqsError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| SqsError {
            op: "GetQueueAttributes",
            detail: DisplayErrorContext(e).to_string(),
        })?;
    let attrs = out.attributes.unwrap_or_default();
    let get = |k: QueueAttributeName| -> u64 {
        attrs
            .get(&k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    Ok(Depth {
        visible: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

/// Reads the queues and readiness every [`INTERVAL`] until `stop`, setting the gauges; while
/// ready, also shows the depth in `systemctl status` (systemd's `STATUS=`).
pub async fn run(queue: Queue, store: Store, notifier: Notifier, stop: CancellationToken) {
    let mut targets = vec![("main", queue.url().to_owned())];
    if let Some(dlq) = queue.dead_letter_url() {
        targets.push(("dlq", dlq.to_owned()));
    }
    let mut failing = vec![false; targets.len()];
    loop {
        let mut depths = Vec::new();
        for ((label, url), failing) in targets.iter().zip(failing.iter_mut()) {
            match depth(queue.client(), url).await {
                Ok(d) => {
                    record(label, d);
                    depths.push((*label, d));
                    metrics::gauge!(m::QUEUE_MONITOR_UP, "queue" => *label).set(1.0);
                    if std::mem::replace(failing, false) {
                        tracing::info!(queue = %url, "Queue attributes readable again.");
                    }
                }
                Err(e) => {
                    metrics::gauge!(m::QUEUE_MONITOR_UP, "queue" => *label).set(0.0);
                    metrics::counter!(m::ERRORS, "kind" => "sqs_attributes").increment(1);
                    if !std::mem::replace(failing, true) {
                        tracing::warn!(queue = %url, error = %e, "Cannot read queue attributes; depth gauges are stale.");
                    }
                }
            }
        }
        let (ready, _) = check_ready(&store, &queue).await;
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
    /// `metrics.rs`), so renaming a metric cannot silently disarm an alert.
    #[test]
    fn every_metric_in_the_alert_rules_exists() {
        let rules = include_str!("../../../deploy/prometheus/sluice-alerts.yml");
        let known = include_str!("metrics.rs");
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
                "alert rules use {name}, which metrics.rs does not define"
            );
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

    #[test]
    fn total_depth_counts_every_state() {
        let d = Depth {
            visible: 5,
            in_flight: 2,
            delayed: 1,
        };
        assert_eq!(d.total(), 8);
    }
}
