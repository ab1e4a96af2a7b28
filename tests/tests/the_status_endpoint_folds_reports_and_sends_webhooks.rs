//! Upload status, the cloud side: chunk reports put on the status queue by the test, folded once
//! into the upload records by a real `sluice-ingest` process (or straight through the service),
//! `GET /v1/batches/{id}` answering them (also through API Gateway's event, for its caller
//! only), and signed webhooks retried, delivered once or given up. Real moto (SQS and
//! DynamoDB); the agent's side of the same path is `the_status_endpoint_follows_a_real_agent`.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use serde_json::{json, Value};
use sluice_e2e::gen::{id_of, Generator};
use sluice_e2e::{accept_upload, assert_signed, is_final, wait_for, TestEnv, WebhookReceiver};
use sluice_protocol::report::{encode_reports, ChunkReport, Rejection};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The report of chunk `index` of `count`: `stored` stored, the rest refused as `refused`.
fn report(batch: &str, index: u32, count: u32, stored: u32, refused: &[Rejection]) -> ChunkReport {
    let conflicts = refused
        .iter()
        .filter(|r| r.reason.starts_with("conflict"))
        .count() as u32;
    let rejected = refused.len() as u32 - conflicts;
    ChunkReport {
        batch_id: batch.to_owned(),
        chunk_index: index,
        chunk_count: count,
        receipts: stored + conflicts + rejected,
        stored,
        duplicates: 0,
        conflicts,
        rejected,
        rejections: refused.to_vec(),
        committed_at_ms: 1_790_000_000_000,
    }
}

async fn send(env: &TestEnv, body: &str, kind: Option<&str>) -> anyhow::Result<()> {
    let mut send = env
        .sqs
        .send_message()
        .queue_url(env.status_queue_url())
        .message_body(body);
    if let Some(kind) = kind {
        send = send.message_attributes(
            "sluice-kind",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(kind)
                .build()?,
        );
    }
    send.send().await?;
    Ok(())
}

async fn send_reports(env: &TestEnv, reports: &[ChunkReport]) -> anyhow::Result<()> {
    for body in encode_reports(reports, 200 * 1024) {
        send(env, &body, None).await?;
    }
    Ok(())
}

