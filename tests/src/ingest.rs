//! The ingest API in this process ([`IngestHandle`]), on port 0 against the test's queue, and
//! a typed client for `POST /v1/batches`.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::oracle::Oracle;
use crate::{sqs_client, TestEnv};

impl TestEnv {
    /// Uploads `receipts` through an in-process ingest in chunks of `chunk` receipts (2,000
    /// per request, messages up to 1 MiB) and tells `oracle` what each 202 acknowledged.
    pub async fn upload_acknowledged(
        &self,
        oracle: &mut Oracle,
        receipts: &[serde_json::Value],
        chunk: &str,
    ) -> anyhow::Result<()> {
        let ingest = self
            .start_ingest(&[
                ("SLUICE_MAX_RECEIPTS_PER_CHUNK", chunk),
                ("SLUICE_MAX_MESSAGE_BYTES", "1048576"),
            ])
            .await?;
        for part in receipts.chunks(2_000) {
            let (status, answer) = ingest.upload_json(part).await?;
            anyhow::ensure!(status == 202, "upload refused: {answer}");
            oracle.acknowledge(part);
        }
        Ok(())
    }

    /// Starts the ingest API in this process on port 0, with `vars` as its environment
    /// (`SLUICE_QUEUE_URL` and `SLUICE_SQS_ENDPOINT` are filled in, and so are
    /// `SLUICE_STATUS_TABLE` (this test's table, created) and `SLUICE_DYNAMODB_ENDPOINT`;
    /// an empty `SLUICE_STATUS_TABLE` runs without upload records).
    pub async fn start_ingest(&self, vars: &[(&str, &str)]) -> anyhow::Result<IngestHandle> {
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.entry("SLUICE_QUEUE_URL".into())
            .or_insert_with(|| self.queue_url.clone());
        env.entry("SLUICE_SQS_ENDPOINT".into())
            .or_insert_with(|| self.servers.sqs_endpoint.clone());
        env.entry("SLUICE_STATUS_TABLE".into())
            .or_insert_with(|| self.status_table());
        env.entry("SLUICE_DYNAMODB_ENDPOINT".into())
            .or_insert_with(|| self.servers.sqs_endpoint.clone());
        let cfg = sluice_cloud::IngestConfig::from_lookup(|k| env.get(k).cloned())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // The endpoint the API was configured with (a test may put a proxy there).
        let client = sqs_client(
            cfg.sqs_endpoint
                .as_deref()
                .unwrap_or(&self.servers.sqs_endpoint),
        );
        let records = match (&cfg.status_table, &cfg.dynamodb_endpoint) {
            (Some(table), Some(endpoint)) => Some(self.records(table, endpoint).await?),
            _ => None,
        };
        let app = sluice_cloud::app(sluice_cloud::state(cfg, client, records));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum_serve(listener, app, s).await;
        });
        Ok(IngestHandle {
            addr,
            http: reqwest::Client::new(),
            _stop: stop.drop_guard(),
        })
    }
}

async fn axum_serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// A running in-process ingest API.
#[derive(Debug)]
pub struct IngestHandle {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl IngestHandle {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs `{"receipts": …}` as JSON.
    pub async fn upload_json(
        &self,
        receipts: &[serde_json::Value],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let body = serde_json::to_vec(&serde_json::json!({ "receipts": receipts }))?;
        self.post(body, "application/json", &[]).await
    }

    /// POSTs a raw body with a content type and extra headers; returns status and JSON body.
    pub async fn post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = self
            .http
            .post(self.url("/v1/batches"))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, json))
    }
}
