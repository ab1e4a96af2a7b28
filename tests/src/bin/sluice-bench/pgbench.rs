//! The foreground workload: pgbench's simple-update script at a fixed transaction rate on the
//! bench's cluster, and its latency per transaction.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use sluice_e2e::PrivatePostgres;
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
    pub(crate) dir: PathBuf,
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
            dir,
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

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.exe);
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

    /// Runs the foreground workload for `d`; latency per transaction counts from its scheduled
    /// start (pgbench's own convention under `--rate`), so waiting for the database counts.
    pub(crate) async fn run(&self, d: Duration) -> anyhow::Result<Latency> {
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let out = self
            .command()
            .args(["-n", "-N", "-l", "--log-prefix=tx"])
            .args(["-c", &PGBENCH_CLIENTS.to_string(), "-j", "2"])
            .args([
                "-R",
                &PGBENCH_TPS.to_string(),
                "-T",
                &d.as_secs().to_string(),
            ])
            .arg("oltp")
            .output()
            .await?;
        if !out.status.success() {
            bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut lat = Vec::new();
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let text = std::fs::read_to_string(e.path())?;
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                // client tx time_us script epoch epoch_us [lag_us]
                let time: f64 = f.get(2).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                let lag: f64 = f.get(6).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                if time.is_finite() {
                    lat.push((time + lag) / 1000.0);
                }
            }
        }
        if lat.is_empty() {
            bail!("pgbench logged no transactions in {}", self.dir.display());
        }
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        Ok(Latency {
            p50: q(0.50),
            p99: q(0.99),
            tps: lat.len() as f64 / d.as_secs_f64(),
        })
    }
}
