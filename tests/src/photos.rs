//! Receipt photos in tests and the demo: a bucket on moto whose `ObjectCreated` events (prefix
//! `photos/`) go to an events queue, as the SAM template wires them on AWS; the ingest
//! variables that point `sluice-ingest` at it; generated photo bytes a sniffer takes for a
//! JPEG; and the client side of an upload (declare, then `PUT` each photo to its URL).

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use sluice_protocol::envelope::{self, Chunk, Compression, ENCODING_ATTRIBUTE};
use sluice_protocol::Receipt;

use crate::{IngestProcess, TestEnv};

/// moto's default account, which names the events queue in the notification's ARN.
const MOTO_ACCOUNT: &str = "123456789012";

/// A bucket with its events queue.
#[derive(Debug, Clone)]
pub struct PhotoBucket {
    /// The S3 client (path-style, moto's credentials).
    pub s3: aws_sdk_s3::Client,
    /// The bucket's name.
    pub name: String,
    /// The queue its `ObjectCreated` events arrive on.
    pub events_url: String,
    /// moto's endpoint, serving S3 as well as SQS and DynamoDB.
    pub endpoint: String,
}

/// An S3 client for moto at `endpoint`.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "sluice-test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl PhotoBucket {
    /// Creates the bucket `{name}-photos` and the queue `{name}-photo-events` on moto at
    /// `endpoint`, and notifies the queue of every object created under `photos/`.
    pub async fn create(
        sqs: &aws_sdk_sqs::Client,
        endpoint: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        let s3 = s3_client(endpoint);
        let bucket = format!("{name}-photos");
        let events = format!("{name}-photo-events");
        let events_url = sqs
            .create_queue()
            .queue_name(&events)
            .send()
            .await?
            .queue_url
            .ok_or_else(|| anyhow::anyhow!("moto answered no queue URL for {events}"))?;
        match s3.create_bucket().bucket(&bucket).send().await {
            Ok(_) => {}
            // Ours already (the demo's, from an earlier run).
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) => {}
            Err(e) => return Err(e.into()),
        }
        let prefix = FilterRule::builder()
            .name(FilterRuleName::Prefix)
            .value("photos/")
            .build();
        let notification = NotificationConfiguration::builder()
            .queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(format!("arn:aws:sqs:us-east-1:{MOTO_ACCOUNT}:{events}"))
                    .events(Event::S3ObjectCreated)
                    .filter(
                        NotificationConfigurationFilter::builder()
                            .key(S3KeyFilter::builder().filter_rules(prefix).build())
                            .build(),
                    )
                    .build()?,
            )
            .build();
        s3.put_bucket_notification_configuration()
            .bucket(&bucket)
            .notification_configuration(notification)
            .send()
            .await?;
        Ok(Self {
            s3,
            name: bucket,
            events_url,
            endpoint: endpoint.to_owned(),
        })
    }

    /// The variables that give `sluice-ingest` this bucket: upload URLs living `url_seconds`,
    /// the never-uploaded looked for every `sweep_seconds`.
    pub fn ingest_vars(&self, url_seconds: u64, sweep_seconds: u64) -> Vec<(String, String)> {
        vec![
            ("SLUICE_PHOTO_BUCKET".into(), self.name.clone()),
            (
                "SLUICE_PHOTO_EVENTS_QUEUE_URL".into(),
                self.events_url.clone(),
            ),
            ("SLUICE_S3_ENDPOINT".into(), self.endpoint.clone()),
            ("SLUICE_PHOTO_URL_SECONDS".into(), url_seconds.to_string()),
            (
                "SLUICE_PHOTO_SWEEP_SECONDS".into(),
                sweep_seconds.to_string(),
            ),
        ]
    }

    /// The agent's `[photos]` section for this bucket, reached at `endpoint` (moto's, or a
    /// proxy in front of it), with `extra` lines.
    pub fn agent_section(&self, endpoint: &str, extra: &str) -> String {
        format!(
            "[photos]\nbucket = {:?}\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\n{extra}",
            self.name
        )
    }

    /// Deletes every object in the bucket.
    pub async fn empty(&self) -> anyhow::Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let keys = self.keys("").await?;
        for part in keys.chunks(1000) {
            let objects = part
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()?;
            self.s3
                .delete_objects()
                .bucket(&self.name)
                .delete(Delete::builder().set_objects(Some(objects)).build()?)
                .send()
                .await?;
        }
        Ok(())
    }

    /// The keys left in the bucket under `prefix`.
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every object under `prefix`: key and size.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await?;
            for o in page.contents.unwrap_or_default() {
                out.push((o.key.unwrap_or_default(), o.size.unwrap_or(0)));
            }
            match page.next_continuation_token {
                Some(t) if page.is_truncated == Some(true) => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// One object's bytes.
    pub async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await?;
        Ok(out.body.collect().await?.into_bytes().to_vec())
    }

    /// Deletes every object and the bucket (the local server keeps objects in memory).
    pub async fn remove(&self) -> anyhow::Result<()> {
        self.empty().await?;
        self.s3.delete_bucket().bucket(&self.name).send().await?;
        Ok(())
    }
}

