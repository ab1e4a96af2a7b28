//! The write path's figures: receipts/s committed by the agent's batched write (throttle off,
//! one connection, a transaction per batch with its ledger rows) for each candidate statement
//! shape, against a raw `COPY` of the same rows into the same tables.

use std::time::Instant;

use anyhow::bail;
use sluice_agent::{LedgerEntry, Row, Store};
use sluice_e2e::gen::Generator;
use sluice_e2e::PrivatePostgres;
use sluice_protocol::Receipt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, Executor as _, PgPool};

use crate::{Table, BATCH};

/// Measures each shape on `write_rows` receipts, each in a fresh database, and adds the rows.
/// Returns the raw COPY rate, the ceiling the end-to-end figures are compared with.
pub(crate) async fn measure(
    pg: &PrivatePostgres,
    write_rows: usize,
    table: &mut Table,
) -> anyhow::Result<f64> {
    eprintln!("bench: write path, {write_rows} receipts per candidate");
    let receipts = generate(write_rows, 1);
    // A run takes a second or two on this kind of shared machine, so one run of each is
    // mostly noise: the ceiling and the two kept shapes run ROUNDS times, interleaved, and
    // their medians are compared.
    let (mut raws, mut unnests, mut parallels) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        raws.push(raw_copy(pg, &receipts).await?);
        unnests.push(batched(pg, &receipts, Shape::Unnest, BATCH).await?);
        parallels.push(in_parallel(pg, &receipts, BATCH, 2).await?);
    }
    let (raw, unnest, parallel) = (median(&raws), median(&unnests), median(&parallels));
    let staged = batched(pg, &receipts, Shape::CopyStaging, BATCH).await?;
    let unnest_big = batched(pg, &receipts, Shape::Unnest, 4 * BATCH).await?;
    table.row(
        "write path: raw COPY (receipts + items, one stream)",
        format!("{raw:.0}/s"),
        format!(
            "no conflict handling, no ledger: the ceiling; median of {ROUNDS} ({})",
            spread(&raws)
        ),
    );
    table.row(
        format!(
            "write path: INSERT … SELECT FROM UNNEST … ON CONFLICT (kept), {BATCH} per transaction"
        ),
        format!("{unnest:.0}/s"),
        format!(
            "{:.2} × raw COPY; median of {ROUNDS} ({})",
            unnest / raw,
            spread(&unnests)
        ),
    );
    table.row(
        format!(
            "write path: COPY into staging, INSERT … SELECT … ON CONFLICT, {BATCH} per transaction"
        ),
        format!("{staged:.0}/s"),
        format!("{:.2} × raw COPY", staged / raw),
    );
    table.row(
        format!("write path: UNNEST, {} receipts per transaction", 4 * BATCH),
        format!("{unnest_big:.0}/s"),
        format!(
            "{:.2} × raw COPY (batch.max_rows = {})",
            unnest_big / raw,
            4 * BATCH
        ),
    );
    table.row(
        format!("write path: UNNEST, {BATCH} per transaction, 2 transactions in flight"),
        format!("{parallel:.0}/s"),
        format!(
            "{:.2} × raw COPY (throttle.max_concurrent_transactions = 2, as two connections \
             allow); median of {ROUNDS} ({})",
            parallel / raw,
            spread(&parallels)
        ),
    );
    Ok(raw)
}

/// Runs of the ceiling and of the kept shapes.
const ROUNDS: usize = 3;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The runs' lowest and highest, e.g. `24100–38200/s`.
fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{lo:.0}–{hi:.0}/s")
}

fn generate(n: usize, seed: u64) -> Vec<Receipt> {
    let mut g = Generator::new(seed);
    (0..n)
        .filter_map(|_| serde_json::from_value(g.receipt()).ok())
        .collect()
}

/// A fresh database on the cluster with the agent's schema, and a one-connection pool on it.
async fn fresh_db(pg: &PrivatePostgres, name: &str) -> anyhow::Result<PgPool> {
    fresh_db_with(pg, name, 1).await
}

/// [`fresh_db`] with a pool of `connections`.
async fn fresh_db_with(
    pg: &PrivatePostgres,
    name: &str,
    connections: u32,
) -> anyhow::Result<PgPool> {
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let opts: PgConnectOptions = sluice_e2e::with_database(&pg.url(), name).parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(opts.options([("search_path", "sluice")]))
        .await?;
    Store::from_pool(pool.clone()).migrate("sluice").await?;
    Ok(pool)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Unnest,
    CopyStaging,
}

