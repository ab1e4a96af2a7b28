//! A customer's database refuses writes (issue #11, items 2 and 3): a trigger that raises for
//! one receipt, a NOT NULL column added by hand, a revoked permission, and a dead-letter queue
//! that is gone when a refused row must go there. Each against the real PostgreSQL, moto and
//! the real `sluice-agent` binary, judged by the oracle.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{wait_for, AgentProcess, EnvOptions, Signal, TestEnv};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
const SETTINGS: &str =
    "[batch]\nmax_rows = 500\nmax_wait_ms = 50\n[throttle]\nrows_per_second = 5000\nburst = 5000";

/// Waits until `/readyz` answers 503 naming `condition` (and `detail`) and the gauge
/// `sluice_condition{condition}` is 1; returns the `/readyz` body.
async fn wait_condition(
    agent: &AgentProcess,
    condition: &str,
    detail: &str,
) -> anyhow::Result<String> {
    wait_for(
        DRAIN_TIMEOUT,
        &format!("/readyz 503 naming {condition} ({detail})"),
        || async {
            let (status, body) = agent.get("/readyz").await?;
            let gauge = agent
                .metric("sluice_condition", &[("condition", condition)])
                .await?;
            (status == 503 && body.contains(condition) && body.contains(detail) && gauge == 1.0)
                .then_some(body)
        },
    )
    .await
}

/// Waits until condition `name` is cleared: its gauge 0 and `/readyz` no longer naming it.
async fn wait_cleared(agent: &AgentProcess, condition: &str) -> anyhow::Result<()> {
    wait_for(DRAIN_TIMEOUT, &format!("{condition} cleared"), || async {
        let (_, body) = agent.get("/readyz").await?;
        let gauge = agent
            .metric("sluice_condition", &[("condition", condition)])
            .await?;
        (gauge == 0.0 && !body.contains(condition)).then_some(())
    })
    .await
}

/// ERROR lines raising `condition` in the agent's JSON log.
fn raised_errors(agent: &AgentProcess, condition: &str) -> usize {
    agent
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("\"ERROR\"")
                && l.contains("Condition raised")
                && l.contains(&format!("\"condition\":\"{condition}\""))
        })
        .count()
}

async fn sql(env: &TestEnv, statement: &str) -> anyhow::Result<()> {
    sqlx::query(statement).execute(&env.pool).await?;
    Ok(())
}

/// Waits until every message of the main queue is visible again (released, none held) and
/// there are `messages` of them.
async fn wait_released(env: &TestEnv, messages: u64) -> anyhow::Result<()> {
    wait_for(
        DRAIN_TIMEOUT,
        &format!("{messages} messages released to the main queue"),
        || async {
            let depth = env.depth(&env.queue_url).await.ok()?;
            (depth == (messages, 0, 0)).then_some(())
        },
    )
    .await
}

/// A trigger's `RAISE EXCEPTION` on one receipt of an upload of 1,000, then an upload of 500:
/// the 1,499 others are stored, the one is dead-lettered with P0001 and the trigger's words.
#[tokio::test]
async fn a_trigger_refusing_one_receipt_dead_letters_it_and_stores_the_1499_others(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    sluice_e2e::block_merchant(&env).await?;
    let mut first = Generator::new(111).receipts(1_000);
    first[421]["merchant"] = json!("Blocked Merchant AG");
    let bad_id = first[421]["receipt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let good: Vec<Value> = first
        .iter()
        .filter(|r| r["receipt_id"] != json!(bad_id))
        .cloned()
        .collect();
    let mut oracle = Oracle::new();
    let ingest = env
        .start_ingest(&[
            ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "100"),
            ("SLUICE_MAX_MESSAGE_BYTES", "1048576"),
        ])
        .await?;
    let (status, answer) = ingest.upload_json(&first).await?;
    anyhow::ensure!(status == 202, "upload refused: {answer}");
    oracle.acknowledge(&good);
    oracle.expect_dead_letter(&bad_id, "P0001");
    env.upload_acknowledged(&mut oracle, &Generator::new(112).receipts(500), "100")
        .await?;

    let agent = env.launch_agent("trigger", SETTINGS).await?;
    env.wait_drained(1_499, DRAIN_TIMEOUT).await?;
    let refused = agent.counter("sluice_receipts_dead_lettered_total").await;
    let (status, body) = agent.get("/readyz").await.unwrap_or_default();
    agent.stop().await?;
    assert_eq!(refused, 1.0);
    assert_eq!(
        status, 200,
        "one refused row is not a fault of the agent: {body}"
    );
    let dead = oracle.verify(&env).await?;
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].attributes["sluice-error"];
    assert!(
        reason.contains(&format!("receipt {bad_id} refused by the database"))
            && reason.contains("blocked by the finance team"),
        "the trigger's message: {reason}"
    );
    Ok(())
}

