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

/// Wanted objects nested in wanted objects are read on the outer walk's
/// masks up to a depth, and by a call below it: both give the same, with
/// unwanted members, containers and a duplicate around each level, and
/// the scan stops after the last one whatever follows.
#[test]
fn wanted_objects_nested_deeper_than_the_walk_keeps_are_read_the_same() {
    let mut doc = String::from("1");
    for level in (0..8).rev() {
        doc = format!(
            r#"{{"u{level}":{{"q":[1,{{"a":2}}]}},"a":{doc},"x":"{{\"a\":9}}","a":"dup","v{level}":true}}"#
        );
    }
    let path: String = "/a".repeat(8);
    for code in simd::tests::Code::ALL {
        assert_eq!(
            code.run(|| values(&doc, &[&path])),
            vec![vec!["1"]],
            "{code:?}"
        );
        let shallow = "/a".repeat(3);
        assert_eq!(
            code.run(|| values(&doc, &[&shallow, "/v0"])),
            vec![vec![] as Vec<&str>, vec!["true"]],
            "{code:?}"
        );
        // Cut short inside the deepest object: malformed.
        let cut = doc.find(r#""a":1,"#).map_or(doc.len(), |at| at + 5);
        let (ok, _) = code.run(|| scan(&doc[..cut], &[&path, "/v0"]));
        assert!(!ok, "{code:?}");
    }
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
    // Lenient by design: a skipped container counts brackets of both kinds
    // alike, so a mismatched one goes unnoticed where what follows it fits.
    assert_eq!(values(r#"{"z":[1,2},"a":1}"#, &["/a"]), vec![vec!["1"]]);
    assert_eq!(values(r#"{"z":{"y":[1}],"a":1}"#, &["/a"]), vec![vec!["1"]]);
    // It ends the container early, though, and the walk goes on from there.
    let (ok, _) = scan(r#"{"z":[1,2}],"a":1}"#, &["/a"]);
    assert!(!ok);
    // And the brackets must balance.
    let (ok, _) = scan(r#"{"z":[1,[2],"a":1}"#, &["/a"]);
    assert!(!ok);
}

#[test]
fn nesting_of_both_kinds_is_bounded_together() {
    // 130 containers, alternating kinds: each kind alone stays within the
    // bound, together they do not (serde_json refuses this too).
    let deep = format!("{}{}", r#"[{"a":"#.repeat(65), "}]".repeat(65));
    let doc = format!(r#"{{"z":{deep},"a":1}}"#);
    let (ok, _) = scan(&doc, &["/a"]);
    assert!(!ok);
    assert!(serde_json::from_str::<serde_json::Value>(&doc).is_err());
    let fine = format!(
        r#"{{"z":{}{},"a":1}}"#,
        r#"[{"a":"#.repeat(50),
        "}]".repeat(50)
    );
    assert_eq!(values(&fine, &["/a"]), vec![vec!["1"]]);
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
    // Names around the eight- and 16-byte word boundaries, with and
    // without enough payload after them for a whole-word read, against
    // names of the same length that differ in one byte (first, middle,
    // last), and with a second wanted name of that length.
    let letters = "abcdefghijklmnopqrst";
    for len in 1..=20 {
        let name = &letters[..len];
        let path = format!("/{name}");
        for at in [0, len / 2, len - 1] {
            let mut decoy = name.as_bytes().to_vec();
            if let Some(b) = decoy.get_mut(at) {
                *b = b'Z';
            }
            let decoy = String::from_utf8(decoy).unwrap();
            let doc = format!(r#"{{"{decoy}x":0,"{decoy}":1,"{name}":2}}"#);
            assert_eq!(values(&doc, &[&path]), vec![vec!["2"]], "{doc}");
            let other = format!("/{decoy}");
            assert_eq!(
                values(&doc, &[&path, &other]),
                vec![vec!["2"], vec!["1"]],
                "{doc}"
            );
        }
        let short = format!(r#"{{"{name}":3}}"#);
        assert_eq!(values(&short, &[&path]), vec![vec!["3"]], "{short}");
    }
}

/// Runs `f` on a scanner over `bytes` set up as a scan sets it up.
fn with_scanner<R>(bytes: &[u8], f: impl FnOnce(&mut Scanner<'_>) -> R) -> R {
    let set = PathSet::default();
    let mut cap = Captures::default();
    let mut scanner = Scanner {
        bytes,
        pos: 0,
        set: &set,
        cap: &mut cap,
        search: Searchers::default(),
        check: None,
        completed: 0,
        decided: false,
    };
    f(&mut scanner)
}

/// The end of the string whose contents start at `from`, byte by byte:
/// the closing quote's position and whether there were escapes.
fn reference_string_end(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut at = from;
    let mut escaped = false;
    loop {
        match *bytes.get(at)? {
            b'"' => return Some((at, escaped)),
            b'\\' => {
                escaped = true;
                at += 2;
            }
            _ => at += 1,
        }
    }
}

/// Skipping the container opened at `open_at` (nesting level `level`),
/// byte by byte: both kinds of bracket count alike, strings and escapes
/// are honoured, and containers may nest at most `MAX_NESTING` deep.
fn reference_skip(bytes: &[u8], open_at: usize, level: u32) -> Option<usize> {
    let mut open = 1;
    let mut at = open_at + 1;
    loop {
        let b = *bytes.get(at)?;
        at += 1;
        if b == b'"' {
            at = reference_string_end(bytes, at)?.0 + 1;
        } else if b == b'{' || b == b'[' {
            open += 1;
            if level + open > MAX_NESTING + 1 {
                return None;
            }
        } else if b == b'}' || b == b']' {
            open -= 1;
            if open == 0 {
                return Some(at);
            }
        }
    }
}

/// Pieces of JSON-like text, malformed ones included, to build skipped
/// containers from.
const PIECES: &[&str] = &[
    r#""a""#,
    r#""{""#,
    r#""}""#,
    r#""[""#,
    r#""]""#,
    r#""\"""#,
    r#""\\""#,
    r#""x\"}\\""#,
    r#""\u005d""#,
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "1",
    " ",
    "\"",
    "\\",
    r#""a long string with {brackets} and [more] that spans several words""#,
];

fn container_text() -> impl Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    (
        proptest::bool::ANY,
        proptest::collection::vec(proptest::sample::select(PIECES), 0..40),
        proptest::option::weighted(0.1, 0usize..5000),
    )
        .prop_map(|(array, pieces, filler)| {
            let mut text = String::from(if array { "[" } else { "{" });
            for (i, piece) in pieces.iter().enumerate() {
                // Now and then a string that takes many 64-byte steps.
                if filler.is_some_and(|at| at % 40 == i) {
                    text.push('"');
                    text.push_str(&"x".repeat(filler.unwrap_or(0)));
                    text.push('"');
                }
                text.push_str(piece);
            }
            text.into_bytes()
        })
}

use proptest::strategy::Strategy;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// The fast skip (bracket search and quote parity where there is no
    /// backslash, string by string elsewhere) ends every container, valid
    /// or not, exactly where the byte-by-byte definition does.
    #[test]
    fn skipping_containers_agrees_with_a_byte_walk(text in container_text(), level in 1u32..4) {
        let expected = reference_skip(&text, 0, level);
        let fast = with_scanner(&text, |s| s.skip_container(0, level).ok());
        proptest::prop_assert_eq!(fast, expected, "{}", String::from_utf8_lossy(&text));
        let baseline = simd::tests::baseline_only(|| with_scanner(&text, |s| s.skip_container(0, level).ok()));
        proptest::prop_assert_eq!(baseline, expected, "baseline: {}", String::from_utf8_lossy(&text));
    }

    /// Strings end where the byte-by-byte walk says, at every alignment.
    #[test]
    fn string_ends_agree_with_a_byte_walk(text in "[a\"\\\\]{0,60}", pad in 0usize..16) {
        let mut bytes = vec![b' '; pad];
        bytes.extend_from_slice(text.as_bytes());
        let fast = with_scanner(&bytes, |s| s.string_end(pad).ok());
        proptest::prop_assert_eq!(fast, reference_string_end(&bytes, pad), "{:?}", text);
    }
}

#[test]
fn escapes_straddle_word_and_vector_boundaries() {
    // An escaped quote or backslash at every offset across the 16-, 32-
    // and 64-byte masks the scanner reads.
    for pad in 0..48 {
        for escape in [r#"\""#, r"\\", r"\u0022", r"\/"] {
            let contents = format!("{}{escape}{}", "a".repeat(pad), "b".repeat(pad % 7));
            let doc = format!(r#"{{"s":"{contents}","a":1}}"#);
            let expected: serde_json::Value = serde_json::from_str(&doc).unwrap();
            let s = expected["s"].as_str().unwrap().to_owned();
            assert_eq!(
                values(&doc, &["/s", "/a"]),
                vec![vec![s], vec!["1".to_owned()]],
                "{doc}"
            );
            // The same string inside a skipped container.
            let skipped = format!(r#"{{"z":{{"q":["{contents}",{{}}]}},"a":1}}"#);
            assert_eq!(values(&skipped, &["/a"]), vec![vec!["1"]], "{skipped}");
        }
    }
}

#[test]
fn long_strings_and_containers_with_a_late_backslash() {
    // Strings and containers of many steps, with and without a backslash
    // far in.
    for tail in ["", r"\n", r#"\""#] {
        let long = format!("{}{tail}{}", "x".repeat(5000), "y".repeat(100));
        let doc = format!(r#"{{"s":"{long}","z":{{"t":"{long}","u":[1,"]"]}},"a":"{long}"}}"#);
        let expected: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let s = expected["s"].as_str().unwrap().to_owned();
        assert_eq!(
            values(&doc, &["/s", "/a"]),
            vec![vec![s.clone()], vec![s]],
            "tail {tail:?}"
        );
    }
}

#[test]
fn a_backslash_early_does_not_slow_or_break_what_follows() {
    // After a backslash the fast path takes over again: what follows is
    // skipped by it, and correctly.
    let doc = r#"{"e":"a\\b","z":{"k":"}","l":["]"]},"y":[{"m":"{"}],"a":2}"#;
    assert_eq!(values(doc, &["/a"]), vec![vec!["2"]]);
    let doc = r#"{"z":{"k":"\"}","l":"\\"},"y":["\"]",[]],"a":3}"#;
    assert_eq!(values(doc, &["/a"]), vec![vec!["3"]]);
}

#[test]
fn skipped_nesting_counts_containers_of_both_kinds() {
    // 129 levels of one kind in a skipped value: too deep.
    let deep = format!(r#"{{"z":{}{},"a":1}}"#, "[".repeat(128), "]".repeat(128));
    assert!(!scan(&deep, &["/a"]).0);
    let fine = format!(r#"{{"z":{}{},"a":1}}"#, "[".repeat(127), "]".repeat(127));
    assert_eq!(values(&fine, &["/a"]), vec![vec!["1"]]);
    // Alternating kinds count together, as serde_json counts them.
    let mixed = format!(
        r#"{{"z":{}{},"a":1}}"#,
        "[{\"k\":".repeat(100),
        "}]".repeat(100)
    );
    assert!(serde_json::from_str::<serde_json::Value>(&mixed).is_err());
    assert!(!scan(&mixed, &["/a"]).0);
}

#[test]
fn malformed_skipped_values_never_panic() {
    for doc in [
        r#"{"z":{"q":"unterminated}"#,
        r#"{"z":["\"]"#,
        r#"{"z":{"q":"\"#,
        r#"{"z":["#,
        r#"{"z":{"#,
        r#"{"z":"\"#,
        "{\"z\":\"\\",
        r#"{"z":[]]]]"#,
        r#"{"z":{}"a":1}"#,
    ] {
        let (ok, values) = scan(doc, &["/a"]);
        assert!(!ok, "{doc:?} was not called malformed");
        assert!(values[0].is_empty());
    }
}

#[test]
fn member_names_of_any_length_are_found_among_many() {
    // Many names at one node (more than one word comparison settles), names
    // sharing their first and last eight bytes, and names of 8 to 16 bytes.
    let names: Vec<String> = (0..20)
        .map(|i| format!("name_{i:02}_{}", "x".repeat(i % 12)))
        .chain(["abcdefgh1ijklmnop".into(), "abcdefgh2ijklmnop".into()])
        .collect();
    let paths: Vec<String> = names.iter().map(|n| format!("/{n}")).collect();
    let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let doc = format!(
        "{{{}}}",
        names
            .iter()
            .enumerate()
            .rev()
            .map(|(i, n)| format!(r#""{n}x":-1,"{n}":{i}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let expected: Vec<Vec<String>> = (0..names.len()).map(|i| vec![i.to_string()]).collect();
    assert_eq!(values(&doc, &path_refs), expected, "{doc}");
}

/// Member names of every length around the 16- and 32-byte windows the
/// object walk reads, some with characters that JSON escapes.
fn member_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (1usize..40).prop_map(|len| "abcdefghijklmnopqrstuvwxyz0123456789ABCD"[..len].to_owned()),
        1 => "[a-z\"\\\\é{}\\[\\] ]{0,20}",
    ]
}

/// Values of every kind: strings around the window sizes (escapes and
/// brackets included), numbers, literals, and small containers whose
/// members reuse the names.
fn member_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value as Json;
    let leaf = prop_oneof![
        "[a-z\"\\\\{}\\[\\]:, é]{0,70}".prop_map(Json::String),
        any::<i32>().prop_map(Json::from),
        any::<bool>().prop_map(Json::Bool),
        Just(Json::Null),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::vec((member_name(), inner), 0..4).prop_map(|members| {
                let mut map = serde_json::Map::new();
                for (name, value) in members {
                    map.entry(name).or_insert(value);
                }
                Json::Object(map)
            }),
        ]
    })
}

/// A path's values in a serde_json document, rendered as [`scan`] renders
/// them: arrays contribute their elements (flattened), objects nothing.
fn reference_values(value: Option<&serde_json::Value>, out: &mut Vec<String>) {
    use serde_json::Value as Json;
    match value {
        None | Some(Json::Object(_)) => {}
        Some(Json::Null) => out.push("null".to_owned()),
        Some(Json::Bool(b)) => out.push(b.to_string()),
        Some(Json::Number(n)) => out.push(n.to_string()),
        Some(Json::String(s)) => out.push(s.clone()),
        Some(Json::Array(items)) => {
            for item in items {
                reference_values(Some(item), out);
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    /// The object walk (names and short strings from one vector mask, the
    /// rest by calls) finds exactly what serde_json finds, whatever the
    /// names' and values' lengths, escapes and whitespace.
    #[test]
    fn object_walks_agree_with_serde_json(
        members in proptest::collection::vec((member_name(), member_value()), 1..12),
        spaced in proptest::collection::vec(proptest::prelude::any::<bool>(), 4),
        picks in proptest::collection::vec(0usize..16, 1..4),
        absent in member_name(),
    ) {
        let mut doc = serde_json::Map::new();
        for (name, value) in members {
            doc.entry(name).or_insert(value);
        }
        // Compact, with whitespace here and there, as chosen.
        let mut text = String::from(if spaced[0] { "{ " } else { "{" });
        for (i, (name, value)) in doc.iter().enumerate() {
            if i > 0 {
                text.push_str(if spaced[1] { " , " } else { "," });
            }
            text.push_str(&serde_json::to_string(name).unwrap());
            text.push_str(if spaced[2] { " : " } else { ":" });
            text.push_str(&serde_json::to_string(value).unwrap());
        }
        text.push_str(if spaced[3] { " }" } else { "}" });
        let names: Vec<&String> = doc.keys().collect();
        let mut paths: Vec<Vec<String>> = picks
            .iter()
            .filter_map(|&i| names.get(i).map(|n| vec![(*n).clone()]))
            .collect();
        // A second step into a picked object, and a name that is absent.
        if let Some(first) = paths.first().cloned()
            && let Some(serde_json::Value::Object(inner)) = doc.get(&first[0])
            && let Some(name) = inner.keys().next()
        {
            paths.push(vec![first[0].clone(), name.clone()]);
        }
        if !doc.contains_key(&absent) {
            paths.push(vec![absent]);
        }
        let mut unique: Vec<Vec<String>> = Vec::new();
        for steps in paths {
            if !unique.contains(&steps) {
                unique.push(steps);
            }
        }
        let paths = unique;
        let mut set = PathSet::default();
        for steps in &paths {
            set.insert(&Path { steps: steps.iter().cloned().map(Step::Field).collect() });
        }
        // With each vector code this CPU runs.
        for code in simd::tests::Code::ALL {
        let mut cap = Captures::default();
        let ok = code.run(|| set.scan(text.as_bytes(), &mut cap));
        proptest::prop_assert!(ok, "{} called malformed ({:?})", text, code);
        for (slot, steps) in paths.iter().enumerate() {
            let mut at = Some(&serde_json::Value::Object(doc.clone()));
            let mut expected = Vec::new();
            for step in steps {
                at = at.and_then(|v| v.get(step));
            }
            reference_values(at.map(|v| v as &serde_json::Value).as_ref().copied(), &mut expected);
            let got: Vec<String> = cap
                .values(slot as u32)
                .map(|raw| match raw {
                    Raw::Null => "null".to_owned(),
                    Raw::True => "true".to_owned(),
                    Raw::False => "false".to_owned(),
                    Raw::Number { start, end } | Raw::Str { start, end } => {
                        String::from_utf8(text.as_bytes()[start..end].to_vec()).unwrap()
                    }
                    Raw::Unescaped { start, end } => {
                        String::from_utf8(cap.arena[start..end].to_vec()).unwrap()
                    }
                })
                .collect();
            proptest::prop_assert_eq!(&got, &expected, "{:?} in {} ({:?})", steps, text, code);
        }
        }
    }
}

#[test]
fn many_names_of_one_length_are_found_by_hash() {
    // More names of one length than are compared one by one, short and
    // long, at the top and one level down.
    for width in [3, 11] {
        let names: Vec<String> = (0..12).map(|i| format!("{i:0width$}")).collect();
        let paths: Vec<String> = names.iter().map(|n| format!("/{n}")).collect();
        let nested: Vec<String> = names.iter().map(|n| format!("/o/{n}")).collect();
        let all: Vec<&str> = paths.iter().chain(&nested).map(String::as_str).collect();
        let members: Vec<String> = names
            .iter()
            .enumerate()
            .rev()
            .map(|(i, n)| format!(r#""{n}x":-1,"{n}":{i}"#))
            .collect();
        let doc = format!(r#"{{{},"o":{{{}}}}}"#, members.join(","), members.join(","));
        let expected: Vec<Vec<String>> = (0..2)
            .flat_map(|_| (0..names.len()).map(|i| vec![i.to_string()]))
            .collect();
        assert_eq!(values(&doc, &all), expected, "{doc}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    /// Skipped string values cross 32 bytes per mask: whatever the string's
    /// length and wherever its escaped quotes, backslashes and brackets
    /// fall against those steps (and the name before it shifts them), the
    /// member after it is found, with AVX2 and with the baseline code.
    #[test]
    fn skipped_strings_end_where_serde_json_ends_them(
        name_len in 1usize..40,
        pieces in proptest::collection::vec(
            proptest::sample::select(
                &[
                    "a",
                    "plain text longer than one mask..",
                    "sixteen bytes ok",
                    "\\\"",
                    "\\\\",
                    "]",
                    "}",
                    "{",
                    "\\u0041",
                    " ",
                    "\"x",
                ][..],
            ),
            0..40,
        ),
        spaced in proptest::prelude::any::<bool>(),
    ) {
        // A lone `"x` piece would end the string: keep the text a string.
        let body: String = pieces.concat().replace("\"x", "\\\"x");
        let name = "n".repeat(name_len);
        let sep = if spaced { " " } else { "" };
        // A member after `a`, so that a mask's 32 bytes fit past any end.
        let pad = "p".repeat(40);
        let text = format!(r#"{{"{name}":{sep}"{body}"{sep},"a":1,"pad":"{pad}"}}"#);
        proptest::prop_assume!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        for code in simd::tests::Code::ALL {
            let got = code.run(|| values(&text, &["/a"]));
            proptest::prop_assert_eq!(&got, &vec![vec!["1".to_owned()]], "{} ({:?})", text, code);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    /// Containers crossed by the object walk's own block loop (the AVX2
    /// build inlines it, with its masks kept in registers and the last,
    /// shorter block of the payload handled apart): skipped as a member's
    /// value, or in the rest of an object whose wanted members are all
    /// read, ending a byte before the payload does. Whatever the strings'
    /// brackets and escapes and wherever the 64-byte steps fall, the scan
    /// finds what serde_json finds, and calls the payload malformed once
    /// its last one or two bytes are cut off.
    #[test]
    fn containers_crossed_in_the_walk_end_where_serde_json_ends_them(
        name_len in 1usize..40,
        items in proptest::collection::vec(
            proptest::prop_oneof![
                "[a-z\"\\\\{}\\[\\] ]{0,90}".prop_map(serde_json::Value::String),
                proptest::prelude::any::<i32>().prop_map(serde_json::Value::from),
            ],
            0..10,
        ),
        object in proptest::prelude::any::<bool>(),
        skipped_first in proptest::prelude::any::<bool>(),
    ) {
        let container = if object {
            serde_json::Value::Object(
                items.into_iter().enumerate().map(|(i, v)| (format!("k{i}"), v)).collect(),
            )
        } else {
            serde_json::Value::Array(items)
        };
        let member = format!("\"{}\":{}", "n".repeat(name_len), container);
        let text = if skipped_first {
            format!(r#"{{"o":{{{member},"a":1}}}}"#)
        } else {
            format!(r#"{{"o":{{"a":1,{member}}}}}"#)
        };
        let expected = vec![vec!["1".to_owned()], vec![]];
        for code in simd::tests::Code::ALL {
            let run = |text: &str| code.run(|| scan(text, &["/o/a", "/z"]));
            proptest::prop_assert_eq!(run(&text), (true, expected.clone()), "{} ({:?})", text, code);
            for cut in 1..=2 {
                let short = &text[..text.len() - cut];
                proptest::prop_assert!(!run(short).0, "{} called well-formed ({:?})", short, code);
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    /// The object walk reads each member's bits from two 64-byte blocks
    /// that move on 64 bytes at a time, or start afresh after a long
    /// value: whatever the members' lengths (so member starts fall on
    /// every offset of a block, its last byte and the next block's first
    /// included), long skipped strings and containers between them,
    /// escapes, and the payload's end within a block or on its boundary,
    /// and with wanted members inside nested objects, the walk finds what
    /// serde_json finds, with AVX2 and with the baseline code.
    #[test]
    fn members_across_the_walks_blocks_are_found(
        members in proptest::collection::vec(
            (
                1usize..20,
                proptest::prop_oneof![
                    (0usize..140).prop_map(|n| serde_json::Value::String("v".repeat(n))),
                    (0usize..70).prop_map(|n| serde_json::Value::String(format!("{}\\\"q", "e".repeat(n)))),
                    (0usize..100).prop_map(|n| serde_json::json!({ "s": "x".repeat(n), "t": [1, 2] })),
                    proptest::prelude::any::<i32>().prop_map(serde_json::Value::from),
                ],
            ),
            1..24,
        ),
        wanted in proptest::collection::vec(0usize..24, 1..4),
        trailing in 0usize..70,
    ) {
        // Distinct names of the chosen lengths: `m<i>` padded with `_`.
        let mut text = String::from("{");
        let mut names = Vec::new();
        for (i, (len, value)) in members.iter().enumerate() {
            let mut name = format!("m{i}");
            while name.len() < *len {
                name.push('_');
            }
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("{}:{}", serde_json::to_string(&name).unwrap(), value));
            names.push(name);
        }
        // A last member whose length moves the payload's end through a block.
        text.push_str(&format!(r#","z":"{}"}}"#, "w".repeat(trailing)));
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Into a wanted object, a member of it: the nested walk takes the
        // blocks over from the outer one and hands them back.
        let mut paths: Vec<String> = wanted
            .iter()
            .filter_map(|&i| names.get(i))
            .map(|n| match doc.get(n) {
                Some(serde_json::Value::Object(_)) => format!("/{n}/s"),
                _ => format!("/{n}"),
            })
            .collect();
        paths.push("/z".to_owned());
        paths.sort();
        paths.dedup();
        let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let expected: Vec<Vec<String>> = paths
            .iter()
            .map(|p| {
                let mut out = Vec::new();
                reference_values(doc.pointer(p), &mut out);
                out
            })
            .collect();
        for code in simd::tests::Code::ALL {
            let got = code.run(|| values(&text, &path_refs));
            proptest::prop_assert_eq!(&got, &expected, "{} ({:?})", text, code);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The same through whole scans: containers skipped at every offset of
    /// the walk's blocks, before and after its first skipped container and
    /// as the rest of an object whose wanted members are done, give what
    /// the byte-by-byte definition of the skip says: the member after
    /// them, or a malformed payload.
    #[test]
    fn skipped_containers_in_walks_agree_with_a_byte_walk(
        text in container_text(),
        filler in proptest::collection::vec(0usize..70, 0..4),
        earlier in proptest::option::of(container_text()),
        nested in proptest::prelude::any::<bool>(),
    ) {
        // Members before the container: strings of the lengths drawn, and
        // perhaps a valid container first (the walk's first skip).
        let mut doc = String::from(if nested { r#"{"o":{"w":0,"# } else { "{" });
        if let Some(earlier) = earlier
            && reference_skip(&earlier, 0, 3).is_some_and(|end| end == earlier.len())
            && serde_json::from_slice::<serde_json::Value>(&earlier).is_ok()
        {
            doc.push_str(r#""e":"#);
            doc.push_str(std::str::from_utf8(&earlier).unwrap_or("0"));
            doc.push(',');
        }
        for (i, len) in filler.iter().enumerate() {
            doc.push_str(&format!(r#""f{i}":"{}","#, "x".repeat(*len)));
        }
        doc.push_str(r#""z":"#);
        let open = doc.len();
        let mut bytes = doc.into_bytes();
        bytes.extend_from_slice(&text);
        let end_of_text = bytes.len();
        bytes.extend_from_slice(if nested { br#"},"a":1}"# } else { br#","a":1}"# });
        let payload = String::from_utf8_lossy(&bytes).into_owned();
        let paths: &[&str] = if nested { &["/o/w", "/a"] } else { &["/a"] };
        let level = if nested { 3 } else { 2 };
        let (ok, found) = scan(&payload, paths);
        for code in simd::tests::Code::ALL {
            let (other_ok, other_found) = code.run(|| scan(&payload, paths));
            proptest::prop_assert_eq!((ok, &found), (other_ok, &other_found), "{} ({:?})", payload, code);
        }
        match reference_skip(payload.as_bytes(), open, level) {
            None => proptest::prop_assert!(!ok, "{}", payload),
            Some(end) if end == end_of_text && payload.len() == bytes.len() => {
                proptest::prop_assert!(ok, "{}", payload);
                proptest::prop_assert_eq!(found.last(), Some(&vec!["1".to_owned()]), "{}", payload);
            }
            // Ended elsewhere: the walk goes on from there, into the rest
            // of the text; both codes agree (above) and nothing panics.
            Some(_) => {}
        }
    }
}
