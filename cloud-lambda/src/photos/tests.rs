//! Tests of `photos`: the pure parts here; the whole flow against moto in `e2e`.

use super::*;

const SHA_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A PNG's signature and header (`width` × `height`), then `rest`.
pub(super) fn png_of(width: u32, height: u32, rest: &[u8]) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    b.extend(width.to_be_bytes());
    b.extend(height.to_be_bytes());
    b.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    b.extend(rest);
    b
}

fn declared(body: &[u8], content_type: &str) -> String {
    format!("{:x} {} {content_type}", Sha256::digest(body), body.len())
}

#[test]
fn magic_bytes_name_each_photo_type() {
    assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0]), Some("image/jpeg"));
    assert_eq!(sniff(b"\x89PNG\r\n\x1a\n"), Some("image/png"));
    assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
    assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0"), Some("image/heic"));
    assert_eq!(sniff(b"\0\0\0\x18ftypmif1\0\0"), Some("image/heic"));
    assert_eq!(sniff(b"%PDF-1.7"), Some("application/pdf"));
    assert_eq!(sniff(b"GIF89a"), None);
    assert_eq!(sniff(b""), None);
}

#[test]
fn each_refusal_has_its_reason() {
    let png = png_of(640, 480, b"rest of a png");
    let ok = declared(&png, "image/png");
    assert_eq!(judge(&ok, &png, png.len() as u64, 1 << 20, 1 << 20).0, "ok");
    // Other bytes of the same size: the SHA-256 differs.
    let mut other = png.clone();
    other[10] ^= 1;
    assert_eq!(
        judge(&ok, &other, other.len() as u64, 1 << 20, 1 << 20).0,
        IMAGE_CHECKSUM
    );
    // Another size than declared.
    assert_eq!(judge(&ok, &png[..5], 5, 1 << 20, 1 << 20).0, IMAGE_CHECKSUM);
    // Above the configured maximum, whatever was declared.
    assert_eq!(
        judge(&ok, &png[..4], 1 << 21, 1 << 20, 1 << 20).0,
        IMAGE_TOO_LARGE
    );
    // A GIF declared image/png, with its own digest and size: the type is wrong.
    let gif = b"GIF89a\x01\x00\x01\x00".to_vec();
    let (v, detail) = judge(
        &declared(&gif, "image/png"),
        &gif,
        gif.len() as u64,
        1 << 20,
        1 << 20,
    );
    assert_eq!(v, IMAGE_TYPE, "{detail}");
    // A JPEG declared image/png.
    let jpeg = b"\xFF\xD8\xFF\xE0jfif".to_vec();
    let (v, detail) = judge(
        &declared(&jpeg, "image/png"),
        &jpeg,
        jpeg.len() as u64,
        1 << 20,
        1 << 20,
    );
    assert_eq!(v, IMAGE_TYPE);
    assert_eq!(detail, "the bytes are image/jpeg, image/png declared");
    assert_eq!(hex_decode(SHA_EMPTY).map(|d| d.len()), Some(32));
}

#[test]
fn s3_events_give_the_created_keys() {
    let body = r#"{"Records":[
        {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"photos/a/b%2Bc+d","size":3}}},
        {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"photos/x/y"}}}
    ]}"#;
    assert_eq!(event_keys(body).expect("an event"), ["photos/a/b+c d"]);
    let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#;
    assert!(event_keys(test_event).expect("a test event").is_empty());
}

#[test]
fn every_malformed_event_is_named() {
    let err = |body: &str| event_keys(body).expect_err("malformed").to_string();
    assert!(err("not json").starts_with("malformed photo event: not an S3 event notification:"));
    assert_eq!(
        err("{}"),
        "malformed photo event: an S3 event notification without Records"
    );
    assert!(
        err(r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#).contains("missing field `s3`")
    );
    let key = |k: &str| parse_photo_key(k).expect_err("bad key").to_string();
    assert_eq!(
        key("uploads/x"),
        "malformed photo event: object key \"uploads/x\" is not photos/<batch id>/<receipt id>"
    );
    assert!(key("photos/not-a-uuid/0f8fad5b-d9cb-469f-a165-70867728950e").contains("not photos/"));
    assert!(PhotoError::Malformed(String::new()).is_malformed());
}

#[test]
fn held_chunk_keys_round_trip() {
    let b = "0f8fad5b-d9cb-469f-a165-70867728950e";
    assert_eq!(
        parse_pending_key(&pending_key(b, 7)),
        Some((b.to_owned(), 7))
    );
    assert_eq!(parse_pending_key("pending/x/1.json"), None);
    assert_eq!(
        parse_photo_key(&object_key(b, b)).expect("a photo key"),
        (b.to_owned(), b.to_owned())
    );
}

#[test]
fn pixel_dimensions_come_from_the_header_and_are_bounded() {
    // 640 × 480 = 307,200 pixels: within 400,000, above 300,000.
    let png = png_of(640, 480, b"pixels");
    let ok = declared(&png, "image/png");
    assert_eq!(judge(&ok, &png, png.len() as u64, 1 << 20, 400_000).0, OK);
    let (v, detail) = judge(&ok, &png, png.len() as u64, 1 << 20, 300_000);
    assert_eq!(v, IMAGE_TOO_LARGE);
    assert_eq!(detail, "640 × 480 pixels, above the limit of 300000");
    // A PNG signature with no header after it is no PNG.
    let bare = b"\x89PNG\r\n\x1a\nno header".to_vec();
    let (v, detail) = judge(
        &declared(&bare, "image/png"),
        &bare,
        bare.len() as u64,
        1 << 20,
        1 << 20,
    );
    assert_eq!(v, IMAGE_TYPE, "{detail}");
    assert!(
        detail.starts_with("its image/png header gives no pixel dimensions"),
        "{detail}"
    );
    // Zero pixels wide.
    let empty = png_of(0, 480, b"");
    let (v, detail) = judge(
        &declared(&empty, "image/png"),
        &empty,
        empty.len() as u64,
        1 << 20,
        1 << 20,
    );
    assert_eq!(
        (v, detail.as_str()),
        (IMAGE_TYPE, "its image/png header gives 0 × 480 pixels")
    );
    // A JPEG: SOI, then a baseline frame header of 1600 high, 1200 wide.
    let jpeg =
        b"\xFF\xD8\xFF\xC0\x00\x11\x08\x06\x40\x04\xB0\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
            .to_vec();
    let (v, detail) = judge(
        &declared(&jpeg, "image/jpeg"),
        &jpeg,
        jpeg.len() as u64,
        1 << 20,
        1_000_000,
    );
    assert_eq!(
        (v, detail.as_str()),
        (
            IMAGE_TOO_LARGE,
            "1200 × 1600 pixels, above the limit of 1000000"
        )
    );
    // A PDF has no pixels to count.
    let pdf = b"%PDF-1.7 a receipt".to_vec();
    assert_eq!(
        judge(
            &declared(&pdf, "application/pdf"),
            &pdf,
            pdf.len() as u64,
            1 << 20,
            1
        )
        .0,
        OK
    );
}
