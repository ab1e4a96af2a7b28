//! The agent's folders form floors, and code only imports downward:
//!
//! ```text
//! agent, cli          wiring and the operator's commands
//! ops                 what operators and systemd see
//! pipeline            receive → batch → write → settle
//! throttle            the rate, the controller, the transaction cap
//! io                  the adapters: SQS and PostgreSQL
//! config, telemetry   what the operator wrote; metric names and logging
//! ```
//!
//! A module may use its own floor and the floors below it, never one above: that keeps the
//! layers free of import loops, so each can be read (and tested) without the ones above it.
//! This test reads the sources and names every upward reference.

use std::path::{Path, PathBuf};

/// Each folder (or top-level file) of `src/` and its floor, the lowest first.
const FLOORS: &[(&str, u8)] = &[
    ("config", 0),
    ("telemetry", 0),
    ("io", 1),
    ("throttle", 2),
    ("pipeline", 3),
    ("ops", 4),
    ("cli", 5),
    ("agent", 5),
    ("lib", 6),
    ("main", 6),
];

fn floor(name: &str) -> Option<u8> {
    FLOORS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifier `s` starts with (after any white space).
fn first_word(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The folders a line names as `crate::X` or `crate::{X, Y::…}` (its code, not its comments).
fn referenced(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    let mut names = Vec::new();
    for (i, m) in code.match_indices("crate::") {
        let rest = &code[i + m.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                names.extend(group.split(',').map(first_word).filter(|w| !w.is_empty()));
            }
            None => names.push(first_word(rest)),
        }
    }
    names
}

#[test]
fn no_module_imports_a_floor_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "read the agent's sources: {files:?}");
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs"))
            .expect("a file name");
        let own = floor(top).unwrap_or_else(|| panic!("{top} has no floor in FLOORS"));
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        for (n, line) in text.lines().enumerate() {
            for target in referenced(line) {
                let Some(theirs) = floor(target) else {
                    continue;
                };
                if theirs > own {
                    upward.push(format!("{}:{}: {top} → {target}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run upward:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_reference_reader_sees_code_not_comments() {
    assert_eq!(referenced("use crate::io::store::Store;"), vec!["io"]);
    assert_eq!(referenced("// see crate::ops::live"), Vec::<&str>::new());
    assert_eq!(referenced("x(crate::a::b, crate::c)"), vec!["a", "c"]);
    assert_eq!(referenced("use crate::{io::sqs, ops};"), vec!["io", "ops"]);
}
