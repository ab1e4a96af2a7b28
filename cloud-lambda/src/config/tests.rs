//! Tests of `config`.

use super::*;
use std::collections::HashMap;

fn load(vars: &[(&str, &str)]) -> Result<IngestConfig, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    IngestConfig::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn queue_url_alone_gives_the_documented_defaults() {
    let c = load(&[("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q")]).expect("valid");
    assert_eq!(c.max_message_bytes, 262_144);
    assert_eq!(c.max_receipts_per_chunk, 500);
    assert_eq!(c.max_receipts_per_request, 50_000);
    assert_eq!(c.compression, Compression::None);
    assert!(c.api_token.is_none());
}

#[test]
fn every_bad_variable_is_reported_at_once() {
    let err = load(&[
        ("SLUICE_MAX_MESSAGE_BYTES", "2000000"),
        ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "many"),
        ("SLUICE_COMPRESSION", "lz4"),
        ("SLUICE_API_TOKEN", "short"),
    ])
    .expect_err("invalid");
    let all = err.to_string();
    for needle in [
        "SLUICE_QUEUE_URL: required",
        "SLUICE_MAX_MESSAGE_BYTES: 2000000 is out of range 1024..=1048576",
        "SLUICE_MAX_RECEIPTS_PER_CHUNK: \"many\" is not a whole number",
        "SLUICE_COMPRESSION: \"lz4\"",
        "SLUICE_API_TOKEN",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in {all}");
    }
    assert_eq!(err.0.len(), 5);
}

#[test]
fn a_bad_status_table_or_dynamodb_endpoint_is_named() {
    let err = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_STATUS_TABLE", "no spaces"),
        ("SLUICE_DYNAMODB_ENDPOINT", "localhost:5000"),
    ])
    .expect_err("invalid");
    assert_eq!(
        err.0,
        [
            r#"SLUICE_DYNAMODB_ENDPOINT: "localhost:5000" is not an http(s) URL"#,
            r#"SLUICE_STATUS_TABLE: "no spaces" is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ - .)"#,
        ]
    );
    let ok = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_STATUS_TABLE", "sluice-uploads"),
    ])
    .expect("valid");
    assert_eq!(ok.status_table.as_deref(), Some("sluice-uploads"));
}

#[test]
fn bad_status_and_webhook_settings_are_named() {
    let err = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_LAMBDA_HANDLER", "fold"),
        ("SLUICE_STATUS_QUEUE_URL", "status-queue"),
        ("SLUICE_STATUS_TTL_DAYS", "0"),
        ("SLUICE_WEBHOOK_SECRET", "short"),
        ("SLUICE_WEBHOOK_ALLOW_INSECURE", "yes"),
        ("SLUICE_WEBHOOK_GIVE_UP_SECONDS", "forever"),
    ])
    .expect_err("invalid");
    assert_eq!(
        err.0,
        [
            r#"SLUICE_LAMBDA_HANDLER: "fold" is not one of api, status, photos"#,
            r#"SLUICE_STATUS_QUEUE_URL: "status-queue" is not an http(s) URL"#,
            "SLUICE_STATUS_TTL_DAYS: 0 is out of range 1..=3650",
            r#"SLUICE_WEBHOOK_GIVE_UP_SECONDS: "forever" is not a whole number"#,
            r#"SLUICE_WEBHOOK_ALLOW_INSECURE: "yes" is not 0 or 1"#,
            "SLUICE_WEBHOOK_SECRET: use at least 16 characters",
            "SLUICE_STATUS_QUEUE_URL: needs SLUICE_STATUS_TABLE (the table the status is folded into)",
        ]
    );
    let err = load(&[("SLUICE_LAMBDA_HANDLER", "status")]).expect_err("no table");
    assert_eq!(
        err.0,
        ["SLUICE_LAMBDA_HANDLER=status: needs SLUICE_STATUS_TABLE"]
    );
    let ok = load(&[
        ("SLUICE_LAMBDA_HANDLER", "status"),
        ("SLUICE_STATUS_TABLE", "sluice-uploads"),
        ("SLUICE_WEBHOOK_SECRET", "0123456789abcdef-secret"),
    ])
    .expect("the status function needs no chunk queue");
    assert_eq!(ok.handler, Handler::Status);
    assert_eq!(ok.status_ttl_days, 30);
    assert_eq!(ok.webhook_give_up_seconds, 86_400);
    assert!(!format!("{ok:?}").contains("0123456789abcdef"));
}

#[test]
fn allowed_webhook_domains_are_read_and_a_bad_one_is_named() {
    let ok = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        (
            "SLUICE_WEBHOOK_ALLOWED_DOMAINS",
            "example.com, hooks.partner.io",
        ),
    ])
    .expect("valid");
    assert_eq!(
        ok.webhook_destinations().allowed_domains,
        ["example.com", "hooks.partner.io"]
    );
    let err = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_WEBHOOK_ALLOWED_DOMAINS", "example.com,*.partner.io"),
    ])
    .expect_err("invalid");
    assert_eq!(
        err.0,
        [
            r#"SLUICE_WEBHOOK_ALLOWED_DOMAINS: "*.partner.io" is not a domain name (e.g. hooks.example.com)"#
        ]
    );
}

#[test]
fn the_token_is_never_printed() {
    let c = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_API_TOKEN", "a-very-secret-token-value"),
    ])
    .expect("valid");
    assert!(!format!("{c:?}").contains("a-very-secret"));
}

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sluice-webhook-AbCdEf";

