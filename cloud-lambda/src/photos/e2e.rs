//! The photo flow end to end against moto (SQS, DynamoDB and S3 in one server; see
//! `crate::test_stack`): one upload declaring 300 photos through the router, the photos PUT to
//! their presigned URLs with reqwest, S3's ObjectCreated events read from the events queue and
//! checked, the sweep of the photo never uploaded, then the main queue and the upload's status.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;

use super::*;
use crate::io::sqs::Queue;
use crate::test_stack::{moto_endpoint, unique};

const PHOTOS: usize = 300;
const URL_SECONDS: u64 = 8;

struct Stack {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    queue_url: String,
    events_url: String,
    bucket: String,
    table: String,
}

async fn stack() -> Stack {
    let endpoint = moto_endpoint();
    let sqs = aws_sdk_sqs::Client::from_conf(sluice_aws::local_sqs(&endpoint).build());
    let s3 = aws_sdk_s3::Client::from_conf(crate::io::s3::local_config(&endpoint).build());
    let queue = |name: String| {
        let sqs = sqs.clone();
        async move {
            sqs.create_queue()
                .queue_name(name)
                .send()
                .await
                .expect("moto creates the queue")
                .queue_url
                .expect("a queue URL")
        }
    };
    let queue_url = queue(unique("chunks")).await;
    let events_name = unique("photo-events");
    let events_url = queue(events_name.clone()).await;
    let bucket = unique("photos");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("moto creates the bucket");
    let notification = aws_sdk_s3::types::NotificationConfiguration::builder()
        .queue_configurations(
            aws_sdk_s3::types::QueueConfiguration::builder()
                .queue_arn(format!("arn:aws:sqs:us-east-1:123456789012:{events_name}"))
                .events(aws_sdk_s3::types::Event::S3ObjectCreated)
                .filter(
                    aws_sdk_s3::types::NotificationConfigurationFilter::builder()
                        .key(
                            aws_sdk_s3::types::S3KeyFilter::builder()
                                .filter_rules(
                                    aws_sdk_s3::types::FilterRule::builder()
                                        .name(aws_sdk_s3::types::FilterRuleName::Prefix)
                                        .value(PHOTO_PREFIX)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
                .expect("a queue configuration"),
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(notification)
        .send()
        .await
        .expect("moto takes the notification");
    let table = unique("uploads");
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(sluice_aws::local_dynamodb(&endpoint).build());
    Records::new(dynamodb, table.clone())
        .create_if_missing()
        .await
        .expect("moto creates the table");
    Stack {
        sqs,
        s3,
        queue_url,
        events_url,
        bucket,
        table,
    }
}

fn service(st: &Stack, env: &HashMap<&str, String>) -> (crate::IngestConfig, PhotoService) {
    let cfg = crate::IngestConfig::from_lookup(|k| env.get(k).cloned()).expect("valid config");
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(sluice_aws::local_dynamodb(&moto_endpoint()).build());
    let records = Records::new(dynamodb, st.table.clone());
    let photos =
        PhotoService::new(&cfg, records, st.s3.clone(), st.sqs.clone()).expect("photo service");
    (cfg, photos)
}

fn receipt_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The photo receipt `i` declares: a PNG of its own.
fn png(i: usize) -> Vec<u8> {
    super::tests::png_of(1200, 1600, format!("photo number {i:06}").as_bytes())
}

fn gif() -> Vec<u8> {
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec()
}

fn receipt(i: usize, photo: &[u8]) -> Value {
    json!({
        "receipt_id": receipt_id(i),
        "tenant_id": "acme",
        "merchant": "Café Müller",
        "issued_on": "2026-04-15",
        "currency": "EUR",
        "total": "42.50",
        "image": {
            "sha256": format!("{:x}", Sha256::digest(photo)),
            "bytes": photo.len(),
            "content_type": "image/png",
        },
    })
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn status_of(app: &Router, batch_id: &str) -> Value {
    let (status, answer) = call(
        app,
        Request::get(format!("/v1/batches/{batch_id}"))
            .body(Body::empty())
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// Every chunk on the main queue, decoded.
async fn drain_chunks(st: &Stack) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let out = st
            .sqs
            .receive_message()
            .queue_url(&st.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("moto answers");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            empty += 1;
        }
        for m in messages {
            let encoding = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get(envelope::ENCODING_ATTRIBUTE))
                .and_then(|v| v.string_value.clone());
            let chunk = envelope::decode(m.body.as_deref().unwrap_or(""), encoding.as_deref())
                .expect("a chunk");
            chunks.push(chunk);
            st.sqs
                .delete_message()
                .queue_url(&st.queue_url)
                .set_receipt_handle(m.receipt_handle)
                .send()
                .await
                .expect("deleted");
        }
    }
    chunks
}

use axum::Router;

#[tokio::test]
async fn three_hundred_photos_checked_released_and_the_refused_named() {
    let st = stack().await;
    let env: HashMap<&str, String> = HashMap::from([
        ("SLUICE_QUEUE_URL", st.queue_url.clone()),
        ("SLUICE_STATUS_TABLE", st.table.clone()),
        ("SLUICE_PHOTO_BUCKET", st.bucket.clone()),
        ("SLUICE_PHOTO_EVENTS_QUEUE_URL", st.events_url.clone()),
        ("SLUICE_PHOTO_URL_SECONDS", URL_SECONDS.to_string()),
        ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "50".to_owned()),
    ]);
    let (cfg, photos) = service(&st, &env);
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(sluice_aws::local_dynamodb(&moto_endpoint()).build());
    let records = Records::new(dynamodb, st.table.clone());
    let app =
        crate::app(crate::state(cfg, st.sqs.clone(), Some(records)).with_photos(photos.clone()));

    // Receipt 0's upload has other bytes, receipt 1 declares a GIF's digest and size as a
    // PNG, receipt 2 is never uploaded.
    let receipts: Vec<Value> = (0..PHOTOS)
        .map(|i| {
            if i == 1 {
                receipt(i, &gif())
            } else {
                receipt(i, &png(i))
            }
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "receipts": receipts })).expect("json");
    let (status, answer) = call(
        &app,
        Request::post("/v1/batches")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let batch_id = answer["batch_id"].as_str().expect("a batch id").to_owned();
    assert_eq!(answer["chunks"], 6);
    let uploads: Vec<PhotoUpload> =
        serde_json::from_value(answer["photos"].clone()).expect("photos");
    assert_eq!(uploads.len(), PHOTOS);
    // Small: URLs and headers, no receipt echoed.
    assert!(answer.get("receipts_echo").is_none());
    assert_eq!(status_of(&app, &batch_id).await["state"], "awaiting_photos");
    assert!(
        drain_chunks(&st).await.is_empty(),
        "nothing is sent before its photos"
    );

    let http = reqwest::Client::new();
    for u in &uploads {
        let i: usize = u.receipt_id[24..].parse().expect("an index");
        let bytes = match i {
            0 => {
                let mut b = png(0);
                b[12] ^= 0x20;
                b
            }
            1 => gif(),
            2 => continue,
            _ => png(i),
        };
        let mut put = http.put(&u.upload_url).body(bytes);
        for (k, v) in &u.headers {
            put = put.header(k, v);
        }
        let resp = put.send().await.expect("moto answers the PUT");
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(code.is_success() || i == 0, "PUT {i}: {code} {text}");
    }

    // Check every event moto put on the events queue, as the background task does.
    let events = Queue::new(st.sqs.clone(), st.events_url.clone());
    let mut idle = 0;
    while idle < 2 {
        let messages = events.receive(1, "x").await.expect("moto answers");
        if messages.is_empty() {
            idle += 1;
        }
        for m in messages {
            photos.handle_message(&m.body).await.expect("checked");
            events
                .delete_batch([("0", m.receipt_handle.as_deref())])
                .await
                .expect("deleted");
        }
    }
    assert_eq!(status_of(&app, &batch_id).await["state"], "awaiting_photos");

    // Past the deadline: the photo never uploaded is refused, its chunk released.
    tokio::time::sleep(Duration::from_secs(
        URL_SECONDS + DEADLINE_GRACE_SECONDS + 1,
    ))
    .await;
    photos.sweep().await.expect("swept");
    // A second sweep and a redelivered event change nothing.
    photos.sweep().await.expect("swept again");

    let chunks = drain_chunks(&st).await;
    assert_eq!(chunks.len(), 6, "each chunk once");
    let sent: Vec<&Receipt> = chunks.iter().flat_map(|c| &c.receipts).collect();
    assert_eq!(sent.len(), PHOTOS - 3);
    for r in &sent {
        let image = r.image.as_ref().expect("an image");
        assert!(image.is_carried(), "{image:?}");
        assert_eq!(
            image.key.as_deref(),
            Some(object_key(&batch_id, &r.receipt_id).as_str())
        );
        assert_eq!(image.content_type.as_deref(), Some("image/png"));
    }
    let status = status_of(&app, &batch_id).await;
    assert_eq!(status["state"], "storing", "{status}");
    assert_eq!(status["rejected"], 3, "{status}");
    let mut named: Vec<(String, String)> = status["rejections"]
        .as_array()
        .expect("rejections")
        .iter()
        .map(|r| {
            (
                r["receipt_id"].as_str().unwrap_or("").to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    named.sort();
    let zero_reason = named[0].1.clone();
    assert_eq!(
        named,
        [
            (receipt_id(0), zero_reason.clone()),
            (receipt_id(1), IMAGE_TYPE.to_owned()),
            (receipt_id(2), IMAGE_MISSING.to_owned()),
        ]
    );
    // S3 refuses a PUT whose x-amz-checksum-sha256 is not its body's; a server that does not
    // check it lets the bytes land, and the check refuses them.
    assert!(
        zero_reason == IMAGE_CHECKSUM || zero_reason == IMAGE_MISSING,
        "{zero_reason}"
    );
}

/// An app and its photo service on a fresh stack, photos valid `url_seconds`.
async fn photo_app(st: &Stack, url_seconds: u64) -> (Router, PhotoService) {
    let env: HashMap<&str, String> = HashMap::from([
        ("SLUICE_QUEUE_URL", st.queue_url.clone()),
        ("SLUICE_STATUS_TABLE", st.table.clone()),
        ("SLUICE_PHOTO_BUCKET", st.bucket.clone()),
        ("SLUICE_PHOTO_URL_SECONDS", url_seconds.to_string()),
    ]);
    let (cfg, photos) = service(st, &env);
    let records = photos.records.clone();
    let app =
        crate::app(crate::state(cfg, st.sqs.clone(), Some(records)).with_photos(photos.clone()));
    (app, photos)
}

async fn upload(app: &Router, receipts: Vec<Value>) -> (String, Vec<PhotoUpload>) {
    let body = serde_json::to_vec(&json!({ "receipts": receipts })).expect("json");
    let (status, answer) = call(
        app,
        Request::post("/v1/batches")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("valid"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let uploads = serde_json::from_value(answer["photos"].clone()).expect("photos");
    (answer["batch_id"].as_str().expect("id").to_owned(), uploads)
}

#[tokio::test]
async fn the_last_photos_checked_at_once_release_their_chunk_once() {
    let st = stack().await;
    let (app, photos) = photo_app(&st, 600).await;
    let (batch_id, uploads) = upload(&app, (0..2).map(|i| receipt(i, &png(i))).collect()).await;
    // The headers the PUT must carry: what the URL is bound to.
    let mut names: Vec<&str> = uploads[0].headers.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "content-length",
            "content-type",
            "x-amz-checksum-sha256",
            "x-amz-meta-sluice-chunk"
        ],
        "{:?}",
        uploads[0]
    );
    assert_eq!(uploads[0].headers["content-type"], "image/png");
    assert_eq!(
        uploads[0].headers["x-amz-checksum-sha256"],
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(png(0)))
    );
    assert!(
        uploads[0].upload_url.contains("X-Amz-Expires=600"),
        "{}",
        uploads[0].upload_url
    );
    let http = reqwest::Client::new();
    for (i, u) in uploads.iter().enumerate() {
        let mut put = http.put(&u.upload_url).body(png(i));
        for (k, v) in &u.headers {
            put = put.header(k, v);
        }
        assert!(put.send().await.expect("PUT").status().is_success());
    }
    // Both photos' events, each delivered three times, all at once.
    let keys: Vec<String> = (0..2)
        .map(|i| object_key(&batch_id, &receipt_id(i)))
        .collect();
    let checks = (0..6).map(|n| photos.check(&keys[n % 2]));
    for r in futures_util::future::join_all(checks).await {
        r.expect("checked");
    }
    let chunks = drain_chunks(&st).await;
    assert_eq!(chunks.len(), 1, "released once");
    assert_eq!(chunks[0].receipts.len(), 2);
    let status = status_of(&app, &batch_id).await;
    assert_eq!(status["state"], "storing", "{status}");
    assert_eq!(status["rejected"], 0);
}

#[tokio::test]
async fn a_chunk_whose_every_photo_is_missing_is_settled_by_the_cloud() {
    let st = stack().await;
    let (app, photos) = photo_app(&st, 1).await;
    let (batch_id, uploads) = upload(&app, (0..2).map(|i| receipt(i, &png(i))).collect()).await;
    assert_eq!(uploads.len(), 2);
    tokio::time::sleep(Duration::from_secs(1 + DEADLINE_GRACE_SECONDS + 1)).await;
    photos.sweep().await.expect("swept");
    assert!(drain_chunks(&st).await.is_empty(), "nothing left to send");
    let status = status_of(&app, &batch_id).await;
    assert_eq!(status["state"], "stored_with_rejections", "{status}");
    assert_eq!(status["chunks_done"], 1);
    assert_eq!(status["rejected"], 2);
    assert!(status["completed_at"].is_string(), "{status}");
    for r in status["rejections"].as_array().expect("rejections") {
        assert_eq!(r["reason"], IMAGE_MISSING);
    }
    // A second sweep counts nothing twice.
    photos.sweep().await.expect("swept again");
    assert_eq!(status_of(&app, &batch_id).await["rejected"], 2);
}

#[tokio::test]
async fn a_malformed_event_is_refused_with_its_reason() {
    let st = stack().await;
    let env: HashMap<&str, String> = HashMap::from([
        ("SLUICE_QUEUE_URL", st.queue_url.clone()),
        ("SLUICE_STATUS_TABLE", st.table.clone()),
        ("SLUICE_PHOTO_BUCKET", st.bucket.clone()),
    ]);
    let (_, photos) = service(&st, &env);
    let err = photos
        .handle_message("{not json")
        .await
        .expect_err("refused");
    assert!(err.is_malformed());
    assert!(err
        .to_string()
        .starts_with("malformed photo event: not an S3 event notification"));
    let event = json!({"Records": [{"eventName": "ObjectCreated:Put",
        "s3": {"object": {"key": "elsewhere/x.png"}}}]});
    let err = photos
        .handle_message(&event.to_string())
        .await
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("is not photos/<batch id>/<receipt id>"),
        "{err}"
    );
    // A photo of no upload: no held chunk takes it.
    let key = object_key(&receipt_id(9), &receipt_id(9));
    st.s3
        .put_object()
        .bucket(&st.bucket)
        .key(&key)
        .metadata(CHUNK_METADATA, "0")
        .body(png(9).into())
        .send()
        .await
        .expect("put");
    let err = photos.check(&key).await.expect_err("refused");
    assert!(err.to_string().contains("no held chunk"), "{err}");
}

#[tokio::test]
async fn the_background_task_checks_events_and_sweeps() {
    let st = stack().await;
    let (app, photos) = photo_app(&st, 2).await;
    let task = tokio::spawn(consumer::run(
        std::sync::Arc::new(photos.clone()),
        st.events_url.clone(),
        Duration::from_secs(1),
    ));
    let (batch_id, uploads) = upload(&app, (0..3).map(|i| receipt(i, &png(i))).collect()).await;
    let http = reqwest::Client::new();
    // Receipt 2's photo never comes.
    for u in &uploads[..2] {
        let i: usize = u.receipt_id[24..].parse().expect("an index");
        let mut put = http.put(&u.upload_url).body(png(i));
        for (k, v) in &u.headers {
            put = put.header(k, v);
        }
        assert!(put.send().await.expect("PUT").status().is_success());
    }
    let mut status = Value::Null;
    for _ in 0..40 {
        status = status_of(&app, &batch_id).await;
        if status["state"] == "storing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    task.abort();
    assert_eq!(status["state"], "storing", "{status}");
    assert_eq!(status["rejections"][0]["receipt_id"], receipt_id(2));
    assert_eq!(status["rejections"][0]["reason"], IMAGE_MISSING);
    let chunks = drain_chunks(&st).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].receipts.len(), 2);
}

#[tokio::test]
async fn on_lambda_an_sqs_event_is_checked_and_anything_else_sweeps() {
    let st = stack().await;
    let (_, photos) = photo_app(&st, 60).await;
    let swept = lambda::handle(
        &photos,
        json!({"source": "aws.events", "detail-type": "Scheduled Event"}),
    )
    .await
    .expect("swept");
    assert_eq!(swept, json!({"swept": 0}));
    let event = json!({"Records": [
        {"messageId": "m-bad", "eventSource": "aws:sqs", "body": "{not json"},
        {"messageId": "m-test", "eventSource": "aws:sqs",
         "body": "{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\"}"},
    ]});
    let answer = lambda::handle(&photos, event).await.expect("answered");
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]})
    );
}

