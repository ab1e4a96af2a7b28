//! The drain's figures: a backlog uploaded through the ingest API, drained by the real
//! `sluice-agent` binary while pgbench runs alongside — foreground latency idle, at fixed rates,
//! adaptive and unthrottled, the drain rate each achieves, rate accuracy and the agent's peak
//! RSS. The rate is switched between windows by rewriting the agent's config and sending SIGHUP.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sluice_e2e::gen::Generator;
use sluice_e2e::{wait_for, AgentProcess, EnvOptions, PrivatePostgres, Signal, TestEnv};

use crate::pgbench::{Latency, Pgbench};
use crate::{Table, BATCH, FIXED_RATES, PGBENCH_CLIENTS, PGBENCH_TPS};

/// The agent's current rate limit.
const RATE: &str = "sluice_rate_rows_per_second";

/// Uploads a backlog of `backlog` receipts to a fresh database on `pg`, drains it window by
/// window, and adds the rows.
pub(crate) async fn measure(
    pg: &PrivatePostgres,
    backlog: usize,
    window: Duration,
    steps: u32,
    table: &mut Table,
) -> anyhow::Result<()> {
    let env = backlog_env(pg).await?;
    eprintln!("bench: uploading a backlog of {backlog} receipts through the ingest API");
    upload_backlog(&env, backlog, 2).await?;
    let oltp = Pgbench::init(pg).await?;

    // Every ratio below divides by this p99: twice the window, so a stray spike moves it less.
    eprintln!("bench: foreground alone");
    let (idle, probe) = tokio::join!(oltp.run(window * 2), oltp.probe_client(window * 2));
    let (idle, probe) = (idle?, probe?);
    table.row(
        "foreground p50 / p99, idle",
        idle.show(),
        format!(
            "pgbench -N, {PGBENCH_CLIENTS} clients at {PGBENCH_TPS} tx/s, over {} s; {}",
            window.as_secs() * 2,
            show_probe(probe, None)
        ),
    );

    let agent = spawn_agent(&env, Throttle::Fixed(FIXED_RATES[0])).await?;
    let mut runs: Vec<(u32, f64)> = Vec::new();
    // Cheapest on the backlog first, so the unthrottled window still has one.
    for rate in FIXED_RATES {
        let w = window_with(&env, &agent, &oltp, Throttle::Fixed(rate), window).await?;
        row(table, Throttle::Fixed(rate), &w, (&idle, probe));
        runs.push((rate, w.drain));
    }
    for (configured, rate) in &runs {
        table.row(
            format!("rate accuracy at {configured}/s"),
            format!("{:.3}", rate / f64::from(*configured)),
            format!("measured/configured over {} s", window.as_secs()),
        );
    }
    crate::protect::measure(&env, &agent, &oltp, (&idle, probe), window, steps, table).await?;
    let unthrottled = Throttle::Fixed(1_000_000);
    let w = window_with(&env, &agent, &oltp, unthrottled, window).await?;
    row(table, unthrottled, &w, (&idle, probe));
    let rss = peak_rss_kib(agent.pid().context("the agent exited")?)?;
    table.row(
        format!("agent peak RSS, draining a backlog of {backlog} receipts"),
        format!("{:.0} MiB", rss as f64 / 1024.0),
        "VmHWM; batch.max_in_flight_rows = 10000",
    );
    let mut agent = agent;
    agent.terminate(Duration::from_secs(60)).await?;
    std::fs::remove_dir_all(&oltp.dir).ok();
    env.cleanup().await;
    Ok(())
}

/// One measured window: the foreground's latency and the drain beside it.
pub(crate) struct Window {
    pub(crate) latency: Latency,
    /// Receipts/s committed over the window (commit to commit).
    pub(crate) drain: f64,
    /// The backlog ran out during the window: `drain` is understated.
    pub(crate) ran_out: bool,
    /// The agent's mean commit time and the rate in force at the end, in words.
    pub(crate) note: String,
    /// The probe client's (p95, p99) beside pgbench, ms: what the agent's probe sees.
    pub(crate) probe: (f64, f64),
}

