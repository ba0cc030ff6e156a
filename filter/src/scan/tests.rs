//! Unit tests of the scanner: which values it collects for which paths,
//! where it stops, and what it calls malformed.

use super::*;
use crate::ast::{Path, Step};

fn path(text: &str) -> Path {
    let steps = text
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix('#') {
            Some(i) => Step::Index(i.parse().unwrap()),
            None => Step::Field(s.to_owned()),
        })
        .collect();
    Path { steps }
}

/// Scans `payload` for `paths` and renders each path's values as text.
fn scan(payload: &str, paths: &[&str]) -> (bool, Vec<Vec<String>>) {
    let mut set = PathSet::default();
    for p in paths {
        set.insert(&path(p));
    }
    let mut cap = Captures::default();
    let ok = set.scan(payload.as_bytes(), &mut cap);
    let values = (0..paths.len() as u32)
        .map(|slot| {
            cap.values(slot)
                .map(|raw| match raw {
                    Raw::Null => "null".to_owned(),
                    Raw::True => "true".to_owned(),
                    Raw::False => "false".to_owned(),
                    Raw::Number { start, end } | Raw::Str { start, end } => {
                        payload[start..end].to_owned()
                    }
                    Raw::Unescaped { start, end } => {
                        String::from_utf8(cap.arena[start..end].to_vec()).unwrap()
                    }
                })
                .collect()
        })
        .collect();
    (ok, values)
}

fn values(payload: &str, paths: &[&str]) -> Vec<Vec<String>> {
    let (ok, values) = scan(payload, paths);
    assert!(ok, "{payload} was called malformed");
    values
}

#[test]
fn finds_nested_fields_and_skips_the_rest() {
    let doc = r#"{"x":{"deep":[1,{"a":"no"}]},"a":"yes","b":{"c":-1.5e3,"d":null},"e":true}"#;
    assert_eq!(
        values(doc, &["/a", "/b/c", "/b/d", "/e", "/zz"]),
        vec![
            vec!["yes"],
            vec!["-1.5e3"],
            vec!["null"],
            vec!["true"],
            vec![] as Vec<&str>,
        ]
    );
}

#[test]
fn arrays_contribute_every_element_and_index_picks_one() {
    let doc = r#"{"a":[1,[2,3],{"b":4}],"o":[{"b":5},{"b":[6,7]},{"c":8}]}"#;
    assert_eq!(
        values(doc, &["/a", "/a/#1", "/a/b", "/o/b", "/o/#1/b"]),
        vec![
            vec!["1", "2", "3"],
            vec!["2", "3"],
            vec!["4"],
            vec!["5", "6", "7"],
            vec!["6", "7"],
        ]
    );
}

#[test]
fn first_of_duplicate_names_wins() {
    assert_eq!(values(r#"{"a":1,"a":2}"#, &["/a"]), vec![vec!["1"]]);
}

#[test]
fn escaped_names_and_values_are_unescaped() {
    let doc = r#"{"s\u0079m":"I\"B\u004d","t":"\ud83d\ude00"}"#;
    assert_eq!(
        values(doc, &["/sym", "/t"]),
        vec![vec!["I\"BM"], vec!["😀"]]
    );
}

#[test]
fn stops_once_every_path_is_found() {
    // The garbage after /a is never read, so the payload is not called malformed.
    assert_eq!(values(r#"{"a":1, garbage"#, &["/a"]), vec![vec!["1"]]);
    assert_eq!(
        values(r#"{"a":{"b":2,"c":3}, ]]]"#, &["/a/b"]),
        vec![vec!["2"]]
    );
    // A path inside an array is not complete until the array ends.
    let (ok, _) = scan(r#"{"a":[{"b":1}, garbage"#, &["/a/b"]);
    assert!(!ok);
}

#[test]
fn malformed_payloads_empty_every_path() {
    for doc in [
        "",
        "not json",
        r#"{"b":1"#,
        r#"{"a" 1}"#,
        r#"{"a":tru}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":"unterminated}"#,
        r#"{"z":[1,2,"a":1}"#,
        r#"{"z":{"q":"]}}""#,
    ] {
        let (ok, values) = scan(doc, &["/a"]);
        assert!(!ok, "{doc:?} was not called malformed");
        assert!(values[0].is_empty(), "{doc:?} kept values");
    }
}

#[test]
fn skipping_respects_strings_and_escapes() {
    // Brackets and quotes inside skipped strings, escaped quotes and
    // backslashes at every alignment, long enough to cross word boundaries.
    for pad in 0..10 {
        let filler = "x".repeat(pad);
        let doc =
            format!(r#"{{"z":{{"{filler}":"]}}{{[\"\\","k\\":[["}}"],{{}}],"q":"\\\""}},"a":1}}"#);
        assert!(
            serde_json::from_str::<serde_json::Value>(&doc).is_ok(),
            "{doc}"
        );
        assert_eq!(values(&doc, &["/a"]), vec![vec!["1"]], "{doc}");
    }
}

#[test]
fn skipped_brackets_are_only_counted() {
    // Lenient by design: a skipped container counts only its own kind of
    // bracket, so a stray bracket of the other kind goes unnoticed.
    assert_eq!(values(r#"{"z":[1,2}],"a":1}"#, &["/a"]), vec![vec!["1"]]);
    assert_eq!(values(r#"{"z":{"y":]},"a":1}"#, &["/a"]), vec![vec!["1"]]);
    // But the container's own kind must balance.
    let (ok, _) = scan(r#"{"z":[1,2},"a":1}"#, &["/a"]);
    assert!(!ok);
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let doc = format!(r#"{{"z":{deep},"a":1}}"#);
    let (ok, _) = scan(&doc, &["/a"]);
    assert!(!ok);
    let fine = format!(r#"{{"z":{}{},"a":1}}"#, "[".repeat(100), "]".repeat(100));
    assert_eq!(values(&fine, &["/a"]), vec![vec!["1"]]);
}

#[test]
fn unescape_matches_json() {
    let mut out = Vec::new();
    unescape(br#"a\n\t\\\/\"\u00e9\ud800x"#, &mut out);
    assert_eq!(out, "a\n\t\\/\"é\u{FFFD}x".as_bytes());
}

#[test]
fn names_of_every_length_are_found() {
    // Names around the eight-byte word boundary, with and without enough
    // payload after them for a whole-word read.
    for len in 1..=12 {
        let name: String = "abcdefghijkl".chars().take(len).collect();
        // Same length, differing only in the last byte.
        let decoy = format!("{}Z", &name[..len - 1]);
        let path = format!("/{name}");
        let doc = format!(r#"{{"{decoy}x":0,"{decoy}":1,"{name}":2}}"#);
        assert_eq!(values(&doc, &[&path]), vec![vec!["2"]], "{doc}");
        let short = format!(r#"{{"{name}":3}}"#);
        assert_eq!(values(&short, &[&path]), vec![vec!["3"]], "{short}");
    }
}
