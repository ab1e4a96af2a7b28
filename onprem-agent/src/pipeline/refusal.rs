//! Systemic refusals: when PostgreSQL refuses every write the same way (a NOT NULL column
//! added by hand, a revoked permission, a trigger that raises for every row, an encoding
//! mismatch), dead-lettering row by row would empty the backlog into the DLQ. Instead the
//! agent stops receiving, releases what it holds, raises the `write_refused` condition, and
//! probes with backoff until a write commits again.
//!
//! Two ways to call a refusal systemic: a bisection that commits nothing while at least two
//! rows fail with one SQLSTATE (`pipeline::isolate`), or a one-row refusal with the same
//! SQLSTATE as the previous one with no commit in between (the first was dead-lettered as
//! the "first proof": a backlog under schema drift loses at most one receipt to the DLQ).
//!
//! The probe rewrites a few rows of the refused batch (idempotent: their messages come back
//! and count as duplicates) without receiving, so probing burns no receive counts. It runs
//! after each backoff delay, or at once on SIGHUP ([`Health::retry_now`]). A commit anywhere
//! clears the condition and resumes receiving.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::Receipt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::io::store::{Row, Store, StoreError};
use crate::ops::metrics as m;
use crate::pipeline::backoff::outage_backoff;
use crate::pipeline::health::Health;

/// The condition raised while every write is refused.
pub const WRITE_REFUSED: &str = "write_refused";

/// Rows kept from a refused batch to probe with.
const SAMPLE_ROWS: usize = 2;

/// A refused row kept for the probe, owned (its batch is released).
#[derive(Debug, Clone)]
pub struct SampleRow {
    receipt: Receipt,
    batch_id: String,
    chunk_index: u32,
}

impl SampleRow {
    pub fn of(row: &Row<'_>) -> Self {
        Self {
            receipt: row.receipt.clone(),
            batch_id: row.batch_id.to_owned(),
            chunk_index: row.chunk_index,
        }
    }

    fn row(&self) -> Row<'_> {
        Row {
            receipt: &self.receipt,
            batch_id: &self.batch_id,
            chunk_index: self.chunk_index,
        }
    }
}

/// Up to [`SAMPLE_ROWS`] of `rows`, owned.
pub fn sample<'r>(rows: impl IntoIterator<Item = &'r Row<'r>>) -> Vec<SampleRow> {
    rows.into_iter()
        .take(SAMPLE_ROWS)
        .map(SampleRow::of)
        .collect()
}

/// What the probe retries.
#[derive(Debug, Clone)]
struct Probe {
    code: String,
    sample: Vec<SampleRow>,
    delay: Duration,
}

#[derive(Debug)]
struct State {
    /// The SQLSTATE of the last one-row refusal since the last commit.
    streak: Option<String>,
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
                streak: None,
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
        let mut state = self.lock();
        state.streak = None;
        if !self.health.is_raised(WRITE_REFUSED) {
            return;
        }
        state.delays = outage_backoff();
        drop(state);
        self.probe.send_replace(None);
        self.health.resume_receiving();
        self.health.clear(WRITE_REFUSED);
    }

    /// A one-row batch was refused with `error`: whether the previous one-row refusal had the
    /// same SQLSTATE with no commit since (then this one is systemic, not the row's fault).
    pub fn repeats(&self, error: &StoreError) -> bool {
        let Some(code) = error.refused_code() else {
            return false;
        };
        let mut state = self.lock();
        let repeated = state.streak.as_deref() == Some(code);
        state.streak = Some(code.to_owned());
        repeated
    }

    /// Every write is refused with `error`: pause receiving, raise the condition (one ERROR),
    /// and schedule a probe with `sample` (none: the probe resumes receiving and lets the
    /// next batch try). While already paused this only keeps the newest sample.
    pub fn systemic(&self, error: &StoreError, sample: Vec<SampleRow>) {
        let code = error.refused_code().unwrap_or("").to_owned();
        self.health.pause_receiving();
        // The database answers: it is not down, and the outage gate must not hold the pollers
        // once the probe resumes receiving.
        self.health.db_up();
        self.health.raise(WRITE_REFUSED, reason(error));
        let already = self.probe.borrow().is_some();
        if already {
            self.probe.send_modify(|p| {
                if let Some(p) = p.as_mut().filter(|_| !sample.is_empty()) {
                    p.sample = sample;
                }
            });
            return;
        }
        let delay = self.next_delay();
        tracing::warn!(code = %code, retry_in = ?delay, "Every write is refused; receiving paused, held messages released.");
        self.probe.send_replace(Some(Probe {
            code,
            sample,
            delay,
        }));
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
        if probe.sample.is_empty() {
            // Nothing to probe with: let the next batch through; if it is refused the same
            // way, the writer pauses again with a longer delay.
            tracing::info!("Resuming receiving to retry refused writes.");
            self.probe.send_replace(None);
            self.health.resume_receiving();
            return;
        }
        let mut last = None;
        for s in &probe.sample {
            match store.write(&[s.row()], &[]).await {
                Ok(_) => {
                    tracing::info!("A probe write committed; writes are taken again.");
                    self.committed();
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if e.refused_code() == Some(probe.code.as_str()) => {
                let delay = self.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "Writes still refused; receiving stays paused.");
                self.health.raise(WRITE_REFUSED, reason(&e));
                self.probe.send_replace(Some(Probe { delay, ..probe }));
            }
            Some(e) if e.is_refused() => {
                // Refused another way: the cause changed; the writers sort the rows out.
                tracing::info!(error = %e, "The probe was refused another way; resuming receiving.");
                self.probe.send_replace(None);
                self.health.resume_receiving();
            }
            other => {
                let delay = self.next_delay();
                if let Some(e) = other {
                    tracing::warn!(error = %e, retry_in = ?delay, "Probe write failed; retrying.");
                }
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
    fn a_second_one_row_refusal_with_the_same_sqlstate_is_systemic_until_a_commit() {
        let r = Refusals::new(Health::new());
        assert!(
            !r.repeats(&refused("23502")),
            "the first is the row's fault"
        );
        assert!(r.repeats(&refused("23502")));
        assert!(
            !r.repeats(&refused("23514")),
            "another SQLSTATE starts over"
        );
        r.committed();
        assert!(
            !r.repeats(&refused("23514")),
            "a commit in between starts over"
        );
        assert!(!r.repeats(&StoreError::Unavailable("down".into())));
    }

    #[tokio::test]
    async fn systemic_pauses_receiving_and_a_commit_resumes_it() {
        let health = Health::new();
        let r = Refusals::new(health.clone());
        r.systemic(&refused("42501"), Vec::new());
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
