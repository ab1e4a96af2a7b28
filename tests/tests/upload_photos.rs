//! End to end: `sluice-ingest upload FILE --photos DIR` against the real `sluice-ingest` with
//! photos configured (moto's S3 with its ObjectCreated events, SQS and DynamoDB): each photo
//! declared, PUT to its presigned URL and checked by the cloud, so each batch leaves
//! `awaiting_photos`; the client killed (SIGKILL) mid-upload and run again stores every photo
//! once, skipping those in its journal; bad files are named by line before anything is sent.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_e2e::gen::{id_of, Generator};
use sluice_e2e::photos::{jpeg, png};
use sluice_e2e::{wait_for, IngestProcess, TestEnv};

/// Photos of the resumed upload: at one PUT at a time, enough that the kill lands mid-way.
const PHOTOS: usize = 60;

fn write_ndjson(path: &Path, receipts: &[Value]) -> anyhow::Result<()> {
    let text: Vec<String> = receipts.iter().map(Value::to_string).collect();
    std::fs::write(path, text.join("\n") + "\n")?;
    Ok(())
}

fn upload_command(
    api: &str,
    file: &Path,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(sluice_e2e::binary("sluice-ingest")?);
    cmd.arg("upload")
        .arg(file)
        .args(["--api", api, "--photos"])
        .arg(dir)
        .args(extra)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    Ok(cmd)
}

/// Runs the upload to its end: (exit code, stdout, stderr).
async fn upload(
    api: &str,
    file: &Path,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        upload_command(api, file, dir, extra)?.output(),
    )
    .await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The journal's complete lines.
