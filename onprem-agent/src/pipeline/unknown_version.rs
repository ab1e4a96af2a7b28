//! Messages in an envelope version this agent does not read (a rolling upgrade: the ingest is
//! newer than the agent). They are not poison: each is handed back to the queue untouched with
//! a delay ([`RELEASE_DELAY`]) so an upgraded agent can take it and this one does not spin on
//! it; counted in `sluice_messages_unknown_version_total`; one ERROR per version saying to
//! upgrade; and the condition `envelope_version_unknown` while they keep coming, cleared after
//! [`CLEAR_AFTER`] without one.
//!
//! Keeps the guarantee "A rolling upgrade of the ingest loses nothing".

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_protocol::envelope::{ENVELOPE_VERSION, ENVELOPE_VERSION_NEWEST};

use crate::pipeline::health::{Health, ENVELOPE_VERSION_UNKNOWN};
use crate::telemetry::names as m;

/// Visibility given to a released unknown-version message: long enough not to hot-loop on it
/// (each receive counts towards the queue's `maxReceiveCount`: 5 receives are 75 minutes to
/// upgrade the agents before SQS's redrive moves it), short enough to be taken soon after.
pub const RELEASE_DELAY: Duration = Duration::from_secs(15 * 60);
/// The condition clears after this long without an unknown-version message: longer than the
/// release delay, so a released message that comes back keeps it raised.
pub const CLEAR_AFTER: Duration = Duration::from_secs(16 * 60);

/// What the pollers share about unknown versions seen.
#[derive(Debug, Default)]
pub struct VersionWatch {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Versions already reported with an ERROR.
    reported: BTreeSet<u32>,
    /// When the last unknown-version message arrived.
    last_seen: Option<Instant>,
}

impl VersionWatch {
    /// Records a message in `version`: counts it, logs an ERROR the first time this version is
    /// seen, and raises the condition.
    pub fn seen(&self, version: u32, health: &Health, now: Instant) {
        metrics::counter!(m::MESSAGES_UNKNOWN_VERSION).increment(1);
        let first = {
            let mut st = self.lock();
            st.last_seen = Some(now);
            st.reported.insert(version)
        };
        if first {
            tracing::error!(
                version,
                reads = %format_args!("{ENVELOPE_VERSION}-{ENVELOPE_VERSION_NEWEST}"),
                "Messages arrive in envelope version {version}, which this agent does not read: upgrade the agent. They are released to the queue untouched, not dead-lettered."
            );
        }
        health.raise(
            ENVELOPE_VERSION_UNKNOWN,
            format!(
                "messages in envelope version {version} arrive; this agent reads versions \
                 {ENVELOPE_VERSION} to {ENVELOPE_VERSION_NEWEST}: upgrade the agent (they stay on the queue meanwhile)"
            ),
        );
    }

    /// Clears the condition once no unknown-version message has come for [`CLEAR_AFTER`].
    pub fn tick(&self, health: &Health, now: Instant) {
        let quiet = self
            .lock()
            .last_seen
            .is_some_and(|t| now.saturating_duration_since(t) >= CLEAR_AFTER);
        if quiet {
            health.clear(ENVELOPE_VERSION_UNKNOWN);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Single inserts and assignments: a panic cannot leave the state half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_is_raised_per_message_and_clears_after_a_quiet_while() {
        let w = VersionWatch::default();
        let h = Health::new();
        let t0 = Instant::now();
        w.seen(2, &h, t0);
        w.seen(2, &h, t0);
        assert!(h.is_raised(ENVELOPE_VERSION_UNKNOWN));
        assert_eq!(w.lock().reported.len(), 1, "one report per version");
        w.tick(&h, t0 + CLEAR_AFTER - Duration::from_secs(1));
        assert!(h.is_raised(ENVELOPE_VERSION_UNKNOWN));
        w.tick(&h, t0 + CLEAR_AFTER);
        assert!(!h.is_raised(ENVELOPE_VERSION_UNKNOWN));
    }

    #[test]
    fn the_delay_is_a_valid_visibility_timeout_shorter_than_the_clearing() {
        assert!(RELEASE_DELAY < CLEAR_AFTER);
        assert!(RELEASE_DELAY <= Duration::from_secs(43_200));
    }
}
