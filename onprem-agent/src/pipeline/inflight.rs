//! Messages the agent holds: received and not yet deleted, dead-lettered or released.
//!
//! Keeps the guarantees "Messages held long keep their visibility" and "Held messages are received
//! once": the heartbeat, below.
//!
//! The heartbeat extends the visibility timeout of any message held longer than half of it, so
//! a slow batch (a long limiter wait, a database outage) does not let SQS hand the message to
//! someone else and raise its receive count. Extensions go out in parallel groups of 10 (see
//! `io::sqs`). One that fails (the whole call, or single entries, after the call's own quick
//! retries) is tried again at every tick until a deadline a tenth of the timeout before the
//! message's visibility ends; past it the agent gives up on that message with a WARN and
//! `sluice_visibility_extension_failures_total` (its redelivery is absorbed by the idempotent
//! write). On shutdown, whatever is still here is released.
//!
//! [`InFlight::release`] is the one way the agent hands a message back to the queue (a batch
//! that cannot be written now, a message cut off by shutdown, an unknown envelope version, what
//! is left when the grace period ends): SQS is asked, the release is counted and the message is
//! no longer held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::io::sqs::{Handle, Queue};
use crate::telemetry::names as m;

#[derive(Debug)]
struct Tracked {
    handle: Handle,
    /// When the current visibility timeout started (receive or last extension).
    since: Instant,
    /// When the visibility timeout SQS last confirmed started (receive or last successful
    /// extension): the message lapses one timeout after this.
    confirmed: Instant,
}

/// The set of held messages, keyed by receipt handle (the same message can be delivered twice,
/// each delivery with its own handle).
#[derive(Debug, Default)]
pub struct InFlight {
    held: Mutex<HashMap<String, Tracked>>,
}

impl InFlight {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn track(&self, handle: &Handle) {
        let now = Instant::now();
        self.lock().insert(
            handle.receipt_handle.clone(),
            Tracked {
                handle: handle.clone(),
                since: now,
                confirmed: now,
            },
        );
    }

