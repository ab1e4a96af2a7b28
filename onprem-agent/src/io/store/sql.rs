//! The SQL of the one write [`super::Store::write`] makes, each statement one round trip
//! whatever the batch size (the items excepted: a few MiB of them per statement): the stored
//! fingerprints of the batch's ids, the receipts inserted and replaced (one array per column
//! through `UNNEST`), their items, and the chunk-ledger rows.
//!
//! Keeps the guarantees "Receipts arrive intact" (decimals, dates and ids sent as text and cast by
//! PostgreSQL, money into `numeric`) and "Redelivery never duplicates" (`ON CONFLICT … DO NOTHING`
//! for receipts, items and ledger rows).

use sluice_protocol::Fingerprint;
use sqlx::postgres::PgArguments;
use sqlx::{Postgres, Row as _};

use sluice_protocol::report::MAX_REJECTIONS;

use super::{IdMap, IdSet, LedgerEntry, Row, StoreError, WriteOutcome};

/// The ledger rows with what this write did for each chunk added (its stored receipts, its
/// conflicts and their reasons), and the rest of each chunk's receipts counted as duplicates.
pub(super) fn with_outcome(ledger: &[LedgerEntry], outcome: &WriteOutcome) -> Vec<LedgerEntry> {
    ledger
        .iter()
        .map(|l| {
            let mut l = l.clone();
            let key = (l.batch_id.clone(), l.chunk_index);
            l.stored = l
                .stored
                .saturating_add(outcome.stored_by_chunk.get(&key).copied().unwrap_or(0));
            for c in outcome
                .conflicts
                .iter()
                .filter(|c| c.batch_id == l.batch_id && c.chunk_index == l.chunk_index)
            {
                l.conflicts = l.conflicts.saturating_add(1);
                if l.rejections.len() < MAX_REJECTIONS {
                    l.rejections.push(c.rejection());
                }
            }
            l
        })
        .collect()
}

/// A chunk's duplicates: its receipts neither stored nor refused.
fn duplicates(l: &LedgerEntry) -> u32 {
    l.receipts
        .saturating_sub(l.stored)
        .saturating_sub(l.conflicts)
        .saturating_sub(l.rejected)
}
/// The built-in target's fingerprints, in `receipts` ([`stored_fingerprints`]).
pub(super) const STORED_FINGERPRINTS: &str =
    "SELECT receipt_id::text, content_sha256 FROM receipts WHERE receipt_id = ANY($1::uuid[])";

/// The stored fingerprint of every id among `rows` that is stored (`None`: stored before
/// fingerprints existed), read by `select` (the target's table: `$1` the ids, each row the id
/// as text and its fingerprint).
pub(super) async fn stored_fingerprints(
    tx: &mut sqlx::PgConnection,
    rows: &[Row<'_>],
    select: &'static str,
) -> Result<IdMap<String, Option<Fingerprint>>, StoreError> {
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r.receipt.receipt_id.as_str())
        .collect::<IdSet<_>>()
        .into_iter()
        .collect();
    let found: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as(select).bind(ids).fetch_all(&mut *tx).await?;
    Ok(found
        .into_iter()
        .map(|(id, fp)| (id, fp.as_deref().and_then(Fingerprint::from_slice)))
        .collect())
}

/// The receipt columns, in the order of the arrays [`receipt_columns`] binds.
const RECEIPT_ARRAYS: &str = "\
UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::date[], $6::text[], $7::numeric[],
       $8::numeric[], $9::text[], $10::text[], $11::text[], $12::numeric[], $13::jsonb[],
       $14::uuid[], $15::int4[], $16::bytea[])";

fn insert_receipts_sql() -> String {
    format!(
        "INSERT INTO receipts (receipt_id, tenant_id, submitted_by, merchant, issued_on, currency,
                      total, tax, category, image_key, image_sha256, image_bytes, metadata,
                      batch_id, chunk_index, content_sha256)
SELECT * FROM {RECEIPT_ARRAYS}
ON CONFLICT (receipt_id) DO NOTHING
RETURNING receipt_id::text"
    )
}

