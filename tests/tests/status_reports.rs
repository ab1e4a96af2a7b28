//! Upload status, the agent's side: with `[status] queue_url` set, the real `sluice-agent`
//! reports what became of every chunk on the status queue — stored, duplicates, conflicts and
//! database refusals with their reasons — from the chunk ledger, outbound only; a status queue
//! that is down delays the reports and nothing else, and a kill -9 before they went loses none.
//! Real PostgreSQL, real moto, judged by the oracle and by the ledger.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::{id_of, Generator};
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{block_merchant, wait_for, AgentProcess, IngestHandle, TestEnv};
use sluice_protocol::report::{decode_message, ChunkReport, Rejection};

const TIMEOUT: Duration = Duration::from_secs(120);
const SETTINGS: &str =
    "[batch]\nmax_rows = 500\nmax_wait_ms = 50\n[throttle]\nrows_per_second = 5000\nburst = 5000";

type Key = (String, u32);

/// The status queue's URL for `env` (named after its main queue); created when `create`.
async fn status_queue(env: &TestEnv, create: bool) -> anyhow::Result<String> {
    let url = env.status_queue_url();
    if create {
        let made = env
            .sqs
            .create_queue()
            .queue_name(format!("{}-status", env.name))
            .send()
            .await?
            .queue_url
            .unwrap_or_default();
        anyhow::ensure!(made == url, "status queue made at {made}, expected {url}");
    }
    Ok(url)
}

/// Uploads `receipts` in chunks of `chunk`; returns the batch id and its chunk count.
async fn upload(ingest: &IngestHandle, receipts: &[Value]) -> anyhow::Result<(String, u32)> {
    let (status, answer) = ingest.upload_json(receipts).await?;
    anyhow::ensure!(status == 202, "upload refused: {status} {answer}");
    let id = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    let chunks = u32::try_from(answer["chunks"].as_u64().unwrap_or(0))?;
    Ok((id, chunks))
}

/// Receives from the status queue (deleting what it reads) until a report of every chunk in
/// `want` has arrived; a chunk reported twice must be reported the same way.
async fn collect_reports(
    env: &TestEnv,
    url: &str,
    want: &HashSet<Key>,
) -> anyhow::Result<BTreeMap<Key, ChunkReport>> {
    let mut got: BTreeMap<Key, ChunkReport> = BTreeMap::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !want.iter().all(|k| got.contains_key(k)) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for reports of {want:?}; got {got:?}"
        );
        let out = env
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await;
        let Ok(out) = out else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for m in out.messages.unwrap_or_default() {
            let message = decode_message(m.body().unwrap_or_default())?;
            for r in message.reports {
                let key = (r.batch_id.clone(), r.chunk_index);
                if let Some(earlier) = got.get(&key) {
                    assert_eq!(earlier, &r, "a chunk reported two ways");
                }
                got.insert(key, r);
            }
            if let Some(h) = m.receipt_handle() {
                env.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(h)
                    .send()
                    .await?;
            }
        }
    }
    Ok(got)
}

/// The keys of every chunk of the batches given with their chunk counts.
fn chunks_of(batches: &[(String, u32)]) -> HashSet<Key> {
    batches
        .iter()
        .flat_map(|(id, n)| (0..*n).map(move |i| (id.clone(), i)))
        .collect()
}

/// The figures of one batch, summed over its chunks' reports; rejections sorted by id.
#[derive(Debug, PartialEq, Eq)]
struct Sum {
    chunks: u32,
    receipts: u32,
    stored: u32,
    duplicates: u32,
    conflicts: u32,
    rejected: u32,
    rejections: Vec<Rejection>,
}

fn sum(reports: &BTreeMap<Key, ChunkReport>, batch: &str) -> Sum {
    let mut s = Sum {
        chunks: 0,
        receipts: 0,
        stored: 0,
        duplicates: 0,
        conflicts: 0,
        rejected: 0,
        rejections: Vec::new(),
    };
    for r in reports.values().filter(|r| r.batch_id == batch) {
        assert_eq!(
            r.receipts,
            r.stored + r.duplicates + r.conflicts + r.rejected,
            "every receipt of chunk {} counted once: {r:?}",
            r.chunk_index
        );
        s.chunks += 1;
        s.receipts += r.receipts;
        s.stored += r.stored;
        s.duplicates += r.duplicates;
        s.conflicts += r.conflicts;
        s.rejected += r.rejected;
        s.rejections.extend(r.rejections.iter().cloned());
    }
    s.rejections.sort_by(|a, b| a.receipt_id.cmp(&b.receipt_id));
    s
}

/// Ledger rows not yet taken by the status queue.
async fn unreported(env: &TestEnv) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM sluice.chunks WHERE reported_at IS NULL")
            .fetch_one(&env.pool)
            .await?,
    )
}

