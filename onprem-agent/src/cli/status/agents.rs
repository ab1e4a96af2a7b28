//! The agents part of `sluice-agent status`: who shares the budget (the `agents` table that
//! `throttle::share` heartbeats into), each one's share and last heartbeat, and the share of
//! the agent that answers on `server.listen`.

use std::fmt::Write as _;

use crate::io::store::agents::AgentRow;

/// The `agents` lines: a summary, then one line per registered agent.
pub fn render(out: &mut String, agents: &[AgentRow], this_share: Option<f64>) {
    let live = agents.iter().filter(|a| a.live).count();
    let this = match this_share {
        Some(s) => format!("; this agent takes {:.0}% of the total", s * 100.0),
        None => String::new(),
    };
    let _ = writeln!(out, "agents        {live} live sharing the budget{this}");
    for a in agents {
        let state = if a.live { "live" } else { "gone" };
        let _ = writeln!(
            out,
            "  {state:<5} {}  {}:{}  {}/s, {} tx (of {} live)  heartbeat {:.1}s ago",
            a.agent_id,
            a.host,
            a.pid,
            a.share_rows_per_second,
            a.share_transactions,
            a.live_agents,
            a.heartbeat_age_seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_is_listed_with_its_share_and_heartbeat_and_the_dead_ones_marked() {
        let row = |id: &str, live: bool, age: f64| AgentRow {
            agent_id: id.into(),
            host: "db-a".into(),
            pid: 42,
            heartbeat_age_seconds: age,
            share_rows_per_second: 450,
            share_transactions: 1,
            live_agents: 2,
            live,
        };
        let mut out = String::new();
        render(
            &mut out,
            &[
                row("a1", true, 0.4),
                row("b2", true, 0.9),
                row("c3", false, 42.0),
            ],
            Some(0.5),
        );
        assert!(
            out.starts_with(
                "agents        2 live sharing the budget; this agent takes 50% of the total\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("  live  a1  db-a:42  450/s, 1 tx (of 2 live)  heartbeat 0.4s ago"),
            "{out}"
        );
        assert!(out.contains("  gone  c3  db-a:42"), "{out}");
    }
}
