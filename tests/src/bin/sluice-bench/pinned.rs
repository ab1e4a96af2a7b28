//! Protection measured the way a customer's database feels it: PostgreSQL (a durable cluster,
//! `fsync` on) and the foreground (pgbench) on CPU 0; the agent, the SQS server and the bench
//! itself on CPU 1. The agent then reaches the foreground only through the database, as when it
//! runs on another host. With fewer than two CPUs nothing is pinned, and the rows say so.
//!
//! Each setting is measured in pairs of windows, idle then draining (ABAB): the agent is
//! stopped (SIGSTOP) for the idle window and let go (SIGCONT) for the draining one, and a pair's
//! ratio is the draining window's pgbench p99 over the idle window's just before it, so a drift
//! of the machine over the run cancels out. A row gives the median ratio, its range, and whether
//! every pair held 1.5 × and 2.0 ×: a rate counts as safe only when every pair held.
//! Every window starts right after a `CHECKPOINT`, so a timed checkpoint cannot fall into one
//! window of a pair and not the other, and each idle window right after a `VACUUM (ANALYZE)` of
//! the agent's database and the foreground's (each draining window after one of the
//! foreground's), so the autovacuum the drain's inserts (or the foreground's own updates) call
//! for does not land in it.
//! The drain's deferred costs (writing out its dirty pages, vacuuming its rows) then fall
//! between windows: the ratio is what the foreground feels while the agent writes. The same
//! `VACUUM` and `CHECKPOINT` run before each setting's warm-up, so one row's debt does not
//! fall on the next row's start, where adaptive learns its probe's baseline.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use sluice_e2e::{wait_for, AgentProcess, PrivatePostgres, Signal};

use crate::drain::{agent_extra, backlog_env, commit_rate, sample_drain, upload_backlog, Throttle};
use crate::pgbench::Pgbench;
use crate::procfs;
use crate::{Table, PGBENCH_CLIENTS};

/// The CPU of PostgreSQL and the foreground; everything else runs on [`AGENT_CPU`].
const DATABASE_CPU: usize = 0;
const AGENT_CPU: usize = 1;
/// The ratios a row is judged against: the two `target_latency_ratio`s the issue names.
const TARGETS: [f64; 2] = [1.5, 2.0];

/// What to measure.
pub(crate) struct Plan {
    pub(crate) backlog: usize,
    pub(crate) pairs: u32,
    pub(crate) window: Duration,
    /// pgbench's `-R` for each foreground.
    pub(crate) foregrounds: Vec<u32>,
    pub(crate) settings: Vec<Throttle>,
}

/// Parses `fixed:250,share:0.2,adaptive:2.0` into settings.
pub(crate) fn parse_settings(text: &str) -> anyhow::Result<Vec<Throttle>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (kind, value) = s
                .split_once(':')
                .with_context(|| format!("{s:?}: expected kind:value, e.g. fixed:250"))?;
            match kind {
                "fixed" => Ok(Throttle::Fixed(value.parse().with_context(|| {
                    format!("{s:?}: a fixed rate is whole receipts per second")
                })?)),
                "share" => Ok(Throttle::Share(value.parse().with_context(|| {
                    format!("{s:?}: a share is a number of seconds per second, e.g. 0.2")
                })?)),
                "adaptive" => Ok(Throttle::Adaptive {
                    ratio: value.parse().with_context(|| {
                        format!("{s:?}: adaptive takes its target_latency_ratio, e.g. 2.0")
                    })?,
                    ceiling: 32_000,
                }),
                _ => anyhow::bail!("{s:?}: the kind is fixed, share or adaptive"),
            }
        })
        .collect()
}

