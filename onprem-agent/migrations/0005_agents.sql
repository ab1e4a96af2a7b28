-- Sluice schema, version 5: the agents that drain one queue into this database register here,
-- so `throttle.rows_per_second` (and schedules, the adaptive ceiling and floor,
-- `max_concurrent_transactions`) is the database's total however many run. Each agent
-- upserts its row about once a second on a connection of its own; the agents whose
-- heartbeat (by this database's clock) is a few seconds old at most are the live set, and
-- each takes its share of the total. A clean stop deletes the row; a row long expired is
-- pruned by the next heartbeat of any agent.
CREATE TABLE agents (
    agent_id        uuid        PRIMARY KEY,
    host            text        NOT NULL,
    pid             integer     NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    -- What the agent took at its last heartbeat: rows/s (its share of the rate in force) and
    -- transactions, and how many live agents it counted. For `status`; nothing reads them back.
    share_rows_per_second integer NOT NULL DEFAULT 0,
    share_transactions    integer NOT NULL DEFAULT 0,
    live_agents           integer NOT NULL DEFAULT 1
);
