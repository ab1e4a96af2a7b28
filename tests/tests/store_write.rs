//! The agent's one write (`Store::write`) against the real PostgreSQL: the first round inserts
//! without reading the stored fingerprints, so a redelivery, a batch that repeats its ids and
//! two writers racing for the same ids must still come out exactly once, with every receipt
//! counted once as inserted, updated, a duplicate or a conflict.

use serde_json::json;
use sluice_agent::config::OnConflict;
use sluice_agent::{LedgerEntry, Row, Store, WriteOutcome};
use sluice_e2e::gen::Generator;
use sluice_e2e::TestEnv;
use sluice_protocol::Receipt;

fn receipts(seed: u64, n: usize) -> Vec<Receipt> {
    Generator::new(seed)
        .receipts(n)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap_or_else(|e| panic!("generated receipt: {e}")))
        .collect()
}

fn rows<'a>(receipts: &'a [Receipt], batch_id: &'a str, chunk_index: u32) -> Vec<Row<'a>> {
    receipts
        .iter()
        .map(|r| Row {
            receipt: r,
            batch_id,
            chunk_index,
            photo: None,
        })
        .collect()
}

/// (receipts, item rows) stored.
async fn stored(env: &TestEnv) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM receipts), (SELECT count(*) FROM receipt_items)",
    )
    .fetch_one(&env.pool)
    .await?)
}

fn item_rows(receipts: &[Receipt]) -> i64 {
    receipts.iter().map(|r| r.items.len() as i64).sum()
}

