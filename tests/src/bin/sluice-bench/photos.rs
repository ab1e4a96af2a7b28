//! Receipt photos on the agent's side: the real `sluice-agent` (release build) fetching carried
//! photos from moto's S3 and storing them with their receipts in PostgreSQL.
//! - photos/s and MB/s unthrottled, for each store (`database`, `directory`);
//! - the same at `throttle.photo_bytes_per_second`, measured from commit to commit over the
//!   window, against the budget (measured/configured);
//! - the agent's peak RSS (VmHWM) draining 400 MiB of photos of 10 MiB, ten to a message, with
//!   the allocator settings of its systemd unit: each photo is streamed into the spool and
//!   read back one at a time in the transaction, so what the agent holds at most is one photo
//!   and the statement's copy of it, whatever the backlog or a batch's photo bytes; the goal
//!   is that + 64 MiB, as for the receipts' memory row.
//!
//! The photos are put in the bucket and their chunks sent to the queue before the agent starts,
//! as the cloud leaves them once every photo is checked.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sluice_e2e::photos::{carried, jpeg, PhotoBucket};
use sluice_e2e::{PrivatePostgres, TestEnv};

use crate::drain::{backlog_env, commit_rate, peak_rss_kib};
use crate::Table;

const MIB: f64 = 1024.0 * 1024.0;
/// The byte budget the throttled row runs at.
const BUDGET: u64 = 4 * 1024 * 1024;
/// Photos of the rate rows.
const PHOTO_BYTES: usize = 1024 * 1024;
/// Photos of the memory row, and how many.
const LARGE_PHOTO_BYTES: usize = 10 * 1024 * 1024;
const LARGE_PHOTOS: usize = 40;
/// The memory row's `batch.max_in_flight_bytes`, and its goal for the agent's peak RSS: what
/// it holds at most (a photo read back and the statement's copy) + 64 MiB.
const IN_FLIGHT: u64 = 64 * 1024 * 1024;
const RSS_GOAL: u64 = 2 * LARGE_PHOTO_BYTES as u64 + 64 * 1024 * 1024;
/// Receipts per message and per transaction: ten photos of 1 MiB are 2.5 s of the budget, so
/// a window of 30 s sees a dozen commits.
const PER_CHUNK: usize = 10;

/// Puts `count` photos of `bytes` in a fresh bucket of `env` and sends their chunks.
async fn backlog(env: &TestEnv, count: usize, bytes: usize) -> anyhow::Result<PhotoBucket> {
    let bucket = PhotoBucket::create(&env.sqs, &env.servers.sqs_endpoint, &env.name).await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let mut receipts = Vec::with_capacity(count);
    for n in 0..count {
        let photo = carried(&batch_id, n, jpeg(n, bytes));
        bucket.put(&photo.key, &photo.data).await?;
        receipts.push(photo.receipt);
    }
    env.send_carried(&batch_id, &receipts, PER_CHUNK).await?;
    Ok(bucket)
}

/// The agent's settings for `bucket`: `store` lines, photos paced by `budget` if any, `batch`
/// lines under `[batch]`.
fn settings(
    env: &TestEnv,
    bucket: &PhotoBucket,
    store: &str,
    budget: Option<u64>,
    batch: &str,
) -> String {
    let pace = budget.map_or(String::new(), |b| format!("photo_bytes_per_second = {b}\n"));
    format!(
        "{}\n[throttle]\nrows_per_second = 10000\nburst = 10000\n{pace}\
         [batch]\nmax_wait_ms = 100\n{batch}\n\
         [queue]\nvisibility_timeout_seconds = 120\n[log]\nformat = \"json\"\nlevel = \"warn\"",
        bucket.agent_section(&env.servers.sqs_endpoint, store),
    )
}

