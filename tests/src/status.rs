//! Upload status in tests: the test's status queue (with its DLQ), a `sluice-ingest` process
//! folding it and sending webhooks, an agent reporting on it, the status endpoint read with
//! bounded polls, and a loopback webhook receiver that records what it is sent, its signatures
//! checked with an HMAC of its own.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac as _};

use sluice_cloud::records::{Records, UploadRecord};
use sluice_cloud::report::StatusService;

use crate::{create_queue_pair, wait_for, AgentProcess, IngestProcess, QueuePair, TestEnv};

/// The webhook secret the status tests give the ingest.
pub const WEBHOOK_SECRET: &str = "status-test-webhook-secret";

impl TestEnv {
    /// This test's status queue, `{name}-status` (the URL `{queue_url}-status`), with a DLQ
    /// that takes a message on its third receive; messages hide 2 s once received. Both go
    /// with the test's other queues when the [`TestEnv`] is dropped.
    pub async fn create_status_queue(&self) -> anyhow::Result<QueuePair> {
        create_queue_pair(&self.sqs, &format!("{}-status", self.name), 2, 3).await
    }

    /// This test's upload records (the table created) and a status service folding into them
    /// in this process, configured with the queue and the table and `vars` on top.
    pub async fn status_service(
        &self,
        vars: &[(&str, String)],
    ) -> anyhow::Result<(Records, StatusService)> {
        let cfg = sluice_cloud::IngestConfig::from_lookup(|k| match k {
            "SLUICE_QUEUE_URL" => Some(self.queue_url.clone()),
            "SLUICE_STATUS_TABLE" => Some(self.status_table()),
            _ => vars
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone()),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let records = Records::new(
            crate::dynamodb_client(&self.servers.sqs_endpoint),
            self.status_table(),
        );
        records.create_if_missing().await?;
        let service = StatusService::new(
            &cfg,
            records.clone(),
            crate::sqs_client(&self.servers.sqs_endpoint),
        )?;
        Ok((records, service))
    }

    /// The status queue's URL, whether or not it exists yet.
    pub fn status_queue_url(&self) -> String {
        format!("{}-status", self.queue_url)
    }

    /// A `sluice-ingest` process that folds the status queue and sends webhooks (plain http
    /// to loopback allowed), with `extra` variables on top.
    pub async fn start_status_ingest(
        &self,
        log: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<IngestProcess> {
        let status = self.status_queue_url();
        let mut vars = vec![
            ("SLUICE_STATUS_QUEUE_URL", status.as_str()),
            ("SLUICE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("SLUICE_WEBHOOK_ALLOW_INSECURE", "1"),
            ("SLUICE_LOG", "info,sluice_cloud=debug"),
        ];
        vars.extend_from_slice(extra);
        self.start_ingest_process_with(log, &vars).await
    }

    /// `sluice-agent` ([`TestEnv::launch_agent`]) on `settings` (TOML such as its `[batch]`
    /// and `[throttle]`), reporting every settled chunk on this test's status queue, whether or
    /// not that exists yet.
    pub async fn launch_reporting_agent(
        &self,
        name: &str,
        settings: &str,
    ) -> anyhow::Result<AgentProcess> {
        let status = self.status_queue_url();
        self.launch_agent(
            name,
            &format!("{settings}\n[status]\nqueue_url = {status:?}"),
        )
        .await
    }
}

impl IngestProcess {
    /// POSTs `{"receipts": …}` with `headers`: status and JSON answer.
    pub async fn upload(
        &self,
        receipts: &[serde_json::Value],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = reqwest::Client::new()
            .post(self.url("/v1/batches"))
            .json(&serde_json::json!({ "receipts": receipts }));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let answer = req.send().await?;
        let status = answer.status().as_u16();
        Ok((status, answer.json().await?))
    }

    /// `GET /v1/batches/{batch_id}`: status and JSON answer.
    pub async fn batch_status(&self, batch_id: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let answer = reqwest::get(self.url(&format!("/v1/batches/{batch_id}"))).await?;
        let status = answer.status().as_u16();
        Ok((status, answer.json().await?))
    }

    /// Polls the status endpoint until `done` holds for the answer (bounded by `timeout`).
    pub async fn wait_status(
        &self,
        batch_id: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let last = Mutex::new(serde_json::Value::Null);
        let found = wait_for(timeout, what, || async {
            let (code, answer) = self.batch_status(batch_id).await.ok()?;
            let ok = code == 200 && done(&answer);
            *last.lock().ok()? = answer.clone();
            ok.then_some(answer)
        })
        .await;
        found.map_err(|e| {
            let seen = last.lock().map(|l| l.to_string()).unwrap_or_default();
            anyhow::anyhow!("{e}; last status: {seen}")
        })
    }
}

/// Records an upload of `receipts` receipts in `chunks` chunks as the API does when it accepts
/// one (`Records::put`, no key or owner): its new batch id. Reports fold only into such a record.
pub async fn accept_upload(
    records: &Records,
    receipts: usize,
    chunks: usize,
    callback: Option<&str>,
) -> anyhow::Result<String> {
    let batch = uuid::Uuid::new_v4().to_string();
    records
        .put(&UploadRecord {
            batch_id: batch.clone(),
            idempotency_key: None,
            body_sha256: "cd".repeat(32),
            receipts,
            chunks,
            owner: None,
            callback: callback.map(str::to_owned),
            held_chunks: 0,
        })
        .await?;
    Ok(batch)
}

/// Whether a status answer is final: `stored` or `stored_with_rejections`.
pub fn is_final(s: &serde_json::Value) -> bool {
    matches!(
        s["state"].as_str(),
        Some("stored" | "stored_with_rejections")
    )
}

/// One POST a receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub answered: u16,
}

/// A webhook receiver on a loopback port: answers the scripted statuses in turn (then 204)
/// and records every POST.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    _stop: Arc<tokio_util::sync::DropGuard>,
}

impl WebhookReceiver {
    pub async fn start(script: &[u16]) -> anyhow::Result<Self> {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let (d, a) = (Arc::clone(&deliveries), Arc::clone(&answers));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (d, a) = (Arc::clone(&d), Arc::clone(&a));
                async move {
                    let answered = a.lock().ok().and_then(|mut a| a.pop_front()).unwrap_or(204);
                    if let Ok(mut d) = d.lock() {
                        d.push(Delivery {
                            headers,
                            body,
                            answered,
                        });
                    }
                    StatusCode::from_u16(answered).unwrap_or(StatusCode::NO_CONTENT)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Ok(WebhookReceiver {
            addr,
            deliveries,
            _stop: Arc::new(stop.drop_guard()),
        })
    }

    /// The URL to name in `Sluice-Callback`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every POST so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}

/// Checks `Sluice-Signature` with an HMAC computed here (not by the ingest's code), and that
/// `t` is recent.
pub fn assert_signed(d: &Delivery) {
    let header = d.headers["sluice-signature"].to_str().expect("ASCII");
    // `t=<t>,kid=<kid>,v1=<hex>`, read by field name as a receiver does.
    let field = |name: &str| {
        header
            .split(',')
            .filter_map(|f| f.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {name} in the signature header {header:?}"))
    };
    let (t, v1) = (field("t"), field("v1"));
    // The local bearer token names no owner: the master key, `kid=default`.
    assert_eq!(field("kid"), "default", "{header}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&d.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "the signature verifies");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let t: u64 = t.parse().expect("t is a number");
    assert!(
        now.abs_diff(t) < 300,
        "t={t} is within a 5-minute replay window"
    );
}

/// Installs a trigger on `sluice.receipts` that refuses (P0001) every receipt whose merchant is
/// `Blocked Merchant AG`: a customer's rule that refuses one row, not the table.
pub async fn block_merchant(env: &TestEnv) -> anyhow::Result<()> {
    for statement in [
        "CREATE FUNCTION sluice.block_merchant() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.merchant = 'Blocked Merchant AG' THEN
             RAISE EXCEPTION 'merchant % is blocked by the finance team', NEW.merchant;
           END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER block_merchant BEFORE INSERT ON sluice.receipts
         FOR EACH ROW EXECUTE FUNCTION sluice.block_merchant()",
    ] {
        sqlx::query(statement).execute(&env.pool).await?;
    }
    Ok(())
}
