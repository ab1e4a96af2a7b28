//! Realistic receipts for tests, the demo and benchmarks: many merchants and currencies, line
//! items, non-ASCII text, optional fields present or absent. Deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const MERCHANTS: &[&str] = &[
    "Café Müller",
    "東京ラーメン 一番",
    "Ølstue Nørrebro",
    "Łódź Pizza Express",
    "Padaria São João",
    "Boulangerie Étoile",
    "Walmart Supercenter #2231",
    "Tesco Express",
    "Ikea Malmö",
    "Zürich Hauptbahnhof Kiosk",
    "Ресторан Пушкин",
    "Καφενείο Αθήνα",
    "Shell Station A7",
    "Office Depot",
    "Amazon Marketplace",
    "Deutsche Bahn",
    "Uber *Trip",
    "Hotel Ibis Kraków",
    "مطعم بيروت",
    "Starbucks 🌟 Reserve",
];

const CURRENCIES: &[(&str, u32)] = &[
    ("EUR", 2),
    ("USD", 2),
    ("GBP", 2),
    ("JPY", 0),
    ("CHF", 2),
    ("SEK", 2),
    ("PLN", 2),
    ("BRL", 2),
];

const CATEGORIES: &[&str] = &[
    "meals",
    "travel",
    "lodging",
    "office",
    "fuel",
    "software",
    "groceries",
];

const ITEMS: &[&str] = &[
    "Cappuccino",
    "Croissant aux amandes",
    "Ramen 豚骨",
    "Smørrebrød",
    "Printer paper A4 (500)",
    "Diesel",
    "Train ticket 2nd class",
    "Room night",
    "USB-C cable 2 m",
    "Salade niçoise",
];

/// A deterministic receipt generator.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    tenants: u32,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            tenants: 25,
        }
    }

    /// The next receipt as JSON, valid under every rule of the upload format: the ingest API
    /// and `sluice_protocol::Receipt::from_value` accept it.
    pub fn receipt(&mut self) -> Value {
        let r = &mut self.rng;
        let id = uuid::Builder::from_random_bytes(r.random()).into_uuid();
        let (currency, digits) = CURRENCIES[r.random_range(0..CURRENCIES.len())];
        let scale = 10u64.pow(digits);
        let n_items = r.random_range(0..6);
        let mut items = Vec::new();
        let mut total_minor: u64 = 0;
        for _ in 0..n_items {
            let qty = r.random_range(1..4u64);
            let unit = r.random_range(50..20_000u64);
            let amount = qty * unit;
            total_minor += amount;
            items.push(json!({
                "description": ITEMS[r.random_range(0..ITEMS.len())],
                "quantity": qty.to_string(),
                "unit_price": money(unit, scale, digits),
                "amount": money(amount, scale, digits),
            }));
        }
        if items.is_empty() {
            total_minor = r.random_range(100..500_000);
        }
        let mut v = json!({
            "receipt_id": id.to_string(),
            "tenant_id": format!("tenant-{:03}", r.random_range(0..self.tenants)),
            "merchant": MERCHANTS[r.random_range(0..MERCHANTS.len())],
            "issued_on": format!("2026-{:02}-{:02}", r.random_range(1..=12), r.random_range(1..=28)),
            "currency": currency,
            "total": money(total_minor, scale, digits),
        });
        let obj = v.as_object_mut().expect("a JSON object");
        if r.random_bool(0.7) {
            obj.insert("tax".into(), json!(money(total_minor / 5, scale, digits)));
        }
        if r.random_bool(0.5) {
            obj.insert(
                "submitted_by".into(),
                json!(format!("user{}@example.com", r.random_range(0..500))),
            );
        }
        if r.random_bool(0.8) {
            obj.insert(
                "category".into(),
                json!(CATEGORIES[r.random_range(0..CATEGORIES.len())]),
            );
        }
        if r.random_bool(0.6) {
            let sha: String = (0..64)
                .map(|_| char::from(b"0123456789abcdef"[r.random_range(0..16)]))
                .collect();
            obj.insert(
                "image".into(),
                json!({"key": format!("receipts/{id}.jpg"), "sha256": sha, "bytes": r.random_range(20_000..4_000_000u64)}),
            );
        }
        if !items.is_empty() {
            obj.insert("items".into(), Value::Array(items));
        }
        if r.random_bool(0.3) {
            obj.insert(
                "metadata".into(),
                json!({"source": "mobile", "app_version": "4.2.1", "note": "Ünïcödé ✓"}),
            );
        }
        v
    }

    pub fn receipts(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.receipt()).collect()
    }
}

/// The `receipt_id` of a receipt as JSON (empty when it has none).
pub fn id_of(receipt: &Value) -> String {
    receipt["receipt_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn money(minor: u64, scale: u64, digits: u32) -> String {
    if digits == 0 {
        minor.to_string()
    } else {
        format!(
            "{}.{:0width$}",
            minor / scale,
            minor % scale,
            width = digits as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_receipts_pass_validation() {
        let mut g = Generator::new(7);
        for (i, r) in g.receipts(500).iter().enumerate() {
            if let Err(e) = sluice_protocol::Receipt::from_value(r, i) {
                panic!("receipt {i} invalid: {e:?}\n{r}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_receipts() {
        assert_eq!(Generator::new(1).receipts(5), Generator::new(1).receipts(5));
        assert_ne!(Generator::new(1).receipts(5), Generator::new(2).receipts(5));
    }
}
