//! What `sluice-ingest upload --wait` concludes, as pure functions: the batches to follow, the
//! totals over their statuses, the refused receipts named by file line, the progress line, and
//! the exit code.
//!
//! The status endpoint names refused receipts by `receipt_id`; the uploader knows the file
//! lines each batch came from, so a refused id is looked up again in those lines only (one
//! streaming pass over the file, holding nothing but the refused ids).

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use sluice_protocol::BatchStatus;

use super::UploadReport;

/// Exit code when every receipt was stored (or was already stored).
pub const EXIT_STORED: u8 = 0;
/// Exit code when any receipt or request was refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code when the status endpoint answered 404 for every batch (EX_UNAVAILABLE): the
/// cloud side has no status table configured, or the API predates it.
pub const EXIT_NO_STATUS: u8 = 69;
/// Exit code when `--wait-timeout` passed before every batch was final (EX_TEMPFAIL).
pub const EXIT_TIMEOUT: u8 = 75;
/// Exit code when Ctrl-C stopped the wait (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// One batch followed on the status endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct FollowedBatch {
    pub batch_id: String,
    /// File lines `(first, last)` of each request that became this batch (the same lines
    /// twice in a file make the same batch).
    pub lines: Vec<(usize, usize)>,
    /// The last answer of `GET /v1/batches/{batch_id}`, once there was one.
    pub status: Option<BatchStatus>,
}

impl FollowedBatch {
    /// Whether no later answer can change this batch.
    pub fn is_final(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.state.is_final())
    }
}

/// The batches an upload made, one per distinct batch id, in file order.
pub fn batches_of(report: &UploadReport) -> Vec<FollowedBatch> {
    let mut batches: Vec<FollowedBatch> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for r in &report.requests {
        let Some(id) = r.batch_id.as_deref() else {
            continue;
        };
        let range = (r.first_line, r.last_line);
        match index.get(id) {
            Some(&i) => batches[i].lines.push(range),
            None => {
                index.insert(id, batches.len());
                batches.push(FollowedBatch {
                    batch_id: id.to_owned(),
                    lines: vec![range],
                    status: None,
                });
            }
        }
    }
    batches
}

/// How the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitEnd {
    /// Every batch reached a final state.
    Final,
    /// `--wait-timeout` passed first.
    TimedOut,
    /// Every batch answered 404: the API has no status endpoint configured.
    NoStatusEndpoint,
    /// Ctrl-C.
    Interrupted,
}

/// Sums over the batches' last statuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub batches: usize,
    pub batches_final: usize,
    /// Receipts in the batches that answered (the upload record's count).
    pub receipts: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub rejected: u64,
}

impl Totals {
    /// Receipts settled so far: stored, duplicates and refused.
    pub fn settled(&self) -> u64 {
        self.stored + self.duplicates + self.refused()
    }

    /// Receipts refused (conflicts and database refusals).
    pub fn refused(&self) -> u64 {
        self.conflicts + self.rejected
    }
}

pub fn totals(batches: &[FollowedBatch]) -> Totals {
    let mut t = Totals {
        batches: batches.len(),
        ..Totals::default()
    };
    for b in batches {
        t.batches_final += usize::from(b.is_final());
        if let Some(s) = &b.status {
            t.receipts += s.receipts;
            t.stored += s.stored;
            t.duplicates += s.duplicates;
            t.conflicts += s.conflicts;
            t.rejected += s.rejected;
        }
    }
    t
}

/// The exit code: a known refusal is 1 however the wait ended (the user must act on it);
/// otherwise an unfinished wait has its own code, and a finished one is 0.
pub fn exit_code(requests_refused: usize, end: WaitEnd, totals: &Totals) -> u8 {
    if requests_refused > 0 || totals.refused() > 0 {
        return EXIT_REFUSED;
    }
    match end {
        WaitEnd::Final => EXIT_STORED,
        WaitEnd::TimedOut => EXIT_TIMEOUT,
        WaitEnd::NoStatusEndpoint => EXIT_NO_STATUS,
        WaitEnd::Interrupted => EXIT_INTERRUPTED,
    }
}

/// One refused receipt, where it is in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedLine {
    /// 1-based file line; `None` if the id was not found in the batch's lines.
    pub line: Option<usize>,
    pub receipt_id: String,
    pub reason: String,
    pub batch_id: String,
}

/// A batch with more refused receipts than its status names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unlisted {
    pub batch_id: String,
    pub count: u64,
}

