//! The summary after the drain, read from PostgreSQL and the queues: what was stored, against
//! what was uploaded, as a table on stdout and as the list of problems that decides the exit code.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::format::{display_width, secs, thousands};
use crate::upload::UploadStats;
use crate::world::World;
use crate::Args;

/// Reads the summary from the database, prints it, and returns what differs from the upload.
pub(crate) async fn summarize(
    world: &World,
    uploaded: &[Value],
    upload: &UploadStats,
    args: &Args,
) -> anyhow::Result<Vec<String>> {
    let summary = Summary::read(world, uploaded).await?;
    let expected = expected_totals(uploaded);
    summary.print(upload, args, &expected);
    Ok(summary.problems(uploaded.len() as i64, upload, &expected))
}

/// What the database (and the queues) say after the drain.
#[derive(Debug)]
struct Summary {
    stored: i64,
    distinct: i64,
    /// Uploaded receipt ids found in the table.
    found: i64,
    batches: i64,
    complete: i64,
    chunks: i64,
    rejected: i64,
    items: i64,
    /// Seconds from the first commit to the last.
    span: Option<f64>,
    /// (currency, receipts, sum of totals as PostgreSQL prints a numeric)
    currencies: Vec<(String, i64, String)>,
    merchants: Vec<(String, i64)>,
    dlq: u64,
    queue_left: (u64, u64, u64),
}

impl Summary {
    async fn read(world: &World, uploaded: &[Value]) -> anyhow::Result<Self> {
        let pool = &world.pool;
        let (stored, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT receipt_id) FROM sluice.receipts")
                .fetch_one(pool)
                .await
                .context("counting receipts")?;
        let ids: Vec<&str> = uploaded
            .iter()
            .filter_map(|r| r.get("receipt_id").and_then(Value::as_str))
            .collect();
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sluice.receipts WHERE receipt_id = ANY($1::text[]::uuid[])",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .context("looking up the uploaded ids")?;
        let (batches, complete, chunks, rejected): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE complete), \
             coalesce(sum(chunk_count), 0)::int8, coalesce(sum(rejected), 0)::int8 \
             FROM sluice.batches",
        )
        .fetch_one(pool)
        .await
        .context("reading sluice.batches")?;
        let items: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.receipt_items")
            .fetch_one(pool)
            .await
            .context("counting line items")?;
        let span: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM max(ingested_at) - min(ingested_at))::float8 \
             FROM sluice.receipts",
        )
        .fetch_one(pool)
        .await
        .context("reading commit times")?;
        let currencies = sqlx::query_as(
            "SELECT currency::text, count(*), sum(total)::text FROM sluice.receipts \
             GROUP BY currency ORDER BY currency",
        )
        .fetch_all(pool)
        .await
        .context("totals per currency")?;
        let merchants = sqlx::query_as(
            "SELECT merchant, count(*) FROM sluice.receipts GROUP BY merchant \
             ORDER BY count(*) DESC, merchant LIMIT 5",
        )
        .fetch_all(pool)
        .await
        .context("top merchants")?;
        let (dv, di, dd) = world.depth(&world.dlq_url).await?;
        Ok(Self {
            stored,
            distinct,
            found,
            batches,
            complete,
            chunks,
            rejected,
            items,
            span,
            currencies,
            merchants,
            dlq: dv + di + dd,
            queue_left: world.depth(&world.queue_url).await?,
        })
    }

    fn print(&self, upload: &UploadStats, args: &Args, expected: &[(String, i128)]) {
        let n = upload.receipts;
        let rows = [
            (
                "receipts uploaded",
                format!(
                    "{} in {} requests, {}",
                    thousands(n),
                    upload.requests,
                    secs(upload.elapsed)
                ),
            ),
            ("receipts stored", count(self.stored)),
            (
                "distinct receipt ids",
                format!(
                    "{}  {}",
                    count(self.distinct),
                    if self.distinct == self.stored {
                        "no duplicates"
                    } else {
                        "DUPLICATES"
                    }
                ),
            ),
            (
                "uploaded ids found",
                format!("{} of {}", count(self.found), thousands(n)),
            ),
            (
                "batches complete",
                format!(
                    "{} of {}  ({} chunks, {} rows rejected)",
                    count(self.complete),
                    count(self.batches),
                    count(self.chunks),
                    count(self.rejected)
                ),
            ),
            ("line items", count(self.items)),
            ("average drain rate", self.drain_rate(args)),
            (
                "queue left",
                format!(
                    "{} visible, {} in flight, {} delayed",
                    self.queue_left.0, self.queue_left.1, self.queue_left.2
                ),
            ),
            (
                "dead-letter queue",
                format!("{} messages", thousands(self.dlq)),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &rows {
            println!("  {k:<width$}  {v}");
        }

        println!();
        let mut table = vec![vec![
            "currency".to_owned(),
            "receipts".to_owned(),
            "total".to_owned(),
            "as uploaded".to_owned(),
        ]];
        for (currency, receipts, total) in &self.currencies {
            let same = total_matches(expected, currency, total);
            table.push(vec![
                currency.clone(),
                count(*receipts),
                money(total),
                if same { "yes" } else { "NO" }.to_owned(),
            ]);
        }
        print_table(&table, &[false, true, true, false]);

        println!();
        let mut table = vec![vec!["top merchants".to_owned(), "receipts".to_owned()]];
        for (merchant, receipts) in &self.merchants {
            table.push(vec![merchant.clone(), count(*receipts)]);
        }
        print_table(&table, &[false, true]);
    }

    /// The token bucket lets `burst` receipts through at once, then `rate` per second: the
    /// average after the burst is the figure to hold against the limit.
    fn drain_rate(&self, args: &Args) -> String {
        let burst = u64::from(args.burst());
        let stored = u64::try_from(self.stored).unwrap_or(0);
        match self.span {
            Some(span) if span > 0.0 && stored > burst => format!(
                "{}/s after the initial burst of {} (limit {}/s), first to last commit {}",
                thousands(((stored - burst) as f64 / span).round() as u64),
                thousands(burst),
                thousands(u64::from(args.rate)),
                secs(Duration::from_secs_f64(span))
            ),
            _ => format!(
                "all within the initial burst of {} (limit {}/s)",
                thousands(burst),
                thousands(u64::from(args.rate))
            ),
        }
    }

    /// Everything that differs from "each uploaded receipt stored once, DLQ empty".
    fn problems(&self, n: i64, upload: &UploadStats, expected: &[(String, i128)]) -> Vec<String> {
        let mut problems = Vec::new();
        if self.stored != n {
            problems.push(format!(
                "{} receipts stored, {} uploaded",
                count(self.stored),
                count(n)
            ));
        }
        if self.distinct != self.stored {
            problems.push(format!(
                "{} duplicate rows",
                count(self.stored - self.distinct)
            ));
        }
        if self.found != n {
            problems.push(format!(
                "{} uploaded receipts are missing",
                count(n - self.found)
            ));
        }
        if self.complete != self.batches || self.batches != upload.requests as i64 {
            problems.push(format!(
                "{} of {} batches complete, {} requests uploaded",
                count(self.complete),
                count(self.batches),
                upload.requests
            ));
        }
        for (currency, _, total) in &self.currencies {
            if !total_matches(expected, currency, total) {
                problems.push(format!(
                    "the {currency} total in the database ({total}) differs from the upload"
                ));
            }
        }
        if self.dlq != 0 {
            problems.push(format!(
                "{} messages in the dead-letter queue",
                thousands(self.dlq)
            ));
        }
        problems
    }
}

/// Whether the database's sum for `currency` equals the uploaded one (exact decimals).
fn total_matches(expected: &[(String, i128)], currency: &str, total: &str) -> bool {
    let want = expected
        .iter()
        .find(|(c, _)| c == currency)
        .map(|(_, t)| *t);
    want.is_some() && parse_decimal(total) == want
}

/// A database count with thousands separators.
fn count(v: i64) -> String {
    thousands(u64::try_from(v).unwrap_or(0))
}

/// Sum of `total` per currency over the uploaded receipts, in units of 10^-4.
fn expected_totals(uploaded: &[Value]) -> Vec<(String, i128)> {
    let mut sums: Vec<(String, i128)> = Vec::new();
    for r in uploaded {
        let (Some(c), Some(t)) = (
            r.get("currency").and_then(Value::as_str),
            r.get("total")
                .and_then(Value::as_str)
                .and_then(parse_decimal),
        ) else {
            continue;
        };
        match sums.iter_mut().find(|(k, _)| k == c) {
            Some((_, sum)) => *sum += t,
            None => sums.push((c.to_owned(), t)),
        }
    }
    sums
}

/// `"-12.5"` → `-125000` (units of 10^-4); `None` for anything else or more than 4 decimals.
fn parse_decimal(s: &str) -> Option<i128> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || frac.len() > 4
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut v: i128 = int.parse().ok()?;
    for i in 0..4 {
        v = v * 10 + frac.as_bytes().get(i).map_or(0, |b| i128::from(b - b'0'));
    }
    Some(if neg { -v } else { v })
}

