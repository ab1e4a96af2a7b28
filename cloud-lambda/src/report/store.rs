//! The status half of an upload's item in the records table: folding a chunk report into it
//! (once per chunk, with a conditional UpdateItem), marking it complete, reading it back as a
//! [`BatchStatus`], and the webhook's delivery claim and outcome.
//!
//! Keeps the guarantee "A status report counts only for the upload it belongs to": the fold
//! is conditioned on the item `crate::records` wrote at accept, so a report creates no item.
//!
//! Attributes beside the accept fields of `crate::records`: `folded` (a number set of the
//! chunk indexes folded), the counters `chunks_done`, `stored`, `duplicates`, `conflicts`,
//! `rejected`, `reported_receipts` (ADDed), `rejections` (a list of `{receipt_id, reason}`,
//! trimmed to the first [`MAX_REJECTIONS`]), `completed_at_ms`, and `webhook_*`. With declared
//! photos (`crate::photos`): `held_chunks` (chunks not yet released; above 0 the state is
//! `awaiting_photos`), `released_chunks` and `photo_refused` (number sets: a chunk's release
//! and its photo refusals are counted once; the refusals go to `rejected` and `rejections`). The calls
//! themselves go through the DynamoDB adapter, `crate::io::dynamodb`.

use std::collections::HashMap;

use sluice_protocol::report::{
    cap_reason, BatchState, BatchStatus, ChunkReport, Rejection, WebhookState, WebhookStatus,
    MAX_REJECTIONS,
};

use crate::io::dynamodb::{AttributeValue, Item, Update, UpdateError};
use crate::records::{num, unix_now, Records, TTL_ATTRIBUTE};

/// A DynamoDB call failed (the SDK's full text, for the log only).
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {op} on {table} failed: {detail}")]
pub struct StoreError {
    pub op: &'static str,
    pub table: String,
    pub detail: String,
}

/// What recording a delivery's outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded under the claim that sent it.
    Done,
    /// The claim was taken over (it had lapsed): the outcome of the newer claim stands and
    /// nothing was written.
    ClaimLost,
}

/// What folding one report did.
#[derive(Debug, Clone, PartialEq)]
pub enum Folded {
    /// Counted now; the item after the update.
    Counted(Box<Item>),
    /// This chunk was folded before (a re-sent report): nothing changed.
    Already,
    /// The report is not bound to an accepted upload (no upload was accepted under its batch
    /// id, or it names another chunk count or a chunk the upload does not have): nothing
    /// changed, nothing was created. Why, for the log.
    Unbound(String),
}

/// A webhook delivery's claim.
#[derive(Debug)]
pub enum Claim {
    /// This consumer sends; the item as claimed, and the claim's token, which its outcome is
    /// recorded under ([`Records::record_webhook`]).
    Won { item: Box<Item>, token: String },
    /// Delivered or given up already, or no callback: nothing to do.
    Done,
    /// Another consumer holds the claim until this Unix second.
    HeldUntil(u64),
}

impl Records {
    fn store_error(&self, op: &'static str, detail: impl ToString) -> StoreError {
        StoreError {
            op,
            table: self.table.name().to_owned(),
            detail: detail.to_string(),
        }
    }

