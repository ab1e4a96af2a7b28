//! Tests of the envelope: round trips, every decode error, and decode never panicking.

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::test_support::{full, full_json, id, minimal_json, repeated_id_json};

const BATCH: &str = "5d1c2a10-3b4e-4f60-9a7b-8c9d0e1f2a3b";

fn chunk(n: usize) -> Chunk {
    Chunk::new(BATCH.into(), 1, 3, (0..n).map(full).collect())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("write");
    e.finish().expect("finish")
}

/// A plain body from a JSON value.
fn plain(v: &Value) -> String {
    v.to_string()
}

fn envelope_json(receipts: Vec<Value>) -> Value {
    json!({"v": 1, "batch_id": BATCH, "chunk_index": 0, "chunk_count": 1, "receipts": receipts})
}

// -- compression names --------------------------------------------------------------------------

#[test]
fn compression_names_parse_and_print() {
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
    }
    assert_eq!(Compression::default(), Compression::None);
    assert_eq!(
        "brotli".parse::<Compression>().map_err(|e| e.to_string()),
        Err(r#"unknown compression "brotli": expected none, gzip or zstd"#.to_owned())
    );
}

// -- encode / decode ------------------------------------------------------------------------------

#[test]
fn a_chunk_round_trips_with_every_compression() {
    let original = chunk(3);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let message = encode(&original, c).expect("encodes");
        assert_eq!(message.encoding, c.attribute());
        assert_eq!(message.chunk_index, 1);
        assert_eq!(message.receipts, 3);
        assert_eq!(
            decode(&message.body, message.encoding),
            Ok(original.clone()),
            "{c}"
        );
    }
}

#[test]
fn decode_measured_reports_the_decompressed_json_length_whatever_the_compression() {
    let original = chunk(3);
    let json_len = serde_json::to_string(&original).expect("json").len();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let message = encode(&original, c).expect("encodes");
        let decoded = decode_measured(&message.body, message.encoding).expect("decodes");
        assert_eq!(decoded.json_bytes, json_len, "{c}");
        assert_eq!(decoded.chunk, original, "{c}");
    }
}

#[test]
fn chunks_either_side_of_the_whole_decode_size_decode_alike() {
    // A few receipts (decompressed whole) and enough to pass WHOLE_DECODE_BYTES (parsed off
    // the decompressor): the same chunk and length either way.
    let per_receipt = serde_json::to_string(&full(0)).expect("json").len();
    let over = WHOLE_DECODE_BYTES / per_receipt + 10;
    for n in [3, over] {
        let original = chunk(n);
        let json_len = serde_json::to_string(&original).expect("json").len();
        assert_eq!(
            json_len > WHOLE_DECODE_BYTES,
            n == over,
            "{n} receipts: {json_len} B"
        );
        for c in [Compression::Gzip, Compression::Zstd] {
            let message = encode(&original, c).expect("encodes");
            let decoded = decode_measured(&message.body, message.encoding).expect("decodes");
            assert_eq!(decoded.json_bytes, json_len, "{c}, {n} receipts");
            assert_eq!(decoded.chunk, original, "{c}, {n} receipts");
        }
    }
}