/// Samples the agent's stored photo bytes every 100 ms for `window`: (seconds, bytes).
async fn sample_bytes(agent: &sluice_e2e::AgentProcess, window: Duration) -> Vec<(f64, f64)> {
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < window {
        let bytes = agent.counter("sluice_photo_bytes_stored_total").await;
        samples.push((start.elapsed().as_secs_f64(), bytes));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

pub(crate) async fn measure(
    pg: &PrivatePostgres,
    window: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    let per_transaction = format!("max_rows = {PER_CHUNK}");
    // Unthrottled, each store: from the first commit to the last of the whole backlog.
    let count = 100;
    for store in ["database", "directory"] {
        let env = backlog_env(pg).await?;
        eprintln!("bench: photos, {count} of 1 MiB, {store} store, unthrottled");
        let bucket = backlog(&env, count, PHOTO_BYTES).await?;
        let lines = match store {
            "directory" => format!(
                "store = \"directory\"\ndirectory = {:?}",
                env.dir().join("photo-store").display().to_string()
            ),
            _ => "store = \"database\"".to_owned(),
        };
        let agent = env.spawn_agent_with_env(
            &format!("photos-{store}"),
            &settings(&env, &bucket, &lines, None, &per_transaction),
            &[],
        )?;
        let samples = sample_until(&agent, &env, count).await?;
        let rate = commit_rate(&samples);
        table.row(
            format!("photos end to end, {store} store, unthrottled"),
            format!(
                "{:.1} photos/s, {:.1} MB/s",
                rate / PHOTO_BYTES as f64,
                rate / 1e6
            ),
            format!(
                "{count} photos of 1 MiB fetched from moto's S3 (same two cores) and committed \
                 with their receipts, {PER_CHUNK} per transaction"
            ),
        );
        agent.stop().await?;
        env.cleanup().await;
    }

    // At the byte budget: enough photos that the budget, not the backlog, ends the window.
    let secs = window.as_secs_f64();
    let count = ((BUDGET as f64 * (secs + 15.0)) / PHOTO_BYTES as f64).ceil() as usize;
    let env = backlog_env(pg).await?;
    eprintln!(
        "bench: photos at {:.0} MiB/s, {count} of 1 MiB, window {secs:.0} s",
        BUDGET as f64 / MIB
    );
    let bucket = backlog(&env, count, PHOTO_BYTES).await?;
    let agent = env.spawn_agent_with_env(
        "photos-budget",
        &settings(
            &env,
            &bucket,
            "store = \"database\"",
            Some(BUDGET),
            &per_transaction,
        ),
        &[],
    )?;
    sluice_e2e::wait_for(
        Duration::from_secs(60),
        "the first photos stored",
        || async { (agent.counter("sluice_photo_bytes_stored_total").await > 0.0).then_some(()) },
    )
    .await?;
    let samples = sample_bytes(&agent, window).await;
    let rate = commit_rate(&samples);
    table.row(
        format!(
            "photos end to end at photo_bytes_per_second = {:.0} MiB/s",
            BUDGET as f64 / MIB
        ),
        format!(
            "{:.2} photos/s, {:.2} MB/s",
            rate / PHOTO_BYTES as f64,
            rate / 1e6
        ),
        format!(
            "measured/configured = {:.3} over {secs:.0} s, commit to commit; database store, \
             photos of 1 MiB, {PER_CHUNK} per transaction",
            rate / BUDGET as f64
        ),
    );
    agent.stop().await?;
    env.cleanup().await;

    // Memory with photos of 10 MiB.
    let env = backlog_env(pg).await?;
    eprintln!("bench: agent memory, {LARGE_PHOTOS} photos of 10 MiB");
    let bucket = backlog(&env, LARGE_PHOTOS, LARGE_PHOTO_BYTES).await?;
    let agent = env.spawn_agent_with_env(
        "photos-memory",
        &settings(
            &env,
            &bucket,
            "store = \"database\"",
            None,
            &format!("max_in_flight_bytes = {IN_FLIGHT}"),
        ),
        &crate::memory::unit_malloc_env(),
    )?;
    env.wait_drained(LARGE_PHOTOS as i64, Duration::from_secs(30 * 60))
        .await?;
    let rss = peak_rss_kib(agent.pid().context("the agent exited")?)? * 1024;
    table.row(
        format!(
            "agent peak RSS, draining {LARGE_PHOTOS} photos of 10 MiB ({:.0} MiB backlog)",
            (LARGE_PHOTOS * LARGE_PHOTO_BYTES) as f64 / MIB
        ),
        format!("{:.0} MiB", rss as f64 / MIB),
        format!(
            "VmHWM; goal ≤ {:.0} MiB (2 × a photo + 64 MiB), whatever the backlog; database \
             store, {PER_CHUNK} photos (100 MiB) a message, batch.max_in_flight_bytes = {:.0} \
             MiB, the unit's MALLOC_*",
            RSS_GOAL as f64 / MIB,
            IN_FLIGHT as f64 / MIB
        ),
    );
    agent.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// Samples the stored photo bytes every 100 ms until `count` receipts are stored.
async fn sample_until(
    agent: &sluice_e2e::AgentProcess,
    env: &TestEnv,
    count: usize,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let bytes = agent.counter("sluice_photo_bytes_stored_total").await;
        samples.push((start.elapsed().as_secs_f64(), bytes));
        if env.count_receipts_or_zero().await >= count as i64 {
            return Ok(samples);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30 * 60),
            "the photos did not drain in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
