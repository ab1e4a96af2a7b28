//! The agent under test, two ways: in this process ([`AgentHandle`], for tests that drive the
//! pipeline), or as the real `sluice-agent` binary ([`AgentProcess`]: its own metrics
//! registry, signals, environment and exit code), plus its one-shot CLI commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use sluice_agent::config::AgentConfig;
use tokio_util::sync::CancellationToken;

use crate::{
    binary, free_local_addr, sqs_client, wait_for, ChildProcess, Launch, Metrics, TestEnv,
};

/// Environment for a `sluice-agent` process: throwaway AWS credentials, no instance metadata.
pub const AGENT_PROCESS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

impl TestEnv {
    /// Starts an agent in this process with the test's SQS credentials.
    pub async fn start_agent(&self, cfg: AgentConfig) -> anyhow::Result<AgentHandle> {
        let store = sluice_agent::Store::connect_lazy(&cfg.database)?;
        let queue = sluice_agent::Queue::new(
            sqs_client(&self.servers.sqs_endpoint),
            cfg.queue.url.clone(),
            cfg.queue.dead_letter_url.clone(),
        );
        let shutdown = CancellationToken::new();
        let running = sluice_agent::start(
            cfg,
            sluice_agent::Clients { store, queue },
            shutdown.clone(),
        )
        .await?;
        Ok(AgentHandle {
            server_addr: running.server_addr,
            shutdown,
            running: Some(running),
        })
    }

    /// Starts `sluice-agent run` on `{name}.toml` in [`TestEnv::dir`]: this test's config
    /// plus `extra`, with `/metrics` on a free port. It logs to `{name}.log` next to it.
    pub fn spawn_agent(&self, name: &str, extra: &str) -> anyhow::Result<AgentProcess> {
        self.spawn_agent_with_env(name, extra, &[])
    }

    /// [`TestEnv::spawn_agent`] with JSON logs at `info` (what log assertions read), waiting
    /// until its HTTP server answers.
    pub async fn launch_agent(&self, name: &str, extra: &str) -> anyhow::Result<AgentProcess> {
        let agent = self.spawn_agent(
            name,
            &format!("{extra}\n[log]\nformat = \"json\"\nlevel = \"info\""),
        )?;
        agent.wait_answering(Duration::from_secs(30)).await?;
        Ok(agent)
    }

