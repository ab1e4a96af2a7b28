-- Sluice schema, version 1. Applied by `sluice-agent migrate` (or `run` with
-- database.migrate_on_start). Tables are created in the configured schema: the agent sets
-- search_path to it, so nothing here names the schema.

-- One row per receipt; receipt_id is the idempotency key end to end.
CREATE TABLE receipts (
    receipt_id    uuid PRIMARY KEY,
    tenant_id     text        NOT NULL,
    submitted_by  text,
    merchant      text        NOT NULL,
    issued_on     date        NOT NULL,
    currency      char(3)     NOT NULL,
    -- Money is numeric, never float: the API caps amounts below 10^12 with 4 fraction digits.
    total         numeric(16, 4) NOT NULL,
    tax           numeric(16, 4),
    category      text,
    image_key     text,
    image_sha256  char(64),
    image_bytes   numeric(20, 0),
    metadata      jsonb,
    batch_id      uuid        NOT NULL,
    chunk_index   integer     NOT NULL,
    ingested_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX receipts_tenant_issued_idx ON receipts (tenant_id, issued_on);
CREATE INDEX receipts_batch_idx ON receipts (batch_id);

-- Line items, written only together with a newly inserted receipt.
CREATE TABLE receipt_items (
    receipt_id  uuid    NOT NULL REFERENCES receipts (receipt_id) ON DELETE CASCADE,
    line_no     integer NOT NULL,
    description text    NOT NULL,
    quantity    numeric(16, 4) NOT NULL,
    unit_price  numeric(16, 4) NOT NULL,
    amount      numeric(16, 4) NOT NULL,
    PRIMARY KEY (receipt_id, line_no)
);

-- The chunk ledger: one row per SQS chunk fully handled, written in the same transaction as
-- its receipts (or after its rejected rows were dead-lettered). A batch is complete when it
-- has chunk_count rows here.
CREATE TABLE chunks (
    batch_id     uuid        NOT NULL,
    chunk_index  integer     NOT NULL,
    chunk_count  integer     NOT NULL,
    receipts     integer     NOT NULL,
    rejected     integer     NOT NULL DEFAULT 0,
    message_id   text,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, chunk_index)
);

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
