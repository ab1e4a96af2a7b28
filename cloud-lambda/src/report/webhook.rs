//! Webhooks: the `Sluice-Callback` URL an upload may name (checked at accept), the signature
//! (`Sluice-Signature: t=<unix seconds>,kid=<key id>,v1=<hex HMAC-SHA256 of "t.body">`), one
//! POST, and the retry schedule of a failed one.
//!
//! The signing keys: one master secret, read at run time from Secrets Manager by the function
//! that signs (`SLUICE_WEBHOOK_SECRET_ARN`, fetched once per process and cached) or, for local
//! runs, from `SLUICE_WEBHOOK_SECRET`; and from it one key per owner (the caller the upload's
//! authentication named), `hex(HMAC-SHA256(master, "sluice-webhook-v1:" + owner))`, so one
//! receiver's key verifies no other owner's webhooks. `kid` names the key: the first 16 hex
//! characters of the SHA-256 of the owner key, or `default` for an upload without an owner,
//! which is signed with the master itself. No secret or key is ever printed by `Debug`.
//!
//! Where a webhook may go (the callback URL, the addresses it connects to) is
//! [`super::destination`]'s.
//!
//! A webhook job is a small JSON message (`{"batch_id": …}`) on the status queue (or
//! `SLUICE_WEBHOOK_QUEUE_URL`), told from a chunk report by the message attribute
//! [`KIND_ATTRIBUTE`] = [`KIND_WEBHOOK`]. The job carries no state: attempts, the last error and
//! the outcome live in the upload's item, where a conditional claim makes sure one consumer
//! sends at a time and none sends after a delivery.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::OnceCell;

use super::destination::Destinations;
use crate::io::secrets;

/// The message attribute that marks a webhook job on the status queue.
pub const KIND_ATTRIBUTE: &str = "sluice-kind";
/// Its value for a webhook job (chunk reports carry no such attribute).
pub const KIND_WEBHOOK: &str = "webhook";
/// The header an upload names its callback with.
pub const CALLBACK_HEADER: &str = "sluice-callback";
/// The header a webhook's signature travels in.
pub const SIGNATURE_HEADER: &str = "Sluice-Signature";
/// What an owner's key is derived with: `HMAC-SHA256(master, KEY_LABEL + owner)`.
pub const KEY_LABEL: &str = "sluice-webhook-v1:";
/// The `kid` of the master key, which signs the webhooks of uploads without an owner.
pub const DEFAULT_KID: &str = "default";
/// The shortest master secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;
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

/// The `Sluice-Signature` value of `body` sent at Unix second `t`, without a key id: the
/// header as it was before keys had ids (see [`SigningKey::header`] for the one sent now).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", mac_hex(secret.as_bytes(), t, body))
}

/// Hex HMAC-SHA256 of `"t.body"` under `key`.
fn mac_hex(key: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("{:x}", mac.finalize().into_bytes())
}

/// A webhook secret or key. Its value is never printed by `Debug` (`[redacted]`), so a logged
/// config, sender or error cannot carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(value: impl Into<String>) -> Self {
        WebhookSecret(value.into())
    }

    /// The value itself: for signing, and for the operator's `webhook-key` command.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The key one owner's webhooks are signed with, and its id (`kid`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    kid: String,
    key: WebhookSecret,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("key", &self.key)
            .finish()
    }
}

impl SigningKey {
    /// `owner`'s key: `hex(HMAC-SHA256(master, "sluice-webhook-v1:" + owner))` (64 lowercase
    /// hex characters, used as a string key like the master), `kid` the first 16 hex
    /// characters of its SHA-256. Without an owner: the master itself, `kid` `default`.
    pub fn for_owner(master: &WebhookSecret, owner: Option<&str>) -> Self {
        let Some(owner) = owner else {
            return SigningKey {
                kid: DEFAULT_KID.to_owned(),
                key: master.clone(),
            };
        };
        let key = match Hmac::<Sha256>::new_from_slice(master.expose().as_bytes()) {
            Ok(mut mac) => {
                mac.update(KEY_LABEL.as_bytes());
                mac.update(owner.as_bytes());
                format!("{:x}", mac.finalize().into_bytes())
            }
            // HMAC takes a key of any length.
            Err(_) => String::new(),
        };
        let kid = format!("{:x}", Sha256::digest(key.as_bytes()))[..16].to_owned();
        SigningKey {
            kid,
            key: WebhookSecret(key),
        }
    }

    /// The key id sent as `kid=`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key, to give the owner's receiver.
    pub fn secret(&self) -> &WebhookSecret {
        &self.key
    }

    /// The `Sluice-Signature` value of `body` sent at Unix second `t`:
    /// `t=<t>,kid=<kid>,v1=<hex HMAC-SHA256 of "t.body">`.
    pub fn header(&self, t: u64, body: &[u8]) -> String {
        format!(
            "t={t},kid={},v1={}",
            self.kid,
            mac_hex(self.key.expose().as_bytes(), t, body)
        )
    }
}

