//! Upload status end to end with the real agent: the chunk reports the `sluice-agent` binary sends
//! on the status queue bring `GET /v1/batches/{id}` of a real `sluice-ingest` process to the
//! exact final status, refusals named as the DLQ names them, and its webhook arrives once,
//! signed; through a status queue that is missing while the agent drains and a kill -9. Real
//! PostgreSQL, moto and both binaries, judged by the oracle.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::{id_of, Generator};
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{assert_signed, block_merchant, is_final, wait_for, TestEnv, WebhookReceiver};
use sluice_protocol::report::Rejection;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The agent's `[batch]` and `[throttle]` at `rate` receipts/s.
fn settings(rate: u32) -> String {
    format!(
        "[batch]\nmax_rows = 100\nmax_wait_ms = 50\n[throttle]\nrows_per_second = {rate}\nburst = {rate}"
    )
}

/// An upload with a duplicate, a conflicting version and a receipt the database refuses ends
/// `stored_with_rejections` on the endpoint with exact counts and the DLQ's reasons, and its
/// webhook arrives once, verifiably signed, carrying the same status.
#[tokio::test]
async fn an_agent_upload_ends_stored_with_rejections_and_its_webhook_arrives_once(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    block_merchant(&env).await?;
    let status = env.create_status_queue().await?;
    let receiver = WebhookReceiver::start(&[]).await?;
    let ingest = env
        .start_status_ingest("ingest.log", &[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "4")])
        .await?;
    let mut agent = env.launch_reporting_agent("agent", &settings(5000)).await?;
    let mut oracle = Oracle::new();

    let first = Generator::new(1311).receipts(10);
    let (code, a) = ingest.upload(&first, &[]).await?;
    assert_eq!(code, 202, "{a}");
    oracle.acknowledge(&first);
    env.wait_drained(10, TIMEOUT).await?;
    let a_id = a["batch_id"].as_str().unwrap_or_default().to_owned();
    let a_done = ingest
        .wait_status(&a_id, TIMEOUT, "the first upload stored", is_final)
        .await?;
    assert_eq!(
        (a_done["state"].as_str(), a_done["stored"].as_u64()),
        (Some("stored"), Some(10))
    );

    let mut fresh = Generator::new(1312).receipts(6);
    fresh[3]["merchant"] = json!("Blocked Merchant AG");
    let blocked = id_of(&fresh[3]);
    let new: Vec<Value> = fresh
        .iter()
        .filter(|r| id_of(r) != blocked)
        .cloned()
        .collect();
    let mut conflicting = first[1].clone();
    conflicting["total"] = json!("1234.56");
    conflicting["items"] = json!([{
        "description": "Corrected line", "quantity": "1", "unit_price": "1234.56", "amount": "1234.56"
    }]);
    let second = vec![
        new[0].clone(),
        first[0].clone(),
        new[1].clone(),
        conflicting,
        fresh[3].clone(),
        new[2].clone(),
        new[3].clone(),
        new[4].clone(),
    ];
    let callback = receiver.url();
    let (code, b) = ingest
        .upload(&second, &[("sluice-callback", callback.as_str())])
        .await?;
    assert_eq!(code, 202, "{b}");
    oracle.acknowledge(&new);
    oracle.expect_dead_letter(&id_of(&first[1]), "conflict");
    oracle.expect_dead_letter(&blocked, "P0001");
    env.wait_drained(15, TIMEOUT).await?;
    let b_id = b["batch_id"].as_str().unwrap_or_default().to_owned();
    let done = ingest
        .wait_status(&b_id, TIMEOUT, "the webhook delivered", |s| {
            s["webhook"]["state"] == "delivered"
        })
        .await?;
    let dead = oracle.verify(&env).await?;
    let mut from_dlq: Vec<Rejection> = dead
        .iter()
        .map(|d| Rejection {
            receipt_id: serde_json::from_str::<Value>(&d.body)
                .ok()
                .and_then(|c| c["receipts"][0]["receipt_id"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            reason: d.attributes["sluice-error"].clone(),
        })
        .collect();
    from_dlq.sort_by(|x, y| x.receipt_id.cmp(&y.receipt_id));
    let mut named: Vec<Rejection> = serde_json::from_value(done["rejections"].clone())?;
    named.sort_by(|x, y| x.receipt_id.cmp(&y.receipt_id));
    assert_eq!(named, from_dlq, "the endpoint names the DLQ's reasons");
    for (field, want) in [
        ("state", json!("stored_with_rejections")),
        ("receipts", json!(8)),
        ("chunks", json!(2)),
        ("chunks_done", json!(2)),
        ("stored", json!(5)),
        ("duplicates", json!(1)),
        ("conflicts", json!(1)),
        ("rejected", json!(1)),
        ("rejections_total", json!(2)),
    ] {
        assert_eq!(done[field], want, "{field} in {done}");
    }
    assert_eq!(done["webhook"]["attempts"], 1);
    // Once the status queue is consumed, nothing more can be sent.
    wait_for(TIMEOUT, "the status queue consumed", || {
        env.queue_empty(&status.queue_url)
    })
    .await?;
    let got = receiver.deliveries();
    assert_eq!(got.len(), 1, "the webhook arrives once");
    assert_signed(&got[0]);
    let mut body: Value = serde_json::from_slice(&got[0].body)?;
    let mut expected = done.clone();
    expected.as_object_mut().map(|o| o.remove("webhook"));
    body.as_object_mut().map(|o| o.remove("webhook"));
    assert_eq!(body, expected);
    agent.terminate(Duration::from_secs(60)).await?;
    Ok(())
}

/// The status queue does not exist while the agent drains, and the agent is killed with
/// SIGKILL mid-drain: once the queue exists, the re-sent reports bring the endpoint to the
/// exact final status.
#[tokio::test]
async fn the_status_survives_a_status_queue_outage_and_an_agent_kill() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env
        .start_status_ingest("ingest.log", &[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50")])
        .await?;
    let mut agent = env.launch_reporting_agent("first", &settings(400)).await?;
    let mut oracle = Oracle::new();
    let receipts = Generator::new(1313).receipts(1500);
    let (code, answer) = ingest.upload(&receipts, &[]).await?;
    assert_eq!(code, 202, "{answer}");
    oracle.acknowledge(&receipts);
    let batch = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    wait_for(TIMEOUT, "a part drained", || async {
        (env.count_receipts().await.ok()? >= 300).then_some(())
    })
    .await?;
    agent.kill().await?;
    let stored_at_kill = env.count_receipts().await?;
    assert!(stored_at_kill < 1500, "killed mid-drain ({stored_at_kill})");
    let mut agent = env
        .launch_reporting_agent("second", &settings(5000))
        .await?;
    env.wait_drained(1500, TIMEOUT).await?;
    let (_, before) = ingest.batch_status(&batch).await?;
    assert_eq!(
        before["chunks_done"], 0,
        "no status while the queue is missing: {before}"
    );
    env.create_status_queue().await?;
    let done = ingest
        .wait_status(
            &batch,
            TIMEOUT,
            "the batch final once the queue exists",
            is_final,
        )
        .await?;
    for (field, want) in [
        ("state", json!("stored")),
        ("receipts", json!(1500)),
        ("chunks", json!(30)),
        ("chunks_done", json!(30)),
        ("stored", json!(1500)),
        ("duplicates", json!(0)),
        ("conflicts", json!(0)),
        ("rejected", json!(0)),
    ] {
        assert_eq!(done[field], want, "{field} in {done}");
    }
    oracle.verify(&env).await?;
    agent.terminate(Duration::from_secs(60)).await?;
    Ok(())
}