/// Two receipts of one upload, both refused by a check constraint and batched alone: nothing
/// commits and both fail the same way, yet the canary is taken, so the rows are at fault: both
/// are dead-lettered, the agent never pauses, and what follows is stored.
#[tokio::test]
async fn a_batch_of_only_bad_rows_is_dead_lettered_not_taken_for_a_broken_table(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    sql(
        &env,
        "ALTER TABLE sluice.receipts ADD CONSTRAINT no_poison_pill CHECK (merchant <> 'Poison Pill GmbH')",
    )
    .await?;
    let agent = env.launch_agent("onlybad", SETTINGS).await?;
    let mut bad = Generator::new(151).receipts(2);
    let mut oracle = Oracle::new();
    let mut ignored = Oracle::new();
    for r in &mut bad {
        r["merchant"] = json!("Poison Pill GmbH");
        oracle.expect_dead_letter(r["receipt_id"].as_str().unwrap_or_default(), "23514");
    }
    env.upload_acknowledged(&mut ignored, &bad, "100").await?;
    wait_for(DRAIN_TIMEOUT, "both bad receipts dead-lettered", || async {
        (agent.counter("sluice_receipts_dead_lettered_total").await == 2.0).then_some(())
    })
    .await?;
    env.upload_acknowledged(&mut oracle, &Generator::new(152).receipts(300), "100")
        .await?;
    env.wait_drained(300, DRAIN_TIMEOUT).await?;
    let paused = agent
        .metric("sluice_condition", &[("condition", "write_refused")])
        .await
        .unwrap_or(0.0);
    agent.stop().await?;
    assert_eq!(paused, 0.0, "never taken for a systemic refusal");
    let dead = oracle.verify(&env).await?;
    assert_eq!(dead.len(), 2);
    Ok(())
}

/// A NOT NULL column added by hand: a single-receipt upload, then a backlog of 1,000. Nothing
/// is dead-lettered (the canary proves the table at fault, not the rows), everything is
/// released, receiving pauses and `/readyz` names `write_refused`; when the DBA gives the
/// column a default the agent recovers by itself and stores everything.
#[tokio::test]
async fn a_not_null_column_added_by_hand_pauses_the_agent_until_the_dba_fixes_it(
) -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        max_receive_count: 100,
        ..EnvOptions::default()
    })
    .await?;
    env.migrate().await?;
    sql(
        &env,
        "ALTER TABLE sluice.receipts ADD COLUMN cost_center text NOT NULL",
    )
    .await?;
    let agent = env.launch_agent("notnull", SETTINGS).await?;
    let mut oracle = Oracle::new();

    // A one-receipt batch alone: the canary tells the table's fault from the row's.
    env.upload_acknowledged(&mut oracle, &Generator::new(121).receipts(1), "100")
        .await?;
    let body = wait_condition(&agent, "write_refused", "23502").await?;
    assert!(body.contains("cost_center"), "names the column: {body}");
    assert!(body.contains("DEFAULT"), "says what to do: {body}");

    // The backlog: 1,000 receipts in 10 more messages, received only by probes.
    env.upload_acknowledged(&mut oracle, &Generator::new(122).receipts(1_000), "100")
        .await?;
    wait_released(&env, 11).await?;
    assert_eq!(env.count_receipts().await?, 0);
    assert_eq!(
        agent.counter("sluice_receipts_dead_lettered_total").await,
        0.0,
        "nothing dead-lettered for the table's fault"
    );

    sql(
        &env,
        "ALTER TABLE sluice.receipts ALTER COLUMN cost_center SET DEFAULT 'unassigned'",
    )
    .await?;
    env.wait_drained(1_001, DRAIN_TIMEOUT).await?;
    wait_cleared(&agent, "write_refused").await?;
    let errors = raised_errors(&agent, "write_refused");
    let dead_lettered = agent.counter("sluice_receipts_dead_lettered_total").await;
    agent.stop().await?;
    assert_eq!(errors, 1, "one ERROR for the whole outage");
    assert_eq!(dead_lettered, 0.0);
    let dead = oracle.verify(&env).await?;
    assert!(dead.is_empty());
    Ok(())
}

