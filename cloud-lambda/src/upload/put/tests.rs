//! The PUT stage against a stand-in S3 on loopback: a 503 retried, an expired URL renewed by
//! sending the request again, the body streamed byte for byte, the photo journaled once.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;

use super::*;

/// What the stand-in answers, by URL generation, and what it kept.
#[derive(Default)]
struct S3 {
    calls: Vec<String>,
    stored: Vec<(String, Bytes)>,
}

async fn stand_in() -> (String, Arc<Mutex<S3>>) {
    let state = Arc::new(Mutex::new(S3::default()));
    let app = Router::new()
        .route(
            "/{generation}/{id}",
            put(
                |State(s): State<Arc<Mutex<S3>>>, Path((generation, id)): Path<(String, String)>, body: Bytes| async move {
                    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.calls.push(format!("{generation}/{id}"));
                    let tries = s.calls.len();
                    match (generation.as_str(), tries) {
                        ("old", 1) => (StatusCode::SERVICE_UNAVAILABLE, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
                        ("old", _) => (StatusCode::FORBIDDEN, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"),
                        _ => {
                            s.stored.push((id, body));
                            (StatusCode::OK, "")
                        }
                    }
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn url(base: &str, generation: &str, id: &str) -> PhotoUpload {
    PhotoUpload {
        receipt_id: id.to_owned(),
        upload_url: format!("{base}/{generation}/{id}"),
        headers: BTreeMap::from([("content-type".to_owned(), "image/jpeg".to_owned())]),
        expires_at: "2999-01-01T00:00:00Z".to_owned(),
    }
}

#[tokio::test]
async fn a_503_is_retried_and_an_expired_url_renewed_by_sending_the_request_again() {
    let dir = std::env::temp_dir().join(format!("sluice-put-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let data: Vec<u8> = [0xFF, 0xD8, 0xFF, 0xE0]
        .into_iter()
        .chain((0..300_000u32).map(|i| (i % 251) as u8))
        .collect();
    let path = dir.join("a.jpg");
    std::fs::write(&path, &data).expect("write");
    let id = "00000000-0000-4000-8000-000000000001";
    let photo = LocalPhoto {
        line: 1,
        receipt_id: id.to_owned(),
        path,
        bytes: data.len() as u64,
        sha256: "ab".repeat(32),
        content_type: "image/jpeg",
    };
    let (base, s3) = stand_in().await;
    let stage = PhotoStage {
        client: reqwest::Client::new(),
        journal: Journal::open(&dir.join("journal")).expect("journal"),
        slots: Arc::new(Semaphore::new(2)),
        max_attempts: 4,
        api: "http://api".to_owned(),
    };
    let renewed = Mutex::new(0);
    let fresh = base.clone();
    let renew = || -> Renewal<'_> {
        *renewed.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let fresh = fresh.clone();
        Box::pin(async move { Ok(vec![url(&fresh, "new", id)]) })
    };
    let ends = Mutex::new(Vec::new());
    let done = |_: &LocalPhoto, end: &PhotoEnd| {
        ends.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(end.clone());
    };
    let batch = "5f1ce8a2-7d3b-4c41-9e0f-2b6a8d4c1e73";
    let renewals = stage
        .put_all(
            batch,
            std::slice::from_ref(&photo),
            vec![url(&base, "old", id)],
            &renew,
            &done,
        )
        .await;
    assert_eq!(renewals, 1);
    assert_eq!(*renewed.lock().expect("lock"), 1);
    assert_eq!(
        *ends.lock().expect("lock"),
        [PhotoEnd::Stored { attempts: 1 }]
    );
    {
        let s3 = s3.lock().expect("lock");
        assert_eq!(
            s3.calls,
            [
                format!("old/{id}"),
                format!("old/{id}"),
                format!("new/{id}")
            ]
        );
        assert_eq!(s3.stored.len(), 1);
        assert!(s3.stored[0].1 == data, "the body arrives byte for byte");
    }
    assert!(stage
        .journal
        .contains(batch, id, &photo.sha256, "http://api"));

    // Run again: the journal skips it, nothing is PUT.
    let again = Journal::open(&dir.join("journal")).expect("journal");
    let stage = PhotoStage {
        journal: again,
        ..stage
    };
    ends.lock().expect("lock").clear();
    stage
        .put_all(
            batch,
            std::slice::from_ref(&photo),
            vec![url(&base, "new", id)],
            &renew,
            &done,
        )
        .await;
    assert_eq!(*ends.lock().expect("lock"), [PhotoEnd::Skipped]);
    assert_eq!(s3.lock().expect("lock").calls.len(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn s3_errors_are_read_and_only_unjudged_answers_retried() {
    assert_eq!(
        s3_message("<Error><Code>BadDigest</Code><Message>The sha256 you specified did not match.</Message></Error>"),
        "BadDigest: The sha256 you specified did not match."
    );
    assert_eq!(s3_message(""), "(no message)");
    for s in [408, 429, 500, 503] {
        assert!(transient(s), "{s}");
    }
    for s in [400, 403, 404, 411] {
        assert!(!transient(s), "{s}");
    }
    assert!(expiring("2000-01-01T00:00:00Z"));
    assert!(!expiring("2999-01-01T00:00:00Z"));
    assert!(!expiring("not a time"));
}