pub(crate) async fn measure(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus > AGENT_CPU;
    let pg = PrivatePostgres::start_durable().await?;
    let env = backlog_env(&pg).await?;
    eprintln!(
        "bench: pinned protection: uploading a backlog of {} receipts",
        plan.backlog
    );
    upload_backlog(&env, plan.backlog, 5).await?;
    let mut oltp = Pgbench::init(&pg).await?;
    let first = *plan.settings.first().context("no setting to measure")?;
    let agent = env.spawn_agent("pinned", &agent_extra(first))?;
    agent.wait_answering(Duration::from_secs(30)).await?;
    let placement = if pinned {
        pin_with_children(pg.postmaster_pid()?, DATABASE_CPU)?;
        pin(std::process::id(), AGENT_CPU)?;
        pin(agent.pid().context("the agent exited")?, AGENT_CPU)?;
        for pid in processes_running("moto_server.py") {
            pin(pid, AGENT_CPU)?;
        }
        format!(
            "pinned: PostgreSQL (fsync on) and pgbench on CPU {DATABASE_CPU}; agent, SQS server \
             and bench on CPU {AGENT_CPU}"
        )
    } else {
        eprintln!("bench: {cpus} CPU: nothing pinned; the agent shares the database's core");
        format!("NOT pinned ({cpus} CPU): the agent on the database's core; fsync on")
    };

    for &tps in &plan.foregrounds {
        oltp.set(tps, pinned.then_some(DATABASE_CPU));
        for &setting in &plan.settings {
            let row = measure_setting(&env, &agent, &oltp, setting, plan).await?;
            table.row(
                format!(
                    "pinned: pgbench -R {tps}, draining {} (ABAB)",
                    setting.label()
                ),
                format!("{:.2} × idle p99 (median)", row.median_ratio()),
                format!(
                    "{} pairs of {} s: ratios {}; {}; drain median {:.0} receipts/s; \
                     agent's database share {}; idle p99 {}{}{}; {placement}; \
                     CHECKPOINT before each setting and window, VACUUM of both databases before each setting and idle window, of pgbench's before each draining one; pgbench -N, {PGBENCH_CLIENTS} clients",
                    row.pairs.len(),
                    plan.window.as_secs(),
                    row.ratios(),
                    row.held(),
                    row.median_drain(),
                    row.shares(),
                    row.idle_p99s(),
                    row.probes(),
                    row.reasons(),
                ),
            );
        }
    }
    let mut agent = agent;
    agent.signal(Signal::SIGCONT)?;
    agent.terminate(Duration::from_secs(60)).await?;
    std::fs::remove_dir_all(&oltp.dir).ok();
    env.cleanup().await;
    Ok(())
}

/// One pair: the idle window's p99, the draining window's, what the agent drained and the share
/// of the database's time it took at the end.
struct Pair {
    idle_p99: f64,
    busy_p99: f64,
    drain: f64,
    share: f64,
    /// Adaptive: the probe's baseline and limit (ms) at the draining window's end, to tell a
    /// baseline learned at a noisy moment from a controller that misjudged.
    probe: Option<(f64, f64)>,
    /// How often each `sluice_rate_reason` was in force over the draining window's scrapes.
    reasons: BTreeMap<String, u32>,
}

struct Measured {
    pairs: Vec<Pair>,
}

