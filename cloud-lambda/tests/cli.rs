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