/// `"1234567.5000"` → `"1,234,567.50"`; `"123456.0000"` → `"123,456"`.
fn money(s: &str) -> String {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = frac.trim_end_matches('0');
    let int = int
        .parse::<u64>()
        .map(thousands)
        .unwrap_or_else(|_| int.to_owned());
    if frac.is_empty() {
        format!("{neg}{int}")
    } else {
        format!("{neg}{int}.{frac:0<2}")
    }
}

/// Prints rows as columns; `right[i]` right-aligns column i. The first row is the header.
fn print_table(rows: &[Vec<String>], right: &[bool]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| display_width(c))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(display_width(cell)));
            let _ = if right.get(i).copied().unwrap_or(false) {
                write!(line, " {pad}{cell}")
            } else {
                write!(line, " {cell}{pad}")
            };
        }
        println!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests;

/// The photos of `with_photos` as stored in `sluice.receipt_photos`, against their files in
/// `dir`: printed, and what differs.
pub(crate) async fn photos(
    world: &World,
    dir: &std::path::Path,
    with_photos: &[Value],
) -> anyhow::Result<Vec<String>> {
    let stored: std::collections::HashMap<String, Vec<u8>> =
        world.stored_photos().await?.into_iter().collect();
    let mut problems = Vec::new();
    let (mut identical, mut bytes) = (0u64, 0u64);
    for r in with_photos {
        let id = r["receipt_id"].as_str().unwrap_or_default();
        let file = dir.join(format!("{id}.jpg"));
        let want = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        match stored.get(id) {
            Some(got) if *got == want => {
                identical += 1;
                bytes += got.len() as u64;
            }
            Some(_) => problems.push(format!("the photo of {id} differs from {}", file.display())),
            None => problems.push(format!("the photo of {id} is not stored")),
        }
    }
    println!(
        "  photos stored   {} of {} in sluice.receipt_photos, {:.1} MB, byte-identical to the files in {}",
        count(identical as i64),
        count(with_photos.len() as i64),
        bytes as f64 / 1e6,
        dir.display()
    );
    if stored.len() > with_photos.len() {
        problems.push(format!(
            "{} photos stored, {} uploaded",
            stored.len(),
            with_photos.len()
        ));
    }
    Ok(problems)
}