#[test]
fn a_plain_body_is_the_chunk_json_and_compressed_bodies_are_base64() {
    let original = chunk(2);
    let plain = encode(&original, Compression::None).expect("encodes");
    assert_eq!(
        plain.body,
        serde_json::to_string(&original).expect("serializes")
    );
    assert!(plain.body.starts_with(r#"{"v":1,"batch_id":"#));
    for c in [Compression::Gzip, Compression::Zstd] {
        let m = encode(&original, c).expect("encodes");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&m.body)
            .expect("base64");
        assert!(!raw.is_empty());
        assert!(m.body.len() < plain.body.len() * 2);
    }
}

#[test]
fn sqs_size_counts_the_encoding_attribute() {
    let plain = encode(&chunk(1), Compression::None).expect("encodes");
    assert_eq!(plain.sqs_size(), plain.body.len());
    let gz = encode(&chunk(1), Compression::Gzip).expect("encodes");
    assert_eq!(
        gz.sqs_size(),
        gz.body.len() + "sluice-encoding".len() + "String".len() + 4
    );
}

#[test]
fn encode_refuses_a_header_decode_would_refuse() {
    let mut c = chunk(1);
    c.chunk_index = 3;
    assert_eq!(
        encode(&c, Compression::None),
        Err(EncodeError::BadHeader(
            "chunk_index 3 is not below chunk_count 3".into()
        ))
    );
    let mut c = chunk(0);
    c.chunk_index = 0;
    assert_eq!(
        encode(&c, Compression::None),
        Err(EncodeError::BadHeader("the chunk holds no receipts".into()))
    );
    let mut c = chunk(1);
    c.batch_id = "b1".into();
    assert_eq!(
        encode(&c, Compression::None),
        Err(EncodeError::BadHeader("batch_id is not a UUID".into()))
    );
    let mut c = chunk(1);
    c.v = 2;
    assert!(matches!(
        encode(&c, Compression::None),
        Err(EncodeError::BadHeader(_))
    ));
}

#[test]
fn decode_normalises_ids_to_lowercase() {
    let mut r = full_json(0);
    r["receipt_id"] = json!(id(0).to_uppercase());
    let mut env = envelope_json(vec![r]);
    env["batch_id"] = json!(BATCH.to_uppercase());
    let c = decode(&plain(&env), None).expect("decodes");
    assert_eq!(c.batch_id, BATCH);
    assert_eq!(c.receipts[0].receipt_id, id(0));
}

// -- decode errors, one per variant ----------------------------------------------------------------

#[test]
fn an_unknown_encoding_is_refused() {
    let err = decode("{}", Some("brotli")).expect_err("refused");
    assert_eq!(err, DecodeError::UnknownEncoding("brotli".into()));
    assert_eq!(
        err.to_string(),
        r#"unknown body encoding "brotli" in the sluice-encoding attribute (expected gzip or zstd)"#
    );
}

#[test]
fn a_compressed_body_that_is_not_base64_is_refused() {
    assert!(matches!(
        decode("{not base64}", Some("gzip")),
        Err(DecodeError::Base64(_))
    ));
    assert!(matches!(
        decode("abc", Some("zstd")),
        Err(DecodeError::Base64(_))
    ));
}

#[test]
fn a_body_that_does_not_decompress_is_refused() {
    let garbage = b64(b"definitely not compressed");
    assert!(matches!(
        decode(&garbage, Some("gzip")),
        Err(DecodeError::Decompress(_))
    ));
    assert!(matches!(
        decode(&garbage, Some("zstd")),
        Err(DecodeError::Decompress(_))
    ));
    // A gzip body sent with the zstd attribute.
    let gz = encode(&chunk(1), Compression::Gzip).expect("encodes");
    assert!(matches!(
        decode(&gz.body, Some("zstd")),
        Err(DecodeError::Decompress(_))
    ));
}

#[test]
fn a_zip_bomb_stops_at_the_decoded_size_limit() {
    let zeros = vec![b' '; MAX_DECODED_BYTES + 1];
    let zstd_bomb = b64(&zstd::bulk::compress(&zeros, 19).expect("compresses"));
    let gzip_bomb = b64(&gzip(&zeros));
    assert!(zstd_bomb.len() < 4096 && gzip_bomb.len() < 64 * 1024);
    let too_large = DecodeError::TooLarge {
        limit: MAX_DECODED_BYTES,
    };
    assert_eq!(decode(&zstd_bomb, Some("zstd")), Err(too_large.clone()));
    assert_eq!(decode(&gzip_bomb, Some("gzip")), Err(too_large.clone()));
    let huge_plain = " ".repeat(MAX_DECODED_BYTES + 1);
    assert_eq!(decode(&huge_plain, None), Err(too_large));
}

#[test]
fn a_body_that_is_not_an_envelope_is_a_json_error_with_position() {
    assert_eq!(
        decode("{\"v\":1,\n \"batch_id\": ]", None),
        Err(DecodeError::Json {
            line: 2,
            column: 14,
            message: "expected value".into()
        })
    );
    assert!(matches!(decode("", None), Err(DecodeError::Json { .. })));
}

#[test]
fn an_unknown_optional_envelope_field_from_a_newer_ingest_is_ignored() {
    let mut env = envelope_json(vec![minimal_json(0)]);
    env["extra"] = json!(1);
    env["trace"] = json!({"id": "abc", "hops": [1, 2]});
    let chunk = decode(&plain(&env), None).expect("an older agent reads a newer optional field");
    assert_eq!(chunk.v, ENVELOPE_VERSION);
    assert_eq!(chunk.receipts.len(), 1);
}

#[test]
fn another_envelope_version_is_refused_even_when_its_shape_differs() {
    let v3 = json!({"v": 3, "batch_id": BATCH, "parts": []});
    assert_eq!(
        decode(&plain(&v3), None),
        Err(DecodeError::UnsupportedVersion(3))
    );
    let mut env = envelope_json(vec![minimal_json(0)]);
    env["v"] = json!(0);
    let err = decode(&plain(&env), None).expect_err("refused");
    assert_eq!(err, DecodeError::UnsupportedVersion(0));
    assert_eq!(
        err.to_string(),
        "envelope version 0 is not supported (this build reads versions 1 to 2)"
    );
}

#[test]
fn an_inconsistent_header_is_refused() {
    let cases = [
        (
            "chunk_index",
            json!(1),
            "chunk_index 1 is not below chunk_count 1",
        ),
        ("chunk_count", json!(0), "chunk_count is 0"),
        ("batch_id", json!(""), "batch_id is empty"),
        ("batch_id", json!("batch-1"), "batch_id is not a UUID"),
    ];
    for (field, value, reason) in cases {
        let mut env = envelope_json(vec![minimal_json(0)]);
        env[field] = value;
        assert_eq!(
            decode(&plain(&env), None),
            Err(DecodeError::BadHeader(reason.into()))
        );
    }
    let empty = envelope_json(vec![]);
    assert_eq!(
        decode(&plain(&empty), None),
        Err(DecodeError::BadHeader("the chunk holds no receipts".into()))
    );
}

#[test]
fn invalid_receipts_in_a_message_are_reported_with_pointers() {
    let mut bad = minimal_json(1);
    bad["total"] = json!(3.5);
    let env = envelope_json(vec![minimal_json(0), bad]);
    match decode(&plain(&env), None) {
        Err(DecodeError::InvalidReceipts(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].pointer, "/receipts/1/total");
            assert_eq!(errors[0].receipt_id, Some(id(1)));
        }
        other => panic!("expected InvalidReceipts, got {other:?}"),
    }
}

