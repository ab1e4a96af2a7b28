//! The ingest's peak RSS answering a gzip bomb: ~50 KB of gzip that inflates to ~50 MB of JSON
//! (one metadata array of zeros), sent to the real `sluice-ingest` binary. Its peak resident
//! set (VmHWM) is read before and after, so the row shows the bomb's cost over the baseline.

use std::io::Write as _;

use anyhow::{ensure, Context as _};
use sluice_e2e::TestEnv;

use crate::drain::peak_rss_kib;
use crate::Table;

/// Zeros in the bomb's array: 2 bytes each, ~50 MB of JSON.
const ZEROS: usize = 25_000_000;
/// The issue's goal for the ingest's peak RSS on the bomb.
const GOAL_MIB: f64 = 64.0;

/// Starts the ingest, sends the bomb, and adds the row.
pub(crate) async fn measure(table: &mut Table) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut json = br#"{"receipts": [{"metadata": ["#.to_vec();
    json.extend(b"0,".repeat(ZEROS));
    json.extend(b"0]}]}");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&json)?;
    let bomb = enc.finish()?;
    let inflated = json.len();
    drop(json);

    let mut ingest = env.start_ingest_process("ingest-bomb.log").await?;
    let http = reqwest::Client::new();
    let pid = ingest.process.pid().context("the ingest exited")?;
    let baseline = peak_rss_kib(pid)?;
    let resp = http
        .post(ingest.url("/v1/batches"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bomb.clone())
        .send()
        .await?;
    let status = resp.status().as_u16();
    ensure!(
        resp.status().is_client_error(),
        "the bomb was answered {status}"
    );
    let peak = peak_rss_kib(pid)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    table.row(
        format!(
            "ingest peak RSS answering a {} KB gzip bomb ({} MB of JSON)",
            bomb.len() / 1000,
            inflated / 1_000_000
        ),
        format!("{:.0} MiB", mib(peak)),
        format!(
            "VmHWM of sluice-ingest; baseline {:.0} MiB before it; answered {status}; goal <= {GOAL_MIB:.0} MiB",
            mib(baseline)
        ),
    );
    ingest.stop().await?;
    env.cleanup().await;
    Ok(())
}
