//! End to end: `sluice-ingest upload FILE --wait` against the real
//! `sluice-ingest` (folding the status queue into its table, serving `GET /v1/batches/{id}`),
//! the real agent reporting each settled chunk on that queue, real PostgreSQL and moto. A clean
//! file exits 0 once stored; a file with a conflicting receipt and one a trigger refuses exits
//! 1 and names both by their file lines. Judged by the exit code, the output and the oracle.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::{id_of, Generator};
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{block_merchant, TestEnv};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Writes `lines` (receipts, or `None` for a blank line) as NDJSON.
fn write_ndjson(path: &Path, lines: &[Option<&Value>]) -> anyhow::Result<()> {
    let text: Vec<String> = lines
        .iter()
        .map(|l| l.map(Value::to_string).unwrap_or_default())
        .collect();
    std::fs::write(path, text.join("\n") + "\n")?;
    Ok(())
}

/// `sluice-ingest upload FILE --api URL --wait`: (exit code, stdout, stderr).
async fn upload_wait(api: &str, file: &Path) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::time::timeout(
        TIMEOUT + Duration::from_secs(30),
        tokio::process::Command::new(sluice_e2e::binary("sluice-ingest")?)
            .arg("upload")
            .arg(file)
            .args(["--api", api, "--wait", "--wait-timeout", "120"])
            .args(["--receipts-per-request", "100"])
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn upload_wait_exits_0_when_stored_and_1_naming_the_refused_lines() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    env.migrate().await?;
    block_merchant(&env).await?;
    env.create_status_queue().await?;
    let mut ingest = env
        .start_status_ingest("ingest.log", &[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "4")])
        .await?;
    let api = ingest.url("");
    let mut agent = env
        .launch_reporting_agent(
            "agent",
            "[batch]\nmax_rows = 500\nmax_wait_ms = 50\n\
             [throttle]\nrows_per_second = 5000\nburst = 5000",
        )
        .await?;
    let mut oracle = Oracle::new();
    std::fs::create_dir_all(env.dir())?;

    // A clean file: stored, exit 0.
    let first = Generator::new(1301).receipts(10);
    let clean = env.dir().join("clean.ndjson");
    write_ndjson(&clean, &first.iter().map(Some).collect::<Vec<_>>())?;
    let (code, stdout, stderr) = upload_wait(&api, &clean).await?;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(
            "1 of 1 batches final; 10 receipts: 10 stored, 0 duplicates, 0 conflicts, 0 rejected"
        ),
        "{stderr}"
    );
    oracle.acknowledge(&first);

    // A file with a duplicate (line 2), a conflicting version of a stored id (line 4, after a
    // blank line 3) and a receipt the trigger refuses (line 6).
    let mut fresh = Generator::new(1302).receipts(4);
    fresh[2]["merchant"] = json!("Blocked Merchant AG");
    let blocked = id_of(&fresh[2]);
    let mut conflicting = first[1].clone();
    conflicting["total"] = json!("1234.56");
    conflicting["items"] = json!([{
        "description": "Corrected line",
        "quantity": "1",
        "unit_price": "1234.56",
        "amount": "1234.56"
    }]);
    let lines = [
        Some(&fresh[0]),
        Some(&first[0]),
        None,
        Some(&conflicting),
        Some(&fresh[1]),
        Some(&fresh[2]),
        Some(&fresh[3]),
    ];
    let refusing = env.dir().join("refusing.ndjson");
    write_ndjson(&refusing, &lines)?;
    let (code, stdout, stderr) = upload_wait(&api, &refusing).await?;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let conflict_line = format!(
        "line 4: receipt {0}: conflict: receipt {0} is stored with other content",
        id_of(&first[1])
    );
    let refused_line = format!("line 6: receipt {blocked}: ");
    let named: Vec<&str> = stdout.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(named.len(), 2, "exactly the two refused lines: {stdout}");
    assert!(named[0].starts_with(&conflict_line), "{stdout}");
    assert!(
        named[1].starts_with(&refused_line)
            && named[1].contains("P0001")
            && named[1].contains("merchant Blocked Merchant AG is blocked by the finance team"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "1 of 1 batches final; 6 receipts: 3 stored, 1 duplicates, 1 conflicts, 1 rejected"
        ),
        "{stderr}"
    );
    oracle.acknowledge(&[fresh[0].clone(), fresh[1].clone(), fresh[3].clone()]);
    oracle.expect_dead_letter(&id_of(&first[1]), "conflict");
    oracle.expect_dead_letter(&blocked, "P0001");
    env.wait_drained(13, TIMEOUT).await?;
    oracle.verify(&env).await?;

    let status = agent.terminate(Duration::from_secs(60)).await?;
    assert!(status.success(), "agent exited with {status}");
    ingest.stop().await?;
    Ok(())
}
