//! A Debian container whose PID 1 is systemd ([`Container`]), for `make test-systemd`: its root
//! comes from `deploy/systemd/container.sh root` (a cached debootstrap), it boots with
//! `systemd-nspawn --volatile=overlay` (the cached tree stays untouched; every write goes to a
//! throwaway tmpfs) and shares the host's network namespace, so the agent inside reaches
//! PostgreSQL and the SQS-API server on the host's loopback. Commands run inside through
//! `nsenter` on the container's PID 1 (there is no host systemd, hence no machined).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::{repo_root, wait_for};

/// How long the container may take to boot (it takes about a second).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one command inside may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(240);

/// A booted container; dropping it powers it off (then kills it).
#[derive(Debug)]
pub struct Container {
    nspawn: tokio::process::Child,
    /// The container's PID 1 (systemd), as the host sees it.
    leader: u32,
    log: PathBuf,
}

/// What `deploy/systemd/container.sh` answers: the cached root, or why the test cannot run here.
#[derive(Debug)]
pub enum RootTree {
    Ready(PathBuf),
    /// The script's reason (exit 3): not root, not Linux, no archive, …
    Skipped(String),
}

/// The container's root tree, bootstrapped on first use (`container.sh root`).
pub async fn container_root() -> anyhow::Result<RootTree> {
    let script = repo_root().join("deploy/systemd/container.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("root")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match out.status.code() {
        Some(0) => Ok(RootTree::Ready(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        ))),
        Some(3) => Ok(RootTree::Skipped(stderr)),
        _ => bail!(
            "{} root failed ({}):\n{stderr}",
            script.display(),
            out.status
        ),
    }
}

impl Container {
    /// Boots `root` with `binds` (host path, path inside) mounted read-only; returns once
    /// systemd inside reports the boot finished. Its console goes to `log`.
    pub async fn boot(root: &Path, binds: &[(&Path, &str)], log: &Path) -> anyhow::Result<Self> {
        let console =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = tokio::process::Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(root)
            .args(["--boot", "--volatile=overlay", "--console=read-only"])
            // No host systemd to register with or to make a scope unit.
            .args(["--register=no", "--keep-unit", "--system-call-filter=bpf"]);
        for (host, inside) in binds {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        cmd.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .kill_on_drop(true);
        let mut nspawn = cmd.spawn().context("starting systemd-nspawn")?;
        let pid = nspawn.id().context("systemd-nspawn has no pid")?;
        let leader = wait_for(BOOT_TIMEOUT, "the container's PID 1", || {
            let exited = nspawn.try_wait().ok().flatten().is_some();
            async move {
                if exited {
                    return Some(None);
                }
                leader_of(pid).map(Some)
            }
        })
        .await?;
        let Some(leader) = leader else {
            bail!(
                "systemd-nspawn exited during boot; console:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        let container = Self {
            nspawn,
            leader,
            log: log.to_owned(),
        };
        // `running` or `degraded` (a unit of the minimal image failed): booted either way.
        // Until systemd's bus socket exists, systemctl cannot ask: retried.
        let state = container
            .run(
                "for _ in $(seq 120); do \
                   s=\"$(timeout 60 systemctl is-system-running --wait 2>&1)\"; \
                   case \"$s\" in running|degraded) break;; esac; sleep 0.5; \
                 done; echo \"$s\"",
            )
            .await?;
        let state = state.trim();
        if state != "running" && state != "degraded" {
            bail!(
                "the container did not finish booting: {state}; console:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        Ok(container)
    }

    /// Runs `script` with bash inside, as root with a clean environment; its exit status and
    /// output (stdout and stderr).
    pub async fn exec(&self, script: &str) -> anyhow::Result<(bool, String)> {
        let out = tokio::time::timeout(EXEC_TIMEOUT, self.command(script).output())
            .await
            .with_context(|| format!("{script:?} took over {EXEC_TIMEOUT:?} in the container"))?
            .context("running nsenter")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    /// [`Container::exec`] that must succeed; its stdout and stderr.
    pub async fn run(&self, script: &str) -> anyhow::Result<String> {
        match self.exec(script).await? {
            (true, text) => Ok(text),
            (false, text) => bail!("in the container, {script:?} failed:\n{text}"),
        }
    }

    /// Starts `script` inside without waiting for it; its output goes to `log` (on the host).
    pub fn spawn(&self, script: &str, log: &Path) -> anyhow::Result<tokio::process::Child> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.command(script);
        cmd.stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        cmd.spawn().context("running nsenter")
    }

    /// A systemd property of a unit (`systemctl show -P`).
    pub async fn property(&self, unit: &str, name: &str) -> anyhow::Result<String> {
        Ok(self
            .run(&format!("systemctl show -P {name} {unit}"))
            .await?
            .trim()
            .to_owned())
    }

    /// Writes `content` to `path` inside (mode 0644, directories created).
    pub async fn write(&self, path: &str, content: &str) -> anyhow::Result<()> {
        let mut cmd = self.command(&format!(
            "mkdir -p \"$(dirname '{path}')\" && cat > '{path}' && chmod 0644 '{path}'"
        ));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("running nsenter")?;
        let mut stdin = child.stdin.take().context("nsenter's stdin")?;
        tokio::io::AsyncWriteExt::write_all(&mut stdin, content.as_bytes()).await?;
        drop(stdin);
        let out = tokio::time::timeout(EXEC_TIMEOUT, child.wait_with_output()).await??;
        if !out.status.success() {
            bail!(
                "writing {path} in the container: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The container's console so far (for failure messages).
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn command(&self, script: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.args(["-t", &self.leader.to_string(), "-a", "--"])
            .args(["/usr/bin/env", "-i"])
            .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .args(["/bin/bash", "-c", script])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks systemd-nspawn to power the container off; SIGKILL if it takes long.
        if let Some(pid) = self.nspawn.id() {
            let _ = crate::signal(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..100 {
                if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.nspawn.start_kill();
    }
}

/// The container's PID 1 as the host sees it: systemd-nspawn's child, once it runs systemd.
fn leader_of(nspawn: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "systemd")
        })
}