    /// Folds `r` once into its accepted upload: counters added, its chunk index added to
    /// `folded`, its rejections appended. Only an item the API accepted (it has `body_sha256`)
    /// whose `chunks` is the report's `chunk_count` and above its `chunk_index` takes a report,
    /// so a report cannot create an item, end an upload early or grow `folded`; such a report
    /// is [`Folded::Unbound`]. A report of a chunk already folded changes nothing.
    pub async fn fold(&self, r: &ChunkReport) -> Result<Folded, StoreError> {
        let mut sets = vec!["#ttl = if_not_exists(#ttl, :expires)"];
        let mut update = Update::default()
            .name("#ttl", TTL_ATTRIBUTE)
            .value(":count", num(u64::from(r.chunk_count)))
            .value(":expires", num(unix_now() + self.ttl_seconds))
            .value(":idx", num(u64::from(r.chunk_index)))
            .value(":idxs", AttributeValue::Ns(vec![r.chunk_index.to_string()]))
            .value(":one", num(1))
            .value(":stored", num(u64::from(r.stored)))
            .value(":dups", num(u64::from(r.duplicates)))
            .value(":conflicts", num(u64::from(r.conflicts)))
            .value(":rejected", num(u64::from(r.rejected)))
            .value(":receipts", num(u64::from(r.receipts)));
        if !r.rejections.is_empty() {
            sets.push("rejections = list_append(if_not_exists(rejections, :empty), :rej)");
            let list = rejection_list(&r.rejections);
            update = update
                .value(":empty", AttributeValue::L(vec![]))
                .value(":rej", AttributeValue::L(list));
        }
        // Every counter through a name: some (`stored`) are DynamoDB reserved words.
        for (alias, name) in [
            ("#folded", "folded"),
            ("#done", "chunks_done"),
            ("#stored", "stored"),
            ("#dups", "duplicates"),
            ("#conflicts", "conflicts"),
            ("#rejected", "rejected"),
            ("#reported", "reported_receipts"),
        ] {
            update = update.name(alias, name);
        }
        let expression = format!(
            "SET {} ADD #folded :idxs, #done :one, #stored :stored, #dups :dups, \
             #conflicts :conflicts, #rejected :rejected, #reported :receipts",
            sets.join(", ")
        );
        let update = update
            .expression(expression)
            .condition(
                "attribute_exists(body_sha256) AND chunks = :count AND :idx < chunks \
                 AND NOT contains(#folded, :idx)",
            )
            .returning_new();
        let item = match self.table.update(&r.batch_id, update).await {
            Ok(item) => item.unwrap_or_default(),
            Err(UpdateError::Condition) => return self.why_not_folded(r).await,
            Err(e) => return Err(self.store_error("UpdateItem (fold)", e)),
        };
        let listed = match item.get("rejections") {
            Some(AttributeValue::L(l)) => l.len(),
            _ => 0,
        };
        if listed > MAX_REJECTIONS {
            self.trim_rejections(&r.batch_id, listed).await?;
        }
        Ok(Folded::Counted(Box::new(item)))
    }

    /// Why the fold's condition did not hold, read back consistently: the chunk was folded
    /// before ([`Folded::Already`]), or the report is not bound to the accepted upload.
    async fn why_not_folded(&self, r: &ChunkReport) -> Result<Folded, StoreError> {
        let item = self.get(&r.batch_id).await?;
        let Some(item) = item.filter(|i| i.contains_key("body_sha256")) else {
            return Ok(Folded::Unbound(
                "no upload was accepted under this batch id".to_owned(),
            ));
        };
        let chunks = number(&item, "chunks");
        if chunks != Some(u64::from(r.chunk_count)) {
            return Ok(Folded::Unbound(format!(
                "chunk_count {} is not the accepted upload's {} chunks",
                r.chunk_count,
                chunks.map_or("(unknown)".to_owned(), |c| c.to_string())
            )));
        }
        if u64::from(r.chunk_index) >= chunks.unwrap_or(0) {
            return Ok(Folded::Unbound(format!(
                "chunk_index {} is not a chunk of the accepted upload",
                r.chunk_index
            )));
        }
        let folded = match item.get("folded") {
            Some(AttributeValue::Ns(set)) => set.contains(&r.chunk_index.to_string()),
            _ => false,
        };
        if folded {
            return Ok(Folded::Already);
        }
        // The item meets the condition now (it changed after the update): try again later.
        Err(self.store_error(
            "UpdateItem (fold)",
            "the condition failed, yet the item read back meets it; retried",
        ))
    }