impl TestEnv {
    /// This test's bucket `{name}-photos` and its events queue `{name}-photo-events` (removed
    /// with the test's other queues).
    pub async fn create_photo_bucket(&self) -> anyhow::Result<PhotoBucket> {
        PhotoBucket::create(&self.sqs, &self.servers.sqs_endpoint, &self.name).await
    }

    /// `sluice-ingest` with photos on `bucket` (checked in the background as their events
    /// come; upload URLs and the sweep at their defaults), and `extra` variables on top.
    pub async fn start_photo_ingest(
        &self,
        log: &str,
        bucket: &PhotoBucket,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<IngestProcess> {
        let endpoint = self.servers.sqs_endpoint.clone();
        let mut vars = vec![
            ("SLUICE_PHOTO_BUCKET", bucket.name.as_str()),
            ("SLUICE_PHOTO_EVENTS_QUEUE_URL", bucket.events_url.as_str()),
            ("SLUICE_S3_ENDPOINT", endpoint.as_str()),
        ];
        vars.extend_from_slice(extra);
        self.start_ingest_process_with(log, &vars).await
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `data`, as a receipt declares it.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Photo `n` of `len` bytes: a JPEG's start (SOI, a JFIF APP0 and a baseline frame header of
/// 1200 × 1600 pixels) followed by bytes of its own, different for every `n`.
pub fn jpeg(n: usize, len: usize) -> Vec<u8> {
    let b = vec![
        0xFF, 0xD8, // SOI
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x01, 0x00, 0x00, // APP0
        0xFF, 0xC0, 0x00, 0x11, 0x08, 0x06, 0x40, 0x04, 0xB0, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11,
        0x01, 0x03, 0x11, 0x01, // SOF0: 8 bits, 1600 high, 1200 wide, 3 components
    ];
    filled(b, (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), len)
}

/// Photo `n` of `len` bytes as a PNG: the signature and an IHDR chunk of 1200 × 1600 pixels,
/// then bytes of its own, different for every `n`.
pub fn png(n: usize, len: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    b.extend_from_slice(&1200u32.to_be_bytes());
    b.extend_from_slice(&1600u32.to_be_bytes());
    b.extend_from_slice(&[8, 2, 0, 0, 0]);
    filled(b, (n as u64).wrapping_mul(0xD1B5_4A32_D192_ED03), len)
}

/// `b` (a header) followed by xorshift bytes from `seed` (bytes nothing could compress), to `len`
/// bytes in all (at least 40: the header is never cut).
fn filled(mut b: Vec<u8>, seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    while b.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(len.max(40));
    b
}

/// A receipt whose photo waits in the bucket, as the cloud sends it once the photo is checked
/// (`image.key` and `image.content_type` set), and the photo.
#[derive(Debug, Clone)]
pub struct Carried {
    pub receipt: Value,
    pub id: String,
    /// The object key the cloud gives it: `photos/{batch_id}/{receipt_id}`.
    pub key: String,
    pub data: Vec<u8>,
}

/// Receipt `n` of `batch_id`, carrying `data` as its JPEG photo.
pub fn carried(batch_id: &str, n: usize, data: Vec<u8>) -> Carried {
    let id = uuid::Uuid::new_v4().to_string();
    let key = format!("photos/{batch_id}/{id}");
    let receipt = json!({
        "receipt_id": id, "tenant_id": "acme", "merchant": format!("Shop {n}"),
        "issued_on": "2026-03-01", "currency": "EUR", "total": format!("{n}.50"),
        "image": {
            "key": key, "sha256": sha256_hex(&data),
            "bytes": data.len(), "content_type": "image/jpeg",
        },
    });
    Carried {
        receipt,
        id,
        key,
        data,
    }
}

impl PhotoBucket {
    /// Puts `data` at `key`, as an upload through its presigned URL leaves it.
    pub async fn put(&self, key: &str, data: &[u8]) -> anyhow::Result<()> {
        self.s3
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(data.to_vec()))
            .send()
            .await?;
        Ok(())
    }
}

impl TestEnv {
    /// Sends `receipts` to the main queue as the cloud releases them, in chunks of
    /// `per_chunk` of batch `batch_id` (zstd envelopes).
    pub async fn send_carried(
        &self,
        batch_id: &str,
        receipts: &[Value],
        per_chunk: usize,
    ) -> anyhow::Result<()> {
        let chunks: Vec<_> = receipts.chunks(per_chunk.max(1)).collect();
        for (i, part) in chunks.iter().enumerate() {
            let receipts = part
                .iter()
                .enumerate()
                .map(|(j, v)| Receipt::from_value(v, j))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("invalid receipt: {e:?}"))?;
            let chunk = Chunk::new(
                batch_id.to_owned(),
                u32::try_from(i)?,
                u32::try_from(chunks.len())?,
                receipts,
            );
            let message = envelope::encode(&chunk, Compression::Zstd)?;
            match message.encoding {
                Some(enc) => {
                    self.send_raw(&message.body, &[(ENCODING_ATTRIBUTE, enc)])
                        .await?
                }
                None => self.send_raw(&message.body, &[]).await?,
            }
        }
        Ok(())
    }
}

/// What one `PUT` answered.
#[derive(Debug)]
pub struct PutResult {
    /// The receipt whose photo it was.
    pub receipt_id: String,
    /// The HTTP status, or 0 when the request failed.
    pub status: u16,
    /// The answer's body, or the error.
    pub text: String,
}

/// PUTs each `(upload, bytes)` to its presigned URL with the headers the API answered,
/// `parallel` at a time.
pub async fn put_photos(
    uploads: Vec<(serde_json::Value, Vec<u8>)>,
    parallel: usize,
) -> Vec<PutResult> {
    let http = reqwest::Client::new();
    futures_util::stream::iter(uploads)
        .map(|(upload, bytes)| {
            let http = http.clone();
            async move {
                let receipt_id = upload["receipt_id"].as_str().unwrap_or_default().to_owned();
                let mut put = http
                    .put(upload["upload_url"].as_str().unwrap_or_default())
                    .body(bytes);
                if let Some(headers) = upload["headers"].as_object() {
                    for (k, v) in headers {
                        put = put.header(k, v.as_str().unwrap_or_default());
                    }
                }
                match put.send().await {
                    Ok(resp) => PutResult {
                        receipt_id,
                        status: resp.status().as_u16(),
                        text: resp.text().await.unwrap_or_default(),
                    },
                    Err(e) => PutResult {
                        receipt_id,
                        status: 0,
                        text: e.to_string(),
                    },
                }
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_photo_starts_as_a_jpeg_and_differs_by_number() {
        let a = jpeg(1, 5000);
        let b = jpeg(2, 5000);
        assert_eq!(a.len(), 5000);
        assert_eq!(&a[..3], &[0xFF, 0xD8, 0xFF]);
        assert_ne!(a, b);
        assert_eq!(jpeg(1, 5000), a, "deterministic");
    }
}