/// The refused receipts of `batches` by file line (ordered by line), read from `file`, and
/// the batches whose status names only the first of their refused receipts.
pub fn refused_lines(
    file: impl BufRead,
    batches: &[FollowedBatch],
) -> std::io::Result<(Vec<RefusedLine>, Vec<Unlisted>)> {
    // Refused ids → (batch, reason); line ranges of the batches that have some.
    let mut wanted: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
    let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
    let mut unlisted = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let Some(status) = &batch.status else {
            continue;
        };
        for r in &status.rejections {
            wanted
                .entry(r.receipt_id.as_str())
                .or_default()
                .push((b, r.reason.as_str()));
        }
        if !status.rejections.is_empty() {
            ranges.extend(batch.lines.iter().map(|&(first, last)| (first, last, b)));
        }
        let named = status.rejections.len() as u64;
        if status.rejections_total > named {
            unlisted.push(Unlisted {
                batch_id: batch.batch_id.clone(),
                count: status.rejections_total - named,
            });
        }
    }
    ranges.sort_unstable();
    let mut found: Vec<RefusedLine> = Vec::new();
    let mut seen: std::collections::HashSet<(usize, &str)> = Default::default();
    if !ranges.is_empty() {
        #[derive(Deserialize)]
        struct IdOnly {
            receipt_id: String,
        }
        let last_wanted_line = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        for (n, line) in file.split(b'\n').enumerate() {
            let n = n + 1;
            if n > last_wanted_line {
                break;
            }
            let line = line?;
            let batches_here: Vec<usize> = ranges
                .iter()
                .filter(|&&(first, last, _)| first <= n && n <= last)
                .map(|r| r.2)
                .collect();
            if batches_here.is_empty() {
                continue;
            }
            let Ok(id) = serde_json::from_slice::<IdOnly>(&line) else {
                continue;
            };
            let Some((key, hits)) = wanted.get_key_value(id.receipt_id.as_str()) else {
                continue;
            };
            for &(b, reason) in hits.iter().filter(|(b, _)| batches_here.contains(b)) {
                seen.insert((b, key));
                found.push(RefusedLine {
                    line: Some(n),
                    receipt_id: id.receipt_id.clone(),
                    reason: reason.to_owned(),
                    batch_id: batches[b].batch_id.clone(),
                });
            }
        }
    }
    // Ids the file no longer holds where the batch came from (the file changed meanwhile).
    for (id, hits) in &wanted {
        for &(b, reason) in hits {
            if !seen.contains(&(b, *id)) {
                found.push(RefusedLine {
                    line: None,
                    receipt_id: (*id).to_owned(),
                    reason: reason.to_owned(),
                    batch_id: batches[b].batch_id.clone(),
                });
            }
        }
    }
    found.sort_by(|a, b| {
        (a.line.is_none(), a.line, &a.receipt_id).cmp(&(b.line.is_none(), b.line, &b.receipt_id))
    });
    Ok((found, unlisted))
}

/// Everything `--wait` learned, as `--json` prints it under `wait`.
#[derive(Debug, Clone, Serialize)]
pub struct WaitReport {
    pub end: WaitEnd,
    pub totals: Totals,
    /// Each batch with its final (or last known) status.
    pub batches: Vec<FollowedBatch>,
    pub refused: Vec<RefusedLine>,
    pub unlisted: Vec<Unlisted>,
    /// The API's or the network's last error, when the wait ended without an answer.
    pub last_error: Option<String>,
}

/// `line 17: receipt 7c9e…: conflict: …`
pub fn describe_refused(r: &RefusedLine) -> String {
    match r.line {
        Some(line) => format!("line {line}: receipt {}: {}", r.receipt_id, r.reason),
        None => format!(
            "line ?: receipt {} (batch {}, not found in the file's lines): {}",
            r.receipt_id, r.batch_id, r.reason
        ),
    }
}

/// The closing line of totals.
pub fn describe_totals(t: &Totals, end: WaitEnd) -> String {
    let how = match end {
        WaitEnd::Final => "final",
        WaitEnd::TimedOut => "NOT final: --wait-timeout passed",
        WaitEnd::NoStatusEndpoint => {
            "unknown: the API answered 404 for every batch (is its status table configured?)"
        }
        WaitEnd::Interrupted => "NOT final: interrupted",
    };
    format!(
        "{} of {} batches {how}; {} receipts: {} stored, {} duplicates, {} conflicts, {} rejected",
        t.batches_final, t.batches, t.receipts, t.stored, t.duplicates, t.conflicts, t.rejected
    )
}

/// The progress line: `[#####-----] 5000/10000 receipts settled, 3 refused, 1/2 batches final`.
pub fn progress_line(t: &Totals, width: usize) -> String {
    let filled = if t.receipts == 0 {
        0
    } else {
        (t.settled().min(t.receipts) as u128 * width as u128 / u128::from(t.receipts)) as usize
    };
    format!(
        "[{}{}] {}/{} receipts settled, {} refused, {}/{} batches final",
        "#".repeat(filled),
        "-".repeat(width - filled),
        t.settled(),
        t.receipts,
        t.refused(),
        t.batches_final,
        t.batches
    )
}

#[cfg(test)]
mod tests;