    /// Records the receipts of chunk `chunk_index` the cloud refused for their photo
    /// (`crate::photos`), once per chunk (`photo_refused` holds the chunk indexes recorded):
    /// `rejected` counts them and `rejections` names them, beside the agent's own refusals.
    /// The chunk itself is still folded by its agent report (its other receipts), so
    /// `chunks_done` is left alone. `false` when they were recorded before.
    pub async fn record_photo_refusals(
        &self,
        batch_id: &str,
        chunk_index: u32,
        refused: &[Rejection],
    ) -> Result<bool, StoreError> {
        let list = rejection_list(refused);
        let update = Update::default()
            .name("#rejected", "rejected")
            .name("#refused", "photo_refused")
            .value(":n", num(refused.len() as u64))
            .value(":idx", num(u64::from(chunk_index)))
            .value(":idxs", AttributeValue::Ns(vec![chunk_index.to_string()]))
            .value(":empty", AttributeValue::L(vec![]))
            .value(":rej", AttributeValue::L(list))
            .expression(
                "SET rejections = list_append(if_not_exists(rejections, :empty), :rej) \
                 ADD #rejected :n, #refused :idxs",
            )
            .condition("attribute_exists(body_sha256) AND NOT contains(#refused, :idx)")
            .returning_new();
        let item = match self.table.update(batch_id, update).await {
            Ok(item) => item.unwrap_or_default(),
            Err(UpdateError::Condition) => return Ok(false),
            Err(e) => return Err(self.store_error("UpdateItem (photo refusals)", e)),
        };
        let listed = match item.get("rejections") {
            Some(AttributeValue::L(l)) => l.len(),
            _ => 0,
        };
        if listed > MAX_REJECTIONS {
            self.trim_rejections(batch_id, listed).await?;
        }
        Ok(true)
    }

    /// Counts chunk `chunk_index` of `batch_id` as released from its photo hold, once
    /// (`released_chunks` holds the indexes): `held_chunks` goes down by one.
    pub async fn release_held(&self, batch_id: &str, chunk_index: u32) -> Result<(), StoreError> {
        let update = Update::default()
            .name("#released", "released_chunks")
            .value(":minus", AttributeValue::N("-1".into()))
            .value(":idx", num(u64::from(chunk_index)))
            .value(":idxs", AttributeValue::Ns(vec![chunk_index.to_string()]))
            .expression("ADD held_chunks :minus, #released :idxs")
            .condition("attribute_exists(body_sha256) AND NOT contains(#released, :idx)");
        match self.table.update(batch_id, update).await {
            Ok(_) | Err(UpdateError::Condition) => Ok(()),
            Err(e) => Err(self.store_error("UpdateItem (release held chunk)", e)),
        }
    }

    /// Keeps the first [`MAX_REJECTIONS`] of `listed` named rejections.
    async fn trim_rejections(&self, batch_id: &str, listed: usize) -> Result<(), StoreError> {
        let drop: Vec<String> = (MAX_REJECTIONS..listed)
            .map(|i| format!("rejections[{i}]"))
            .collect();
        let update = Update::default().expression(format!("REMOVE {}", drop.join(", ")));
        self.table
            .update(batch_id, update)
            .await
            .map_err(|e| self.store_error("UpdateItem (trim rejections)", e))?;
        Ok(())
    }

    /// The item of `batch_id` (a consistent read), if any.
    pub async fn get(&self, batch_id: &str) -> Result<Option<Item>, StoreError> {
        self.table
            .get(batch_id)
            .await
            .map_err(|e| self.store_error("GetItem", e))
    }

    /// Sets `completed_at_ms` once, when every chunk is folded; with a callback the webhook
    /// becomes pending. `true` when this call made the batch complete.
    pub async fn complete(&self, batch_id: &str, with_webhook: bool) -> Result<bool, StoreError> {
        let mut expression = "SET completed_at_ms = :now".to_owned();
        if with_webhook {
            expression.push_str(", webhook_state = :pending, webhook_attempts = :zero");
        }
        let mut update = Update::default()
            .expression(expression)
            .condition("attribute_not_exists(completed_at_ms) AND chunks_done >= chunks")
            .value(":now", num(now_ms()));
        if with_webhook {
            update = update
                .value(":pending", AttributeValue::S("pending".into()))
                .value(":zero", num(0));
        }
        match self.table.update(batch_id, update).await {
            Ok(_) => Ok(true),
            Err(UpdateError::Condition) => Ok(false),
            Err(e) => Err(self.store_error("UpdateItem (complete)", e)),
        }
    }

