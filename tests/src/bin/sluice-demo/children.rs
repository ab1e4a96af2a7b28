//! The demo's two children, `sluice-agent run` and `sluice-ingest`: started in their own
//! process groups (so Ctrl-C reaches only the demo), each with a log and a pid file, watched,
//! and always stopped by the demo itself; and the signals that mean "stop" to the demo.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sluice_e2e::{AgentProcess, ChildProcess, Launch, Signal};
use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};

use crate::format::secs;
use crate::paths::Paths;
use crate::{STARTUP_TIMEOUT, STOP_TIMEOUT};

/// The children of this run, each with its pid file.
#[derive(Debug, Default)]
pub(crate) struct Children {
    agent: Option<(AgentProcess, PathBuf)>,
    ingest: Option<(ChildProcess, PathBuf)>,
}

impl Children {
    /// Starts `sluice-agent run` on the config at [`Paths::agent_toml`], whose `server.listen`
    /// is `addr`.
    pub(crate) fn start_agent(
        &mut self,
        paths: &Paths,
        addr: SocketAddr,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let agent = AgentProcess::spawn(&paths.agent_toml(), addr, launch(paths, "agent", env))?;
        let pid_file = write_pid_file(paths, "agent", agent.pid());
        self.agent = Some((agent, pid_file));
        Ok(())
    }

    /// Starts `sluice-ingest --listen addr`.
    pub(crate) fn start_ingest(
        &mut self,
        paths: &Paths,
        addr: SocketAddr,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let addr = addr.to_string();
        let ingest = ChildProcess::spawn(
            &paths.ingest_bin,
            &["--listen".as_ref(), addr.as_ref()],
            &launch(paths, "ingest", env),
        )?;
        let pid_file = write_pid_file(paths, "ingest", ingest.pid());
        self.ingest = Some((ingest, pid_file));
        Ok(())
    }

    /// Fails (with the tail of its log) if a child has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        let agent = self.agent.as_mut().map(|(a, _)| ("agent", a.process_mut()));
        let ingest = self.ingest.as_mut().map(|(p, _)| ("ingest", p));
        for (name, p) in agent.into_iter().chain(ingest) {
            match p.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => bail!(
                    "sluice-{name} exited unexpectedly ({}); last lines of {}:\n{}",
                    describe(status),
                    p.log_path().display(),
                    log_tail(p.log_path(), 20)
                ),
                Err(e) => bail!("cannot check on sluice-{name}: {e:#}"),
            }
        }
        Ok(())
    }

    /// Stops the agent (it may still be finishing a batch), then the API. Returns problems.
    pub(crate) async fn stop(&mut self, signals: &mut Signals) -> Vec<String> {
        let mut problems = Vec::new();
        if self.agent.is_some() || self.ingest.is_some() {
            eprintln!("\n== Stopping");
        }
        if let Some((mut agent, pid_file)) = self.agent.take() {
            let p = agent.process_mut();
            problems.extend(stop("sluice-agent", p, Signal::SIGTERM, signals).await);
            std::fs::remove_file(pid_file).ok();
        }
        if let Some((mut ingest, pid_file)) = self.ingest.take() {
            // sluice-ingest shuts down gracefully on Ctrl-C only; SIGTERM would kill it outright.
            problems.extend(stop("sluice-ingest", &mut ingest, Signal::SIGINT, signals).await);
            std::fs::remove_file(pid_file).ok();
        }
        problems
    }
}

/// Output to `{name}.log`; its own process group: Ctrl-C reaches only the demo, which then stops
/// the children in order and reports how they exited.
fn launch(paths: &Paths, name: &str, env: Vec<(String, String)>) -> Launch {
    Launch {
        log: paths.log(name),
        env,
        own_process_group: true,
        ..Launch::default()
    }
}

fn write_pid_file(paths: &Paths, name: &str, pid: Option<u32>) -> PathBuf {
    let pid_file = paths.pid_file(name);
    if let Some(pid) = pid {
        std::fs::write(&pid_file, format!("{pid}\n")).ok();
    }
    pid_file
}

/// Sends `sig` and waits; a second interruption or the timeout kills it. Returns a problem to
/// report, if any.
async fn stop(
    name: &str,
    p: &mut ChildProcess,
    sig: Signal,
    signals: &mut Signals,
) -> Option<String> {
    let started = Instant::now();
    if let Ok(Some(status)) = p.try_wait() {
        return Some(format!("{name} had already exited ({})", describe(status)));
    }
    eprint!("  stopping {name} ({sig}) ... ");
    let _ = std::io::stderr().flush();
    let _ = p.signal(sig);
    let waited = tokio::select! {
        r = p.wait(STOP_TIMEOUT) => r.map_err(|e| e.to_string()),
        sig = signals.recv() => Err(format!("{sig} received again")),
    };
    match waited {
        Ok(status) if status.success() => {
            eprintln!("exited 0 in {}", secs(started.elapsed()));
            None
        }
        Ok(status) => {
            eprintln!("{} in {}", describe(status), secs(started.elapsed()));
            Some(format!(
                "{name} did not stop cleanly: {} (log {})",
                describe(status),
                p.log_path().display()
            ))
        }
        Err(why) => {
            eprintln!("{why}: killing it");
            let _ = p.kill().await;
            Some(format!("{name} had to be killed: {why}"))
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// The last `n` lines of a log file.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(n)..];
            if tail.is_empty() {
                "    (empty)".to_owned()
            } else {
                tail.iter().map(|l| format!("    {l}\n")).collect()
            }
        }
        Err(e) => format!("    (cannot read: {e})"),
    }
}

/// Stops a child left over from an earlier demo that was killed outright (its pid file is still
/// there and the process still runs that binary), so it does not drain the fresh queue.
pub(crate) async fn reap_stale(pid_file: &Path, bin_name: &str) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let running = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(bin_name))
            .unwrap_or(false)
    };
    if running(pid) {
        println!("  stopping {bin_name} (pid {pid}) left over from an earlier demo");
        let _ = sluice_e2e::signal(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while running(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if running(pid) {
            let _ = sluice_e2e::signal(pid, Signal::SIGKILL);
        }
    }
    std::fs::remove_file(pid_file).ok();
}

/// Polls `url` until it answers 200, failing early if a child exits.
pub(crate) async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    children: &mut Children,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        children.check_alive()?;
        let last = match http.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if start.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "{url} did not answer 200 within {}; last: {last}",
                secs(STARTUP_TIMEOUT)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ctrl-C, SIGTERM and SIGHUP (terminal closed), all meaning "stop".
#[derive(Debug)]
pub(crate) struct Signals {
    int: UnixSignal,
    term: UnixSignal,
    hup: UnixSignal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
        })
    }

    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "Ctrl-C",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
