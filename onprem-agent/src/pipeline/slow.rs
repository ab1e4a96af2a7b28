//! Batches that time out while the database takes other writes: a row whose trigger runs past
//! `database.statement_timeout_ms`, a receipt row another session holds locked. Retrying such a
//! batch as it is would hold a transaction slot (and its messages, their visibility extended up
//! to SQS's 12-hour cap) for ever, while everything behind it waits.
//!
//! Keeps the guarantee "A batch that always times out stalls nothing": after
//! [`TIMEOUTS_BEFORE_SPLIT`] timeouts in a row (SQLSTATE 57014 or 55P03) the writer checks with
//! the canary (`pipeline::refusal`) whether the database takes a plain receipt at once. If it
//! does not, the whole database is slow or locked: the batch keeps being retried with
//! backoff under `database_lock_wait`, as before. If it does, the fault is in this batch: it is
//! split into halves by message, each written on its own, so every message that can be
//! written is; a single message that still times out is released to the queue, visible
//! again after [`RELEASE_DELAY`], and named by the `slow_message` condition until it commits
//! (or has not been seen for [`FORGET_AFTER`]: SQS's redrive policy may have moved it to the
//! dead-letter queue after `maxReceiveCount` such releases).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline::health::{Health, SLOW_MESSAGE};

/// Timeouts in a row on one batch before the writer asks whether the batch is at fault.
pub const TIMEOUTS_BEFORE_SPLIT: u32 = 3;
/// How long a released slow message stays invisible before it is tried again.
pub const RELEASE_DELAY: Duration = Duration::from_secs(60);
/// A slow message not seen again for this long is no longer named (it was dead-lettered by
/// the queue's redrive policy, or deleted by hand).
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The messages released for timing out, by SQS message id, with when each was last released.
#[derive(Debug, Clone)]
pub struct SlowMessages {
    health: Health,
    released: Arc<Mutex<HashMap<String, (Instant, String)>>>,
}

impl SlowMessages {
    pub fn new(health: Health) -> Self {
        Self {
            health,
            released: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        // Every update leaves the map whole: a panic elsewhere cannot corrupt it.
        self.released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `message_id` timed out alone and was released; `error` is the database's last word.
    pub fn released(&self, message_id: &str, error: &dyn std::fmt::Display, now: Instant) {
        let mut released = self.lock();
        released.insert(message_id.to_owned(), (now, error.to_string()));
        self.show(&mut released, now);
    }

    /// A batch holding these messages committed: they are no longer slow.
    pub fn committed<'a>(&self, message_ids: impl IntoIterator<Item = &'a str>, now: Instant) {
        let mut released = self.lock();
        if released.is_empty() {
            return;
        }
        for id in message_ids {
            released.remove(id);
        }
        self.show(&mut released, now);
    }

    /// Forgets what has not been seen for [`FORGET_AFTER`], once a minute until `stop`: the
    /// condition clears even when nothing commits any more.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.committed([], Instant::now()),
            }
        }
    }

    /// Raises, refreshes or clears the condition from what is held.
    fn show(&self, released: &mut HashMap<String, (Instant, String)>, now: Instant) {
        released.retain(|_, (at, _)| now.saturating_duration_since(*at) < FORGET_AFTER);
        if released.is_empty() {
            self.health.clear(SLOW_MESSAGE);
            return;
        }
        let mut ids: Vec<&str> = released.keys().map(String::as_str).collect();
        ids.sort_unstable();
        let shown = ids.len().min(5);
        let more = ids.len() - shown;
        let last = released
            .values()
            .max_by_key(|(at, _)| *at)
            .map(|(_, e)| e.as_str())
            .unwrap_or_default();
        self.health.raise(
            SLOW_MESSAGE,
            format!(
                "{} message(s) time out on every write while the database takes other writes \
                 at once (a slow trigger on their rows, or a session holding their rows \
                 locked): {}{}; each is released to the queue and tried again every {} s, \
                 everything else is written. Last error: {last}. Find the session or trigger \
                 (pg_stat_activity, pg_locks) or raise database.statement_timeout_ms / \
                 lock_timeout_ms.",
                ids.len(),
                ids[..shown].join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                RELEASE_DELAY.as_secs(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_message_is_named_until_it_commits() {
        let health = Health::new();
        let slow = SlowMessages::new(health.clone());
        let t0 = Instant::now();
        slow.released("m-1", &"canceling statement due to statement timeout", t0);
        let shown = health.conditions();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].name, SLOW_MESSAGE);
        assert!(shown[0].reason.contains("m-1"), "{shown:?}");
        assert!(shown[0].reason.contains("statement timeout"), "{shown:?}");
        slow.committed(["m-2"], t0);
        assert!(health.is_raised(SLOW_MESSAGE), "another message's commit");
        slow.committed(["m-1"], t0);
        assert!(!health.is_raised(SLOW_MESSAGE));
    }

    #[test]
    fn a_message_not_seen_again_is_forgotten() {
        let health = Health::new();
        let slow = SlowMessages::new(health.clone());
        let t0 = Instant::now();
        slow.released("m-1", &"timeout", t0);
        slow.committed(["m-9"], t0 + FORGET_AFTER / 2);
        assert!(health.is_raised(SLOW_MESSAGE));
        slow.committed(["m-9"], t0 + FORGET_AFTER);
        assert!(!health.is_raised(SLOW_MESSAGE));
    }

    #[test]
    fn many_slow_messages_are_counted_not_all_listed() {
        let health = Health::new();
        let slow = SlowMessages::new(health.clone());
        let t0 = Instant::now();
        for i in 0..8 {
            slow.released(&format!("m-{i}"), &"timeout", t0);
        }
        let reason = &health.conditions()[0].reason;
        assert!(reason.starts_with("8 message(s)"), "{reason}");
        assert!(reason.contains("and 3 more"), "{reason}");
    }
}