/// `probe (SELECT pg_logical_emit_message(true, 'sluice-probe', '')) at 20/s beside it: p95 0.66 /
/// p99 0.95 ms (1.01 / 1.27 × idle)`.
pub(crate) fn show_probe((p95, p99): (f64, f64), idle: Option<(f64, f64)>) -> String {
    let mut s = format!(
        "probe ({}) at {}/s beside it: p95 {p95:.2} / p99 {p99:.2} ms",
        crate::pgbench::PROBE_SQL,
        crate::pgbench::PROBE_RATE
    );
    if let Some((i95, i99)) = idle {
        s.push_str(&format!(" ({:.2} / {:.2} × idle)", p95 / i95, p99 / i99));
    }
    s
}

/// Switches the running agent to `throttle` (config rewritten, SIGHUP), lets the rate settle,
/// then runs the foreground for `window` while sampling the drain.
pub(crate) async fn window_with(
    env: &TestEnv,
    agent: &AgentProcess,
    oltp: &Pgbench,
    throttle: Throttle,
    window: Duration,
) -> anyhow::Result<Window> {
    env.rewrite_agent_config(agent, &agent_extra(throttle))?;
    agent.signal(Signal::SIGHUP)?;
    // Let the rate settle, the foreground already running. Adaptive: the controller starts at
    // its floor, pauses its writes about 16 s to learn the probe's baseline (three windows),
    // then climbs at most a step per 5 s (a fifth of the p99's judged window): 55 s lets it
    // find its level.
    let warmup = match throttle {
        Throttle::Adaptive { .. } => Duration::from_secs(55),
        Throttle::Fixed(_) | Throttle::Share(_) => Duration::from_secs(3),
    };
    oltp.load(warmup).await?;
    eprintln!("bench: foreground while draining, {}", throttle.label());
    let before = counters(agent).await;
    let (latency, probe, (samples, _)) = tokio::join!(
        oltp.run(window),
        oltp.probe_client(window),
        sample_drain(agent, window)
    );
    let (latency, probe) = (latency?, probe?);
    let after = counters(agent).await;
    let commit_ms = 1000.0 * (after.1 - before.1) / (after.2 - before.2).max(1.0);
    let in_force = agent.metric(RATE, &[]).await.unwrap_or(0.0);
    let (visible, _, _) = env.depth(&env.queue_url).await?;
    let ran_out = visible == 0;
    let mut note =
        format!("agent commit {commit_ms:.0} ms mean; rate in force at the end {in_force:.0}/s");
    if ran_out {
        note.push_str("; backlog ran out during the window: rate understated");
    }
    Ok(Window {
        latency,
        drain: commit_rate(&samples),
        ran_out,
        note,
        probe,
    })
}

fn row(table: &mut Table, throttle: Throttle, w: &Window, (idle, probe): (&Latency, (f64, f64))) {
    table.row(
        format!("foreground p50 / p99, draining {}", throttle.label()),
        w.latency.show(),
        format!(
            "{:.2} × idle p99; drain {:.0} receipts/s; {}; {}",
            w.latency.p99 / idle.p99,
            w.drain,
            w.note,
            show_probe(w.probe, Some(probe))
        ),
    );
}

/// A fresh database on `pg` and a queue pair whose visibility timeout (120 s) a backlog waits
/// out.
pub(crate) async fn backlog_env(pg: &PrivatePostgres) -> anyhow::Result<TestEnv> {
    TestEnv::with_options(EnvOptions {
        visibility_timeout_seconds: 120,
        database_url: Some(pg.url()),
        ..EnvOptions::default()
    })
    .await
}

/// Receipts per second between the first and the last commit seen in the samples. Commits
/// come in whole batches, so counting from the window's edges would be off by up to a batch
/// at each end; measured from commit to commit it is not.
pub(crate) fn commit_rate(samples: &[(f64, f64)]) -> f64 {
    let changes: Vec<(f64, f64)> = samples
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .map(|w| w[1])
        .collect();
    match (changes.first(), changes.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / (b.0 - a.0),
        _ => 0.0,
    }
}

