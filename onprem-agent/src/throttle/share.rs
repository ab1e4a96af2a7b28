//! Several agents, one budget: the `[throttle]` figures are the database's total, however many
//! agents drain the queue into it, and each agent takes its share.
//!
//! Agents coordinate through PostgreSQL itself (the table `agents`, see
//! `io::store::agents`): each heartbeats every [`HEARTBEAT`] on a connection of its own and
//! reads back the live set — the agents whose heartbeat is at most [`EXPIRY`] old by the
//! database's clock. With `n` live agents ordered by id, the agent at position `rank` takes
//! [`Share::split`] of every figure: `total / n`, the remainder spread one unit each over the
//! first `total % n` agents, so the shares add up to the total exactly; never less than 1 (so
//! with more agents than transactions, each still has one and the sum exceeds the total).
//! Split: `rows_per_second`, each schedule window's rate, `min_rows_per_second`,
//! `increase_rows_per_second` and `max_concurrent_transactions`. Not split: `burst` (a bucket
//! must hold a whole batch) and `max_active_backends` (a fact about the database, the same
//! for every agent). In adaptive mode each agent's controller works between its share of the
//! floor and its share of the ceiling.
//!
//! Rebalancing: an agent that starts is counted at its first heartbeat, one that stops cleanly
//! deletes its row, one that dies drops out when its heartbeat expires; the others pick the
//! change up at their next heartbeat, so within [`EXPIRY`] + [`HEARTBEAT`]. An agent that
//! cannot reach the database keeps the share it last computed (never a larger one), and
//! cannot write meanwhile anyway. The configuration is meant to be the same on every host;
//! where it is not, each agent splits its own total by the same `n`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::schedule::LocalTime;
use super::Throttle;
use crate::config::ThrottleConfig;
use crate::io::store::agents::{Beat, Registry};
use crate::ops::metrics as m;

/// How often an agent heartbeats and looks at the live set.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A heartbeat older than this (by the database's clock) no longer counts its agent.
pub const EXPIRY: Duration = Duration::from_secs(5);
/// Rows this long expired are deleted (until then `status` shows them as gone).
const PRUNE: Duration = Duration::from_secs(600);
/// One heartbeat's statement, and a clean stop's delete, at most.
const BEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// This agent's place among the live agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Live agents, this one included (≥ 1).
    pub live: u32,
    /// This agent's position among them, by id (0-based, < `live`).
    pub rank: u32,
}

impl Share {
    /// The whole budget: no other agent known.
    pub const ALONE: Share = Share { live: 1, rank: 0 };

    /// This agent's share given the other live agents' ids (any order; `me` among them or
    /// not: it is always counted once).
    pub fn among(others: &[String], me: &str) -> Self {
        let mut ids: Vec<&str> = others
            .iter()
            .map(String::as_str)
            .filter(|id| *id != me)
            .collect();
        ids.push(me);
        ids.sort_unstable();
        ids.dedup();
        let rank = ids.iter().position(|id| *id == me).unwrap_or(0);
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Self {
            live: n(ids.len()).max(1),
            rank: n(rank),
        }
    }

    /// This agent's part of `total`: `total / live`, plus one for the first `total % live`
    /// ranks, at least 1.
    pub fn split(self, total: u32) -> u32 {
        let live = self.live.max(1);
        let rank = self.rank.min(live - 1);
        let part = total / live + u32::from(rank < total % live);
        part.max(1)
    }

    /// This agent's part of the fleet's `[throttle]`.
    pub fn apply(self, total: &ThrottleConfig) -> ThrottleConfig {
        let mut cfg = total.clone();
        cfg.rows_per_second = self.split(total.rows_per_second);
        cfg.min_rows_per_second = self.split(total.min_rows_per_second);
        cfg.max_concurrent_transactions = self.split(total.max_concurrent_transactions);
        cfg.increase_rows_per_second = total.increase_rows_per_second.map(|v| self.split(v));
        for w in &mut cfg.schedule {
            w.rows_per_second = self.split(w.rows_per_second);
        }
        cfg
    }
}

/// Who this process is, as other agents and `status` see it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// A fresh UUID per process: a restarted agent is a new member.
    pub agent_id: String,
    pub host: String,
    pub pid: u32,
}

impl Identity {
    pub fn of_this_process() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            agent_id: uuid::Uuid::new_v4().to_string(),
            host,
            pid: std::process::id(),
        }
    }
}

/// Heartbeats and applies the share to the throttle.
#[derive(Debug)]
pub struct Member {
    throttle: Arc<Throttle>,
    registry: Registry,
    me: Identity,
    /// Whether the last heartbeat went through (to log transitions once).
    reachable: Option<bool>,
}

