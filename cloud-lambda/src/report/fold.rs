//! One status-queue message of chunk reports: each report checked, then folded once per
//! `(batch_id, chunk_index)`; the fold that completes an upload queues its webhook.

use sluice_protocol::report::{decode_message, ChunkReport, MAX_REJECTIONS};

use super::store::{newly_final, Folded};
use super::{StatusError, StatusService};

impl StatusService {
    /// Folds every report of `body`. A malformed report, or one not bound to its accepted
    /// upload, fails the message after the others were folded (folding them again is
    /// harmless).
    pub(super) async fn fold_message(&self, body: &str) -> Result<(), StatusError> {
        let message = decode_message(body)?;
        let mut bad = None;
        for report in &message.reports {
            let folded = match check(report) {
                Ok(()) => self.fold_report(report).await,
                Err(e) => Err(e),
            };
            match folded {
                Ok(()) => {}
                Err(e) if e.is_malformed() => bad = Some(e),
                Err(e) => return Err(e),
            }
        }
        bad.map_or(Ok(()), Err)
    }

    pub(crate) async fn fold_report(&self, r: &ChunkReport) -> Result<(), StatusError> {
        let item = match self.records.fold(r).await? {
            Folded::Counted(item) => *item,
            // A re-sent report: the fold that counted it may have stopped before completing.
            Folded::Already => match self.records.get(&r.batch_id).await? {
                Some(item) => item,
                None => return Ok(()),
            },
            // Forged, or meant for another deployment: it goes where malformed reports go.
            Folded::Unbound(why) => {
                return Err(StatusError::Unbound {
                    batch_id: r.batch_id.clone(),
                    chunk_index: r.chunk_index,
                    why,
                })
            }
        };
        if newly_final(&item) {
            let with_webhook = item.contains_key("callback");
            if with_webhook {
                // Queued first: a job that comes early is put back until the item is complete,
                // and a duplicate job is harmless (the delivery is claimed).
                self.queue_job(&r.batch_id, std::time::Duration::ZERO)
                    .await?;
            }
            if self.records.complete(&r.batch_id, with_webhook).await? {
                tracing::info!(batch_id = %r.batch_id, webhook = with_webhook, "Upload complete.");
            }
        }
        Ok(())
    }
}

/// What a report must satisfy to be folded.
fn check(r: &ChunkReport) -> Result<(), StatusError> {
    let why = if uuid::Uuid::parse_str(&r.batch_id).is_err() {
        Some("batch_id is not a UUID".to_owned())
    } else if r.chunk_count == 0 || r.chunk_index >= r.chunk_count {
        Some(format!(
            "chunk_index {} is not below chunk_count {}",
            r.chunk_index, r.chunk_count
        ))
    } else if u64::from(r.stored)
        + u64::from(r.duplicates)
        + u64::from(r.conflicts)
        + u64::from(r.rejected)
        != u64::from(r.receipts)
    {
        Some(format!(
            "stored {} + duplicates {} + conflicts {} + rejected {} is not receipts {}",
            r.stored, r.duplicates, r.conflicts, r.rejected, r.receipts
        ))
    } else if r.rejections.len() > MAX_REJECTIONS {
        Some(format!(
            "{} rejections named, more than {MAX_REJECTIONS}",
            r.rejections.len()
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(StatusError::BadReport {
            batch_id: r.batch_id.clone(),
            chunk_index: r.chunk_index,
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ChunkReport {
        ChunkReport {
            batch_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            chunk_index: 0,
            chunk_count: 2,
            receipts: 10,
            stored: 7,
            duplicates: 1,
            conflicts: 1,
            rejected: 1,
            rejections: vec![],
            committed_at_ms: 0,
        }
    }

    #[test]
    fn each_malformed_report_is_named() {
        assert!(check(&report()).is_ok());
        let why = |f: fn(&mut ChunkReport)| {
            let mut r = report();
            f(&mut r);
            check(&r).expect_err("malformed").to_string()
        };
        assert_eq!(
            why(|r| r.batch_id = "batch-1".into()),
            "malformed chunk report (batch \"batch-1\", chunk 0): batch_id is not a UUID"
        );
        assert_eq!(
            why(|r| r.chunk_index = 2),
            "malformed chunk report (batch \"0f8fad5b-d9cb-469f-a165-70867728950e\", chunk 2): chunk_index 2 is not below chunk_count 2"
        );
        assert!(why(|r| r.chunk_count = 0).ends_with("chunk_index 0 is not below chunk_count 0"));
        assert!(why(|r| r.stored = 8)
            .ends_with("stored 8 + duplicates 1 + conflicts 1 + rejected 1 is not receipts 10"));
        assert!(why(|r| {
            r.rejections = (0..=MAX_REJECTIONS)
                .map(|i| sluice_protocol::Rejection {
                    receipt_id: i.to_string(),
                    reason: String::new(),
                })
                .collect()
        })
        .ends_with("101 rejections named, more than 100"));
    }
}