/// Uploads `n` receipts (from generator seed `seed`) through the ingest API, zstd messages of
/// [`BATCH`].
pub(crate) async fn upload_backlog(env: &TestEnv, n: usize, seed: u64) -> anyhow::Result<()> {
    let ingest = env
        .start_ingest(&[
            ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "500"),
            ("SLUICE_COMPRESSION", "zstd"),
        ])
        .await?;
    // Under the API's 6 MB body limit.
    let per_request = 5_000;
    let mut g = Generator::new(seed);
    let mut sent = 0;
    while sent < n {
        let k = per_request.min(n - sent);
        let (status, answer) = ingest.upload_json(&g.receipts(k)).await?;
        if status != 202 {
            bail!("upload answered {status}: {answer}");
        }
        sent += k;
        eprint!("\r  {sent}/{n} receipts on the queue");
    }
    eprintln!();
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Throttle {
    Fixed(u32),
    /// Adaptive up to `ceiling`, the probe's p95 held within `ratio` × its baseline.
    Adaptive {
        ratio: f64,
        ceiling: u32,
    },
    /// Fixed far above what the database takes, under `throttle.max_database_share`.
    Share(f64),
}

impl Throttle {
    pub(crate) fn label(&self) -> String {
        match self {
            Throttle::Fixed(r) if *r >= 1_000_000 => "unthrottled".into(),
            Throttle::Fixed(r) => format!("at a fixed {r}/s"),
            Throttle::Adaptive { ratio, .. } => format!("adaptive (target_latency_ratio {ratio})"),
            Throttle::Share(cap) => format!("with max_database_share = {cap}"),
        }
    }

    fn toml(&self) -> String {
        match self {
            Throttle::Fixed(r) => format!(
                "[throttle]\nmode = \"fixed\"\nrows_per_second = {r}\nburst = {}\n",
                (*r).max(1000)
            ),
            Throttle::Adaptive { ratio, ceiling } => format!(
                "[throttle]\nmode = \"adaptive\"\nrows_per_second = {ceiling}\nburst = 2000\n\
                 min_rows_per_second = 50\nincrease_rows_per_second = 250\n\
                 target_latency_ratio = {ratio}\nprobe_sql = {:?}\n",
                crate::pgbench::PROBE_SQL
            ),
            Throttle::Share(cap) => format!(
                "[throttle]\nmode = \"fixed\"\nrows_per_second = 100000\nburst = 100000\n\
                 max_database_share = {cap}\n"
            ),
        }
    }
}

/// The agent's settings besides the throttle: the backlog waits out a long visibility timeout,
/// two connections and the two transactions in flight they allow, warnings only.
pub(crate) fn agent_extra(t: Throttle) -> String {
    format!(
        "[queue]\nvisibility_timeout_seconds = 120\n[database]\nmax_connections = 2\n{}\
         max_concurrent_transactions = 2\n\
         [batch]\nmax_rows = {BATCH}\nmax_wait_ms = 50\n[log]\nformat = \"json\"\nlevel = \"warn\"",
        t.toml()
    )
}

/// The release `sluice-agent` binary (the bench's own build), once it shows its rate limit.
async fn spawn_agent(env: &TestEnv, t: Throttle) -> anyhow::Result<AgentProcess> {
    let agent = env.spawn_agent("agent", &agent_extra(t))?;
    wait_for(Duration::from_secs(30), "the agent's rate metric", || {
        agent.metric(RATE, &[])
    })
    .await?;
    Ok(agent)
}

/// One scrape of the agent's metrics every 50 ms for `d`: `sluice_rows_written_total` as
/// (seconds since the start, receipts), and how often each `sluice_rate_reason` was in force.
pub(crate) async fn sample_drain(
    agent: &AgentProcess,
    d: Duration,
) -> (Vec<(f64, f64)>, BTreeMap<String, u32>) {
    let t0 = Instant::now();
    let mut rows = Vec::new();
    let mut reasons = BTreeMap::new();
    while t0.elapsed() < d {
        if let Some(m) = agent.metrics().await {
            if let Some(v) = m.sum("sluice_rows_written_total", &[]) {
                rows.push((t0.elapsed().as_secs_f64(), v));
            }
            if let Some(r) = m.one_hot("sluice_rate_reason", "reason") {
                *reasons.entry(r.to_owned()).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (rows, reasons)
}

/// (receipts written, commit seconds summed, commits).
async fn counters(agent: &AgentProcess) -> (f64, f64, f64) {
    let m = agent.metrics().await.unwrap_or_default();
    (
        m.counter("sluice_rows_written_total"),
        m.counter("sluice_commit_seconds_sum"),
        m.counter("sluice_commit_seconds_count"),
    )
}

/// The process's peak resident set (VmHWM), KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM in /proc/PID/status")
}
