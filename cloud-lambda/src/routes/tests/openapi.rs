//! The OpenAPI document (`api/openapi.json`) against the code: every error status and code,
//! the schemas of what is sent and received, and every route it documents.

use super::*;

fn openapi_doc() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

fn schema_properties(doc: &Value, name: &str) -> Vec<String> {
    let mut keys: Vec<String> = doc["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name} has properties"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn object_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    keys
}

/// One of every error. The match makes this fail to compile when a variant is added, so the
/// document cannot silently miss it.
fn every_error() -> Vec<IngestError> {
    let all = vec![
        IngestError::Unauthorized,
        IngestError::UnsupportedMediaType("text/csv".into()),
        IngestError::UnsupportedEncoding("br".into()),
        IngestError::BodyTooLarge { limit: 1 },
        IngestError::InflatedTooLarge { limit: 1 },
        IngestError::BadBody("x".into()),
        IngestError::BadIdempotencyKey("x".into()),
        IngestError::Batch(BatchError::TooManyReceipts { limit: 1 }),
        IngestError::Batch(BatchError::Malformed {
            line: 1,
            column: 1,
            message: "x".into(),
        }),
        IngestError::Batch(BatchError::Shape("x".into())),
        IngestError::Batch(BatchError::Invalid {
            errors: vec![],
            total_errors: 0,
            invalid_receipts: 0,
        }),
        IngestError::KeyReused("k".into()),
        IngestError::Unavailable(crate::publish::PublishError {
            failed: 1,
            total: 1,
            detail: "x".into(),
        }),
        IngestError::RecordsUnavailable("x".into()),
        IngestError::BadCallback("x".into()),
        IngestError::WebhooksNotConfigured,
        IngestError::PhotosNotConfigured {
            count: 1,
            first: "x".into(),
        },
        IngestError::PhotosUnavailable(crate::photos::PhotoError::Malformed("x".into())),
    ];
    for e in &all {
        match e {
            IngestError::Unauthorized
            | IngestError::UnsupportedMediaType(_)
            | IngestError::UnsupportedEncoding(_)
            | IngestError::BodyTooLarge { .. }
            | IngestError::InflatedTooLarge { .. }
            | IngestError::BadBody(_)
            | IngestError::BadIdempotencyKey(_)
            | IngestError::Batch(
                BatchError::TooManyReceipts { .. }
                | BatchError::Malformed { .. }
                | BatchError::Shape(_)
                | BatchError::Invalid { .. },
            )
            | IngestError::KeyReused(_)
            | IngestError::Unavailable(_)
            | IngestError::RecordsUnavailable(_)
            | IngestError::BadCallback(_)
            | IngestError::WebhooksNotConfigured
            | IngestError::PhotosNotConfigured { .. }
            | IngestError::PhotosUnavailable(_) => {}
        }
    }
    all
}

#[test]
fn the_openapi_document_lists_every_error_status_and_code() {
    let doc = openapi_doc();
    let responses = &doc["paths"]["/v1/batches"]["post"]["responses"];
    let documented_codes: Vec<String> = doc["components"]["schemas"]["Error"]["properties"]
        ["error"]["enum"]
        .as_array()
        .expect("error enum")
        .iter()
        .map(|c| c.as_str().expect("string").to_owned())
        .collect();
    let mut used_codes = Vec::new();
    for e in every_error() {
        let (status, code) = e.status_and_code();
        assert!(
            responses.get(status.as_str()).is_some(),
            "status {status} ({code}) missing from openapi.json"
        );
        assert!(
            documented_codes.iter().any(|c| c == code),
            "code {code} missing"
        );
        used_codes.push(code.to_owned());
    }
    for code in &documented_codes {
        assert!(
            used_codes.contains(code),
            "openapi.json documents unused code {code}"
        );
    }
}

#[test]
fn the_openapi_schemas_match_the_types_sent_and_received() {
    let doc = openapi_doc();
    let accepted = serde_json::to_value(Accepted {
        batch_id: String::new(),
        receipts: 0,
        chunks: 0,
        bytes: 0,
        photos: vec![crate::photos::PhotoUpload {
            receipt_id: String::new(),
            upload_url: String::new(),
            headers: Default::default(),
            expires_at: String::new(),
        }],
    })
    .expect("serializable");
    assert_eq!(object_keys(&accepted), schema_properties(&doc, "Accepted"));
    assert_eq!(
        object_keys(&accepted["photos"][0]),
        schema_properties(&doc, "PhotoUpload")
    );

    let field_error = serde_json::to_value(FieldError {
        index: 0,
        receipt_id: Some("x".into()),
        pointer: "/receipts/0".into(),
        reason: "x".into(),
    })
    .expect("serializable");
    assert_eq!(
        object_keys(&field_error),
        schema_properties(&doc, "FieldError")
    );

    let mut full = receipt(0);
    for (k, v) in [
        ("submitted_by", json!("a@b.c")),
        ("tax", json!("1.00")),
        ("category", json!("meals")),
        (
            "image",
            json!({"key": "k", "sha256": "a".repeat(64), "bytes": 1}),
        ),
        (
            "items",
            json!([{"description": "d", "quantity": "1", "unit_price": "1", "amount": "1"}]),
        ),
        ("metadata", json!({"a": 1})),
    ] {
        full[k] = v;
    }
    let parsed = sluice_protocol::Receipt::from_value(&full, 0).expect("a full, valid receipt");
    let typed = serde_json::to_value(parsed).expect("serializable");
    assert_eq!(object_keys(&typed), schema_properties(&doc, "Receipt"));

    let malformed = serde_json::to_value(ErrorBody {
        error: "x",
        message: "x".into(),
        line: Some(1),
        column: Some(1),
        errors: Some(&[]),
        total_errors: Some(0),
        request_id: Some("x".into()),
    })
    .expect("serializable");
    assert_eq!(object_keys(&malformed), schema_properties(&doc, "Error"));
}

#[tokio::test]
async fn every_documented_route_is_served_and_the_document_is_too() {
    let doc = openapi_doc();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(path.as_str())
                .body(Body::empty())
                .expect("valid");
            let resp = app_with(&[]).oneshot(req).await.expect("infallible");
            assert_ne!(resp.status(), StatusCode::NOT_FOUND, "{method} {path}");
            assert_ne!(
                resp.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
        }
    }
    let resp = app_with(&[])
        .oneshot(
            Request::get("/openapi.json")
                .body(Body::empty())
                .expect("valid"),
        )
        .await
        .expect("infallible");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(bytes.as_ref(), OPENAPI.as_bytes());
}

