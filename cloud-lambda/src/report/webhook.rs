//! Webhooks: the `Sluice-Callback` URL an upload may name (checked at accept), the signature
//! (`Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`), one POST, and the
//! retry schedule of a failed one.
//!
//! Where a webhook may go (the callback URL, the addresses it connects to) is
//! [`super::destination`]'s.
//!
//! A webhook job is a small JSON message (`{"batch_id": …}`) on the status queue (or
//! `SLUICE_WEBHOOK_QUEUE_URL`), told from a chunk report by the message attribute
//! [`KIND_ATTRIBUTE`] = [`KIND_WEBHOOK`]. The job carries no state: attempts, the last error and
//! the outcome live in the upload's item, where a conditional claim makes sure one consumer
//! sends at a time and none sends after a delivery.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::destination::Destinations;

/// The message attribute that marks a webhook job on the status queue.
pub const KIND_ATTRIBUTE: &str = "sluice-kind";
/// Its value for a webhook job (chunk reports carry no such attribute).
pub const KIND_WEBHOOK: &str = "webhook";
/// The header an upload names its callback with.
pub const CALLBACK_HEADER: &str = "sluice-callback";
/// The header a webhook's signature travels in.
pub const SIGNATURE_HEADER: &str = "Sluice-Signature";
/// One POST's time limit.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; doubled per attempt up to [`MAX_DELAY_SECONDS`] (SQS's DelaySeconds cap).
const FIRST_DELAY_SECONDS: u64 = 5;
const MAX_DELAY_SECONDS: u64 = 900;

/// A webhook job's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub batch_id: String,
}

/// The `Sluice-Signature` value of `body` sent at Unix second `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={:x}", mac.finalize().into_bytes())
}

/// How long to wait before attempt `attempts + 1`, after `attempts` failed ones.
pub fn retry_delay(attempts: u64) -> Duration {
    let exp = attempts.saturating_sub(1).min(16) as u32;
    Duration::from_secs((FIRST_DELAY_SECONDS << exp).min(MAX_DELAY_SECONDS))
}

/// Sends webhooks: the secret, the HTTP client, where it may send, and the retry bound.
#[derive(Debug, Clone)]
pub struct Sender {
    secret: Option<String>,
    http: reqwest::Client,
    destinations: Destinations,
    pub(crate) give_up_seconds: u64,
}

impl Sender {
    /// The client connects only to public addresses ([`Destinations::resolver`]) and follows
    /// no redirect.
    pub fn new(
        secret: Option<String>,
        destinations: Destinations,
        give_up_seconds: u64,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(destinations.resolver()))
            .user_agent(concat!("sluice-webhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            secret,
            http,
            destinations,
            give_up_seconds,
        })
    }

    /// One signed POST of `body` to `url`; any 2xx is a delivery. The error (recorded, and
    /// shown to the uploader) names the HTTP status, or only that no HTTP answer came: which
    /// hosts and ports answer is not the uploader's to learn; the ingest's log has the detail.
    pub async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), String> {
        let Some(secret) = &self.secret else {
            return Err("SLUICE_WEBHOOK_SECRET is not set where the status is folded".to_owned());
        };
        self.destinations.check(url)?;
        let t = crate::records::unix_now();
        let answer = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(secret, t, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(url, error = %root_cause(&e), "Webhook POST got no HTTP answer.");
                format!(
                    "no HTTP answer (could not connect, or none within {} s)",
                    POST_TIMEOUT.as_secs()
                )
            })?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", status.as_u16()))
        }
    }
}

/// The innermost cause of an error (reqwest's own text is only "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body_in_hex() {
        // Computed independently:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn retries_back_off_to_fifteen_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(5), Duration::from_secs(80));
        assert_eq!(retry_delay(9), Duration::from_secs(900));
        assert_eq!(retry_delay(60), Duration::from_secs(900));
    }
}
