//! Tests of `dlq`.

use super::*;
use crate::io::sqs::Attributes;
use sluice_protocol::envelope::{Chunk, Compression, ENVELOPE_VERSION};

fn received(body: &str, attrs: &[(&str, &str)]) -> Received {
    Received {
        handle: Handle {
            message_id: "m-1".into(),
            receipt_handle: "r-1".into(),
        },
        body: body.into(),
        attributes: Attributes::strings(attrs),
        receive_count: Some(4),
        sent_timestamp_ms: None,
    }
}

#[test]
fn a_dead_letter_is_decoded_with_its_reason_and_receive_count() {
    let chunk = Chunk {
        v: ENVELOPE_VERSION,
        batch_id: "0d4f3b5e-58a4-4a51-9b5e-b0a4fd1d8a11".into(),
        chunk_index: 2,
        chunk_count: 5,
        receipts: vec![sluice_protocol::Receipt::from_value(
            &serde_json::json!({
                "receipt_id": "6f1c1f0e-8a55-4f8e-9a57-0f4e2f1b7c3d",
                "tenant_id": "acme",
                "merchant": "Café",
                "issued_on": "2026-03-14",
                "currency": "EUR",
                "total": "1.00"
            }),
            0,
        )
        .expect("valid receipt")],
    };
    let enc = envelope::encode(&chunk, Compression::Gzip).expect("encodes");
    let mut attrs = vec![(ERROR_ATTRIBUTE, "receipt x refused by the database: boom")];
    if let Some(e) = enc.encoding {
        attrs.push((envelope::ENCODING_ATTRIBUTE, e));
    }
    let d = describe(&received(&enc.body, &attrs));
    assert_eq!(d.batch_id.as_deref(), Some(chunk.batch_id.as_str()));
    assert_eq!(
        (d.chunk_index, d.chunk_count, d.receipts),
        (Some(2), Some(5), Some(1))
    );
    assert_eq!(
        d.reason.as_deref(),
        Some("receipt x refused by the database: boom")
    );
    assert_eq!(d.receive_count, Some(4));
    assert!(d.decode_error.is_none());
    let text = render(&[d]);
    assert!(text.contains("chunk 3/5"), "{text}");
    assert!(text.contains("reason: receipt x refused"), "{text}");
    assert!(text.contains("received 4 times"), "{text}");
}

#[test]
fn an_undecodable_dead_letter_is_listed_with_the_decode_error() {
    let d = describe(&received("not an envelope", &[]));
    assert!(d.batch_id.is_none());
    assert!(d.decode_error.is_some());
    let text = render(&[d]);
    assert!(text.contains("body does not decode (15 bytes)"), "{text}");
    assert!(
        text.contains("moved by the queue's redrive policy"),
        "{text}"
    );
}

#[test]
fn an_empty_listing_says_so() {
    assert_eq!(render(&[]), "The dead-letter queue is empty.\n");
}
