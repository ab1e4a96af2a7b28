//! Whether the agent can make progress, and why not. Two kinds of state live here:
//!
//! - **Database up**: writers set it from what their transactions see; pollers wait on it, so
//!   nothing new is received while PostgreSQL is down (no receive-count burn that would push
//!   good data into the dead-letter queue).
//! - **Receiving paused**: set while every write is refused (a systemic fault, see
//!   `pipeline::refusal`); pollers wait on it like on the database, and writers release what
//!   they get instead of writing it. `retry_now` (SIGHUP) asks for an early retry.
//! - **Conditions**: named faults that need an operator or will clear by themselves (a
//!   dead-letter queue that refuses sends, a systemic write fault, an envelope version this agent
//!   does not know). Each is raised with a reason and cleared when the cause goes; while any is
//!   raised `/readyz` answers 503 naming it, `status` shows it, `sluice_condition{condition}` is
//!   1, and one ERROR is logged when it is raised (one INFO when it clears).
//!
//! Keeps the guarantee "While PostgreSQL is down nothing is received": the pollers wait on
//! "database up".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::io::sqs::SqsError;
use crate::telemetry::names as m;

/// The dead-letter queue cannot be read (missing, no permission) or refused a send: what must
/// be dead-lettered stays on the main queue (released, not deleted) until it takes messages.
pub const DEAD_LETTER_UNAVAILABLE: &str = "dead_letter_unavailable";
/// Messages arrived in an envelope version this agent does not read: they are released to the
/// queue untouched until an upgraded agent takes them.
pub const ENVELOPE_VERSION_UNKNOWN: &str = "envelope_version_unknown";
/// Writes wait on a lock or run past `database.statement_timeout_ms` (SQLSTATE 55P03 or
/// 57014): someone holds the agent's tables. Retried with backoff; clears on the next commit.
pub const DATABASE_LOCK_WAIT: &str = "database_lock_wait";
/// A message's write times out again and again while the database takes other writes at once
/// (a slow trigger on its rows, a session holding them locked): it is released to the queue
/// with a delay, everything else written (`pipeline::slow`).
pub const SLOW_MESSAGE: &str = "slow_message";
/// No heartbeat of this agent went through the `agents` table within its lease: the other
/// agents may already have taken its share of the budget, so it writes nothing until one does
/// (`throttle::share`).
pub const BUDGET_LEASE_LAPSED: &str = "budget_lease_lapsed";
/// PostgreSQL refuses every write the same way (schema drift, a revoked permission): receiving
/// is paused until a probe write is taken (`pipeline::refusal`).
pub const WRITE_REFUSED: &str = "write_refused";

/// The photo bucket cannot be asked (unreachable, a 5xx, access denied) or a photo file cannot
/// be written: batches holding carried photos are retried with backoff, nothing deleted or
/// dead-lettered; clears on the next batch whose photos are fetched (`pipeline::photos`).
pub const PHOTO_STORE_UNAVAILABLE: &str = "photo_store_unavailable";
/// Messages hold photos the bridge carries and this agent has no `[photos]` section: they are
/// released to the queue, never stored without their photos, until the agent restarts with one.
pub const PHOTOS_NOT_CONFIGURED: &str = "photos_not_configured";

