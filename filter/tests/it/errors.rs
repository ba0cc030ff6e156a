//! Parse errors: positions, caret rendering, limits and the determinism
//! switch; and that pathological input is refused, not crashed on.

use statecast_filter::{Filter, Limits, MessageContext, ParseErrorKind, Scratch, Truth};

fn error(text: &str) -> statecast_filter::ParseError {
    match Filter::parse(text, &Limits::default()) {
        Ok(f) => panic!("{text:?} parsed as {f}"),
        Err(e) => e,
    }
}

#[test]
fn errors_point_at_the_offending_token() {
    let cases = [
        ("/price > AND /qty = 1", 9, "expected a value, found 'AND'"),
        ("/a = 'x", 5, "string literal is not closed"),
        ("/a IN ('x' 'y')", 11, "expected ',' or ')' in the list"),
        ("UPPER(/a, /b)", 0, "UPPER takes 1 argument, got 2"),
        ("/a LIKE '[z-a]'", 8, "bad LIKE pattern"),
        ("FROB(1)", 0, "unknown function or keyword 'FROB'"),
        ("/a = 1 /b = 2", 8, "expected a value"),
        ("/a == == 1", 6, "expected a value, found '='"),
        ("é = 1 @", 0, "unexpected character 'é'"),
    ];
    for (text, offset, message) in cases {
        let e = error(text);
        assert_eq!(e.offset, offset, "offset for {text:?}: {e}");
        assert!(e.to_string().contains(message), "{text:?}: {e}");
    }
}

#[test]
fn columns_count_characters_and_lines() {
    let e = error("/name = 'café' AND\n  /x >");
    assert_eq!((e.line, e.column), (2, 7));
    let e = error("'ééé' = )");
    assert_eq!((e.line, e.column, e.offset), (1, 9, 11));
}

#[test]
fn render_puts_a_caret_under_the_column() {
    let text = "/price > AND /qty = 1";
    let rendered = error(text).render(text);
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines[0], text);
    assert_eq!(lines[1].find('^'), Some(9));
    assert!(
        lines[1].ends_with("expected a value, found 'AND' (line 1, column 10)"),
        "{rendered}"
    );

    let text = "/a =\t)";
    let rendered = error(text).render(text);
    assert_eq!(
        rendered.lines().next(),
        Some("/a = )"),
        "tabs are shown as spaces"
    );
    assert_eq!(rendered.lines().nth(1).and_then(|l| l.find('^')), Some(5));
}

#[test]
fn text_length_is_limited() {
    let limits = Limits {
        max_text_bytes: 10,
        ..Limits::default()
    };
    let e = Filter::parse("/abc = 'defghijk'", &limits).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::TooLong { len: 17, max: 10 });
    assert!(Filter::parse("/abc = 'd'", &limits).is_ok());
}

#[test]
fn nesting_is_limited_by_parentheses_and_height() {
    let limits = Limits::default();
    let ok = format!("{}1{}", "(".repeat(60), ")".repeat(60));
    assert!(Filter::parse(&ok, &limits).is_ok());
    for deep in [
        format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("{}1", "NOT ".repeat(100_000)),
        format!("{}1", "-".repeat(100_000)),
        vec!["1"; 100].join(" + "),
        format!("{}1{}", "UPPER(".repeat(1000), ")".repeat(1000)),
        format!("{}1{}", "/a IN (".repeat(1000), ")".repeat(1000)),
    ] {
        let limits = Limits {
            max_text_bytes: usize::MAX,
            ..Limits::default()
        };
        let e = Filter::parse(&deep, &limits).unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::TooDeep { max: 64 },
            "{}",
            &deep[..20]
        );
    }
}