/// Stops the agent; it must exit cleanly.
async fn stop(mut agent: AgentProcess) -> anyhow::Result<()> {
    let status = agent.terminate(Duration::from_secs(60)).await?;
    anyhow::ensure!(status.success(), "agent exited with {status}");
    Ok(())
}

/// (a) An upload with a duplicate, a conflicting version and a receipt the database refuses
/// ends with reports whose summed counts and reasons are exact: the reasons are the ones the
/// dead-letter queue got.
#[tokio::test]
async fn reports_count_every_receipt_and_name_each_refusal_with_its_reason() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    block_merchant(&env).await?;
    let status_url = status_queue(&env, true).await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "4")])
        .await?;
    let agent = env.launch_reporting_agent("report", SETTINGS).await?;
    let mut oracle = Oracle::new();

    let first = Generator::new(1201).receipts(10);
    let a = upload(&ingest, &first).await?;
    oracle.acknowledge(&first);
    env.wait_drained(10, TIMEOUT).await?;

    // The second upload: five new receipts, one the same as before, one with other content
    // under a stored id, one the trigger refuses.
    let mut fresh = Generator::new(1202).receipts(6);
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
        "description": "Corrected line",
        "quantity": "1",
        "unit_price": "1234.56",
        "amount": "1234.56"
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
    let b = upload(&ingest, &second).await?;
    oracle.acknowledge(&new);
    oracle.expect_dead_letter(&id_of(&first[1]), "conflict");
    oracle.expect_dead_letter(&blocked, "P0001");
    env.wait_drained(15, TIMEOUT).await?;

    let reports = collect_reports(&env, &status_url, &chunks_of(&[a.clone(), b.clone()])).await?;
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
    assert_eq!(from_dlq.len(), 2, "{dead:?}");

    assert_eq!(
        sum(&reports, &a.0),
        Sum {
            chunks: 3,
            receipts: 10,
            stored: 10,
            duplicates: 0,
            conflicts: 0,
            rejected: 0,
            rejections: vec![],
        }
    );
    let got = sum(&reports, &b.0);
    assert_eq!(
        got,
        Sum {
            chunks: 2,
            receipts: 8,
            stored: 5,
            duplicates: 1,
            conflicts: 1,
            rejected: 1,
            rejections: from_dlq,
        }
    );
    let reasons: Vec<&str> = got.rejections.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with(&format!(
            "conflict: receipt {} is stored with other content",
            id_of(&first[1])
        ))),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("P0001")
            && r.contains("merchant Blocked Merchant AG is blocked by the finance team")),
        "{reasons:?}"
    );
    wait_for(TIMEOUT, "every ledger row marked reported", || async {
        (unreported(&env).await.ok()? == 0).then_some(())
    })
    .await?;
    wait_for(TIMEOUT, "five reports counted as sent", || async {
        (agent.counter("sluice_status_reports_sent_total").await == 5.0).then_some(())
    })
    .await?;
    assert_eq!(
        agent.counter("sluice_status_send_failures_total").await,
        0.0
    );
    stop(agent).await
}

/// (b) A status queue that does not exist yet: the data drains all the same, the agent stays
/// ready and says why reports wait; once the queue exists, the reports arrive.
#[tokio::test]
async fn a_missing_status_queue_delays_reports_and_nothing_else() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let status_url = status_queue(&env, false).await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50")])
        .await?;
    let agent = env.launch_reporting_agent("outage", SETTINGS).await?;
    let mut oracle = Oracle::new();
    let receipts = Generator::new(1203).receipts(200);
    let batch = upload(&ingest, &receipts).await?;
    oracle.acknowledge(&receipts);
    env.wait_drained(200, TIMEOUT).await?;

    wait_for(
        TIMEOUT,
        "a failed status send, counted and shown",
        || async {
            let failures = agent.counter("sluice_status_send_failures_total").await;
            let pending = agent.metric("sluice_status_unreported_chunks", &[]).await?;
            let (_, live) = agent.get("/v1/status").await?;
            let live: Value = serde_json::from_str(&live).ok()?;
            let view = &live["status_reports"];
            (failures >= 1.0
                && pending == f64::from(batch.1)
                && view["unreported_chunks"] == json!(batch.1)
                && view["last_error"].as_str().is_some_and(|e| !e.is_empty()))
            .then_some(())
        },
    )
    .await?;
    let (ready, body) = agent.get("/readyz").await.unwrap_or_default();
    assert_eq!(
        ready, 200,
        "a status queue that is down is not a readiness failure: {body}"
    );
    let config = agent.config().to_string_lossy().into_owned();
    let out = env.agent_cli(&["status", "--config", &config]).await?;
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains(&format!(
            "status queue  {} chunks not yet reported; sends failing: SendMessageBatch to the status queue:",
            batch.1
        )),
        "{screen}"
    );
    let out = env
        .agent_cli(&["check-config", "--online", "--config", &config])
        .await?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{said}");
    assert!(
        said.contains(&format!("cannot read the status queue {status_url}")),
        "{said}"
    );
    assert!(oracle.verify(&env).await?.is_empty());

    status_queue(&env, true).await?;
    let out = env
        .agent_cli(&["check-config", "--online", "--config", &config])
        .await?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("status queue {status_url} answers")),
        "{said}"
    );
    let reports =
        collect_reports(&env, &status_url, &chunks_of(std::slice::from_ref(&batch))).await?;
    let s = sum(&reports, &batch.0);
    assert_eq!((s.chunks, s.receipts, s.stored), (batch.1, 200, 200));
    wait_for(TIMEOUT, "the reporter recovered", || async {
        let pending = agent.metric("sluice_status_unreported_chunks", &[]).await?;
        let log = agent.log_text();
        (pending == 0.0 && log.contains("Status reports are sent again.")).then_some(())
    })
    .await?;
    let log = agent.log_text();
    let warned = log
        .lines()
        .filter(|l| l.contains("\"WARN\"") && l.contains("Cannot send status reports"))
        .count();
    assert_eq!(warned, 1, "one WARN per outage:\n{log}");
    stop(agent).await
}

