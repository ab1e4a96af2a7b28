//! `upload --photos DIR`: which file is each receipt's photo, and what the receipt declares.
//!
//! A line's photo is the file its `photo` field names (a path relative to `DIR`; the field is
//! removed before the line is sent), else the one file `DIR/<receipt_id>.<ext>` (`jpg`, `jpeg`,
//! `png`, `webp`, `heic`, `pdf`, lower or upper case). A line that already has an `image` is
//! sent as it is, and a receipt without a file is sent without a photo (or refused with
//! `--require-photos`). The content type is read from the file's first bytes with the cloud's
//! own check ([`crate::photos::sniff`]), never from its name, so the client declares what the
//! cloud will find.
//!
//! Each file is looked at twice: once before anything is sent (it exists, is not empty, not
//! over the limit, of a known type: every problem of the whole file named by line at once),
//! then again as its request is built, read through to its SHA-256. The rewritten line keeps
//! every other field's text as it was (numbers in `metadata` are not re-encoded).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

/// The optional field of an NDJSON line naming its photo, relative to `DIR`.
pub const PHOTO_FIELD: &str = "photo";
/// The extensions looked for beside a receipt id.
pub const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "heic", "pdf"];
/// Bytes read at a time while hashing.
const READ_STEP: usize = 64 * 1024;

/// A photo found and read through: what the line declares and where the bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPhoto {
    /// 1-based line of the NDJSON file.
    pub line: usize,
    /// Lowercase, as the API names it in its answer.
    pub receipt_id: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// 64 lowercase hex digits.
    pub sha256: String,
    pub content_type: &'static str,
}

/// A file that may be sent: its size and the type its first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub path: PathBuf,
    pub bytes: u64,
    pub content_type: &'static str,
}

/// What one line asks for.
#[derive(Debug)]
pub enum Lookup {
    /// Sent as it is: no photo asked for nor found (`missing`: a receipt id without a file).
    Untouched { missing: bool },
    /// The line's photo; `fields` is the line without its `photo` field.
    Photo {
        fields: BTreeMap<String, Box<RawValue>>,
        receipt_id: String,
        file: Inspected,
    },
}

/// The photo directory and the limit.
#[derive(Debug, Clone)]
pub struct PhotoDir {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl PhotoDir {
    /// The photo of one NDJSON line, checked but not read through; `Err` is the reason the
    /// line cannot be sent, in words for the user. A line that is not a JSON object is left to
    /// the API, which names its problem.
    pub fn lookup(&self, line: &[u8]) -> Result<Lookup, String> {
        let Ok(mut fields) = serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(line) else {
            return Ok(Lookup::Untouched { missing: false });
        };
        let receipt_id = fields
            .get("receipt_id")
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .unwrap_or_default();
        let named = match fields.remove(PHOTO_FIELD) {
            None => None,
            Some(v) => Some(serde_json::from_str::<String>(v.get()).map_err(|_| {
                format!("`{PHOTO_FIELD}` must be a string: a file name relative to the photo directory, not {}", v.get())
            })?),
        };
        let has_image = fields.contains_key("image");
        let path = match (named, has_image) {
            (Some(_), true) => {
                return Err(format!(
                    "has both `{PHOTO_FIELD}` and `image`: give the photo one way"
                ))
            }
            (None, true) => return Ok(Lookup::Untouched { missing: false }),
            (Some(name), false) => self.named(&name)?,
            (None, false) => {
                if uuid::Uuid::parse_str(&receipt_id).is_err() {
                    // The API refuses the line; nothing to look up.
                    return Ok(Lookup::Untouched { missing: false });
                }
                match self.by_id(&receipt_id)? {
                    Some(path) => path,
                    None => return Ok(Lookup::Untouched { missing: true }),
                }
            }
        };
        let file = inspect(&path, self.max_bytes)?;
        Ok(Lookup::Photo {
            fields,
            receipt_id: receipt_id.to_ascii_lowercase(),
            file,
        })
    }

