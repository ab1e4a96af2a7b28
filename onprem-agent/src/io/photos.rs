//! The photos the bridge carries: the S3 bucket they wait in ([`PhotoSource`]: fetch one,
//! bounded by its declared size; delete committed ones) and, for `[photos] store =
//! "directory"`, the content-addressed files they are kept in ([`files`]). The only code that
//! calls the S3 SDK.
//!
//! The client is built like the SQS client: the standard AWS chain, with `[photos] region` and
//! `endpoint` overriding it; an endpoint (a local S3-API server) also turns on path-style
//! addressing, which such servers expect.

use std::path::{Path, PathBuf};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWriteExt as _, BufWriter};

use crate::config::PhotosConfig;
use crate::io::sqs::NoRootCertificates;

pub mod files;

/// What a fetch buffers before writing to its file.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Why a photo could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The bucket answered that there is no such object.
    #[error("no object {key} in bucket {bucket}")]
    Missing { bucket: String, key: String },
    /// The object holds more bytes than the receipt declares (reading stopped there).
    #[error("object {key} holds more than the {declared} bytes declared")]
    TooLarge { key: String, declared: u64 },
    /// The fetched bytes could not be written where they wait (the spool, the photo
    /// directory): retried.
    #[error("cannot write a fetched photo to {}: {detail}", path.display())]
    Local { path: PathBuf, detail: String },
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

    /// Streams the object at `key` into a new file at `path`, never past `declared` bytes,
    /// hashing it on the way: its length and SHA-256 (lowercase hex). Only a buffer of the
    /// body is in memory at a time, whatever the photo's size. The file is not synced; on any
    /// error it is removed.
    pub async fn fetch_into(
        &self,
        key: &str,
        declared: u64,
        path: &Path,
    ) -> Result<(u64, String), FetchError> {
        let result = self.stream_into(key, declared, path).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(path).await;
        }
        result
    }

    async fn stream_into(
        &self,
        key: &str,
        declared: u64,
        path: &Path,
    ) -> Result<(u64, String), FetchError> {
        let unavailable = |detail: String| FetchError::Unavailable {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail,
        };
        let local = |e: std::io::Error| FetchError::Local {
            path: path.to_owned(),
            detail: e.to_string(),
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
        let mut file = BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            tokio::fs::File::create(path).await.map_err(local)?,
        );
        let mut hash = Sha256::new();
        let mut len: u64 = 0;
        let mut body = resp.body;
        loop {
            match body.try_next().await {
                Ok(Some(bytes)) => {
                    len = len.saturating_add(bytes.len() as u64);
                    if len > declared {
                        return Err(FetchError::TooLarge {
                            key: key.to_owned(),
                            declared,
                        });
                    }
                    hash.update(&bytes);
                    file.write_all(&bytes).await.map_err(local)?;
                }
                Ok(None) => break,
                Err(e) => return Err(unavailable(format!("reading the body: {e}"))),
            }
        }
        file.flush().await.map_err(local)?;
        Ok((len, hex(&hash.finalize())))
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

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
