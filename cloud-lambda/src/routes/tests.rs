//! Router tests without a socket (`oneshot`): every refused request and the answer a client
//! sees. The SQS client points at a closed port, so nothing here can be enqueued; the
//! accepted path is covered end to end against a real SQS-API server in `tests/`. The OpenAPI
//! document's checks are in `openapi`, the webhooks' and the status endpoint's in `webhooks`.

use std::collections::HashMap;
use std::io::Write as _;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::*;
use crate::config::IngestConfig;

const TOKEN: &str = "test-token-0123456789";
/// An endpoint that refuses connections.
const CLOSED: &str = "http://127.0.0.1:1";

/// A DynamoDB client whose endpoint refuses connections, one attempt per call.
fn closed_dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        sluice_aws::local_dynamodb(CLOSED)
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    )
}

/// An app whose SQS endpoint refuses connections, with `vars` on top of a queue URL.
fn app_with(vars: &[(&str, &str)]) -> Router {
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.entry("SLUICE_QUEUE_URL".into())
        .or_insert_with(|| "http://127.0.0.1:1/000000000000/nowhere".into());
    let cfg = IngestConfig::from_lookup(|k| env.get(k).cloned()).expect("valid test config");
    let sqs = sluice_aws::local_sqs(CLOSED)
        // One attempt per call: the publisher does its own retries.
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .build();
    crate::app(crate::state(cfg, aws_sdk_sqs::Client::from_conf(sqs), None))
}

fn receipt(i: usize) -> Value {
    json!({
        "receipt_id": format!("00000000-0000-4000-8000-{i:012}"),
        "tenant_id": "acme",
        "merchant": "Café Müller",
        "issued_on": "2026-04-15",
        "currency": "EUR",
        "total": "42.50",
    })
}

fn json_body(n: usize) -> Vec<u8> {
    let receipts: Vec<Value> = (0..n).map(receipt).collect();
    serde_json::to_vec(&json!({ "receipts": receipts })).expect("serializable")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("in memory");
    enc.finish().expect("in memory")
}