impl Member {
    pub fn new(throttle: Arc<Throttle>, registry: Registry, me: Identity) -> Self {
        Self {
            throttle,
            registry,
            me,
            reachable: None,
        }
    }

    /// One heartbeat: register or refresh, read the live set, take the share. On failure the
    /// share stays as it was.
    pub async fn beat(&mut self) {
        let share = self.throttle.share();
        let beat = Beat {
            agent_id: &self.me.agent_id,
            host: &self.me.host,
            pid: self.me.pid,
            share_rows_per_second: self.throttle.ceiling(),
            share_transactions: self.throttle.transactions(),
            live_agents: share.live,
        };
        let answer =
            tokio::time::timeout(BEAT_TIMEOUT, self.registry.beat(&beat, EXPIRY, PRUNE)).await;
        let others = match answer {
            Ok(Ok(others)) => others,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {BEAT_TIMEOUT:?}"),
                };
                if self.reachable != Some(false) {
                    tracing::warn!(
                        error,
                        live_agents = share.live,
                        rows_per_second = self.throttle.ceiling(),
                        "Cannot heartbeat in the agents table; keeping this agent's last share of the budget."
                    );
                }
                self.reachable = Some(false);
                self.publish();
                return;
            }
        };
        if self.reachable == Some(false) {
            tracing::info!("Heartbeat in the agents table again.");
        }
        self.reachable = Some(true);
        let new = Share::among(&others, &self.me.agent_id);
        if self
            .throttle
            .set_share(new, LocalTime::now(), Instant::now())
        {
            tracing::info!(
                agent_id = %self.me.agent_id,
                live_agents = new.live,
                from_live_agents = share.live,
                rank = new.rank,
                rows_per_second = self.throttle.ceiling(),
                total_rows_per_second = self.throttle.total_ceiling(),
                transactions = self.throttle.transactions(),
                "Budget share changed."
            );
        }
        self.publish();
    }

    fn publish(&self) {
        let share = self.throttle.share();
        metrics::gauge!(m::AGENTS_LIVE).set(f64::from(share.live));
        let total = self.throttle.total_ceiling();
        if total > 0 {
            metrics::gauge!(m::RATE_SHARE)
                .set(f64::from(self.throttle.ceiling()) / f64::from(total));
        }
    }

    /// Heartbeats until `stop`, then leaves the table (a clean stop rebalances at once).
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
            self.beat().await;
        }
        match tokio::time::timeout(BEAT_TIMEOUT, self.registry.leave(&self.me.agent_id)).await {
            Ok(Ok(())) => tracing::info!(agent_id = %self.me.agent_id, "Left the agents table."),
            Ok(Err(e)) => tracing::warn!(error = %e, "Cannot leave the agents table; the others rebalance when this agent's heartbeat expires."),
            Err(_) => tracing::warn!("Cannot leave the agents table in time; the others rebalance when this agent's heartbeat expires."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleWindowConfig;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn shares_of_a_total_add_up_to_it_and_never_fall_below_one() {
        for total in [1u32, 2, 7, 100, 900, 1000, 65_537] {
            for live in 1..=7u32 {
                let parts: Vec<u32> = (0..live)
                    .map(|rank| Share { live, rank }.split(total))
                    .collect();
                if total >= live {
                    assert_eq!(parts.iter().sum::<u32>(), total, "{total} over {live}");
                } else {
                    assert!(
                        parts.iter().all(|p| *p == 1),
                        "{total} over {live}: {parts:?}"
                    );
                }
                let (min, max) = (parts.iter().min(), parts.iter().max());
                assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{parts:?}");
            }
        }
        assert_eq!(Share { live: 3, rank: 0 }.split(900), 300);
        assert_eq!(Share { live: 2, rank: 1 }.split(900), 450);
        assert_eq!(Share { live: 3, rank: 0 }.split(1000), 334);
        assert_eq!(Share { live: 3, rank: 2 }.split(1000), 333);
        assert_eq!(Share::ALONE.split(900), 900);
    }

    #[test]
    fn a_share_is_monotone_so_a_split_floor_stays_under_the_split_ceiling() {
        for live in 1..=5u32 {
            for rank in 0..live {
                let s = Share { live, rank };
                for total in 0..200u32 {
                    assert!(s.split(total) <= s.split(total + 1));
                }
            }
        }
    }

    #[test]
    fn the_live_set_counts_this_agent_once_and_ranks_by_id() {
        assert_eq!(Share::among(&[], "b"), Share::ALONE);
        assert_eq!(
            Share::among(&ids(&["c", "a"]), "b"),
            Share { live: 3, rank: 1 }
        );
        // Its own row among the others (a heartbeat read back) is not counted twice.
        assert_eq!(
            Share::among(&ids(&["b", "a"]), "b"),
            Share { live: 2, rank: 1 }
        );
        assert_eq!(
            Share::among(&ids(&["a", "a", "c"]), "d"),
            Share { live: 3, rank: 2 }
        );
    }

    #[test]
    fn each_agent_takes_its_part_of_every_budget_figure_but_the_burst() {
        let total = ThrottleConfig {
            rows_per_second: 900,
            burst: 500,
            min_rows_per_second: 90,
            increase_rows_per_second: Some(45),
            max_concurrent_transactions: 4,
            max_active_backends: Some(20),
            schedule: vec![ScheduleWindowConfig {
                days: Some("Mon-Fri".into()),
                hours: Some("08:00-18:00".into()),
                rows_per_second: 300,
            }],
            ..ThrottleConfig::default()
        };
        let mine = Share { live: 3, rank: 0 }.apply(&total);
        assert_eq!(
            (
                mine.rows_per_second,
                mine.burst,
                mine.min_rows_per_second,
                mine.increase_rows_per_second,
                mine.max_concurrent_transactions,
                mine.max_active_backends,
                mine.schedule[0].rows_per_second
            ),
            (300, 500, 30, Some(15), 2, Some(20), 100)
        );
        assert_eq!(
            Share { live: 3, rank: 2 }
                .apply(&total)
                .max_concurrent_transactions,
            1
        );
        assert_eq!(Share::ALONE.apply(&total).rows_per_second, 900);
    }

    const NIGHT: LocalTime = LocalTime {
        weekday: crate::throttle::schedule::Weekday::Tue,
        minute: 23 * 60,
    };

    #[tokio::test]
    async fn a_new_share_moves_the_rate_and_the_transaction_slots_and_a_reload_keeps_it() {
        let t = Instant::now();
        let total = ThrottleConfig {
            rows_per_second: 900,
            max_concurrent_transactions: 3,
            ..ThrottleConfig::default()
        };
        let th = Throttle::new(&total, NIGHT, t).expect("valid");
        assert_eq!((th.rate(), th.transactions()), (900, 3));
        assert!(th.set_share(Share { live: 3, rank: 1 }, NIGHT, t));
        assert!(
            !th.set_share(Share { live: 3, rank: 1 }, NIGHT, t),
            "unchanged"
        );
        assert_eq!(
            (th.rate(), th.ceiling(), th.total_ceiling()),
            (300, 300, 900)
        );
        assert_eq!((th.transactions(), th.slots().available_permits()), (1, 1));
        let mut more = total.clone();
        more.rows_per_second = 1200;
        th.reload(&more, NIGHT, t).expect("valid");
        assert_eq!(th.rate(), 400, "a reload's total is split too");
        assert!(th.set_share(Share { live: 2, rank: 0 }, NIGHT, t));
        assert_eq!((th.rate(), th.slots().available_permits()), (600, 2));
    }

    #[test]
    fn in_adaptive_mode_the_controller_works_within_its_share_of_floor_and_ceiling() {
        let mut t = Instant::now();
        let total = ThrottleConfig {
            mode: crate::config::ThrottleMode::Adaptive,
            rows_per_second: 900,
            min_rows_per_second: 90,
            increase_rows_per_second: Some(300),
            ..ThrottleConfig::default()
        };
        let th = Throttle::new(&total, NIGHT, t).expect("valid");
        th.set_share(Share { live: 3, rank: 0 }, NIGHT, t);
        assert_eq!(
            (th.rate(), th.ceiling()),
            (90, 300),
            "the rate is kept, within bounds"
        );
        for _ in 0..3 {
            th.observe_error(&crate::io::store::StoreError::Overloaded {
                code: "55P03".into(),
                message: "lock timeout".into(),
            });
            t += Duration::from_secs(1);
            th.update(NIGHT, t);
        }
        assert_eq!(
            th.rate(),
            30,
            "backs off to its share of the floor, no further"
        );
        for _ in 0..5 {
            th.observe_commit(Duration::from_millis(10));
            t += Duration::from_secs(1);
            th.update(NIGHT, t);
        }
        assert_eq!(
            th.rate(),
            300,
            "climbs to its share of the ceiling, no further"
        );
        th.set_share(Share { live: 2, rank: 0 }, NIGHT, t);
        assert_eq!(th.ceiling(), 450);
        th.observe_commit(Duration::from_millis(10));
        t += Duration::from_secs(1);
        th.update(NIGHT, t);
        assert_eq!(th.rate(), 450);
    }
}
