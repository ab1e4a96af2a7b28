//! Ingest configuration, read from the environment (Lambda style). Every problem is listed
//! at once.

use std::fmt;

use sluice_protocol::envelope::Compression;
use sluice_protocol::split::{DEFAULT_MAX_MESSAGE_BYTES, SQS_MAX_MESSAGE_BYTES};

/// The ingest API's settings.
#[derive(Clone)]
pub struct IngestConfig {
    /// `SLUICE_QUEUE_URL` (required).
    pub queue_url: String,
    /// `SLUICE_SQS_ENDPOINT`: an SQS-compatible server instead of AWS's.
    pub sqs_endpoint: Option<String>,
    /// `SLUICE_MAX_MESSAGE_BYTES`: per SQS message, 1 KiB ..= 1 MiB (SQS's ceiling).
    pub max_message_bytes: usize,
    /// `SLUICE_MAX_RECEIPTS_PER_CHUNK`.
    pub max_receipts_per_chunk: usize,
    /// `SLUICE_MAX_RECEIPTS_PER_REQUEST`.
    pub max_receipts_per_request: usize,
    /// `SLUICE_MAX_BODY_BYTES`: request body, both as sent and once gzip is undone.
    pub max_body_bytes: usize,
    /// `SLUICE_COMPRESSION`: `none`, `gzip` or `zstd` for message bodies.
    pub compression: Compression,
    /// `SLUICE_API_TOKEN`: when set, requests need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// `SLUICE_PUBLISH_CONCURRENCY`: SendMessageBatch calls in flight per request.
    pub publish_concurrency: usize,
    /// `SLUICE_STATUS_TABLE`: the DynamoDB table of upload records, which binds each
    /// `Idempotency-Key` to its body. Unset: keys cannot be checked (see `routes`).
    pub status_table: Option<String>,
    /// `SLUICE_DYNAMODB_ENDPOINT`: a DynamoDB-API server instead of AWS's (local only); the
    /// table is then created when missing.
    pub dynamodb_endpoint: Option<String>,
    /// `SLUICE_STATUS_TTL_DAYS`: days an upload's record and status are kept (default 30).
    pub status_ttl_days: u64,
    /// `SLUICE_LAMBDA_HANDLER`: on Lambda, which event this function serves.
    pub handler: Handler,
    /// `SLUICE_STATUS_QUEUE_URL`: the queue the agents report to. Locally the ingest folds it
    /// in a background task; on Lambda (`SLUICE_LAMBDA_HANDLER=status`) webhook jobs go to it.
    pub status_queue_url: Option<String>,
    /// `SLUICE_WEBHOOK_QUEUE_URL`: another queue for webhook jobs (default: the status queue).
    pub webhook_queue_url: Option<String>,
    /// `SLUICE_WEBHOOK_SECRET`: the webhooks' master secret as a value, for local runs and the
    /// demo only (on AWS an environment variable is readable by anyone who may read the
    /// function's configuration; use `SLUICE_WEBHOOK_SECRET_ARN`).
    pub webhook_secret: Option<String>,
    /// `SLUICE_WEBHOOK_SECRET_ARN`: the Secrets Manager secret (a plain string) holding the
    /// master secret, read at run time by the function that signs. With neither this nor
    /// `SLUICE_WEBHOOK_SECRET`, `Sluice-Callback` is refused.
    pub webhook_secret_arn: Option<String>,
    /// `SLUICE_WEBHOOK_ALLOW_INSECURE=1`: plain-HTTP callbacks to a loopback host (local use).
    pub webhook_allow_insecure: bool,
    /// `SLUICE_WEBHOOK_ALLOWED_DOMAINS`: callback hosts must be one of these domains or a name
    /// under one (comma-separated); unset, any public host.
    pub webhook_allowed_domains: Vec<String>,
    /// `SLUICE_WEBHOOK_GIVE_UP_SECONDS`: retries stop this long after the batch became final.
    pub webhook_give_up_seconds: u64,
    /// `SLUICE_PHOTO_BUCKET`: the S3 bucket receipt photos are uploaded to (presigned PUTs,
    /// `photos/{batch_id}/{receipt_id}`), where the chunks waiting for them are held
    /// (`pending/{batch_id}/{chunk_index}.json`). Unset: a body declaring photos is refused.
    pub photo_bucket: Option<String>,
    /// `SLUICE_PHOTO_EVENTS_QUEUE_URL`: the queue the bucket's ObjectCreated notifications go
    /// to. Locally the ingest checks the photos in a background task.
    pub photo_events_queue_url: Option<String>,
    /// `SLUICE_PHOTO_URL_SECONDS`: how long a photo's upload URL is valid (default 900); a
    /// photo not uploaded by then is refused `image_missing`.
    pub photo_url_seconds: u64,
    /// `SLUICE_PHOTO_MAX_BYTES`: a photo above this size is refused `image_too_large`
    /// (default 10 MiB).
    pub photo_max_bytes: u64,
    /// `SLUICE_PHOTO_MAX_PIXELS`: a photo whose header names more pixels (width × height)
    /// is refused `image_too_large` (default 100,000,000: a 100-megapixel camera's).
    pub photo_max_pixels: u64,
    /// `SLUICE_PHOTO_SWEEP_SECONDS`: how often the local background task looks for photos
    /// past their deadline (default 60).
    pub photo_sweep_seconds: u64,
    /// `SLUICE_S3_ENDPOINT`: an S3-API server instead of AWS's (local only; path-style).
    pub s3_endpoint: Option<String>,
}

