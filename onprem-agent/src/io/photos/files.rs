//! `[photos] store = "directory"`: each photo a file named by its SHA-256,
//! `<directory>/<sha256[0..2]>/<sha256>`. A photo is fetched into a temporary name in its
//! directory ([`incoming`]), checked, then ([`keep`]) fsynced, renamed into place and the
//! directory fsynced, all before the receipt's transaction commits: a crash leaves no receipt
//! without its photo, at worst a file without a receipt (harmless; the same photo again finds
//! it in place). The same bytes have the same name, so a redelivery or two receipts with one
//! photo write nothing twice.

use std::path::{Path, PathBuf};

/// Where the photo with `sha256` (64 lowercase hex digits) is kept under `dir`.
pub fn path_of(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(&sha256[..2.min(sha256.len())]).join(sha256)
}

/// Whether the photo with `sha256` is already kept under `dir`.
pub fn exists(dir: &Path, sha256: &str) -> bool {
    path_of(dir, sha256).is_file()
}

/// A new temporary name beside where the photo `sha256` goes under `dir`, for its fetch; its
/// subdirectory is created (durably) if missing. Blocking: run it on a blocking thread.
pub fn incoming(dir: &Path, sha256: &str) -> std::io::Result<PathBuf> {
    let path = path_of(dir, sha256);
    let parent = path.parent().unwrap_or(dir);
    if !parent.is_dir() {
        std::fs::create_dir_all(parent)?;
        // The new subdirectory's own entry is durable once its parent is synced.
        sync_dir(dir)?;
    }
    Ok(parent.join(format!(
        ".{sha256}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )))
}

/// Makes `tmp` (from [`incoming`], its bytes checked to be the photo `sha256`) the photo
/// `sha256` under `dir`, durably (see the module). A file already there is left as it is
/// (same name, same bytes) and `tmp` removed. Blocking: run it on a blocking thread.
pub fn keep(dir: &Path, sha256: &str, tmp: &Path) -> std::io::Result<()> {
    let path = path_of(dir, sha256);
    let result = (|| {
        if path.is_file() {
            return std::fs::remove_file(tmp);
        }
        std::fs::File::open(tmp)?.sync_all()?;
        std::fs::rename(tmp, &path)?;
        sync_dir(path.parent().unwrap_or(dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, sha: &str, data: &[u8]) {
        let tmp = incoming(dir, sha).expect("incoming");
        std::fs::write(&tmp, data).expect("fetched");
        keep(dir, sha, &tmp).expect("kept");
        assert!(!tmp.exists());
    }

    #[test]
    fn a_photo_lands_under_its_hash_prefix_and_is_written_once() {
        let dir = std::env::temp_dir().join(format!("sluice-files-{}", uuid::Uuid::new_v4()));
        let sha = "ab".repeat(32);
        write(&dir, &sha, b"photo");
        assert_eq!(
            std::fs::read(dir.join("ab").join(&sha)).expect("read"),
            b"photo"
        );
        assert!(exists(&dir, &sha));
        // Same name, same bytes: the second fetch leaves the first in place, and no
        // temporary file behind.
        write(&dir, &sha, b"photo");
        let names: Vec<_> = std::fs::read_dir(dir.join("ab"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
