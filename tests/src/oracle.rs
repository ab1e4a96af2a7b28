//! The end-to-end oracle: after the faults stop and the queue drains, every receipt the API
//! acknowledged is in PostgreSQL exactly once with its content intact, nothing that was never
//! acknowledged appears, and the DLQ holds only what is genuinely bad, each with its reason.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, ensure};
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::{DeadLetter, TestEnv};

/// What the API acknowledged, and what must end in the DLQ.
#[derive(Debug, Default)]
pub struct Oracle {
    acknowledged: HashMap<String, Value>,
    /// Receipt ids that are genuinely bad, with a fragment their dead letter's reason must hold.
    bad: Vec<(String, String)>,
}

impl Oracle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Receipts of a 202 answer (or sent straight to the queue as a valid chunk).
    pub fn acknowledge(&mut self, receipts: &[Value]) {
        for r in receipts {
            if let Some(id) = r["receipt_id"].as_str() {
                self.acknowledged.insert(id.to_owned(), r.clone());
            }
        }
    }

    /// A receipt that must not be stored but dead-lettered, its reason containing `reason`.
    pub fn expect_dead_letter(&mut self, receipt_id: &str, reason: &str) {
        self.bad.push((receipt_id.to_owned(), reason.to_owned()));
    }

    pub fn acknowledged(&self) -> usize {
        self.acknowledged.len()
    }

    /// Checks the database and drains the DLQ; returns the dead letters for further checks.
    pub async fn verify(&self, env: &TestEnv) -> anyhow::Result<Vec<DeadLetter>> {
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT receipt_id) FROM sluice.receipts")
                .fetch_one(&env.pool)
                .await?;
        ensure!(rows == distinct, "{} duplicate rows", rows - distinct);
        let stored = stored_receipts(env).await?;
        let mut missing = Vec::new();
        for (id, sent) in &self.acknowledged {
            match stored.get(id) {
                None => missing.push(id.clone()),
                Some(got) => ensure!(
                    got == &normalised(sent),
                    "receipt {id} differs:\n stored {got}\n   sent {}",
                    normalised(sent)
                ),
            }
        }
        ensure!(
            missing.is_empty(),
            "{} acknowledged receipts missing, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        let unexpected: Vec<&String> = stored
            .keys()
            .filter(|id| !self.acknowledged.contains_key(*id))
            .collect();
        ensure!(
            unexpected.is_empty(),
            "{} receipts stored that were never acknowledged, e.g. {:?}",
            unexpected.len(),
            unexpected.iter().take(5).collect::<Vec<_>>()
        );
        let dead = env.drain_dlq().await?;
        let mut found: HashSet<&str> = HashSet::new();
        for d in &dead {
            let reason = d
                .attributes
                .get("sluice-error")
                .map(String::as_str)
                .unwrap_or("");
            let Some((id, _)) = self
                .bad
                .iter()
                .find(|(id, want)| d.body.contains(id.as_str()) && reason.contains(want.as_str()))
            else {
                bail!(
                    "dead letter that is not genuinely bad (reason {reason:?}): {}",
                    d.body
                );
            };
            found.insert(id);
        }
        for (id, want) in &self.bad {
            ensure!(
                found.contains(id.as_str()),
                "receipt {id} should be in the DLQ with a reason containing {want:?}"
            );
        }
        Ok(dead)
    }
}

/// Money and quantities come back from `numeric(16,4)` with four fraction digits: compare
/// decimals by value, written without trailing zeros.
pub fn norm_decimal(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

/// A receipt as uploaded, with decimals normalised, for comparison with what was stored.
pub fn normalised(v: &Value) -> Value {
    let mut v = v.clone();
    let obj = v.as_object_mut().expect("receipts are JSON objects");
    for key in ["total", "tax"] {
        if let Some(Value::String(s)) = obj.get(key) {
            let n = norm_decimal(s);
            obj.insert(key.into(), Value::String(n));
        }
    }
    if let Some(Value::Array(items)) = obj.get_mut("items") {
        for item in items {
            let item = item.as_object_mut().expect("items are objects");
            for key in ["quantity", "unit_price", "amount"] {
                if let Some(Value::String(s)) = item.get(key) {
                    let n = norm_decimal(s);
                    item.insert(key.into(), Value::String(n));
                }
            }
        }
    }
    v
}

/// Every stored receipt rebuilt in its upload shape (absent fields left out), by id.
pub async fn stored_receipts(env: &TestEnv) -> anyhow::Result<HashMap<String, Value>> {
    let mut items: HashMap<String, Vec<Value>> = HashMap::new();
    let rows = sqlx::query(
        "SELECT receipt_id::text AS id, description, quantity::text AS q, unit_price::text AS u,
                amount::text AS a
         FROM sluice.receipt_items ORDER BY receipt_id, line_no",
    )
    .fetch_all(&env.pool)
    .await?;
    for r in rows {
        items.entry(r.get("id")).or_default().push(json!({
            "description": r.get::<String, _>("description"),
            "quantity": norm_decimal(r.get("q")),
            "unit_price": norm_decimal(r.get("u")),
            "amount": norm_decimal(r.get("a")),
        }));
    }
    let rows = sqlx::query(
        "SELECT receipt_id::text AS id, tenant_id, submitted_by, merchant, issued_on::text AS d,
                currency::text AS currency, total::text AS total, tax::text AS tax, category,
                image_key, image_sha256::text AS sha, image_bytes::text AS bytes,
                metadata::text AS metadata
         FROM sluice.receipts",
    )
    .fetch_all(&env.pool)
    .await?;
    let mut out = HashMap::new();
    for r in rows {
        let id: String = r.get("id");
        let mut o = serde_json::Map::new();
        o.insert("receipt_id".into(), json!(id));
        o.insert("tenant_id".into(), json!(r.get::<String, _>("tenant_id")));
        o.insert("merchant".into(), json!(r.get::<String, _>("merchant")));
        o.insert("issued_on".into(), json!(r.get::<String, _>("d")));
        o.insert("currency".into(), json!(r.get::<String, _>("currency")));
        o.insert("total".into(), json!(norm_decimal(r.get("total"))));
        if let Some(v) = r.get::<Option<String>, _>("submitted_by") {
            o.insert("submitted_by".into(), json!(v));
        }
        if let Some(v) = r.get::<Option<String>, _>("tax") {
            o.insert("tax".into(), json!(norm_decimal(&v)));
        }
        if let Some(v) = r.get::<Option<String>, _>("category") {
            o.insert("category".into(), json!(v));
        }
        if let Some(key) = r.get::<Option<String>, _>("image_key") {
            let bytes: String = r.get::<Option<String>, _>("bytes").unwrap_or_default();
            o.insert(
                "image".into(),
                json!({
                    "key": key,
                    "sha256": r.get::<Option<String>, _>("sha"),
                    "bytes": bytes.parse::<u64>()?,
                }),
            );
        }
        if let Some(list) = items.remove(&id) {
            o.insert("items".into(), Value::Array(list));
        }
        if let Some(m) = r.get::<Option<String>, _>("metadata") {
            o.insert("metadata".into(), serde_json::from_str(&m)?);
        }
        out.insert(id, Value::Object(o));
    }
    Ok(out)
}
