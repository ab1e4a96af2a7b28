//! The example customer schema of `deploy/examples/expenses/`, loaded from the repository for
//! the procedure target's end-to-end tests and its bench row: the files as they ship, the
//! generator's tenants made known to the customer's application, and its expenses counted.

use sqlx::PgPool;

use crate::repo_root;

/// The procedure the example defines, as `[target]` names it.
pub const PROCEDURE: &str = "expenses.ingest_receipts";

/// `[target]` for the example's procedure.
pub fn target_toml() -> String {
    format!("[target]\nkind = \"procedure\"\nprocedure = \"{PROCEDURE}\"")
}

/// Runs the example's SQL `files` (`schema.sql`, `ingest_receipts.sql`) on `pool`, as the
/// README's adoption steps do.
pub async fn load(pool: &PgPool, files: &[&str]) -> anyhow::Result<()> {
    for file in files {
        let path = repo_root().join("deploy/examples/expenses").join(file);
        let sql = std::fs::read_to_string(&path)?;
        sqlx::raw_sql(&sql).execute(pool).await?;
    }
    Ok(())
}

/// The whole example: the customer's schema, their procedure, and the tenants `tenant-000` …
/// that [`crate::gen::Generator`] uses.
pub async fn load_with_tenants(pool: &PgPool, tenants: u32) -> anyhow::Result<()> {
    load(pool, &["schema.sql", "ingest_receipts.sql"]).await?;
    add_tenants(pool, tenants).await
}

/// The tenants `tenant-000` … `tenant-{n-1}` in the customer's `tenants` table.
pub async fn add_tenants(pool: &PgPool, tenants: u32) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO expenses.tenants (code, name)
         SELECT format('tenant-%s', lpad(i::text, 3, '0')), format('Tenant %s', i)
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(i32::try_from(tenants)?)
    .execute(pool)
    .await?;
    Ok(())
}

/// Expenses stored in the customer's table (0 while it does not exist).
pub async fn stored(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM expenses.expenses")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}
