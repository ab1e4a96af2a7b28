//! `[photos] store = "directory"`: each photo a file named by its SHA-256,
//! `<directory>/<sha256[0..2]>/<sha256>`. A file is written to a temporary name in its
//! directory, fsynced, renamed into place and the directory fsynced, all before the receipt's
//! transaction commits: a crash leaves no receipt without its photo, at worst a file without a
//! receipt (harmless; the same photo again finds it in place). The same bytes have the same
//! name, so a redelivery or two receipts with one photo write nothing twice.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where the photo with `sha256` (64 lowercase hex digits) is kept under `dir`.
pub fn path_of(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(&sha256[..2.min(sha256.len())]).join(sha256)
}

/// Whether the photo with `sha256` is already kept under `dir`.
pub fn exists(dir: &Path, sha256: &str) -> bool {
    path_of(dir, sha256).is_file()
}

/// Writes `data` as the photo `sha256` under `dir`, durably (see the module). Blocking: run it
/// on a blocking thread. A file already there is left as it is (same name, same bytes).
pub fn write_durable(dir: &Path, sha256: &str, data: &[u8]) -> std::io::Result<()> {
    let path = path_of(dir, sha256);
    if path.is_file() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(dir);
    let created = !parent.is_dir();
    std::fs::create_dir_all(parent)?;
    if created {
        // The new subdirectory's own entry is durable once its parent is synced.
        sync_dir(dir)?;
    }
    let tmp = parent.join(format!(
        ".{sha256}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_lands_under_its_hash_prefix_and_is_written_once() {
        let dir = std::env::temp_dir().join(format!("sluice-files-{}", uuid::Uuid::new_v4()));
        let sha = "ab".repeat(32);
        write_durable(&dir, &sha, b"photo").expect("written");
        assert_eq!(
            std::fs::read(dir.join("ab").join(&sha)).expect("read"),
            b"photo"
        );
        assert!(exists(&dir, &sha));
        // Same name, same bytes: the second write leaves the first in place.
        write_durable(&dir, &sha, b"photo").expect("again");
        let names: Vec<_> = std::fs::read_dir(dir.join("ab"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