/// A receipt app's processor: the merchant read from the photo; for receipt 1 a total that is
/// no number; for receipt 2 an outage the first time it is asked.
#[derive(Debug, Default)]
struct ReadsPhotos {
    calls: std::sync::Mutex<Vec<String>>,
}

impl processor::PhotoProcessor for ReadsPhotos {
    fn fields<'a>(
        &'a self,
        id: &'a str,
        content_type: &'a str,
        photo: &'a [u8],
    ) -> processor::FieldsFuture<'a> {
        Box::pin(async move {
            let first = {
                let mut calls = self.calls.lock().expect("not poisoned");
                calls.push(id.to_owned());
                calls.iter().filter(|c| *c == id).count() == 1
            };
            if id == receipt_id(2) && first {
                return Err("the OCR service is down".to_owned());
            }
            let mut fields = processor::Fields::new();
            fields.insert(
                "merchant".into(),
                json!(format!(
                    "Read from a {content_type} of {} bytes",
                    photo.len()
                )),
            );
            if id == receipt_id(1) {
                fields.insert("total".into(), json!("forty-two"));
            }
            Ok(fields)
        })
    }
}

#[tokio::test]
async fn a_processor_sets_fields_read_from_the_photo_and_invalid_ones_refuse() {
    let st = stack().await;
    let (app, photos) = photo_app(&st, 600).await;
    let reader = std::sync::Arc::new(ReadsPhotos::default());
    let photos = photos.with_processor(reader.clone());
    let (batch_id, uploads) = upload(&app, (0..3).map(|i| receipt(i, &png(i))).collect()).await;
    let http = reqwest::Client::new();
    for (i, u) in uploads.iter().enumerate() {
        let mut put = http.put(&u.upload_url).body(png(i));
        for (k, v) in &u.headers {
            put = put.header(k, v);
        }
        assert!(put.send().await.expect("PUT").status().is_success());
    }
    let keys: Vec<String> = (0..3)
        .map(|i| object_key(&batch_id, &receipt_id(i)))
        .collect();
    photos.check(&keys[0]).await.expect("checked");
    photos.check(&keys[1]).await.expect("checked");
    // The processor's outage leaves the photo unsettled: an error to retry, not a refusal.
    let err = photos.check(&keys[2]).await.expect_err("retried later");
    assert!(!err.is_malformed(), "{err}");
    assert!(err.to_string().contains("the OCR service is down"), "{err}");
    assert!(drain_chunks(&st).await.is_empty(), "not released yet");
    photos.check(&keys[2]).await.expect("checked again");
    // A redelivered event of a settled photo does not ask the processor again.
    photos.check(&keys[0]).await.expect("checked");
    let calls = reader.calls.lock().expect("not poisoned").clone();
    assert_eq!(calls.len(), 4, "{calls:?}");

    let chunks = drain_chunks(&st).await;
    assert_eq!(chunks.len(), 1);
    let sent: Vec<&Receipt> = chunks.iter().flat_map(|c| &c.receipts).collect();
    let ids: Vec<&str> = sent.iter().map(|r| r.receipt_id.as_str()).collect();
    assert_eq!(ids, [receipt_id(0), receipt_id(2)]);
    for (r, i) in sent.iter().zip([0, 2]) {
        assert_eq!(
            r.merchant,
            format!("Read from a image/png of {} bytes", png(i).len())
        );
        assert!(r.image.as_ref().is_some_and(|im| im.is_carried()));
    }
    let status = status_of(&app, &batch_id).await;
    assert_eq!(status["rejected"], 1, "{status}");
    assert_eq!(status["rejections"][0]["receipt_id"], receipt_id(1));
    assert_eq!(status["rejections"][0]["reason"], IMAGE_FIELDS);
}
