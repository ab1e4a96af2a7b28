-- The one procedure Sluice calls (`[target] kind = "procedure"`, `procedure =
-- "expenses.ingest_receipts"`): once per batch, in the transaction that also records the
-- batch's chunks in Sluice's ledger, with the batch's new receipts as one JSON array. Each
-- element is a receipt in the documented upload shape plus "batch_id" and "chunk_index", and
-- "update": true when it replaces a receipt passed before (`[write] on_conflict = "update"`).
-- Sluice has already removed duplicates and redeliveries: every element is new (or a
-- correction), so no ON CONFLICT is needed here.
--
-- Raising an exception refuses the call: Sluice then finds the receipts at fault by bisection,
-- stores the others and puts each refused one on its dead-letter queue with this message.

CREATE PROCEDURE expenses.ingest_receipts(receipts jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    unknown text;
BEGIN
    SELECT r.tenant_id INTO unknown
      FROM jsonb_to_recordset(receipts) AS r(tenant_id text)
     WHERE NOT EXISTS (SELECT 1 FROM expenses.tenants t WHERE t.code = r.tenant_id)
     LIMIT 1;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown tenant %', unknown USING ERRCODE = 'foreign_key_violation';
    END IF;

    -- A corrected receipt replaces its expense (the lines go with it, the totals follow).
    DELETE FROM expenses.expenses e
     USING jsonb_to_recordset(receipts) AS r(receipt_id uuid, "update" boolean)
     WHERE r."update" AND e.external_ref = r.receipt_id;

    WITH r AS (
        SELECT *
          FROM jsonb_to_recordset(receipts) AS r(
               receipt_id uuid, tenant_id text, merchant text, issued_on date, currency text,
               total numeric, tax numeric, category text, submitted_by text, items jsonb)
    ), added AS (
        INSERT INTO expenses.expenses (tenant_id, external_ref, vendor, spent_on, currency,
                                       amount, tax, category, submitted_by)
        SELECT t.id, r.receipt_id, r.merchant, r.issued_on, r.currency, r.total, r.tax,
               r.category, r.submitted_by
          FROM r JOIN expenses.tenants t ON t.code = r.tenant_id
        RETURNING id, external_ref
    )
    INSERT INTO expenses.expense_lines (expense_id, line_no, description, quantity, unit_price,
                                        amount)
    SELECT added.id, l.n, l.item->>'description', (l.item->>'quantity')::numeric,
           (l.item->>'unit_price')::numeric, (l.item->>'amount')::numeric
      FROM added
      JOIN r ON r.receipt_id = added.external_ref
     CROSS JOIN LATERAL jsonb_array_elements(coalesce(r.items, '[]'::jsonb))
           WITH ORDINALITY AS l(item, n);
END
$$;
