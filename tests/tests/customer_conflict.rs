//! Conflicts on the agent: a receipt re-sent under the same `receipt_id` is a quiet
//! duplicate when its content is the same, and follows `[write] on_conflict` when it is not —
//! never a silent duplicate. Real PostgreSQL, real moto, the `sluice-agent` binary, each test
//! judged by the oracle (`sluice_e2e::oracle`).

use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{
    free_local_addr, wait_for, AgentProcess, EnvOptions, IngestHandle, Launch, TestEnv,
};
use sluice_protocol::Receipt;

const TIMEOUT: Duration = Duration::from_secs(120);
const RECEIPTS: usize = 20;

/// One test's stack: its queues and database, the ingest API, and the agent binary with
/// `[write]` set as given. The fields drop in order: the agent is gone before the env removes
/// its database.
struct Stack {
    ingest: IngestHandle,
    agent: AgentProcess,
    oracle: Oracle,
    env: TestEnv,
}

impl Stack {
    async fn start(name: &str, write: &str) -> anyhow::Result<Self> {
        Self::launch(TestEnv::new().await?, name, write, "", true).await
    }

    /// The agent on `env` with `[write]` as given and `extra` TOML; without `dlq`,
    /// `queue.dead_letter_url` is left out.
    async fn launch(
        env: TestEnv,
        name: &str,
        write: &str,
        extra: &str,
        dlq: bool,
    ) -> anyhow::Result<Self> {
        let ingest = env.start_ingest(&[]).await?;
        let addr = free_local_addr()?;
        let toml = env.agent_toml(&format!(
            "[write]\n{write}\n{extra}\n[log]\nlevel = \"info\"\n[server]\nlisten = \"{addr}\""
        ));
        let toml: String = toml
            .lines()
            .filter(|l| dlq || !l.starts_with("dead_letter_url"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::create_dir_all(env.dir())?;
        let config = env.dir().join(format!("{name}.toml"));
        std::fs::write(&config, toml)?;
        let launch = Launch {
            log: config.with_extension("log"),
            ..Launch::default()
        };
        let agent = AgentProcess::spawn(&config, addr, launch)?;
        agent.wait_answering(Duration::from_secs(30)).await?;
        Ok(Self {
            env,
            ingest,
            agent,
            oracle: Oracle::new(),
        })
    }

    /// Uploads `receipts`; returns the batch id of the 202 answer.
    async fn upload(&self, receipts: &[Value]) -> anyhow::Result<String> {
        let (status, answer) = self.ingest.upload_json(receipts).await?;
        anyhow::ensure!(status == 202, "upload refused: {status} {answer}");
        Ok(answer["batch_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Uploads `RECEIPTS` new receipts, acknowledged to the oracle, and waits until stored.
    async fn first_upload(&mut self, seed: u64) -> anyhow::Result<Vec<Value>> {
        let receipts = Generator::new(seed).receipts(RECEIPTS);
        self.upload(&receipts).await?;
        self.oracle.acknowledge(&receipts);
        self.env.wait_drained(RECEIPTS as i64, TIMEOUT).await?;
        Ok(receipts)
    }

    /// A counter of the agent ([`AgentProcess::counter`]).
    async fn counter(&self, name: &str) -> f64 {
        self.agent.counter(name).await
    }

    /// Waits until `name` reaches `at_least` and the main queue is empty.
    async fn wait_counted(&self, name: &str, at_least: f64) -> anyhow::Result<()> {
        wait_for(
            TIMEOUT,
            &format!("{name} >= {at_least} and the queue empty"),
            || async {
                let n = self.counter(name).await;
                let depth = self.env.depth(&self.env.queue_url).await.ok()?;
                (n >= at_least && depth == (0, 0, 0)).then_some(())
            },
        )
        .await
    }

    async fn stored_fingerprint(&self, id: &str) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT encode(content_sha256, 'hex') FROM sluice.receipts WHERE receipt_id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&self.env.pool)
        .await?)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let status = self.agent.terminate(Duration::from_secs(60)).await?;
        anyhow::ensure!(status.success(), "agent exited with {status}");
        Ok(())
    }
}

fn fingerprint(v: &Value) -> String {
    match Receipt::from_value(v, 0) {
        Ok(r) => r.fingerprint().to_string(),
        Err(e) => panic!("invalid receipt: {e:?}"),
    }
}

/// `v` with a corrected total and its items replaced by one other line.
fn corrected(v: &Value) -> Value {
    let mut c = v.clone();
    c["total"] = json!("1234.56");
    c["items"] = json!([{
        "description": "Corrected line",
        "quantity": "1",
        "unit_price": "1234.56",
        "amount": "1234.56"
    }]);
    c
}

/// (a) The same receipts sent again: quiet duplicates, nothing in the DLQ, no conflict.
#[tokio::test]
async fn the_same_receipt_re_sent_is_a_quiet_duplicate() -> anyhow::Result<()> {
    let mut s = Stack::start("same", "").await?;
    let receipts = s.first_upload(1101).await?;
    // The same content spelled differently: decimals with another number of zeros.
    let mut again = receipts.clone();
    again[0]["total"] = json!(format!("{}0", receipts[0]["total"].as_str().unwrap_or("1")));
    assert_eq!(fingerprint(&again[0]), fingerprint(&receipts[0]));
    s.upload(&again).await?;
    s.wait_counted("sluice_receipts_duplicate_total", RECEIPTS as f64)
        .await?;
    assert_eq!(s.counter("sluice_receipts_conflict_total").await, 0.0);
    assert_eq!(s.counter("sluice_receipts_dead_lettered_total").await, 0.0);
    let dead = s.oracle.verify(&s.env).await?;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(
        s.stored_fingerprint(receipts[0]["receipt_id"].as_str().unwrap_or_default())
            .await?,
        Some(fingerprint(&receipts[0]))
    );
    s.stop().await
}

/// (b) A corrected total under the default `reject`: the stored row stays, the incoming version
/// is in the DLQ with reason `conflict` and both fingerprints, counted, and rejected in the
/// ledger row of its chunk.
#[tokio::test]
async fn a_corrected_receipt_is_dead_lettered_as_a_conflict_by_default() -> anyhow::Result<()> {
    let mut s = Stack::start("reject", "").await?;
    let receipts = s.first_upload(1102).await?;
    let old = &receipts[7];
    let id = old["receipt_id"].as_str().unwrap_or_default().to_owned();
    let new = corrected(old);
    // Sent with two new receipts, which are stored.
    let fresh = Generator::new(2102).receipts(2);
    let batch = s
        .upload(&[fresh[0].clone(), new.clone(), fresh[1].clone()])
        .await?;
    s.oracle.acknowledge(&fresh);
    s.oracle.expect_dead_letter(&id, "conflict");
    s.wait_counted("sluice_receipts_conflict_total", 1.0)
        .await?;
    s.env.wait_drained(RECEIPTS as i64 + 2, TIMEOUT).await?;
    assert_eq!(s.counter("sluice_receipts_conflict_total").await, 1.0);
    assert_eq!(s.counter("sluice_receipts_dead_lettered_total").await, 1.0);
    let log = s.agent.log_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&id))
        .collect();
    assert_eq!(warned.len(), 1, "one WARN naming the receipt:\n{log}");

