//! One writer batch holding a receipt, its correction (same `receipt_id`, other content: still
//! in the backlog beside the original) and a row the database refuses. The refusal makes the
//! agent bisect the batch; the correction must then be settled as the batch's own write would
//! have settled it — a conflict under `reject`, the stored version under `update` — never
//! dropped as a duplicate. And without a dead-letter queue, the chunk holding the refused row
//! still gets its ledger row, so its upload ends instead of staying `storing`.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::Generator;
use sluice_e2e::{AgentProcess, TestEnv};
use sluice_protocol::envelope::ENVELOPE_VERSION;

const TIMEOUT: Duration = Duration::from_secs(120);
/// A long batch wait, so both messages land in one writer batch.
const ONE_BATCH: &str = "[batch]\nmax_rows = 500\nmax_wait_ms = 3000";

/// The backlog, sent straight to the queue as two chunks of one upload: chunk 0 holds the
/// original (index 0) and the refused row (index 1) among 10, chunk 1 the correction among 10.
struct Backlog {
    batch_id: String,
    original: Value,
    corrected: Value,
    refused_id: String,
}

async fn send_backlog(env: &TestEnv, seed: u64) -> anyhow::Result<Backlog> {
    let receipts = Generator::new(seed).receipts(19);
    let mut first: Vec<Value> = receipts[..10].to_vec();
    first[1]["merchant"] = json!("Blocked Merchant AG");
    let original = first[0].clone();
    let mut corrected = original.clone();
    corrected["total"] = json!("987.65");
    let mut second = vec![corrected.clone()];
    second.extend_from_slice(&receipts[10..]);
    let batch_id = uuid::Uuid::new_v4().to_string();
    for (index, chunk) in [first.clone(), second].into_iter().enumerate() {
        let body = json!({
            "v": ENVELOPE_VERSION,
            "batch_id": batch_id,
            "chunk_index": index,
            "chunk_count": 2,
            "receipts": chunk,
        });
        env.send_raw(&body.to_string(), &[]).await?;
    }
    Ok(Backlog {
        batch_id,
        original,
        corrected,
        refused_id: first[1]["receipt_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Whether the stored row of `r`'s id has `r`'s total (compared as numbers).
async fn stored_with_total_of(env: &TestEnv, r: &Value) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT total = $2::numeric FROM sluice.receipts WHERE receipt_id = $1::uuid",
    )
    .bind(r["receipt_id"].as_str().unwrap_or_default())
    .bind(r["total"].as_str().unwrap_or_default())
    .fetch_one(&env.pool)
    .await?)
}

/// The agent's log says it bisected one batch of both messages (else the test proves nothing).
fn bisected_both_messages_at_once(agent: &AgentProcess) {
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("isolating the rows at fault") && l.contains("\"messages\":2")),
        "one batch of both messages was bisected:\n{log}"
    );
}

/// Runs the backlog under `on_conflict`; returns it with the dead letters' reasons.
async fn drain(on_conflict: &str, seed: u64) -> anyhow::Result<(TestEnv, Backlog, Vec<String>)> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    sluice_e2e::block_merchant(&env).await?;
    let backlog = send_backlog(&env, seed).await?;
    let agent = env
        .launch_agent(
            on_conflict,
            &format!("{ONE_BATCH}\n[write]\non_conflict = \"{on_conflict}\""),
        )
        .await?;
    // 18 distinct receipts are good: the original (or its correction) and 17 others.
    env.wait_drained(18, TIMEOUT).await?;
    bisected_both_messages_at_once(&agent);
    agent.stop().await?;
    let reasons = env
        .drain_dlq()
        .await?
        .into_iter()
        .map(|d| {
            d.attributes
                .get("sluice-error")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    Ok((env, backlog, reasons))
}

#[tokio::test]
async fn under_reject_a_correction_bisected_beside_a_refused_row_is_dead_lettered_as_a_conflict(
) -> anyhow::Result<()> {
    let (env, backlog, mut reasons) = drain("reject", 3101).await?;
    assert!(
        stored_with_total_of(&env, &backlog.original).await?,
        "the original stays stored"
    );
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("conflict")
            && r.contains(backlog.corrected["receipt_id"].as_str().unwrap_or("?"))),
        "the correction is dead-lettered as a conflict: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&backlog.refused_id) && r.contains("blocked by the finance team")),
        "the refused row is dead-lettered with the trigger's words: {reasons:?}"
    );
    let (conflicts, rejected): (i64, i64) = sqlx::query_as(
        "SELECT sum(conflicts)::int8, sum(rejected)::int8 FROM sluice.chunks WHERE batch_id = $1::uuid",
    )
    .bind(&backlog.batch_id)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        (conflicts, rejected),
        (1, 2),
        "the ledger counts the conflict (not a duplicate) and both refusals"
    );
    Ok(())
}

#[tokio::test]
async fn under_update_a_correction_bisected_beside_a_refused_row_replaces_the_original(
) -> anyhow::Result<()> {
    let (env, backlog, reasons) = drain("update", 3102).await?;
    assert!(
        stored_with_total_of(&env, &backlog.corrected).await?,
        "the correction is the stored version"
    );
    assert_eq!(reasons.len(), 1, "only the refused row: {reasons:?}");
    assert!(reasons[0].contains(&backlog.refused_id), "{reasons:?}");
    Ok(())
}

#[tokio::test]
async fn without_a_dlq_a_chunk_with_a_refused_row_still_gets_its_ledger_row_naming_it(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    sluice_e2e::block_merchant(&env).await?;
    let backlog = send_backlog(&env, 3103).await?;
    let agent = env.launch_agent_without_dlq("no-dlq", ONE_BATCH).await?;
    let row = sluice_e2e::wait_for(TIMEOUT, "both chunks in the ledger", || async {
        let rows: Vec<(i32, i32, String)> = sqlx::query_as(
            "SELECT chunk_index, rejected, rejections::text FROM sluice.chunks \
             WHERE batch_id = $1::uuid ORDER BY chunk_index",
        )
        .bind(&backlog.batch_id)
        .fetch_all(&env.pool)
        .await
        .ok()?;
        (rows.len() == 2).then_some(rows)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; the agent's log:\n{}", agent.log_text()))?;
    agent.stop().await?;
    let (index, rejected, rejections) = &row[0];
    assert_eq!((*index, *rejected), (0, 1), "{row:?}");
    let rejections: Value = serde_json::from_str(rejections)?;
    let reason = rejections[0]["reason"].as_str().unwrap_or_default();
    assert!(
        rejections[0]["receipt_id"] == json!(backlog.refused_id)
            && reason.contains("blocked by the finance team")
            && reason.contains("no dead-letter queue is configured"),
        "{rejections}"
    );
    Ok(())
}
