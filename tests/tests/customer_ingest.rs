//! The ingest against a hostile or careless client, end to end
//! against a real PostgreSQL and a real SQS- and DynamoDB-API server (moto): a gzip bomb, an
//! `Idempotency-Key` reused with another body, one `receipt_id` sent twice with different
//! content, and a queue that is gone (503 without internals). Judged by the oracle: nothing
//! acknowledged lost, nothing written twice, nothing of a refused upload enqueued.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{wait_for, TestEnv};

/// Long enough for a drain on a loaded 2-core CI machine; a healthy run takes seconds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

/// `{"receipts":[{"metadata":[0,0,…]}]}`: `zeros` zeros in one array.
fn zeros_bomb(zeros: usize) -> Vec<u8> {
    let mut bomb = br#"{"receipts": [{"metadata": ["#.to_vec();
    bomb.extend(b"0,".repeat(zeros));
    bomb.extend(b"0]}]}");
    bomb
}

fn body(receipts: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "receipts": receipts })).expect("serializable")
}

/// Nothing on the main queue: a refused upload enqueued nothing.
async fn assert_queue_empty(env: &TestEnv) -> anyhow::Result<()> {
    assert_eq!(env.depth(&env.queue_url).await?, (0, 0, 0));
    Ok(())
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_with_its_error_and_nothing_is_enqueued() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // 55 MB of JSON in ~55 KB of gzip. With the default body limit (6 MiB) the inflating
    // stops at the limit: 413.
    let bomb = gzip(&zeros_bomb(27_500_000));
    assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
    let ingest = env.start_ingest(&[]).await?;
    let gz = [("content-encoding", "gzip")];
    let (status, answer) = ingest.post(bomb, "application/json", &gz).await?;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "body_too_large");
    assert_eq!(
        answer["message"],
        "gzip body decompresses to more than the limit of 6291456 bytes; nothing was enqueued"
    );
    // With a body limit the bomb fits under, the parser refuses it without building it: the
    // metadata must be an object, and no tree of millions of zeros is ever made.
    let roomy = env
        .start_ingest(&[("SLUICE_MAX_BODY_BYTES", "16777216")])
        .await?;
    let (status, answer) = roomy
        .post(gzip(&zeros_bomb(7_000_000)), "application/json", &gz)
        .await?;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_receipts");
    let metadata = answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .find(|e| e["pointer"] == "/receipts/0/metadata")
        .expect("an error for the metadata");
    assert_eq!(metadata["reason"], "must be a JSON object, not an array");
    assert_queue_empty(&env).await?;
    Ok(())
}

#[tokio::test]
async fn one_key_with_another_body_is_422_and_only_the_first_body_is_stored() -> anyhow::Result<()>
{
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "100")])
        .await?;
    let first = Generator::new(111).receipts(300);
    let second = Generator::new(222).receipts(200);
    let key = [("idempotency-key", "nightly-2026-11-26")];
    let (s1, a1) = ingest.post(body(&first), "application/json", &key).await?;
    assert_eq!(s1, 202, "{a1}");
    let visible_after_first = env.depth(&env.queue_url).await?;
    let (s2, a2) = ingest.post(body(&second), "application/json", &key).await?;
    assert_eq!(s2, 422, "{a2}");
    assert_eq!(a2["error"], "idempotency_key_reused");
    assert_eq!(
        a2["message"],
        "Idempotency-Key \"nightly-2026-11-26\" was already used with another body; nothing was enqueued. Use a new key for a new upload"
    );
    assert_eq!(
        env.depth(&env.queue_url).await?,
        visible_after_first,
        "the second body enqueued nothing"
    );
    // The record binds the batch to the first body's digest.
    let batch_id = a1["batch_id"].as_str().expect("batch_id");
    let record = env.upload_record(batch_id).await?.expect("recorded");
    assert_eq!(record["receipts"], "300");
    assert_eq!(record["chunks"], a1["chunks"].to_string());
    assert_eq!(record["body_sha256"].len(), 64);
    assert!(record.contains_key("accepted_at") && record.contains_key("expires_at"));

    let mut oracle = Oracle::new();
    oracle.acknowledge(&first);
    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(300, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    oracle.verify(&env).await?;
    let complete: bool =
        sqlx::query_scalar("SELECT complete FROM sluice.batches WHERE batch_id = $1::uuid")
            .bind(batch_id)
            .fetch_one(&env.pool)
            .await?;
    assert!(complete, "the batch is the first body's, whole");
    Ok(())
}