/// What a receiver does with `Sluice-Signature`: takes `t` and `v1` from the comma-separated
/// `name=value` fields (in any order; others, such as `kid`, ignored), and compares `v1` with
/// its own HMAC-SHA256 of `"t.body"` under `key` in constant time. (A receiver also refuses an
/// old `t`; that is its clock's business, not this check's.)
pub fn verify(key: &str, header: &str, body: &[u8]) -> bool {
    let field = |name: &str| {
        header
            .split(',')
            .filter_map(|f| f.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    };
    let (Some(t), Some(v1)) = (field("t"), field("v1")) else {
        return false;
    };
    let Ok(t) = t.parse::<u64>() else {
        return false;
    };
    let expected = mac_hex(key.as_bytes(), t, body);
    expected.as_bytes().ct_eq(v1.as_bytes()).into()
}

/// The master secret: a value given (`SLUICE_WEBHOOK_SECRET`, local runs), or a Secrets Manager
/// secret (`SLUICE_WEBHOOK_SECRET_ARN`) read at its first use and kept for the life of the
/// process (once per Lambda cold start). A failed read is not kept: the next use tries again.
pub struct MasterSecret {
    source: Source,
    value: OnceCell<WebhookSecret>,
}

enum Source {
    Given,
    SecretsManager {
        arn: String,
        client: OnceCell<secrets::Client>,
    },
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MasterSecret");
        match &self.source {
            Source::Given => d.field("source", &"SLUICE_WEBHOOK_SECRET"),
            Source::SecretsManager { arn, .. } => d.field("secret_arn", arn),
        };
        d.field("value", &self.value.get()).finish()
    }
}

impl MasterSecret {
    /// A secret given as a value.
    pub fn given(value: impl Into<String>) -> Self {
        MasterSecret {
            source: Source::Given,
            value: OnceCell::from(WebhookSecret::new(value)),
        }
    }

    /// The Secrets Manager secret `arn`, read with a client from the standard AWS chain.
    pub fn from_arn(arn: impl Into<String>) -> Self {
        MasterSecret {
            source: Source::SecretsManager {
                arn: arn.into(),
                client: OnceCell::new(),
            },
            value: OnceCell::new(),
        }
    }

    /// The Secrets Manager secret `arn`, read with `client`.
    pub fn from_arn_with(arn: impl Into<String>, client: aws_sdk_secretsmanager::Client) -> Self {
        MasterSecret {
            source: Source::SecretsManager {
                arn: arn.into(),
                client: OnceCell::from(client),
            },
            value: OnceCell::new(),
        }
    }

    /// The secret: read once, then kept. The error is for the log (it names the ARN).
    pub async fn get(&self) -> Result<&WebhookSecret, String> {
        self.value
            .get_or_try_init(|| async {
                let Source::SecretsManager { arn, client } = &self.source else {
                    // A given value is set at construction.
                    return Err("no webhook secret".to_owned());
                };
                let client = client.get_or_init(secrets::client).await;
                let value = secrets::secret_string(client, arn).await?;
                if value.chars().count() < MIN_SECRET_CHARS {
                    return Err(format!(
                        "the webhook secret {arn} is shorter than {MIN_SECRET_CHARS} characters"
                    ));
                }
                tracing::info!(secret_arn = %arn, "Webhook secret read from Secrets Manager.");
                Ok(WebhookSecret::new(value))
            })
            .await
    }

    /// `owner`'s signing key (see [`SigningKey::for_owner`]).
    pub async fn key_for(&self, owner: Option<&str>) -> Result<SigningKey, String> {
        Ok(SigningKey::for_owner(self.get().await?, owner))
    }
}

/// How long to wait before attempt `attempts + 1`, after `attempts` failed ones.
pub fn retry_delay(attempts: u64) -> Duration {
    let exp = attempts.saturating_sub(1).min(16) as u32;
    Duration::from_secs((FIRST_DELAY_SECONDS << exp).min(MAX_DELAY_SECONDS))
}

/// Sends webhooks: the master secret, the HTTP client, where it may send, and the retry bound.
#[derive(Debug, Clone)]
pub struct Sender {
    master: Option<Arc<MasterSecret>>,
    http: reqwest::Client,
    destinations: Destinations,
    pub(crate) give_up_seconds: u64,
}

impl Sender {
    /// A sender signing with `secret` as given (see [`Sender::with_master`]).
    pub fn new(
        secret: Option<String>,
        destinations: Destinations,
        give_up_seconds: u64,
    ) -> anyhow::Result<Self> {
        Self::with_master(
            secret.map(MasterSecret::given),
            destinations,
            give_up_seconds,
        )
    }

    /// The client connects only to public addresses ([`Destinations::resolver`]) and follows
    /// no redirect.
    pub fn with_master(
        master: Option<MasterSecret>,
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
            master: master.map(Arc::new),
            http,
            destinations,
            give_up_seconds,
        })
    }

    /// [`Sender::post_for`] an upload without an owner (signed with the master, `kid=default`).
    pub async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), String> {
        self.post_for(url, None, body).await
    }

    /// One POST of `body` to `url`, signed with `owner`'s key; any 2xx is a delivery. The
    /// error (recorded, and shown to the uploader) names the HTTP status, or only that no HTTP
    /// answer came: which hosts and ports answer is not the uploader's to learn; the ingest's
    /// log has the detail.
    pub async fn post_for(
        &self,
        url: &str,
        owner: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let Some(master) = &self.master else {
            return Err("no webhook secret is configured where the status is folded (SLUICE_WEBHOOK_SECRET_ARN, or SLUICE_WEBHOOK_SECRET locally)".to_owned());
        };
        self.destinations.check(url)?;
        let key = master.key_for(owner).await.map_err(|e| {
            tracing::error!(error = %e, "Webhook secret not read; the webhook is retried.");
            "the webhook signing key could not be read".to_owned()
        })?;
        let t = crate::records::unix_now();
        let answer = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, key.header(t, &body))
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
mod tests;
