//! Systemic refusals: when PostgreSQL refuses every write the same way (a NOT NULL column
//! added by hand, a revoked permission, a trigger that raises for every row), dead-lettering
//! row by row would empty the backlog into the DLQ. Instead the agent stops receiving, releases
//! what it holds, raises the `write_refused` condition, and probes with backoff until writes
//! are taken again.
//!
//! Keeps the guarantee "A database that refuses every row does not empty the backlog into the DLQ":
//! the canary, below.
//!
//! Rows refused with one SQLSTATE while nothing commits are only a suspicion (they may all be
//! bad). The canary settles it: a plain synthetic receipt inserted in a transaction that is
//! rolled back (nothing is left behind). Refused the same way, the fault is the database's and
//! nothing is dead-lettered; taken, the rows are at fault and go to the DLQ one by one.
//!
//! The probe is the canary again, after each backoff delay or at once on SIGHUP
//! ([`Health::retry_now`]); it receives nothing, so probing burns no receive counts. When the
//! canary is taken receiving resumes; the first batch that commits clears the condition (a
//! batch refused the same way pauses again, with a longer delay).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::Receipt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::io::store::{Row, Store, StoreError};
use crate::pipeline::backoff::outage_backoff;
use crate::pipeline::health::{Health, WRITE_REFUSED};
use crate::telemetry::names as m;

/// The canary's receipt: every required field, plain values, an id no upload uses.
const CANARY: &str = r#"{"receipt_id": "00000000-0000-4000-8000-000000000000",
    "tenant_id": "sluice-canary", "merchant": "sluice canary", "issued_on": "2000-01-01",
    "currency": "EUR", "total": "0"}"#;

/// Whether the database takes a plain receipt: `Ok(None)` if so, the refusal if not.
/// Errors that are not a refusal (an outage) are returned as errors.
pub async fn canary(store: &Store) -> Result<Option<StoreError>, StoreError> {
    let receipt: Receipt = serde_json::from_str(CANARY)
        .map_err(|e| StoreError::Unavailable(format!("canary receipt: {e}")))?;
    let row = Row {
        receipt: &receipt,
        batch_id: "00000000-0000-4000-8000-000000000000",
        chunk_index: 0,
        photo: None,
    };
    match store.try_write(&[row]).await {
        Ok(()) => Ok(None),
        Err(e) if e.is_refused() => Ok(Some(e)),
        Err(e) => Err(e),
    }
}

/// What the probe retries.
#[derive(Debug, Clone)]
struct Probe {
    code: String,
    delay: Duration,
}

#[derive(Debug)]
struct State {
    /// Delays between probes; reset by a commit.
    delays: backon::ExponentialBackoff,
}

/// Shared by the writers and the probe task.
#[derive(Debug)]
pub struct Refusals {
    health: Health,
    state: Mutex<State>,
    /// `Some` while writes are refused and a probe is due.
    probe: watch::Sender<Option<Probe>>,
}

