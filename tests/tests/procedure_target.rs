//! The procedure target (issue #15): the agent writes into a customer's own tables through
//! their procedure, with the example schema of `deploy/examples/expenses/` loaded from the
//! repository (the example is what is tested). Against the real PostgreSQL, moto and the real
//! `sluice-agent` binary.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::expenses;
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::{norm_decimal, Oracle};
use sluice_e2e::{wait_for, EnvOptions, Stored, TestEnv};
use sqlx::Row as _;

const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
/// Tenants the generator uses (`tenant-000` …), all known to the customer's application.
const TENANTS: u32 = 25;

async fn expenses_stored(env: &TestEnv) -> i64 {
    expenses::stored(&env.pool).await
}

/// A decimal string in ten-thousandths (the API allows at most 4 fraction digits).
fn units(s: &str) -> i128 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<4}");
    let v = int.parse::<i128>().unwrap_or(0) * 10_000 + frac[..4].parse::<i128>().unwrap_or(0);
    if neg {
        -v
    } else {
        v
    }
}

/// Every expense as (tenant code, vendor, date, amount, lines, sum of line amounts), by receipt.
async fn expenses(env: &TestEnv) -> anyhow::Result<HashMap<String, Value>> {
    let rows = sqlx::query(
        "SELECT e.external_ref::text AS id, t.code, e.vendor, e.spent_on::text AS d,
                e.amount::text AS amount, count(l.line_no) AS lines,
                coalesce(sum(l.amount), 0)::text AS line_total
         FROM expenses.expenses e JOIN expenses.tenants t ON t.id = e.tenant_id
         LEFT JOIN expenses.expense_lines l ON l.expense_id = e.id
         GROUP BY e.id, t.code",
    )
    .fetch_all(&env.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("id"),
                json!([
                    r.get::<String, _>("code"),
                    r.get::<String, _>("vendor"),
                    r.get::<String, _>("d"),
                    norm_decimal(r.get("amount")),
                    r.get::<i64, _>("lines"),
                    norm_decimal(r.get("line_total")),
                ]),
            )
        })
        .collect())
}

/// The same shape, from a receipt as uploaded.
fn expected_expense(r: &Value) -> Value {
    let items = r["items"].as_array().cloned().unwrap_or_default();
    let line_total: i128 = items
        .iter()
        .map(|i| units(i["amount"].as_str().unwrap_or("0")))
        .sum();
    let line_total = format!("{}.{:04}", line_total / 10_000, line_total % 10_000);
    json!([
        r["tenant_id"],
        r["merchant"],
        r["issued_on"],
        norm_decimal(r["total"].as_str().unwrap_or("")),
        items.len(),
        norm_decimal(&line_total),
    ])
}