    /// `DIR/name`, refused when `name` would leave `DIR` or there is no such file.
    fn named(&self, name: &str) -> Result<PathBuf, String> {
        let rel = Path::new(name);
        if name.is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "`{PHOTO_FIELD}` {name:?} must be a path inside the photo directory (relative, without ..)"
            ));
        }
        let path = self.dir.join(rel);
        match std::fs::metadata(&path) {
            Ok(_) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{}: no such file", path.display()))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The one file `DIR/<id>.<ext>`, if any; several are refused (which one is meant?).
    fn by_id(&self, receipt_id: &str) -> Result<Option<PathBuf>, String> {
        use std::os::unix::fs::MetadataExt as _;
        let mut found: Vec<(PathBuf, (u64, u64))> = Vec::new();
        let mut ids = vec![receipt_id.to_owned()];
        if receipt_id.to_ascii_lowercase() != receipt_id {
            ids.push(receipt_id.to_ascii_lowercase());
        }
        for id in &ids {
            for ext in EXTENSIONS {
                for ext in [ext.to_string(), ext.to_ascii_uppercase()] {
                    let path = self.dir.join(format!("{id}.{ext}"));
                    if let Ok(m) = std::fs::metadata(&path) {
                        // A case-insensitive file system finds one file under both names.
                        if !found.iter().any(|(_, at)| *at == (m.dev(), m.ino())) {
                            found.push((path, (m.dev(), m.ino())));
                        }
                    }
                }
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop().map(|(p, _)| p)),
            _ => Err(format!(
                "several photos for receipt {receipt_id}: {}; name one in a `{PHOTO_FIELD}` field",
                found
                    .iter()
                    .map(|(p, _)| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The file's size and type, refused when it cannot be a receipt photo.
pub fn inspect(path: &Path, max_bytes: u64) -> Result<Inspected, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a file"));
    }
    let bytes = meta.len();
    if bytes == 0 {
        return Err(format!("{shown}: the file is empty"));
    }
    if bytes > max_bytes {
        return Err(format!(
            "{shown}: {bytes} bytes, over the photo limit of {max_bytes} bytes ({:.0} MiB)",
            max_bytes as f64 / (1024.0 * 1024.0)
        ));
    }
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    }
    let content_type = crate::photos::sniff(&head[..n]).ok_or_else(|| {
        format!(
            "{shown}: not a JPEG, PNG, WebP, HEIC or PDF file (it starts with {})",
            head[..n.min(8)]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    })?;
    Ok(Inspected {
        path: path.to_owned(),
        bytes,
        content_type,
    })
}

/// Reads the file through: its SHA-256 (hex), refused if its size is no longer `bytes`.
pub fn digest(path: &Path, bytes: u64) -> Result<String, String> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_STEP];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("{shown}: {e}"))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        hasher.update(&buf[..n]);
    }
    if read != bytes {
        return Err(format!(
            "{shown}: changed while the upload read it ({bytes} bytes, then {read})"
        ));
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The line as sent: `fields` (without `photo`) and the declared `image`.
pub fn declare(
    mut fields: BTreeMap<String, Box<RawValue>>,
    sha256: &str,
    file: &Inspected,
) -> Vec<u8> {
    let image = serde_json::json!({
        "sha256": sha256,
        "bytes": file.bytes,
        "content_type": file.content_type,
    });
    if let Ok(raw) = serde_json::value::to_raw_value(&image) {
        fields.insert("image".to_owned(), raw);
    }
    serde_json::to_vec(&fields).unwrap_or_default()
}

/// What the first look at a whole file found.
#[derive(Debug, Default, Clone)]
pub struct PhotoPlan {
    /// Lines with a photo to send, and their bytes.
    pub photos: usize,
    pub bytes: u64,
    /// Receipts without a file.
    pub missing: usize,
    /// Their first lines.
    pub missing_lines: Vec<usize>,
    /// `line N: reason`, the first [`MAX_LISTED`].
    pub errors: Vec<String>,
    pub total_errors: usize,
}

/// Problems listed by the first look (the rest are counted).
pub const MAX_LISTED: usize = 100;

/// The first look at every line of `reader` (blank lines skipped, as the parts skip them).
pub fn plan(
    reader: impl std::io::BufRead,
    dir: &PhotoDir,
    require: bool,
) -> std::io::Result<PhotoPlan> {
    let mut plan = PhotoPlan::default();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let problem = match dir.lookup(&line) {
            Ok(Lookup::Photo { file, .. }) => {
                plan.photos += 1;
                plan.bytes += file.bytes;
                None
            }
            Ok(Lookup::Untouched { missing: true }) if require => Some(format!(
                "no photo for this receipt in {} (--require-photos)",
                dir.dir.display()
            )),
            Ok(Lookup::Untouched { missing: true }) => {
                plan.missing += 1;
                if plan.missing_lines.len() < 10 {
                    plan.missing_lines.push(n + 1);
                }
                None
            }
            Ok(Lookup::Untouched { missing: false }) => None,
            Err(why) => Some(why),
        };
        if let Some(why) = problem {
            plan.total_errors += 1;
            if plan.errors.len() < MAX_LISTED {
                plan.errors.push(format!("line {}: {why}", n + 1));
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