/// Reports sent twice (the same message twice, and a chunk again in another message) are
/// folded once; a safe retry of the upload keeps the folded counts; each malformed status
/// message reaches the status DLQ; the endpoint refuses bad ids and unknown batches.
#[tokio::test]
async fn reports_are_folded_once_and_malformed_ones_reach_the_status_dlq() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let status = env.create_status_queue().await?;
    let ingest = env
        .start_status_ingest("ingest.log", &[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "2")])
        .await?;
    let receipts = Generator::new(1301).receipts(5);
    let key = [("idempotency-key", "status-fold-1")];
    let (code, answer) = ingest.upload(&receipts, &key).await?;
    assert_eq!(code, 202, "{answer}");
    let batch = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(answer["chunks"], 3);
    let accepted = ingest
        .wait_status(&batch, TIMEOUT, "the accepted upload", |s| {
            s["state"] == "accepted"
        })
        .await?;
    assert_eq!(accepted["receipts"], 5);
    assert!(accepted["accepted_at"].is_string(), "{accepted}");

    let conflict = Rejection {
        receipt_id: id_of(&receipts[2]),
        reason: "conflict: receipt is stored with other content".into(),
    };
    let refused = Rejection {
        receipt_id: id_of(&receipts[4]),
        reason: "P0001: merchant is blocked".into(),
    };
    let first = vec![
        report(&batch, 0, 3, 2, &[]),
        report(&batch, 1, 3, 1, std::slice::from_ref(&conflict)),
    ];
    send_reports(&env, &first).await?;
    send_reports(&env, &first).await?;
    let storing = ingest
        .wait_status(&batch, TIMEOUT, "two chunks folded", |s| {
            s["chunks_done"] == 2
        })
        .await?;
    assert_eq!(storing["state"], "storing");
    // A safe retry of the same upload while it is storing changes no count.
    let (code, again) = ingest.upload(&receipts, &key).await?;
    assert_eq!(
        (code, again["batch_id"].as_str()),
        (202, Some(batch.as_str()))
    );
    let last = report(&batch, 2, 3, 0, std::slice::from_ref(&refused));
    send_reports(&env, &[last.clone(), first[1].clone()]).await?;
    let done = ingest
        .wait_status(&batch, TIMEOUT, "the batch final", is_final)
        .await?;
    wait_for(TIMEOUT, "the status queue consumed", || {
        env.queue_empty(&status.queue_url)
    })
    .await?;
    let done_again = ingest.batch_status(&batch).await?.1;
    assert_eq!(done, done_again, "nothing folded after the batch was final");
    for (field, want) in [
        ("state", json!("stored_with_rejections")),
        ("receipts", json!(5)),
        ("chunks", json!(3)),
        ("chunks_done", json!(3)),
        ("stored", json!(3)),
        ("duplicates", json!(0)),
        ("conflicts", json!(1)),
        ("rejected", json!(1)),
        ("rejections_total", json!(2)),
        (
            "rejections",
            serde_json::to_value(vec![conflict.clone(), refused.clone()])?,
        ),
    ] {
        assert_eq!(done[field], want, "{field} in {done}");
    }
    assert!(done["completed_at"].is_string(), "{done}");
    assert!(
        done.get("webhook").is_none(),
        "no callback was named: {done}"
    );

    // Each malformed message stays unconsumed until the redrive policy moves it to the DLQ,
    // and so does each well-formed report that no accepted upload takes: one for a batch
    // never accepted, one naming another chunk count than the accepted upload's.
    let bad_report = report(&batch, 3, 3, 0, &[]);
    let never_accepted = uuid::Uuid::new_v4().to_string();
    let forged = report(&never_accepted, 0, 1, 1, &[]);
    let other_count = report(&batch, 3, 4, 1, &[]);
    let malformed: Vec<(String, Option<&str>)> = vec![
        ("not base64 !".into(), None),
        ("eyJ2IjoxfQ==".into(), None), // base64 of {"v":1}, not gzip
        (encode_reports(&[bad_report], 1 << 20).remove(0), None),
        (encode_reports(&[forged], 1 << 20).remove(0), None),
        (encode_reports(&[other_count], 1 << 20).remove(0), None),
        ("{}".into(), Some("webhook")),
        (format!("{{\"batch_id\":\"{batch}\"}}"), Some("telemetry")),
    ];
    for (body, kind) in &malformed {
        send(&env, body, *kind).await?;
    }
    let dead = std::sync::Mutex::new(Vec::new());
    wait_for(
        TIMEOUT,
        "every malformed message in the status DLQ",
        || async {
            let out = env
                .sqs
                .receive_message()
                .queue_url(&status.dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .ok()?;
            for m in out.messages.unwrap_or_default() {
                dead.lock().ok()?.push(m.body.unwrap_or_default());
                let _ = env
                    .sqs
                    .delete_message()
                    .queue_url(&status.dlq_url)
                    .set_receipt_handle(m.receipt_handle)
                    .send()
                    .await;
            }
            (dead.lock().ok()?.len() >= malformed.len()).then_some(())
        },
    )
    .await?;
    let mut dead = dead.into_inner().unwrap_or_default();
    dead.sort();
    let mut sent: Vec<String> = malformed.into_iter().map(|(b, _)| b).collect();
    sent.sort();
    assert_eq!(dead, sent);
    assert_eq!(
        ingest.batch_status(&batch).await?.1,
        done,
        "malformed reports change nothing"
    );
    assert_eq!(
        env.upload_record(&never_accepted).await?,
        None,
        "a report creates no item"
    );
    let log = std::fs::read_to_string(env.dir().join("ingest.log"))?;
    let unbound = format!(
        "chunk report not bound to an accepted upload (batch \"{never_accepted}\", chunk 0): \
         no upload was accepted under this batch id"
    );
    let mismatched = format!(
        "chunk report not bound to an accepted upload (batch \"{batch}\", chunk 3): \
         chunk_count 4 is not the accepted upload's 3 chunks"
    );
    for named in [
        "malformed status message: status message is not base64",
        "malformed status message: status message is not gzip",
        "chunk_index 3 is not below chunk_count 3",
        unbound.as_str(),
        mismatched.as_str(),
        "malformed webhook job: missing field `batch_id`",
        "status message of unknown kind \"telemetry\"",
    ] {
        assert!(log.contains(named), "the log names {named:?}");
    }

    // The endpoint: a malformed id, an unknown batch.
    let (code, answer) = ingest.batch_status("batch-1").await?;
    assert_eq!(
        (code, answer["error"].as_str()),
        (400, Some("bad_batch_id"))
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, answer) = ingest.batch_status(&unknown).await?;
    assert_eq!((code, answer["error"].as_str()), (404, Some("not_found")));
    assert_eq!(
        answer["message"],
        format!("no upload {unknown} is known here")
    );
    Ok(())
}

