//! Receipt photos through the whole bridge (issue 32): one request to a real `sluice-ingest`
//! declares 300 photos; 297 are `PUT` to their presigned URLs as declared, one with other
//! bytes, one of a type the bridge does not take (a GIF), one never; moto's S3 notifies the
//! ingest's events queue, its background task checks each photo and sweeps the missing one;
//! a real `sluice-agent` fetches the settled photos from S3 and stores them with their
//! receipts. 297 receipts end stored with their photos byte-identical on-premise, in the
//! database or in the photo directory, the three refused with their reasons in
//! `GET /v1/batches/{id}` and in the webhook, and nothing dead-lettered; through a kill -9 of
//! the agent mid-drain (database store) and an S3 outage on the agent's side (directory store).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::photos::{jpeg, put_photos, sha256_hex};
use sluice_e2e::proxy::{Mode, Proxy};
use sluice_e2e::{assert_signed, is_final, wait_for, TestEnv, WebhookReceiver};

const PHOTOS: usize = 300;
/// Upload URLs live this long: the never-uploaded photo is refused soon after.
const URL_SECONDS: u64 = 30;
const TIMEOUT: Duration = Duration::from_secs(180);

/// Receipt `i`'s id.
fn receipt_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Receipt `i`'s photo: 2 to 60 kB.
fn photo(i: usize) -> Vec<u8> {
    jpeg(i, 2_000 + (i * 7_919) % 58_000)
}

/// A GIF: a type the bridge refuses.
fn gif() -> Vec<u8> {
    let mut b = b"GIF89a\x10\x00\x10\x00\x80\x00\x00".to_vec();
    b.resize(3_000, 0x2c);
    b
}

/// Receipt `i` declaring `data` as its JPEG photo.
fn receipt(i: usize, data: &[u8]) -> Value {
    json!({
        "receipt_id": receipt_id(i), "tenant_id": "acme", "merchant": format!("Shop {i}"),
        "issued_on": "2026-03-01", "currency": "EUR", "total": format!("{i}.50"),
        "image": {"sha256": sha256_hex(data), "bytes": data.len(), "content_type": "image/jpeg"},
    })
}

/// Where the agent keeps photos, and what the test does to it mid-drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// `sluice.receipt_photos`; the agent is killed with SIGKILL mid-drain.
    Database,
    /// Content-addressed files; S3 refuses the agent's connections for a while mid-drain.
    Directory,
}