/// INSERT revoked from the agent's role: systemic (42501), nothing dead-lettered, messages
/// released; after GRANT and a SIGHUP everything is stored.
#[tokio::test]
async fn a_revoked_insert_permission_pauses_the_agent_until_granted_again() -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        max_receive_count: 100,
        ..EnvOptions::default()
    })
    .await?;
    env.migrate().await?;
    let role = format!("{}_agent", env.name);
    sql(&env, &format!("CREATE ROLE {role} LOGIN")).await?;
    sql(&env, &format!("GRANT USAGE ON SCHEMA sluice TO {role}")).await?;
    sql(
        &env,
        &format!("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA sluice TO {role}"),
    )
    .await?;
    // Its heartbeat in the agents table updates its own row (and deletes it at a clean stop):
    // without a heartbeat going through, an agent holds no lease of the budget and writes
    // nothing.
    sql(
        &env,
        &format!("GRANT UPDATE, DELETE ON sluice.agents TO {role}"),
    )
    .await?;
    let url = env
        .database_url
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    anyhow::ensure!(
        url != env.database_url,
        "unexpected URL {}",
        env.database_url
    );
    let agent = env
        .launch_agent(
            "revoked",
            &format!("{SETTINGS}\n[database]\nurl = {url:?}\nmigrate_on_start = false"),
        )
        .await?;
    sql(
        &env,
        &format!("REVOKE INSERT ON sluice.receipts FROM {role}"),
    )
    .await?;
    let mut oracle = Oracle::new();
    env.upload_acknowledged(&mut oracle, &Generator::new(131).receipts(1_000), "100")
        .await?;
    let body = wait_condition(&agent, "write_refused", "42501").await?;
    assert!(body.contains("Grant"), "says what to do: {body}");
    wait_released(&env, 10).await?;
    assert_eq!(env.count_receipts().await?, 0);
    assert_eq!(
        agent.counter("sluice_receipts_dead_lettered_total").await,
        0.0
    );

    // SIGHUP probes at once (still refused here: the condition stays).
    wait_for(DRAIN_TIMEOUT, "a probe on SIGHUP", || async {
        agent.signal(Signal::SIGHUP).ok()?;
        agent
            .log_text()
            .contains("Retrying refused writes now (SIGHUP).")
            .then_some(())
    })
    .await?;
    sql(&env, &format!("GRANT INSERT ON sluice.receipts TO {role}")).await?;
    agent.signal(Signal::SIGHUP)?;
    env.wait_drained(1_000, DRAIN_TIMEOUT).await?;
    wait_cleared(&agent, "write_refused").await?;
    let errors = raised_errors(&agent, "write_refused");
    agent.stop().await?;
    assert_eq!(errors, 1, "one ERROR for the whole outage");
    let dead = oracle.verify(&env).await?;
    assert!(dead.is_empty());
    sql(&env, &format!("REASSIGN OWNED BY {role} TO postgres")).await?;
    sql(&env, &format!("DROP OWNED BY {role}")).await?;
    sql(&env, &format!("DROP ROLE {role}")).await?;
    Ok(())
}

/// The DLQ is deleted while one refused row among 2,000 must go there: the 1,999 others are
/// stored, the refused row's message stays on the main queue (released, not deleted),
/// `dead_letter_unavailable` shows on `/readyz` and in metrics; once the DLQ exists again the
/// row is dead-lettered and the condition clears.
#[tokio::test]
async fn a_failed_dead_letter_send_releases_the_message_and_blocks_nothing() -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        max_receive_count: 1_000,
        ..EnvOptions::default()
    })
    .await?;
    env.migrate().await?;
    sql(
        &env,
        "ALTER TABLE sluice.receipts ADD CONSTRAINT no_poison_pill CHECK (merchant <> 'Poison Pill GmbH')",
    )
    .await?;
    let agent = env.launch_agent("nodlq", SETTINGS).await?;
    env.sqs
        .delete_queue()
        .queue_url(&env.dlq_url)
        .send()
        .await?;

    let mut receipts = Generator::new(141).receipts(2_000);
    receipts[1_234]["merchant"] = json!("Poison Pill GmbH");
    let bad_id = receipts[1_234]["receipt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut oracle = Oracle::new();
    let mut ignored = Oracle::new();
    env.upload_acknowledged(&mut ignored, &receipts, "100")
        .await?;
    let good: Vec<Value> = receipts
        .iter()
        .filter(|r| r["receipt_id"] != json!(bad_id))
        .cloned()
        .collect();
    oracle.acknowledge(&good);
    oracle.expect_dead_letter(&bad_id, "no_poison_pill");

    wait_condition(&agent, "dead_letter_unavailable", "dead-letter").await?;
    wait_for(DRAIN_TIMEOUT, "1,999 receipts stored", || async {
        (env.count_receipts_or_zero().await == 1_999).then_some(())
    })
    .await?;
    let failures = agent.counter("sluice_dead_letter_failures_total").await;
    assert!(failures >= 1.0, "counted: {failures}");
    let (visible, in_flight, _) = env.depth(&env.queue_url).await?;
    assert!(
        visible + in_flight >= 1,
        "the refused row's message is still on the main queue"
    );
    let released = agent.counter("sluice_messages_released_total").await;
    assert!(released >= 1.0, "released, not deleted: {released}");

    let recreated = env
        .sqs
        .create_queue()
        .queue_name(format!("{}-dlq", env.name))
        .send()
        .await?;
    assert_eq!(recreated.queue_url(), Some(env.dlq_url.as_str()));
    env.wait_drained(1_999, DRAIN_TIMEOUT).await?;
    wait_cleared(&agent, "dead_letter_unavailable").await?;
    let dead_lettered = agent.counter("sluice_receipts_dead_lettered_total").await;
    agent.stop().await?;
    assert_eq!(dead_lettered, 1.0);
    let dead = oracle.verify(&env).await?;
    assert_eq!(dead.len(), 1);
    Ok(())
}