/// A backlog of 3,000 receipts with 500 of them uploaded again (duplicates), one the customer's
/// trigger refuses (a negative total) and one for a tenant their application does not know,
/// drained by an agent killed with SIGKILL mid-drain (redeliveries) and started again: every
/// good receipt is an expense exactly once with its lines, the two refused are dead-lettered
/// with the customer's own messages, the per-tenant totals kept by the customer's triggers
/// match, and Sluice's schema holds only the ledger and the fingerprints.
#[tokio::test]
async fn a_backlog_lands_in_the_customers_tables_once_through_their_procedure() -> anyhow::Result<()>
{
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 10,
        // A kill leaves what it held invisible for a timeout and received again: not the data's
        // fault, so the redrive policy must not move it.
        max_receive_count: 30,
        ..EnvOptions::default()
    })
    .await?;
    expenses::load_with_tenants(&env.pool, TENANTS).await?;

    let mut receipts = Generator::new(151).receipts(3_000);
    receipts[234]["total"] = json!("-12.50");
    receipts[2_345]["tenant_id"] = json!("tenant-unknown");
    let negative = receipts[234]["receipt_id"].clone();
    let unknown = receipts[2_345]["receipt_id"].clone();
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &receipts, "100")
        .await?;
    env.upload_acknowledged(&mut oracle, &receipts[1_000..1_500], "50")
        .await?;
    let good: HashMap<String, Value> = receipts
        .iter()
        .filter(|r| r["receipt_id"] != negative && r["receipt_id"] != unknown)
        .map(|r| (r["receipt_id"].as_str().unwrap_or("").to_owned(), r.clone()))
        .collect();
    let settings = "[queue]\nvisibility_timeout_seconds = 10\n[throttle]\nrows_per_second = 1500\nburst = 1500\n[batch]\nmax_rows = 300\nmax_wait_ms = 10";
    let settings = format!("{settings}\n{}", expenses::target_toml());

    let mut agent = env.launch_agent("first", &settings).await?;
    wait_for(DRAIN_TIMEOUT, "some expenses stored", || async {
        (expenses_stored(&env).await >= 300).then_some(())
    })
    .await?;
    agent.kill().await?;
    let at_kill = expenses_stored(&env).await;
    assert!(at_kill < 2_998, "the kill must land mid-drain: {at_kill}");
    let agent = env.launch_agent("again", &settings).await?;
    env.wait_drained_in(Stored::Expenses, 2_998, DRAIN_TIMEOUT)
        .await?;
    // Counted on the DLQ, not in the second agent's metrics: the first agent may have
    // dead-lettered either refused receipt before it was killed.
    wait_for(DRAIN_TIMEOUT, "two receipts dead-lettered", || async {
        let (visible, _, _) = env.depth(&env.dlq_url).await.ok()?;
        (visible >= 2).then_some(())
    })
    .await?;
    agent.stop().await?;

    // Every good receipt exactly once (external_ref is unique: a second pass would have been
    // refused and dead-lettered), with its content.
    let stored = expenses(&env).await?;
    assert_eq!(stored.len(), good.len(), "expenses stored");
    for (id, r) in &good {
        assert_eq!(
            stored.get(id),
            Some(&expected_expense(r)),
            "expense of receipt {id}"
        );
    }
    // The refused ones: on the DLQ with the customer's words, nothing else there.
    let dead = env.drain_dlq().await?;
    assert_eq!(dead.len(), 2, "dead letters: {dead:?}");
    let reason_of = |id: &Value| -> String {
        let id = id.as_str().unwrap_or("-");
        dead.iter()
            .find(|d| d.body.contains(id))
            .and_then(|d| d.attributes.get("sluice-error").cloned())
            .unwrap_or_default()
    };
    let why = reason_of(&negative);
    assert!(
        why.contains("P0001")
            && why.contains("has a negative total (-12.5000): book refunds as credit notes"),
        "{why}"
    );
    let why = reason_of(&unknown);
    assert!(
        why.contains("23503") && why.contains("unknown tenant tenant-unknown"),
        "{why}"
    );
    // The per-tenant totals the customer's triggers keep.
    let mut want: BTreeMap<String, (i64, i128)> = BTreeMap::new();
    for r in good.values() {
        let e = want
            .entry(r["tenant_id"].as_str().unwrap_or("").to_owned())
            .or_default();
        e.0 += 1;
        e.1 += units(r["total"].as_str().unwrap_or("0"));
    }
    let rows = sqlx::query(
        "SELECT code, expense_count::int8 AS n, expense_total::text AS total FROM expenses.tenants
         WHERE expense_count > 0 ORDER BY code",
    )
    .fetch_all(&env.pool)
    .await?;
    let got: BTreeMap<String, (i64, i128)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("code"),
                (r.get::<i64, _>("n"), units(r.get("total"))),
            )
        })
        .collect();
    assert_eq!(got, want, "per-tenant totals");
    // Sluice's schema: the ledger (one row per chunk) and a fingerprint per receipt passed; no
    // tables of its own for the receipts.
    let (receipts_table, fingerprints, chunks): (Option<String>, i64, i64) = sqlx::query_as(
        "SELECT to_regclass('sluice.receipts')::text,
                (SELECT count(*) FROM sluice.receipt_fingerprints),
                (SELECT count(*) FROM sluice.chunks)",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        receipts_table, None,
        "no sluice.receipts for a procedure target"
    );
    assert_eq!(fingerprints, 2_998);
    assert_eq!(chunks, 30 + 10, "one ledger row per chunk uploaded");
    let rejected: i64 = sqlx::query_scalar("SELECT sum(rejected)::int8 FROM sluice.chunks")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(rejected, 2);
    Ok(())
}

