//! Several agents, one budget: the `[throttle]` figures are the database's total, however many
//! agents drain the queue into it, and each agent takes its share.
//!
//! Keeps the guarantee "Agents sharing a budget never exceed it, whichever can reach the agents
//! table": the lease, under Fencing below.
//!
//! Agents coordinate through PostgreSQL itself (the table `agents`, see
//! `io::store::agents`): each heartbeats every [`HEARTBEAT`] on a connection of its own and
//! reads back the live set — the agents whose heartbeat is at most [`EXPIRY`] old by the
//! database's clock. With `n` live agents ordered by id, the agent at position `rank` takes
//! [`Share::split`] of every figure: `total / n`, the remainder spread one unit each over the
//! first `total % n` agents, so the shares add up to the total exactly; never less than 1 (so
//! with more agents than transactions, each still has one and the sum exceeds the total).
//! Split: `rows_per_second`, each schedule window's rate, `min_rows_per_second`,
//! `increase_rows_per_second` and `max_concurrent_transactions`; `max_database_share` is
//! divided by `n` (time needs no rounding). Not split: `burst` (a bucket
//! must hold a whole batch) and `max_active_backends` (a fact about the database, the same
//! for every agent). In adaptive mode each agent's controller works between its share of the
//! floor and its share of the ceiling.
//!
//! Rebalancing: an agent that starts is counted at its first heartbeat, one that stops cleanly
//! deletes its row, one that dies drops out when its heartbeat expires; the others pick the
//! change up at their next heartbeat, so within [`EXPIRY`] + [`HEARTBEAT`]. The configuration
//! is meant to be the same on every host; where it is not, each agent splits its own total by
//! the same `n`.
//!
//! Fencing: the others take over an agent's share once its heartbeat is [`EXPIRY`] old, so an
//! agent writes only while it holds a lease: [`LEASE`] from the start of its last heartbeat
//! that went through (before the others can count it out). It writes nothing before its first
//! heartbeat, and pauses writing when its heartbeats stop going through (a slow or locked
//! `agents` table, a lost connection) even while its writes would succeed; the writers show the
//! condition `budget_lease_lapsed` meanwhile. So the agents together never exceed the budget,
//! whichever of them can reach the table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Throttle;
use crate::config::schedule::LocalTime;
use crate::config::ThrottleConfig;
use crate::io::store::agents::{Beat, Registry};
use crate::telemetry::names as m;

/// How often an agent heartbeats and looks at the live set.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A heartbeat older than this (by the database's clock) no longer counts its agent.
pub const EXPIRY: Duration = Duration::from_secs(5);
/// Rows this long expired are deleted (until then `status` shows them as gone).
const PRUNE: Duration = Duration::from_secs(600);
/// One heartbeat's statement, and a clean stop's delete, at most.
const BEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after the start of a heartbeat that went through this agent may write: the
/// heartbeat's own timestamp is later than its start, and the others count the agent out
/// [`EXPIRY`] after that timestamp; one [`HEARTBEAT`] less leaves room for their next look and
/// a transaction already under way.
pub const LEASE: Duration = Duration::from_secs(EXPIRY.as_secs() - HEARTBEAT.as_secs());

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
        // Time is shared evenly: no rounding to spread.
        cfg.max_database_share = total
            .max_database_share
            .map(|cap| cap / f64::from(self.live.max(1)));
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
        let started = Instant::now();
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
                        "Cannot heartbeat in the agents table; writing stops when this agent's lease ends, until a heartbeat goes through."
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
        self.throttle.renew_lease(started + LEASE);
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
mod tests;