#[test]
fn long_and_or_chains_and_in_lists_are_flat() {
    let ors: Vec<String> = (0..2000).map(|i| format!("/s = 'S{i}'")).collect();
    let filter = Filter::parse(&ors.join(" OR "), &Limits::default()).unwrap();
    assert!(filter.matches(&MessageContext::new(br#"{"s":"S1999"}"#)));
    let items: Vec<String> = (0..9000).map(|i| format!("'S{i}'")).collect();
    let filter =
        Filter::parse(&format!("/s IN ({})", items.join(",")), &Limits::default()).unwrap();
    assert!(filter.matches(&MessageContext::new(br#"{"s":"S8999"}"#)));
}

#[test]
fn node_count_is_limited() {
    let items: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let e = Filter::parse(&format!("/s IN ({})", items.join(",")), &Limits::default()).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::TooManyNodes { max: 10_000 });
}

#[test]
fn regex_size_is_limited() {
    let limits = Limits {
        max_regex_bytes: 10_000,
        ..Limits::default()
    };
    let e = Filter::parse("/a LIKE 'x{1000}{1000}'", &limits).unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::BadRegex(_)), "{e}");
}

#[test]
fn nondeterministic_functions_can_be_refused() {
    let text = "/expires > UNIX_TIMESTAMP()";
    let filter = Filter::parse(text, &Limits::default()).unwrap();
    assert!(!filter.is_deterministic());
    assert!(
        Filter::parse(
            "/a = TOPIC_NAME() AND MESSAGE_SIZE() > 1",
            &Limits::default()
        )
        .unwrap()
        .is_deterministic()
    );
    let strict = Limits {
        allow_nondeterministic: false,
        ..Limits::default()
    };
    let e = Filter::parse(text, &strict).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::NonDeterministic("UNIX_TIMESTAMP"));
    assert_eq!(e.offset, 11);

    let ctx = MessageContext::new(br#"{"expires":1700000100}"#);
    assert!(
        !filter.matches(&ctx),
        "no clock given: UNIX_TIMESTAMP() is NULL"
    );
    assert!(filter.matches(&ctx.with_unix_timestamp(1_700_000_000.0)));
    assert!(!filter.matches(&ctx.with_unix_timestamp(1_800_000_000.0)));
}

#[test]
fn hostile_payloads_are_null_not_fatal() {
    let filter = Filter::parse("/a/b = 1 OR /a IS NULL", &Limits::default()).unwrap();
    let mut scratch = Scratch::new();
    let deep = format!("{{\"a\":{}", "[".repeat(1_000_000));
    let unterminated = "{\"a\":\"".to_owned() + &"x".repeat(10_000);
    for payload in [
        deep.as_bytes(),
        unterminated.as_bytes(),
        b"\xff\xfe",
        b"{\"a\":{\"b\":1e99999}}",
        b"{\"a\\",
    ] {
        // A malformed payload makes every field NULL, so only `IS NULL` holds.
        let _ = filter.matches_with(&MessageContext::new(payload), &mut scratch);
    }
    assert!(filter.matches_with(&MessageContext::new(deep.as_bytes()), &mut scratch));
    assert!(filter.matches_with(&MessageContext::new(b"{\"a\":{\"b\":1}}"), &mut scratch));
}

#[test]
fn built_strings_are_capped() {
    let big = "a".repeat(600_000);
    let payload = format!(r#"{{"s":"{big}"}}"#);
    let ctx = MessageContext::new(payload.as_bytes());
    let value = |text: &str| {
        Filter::parse(text, &Limits::default())
            .unwrap()
            .evaluate_value(&ctx, &mut Scratch::new())
    };
    use statecast_filter::Value;
    assert_eq!(value("LENGTH(CONCAT(/s, 'b'))"), Value::Int(600_001));
    assert_eq!(value("LENGTH(CONCAT(/s, /s))"), Value::Null);
    assert_eq!(value("LENGTH(REPLACE(/s, 'aa', 'b'))"), Value::Int(300_000));
    assert_eq!(value("LENGTH(REPLACE(/s, 'a', 'bb'))"), Value::Null);
    assert_eq!(value("CONCAT(/s, /s) IS NULL"), Value::Bool(true));
}

#[test]
fn a_false_first_term_stops_the_scan() {
    // The payload goes bad after `b`. A top-level AND whose first term is
    // FALSE on the fields read so far is FALSE, and the scan stops there:
    // the garbage is never looked at.
    let payload = br#"{"a":1,"b":2, garbage"#;
    let ctx = MessageContext::new(payload);
    let mut scratch = Scratch::new();
    let filter = |text: &str| Filter::parse(text, &Limits::default()).unwrap();
    let stops = filter("/a = 2 AND /c = 1");
    assert_eq!(stops.evaluate(&ctx, &mut scratch), Truth::False);
    assert_eq!(
        stops.evaluate_value(&ctx, &mut scratch),
        statecast_filter::Value::Bool(false)
    );
    // A first term that holds lets the scan go on, to the garbage: every
    // field is then NULL.
    let goes_on = filter("/a = 1 AND /c IS NULL");
    assert_eq!(goes_on.evaluate(&ctx, &mut scratch), Truth::Unknown);
    assert_eq!(
        goes_on.evaluate_value(&ctx, &mut scratch),
        statecast_filter::Value::Null
    );
    // Only the first term is looked at early.
    let later = filter("/c = 1 AND /a = 2");
    assert_eq!(later.evaluate(&ctx, &mut scratch), Truth::Unknown);
    // The same scratch then serves a well-formed message.
    assert!(stops.matches_with(
        &MessageContext::new(br#"{"a":2,"b":2,"c":1}"#),
        &mut scratch
    ));
}