/// Receipts/s committed in 500-receipt transactions, each with its ledger rows.
async fn batched(
    pg: &PrivatePostgres,
    receipts: &[Receipt],
    shape: Shape,
    batch: usize,
) -> anyhow::Result<f64> {
    let pool = fresh_db(pg, &format!("wp_{shape:?}_{batch}").to_lowercase()).await?;
    let store = Store::from_pool(pool.clone());
    let batch_id = uuid::Uuid::new_v4().to_string();
    if shape == Shape::CopyStaging {
        pool.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_receipts (LIKE receipts INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
             CREATE TEMP TABLE IF NOT EXISTS stage_items (LIKE receipt_items) ON COMMIT DELETE ROWS",
        )
        .await?;
    }
    let t = Instant::now();
    let mut inserted = 0u64;
    for (i, chunk) in receipts.chunks(batch).enumerate() {
        let (rows, ledger) = chunk_rows(chunk, &batch_id, i)?;
        inserted += match shape {
            Shape::Unnest => store.write(&rows, &[ledger]).await?.inserted,
            Shape::CopyStaging => copy_staging_write(&pool, &rows, &ledger).await?,
        };
    }
    let secs = t.elapsed().as_secs_f64();
    if inserted != receipts.len() as u64 {
        bail!("{shape:?} inserted {inserted} of {}", receipts.len());
    }
    pool.close().await;
    Ok(receipts.len() as f64 / secs)
}

/// Chunk `i` of a batch as the writer gives it to the store: its rows and its ledger row.
fn chunk_rows<'a>(
    chunk: &'a [Receipt],
    batch_id: &'a str,
    i: usize,
) -> anyhow::Result<(Vec<Row<'a>>, LedgerEntry)> {
    let index = u32::try_from(i)?;
    let rows = chunk
        .iter()
        .map(|r| Row {
            receipt: r,
            batch_id,
            chunk_index: index,
            photo: None,
        })
        .collect();
    let ledger = LedgerEntry {
        batch_id: batch_id.to_owned(),
        chunk_index: index,
        chunk_count: 1,
        receipts: u32::try_from(chunk.len())?,
        message_id: format!("m{i}"),
        ..LedgerEntry::default()
    };
    Ok((rows, ledger))
}

/// Receipts/s with `lanes` transactions of `batch` in flight at once, on as many connections:
/// what `throttle.max_concurrent_transactions` allows the agent.
async fn in_parallel(
    pg: &PrivatePostgres,
    receipts: &[Receipt],
    batch: usize,
    lanes: u32,
) -> anyhow::Result<f64> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let pool = fresh_db_with(pg, &format!("wp_parallel_{lanes}"), lanes).await?;
    let store = Store::from_pool(pool.clone());
    let batch_id = uuid::Uuid::new_v4().to_string();
    let t = Instant::now();
    let inserted: u64 = futures_util::stream::iter(receipts.chunks(batch).enumerate())
        .map(|(i, chunk)| {
            let (store, batch_id) = (&store, &batch_id);
            async move {
                let (rows, ledger) = chunk_rows(chunk, batch_id, i)?;
                anyhow::Ok(store.write(&rows, &[ledger]).await?.inserted)
            }
        })
        .buffer_unordered(lanes as usize)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await?;
    let secs = t.elapsed().as_secs_f64();
    if inserted != receipts.len() as u64 {
        bail!("{lanes} lanes inserted {inserted} of {}", receipts.len());
    }
    pool.close().await;
    Ok(receipts.len() as f64 / secs)
}

const RECEIPT_COLUMNS: &str =
    "receipt_id, tenant_id, submitted_by, merchant, issued_on, currency, total, tax, \
     category, image_key, image_sha256, image_bytes, metadata, batch_id, chunk_index";
const ITEM_COLUMNS: &str = "receipt_id, line_no, description, quantity, unit_price, amount";

