//! Child processes of the harness and the demo: started with their output in a log file,
//! signalled with kill(2), waited for with a deadline, killed if dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// How a child is started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Where its stdout and stderr go (created, or truncated).
    pub log: PathBuf,
    /// Added to the environment it inherits.
    pub env: Vec<(String, String)>,
    /// Removed from the environment it inherits (before `env` is added).
    pub env_remove: Vec<String>,
    /// Its own process group, so that Ctrl-C at the terminal reaches only the parent, which
    /// then stops it in order.
    pub own_process_group: bool,
}

/// A running child, killed if dropped.
#[derive(Debug)]
pub struct ChildProcess {
    child: tokio::process::Child,
    name: String,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `program` with `args`.
    pub fn spawn(program: &Path, args: &[&OsStr], launch: &Launch) -> anyhow::Result<ChildProcess> {
        let out = std::fs::File::create(&launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(program);
        for k in &launch.env_remove {
            cmd.env_remove(k);
        }
        cmd.args(args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        if launch.own_process_group {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Self {
            child,
            name,
            log: launch.log.clone(),
        })
    }

    /// Its process id while it runs (`None` once it has been waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The log file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} already exited", self.name))?;
        signal(pid, sig)
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking on {}", self.name))
    }

    /// Waits up to `timeout` for it to exit.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("{} still running after {timeout:?}", self.name))?
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// Sends `sig` and waits up to `timeout` for the exit.
    pub async fn stop(&mut self, sig: Signal, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(sig)?;
        self.wait(timeout)
            .await
            .with_context(|| format!("after {sig}"))
    }

    /// SIGKILL, and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("killing {}", self.name))
    }
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
    nix::sys::signal::kill(Pid::from_raw(raw), sig).with_context(|| format!("kill -{sig} {pid}"))
}