fn journal_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits until every batch has left `awaiting_photos`; their answers.
async fn settled(ingest: &IngestProcess, batches: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for id in batches {
        let last = std::sync::Mutex::new(Value::Null);
        let waited = wait_for(
            Duration::from_secs(120),
            "the batch to leave awaiting_photos",
            || async {
                let answer = ingest.batch_status(id).await.ok()?;
                *last.lock().unwrap_or_else(|e| e.into_inner()) = answer.1.clone();
                (answer.0 == 200 && answer.1["state"] != "awaiting_photos").then_some(answer.1)
            },
        )
        .await;
        match waited {
            Ok(status) => out.push(status),
            Err(e) => anyhow::bail!(
                "{e}: batch {id}: {}",
                last.lock().unwrap_or_else(|e| e.into_inner())
            ),
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_reach_the_bucket_once_and_a_killed_upload_resumes() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    let ingest = env
        .start_photo_ingest(
            "ingest.log",
            &bucket,
            &[("SLUICE_MAX_RECEIPTS_PER_CHUNK", "8")],
        )
        .await?;
    let api = ingest.url("");
    let dir = env.dir().join("photos");
    std::fs::create_dir_all(dir.join("scans"))?;

    // Receipts 0..PHOTOS have a photo: even ones found by id, odd ones named by a `photo`
    // field (PNGs in a subdirectory); two more receipts have no file.
    let mut receipts = Generator::new(3201).receipts(PHOTOS + 2);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for (n, r) in receipts.iter_mut().enumerate() {
        r.as_object_mut().map(|o| o.remove("image"));
        if n >= PHOTOS {
            continue;
        }
        let id = id_of(r);
        let len = 200_000 + n * 1_000;
        let data = if n % 2 == 0 {
            let data = jpeg(n, len);
            std::fs::write(dir.join(format!("{id}.jpg")), &data)?;
            data
        } else {
            let data = png(n, len);
            let name = format!("scans/{n}.png");
            std::fs::write(dir.join(&name), &data)?;
            r["photo"] = json!(name);
            data
        };
        files.insert(id, data);
    }
    let file = env.dir().join("receipts.ndjson");
    write_ndjson(&file, &receipts)?;
    let journal = dir.join(".sluice-upload.journal");
    let args = ["--photo-parallel", "1", "--receipts-per-request", "20"];

    // First run: killed once a few photos are journaled.
    let mut child = upload_command(&api, &file, &dir, &args)?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for(
        Duration::from_secs(120),
        "3 photos in the journal",
        || async { (journal_lines(&journal).len() >= 3).then_some(()) },
    )
    .await?;
    assert!(
        child.try_wait()?.is_none(),
        "the upload ended before it could be killed mid-way"
    );
    child.start_kill()?;
    let status = child.wait().await?;
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    let before = journal_lines(&journal);
    assert!(
        before.len() >= 3 && before.len() < PHOTOS,
        "killed mid-way: {} of {PHOTOS} journaled",
        before.len()
    );

    // Second run: the same command, --json for the report.
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let (code, stdout, stderr) = upload(&api, &file, &dir, &json_args).await?;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout)?;
    let photos = &report["photos"];
    assert_eq!(photos["photos"], PHOTOS, "{photos}");
    assert_eq!(photos["skipped"], before.len(), "{photos}");
    assert_eq!(photos["uploaded"], PHOTOS - before.len(), "{photos}");
    assert_eq!(photos["failed"], json!([]), "{photos}");
    assert_eq!(photos["without_file"], 2, "{photos}");
    assert!(
        stderr.contains(&format!("photos: {} uploaded (", PHOTOS - before.len()))
            && stderr.contains(&format!("{} already stored (journal ", before.len()))
            && stderr
                .contains("2 receipt(s) sent without a photo, no file for them (lines 61, 62)"),
        "{stderr}"
    );

    // Each photo journaled once over both runs: none PUT again once stored.
    let after = journal_lines(&journal);
    assert_eq!(after.len(), PHOTOS, "{after:#?}");
    assert_eq!(after.iter().collect::<HashSet<_>>().len(), PHOTOS);
    assert_eq!(&after[..before.len()], &before[..]);

    // In the bucket, byte for byte, under the batch the API named.
    let batches: Vec<String> = report["requests"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|q| q["batch_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(batches.len(), 4, "{report}");
    let stored = bucket.list("photos/").await?;
    assert_eq!(stored.len(), PHOTOS, "{stored:?}");
    for (key, size) in &stored {
        let (batch, id) = key
            .strip_prefix("photos/")
            .and_then(|k| k.split_once('/'))
            .ok_or_else(|| anyhow::anyhow!("key {key}"))?;
        assert!(batches.iter().any(|b| b == batch), "{key}");
        let expected = files
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no file for {key}"))?;
        assert_eq!(*size as usize, expected.len(), "{key}");
        assert!(bucket.get(key).await? == *expected, "{key} differs");
    }

    // The cloud checked them all: every batch with photos leaves awaiting_photos (its chunks
    // released to the queue), nothing refused; the last request (lines 61 and 62, no photos)
    // was queued at once, and no agent here stores it.
    let mut states: Vec<String> = Vec::new();
    for status in settled(&ingest, &batches).await? {
        assert_eq!(status["rejected"], 0, "{status}");
        states.push(status["state"].as_str().unwrap_or("").to_owned());
    }
    states.sort();
    assert_eq!(states, ["accepted", "storing", "storing", "storing"]);

    // A third run stores nothing again.
    let (code, stdout, stderr) = upload(&api, &file, &dir, &json_args).await?;
    assert_eq!(code, Some(0), "{stderr}");
    let again: Value = serde_json::from_str(&stdout)?;
    assert_eq!(again["photos"]["uploaded"], 0, "{again}");
    assert_eq!(again["photos"]["skipped"], PHOTOS, "{again}");
    bucket.remove().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_photo_files_are_named_by_line_and_nothing_is_sent() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let bucket = env.create_photo_bucket().await?;
    let ingest = env.start_photo_ingest("ingest.log", &bucket, &[]).await?;
    let dir: PathBuf = env.dir().join("photos");
    std::fs::create_dir_all(&dir)?;
    let mut receipts = Generator::new(3202).receipts(5);
    for r in receipts.iter_mut() {
        r.as_object_mut().map(|o| o.remove("image"));
    }
    let ids: Vec<String> = receipts.iter().map(id_of).collect();
    // Line 1: fine. Line 2: a GIF under a .jpg name. Line 3: over 20 MiB (a sparse file).
    // Line 4: names a file that is not there. Line 5: no photo at all.
    std::fs::write(dir.join(format!("{}.jpg", ids[0])), jpeg(0, 1000))?;
    std::fs::write(
        dir.join(format!("{}.jpg", ids[1])),
        b"GIF89a\x01\x00\x01\x00",
    )?;
    let big = std::fs::File::create(dir.join(format!("{}.pdf", ids[2])))?;
    big.set_len(20 * 1024 * 1024 + 1)?;
    receipts[3]["photo"] = json!("missing/receipt.jpg");
    let file = env.dir().join("receipts.ndjson");
    write_ndjson(&file, &receipts)?;

    let (code, stdout, stderr) = upload(&ingest.url(""), &file, &dir, &[]).await?;
    assert_eq!(code, Some(65), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let d = dir.display();
    let expected = format!(
        "sluice-ingest: 3 line(s) cannot be sent with their photo; nothing was sent:\n  \
         line 2: {d}/{}.jpg: not a JPEG, PNG, WebP, HEIC or PDF file (it starts with 47 49 46 38 39 61 01 00)\n  \
         line 3: {d}/{}.pdf: 20971521 bytes, over the photo limit of 20971520 bytes (20 MiB)\n  \
         line 4: {d}/missing/receipt.jpg: no such file\n",
        ids[1], ids[2]
    );
    assert!(
        stderr.ends_with(&expected),
        "stderr:\n{stderr}\nexpected:\n{expected}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    // Nothing sent: not the clean lines either, no journal.
    assert_eq!(env.depth(&env.queue_url).await?, (0, 0, 0));
    assert!(bucket.list("").await?.is_empty());
    assert!(!dir.join(".sluice-upload.journal").exists());
    bucket.remove().await?;
    Ok(())
}
