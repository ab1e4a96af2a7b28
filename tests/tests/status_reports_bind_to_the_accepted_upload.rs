//! Upload status, the cloud side: a chunk report is folded only into the upload the API
//! accepted (the record `POST /v1/batches` writes before any chunk is sent), with that upload's
//! chunk count and one of its chunks. Anyone who can send to the status queue could otherwise
//! create items for batches never accepted, grow an item's `folded` set, or end an upload early
//! with a false `stored` (and its webhook). Folded straight through the status service on real
//! moto DynamoDB; that such reports reach the status DLQ through a real `sluice-ingest` is
//! `reports_are_folded_once_and_malformed_ones_reach_the_status_dlq`.

use sluice_cloud::records::Records;
use sluice_cloud::report::store::batch_status;
use sluice_cloud::report::{StatusError, StatusService};
use sluice_e2e::{accept_upload, TestEnv};
use sluice_protocol::report::{encode_reports, BatchState, ChunkReport};

/// Chunk `index` of `count`: two receipts, both stored.
fn report(batch: &str, index: u32, count: u32) -> ChunkReport {
    ChunkReport {
        batch_id: batch.to_owned(),
        chunk_index: index,
        chunk_count: count,
        receipts: 2,
        stored: 2,
        duplicates: 0,
        conflicts: 0,
        rejected: 0,
        rejections: vec![],
        committed_at_ms: 1_790_000_000_000,
    }
}

/// One status message of `r`, consumed as the status queue's consumer would.
async fn fold(service: &StatusService, r: ChunkReport) -> Result<(), StatusError> {
    let body = encode_reports(&[r], 1 << 20).remove(0);
    service.handle(None, &body).await
}

/// The refusal of a report no accepted upload takes: malformed (so it reaches the status DLQ),
/// naming the batch and why.
fn assert_unbound(folded: Result<(), StatusError>, batch: &str, why: &str) {
    match folded {
        Err(e @ StatusError::Unbound { .. }) => {
            assert!(e.is_malformed(), "{e}: it belongs in the status DLQ");
            let text = e.to_string();
            assert!(text.contains(batch), "{text} names the batch");
            assert!(text.contains(why), "{text} says {why:?}");
        }
        other => panic!("expected the report refused as unbound, got {other:?}"),
    }
}

#[tokio::test]
async fn a_report_for_a_batch_never_accepted_is_refused_and_creates_no_item() -> anyhow::Result<()>
{
    let env = TestEnv::new().await?;
    let (_records, service) = env.status_service(&[]).await?;
    let batch = uuid::Uuid::new_v4().to_string();
    // One chunk of one: on its own it would make a "stored" upload out of nothing.
    assert_unbound(
        fold(&service, report(&batch, 0, 1)).await,
        &batch,
        "no upload was accepted under this batch id",
    );
    assert_eq!(env.upload_record(&batch).await?, None, "no item created");
    Ok(())
}

#[tokio::test]
async fn a_report_with_another_chunk_count_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let (records, service) = env.status_service(&[]).await?;
    let batch = accept_upload(&records, 6, 3, None).await?;
    fold(&service, report(&batch, 0, 3)).await?;
    let before = env.upload_record(&batch).await?.expect("accepted");
    // A smaller count, and a huge one that would grow `folded` towards the item size limit.
    assert_unbound(
        fold(&service, report(&batch, 1, 2)).await,
        &batch,
        "chunk_count 2 is not the accepted upload's 3 chunks",
    );
    assert_unbound(
        fold(&service, report(&batch, 99_999, 100_000)).await,
        &batch,
        "chunk_count 100000 is not the accepted upload's 3 chunks",
    );
    assert_eq!(
        env.upload_record(&batch).await?.expect("still there"),
        before,
        "the accepted upload's item is unchanged"
    );
    // The chunk folded before, sent again, is still counted once and not refused.
    fold(&service, report(&batch, 0, 3)).await?;
    assert_eq!(env.upload_record(&batch).await?.expect("there"), before);
    Ok(())
}

#[tokio::test]
async fn an_index_past_the_accepted_chunks_cannot_end_the_upload_early() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let (records, service) = env.status_service(&[]).await?;
    let batch = accept_upload(&records, 4, 2, None).await?;
    fold(&service, report(&batch, 0, 2)).await?;
    let status = |records: Records, batch: String| async move {
        let item = records.get(&batch).await?.expect("accepted");
        anyhow::Ok(batch_status(&batch, &item))
    };
    let storing = status(records.clone(), batch.clone()).await?;
    assert_eq!(
        (storing.state, storing.chunks, storing.chunks_done),
        (BatchState::Storing, 2, 1)
    );
    // Chunk 2 does not exist in a 2-chunk upload: with chunk 0 it would count 2 of 2 and
    // report the upload stored (its webhook sent) while chunk 1 is still unwritten.
    assert_unbound(
        fold(&service, report(&batch, 2, 3)).await,
        &batch,
        "chunk_count 3 is not the accepted upload's 2 chunks",
    );
    let after = status(records.clone(), batch.clone()).await?;
    assert_eq!(after, storing, "the forged report changed nothing");
    assert_eq!(after.completed_at, None);
    // The real last chunk ends it, with exact counts.
    fold(&service, report(&batch, 1, 2)).await?;
    let done = status(records, batch).await?;
    assert_eq!(
        (done.state, done.chunks_done, done.stored, done.receipts),
        (BatchState::Stored, 2, 4, 4)
    );
    assert!(done.completed_at.is_some());
    Ok(())
}
