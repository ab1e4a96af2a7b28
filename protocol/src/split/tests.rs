//! Tests of splitting: exact plain packing, limits, and the split-then-decode properties.

use proptest::prelude::*;

use super::*;
use crate::envelope::{decode, encode, Chunk};
use crate::test_support::{self, full};

const BATCH: &str = "5d1c2a10-3b4e-4f60-9a7b-8c9d0e1f2a3b";

fn receipts(n: usize) -> Vec<Receipt> {
    (0..n).map(full).collect()
}

fn limits(max_message_bytes: usize, max_receipts_per_chunk: usize) -> Limits {
    Limits {
        max_message_bytes,
        max_receipts_per_chunk,
        compression: Compression::None,
    }
}

/// Decodes every message and checks the chunk headers; returns the receipts in order.
fn decode_all(messages: &[EncodedMessage]) -> Vec<Receipt> {
    let mut out = Vec::new();
    for (k, m) in messages.iter().enumerate() {
        let chunk = decode(&m.body, m.encoding).expect("decodes");
        assert_eq!(chunk.batch_id, BATCH);
        assert_eq!(chunk.chunk_index as usize, k);
        assert_eq!(m.chunk_index as usize, k);
        assert_eq!(chunk.chunk_count as usize, messages.len());
        assert_eq!(chunk.receipts.len(), m.receipts);
        out.extend(chunk.receipts);
    }
    out
}

/// Size of a message holding `receipts` as chunk `index` of `count`, without compression.
fn plain_size(receipts: &[Receipt], index: u32, count: u32) -> usize {
    let chunk = Chunk::new(BATCH.into(), index, count, receipts.to_vec());
    encode(&chunk, Compression::None)
        .expect("encodes")
        .sqs_size()
}

#[test]
fn assembled_bodies_are_exactly_the_serialized_chunk() {
    let rs = receipts(3);
    let messages = split(BATCH, &rs, &limits(DEFAULT_MAX_MESSAGE_BYTES, 2)).expect("splits");
    assert_eq!(messages.len(), 2);
    let first = Chunk::new(BATCH.into(), 0, 2, rs[..2].to_vec());
    assert_eq!(
        messages[0].body,
        serde_json::to_string(&first).expect("serializes")
    );
    let second = Chunk::new(BATCH.into(), 1, 2, rs[2..].to_vec());
    assert_eq!(
        messages[1].body,
        serde_json::to_string(&second).expect("serializes")
    );
}

#[test]
fn no_receipts_make_no_messages() {
    assert_eq!(split(BATCH, &[], &Limits::default()), Ok(Vec::new()));
}

#[test]
fn the_batch_id_must_be_a_uuid() {
    assert!(matches!(
        split("batch-1", &receipts(1), &Limits::default()),
        Err(SplitError::Encode(_))
    ));
}

#[test]
fn a_chunk_holds_at_most_max_receipts_per_chunk() {
    let messages =
        split(BATCH, &receipts(7), &limits(DEFAULT_MAX_MESSAGE_BYTES, 3)).expect("splits");
    let counts: Vec<usize> = messages.iter().map(|m| m.receipts).collect();
    assert_eq!(counts, [3, 3, 1]);
    let zero = split(BATCH, &receipts(2), &limits(DEFAULT_MAX_MESSAGE_BYTES, 0)).expect("splits");
    assert_eq!(zero.len(), 2);
}

#[test]
fn plain_accounting_is_exact_at_the_byte_limit() {
    let rs = receipts(4);
    // Exactly two receipts fit per message: the limit is their message's size.
    let exact = plain_size(&rs[..2], 0, 2);
    let messages = split(BATCH, &rs, &limits(exact, 100)).expect("splits");
    assert_eq!(
        messages.iter().map(|m| m.receipts).collect::<Vec<_>>(),
        [2, 2]
    );
    assert!(messages.iter().any(|m| m.sqs_size() == exact));
    // One byte less and only one fits.
    let messages = split(BATCH, &rs, &limits(exact - 1, 100)).expect("splits");
    assert_eq!(messages.len(), 4);
    assert_eq!(decode_all(&messages), rs);
}

#[test]
fn headers_are_sized_for_the_final_chunk_count() {
    // 12 receipts, one per chunk: chunk_count has two digits in every message, and a limit
    // that fits the largest such message exactly must be enough.
    let rs = receipts(12);
    let biggest = (0..12)
        .map(|i| plain_size(&rs[i..i + 1], i as u32, 12))
        .max()
        .unwrap_or(0);
    let messages = split(BATCH, &rs, &limits(biggest, 1)).expect("splits");
    assert_eq!(messages.len(), 12);
    assert!(messages.iter().all(|m| m.sqs_size() <= biggest));
    assert_eq!(decode_all(&messages), rs);
}