/// (c) Killed (-9) after its commits but before any report went (the status queue did not
/// exist): the restarted agent sends them from the ledger.
#[tokio::test]
async fn reports_not_sent_before_a_kill_go_after_the_restart() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let status_url = status_queue(&env, false).await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "25")])
        .await?;
    let mut agent = env.launch_reporting_agent("killed", SETTINGS).await?;
    let mut oracle = Oracle::new();
    let receipts = Generator::new(1204).receipts(100);
    let batch = upload(&ingest, &receipts).await?;
    oracle.acknowledge(&receipts);
    env.wait_drained(100, TIMEOUT).await?;
    wait_for(
        TIMEOUT,
        "all four chunks in the ledger, unreported",
        || async { (unreported(&env).await.ok()? == i64::from(batch.1)).then_some(()) },
    )
    .await?;
    agent.kill().await?;

    status_queue(&env, true).await?;
    let agent = env.launch_reporting_agent("restarted", SETTINGS).await?;
    let reports =
        collect_reports(&env, &status_url, &chunks_of(std::slice::from_ref(&batch))).await?;
    let s = sum(&reports, &batch.0);
    assert_eq!(
        (s.chunks, s.receipts, s.stored, s.duplicates),
        (batch.1, 100, 100, 0)
    );
    let ledger: Vec<(i32, i32, i32)> = sqlx::query_as(
        "SELECT chunk_index, receipts, stored FROM sluice.chunks ORDER BY chunk_index",
    )
    .fetch_all(&env.pool)
    .await?;
    for (i, n, stored) in ledger {
        let r = &reports[&(batch.0.clone(), u32::try_from(i)?)];
        assert_eq!(
            (r.receipts, r.stored),
            (u32::try_from(n)?, u32::try_from(stored)?)
        );
    }
    wait_for(TIMEOUT, "every ledger row marked reported", || async {
        (unreported(&env).await.ok()? == 0).then_some(())
    })
    .await?;
    assert!(oracle.verify(&env).await?.is_empty());
    stop(agent).await
}

/// (d) SIGTERM right after the last commit: the reporter flushes before the agent exits, so a
/// clean stop leaves no chunk unreported.
#[tokio::test]
async fn a_clean_stop_leaves_no_chunk_unreported() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let status_url = status_queue(&env, true).await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "10")])
        .await?;
    let mut agent = env.launch_reporting_agent("stopped", SETTINGS).await?;
    let mut oracle = Oracle::new();
    let receipts = Generator::new(1205).receipts(60);
    let batch = upload(&ingest, &receipts).await?;
    oracle.acknowledge(&receipts);
    env.wait_drained(60, TIMEOUT).await?;
    let status = agent.terminate(Duration::from_secs(60)).await?;
    anyhow::ensure!(status.success(), "agent exited with {status}");
    assert_eq!(unreported(&env).await?, 0, "{}", agent.log_text());
    let reports =
        collect_reports(&env, &status_url, &chunks_of(std::slice::from_ref(&batch))).await?;
    let s = sum(&reports, &batch.0);
    assert_eq!((s.chunks, s.receipts, s.stored), (batch.1, 60, 60));
    assert!(oracle.verify(&env).await?.is_empty());
    Ok(())
}
