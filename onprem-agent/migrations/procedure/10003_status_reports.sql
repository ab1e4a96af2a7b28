-- Sluice schema for `target.kind = "procedure"`, version 3: the counterpart of the built-in
-- target's 0004 (what became of each chunk, for the status queue `[status]`). A schema first
-- migrated for the built-in target has them already and is left as it is.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'chunks'
          AND column_name = 'reported_at'
    ) THEN
        ALTER TABLE chunks
            ADD COLUMN stored      integer NOT NULL DEFAULT 0,
            ADD COLUMN duplicates  integer NOT NULL DEFAULT 0,
            ADD COLUMN conflicts   integer NOT NULL DEFAULT 0,
            ADD COLUMN rejections  jsonb   NOT NULL DEFAULT '[]'::jsonb,
            ADD COLUMN reported_at timestamptz;
        -- Rows from before have no figures to report: marked reported.
        UPDATE chunks SET reported_at = committed_at;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS chunks_unreported_idx ON chunks (committed_at) WHERE reported_at IS NULL;