async fn send(
    app: Router,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::post("/v1/batches");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .oneshot(req.body(Body::from(body)).expect("valid request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, json)
}

const JSON: (&str, &str) = ("content-type", "application/json");
const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

#[tokio::test]
async fn healthz_answers_ok() {
    let resp = app_with(&[])
        .oneshot(Request::get("/healthz").body(Body::empty()).expect("valid"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_is_400_with_line_and_column() {
    let body = b"{\"receipts\": [\n  {\"receipt_id\": \"x\",,}\n]}".to_vec();
    let (status, _, answer) = send(app_with(&[]), body, &[JSON]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "malformed_json");
    assert_eq!(answer["line"], 2);
    assert_eq!(answer["column"], 22);
    let message = answer["message"].as_str().expect("message");
    assert!(
        message.starts_with("malformed body at line 2, column 22"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_ndjson_names_the_line() {
    let mut body = Vec::new();
    for i in 0..2 {
        body.extend_from_slice(receipt(i).to_string().as_bytes());
        body.push(b'\n');
    }
    body.extend_from_slice(b"{\"receipt_id\": oops}\n");
    let (status, _, answer) = send(app_with(&[]), body, &[NDJSON]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "malformed_json");
    assert_eq!(answer["line"], 3);
}

#[tokio::test]
async fn an_invalid_ndjson_receipt_is_named_by_index_and_pointer() {
    let mut r = receipt(1);
    r["currency"] = json!("euro");
    let body = format!("{}\n{}\n", receipt(0), r).into_bytes();
    let (status, _, answer) = send(app_with(&[]), body, &[NDJSON]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_receipts");
    assert_eq!(answer["errors"][0]["index"], 1);
    assert_eq!(answer["errors"][0]["pointer"], "/receipts/1/currency");
    assert_eq!(
        answer["errors"][0]["receipt_id"],
        "00000000-0000-4000-8000-000000000001"
    );
}

#[tokio::test]
async fn errors_are_capped_at_100_with_the_true_total() {
    let receipts: Vec<Value> = (0..150)
        .map(|i| {
            let mut r = receipt(i);
            r["total"] = json!(1.5);
            r
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "receipts": receipts })).expect("json");
    let (status, _, answer) = send(app_with(&[]), body, &[JSON]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errors"].as_array().map(Vec::len), Some(100));
    assert_eq!(answer["total_errors"], 150);
    assert_eq!(
        answer["errors"][0]["reason"],
        r#"must be a decimal string like "42.50", not a number"#
    );
}

#[tokio::test]
async fn wrong_shapes_are_400_with_a_plain_reason() {
    for (body, expected) in [
        (
            r#"[1, 2]"#,
            r#"the body must be a JSON object like {"receipts": [...]}, not an array"#,
        ),
        (r#"{"receipts": []}"#, "no receipts"),
        (
            r#"{"receipts": {}}"#,
            r#""receipts" must be an array, not an object"#,
        ),
        (
            r#"{"items": []}"#,
            r#"unknown top-level field "items": the body must be {"receipts": [...]}"#,
        ),
    ] {
        let (status, _, answer) = send(app_with(&[]), body.as_bytes().to_vec(), &[JSON]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"], "bad_shape", "{body}: {answer}");
        assert_eq!(answer["message"], expected, "{body}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401() {
    let app = app_with(&[("SLUICE_API_TOKEN", TOKEN)]);
    let (status, headers, answer) = send(app.clone(), json_body(1), &[JSON]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"], "unauthorized");
    assert_eq!(
        headers.get(header::WWW_AUTHENTICATE),
        Some(&HeaderValue::from_static("Bearer realm=\"sluice\""))
    );
    let wrong = format!("Bearer {TOKEN}x");
    let (status, _, _) = send(
        app.clone(),
        json_body(1),
        &[JSON, ("authorization", &wrong)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The right token gets past authentication (to the next check: the content type).
    let right = format!("Bearer {TOKEN}");
    let (status, _, _) = send(app, json_body(1), &[("authorization", &right)]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_wrong_content_type_or_encoding_is_415() {
    let (status, _, answer) =
        send(app_with(&[]), json_body(1), &[("content-type", "text/csv")]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        answer["message"],
        r#"unsupported content type "text/csv": send application/json or application/x-ndjson"#
    );
    let (status, _, answer) = send(app_with(&[]), json_body(1), &[]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    let (status, _, answer) = send(
        app_with(&[]),
        json_body(1),
        &[JSON, ("content-encoding", "br")],
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer["error"], "unsupported_media_type");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = app_with(&[("SLUICE_MAX_BODY_BYTES", "2048")]);
    let (status, _, answer) = send(app, json_body(50), &[JSON]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"], "body_too_large");
    assert_eq!(
        answer["message"],
        "request body is over the limit of 2048 bytes"
    );
}

#[tokio::test]
async fn a_gzip_body_that_expands_past_the_limit_is_413() {
    // 1 MiB of spaces compresses to about a kilobyte: a small zip bomb.
    let mut bomb = b"{\"receipts\": [".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 1 << 20));
    let app = app_with(&[("SLUICE_MAX_BODY_BYTES", "4096")]);
    let (status, _, answer) = send(app, gzip(&bomb), &[JSON, ("content-encoding", "gzip")]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
}

#[tokio::test]
async fn a_body_that_is_not_gzip_is_400() {
    let (status, _, answer) = send(
        app_with(&[]),
        json_body(1),
        &[JSON, ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["message"].as_str().expect("message");
    assert!(
        message.contains("gzip body could not be decoded"),
        "{message}"
    );
}

#[tokio::test]
async fn more_receipts_than_allowed_is_413() {
    let app = app_with(&[("SLUICE_MAX_RECEIPTS_PER_REQUEST", "5")]);
    let (status, _, answer) = send(app, json_body(6), &[JSON]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"], "too_many_receipts");
}

#[tokio::test]
async fn a_bad_idempotency_key_is_400() {
    let long = "k".repeat(256);
    let (status, _, answer) = send(
        app_with(&[]),
        json_body(1),
        &[JSON, ("idempotency-key", &long)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["message"],
        "invalid Idempotency-Key: must be 1 to 255 characters"
    );
}

#[tokio::test]
async fn a_receipt_too_large_for_one_message_is_400() {
    let mut r = receipt(0);
    r["items"] = json!((0..500)
        .map(|i| json!({"description": "x".repeat(400), "quantity": "1", "unit_price": "1", "amount": format!("{i}")}))
        .collect::<Vec<_>>());
    let body = serde_json::to_vec(&json!({ "receipts": [r] })).expect("json");
    let app = app_with(&[("SLUICE_MAX_MESSAGE_BYTES", "65536")]);
    let (status, _, answer) = send(app, body, &[JSON]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["errors"][0]["pointer"], "/receipts/0");
    let reason = answer["errors"][0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("over the 65536-byte SQS message limit"),
        "{reason}"
    );
}

#[tokio::test]
async fn sqs_unreachable_is_503_with_retry_after() {
    let (status, headers, answer) = send(app_with(&[]), json_body(3), &[JSON]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "queue_unavailable");
    assert_eq!(
        headers.get(header::RETRY_AFTER),
        Some(&HeaderValue::from(5u32))
    );
    let message = answer["message"].as_str().expect("message");
    assert!(message.contains("retry the same request"), "{message}");
}

#[tokio::test]
async fn a_503_names_a_request_id_and_carries_no_sdk_text() {
    let (status, _, answer) = send(app_with(&[]), json_body(3), &[JSON]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let id = answer["request_id"].as_str().expect("request_id");
    assert_eq!(
        answer["message"],
        format!("the queue did not accept every chunk; nothing is known to be enqueued; retry the same request (request id {id})")
    );
    // The SDK's words (endpoint, dispatch failure, queue URL with its account) stay in the log.
    let text = answer.to_string();
    for internal in [
        "127.0.0.1",
        "dispatch",
        "000000000000",
        "nowhere",
        "SendMessageBatch",
    ] {
        assert!(!text.contains(internal), "{internal:?} in {text}");
    }
}

#[tokio::test]
async fn an_unreachable_records_table_is_503_without_sdk_text() {
    let cfg = IngestConfig::from_lookup(|k| match k {
        "SLUICE_QUEUE_URL" => Some("http://127.0.0.1:1/000000000000/nowhere".into()),
        _ => None,
    })
    .expect("valid test config");
    let records = Records::new(closed_dynamodb(), "uploads-000000000000".into());
    let sqs = aws_sdk_sqs::Client::from_conf(sluice_aws::local_sqs(CLOSED).build());
    let app = crate::app(crate::state(cfg, sqs, Some(records)));
    let (status, headers, answer) = send(app, json_body(2), &[JSON]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "records_unavailable");
    assert!(headers.get(header::RETRY_AFTER).is_some());
    let id = answer["request_id"].as_str().expect("request_id");
    assert_eq!(
        answer["message"],
        format!("the upload records could not be written; nothing was enqueued; retry the same request (request id {id})")
    );
    let text = answer.to_string();
    for internal in ["127.0.0.1", "000000000000", "PutItem", "dispatch"] {
        assert!(!text.contains(internal), "{internal:?} in {text}");
    }
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_once_the_inflated_body_passes_the_limit() {
    // 55 MB of zeros in one metadata array compresses to ~55 KB.
    let mut bomb = br#"{"receipts": [{"metadata": ["#.to_vec();
    bomb.extend(b"0,".repeat(27_500_000));
    bomb.extend(b"0]}]}");
    let compressed = gzip(&bomb);
    drop(bomb);
    assert!(compressed.len() < 100_000, "{}", compressed.len());
    let (status, _, answer) = send(
        app_with(&[]),
        compressed,
        &[JSON, ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "body_too_large");
    assert_eq!(
        answer["message"],
        "gzip body decompresses to more than the limit of 6291456 bytes; nothing was enqueued"
    );
}

#[test]
fn without_the_records_table_one_key_with_two_bodies_gets_two_batch_ids() {
    let a = unrecorded_batch_id(None, "upload-42", "aa");
    assert_eq!(a, unrecorded_batch_id(None, "upload-42", "aa"));
    assert_ne!(a, unrecorded_batch_id(None, "upload-42", "bb"));
    assert_ne!(a, unrecorded_batch_id(None, "upload-43", "aa"));
    // Two callers' same key and body: two batch ids.
    let b = unrecorded_batch_id(Some("user-1"), "upload-42", "aa");
    assert_eq!(b, unrecorded_batch_id(Some("user-1"), "upload-42", "aa"));
    assert_ne!(b, unrecorded_batch_id(Some("user-2"), "upload-42", "aa"));
    assert_ne!(b, a);
}

#[test]
fn the_inflated_body_is_hashed_as_sent_plain() {
    let plain = json_body(2);
    let (bytes, digest) = gunzip(&gzip(&plain), 1 << 20).expect("inflates");
    assert_eq!(bytes.as_ref(), plain.as_slice());
    assert_eq!(digest, format!("{:x}", Sha256::digest(&plain)));
    assert_eq!(digest.len(), 64);
}

#[test]
fn same_idempotency_key_gives_the_same_batch_id() {
    assert_eq!(
        keyed_batch_id(None, "upload-42"),
        keyed_batch_id(None, "upload-42")
    );
    assert_ne!(
        keyed_batch_id(None, "upload-42"),
        keyed_batch_id(None, "upload-43")
    );
    // Without an owner the id is the key's alone, as before owners scoped keys.
    assert_eq!(
        keyed_batch_id(None, "upload-42"),
        uuid::Uuid::new_v5(&BATCH_NAMESPACE, b"upload-42").to_string()
    );
}

#[test]
fn one_key_of_two_owners_gives_two_batch_ids() {
    let a = keyed_batch_id(Some("user-1"), "upload-42");
    assert_eq!(a, keyed_batch_id(Some("user-1"), "upload-42"));
    assert_ne!(a, keyed_batch_id(Some("user-2"), "upload-42"));
    assert_ne!(a, keyed_batch_id(None, "upload-42"));
    // The owner and key are not run together: ("a", "b\nc") cannot be written as a key.
    assert_ne!(
        keyed_batch_id(Some("user-1x"), "k"),
        keyed_batch_id(Some("user-1"), "xk")
    );
}

#[test]
fn token_comparison_needs_an_exact_match() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(!constant_time_eq(b"", b"a"));
}

#[test]
fn a_refused_body_is_worded_for_the_http_api() {
    for (e, expected) in [
        (
            BatchError::Malformed {
                line: 2,
                column: 5,
                message: "expected value".into(),
            },
            "malformed body at line 2, column 5: expected value",
        ),
        (BatchError::Shape("no receipts".into()), "no receipts"),
        (
            BatchError::TooManyReceipts { limit: 5 },
            "more than 5 receipts in one request; split the upload",
        ),
        (
            BatchError::Invalid {
                errors: vec![],
                total_errors: 3,
                invalid_receipts: 2,
            },
            "2 invalid receipts (3 errors); nothing was enqueued",
        ),
    ] {
        assert_eq!(IngestError::from(e).to_string(), expected);
    }
}

#[test]
fn content_types_with_parameters_are_understood() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    assert_eq!(content_type(&h).expect("ok"), Format::Json);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    assert!(matches!(
        content_type(&h),
        Err(IngestError::UnsupportedMediaType(_))
    ));
}

#[tokio::test]
async fn hostile_bodies_get_a_typed_400() {
    let dup = br#"{"receipts": [{"receipt_id": "00000000-0000-4000-8000-000000000000", "total": "1", "total": "9"}]}"#;
    let deep = format!(r#"{{"receipts": [{}]}}"#, "[".repeat(10_000));
    for (body, expected) in [
        (dup.to_vec(), r#"duplicate key "total" in an object"#),
        (deep.into_bytes(), "recursion limit exceeded"),
        (
            b"{\"receipts\": [\"\xff\"]}".to_vec(),
            "invalid unicode code point",
        ),
    ] {
        let (status, _, answer) = send(app_with(&[]), body, &[JSON]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"], "malformed_json");
        let message = answer["message"].as_str().expect("message");
        assert!(message.ends_with(expected), "{message}");
    }
}

#[tokio::test]
async fn the_idempotency_key_is_echoed_even_on_errors() {
    let (status, headers, _) = send(
        app_with(&[]),
        b"{}".to_vec(),
        &[JSON, ("idempotency-key", "upload-77")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        headers.get("idempotency-key"),
        Some(&HeaderValue::from_static("upload-77"))
    );
}

mod idempotency;
mod openapi;
mod webhooks;

#[tokio::test]
async fn declared_photos_without_a_photo_bucket_are_refused_and_named() {
    let mut receipts: Vec<Value> = (0..3).map(receipt).collect();
    for r in &mut receipts[1..] {
        r["image"] = json!({"sha256": "a".repeat(64), "bytes": 1000, "content_type": "image/png"});
    }
    let body = serde_json::to_vec(&json!({ "receipts": receipts })).expect("serializable");
    let (status, _, answer) = send(app_with(&[]), body, &[JSON]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "photos_not_configured");
    assert_eq!(
        answer["message"],
        "2 receipts declare a photo to upload (image with content_type and no key; the first: \
         /receipts/1/image, receipt_id 00000000-0000-4000-8000-000000000001), but photo uploads \
         are not configured on this API (SLUICE_PHOTO_BUCKET); nothing was enqueued. Give each \
         image a key, or leave image out"
    );
}