#[test]
fn without_a_webhook_secret_or_arn_webhooks_are_off_as_before() {
    let c = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_STATUS_TABLE", "sluice-uploads"),
    ])
    .expect("valid");
    assert!(c.webhook_secret.is_none() && c.webhook_secret_arn.is_none());
    assert!(!c.webhooks_configured());
    assert!(c.webhook_master().is_none());
    // An empty value is unset, as for every other variable.
    let c = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_WEBHOOK_SECRET_ARN", ""),
    ])
    .expect("valid");
    assert!(!c.webhooks_configured());
}

#[test]
fn a_webhook_secret_arn_is_read_and_printed_but_never_fetched_by_the_config() {
    let c = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_WEBHOOK_SECRET_ARN", ARN),
    ])
    .expect("valid");
    assert_eq!(c.webhook_secret_arn.as_deref(), Some(ARN));
    assert!(c.webhooks_configured());
    let master = format!("{:?}", c.webhook_master().expect("from the ARN"));
    assert!(master.contains(ARN), "{master}");
    // The value, for local runs.
    let c = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_WEBHOOK_SECRET", "0123456789abcdef-secret"),
    ])
    .expect("valid");
    assert!(c.webhooks_configured());
    assert!(!format!("{:?}", c.webhook_master()).contains("0123456789abcdef"));
}

#[test]
fn a_malformed_webhook_secret_arn_is_named_with_what_is_wrong() {
    for (arn, why) in [
        ("sluice-webhook", "it does not start with arn:"),
        (
            "arn:aws:ssm:eu-west-1:123456789012:parameter/sluice",
            r#"the service is "ssm", not secretsmanager"#,
        ),
        (
            "arn:aws:secretsmanager:eu-west-1:123456789012:sluice",
            "it has fewer than 7 colon-separated parts",
        ),
        (
            "arn:aws:kms:eu-west-1:123456789012:secret:sluice",
            r#"the service is "kms", not secretsmanager"#,
        ),
        (
            "arn:aws:secretsmanager::123456789012:secret:sluice",
            "the region is empty",
        ),
        (
            "arn:aws:secretsmanager:eu-west-1:1234:secret:sluice",
            r#"the account "1234" is not 12 digits"#,
        ),
        (
            "arn:aws:secretsmanager:eu-west-1:123456789012:key:sluice",
            r#"the resource type is "key", not secret"#,
        ),
        (
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
            "the secret name is empty",
        ),
    ] {
        let err = load(&[
            ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
            ("SLUICE_WEBHOOK_SECRET_ARN", arn),
        ])
        .expect_err(arn);
        assert_eq!(
            err.0,
            [format!(
                "SLUICE_WEBHOOK_SECRET_ARN: {arn:?} is not a Secrets Manager secret ARN (arn:<partition>:secretsmanager:<region>:<account id>:secret:<name>): {why}"
            )]
        );
    }
    let err = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_WEBHOOK_SECRET_ARN", ARN),
        ("SLUICE_WEBHOOK_SECRET", "0123456789abcdef-secret"),
    ])
    .expect_err("both");
    assert_eq!(
        err.0,
        ["SLUICE_WEBHOOK_SECRET and SLUICE_WEBHOOK_SECRET_ARN are both set: set one (the ARN on AWS, the value for local runs only)"]
    );
}

#[test]
fn photo_settings_have_defaults_and_bad_ones_are_named() {
    let c = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_STATUS_TABLE", "uploads"),
        ("SLUICE_PHOTO_BUCKET", "receipt-photos"),
        ("SLUICE_LAMBDA_HANDLER", "photos"),
    ])
    .expect("valid");
    assert_eq!(c.handler, Handler::Photos);
    assert_eq!(c.photo_url_seconds, 900);
    assert_eq!(c.photo_max_bytes, 10 * 1024 * 1024);
    assert_eq!(c.photo_max_pixels, 100_000_000);
    for (value, problem) in [
        (
            "0",
            "SLUICE_PHOTO_MAX_PIXELS: 0 is out of range 1..=1000000000",
        ),
        (
            "2000000000",
            "SLUICE_PHOTO_MAX_PIXELS: 2000000000 is out of range 1..=1000000000",
        ),
    ] {
        let err = load(&[
            ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
            ("SLUICE_STATUS_TABLE", "uploads"),
            ("SLUICE_PHOTO_BUCKET", "receipt-photos"),
            ("SLUICE_PHOTO_MAX_PIXELS", value),
        ])
        .expect_err("invalid");
        assert_eq!(err.0, [problem]);
    }
    let err = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_PHOTO_BUCKET", "Bad_Bucket"),
        ("SLUICE_PHOTO_URL_SECONDS", "0"),
        ("SLUICE_S3_ENDPOINT", "localhost:4566"),
    ])
    .expect_err("invalid");
    assert_eq!(
        err.0,
        [
            "SLUICE_S3_ENDPOINT: \"localhost:4566\" is not an http(s) URL",
            "SLUICE_PHOTO_BUCKET: \"Bad_Bucket\" is not an S3 bucket name (3 to 63 of a-z 0-9 - .)",
            "SLUICE_PHOTO_URL_SECONDS: 0 is out of range 1..=604800",
            "SLUICE_PHOTO_BUCKET: needs SLUICE_STATUS_TABLE (each photo's verdict and each held chunk is recorded there)",
        ]
    );
    let err = load(&[
        ("SLUICE_QUEUE_URL", "http://127.0.0.1:1/q"),
        ("SLUICE_STATUS_TABLE", "uploads"),
        ("SLUICE_PHOTO_EVENTS_QUEUE_URL", "http://127.0.0.1:1/events"),
    ])
    .expect_err("invalid");
    assert_eq!(
        err.0,
        ["SLUICE_PHOTO_EVENTS_QUEUE_URL: needs SLUICE_PHOTO_BUCKET (the bucket whose events it carries)"]
    );
}
