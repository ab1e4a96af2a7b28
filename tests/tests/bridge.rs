//! End-to-end tests of the bridge against a real PostgreSQL and a real SQS-API server (moto):
//! upload over HTTP → chunks on SQS → the agent's throttled, idempotent writes.
//!
//! Each test has its own database and its own queue pair (`TestEnv`), so they run in parallel.

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::{normalised, stored_receipts};
use sluice_e2e::{wait_for, TestEnv};
use sluice_protocol::split::{self, Limits};
use sluice_protocol::Receipt;

/// Long enough for a drain on a loaded 2-core CI machine; a healthy run takes seconds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

#[tokio::test]
async fn ten_thousand_receipts_land_exactly_once_with_fields_intact() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let receipts = Generator::new(10_000).receipts(10_000);
    let body = serde_json::to_vec(&json!({ "receipts": receipts }))?;
    let (status, answer) = ingest
        .post(
            gzip(&body),
            "application/json",
            &[("content-encoding", "gzip")],
        )
        .await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["receipts"], 10_000);
    let chunks = answer["chunks"].as_u64().expect("chunks is a number");
    assert!(chunks >= 20, "500 receipts per chunk at most: {answer}");

    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(10_000, DRAIN_TIMEOUT).await?;
    agent.stop().await?;

    let stored = stored_receipts(&env).await?;
    assert_eq!(stored.len(), 10_000);
    for r in &receipts {
        let id = r["receipt_id"].as_str().expect("id");
        let got = stored
            .get(id)
            .unwrap_or_else(|| panic!("receipt {id} missing"));
        assert_eq!(got, &normalised(r), "receipt {id} differs");
    }
    let ledger_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.chunks")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(ledger_rows as u64, chunks, "one ledger row per chunk");
    let batch: (i64, i64, bool) = sqlx::query_as(
        "SELECT chunk_count::int8, receipts::int8, complete FROM sluice.batches WHERE batch_id = $1::uuid",
    )
    .bind(answer["batch_id"].as_str().expect("batch_id"))
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(batch, (chunks as i64, 10_000, true));
    assert!(env.drain_dlq().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_same_upload_sent_twice_is_stored_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "100")])
        .await?;
    let receipts = Generator::new(2).receipts(1_000);
    // A client retry (same Idempotency-Key → same batch id) and a re-upload without one.
    let key = [("idempotency-key", "upload-2026-11-24-a")];
    let body = serde_json::to_vec(&json!({ "receipts": receipts }))?;
    let (s1, a1) = ingest.post(body.clone(), "application/json", &key).await?;
    let (s2, a2) = ingest.post(body.clone(), "application/json", &key).await?;
    let (s3, a3) = ingest.post(body, "application/json", &[]).await?;
    assert_eq!((s1, s2, s3), (202, 202, 202), "{a1} {a2} {a3}");
    assert_eq!(a1["batch_id"], a2["batch_id"], "same key, same batch");
    assert_ne!(a1["batch_id"], a3["batch_id"]);

    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(1_000, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT receipt_id) FROM sluice.receipts")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!((rows, distinct), (1_000, 1_000));
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.receipt_items")
        .fetch_one(&env.pool)
        .await?;
    let expected_items: usize = receipts
        .iter()
        .map(|r| r["items"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        items as usize, expected_items,
        "items are not written twice either"
    );
    Ok(())
}

