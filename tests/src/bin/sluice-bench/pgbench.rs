//! The foreground workload: pgbench's simple-update script at a fixed transaction rate on the
//! bench's cluster, and its latency per transaction.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use sluice_e2e::{with_database, PrivatePostgres};
use sqlx::{Connection as _, Executor as _};

use crate::{PGBENCH_CLIENTS, PGBENCH_TPS};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) tps: f64,
}

impl Latency {
    pub(crate) fn show(&self) -> String {
        format!(
            "{:.1} / {:.1} ms ({:.0} tx/s)",
            self.p50, self.p99, self.tps
        )
    }
}

/// pgbench against database `oltp` on the bench's cluster, logging to a directory of its own.
pub(crate) struct Pgbench {
    exe: PathBuf,
    port: u16,
    /// The URL of database `oltp`, as the bench's own statements reach it.
    url: String,
    pub(crate) dir: PathBuf,
    /// Transactions per second of the foreground (`-R`).
    tps: u32,
    /// The CPU pgbench runs on (`taskset -c`), beside the database; `None`: anywhere.
    cpu: Option<usize>,
}

impl Pgbench {
    pub(crate) async fn init(pg: &PrivatePostgres) -> anyhow::Result<Self> {
        let exe = pg.bin_dir().join("pgbench");
        let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
        admin.execute("DROP DATABASE IF EXISTS oltp").await?;
        admin.execute("CREATE DATABASE oltp").await?;
        let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let me = Self {
            exe,
            port: pg.port(),
            url: with_database(&pg.url(), "oltp"),
            dir,
            tps: PGBENCH_TPS,
            cpu: None,
        };
        let out = me
            .command()
            .args(["-i", "-q", "-s", "10", "oltp"])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "pgbench -i failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(me)
    }

    /// The foreground at `tps` transactions per second, on `cpu` if given.
    pub(crate) fn set(&mut self, tps: u32, cpu: Option<usize>) {
        self.tps = tps;
        self.cpu = cpu;
    }

    pub(crate) fn tps(&self) -> u32 {
        self.tps
    }

    /// `VACUUM (ANALYZE)` of the foreground's own tables, whose updates and history rows
    /// (24,000 transactions a minute at `-R 400`) call for autovacuum at their own thresholds,
    /// in whichever window they are crossed.
    pub(crate) async fn vacuum(&self) -> anyhow::Result<()> {
        let mut c = sqlx::PgConnection::connect(&self.url).await?;
        c.execute("VACUUM (ANALYZE)").await?;
        c.close().await?;
        Ok(())
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = match self.cpu {
            Some(cpu) => {
                let mut c = tokio::process::Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&self.exe);
                c
            }
            None => tokio::process::Command::new(&self.exe),
        };
        c.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &self.port.to_string(),
        ])
        .stdin(Stdio::null())
        .current_dir(&self.dir);
        c
    }

    /// Runs pgbench in `dir` with `args` at `rate` transactions/s for `d`.
    async fn at_rate(
        &self,
        dir: &Path,
        args: &[&str],
        rate: u32,
        d: Duration,
    ) -> anyhow::Result<()> {
        let out = self
            .command()
            .current_dir(dir)
            .args(args)
            .args(["-R", &rate.to_string(), "-T", &d.as_secs().to_string()])
            .arg("oltp")
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "pgbench {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs the foreground workload for `d`; latency per transaction counts from its scheduled
    /// start (pgbench's own convention under `--rate`), so waiting for the database counts.
    pub(crate) async fn run(&self, d: Duration) -> anyhow::Result<Latency> {
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let clients = PGBENCH_CLIENTS.to_string();
        let args = [
            "-n",
            "-N",
            "-c",
            &clients,
            "-j",
            "2",
            "-l",
            "--log-prefix=tx",
        ];
        self.at_rate(&self.dir, &args, self.tps, d).await?;
        let lat = logged(&self.dir, "tx.")?;
        let tps = lat.len() as f64 / d.as_secs_f64();
        let q = quantiles(lat, &self.dir)?;
        Ok(Latency {
            p50: q(0.50),
            p99: q(0.99),
            tps,
        })
    }

    /// The foreground workload for `d`, unmeasured: the database's users are there before a
    /// window is measured too (so adaptive mode learns its baseline beside them).
    pub(crate) async fn load(&self, d: Duration) -> anyhow::Result<()> {
        let clients = PGBENCH_CLIENTS.to_string();
        let args = ["-n", "-N", "-c", &clients, "-j", "2"];
        self.at_rate(&self.dir, &args, self.tps, d).await
    }

    /// What the agent's probe sees: one client running [`PROBE_SQL`] at [`PROBE_RATE`] a
    /// second for `d`, beside pgbench and on the same footing. Its (p95, p99), ms.
    pub(crate) async fn probe_client(&self, d: Duration) -> anyhow::Result<(f64, f64)> {
        // Inside the foreground's directory, so the bench's clean-up removes it too; `run`
        // reads only its own `tx.` logs there.
        let dir = self.dir.join("probe");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("probe.sql"), format!("{PROBE_SQL};\n"))?;
        let args = [
            "-n",
            "-c",
            "1",
            "-f",
            "probe.sql",
            "-l",
            "--log-prefix=probe",
        ];
        self.at_rate(&dir, &args, PROBE_RATE, d).await?;
        let q = quantiles(logged(&dir, "probe.")?, &dir)?;
        Ok((q(0.95), q(0.99)))
    }
}

/// Probes a second: the agent's default `probe_interval_ms` (50).
pub(crate) const PROBE_RATE: u32 = 20;
/// The probe statement, the agent's (adaptive mode) and the probe client's.
pub(crate) const PROBE_SQL: &str = "SELECT pg_logical_emit_message(true, 'sluice-probe', '')";

/// Per-transaction latencies (ms) in the pgbench logs in `dir` named `prefix…`. A line is
/// `client tx time_us script epoch epoch_us [lag_us]`; under `--rate`, time_us already counts
/// from the scheduled start, so it holds lag_us (adding lag_us again would count every wait
/// twice).
fn logged(dir: &Path, prefix: &str) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let log = std::fs::read_to_string(e.path())?;
        lat.extend(
            log.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok())
                .map(|us| us / 1000.0),
        );
    }
    Ok(lat)
}

/// Nearest-rank quantiles of `lat`; an error when nothing was logged.
fn quantiles(mut lat: Vec<f64>, dir: &Path) -> anyhow::Result<impl Fn(f64) -> f64> {
    if lat.is_empty() {
        bail!("pgbench logged no transactions in {}", dir.display());
    }
    lat.sort_by(f64::total_cmp);
    Ok(move |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize])
}
