//! PostgreSQL for the harness: a fresh database on a cluster, the URL of a database on the same
//! server, and [`PrivatePostgres`], a cluster of one test's own that it may stop and crash.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use sqlx::Connection as _;

/// Creates database `name` on the cluster at `admin_url` (a superuser URL), first dropping one
/// of that name when `replace` is set, and returns the new database's URL.
pub async fn create_database(admin_url: &str, name: &str, replace: bool) -> anyhow::Result<String> {
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    if replace {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("dropping database {name}"))?;
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating database {name}"))?;
    admin.close().await.ok();
    Ok(with_database(admin_url, name))
}

/// `postgres://…/postgres` → `postgres://…/{db}` (keeps any query string).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A PostgreSQL cluster of one test's own — on a free port, with its data and socket in a temp
/// dir — that the test may stop and start again (the shared cluster serves every other test
/// running in parallel, so it must stay up). As root, `initdb` and the server run as the
/// unprivileged user `postgres`, like `deploy/local/stack.sh` does (initdb refuses root).
/// Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// `fsync` on: commits wait for the disk, as on a customer's database. Off for tests.
    durable: bool,
}

impl PrivatePostgres {
    /// `initdb` and start, with `fsync` off; about a second.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    /// [`PrivatePostgres::start`] with `fsync` on, as customers run it: what a benchmark of
    /// the foreground's latency measures against.
    pub async fn start_durable() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(durable: bool) -> anyhow::Result<Self> {
        let bin = find_pg_bin().context(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; run: bash deploy/local/stack.sh prereqs",
        )?;
        let as_postgres = is_root().await;
        // Short: a Unix socket path must stay under 108 bytes.
        let dir = std::env::temp_dir().join(format!(
            "sluice-pg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = crate::free_local_addr()?.port();
        let pg = Self {
            bin,
            dir,
            port,
            as_postgres,
            durable,
        };
        if as_postgres {
            run_checked(
                tokio::process::Command::new("chown")
                    .arg("postgres:")
                    .arg(&pg.dir),
            )
            .await?;
        }
        let data = pg.dir.join("data");
        run_checked(
            pg.command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
                .args(["--locale=C", "--no-sync"]),
        )
        .await
        .context("initdb")?;
        pg.resume().await?;
        Ok(pg)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid (the first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let file = self.dir.join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("no pid in {}", file.display()))
    }

    /// The directory of the server binaries (`pg_ctl`, `pgbench`, …).
    pub fn bin_dir(&self) -> &std::path::Path {
        &self.bin
    }

    /// A superuser URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`pg_ctl stop -m fast`: open connections are cut, as in a crash or a
    /// failover).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.stop_with("fast").await
    }

    /// Stops the server in immediate mode: no shutdown checkpoint, every backend killed
    /// mid-statement, crash recovery on the next start — the closest to pulling the plug.
    pub async fn crash(&self) -> anyhow::Result<()> {
        self.stop_with("immediate").await
    }

    async fn stop_with(&self, mode: &str) -> anyhow::Result<()> {
        run_checked(
            self.command("pg_ctl")
                .args(["stop", "-w", "-m", mode, "-D"])
                .arg(self.dir.join("data")),
        )
        .await
        .with_context(|| format!("pg_ctl stop -m {mode}"))
    }

    /// Starts the server again on the same port; returns once it accepts connections.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=50",
            self.port,
            self.dir.display(),
            if self.durable { "on" } else { "off" }
        );
        run_checked(
            self.command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .arg("-o")
                .arg(opts),
        )
        .await
        .context("pg_ctl start")
    }

    fn command(&self, tool: &str) -> tokio::process::Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            tokio::process::Command::new(exe)
        };
        cmd.stdin(std::process::Stdio::null());
        cmd
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        let _ = cmd
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn is_root() -> bool {
    match tokio::process::Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

async fn run_checked(cmd: &mut tokio::process::Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The PostgreSQL server binaries' directory, found like `deploy/local/stack.sh` finds it:
/// `pg_config --bindir`, then `/usr/lib/postgresql/*/bin` (highest version first), then `PATH`.
fn find_pg_bin() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e
                    .file_name()
                    .to_string_lossy()
                    .split('.')
                    .next()?
                    .parse()
                    .ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|d| {
        d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("postgres").is_file()
    })
}
