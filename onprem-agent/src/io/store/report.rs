//! The status reporter's reads and writes of the chunk ledger, on its own connection (never a
//! writer's): the rows the status queue has not taken yet, oldest first (index
//! `chunks_unreported_idx`), as [`ChunkReport`]s; marking the rows it took; counting the rest.

use sluice_protocol::report::{ChunkReport, Rejection};
use sqlx::Row as _;

use super::{Store, StoreError};

/// The unreported rows, oldest first. `rejected` in the ledger counts conflicts too; a report
/// names them apart.
const UNREPORTED: &str = "\
SELECT batch_id::text, chunk_index, chunk_count, receipts, stored, duplicates, conflicts,
       rejected - conflicts, rejections::text, (extract(epoch FROM committed_at) * 1000)::int8
FROM chunks WHERE reported_at IS NULL ORDER BY committed_at LIMIT $1";

const MARK_REPORTED: &str = "\
UPDATE chunks SET reported_at = now()
FROM UNNEST($1::uuid[], $2::int4[]) AS u(batch_id, chunk_index)
WHERE chunks.batch_id = u.batch_id AND chunks.chunk_index = u.chunk_index
  AND chunks.reported_at IS NULL";

const COUNT_UNREPORTED: &str = "SELECT count(*) FROM chunks WHERE reported_at IS NULL";

impl Store {
    /// At most `limit` ledger rows not yet taken by the status queue, oldest first.
    pub async fn unreported(&self, limit: i64) -> Result<Vec<ChunkReport>, StoreError> {
        let rows = sqlx::query(UNREPORTED)
            .bind(limit)
            .fetch_all(&self.report)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let n = |i: usize| -> Result<u32, StoreError> {
                Ok(u32::try_from(r.try_get::<i32, _>(i)?).unwrap_or(0))
            };
            // Written by the agent from the same type; a row edited by hand into another
            // shape is reported without names (the counts stay exact).
            let rejections: Vec<Rejection> =
                serde_json::from_str(&r.try_get::<String, _>(8)?).unwrap_or_default();
            out.push(ChunkReport {
                batch_id: r.try_get(0)?,
                chunk_index: n(1)?,
                chunk_count: n(2)?,
                receipts: n(3)?,
                stored: n(4)?,
                duplicates: n(5)?,
                conflicts: n(6)?,
                rejected: n(7)?,
                rejections,
                committed_at_ms: u64::try_from(r.try_get::<i64, _>(9)?).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Marks the chunks of `reports` as taken by the status queue.
    pub async fn mark_reported(&self, reports: &[&ChunkReport]) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let batch: Vec<&str> = reports.iter().map(|r| r.batch_id.as_str()).collect();
        let index: Vec<i32> = reports
            .iter()
            .map(|r| i32::try_from(r.chunk_index).unwrap_or(i32::MAX))
            .collect();
        sqlx::query(MARK_REPORTED)
            .bind(batch)
            .bind(index)
            .execute(&self.report)
            .await?;
        Ok(())
    }

    /// Ledger rows the status queue has not taken yet.
    pub async fn count_unreported(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(COUNT_UNREPORTED)
            .fetch_one(&self.report)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