/// `on_conflict = "update"`: a corrected receipt reaches the procedure once more, marked
/// `"update": true`; the example replaces the expense and its lines, and the tenant's total
/// follows. The same content again passes nothing.
#[tokio::test]
async fn a_corrected_receipt_is_passed_again_marked_as_an_update() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    expenses::load_with_tenants(&env.pool, TENANTS).await?;
    let receipts = Generator::new(152).receipts(40);
    let mut corrected = receipts[7].clone();
    corrected["total"] = json!("999.99");
    corrected["items"] = json!([{"description": "fixed", "quantity": "1", "unit_price": "999.99", "amount": "999.99"}]);
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &receipts, "20")
        .await?;
    let settings = format!(
        "{}\n[write]\non_conflict = \"update\"",
        expenses::target_toml()
    );
    let agent = env.launch_agent("update", &settings).await?;
    env.wait_drained_in(Stored::Expenses, 40, DRAIN_TIMEOUT)
        .await?;
    env.upload_acknowledged(&mut oracle, &[corrected.clone(), receipts[8].clone()], "20")
        .await?;
    let id = corrected["receipt_id"].as_str().unwrap_or("").to_owned();
    let want = expected_expense(&corrected);
    wait_for(DRAIN_TIMEOUT, "the corrected expense", || async {
        let stored = expenses(&env).await.ok()?;
        let depth = env.depth(&env.queue_url).await.ok()?;
        (stored.get(&id) == Some(&want) && depth == (0, 0, 0)).then_some(())
    })
    .await?;
    // `status` reads the ledger, which both targets keep.
    let config = agent.config().to_string_lossy().into_owned();
    let status = env
        .agent_cli(&["status", "--json", "--config", &config])
        .await?;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    agent.stop().await?;
    let stored = expenses(&env).await?;
    assert_eq!(stored.len(), 40);
    let tenant = corrected["tenant_id"].as_str().unwrap_or("");
    let total: String =
        sqlx::query_scalar("SELECT expense_total::text FROM expenses.tenants WHERE code = $1")
            .bind(tenant)
            .fetch_one(&env.pool)
            .await?;
    let want_total: i128 = receipts
        .iter()
        .enumerate()
        .filter(|(_, r)| r["tenant_id"] == corrected["tenant_id"])
        .map(|(i, r)| {
            if i == 7 {
                units("999.99")
            } else {
                units(r["total"].as_str().unwrap_or("0"))
            }
        })
        .sum();
    assert_eq!(units(&total), want_total, "tenant {tenant}'s total");
    assert!(env.drain_dlq().await?.is_empty());
    Ok(())
}

/// A role of its own for this test (roles are the cluster's), with its database URL.
async fn agent_role(env: &TestEnv) -> anyhow::Result<(String, String)> {
    let role = format!("{}_agent", env.name);
    sqlx::query(&format!("CREATE ROLE {role} LOGIN PASSWORD 'agent-pw'"))
        .execute(&env.pool)
        .await?;
    sqlx::query(&format!("ALTER SCHEMA sluice OWNER TO {role}"))
        .execute(&env.pool)
        .await?;
    let url = env
        .database_url
        .replacen("://postgres@", &format!("://{role}:agent-pw@"), 1);
    anyhow::ensure!(
        url != env.database_url,
        "unexpected URL {}",
        env.database_url
    );
    Ok((role, url))
}

