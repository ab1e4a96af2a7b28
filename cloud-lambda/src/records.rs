//! The upload records in DynamoDB (`SLUICE_STATUS_TABLE`): one item per accepted upload, keyed
//! by its batch id, that binds an `Idempotency-Key` to the SHA-256 of the decompressed body.
//!
//! Keeps the guarantee "An `Idempotency-Key` names one body".
//!
//! The accept fields are written with a conditional UpdateItem *before* any chunk is sent, on
//! condition that the batch id has none yet. When it has, a second conditional UpdateItem
//! succeeds only for the same digest and owner (a safe retry) and renews nothing but the
//! expiry: a retry never replaces the first accept's callback, key or counts, nor the counts
//! the status folding (`crate::report`) has added to the same item. With another body it fails
//! with [`RecordError::KeyReused`], so the second body is never enqueued under the first one's
//! batch id. (The batch id itself is the caller's and the key's, `routes::keyed_batch_id`, so
//! another caller's same key never meets this item.) Items expire through DynamoDB's TTL on `expires_at` (30 days after the last
//! accept by default, `SLUICE_STATUS_TTL_DAYS`).
//!
//! The calls themselves go through the DynamoDB adapter, `crate::io::dynamodb`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::io::dynamodb::{AttributeValue, Client, Table, Update, UpdateError};

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
    /// Chunks held until their photos are checked (`crate::photos`); 0 when none.
    pub held_chunks: usize,
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
    pub(crate) table: Table,
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
            table: Table::new(client, table, KEY),
            ttl_seconds: DEFAULT_TTL_DAYS * 24 * 3600,
        }
    }

    /// Keeps items `days` after their last accept instead of [`DEFAULT_TTL_DAYS`].
    pub fn with_ttl_days(mut self, days: u64) -> Self {
        self.ttl_seconds = days * 24 * 3600;
        self
    }

    /// Records `rec`'s accept fields, unless its batch id is already bound to another digest
    /// (or to another owner). The first accept's fields are kept: a retry (the same digest and
    /// owner) only renews the expiry, so it cannot change the callback, the key or the counts
    /// the first one recorded. Counts folded into the item are left alone.
    pub async fn put(&self, rec: &UploadRecord) -> Result<(), RecordError> {
        let now = unix_now();
        match self
            .table
            .update(&rec.batch_id, self.first_accept(rec, now))
            .await
        {
            Ok(_) => return Ok(()),
            Err(UpdateError::Condition) => {}
            Err(UpdateError::Failed(detail)) => return Err(RecordError::Unavailable(detail)),
        }
        match self.table.update(&rec.batch_id, self.retry(rec, now)).await {
            Ok(_) => Ok(()),
            Err(UpdateError::Condition) => Err(RecordError::KeyReused),
            Err(UpdateError::Failed(detail)) => Err(RecordError::Unavailable(detail)),
        }
    }

    /// The first accept of a batch id: every accept field, on condition that none was recorded.
    fn first_accept(&self, rec: &UploadRecord, now: u64) -> Update {
        let mut sets = vec![
            "body_sha256 = :digest",
            "receipts = :receipts",
            "chunks = :chunks",
            "accepted_at = if_not_exists(accepted_at, :now)",
            "#ttl = :expires",
        ];
        let mut update = Update::default()
            .name("#ttl", TTL_ATTRIBUTE)
            .value(":digest", AttributeValue::S(rec.body_sha256.clone()))
            .value(":receipts", num(rec.receipts as u64))
            .value(":chunks", num(rec.chunks as u64))
            .value(":now", num(now))
            .value(":expires", num(now + self.ttl_seconds));
        if let Some(key) = &rec.idempotency_key {
            sets.push("idempotency_key = :key");
            update = update.value(":key", AttributeValue::S(key.clone()));
        }
        if let Some(owner) = &rec.owner {
            sets.push("#owner = :owner");
            update = update
                .name("#owner", "owner")
                .value(":owner", AttributeValue::S(owner.clone()));
        }
        if let Some(url) = &rec.callback {
            sets.push("callback = :callback");
            update = update.value(":callback", AttributeValue::S(url.clone()));
        }
        if rec.held_chunks > 0 {
            sets.push("held_chunks = :held");
            update = update.value(":held", num(rec.held_chunks as u64));
        }
        update
            .expression(format!("SET {}", sets.join(", ")))
            .condition("attribute_not_exists(body_sha256)")
    }

    /// A retry of an accepted batch id: the same digest and the same owner (or none, as the
    /// first had none) renew the expiry and nothing else.
    fn retry(&self, rec: &UploadRecord, now: u64) -> Update {
        let update = Update::default()
            .name("#ttl", TTL_ATTRIBUTE)
            .name("#owner", "owner")
            .value(":digest", AttributeValue::S(rec.body_sha256.clone()))
            .value(":expires", num(now + self.ttl_seconds))
            .expression("SET #ttl = :expires");
        match &rec.owner {
            Some(owner) => update
                .value(":owner", AttributeValue::S(owner.clone()))
                .condition("body_sha256 = :digest AND #owner = :owner"),
            None => update.condition("body_sha256 = :digest AND attribute_not_exists(#owner)"),
        }
    }

    /// Creates the table (on-demand, TTL on `expires_at`) when it does not exist: for local
    /// DynamoDB-API servers only; on AWS the deployment creates it.
    pub async fn create_if_missing(&self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let table = self.table.name();
        let exists = self
            .table
            .exists()
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("describing table {table}"))?;
        if exists {
            return Ok(());
        }
        self.table
            .create()
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("creating table {table}"))?;
        if let Err(e) = self.table.enable_ttl(TTL_ATTRIBUTE).await {
            tracing::warn!(table = %table, error = %e, "Cannot enable TTL on the upload records; they will not expire.");
        }
        tracing::info!(table = %table, "Created the upload records table.");
        Ok(())
    }
}