    pub fn untrack<'a>(&self, handles: impl IntoIterator<Item = &'a Handle>) {
        let mut held = self.lock();
        for h in handles {
            held.remove(&h.receipt_handle);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Handles held for at least `age` since their timeout last started; their clock restarts.
    fn take_due(&self, age: Duration, now: Instant) -> Vec<Handle> {
        let mut held = self.lock();
        held.values_mut()
            .filter(|t| now.saturating_duration_since(t.since) >= age)
            .map(|t| {
                t.since = now;
                t.handle.clone()
            })
            .collect()
    }

    /// The extension of `handles` that started at `at` succeeded except for `failed`: the
    /// others' visibility now runs from `at`. Each failed one still held is due again at the
    /// next tick while `now` is before its deadline (`timeout - margin` after its last confirmed
    /// start); the ones past it are returned: the agent gives up on extending them.
    fn settle(
        &self,
        handles: &[Handle],
        failed: &[Handle],
        at: Instant,
        now: Instant,
        timeout: Duration,
        margin: Duration,
    ) -> Vec<Handle> {
        let failed_set: std::collections::HashSet<&str> =
            failed.iter().map(|h| h.receipt_handle.as_str()).collect();
        let mut held = self.lock();
        for h in handles {
            if failed_set.contains(h.receipt_handle.as_str()) {
                continue;
            }
            if let Some(t) = held.get_mut(&h.receipt_handle) {
                t.confirmed = at;
            }
        }
        let mut given_up = Vec::new();
        for h in failed {
            let Some(t) = held.get_mut(&h.receipt_handle) else {
                // Deleted or released meanwhile: nothing to extend.
                continue;
            };
            if now < t.confirmed + timeout.saturating_sub(margin) {
                // Due at the next tick: its clock is put back past the age `take_due` asks.
                t.since = now.checked_sub(timeout).unwrap_or(t.confirmed);
            } else {
                given_up.push(h.clone());
            }
        }
        given_up
    }

    /// Removes and returns everything held.
    fn drain(&self) -> Vec<Handle> {
        self.lock().drain().map(|(_, t)| t.handle).collect()
    }

    /// Hands `handles` back to the queue, visible again after `delay` (zero: at once), and
    /// stops holding them. A release SQS refuses is logged: that message comes back when its
    /// visibility timeout ends instead.
    pub async fn release(&self, queue: &Queue, handles: &[Handle], delay: Duration) {
        if handles.is_empty() {
            return;
        }
        let secs = u32::try_from(delay.as_secs()).unwrap_or(u32::MAX);
        for (h, e) in queue.change_visibility(handles, secs).await {
            tracing::warn!(message_id = %h.message_id, error = %e, "Could not release a message; it returns after its visibility timeout.");
        }
        metrics::counter!(m::MESSAGES_RELEASED).increment(handles.len() as u64);
        self.untrack(handles);
    }

    /// Releases everything still held (the end of shutdown's grace period); returns how many.
    pub async fn release_all(&self, queue: &Queue) -> usize {
        let left = self.drain();
        self.release(queue, &left, Duration::ZERO).await;
        left.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        // A panic while holding this lock cannot leave the map inconsistent (single calls).
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Extends the visibility of held messages past half their timeout, until `stop`.
pub async fn heartbeat(
    queue: Queue,
    inflight: Arc<InFlight>,
    visibility_timeout: Duration,
    stop: CancellationToken,
) {
    let half = visibility_timeout / 2;
    // Check often enough that an extension is never more than a tenth of the timeout late.
    let tick = (visibility_timeout / 10).max(Duration::from_millis(500));
    let secs = u32::try_from(visibility_timeout.as_secs()).unwrap_or(u32::MAX);
    // How long the last round of extensions took: the next one starts that much earlier (up to
    // a quarter of the timeout), so the last group of a long round still lands in time.
    let mut lead = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let at = Instant::now();
        let due = inflight.take_due(half.saturating_sub(lead), at);
        if due.is_empty() {
            continue;
        }
        tracing::debug!(
            messages = due.len(),
            "Extending visibility of held messages."
        );
        let failed = queue.change_visibility(&due, secs).await;
        metrics::counter!(m::VISIBILITY_EXTENSIONS)
            .increment(due.len().saturating_sub(failed.len()) as u64);
        lead = at.elapsed().min(visibility_timeout / 4);
        let reasons: std::collections::HashMap<&str, &str> = failed
            .iter()
            .map(|(h, r)| (h.receipt_handle.as_str(), r.as_str()))
            .collect();
        let failed_handles: Vec<Handle> = failed.iter().map(|(h, _)| h.clone()).collect();
        let given_up = inflight.settle(
            &due,
            &failed_handles,
            at,
            Instant::now(),
            visibility_timeout,
            tick.max(visibility_timeout / 10),
        );
        if failed.len() > given_up.len() {
            tracing::debug!(
                failed = failed.len() - given_up.len(),
                "Visibility extensions failed; retrying at the next tick."
            );
        }
        for h in given_up {
            // Usually the message was deleted meanwhile; otherwise it will be redelivered and
            // the redelivery is absorbed by the idempotent write.
            metrics::counter!(m::VISIBILITY_EXTENSION_FAILURES).increment(1);
            let reason = reasons
                .get(h.receipt_handle.as_str())
                .copied()
                .unwrap_or("");
            tracing::warn!(message_id = %h.message_id, error = %reason, "Could not extend visibility before it lapses; the message may be received again.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u32) -> Handle {
        Handle {
            message_id: format!("m{n}"),
            receipt_handle: format!("r{n}"),
        }
    }

    #[test]
    fn only_messages_held_past_the_age_are_due_and_their_clock_restarts() {
        let f = InFlight::default();
        f.track(&h(1));
        let later = Instant::now() + Duration::from_secs(31);
        assert_eq!(f.take_due(Duration::from_secs(30), later), vec![h(1)]);
        assert!(f.take_due(Duration::from_secs(30), later).is_empty());
        f.untrack([&h(1)]);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_failed_extension_is_due_again_until_its_deadline_then_given_up() {
        let f = InFlight::default();
        f.track(&h(1));
        f.track(&h(2));
        let timeout = Duration::from_secs(30);
        let margin = Duration::from_secs(3);
        let t0 = Instant::now() + Duration::from_secs(15);
        let due = f.take_due(timeout / 2, t0);
        assert_eq!(due.len(), 2);
        // h(2) failed: due again at the next tick; h(1) succeeded and is not.
        assert!(f.settle(&due, &[h(2)], t0, t0, timeout, margin).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(f.take_due(timeout / 2, t1), vec![h(2)]);
        // Still failing past 27 s after its receive: given up.
        let late = t0 + Duration::from_secs(13);
        assert_eq!(
            f.settle(&[h(2)], &[h(2)], t1, late, timeout, margin),
            vec![h(2)]
        );
        // A failure for a message no longer held (deleted meanwhile) is nothing to retry.
        f.untrack([&h(2)]);
        assert!(f
            .settle(&[], &[h(2)], late, late, timeout, margin)
            .is_empty());
    }

    #[test]
    fn two_deliveries_of_one_message_are_tracked_apart() {
        let f = InFlight::default();
        let a = h(1);
        let b = Handle {
            receipt_handle: "other".into(),
            ..h(1)
        };
        f.track(&a);
        f.track(&b);
        assert_eq!(f.len(), 2);
        f.untrack([&a]);
        assert_eq!(f.drain(), vec![b]);
    }
}