impl Refusals {
    pub fn new(health: Health) -> Arc<Self> {
        Arc::new(Self {
            health,
            state: Mutex::new(State {
                delays: outage_backoff(),
            }),
            probe: watch::Sender::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A transaction committed: writes are taken. Clears the condition and resumes receiving.
    pub fn committed(&self) {
        if !self.health.is_raised(WRITE_REFUSED) {
            return;
        }
        self.lock().delays = outage_backoff();
        self.probe.send_replace(None);
        self.health.resume_receiving();
        self.health.clear(WRITE_REFUSED);
    }

    /// Every write is refused with `error` (the canary was refused the same way): pause
    /// receiving, raise the condition (one ERROR) and schedule a probe. While already paused
    /// this only refreshes the reason.
    pub fn systemic(&self, error: &StoreError) {
        let code = error.refused_code().unwrap_or("").to_owned();
        self.health.pause_receiving();
        // The database answers: it is not down, and the outage gate must not hold the pollers
        // once the probe resumes receiving.
        self.health.db_up();
        self.health.raise(WRITE_REFUSED, reason(error));
        if self.probe.borrow().is_some() {
            return;
        }
        let delay = self.next_delay();
        tracing::warn!(code = %code, retry_in = ?delay, "Every write is refused; receiving paused, held messages released.");
        self.probe.send_replace(Some(Probe { code, delay }));
    }

    fn next_delay(&self) -> Duration {
        self.lock().delays.next().unwrap_or(Duration::from_secs(30))
    }

    /// Probes while writes are refused, until `stop`.
    pub async fn run(self: Arc<Self>, store: Store, stop: CancellationToken) {
        let mut rx = self.probe.subscribe();
        loop {
            let probe = tokio::select! {
                _ = stop.cancelled() => return,
                p = rx.wait_for(Option::is_some) => match p {
                    Ok(p) => p.clone(),
                    Err(_) => return,
                },
            };
            let Some(probe) = probe else { continue };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(probe.delay) => {}
                _ = self.health.retry_requested() => {
                    tracing::info!("Retrying refused writes now (SIGHUP).");
                }
            }
            // A commit elsewhere may have cleared it while waiting.
            if self.probe.borrow().is_none() {
                continue;
            }
            self.probe_once(&store, probe).await;
        }
    }

    async fn probe_once(&self, store: &Store, probe: Probe) {
        metrics::counter!(m::WRITE_PROBES).increment(1);
        match canary(store).await {
            Ok(None) => {
                // Taken: let the writers try the real rows; a commit clears the condition.
                tracing::info!("The database takes writes again; resuming receiving.");
                self.probe.send_replace(None);
                self.health.resume_receiving();
            }
            Ok(Some(e)) if e.refused_code() == Some(probe.code.as_str()) => {
                let delay = self.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "Writes still refused; receiving stays paused.");
                self.health.raise(WRITE_REFUSED, reason(&e));
                self.probe.send_replace(Some(Probe { delay, ..probe }));
            }
            Ok(Some(e)) => {
                // Refused another way: the cause changed; the writers sort the rows out.
                tracing::info!(error = %e, "The canary was refused another way; resuming receiving.");
                self.probe.send_replace(None);
                self.health.resume_receiving();
            }
            Err(e) => {
                let delay = self.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "Probe write failed; retrying.");
                self.probe.send_replace(Some(Probe { delay, ..probe }));
            }
        }
    }
}

/// The condition's reason: the database's words and what to do.
pub fn reason(error: &StoreError) -> String {
    let code = error.refused_code().unwrap_or("");
    format!(
        "PostgreSQL refuses every write: {error}. {} Receiving is paused and held messages are \
         released to the queue (nothing is lost or dead-lettered); the agent retries by itself \
         with backoff, or at once on SIGHUP (systemctl reload).",
        hint(code)
    )
}

/// What to do about a systemic refusal, by SQLSTATE.
fn hint(code: &str) -> &'static str {
    match code {
        "42501" => "Grant the agent's database role INSERT and SELECT on its tables.",
        "23502" => {
            "A NOT NULL column without a default was added to an agent table: give it a \
             DEFAULT or drop NOT NULL."
        }
        "P0001" => {
            "A trigger or rule on the agent's tables raises this for every row: fix or disable it."
        }
        c if c.starts_with("42") => {
            "The agent's tables differ from its migrations (changed by hand): undo the change or \
             run `sluice-agent migrate`."
        }
        c if c.starts_with("22") => {
            "Every row's values are refused (an encoding or column type changed): check the \
             database's encoding and the agent's tables."
        }
        _ => "Fix the cause in the database.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str) -> StoreError {
        StoreError::Refused {
            code: code.into(),
            message: "no".into(),
        }
    }

    #[test]
    fn the_canary_is_a_valid_receipt() {
        let r: Receipt = serde_json::from_str(CANARY).expect("valid");
        assert!(r.validate(0).is_ok(), "{:?}", r.validate(0));
    }

    #[tokio::test]
    async fn systemic_pauses_receiving_and_a_commit_resumes_it() {
        let health = Health::new();
        let r = Refusals::new(health.clone());
        r.systemic(&refused("42501"));
        assert!(!health.may_receive());
        let conditions = health.conditions();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].name, WRITE_REFUSED);
        assert!(conditions[0].reason.contains("42501"), "{conditions:?}");
        assert!(conditions[0].reason.contains("Grant"), "{conditions:?}");
        r.committed();
        assert!(health.may_receive());
        assert!(health.conditions().is_empty());
    }

    #[test]
    fn every_hint_names_an_action() {
        for code in ["42501", "23502", "P0001", "42703", "22021", "XX000"] {
            let h = reason(&refused(code));
            assert!(h.contains(code) && h.contains("SIGHUP"), "{h}");
        }
    }
}
