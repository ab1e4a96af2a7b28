//! The `sluice-agent` binary as an operator meets it: configuration problems, exit codes.

use std::process::{Command, Output};

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-agent"));
    cmd.args(args).env_remove("SLUICE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sluice-agent runs")
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn an_invalid_config_lists_every_problem_and_exits_64() {
    let path = write_config(
        "bad.toml",
        r#"
[queue]
url = "sqs-receipts"
wait_seconds = 45
[database]
url = "mysql://db/receipts"
max_connections = 0
[throttle]
rows_per_second = 0
[batch]
max_rows = 2000
"#,
    );
    let out = agent(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "queue.url: \"sqs-receipts\" is not an http(s) URL",
        "queue.wait_seconds: 45 is over SQS's maximum long poll of 20",
        "database.url: \"mysql://db/receipts\" must start with postgres:// or postgresql://",
        "database.max_connections: 0 is out of range 1..=100",
        "throttle.rows_per_second: must be at least 1",
        "throttle.burst: 1000 is below batch.max_rows (2000)",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    // `run` refuses the same file the same way, before touching anything.
    let out = agent(&["run", "--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn a_missing_config_file_exits_64_naming_it() {
    let out = agent(
        &["check-config", "--config", "/nonexistent/agent.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/agent.toml"),
        "{stderr}"
    );
}

#[test]
fn a_bad_environment_override_exits_64_naming_the_key() {
    let path = write_config("env.toml", MINIMAL);
    let out = agent(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[("SLUICE__THROTTLE__BURST", "lots")],
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("burst"), "{stderr}");
}

const MINIMAL: &str = r#"
[queue]
url = "http://127.0.0.1:1/000000000000/q"
[database]
url = "postgres://writer@127.0.0.1:1/receipts"
"#;

#[test]
fn check_config_prints_the_effective_config_without_secrets() {
    let path = write_config("ok.toml", MINIMAL);
    let out = agent(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[
            ("SLUICE__DATABASE__PASSWORD", "hunter2-secret"),
            ("SLUICE__THROTTLE__ROWS_PER_SECOND", "800"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(stdout.contains("\"rows_per_second\": 800"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config/agent.example.toml"
    );
    let out = agent(&["check-config", "--config", example], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_host_without_root_certificates_is_refused_with_what_to_install_not_a_panic() {
    // SSL_CERT_FILE and SSL_CERT_DIR name where the system's roots are read from; here they
    // hold none, as on a minimal image without ca-certificates.
    let dir = std::env::temp_dir().join(format!("sluice-no-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").expect("empty bundle");
    let path = write_config("no-roots.toml", MINIMAL);
    let out = agent(
        &["run", "--config", path.to_str().expect("utf-8")],
        &[
            ("SSL_CERT_FILE", empty.to_str().expect("utf-8")),
            ("SSL_CERT_DIR", dir.to_str().expect("utf-8")),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("no CA certificates found on this host")
            && stderr.contains("apt-get install ca-certificates"),
        "{stderr}"
    );
}
