//! `receipt_photos` (`[photos] store = "database"`): the photos of the receipts one write
//! stores, in its transaction. A newly inserted receipt's photo is inserted (an id already
//! there is left alone: a redelivery stores nothing twice); a receipt replaced under
//! `write.on_conflict = "update"` has its photo replaced, or removed when the new version
//! carries none. Receipts counted as duplicates or conflicts write nothing here, as for their
//! items.

use sluice_protocol::Fingerprint;

use super::{Row, StoreError};

const INSERT_PHOTO: &str = "\
INSERT INTO receipt_photos (receipt_id, content_type, sha256, bytes, data)
VALUES ($1::uuid, $2, $3, $4, $5)
ON CONFLICT (receipt_id) DO NOTHING";

const REPLACE_PHOTO: &str = "\
INSERT INTO receipt_photos (receipt_id, content_type, sha256, bytes, data)
VALUES ($1::uuid, $2, $3, $4, $5)
ON CONFLICT (receipt_id) DO UPDATE SET content_type = excluded.content_type,
    sha256 = excluded.sha256, bytes = excluded.bytes, data = excluded.data, stored_at = now()";

/// Writes the photos of `inserted` and `updated` rows that hold one, one statement per photo
/// read from its file (only one photo in memory at a time); returns the bytes written.
pub(super) async fn write(
    tx: &mut sqlx::PgConnection,
    updated: &[(Row<'_>, Fingerprint)],
    inserted: &[(Row<'_>, Fingerprint)],
) -> Result<u64, StoreError> {
    let mut bytes = 0;
    // A replaced receipt's new version without a carried photo keeps no old photo.
    let bare: Vec<&str> = updated
        .iter()
        .filter(|(r, _)| r.photo.is_none())
        .map(|(r, _)| r.receipt.receipt_id.as_str())
        .collect();
    if !bare.is_empty() {
        sqlx::query("DELETE FROM receipt_photos WHERE receipt_id = ANY($1::uuid[])")
            .bind(bare)
            .execute(&mut *tx)
            .await?;
    }
    for (sql, rows) in [(REPLACE_PHOTO, updated), (INSERT_PHOTO, inserted)] {
        for (r, _) in rows {
            let (Some(path), Some(image)) = (r.photo, r.receipt.image.as_ref()) else {
                continue;
            };
            // The spool is the agent's own disk: a file that cannot be read fails the write
            // (nothing is committed without its photo) under its own name, not the database's.
            let data = tokio::fs::read(path).await.map_err(|e| {
                StoreError::Spool(format!(
                    "cannot read the fetched photo of receipt {} from {}: {e}",
                    r.receipt.receipt_id,
                    path.display()
                ))
            })?;
            bytes += data.len() as u64;
            sqlx::query(sql)
                .bind(r.receipt.receipt_id.as_str())
                .bind(image.content_type.as_deref().unwrap_or_default())
                .bind(image.sha256.as_str())
                .bind(i64::try_from(data.len()).unwrap_or(i64::MAX))
                .bind(data)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(bytes)
}

/// Whether the photo `sha256` of receipt `receipt_id` is stored (its object already deleted
/// after an earlier commit: a redelivery).
pub(super) async fn stored(
    pool: &sqlx::PgPool,
    receipt_id: &str,
    sha256: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM receipt_photos WHERE receipt_id = $1::uuid AND sha256 = $2)",
    )
    .bind(receipt_id)
    .bind(sha256)
    .fetch_one(pool)
    .await?)
}
