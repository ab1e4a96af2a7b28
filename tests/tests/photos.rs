//! The photos the bridge carries (issue 32), end to end against real PostgreSQL and moto's S3
//! and SQS: chunks whose receipts carry photos (`image.key` and `image.content_type`) are sent
//! to the queue with their objects put in the bucket, and the real `sluice-agent` stores each
//! receipt with its photo, byte for byte, in `sluice.receipt_photos` or in its photo
//! directory; a missing or altered object dead-letters its receipt alone; a kill -9 mid-drain
//! loses nothing and stores nothing twice; an unreachable S3 keeps everything until it answers;
//! and an agent without `[photos]` releases such chunks under a condition.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use sluice_e2e::photos::{carried, sha256_hex as hex_sha, Carried as Photo, PhotoBucket};
use sluice_e2e::TestEnv;
use sluice_protocol::envelope::{self, ENCODING_ATTRIBUTE};

/// The dead letter's reason attribute.
const ERROR_ATTRIBUTE: &str = "sluice-error";

/// `n`-th photo: deterministic bytes of a few kilobytes up to a few hundred.
fn photo_bytes(n: usize) -> Vec<u8> {
    let len = 1000 + (n * 7919) % 300_000;
    (0..len).map(|i| ((i * 31 + n * 17) % 251) as u8).collect()
}

/// `receipt_photos`, by receipt id: (content type, sha256, bytes, data).
async fn stored_photos(
    env: &TestEnv,
) -> anyhow::Result<HashMap<String, (String, String, i64, Vec<u8>)>> {
    let rows: Vec<(String, String, String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT receipt_id::text, content_type, sha256, bytes, data FROM sluice.receipt_photos",
    )
    .fetch_all(&env.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, ct, sha, n, data)| (id, (ct, sha, n, data)))
        .collect())
}

