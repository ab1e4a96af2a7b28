-- Sluice schema, version 3: `sluice-agent status` (and `status --watch`, every 2 s) reads only
-- through indexes. Its two database figures — receipts committed per second over the last
-- minute, and receipts per message over the latest ledger rows — both come from the chunk
-- ledger by `committed_at`: one small index on a table of one row per message, none on the
-- hot `receipts` table.
CREATE INDEX IF NOT EXISTS chunks_committed_at_idx ON chunks (committed_at);