/// A webhook whose receiver first answers 500 is retried, then delivered once, signed; a
/// duplicate job for it sends nothing more.
#[tokio::test]
async fn a_webhook_is_retried_then_delivered_once_and_verifiably_signed() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let status = env.create_status_queue().await?;
    let receiver = WebhookReceiver::start(&[500]).await?;
    let ingest = env
        .start_status_ingest("ingest.log", &[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "2")])
        .await?;
    let receipts = Generator::new(1302).receipts(3);
    let callback = receiver.url();
    let (code, answer) = ingest
        .upload(&receipts, &[("sluice-callback", callback.as_str())])
        .await?;
    assert_eq!(code, 202, "{answer}");
    let batch = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    let pending = ingest.batch_status(&batch).await?.1;
    assert_eq!(
        pending["webhook"],
        json!({"state": "pending", "attempts": 0})
    );
    send_reports(
        &env,
        &[report(&batch, 0, 2, 2, &[]), report(&batch, 1, 2, 1, &[])],
    )
    .await?;
    let delivered = ingest
        .wait_status(&batch, TIMEOUT, "the webhook delivered", |s| {
            s["webhook"]["state"] == "delivered"
        })
        .await?;
    assert_eq!(delivered["state"], "stored");
    assert_eq!(delivered["webhook"]["attempts"], 2, "{delivered}");
    assert!(delivered["webhook"]["delivered_at"].is_string());
    assert_eq!(
        delivered["webhook"]["last_error"],
        Value::Null,
        "cleared once delivered"
    );
    // A duplicate job (as a re-sent final report could queue) sends nothing more.
    send(
        &env,
        &json!({"batch_id": batch}).to_string(),
        Some("webhook"),
    )
    .await?;
    wait_for(TIMEOUT, "the status queue consumed", || {
        env.queue_empty(&status.queue_url)
    })
    .await?;
    let got = receiver.deliveries();
    let answered: Vec<u16> = got.iter().map(|d| d.answered).collect();
    assert_eq!(answered, [500, 204], "one failure, then one delivery");
    for d in &got {
        assert_signed(d);
        let mut body: Value = serde_json::from_slice(&d.body)?;
        assert_eq!(body["batch_id"], batch.as_str());
        assert!(body.get("webhook").is_none(), "{body}");
        let mut expected = delivered.clone();
        expected.as_object_mut().map(|o| o.remove("webhook"));
        body.as_object_mut().map(|o| o.remove("webhook"));
        assert_eq!(body, expected, "the webhook carries the endpoint's answer");
    }
    Ok(())
}