    /// Claims the webhook of `batch_id` for `hold` seconds: only one consumer sends at a time,
    /// and never after it was delivered or given up. The claim carries a token of its own
    /// (`webhook_claim`): only its holder records the outcome.
    pub async fn claim_webhook(&self, batch_id: &str, hold: u64) -> Result<Claim, StoreError> {
        let now = unix_now();
        let token = uuid::Uuid::new_v4().to_string();
        let update = Update::default()
            .expression(
                "SET webhook_state = :sending, webhook_claim_until = :until, webhook_claim = :token",
            )
            .value(":token", AttributeValue::S(token.clone()))
            .condition(
                "attribute_exists(callback) AND attribute_exists(completed_at_ms) AND \
                 (webhook_state = :pending OR (webhook_state = :sending AND webhook_claim_until < :now))",
            )
            .value(":sending", AttributeValue::S("sending".into()))
            .value(":pending", AttributeValue::S("pending".into()))
            .value(":until", num(now + hold))
            .value(":now", num(now))
            .returning_new();
        match self.table.update(batch_id, update).await {
            Ok(item) => Ok(Claim::Won {
                item: Box::new(item.unwrap_or_default()),
                token,
            }),
            Err(UpdateError::Condition) => {
                let item = self.get(batch_id).await?.unwrap_or_default();
                Ok(
                    match (
                        text(&item, "webhook_state"),
                        number(&item, "webhook_claim_until"),
                    ) {
                        (Some("sending"), Some(until)) => Claim::HeldUntil(until),
                        _ => Claim::Done,
                    },
                )
            }
            Err(e) => Err(self.store_error("UpdateItem (claim webhook)", e)),
        }
    }

