//! The upload records in DynamoDB (`SLUICE_STATUS_TABLE`): one item per accepted upload, keyed
//! by its batch id, that binds an `Idempotency-Key` to the SHA-256 of the decompressed body.
//!
//! The accept fields are written with a conditional UpdateItem *before* any chunk is sent: it
//! succeeds when the batch id is new or was recorded with the same digest (a safe retry), and
//! fails with [`RecordError::KeyReused`] when the same key came with another body, so the
//! second body is never enqueued under the first one's batch id. Only the accept fields are
//! set, so a retry never clobbers the counts the status folding (`crate::status`) has added to
//! the same item. Items expire through DynamoDB's TTL on `expires_at` (30 days after the last
//! accept by default, `SLUICE_STATUS_TTL_DAYS`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

/// How long an upload's record (its key binding and its status) is kept by default, in days.
pub const DEFAULT_TTL_DAYS: u64 = 30;
/// The table's partition key.
pub(crate) const KEY: &str = "batch_id";
/// The TTL attribute (epoch seconds).
pub(crate) const TTL_ATTRIBUTE: &str = "expires_at";

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
    /// Who uploaded it, when the authentication names a caller (see `routes::identity`).
    pub owner: Option<String>,
    /// The `Sluice-Callback` URL to POST the final status to.
    pub callback: Option<String>,
}

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The batch id is recorded with another body's digest.
    #[error("Idempotency-Key already used with another body")]
    KeyReused,
    /// DynamoDB did not answer (the full SDK error, for the log only).
    #[error("DynamoDB UpdateItem on the upload records failed: {0}")]
    Unavailable(String),
}

/// The upload records table.
#[derive(Debug, Clone)]
pub struct Records {
    pub(crate) client: Client,
    pub(crate) table: String,
    /// Seconds an item is kept after its last accept.
    pub(crate) ttl_seconds: u64,
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A DynamoDB number.
pub(crate) fn num(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl Records {
    pub fn new(client: Client, table: String) -> Self {
        Records {
            client,
            table,
            ttl_seconds: DEFAULT_TTL_DAYS * 24 * 3600,
        }
    }

    /// Keeps items `days` after their last accept instead of [`DEFAULT_TTL_DAYS`].
    pub fn with_ttl_days(mut self, days: u64) -> Self {
        self.ttl_seconds = days * 24 * 3600;
        self
    }

    /// Records `rec`'s accept fields, unless its batch id is already bound to another digest
    /// (or, with an owner, to another owner). Counts folded into the item are left alone.
    pub async fn put(&self, rec: &UploadRecord) -> Result<(), RecordError> {
        let now = unix_now();
        let mut sets = vec![
            "body_sha256 = :digest",
            "receipts = :receipts",
            "chunks = :chunks",
            "accepted_at = if_not_exists(accepted_at, :now)",
            "#ttl = :expires",
        ];
        let mut condition = "attribute_not_exists(body_sha256) OR body_sha256 = :digest".to_owned();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(rec.batch_id.clone()))
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":digest", AttributeValue::S(rec.body_sha256.clone()))
            .expression_attribute_values(":receipts", num(rec.receipts as u64))
            .expression_attribute_values(":chunks", num(rec.chunks as u64))
            .expression_attribute_values(":now", num(now))
            .expression_attribute_values(":expires", num(now + self.ttl_seconds));
        if let Some(key) = &rec.idempotency_key {
            sets.push("idempotency_key = :key");
            update = update.expression_attribute_values(":key", AttributeValue::S(key.clone()));
        }
        if let Some(owner) = &rec.owner {
            sets.push("#owner = :owner");
            condition =
                format!("({condition}) AND (attribute_not_exists(#owner) OR #owner = :owner)");
            update = update
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":owner", AttributeValue::S(owner.clone()));
        }
        if let Some(url) = &rec.callback {
            sets.push("callback = :callback");
            update =
                update.expression_attribute_values(":callback", AttributeValue::S(url.clone()));
        }
        let update = update
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(condition);
        match update.send().await {
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
