//! Tests of `webhook`: the keys, the signature and its check, redaction, and the master
//! secret read from a real Secrets Manager API (moto; see `crate::test_stack`).

use super::*;

#[test]
fn the_signature_is_hmac_sha256_of_t_dot_body_in_hex() {
    // Computed independently:
    // printf '1700000000.{}' | openssl dgst -sha256 -hmac key
    assert_eq!(
        signature("key", 1_700_000_000, b"{}"),
        "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
    );
}

const MASTER: &str = "master-secret-0123456789";

#[test]
fn an_owners_key_is_the_hmac_of_the_label_and_owner_under_the_master() {
    // Computed independently:
    // printf 'sluice-webhook-v1:tenant-a' | openssl dgst -sha256 -hmac master-secret-0123456789
    let key = SigningKey::for_owner(&WebhookSecret::new(MASTER), Some("tenant-a"));
    assert_eq!(
        key.secret().expose(),
        "68f18a5c58e695264dde14b719faaeb7e1047671235c5ff462c477f3c61aaa5f"
    );
    assert_eq!(key.kid().len(), 16);
    assert_eq!(
        key.kid(),
        &format!("{:x}", Sha256::digest(key.secret().expose().as_bytes()))[..16]
    );
    // Without an owner: the master, as before keys had ids.
    let default = SigningKey::for_owner(&WebhookSecret::new(MASTER), None);
    assert_eq!(default.kid(), "default");
    assert_eq!(default.secret().expose(), MASTER);
    assert_eq!(
        default.header(1_700_000_000, b"{}"),
        signature(MASTER, 1_700_000_000, b"{}").replace(",v1=", ",kid=default,v1=")
    );
}

#[test]
fn two_owners_get_two_signatures_and_each_receiver_accepts_only_its_own() {
    let master = WebhookSecret::new(MASTER);
    let a = SigningKey::for_owner(&master, Some("tenant-a"));
    let b = SigningKey::for_owner(&master, Some("tenant-b"));
    let body = br#"{"batch_id":"x","state":"stored"}"#;
    let (ha, hb) = (a.header(1_700_000_000, body), b.header(1_700_000_000, body));
    assert_ne!(a.secret(), b.secret());
    assert_ne!(a.kid(), b.kid());
    assert_ne!(ha, hb);
    assert!(
        ha.starts_with(&format!("t=1700000000,kid={},v1=", a.kid())),
        "{ha}"
    );
    // Each receiver holds its own owner's key.
    assert!(verify(a.secret().expose(), &ha, body));
    assert!(verify(b.secret().expose(), &hb, body));
    assert!(
        !verify(b.secret().expose(), &ha, body),
        "another owner's key refuses"
    );
    assert!(
        !verify(a.secret().expose(), &hb, body),
        "another owner's key refuses"
    );
    assert!(
        !verify(MASTER, &ha, body),
        "the master is not an owner's key"
    );
    assert!(
        !verify(a.secret().expose(), &ha, b"{}"),
        "another body refuses"
    );
    assert!(!verify(a.secret().expose(), "v1=00", body), "no t refuses");
}

#[tokio::test]
async fn no_secret_or_key_is_printed_by_debug() {
    let master = MasterSecret::given(MASTER);
    let key = master.key_for(Some("tenant-a")).await.expect("given");
    let sender = Sender::new(
        Some(MASTER.to_owned()),
        Destinations {
            allow_insecure: false,
            allowed_domains: Vec::new(),
        },
        60,
    )
    .expect("a client");
    for printed in [
        format!("{:?}", WebhookSecret::new(MASTER)),
        format!("{master:?}"),
        format!("{key:?}"),
        format!("{sender:?}"),
        format!("{:#?}", sender),
    ] {
        assert!(!printed.contains(MASTER), "{printed}");
        assert!(!printed.contains(key.secret().expose()), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
    }
    assert_eq!(format!("{:?}", WebhookSecret::new(MASTER)), "[redacted]");
}

#[test]
fn retries_back_off_to_fifteen_minutes() {
    assert_eq!(retry_delay(1), Duration::from_secs(5));
    assert_eq!(retry_delay(2), Duration::from_secs(10));
    assert_eq!(retry_delay(5), Duration::from_secs(80));
    assert_eq!(retry_delay(9), Duration::from_secs(900));
    assert_eq!(retry_delay(60), Duration::from_secs(900));
}

/// A Secrets Manager client of the local AWS-API server.
fn moto_secrets() -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(crate::test_stack::moto_endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "sluice-test"))
            .build(),
    )
}

