//! The agent under a real systemd (`make test-systemd`): a Debian container whose PID 1 is
//! systemd, the agent and `deploy/systemd/sluice-agent.service` installed by running the
//! README's install steps ("Installing as a systemd service") inside it, PostgreSQL (a cluster
//! of this test's own, which it stops and starts) and the SQS-API server on the host's loopback.
//!
//! Ignored by plain `cargo test` (it needs root, systemd-nspawn and a container root):
//! `make test-systemd` runs it with `--ignored`, and `make test` runs that where it can.
//! The agent binary is `$SLUICE_SYSTEMD_AGENT` if set, else the one built next to this test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;
use sluice_e2e::gen::Generator;
use sluice_e2e::oracle::Oracle;
use sluice_e2e::{
    binary, container_root, free_local_addr, repo_root, wait_for, Container, EnvOptions, Metrics,
    PrivatePostgres, RootTree, TestEnv,
};
use sqlx::Connection as _;

const UNIT: &str = "sluice-agent.service";
/// The backlog drained, reloaded and stopped in the middle of.
const RECEIPTS: usize = 4_000;
/// Receipts uploaded while the table lock is held.
const LOCKED_RECEIPTS: usize = 500;
/// Rates before and after `systemctl reload` (rows/s): slow enough to stop mid-drain.
const RATE: u32 = 100;
const RELOADED_RATE: u32 = 300;
/// The test's watchdog interval (a drop-in; the shipped unit says 60 s). The agent stops
/// pinging after max(half of it, one long poll + 10 s) = 11 s without progress.
const WATCHDOG_SEC: u64 = 6;
/// How long the table lock is held: well past the 11 s + 6 s in which a stuck agent is killed.
const LOCK_HELD: Duration = Duration::from_secs(25);
/// Bounds on the waits (a loaded 2-core CI machine; a healthy run takes seconds).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
/// While PostgreSQL is down at start, the unit is watched this long for `activating`.
const DOWN_WATCH: Duration = Duration::from_secs(8);
/// The database role the agent logs in as; its password reaches it only through LoadCredential=.
const ROLE: &str = "sluice_writer";
/// How long a refused start is watched for a restart: past the unit's `RestartSec=5`.
const REFUSED_WATCH: Duration = Duration::from_secs(8);
/// The queue's visibility timeout: above the write timeouts (50 s), which are above the time
/// the lock is held, so the agent's write waits it out in one statement.
const VISIBILITY: u32 = 120;
const DROPIN_DIR: &str = "/etc/systemd/system/sluice-agent.service.d";

#[tokio::test]
#[ignore = "boots a systemd container (root, Linux, systemd-nspawn): make test-systemd"]
async fn the_unit_runs_the_agent_under_a_real_systemd() -> anyhow::Result<()> {
    let root = match container_root().await? {
        RootTree::Ready(root) => root,
        RootTree::Skipped(why) => {
            eprintln!("{why}");
            return Ok(());
        }
    };
    let pg = PrivatePostgres::start().await?;
    let env = TestEnv::with_options(EnvOptions {
        database_url: Some(pg.url()),
        visibility_timeout_seconds: VISIBILITY,
        ..EnvOptions::default()
    })
    .await?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    require_password_for_the_agent_role(&pg, &env, &password).await?;

    let mut oracle = Oracle::new();
    let backlog = Generator::new(140).receipts(RECEIPTS);
    env.upload_acknowledged(&mut oracle, &backlog, "50").await?;

    let metrics_addr = free_local_addr()?;
    let site = Site::prepare(&env, &pg, &password, metrics_addr)?;
    let agent_dir = match std::env::var_os("SLUICE_SYSTEMD_AGENT").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => binary("sluice-agent")?,
    };
    let agent_dir = agent_dir
        .parent()
        .context("the agent binary's directory")?
        .to_owned();
    let repo = repo_root();
    let readme_block = readme_install_block(&repo.join("README.md"))?;
    std::fs::write(site.dir.join("install.sh"), install_script(&readme_block))?;
    let container = Container::boot(
        &root,
        &[
            (&repo.join("deploy"), "/root/sluice/deploy"),
            (&agent_dir, "/root/sluice/target/release"),
            (&site.dir, "/root/site"),
        ],
        &env.dir().join("console.log"),
    )
    .await?;
    // The test's watchdog interval, before the README's daemon-reload reads the unit.
    container
        .write(
            &format!("{DROPIN_DIR}/10-test-watchdog.conf"),
            &format!("[Service]\nWatchdogSec={WATCHDOG_SEC}\n"),
        )
        .await?;

    let sd = Systemd {
        container: &container,
        metrics_addr,
    };
    pg.stop().await?;
    starts_only_after_ready_and_not_while_postgres_is_down(&sd, &pg, &site).await?;
    hardening_is_in_force(&sd).await?;
    let pid = reload_applies_a_new_rate(&sd, &env, &site).await?;
    stop_mid_drain_loses_nothing(&sd, &env, pid).await?;
    a_held_table_lock_is_waited_out_without_a_restart(&sd, &env, &mut oracle).await?;
    oracle
        .verify(&env)
        .await
        .context("after the drains, stop mid-drain and the held lock: nothing lost or doubled")?;
    a_stalled_pipeline_is_killed_by_the_watchdog_and_restarted(&sd).await?;
    security_exposure_is_at_most_2(&sd).await?;
    the_journal_holds_one_json_line_per_entry(&sd).await?;
    a_refused_configuration_is_not_restarted(&sd, &site).await?;
    drop(container);
    Ok(())
}