/// The candidate: COPY the batch into session-temporary staging tables, then one statement
/// inserts the new receipts and the items of exactly those.
async fn copy_staging_write(
    pool: &PgPool,
    rows: &[Row<'_>],
    ledger: &LedgerEntry,
) -> anyhow::Result<u64> {
    let (receipts, items) = copy_text(rows.iter().map(|r| (r.receipt, r.batch_id, r.chunk_index)));
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY stage_receipts ({RECEIPT_COLUMNS}) FROM STDIN"
        ))
        .await?;
    copy.send(receipts.into_bytes()).await?;
    copy.finish().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY stage_items ({ITEM_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(items.into_bytes()).await?;
    copy.finish().await?;
    let inserted: i64 = sqlx::query_scalar(&format!(
        "WITH ins AS (
            INSERT INTO receipts ({RECEIPT_COLUMNS}) SELECT {RECEIPT_COLUMNS} FROM stage_receipts
            ON CONFLICT (receipt_id) DO NOTHING RETURNING receipt_id),
         items AS (
            INSERT INTO receipt_items ({ITEM_COLUMNS}) SELECT {ITEM_COLUMNS} FROM stage_items
            WHERE receipt_id IN (SELECT receipt_id FROM ins) ON CONFLICT DO NOTHING)
         SELECT count(*) FROM ins"
    ))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO chunks (batch_id, chunk_index, chunk_count, receipts, rejected, message_id)
         VALUES ($1::uuid, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&ledger.batch_id)
    .bind(i32::try_from(ledger.chunk_index)?)
    .bind(i32::try_from(ledger.chunk_count)?)
    .bind(i32::try_from(ledger.receipts)?)
    .bind(i32::try_from(ledger.rejected)?)
    .bind(&ledger.message_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(u64::try_from(inserted)?)
}

/// Rows in COPY's text format: (receipts, items).
fn copy_text<'a>(rows: impl Iterator<Item = (&'a Receipt, &'a str, u32)>) -> (String, String) {
    let mut rs = String::new();
    let mut is = String::new();
    for (r, batch_id, chunk) in rows {
        let metadata = r
            .metadata
            .as_ref()
            .map(|m| serde_json::Value::Object(m.clone()).to_string());
        let bytes = r.image.as_ref().map(|i| i.bytes.to_string());
        let chunk = chunk.to_string();
        let fields: [Option<&str>; 15] = [
            Some(&r.receipt_id),
            Some(&r.tenant_id),
            r.submitted_by.as_deref(),
            Some(&r.merchant),
            Some(&r.issued_on),
            Some(&r.currency),
            Some(r.total.as_str()),
            r.tax.as_ref().map(|t| t.as_str()),
            r.category.as_deref(),
            r.image.as_ref().and_then(|i| i.key.as_deref()),
            r.image.as_ref().map(|i| i.sha256.as_str()),
            bytes.as_deref(),
            metadata.as_deref(),
            Some(batch_id),
            Some(&chunk),
        ];
        push_line(&mut rs, &fields);
        for (n, item) in r.items.iter().enumerate() {
            let line = (n + 1).to_string();
            push_line(
                &mut is,
                &[
                    Some(&r.receipt_id),
                    Some(&line),
                    Some(&item.description),
                    Some(item.quantity.as_str()),
                    Some(item.unit_price.as_str()),
                    Some(item.amount.as_str()),
                ],
            );
        }
    }
    (rs, is)
}

fn push_line(out: &mut String, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match f {
            None => out.push_str("\\N"),
            Some(s) => {
                for c in s.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out.push('\n');
}

/// Receipts/s of one plain COPY per table, all rows, one transaction.
async fn raw_copy(pg: &PrivatePostgres, receipts: &[Receipt]) -> anyhow::Result<f64> {
    let pool = fresh_db(pg, "wp_raw_copy").await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let t = Instant::now();
    let (rs, is) = copy_text(
        receipts
            .iter()
            .enumerate()
            .map(|(i, r)| (r, batch_id.as_str(), u32::try_from(i / BATCH).unwrap_or(0))),
    );
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY receipts ({RECEIPT_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(rs.into_bytes()).await?;
    copy.finish().await?;
    let mut copy = tx
        .copy_in_raw(&format!("COPY receipt_items ({ITEM_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(is.into_bytes()).await?;
    copy.finish().await?;
    tx.commit().await?;
    let secs = t.elapsed().as_secs_f64();
    pool.close().await;
    Ok(receipts.len() as f64 / secs)
}