/// Through API Gateway's event (a JWT authorizer): the upload records its caller, who sees
/// the status; another caller gets 404 as for an unknown id.
#[tokio::test]
async fn a_caller_named_by_the_authorizer_sees_only_its_own_uploads() -> anyhow::Result<()> {
    use lambda_http::tower::ServiceExt as _;
    let env = TestEnv::new().await?;
    // The in-process ingest creates this test's table.
    let _ingest = env.start_ingest(&[]).await?;
    let table = env.status_table();
    let cfg = sluice_cloud::IngestConfig::from_lookup(|k| match k {
        "SLUICE_QUEUE_URL" => Some(env.queue_url.clone()),
        "SLUICE_STATUS_TABLE" => Some(table.clone()),
        _ => None,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let records = sluice_cloud::records::Records::new(
        sluice_e2e::dynamodb_client(&env.servers.sqs_endpoint),
        table.clone(),
    );
    let app = sluice_cloud::app(sluice_cloud::state(
        cfg,
        sluice_e2e::sqs_client(&env.servers.sqs_endpoint),
        Some(records),
    ));
    let fixture: Value = serde_json::from_str(include_str!("fixtures/apigw_v2_post_batches.json"))?;
    let call = |method: &str, path: String, sub: &str, body: String| {
        let mut event = fixture.clone();
        event["routeKey"] = json!(format!("{method} {path}"));
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["method"] = json!(method);
        event["requestContext"]["http"]["path"] = json!(path);
        event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(sub);
        event["body"] = Value::String(body);
        let app = app.clone();
        async move {
            let request: lambda_http::request::LambdaRequest = serde_json::from_value(event)?;
            let response = lambda_http::Adapter::from(app)
                .oneshot(lambda_http::LambdaEvent::new(request, Default::default()))
                .await?;
            let response = serde_json::to_value(response)?;
            let status = response["statusCode"].as_u64().unwrap_or(0) as u16;
            let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or(""))?;
            anyhow::Ok((status, body))
        }
    };
    let receipts = Generator::new(1321).receipts(3);
    let body = json!({ "receipts": receipts }).to_string();
    let (code, answer) = call("POST", "/v1/batches".into(), "alice", body).await?;
    assert_eq!(code, 202, "{answer}");
    let batch = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/batches/{batch}");
    let (code, own) = call("GET", path.clone(), "alice", String::new()).await?;
    assert_eq!(
        (code, own["state"].as_str()),
        (200, Some("accepted")),
        "{own}"
    );
    assert_eq!(
        env.upload_record(&batch).await?.expect("recorded")["owner"],
        "alice"
    );
    let (code, other) = call("GET", path, "bob", String::new()).await?;
    assert_eq!(
        (code, other["error"].as_str()),
        (404, Some("not_found")),
        "{other}"
    );
    assert_eq!(other["message"], format!("no upload {batch} is known here"));
    Ok(())
}

/// Folding straight through the service: the same report twice counts once, and more than
/// 100 refusals keep the first 100 named with exact totals.
#[tokio::test]
async fn the_same_report_twice_counts_once_and_rejections_keep_the_first_hundred(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let ingest = env.start_ingest(&[]).await?;
    let (records, service) = env.status_service(&[]).await?;
    // The upload accepted as the API accepts it (its record first): reports fold only into that.
    let batch = accept_upload(&records, 300, 3, None).await?;
    let refusals = |chunk: u32| -> Vec<Rejection> {
        (0..60)
            .map(|i| Rejection {
                receipt_id: format!("{chunk}-{i:02}"),
                reason: "P0001: refused".into(),
            })
            .collect()
    };
    let reports: Vec<ChunkReport> = (0..3)
        .map(|c| report(&batch, c, 3, 40, &refusals(c)))
        .collect();
    for body in encode_reports(&reports[..1], 1 << 20) {
        service.handle(None, &body).await?;
        service.handle(None, &body).await?;
    }
    for body in encode_reports(&reports, 1 << 20) {
        service.handle(None, &body).await?;
    }
    let answer = reqwest::get(ingest.url(&format!("/v1/batches/{batch}"))).await?;
    assert_eq!(answer.status().as_u16(), 200);
    let done: Value = answer.json().await?;
    for (field, want) in [
        ("state", json!("stored_with_rejections")),
        ("receipts", json!(300)),
        ("chunks", json!(3)),
        ("chunks_done", json!(3)),
        ("stored", json!(120)),
        ("rejected", json!(180)),
        ("rejections_total", json!(180)),
    ] {
        assert_eq!(done[field], want, "{field}");
    }
    assert!(done["accepted_at"].is_string(), "{done}");
    let named: Vec<Rejection> = serde_json::from_value(done["rejections"].clone())?;
    let first: Vec<Rejection> = refusals(0)
        .into_iter()
        .chain(refusals(1))
        .take(100)
        .collect();
    assert_eq!(named, first, "the first 100 named, in fold order");
    Ok(())
}

/// A receiver that never answers 2xx: the webhook is given up after
/// `SLUICE_WEBHOOK_GIVE_UP_SECONDS` and the status says so, with the last error.
#[tokio::test]
async fn a_webhook_never_accepted_is_given_up_and_recorded_failed() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let status = env.create_status_queue().await?;
    let receiver = WebhookReceiver::start(&[503; 20]).await?;
    let ingest = env
        .start_status_ingest("ingest.log", &[("SLUICE_WEBHOOK_GIVE_UP_SECONDS", "1")])
        .await?;
    let callback = receiver.url();
    let receipts = Generator::new(1322).receipts(2);
    let (code, answer) = ingest
        .upload(&receipts, &[("sluice-callback", callback.as_str())])
        .await?;
    assert_eq!(code, 202, "{answer}");
    let batch = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    send_reports(&env, &[report(&batch, 0, 1, 2, &[])]).await?;
    let failed = ingest
        .wait_status(&batch, TIMEOUT, "the webhook given up", |s| {
            s["webhook"]["state"] == "failed"
        })
        .await?;
    assert_eq!(failed["state"], "stored");
    assert_eq!(failed["webhook"]["last_error"], "answered HTTP 503");
    let attempts = failed["webhook"]["attempts"].as_u64().unwrap_or(0);
    assert!(attempts >= 1, "{failed}");
    wait_for(TIMEOUT, "the status queue consumed", || {
        env.queue_empty(&status.queue_url)
    })
    .await?;
    assert_eq!(
        receiver.deliveries().len() as u64,
        attempts,
        "no POST after giving up"
    );
    Ok(())
}
