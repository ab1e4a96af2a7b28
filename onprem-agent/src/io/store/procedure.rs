//! The procedure target's SQL (`target.kind = "procedure"`): the content fingerprints Sluice
//! keeps in its own `receipt_fingerprints` table (read, inserted, replaced), the one
//! `CALL schema.name($1::jsonb)` per write with the new receipts as a JSON array, the canary's
//! call with one plain receipt (rolled back by the caller), and the check that the procedure
//! exists with the expected signature and that the agent's role may call it.
//!
//! Keeps the guarantees "The customer's own tables get each receipt once" (the fingerprints,
//! inserted in the call's transaction) and "A procedure that fails every row pauses the agent" (the
//! canary calls the procedure with a plain receipt, not with none).

use serde::Serialize;
use sluice_protocol::{Fingerprint, Receipt};
use sqlx::Row as _;

use super::{IdSet, Row, StoreError};
use crate::config::ProcedureName;

/// The stored fingerprints of a batch's ids ([`super::sql::stored_fingerprints`]).
pub(super) const STORED_FINGERPRINTS: &str = "SELECT receipt_id::text, content_sha256 FROM receipt_fingerprints WHERE receipt_id = ANY($1::uuid[])";

const INSERT_FINGERPRINTS: &str = "\
INSERT INTO receipt_fingerprints (receipt_id, content_sha256, batch_id, chunk_index)
SELECT * FROM UNNEST($1::uuid[], $2::bytea[], $3::uuid[], $4::int4[])
ON CONFLICT (receipt_id) DO NOTHING
RETURNING receipt_id::text";

const UPDATE_FINGERPRINTS: &str = "\
UPDATE receipt_fingerprints AS f SET content_sha256 = u.sha, batch_id = u.batch_id,
    chunk_index = u.chunk_index, passed_at = now()
FROM UNNEST($1::uuid[], $2::bytea[], $3::uuid[], $4::int4[]) AS u(receipt_id, sha, batch_id, chunk_index)
WHERE f.receipt_id = u.receipt_id";