fn photos_toml(env: &TestEnv, bucket: &PhotoBucket, extra: &str) -> String {
    bucket.agent_section(&env.servers.sqs_endpoint, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carried_photos_are_stored_with_their_receipts_and_bad_ones_dead_lettered(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let good: Vec<Photo> = (0..12)
        .map(|n| carried(&batch_id, n, photo_bytes(n)))
        .collect();
    for p in &good {
        bucket.put(&p.key, &p.data).await?;
    }
    // No object at its key.
    let missing = carried(&batch_id, 100, photo_bytes(100));
    // An object that is not the photo the receipt declares.
    let altered = carried(&batch_id, 101, photo_bytes(101));
    let mut other = altered.data.clone();
    other[0] ^= 0xff;
    bucket.put(&altered.key, &other).await?;
    // A plain reference (no content type): stored as today, never fetched.
    let reference_id = uuid::Uuid::new_v4().to_string();
    let reference = json!({
        "receipt_id": reference_id, "tenant_id": "acme", "merchant": "Ref",
        "issued_on": "2026-03-01", "currency": "EUR", "total": "1.00",
        "image": {"key": "archive/elsewhere.jpg", "sha256": "ab".repeat(32), "bytes": 10},
    });
    let mut receipts: Vec<_> = good.iter().map(|p| p.receipt.clone()).collect();
    receipts.insert(3, missing.receipt.clone());
    receipts.insert(9, altered.receipt.clone());
    receipts.push(reference);
    env.send_carried(&batch_id, &receipts, 5).await?;

    let agent = env
        .launch_agent(
            "photos-db",
            &photos_toml(&env, &bucket, "max_concurrent_fetches = 3"),
        )
        .await?;
    env.wait_drained(13, Duration::from_secs(90)).await?;

    let photos = stored_photos(&env).await?;
    assert_eq!(photos.len(), good.len(), "one photo per good receipt");
    for p in &good {
        let (ct, sha, n, data) = photos
            .get(&p.id)
            .unwrap_or_else(|| panic!("photo of {} stored", p.id));
        assert_eq!(ct, "image/jpeg");
        assert_eq!(sha, &hex_sha(&p.data));
        assert_eq!(*n, p.data.len() as i64);
        assert!(data == &p.data, "photo of {} byte-identical", p.id);
    }
    let stored: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT receipt_id::text FROM sluice.receipts")
            .fetch_all(&env.pool)
            .await?
            .into_iter()
            .collect();
    assert!(
        stored.contains(&reference_id),
        "the plain reference is stored"
    );
    assert!(!stored.contains(&missing.id) && !stored.contains(&altered.id));

    let dead = env.drain_dlq().await?;
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            let reason = d
                .attributes
                .get(ERROR_ATTRIBUTE)
                .cloned()
                .unwrap_or_default();
            let id = [&missing.id, &altered.id]
                .into_iter()
                .find(|id| {
                    envelope::decode(
                        &d.body,
                        d.attributes.get(ENCODING_ATTRIBUTE).map(String::as_str),
                    )
                    .is_ok_and(|c| c.receipts.iter().any(|r| &r.receipt_id == *id))
                })
                .cloned()
                .unwrap_or_default();
            (id, reason)
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    for (id, reason) in &reasons {
        let want = if id == &missing.id {
            "image_missing"
        } else {
            assert_eq!(id, &altered.id, "{reasons:?}");
            "image_checksum"
        };
        assert!(reason.starts_with(want), "{id}: {reason}");
    }

    // The stored photos' objects are deleted; the dead-lettered one's stays for a redrive.
    let left = bucket.keys("").await?;
    assert_eq!(left, vec![altered.key.clone()]);
    let fetched = agent.counter("sluice_photo_bytes_stored_total").await;
    let total: usize = good.iter().map(|p| p.data.len()).sum();
    assert_eq!(fetched, total as f64);
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carried_photos_are_stored_as_files_named_by_their_hash() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    let dir = env.dir().join("photo-store");
    let batch_id = uuid::Uuid::new_v4().to_string();
    let good: Vec<Photo> = (0..8)
        .map(|n| carried(&batch_id, n, photo_bytes(n + 40)))
        .collect();
    for p in &good {
        bucket.put(&p.key, &p.data).await?;
    }
    let receipts: Vec<_> = good.iter().map(|p| p.receipt.clone()).collect();
    env.send_carried(&batch_id, &receipts, 3).await?;
    let agent = env
        .launch_agent(
            "photos-dir",
            &photos_toml(
                &env,
                &bucket,
                &format!(
                    "store = \"directory\"\ndirectory = {:?}",
                    dir.display().to_string()
                ),
            ),
        )
        .await?;
    env.wait_drained(8, Duration::from_secs(90)).await?;
    for p in &good {
        let sha = hex_sha(&p.data);
        let path = dir.join(&sha[..2]).join(&sha);
        let on_disk = std::fs::read(&path)?;
        assert!(on_disk == p.data, "{} byte-identical", path.display());
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.receipt_photos")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(n, 0, "the directory store leaves the table empty");
    assert!(bucket.keys("").await?.is_empty());
    assert!(env.drain_dlq().await?.is_empty());
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_drain_loses_no_photo_and_stores_none_twice() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let all: Vec<Photo> = (0..300)
        .map(|n| {
            carried(
                &batch_id,
                n,
                photo_bytes(n).into_iter().take(4000).collect(),
            )
        })
        .collect();
    for p in &all {
        bucket.put(&p.key, &p.data).await?;
    }
    let receipts: Vec<_> = all.iter().map(|p| p.receipt.clone()).collect();
    env.send_carried(&batch_id, &receipts, 10).await?;
    // Slow enough that the kill lands mid-drain; short visibility so the held messages come
    // back soon.
    let settings = format!(
        "{}\n[throttle]\nrows_per_second = 60\nburst = 60\n[batch]\nmax_rows = 20\n\
         [queue]\nvisibility_timeout_seconds = 10",
        photos_toml(&env, &bucket, "")
    );
    let mut first = env.launch_agent("kill-photos-1", &settings).await?;
    sluice_e2e::wait_for(Duration::from_secs(60), "some receipts stored", || async {
        (env.count_receipts_or_zero().await >= 40).then_some(())
    })
    .await?;
    first.kill().await?;
    let at_kill = env.count_receipts_or_zero().await;
    assert!(at_kill < 300, "the kill lands mid-drain: {at_kill}");
    let second = env.launch_agent("kill-photos-2", &settings).await?;
    env.wait_drained(300, Duration::from_secs(120)).await?;
    let photos = stored_photos(&env).await?;
    assert_eq!(photos.len(), 300);
    for p in &all {
        let (_, _, _, data) = &photos[&p.id];
        assert!(data == &p.data, "photo of {} byte-identical", p.id);
    }
    // No redelivery found its object gone and took it for missing.
    assert!(env.drain_dlq().await?.is_empty());
    assert!(bucket.keys("").await?.is_empty());
    second.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_keeps_everything_until_it_answers() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let all: Vec<Photo> = (0..6)
        .map(|n| carried(&batch_id, n, photo_bytes(n)))
        .collect();
    for p in &all {
        bucket.put(&p.key, &p.data).await?;
    }
    let receipts: Vec<_> = all.iter().map(|p| p.receipt.clone()).collect();
    env.send_carried(&batch_id, &receipts, 3).await?;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let wrong = bucket.agent_section(&format!("http://{closed}"), "");
    let agent = env.launch_agent("photos-down", &wrong).await?;
    sluice_e2e::wait_for(
        Duration::from_secs(60),
        "photo_store_unavailable",
        || async {
            let (code, body) = agent.get("/readyz").await?;
            (code == 503 && body.contains("photo_store_unavailable")).then_some(())
        },
    )
    .await?;
    let raised = agent
        .metric(
            "sluice_condition",
            &[("condition", "photo_store_unavailable")],
        )
        .await;
    assert_eq!(raised, Some(1.0));
    assert_eq!(env.count_receipts_or_zero().await, 0);
    agent.stop().await?;
    assert!(env.drain_dlq().await?.is_empty(), "nothing dead-lettered");

    let agent = env
        .launch_agent("photos-up", &photos_toml(&env, &bucket, ""))
        .await?;
    env.wait_drained(6, Duration::from_secs(90)).await?;
    assert_eq!(stored_photos(&env).await?.len(), 6);
    assert!(env.drain_dlq().await?.is_empty());
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_photos_section_a_carried_photo_is_released_not_stored() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let p = carried(&batch_id, 1, photo_bytes(1));
    env.send_carried(&batch_id, std::slice::from_ref(&p.receipt), 1)
        .await?;
    // A chunk without photos still goes through.
    let plain_batch = uuid::Uuid::new_v4().to_string();
    let plain = json!({
        "receipt_id": uuid::Uuid::new_v4().to_string(), "tenant_id": "acme", "merchant": "Plain",
        "issued_on": "2026-03-01", "currency": "EUR", "total": "2.00",
    });
    env.send_carried(&plain_batch, &[plain], 1).await?;
    let agent = env.launch_agent("no-photos", "").await?;
    sluice_e2e::wait_for(Duration::from_secs(60), "photos_not_configured", || async {
        let (code, body) = agent.get("/readyz").await?;
        (code == 503 && body.contains("photos_not_configured")).then_some(())
    })
    .await?;
    sluice_e2e::wait_for(
        Duration::from_secs(30),
        "the plain receipt stored",
        || async { (env.count_receipts_or_zero().await == 1).then_some(()) },
    )
    .await?;
    let (visible, in_flight, delayed) = env.depth(&env.queue_url).await?;
    assert_eq!(
        visible + in_flight + delayed,
        1,
        "the carried photo's message stays on the queue"
    );
    assert!(env.drain_dlq().await?.is_empty());
    agent.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_redelivered_after_its_objects_were_deleted_is_a_quiet_duplicate(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    let batch_id = uuid::Uuid::new_v4().to_string();
    let all: Vec<Photo> = (0..4)
        .map(|n| carried(&batch_id, n, photo_bytes(n + 7)))
        .collect();
    for p in &all {
        bucket.put(&p.key, &p.data).await?;
    }
    let receipts: Vec<_> = all.iter().map(|p| p.receipt.clone()).collect();
    env.send_carried(&batch_id, &receipts, 4).await?;
    let agent = env
        .launch_agent("photos-again", &photos_toml(&env, &bucket, ""))
        .await?;
    env.wait_drained(4, Duration::from_secs(60)).await?;
    assert!(bucket.keys("").await?.is_empty());
    // The same chunk again (a delete of its message lost after the commit): its objects are
    // gone, its photos stored.
    env.send_carried(&batch_id, &receipts, 4).await?;
    sluice_e2e::wait_for(Duration::from_secs(60), "the copy counted", || async {
        (agent.counter("sluice_receipts_duplicate_total").await >= 4.0).then_some(())
    })
    .await?;
    env.wait_drained(4, Duration::from_secs(60)).await?;
    assert!(
        env.drain_dlq().await?.is_empty(),
        "not taken for image_missing"
    );
    let photos = stored_photos(&env).await?;
    assert_eq!(photos.len(), 4);
    for p in &all {
        assert!(photos[&p.id].3 == p.data);
    }
    agent.stop().await?;
    Ok(())
}