#[test]
fn a_compressed_body_fails_as_its_plain_json_would() {
    // Compressed bodies are parsed as they are decompressed; a failure is named from the
    // whole JSON, exactly as for the same JSON sent plain.
    let mut bad = minimal_json(1);
    bad["total"] = json!(3.5);
    let invalid = plain(&envelope_json(vec![minimal_json(0), bad]));
    let v3 = plain(&json!({"v": 3, "batch_id": BATCH, "parts": []}));
    let mut trailing = plain(&envelope_json(vec![minimal_json(0)]));
    trailing.push_str(" x");
    for json in ["{\"v\":1,\n \"batch_id\": ]", &invalid, &v3, &trailing, ""] {
        let plain_result = decode(json, None);
        assert!(plain_result.is_err(), "{json}");
        let zstd_body = b64(&zstd::bulk::compress(json.as_bytes(), 3).expect("zstd"));
        assert_eq!(
            decode(&b64(&gzip(json.as_bytes())), Some("gzip")),
            plain_result
        );
        assert_eq!(decode(&zstd_body, Some("zstd")), plain_result);
    }
}

#[test]
fn a_chunk_of_valid_receipts_is_read_the_quick_way() {
    let json = serde_json::to_vec(&chunk(4)).expect("json");
    let quick = serde_json::from_slice::<RawChunk<Accepted>>(&json).expect("quick path");
    assert_eq!(quick.receipts.0, chunk(4).receipts);
}

