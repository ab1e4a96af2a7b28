//! Receipt photos in tests: this test's bucket on the local server (moto serves S3, presigned
//! PUTs included) with its ObjectCreated notification to a queue of the test, and the real
//! `sluice-ingest` configured to hold, check and release photos with them.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::{IngestProcess, TestEnv};

/// A bucket whose `photos/` ObjectCreated events go to `events_url`.
#[derive(Debug, Clone)]
pub struct PhotoBucket {
    pub s3: aws_sdk_s3::Client,
    pub name: String,
    pub events_url: String,
}

/// An S3 client of the local server (path-style, test credentials).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "sluice-test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl TestEnv {
    /// The bucket `{name}-photos` and the queue `{name}-photo-events` (removed with the test's
    /// other queues), the bucket notifying the queue of each object under `photos/`.
    pub async fn create_photo_bucket(&self) -> anyhow::Result<PhotoBucket> {
        use aws_sdk_s3::types::{
            Event, FilterRule, FilterRuleName, NotificationConfiguration,
            NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
        };
        let s3 = s3_client(&self.servers.sqs_endpoint);
        let name = format!("{}-photos", self.name);
        s3.create_bucket().bucket(&name).send().await?;
        let queue = format!("{}-photo-events", self.name);
        let events_url = self
            .sqs
            .create_queue()
            .queue_name(&queue)
            .send()
            .await?
            .queue_url
            .ok_or_else(|| anyhow::anyhow!("no queue URL for {queue}"))?;
        let filter = NotificationConfigurationFilter::builder()
            .key(
                S3KeyFilter::builder()
                    .filter_rules(
                        FilterRule::builder()
                            .name(FilterRuleName::Prefix)
                            .value("photos/")
                            .build(),
                    )
                    .build(),
            )
            .build();
        let notification = NotificationConfiguration::builder()
            .queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"))
                    .events(Event::S3ObjectCreated)
                    .filter(filter)
                    .build()?,
            )
            .build();
        s3.put_bucket_notification_configuration()
            .bucket(&name)
            .notification_configuration(notification)
            .send()
            .await?;
        Ok(PhotoBucket {
            s3,
            name,
            events_url,
        })
    }

    /// `sluice-ingest` with photos on `bucket` (checked in the background as their events
    /// come), and `extra` variables on top.
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

impl PhotoBucket {
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
        for (key, _) in self.list("").await? {
            self.s3
                .delete_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await?;
        }
        self.s3.delete_bucket().bucket(&self.name).send().await?;
        Ok(())
    }
}
