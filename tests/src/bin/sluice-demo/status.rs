//! The upload's status as a client sees it: every batch followed on `GET /v1/batches/{id}`
//! (with the code `sluice-ingest upload --wait` uses) while the agent drains, each batch's
//! states recorded as they change (accepted → storing → stored), printed once all are final.

use std::future::Future;
use std::time::{Duration, Instant};

use sluice_cloud::upload::outcome::{FollowedBatch, WaitEnd};
use sluice_cloud::upload::wait::{follow, WaitOptions};
use sluice_protocol::BatchState;

use crate::format::secs;

/// Each batch's states, with when each was first seen (from `since`).
#[derive(Debug)]
pub(crate) struct Timeline {
    end: WaitEnd,
    batches: Vec<(String, Vec<(BatchState, Duration)>)>,
}

/// Follows `batch_ids` until all are final, `timeout` passes or `stop` resolves.
pub(crate) async fn watch_status(
    api: &str,
    batch_ids: &[String],
    since: Instant,
    timeout: Duration,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Timeline> {
    let mut batches: Vec<FollowedBatch> = batch_ids
        .iter()
        .map(|id| FollowedBatch {
            batch_id: id.clone(),
            lines: Vec::new(),
            status: None,
        })
        .collect();
    let mut seen: Vec<Vec<(BatchState, Duration)>> = vec![Vec::new(); batches.len()];
    let opts = WaitOptions {
        api: api.to_owned(),
        // Often enough to catch a batch between its first and its last chunk.
        interval: Duration::from_millis(250),
        timeout,
        ..WaitOptions::default()
    };
    let record = |batches: &[FollowedBatch]| {
        for (b, states) in batches.iter().zip(seen.iter_mut()) {
            let Some(s) = &b.status else { continue };
            if states.last().map(|l| l.0) != Some(s.state) {
                states.push((s.state, since.elapsed()));
            }
        }
    };
    let result = follow(&mut batches, &opts, record, stop).await?;
    Ok(Timeline {
        end: result.end,
        batches: batches.into_iter().map(|b| b.batch_id).zip(seen).collect(),
    })
}

impl Timeline {
    /// One line per batch: `batch 0f8f…  accepted 0.4 s → storing 1.2 s → stored 2.0 s`.
    pub(crate) fn print(&self) {
        for (id, states) in &self.batches {
            let path: Vec<String> = states
                .iter()
                .map(|(s, at)| format!("{} {}", name(*s), secs(*at)))
                .collect();
            println!("  batch {}…  {}", &id[..id.len().min(8)], path.join(" → "));
        }
    }

    /// What differs from a clean upload: every batch `stored`, seen through the endpoint.
    pub(crate) fn problems(&self) -> Vec<String> {
        let unfinished = match self.end {
            WaitEnd::Final => None,
            WaitEnd::NoStatusEndpoint => Some("the status endpoint answered 404 for every batch"),
            WaitEnd::TimedOut => Some("not every batch reached a final status in time"),
            WaitEnd::Interrupted => Some("the status was not followed to the end"),
        };
        if let Some(why) = unfinished {
            return vec![why.to_owned()];
        }
        self.batches
            .iter()
            .filter(|(_, states)| states.last().map(|s| s.0) != Some(BatchState::Stored))
            .map(|(id, states)| {
                let last = states.last().map_or("unseen", |s| name(s.0));
                format!("batch {id} ended {last}, not stored")
            })
            .collect()
    }
}

fn name(s: BatchState) -> &'static str {
    match s {
        BatchState::Accepted => "accepted",
        BatchState::AwaitingPhotos => "awaiting_photos",
        BatchState::Storing => "storing",
        BatchState::Stored => "stored",
        BatchState::StoredWithRejections => "stored_with_rejections",
    }
}
