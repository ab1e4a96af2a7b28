-- Sluice schema, version 4: what became of each chunk, for the status queue (`[status]`).
--
-- Each ledger row gains its chunk's figures, written in the same transaction as the row at
-- the chunk's first commit: receipts = stored + duplicates + rejected, where `rejected` (as
-- before) counts every refused receipt and `conflicts` is the part of it refused because the
-- id is stored with other content. `rejections` names the refused receipts (at most 100:
-- receipt_id and the reason the dead-letter queue got). A redelivered chunk adds no row and
-- changes none.
ALTER TABLE chunks
    ADD COLUMN stored      integer NOT NULL DEFAULT 0,
    ADD COLUMN duplicates  integer NOT NULL DEFAULT 0,
    ADD COLUMN conflicts   integer NOT NULL DEFAULT 0,
    ADD COLUMN rejections  jsonb   NOT NULL DEFAULT '[]'::jsonb,
    -- When the status queue took the chunk's report; NULL: not yet (or no `[status]`).
    ADD COLUMN reported_at timestamptz;

-- Rows from before this migration have no figures to report: marked reported, so an upgrade
-- sends no flood of empty reports.
UPDATE chunks SET reported_at = committed_at;

-- The reporter reads the unreported rows, oldest first, through this small index: it holds
-- only rows not yet taken by the status queue.
CREATE INDEX IF NOT EXISTS chunks_unreported_idx ON chunks (committed_at) WHERE reported_at IS NULL;
