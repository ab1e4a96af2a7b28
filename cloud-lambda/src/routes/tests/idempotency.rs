//! `Idempotency-Key` scoped to the caller, through the router against a real SQS- and
//! DynamoDB-API server (moto; see `crate::test_stack`): two callers' same key are two batches,
//! a caller's retry is the same batch, and a retry keeps the first accept's record.

use lambda_http::request::RequestContext;

use super::*;
use crate::test_stack::{moto_endpoint, unique};

const SECRET: &str = "webhook-secret-0123456789";

/// An app on moto: a fresh queue and a fresh upload records table.
async fn app_on_moto() -> (Router, Records) {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::from_conf(sluice_aws::local_sqs(&endpoint).build());
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("idem"))
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url
        .expect("a queue URL");
    let table = unique("uploads");
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(sluice_aws::local_dynamodb(&endpoint).build());
    let records = Records::new(dynamodb, table.clone());
    records
        .create_if_missing()
        .await
        .expect("moto creates the table");
    let env: HashMap<&str, String> = HashMap::from([
        ("SLUICE_QUEUE_URL", queue_url),
        ("SLUICE_STATUS_TABLE", table),
        ("SLUICE_WEBHOOK_SECRET", SECRET.to_owned()),
    ]);
    let cfg = IngestConfig::from_lookup(|k| env.get(k).cloned()).expect("valid test config");
    let app = crate::app(crate::state(cfg, sqs, Some(records.clone())));
    (app, records)
}

/// The request context API Gateway gives a JWT-authorized caller `sub`.
fn caller(sub: &str) -> RequestContext {
    let ctx: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext =
        serde_json::from_value(json!({
            "http": {"method": "POST"},
            "authorizer": {"jwt": {"claims": {"sub": sub}, "scopes": null}}
        }))
        .expect("a request context");
    RequestContext::ApiGatewayV2(ctx)
}

/// One upload by `sub` with `key` (and `callback`, if any).
async fn upload(
    app: &Router,
    sub: &str,
    key: &str,
    body: Vec<u8>,
    callback: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::post("/v1/batches")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .extension(caller(sub));
    if let Some(url) = callback {
        req = req.header("sluice-callback", url);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("valid request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn batch_id(answer: &Value) -> String {
    let id = answer["batch_id"].as_str().expect("a batch id").to_owned();
    uuid::Uuid::parse_str(&id).expect("the batch id is a UUID, as documented");
    id
}

#[tokio::test]
async fn two_owners_with_one_key_get_two_batches_and_neither_is_refused() {
    let (app, records) = app_on_moto().await;
    let key = unique("key");
    let (status, first) = upload(&app, "tenant-a", &key, json_body(2), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // Another tenant, the same key, another body: its own batch, not a 422 telling it the key
    // was taken.
    let (status, second) = upload(&app, "tenant-b", &key, json_body(3), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    assert_ne!(batch_id(&first), batch_id(&second));
    assert_eq!(second["receipts"], 3);
    // Each record is its owner's.
    for (answer, owner) in [(&first, "tenant-a"), (&second, "tenant-b")] {
        let item = records
            .table
            .get(&batch_id(answer))
            .await
            .expect("moto answers")
            .expect("the upload is recorded");
        assert_eq!(crate::report::store::text(&item, "owner"), Some(owner));
    }
}

#[tokio::test]
async fn one_owners_retry_is_the_same_batch_and_another_body_is_still_422() {
    let (app, _) = app_on_moto().await;
    let key = unique("key");
    let (status, first) = upload(&app, "tenant-a", &key, json_body(2), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, retry) = upload(&app, "tenant-a", &key, json_body(2), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retry}");
    assert_eq!(batch_id(&first), batch_id(&retry));
    let (status, other) = upload(&app, "tenant-a", &key, json_body(3), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
    assert_eq!(other["error"], "idempotency_key_reused");
}

#[tokio::test]
async fn a_retry_with_another_callback_keeps_the_first_callback() {
    let (app, records) = app_on_moto().await;
    let key = unique("key");
    let first_url = "https://hooks.example.com/first";
    let (status, first) = upload(&app, "tenant-a", &key, json_body(2), Some(first_url)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, retry) = upload(
        &app,
        "tenant-a",
        &key,
        json_body(2),
        Some("https://attacker.example.net/steal"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retry}");
    assert_eq!(batch_id(&first), batch_id(&retry));
    // A retry without a callback does not add or drop one either.
    let (status, _) = upload(&app, "tenant-a", &key, json_body(2), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let item = records
        .table
        .get(&batch_id(&first))
        .await
        .expect("moto answers")
        .expect("the upload is recorded");
    assert_eq!(
        crate::report::store::text(&item, "callback"),
        Some(first_url)
    );
    assert_eq!(
        crate::report::store::text(&item, "idempotency_key"),
        Some(key.as_str())
    );
}