#[test]
fn a_long_compressed_chunk_with_one_bad_receipt_names_it_as_a_short_one_would() {
    // Past WHOLE_DECODE_BYTES the quick path streams; the bad receipt sends the chunk to the
    // walk, which must still name it exactly.
    let per_receipt = serde_json::to_string(&full(0)).expect("json").len();
    let mut receipts: Vec<Value> = (0..WHOLE_DECODE_BYTES / per_receipt + 10)
        .map(full_json)
        .collect();
    let last = receipts.len() - 1;
    receipts[last]["currency"] = json!("eur");
    let json = plain(&envelope_json(receipts));
    assert!(json.len() > WHOLE_DECODE_BYTES);
    let expected = decode(&json, None);
    match &expected {
        Err(DecodeError::InvalidReceipts(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].pointer, format!("/receipts/{last}/currency"));
        }
        other => panic!("expected InvalidReceipts, got {other:?}"),
    }
    let zstd_body = b64(&zstd::bulk::compress(json.as_bytes(), 3).expect("zstd"));
    assert_eq!(decode(&b64(&gzip(json.as_bytes())), Some("gzip")), expected);
    assert_eq!(decode(&zstd_body, Some("zstd")), expected);
}

#[test]
fn a_receipt_with_a_repeated_key_decodes_as_the_walk_reads_it() {
    // serde refuses a repeated field; the walk keeps the last, as `serde_json::Value` does.
    let receipt = repeated_id_json(1, 2);
    let json = format!(
        r#"{{"v":1,"batch_id":"{BATCH}","chunk_index":0,"chunk_count":1,"receipts":[{receipt}]}}"#
    );
    let decoded = decode(&json, None).expect("decodes");
    assert_eq!(decoded.receipts[0].receipt_id, id(2));
}

// -- property: decode never panics ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn decode_never_panics_on_arbitrary_strings(
        body in any::<String>(),
        encoding in proptest::option::of(prop_oneof![
            Just("gzip".to_owned()), Just("zstd".to_owned()), Just("none".to_owned()), any::<String>()
        ]),
    ) {
        let _ = decode(&body, encoding.as_deref());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_compressed_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        zstd in any::<bool>(),
    ) {
        let _ = decode(&b64(&bytes), Some(if zstd { "zstd" } else { "gzip" }));
        let _ = decode(&String::from_utf8_lossy(&bytes), None);
    }

    #[test]
    fn decode_never_panics_on_corrupted_valid_messages(
        compression in prop_oneof![Just(Compression::None), Just(Compression::Gzip), Just(Compression::Zstd)],
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let message = encode(&chunk(2), compression).expect("encodes");
        let mut bytes = message.body.into_bytes();
        // Corrupt the decoded payload (after base64) so the decompressor sees the damage.
        if compression != Compression::None {
            bytes = base64::engine::general_purpose::STANDARD.decode(&bytes).expect("base64");
        }
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte | 1;
        }
        let body = if compression == Compression::None {
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            b64(&bytes)
        };
        let _ = decode(&body, message.encoding);
    }
}

#[test]
fn a_chunk_carrying_a_photo_is_version_2_and_every_other_stays_version_1() {
    let mut receipt: Receipt = serde_json::from_value(minimal_json(0)).expect("receipt");
    let plain_chunk = Chunk::new(BATCH.into(), 0, 1, vec![receipt.clone()]);
    assert_eq!(plain_chunk.v, ENVELOPE_VERSION);
    receipt.image = Some(crate::Image {
        key: Some("photos/x/y".into()),
        sha256: "a".repeat(64),
        bytes: 3,
        content_type: Some("image/png".into()),
    });
    let photo_chunk = Chunk::new(BATCH.into(), 0, 1, vec![receipt.clone()]);
    assert_eq!(photo_chunk.v, crate::ENVELOPE_VERSION_PHOTOS);
    let body = encode(&photo_chunk, Compression::None)
        .expect("encoded")
        .body;
    assert!(body.starts_with(r#"{"v":2,"#), "{body}");
    assert_eq!(decode(&body, None).expect("read"), photo_chunk);
    // Written as version 1, a carried photo would be misread by an older agent: refused.
    let mislabelled = Chunk {
        v: 1,
        ..photo_chunk
    };
    assert_eq!(
        encode(&mislabelled, Compression::None).map(|_| ()),
        Err(EncodeError::BadHeader(
            "v is 1, these receipts are written in version 2".into()
        ))
    );
    // split() writes every chunk of an upload holding a carried photo as version 2.
    let messages = crate::split(BATCH, &[receipt], &crate::Limits::default()).expect("split");
    assert!(
        messages[0].body.starts_with(r#"{"v":2,"#),
        "{}",
        messages[0].body
    );
}
