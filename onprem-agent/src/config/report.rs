//! `[status]`: the status queue the agent reports each settled chunk to (see
//! `pipeline::report`), and its checks. Optional: without `queue_url` nothing is reported.

use serde::{Deserialize, Serialize};

use super::check::check_http_url;
use super::QueueConfig;

/// `[status]`. The status queue is reached with `[queue]`'s region, endpoint and credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// The SQS queue that takes the chunk reports; unset: nothing is reported.
    pub queue_url: Option<String>,
}

impl StatusConfig {
    /// Whether reports are sent.
    pub fn enabled(&self) -> bool {
        self.queue_url.is_some()
    }

    pub(super) fn check(&self, queue: Option<&QueueConfig>, p: &mut Vec<String>) {
        let Some(url) = &self.queue_url else {
            return;
        };
        check_http_url(p, "status.queue_url", url);
        let Some(q) = queue else {
            return;
        };
        if url == &q.url {
            p.push(
                "status.queue_url: must differ from queue.url (reports would be read as receipts)"
                    .to_owned(),
            );
        }
        if q.dead_letter_url.as_deref() == Some(url.as_str()) {
            p.push("status.queue_url: must differ from queue.dead_letter_url".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AgentConfig, ConfigError};

    const BASE: &str = r#"
[queue]
url = "http://127.0.0.1:5000/123456789012/q"
dead_letter_url = "http://127.0.0.1:5000/123456789012/dlq"
[database]
url = "postgres://postgres@127.0.0.1:5432/db"
"#;

    fn load(status: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml_with_env(&format!("{BASE}{status}"), Vec::new())
    }

    fn problems(status: &str) -> Vec<String> {
        match load(status) {
            Ok(_) => panic!("{status:?} should be refused"),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn without_the_section_nothing_is_reported() {
        let c = load("").expect("valid");
        assert_eq!(c.status.queue_url, None);
        assert!(!c.status.enabled());
    }

    #[test]
    fn a_status_queue_url_turns_reporting_on() {
        let c = load("[status]\nqueue_url = \"http://127.0.0.1:5000/123456789012/status\"\n")
            .expect("valid");
        assert!(c.status.enabled());
        let c = AgentConfig::from_toml_with_env(
            BASE,
            vec![(
                "SLUICE__STATUS__QUEUE_URL".to_owned(),
                "https://sqs.eu-west-1.amazonaws.com/1/status".to_owned(),
            )],
        )
        .expect("valid");
        assert_eq!(
            c.status.queue_url.as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com/1/status")
        );
    }

    #[test]
    fn malformed_status_values_are_named() {
        assert_eq!(
            problems("[status]\nqueue_url = \"status-queue\"\n"),
            vec!["status.queue_url: \"status-queue\" is not an http(s) URL"]
        );
        assert_eq!(
            problems("[status]\nqueue_url = \"http://127.0.0.1:5000/123456789012/q\"\n"),
            vec![
                "status.queue_url: must differ from queue.url (reports would be read as receipts)"
            ]
        );
        assert_eq!(
            problems("[status]\nqueue_url = \"http://127.0.0.1:5000/123456789012/dlq\"\n"),
            vec!["status.queue_url: must differ from queue.dead_letter_url"]
        );
        assert_eq!(
            problems("[status]\nqueue = \"http://x/status\"\n"),
            vec!["status.queue: unknown field `queue`, expected `queue_url`"]
        );
        let typed = problems("[status]\nqueue_url = 5\n");
        assert_eq!(typed.len(), 1);
        assert!(typed[0].starts_with("status.queue_url"), "{typed:?}");
    }
}
