-- Sluice schema for `target.kind = "procedure"`, version 4: the counterpart of the built-in
-- target's 0005 (the agents sharing one budget), created only where missing.
CREATE TABLE IF NOT EXISTS agents (
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