    let dead = s.oracle.verify(&s.env).await?;
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].attributes["sluice-error"];
    assert!(reason.starts_with("conflict"), "{reason}");
    for want in [
        format!("stored_sha256={}", fingerprint(old)),
        format!("incoming_sha256={}", fingerprint(&new)),
    ] {
        assert!(reason.contains(&want), "{want} in {reason}");
        assert!(warned[0].contains(&want), "{want} in {}", warned[0]);
    }
    // The dead letter is a one-receipt chunk of the upload, holding the incoming version.
    let chunk: Value = serde_json::from_str(&dead[0].body)?;
    assert_eq!(chunk["batch_id"], json!(batch));
    assert_eq!(chunk["receipts"], json!([new]));
    assert_eq!(s.stored_fingerprint(&id).await?, Some(fingerprint(old)));
    let ledger: (i32, i32) =
        sqlx::query_as("SELECT receipts, rejected FROM sluice.chunks WHERE batch_id = $1::uuid")
            .bind(&batch)
            .fetch_one(&s.env.pool)
            .await?;
    assert_eq!(ledger, (3, 1), "the ledger counts the conflict as rejected");
    s.stop().await
}

/// (c) `update`: the incoming version replaces the row and its items.
#[tokio::test]
async fn a_corrected_receipt_replaces_the_row_and_its_items_under_update() -> anyhow::Result<()> {
    let mut s = Stack::start("update", "on_conflict = \"update\"").await?;
    let receipts = s.first_upload(1103).await?;
    // One with several items, so that stale lines would show.
    let old = receipts
        .iter()
        .find(|r| r["items"].as_array().is_some_and(|i| i.len() > 1))
        .unwrap_or(&receipts[0]);
    let id = old["receipt_id"].as_str().unwrap_or_default().to_owned();
    let new = corrected(old);
    s.upload(std::slice::from_ref(&new)).await?;
    s.oracle.acknowledge(std::slice::from_ref(&new));
    s.wait_counted("sluice_receipts_updated_total", 1.0).await?;
    assert_eq!(s.counter("sluice_receipts_conflict_total").await, 0.0);
    let dead = s.oracle.verify(&s.env).await?;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(s.stored_fingerprint(&id).await?, Some(fingerprint(&new)));
    let items: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sluice.receipt_items WHERE receipt_id = $1::uuid")
            .bind(&id)
            .fetch_one(&s.env.pool)
            .await?;
    assert_eq!(items, 1, "the old lines are gone");
    s.stop().await
}

