//! The photos the bridge carries: the S3 bucket they wait in ([`PhotoSource`]: fetch one,
//! bounded by its declared size; delete committed ones) and, for `[photos] store =
//! "directory"`, the content-addressed files they are kept in ([`files`]). The only code that
//! calls the S3 SDK.
//!
//! The client is built like the SQS client: the standard AWS chain, with `[photos] region` and
//! `endpoint` overriding it; an endpoint (a local S3-API server) also turns on path-style
//! addressing, which such servers expect.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

use crate::config::PhotosConfig;
use crate::io::sqs::NoRootCertificates;

pub mod files;

/// Why a photo could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The bucket answered that there is no such object.
    #[error("no object {key} in bucket {bucket}")]
    Missing { bucket: String, key: String },
    /// The object holds more bytes than the receipt declares (reading stopped there).
    #[error("object {key} holds more than the {declared} bytes declared")]
    TooLarge { key: String, declared: u64 },
    /// S3 could not be asked (unreachable, a 5xx, access denied): retried.
    #[error("cannot fetch {key} from bucket {bucket}: {detail}")]
    Unavailable {
        bucket: String,
        key: String,
        detail: String,
    },
}

/// The bucket the photos wait in.
#[derive(Debug, Clone)]
pub struct PhotoSource {
    client: Client,
    bucket: String,
}

impl PhotoSource {
    /// A client for `[photos]`, from the standard AWS chain with its overrides.
    pub async fn connect(cfg: &PhotosConfig) -> Result<Self, NoRootCertificates> {
        crate::io::sqs::check_roots()?;
        let shared =
            sluice_aws::shared_config(cfg.region.as_deref(), cfg.endpoint.as_deref()).await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.endpoint.is_some())
            .build();
        Ok(Self {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object at `key`, read to its end but never past `declared` bytes.
    pub async fn fetch(&self, key: &str, declared: u64) -> Result<Vec<u8>, FetchError> {
        let unavailable = |detail: String| FetchError::Unavailable {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail,
        };
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if is_missing(&e) {
                    return Err(FetchError::Missing {
                        bucket: self.bucket.clone(),
                        key: key.to_owned(),
                    });
                }
                return Err(unavailable(describe(&e)));
            }
        };
        let cap = usize::try_from(declared).unwrap_or(usize::MAX);
        let mut data = Vec::with_capacity(cap.min(32 << 20));
        let mut body = resp.body;
        loop {
            match body.try_next().await {
                Ok(Some(bytes)) => {
                    if data.len() + bytes.len() > cap {
                        return Err(FetchError::TooLarge {
                            key: key.to_owned(),
                            declared,
                        });
                    }
                    data.extend_from_slice(&bytes);
                }
                Ok(None) => return Ok(data),
                Err(e) => return Err(unavailable(format!("reading the body: {e}"))),
            }
        }
    }

    /// Deletes `keys` (DeleteObjects, up to 1000 a call); returns each key that could not be
    /// deleted, with why.
    pub async fn delete(&self, keys: &[String]) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for part in keys.chunks(1000) {
            let objects: Result<Vec<ObjectIdentifier>, _> = part
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect();
            let delete =
                objects.and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
            let delete = match delete {
                Ok(d) => d,
                Err(e) => {
                    failed.extend(part.iter().map(|k| (k.clone(), e.to_string())));
                    continue;
                }
            };
            match self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
            {
                Ok(out) => {
                    for e in out.errors.unwrap_or_default() {
                        failed.push((
                            e.key.unwrap_or_default(),
                            format!(
                                "{}: {}",
                                e.code.unwrap_or_default(),
                                e.message.unwrap_or_default()
                            ),
                        ));
                    }
                }
                Err(e) => {
                    let why = describe(&e);
                    failed.extend(part.iter().map(|k| (k.clone(), why.clone())));
                }
            }
        }
        failed
    }
}

/// `NoSuchKey`, or a 404 without a body (HEAD-like answers of some S3-API servers).
fn is_missing<R>(e: &SdkError<GetObjectError, R>) -> bool
where
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(se) => {
            matches!(se.err(), GetObjectError::NoSuchKey(_)) || se.err().code() == Some("NoSuchKey")
        }
        _ => false,
    }
}

/// An SDK error with its service code and message when there is one (the SDK's `Display`
/// says only "service error").
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(se) => format!(
            "{}: {}",
            se.err().code().unwrap_or("service error"),
            se.err().message().unwrap_or("")
        ),
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(cause) = src {
                s.push_str(": ");
                s.push_str(&cause.to_string());
                src = cause.source();
            }
            s
        }
    }
}