/// What a Lambda function built from this binary serves (`SLUICE_LAMBDA_HANDLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handler {
    /// `api` (default): the HTTP API behind API Gateway.
    #[default]
    Api,
    /// `status`: the status queue's SQS event source (folding and webhooks).
    Status,
    /// `photos`: the photo events queue's SQS event source (each uploaded photo checked, its
    /// chunk released), and the scheduled sweep of photos past their deadline.
    Photos,
}

impl fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestConfig")
            .field("queue_url", &self.queue_url)
            .field("sqs_endpoint", &self.sqs_endpoint)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_receipts_per_chunk", &self.max_receipts_per_chunk)
            .field("max_receipts_per_request", &self.max_receipts_per_request)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("compression", &self.compression)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("publish_concurrency", &self.publish_concurrency)
            .field("status_table", &self.status_table)
            .field("dynamodb_endpoint", &self.dynamodb_endpoint)
            .field("status_ttl_days", &self.status_ttl_days)
            .field("handler", &self.handler)
            .field("status_queue_url", &self.status_queue_url)
            .field("webhook_queue_url", &self.webhook_queue_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_secret_arn", &self.webhook_secret_arn)
            .field("webhook_allow_insecure", &self.webhook_allow_insecure)
            .field("webhook_allowed_domains", &self.webhook_allowed_domains)
            .field("webhook_give_up_seconds", &self.webhook_give_up_seconds)
            .field("photo_bucket", &self.photo_bucket)
            .field("photo_events_queue_url", &self.photo_events_queue_url)
            .field("photo_url_seconds", &self.photo_url_seconds)
            .field("photo_max_bytes", &self.photo_max_bytes)
            .field("photo_max_pixels", &self.photo_max_pixels)
            .field("photo_sweep_seconds", &self.photo_sweep_seconds)
            .field("s3_endpoint", &self.s3_endpoint)
            .finish()
    }
}

/// Default receipts per chunk: a typical receipt is 0.5–2 KB, so 500 keeps most chunks under
/// the 256 KiB default message size, where the byte limit takes over.
pub const DEFAULT_MAX_RECEIPTS_PER_CHUNK: usize = 500;
/// Default receipts per request: the "tens of thousands" a bulk upload carries.
pub const DEFAULT_MAX_RECEIPTS_PER_REQUEST: usize = 50_000;
/// Lambda's synchronous payload limit is 6 MB; the same cap applies locally by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// SendMessageBatch calls in flight per request: enough to hide SQS latency, few enough not
/// to trip SQS throttling from one request.
pub const DEFAULT_PUBLISH_CONCURRENCY: usize = 8;
/// Largest photo by default (`SLUICE_PHOTO_MAX_BYTES`): 10 MiB.
pub const DEFAULT_PHOTO_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Default for `SLUICE_PHOTO_MAX_PIXELS`: a 100-megapixel camera's photo.
pub const DEFAULT_PHOTO_MAX_PIXELS: usize = 100_000_000;
/// The most `SLUICE_PHOTO_MAX_PIXELS` may be set to.
const MAX_PHOTO_PIXELS: usize = 1_000_000_000;
/// A day of webhook retries.
pub const DEFAULT_WEBHOOK_GIVE_UP_SECONDS: usize = 24 * 3600;

