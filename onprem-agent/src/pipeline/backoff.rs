//! How long to wait before trying again through an outage of SQS or PostgreSQL.

use std::time::Duration;

/// Delays for retrying through an outage (SQS or PostgreSQL): 500 ms doubling to 30 s, with
/// jitter so that several agents do not come back in step; never gives up.
pub(crate) fn outage_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}
