//! Upload status, the cloud side: every webhook job ends. A job for an upload whose chunks are
//! all folded but which the fold did not get to mark complete (it stopped between the two
//! updates) completes the upload and delivers, instead of re-queueing itself every few seconds
//! for as long as the item lives; and a delivery's outcome is recorded only under the claim
//! that sent it, so a late consumer whose claim lapsed cannot turn a `delivered` back into
//! `pending` (and have it sent again). Straight through the status service and the upload
//! records on real moto (DynamoDB and SQS), with a loopback webhook receiver.

use sluice_cloud::records::Records;
use sluice_cloud::report::store::{Claim, Recorded};
use sluice_cloud::report::StatusService;
use sluice_e2e::{accept_upload, assert_signed, TestEnv, WebhookReceiver, WEBHOOK_SECRET};
use sluice_protocol::report::ChunkReport;

/// This test's upload records, its status queue (which takes the webhook jobs) and a status
/// service that sends webhooks to loopback.
async fn service(env: &TestEnv) -> anyhow::Result<(Records, StatusService, String)> {
    let status = env.create_status_queue().await?;
    let (records, service) = env
        .status_service(&[
            ("SLUICE_STATUS_QUEUE_URL", status.queue_url.clone()),
            ("SLUICE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("SLUICE_WEBHOOK_ALLOW_INSECURE", "1".to_owned()),
        ])
        .await?;
    Ok((records, service, status.queue_url))
}

/// An upload of two chunks accepted with `callback` (as the API records it), both chunks
/// folded through `Records::fold` and nothing more: the state a fold leaves when it stops
/// after its UpdateItem and before `complete`.
async fn folded_not_completed(records: &Records, callback: &str) -> anyhow::Result<String> {
    let batch = accept_upload(records, 4, 2, Some(callback)).await?;
    for index in 0..2 {
        records
            .fold(&ChunkReport {
                batch_id: batch.clone(),
                chunk_index: index,
                chunk_count: 2,
                receipts: 2,
                stored: 2,
                duplicates: 0,
                conflicts: 0,
                rejected: 0,
                rejections: vec![],
                committed_at_ms: 1_790_000_000_000,
            })
            .await?;
    }
    Ok(batch)
}

fn job(batch: &str) -> String {
    serde_json::json!({ "batch_id": batch }).to_string()
}

#[tokio::test]
async fn a_job_for_an_upload_its_fold_left_uncompleted_completes_it_and_delivers(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let (records, service, status_queue) = service(&env).await?;
    let receiver = WebhookReceiver::start(&[]).await?;
    let batch = folded_not_completed(&records, &receiver.url()).await?;
    let before = env.upload_record(&batch).await?.expect("accepted");
    assert!(!before.contains_key("completed_at_ms"), "{before:?}");

    service.handle(Some("webhook"), &job(&batch)).await?;

    let got = receiver.deliveries();
    assert_eq!(got.len(), 1, "delivered by this job, not re-queued");
    assert_signed(&got[0]);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body)?;
    assert_eq!(
        (body["state"].as_str(), body["chunks_done"].as_u64()),
        (Some("stored"), Some(2))
    );
    assert!(body["completed_at"].is_string(), "{body}");
    let after = env.upload_record(&batch).await?.expect("accepted");
    assert!(after.contains_key("completed_at_ms"), "{after:?}");
    assert_eq!(after["webhook_state"], "delivered");
    assert_eq!(after["webhook_attempts"], "1");
    assert!(
        env.queue_empty(&status_queue).await.is_some(),
        "no job re-queued itself"
    );
    // The same job again (a duplicate) sends nothing more.
    service.handle(Some("webhook"), &job(&batch)).await?;
    assert_eq!(receiver.deliveries().len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_outcome_is_recorded_only_under_the_claim_that_sent_it() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let (records, _service, _) = service(&env).await?;
    let batch = folded_not_completed(&records, "https://hooks.example.com/sluice").await?;
    assert!(records.complete(&batch, true).await?);
    // A claim held for no time at all: it lapses at the next second.
    let Claim::Won { token: late, .. } = records.claim_webhook(&batch, 0).await? else {
        panic!("the first claim wins");
    };
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let Claim::Won { token: newer, .. } = records.claim_webhook(&batch, 60).await? else {
        panic!("a lapsed claim is taken over");
    };
    assert_ne!(late, newer);
    assert_eq!(
        records
            .record_webhook(&batch, &newer, 1, Ok(()), false)
            .await?,
        Recorded::Done
    );
    let delivered = env.upload_record(&batch).await?.expect("accepted");
    assert_eq!(delivered["webhook_state"], "delivered");
    // The lapsed claim's POST failed; recording it would make the delivered webhook pending
    // again, and sent again.
    assert_eq!(
        records
            .record_webhook(&batch, &late, 1, Err("answered HTTP 503"), false)
            .await?,
        Recorded::ClaimLost
    );
    assert_eq!(
        env.upload_record(&batch).await?.expect("accepted"),
        delivered,
        "the newer claim's outcome stands"
    );
    // Delivered: no one claims it again.
    assert!(matches!(
        records.claim_webhook(&batch, 60).await?,
        Claim::Done
    ));
    Ok(())
}
