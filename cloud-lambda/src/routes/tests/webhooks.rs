//! Webhooks and the status endpoint: a malformed `Sluice-Callback` named, and what
//! `GET /v1/batches/{batch_id}` refuses to answer.

use super::*;

const SECRET: &str = "webhook-secret-0123456789";

#[tokio::test]
async fn each_malformed_callback_is_a_400_naming_the_header_and_why() {
    let vars = [("SLUICE_WEBHOOK_SECRET", SECRET)];
    // Webhooks need the records table, which this app has not: the configured check first.
    let (status, _, answer) = send(
        app_with(&vars),
        json_body(1),
        &[
            ("content-type", "application/json"),
            ("sluice-callback", "https://hooks.example.com/x"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "webhooks_not_configured");
    let (_, _, answer) = send(
        app_with(&[]),
        json_body(1),
        &[
            ("content-type", "application/json"),
            ("sluice-callback", "https://hooks.example.com/x"),
        ],
    )
    .await;
    assert_eq!(
        answer["message"],
        "Sluice-Callback given, but webhooks are not configured on this API (SLUICE_WEBHOOK_SECRET_ARN or SLUICE_WEBHOOK_SECRET, and SLUICE_STATUS_TABLE); nothing was enqueued"
    );
    // With a (closed) table, each malformed value is named.
    for (value, insecure, why) in [
        ("ftp://example.com/x", "0", "scheme \"ftp\" is not https"),
        (
            "example.com/hook",
            "0",
            "\"example.com/hook\" is not a URL (relative URL without a base)",
        ),
        (
            "http://127.0.0.1:9/x",
            "0",
            "plain http needs SLUICE_WEBHOOK_ALLOW_INSECURE=1 (local use only); use https",
        ),
        (
            "http://192.0.2.1/x",
            "1",
            "plain http is allowed only to a loopback host; use https for 192.0.2.1",
        ),
        (
            "https://u:p@example.com/x",
            "0",
            "must not carry credentials (user:password@)",
        ),
        (
            "https://169.254.169.254/latest/meta-data/",
            "0",
            "169.254.169.254 is a link-local address; webhooks go to public hosts only",
        ),
        (
            "https://[::ffff:10.1.2.3]:8443/x",
            "1",
            "[::ffff:a01:203] is a private address; webhooks go to public hosts only",
        ),
        (
            "https://localhost/x",
            "1",
            "localhost is a loopback name; webhooks go to public hosts only",
        ),
    ] {
        let app = app_with_closed_table(&[
            ("SLUICE_WEBHOOK_SECRET", SECRET),
            ("SLUICE_WEBHOOK_ALLOW_INSECURE", insecure),
        ]);
        let (status, _, answer) = send(
            app,
            json_body(1),
            &[
                ("content-type", "application/json"),
                ("sluice-callback", value),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
        assert_eq!(answer["error"], "bad_callback", "{value}");
        assert_eq!(
            answer["message"],
            format!("invalid Sluice-Callback: {why}"),
            "{value}"
        );
    }
}

/// An app with a records table whose DynamoDB endpoint refuses connections.
fn app_with_closed_table(vars: &[(&str, &str)]) -> Router {
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.insert(
        "SLUICE_QUEUE_URL".into(),
        "http://127.0.0.1:1/000000000000/nowhere".into(),
    );
    env.insert("SLUICE_STATUS_TABLE".into(), "uploads".into());
    let cfg = IngestConfig::from_lookup(|k| env.get(k).cloned()).expect("valid test config");
    let records = Records::new(closed_dynamodb(), "uploads".into());
    let sqs = aws_sdk_sqs::Client::from_conf(sluice_aws::local_sqs(CLOSED).build());
    crate::app(crate::state(cfg, sqs, Some(records)))
}

async fn get(app: Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .oneshot(req.body(Body::empty()).expect("valid request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_status_endpoint_refuses_what_it_cannot_answer() {
    let id = "/v1/batches/0f8fad5b-d9cb-469f-a165-70867728950e";
    let (status, _, answer) = get(app_with(&[]), "/v1/batches/not-a-uuid", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "bad_batch_id");
    assert_eq!(
        answer["message"],
        "\"not-a-uuid\" is not a batch id (a UUID, as the upload answered)"
    );
    let (status, _, answer) = get(app_with(&[]), id, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"], "status_not_configured");
    let (status, _, _) = get(app_with(&[("SLUICE_API_TOKEN", TOKEN)]), id, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, answer) = get(app_with_closed_table(&[]), id, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer["error"], "status_unavailable");
    let rid = answer["request_id"].as_str().expect("a request id");
    assert_eq!(
        answer["message"],
        format!("the upload status could not be read; retry shortly (request id {rid})")
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
}
