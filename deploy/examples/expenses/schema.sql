-- An expenses application's own schema, as a customer already has it before adopting Sluice:
-- its own bigint ids, a tenants table keeping a running total per tenant (kept by triggers),
-- expenses with their lines, and a rule the application enforces in the database (a trigger
-- that refuses a negative expense). Nothing here knows about Sluice; `ingest_receipts.sql`
-- adds the one procedure Sluice calls.

CREATE SCHEMA expenses;

CREATE TABLE expenses.tenants (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The receipt's tenant_id.
    code          text           NOT NULL UNIQUE,
    name          text           NOT NULL,
    expense_count integer        NOT NULL DEFAULT 0,
    expense_total numeric(18, 4) NOT NULL DEFAULT 0
);

CREATE TABLE expenses.expenses (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    bigint         NOT NULL REFERENCES expenses.tenants (id),
    -- The receipt_id: what ties an expense to the receipt it came from.
    external_ref uuid           NOT NULL UNIQUE,
    vendor       text           NOT NULL,
    spent_on     date           NOT NULL,
    currency     char(3)        NOT NULL,
    amount       numeric(16, 4) NOT NULL,
    tax          numeric(16, 4),
    category     text,
    submitted_by text,
    created_at   timestamptz    NOT NULL DEFAULT now()
);

CREATE INDEX expenses_tenant_spent_idx ON expenses.expenses (tenant_id, spent_on);

CREATE TABLE expenses.expense_lines (
    expense_id  bigint         NOT NULL REFERENCES expenses.expenses (id) ON DELETE CASCADE,
    line_no     integer        NOT NULL,
    description text           NOT NULL,
    quantity    numeric(16, 4) NOT NULL,
    unit_price  numeric(16, 4) NOT NULL,
    amount      numeric(16, 4) NOT NULL,
    PRIMARY KEY (expense_id, line_no)
);

-- The application's rule: refunds are booked as credit notes, never as negative expenses.
CREATE FUNCTION expenses.refuse_negative_expense() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.amount < 0 THEN
        RAISE EXCEPTION 'expense % has a negative total (%): book refunds as credit notes',
            NEW.external_ref, NEW.amount;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER refuse_negative_expense BEFORE INSERT OR UPDATE ON expenses.expenses
    FOR EACH ROW EXECUTE FUNCTION expenses.refuse_negative_expense();

-- The per-tenant totals the application's reports read, kept by statement-level triggers: one
-- UPDATE per tenant per statement however many expenses it touches.
CREATE FUNCTION expenses.add_to_tenant_totals() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE expenses.tenants t
       SET expense_count = t.expense_count + d.n, expense_total = t.expense_total + d.total
      FROM (SELECT tenant_id, count(*) AS n, sum(amount) AS total
              FROM added GROUP BY tenant_id) AS d
     WHERE t.id = d.tenant_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION expenses.remove_from_tenant_totals() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE expenses.tenants t
       SET expense_count = t.expense_count - d.n, expense_total = t.expense_total - d.total
      FROM (SELECT tenant_id, count(*) AS n, sum(amount) AS total
              FROM removed GROUP BY tenant_id) AS d
     WHERE t.id = d.tenant_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenant_totals_insert AFTER INSERT ON expenses.expenses
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION expenses.add_to_tenant_totals();

CREATE TRIGGER tenant_totals_delete AFTER DELETE ON expenses.expenses
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION expenses.remove_from_tenant_totals();

CREATE TRIGGER tenant_totals_update_old AFTER UPDATE ON expenses.expenses
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION expenses.remove_from_tenant_totals();

CREATE TRIGGER tenant_totals_update_new AFTER UPDATE ON expenses.expenses
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION expenses.add_to_tenant_totals();
