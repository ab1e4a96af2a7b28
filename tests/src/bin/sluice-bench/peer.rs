//! End to end, unthrottled, no foreground: the agent (defaults, plus the two transactions in
//! flight its two connections allow) draining a backlog made by the ingest API from the local
//! SQS server, its receipts/s and CPU per receipt against the raw COPY rate; and, with
//! `VECTOR_BIN` set, the Vector peer (`tests/bench/vector.toml`: aws_sqs → remap → postgres) on
//! the same receipts, printed beside it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sluice_e2e::gen::Generator;
use sluice_e2e::{repo_root, PrivatePostgres, TestEnv};

use crate::drain::{agent_extra, backlog_env, upload_backlog, Throttle};
use crate::{Table, BATCH};

/// How long a drain may take before the bench gives up on it.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);
/// Seed of the peer backlog's receipts (both sides drain the same ones).
const SEED: u64 = 7;

/// Adds the agent's row and (with `VECTOR_BIN`) Vector's.
pub(crate) async fn measure(
    pg: &PrivatePostgres,
    receipts: usize,
    raw_copy: f64,
    table: &mut Table,
) -> anyhow::Result<()> {
    let agent = agent_drain(pg, receipts).await?;
    table.row(
        format!("end to end, unthrottled, no foreground: agent ({receipts} receipts)"),
        format!("{:.0} receipts/s", agent.rate),
        format!(
            "{:.2} × raw COPY; {:.1} µs agent CPU per receipt{}; from the local SQS server, \
             ingest-made zstd messages of {BATCH}",
            agent.rate / raw_copy,
            agent.cpu_us,
            agent.steady_note()
        ),
    );
    match std::env::var_os("VECTOR_BIN") {
        None => table.row(
            "end to end: Vector peer",
            "skipped",
            "set VECTOR_BIN to a Vector binary (aws_sqs, remap, postgres) to run it beside the agent",
        ),
        Some(bin) => {
            let v = vector_drain(pg, receipts, &bin).await?;
            table.row(
                format!("end to end: Vector peer ({receipts} receipts)"),
                format!("{:.0} receipts/s", v.rate),
                format!(
                    "{:.2} × the agent; {:.1} µs Vector CPU per receipt{}; plain JSON messages \
                     of {BATCH}, no idempotency, items as jsonb (tests/bench/vector.toml)",
                    v.rate / agent.rate.max(1.0),
                    v.cpu_us,
                    v.steady_note()
                ),
            );
        }
    }
    Ok(())
}

struct Drained {
    rate: f64,
    /// CPU per receipt from the process's start to the last receipt stored.
    cpu_us: f64,
    /// CPU per receipt after the first receipts were seen stored, and the CPU seconds spent
    /// until then (start-up, connecting, the first batch): the cost of the drain itself.
    steady: Option<(f64, f64)>,
}

impl Drained {
    /// From `receipts` stored in `secs` at `cpu` seconds of CPU, `first` = (receipts seen
    /// stored first, CPU seconds then).
    fn new(receipts: usize, secs: f64, cpu: f64, first: Option<(i64, f64)>) -> Drained {
        let n = receipts as f64;
        Drained {
            rate: n / secs,
            cpu_us: cpu * 1e6 / n,
            steady: first
                .filter(|&(stored, _)| (stored as f64) < n)
                .map(|(stored, at)| ((cpu - at) * 1e6 / (n - stored as f64), at)),
        }
    }

    /// " (12.3 µs once the first receipts are stored; 0.21 s of CPU before them)", or nothing.
    fn steady_note(&self) -> String {
        self.steady.map_or(String::new(), |(us, before)| {
            format!(" ({us:.1} µs once the first receipts are stored; {before:.2} s of CPU before them)")
        })
    }
}

/// The release agent on a fresh backlog: from its start to the last receipt stored.
async fn agent_drain(pg: &PrivatePostgres, receipts: usize) -> anyhow::Result<Drained> {
    let env = backlog_env(pg).await?;
    eprintln!("bench: end to end, agent: uploading {receipts} receipts");
    upload_backlog(&env, receipts, SEED).await?;
    let t = Instant::now();
    let mut agent = env.spawn_agent("peer-agent", &agent_extra(Throttle::Fixed(1_000_000)))?;
    let pid = agent.pid().context("the agent exited")?;
    let (secs, first) = wait_stored(&env, receipts, t, pid).await?;
    let cpu = cpu_seconds(pid)?;
    agent.terminate(Duration::from_secs(60)).await?;
    env.cleanup().await;
    Ok(Drained::new(receipts, secs, cpu, first))
}