#[test]
fn a_receipt_too_large_for_one_message_is_named() {
    let mut rs = receipts(3);
    rs[1].merchant = "m".repeat(200);
    let limit = plain_size(&rs[1..2], 0, 1) - 1;
    match split(BATCH, &rs, &limits(limit, 10)) {
        Err(SplitError::ReceiptTooLarge {
            index,
            receipt_id,
            bytes,
            limit: l,
        }) => {
            assert_eq!(index, 1);
            assert_eq!(receipt_id, rs[1].receipt_id);
            assert_eq!(l, limit);
            assert!(bytes > limit);
        }
        other => panic!("expected ReceiptTooLarge, got {other:?}"),
    }
    for compression in [Compression::Gzip, Compression::Zstd] {
        let tiny = Limits {
            max_message_bytes: 200,
            max_receipts_per_chunk: 10,
            compression,
        };
        assert!(matches!(
            split(BATCH, &rs, &tiny),
            Err(SplitError::ReceiptTooLarge { index: 0, .. })
        ));
    }
}

#[test]
fn a_limit_above_the_sqs_maximum_is_capped() {
    let rs: Vec<Receipt> = receipts(1).into_iter().cycle().take(2000).collect();
    let messages = split(BATCH, &rs, &limits(usize::MAX, 10_000)).expect("splits");
    assert!(messages.len() > 1);
    assert!(messages
        .iter()
        .all(|m| m.sqs_size() <= SQS_MAX_MESSAGE_BYTES));
}

#[test]
fn compression_packs_more_receipts_per_message() {
    let rs = receipts(400);
    let plain = split(BATCH, &rs, &limits(16 * 1024, 1000)).expect("splits");
    for compression in [Compression::Gzip, Compression::Zstd] {
        let packed = split(
            BATCH,
            &rs,
            &Limits {
                max_message_bytes: 16 * 1024,
                max_receipts_per_chunk: 1000,
                compression,
            },
        )
        .expect("splits");
        assert!(
            packed.len() * 3 < plain.len(),
            "{compression}: {} vs {}",
            packed.len(),
            plain.len()
        );
        assert!(packed.iter().all(|m| m.sqs_size() <= 16 * 1024));
        assert_eq!(decode_all(&packed), rs);
    }
}

// -- properties ---------------------------------------------------------------------------------

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Zstd)
    ]
}

/// Checks a `ReceiptTooLarge` is justified: that receipt alone does not fit (give or take the
/// header digits the splitter had to reserve).
fn too_large_is_justified(rs: &[Receipt], index: usize, limits: &Limits) -> bool {
    let alone = Chunk::new(BATCH.into(), 0, 1, vec![rs[index].clone()]);
    let size = encode(&alone, limits.compression)
        .expect("encodes")
        .sqs_size();
    size + 16 > limits.max_message_bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn split_then_decode_gives_back_every_receipt_in_order(
        rs in proptest::collection::vec(test_support::receipt(), 1..60),
        max_message_bytes in 2048usize..65_536,
        max_receipts_per_chunk in 1usize..40,
        compression in compression(),
    ) {
        let limits = Limits { max_message_bytes, max_receipts_per_chunk, compression };
        match split(BATCH, &rs, &limits) {
            Ok(messages) => prop_assert_eq!(decode_all(&messages), rs),
            Err(SplitError::ReceiptTooLarge { index, .. }) => {
                prop_assert!(too_large_is_justified(&rs, index, &limits))
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    #[test]
    fn every_message_fits_its_byte_and_receipt_limits(
        rs in proptest::collection::vec(test_support::receipt(), 1..80),
        max_message_bytes in 2048usize..65_536,
        max_receipts_per_chunk in 1usize..100,
        compression in compression(),
    ) {
        let limits = Limits { max_message_bytes, max_receipts_per_chunk, compression };
        match split(BATCH, &rs, &limits) {
            Ok(messages) => {
                prop_assert_eq!(messages.iter().map(|m| m.receipts).sum::<usize>(), rs.len());
                for m in &messages {
                    prop_assert!(m.sqs_size() <= max_message_bytes);
                    prop_assert!(m.receipts >= 1 && m.receipts <= max_receipts_per_chunk);
                    prop_assert_eq!(m.encoding, compression.attribute());
                }
                // Plain packing is greedy: no chunk could have taken the next receipt.
                if compression == Compression::None {
                    let mut start = 0;
                    let count = messages.len() as u32;
                    for (k, m) in messages.iter().enumerate() {
                        let end = start + m.receipts;
                        if end < rs.len() && m.receipts < max_receipts_per_chunk {
                            prop_assert!(plain_size(&rs[start..=end], k as u32, count) > max_message_bytes);
                        }
                        start = end;
                    }
                }
            }
            Err(SplitError::ReceiptTooLarge { index, .. }) => {
                prop_assert!(too_large_is_justified(&rs, index, &limits))
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }
}

#[test]
fn a_chunk_that_overflows_with_its_final_header_is_cut_in_two() {
    let rs = receipts(8);
    let parts: Vec<String> = rs
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let whole = encode(&Chunk::new(BATCH.into(), 0, 1, rs.clone()), compression)
            .expect("encodes")
            .sqs_size();
        // One byte short for one range holding everything: it must be cut.
        let limit = whole - 1;
        let limits = Limits {
            max_message_bytes: limit,
            max_receipts_per_chunk: 100,
            compression,
        };
        let packer = Packer::new(BATCH, &parts, &rs, &limits).expect("packer");
        let messages = packer
            .finalize(std::iter::once(0..8).collect(), compression)
            .expect("fits");
        assert!(messages.len() > 1, "{compression}");
        assert!(messages.iter().all(|m| m.sqs_size() <= limit));
        assert_eq!(decode_all(&messages), rs);
    }
}
