//! The real `sluice-ingest` binary against a test's queue and upload records table: for what
//! only a process shows (its log, its resident memory).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{binary, free_local_addr, wait_for, ChildProcess, Launch, Signal, TestEnv};

/// A running `sluice-ingest --listen addr` (killed if dropped).
#[derive(Debug)]
pub struct IngestProcess {
    pub process: ChildProcess,
    pub addr: SocketAddr,
}

impl IngestProcess {
    /// SIGTERM, and waits for the exit (requests in progress finish).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.process
            .stop(Signal::SIGTERM, Duration::from_secs(10))
            .await?;
        Ok(())
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl TestEnv {
    /// Starts the `sluice-ingest` binary on a free port with this test's queue, upload records
    /// table and local endpoints, logging to `log` in the test's directory; returns once it
    /// answers `/healthz`.
    pub async fn start_ingest_process(&self, log: &str) -> anyhow::Result<IngestProcess> {
        self.start_ingest_process_with(log, &[]).await
    }

    /// [`TestEnv::start_ingest_process`] with `extra` environment variables on top.
    pub async fn start_ingest_process_with(
        &self,
        log: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<IngestProcess> {
        let addr = free_local_addr()?;
        std::fs::create_dir_all(self.dir())?;
        let table = self.status_table();
        let endpoint = self.servers.sqs_endpoint.as_str();
        let launch = Launch {
            log: self.dir().join(log),
            env: [
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
                ("NO_COLOR", "1"),
                ("SLUICE_QUEUE_URL", self.queue_url.as_str()),
                ("SLUICE_SQS_ENDPOINT", endpoint),
                ("SLUICE_STATUS_TABLE", table.as_str()),
                ("SLUICE_DYNAMODB_ENDPOINT", endpoint),
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Launch::default()
        };
        let addr_text = addr.to_string();
        let process = ChildProcess::spawn(
            &binary("sluice-ingest")?,
            &[OsStr::new("--listen"), OsStr::new(&addr_text)],
            &launch,
        )?;
        let ingest = IngestProcess { process, addr };
        let http = reqwest::Client::new();
        let healthz = ingest.url("/healthz");
        wait_for(
            Duration::from_secs(30),
            "sluice-ingest to listen",
            || async {
                http.get(&healthz)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            },
        )
        .await?;
        Ok(ingest)
    }
}