/// Records the fingerprints of `rows`; returns the ids recorded (an id already taken, by a
/// concurrent writer, is skipped and planned again by the caller).
pub(super) async fn insert_fingerprints(
    tx: &mut sqlx::PgConnection,
    rows: &[(Row<'_>, Fingerprint)],
) -> Result<IdSet<String>, StoreError> {
    let found = fingerprint_columns(INSERT_FINGERPRINTS, rows)
        .fetch_all(&mut *tx)
        .await?;
    Ok(super::sql::returned_ids(&found))
}

/// Replaces the fingerprints of `rows` (`on_conflict = "update"`).
pub(super) async fn update_fingerprints(
    tx: &mut sqlx::PgConnection,
    rows: &[(Row<'_>, Fingerprint)],
) -> Result<(), StoreError> {
    fingerprint_columns(UPDATE_FINGERPRINTS, rows)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn fingerprint_columns<'q>(
    sql: &'q str,
    rows: &[(Row<'q>, Fingerprint)],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let id: Vec<&str> = rows
        .iter()
        .map(|(r, _)| r.receipt.receipt_id.as_str())
        .collect();
    let sha: Vec<Vec<u8>> = rows.iter().map(|(_, f)| f.as_bytes().to_vec()).collect();
    let batch: Vec<&str> = rows.iter().map(|(r, _)| r.batch_id).collect();
    let chunk: Vec<i32> = rows
        .iter()
        .map(|(r, _)| i32::try_from(r.chunk_index).unwrap_or(i32::MAX))
        .collect();
    sqlx::query(sql).bind(id).bind(sha).bind(batch).bind(chunk)
}

/// One receipt as the procedure receives it: the documented receipt shape, plus where it came
/// from, plus `"update": true` when it replaces a version passed before
/// (`on_conflict = "update"`).
#[derive(Serialize)]
struct Passed<'a> {
    #[serde(flatten)]
    receipt: &'a Receipt,
    batch_id: &'a str,
    chunk_index: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    update: bool,
}

/// `CALL name($1::jsonb)` with `rows` (each with its update marker) as one JSON array.
pub(super) async fn call(
    tx: &mut sqlx::PgConnection,
    name: &ProcedureName,
    rows: &[(Row<'_>, bool)],
) -> Result<(), StoreError> {
    let passed: Vec<Passed<'_>> = rows
        .iter()
        .map(|(r, update)| Passed {
            receipt: r.receipt,
            batch_id: r.batch_id,
            chunk_index: r.chunk_index,
            update: *update,
        })
        .collect();
    let json = serde_json::to_string(&passed)
        .map_err(|e| StoreError::Unavailable(format!("encoding the procedure's receipts: {e}")))?;
    // The name is two validated plain identifiers (`ProcedureName::parse`): nothing to quote.
    sqlx::query(&format!("CALL {name}($1::jsonb)"))
        .bind(json)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The canary of the procedure target: may the agent read its fingerprints, and does the
/// procedure take `rows` (the canary's plain receipt), in a transaction the caller rolls back?
/// A call with receipts, not an empty one: faults that only rows reach (a `COMMIT` inside the
/// procedure's loop, a dropped column it writes) fail it too. The writers compare its refusal
/// with the rows' (code and message): refused the same way, the fault is the procedure's and
/// nothing is dead-lettered; refused another way (the canary's tenant is unknown to the
/// customer, and the message names it), the rows are at fault.
pub(super) async fn canary(
    tx: &mut sqlx::PgConnection,
    name: &ProcedureName,
    rows: &[Row<'_>],
) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM receipt_fingerprints LIMIT 0")
        .execute(&mut *tx)
        .await?;
    let passed: Vec<(Row<'_>, bool)> = rows.iter().map(|r| (*r, false)).collect();
    call(tx, name, &passed).await
}

/// What is wrong with the configured procedure.
#[derive(Debug, thiserror::Error)]
pub enum TargetProblem {
    /// Only a change to the database or the configuration fixes it: refuse to start.
    #[error("{0}")]
    Definite(String),
    /// The database could not be asked.
    #[error("cannot check the procedure: {0}")]
    Unavailable(#[from] StoreError),
}

impl TargetProblem {
    pub fn is_definite(&self) -> bool {
        matches!(self, TargetProblem::Definite(_))
    }
}

const PROCEDURES: &str = "\
SELECT p.prokind::text AS kind, oidvectortypes(p.proargtypes) AS args,
       p.proargmodes IS NULL AS all_in,
       has_function_privilege(p.oid, 'EXECUTE') AS may_execute
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1 AND p.proname = $2
ORDER BY args";

const SCHEMA: &str = "\
SELECT current_user::text AS role, n.oid IS NOT NULL AS exists,
       coalesce(has_schema_privilege(n.oid, 'USAGE'), false) AS usage
FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = $1";

/// Checks that `name` is a procedure taking one `jsonb` IN argument and that the connected role
/// may use its schema and execute it; the problem names exactly what is missing.
pub async fn verify(pool: &sqlx::PgPool, name: &ProcedureName) -> Result<(), TargetProblem> {
    let wanted = format!("{name}(jsonb)");
    let schema = sqlx::query(SCHEMA)
        .bind(&name.schema)
        .fetch_one(pool)
        .await
        .map_err(StoreError::from)?;
    let role: String = schema.try_get("role").map_err(StoreError::from)?;
    if !schema
        .try_get::<bool, _>("exists")
        .map_err(StoreError::from)?
    {
        return Err(TargetProblem::Definite(format!(
            "procedure {wanted} does not exist: there is no schema {} (target.procedure)",
            name.schema
        )));
    }
    let found = sqlx::query(PROCEDURES)
        .bind(&name.schema)
        .bind(&name.name)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)?;
    let mut others = Vec::new();
    let mut may_execute = None;
    for p in &found {
        let kind: String = p.try_get("kind").map_err(StoreError::from)?;
        let args: String = p.try_get("args").map_err(StoreError::from)?;
        let all_in: bool = p.try_get("all_in").map_err(StoreError::from)?;
        if kind == "p" && args == "jsonb" && all_in {
            may_execute = Some(
                p.try_get::<bool, _>("may_execute")
                    .map_err(StoreError::from)?,
            );
        } else {
            let what = match kind.as_str() {
                "p" if all_in => "",
                "p" => " (with OUT arguments)",
                "f" => " (a function, not a procedure: CALL needs CREATE PROCEDURE)",
                _ => " (not a procedure)",
            };
            others.push(format!("{name}({args}){what}"));
        }
    }
    let Some(may_execute) = may_execute else {
        let found = if others.is_empty() {
            String::new()
        } else {
            format!("; found {}", others.join(", "))
        };
        return Err(TargetProblem::Definite(format!(
            "procedure {wanted} does not exist{found} (target.procedure; the procedure takes \
             the receipts as one jsonb argument)"
        )));
    };
    let mut missing = Vec::new();
    if !schema
        .try_get::<bool, _>("usage")
        .map_err(StoreError::from)?
    {
        missing.push(format!(
            "role {role} may not use schema {} (GRANT USAGE ON SCHEMA {} TO {role})",
            name.schema, name.schema
        ));
    }
    if !may_execute {
        missing.push(format!(
            "role {role} may not execute procedure {wanted} (GRANT EXECUTE ON PROCEDURE {wanted} TO {role})"
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TargetProblem::Definite(missing.join("; ")))
    }
}
