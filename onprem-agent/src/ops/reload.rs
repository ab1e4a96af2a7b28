//! SIGHUP (the unit's `ExecReload=`): re-reads `agent.toml` and applies what can change while
//! running — the whole `[throttle]` section — without touching work in flight.
//!
//! Keeps the guarantee "A new rate applies without a restart".
//!
//! An invalid file is refused with every problem logged, and the running configuration stays.
//! Changed keys outside `[throttle]` are named in a warning: they take effect at the next
//! restart (the pool, the pollers and the batcher are built once).
//!
//! Every SIGHUP, valid file or not, also asks the pipeline to retry writes the database
//! refused (`Health::retry_now`): an operator who fixed the cause need not wait for backoff.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::schedule::LocalTime;
use crate::config::AgentConfig;
use crate::ops::sd_notify::Notifier;
use crate::pipeline::health::Health;
use crate::telemetry::names as m;
use crate::throttle::Throttle;

/// Sections applied by a reload; the rest need a restart.
const RELOADABLE: &[&str] = &["throttle"];

/// Applies new configurations to a running agent.
#[derive(Debug, Clone)]
pub struct Reloader {
    throttle: Arc<Throttle>,
    current: Arc<Mutex<AgentConfig>>,
    /// Told to retry refused writes on each SIGHUP.
    health: Option<Health>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// `throttle.rows_per_second: 500 → 800`, for every changed key now in force.
    pub applied: Vec<String>,
    /// Keys that changed but wait for a restart.
    pub needs_restart: Vec<String>,
}

impl Reloader {
    pub fn new(throttle: Arc<Throttle>, cfg: AgentConfig) -> Self {
        Self {
            throttle,
            current: Arc::new(Mutex::new(cfg)),
            health: None,
        }
    }

    /// Also asks `health`'s waiters to retry at once on each SIGHUP.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Wakes what waits to retry refused writes.
    pub fn retry_now(&self) {
        if let Some(h) = &self.health {
            h.retry_now();
        }
    }

    /// Applies a validated configuration; logs what changed.
    pub fn apply(&self, new: AgentConfig) -> anyhow::Result<Reloaded> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let changes = changed_keys(
            &serde_json::to_value(&*current)?,
            &serde_json::to_value(&new)?,
        );
        let mut out = Reloaded::default();
        for (key, old, new) in changes {
            let section = key.split(['.', '[']).next().unwrap_or("");
            // The photo byte limiter is built once, with the writers.
            if RELOADABLE.contains(&section) && key != "throttle.photo_bytes_per_second" {
                out.applied.push(format!("{key}: {old} → {new}"));
            } else {
                out.needs_restart.push(key);
            }
        }
        self.throttle
            .reload(&new.throttle, LocalTime::now(), Instant::now())?;
        // Only [throttle] is in force: keep the rest as running, so the next reload still
        // reports restart-only changes against what actually runs.
        let photo_rate = current.throttle.photo_bytes_per_second;
        current.throttle = new.throttle;
        current.throttle.photo_bytes_per_second = photo_rate;
        drop(current);
        tracing::info!(
            changed = %out.applied.join("; "),
            rows_per_second = self.throttle.rate(),
            ceiling = self.throttle.ceiling(),
            "Configuration reloaded."
        );
        if !out.needs_restart.is_empty() {
            tracing::warn!(
                keys = %out.needs_restart.join(", "),
                "Changed keys outside [throttle] take effect at the next restart."
            );
        }
        metrics::counter!(m::RELOADS, "result" => "applied").increment(1);
        Ok(out)
    }
}

/// Every leaf that differs between two JSON trees, as (`a.b[2].c`, old, new).
pub fn changed_keys(old: &Value, new: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    diff("", old, new, &mut out);
    out
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if old != new => out.push((path.to_owned(), old.clone(), new.clone())),
        _ => {}
    }
}

