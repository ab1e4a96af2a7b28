//! Webhooks: the `Sluice-Callback` URL an upload may name (checked at accept), the signature
//! (`Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`), one POST, and the
//! retry schedule of a failed one.
//!
//! A webhook job is a small JSON message (`{"batch_id": …}`) on the status queue (or
//! `SLUICE_WEBHOOK_QUEUE_URL`), told from a chunk report by the message attribute
//! [`KIND_ATTRIBUTE`] = [`KIND_WEBHOOK`]. The job carries no state: attempts, the last error and
//! the outcome live in the upload's item, where a conditional claim makes sure one consumer
//! sends at a time and none sends after a delivery.

use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The message attribute that marks a webhook job on the status queue.
pub const KIND_ATTRIBUTE: &str = "sluice-kind";
/// Its value for a webhook job (chunk reports carry no such attribute).
pub const KIND_WEBHOOK: &str = "webhook";
/// The header an upload names its callback with.
pub const CALLBACK_HEADER: &str = "sluice-callback";
/// The header a webhook's signature travels in.
pub const SIGNATURE_HEADER: &str = "Sluice-Signature";
/// Longest callback URL accepted.
const MAX_CALLBACK_LEN: usize = 2048;
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

/// Checks a `Sluice-Callback` value: an absolute `https` URL with a host and no credentials;
/// plain `http` only to a loopback host and only with `allow_insecure`. The error says why.
pub fn check_callback(raw: &str, allow_insecure: bool) -> Result<String, String> {
    if raw.len() > MAX_CALLBACK_LEN {
        return Err(format!("longer than {MAX_CALLBACK_LEN} characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@)".to_owned());
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("{raw:?} has no host"));
    };
    match url.scheme() {
        "https" => Ok(url.to_string()),
        "http" => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = match bare.parse::<IpAddr>() {
                Ok(ip) => ip.is_loopback(),
                Err(_) => bare.eq_ignore_ascii_case("localhost"),
            };
            if !loopback {
                Err(format!(
                    "plain http is allowed only to a loopback host; use https for {host}"
                ))
            } else if !allow_insecure {
                Err(
                    "plain http needs SLUICE_WEBHOOK_ALLOW_INSECURE=1 (local use only); use https"
                        .to_owned(),
                )
            } else {
                Ok(url.to_string())
            }
        }
        other => Err(format!("scheme {other:?} is not https")),
    }
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

/// Sends webhooks: the secret, the HTTP client, and the retry bound.
#[derive(Debug, Clone)]
pub struct Sender {
    secret: Option<String>,
    http: reqwest::Client,
    pub(crate) allow_insecure: bool,
    pub(crate) give_up_seconds: u64,
}

impl Sender {
    pub fn new(
        secret: Option<String>,
        allow_insecure: bool,
        give_up_seconds: u64,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice-webhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            secret,
            http,
            allow_insecure,
            give_up_seconds,
        })
    }

    /// One signed POST of `body` to `url`; any 2xx is a delivery. The error names the status or
    /// the connection failure.
    pub async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), String> {
        let Some(secret) = &self.secret else {
            return Err("SLUICE_WEBHOOK_SECRET is not set where the status is folded".to_owned());
        };
        check_callback(url, self.allow_insecure)?;
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
                if e.is_timeout() {
                    format!("no answer within {} s", POST_TIMEOUT.as_secs())
                } else {
                    format!("could not connect: {}", root_cause(&e))
                }
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
    fn callbacks_are_https_or_loopback_http_when_allowed() {
        assert_eq!(
            check_callback("https://hooks.example.com/sluice?x=1", false).as_deref(),
            Ok("https://hooks.example.com/sluice?x=1")
        );
        assert!(check_callback("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_callback("http://localhost:9000/hook", true).is_ok());
        assert!(check_callback("http://[::1]:9000/hook", true).is_ok());
        let refused = |raw: &str, insecure: bool| check_callback(raw, insecure).expect_err(raw);
        assert_eq!(
            refused("http://127.0.0.1:9000/hook", false),
            "plain http needs SLUICE_WEBHOOK_ALLOW_INSECURE=1 (local use only); use https"
        );
        assert_eq!(
            refused("http://hooks.example.com/x", true),
            "plain http is allowed only to a loopback host; use https for hooks.example.com"
        );
        assert_eq!(
            refused("http://10.0.0.8/x", true),
            "plain http is allowed only to a loopback host; use https for 10.0.0.8"
        );
        assert_eq!(
            refused("ftp://example.com/x", false),
            "scheme \"ftp\" is not https"
        );
        assert_eq!(
            refused("https://user:pw@example.com/x", false),
            "must not carry credentials (user:password@)"
        );
        assert!(refused("/relative/hook", false).starts_with("\"/relative/hook\" is not a URL"));
        assert_eq!(
            refused(&format!("https://example.com/{}", "a".repeat(2048)), false),
            "longer than 2048 characters"
        );
        assert_eq!(
            refused("data:text/plain,hi", false),
            "\"data:text/plain,hi\" has no host"
        );
    }

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