/// `check-config --online` for `extra`; (exit code, stdout, stderr).
async fn check_online(env: &TestEnv, extra: &str) -> anyhow::Result<(i32, String, String)> {
    let path = env.write_agent_config("check.toml", extra)?;
    let out = env
        .agent_cli(&[
            "check-config",
            "--online",
            "--config",
            &path.to_string_lossy(),
        ])
        .await?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `check-config --online` says exactly what is missing: the procedure, its signature, the
/// EXECUTE privilege (exit 64 each), and passes once all is right; `run` refuses to start
/// (exit 64) on the same problem.
#[tokio::test]
async fn check_config_online_names_what_the_procedure_target_lacks() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    sqlx::raw_sql("CREATE SCHEMA sluice")
        .execute(&env.pool)
        .await?;
    let (role, url) = agent_role(&env).await?;
    // The owner migrates (`sluice-agent migrate`); the agent's role only writes.
    let cfg = format!(
        "{}\n[database]\nurl = {url:?}\nmigrate_on_start = false",
        expenses::target_toml()
    );

    // No schema yet.
    let (code, _, err) = check_online(&env, &cfg).await?;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(
            "procedure expenses.ingest_receipts(jsonb) does not exist: there is no schema expenses"
        ),
        "{err}"
    );
    // The schema, no procedure.
    expenses::load(&env.pool, &["schema.sql"]).await?;
    let (code, _, err) = check_online(&env, &cfg).await?;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("procedure expenses.ingest_receipts(jsonb) does not exist (target.procedure"),
        "{err}"
    );
    // The wrong signature, and a function of the right one.
    sqlx::raw_sql(
        "CREATE PROCEDURE expenses.ingest_receipts(receipts json) LANGUAGE sql AS $$ SELECT 1 $$;
         CREATE FUNCTION expenses.ingest_receipts(receipts jsonb) RETURNS void LANGUAGE sql AS $$ SELECT 1 $$;",
    )
    .execute(&env.pool)
    .await?;
    let (code, _, err) = check_online(&env, &cfg).await?;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(
            "procedure expenses.ingest_receipts(jsonb) does not exist; found expenses.ingest_receipts(json), \
             expenses.ingest_receipts(jsonb) (a function, not a procedure: CALL needs CREATE PROCEDURE)"
        ),
        "{err}"
    );
    // The right procedure, not executable by the agent's role, in a schema it may not use.
    sqlx::raw_sql(
        "DROP PROCEDURE expenses.ingest_receipts(json); DROP FUNCTION expenses.ingest_receipts(jsonb);",
    )
    .execute(&env.pool)
    .await?;
    expenses::load(&env.pool, &["ingest_receipts.sql"]).await?;
    sqlx::raw_sql("REVOKE EXECUTE ON PROCEDURE expenses.ingest_receipts(jsonb) FROM PUBLIC")
        .execute(&env.pool)
        .await?;
    let (code, _, err) = check_online(&env, &cfg).await?;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(&format!(
            "role {role} may not use schema expenses (GRANT USAGE ON SCHEMA expenses TO {role}); \
             role {role} may not execute procedure expenses.ingest_receipts(jsonb) \
             (GRANT EXECUTE ON PROCEDURE expenses.ingest_receipts(jsonb) TO {role})"
        )),
        "{err}"
    );
    // `run` refuses to start on the same problem, with exit 64.
    let mut agent = env.spawn_agent("refused", &cfg)?;
    let status = agent.process_mut().wait(Duration::from_secs(60)).await?;
    assert_eq!(status.code(), Some(64), "{}", agent.log_text());
    assert!(
        agent.log_text().contains(&format!(
            "refusing to start: role {role} may not use schema expenses"
        )),
        "{}",
        agent.log_text()
    );
    // Granted as the README says: it passes, and the agent's role migrates its own schema and
    // drains into the customer's tables.
    sqlx::raw_sql(&format!(
        "GRANT USAGE ON SCHEMA expenses TO {role};
         GRANT EXECUTE ON PROCEDURE expenses.ingest_receipts(jsonb) TO {role};
         GRANT SELECT, INSERT, DELETE ON expenses.expenses, expenses.expense_lines TO {role};
         GRANT SELECT, UPDATE ON expenses.tenants TO {role};"
    ))
    .execute(&env.pool)
    .await?;
    let (code, out, err) = check_online(&env, &cfg).await?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "procedure expenses.ingest_receipts(jsonb) exists and the agent's role may execute it"
        ),
        "{out}"
    );
    expenses::add_tenants(&env.pool, TENANTS).await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(153).receipts(50), "10")
        .await?;
    let agent = env
        .launch_agent(
            "granted",
            &format!("{cfg}\n[database]\nmigrate_on_start = true"),
        )
        .await?;
    env.wait_drained_in(Stored::Expenses, 50, DRAIN_TIMEOUT)
        .await?;
    agent.stop().await?;
    // The role owns objects in the test's database: that goes first.
    let admin = env.servers.database_url.clone();
    env.cleanup().await;
    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
        sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
            .execute(&pool)
            .await
            .ok();
    }
    Ok(())
}