/// Waits for SIGHUP until `shutdown`; on each, reloads `path` and applies it. `hangup` is the
/// signal stream, registered by the caller before the agent starts so that an early SIGHUP
/// does not kill the process (its default action).
pub async fn on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    path: PathBuf,
    reloader: Reloader,
    shutdown: CancellationToken,
) {
    let notifier = Notifier::from_env();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangup.recv() => if got.is_none() { return },
        }
        tracing::info!(config = %path.display(), "SIGHUP received; reloading the configuration.");
        reloader.retry_now();
        notifier.reloading();
        match AgentConfig::load(&path) {
            Ok(cfg) => {
                if let Err(e) = reloader.apply(cfg) {
                    metrics::counter!(m::RELOADS, "result" => "refused").increment(1);
                    tracing::error!(
                        error = format!("{e:#}"),
                        "Reload failed; the running configuration stays."
                    );
                }
            }
            Err(e) => {
                metrics::counter!(m::RELOADS, "result" => "refused").increment(1);
                tracing::error!(
                    config = %path.display(),
                    problems = %e.problems.join("; "),
                    "Reload refused: invalid configuration; the running configuration stays."
                );
            }
        }
        notifier.ready("Configuration reloaded.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_keys_names_each_leaf_with_its_full_path() {
        let old = json!({"throttle": {"rows_per_second": 500, "schedule": [{"days": "Mon"}]},
                         "queue": {"pollers": 2}});
        let new = json!({"throttle": {"rows_per_second": 800, "schedule": [{"days": "Tue"}]},
                         "queue": {"pollers": 2}});
        let keys: Vec<String> = changed_keys(&old, &new)
            .into_iter()
            .map(|(k, o, n)| format!("{k}: {o} → {n}"))
            .collect();
        assert_eq!(
            keys,
            vec![
                "throttle.rows_per_second: 500 → 800",
                "throttle.schedule[0].days: \"Mon\" → \"Tue\""
            ]
        );
    }

    #[test]
    fn a_list_that_changes_length_is_one_change() {
        let old = json!({"schedule": []});
        let new = json!({"schedule": [{"days": "Sat"}]});
        let changes = changed_keys(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, "schedule");
    }

    const BASE: &str = r#"
[queue]
url = "http://127.0.0.1:5000/123456789012/q"
[database]
url = "postgres://postgres@127.0.0.1:5432/db"
[throttle]
rows_per_second = 100
burst = 500
"#;

    fn config(text: &str) -> AgentConfig {
        AgentConfig::from_toml_with_env(text, Vec::new()).expect("valid")
    }

    #[tokio::test]
    async fn a_reload_applies_throttle_keys_and_names_the_ones_needing_a_restart() {
        let old = config(BASE);
        let throttle = Arc::new(
            Throttle::new(&old.throttle, LocalTime::now(), Instant::now()).expect("valid"),
        );
        let reloader = Reloader::new(throttle.clone(), old);
        let new = config(
            &BASE
                .replace("rows_per_second = 100", "rows_per_second = 250")
                .replace("[queue]", "[queue]\npollers = 4"),
        );
        let done = reloader.apply(new).expect("applied");
        assert_eq!(done.applied, vec!["throttle.rows_per_second: 100 → 250"]);
        assert_eq!(done.needs_restart, vec!["queue.pollers"]);
        assert_eq!(throttle.rate(), 250);
        // The restart-only change is still pending against what runs.
        let again = config(&BASE.replace("[queue]", "[queue]\npollers = 4"));
        let done = reloader.apply(again).expect("applied");
        assert_eq!(done.applied, vec!["throttle.rows_per_second: 250 → 100"]);
        assert_eq!(done.needs_restart, vec!["queue.pollers"]);
    }

    #[tokio::test]
    async fn the_in_flight_budget_is_not_reloaded_but_named_for_a_restart() {
        let old = config(BASE);
        let throttle = Arc::new(
            Throttle::new(&old.throttle, LocalTime::now(), Instant::now()).expect("valid"),
        );
        let reloader = Reloader::new(throttle, old);
        let new = config(&format!(
            "{BASE}\n[batch]\nmax_in_flight_rows = 20000\nmax_in_flight_bytes = 33554432\n"
        ));
        let done = reloader.apply(new).expect("applied");
        assert!(done.applied.is_empty(), "{:?}", done.applied);
        assert_eq!(
            done.needs_restart,
            vec!["batch.max_in_flight_bytes", "batch.max_in_flight_rows"]
        );
    }
}