    /// Records one delivery attempt under the claim `token` that made it: `Ok` delivered;
    /// `Err(why)` failed, pending another try unless `give_up`. A claim that was taken over
    /// records nothing ([`Recorded::ClaimLost`]), so a late outcome never overwrites a newer
    /// one (a `delivered` turned `pending` would be sent again).
    pub async fn record_webhook(
        &self,
        batch_id: &str,
        token: &str,
        attempts: u64,
        outcome: Result<(), &str>,
        give_up: bool,
    ) -> Result<Recorded, StoreError> {
        let update = Update::default()
            .value(":n", num(attempts))
            .value(":token", AttributeValue::S(token.to_owned()))
            .value(":sending", AttributeValue::S("sending".into()))
            .condition("webhook_claim = :token AND webhook_state = :sending");
        let update = match outcome {
            Ok(()) => update
                .expression(
                    "SET webhook_state = :state, webhook_attempts = :n, webhook_delivered_at = :now \
                     REMOVE webhook_claim_until, webhook_claim, webhook_last_error",
                )
                .value(":state", AttributeValue::S("delivered".into()))
                .value(":now", num(unix_now())),
            Err(why) => update
                .expression(
                    "SET webhook_state = :state, webhook_attempts = :n, webhook_last_error = :why \
                     REMOVE webhook_claim_until, webhook_claim",
                )
                .value(
                    ":state",
                    AttributeValue::S(if give_up { "failed" } else { "pending" }.into()),
                )
                .value(":why", AttributeValue::S(why.to_owned())),
        };
        match self.table.update(batch_id, update).await {
            Ok(_) => Ok(Recorded::Done),
            Err(UpdateError::Condition) => Ok(Recorded::ClaimLost),
            Err(e) => Err(self.store_error("UpdateItem (webhook outcome)", e)),
        }
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A string attribute.
pub(crate) fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

/// A number attribute (whole, non-negative).
pub(crate) fn number(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// RFC 3339 (UTC) of Unix milliseconds.
fn rfc3339_ms(ms: u64) -> Option<String> {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?)
        .ok()
        .map(|t| t.to_string())
}

/// Whether every chunk of the item is folded and `completed_at_ms` is not yet set.
pub(crate) fn newly_final(item: &Item) -> bool {
    let chunks = number(item, "chunks").unwrap_or(u64::MAX);
    number(item, "chunks_done").unwrap_or(0) >= chunks && !item.contains_key("completed_at_ms")
}

/// The item as the status endpoint shows it (and, without `webhook`, as a webhook body).
pub fn batch_status(batch_id: &str, item: &Item) -> BatchStatus {
    let n = |k: &str| number(item, k).unwrap_or(0);
    let (chunks, chunks_done, conflicts, rejected) =
        (n("chunks"), n("chunks_done"), n("conflicts"), n("rejected"));
    let receipts = number(item, "receipts").unwrap_or_else(|| n("reported_receipts"));
    let rejections = match item.get("rejections") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .filter_map(|v| match v {
                AttributeValue::M(m) => Some(Rejection {
                    receipt_id: text(m, "receipt_id")?.to_owned(),
                    reason: text(m, "reason").unwrap_or_default().to_owned(),
                }),
                _ => None,
            })
            .take(MAX_REJECTIONS)
            .collect(),
        _ => Vec::new(),
    };
    let webhook = text(item, "webhook_state").map(|state| WebhookStatus {
        state: match state {
            "delivered" => WebhookState::Delivered,
            "failed" => WebhookState::Failed,
            _ => WebhookState::Pending,
        },
        attempts: n("webhook_attempts"),
        last_error: text(item, "webhook_last_error").map(str::to_owned),
        delivered_at: number(item, "webhook_delivered_at")
            .and_then(|s| rfc3339_ms(s.saturating_mul(1000))),
    });
    let webhook = webhook.or_else(|| {
        item.contains_key("callback").then_some(WebhookStatus {
            state: WebhookState::Pending,
            attempts: 0,
            last_error: None,
            delivered_at: None,
        })
    });
    // Every chunk is folded a moment before `completed_at_ms` is set (a second conditional
    // update): until then the batch is still settling, so a final state and its
    // `completed_at` are only ever seen together.
    let completed_at = number(item, "completed_at_ms").and_then(rfc3339_ms);
    // An upload with declared photos waits for them while any chunk is held; once released
    // its chunks are on their way to the agent.
    let held = number(item, "held_chunks");
    let state = match BatchState::of(chunks, chunks_done, conflicts + rejected) {
        _ if held.is_some_and(|h| h > 0) => BatchState::AwaitingPhotos,
        BatchState::Accepted if held.is_some() => BatchState::Storing,
        s if s.is_final() && completed_at.is_none() => BatchState::Storing,
        s => s,
    };
    BatchStatus {
        batch_id: batch_id.to_owned(),
        state,
        receipts,
        chunks,
        chunks_done,
        stored: n("stored"),
        duplicates: n("duplicates"),
        conflicts,
        rejected,
        rejections,
        rejections_total: conflicts + rejected,
        accepted_at: number(item, "accepted_at").and_then(|s| rfc3339_ms(s.saturating_mul(1000))),
        completed_at,
        webhook,
    }
}

/// The first [`MAX_REJECTIONS`] of `rejections` as a DynamoDB list of `{receipt_id, reason}`,
/// each reason capped here too (a report from an older agent may carry a longer one).
fn rejection_list(rejections: &[Rejection]) -> Vec<AttributeValue> {
    rejections
        .iter()
        .take(MAX_REJECTIONS)
        .map(|x| {
            AttributeValue::M(HashMap::from([
                (
                    "receipt_id".to_owned(),
                    AttributeValue::S(x.receipt_id.clone()),
                ),
                (
                    "reason".to_owned(),
                    AttributeValue::S(cap_reason(&x.reason)),
                ),
            ]))
        })
        .collect()
}

#[cfg(test)]
mod tests;