#[tokio::test]
async fn one_key_with_the_same_body_is_a_safe_retry_with_the_same_batch_id() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let receipts = Generator::new(333).receipts(250);
    let key = [("idempotency-key", "retry-me")];
    let plain = body(&receipts);
    let (s1, a1) = ingest.post(plain.clone(), "application/json", &key).await?;
    // The retry is compressed: the digest is of the decompressed body, so it is the same body.
    let gz = [
        ("idempotency-key", "retry-me"),
        ("content-encoding", "gzip"),
    ];
    let (s2, a2) = ingest.post(gzip(&plain), "application/json", &gz).await?;
    assert_eq!((s1, s2), (202, 202), "{a1} {a2}");
    assert_eq!(a1["batch_id"], a2["batch_id"]);

    let mut oracle = Oracle::new();
    oracle.acknowledge(&receipts);
    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(250, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    oracle.verify(&env).await?;
    Ok(())
}

#[tokio::test]
async fn one_receipt_id_with_two_contents_is_400_naming_both_indexes() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let mut receipts = Generator::new(444).receipts(20);
    let mut corrected = receipts[3].clone();
    corrected["total"] = json!("1234.56");
    receipts[17] = corrected;
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_receipts");
    let id = receipts[3]["receipt_id"].as_str().expect("id");
    assert_eq!(answer["errors"][0]["pointer"], "/receipts/17/receipt_id");
    assert_eq!(
        answer["errors"][0]["reason"],
        format!("receipts[3] and receipts[17] share receipt_id {id} with different content; send one version per upload")
    );
    assert_queue_empty(&env).await?;

    // An identical repeat is still accepted, and stored once.
    let mut repeated = Generator::new(555).receipts(20);
    repeated[17] = repeated[3].clone();
    let (status, answer) = ingest.upload_json(&repeated).await?;
    assert_eq!(status, 202, "{answer}");
    let mut oracle = Oracle::new();
    oracle.acknowledge(&repeated);
    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(19, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    oracle.verify(&env).await?;
    Ok(())
}

#[tokio::test]
async fn a_503_carries_a_request_id_and_no_sdk_text_while_the_log_keeps_it() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // The real binary, so its log is the operator's log.
    let mut ingest = env.start_ingest_process("ingest.log").await?;
    let http = reqwest::Client::new();

    env.sqs
        .delete_queue()
        .queue_url(&env.queue_url)
        .send()
        .await?;
    let resp = http
        .post(ingest.url("/v1/batches"))
        .header("content-type", "application/json")
        .body(body(&Generator::new(666).receipts(5)))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 503);
    let text = resp.text().await?;
    let answer: Value = serde_json::from_str(&text)?;
    assert_eq!(answer["error"], "queue_unavailable");
    let request_id = answer["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned();
    assert_eq!(
        answer["message"],
        format!("the queue did not accept every chunk; nothing is known to be enqueued; retry the same request (request id {request_id})")
    );
    let queue_name = env.queue_url.rsplit('/').next().expect("queue name");
    let account = env.queue_url.rsplit('/').nth(1).expect("account id");
    for internal in [
        queue_name,
        account,
        "NonExistentQueue",
        "arn:aws",
        "127.0.0.1",
    ] {
        assert!(
            !text.contains(internal),
            "{internal:?} in the answer: {text}"
        );
    }
    // The log line with the same request id holds the SDK's error.
    let line = wait_for(Duration::from_secs(10), "the 503 in the log", || async {
        ingest
            .process
            .log_text()
            .lines()
            .find(|l| l.contains(&request_id))
            .map(str::to_owned)
    })
    .await?;
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("chunks not accepted by SQS"), "{line}");
    assert!(
        ["NonExistentQueue", "QueueDoesNotExist", "does not exist"]
            .iter()
            .any(|sdk| line.contains(sdk)),
        "the SDK's error is in the log: {line}"
    );
    ingest.stop().await?;
    Ok(())
}
