//! Tests of the photo lookup, the first look and the declared line.

use super::*;
use serde_json::{json, Value};

const ID: &str = "00000000-0000-4000-8000-000000000001";

fn jpeg(len: usize) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0];
    b.resize(len, 7);
    b
}

/// A fresh directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let d = std::env::temp_dir().join(format!("sluice-photos-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }
    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("parent");
        }
        std::fs::write(&p, data).expect("write");
        p
    }
    fn photos(&self) -> PhotoDir {
        PhotoDir {
            dir: self.0.clone(),
            max_bytes: 1000,
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn line(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn found(l: Lookup) -> (BTreeMap<String, Box<RawValue>>, String, Inspected) {
    match l {
        Lookup::Photo {
            fields,
            receipt_id,
            file,
        } => (fields, receipt_id, file),
        other => panic!("no photo: {other:?}"),
    }
}

#[test]
fn a_receipt_finds_its_file_by_id_and_its_type_by_its_bytes() {
    let d = Dir::new();
    // Named .png, but the bytes are a JPEG: the bytes win, as in the cloud's check.
    let path = d.write(&format!("{ID}.png"), &jpeg(100));
    let upper = ID.to_ascii_uppercase();
    let (_, id, file) = found(
        d.photos()
            .lookup(&line(json!({"receipt_id": upper, "total": "1.00"})))
            .expect("found"),
    );
    assert_eq!(id, ID, "lowercase, as the API answers");
    assert_eq!(
        file,
        Inspected {
            path,
            bytes: 100,
            content_type: "image/jpeg"
        }
    );
}

#[test]
fn an_upper_case_extension_is_found_and_two_files_are_refused() {
    let d = Dir::new();
    d.write(&format!("{ID}.JPG"), &jpeg(10));
    let l = line(json!({"receipt_id": ID}));
    assert!(matches!(d.photos().lookup(&l), Ok(Lookup::Photo { .. })));
    d.write(&format!("{ID}.pdf"), b"%PDF-1.7 and more");
    let err = d.photos().lookup(&l).expect_err("ambiguous");
    assert!(
        err.starts_with(&format!("several photos for receipt {ID}: ")),
        "{err}"
    );
    assert!(err.ends_with("name one in a `photo` field"), "{err}");
}

#[test]
fn without_a_file_or_with_its_own_image_a_line_is_untouched() {
    let d = Dir::new();
    let missing = d.photos().lookup(&line(json!({"receipt_id": ID})));
    assert!(matches!(missing, Ok(Lookup::Untouched { missing: true })));
    d.write(&format!("{ID}.jpg"), &jpeg(10));
    let own =
        line(json!({"receipt_id": ID, "image": {"key": "a/b.jpg", "sha256": "ab", "bytes": 1}}));
    assert!(matches!(
        d.photos().lookup(&own),
        Ok(Lookup::Untouched { missing: false })
    ));
    // Not an object, or no valid id: the API names the problem.
    for l in [b"{not json".to_vec(), line(json!({"receipt_id": "x"}))] {
        assert!(matches!(
            d.photos().lookup(&l),
            Ok(Lookup::Untouched { missing: false })
        ));
    }
}

#[test]
fn the_photo_field_names_a_file_inside_the_directory() {
    let d = Dir::new();
    let path = d.write("scans/a.webp", b"RIFF\0\0\0\0WEBPVP8 xx");
    let (fields, _, file) = found(
        d.photos()
            .lookup(&line(json!({"receipt_id": ID, "photo": "scans/a.webp"})))
            .expect("found"),
    );
    assert!(!fields.contains_key(PHOTO_FIELD), "the field is not sent");
    assert_eq!((file.path, file.content_type), (path, "image/webp"));

    let refused = |v: Value| d.photos().lookup(&line(v)).expect_err("refused");
    assert_eq!(
        refused(json!({"receipt_id": ID, "photo": "../x.jpg"})),
        "`photo` \"../x.jpg\" must be a path inside the photo directory (relative, without ..)"
    );
    assert_eq!(
        refused(json!({"receipt_id": ID, "photo": "/etc/passwd"})),
        "`photo` \"/etc/passwd\" must be a path inside the photo directory (relative, without ..)"
    );
    assert_eq!(
        refused(json!({"receipt_id": ID, "photo": 7})),
        "`photo` must be a string: a file name relative to the photo directory, not 7"
    );
    assert_eq!(
        refused(json!({"receipt_id": ID, "photo": "a.jpg", "image": {}})),
        "has both `photo` and `image`: give the photo one way"
    );
    assert_eq!(
        refused(json!({"receipt_id": ID, "photo": "gone.jpg"})),
        format!("{}: no such file", d.0.join("gone.jpg").display())
    );
}

#[test]
fn bad_files_are_refused_in_words() {
    let d = Dir::new();
    let gif = d.write("a.gif", b"GIF89a\x01\x00");
    assert_eq!(
        inspect(&gif, 1000).expect_err("refused"),
        format!(
            "{}: not a JPEG, PNG, WebP, HEIC or PDF file (it starts with 47 49 46 38 39 61 01 00)",
            gif.display()
        )
    );
    let big = d.write("big.jpg", &jpeg(1001));
    assert_eq!(
        inspect(&big, 1000).expect_err("refused"),
        format!(
            "{}: 1001 bytes, over the photo limit of 1000 bytes (0 MiB)",
            big.display()
        )
    );
    let empty = d.write("e.jpg", b"");
    assert_eq!(
        inspect(&empty, 1000).expect_err("refused"),
        format!("{}: the file is empty", empty.display())
    );
    assert!(inspect(&d.0, 1000)
        .expect_err("a directory")
        .ends_with(": not a file"));
}

#[test]
fn every_type_the_client_sniffs_is_one_the_api_takes() {
    for head in [
        &[0xFF, 0xD8, 0xFF, 0xE0][..],
        b"\x89PNG\r\n\x1a\n",
        b"RIFF\0\0\0\0WEBPVP8 ",
        b"\0\0\0\x18ftypheic",
        b"%PDF-1.7",
    ] {
        let t = crate::photos::sniff(head).expect("a photo type");
        assert!(
            sluice_protocol::receipt::PHOTO_CONTENT_TYPES.contains(&t),
            "{t}"
        );
    }
}

#[test]
fn the_declared_line_keeps_the_other_fields_text() {
    let d = Dir::new();
    let data = jpeg(300);
    d.write(&format!("{ID}.jpeg"), &data);
    // A metadata number f64 would change is kept as written.
    let text = format!(
        r#"{{"receipt_id":"{ID}","total":"1.50","metadata":{{"n":12345678901234567890123}}}}"#
    );
    let (fields, _, file) = found(d.photos().lookup(text.as_bytes()).expect("found"));
    let sha = digest(&file.path, file.bytes).expect("read");
    assert_eq!(sha, format!("{:x}", Sha256::digest(&data)));
    let out = String::from_utf8(declare(fields, &sha, &file)).expect("utf-8");
    assert!(
        out.contains(r#""metadata":{"n":12345678901234567890123}"#),
        "{out}"
    );
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v["image"],
        json!({"sha256": sha, "bytes": 300, "content_type": "image/jpeg"})
    );
    assert!(digest(&file.path, 299)
        .expect_err("changed")
        .ends_with("changed while the upload read it (299 bytes, then 300)"));
}

#[test]
fn the_first_look_lists_every_problem_by_line_and_counts_receipts_without_a_file() {
    let d = Dir::new();
    d.write(&format!("{ID}.jpg"), &jpeg(10));
    d.write("x.gif", b"GIF89a");
    let other = "00000000-0000-4000-8000-000000000002";
    let text = format!(
        "{}\n\n{}\n{}\n",
        json!({"receipt_id": ID}),
        json!({"receipt_id": other}),
        json!({"receipt_id": "00000000-0000-4000-8000-000000000003", "photo": "x.gif"}),
    );
    let plan = plan(text.as_bytes(), &d.photos(), false).expect("read");
    assert_eq!((plan.photos, plan.bytes), (1, 10));
    assert_eq!((plan.missing, plan.missing_lines.clone()), (1, vec![3]));
    assert_eq!(plan.total_errors, 1);
    assert!(
        plan.errors[0].starts_with("line 4: ") && plan.errors[0].contains("not a JPEG"),
        "{:?}",
        plan.errors
    );
    let strict = super::plan(text.as_bytes(), &d.photos(), true).expect("read");
    assert_eq!(strict.total_errors, 2);
    assert_eq!(
        strict.errors[0],
        format!(
            "line 3: no photo for this receipt in {} (--require-photos)",
            d.0.display()
        )
    );
}
