//! The `sluice-ingest` binary as an operator meets it: configuration problems, exit codes.

use std::process::Command;

#[test]
fn missing_or_bad_settings_are_listed_and_exit_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .env_remove("SLUICE_QUEUE_URL")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("SLUICE_MAX_MESSAGE_BYTES", "5000000")
        .env("SLUICE_COMPRESSION", "brotli")
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "SLUICE_QUEUE_URL: required",
        "SLUICE_MAX_MESSAGE_BYTES: 5000000 is out of range 1024..=1048576",
        "SLUICE_COMPRESSION: \"brotli\" is not one of none, gzip, zstd",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn a_bad_listen_address_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args(["--listen", "not-an-address"])
        .env("SLUICE_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn upload_refuses_a_bad_api_url_and_a_missing_file() {
    let file =
        std::env::temp_dir().join(format!("sluice-cli-upload-{}.ndjson", std::process::id()));
    std::fs::write(&file, "{}\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args([
            "upload",
            file.to_str().expect("utf-8"),
            "--api",
            "ftp://example.com",
        ])
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"--api "ftp://example.com" is not an http(s) URL"#),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args([
            "upload",
            "/nonexistent/receipts.ndjson",
            "--api",
            "http://127.0.0.1:1",
        ])
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(66));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/receipts.ndjson"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args([
            "upload",
            file.to_str().expect("utf-8"),
            "--api",
            "http://x",
            "--parallel",
            "0",
        ])
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    std::fs::remove_file(&file).ok();
}

#[test]
fn without_a_status_table_startup_warns_that_key_reuse_cannot_be_refused() {
    // The port is taken, so the server stops right after its startup lines.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("bound").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args(["--listen", &addr])
        .env("SLUICE_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
        .env_remove("SLUICE_STATUS_TABLE")
        .env("NO_COLOR", "1")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("sluice-ingest runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("SLUICE_STATUS_TABLE is not set: an Idempotency-Key reused with another body cannot be refused (422)"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_dynamodb_endpoint_stops_startup_with_the_table_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args(["--listen", "127.0.0.1:0"])
        .env("SLUICE_QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
        .env("SLUICE_STATUS_TABLE", "sluice-uploads")
        .env("SLUICE_DYNAMODB_ENDPOINT", "http://127.0.0.1:1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sluice-ingest: describing table sluice-uploads"),
        "{stderr}"
    );
}

#[test]
fn webhook_key_prints_an_owners_key_and_kid_derived_from_the_master() {
    use hmac::{Hmac, Mac as _};
    use sha2::Digest as _;
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args(["webhook-key", "--owner", "tenant-a"])
        .env_remove("SLUICE_WEBHOOK_SECRET_ARN")
        .env("SLUICE_WEBHOOK_SECRET", "master-secret-0123456789")
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Computed here, as README tells an operator: hex(HMAC-SHA256(master, label + owner)).
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"master-secret-0123456789").expect("key");
    mac.update(b"sluice-webhook-v1:tenant-a");
    let key: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let kid: String = sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..16]
        .to_owned();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("kid={kid}\nkey={key}\n")
    );
    // Without a master, or with a malformed ARN: exit 64 saying what to set.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args(["webhook-key", "--owner", "tenant-a"])
        .env_remove("SLUICE_WEBHOOK_SECRET_ARN")
        .env_remove("SLUICE_WEBHOOK_SECRET")
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set SLUICE_WEBHOOK_SECRET_ARN"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args(["webhook-key", "--owner", "tenant-a"])
        .env("SLUICE_WEBHOOK_SECRET_ARN", "sluice-webhook")
        .env_remove("SLUICE_WEBHOOK_SECRET")
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            r#"SLUICE_WEBHOOK_SECRET_ARN: "sluice-webhook" is not a Secrets Manager secret ARN"#
        ),
        "{stderr}"
    );
}

/// The local AWS-API server (moto): `SLUICE_TEST_SQS_ENDPOINT`, else `deploy/local/stack.sh up`.
fn moto_endpoint() -> String {
    if let Ok(endpoint) = std::env::var("SLUICE_TEST_SQS_ENDPOINT") {
        return endpoint;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/stack.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("up")
        .output()
        .expect("stack.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("SLUICE_TEST_SQS_ENDPOINT="))
        .expect("stack.sh names the endpoint")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn webhook_key_reads_the_master_from_secrets_manager() {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let endpoint = moto_endpoint();
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "sluice-test"))
            .build(),
    );
    let arn = client
        .create_secret()
        .name(format!("sluice-cli-{}", uuid::Uuid::new_v4().simple()))
        .secret_string("master-secret-0123456789")
        .send()
        .await
        .expect("moto creates the secret")
        .arn
        .expect("an ARN");
    let run = |arn: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
            .args(["webhook-key", "--owner", "tenant-a"])
            .env("SLUICE_WEBHOOK_SECRET_ARN", arn)
            .env_remove("SLUICE_WEBHOOK_SECRET")
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("sluice-ingest runs")
    };
    let from_arn = run(&arn);
    assert_eq!(
        from_arn.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_arn.stderr)
    );
    let from_value = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"))
        .args(["webhook-key", "--owner", "tenant-a"])
        .env_remove("SLUICE_WEBHOOK_SECRET_ARN")
        .env("SLUICE_WEBHOOK_SECRET", "master-secret-0123456789")
        .output()
        .expect("sluice-ingest runs");
    assert_eq!(
        from_arn.stdout, from_value.stdout,
        "the same master, the same key"
    );
    // A secret that does not exist: exit 69, the ARN named.
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice-missing-AbCdEf";
    let out = run(missing);
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing));
}
