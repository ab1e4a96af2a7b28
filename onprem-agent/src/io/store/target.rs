//! Where one write lands, the only difference between the two targets: Sluice's own tables
//! (fingerprints in `receipts`, items in `receipt_items`; [`super::sql`]) or the customer's
//! procedure (fingerprints in `receipt_fingerprints`, the receipts passed in one call at the
//! end of the transaction; [`super::procedure`]). Planning, conflicts, retries of raced ids and
//! the ledger rows stay on [`super::Store::write`]'s one path.

use sluice_protocol::Fingerprint;

use super::{procedure, sql, IdMap, IdSet, Row, StoreError};
use crate::config::Target;

/// One write transaction's target, with what it has to pass to the procedure so far.
pub(super) struct Writes<'t, 'r> {
    target: &'t Target,
    /// The receipts to pass, each with its `update` marker, in the order planned.
    passed: Vec<(Row<'r>, bool)>,
}

impl<'t, 'r> Writes<'t, 'r> {
    pub(super) fn new(target: &'t Target) -> Self {
        Self {
            target,
            passed: Vec::new(),
        }
    }

    pub(super) async fn stored_fingerprints(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: &[Row<'_>],
    ) -> Result<IdMap<String, Option<Fingerprint>>, StoreError> {
        let select = match self.target {
            Target::Sluice => sql::STORED_FINGERPRINTS,
            Target::Procedure(_) => procedure::STORED_FINGERPRINTS,
        };
        sql::stored_fingerprints(tx, rows, select).await
    }

    pub(super) async fn update(
        &mut self,
        tx: &mut sqlx::PgConnection,
        rows: &[(Row<'r>, Fingerprint)],
    ) -> Result<(), StoreError> {
        match self.target {
            Target::Sluice => sql::update_receipts(tx, rows).await,
            Target::Procedure(_) => procedure::update_fingerprints(tx, rows).await,
        }
    }

    /// Inserts `rows`; returns the ids taken (one already stored was raced by another writer).
    pub(super) async fn insert(
        &mut self,
        tx: &mut sqlx::PgConnection,
        rows: &[(Row<'r>, Fingerprint)],
    ) -> Result<IdSet<String>, StoreError> {
        match self.target {
            Target::Sluice => sql::insert_receipts(tx, rows).await,
            Target::Procedure(_) => procedure::insert_fingerprints(tx, rows).await,
        }
    }

    /// The receipts `updated` and `inserted` this round: their items written (Sluice), or kept
    /// for the call (a procedure).
    pub(super) async fn contents(
        &mut self,
        tx: &mut sqlx::PgConnection,
        updated: &[(Row<'r>, Fingerprint)],
        inserted: &[(Row<'r>, Fingerprint)],
    ) -> Result<(), StoreError> {
        match self.target {
            Target::Sluice => {
                let with_items: Vec<Row<'_>> =
                    updated.iter().chain(inserted).map(|(r, _)| *r).collect();
                sql::replace_items(tx, updated, &with_items).await
            }
            Target::Procedure(_) => {
                let rows = updated.iter().map(|(r, _)| (*r, true));
                self.passed
                    .extend(rows.chain(inserted.iter().map(|(r, _)| (*r, false))));
                Ok(())
            }
        }
    }

    /// Before the ledger rows: one call with every receipt this write stores, if any.
    pub(super) async fn finish(self, tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        match self.target {
            Target::Procedure(name) if !self.passed.is_empty() => {
                procedure::call(tx, name, &self.passed).await
            }
            _ => Ok(()),
        }
    }
}