/// Drains 200 receipts through the example's procedure, breaks it with `break_it` while the
/// agent runs, uploads 300 more: every call is refused, and the canary (the procedure called on
/// one plain receipt, rolled back) is refused the same way, so the fault is systemic: nothing is
/// dead-lettered, the agent pauses with `write_refused` on `/readyz` naming `expected`, and
/// resumes by itself once the example's procedure is back.
async fn a_broken_procedure_pauses_the_agent_until_it_is_back(
    seed: u64,
    name: &str,
    break_it: &str,
    expected: &str,
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    expenses::load_with_tenants(&env.pool, TENANTS).await?;
    let mut oracle = Oracle::new();
    let mut g = Generator::new(seed);
    env.upload_acknowledged(&mut oracle, &g.receipts(200), "50")
        .await?;
    let agent = env.launch_agent(name, &expenses::target_toml()).await?;
    env.wait_drained_in(Stored::Expenses, 200, DRAIN_TIMEOUT)
        .await?;
    sqlx::raw_sql(break_it).execute(&env.pool).await?;
    env.upload_acknowledged(&mut oracle, &g.receipts(300), "50")
        .await?;
    let body = wait_for(
        DRAIN_TIMEOUT,
        "/readyz 503 naming write_refused",
        || async {
            let (status, body) = agent.get("/readyz").await?;
            (status == 503 && body.contains("write_refused")).then_some(body)
        },
    )
    .await?;
    assert!(body.contains(expected), "{body}");
    assert_eq!(expenses_stored(&env).await, 200);
    sqlx::raw_sql("DROP PROCEDURE IF EXISTS expenses.ingest_receipts(jsonb)")
        .execute(&env.pool)
        .await?;
    expenses::load(&env.pool, &["ingest_receipts.sql"]).await?;
    env.wait_drained_in(Stored::Expenses, 500, DRAIN_TIMEOUT)
        .await?;
    wait_for(DRAIN_TIMEOUT, "write_refused cleared", || async {
        let (status, _) = agent.get("/readyz").await?;
        (status == 200).then_some(())
    })
    .await?;
    agent.stop().await?;
    assert_eq!(expenses_stored(&env).await, 500);
    assert!(env.drain_dlq().await?.is_empty(), "nothing dead-lettered");
    Ok(())
}

/// The procedure dropped while the agent runs refuses every call, the canary too.
#[tokio::test]
async fn a_dropped_procedure_pauses_the_agent_until_it_is_back() -> anyhow::Result<()> {
    a_broken_procedure_pauses_the_agent_until_it_is_back(
        154,
        "dropped",
        "DROP PROCEDURE expenses.ingest_receipts(jsonb)",
        "procedure expenses.ingest_receipts(jsonb) does not exist",
    )
    .await
}

/// A procedure that COMMITs inside its loop fails every call that has a receipt (2D000: the
/// agent's transaction holds the call), but takes an empty one: the canary calls it with a
/// plain receipt, so the fault is still seen as the procedure's, not every row's.
#[tokio::test]
async fn a_procedure_that_commits_inside_its_loop_pauses_the_agent_and_dead_letters_nothing(
) -> anyhow::Result<()> {
    a_broken_procedure_pauses_the_agent_until_it_is_back(
        155,
        "commits",
        "CREATE OR REPLACE PROCEDURE expenses.ingest_receipts(receipts jsonb)
         LANGUAGE plpgsql AS $$
         DECLARE r jsonb;
         BEGIN
           FOR r IN SELECT * FROM jsonb_array_elements(receipts) LOOP
             COMMIT;
           END LOOP;
         END $$",
        "2D000",
    )
    .await
}
