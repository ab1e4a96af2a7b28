//! The local AWS-API server (moto: SQS, DynamoDB, Secrets Manager) for this crate's tests of the
//! real data path: `SLUICE_TEST_SQS_ENDPOINT` names it (`eval "$(bash deploy/local/stack.sh
//! env)"`), else `deploy/local/stack.sh up` starts it (idempotent), as the workspace's `tests/`
//! crate does.

use std::sync::OnceLock;

static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();

/// The moto endpoint (`http://127.0.0.1:<port>`).
pub(crate) fn moto_endpoint() -> String {
    ENDPOINT
        .get_or_init(discover)
        .clone()
        .unwrap_or_else(|e| panic!("no local AWS-API server: {e}"))
}

fn discover() -> Result<String, String> {
    if let Ok(endpoint) = std::env::var("SLUICE_TEST_SQS_ENDPOINT") {
        return Ok(endpoint);
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/stack.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("up")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} up failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("SLUICE_TEST_SQS_ENDPOINT="))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| "stack.sh printed no SLUICE_TEST_SQS_ENDPOINT".to_owned())
}

/// A name no other test run uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