/// A new secret holding `value`; its ARN.
async fn put_secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    client
        .create_secret()
        .name(crate::test_stack::unique("sluice-webhook"))
        .secret_string(value)
        .send()
        .await
        .expect("moto creates the secret")
        .arn
        .expect("an ARN")
}

/// A loopback receiver answering 200 that keeps each request's signature header and body.
async fn receiver() -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let app = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let sig = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.lock()
                    .expect("not poisoned")
                    .push((sig, body.to_vec()));
                axum::http::StatusCode::OK
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn the_master_is_read_from_secrets_manager_once_and_signs_each_owners_webhook() {
    let client = moto_secrets();
    let arn = put_secret(&client, MASTER).await;
    crate::config::check_secret_arn(&arn).expect("moto's ARN has the checked shape");
    let sender = Sender::with_master(
        Some(MasterSecret::from_arn_with(&arn, client.clone())),
        Destinations {
            allow_insecure: true,
            allowed_domains: Vec::new(),
        },
        60,
    )
    .expect("a sender");
    let (addr, seen) = receiver().await;
    let url = format!("http://{addr}/hook");
    let body = br#"{"batch_id":"b","state":"stored"}"#.to_vec();
    sender
        .post_for(&url, Some("tenant-a"), body.clone())
        .await
        .expect("delivered");
    // Read once per process: a changed secret is not read again.
    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("another-master-secret-9876543210")
        .send()
        .await
        .expect("moto stores a new version");
    sender
        .post_for(&url, Some("tenant-b"), body.clone())
        .await
        .expect("delivered");
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 2);
    let master = WebhookSecret::new(MASTER);
    let a = SigningKey::for_owner(&master, Some("tenant-a"));
    let b = SigningKey::for_owner(&master, Some("tenant-b"));
    let (sig_a, sent_a) = &seen[0];
    let (sig_b, sent_b) = &seen[1];
    assert!(sig_a.contains(&format!(",kid={},v1=", a.kid())), "{sig_a}");
    assert!(sig_b.contains(&format!(",kid={},v1=", b.kid())), "{sig_b}");
    assert!(verify(a.secret().expose(), sig_a, sent_a));
    assert!(
        verify(b.secret().expose(), sig_b, sent_b),
        "signed with the cached master"
    );
    assert!(!verify(b.secret().expose(), sig_a, sent_a));
    assert!(!verify(MASTER, sig_a, sent_a));
}

#[tokio::test]
async fn an_unreadable_secret_is_an_error_for_the_log_and_is_read_again_next_time() {
    let client = moto_secrets();
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice-missing-AbCdEf";
    let master = MasterSecret::from_arn_with(missing, client.clone());
    let e = master.get().await.expect_err("no such secret");
    assert!(e.contains(missing), "{e}");
    // A failed read is not kept: once the secret exists, the next use reads it. (Named, as
    // Secrets Manager also accepts, since moto chooses the ARN's suffix.)
    let name = crate::test_stack::unique("sluice-later");
    let later = MasterSecret::from_arn_with(&name, client.clone());
    later.get().await.expect_err("not created yet");
    client
        .create_secret()
        .name(&name)
        .secret_string(MASTER)
        .send()
        .await
        .expect("moto creates the secret");
    assert_eq!(
        later.get().await.map(|s| s.expose().to_owned()),
        Ok(MASTER.to_owned())
    );
    let short = put_secret(&client, "too-short").await;
    let e = MasterSecret::from_arn_with(&short, client.clone())
        .get()
        .await
        .expect_err("too short");
    assert!(e.ends_with("is shorter than 16 characters"), "{e}");
    // The sender tells the uploader only that the key could not be read.
    let sender = Sender::with_master(
        Some(master),
        Destinations {
            allow_insecure: true,
            allowed_domains: Vec::new(),
        },
        60,
    )
    .expect("a sender");
    assert_eq!(
        sender
            .post_for("http://127.0.0.1:9/hook", Some("tenant-a"), b"{}".to_vec())
            .await,
        Err("the webhook signing key could not be read".to_owned())
    );
}