fn figures(o: &WriteOutcome) -> (u64, u64, u64, usize) {
    (o.inserted, o.updated, o.duplicates, o.conflicts.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_and_repeats_within_a_batch_are_counted_once_each() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let store = Store::from_pool(env.pool.clone());
    store.migrate("sluice").await?;
    let batch = uuid::Uuid::new_v4().to_string();
    let first = receipts(31, 200);
    let o = store.write(&rows(&first, &batch, 0), &[]).await?;
    assert_eq!(figures(&o), (200, 0, 0, 0));

    // The same 200 again, 50 of them twice, 50 new ones, and one stored id with other content.
    let mut again: Vec<Receipt> = first.clone();
    again.extend_from_slice(&first[..50]);
    let new = receipts(32, 50);
    again.extend_from_slice(&new);
    let mut changed = first[7].clone();
    changed.total = serde_json::from_value(json!("999.99"))?;
    again.push(changed.clone());
    let o = store.write(&rows(&again, &batch, 0), &[]).await?;
    assert_eq!(figures(&o), (50, 0, 250, 1), "reject: {o:?}");
    assert_eq!(o.conflicts[0].incoming, changed.fingerprint());
    assert_eq!(o.conflicts[0].stored, first[7].fingerprint());
    let all: Vec<Receipt> = first.iter().chain(&new).cloned().collect();
    assert_eq!(stored(&env).await?, (250, item_rows(&all)));

    // Under "update" the changed version replaces the stored one, its items with it.
    let store = store.with_on_conflict(OnConflict::Update);
    let o = store
        .write(&rows(&[first[8].clone(), changed.clone()], &batch, 0), &[])
        .await?;
    assert_eq!(figures(&o), (0, 1, 1, 0), "update: {o:?}");
    let total: String =
        sqlx::query_scalar("SELECT total::text FROM receipts WHERE receipt_id = $1::uuid")
            .bind(&changed.receipt_id)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(total, "999.9900");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_racing_for_the_same_ids_store_each_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let store = Store::from_pool(env.pool.clone());
    store.migrate("sluice").await?;
    let shared = receipts(41, 300);
    let batch = uuid::Uuid::new_v4().to_string();
    // Four writers, each with all 300 shared receipts and 20 of its own, with a ledger row
    // each, at once on four connections, each in another order (two reversed). The store
    // takes ids in one order whatever the batch's, so no two writers deadlock (PostgreSQL
    // would abort one with 40P01; the agent's writer would retry it, but this calls the store
    // directly, so a deadlock fails the test).
    let mut batches = Vec::new();
    for w in 0..4u64 {
        let mut mine = shared.clone();
        mine.rotate_left(75 * usize::try_from(w)?);
        if w % 2 == 1 {
            mine.reverse();
        }
        mine.extend(receipts(50 + w, 20));
        batches.push(mine);
    }
    let writes = batches.iter().enumerate().map(|(i, mine)| {
        let (store, batch) = (store.clone(), batch.clone());
        async move {
            let ledger = LedgerEntry {
                batch_id: batch.clone(),
                chunk_index: u32::try_from(i)?,
                chunk_count: 4,
                receipts: u32::try_from(mine.len())?,
                message_id: format!("m{i}"),
                ..LedgerEntry::default()
            };
            let chunk_index = ledger.chunk_index;
            anyhow::Ok(
                store
                    .write(&rows(mine, &batch, chunk_index), &[ledger])
                    .await?,
            )
        }
    });
    let outcomes = futures_util::future::try_join_all(writes).await?;
    let inserted: u64 = outcomes.iter().map(|o| o.inserted).sum();
    let duplicates: u64 = outcomes.iter().map(|o| o.duplicates).sum();
    assert_eq!((inserted, duplicates), (380, 3 * 300), "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| o.conflicts.is_empty() && o.updated == 0));
    let all: Vec<Receipt> = batches.iter().flatten().cloned().collect();
    let distinct: std::collections::HashMap<&str, &Receipt> =
        all.iter().map(|r| (r.receipt_id.as_str(), r)).collect();
    let distinct: Vec<Receipt> = distinct.into_values().cloned().collect();
    assert_eq!(stored(&env).await?, (380, item_rows(&distinct)));
    // Each ledger row says what its own write stored; together, every receipt once.
    let ledger: (i64, i64) = sqlx::query_as(
        "SELECT sum(stored)::int8, sum(duplicates)::int8 FROM chunks WHERE batch_id = $1::uuid",
    )
    .bind(&batch)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(ledger, (380, 900));
    Ok(())
}

/// Two writers with the same ids in opposite orders, both held up at the middle id, which
/// another transaction has inserted and not committed. When it rolls back, each would next
/// need a row the other has taken, a deadlock PostgreSQL breaks by aborting one (40P01),
/// unless both take their ids in one order. The store sorts them, so both finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_with_the_same_ids_in_opposite_orders_do_not_deadlock() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let store = Store::from_pool(env.pool.clone());
    store.migrate("sluice").await?;
    let mut up = receipts(61, 41);
    up.sort_by(|a, b| a.receipt_id.cmp(&b.receipt_id));
    let mut down = up.clone();
    down.reverse();
    let batch = uuid::Uuid::new_v4().to_string();
    let mut holder = env.pool.begin().await?;
    sqlx::query(
        "INSERT INTO receipts (receipt_id, tenant_id, merchant, issued_on, currency, total, \
         batch_id, chunk_index) VALUES ($1::uuid, 't', 'm', '2024-01-01', 'EUR', 1, $2::uuid, 9)",
    )
    .bind(&up[20].receipt_id)
    .bind(&batch)
    .execute(&mut *holder)
    .await?;
    let write = |mine: Vec<Receipt>, chunk_index: u32| {
        let (store, batch) = (store.clone(), batch.clone());
        tokio::spawn(async move { store.write(&rows(&mine, &batch, chunk_index), &[]).await })
    };
    let (a, b) = (write(down, 0), write(up, 1));
    // Both writers wait on a lock (the held id, or each other's first id) before it goes.
    sluice_e2e::wait_for(
        std::time::Duration::from_secs(30),
        "both writers waiting on a lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&env.pool)
            .await
            .unwrap_or(0);
            (waiting >= 2).then_some(())
        },
    )
    .await?;
    holder.rollback().await?;
    let (a, b) = (a.await??, b.await??);
    assert_eq!(
        (a.inserted + b.inserted, a.duplicates + b.duplicates),
        (41, 41),
        "{a:?} {b:?}"
    );
    Ok(())
}

/// A photo fetched into the spool that cannot be read back at commit (the agent's own disk, not
/// the database) fails the whole write with an error that says so: nothing is committed without
/// its photo, and the writer fetches the batch's photos again on its retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_missing_from_the_spool_fails_the_write_as_a_spool_fault() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let store = Store::from_pool(env.pool.clone());
    store.migrate("sluice").await?;
    let batch = uuid::Uuid::new_v4().to_string();
    let mut with_photo = receipts(61, 3);
    with_photo[1].image = Some(sluice_protocol::receipt::Image {
        key: Some("photos/gone.jpg".to_owned()),
        sha256: "a".repeat(64),
        bytes: 10,
        content_type: Some("image/jpeg".to_owned()),
    });
    let gone = std::env::temp_dir().join(format!("sluice-spool-gone-{}", uuid::Uuid::new_v4()));
    let mut rows = rows(&with_photo, &batch, 0);
    rows[1].photo = Some(gone.as_path());
    let err = store.write(&rows, &[]).await.expect_err("no photo to read");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "the agent's photo spool: cannot read the fetched photo of receipt {} from {}:",
            with_photo[1].receipt_id,
            gone.display()
        )),
        "{shown}"
    );
    assert_eq!(err.kind(), "spool");
    assert!(!err.is_refused() && !err.is_overload());
    assert_eq!(stored(&env).await?, (0, 0), "the transaction rolled back");
    Ok(())
}