    /// [`TestEnv::launch_agent`] without `queue.dead_letter_url`: an operator who has no
    /// dead-letter queue (refused rows then stay on the queue for its redrive policy).
    pub async fn launch_agent_without_dlq(
        &self,
        name: &str,
        extra: &str,
    ) -> anyhow::Result<AgentProcess> {
        let addr = free_local_addr()?;
        let extra = format!("{extra}\n[log]\nformat = \"json\"\nlevel = \"info\"");
        let toml: String = self
            .agent_toml(&listen_on(&extra, addr))
            .lines()
            .filter(|l| !l.starts_with("dead_letter_url"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::create_dir_all(self.dir())?;
        let config = self.dir().join(format!("{name}.toml"));
        std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
        let launch = Launch {
            log: config.with_extension("log"),
            ..Launch::default()
        };
        let agent = AgentProcess::spawn(&config, addr, launch)?;
        agent.wait_answering(Duration::from_secs(30)).await?;
        Ok(agent)
    }

    /// [`TestEnv::spawn_agent`] with `env` added to the process's environment.
    pub fn spawn_agent_with_env(
        &self,
        name: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        let addr = free_local_addr()?;
        let config = self.write_agent_config(&format!("{name}.toml"), &listen_on(extra, addr))?;
        let launch = Launch {
            log: config.with_extension("log"),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Launch::default()
        };
        AgentProcess::spawn(&config, addr, launch)
    }

    /// Rewrites a running agent's config file: this test's config plus `extra`, `/metrics` where
    /// they are now. SIGHUP makes the agent read it.
    pub fn rewrite_agent_config(&self, agent: &AgentProcess, extra: &str) -> anyhow::Result<()> {
        let path = agent.config();
        std::fs::write(path, self.agent_toml(&listen_on(extra, agent.addr())))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Runs `sluice-agent ARGS` to completion (a CLI command such as `status` or `dlq list`).
    pub async fn agent_cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let out = tokio::process::Command::new(binary("sluice-agent")?)
            .args(args)
            .envs(AGENT_PROCESS_ENV.iter().copied())
            .env_remove("SLUICE_CONFIG")
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .with_context(|| format!("sluice-agent {args:?} did not finish"))?
            .with_context(|| format!("running sluice-agent {args:?}"))
    }
}

/// `extra` with `server.listen` set to `addr` (later keys win in [`TestEnv::agent_toml`]).
fn listen_on(extra: &str, addr: SocketAddr) -> String {
    format!("{extra}\n[server]\nlisten = \"{addr}\"")
}

/// A running in-process agent.
#[derive(Debug)]
pub struct AgentHandle {
    pub server_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    running: Option<sluice_agent::RunningAgent>,
}

impl AgentHandle {
    /// Cancels (as SIGTERM does) and waits for the agent to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.running.take() {
            Some(r) => r.wait().await,
            None => Ok(()),
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A `sluice-agent run` process with its config file and its HTTP address (`server.listen`),
/// killed if dropped.
#[derive(Debug)]
pub struct AgentProcess {
    process: ChildProcess,
    config: PathBuf,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl AgentProcess {
    /// Starts the `sluice-agent` binary built with this executable on `config`, whose
    /// `server.listen` is `addr`. [`AGENT_PROCESS_ENV`] comes before `launch.env`, and the
    /// caller's own systemd notification socket is not passed on unless `launch.env` names one.
    pub fn spawn(config: &Path, addr: SocketAddr, mut launch: Launch) -> anyhow::Result<Self> {
        let bin = binary("sluice-agent")?;
        launch.env.splice(
            0..0,
            AGENT_PROCESS_ENV
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        launch
            .env_remove
            .extend(["NOTIFY_SOCKET".to_owned(), "WATCHDOG_USEC".to_owned()]);
        let process = ChildProcess::spawn(
            &bin,
            &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
            &launch,
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            process,
            config: config.to_owned(),
            addr,
            http,
        })
    }

    /// Its config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Where its HTTP server (`/metrics`, `/healthz`, `/readyz`) listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process, for what is common to every child (waiting, the log file).
    pub fn process_mut(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Sends `sig` (SIGHUP: reload the config; SIGSTOP/SIGCONT: freeze and resume).
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        self.process.signal(sig)
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.process.stop(Signal::SIGTERM, timeout).await
    }

    /// `kill -9`, and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill().await
    }

    /// GETs `path` from its HTTP server: status and body, `None` while nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    /// Waits up to `timeout` until its HTTP server answers (`/healthz`, any status).
    pub async fn wait_answering(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_for(timeout, "the agent's /healthz", || async {
            self.get("/healthz").await.map(|_| ())
        })
        .await
    }

    /// One scrape of `/metrics`; `None` unless it answers 200.
    pub async fn metrics(&self) -> Option<Metrics> {
        match self.get("/metrics").await? {
            (200, text) => Some(Metrics::parse(&text)),
            _ => None,
        }
    }

    /// A metric summed over the series that carry `labels` ([`Metrics::sum`]); `None` while the
    /// agent does not answer or has no such series.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics().await?.sum(name, labels)
    }

    /// A counter's total over its labels: 0 before its first increment, NaN (so that no
    /// comparison holds) while the agent does not answer.
    pub async fn counter(&self, name: &str) -> f64 {
        self.metrics().await.map_or(f64::NAN, |m| m.counter(name))
    }

    /// SIGTERM; fails (with its log) unless the agent exits 0 within a minute.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = self.terminate(Duration::from_secs(60)).await?;
        anyhow::ensure!(
            status.success(),
            "agent exit {status}; log:\n{}",
            self.log_text()
        );
        Ok(())
    }
}
