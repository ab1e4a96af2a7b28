//! The last 15 minutes of the live figures, one point a second, for the live page's charts:
//! a page opened in the middle of a drain draws the drain so far at once, not only from the
//! moment it was opened. Kept in memory (900 small points), sampled from the copies
//! [`crate::ops::live`] keeps, never from the pipeline: off the hot path. Served on
//! [`PATH`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ops::live::LiveFigures;
use crate::throttle::Throttle;

/// Where the agent's HTTP server answers with [`History::points`].
pub const PATH: &str = "/v1/status/history";
/// One point per this.
pub const EVERY: Duration = Duration::from_secs(1);
/// Points older than this are dropped.
pub const KEEP: Duration = Duration::from_secs(15 * 60);

/// One sample: what the page's charts draw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the agent started (its `uptime_seconds`).
    pub u: f64,
    /// Receipts stored so far (the page derives the rate from two points).
    pub rows: u64,
    /// Messages on the main queue, once the monitor has read it.
    pub depth: Option<u64>,
    /// The rate in force (or the configured one before it is known).
    pub limit: Option<f64>,
    /// The foreground probe's p50, p99, the reading held under the limit and the limit, in
    /// seconds (adaptive mode).
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub reading: Option<f64>,
    pub plimit: Option<f64>,
}

/// The points, oldest first.
#[derive(Debug, Default)]
pub struct History {
    points: Mutex<VecDeque<Point>>,
}

impl History {
    pub fn points(&self) -> Vec<Point> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Point>> {
        self.points.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `p`, dropping what is older than [`KEEP`] before it.
    pub fn push(&self, p: Point) {
        let mut points = self.lock();
        let oldest = p.u - KEEP.as_secs_f64();
        while points.front().is_some_and(|f| f.u < oldest) {
            points.pop_front();
        }
        points.push_back(p);
    }

    /// Starts sampling every [`EVERY`] on the current runtime; the task ends once the history is
    /// dropped (with the server that served it).
    pub fn start(self: &Arc<Self>, live: Arc<LiveFigures>, throttle: Arc<Throttle>) {
        let history: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(history) = history.upgrade() else {
                    return;
                };
                history.push(sample(&live, &throttle));
            }
        });
    }
}

fn sample(live: &LiveFigures, throttle: &Throttle) -> Point {
    let s = live.snapshot();
    let t = throttle.explained();
    Point {
        u: s.uptime_seconds.unwrap_or(0.0),
        rows: s.rows_written,
        depth: s.queue.map(|d| d.total()),
        limit: s.rate_rows_per_second.or(s.rate_configured_rows_per_second),
        p50: t.as_ref().and_then(|t| t.probe_p50_seconds),
        p99: t.as_ref().and_then(|t| t.probe_p99_seconds),
        reading: t.as_ref().and_then(|t| t.probe_reading_seconds),
        plimit: t.as_ref().and_then(|t| t.probe_limit_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_older_than_fifteen_minutes_are_dropped() {
        let h = History::default();
        for u in 0..1000 {
            h.push(Point {
                u: f64::from(u),
                rows: u as u64,
                ..Point::default()
            });
        }
        let points = h.points();
        assert_eq!(points.first().map(|p| p.u), Some(99.0));
        assert_eq!(points.last().map(|p| p.rows), Some(999));
        assert_eq!(points.len(), 901);
    }
}
