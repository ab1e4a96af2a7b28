-- Sluice schema, version 6: the photos the bridge carries (issue 32), with `[photos] store =
-- "database"`. One row per receipt whose `image` has both a key and a content type, written in
-- the same transaction as its receipt: a receipt with a carried photo is never stored without
-- it. A redelivered receipt adds nothing (ON CONFLICT on receipt_id); a receipt replaced under
-- `write.on_conflict = "update"` has its photo replaced in the same transaction.
--
-- No foreign key to receipts: a writer role that may delete receipts needs no DELETE here
-- first, and a photo row whose receipt was removed by hand is harmless. With
-- `store = "directory"` the table stays empty.
CREATE TABLE receipt_photos (
    receipt_id   uuid        PRIMARY KEY,
    content_type text        NOT NULL,
    -- Lowercase hex, checked again by the agent against the bytes it stores.
    sha256       char(64)    NOT NULL,
    bytes        bigint      NOT NULL,
    data         bytea       NOT NULL,
    stored_at    timestamptz DEFAULT now()
);
