//! The S3 adapter: the only module of the ingest that calls the S3 SDK. Out go presigned PUT
//! URLs of declared photos and the held chunks (`pending/…` objects); in come the photos
//! themselves (read back to be checked) and the held chunks when they are released.
//!
//! Errors are the SDK's full text, for the log only.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

pub use aws_sdk_s3::Client;

/// One bucket: the client and the bucket's name.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: Client,
    name: String,
}

/// What a presigned PUT needs: the URL and the headers the client must send with it.
#[derive(Debug, Clone)]
pub struct PresignedPut {
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

/// What a photo PUT is bound to.
#[derive(Debug, Clone)]
pub struct PutSpec<'a> {
    pub key: &'a str,
    pub bytes: u64,
    pub content_type: &'a str,
    /// Base64 of the SHA-256 digest (`x-amz-checksum-sha256`).
    pub sha256_base64: String,
    /// User metadata (`x-amz-meta-…`), signed with the rest.
    pub metadata: &'a [(&'a str, String)],
}

/// An object read back.
#[derive(Debug)]
pub struct Object {
    /// The object's size as S3 reports it.
    pub size: u64,
    /// The first bytes up to the limit asked for.
    pub body: Vec<u8>,
    /// Its user metadata.
    pub metadata: std::collections::HashMap<String, String>,
}

/// An S3 call's failure: the object is not there, or the call failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("no such object {0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

impl Bucket {
    pub fn new(client: Client, name: String) -> Self {
        Bucket { client, name }
    }

    /// A presigned PUT of `spec.key`, valid for `expires_in`, bound to its length, type,
    /// SHA-256 and metadata.
    pub async fn presign_put(
        &self,
        spec: &PutSpec<'_>,
        expires_in: Duration,
    ) -> Result<PresignedPut, String> {
        let config = PresigningConfig::expires_in(expires_in).map_err(|e| e.to_string())?;
        let mut put = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(spec.key)
            .content_length(i64::try_from(spec.bytes).unwrap_or(i64::MAX))
            .content_type(spec.content_type)
            .checksum_sha256(&spec.sha256_base64);
        for (k, v) in spec.metadata {
            put = put.metadata(*k, v);
        }
        let presigned = put
            .presigned(config)
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(PresignedPut {
            url: presigned.uri().to_owned(),
            headers: presigned
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    }

    /// PutObject of a JSON document.
    pub async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), String> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(())
    }

    /// GetObject of `key`, reading at most `limit` bytes of its body.
    pub async fn get(&self, key: &str, limit: u64) -> Result<Object, S3Error> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") || e.code() == Some("NotFound") => {
                return Err(S3Error::NotFound(key.to_owned()))
            }
            Err(e) => return Err(S3Error::Failed(DisplayErrorContext(&e).to_string())),
        };
        let size = out.content_length.unwrap_or(0).max(0) as u64;
        let metadata = out.metadata.clone().unwrap_or_default();
        let mut body = Vec::with_capacity(size.min(limit) as usize);
        let mut stream = out.body;
        while let Some(part) = stream
            .try_next()
            .await
            .map_err(|e| S3Error::Failed(format!("reading {key}: {e}")))?
        {
            let room = (limit as usize).saturating_sub(body.len());
            body.extend_from_slice(&part[..part.len().min(room)]);
            if body.len() as u64 >= limit {
                break;
            }
        }
        Ok(Object {
            size,
            body,
            metadata,
        })
    }

    /// DeleteObject of `key` (deleting what is not there succeeds).
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(&e).to_string())?;
        Ok(())
    }

    /// Every key under `prefix` (ListObjectsV2, all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| DisplayErrorContext(&e).to_string())?;
            keys.extend(
                out.contents
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|o| o.key),
            );
            match out.next_continuation_token {
                Some(t) if out.is_truncated == Some(true) => token = Some(t),
                _ => return Ok(keys),
            }
        }
    }
}

/// The settings of an S3 client for a local S3-API server at `endpoint` (path-style, fixed
/// credentials, nothing read from the environment).
#[cfg(test)]
pub fn local_config(endpoint: &str) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "sluice-test",
        ))
}

/// The S3 client from the shared AWS settings: path-style when `local` (a local server), and
/// checksums computed only where S3 requires them (the presigned PUT carries the photo's own
/// SHA-256).
pub fn client<'a, C>(sdk: &'a C, local: bool) -> Client
where
    aws_sdk_s3::config::Builder: From<&'a C>,
{
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(local)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .build();
    Client::from_conf(conf)
}