/// Replaces stored rows with their incoming version; `ingested_at` keeps the first store.
fn update_receipts_sql() -> String {
    format!(
        "UPDATE receipts AS r SET tenant_id = u.tenant_id, submitted_by = u.submitted_by,
    merchant = u.merchant, issued_on = u.issued_on, currency = u.currency, total = u.total,
    tax = u.tax, category = u.category, image_key = u.image_key, image_sha256 = u.image_sha256,
    image_bytes = u.image_bytes, metadata = u.metadata, batch_id = u.batch_id,
    chunk_index = u.chunk_index, content_sha256 = u.content_sha256
FROM {RECEIPT_ARRAYS} AS u(receipt_id, tenant_id, submitted_by, merchant, issued_on, currency,
    total, tax, category, image_key, image_sha256, image_bytes, metadata, batch_id, chunk_index,
    content_sha256)
WHERE r.receipt_id = u.receipt_id"
    )
}

/// Inserts `rows`; returns the ids inserted (an id already taken is skipped).
pub(super) async fn insert_receipts(
    tx: &mut sqlx::PgConnection,
    rows: &[(Row<'_>, Fingerprint)],
) -> Result<IdSet<String>, StoreError> {
    let sql = insert_receipts_sql();
    let ids = receipt_columns(&sql, rows).fetch_all(&mut *tx).await?;
    Ok(returned_ids(&ids))
}

/// The ids an `INSERT … RETURNING receipt_id::text` returned.
pub(super) fn returned_ids(rows: &[sqlx::postgres::PgRow]) -> IdSet<String> {
    rows.iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect()
}

pub(super) async fn update_receipts(
    tx: &mut sqlx::PgConnection,
    rows: &[(Row<'_>, Fingerprint)],
) -> Result<(), StoreError> {
    let sql = update_receipts_sql();
    receipt_columns(&sql, rows).execute(&mut *tx).await?;
    Ok(())
}

/// `sql` with the receipts bound as one array per column ([`RECEIPT_ARRAYS`]).
fn receipt_columns<'q>(
    sql: &'q str,
    rows: &'q [(Row<'q>, Fingerprint)],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    let n = rows.len();
    let mut id = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut submitted_by = Vec::with_capacity(n);
    let mut merchant = Vec::with_capacity(n);
    let mut issued_on = Vec::with_capacity(n);
    let mut currency = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    let mut tax = Vec::with_capacity(n);
    let mut category = Vec::with_capacity(n);
    let mut image_key = Vec::with_capacity(n);
    let mut image_sha = Vec::with_capacity(n);
    let mut image_bytes = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut batch = Vec::with_capacity(n);
    let mut chunk = Vec::with_capacity(n);
    let mut fingerprint = Vec::with_capacity(n);
    for (row, fp) in rows {
        let r = row.receipt;
        id.push(r.receipt_id.as_str());
        tenant.push(r.tenant_id.as_str());
        submitted_by.push(r.submitted_by.as_deref());
        merchant.push(r.merchant.as_str());
        issued_on.push(r.issued_on.as_str());
        currency.push(r.currency.as_str());
        total.push(r.total.as_str());
        tax.push(r.tax.as_ref().map(|t| t.as_str()));
        category.push(r.category.as_deref());
        image_key.push(r.image.as_ref().and_then(|i| i.key.as_deref()));
        image_sha.push(r.image.as_ref().map(|i| i.sha256.as_str()));
        image_bytes.push(r.image.as_ref().map(|i| i.bytes.to_string()));
        // Serialized by sqlx into the argument buffer: no copy of the map, no String between.
        metadata.push(r.metadata.as_ref().map(sqlx::types::Json));
        batch.push(row.batch_id);
        chunk.push(i32::try_from(row.chunk_index).unwrap_or(i32::MAX));
        fingerprint.push(fp.as_bytes());
    }
    sqlx::query(sql)
        .bind(id)
        .bind(tenant)
        .bind(submitted_by)
        .bind(merchant)
        .bind(issued_on)
        .bind(currency)
        .bind(total)
        .bind(tax)
        .bind(category)
        .bind(image_key)
        .bind(image_sha)
        .bind(image_bytes)
        .bind(metadata)
        .bind(batch)
        .bind(chunk)
        .bind(fingerprint)
}

const INSERT_ITEMS: &str = "\
INSERT INTO receipt_items (receipt_id, line_no, description, quantity, unit_price, amount)
SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::numeric[], $5::numeric[], $6::numeric[])
ON CONFLICT (receipt_id, line_no) DO NOTHING";

