-- Sluice schema for `target.kind = "procedure"`, version 2: the content fingerprint of every
-- receipt passed to the customer's procedure, written in the same transaction as the call and
-- the ledger rows. Duplicates and conflicts (`[write] on_conflict`) are settled against it
-- before the call, exactly as the built-in target settles them against `receipts`.
CREATE TABLE IF NOT EXISTS receipt_fingerprints (
    receipt_id     uuid        PRIMARY KEY,
    content_sha256 bytea       NOT NULL,
    batch_id       uuid        NOT NULL,
    chunk_index    integer     NOT NULL,
    passed_at      timestamptz NOT NULL DEFAULT now()
);
