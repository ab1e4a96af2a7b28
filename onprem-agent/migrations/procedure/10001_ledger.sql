-- Sluice schema for `target.kind = "procedure"`, version 1: the chunk ledger alone (the
-- receipts go to the customer's own tables through their procedure). The same `chunks` table
-- and `batches` view as migration 0001 of the built-in target, created only where missing, so a
-- schema first migrated for the built-in target can switch to a procedure.
--
-- These migrations are numbered from 10001 and recorded in the same `_sqlx_migrations` table as
-- 0001-0003 (sqlx 0.8 has one migrations table per schema); each migrator ignores the other's
-- versions. A change to the ledger needs its counterpart here.

CREATE TABLE IF NOT EXISTS chunks (
    batch_id     uuid        NOT NULL,
    chunk_index  integer     NOT NULL,
    chunk_count  integer     NOT NULL,
    receipts     integer     NOT NULL,
    rejected     integer     NOT NULL DEFAULT 0,
    message_id   text,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, chunk_index)
);

CREATE INDEX IF NOT EXISTS chunks_committed_at_idx ON chunks (committed_at);

DO $$
BEGIN
    IF to_regclass('batches') IS NULL THEN
        CREATE VIEW batches AS
        SELECT batch_id,
               max(chunk_count)              AS chunk_count,
               count(*)                      AS chunks_done,
               sum(receipts)                 AS receipts,
               sum(rejected)                 AS rejected,
               count(*) = max(chunk_count)   AS complete,
               min(committed_at)             AS first_committed_at,
               max(committed_at)             AS last_committed_at
        FROM chunks
        GROUP BY batch_id;
    END IF;
END
$$;