/// The files the README's install steps edit, prepared on the host and mounted at /root/site.
struct Site {
    dir: PathBuf,
    toml: Box<dyn Fn(u32) -> String>,
}

impl Site {
    fn prepare(
        env: &TestEnv,
        pg: &PrivatePostgres,
        password: &str,
        metrics: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        let dir = env.dir().join("site");
        std::fs::create_dir_all(dir.join("edits"))?;
        let db_url = format!("postgres://{ROLE}@127.0.0.1:{}/{}", pg.port(), env.name);
        let base = env.agent_toml(&format!(
            "[queue]\nvisibility_timeout_seconds = {VISIBILITY}\n[database]\nurl = {db_url:?}\n\
             password_file = \"/run/credentials/sluice-agent.service/db-password\"\n\
             connect_timeout_seconds = 2\nstatement_timeout_ms = 50000\nlock_timeout_ms = 50000\n\
             [batch]\nmax_rows = 50\nmax_wait_ms = 20\nmax_in_flight_rows = 300\n\
             [server]\nlisten = \"{metrics}\"\n\
             [log]\nformat = \"json\"\nlevel = \"info\""
        ));
        let toml = Box::new(move |rate: u32| {
            base.replace(
                "rows_per_second = 100000\nburst = 100000",
                &format!("rows_per_second = {rate}\nburst = {rate}"),
            )
        });
        let edits = dir.join("edits");
        std::fs::write(edits.join("agent.toml"), toml(RATE))?;
        std::fs::write(edits.join("db-password"), format!("{password}\n"))?;
        std::fs::write(
            edits.join("aws-credentials"),
            "[default]\naws_access_key_id = test\naws_secret_access_key = test\n",
        )?;
        Ok(Self { dir, toml })
    }
}

/// The container's systemd and the agent's metrics.
struct Systemd<'a> {
    container: &'a Container,
    metrics_addr: std::net::SocketAddr,
}

