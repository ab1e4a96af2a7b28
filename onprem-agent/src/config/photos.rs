//! `[photos]`: the photos the bridge carries (issue 32). A receipt whose `image` has both a
//! `key` and a `content_type` was checked in the cloud and its photo waits in S3 at `key`; the
//! agent fetches it from `bucket`, checks its size and SHA-256 again, and stores it with the
//! receipt: in `receipt_photos` in the receipt's own transaction (`store = "database"`), or as a
//! content-addressed file under `directory`, written and fsynced before that transaction
//! commits (`store = "directory"`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::check_http_url;
use super::{TargetConfig, TargetKind, ThrottleConfig};

/// The token bucket of `throttle.photo_bytes_per_second` holds at least this much: the largest
/// photo the protocol accepts (20 MiB), so any one photo can pass.
pub const PHOTO_BURST_BYTES: u64 = sluice_protocol::receipt::MAX_PHOTO_BYTES;

/// `[photos]`, as written. `bucket` is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotosConfig {
    /// Where fetched photos are kept.
    #[serde(default)]
    pub store: PhotoStore,
    /// For `store = "directory"`: an absolute path; files are
    /// `<directory>/<sha256[0..2]>/<sha256>`.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// The S3 bucket the cloud put the photos in (objects `photos/{batch_id}/{receipt_id}`).
    pub bucket: String,
    /// AWS region of the bucket; when absent, the standard AWS chain decides.
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible endpoint (a local S3-API server, a VPC endpoint); requests then use
    /// path-style addressing.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Photos fetched at once, per batch being written.
    #[serde(default = "default_max_concurrent_fetches")]
    pub max_concurrent_fetches: u32,
}

const fn default_max_concurrent_fetches() -> u32 {
    4
}

/// `photos.store`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhotoStore {
    /// `receipt_photos` (bytea), in the same transaction as the receipt.
    #[default]
    Database,
    /// Content-addressed files under `photos.directory`, durable before the commit.
    Directory,
}

/// The checks of `[photos]` and of the keys of other sections that depend on it.
pub(super) fn check(
    photos: Option<&PhotosConfig>,
    throttle: Option<&ThrottleConfig>,
    target: Option<&TargetConfig>,
    p: &mut Vec<String>,
) {
    if let Some(t) = throttle {
        match (t.photo_bytes_per_second, photos) {
            (Some(0), _) => {
                p.push("throttle.photo_bytes_per_second: must be at least 1 (or unset)".to_owned())
            }
            (Some(_), None) => p.push(
                "throttle.photo_bytes_per_second: only with a [photos] section (no photo is \
                 fetched without one)"
                    .to_owned(),
            ),
            _ => {}
        }
    }
    let Some(ph) = photos else {
        return;
    };
    if !valid_bucket(&ph.bucket) {
        p.push(format!(
            "photos.bucket: {:?} is not an S3 bucket name (3-63 of [a-z0-9.-], starting and \
             ending with a letter or digit)",
            ph.bucket
        ));
    }
    if let Some(ep) = &ph.endpoint {
        check_http_url(p, "photos.endpoint", ep);
    }
    if let Some(r) = &ph.region {
        if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            p.push(format!("photos.region: {r:?} is not an AWS region name"));
        }
    }
    if !(1..=64).contains(&ph.max_concurrent_fetches) {
        p.push(format!(
            "photos.max_concurrent_fetches: {} is out of range 1..=64",
            ph.max_concurrent_fetches
        ));
    }
    match (ph.store, &ph.directory) {
        (PhotoStore::Directory, None) => p.push(
            "photos.directory: required for photos.store = \"directory\", like \
             \"/var/lib/sluice/photos\""
                .to_owned(),
        ),
        (PhotoStore::Directory, Some(d)) if !d.is_absolute() => p.push(format!(
            "photos.directory: {:?} must be an absolute path",
            d.display().to_string()
        )),
        (PhotoStore::Database, Some(_)) => p.push(
            "photos.directory: only for photos.store = \"directory\" (the store is \
             \"database\", the receipt_photos table)"
                .to_owned(),
        ),
        _ => {}
    }
    if ph.store == PhotoStore::Database && target.is_some_and(|t| t.kind == TargetKind::Procedure) {
        p.push(
            "photos.store: \"database\" needs Sluice's own tables; with target.kind = \
             \"procedure\" set photos.store = \"directory\" (the procedure gets the receipts, \
             the photos are files named by their sha256)"
                .to_owned(),
        );
    }
}

