//! `sluice-ingest upload --wait`: follows an upload's batches on `GET /v1/batches/{id}` until
//! each is final, gently: one request per unfinished batch about every second (a few at a
//! time), backing off while the API errs, stopping at `--wait-timeout` or on Ctrl-C (the
//! caller's `stop` future), and concluding "no status endpoint" when every batch answers 404.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sluice_protocol::BatchStatus;

use super::outcome::{FollowedBatch, WaitEnd};
use super::UploadError;

/// The default `--wait-timeout`: long enough for a throttled agent to drain a large upload at
/// night's pace, short enough that a stuck pipeline is noticed.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How to follow.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Base URL of the API (the upload's `--api`).
    pub api: String,
    /// Bearer token, if the API wants one.
    pub token: Option<String>,
    /// Time between two rounds of polls while all is well.
    pub interval: Duration,
    /// Longest time between two rounds while the API errs.
    pub max_interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// How long every batch may answer 404 before the endpoint is judged not configured (the
    /// record is written before the 202, so a configured endpoint knows the batch at once;
    /// the grace covers an eventually consistent read).
    pub not_found_grace: Duration,
    /// Polls in flight at once.
    pub concurrency: usize,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            api: String::new(),
            token: None,
            interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            timeout: DEFAULT_WAIT_TIMEOUT,
            not_found_grace: Duration::from_secs(10),
            concurrency: 4,
        }
    }
}

/// How the wait went.
#[derive(Debug, Clone)]
pub struct WaitResult {
    pub end: WaitEnd,
    /// The last error of the API or the network, if the last round had one.
    pub last_error: Option<String>,
}

/// One poll's answer.
enum Poll {
    Found(Box<BatchStatus>),
    NotFound,
    Trouble(String),
}

/// Polls every unfinished batch of `batches` until all are final, updating their statuses
/// and calling `progress` after each round; ends early on timeout, 404s or `stop`.
pub async fn follow(
    batches: &mut [FollowedBatch],
    opts: &WaitOptions,
    mut progress: impl FnMut(&[FollowedBatch]),
    stop: impl Future<Output = ()>,
) -> Result<WaitResult, UploadError> {
    let client = super::http_client()?;
    let base = format!("{}/v1/batches", opts.api.trim_end_matches('/'));
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let mut delay = opts.interval;
    let mut ever_found = false;
    let mut last_error = None;
    tokio::pin!(stop);
    loop {
        let pending: Vec<usize> = (0..batches.len())
            .filter(|&i| !batches[i].is_final())
            .collect();
        if pending.is_empty() {
            return Ok(WaitResult {
                end: WaitEnd::Final,
                last_error: None,
            });
        }
        let round = futures_util::stream::iter(pending.iter().map(|&i| {
            let url = format!("{base}/{}", batches[i].batch_id);
            let client = &client;
            async move { (i, poll(client, &url, opts.token.as_deref()).await) }
        }))
        .buffer_unordered(opts.concurrency.max(1))
        .collect::<Vec<_>>();
        let answers = tokio::select! {
            a = round => a,
            () = &mut stop => return Ok(WaitResult { end: WaitEnd::Interrupted, last_error }),
        };
        let mut all_not_found = true;
        last_error = None;
        for (i, answer) in answers {
            match answer {
                Poll::Found(s) => {
                    ever_found = true;
                    all_not_found = false;
                    batches[i].status = Some(*s);
                }
                Poll::NotFound => {}
                Poll::Trouble(why) => {
                    all_not_found = false;
                    last_error = Some(why);
                }
            }
        }
        progress(batches);
        if batches.iter().all(FollowedBatch::is_final) {
            continue; // the loop's head returns Final
        }
        if !ever_found && all_not_found && started.elapsed() >= opts.not_found_grace {
            return Ok(WaitResult {
                end: WaitEnd::NoStatusEndpoint,
                last_error: None,
            });
        }
        delay = match &last_error {
            Some(why) => {
                let next = (delay * 2).min(opts.max_interval);
                tracing::warn!(error = %why, retry_in = ?next, "The status endpoint did not answer; backing off.");
                next
            }
            None => opts.interval,
        };
        let now = Instant::now();
        if now >= deadline {
            return Ok(WaitResult {
                end: WaitEnd::TimedOut,
                last_error,
            });
        }
        tokio::select! {
            () = tokio::time::sleep(delay.min(deadline - now)) => {}
            () = &mut stop => return Ok(WaitResult { end: WaitEnd::Interrupted, last_error }),
        }
    }
}

async fn poll(client: &reqwest::Client, url: &str, token: Option<&str>) -> Poll {
    let mut req = client.get(url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(resp) if resp.status().as_u16() == 404 => Poll::NotFound,
        Ok(resp) if resp.status().is_success() => match resp.json::<BatchStatus>().await {
            Ok(s) => Poll::Found(Box::new(s)),
            Err(e) => Poll::Trouble(format!("GET {url}: unreadable answer: {e}")),
        },
        Ok(resp) => Poll::Trouble(format!("GET {url}: HTTP {}", resp.status().as_u16())),
        Err(e) => Poll::Trouble(format!("GET {url}: {e}")),
    }
}

/// Reads `--wait-timeout`: whole seconds, or a number with `s`, `m` or `h`.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90, 90s, 15m or 2h"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not a duration like 90, 90s, 15m or 2h"))?;
    if secs == 0 {
        return Err("must be at least 1 second".to_owned());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeouts_are_read_with_their_unit() {
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_timeout("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(
            parse_timeout("0"),
            Err("must be at least 1 second".to_owned())
        );
        for bad in ["", "ten", "5d", "1.5m", "-3"] {
            let err = parse_timeout(bad).expect_err(bad);
            assert!(
                err.contains("is not a duration like 90, 90s, 15m or 2h"),
                "{err}"
            );
        }
    }
}
