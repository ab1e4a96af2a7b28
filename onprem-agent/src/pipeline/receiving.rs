//! The pollers' receives still on their way, so that shutdown releases nothing while one is.
//!
//! SQS hides a message, and counts one more receive of it, the moment it answers a
//! `ReceiveMessage`. A message released at shutdown (visibility 0) while a receive of this
//! agent is still waiting is taken by that receive, only to be released once more: a receive
//! counted for nothing, and `maxReceiveCount` of them move good data to the DLQ. So at shutdown
//! the pollers start no receive, the ones cut off get a moment to answer
//! (`consumer::RECEIVE_GRACE`), and every release waits until none is on its way.

use std::time::Duration;

use tokio::sync::watch;

/// How long a release at shutdown waits for the receives on their way: each ends within
/// `consumer::RECEIVE_GRACE` (2 s); the margin only bounds the wait should one not.
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// Counts the receives on their way; cheap to clone (all clones count together).
#[derive(Debug, Clone)]
pub struct Receiving {
    on_the_way: watch::Sender<usize>,
}

/// One receive on its way; dropping it (answered, failed or given up) counts it off.
#[derive(Debug)]
pub struct OnTheWay {
    on_the_way: watch::Sender<usize>,
}

impl Default for Receiving {
    fn default() -> Self {
        Self {
            on_the_way: watch::Sender::new(0),
        }
    }
}

impl Receiving {
    /// Counts a receive about to be sent until the guard is dropped.
    pub fn start(&self) -> OnTheWay {
        self.on_the_way.send_modify(|n| *n += 1);
        OnTheWay {
            on_the_way: self.on_the_way.clone(),
        }
    }

    /// Waits until no receive is on its way, for at most [`SETTLE_LIMIT`] (a bound against a
    /// bug, not a wait anyone should see: receives cut off by shutdown end within their grace).
    pub async fn settled(&self) {
        let mut rx = self.on_the_way.subscribe();
        let _ = tokio::time::timeout(SETTLE_LIMIT, rx.wait_for(|n| *n == 0)).await;
    }

    /// Receives on their way now.
    #[cfg(test)]
    fn count(&self) -> usize {
        *self.on_the_way.borrow()
    }
}

impl Drop for OnTheWay {
    fn drop(&mut self) {
        self.on_the_way.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn settled_waits_for_every_receive_on_its_way() {
        let receiving = Receiving::default();
        let (a, b) = (receiving.start(), receiving.start());
        assert_eq!(receiving.count(), 2);
        let waiter = {
            let receiving = receiving.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                receiving.settled().await;
                t0.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!waiter.is_finished(), "one receive is still on its way");
        drop(b);
        let waited = waiter.await.expect("the waiter");
        assert_eq!(waited, Duration::from_millis(700));
        assert_eq!(receiving.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn settled_returns_at_once_when_nothing_is_on_its_way_and_gives_up_at_its_limit() {
        let receiving = Receiving::default();
        let t0 = Instant::now();
        receiving.settled().await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        let _stuck = receiving.start();
        receiving.settled().await;
        assert_eq!(t0.elapsed(), SETTLE_LIMIT);
        assert_eq!(SETTLE_LIMIT, Duration::from_secs(3));
    }
}
