//! The status traffic: what reporting an upload's fate costs, against the data
//! path it rides on, measured side by side in one run. A backlog is uploaded through the real
//! `sluice-ingest` (folding the status queue into its table) and drained by the real agent
//! with `[status] queue_url`; both reach the local SQS/DynamoDB server through the harness's
//! counting proxy, which tells each request's action and queue or table. Meanwhile every
//! batch is polled on `GET /v1/batches/{id}` to time the step from the agent's commit (the
//! ledger's `committed_at` of the batch's last chunk) to `stored` on the endpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use futures_util::StreamExt as _;
use sluice_e2e::gen::Generator;
use sluice_e2e::sqs_proxy::SqsProxy;
use sluice_e2e::PrivatePostgres;

use crate::drain::backlog_env;
use crate::Table;

/// Receipts per upload request: one batch each, so a run has many batches to time.
const PER_REQUEST: usize = 1_000;
/// Time between two rounds of polls: the resolution of the commit → stored figure.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Polls in flight at once.
const POLL_CONCURRENCY: usize = 8;
/// The whole drain and fold must finish within this.
const DEADLINE: Duration = Duration::from_secs(600);

const DYNAMODB: &str = "DynamoDB_20120810.";
const SQS: &str = "AmazonSQS.";

/// Request counts between two snapshots of the proxy.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// SQS requests naming the receipts queue or its DLQ.
    data_sqs: u64,
    /// SQS requests naming the status queue.
    status_sqs: u64,
    /// DynamoDB requests (all tables: the test's one).
    dynamodb: u64,
}

fn counts(proxy: &SqsProxy, status_queue: &str) -> Counts {
    let mut c = Counts::default();
    for ((target, resource), n) in proxy.requests() {
        if target.starts_with(DYNAMODB) {
            c.dynamodb += n;
        } else if target.starts_with(SQS) {
            if resource == status_queue {
                c.status_sqs += n;
            } else {
                c.data_sqs += n;
            }
        }
    }
    c
}

