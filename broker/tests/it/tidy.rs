//! Codified house rules, checked on every test run: each Rust file starts
//! with a `//!` doc saying what it is; `unsafe` appears only in the modules
//! allowed to hold it; no debugging leftovers. Each failure says what to do.

use std::path::{Path, PathBuf};

/// The only files allowed to contain `unsafe` (mmap handling); each block
/// in them carries a `// SAFETY:` comment (clippy enforces that part).
const UNSAFE_ALLOWED: &[&str] = &[
    "journal/src/mmap.rs",
    "filter/src/scan/simd.rs",
    "broker/src/server/recv.rs",
];

const CRATES: &[&str] = &[
    "protocol",
    "filter",
    "journal",
    "sow",
    "broker",
    "client",
    "benches",
    "fuzz/fuzz_targets",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files() -> Vec<(String, String)> {
    let root = root();
    let mut paths = Vec::new();
    for krate in CRATES {
        rust_files(&root.join(krate), &mut paths);
    }
    assert!(
        paths.len() > 20,
        "found only {} Rust files under {}",
        paths.len(),
        root.display()
    );
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                text,
            )
        })
        // This file names the banned words in order to look for them.
        .filter(|(path, _)| path != "broker/tests/it/tidy.rs")
        .collect()
}

/// The code part of a line: without a trailing `//` comment (strings that
/// contain `//` are rare enough in this codebase not to matter).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let missing: Vec<String> = files()
        .into_iter()
        .filter(|(_, text)| {
            !text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "start these files with a `//!` comment saying what the module owns or the test proves: {missing:?}"
    );
}

#[test]
fn unsafe_only_where_allowed() {
    let offenders: Vec<String> = files()
        .into_iter()
        .filter(|(path, _)| !UNSAFE_ALLOWED.contains(&path.as_str()))
        .filter(|(_, text)| {
            text.lines().any(|line| {
                code(line)
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "unsafe")
            })
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "`unsafe` outside the allowed modules {UNSAFE_ALLOWED:?}: {offenders:?}. Move it into the smallest module that needs it, behind a safe API, and list that module here"
    );
}

/// Whether `line` holds `marker` as a word of its own (so that `\uXXXX` in
/// a comment about escapes is not one).
fn has_marker(line: &str, marker: &str) -> bool {
    line.match_indices(marker).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + marker.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[test]
fn the_leftover_marker_is_a_word() {
    assert!(has_marker("// XXX: later", "XXX"));
    assert!(has_marker("XXX", "XXX"));
    assert!(!has_marker("/// `\\uXXXX` escapes", "XXX"));
}

#[test]
fn no_debugging_leftovers() {
    let mut found = Vec::new();
    for (path, text) in files() {
        for (n, line) in text.lines().enumerate() {
            let code = code(line);
            if code.contains("dbg!(")
                || code.contains("todo!(")
                || line.contains("FIXME")
                || has_marker(line, "XXX")
            {
                found.push(format!("{path}:{}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "remove dbg!/todo!/FIXME/XXX before merging: {found:?}"
    );
}
