//! The in-flight budget: how much the agent holds at once, in receipts
//! (`batch.max_in_flight_rows`) and in decoded bytes (`batch.max_in_flight_bytes`).
//!
//! Keeps the guarantees "Memory is bounded" and "Memory is bounded in bytes, whatever the receipts'
//! size".
//!
//! A message is admitted once it is decoded, charged its receipts and the length of its JSON
//! once decompressed (a cheap measure of what holding it costs), and gives both back when it is
//! settled (deleted, released or dead-lettered): its [`Share`] is dropped with it. Pollers
//! receive only while there is room, so memory stays bounded whatever the backlog.
//!
//! A message larger than a whole budget is charged the whole budget: it is admitted alone, once
//! everything else held has been settled. With a valid configuration this cannot happen for
//! bytes (`check-config` refuses a byte budget below the largest message the protocol decodes),
//! and [`Budget::held_bytes`] counts the real size, so `sluice_in_flight_bytes_max` would show it.
//!
//! Decoding a message takes a few times its size for a moment (the JSON, its tree, the
//! receipts), before its size is known: [`Budget::decoding`] lets one poller do it at a time,
//! and the poller keeps that turn until its message is admitted. So besides the budget the
//! agent holds at most one decoded, not yet admitted message, however many pollers it runs.
//!
//! Nothing here can deadlock: what is admitted is only ever waited on by writers, which settle
//! it without taking any budget, so a poller waiting for room always gets it.

use std::sync::{Arc, Mutex};

use tokio::sync::{AcquireError, MutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::telemetry::names as m;

/// The budget shared by the pollers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Budget {
    rows: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_rows: usize,
    max_bytes: usize,
    held: Arc<Mutex<Held>>,
    decoding: Arc<tokio::sync::Mutex<()>>,
}

/// What is held now, in real sizes (not clamped to the budget), and the most bytes ever held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held {
    rows: usize,
    bytes: usize,
    max_bytes: usize,
}

/// One admitted message's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Share {
    rows: usize,
    bytes: usize,
    held: Arc<Mutex<Held>>,
    _rows: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `max_rows` receipts and `max_bytes` decoded bytes (each at least 1).
    pub fn new(max_rows: u32, max_bytes: u64) -> Self {
        let max_rows = usize::try_from(max_rows).unwrap_or(usize::MAX).max(1);
        let max_bytes = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        let budget = Self {
            rows: Arc::new(Semaphore::new(max_rows.min(Semaphore::MAX_PERMITS))),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_rows,
            max_bytes,
            held: Arc::new(Mutex::new(Held::default())),
            decoding: Arc::new(tokio::sync::Mutex::new(())),
        };
        publish(&budget.held());
        budget
    }

    /// Waits until at least one receipt and one byte are free: the gate before a receive.
    pub async fn room(&self) -> Result<(), AcquireError> {
        drop(self.rows.acquire().await?);
        drop(self.bytes.acquire().await?);
        Ok(())
    }

    /// Waits for the turn to decode a message; keep it until the message is admitted.
    pub async fn decoding(&self) -> MutexGuard<'_, ()> {
        self.decoding.lock().await
    }

    /// Waits until a message of `rows` receipts and `bytes` decoded bytes fits, and charges it.
    pub async fn admit(&self, rows: usize, bytes: usize) -> Result<Share, AcquireError> {
        // Always rows then bytes: every waiter takes them in the same order.
        let rows_permit = self
            .rows
            .clone()
            .acquire_many_owned(charge(rows, self.max_rows))
            .await?;
        let bytes_permit = self
            .bytes
            .clone()
            .acquire_many_owned(charge(bytes, self.max_bytes))
            .await?;
        let mut held = lock(&self.held);
        held.rows += rows;
        held.bytes += bytes;
        held.max_bytes = held.max_bytes.max(held.bytes);
        publish(&held);
        drop(held);
        Ok(Share {
            rows,
            bytes,
            held: self.held.clone(),
            _rows: rows_permit,
            _bytes: bytes_permit,
        })
    }

    /// Decoded bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.held().bytes
    }

    /// Receipts held now.
    #[cfg(test)]
    pub fn held_rows(&self) -> usize {
        self.held().rows
    }

    /// The most decoded bytes held at once since the start.
    #[cfg(test)]
    pub fn max_held_bytes(&self) -> usize {
        self.held().max_bytes
    }

    fn held(&self) -> Held {
        *lock(&self.held)
    }
}

impl Share {
    /// The decoded bytes this message is charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        // Runs before the permits are returned: the counts never exceed what is charged.
        let mut held = lock(&self.held);
        held.rows = held.rows.saturating_sub(self.rows);
        held.bytes = held.bytes.saturating_sub(self.bytes);
        publish(&held);
    }
}

/// Permits for a message of `size`: at least one, at most the whole budget.
fn charge(size: usize, max: usize) -> u32 {
    u32::try_from(size.clamp(1, max)).unwrap_or(u32::MAX)
}

/// The gauges, set under the lock so that concurrent updates land in order.
fn publish(held: &Held) {
    metrics::gauge!(m::IN_FLIGHT_ROWS).set(held.rows as f64);
    metrics::gauge!(m::IN_FLIGHT_BYTES).set(held.bytes as f64);
    metrics::gauge!(m::IN_FLIGHT_BYTES_MAX).set(held.max_bytes as f64);
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    // Plain arithmetic under the lock: a panic cannot leave it inconsistent.
    held.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// True when `fut` is still pending after the runtime has run everything else.
    async fn pending<F: std::future::Future>(fut: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), fut)
            .await
            .is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_bound_what_is_held_and_come_back_when_a_share_is_dropped() {
        let budget = Budget::new(10_000, 1000);
        let a = budget.admit(1, 600).await.expect("fits");
        assert_eq!((budget.held_rows(), budget.held_bytes()), (1, 600));
        // 600 + 500 > 1000: waits, however many rows are free.
        assert!(pending(budget.admit(1, 500)).await);
        drop(a);
        let b = budget.admit(1, 500).await.expect("fits once a is settled");
        assert_eq!(budget.held_bytes(), 500);
        assert_eq!(budget.max_held_bytes(), 600);
        drop(b);
        assert_eq!((budget.held_rows(), budget.held_bytes()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn rows_still_bound_what_is_held() {
        let budget = Budget::new(10, 1 << 20);
        let _a = budget.admit(8, 100).await.expect("fits");
        assert!(pending(budget.admit(3, 100)).await);
        assert!(!pending(budget.admit(2, 100)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_larger_than_the_budget_is_admitted_alone() {
        let budget = Budget::new(10_000, 1000);
        let small = budget.admit(1, 10).await.expect("fits");
        let big = budget.clone();
        let waiting = tokio::spawn(async move { big.admit(1, 5000).await.map(|s| s.bytes) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "admitted while another is held");
        drop(small);
        assert_eq!(waiting.await.expect("joins").expect("admitted"), 5000);
        // Its real size is what the high-water mark shows.
        assert_eq!(budget.max_held_bytes(), 5000);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn room_waits_for_a_free_byte_and_takes_nothing() {
        let budget = Budget::new(10, 100);
        let full = budget.admit(1, 100).await.expect("fits");
        assert!(pending(budget.room()).await);
        drop(full);
        budget.room().await.expect("room");
        assert_eq!(budget.held_bytes(), 0);
        assert!(!pending(budget.admit(10, 100)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn one_poller_decodes_at_a_time() {
        let budget = Budget::new(10, 100);
        let turn = budget.decoding().await;
        assert!(pending(budget.decoding()).await);
        drop(turn);
        assert!(!pending(budget.decoding()).await);
    }
}