/// An S3 bucket name as AWS accepts it for new buckets (the common subset).
fn valid_bucket(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;

    use super::*;

    const BASE: &str = r#"
[queue]
url = "http://127.0.0.1:5000/123456789012/q"
[database]
url = "postgres://postgres@127.0.0.1:5432/db"
"#;

    fn load(extra: &str) -> Result<AgentConfig, Vec<String>> {
        AgentConfig::from_toml_with_env(&format!("{BASE}{extra}"), Vec::new())
            .map_err(|e| e.problems)
    }

    #[test]
    fn without_a_photos_section_no_photo_is_fetched() {
        let c = load("").expect("valid");
        assert_eq!(c.photos, None);
        assert_eq!(c.throttle.photo_bytes_per_second, None);
    }

    #[test]
    fn a_photos_section_has_documented_defaults() {
        let c = load("[photos]\nbucket = \"sluice-photos\"").expect("valid");
        let ph = c.photos.expect("photos");
        assert_eq!(ph.store, PhotoStore::Database);
        assert_eq!(ph.max_concurrent_fetches, 4);
        assert_eq!(ph.directory, None);
        assert_eq!(ph.endpoint, None);
    }

    #[test]
    fn a_directory_store_and_a_byte_rate_are_read() {
        let c = load(
            "[photos]\nbucket = \"b-1.x\"\nstore = \"directory\"\ndirectory = \"/var/lib/sluice/photos\"\n\
             endpoint = \"http://127.0.0.1:5000\"\nmax_concurrent_fetches = 8\n\
             [throttle]\nphoto_bytes_per_second = 1048576",
        )
        .expect("valid");
        let ph = c.photos.expect("photos");
        assert_eq!(ph.store, PhotoStore::Directory);
        assert_eq!(
            ph.directory.as_deref(),
            Some(std::path::Path::new("/var/lib/sluice/photos"))
        );
        assert_eq!(ph.max_concurrent_fetches, 8);
        assert_eq!(c.throttle.photo_bytes_per_second, Some(1_048_576));
    }

    #[test]
    fn a_procedure_target_takes_a_directory_store() {
        load(
            "[target]\nkind = \"procedure\"\nprocedure = \"expenses.ingest_receipts\"\n\
             [photos]\nbucket = \"b12\"\nstore = \"directory\"\ndirectory = \"/srv/photos\"",
        )
        .expect("valid");
    }

    #[test]
    fn each_bad_photos_key_says_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("[photos]\nstore = \"database\"", "photos: missing field `bucket`"),
            (
                "[photos]\nbucket = \"Bad_Bucket\"",
                "photos.bucket: \"Bad_Bucket\" is not an S3 bucket name",
            ),
            (
                "[photos]\nbucket = \"b12\"\nstore = \"s3\"",
                "photos.store: unknown variant `s3`, expected `database` or `directory`",
            ),
            (
                "[photos]\nbucket = \"b12\"\nstore = \"directory\"",
                "photos.directory: required for photos.store = \"directory\"",
            ),
            (
                "[photos]\nbucket = \"b12\"\nstore = \"directory\"\ndirectory = \"photos\"",
                "photos.directory: \"photos\" must be an absolute path",
            ),
            (
                "[photos]\nbucket = \"b12\"\ndirectory = \"/srv/photos\"",
                "photos.directory: only for photos.store = \"directory\"",
            ),
            (
                "[photos]\nbucket = \"b12\"\nendpoint = \"localhost:5000\"",
                "photos.endpoint: \"localhost:5000\" is not an http(s) URL",
            ),
            (
                "[photos]\nbucket = \"b12\"\nregion = \"eu west\"",
                "photos.region: \"eu west\" is not an AWS region name",
            ),
            (
                "[photos]\nbucket = \"b12\"\nmax_concurrent_fetches = 0",
                "photos.max_concurrent_fetches: 0 is out of range 1..=64",
            ),
            (
                "[photos]\nbucket = \"b12\"\nmax_concurrent_fetches = 65",
                "photos.max_concurrent_fetches: 65 is out of range 1..=64",
            ),
            (
                "[photos]\nbucket = \"b12\"\nfetches = 3",
                "photos.fetches: unknown field `fetches`",
            ),
            (
                "[photos]\nbucket = \"b12\"\n[throttle]\nphoto_bytes_per_second = 0",
                "throttle.photo_bytes_per_second: must be at least 1 (or unset)",
            ),
            (
                "[throttle]\nphoto_bytes_per_second = 1000",
                "throttle.photo_bytes_per_second: only with a [photos] section",
            ),
            (
                "[target]\nkind = \"procedure\"\nprocedure = \"expenses.ingest_receipts\"\n\
                 [photos]\nbucket = \"b12\"",
                "photos.store: \"database\" needs Sluice's own tables; with target.kind = \"procedure\" set photos.store = \"directory\"",
            ),
        ];
        for (toml, want) in cases {
            let got = load(toml).expect_err(toml);
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "{toml}: want {want:?}, got {got:?}"
            );
        }
    }
}