impl Measured {
    fn sorted(&self, f: impl Fn(&Pair) -> f64) -> Vec<f64> {
        let mut v: Vec<f64> = self.pairs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median_ratio(&self) -> f64 {
        median(&self.sorted(|p| p.busy_p99 / p.idle_p99))
    }

    fn median_drain(&self) -> f64 {
        median(&self.sorted(|p| p.drain))
    }

    /// `f` of each pair in order, to `decimals`, comma-separated.
    fn each(&self, decimals: usize, f: impl Fn(&Pair) -> f64) -> String {
        self.pairs
            .iter()
            .map(|p| format!("{:.decimals$}", f(p)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn ratios(&self) -> String {
        let ratio = |p: &Pair| p.busy_p99 / p.idle_p99;
        let r = self.sorted(ratio);
        format!(
            "{:.2}–{:.2} ({})",
            r.first().copied().unwrap_or(0.0),
            r.last().copied().unwrap_or(0.0),
            self.each(2, ratio)
        )
    }

    fn held(&self) -> String {
        TARGETS
            .iter()
            .map(|t| {
                let all = self.pairs.iter().all(|p| p.busy_p99 / p.idle_p99 <= *t);
                format!(
                    "≤ {t:.1} × in every pair: {}",
                    if all { "yes" } else { "no" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn shares(&self) -> String {
        self.each(2, |p| p.share)
    }

    fn idle_p99s(&self) -> String {
        self.each(1, |p| p.idle_p99) + " ms"
    }

    /// `; probe baseline / limit at each pair's end: …` when the agent ran a probe.
    fn probes(&self) -> String {
        if self.pairs.iter().all(|p| p.probe.is_none()) {
            return String::new();
        }
        let each: Vec<String> = self
            .pairs
            .iter()
            .map(|p| p.probe.map_or("-".to_owned(), show_probe))
            .collect();
        format!(
            "; probe baseline / limit at each pair's end: {}",
            each.join(", ")
        )
    }

    /// `; rate reasons while draining: probe_latency 52 %, climbing 30 %, …` over every pair's
    /// draining window, most frequent first: why the rate was what it was.
    fn reasons(&self) -> String {
        let mut total: BTreeMap<&str, u32> = BTreeMap::new();
        for (reason, n) in self.pairs.iter().flat_map(|p| &p.reasons) {
            *total.entry(reason).or_default() += n;
        }
        if total.is_empty() {
            return String::new();
        }
        format!("; rate reasons while draining: {}", show_reasons(total))
    }
}

/// `reason share %, …`, most frequent first.
fn show_reasons<'a>(counts: impl IntoIterator<Item = (&'a str, u32)>) -> String {
    let mut counts: Vec<(&str, u32)> = counts.into_iter().collect();
    let all: u32 = counts.iter().map(|(_, n)| n).sum();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(r, n)| format!("{r} {:.0} %", f64::from(*n) * 100.0 / f64::from(all.max(1))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_probe((baseline, limit): (f64, f64)) -> String {
    format!("{baseline:.1} / {limit:.1} ms")
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

async fn measure_setting(
    env: &sluice_e2e::TestEnv,
    agent: &AgentProcess,
    oltp: &Pgbench,
    setting: Throttle,
    plan: &Plan,
) -> anyhow::Result<Measured> {
    // The last row's deferred work (vacuuming its inserts, writing out its dirty pages) is
    // done before this row starts, so it does not fall into this row's warm-up, where adaptive
    // learns its probe's baseline.
    vacuum_and_checkpoint(env, oltp).await?;
    agent.signal(Signal::SIGCONT)?;
    env.rewrite_agent_config(agent, &agent_extra(setting))?;
    agent.signal(Signal::SIGHUP)?;
    // Adaptive learns its probe's baseline (a pause of about 15 s; then one window a minute
    // while it runs, until five moments, which the next adaptive row's reload keeps) and
    // climbs to its level first (as in the unpinned rows); the others need only the reload.
    let warmup = match setting {
        Throttle::Adaptive { .. } => Duration::from_secs(70),
        _ => Duration::from_secs(5),
    };
    eprintln!(
        "bench: pinned, pgbench -R {}, {}: warming up {} s",
        oltp.tps(),
        setting.label(),
        warmup.as_secs()
    );
    oltp.load(warmup).await?;
    // Only adaptive runs the probe (after a reload its gauges keep their last value).
    let adaptive = matches!(setting, Throttle::Adaptive { .. });
    let mut pairs = Vec::new();
    for pair in 1..=plan.pairs {
        agent.signal(Signal::SIGSTOP)?;
        // The autovacuum the last window's inserts call for would otherwise start within a
        // minute, in this idle window, and lower the pair's ratio: do it now, between windows.
        vacuum_and_checkpoint(env, oltp).await?;
        let idle = oltp.run(plan.window).await?;
        agent.signal(Signal::SIGCONT)?;
        oltp.vacuum().await?;
        checkpoint(env).await?;
        // The agent renews its lease and takes up where it stopped before the window counts.
        oltp.load(Duration::from_secs(3)).await?;
        let (busy, (samples, reasons)) =
            tokio::join!(oltp.run(plan.window), sample_drain(agent, plan.window));
        let busy = busy?;
        let share = wait_for(Duration::from_secs(5), "the agent's database share", || {
            agent.metric("sluice_database_share", &[])
        })
        .await
        .unwrap_or(0.0);
        let probe = if adaptive {
            probe_gauges(agent).await
        } else {
            None
        };
        let p = Pair {
            idle_p99: idle.p99,
            busy_p99: busy.p99,
            drain: commit_rate(&samples),
            share,
            probe,
            reasons,
        };
        eprintln!(
            "bench:   pair {pair}: idle p99 {:.1} ms, draining p99 {:.1} ms ({:.2} ×), \
             drain {:.0}/s, share {:.2}{}; rate reasons: {}",
            p.idle_p99,
            p.busy_p99,
            p.busy_p99 / p.idle_p99,
            p.drain,
            p.share,
            p.probe
                .map(|b| format!(", probe baseline / limit {}", show_probe(b)))
                .unwrap_or_default(),
            show_reasons(p.reasons.iter().map(|(r, n)| (r.as_str(), *n)))
        );
        pairs.push(p);
    }
    let (visible, _, _) = env.depth(&env.queue_url).await?;
    if visible == 0 {
        eprintln!("bench: the backlog ran out: later drain figures are understated");
    }
    Ok(Measured { pairs })
}

/// `VACUUM (ANALYZE)` of the agent's database and the foreground's, then a [`checkpoint`].
async fn vacuum_and_checkpoint(env: &sluice_e2e::TestEnv, oltp: &Pgbench) -> anyhow::Result<()> {
    sqlx::query("VACUUM (ANALYZE)").execute(&env.pool).await?;
    oltp.vacuum().await?;
    checkpoint(env).await
}

/// `CHECKPOINT` (the whole cluster), so a window starts with no checkpoint pending: a timed one
/// (every 5 min by default) then cannot land in one window of a pair and not the other, which
/// swung the idle p99 from 1.9 to 16.6 ms between windows of one run.
async fn checkpoint(env: &sluice_e2e::TestEnv) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT").execute(&env.pool).await?;
    Ok(())
}

/// The probe's baseline and limit in ms, from one scrape of the agent's metrics.
async fn probe_gauges(agent: &AgentProcess) -> Option<(f64, f64)> {
    let m = agent.metrics().await?;
    let ms = |name| m.sum(name, &[]).map(|s| s * 1e3);
    Some((
        ms("sluice_probe_baseline_seconds")?,
        ms("sluice_probe_limit_seconds")?,
    ))
}

/// `taskset -apc cpu pid`: every thread of the process, and those it starts later.
fn pin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    // `-a` walks the process's threads one by one; a thread that ends meanwhile (tokio's
    // blocking pool lets idle ones go) fails the walk with "No such process". Walk again.
    let mut tries = 0;
    loop {
        let out = std::process::Command::new("taskset")
            .args(["-apc", &cpu.to_string(), &pid.to_string()])
            .output()
            .context("taskset (util-linux) not found")?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        tries += 1;
        anyhow::ensure!(
            tries < 5 && err.contains("No such process"),
            "taskset -apc {cpu} {pid}: {err}"
        );
    }
}

/// Pins `pid` and its children: the postmaster and the backends it already forked (those it
/// forks later inherit its CPU).
fn pin_with_children(pid: u32, cpu: usize) -> anyhow::Result<()> {
    pin(pid, cpu)?;
    for child in children_of(pid) {
        // A backend may exit between the listing and the pin.
        let _ = pin(child, cpu);
    }
    Ok(())
}

fn children_of(parent: u32) -> Vec<u32> {
    procfs::pids()
        .into_iter()
        .filter(|&pid| {
            procfs::stat_fields(pid)
                .ok()
                .and_then(|f| f.get(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

fn processes_running(needle: &str) -> Vec<u32> {
    procfs::pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_from_a_list_and_a_bad_one_is_named() {
        let s = parse_settings("fixed:250, share:0.2,adaptive:2.0").expect("valid");
        assert_eq!(
            s.iter().map(Throttle::label).collect::<Vec<_>>(),
            vec![
                "at a fixed 250/s",
                "with max_database_share = 0.2",
                "adaptive (target_latency_ratio 2)"
            ]
        );
        let err = parse_settings("fixed:fast").expect_err("not a number");
        assert!(
            err.to_string().contains("a fixed rate is whole receipts"),
            "{err}"
        );
        let err = parse_settings("turbo:1").expect_err("unknown kind");
        assert!(
            err.to_string().contains("fixed, share or adaptive"),
            "{err}"
        );
    }

    #[test]
    fn rate_reasons_are_shown_as_shares_most_frequent_first() {
        assert_eq!(
            show_reasons([("climbing", 1), ("probe_latency", 3), ("idle", 0)]),
            "probe_latency 75 %, climbing 25 %, idle 0 %"
        );
        assert_eq!(show_reasons([]), "");
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[1.0, 2.0, 4.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 8.0]), 3.0);
    }
}
