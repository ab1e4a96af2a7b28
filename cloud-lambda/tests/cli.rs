//! The `sluice-ingest` binary as an operator meets it: configuration problems, exit codes.

use std::process::Command;

/// What one run of `sluice-ingest` gave.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `sluice-ingest` with `args`, the variables of `set` set and those of `unset` removed.
fn ingest(args: &[&str], set: &[(&str, &str)], unset: &[&str]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-ingest"));
    cmd.args(args);
    for (k, v) in set {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("sluice-ingest runs");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A queue URL nothing answers on.
const QUEUE: &str = "http://127.0.0.1:1/000000000000/q";

#[test]
fn missing_or_bad_settings_are_listed_and_exit_64() {
    let out = ingest(
        &[],
        &[
            ("SLUICE_MAX_MESSAGE_BYTES", "5000000"),
            ("SLUICE_COMPRESSION", "brotli"),
        ],
        &["SLUICE_QUEUE_URL", "AWS_LAMBDA_RUNTIME_API"],
    );
    assert_eq!(out.code, Some(64));
    let stderr = out.stderr;
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
    let out = ingest(
        &["--listen", "not-an-address"],
        &[("SLUICE_QUEUE_URL", QUEUE)],
        &[],
    );
    assert_eq!(out.code, Some(2), "clap's usage error");
    assert!(out.stderr.contains("--listen"), "{}", out.stderr);
}

#[test]
fn upload_refuses_a_bad_api_url_and_a_missing_file() {
    let file =
        std::env::temp_dir().join(format!("sluice-cli-upload-{}.ndjson", std::process::id()));
    std::fs::write(&file, "{}\n").expect("write");
    let path = file.to_str().expect("utf-8");
    let out = ingest(&["upload", path, "--api", "ftp://example.com"], &[], &[]);
    assert_eq!(out.code, Some(64));
    assert!(
        out.stderr
            .contains(r#"--api "ftp://example.com" is not an http(s) URL"#),
        "{}",
        out.stderr
    );

    let missing = "/nonexistent/receipts.ndjson";
    let out = ingest(
        &["upload", missing, "--api", "http://127.0.0.1:1"],
        &[],
        &[],
    );
    assert_eq!(out.code, Some(66));
    assert!(
        out.stderr
            .contains("cannot read /nonexistent/receipts.ndjson"),
        "{}",
        out.stderr
    );

    let out = ingest(
        &["upload", path, "--api", "http://x", "--parallel", "0"],
        &[],
        &[],
    );
    assert_eq!(out.code, Some(2), "clap's usage error");
    std::fs::remove_file(&file).ok();
}

#[test]
fn without_a_status_table_startup_warns_that_key_reuse_cannot_be_refused() {
    // The port is taken, so the server stops right after its startup lines.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("bound").to_string();
    let out = ingest(
        &["--listen", &addr],
        &[
            ("SLUICE_QUEUE_URL", QUEUE),
            ("NO_COLOR", "1"),
            ("AWS_REGION", "us-east-1"),
        ],
        &["SLUICE_STATUS_TABLE"],
    );
    assert_ne!(out.code, Some(0));
    let stderr = out.stderr;
    assert!(
        stderr.contains("WARN") && stderr.contains("SLUICE_STATUS_TABLE is not set: an Idempotency-Key reused with another body cannot be refused (422)"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_dynamodb_endpoint_stops_startup_with_the_table_named() {
    let out = ingest(
        &["--listen", "127.0.0.1:0"],
        &[
            ("SLUICE_QUEUE_URL", QUEUE),
            ("SLUICE_STATUS_TABLE", "sluice-uploads"),
            ("SLUICE_DYNAMODB_ENDPOINT", "http://127.0.0.1:1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ],
        &[],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("sluice-ingest: describing table sluice-uploads"),
        "{}",
        out.stderr
    );
}

#[test]
fn webhook_key_prints_an_owners_key_and_kid_derived_from_the_master() {
    use hmac::{Hmac, Mac as _};
    use sha2::Digest as _;
    let out = webhook_key_from_value();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
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
    assert_eq!(out.stdout, format!("kid={kid}\nkey={key}\n"));
    // Without a master, or with a malformed ARN: exit 64 saying what to set.
    let out = ingest(
        WEBHOOK_KEY,
        &[],
        &["SLUICE_WEBHOOK_SECRET_ARN", "SLUICE_WEBHOOK_SECRET"],
    );
    assert_eq!(out.code, Some(64));
    assert!(
        out.stderr.contains("set SLUICE_WEBHOOK_SECRET_ARN"),
        "{}",
        out.stderr
    );
    let out = ingest(
        WEBHOOK_KEY,
        &[("SLUICE_WEBHOOK_SECRET_ARN", "sluice-webhook")],
        &["SLUICE_WEBHOOK_SECRET"],
    );
    assert_eq!(out.code, Some(64));
    let stderr = out.stderr;
    assert!(
        stderr.contains(
            r#"SLUICE_WEBHOOK_SECRET_ARN: "sluice-webhook" is not a Secrets Manager secret ARN"#
        ),
        "{stderr}"
    );
}

/// `sluice-ingest webhook-key` for owner `tenant-a`.
const WEBHOOK_KEY: &[&str] = &["webhook-key", "--owner", "tenant-a"];

/// `webhook-key` with the master given as a value.
fn webhook_key_from_value() -> Ran {
    ingest(
        WEBHOOK_KEY,
        &[("SLUICE_WEBHOOK_SECRET", "master-secret-0123456789")],
        &["SLUICE_WEBHOOK_SECRET_ARN"],
    )
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
        ingest(
            WEBHOOK_KEY,
            &[
                ("SLUICE_WEBHOOK_SECRET_ARN", arn),
                ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &endpoint),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
            ],
            &["SLUICE_WEBHOOK_SECRET", "AWS_PROFILE"],
        )
    };
    let from_arn = run(&arn);
    assert_eq!(from_arn.code, Some(0), "{}", from_arn.stderr);
    let from_value = webhook_key_from_value();
    assert_eq!(
        from_arn.stdout, from_value.stdout,
        "the same master, the same key"
    );
    // A secret that does not exist: exit 69, the ARN named.
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice-missing-AbCdEf";
    let out = run(missing);
    assert_eq!(out.code, Some(69));
    assert!(out.stderr.contains(missing), "{}", out.stderr);
}
