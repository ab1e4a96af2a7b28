//! Messages the agent holds: received and not yet deleted, dead-lettered or released.
//!
//! The heartbeat extends the visibility timeout of any message held longer than half of it, so
//! a slow batch (a long limiter wait, a database outage) does not let SQS hand the message to
//! someone else and raise its receive count. On shutdown, whatever is still here is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::io::sqs::{Handle, Queue};

#[derive(Debug)]
struct Tracked {
    handle: Handle,
    /// When the current visibility timeout started (receive or last extension).
    since: Instant,
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
        self.lock().insert(
            handle.receipt_handle.clone(),
            Tracked {
                handle: handle.clone(),
                since: Instant::now(),
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

    /// Removes and returns everything held.
    pub fn drain(&self) -> Vec<Handle> {
        self.lock().drain().map(|(_, t)| t.handle).collect()
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
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let due = inflight.take_due(half, Instant::now());
        if due.is_empty() {
            continue;
        }
        tracing::debug!(
            messages = due.len(),
            "Extending visibility of held messages."
        );
        for (h, reason) in queue.change_visibility(&due, secs).await {
            // Usually the message was deleted meanwhile; otherwise it will be redelivered and
            // the redelivery is absorbed by the idempotent write.
            tracing::warn!(message_id = %h.message_id, error = %reason, "Could not extend visibility.");
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
