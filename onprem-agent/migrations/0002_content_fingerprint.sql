-- Sluice schema, version 2: a fingerprint of each receipt's content, so that a receipt re-sent
-- under the same receipt_id with other content (a corrected total, another tenant reusing an
-- id) is told from a redelivery and handled by the agent's `[write] on_conflict`.

-- SHA-256 of the receipt's canonical content (every field and item; decimals compared by
-- value), computed by the agent. NULL for rows stored before this migration: such a row cannot
-- be compared, and a receipt arriving with its id is taken as a quiet duplicate.
ALTER TABLE receipts ADD COLUMN content_sha256 bytea;