impl Systemd<'_> {
    async fn prop(&self, name: &str) -> anyhow::Result<String> {
        self.container.property(UNIT, name).await
    }

    async fn state(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{}/{}",
            self.prop("ActiveState").await?,
            self.prop("SubState").await?
        ))
    }

    async fn wait_running(&self, what: &str) -> anyhow::Result<()> {
        wait_for(STATE_TIMEOUT, what, || async {
            (self.state().await.ok()? == "active/running").then_some(())
        })
        .await
        .with_context(|| self.journal_tail())
    }

    async fn main_pid(&self) -> anyhow::Result<u32> {
        Ok(self.prop("MainPID").await?.parse()?)
    }

    async fn restarts(&self) -> anyhow::Result<u32> {
        Ok(self.prop("NRestarts").await?.parse()?)
    }

    async fn metrics(&self) -> Option<Metrics> {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(Metrics::parse(&text))
    }

    /// The unit's journal (systemd's lines and the agent's), as text.
    async fn journal(&self) -> String {
        self.container
            .run(&format!("journalctl -u {UNIT} --no-pager -o cat"))
            .await
            .unwrap_or_else(|e| format!("{e:#}"))
    }

    fn journal_tail(&self) -> String {
        // Used in failure contexts, which cannot await: the container's console instead.
        let console = self.container.console();
        let tail: Vec<&str> = console.lines().rev().take(30).collect();
        format!(
            "container console (last lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// The README's steps, started while PostgreSQL is down: the unit stays `activating` (no
/// READY=1) and `systemctl enable --now` waits; once PostgreSQL is up the agent sends READY=1,
/// the unit becomes `active (running)` (the agent logs that it sent it), and the steps finish.
async fn starts_only_after_ready_and_not_while_postgres_is_down(
    sd: &Systemd<'_>,
    pg: &PrivatePostgres,
    site: &Site,
) -> anyhow::Result<()> {
    let log = site.dir.join("install.log");
    let mut install = sd
        .container
        .spawn("cd /root/sluice && bash /root/site/install.sh", &log)?;
    let starting = wait_for(STATE_TIMEOUT, "the unit to be starting", || async {
        (sd.state().await.ok()? == "activating/start").then_some(())
    })
    .await;
    if let Err(e) = starting {
        bail!(
            "{e:#}\ninstall steps:\n{}\njournal:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            sd.journal().await
        );
    }
    let since = Instant::now();
    while since.elapsed() < DOWN_WATCH {
        let state = sd.state().await?;
        ensure!(
            state == "activating/start",
            "with PostgreSQL down the unit must stay activating (no READY=1), but it is {state}:\n{}",
            sd.journal().await
        );
        ensure!(
            install.try_wait()?.is_none(),
            "the README's `systemctl enable --now` returned before READY=1:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pg.resume().await?;
    sd.wait_running("the unit active (running) once PostgreSQL is up")
        .await?;
    let journal = sd.journal().await;
    ensure!(
        journal.contains("Ready: notified systemd."),
        "the unit is running but the agent has not sent READY=1:\n{journal}"
    );
    let done = tokio::time::timeout(STATE_TIMEOUT, install.wait())
        .await
        .context("the README's install steps did not finish after READY=1")??;
    ensure!(
        done.success(),
        "the README's install steps failed ({done}):\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Ok(())
}

/// While it drains: the agent runs under a dynamic user, with no capabilities, no new
/// privileges, a seccomp filter, a read-only system and no /home, its password in the
/// service's credential directory.
async fn hardening_is_in_force(sd: &Systemd<'_>) -> anyhow::Result<()> {
    let pid = sd.main_pid().await?;
    let status = sd.container.run(&format!("cat /proc/{pid}/status")).await?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    ensure!(
        field("Seccomp") == "2",
        "no seccomp filter (Seccomp: {})",
        field("Seccomp")
    );
    ensure!(field("NoNewPrivs") == "1", "NoNewPrivileges not in force");
    ensure!(
        field("CapEff") == "0000000000000000",
        "the agent holds capabilities: {}",
        field("CapEff")
    );
    let uid: u32 = field("Uid").parse()?;
    ensure!(
        (61184..=65519).contains(&uid),
        "not a DynamicUser uid (61184–65519): {uid}"
    );
    let (wrote, out) = sd
        .container
        .exec(&format!("nsenter -t {pid} -m touch /usr/sluice-test"))
        .await?;
    ensure!(
        !wrote && out.contains("Read-only file system"),
        "ProtectSystem=strict: /usr is writable in the agent's view: {out}"
    );
    // ProtectHome=: /root (which holds the install tree here) is empty in the agent's view.
    let home = sd
        .container
        .run(&format!("nsenter -t {pid} -m ls -A /root"))
        .await?;
    ensure!(
        home.trim().is_empty(),
        "ProtectHome: the agent sees /root's files: {home}"
    );
    sd.container
        .run(&format!(
            "nsenter -t {pid} -m test -s /run/credentials/{UNIT}/db-password"
        ))
        .await
        .context("LoadCredential=: the password is not in the service's credential directory")?;
    Ok(())
}

/// `systemctl reload` with a new rate in agent.toml: the agent's rate follows, same process.
async fn reload_applies_a_new_rate(
    sd: &Systemd<'_>,
    env: &TestEnv,
    site: &Site,
) -> anyhow::Result<u32> {
    wait_for(DRAIN_TIMEOUT, "the agent to store receipts", || async {
        (env.count_receipts_or_zero().await >= 200).then_some(())
    })
    .await?;
    let rate = |want: u32| async move {
        let got = sd
            .metrics()
            .await?
            .sum("sluice_rate_rows_per_second", &[])?;
        (got == f64::from(want)).then_some(())
    };
    wait_for(
        STATE_TIMEOUT,
        &format!("the agent's rate at {RATE}"),
        || rate(RATE),
    )
    .await?;
    let pid = sd.main_pid().await?;
    sd.container
        .write("/etc/sluice/agent.toml", &(site.toml)(RELOADED_RATE))
        .await?;
    sd.container
        .run(&format!("systemctl reload {UNIT}"))
        .await?;
    wait_for(
        STATE_TIMEOUT,
        &format!("sluice_rate_rows_per_second at {RELOADED_RATE} after systemctl reload"),
        || rate(RELOADED_RATE),
    )
    .await?;
    ensure!(
        sd.main_pid().await? == pid,
        "systemctl reload replaced the process"
    );
    Ok(pid)
}

/// `systemctl stop` in the middle of the drain: exit 0 within TimeoutStopSec; after a start
/// the rest drains (the oracle later proves nothing was lost or written twice).
async fn stop_mid_drain_loses_nothing(
    sd: &Systemd<'_>,
    env: &TestEnv,
    pid: u32,
) -> anyhow::Result<()> {
    wait_for(DRAIN_TIMEOUT, "the agent to store 800 receipts", || async {
        (env.count_receipts_or_zero().await >= 800).then_some(())
    })
    .await?;
    sd.container.run(&format!("systemctl stop {UNIT}")).await?;
    let stored = env.count_receipts().await?;
    ensure!(
        stored < RECEIPTS as i64,
        "the backlog drained before the stop ({stored}): not a stop mid-drain"
    );
    let (result, status) = (sd.prop("Result").await?, sd.prop("ExecMainStatus").await?);
    ensure!(
        result == "success" && status == "0",
        "systemctl stop mid-drain: Result={result}, exit {status}:\n{}",
        sd.journal().await
    );
    let state = sd.state().await?;
    ensure!(
        state == "inactive/dead",
        "after systemctl stop the unit is {state}"
    );
    let (gone, _) = sd.container.exec(&format!("test ! -e /proc/{pid}")).await?;
    ensure!(gone, "the agent's process {pid} outlived systemctl stop");
    sd.container.run(&format!("systemctl start {UNIT}")).await?;
    sd.wait_running("the unit running again after the stop")
        .await?;
    if let Err(e) = env.wait_drained(RECEIPTS as i64, DRAIN_TIMEOUT).await {
        bail!("{e:#}\njournal:\n{}", sd.journal().await);
    }
    Ok(())
}

/// A transaction holds `sluice.receipts` locked for longer than the watchdog would take to
/// kill a stuck agent: the agent's write waits (seen in pg_stat_activity), the unit stays
/// running with the same process and no restart, and the backlog drains once the lock goes.
async fn a_held_table_lock_is_waited_out_without_a_restart(
    sd: &Systemd<'_>,
    env: &TestEnv,
    oracle: &mut Oracle,
) -> anyhow::Result<()> {
    let (pid, restarts) = (sd.main_pid().await?, sd.restarts().await?);
    let mut locker = sqlx::PgConnection::connect(&env.database_url).await?;
    sqlx::query("BEGIN").execute(&mut locker).await?;
    sqlx::query("LOCK TABLE sluice.receipts IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await?;
    let more = Generator::new(141).receipts(LOCKED_RECEIPTS);
    env.upload_acknowledged(oracle, &more, "50").await?;
    wait_for(
        STATE_TIMEOUT,
        "the agent's write waiting on the lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'",
        )
        .bind(ROLE)
        .fetch_one(&env.pool)
        .await
        .ok()?;
            (waiting > 0).then_some(())
        },
    )
    .await?;
    let since = Instant::now();
    while since.elapsed() < LOCK_HELD {
        let (state, now_pid, now_restarts) = (
            sd.state().await?,
            sd.main_pid().await?,
            sd.restarts().await?,
        );
        ensure!(
            state == "active/running" && now_pid == pid && now_restarts == restarts,
            "during a held table lock ({:?} in) the agent was restarted: {state}, pid {pid} → \
             {now_pid}, restarts {restarts} → {now_restarts}:\n{}",
            since.elapsed(),
            sd.journal().await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sqlx::query("COMMIT").execute(&mut locker).await?;
    env.wait_drained((RECEIPTS + LOCKED_RECEIPTS) as i64, DRAIN_TIMEOUT)
        .await?;
    ensure!(
        sd.main_pid().await? == pid && sd.restarts().await? == restarts,
        "the agent was restarted around the held lock"
    );
    Ok(())
}

/// The test-only fault switch in a drop-in: the pipeline's progress stops reaching the
/// watchdog, systemd kills the agent (Watchdog timeout) and restarts it. Then the switch goes.
async fn a_stalled_pipeline_is_killed_by_the_watchdog_and_restarted(
    sd: &Systemd<'_>,
) -> anyhow::Result<()> {
    let dropin = format!("{DROPIN_DIR}/20-test-stall.conf");
    sd.container
        .write(
            &dropin,
            &format!("[Service]\nEnvironment={}=1\n", sluice_agent::STALL_SWITCH),
        )
        .await?;
    sd.container
        .run(&format!(
            "systemctl daemon-reload && systemctl restart {UNIT}"
        ))
        .await?;
    let (pid, restarts) = (sd.main_pid().await?, sd.restarts().await?);
    wait_for(
        Duration::from_secs(90),
        "systemd to restart the stalled agent",
        || async { (sd.restarts().await.ok()? > restarts).then_some(()) },
    )
    .await
    .with_context(|| format!("restarts still {restarts}"))?;
    let journal = sd.journal().await;
    ensure!(
        journal.contains("Watchdog timeout"),
        "the restart was not the watchdog's:\n{journal}"
    );
    ensure!(
        journal.contains("Pipeline made no progress"),
        "the agent did not say its pipeline stalled:\n{journal}"
    );
    sd.container
        .run(&format!(
            "rm {dropin} && systemctl daemon-reload && systemctl reset-failed {UNIT}; systemctl restart {UNIT}"
        ))
        .await?;
    sd.wait_running("the unit running again without the switch")
        .await?;
    ensure!(
        sd.main_pid().await? != pid,
        "the stalled process is still the main one"
    );
    Ok(())
}

/// `systemd-analyze security` inside the container, on the installed unit: at most 2.0.
async fn security_exposure_is_at_most_2(sd: &Systemd<'_>) -> anyhow::Result<()> {
    let (ok, out) = sd
        .container
        .exec(&format!("systemd-analyze security --no-pager {UNIT}"))
        .await?;
    let overall = out
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for"))
        .and_then(|(_, rest)| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no overall exposure in:\n{out}"))?;
    ensure!(
        ok && overall <= 2.0,
        "systemd-analyze security: exposure {overall} > 2.0:\n{out}"
    );
    Ok(())
}

/// Every line the agent wrote is one journal entry holding one whole JSON object.
async fn the_journal_holds_one_json_line_per_entry(sd: &Systemd<'_>) -> anyhow::Result<()> {
    let out = sd
        .container
        .run(&format!("journalctl -u {UNIT} --no-pager -o json"))
        .await?;
    let entries: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("journalctl -o json")?;
    let agent: Vec<&Value> = entries
        .iter()
        .filter(|e| e["SYSLOG_IDENTIFIER"] == "sluice-agent")
        .collect();
    let lines: Vec<String> = agent.iter().map(|e| message(e)).collect();
    ensure!(
        lines.len() >= 10,
        "only {} agent entries in the journal",
        lines.len()
    );
    for line in &lines {
        let parsed: Value = serde_json::from_str(line)
            .with_context(|| format!("a journal entry is not one JSON object: {line:?}"))?;
        ensure!(
            parsed["level"].is_string() && parsed["message"].is_string(),
            "a journal entry lacks level/message: {line}"
        );
    }
    ensure!(
        lines.iter().any(|l| l.contains("Ready: notified systemd.")),
        "no READY=1 line among the agent's entries"
    );
    Ok(())
}

/// An invalid agent.toml: the start fails (exit 64) with the problem in the journal, and
/// systemd does not restart it (`RestartPreventExitStatus=64`), past `RestartSec=5`.
async fn a_refused_configuration_is_not_restarted(
    sd: &Systemd<'_>,
    site: &Site,
) -> anyhow::Result<()> {
    let invalid = (site.toml)(RATE).replace("wait_seconds = 1", "wait_seconds = 99");
    sd.container
        .write("/etc/sluice/agent.toml", &invalid)
        .await?;
    let (started, _) = sd
        .container
        .exec(&format!("systemctl restart {UNIT}"))
        .await?;
    ensure!(!started, "the agent started with an invalid configuration");
    let restarts = sd.restarts().await?;
    let since = Instant::now();
    while since.elapsed() < REFUSED_WATCH {
        let (state, now) = (sd.state().await?, sd.restarts().await?);
        ensure!(
            state == "failed/failed" && now == restarts,
            "a refused configuration was restarted: {state}, restarts {restarts} → {now}:\n{}",
            sd.journal().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, journal) = (sd.prop("ExecMainStatus").await?, sd.journal().await);
    ensure!(
        status == "64",
        "a refused configuration exited {status}, not 64"
    );
    ensure!(
        journal.contains("queue.wait_seconds: 99"),
        "the journal does not name the problem:\n{journal}"
    );
    Ok(())
}

/// A journal entry's MESSAGE (text, or the byte array journald uses for non-UTF-8).
fn message(entry: &Value) -> String {
    match &entry["MESSAGE"] {
        Value::String(s) => s.clone(),
        Value::Array(bytes) => bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .map(char::from)
            .collect(),
        _ => String::new(),
    }
}

/// The role the agent logs in as owns the test's database and must give its password over
/// TCP (scram-sha-256): a drain proves the credential reached it.
async fn require_password_for_the_agent_role(
    pg: &PrivatePostgres,
    env: &TestEnv,
    password: &str,
) -> anyhow::Result<()> {
    let mut admin = sqlx::PgConnection::connect(&pg.url()).await?;
    sqlx::query(&format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("ALTER DATABASE {} OWNER TO {ROLE}", env.name))
        .execute(&mut admin)
        .await?;
    let hba: String = sqlx::query_scalar("SHOW hba_file")
        .fetch_one(&mut admin)
        .await?;
    let old = std::fs::read_to_string(&hba).with_context(|| format!("reading {hba}"))?;
    std::fs::write(
        &hba,
        format!("host all {ROLE} 127.0.0.1/32 scram-sha-256\n{old}"),
    )?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await?;
    let without = env.database_url.replace("postgres@", &format!("{ROLE}@"));
    let refused = wait_for(
        Duration::from_secs(10),
        "the password rule in force",
        || {
            let url = without.clone();
            async move {
                sqlx::PgConnection::connect(&url)
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    refused.context("the agent's role connects without a password")?;
    Ok(())
}

/// The README's "Installing as a systemd service" shell block.
fn readme_install_block(readme: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(readme)?;
    let section = text
        .split_once("## Installing as a systemd service")
        .context("README: no \"Installing as a systemd service\" section")?
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .context("README: no sh block in the systemd section")?
        .0;
    Ok(block.to_owned())
}

/// The README's steps as run by root in the container, from a tree laid out as the
/// repository (`deploy/`, `target/release/sluice-agent`): `sudo` is root already, `sudoedit`
/// puts the file the test prepared in place, the binary is built on the host (`cargo build`
/// is skipped) and `journalctl -f` does not follow. Nothing else is changed.
fn install_script(block: &str) -> String {
    let mut out = String::from(
        "set -euxo pipefail\n\
         sudo() { \"$@\"; }\n\
         sudoedit() { cp \"/root/site/edits/$(basename \"$1\")\" \"$1\"; }\n\
         cargo() { echo \"(built on the host: cargo $*)\"; }\n\
         journalctl() { command journalctl --no-pager \"${@/-f/-n20}\"; }\n",
    );
    out.push_str(block);
    out
}