/// (d) `ignore`: today's behaviour, chosen explicitly — the stored row stays, nothing in the
/// DLQ, the incoming version counted as a duplicate.
#[tokio::test]
async fn a_corrected_receipt_is_a_duplicate_under_ignore() -> anyhow::Result<()> {
    let mut s = Stack::start("ignore", "on_conflict = \"ignore\"").await?;
    let receipts = s.first_upload(1104).await?;
    let old = &receipts[3];
    let id = old["receipt_id"].as_str().unwrap_or_default().to_owned();
    s.upload(&[corrected(old)]).await?;
    s.wait_counted("sluice_receipts_duplicate_total", 1.0)
        .await?;
    assert_eq!(s.counter("sluice_receipts_conflict_total").await, 0.0);
    assert_eq!(s.counter("sluice_receipts_updated_total").await, 0.0);
    let dead = s.oracle.verify(&s.env).await?;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(s.stored_fingerprint(&id).await?, Some(fingerprint(old)));
    s.stop().await
}

/// A row stored before the fingerprint column existed (NULL) cannot be compared: a receipt
/// arriving with its id is a quiet duplicate, even under `update`, and the row stays as it is.
#[tokio::test]
async fn a_row_stored_before_fingerprints_is_a_quiet_duplicate() -> anyhow::Result<()> {
    let mut s = Stack::start("legacy", "on_conflict = \"update\"").await?;
    let receipts = s.first_upload(1105).await?;
    sqlx::query("UPDATE sluice.receipts SET content_sha256 = NULL")
        .execute(&s.env.pool)
        .await?;
    let old = &receipts[5];
    let id = old["receipt_id"].as_str().unwrap_or_default().to_owned();
    s.upload(&[corrected(old)]).await?;
    s.wait_counted("sluice_receipts_duplicate_total", 1.0)
        .await?;
    assert_eq!(s.counter("sluice_receipts_updated_total").await, 0.0);
    assert_eq!(s.counter("sluice_receipts_conflict_total").await, 0.0);
    let dead = s.oracle.verify(&s.env).await?;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(s.stored_fingerprint(&id).await?, None);
    s.stop().await
}

/// `reject` without a dead-letter queue configured: the conflicting message is kept (not
/// deleted), so the queue's redrive policy moves it to the DLQ after `maxReceiveCount`
/// receives; the stored row stays and each refusal is counted and logged.
#[tokio::test]
async fn without_a_dlq_a_conflict_is_kept_for_the_queues_redrive_policy() -> anyhow::Result<()> {
    let env = TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 10,
        ..EnvOptions::default()
    })
    .await?;
    let mut s = Stack::launch(
        env,
        "no-dlq",
        "",
        "[queue]\nvisibility_timeout_seconds = 10",
        false,
    )
    .await?;
    let receipts = s.first_upload(1106).await?;
    let old = &receipts[9];
    let id = old["receipt_id"].as_str().unwrap_or_default().to_owned();
    s.upload(&[corrected(old)]).await?;
    // Moved by SQS itself, so without the agent's reason attribute.
    s.oracle.expect_dead_letter(&id, "");
    s.wait_counted(
        "sluice_receipts_conflict_total",
        f64::from(sluice_e2e::MAX_RECEIVE_COUNT),
    )
    .await?;
    assert_eq!(s.counter("sluice_receipts_dead_lettered_total").await, 0.0);
    let dead = s.oracle.verify(&s.env).await?;
    assert_eq!(dead.len(), 1);
    assert!(!dead[0].attributes.contains_key("sluice-error"), "{dead:?}");
    assert_eq!(s.stored_fingerprint(&id).await?, Some(fingerprint(old)));
    let log = s.agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&id) && l.contains(&fingerprint(old))),
        "a WARN names the receipt and its fingerprints:\n{log}"
    );
    s.stop().await
}