/// Every problem found, listed at once.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problems):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl IngestConfig {
    /// Where webhooks may go: the callback URL's rules and the addresses a POST connects to.
    pub fn webhook_destinations(&self) -> crate::report::destination::Destinations {
        crate::report::destination::Destinations {
            allow_insecure: self.webhook_allow_insecure,
            allowed_domains: self.webhook_allowed_domains.clone(),
        }
    }

    /// Whether webhooks can be signed: a master secret is configured (as a value or an ARN).
    /// The API function only checks this; it never reads the secret.
    pub fn webhooks_configured(&self) -> bool {
        self.webhook_secret.is_some() || self.webhook_secret_arn.is_some()
    }

    /// The webhooks' master secret, where the status is folded: the Secrets Manager secret,
    /// read at its first use, or the value given.
    pub fn webhook_master(&self) -> Option<crate::report::webhook::MasterSecret> {
        use crate::report::webhook::MasterSecret;
        match (&self.webhook_secret_arn, &self.webhook_secret) {
            (Some(arn), _) => Some(MasterSecret::from_arn(arn.clone())),
            (None, Some(value)) => Some(MasterSecret::given(value.clone())),
            (None, None) => None,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let handler = match get("SLUICE_LAMBDA_HANDLER").as_deref() {
            None | Some("") | Some("api") => Handler::Api,
            Some("status") => Handler::Status,
            Some("photos") => Handler::Photos,
            Some(other) => {
                problems.push(format!(
                    "SLUICE_LAMBDA_HANDLER: {other:?} is not one of api, status, photos"
                ));
                Handler::Api
            }
        };
        let queue_url = match get("SLUICE_QUEUE_URL") {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => u,
            Some(u) => {
                problems.push(format!("SLUICE_QUEUE_URL: {u:?} is not an http(s) URL"));
                String::new()
            }
            // The status function sends no chunks.
            None if handler == Handler::Status => String::new(),
            None => {
                problems.push(
                    "SLUICE_QUEUE_URL: required (the SQS queue to send chunks to)".to_owned(),
                );
                String::new()
            }
        };
        let mut endpoint = |key: &str| {
            let ep = get(key).filter(|s| !s.is_empty());
            if let Some(ep) = &ep {
                if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                    problems.push(format!("{key}: {ep:?} is not an http(s) URL"));
                }
            }
            ep
        };
        let sqs_endpoint = endpoint("SLUICE_SQS_ENDPOINT");
        let dynamodb_endpoint = endpoint("SLUICE_DYNAMODB_ENDPOINT");
        let status_queue_url = endpoint("SLUICE_STATUS_QUEUE_URL");
        let webhook_queue_url = endpoint("SLUICE_WEBHOOK_QUEUE_URL");
        let photo_events_queue_url = endpoint("SLUICE_PHOTO_EVENTS_QUEUE_URL");
        let s3_endpoint = endpoint("SLUICE_S3_ENDPOINT");
        let photo_bucket = get("SLUICE_PHOTO_BUCKET").filter(|s| !s.is_empty());
        if let Some(b) = &photo_bucket {
            let ok = (3..=63).contains(&b.len())
                && b.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.')
                });
            if !ok {
                problems.push(format!(
                    "SLUICE_PHOTO_BUCKET: {b:?} is not an S3 bucket name (3 to 63 of a-z 0-9 - .)"
                ));
            }
        }
        let status_table = get("SLUICE_STATUS_TABLE").filter(|s| !s.is_empty());
        if let Some(t) = &status_table {
            let ok = (3..=255).contains(&t.len())
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
            if !ok {
                problems.push(format!(
                    "SLUICE_STATUS_TABLE: {t:?} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ - .)"
                ));
            }
        }
        let mut number = |key: &str, default: usize, min: usize, max: usize| -> usize {
            match get(key) {
                None => default,
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    Ok(n) => {
                        problems.push(format!("{key}: {n} is out of range {min}..={max}"));
                        default
                    }
                    Err(_) => {
                        problems.push(format!("{key}: {v:?} is not a whole number"));
                        default
                    }
                },
            }
        };
        let max_message_bytes = number(
            "SLUICE_MAX_MESSAGE_BYTES",
            DEFAULT_MAX_MESSAGE_BYTES,
            1024,
            SQS_MAX_MESSAGE_BYTES,
        );
        let max_receipts_per_chunk = number(
            "SLUICE_MAX_RECEIPTS_PER_CHUNK",
            DEFAULT_MAX_RECEIPTS_PER_CHUNK,
            1,
            100_000,
        );
        let max_receipts_per_request = number(
            "SLUICE_MAX_RECEIPTS_PER_REQUEST",
            DEFAULT_MAX_RECEIPTS_PER_REQUEST,
            1,
            1_000_000,
        );
        let max_body_bytes = number(
            "SLUICE_MAX_BODY_BYTES",
            DEFAULT_MAX_BODY_BYTES,
            1024,
            1 << 30,
        );
        let publish_concurrency = number(
            "SLUICE_PUBLISH_CONCURRENCY",
            DEFAULT_PUBLISH_CONCURRENCY,
            1,
            256,
        );
        let status_ttl_days = number("SLUICE_STATUS_TTL_DAYS", 30, 1, 3650) as u64;
        let webhook_give_up_seconds = number(
            "SLUICE_WEBHOOK_GIVE_UP_SECONDS",
            DEFAULT_WEBHOOK_GIVE_UP_SECONDS,
            1,
            14 * 24 * 3600,
        ) as u64;
        let photo_url_seconds = number("SLUICE_PHOTO_URL_SECONDS", 900, 1, 7 * 24 * 3600) as u64;
        let photo_max_bytes = number(
            "SLUICE_PHOTO_MAX_BYTES",
            DEFAULT_PHOTO_MAX_BYTES as usize,
            1,
            sluice_protocol::receipt::MAX_PHOTO_BYTES as usize,
        ) as u64;
        let photo_max_pixels = number(
            "SLUICE_PHOTO_MAX_PIXELS",
            DEFAULT_PHOTO_MAX_PIXELS,
            1,
            MAX_PHOTO_PIXELS,
        ) as u64;
        let photo_sweep_seconds = number("SLUICE_PHOTO_SWEEP_SECONDS", 60, 1, 3600) as u64;
        let compression = match get("SLUICE_COMPRESSION") {
            None => Compression::None,
            Some(v) => v.parse().unwrap_or_else(|_| {
                problems.push(format!(
                    "SLUICE_COMPRESSION: {v:?} is not one of none, gzip, zstd"
                ));
                Compression::None
            }),
        };
        let api_token = get("SLUICE_API_TOKEN").filter(|t| !t.is_empty());
        if let Some(t) = &api_token {
            if t.len() < 16 {
                problems.push("SLUICE_API_TOKEN: use at least 16 characters".to_owned());
            }
        }
        let webhook_allow_insecure = match get("SLUICE_WEBHOOK_ALLOW_INSECURE").as_deref() {
            None | Some("") | Some("0") => false,
            Some("1") => true,
            Some(v) => {
                problems.push(format!(
                    "SLUICE_WEBHOOK_ALLOW_INSECURE: {v:?} is not 0 or 1"
                ));
                false
            }
        };
        let webhook_allowed_domains = match crate::report::destination::parse_allowed_domains(
            get("SLUICE_WEBHOOK_ALLOWED_DOMAINS")
                .as_deref()
                .unwrap_or(""),
        ) {
            Ok(domains) => domains,
            Err(why) => {
                problems.push(format!("SLUICE_WEBHOOK_ALLOWED_DOMAINS: {why}"));
                Vec::new()
            }
        };
        let webhook_secret = get("SLUICE_WEBHOOK_SECRET").filter(|t| !t.is_empty());
        if webhook_secret.as_ref().is_some_and(|t| t.len() < 16) {
            problems.push("SLUICE_WEBHOOK_SECRET: use at least 16 characters".to_owned());
        }
        let webhook_secret_arn = get("SLUICE_WEBHOOK_SECRET_ARN").filter(|t| !t.is_empty());
        if let Some(arn) = &webhook_secret_arn {
            if let Err(why) = check_secret_arn(arn) {
                problems.push(format!("SLUICE_WEBHOOK_SECRET_ARN: {why}"));
            }
            if webhook_secret.is_some() {
                problems.push("SLUICE_WEBHOOK_SECRET and SLUICE_WEBHOOK_SECRET_ARN are both set: set one (the ARN on AWS, the value for local runs only)".to_owned());
            }
        }
        if status_table.is_none() {
            if status_queue_url.is_some() {
                problems.push("SLUICE_STATUS_QUEUE_URL: needs SLUICE_STATUS_TABLE (the table the status is folded into)".to_owned());
            } else if handler == Handler::Status {
                problems.push("SLUICE_LAMBDA_HANDLER=status: needs SLUICE_STATUS_TABLE".to_owned());
            }
        }
        if photo_bucket.is_some() && status_table.is_none() {
            problems.push("SLUICE_PHOTO_BUCKET: needs SLUICE_STATUS_TABLE (each photo's verdict and each held chunk is recorded there)".to_owned());
        }
        if photo_bucket.is_none() {
            if photo_events_queue_url.is_some() {
                problems.push("SLUICE_PHOTO_EVENTS_QUEUE_URL: needs SLUICE_PHOTO_BUCKET (the bucket whose events it carries)".to_owned());
            } else if handler == Handler::Photos {
                problems.push("SLUICE_LAMBDA_HANDLER=photos: needs SLUICE_PHOTO_BUCKET".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(Self {
                queue_url,
                sqs_endpoint,
                max_message_bytes,
                max_receipts_per_chunk,
                max_receipts_per_request,
                max_body_bytes,
                compression,
                api_token,
                publish_concurrency,
                status_table,
                dynamodb_endpoint,
                status_ttl_days,
                handler,
                status_queue_url,
                webhook_queue_url,
                webhook_secret,
                webhook_secret_arn,
                webhook_allow_insecure,
                webhook_allowed_domains,
                webhook_give_up_seconds,
                photo_bucket,
                photo_events_queue_url,
                photo_url_seconds,
                photo_max_bytes,
                photo_max_pixels,
                photo_sweep_seconds,
                s3_endpoint,
            })
        } else {
            Err(ConfigError(problems))
        }
    }
}