/// Drops the stored items of the receipts in `replaced`, then writes the items of `rows`.
pub(super) async fn replace_items(
    tx: &mut sqlx::PgConnection,
    replaced: &[(Row<'_>, Fingerprint)],
    rows: &[Row<'_>],
) -> Result<(), StoreError> {
    if !replaced.is_empty() {
        let ids: Vec<&str> = replaced
            .iter()
            .map(|(r, _)| r.receipt.receipt_id.as_str())
            .collect();
        sqlx::query("DELETE FROM receipt_items WHERE receipt_id = ANY($1::uuid[])")
            .bind(ids)
            .execute(&mut *tx)
            .await?;
    }
    let mut items = ItemColumns::default();
    for row in rows {
        let r = row.receipt;
        for (i, item) in r.items.iter().enumerate() {
            // Items are capped at 500 per receipt by validation.
            let line = i32::try_from(i + 1).unwrap_or(i32::MAX);
            items.push(&r.receipt_id, line, item);
            if items.bytes >= ITEM_SLICE_BYTES {
                std::mem::take(&mut items).insert(tx).await?;
            }
        }
    }
    items.insert(tx).await
}

/// Text bound in one item statement before it is sent. A batch's items are written in
/// statements of about this much, in the same transaction: each statement's arguments and
/// the connection's copy of them stay this small whatever the batch size (a batch of the
/// largest receipts carries up to 16 MiB of items).
const ITEM_SLICE_BYTES: usize = 4 * 1024 * 1024;

/// Items bound as one array per column of [`INSERT_ITEMS`], and the text they hold.
#[derive(Default)]
struct ItemColumns<'a> {
    id: Vec<&'a str>,
    line: Vec<i32>,
    description: Vec<&'a str>,
    quantity: Vec<&'a str>,
    unit_price: Vec<&'a str>,
    amount: Vec<&'a str>,
    bytes: usize,
}

impl<'a> ItemColumns<'a> {
    fn push(&mut self, receipt_id: &'a str, line: i32, item: &'a sluice_protocol::Item) {
        self.bytes += receipt_id.len()
            + item.description.len()
            + item.quantity.as_str().len()
            + item.unit_price.as_str().len()
            + item.amount.as_str().len();
        self.id.push(receipt_id);
        self.line.push(line);
        self.description.push(&item.description);
        self.quantity.push(item.quantity.as_str());
        self.unit_price.push(item.unit_price.as_str());
        self.amount.push(item.amount.as_str());
    }

    async fn insert(self, tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        if self.id.is_empty() {
            return Ok(());
        }
        sqlx::query(INSERT_ITEMS)
            .bind(self.id)
            .bind(self.line)
            .bind(self.description)
            .bind(self.quantity)
            .bind(self.unit_price)
            .bind(self.amount)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// The ledger rows; `rejected` counts conflicts too (as it always has), `conflicts` names
/// that part. `$11`: whether the rows wait for the status reporter (`reported_at` NULL).
const INSERT_LEDGER: &str = "\
INSERT INTO chunks (batch_id, chunk_index, chunk_count, receipts, rejected, message_id,
                    stored, duplicates, conflicts, rejections, reported_at)
SELECT b, i, n, r, rj, m, s, d, c, rs, CASE WHEN $11::bool THEN NULL ELSE now() END
FROM UNNEST($1::uuid[], $2::int4[], $3::int4[], $4::int4[], $5::int4[], $6::text[],
            $7::int4[], $8::int4[], $9::int4[], $10::jsonb[]) AS u(b, i, n, r, rj, m, s, d, c, rs)
ON CONFLICT (batch_id, chunk_index) DO NOTHING";

pub(super) async fn insert_ledger(
    tx: &mut sqlx::PgConnection,
    ledger: &[LedgerEntry],
    reporting: bool,
) -> Result<(), StoreError> {
    let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let column =
        |f: fn(&LedgerEntry) -> u32| -> Vec<i32> { ledger.iter().map(|l| to_i32(f(l))).collect() };
    let rejections: Vec<String> = ledger
        .iter()
        .map(|l| serde_json::to_string(&l.rejections).unwrap_or_else(|_| "[]".to_owned()))
        .collect();
    sqlx::query(INSERT_LEDGER)
        .bind(
            ledger
                .iter()
                .map(|l| l.batch_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(column(|l| l.chunk_index))
        .bind(column(|l| l.chunk_count))
        .bind(column(|l| l.receipts))
        .bind(column(|l| l.rejected.saturating_add(l.conflicts)))
        .bind(
            ledger
                .iter()
                .map(|l| l.message_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(column(|l| l.stored))
        .bind(column(duplicates))
        .bind(column(|l| l.conflicts))
        .bind(rejections)
        .bind(reporting)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