/// Vector on the same receipts, sent as plain JSON messages of [`BATCH`].
async fn vector_drain(
    pg: &PrivatePostgres,
    receipts: usize,
    bin: &std::ffi::OsStr,
) -> anyhow::Result<Drained> {
    let env = backlog_env(pg).await?;
    sqlx::query(
        "CREATE TABLE public.receipts_v(receipt_id uuid PRIMARY KEY, tenant_id text, \
         merchant text, issued_on date, currency text, total numeric, tax numeric, \
         category text, items jsonb, metadata jsonb)",
    )
    .execute(&env.pool)
    .await?;
    eprintln!("bench: end to end, Vector: sending {receipts} receipts as plain JSON");
    env.sqs
        .set_queue_attributes()
        .queue_url(&env.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1048576",
        )
        .send()
        .await
        .context("raising the queue's message size for plain JSON messages")?;
    let mut g = Generator::new(SEED);
    let mut sent = 0;
    while sent < receipts {
        let k = BATCH.min(receipts - sent);
        let body = serde_json::json!({"v": 1, "receipts": g.receipts(k)}).to_string();
        env.sqs
            .send_message()
            .queue_url(&env.queue_url)
            .message_body(body)
            .send()
            .await
            .context("sending a plain JSON message for Vector")?;
        sent += k;
    }
    let data_dir = env.dir().join("vector-data");
    std::fs::create_dir_all(&data_dir)?;
    let config = env.dir().join("vector.toml");
    let template = std::fs::read_to_string(repo_root().join("tests/bench/vector.toml"))?;
    std::fs::write(
        &config,
        template
            .replace("${VECTOR_DATA_DIR}", &data_dir.display().to_string())
            .replace("${SQS_QUEUE_URL}", &env.queue_url)
            .replace("${SQS_ENDPOINT}", &env.servers.sqs_endpoint)
            .replace("${DATABASE_URL}", &env.database_url),
    )?;
    let log = env.dir().join("vector.log");
    let t = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting Vector (VECTOR_BIN)")?;
    let pid = child.id().context("Vector exited at once")?;
    let mut first = None;
    let secs = loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM public.receipts_v")
            .fetch_one(&env.pool)
            .await
            .unwrap_or(0);
        if stored > 0 && first.is_none() {
            first = Some((stored, cpu_seconds(pid)?));
        }
        if stored >= i64::try_from(receipts)? {
            break Ok(t.elapsed().as_secs_f64());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            break Err(anyhow::anyhow!(
                "Vector exited ({status}) with {stored} of {receipts} stored: {tail:?}"
            ));
        }
        if t.elapsed() > DRAIN_LIMIT {
            break Err(anyhow::anyhow!(
                "Vector stored {stored} of {receipts} in {DRAIN_LIMIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cpu = cpu_seconds(pid);
    child.kill().await.ok();
    env.cleanup().await;
    Ok(Drained::new(receipts, secs?, cpu?, first))
}

/// Seconds from `t` until the agent has stored `n` receipts, read from its chunk ledger (a
/// row per 500 receipts): counting the receipts table every 50 ms would load the database the
/// drain is measured on. Also the receipts first seen stored and the agent's (`pid`) CPU
/// seconds then.
async fn wait_stored(
    env: &TestEnv,
    n: usize,
    t: Instant,
    pid: u32,
) -> anyhow::Result<(f64, Option<(i64, f64)>)> {
    let mut first = None;
    loop {
        let stored: i64 =
            sqlx::query_scalar("SELECT coalesce(sum(stored), 0)::int8 FROM sluice.chunks")
                .fetch_one(&env.pool)
                .await
                .unwrap_or(0);
        if stored > 0 && first.is_none() {
            first = Some((stored, cpu_seconds(pid)?));
        }
        if stored >= i64::try_from(n)? {
            return Ok((t.elapsed().as_secs_f64(), first));
        }
        if t.elapsed() > DRAIN_LIMIT {
            bail!("the agent stored {stored} of {n} in {DRAIN_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// User + system CPU seconds of a process so far (`/proc/PID/stat`, at 100 ticks a second).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let fields = crate::procfs::stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