#[test]
fn the_openapi_document_lists_every_status_error_and_the_status_shape() {
    use batch_status::QueryError;
    let doc = openapi_doc();
    let responses = &doc["paths"]["/v1/batches/{batch_id}"]["get"]["responses"];
    let mut codes: Vec<String> = doc["components"]["schemas"]["StatusError"]["properties"]["error"]
        ["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|c| c.as_str().expect("string").to_owned())
        .collect();
    let mut used = Vec::new();
    for e in [
        QueryError::Unauthorized,
        QueryError::BadBatchId("x".into()),
        QueryError::NotFound("x".into()),
        QueryError::NotConfigured,
        QueryError::Unavailable("x".into()),
    ] {
        let (status, code) = e.status_and_code();
        assert!(responses.get(status.as_str()).is_some(), "{status} missing");
        used.push(code.to_owned());
    }
    codes.sort();
    used.sort();
    assert_eq!(codes, used);
    let status = sluice_protocol::BatchStatus {
        batch_id: String::new(),
        state: sluice_protocol::BatchState::Accepted,
        receipts: 0,
        chunks: 0,
        chunks_done: 0,
        stored: 0,
        duplicates: 0,
        conflicts: 0,
        rejected: 0,
        rejections: vec![],
        rejections_total: 0,
        accepted_at: None,
        completed_at: None,
        webhook: Some(sluice_protocol::report::WebhookStatus {
            state: sluice_protocol::report::WebhookState::Failed,
            attempts: 1,
            last_error: Some("x".into()),
            delivered_at: Some("x".into()),
        }),
    };
    let json = serde_json::to_value(&status).expect("serializable");
    assert_eq!(object_keys(&json), schema_properties(&doc, "BatchStatus"));
    assert_eq!(
        object_keys(&json["webhook"]),
        schema_properties(&doc, "WebhookStatus")
    );
}