#[tokio::test]
async fn a_message_delivered_twice_is_stored_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let values = Generator::new(3).receipts(300);
    let receipts: Vec<Receipt> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Receipt::from_value(v, i).expect("generated receipts are valid"))
        .collect();
    let batch_id = uuid::Uuid::new_v4().to_string();
    let limits = Limits {
        max_receipts_per_chunk: 100,
        ..Limits::default()
    };
    let messages = split::split(&batch_id, &receipts, &limits)?;
    assert_eq!(messages.len(), 3);
    // Every chunk three times: SQS's at-least-once delivery at its worst, several copies
    // landing in one receive batch.
    for _ in 0..3 {
        for m in &messages {
            env.send_raw(&m.body, &[]).await?;
        }
    }
    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(300, DRAIN_TIMEOUT).await?;
    // One more late redelivery, after the first copies were committed.
    env.send_raw(&messages[0].body, &[]).await?;
    env.wait_drained(300, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    assert_eq!(env.count_receipts().await?, 300);
    let chunks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sluice.chunks WHERE batch_id = $1::uuid")
            .bind(&batch_id)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(chunks, 3, "one ledger row per chunk, however often it came");
    assert!(
        env.drain_dlq().await?.is_empty(),
        "duplicates are not poison"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_messages_go_to_the_dlq_with_a_reason_while_the_rest_is_stored(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let (status, answer) = ingest.upload_json(&Generator::new(4).receipts(500)).await?;
    assert_eq!(status, 202, "{answer}");

    let not_json = "this is not a chunk";
    // An unknown envelope version is not poison since issue #11 (item 7): it is released to the
    // queue for an upgraded agent (`a_newer_ingest_is_stored_or_released_never_dead_lettered`
    // in tests/tests/customer_sqs.rs).
    let mut bad_receipt = Generator::new(5).receipt();
    bad_receipt["total"] = json!("12.34567");
    let invalid_receipt = json!({
        "v": 1, "batch_id": "0b5a0b9e-4a4b-4f0e-8f3a-3f9c2b1d0e12", "chunk_index": 0,
        "chunk_count": 1, "receipts": [bad_receipt],
    })
    .to_string();
    env.send_raw(not_json, &[]).await?;
    env.send_raw(&invalid_receipt, &[]).await?;
    env.send_raw(
        "H4sIAAAAAAAA/wMAAAAAAAAAAAA=",
        &[("sluice-encoding", "lz4")],
    )
    .await?;

    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(500, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    assert_eq!(env.count_receipts().await?, 500);

    let dead = env.drain_dlq().await?;
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let reason_for = |body: &str| {
        dead.iter()
            .find(|d| d.body == body)
            .and_then(|d| d.attributes.get("sluice-error").cloned())
            .unwrap_or_else(|| panic!("no dead letter with body {body:?}: {dead:#?}"))
    };
    let r = reason_for(not_json);
    assert!(r.starts_with("undecodable message: "), "{r}");
    let r = reason_for(&invalid_receipt);
    assert!(
        r.contains("/receipts/0/total") && r.contains("fraction digits"),
        "{r}"
    );
    let r = reason_for("H4sIAAAAAAAA/wMAAAAAAAAAAAA=");
    assert!(r.contains("lz4"), "{r}");
    for d in &dead {
        assert!(
            d.attributes.contains_key("sluice-source-message-id"),
            "{d:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_invalid_receipt_gives_400_naming_its_index_and_field_and_nothing_is_enqueued(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let mut receipts = Generator::new(6).receipts(50);
    receipts[17]["total"] = json!("12.34567");
    receipts[30]["currency"] = json!("eur");
    let id17 = receipts[17]["receipt_id"].as_str().expect("id").to_owned();
    let (status, answer) = ingest.upload_json(&receipts).await?;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_receipts");
    assert_eq!(answer["total_errors"], 2);
    let errors = answer["errors"].as_array().expect("errors");
    assert_eq!(errors[0]["index"], 17);
    assert_eq!(errors[0]["receipt_id"], id17.as_str());
    assert_eq!(errors[0]["pointer"], "/receipts/17/total");
    assert_eq!(errors[0]["reason"], "must have at most 4 fraction digits");
    assert_eq!(errors[1]["pointer"], "/receipts/30/currency");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("nothing was enqueued"),
        "{answer}"
    );
    // Give a wrongly sent message time to show up before checking the queue is empty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.depth(&env.queue_url).await?, (0, 0, 0));
    Ok(())
}

#[tokio::test]
async fn committed_receipts_stay_within_rate_times_time_plus_burst() -> anyhow::Result<()> {
    const RATE: f64 = 200.0;
    const BURST: f64 = 500.0;
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "100")])
        .await?;
    let (status, answer) = ingest
        .upload_json(&Generator::new(7).receipts(4_000))
        .await?;
    assert_eq!(status, 202, "{answer}");
    let cfg = env.agent_config(
        "[throttle]\nrows_per_second = 200\nburst = 500\n[batch]\nmax_rows = 100\nmax_wait_ms = 20",
    )?;
    // No token can be taken before the agent starts: time counts from here.
    let start = Instant::now();
    let agent = env.start_agent(cfg).await?;
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        let stored = env.count_receipts_or_zero().await as f64;
        let t = start.elapsed().as_secs_f64();
        samples.push((t, stored));
        assert!(
            stored <= RATE * t + BURST,
            "{stored} receipts committed after {t:.2} s: over {RATE}/s × t + {BURST}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await?;
    let (t, last) = *samples.last().expect("samples were taken");
    assert!(
        last > BURST,
        "the bucket refills: {last} receipts after {t:.1} s (samples {samples:?})"
    );
    Ok(())
}

/// The API Gateway (HTTP API, payload v2) event goes through the same conversion
/// `lambda_http::run` uses, into the same router the local server serves: same answers.
#[tokio::test]
async fn an_api_gateway_v2_event_gets_the_same_answers_as_the_local_server() -> anyhow::Result<()> {
    use lambda_http::tower::ServiceExt as _;
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let cfg = sluice_cloud::IngestConfig::from_lookup(|k| match k {
        "SLUICE_QUEUE_URL" => Some(env.queue_url.clone()),
        _ => None,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = sluice_cloud::app(sluice_cloud::state(
        cfg,
        sluice_e2e::sqs_client(&env.servers.sqs_endpoint),
        None,
    ));
    let fixture: Value = serde_json::from_str(include_str!("fixtures/apigw_v2_post_batches.json"))?;

    let lambda = |body: String| {
        let mut event = fixture.clone();
        event["body"] = Value::String(body);
        let app = app.clone();
        async move {
            let request: lambda_http::request::LambdaRequest = serde_json::from_value(event)?;
            let adapter = lambda_http::Adapter::from(app);
            let response = adapter
                .oneshot(lambda_http::LambdaEvent::new(request, Default::default()))
                .await?;
            let response = serde_json::to_value(response)?;
            let status = response["statusCode"].as_u64().unwrap_or(0) as u16;
            let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or(""))?;
            anyhow::Ok((status, body))
        }
    };

    let good = Generator::new(8).receipts(1_200);
    let body = json!({ "receipts": good }).to_string();
    let (lambda_status, lambda_answer) = lambda(body.clone()).await?;
    let (local_status, local_answer) = ingest
        .post(body.into_bytes(), "application/json", &[])
        .await?;
    assert_eq!(
        (lambda_status, local_status),
        (202, 202),
        "{lambda_answer} {local_answer}"
    );
    for key in ["receipts", "chunks", "bytes"] {
        assert_eq!(lambda_answer[key], local_answer[key], "{key}");
    }
    assert_eq!(lambda_answer["receipts"], 1_200);

    let mut bad = Generator::new(9).receipts(3);
    bad[1]["issued_on"] = json!("2026-02-30");
    let body = json!({ "receipts": bad }).to_string();
    let (lambda_status, lambda_answer) = lambda(body.clone()).await?;
    let (local_status, local_answer) = ingest
        .post(body.into_bytes(), "application/json", &[])
        .await?;
    assert_eq!((lambda_status, local_status), (400, 400));
    assert_eq!(lambda_answer, local_answer);
    assert_eq!(
        lambda_answer["errors"][0]["pointer"],
        "/receipts/1/issued_on"
    );

    // Both 202s enqueued their chunks: 2 × ceil(1200 / 500) messages.
    let (visible, _, _) = env.depth(&env.queue_url).await?;
    assert_eq!(visible, 6);
    Ok(())
}

/// SIGTERM to the real binary mid-drain: it stops receiving, finishes or releases what it
/// holds, exits 0 within the grace period, and a restart stores the rest: nothing lost, nothing
/// twice.
#[tokio::test]
async fn sigterm_mid_drain_exits_0_and_nothing_is_lost() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env
        .start_ingest(&[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "100")])
        .await?;
    let (status, answer) = ingest
        .upload_json(&Generator::new(11).receipts(3_000))
        .await?;
    assert_eq!(status, 202, "{answer}");

    let mut agent = env.spawn_agent(
        "agent",
        "[throttle]\nrows_per_second = 400\nburst = 400\n[batch]\nmax_rows = 100\nmax_wait_ms = 20\n\
         max_in_flight_rows = 300\n[log]\nformat = \"json\"\nlevel = \"info\"",
    )?;
    wait_for(
        DRAIN_TIMEOUT,
        "the agent to store some receipts",
        || async { (env.count_receipts_or_zero().await >= 400).then_some(()) },
    )
    .await?;

    let signalled = Instant::now();
    // Grace period 10 s (TestEnv's config) plus one 1 s long poll, with room for a slow CI.
    let exit = agent.terminate(Duration::from_secs(30)).await?;
    let took = signalled.elapsed();
    let stderr = agent.log_text();
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM; log:\n{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("Agent stopped."), "{stderr}");
    let stored_at_stop = env.count_receipts().await?;
    assert!(
        stored_at_stop < 3_000,
        "the drain was cut short ({stored_at_stop} stored)"
    );
    // Whatever the agent held went back to the queue at once (visibility 0), not after its
    // 30 s visibility timeout.
    let (visible, in_flight, _) = env.depth(&env.queue_url).await?;
    assert_eq!(
        in_flight, 0,
        "released, not left invisible (exit took {took:?})"
    );
    assert!(visible > 0);
    // Shutdown starts no receive, and releases only once none of its receives is on the way:
    // nothing it released was taken again, so it received each message left at most once
    // (a receive taken again counts towards the DLQ's maxReceiveCount for nothing).
    let counts = env.peek_receive_counts().await?;
    assert!(
        counts.iter().all(|&c| c <= 1),
        "receives of each message left after SIGTERM: {counts:?}; log:\n{stderr}"
    );

    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(3_000, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT receipt_id) FROM sluice.receipts")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!((rows, distinct), (3_000, 3_000));
    assert!(env.drain_dlq().await?.is_empty());
    Ok(())
}

/// SIGTERM while a receive is being answered: SQS has already hidden the messages it hands
/// over, so the agent lets the answer arrive and releases them. Dropping it would leave them
/// invisible for their whole visibility timeout.
#[tokio::test]
async fn sigterm_while_a_receive_is_answered_releases_what_it_brings() -> anyhow::Result<()> {
    use sluice_e2e::sqs_proxy::SqsProxy;
    let env = TestEnv::new().await?;
    let proxy = SqsProxy::start(env.servers.sqs_addr()?).await?;
    proxy.hold_receives(Duration::from_millis(1_000));
    let ingest = env.start_ingest(&[]).await?;
    let (status, answer) = ingest.upload_json(&Generator::new(13).receipts(50)).await?;
    assert_eq!(status, 202, "{answer}");

    let mut agent = env.spawn_agent(
        "cut-off",
        &format!("[queue]\nendpoint = \"{}\"", proxy.endpoint()),
    )?;
    wait_for(DRAIN_TIMEOUT, "a receive answer held back", || async {
        (proxy.held() >= 1).then_some(())
    })
    .await?;
    let exit = agent.terminate(Duration::from_secs(30)).await?;
    assert_eq!(exit.code(), Some(0), "log:\n{}", agent.log_text());
    let (visible, in_flight, _) = env.depth(&env.queue_url).await?;
    assert_eq!(
        (visible, in_flight),
        (1, 0),
        "the message is visible again at once; log:\n{}",
        agent.log_text()
    );
    assert_eq!(env.count_receipts_or_zero().await, 0);
    Ok(())
}

/// `sluice-ingest upload` (the real binary) cuts a file into parallel requests; running it
/// twice over the same file names the same batches and stores nothing twice, and a bad line is
/// reported by its line number in the file.
#[tokio::test]
async fn the_uploader_sends_a_large_file_exactly_once_and_names_bad_lines() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let dir = std::env::temp_dir().join(format!("{}-upload", env.name));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("receipts.ndjson");
    let receipts = Generator::new(12).receipts(12_000);
    let mut text = String::new();
    for (i, r) in receipts.iter().enumerate() {
        text.push_str(&r.to_string());
        text.push('\n');
        if i % 1000 == 0 {
            text.push('\n'); // blank lines are skipped and still counted as lines
        }
    }
    std::fs::write(&file, &text)?;
    let upload = |path: std::path::PathBuf| {
        let api = format!("http://{}", ingest.addr);
        async move {
            let bin = sluice_e2e::binary("sluice-ingest")?;
            let out = tokio::process::Command::new(bin)
                .arg("upload")
                .arg(&path)
                .args(["--api", &api, "--receipts-per-request", "2500", "--json"])
                .output()
                .await?;
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            anyhow::Ok((
                out.status.code(),
                report,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    };
    let (code, first, stderr) = upload(file.clone()).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(first["accepted"], 12_000);
    assert_eq!(first["requests"].as_array().map(Vec::len), Some(5));
    let (code, second, stderr) = upload(file.clone()).await?;
    assert_eq!(code, Some(0), "{stderr}");
    let batch_ids = |report: &Value| -> Vec<Value> {
        report["requests"]
            .as_array()
            .map(|rs| rs.iter().map(|r| r["batch_id"].clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        batch_ids(&first),
        batch_ids(&second),
        "same lines, same batches"
    );

    let agent = env.start_agent(env.agent_config("")?).await?;
    env.wait_drained(12_000, DRAIN_TIMEOUT).await?;
    agent.stop().await?;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT receipt_id) FROM sluice.receipts")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!((rows, distinct), (12_000, 12_000));
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.batches WHERE complete")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(batches, 5);

    // Line 4 of this file holds a receipt with a bad total.
    let mut bad = Generator::new(13).receipts(5);
    bad[2]["total"] = json!("1.23456");
    let lines: Vec<String> = bad.iter().map(Value::to_string).collect();
    let bad_file = dir.join("bad.ndjson");
    std::fs::write(
        &bad_file,
        format!(
            "{}\n{}\n\n{}\n{}\n{}\n",
            lines[0], lines[1], lines[2], lines[3], lines[4]
        ),
    )?;
    let (code, report, stderr) = upload(bad_file).await?;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["refused"], 5);
    let error = report["requests"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("line 4: /receipts/2/total: must have at most 4 fraction digits"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