/// A raised condition, as `/readyz` and `/v1/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// A stable name, such as `dead_letter_unavailable`.
    pub name: String,
    /// What is wrong and what to do, in the operator's words.
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Health {
    db_up: watch::Sender<bool>,
    receiving_paused: watch::Sender<bool>,
    retry: Arc<Notify>,
    conditions: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            db_up: watch::Sender::new(true),
            receiving_paused: watch::Sender::new(false),
            retry: Arc::default(),
            conditions: Arc::default(),
        }
    }

    /// A dead-letter send succeeded: the dead-letter queue takes messages again.
    pub fn dead_letter_sent(&self) {
        self.clear(DEAD_LETTER_UNAVAILABLE);
    }

    /// A dead-letter send failed: counted, and `dead_letter_unavailable` raised with the SQS
    /// error (one ERROR until it clears).
    pub fn dead_letter_failed(&self, error: &SqsError) {
        metrics::counter!(m::DEAD_LETTER_FAILURES).increment(1);
        self.raise(
            DEAD_LETTER_UNAVAILABLE,
            format!(
                "cannot send to the dead-letter queue: {error}. What should go there stays on the \
                 main queue and comes back (nothing is lost); check queue.dead_letter_url, the \
                 agent's sqs:SendMessage permission on it, and its MaximumMessageSize."
            ),
        );
    }

    pub fn db_is_up(&self) -> bool {
        *self.db_up.borrow()
    }

    /// Marks the database down; logs only on the transition.
    pub fn db_down(&self, error: &dyn std::fmt::Display) {
        if self.db_up.send_replace(false) {
            tracing::error!(error = %error, "PostgreSQL is not taking writes; receiving paused, retrying with backoff.");
            metrics::gauge!(m::DB_UP).set(0.0);
        }
    }

    /// Marks the database up; logs only on the transition.
    pub fn db_up(&self) {
        if !self.db_up.send_replace(true) {
            tracing::info!("PostgreSQL is taking writes again; receiving resumed.");
            metrics::gauge!(m::DB_UP).set(1.0);
        }
    }

    /// Resolves once the database is up.
    pub async fn wait_db_up(&self) {
        let mut rx = self.db_up.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }

    /// Stops the pollers from receiving (they wait as while the database is down).
    pub fn pause_receiving(&self) {
        self.receiving_paused.send_replace(true);
    }

    pub fn resume_receiving(&self) {
        self.receiving_paused.send_replace(false);
    }

    pub fn receiving_paused(&self) -> bool {
        *self.receiving_paused.borrow()
    }

    /// Whether the pollers may receive: the database is up and receiving is not paused.
    pub fn may_receive(&self) -> bool {
        self.db_is_up() && !self.receiving_paused()
    }

    /// Resolves once [`Health::may_receive`].
    pub async fn wait_may_receive(&self) {
        let mut paused = self.receiving_paused.subscribe();
        while !self.may_receive() {
            self.wait_db_up().await;
            let _ = paused.wait_for(|p| !*p).await;
        }
    }

    /// Asks whatever waits in [`Health::retry_requested`] to retry now (SIGHUP).
    pub fn retry_now(&self) {
        self.retry.notify_waiters();
    }

    /// Resolves at the next [`Health::retry_now`].
    pub async fn retry_requested(&self) {
        self.retry.notified().await;
    }

    /// Raises condition `name` with `reason` (replacing an earlier reason). Logs one ERROR
    /// when the condition was not raised before.
    pub fn raise(&self, name: &'static str, reason: impl Into<String>) {
        let reason = reason.into();
        let was = self.lock().insert(name, reason.clone()).is_some();
        if !was {
            tracing::error!(condition = name, reason = %reason, "Condition raised; /readyz answers 503 until it clears.");
            metrics::gauge!(m::CONDITION, "condition" => name).set(1.0);
        }
    }

    /// Clears condition `name`; logs one INFO when it was raised.
    pub fn clear(&self, name: &'static str) {
        if self.lock().remove(name).is_some() {
            tracing::info!(condition = name, "Condition cleared.");
            metrics::gauge!(m::CONDITION, "condition" => name).set(0.0);
        }
    }

    pub fn is_raised(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The raised conditions, by name.
    pub fn conditions(&self) -> Vec<Condition> {
        self.lock()
            .iter()
            .map(|(name, reason)| Condition {
                name: (*name).to_owned(),
                reason: reason.clone(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_is_listed_until_cleared() {
        let h = Health::new();
        assert!(h.conditions().is_empty());
        h.raise("dead_letter_unavailable", "SendMessage refused");
        h.raise("dead_letter_unavailable", "queue does not exist");
        assert!(h.is_raised("dead_letter_unavailable"));
        assert_eq!(
            h.conditions(),
            vec![Condition {
                name: "dead_letter_unavailable".into(),
                reason: "queue does not exist".into()
            }]
        );
        h.clear("dead_letter_unavailable");
        assert!(h.conditions().is_empty());
        assert!(!h.is_raised("dead_letter_unavailable"));
    }
}
