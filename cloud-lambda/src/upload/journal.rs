//! The resume journal of `upload --photos`: one line per photo stored (S3 answered 2xx to its
//! PUT), appended and handed to the OS right after, before the next is counted done.
//!
//! A line is `<batch_id> <receipt_id> <sha256> <api>`. A re-run of the same command sends the
//! same requests (same `Idempotency-Key`, so the same batches, with fresh URLs) and skips every
//! photo whose batch, receipt, SHA-256 and API are in the journal: a changed file (another
//! SHA-256, so another request body and batch) or another API is uploaded again. A crash can
//! leave a torn last line: it is ignored (that photo is uploaded again, harmlessly: the object
//! is overwritten with the same bytes, and the cloud keeps its first verdict) and the next
//! line starts on a line of its own. Lines that are not records are ignored too.
//!
//! In memory each record is a 128-bit digest, so a million photos cost about 32 MB.
//! The journal survives the process being killed; it is not fsync'ed, so a machine crash may
//! lose its last records (their photos are then uploaded again).

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

/// The default journal's name inside the photo directory.
pub const DEFAULT_NAME: &str = ".sluice-upload.journal";

/// One photo stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub batch_id: String,
    pub receipt_id: String,
    pub sha256: String,
    pub api: String,
}

impl Entry {
    fn key(&self) -> [u8; 16] {
        key(&self.batch_id, &self.receipt_id, &self.sha256, &self.api)
    }
}

fn key(batch_id: &str, receipt_id: &str, sha256: &str, api: &str) -> [u8; 16] {
    let digest = Sha256::digest(format!("{batch_id}\n{receipt_id}\n{sha256}\n{api}"));
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

/// What a journal's text holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    /// Complete lines that are not records.
    pub ignored: usize,
    /// The text ends inside a line (a write cut short): that line is ignored.
    pub torn: bool,
}

/// Reads a journal's text.
pub fn parse(text: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    // After the last newline: empty, or a torn line.
    if let Some(last) = lines.pop() {
        parsed.torn = !last.is_empty();
    }
    for line in lines {
        match parse_line(line) {
            Some(e) => parsed.entries.push(e),
            None if line.iter().all(u8::is_ascii_whitespace) => {}
            None => parsed.ignored += 1,
        }
    }
    parsed
}

fn parse_line(line: &[u8]) -> Option<Entry> {
    let text = std::str::from_utf8(line).ok()?;
    let mut f = text.split_ascii_whitespace();
    let (batch_id, receipt_id, sha256, api) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some()
        || uuid::Uuid::parse_str(batch_id).is_err()
        || uuid::Uuid::parse_str(receipt_id).is_err()
        || sha256.len() != 64
        || !sha256.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some(Entry {
        batch_id: batch_id.to_owned(),
        receipt_id: receipt_id.to_owned(),
        sha256: sha256.to_owned(),
        api: api.to_owned(),
    })
}

/// The journal of one run: what earlier runs stored, and the file to append to.
#[derive(Debug)]
pub struct Journal {
    pub path: PathBuf,
    done: Mutex<HashSet<[u8; 16]>>,
    file: Mutex<std::fs::File>,
    /// Records read at the start.
    pub loaded: usize,
    /// Whether the last line was torn.
    pub torn: bool,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and reads it.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let parsed = parse(&text);
        if parsed.torn {
            // The next record must not continue the torn one.
            file.write_all(b"\n")?;
        }
        Ok(Journal {
            path: path.to_owned(),
            loaded: parsed.entries.len(),
            done: Mutex::new(parsed.entries.iter().map(Entry::key).collect()),
            file: Mutex::new(file),
            torn: parsed.torn,
        })
    }

    /// Whether the photo is recorded as stored.
    pub fn contains(&self, batch_id: &str, receipt_id: &str, sha256: &str, api: &str) -> bool {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key(batch_id, receipt_id, sha256, api))
    }

    /// Records a photo stored: one `write` of the whole line (the file is unbuffered).
    pub fn record(&self, entry: &Entry) -> std::io::Result<()> {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.key());
        let line = format!(
            "{} {} {} {}\n",
            entry.batch_id, entry.receipt_id, entry.sha256, entry.api
        );
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())?;
        file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "5f1ce8a2-7d3b-4c41-9e0f-2b6a8d4c1e73";
    const R: &str = "00000000-0000-4000-8000-000000000001";

    fn sha() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn records_are_read_back_and_a_torn_last_line_is_ignored() {
        let text = format!(
            "{B} {R} {} http://api\nnot a record\n\n{B} 00000000-0000-4000-8000-0000000",
            sha()
        );
        let parsed = parse(text.as_bytes());
        assert_eq!(
            parsed.entries,
            [Entry {
                batch_id: B.to_owned(),
                receipt_id: R.to_owned(),
                sha256: sha(),
                api: "http://api".to_owned()
            }]
        );
        assert_eq!(parsed.ignored, 1);
        assert!(parsed.torn);
        assert!(!parse(b"").torn);
        assert!(!parse(format!("{B} {R} {} x\n", sha()).as_bytes()).torn);
    }

    #[test]
    fn a_line_with_a_bad_field_is_not_a_record() {
        for line in [
            format!("{B} {R} {} x extra\n", sha()),
            format!("{B} {R} {}\n", sha()),
            format!("nope {R} {} x\n", sha()),
            format!("{B} {R} {} x\n", "zz".repeat(32)),
            format!("{B} {R} {} x\n", "ab".repeat(31)),
        ] {
            let parsed = parse(line.as_bytes());
            assert!(parsed.entries.is_empty(), "{line}");
            assert_eq!(parsed.ignored, 1, "{line}");
        }
    }

    #[test]
    fn a_journal_resumes_after_a_torn_line_and_keys_every_field() {
        let dir = std::env::temp_dir().join(format!("sluice-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(DEFAULT_NAME);
        std::fs::write(&path, format!("{B} {R} {} http://a\n{B} 0000", sha())).expect("write");
        let journal = Journal::open(&path).expect("open");
        assert_eq!((journal.loaded, journal.torn), (1, true));
        assert!(journal.contains(B, R, &sha(), "http://a"));
        assert!(!journal.contains(B, R, &sha(), "http://b"), "another API");
        assert!(
            !journal.contains(B, R, &"cd".repeat(32), "http://a"),
            "another file"
        );
        let other = "00000000-0000-4000-8000-000000000002";
        journal
            .record(&Entry {
                batch_id: B.to_owned(),
                receipt_id: other.to_owned(),
                sha256: sha(),
                api: "http://a".to_owned(),
            })
            .expect("recorded");
        drop(journal);
        let again = Journal::open(&path).expect("reopen");
        assert_eq!((again.loaded, again.torn), (2, false));
        assert!(again.contains(B, other, &sha(), "http://a"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