/// Checks that `arn` is a Secrets Manager secret's ARN,
/// `arn:<partition>:secretsmanager:<region>:<12-digit account>:secret:<name>`, saying what is
/// wrong when it is not.
pub fn check_secret_arn(arn: &str) -> Result<(), String> {
    const SHAPE: &str = "arn:<partition>:secretsmanager:<region>:<account id>:secret:<name>";
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    let why = match parts.as_slice() {
        ["arn", _, service, ..] if *service != "secretsmanager" => {
            Some(format!("the service is {service:?}, not secretsmanager"))
        }
        ["arn", partition, _, region, account, kind, name] => {
            if partition.is_empty() {
                Some("the partition is empty".to_owned())
            } else if region.is_empty() {
                Some("the region is empty".to_owned())
            } else if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                Some(format!("the account {account:?} is not 12 digits"))
            } else if *kind != "secret" {
                Some(format!("the resource type is {kind:?}, not secret"))
            } else if name.is_empty() {
                Some("the secret name is empty".to_owned())
            } else {
                None
            }
        }
        ["arn", _, _, ..] => Some("it has fewer than 7 colon-separated parts".to_owned()),
        _ => Some("it does not start with arn:".to_owned()),
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "{arn:?} is not a Secrets Manager secret ARN ({SHAPE}): {why}"
        )),
    }
}

#[cfg(test)]
mod tests;