/// Uploads `receipts` in batches of [`PER_REQUEST`], drains them with the status queue on,
/// and adds the status rows.
pub(crate) async fn measure(
    pg: &PrivatePostgres,
    receipts: usize,
    table: &mut Table,
) -> anyhow::Result<()> {
    let env = backlog_env(pg).await?;
    let status_pair = env.create_status_queue().await?;
    let status_queue = status_pair.queue_url.clone();
    let proxy = SqsProxy::start(env.servers.sqs_addr()?).await?;
    let endpoint = proxy.endpoint();
    let mut ingest = env
        .start_ingest_process_with(
            "ingest.log",
            &[
                ("SLUICE_SQS_ENDPOINT", &endpoint),
                ("SLUICE_DYNAMODB_ENDPOINT", &endpoint),
                ("SLUICE_STATUS_QUEUE_URL", &status_queue),
                ("SLUICE_MAX_RECEIPTS_PER_CHUNK", "500"),
                ("SLUICE_COMPRESSION", "zstd"),
            ],
        )
        .await?;

    eprintln!("bench: status traffic, uploading {receipts} receipts in batches of {PER_REQUEST}");
    let before_upload = counts(&proxy, &status_queue);
    let http = reqwest::Client::new();
    let mut g = Generator::new(12);
    let mut batches = Vec::new();
    let mut sent = 0;
    while sent < receipts {
        let k = PER_REQUEST.min(receipts - sent);
        let resp = http
            .post(ingest.url("/v1/batches"))
            .json(&serde_json::json!({ "receipts": g.receipts(k) }))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        if status != 202 {
            bail!("upload answered {status}: {answer}");
        }
        batches.push(answer["batch_id"].as_str().unwrap_or_default().to_owned());
        sent += k;
    }
    let after_upload = counts(&proxy, &status_queue);

    let mut agent = env.spawn_agent(
        "agent",
        &format!(
            "[queue]\nendpoint = {endpoint:?}\nvisibility_timeout_seconds = 120\n\
             [throttle]\nrows_per_second = 1000000\nburst = 1000000\n\
             [batch]\nmax_rows = 500\nmax_wait_ms = 50\n\
             [status]\nqueue_url = {status_queue:?}\n[log]\nformat = \"json\"\nlevel = \"warn\""
        ),
    )?;
    eprintln!(
        "bench: status traffic, draining and polling {} batches",
        batches.len()
    );
    let (stored_at, polls) = poll_until_stored(&http, &ingest.url("/v1/batches"), &batches).await?;
    let after_drain = counts(&proxy, &status_queue);
    let committed = last_commits(&env.pool).await?;
    agent.terminate(Duration::from_secs(60)).await?;
    ingest.stop().await?;

    // commit → stored, per batch, in ms.
    let mut lags: Vec<f64> = batches
        .iter()
        .filter_map(|b| Some(stored_at.get(b)? - committed.get(b)?))
        .collect();
    lags.sort_by(f64::total_cmp);
    if lags.is_empty() {
        bail!("no batch had both a ledger commit and a stored answer");
    }
    let pct = |p: f64| lags[((lags.len() - 1) as f64 * p).round() as usize];

    let per_million = |n: u64| n as f64 * 1e6 / receipts as f64;
    // What the status queue's requests were, for the note: `SendMessageBatch 40, …`.
    let mut by_action: Vec<(String, u64)> = proxy
        .requests()
        .into_iter()
        .filter(|((t, r), _)| t.starts_with(SQS) && *r == status_queue)
        .map(|((t, _), n)| (t.trim_start_matches(SQS).to_owned(), n))
        .collect();
    by_action.sort();
    let by_action: Vec<String> = by_action.iter().map(|(a, n)| format!("{a} {n}")).collect();
    let data_sqs = (after_drain.data_sqs - before_upload.data_sqs) as f64;
    let status_sqs = (after_drain.status_sqs - before_upload.status_sqs) as f64;
    let upload_dynamodb = after_upload.dynamodb - before_upload.dynamodb;
    // The bench's own polls read the table too (one GetItem each): not the status's cost.
    let fold_dynamodb = (after_drain.dynamodb - after_upload.dynamodb).saturating_sub(polls);
    table.row(
        "status: SQS requests per million receipts",
        format!("{:.0}", per_million(status_sqs as u64)),
        format!(
            "agent's reports + the ingest's fold ({}); {:.2} % of the data path's {:.0}/M SQS \
             requests in the same run (send, receive, delete; goal < 5 %)",
            by_action.join(", "),
            100.0 * status_sqs / data_sqs.max(1.0),
            per_million(data_sqs as u64)
        ),
    );
    table.row(
        "status: DynamoDB requests per million receipts",
        format!("{:.0}", per_million(fold_dynamodb)),
        format!(
            "folding the reports; besides the upload records' {:.0}/M at accept and the \
             bench's {polls} polls",
            per_million(upload_dynamodb)
        ),
    );
    table.row(
        "status: agent commit → stored on the endpoint, p50 / p99",
        format!("{:.0} / {:.0} ms", pct(0.5), pct(0.99)),
        format!(
            "last chunk's ledger committed_at → first GET answering a final state, {} batches \
             of {PER_REQUEST}, unthrottled drain, polled every {} ms; through the counting proxy",
            lags.len(),
            POLL_INTERVAL.as_millis()
        ),
    );
    env.cleanup().await;
    Ok(())
}

/// Polls every batch not yet final until all are; returns when each was first seen final
/// (Unix ms) and how many polls were made.
async fn poll_until_stored(
    http: &reqwest::Client,
    base: &str,
    batches: &[String],
) -> anyhow::Result<(HashMap<String, f64>, u64)> {
    let started = Instant::now();
    let mut stored_at: HashMap<String, f64> = HashMap::new();
    let mut polls = 0u64;
    while stored_at.len() < batches.len() {
        if started.elapsed() > DEADLINE {
            bail!(
                "{} of {} batches final after {DEADLINE:?}",
                stored_at.len(),
                batches.len()
            );
        }
        let pending: Vec<&String> = batches
            .iter()
            .filter(|b| !stored_at.contains_key(*b))
            .collect();
        polls += pending.len() as u64;
        let answers: Vec<(String, Option<f64>)> = futures_util::stream::iter(pending)
            .map(|b| async move {
                let fin = http
                    .get(format!("{base}/{b}"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success());
                let fin = match fin {
                    Some(r) => r.json::<sluice_protocol::BatchStatus>().await.ok(),
                    None => None,
                };
                let seen = fin.filter(|s| s.state.is_final()).map(|_| unix_ms());
                (b.clone(), seen)
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect()
            .await;
        for (b, seen) in answers {
            if let Some(at) = seen {
                stored_at.insert(b, at);
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok((stored_at, polls))
}

/// Each batch's last chunk commit in the agent's ledger (Unix ms).
async fn last_commits(pool: &sqlx::PgPool) -> anyhow::Result<HashMap<String, f64>> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT batch_id::text, (extract(epoch FROM max(committed_at)) * 1000)::float8 \
         FROM sluice.chunks GROUP BY batch_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