async fn three_hundred_photos_through_the_bridge(store: Store) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    env.create_status_queue().await?;
    let receiver = WebhookReceiver::start(&[]).await?;
    let mut vars = bucket.ingest_vars(URL_SECONDS, 1);
    vars.push(("SLUICE_MAX_RECEIPTS_PER_CHUNK".into(), "25".into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ingest = env.start_status_ingest("ingest.log", &vars).await?;

    // The agent reaches S3 through a proxy the test can cut.
    let s3_proxy = Proxy::start(env.servers.sqs_addr()?).await?;
    let photo_dir = env.dir().join("photo-store");
    let section = match store {
        Store::Database => {
            bucket.agent_section(&format!("http://{}", s3_proxy.addr), "store = \"database\"")
        }
        Store::Directory => bucket.agent_section(
            &format!("http://{}", s3_proxy.addr),
            &format!(
                "store = \"directory\"\ndirectory = {:?}",
                photo_dir.display().to_string()
            ),
        ),
    };
    // Slow enough at first that the faults land mid-drain.
    let settings = |rate: u32| {
        format!(
            "{section}\n[batch]\nmax_rows = 25\nmax_wait_ms = 50\n[throttle]\n\
             rows_per_second = {rate}\nburst = {rate}\n[queue]\nvisibility_timeout_seconds = 10"
        )
    };
    let mut agent = env.launch_reporting_agent("first", &settings(40)).await?;

    let photos: Vec<Vec<u8>> = (0..PHOTOS)
        .map(|i| if i == 1 { gif() } else { photo(i) })
        .collect();
    let receipts: Vec<Value> = photos
        .iter()
        .enumerate()
        .map(|(i, p)| receipt(i, p))
        .collect();
    let callback = receiver.url();
    let (code, answer) = ingest
        .upload(&receipts, &[("sluice-callback", callback.as_str())])
        .await?;
    assert_eq!(code, 202, "{answer}");
    let batch_id = answer["batch_id"].as_str().unwrap_or_default().to_owned();
    let uploads = answer["photos"].as_array().cloned().unwrap_or_default();
    assert_eq!(uploads.len(), PHOTOS, "one upload URL per declared photo");
    assert!(
        answer.to_string().len() < 1_000 * PHOTOS,
        "the answer is URLs, not the records: {} bytes",
        answer.to_string().len()
    );
    let (_, status) = ingest.batch_status(&batch_id).await?;
    assert_eq!(status["state"], "awaiting_photos", "{status}");

    // Receipt 0's PUT carries other bytes, receipt 1 a GIF as declared, receipt 2 nothing.
    let by_id: HashMap<String, usize> = (0..PHOTOS).map(|i| (receipt_id(i), i)).collect();
    let to_put: Vec<(Value, Vec<u8>)> = uploads
        .iter()
        .filter_map(|u| {
            let i = by_id[u["receipt_id"].as_str()?];
            let bytes = match i {
                0 => {
                    let mut b = photos[0].clone();
                    b[100] ^= 0x5a;
                    b
                }
                2 => return None,
                _ => photos[i].clone(),
            };
            Some((u.clone(), bytes))
        })
        .collect();
    for put in put_photos(to_put, 16).await {
        let i = by_id[&put.receipt_id];
        // S3 refuses a body whose SHA-256 is not the one the URL is bound to; a server that
        // lets it land leaves it to the check.
        assert!(
            (200..300).contains(&put.status) || i == 0,
            "PUT of photo {i}: {} {}",
            put.status,
            put.text
        );
    }

    match store {
        Store::Database => {
            wait_for(TIMEOUT, "a part stored", || async {
                (env.count_receipts_or_zero().await >= 60).then_some(())
            })
            .await?;
            let killed_spool = spool_of(&agent)?;
            agent.kill().await?;
            let at_kill = env.count_receipts_or_zero().await;
            assert!(at_kill < 297, "the kill lands mid-drain: {at_kill}");
            agent = env.launch_reporting_agent("second", &settings(400)).await?;
            wait_for(
                TIMEOUT,
                "the next agent removes the spool of the one killed",
                || {
                    let gone = !killed_spool.exists();
                    async move { gone.then_some(()) }
                },
            )
            .await?;
        }
        Store::Directory => {
            wait_for(TIMEOUT, "a part stored", || async {
                (env.count_receipts_or_zero().await >= 60).then_some(())
            })
            .await?;
            s3_proxy.set_mode(Mode::Refuse);
            s3_proxy.reset_all();
            wait_for(TIMEOUT, "photo_store_unavailable", || async {
                let (code, body) = agent.get("/readyz").await?;
                (code == 503 && body.contains("photo_store_unavailable")).then_some(())
            })
            .await?;
            let during = env.count_receipts_or_zero().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(
                env.count_receipts_or_zero().await,
                during,
                "nothing is stored without its photo"
            );
            s3_proxy.set_mode(Mode::Pass);
        }
    }
    env.wait_drained(297, TIMEOUT).await?;

    // Every stored receipt has its photo, byte for byte, once.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT receipt_id::text FROM sluice.receipts ORDER BY 1")
            .fetch_all(&env.pool)
            .await?;
    let want: Vec<String> = (3..PHOTOS).map(receipt_id).collect();
    assert_eq!(stored, want, "the 297 good receipts, none of the refused");
    match store {
        Store::Database => {
            let rows: Vec<(String, String, String, Vec<u8>)> = sqlx::query_as(
                "SELECT receipt_id::text, content_type, sha256, data FROM sluice.receipt_photos",
            )
            .fetch_all(&env.pool)
            .await?;
            assert_eq!(rows.len(), 297, "one photo per stored receipt");
            // Each photo waited in the agent's spool only until its transaction ended.
            let spool = spool_of(&agent)?;
            let left = if spool.exists() {
                walk_files(&spool)?
            } else {
                0
            };
            assert_eq!(left, 0, "{} holds no photo once drained", spool.display());
            for (id, content_type, sha, data) in rows {
                let i = by_id[&id];
                assert_eq!(content_type, "image/jpeg");
                assert_eq!(sha, sha256_hex(&photos[i]));
                assert!(data == photos[i], "photo {i} byte-identical");
            }
        }
        Store::Directory => {
            for photo in &photos[3..] {
                let sha = sha256_hex(photo);
                let path = photo_dir.join(&sha[..2]).join(&sha);
                let on_disk = std::fs::read(&path)?;
                assert!(&on_disk == photo, "{} byte-identical", path.display());
            }
            let files = walk_files(&photo_dir)?;
            assert_eq!(files, 297, "one file per stored photo, nothing else");
        }
    }
    assert!(env.drain_dlq().await?.is_empty(), "nothing dead-lettered");

    // The batch's status and its webhook name the three refused.
    let done = ingest
        .wait_status(&batch_id, TIMEOUT, "the webhook delivered", |s| {
            is_final(s) && s["webhook"]["state"] == "delivered"
        })
        .await?;
    for (field, want) in [
        ("state", json!("stored_with_rejections")),
        ("receipts", json!(PHOTOS)),
        ("stored", json!(297)),
        ("rejected", json!(3)),
    ] {
        assert_eq!(done[field], want, "{field} in {done}");
    }
    let mut named: Vec<(String, String)> = done["rejections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["receipt_id"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    named.sort();
    let first = named.first().map(|n| n.1.clone()).unwrap_or_default();
    assert!(
        first == "image_checksum" || first == "image_missing",
        "other bytes: {first}"
    );
    assert_eq!(
        named,
        [
            (receipt_id(0), first.clone()),
            (receipt_id(1), "image_type".to_owned()),
            (receipt_id(2), "image_missing".to_owned()),
        ]
    );
    let got = receiver.deliveries();
    assert_eq!(got.len(), 1, "the webhook arrives once");
    assert_signed(&got[0]);
    let body: Value = serde_json::from_slice(&got[0].body)?;
    assert_eq!(body["rejections"], done["rejections"]);
    assert_eq!(body["state"], "stored_with_rejections");

    // What was stored is gone from the bucket; the refused photos' objects are left to the
    // bucket's lifecycle rule.
    let left = bucket.keys(&format!("photos/{batch_id}/")).await?;
    assert!(
        left.iter()
            .all(|k| k.ends_with(&receipt_id(0)) || k.ends_with(&receipt_id(1))),
        "{left:?}"
    );
    agent.terminate(Duration::from_secs(60)).await?;
    Ok(())
}

/// Regular files under `dir`, recursively.
/// Where `agent` (no systemd `CACHE_DIRECTORY`) spools the photos it fetched.
fn spool_of(agent: &sluice_e2e::AgentProcess) -> anyhow::Result<std::path::PathBuf> {
    let pid = agent
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the agent exited"))?;
    Ok(std::env::temp_dir().join(format!("sluice-photo-spool-{pid}")))
}

fn walk_files(dir: &std::path::Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            n += walk_files(&entry.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_photos_stored_in_the_database_through_a_kill() -> anyhow::Result<()> {
    three_hundred_photos_through_the_bridge(Store::Database).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_photos_stored_as_files_through_an_s3_outage() -> anyhow::Result<()> {
    three_hundred_photos_through_the_bridge(Store::Directory).await
}
