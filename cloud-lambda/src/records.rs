//! The upload records in DynamoDB (`SLUICE_STATUS_TABLE`): one item per accepted upload, keyed
//! by its batch id, that binds an `Idempotency-Key` to the SHA-256 of the decompressed body.
//!
//! The item is written with a conditional PutItem *before* any chunk is sent: it succeeds when
//! the batch id is new or was recorded with the same digest (a safe retry), and fails with
//! [`RecordError::KeyReused`] when the same key came with another body, so the second body is
//! never enqueued under the first one's batch id. Items expire through DynamoDB's TTL on
//! `expires_at` ([`RECORD_TTL_SECONDS`] after the last write).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

/// How long an upload's record (and so its key binding) is kept: a week of client retries.
pub const RECORD_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// The table's partition key.
const KEY: &str = "batch_id";
/// The TTL attribute (epoch seconds).
const TTL_ATTRIBUTE: &str = "expires_at";

/// One upload, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub batch_id: String,
    /// The `Idempotency-Key` given, if any.
    pub idempotency_key: Option<String>,
    /// Lowercase hex SHA-256 of the decompressed body.
    pub body_sha256: String,
    pub receipts: usize,
    pub chunks: usize,
}

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The batch id is recorded with another body's digest.
    #[error("Idempotency-Key already used with another body")]
    KeyReused,
    /// DynamoDB did not answer (the full SDK error, for the log only).
    #[error("DynamoDB PutItem on the upload records failed: {0}")]
    Unavailable(String),
}

/// The upload records table.
#[derive(Debug, Clone)]
pub struct Records {
    client: Client,
    table: String,
}

impl Records {
    pub fn new(client: Client, table: String) -> Self {
        Records { client, table }
    }

    /// Records `rec`, unless its batch id is already bound to another digest.
    pub async fn put(&self, rec: &UploadRecord) -> Result<(), RecordError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let n = |v: u64| AttributeValue::N(v.to_string());
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(rec.batch_id.clone()))
            .item("body_sha256", AttributeValue::S(rec.body_sha256.clone()))
            .item("receipts", n(rec.receipts as u64))
            .item("chunks", n(rec.chunks as u64))
            .item("accepted_at", n(now))
            .item(TTL_ATTRIBUTE, n(now + RECORD_TTL_SECONDS))
            .condition_expression("attribute_not_exists(#id) OR body_sha256 = :digest")
            .expression_attribute_names("#id", KEY)
            .expression_attribute_values(":digest", AttributeValue::S(rec.body_sha256.clone()));
        if let Some(key) = &rec.idempotency_key {
            put = put.item("idempotency_key", AttributeValue::S(key.clone()));
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(RecordError::KeyReused)
            }
            Err(e) => Err(RecordError::Unavailable(format!(
                "{}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ))),
        }
    }

    /// Creates the table (on-demand, TTL on `expires_at`) when it does not exist: for local
    /// DynamoDB-API servers only; on AWS the deployment creates it.
    pub async fn create_if_missing(&self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let exists = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "{}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                ))
                .context(format!("describing table {}", self.table))
            }
        };
        if exists {
            return Ok(());
        }
        let key = |k: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(KEY)
                .key_type(k)
                .build()
        };
        let attr = AttributeDefinition::builder()
            .attribute_name(KEY)
            .attribute_type(ScalarAttributeType::S)
            .build();
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(KeyType::Hash)?)
            .attribute_definitions(attr?)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))
            .with_context(|| format!("creating table {}", self.table))?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()?;
        if let Err(e) = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
        {
            tracing::warn!(table = %self.table, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "Cannot enable TTL on the upload records; they will not expire.");
        }
        tracing::info!(table = %self.table, "Created the upload records table.");
        Ok(())
    }
}
