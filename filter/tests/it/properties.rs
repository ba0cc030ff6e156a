//! Property tests: random documents and random filters.
//!
//! - printing any syntax tree and parsing the text gives the same tree;
//! - the compiled evaluator (streaming scan, slots, short circuits) gives
//!   exactly the reference interpreter's value (serde_json document, direct
//!   tree walk), also on pretty-printed and escaped payloads;
//! - the subscription index reports exactly the filters that brute-force
//!   evaluation matches.
//!
//! `PROPTEST_CASES` sets the number of cases (default 512 per property).

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Map, Value as Json};
use statecast_filter::ast::{AffixKind, BinaryOp, Expr, IsTest, Literal, Path, Step, UnaryOp};
use statecast_filter::{
    Filter, Function, IndexScratch, Limits, MessageContext, Scratch, SubscriptionIndex, reference,
};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig::with_cases(cases)
}

const NAMES: &[&str] = &["a", "b", "s", "n", "arr", "o", "a b", "é"];

fn name() -> impl Strategy<Value = String> {
    proptest::sample::select(NAMES).prop_map(str::to_owned)
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "",
                "abc",
                "ABC",
                "S1",
                "S2",
                "100",
                "1e2",
                "100.0",
                " 5",
                "true",
                "x\"y\\z",
                "é",
                "😀",
                "a\nb",
                "NaN",
                // Brackets and quotes inside strings, for the skipping of
                // containers by bracket search and quote parity.
                "{[}]",
                "a\"]",
                "}, \"x\": [",
                "\\\"}",
                "a string longer than four words, with } and ] and \" inside it"
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-c]{0,3}",
    ]
}

fn number() -> impl Strategy<Value = Json> {
    prop_oneof![
        (-3i64..200).prop_map(Json::from),
        proptest::sample::select(&[i64::MAX, i64::MIN, 100, 0][..]).prop_map(Json::from),
        Just(Json::from(u64::MAX)),
        proptest::sample::select(&[0.5, -2.25, 100.0, 1e2, 1e300, -0.0, 2.5e-8, 99.99][..])
            .prop_map(Json::from),
        (-1000.0f64..1000.0).prop_map(Json::from),
    ]
}

fn document() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number(),
        string_value().prop_map(Json::String),
    ];
    let value = leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::btree_map(name(), inner, 0..6)
                .prop_map(|m| Json::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    });
    // Objects at the top with most of the names present, like real messages;
    // now and then a top-level array.
    let object = proptest::collection::btree_map(name(), value, 3..8)
        .prop_map(|m| Json::Object(m.into_iter().collect::<Map<_, _>>()))
        .boxed();
    prop_oneof![
        9 => object.clone(),
        1 => proptest::collection::vec(object, 0..3).prop_map(Json::Array),
    ]
}

fn path() -> impl Strategy<Value = Path> {
    // Mostly one step, so that filters often find fields in the documents.
    let depth = prop_oneof![12 => Just(1usize), 3 => Just(2usize), 1 => Just(3usize)];
    depth
        .prop_flat_map(|n| {
            proptest::collection::vec((name(), proptest::option::weighted(0.15, 0u32..3)), n)
        })
        .prop_map(|steps| {
            let mut out = Vec::new();
            for (n, index) in steps {
                out.push(Step::Field(n));
                out.extend(index.map(Step::Index));
            }
            Path { steps: out }
        })
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Bool),
        (-3i64..200).prop_map(Literal::Int),
        proptest::sample::select(&[i64::MAX, i64::MIN][..]).prop_map(Literal::Int),
        proptest::sample::select(&[0.5, -2.25, 100.0, 1e300, 2.5e-8, 0.0][..])
            .prop_map(Literal::Float),
        string_value().prop_map(|s| Literal::Str(s.into_bytes())),
    ]
}

const PATTERNS: &[&str] = &["^a", "b$", "(?i)abc", "^$", "\\d+", ".", "^1", "é", "x\"y"];

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        3 => path().prop_map(Expr::Path),
        1 => literal().prop_map(Expr::Literal),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        let boxed = inner.clone().prop_map(Box::new);
        let list = proptest::collection::vec(inner.clone(), 1..4);
        prop_oneof![
            (
                proptest::sample::select(&[UnaryOp::Not, UnaryOp::Neg, UnaryOp::Plus][..]),
                boxed.clone()
            )
                .prop_map(|(op, expr)| Expr::Unary { op, expr }),
            (
                proptest::sample::select(
                    &[
                        BinaryOp::Add,
                        BinaryOp::Sub,
                        BinaryOp::Mul,
                        BinaryOp::Div,
                        BinaryOp::Mod,
                        BinaryOp::Eq,
                        BinaryOp::Ne,
                        BinaryOp::Lt,
                        BinaryOp::Le,
                        BinaryOp::Gt,
                        BinaryOp::Ge
                    ][..]
                ),
                boxed.clone(),
                boxed.clone()
            )
                .prop_map(|(op, lhs, rhs)| Expr::Binary { op, lhs, rhs }),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            (boxed.clone(), boxed.clone(), boxed.clone(), any::<bool>()).prop_map(
                |(expr, low, high, negated)| Expr::Between {
                    expr,
                    low,
                    high,
                    negated
                }
            ),
            (boxed.clone(), list.clone(), any::<bool>()).prop_map(|(expr, list, negated)| {
                Expr::In {
                    expr,
                    list,
                    negated,
                }
            }),
            (
                boxed.clone(),
                proptest::sample::select(PATTERNS),
                any::<bool>()
            )
                .prop_map(|(expr, p, negated)| Expr::Like {
                    expr,
                    pattern: p.as_bytes().to_vec(),
                    negated
                }),
            (boxed.clone(), any::<bool>(), list, any::<bool>()).prop_map(
                |(expr, begins, list, negated)| Expr::Affix {
                    expr,
                    kind: if begins {
                        AffixKind::Begins
                    } else {
                        AffixKind::Ends
                    },
                    list,
                    negated
                }
            ),
            (boxed, any::<bool>(), any::<bool>()).prop_map(|(expr, nan, negated)| Expr::Is {
                expr,
                test: if nan { IsTest::Nan } else { IsTest::Null },
                negated
            }),
            (
                proptest::sample::select(Function::ALL),
                proptest::collection::vec(inner, 0..4)
            )
                .prop_map(|(function, mut args)| {
                    let (min, max) = function.arity();
                    let max = max.unwrap_or(min + 3);
                    while args.len() < min {
                        args.push(Expr::Literal(Literal::Int(args.len() as i64 + 1)));
                    }
                    args.truncate(max);
                    Expr::Call { function, args }
                }),
        ]
    })
}

fn context(payload: &[u8]) -> MessageContext<'_> {
    MessageContext::new(payload)
        .with_topic("prop/topic")
        .with_unix_timestamp(1_700_000_000.5)
}

fn parse_printed(ast: &Expr) -> Result<Filter, TestCaseError> {
    let printed = ast.to_string();
    Filter::parse(&printed, &Limits::default())
        .map_err(|e| TestCaseError::fail(format!("{printed:?} does not parse: {e}")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn printing_then_parsing_gives_the_same_tree(ast in expr()) {
        let filter = parse_printed(&ast)?;
        prop_assert_eq!(filter.expr(), &ast, "printed as {}", ast);
        // And the canonical form is a fixed point.
        prop_assert_eq!(filter.to_string(), ast.to_string());
    }

    #[test]
    fn compiled_evaluation_equals_the_reference(ast in expr(), doc in document(), pretty in any::<bool>()) {
        let filter = parse_printed(&ast)?;
        let payload = if pretty { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap();
        let ctx = context(&payload);
        let expected = reference::evaluate_document(&ast, Some(&doc), &ctx);
        let mut scratch = Scratch::new();
        let got = filter.evaluate_value(&ctx, &mut scratch);
        prop_assert_eq!(&got, &expected, "filter {} on {}", ast, String::from_utf8_lossy(&payload));
        prop_assert_eq!(filter.evaluate(&ctx, &mut scratch), expected.truth());
        // Reusing the scratch on a second document must not leak state.
        let got_again = filter.evaluate_value(&ctx, &mut scratch);
        prop_assert_eq!(got_again, expected);
    }

    #[test]
    fn escaped_payloads_read_the_same(ast in expr(), doc in document()) {
        // The same document with every non-ASCII character and every key's
        // first letter written as \u escapes.
        let filter = parse_printed(&ast)?;
        let plain = serde_json::to_string(&doc).unwrap();
        let escaped = escape_everything(&plain);
        prop_assert_eq!(serde_json::from_str::<Json>(&escaped).unwrap(), doc.clone());
        let ctx = context(escaped.as_bytes());
        let expected = reference::evaluate_document(&ast, Some(&doc), &ctx);
        prop_assert_eq!(filter.evaluate_value(&ctx, &mut Scratch::new()), expected, "filter {} on {}", ast, escaped);
    }

    #[test]
    fn index_matches_exactly_what_brute_force_matches(
        filters in proptest::collection::vec(indexable_filter(), 1..40),
        docs in proptest::collection::vec(document(), 1..8),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut compiled = Vec::new();
        for (i, ast) in filters.iter().enumerate() {
            let filter = parse_printed(ast)?;
            index.insert(i, filter.clone());
            compiled.push(filter);
        }
        // Remove and re-add a few to exercise slot reuse.
        for i in (0..compiled.len()).step_by(3) {
            prop_assert!(index.remove(&i).is_some());
        }
        for i in (0..compiled.len()).step_by(6) {
            index.insert(i, compiled[i].clone());
        }
        let live: Vec<usize> = (0..compiled.len()).filter(|i| i % 3 != 0 || i % 6 == 0).collect();
        prop_assert_eq!(index.len(), live.len());
        let mut scratch = IndexScratch::new();
        for doc in &docs {
            let payload = serde_json::to_vec(doc).unwrap();
            let ctx = context(&payload);
            let mut got = Vec::new();
            index.for_each_match(&ctx, &mut scratch, |k| got.push(*k));
            let unique: BTreeSet<usize> = got.iter().copied().collect();
            prop_assert_eq!(unique.len(), got.len(), "a key was reported twice");
            let expected: BTreeSet<usize> = live.iter().copied().filter(|&i| compiled[i].matches(&ctx)).collect();
            prop_assert_eq!(unique, expected, "on {}", String::from_utf8_lossy(&payload));
        }
    }
}

/// Filters shaped like subscriptions: usually an equality or IN term on a
/// path the documents have, plus other terms; sometimes not indexable.
fn indexable_filter() -> impl Strategy<Value = Expr> {
    let term = (
        path(),
        proptest::collection::vec(literal(), 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(p, lits, use_in, flip)| {
            if use_in || lits.len() > 1 {
                Expr::In {
                    expr: Box::new(Expr::Path(p)),
                    list: lits.into_iter().map(Expr::Literal).collect(),
                    negated: false,
                }
            } else {
                let (path, lit) = (
                    Box::new(Expr::Path(p)),
                    Box::new(Expr::Literal(
                        lits.into_iter().next().unwrap_or(Literal::Null),
                    )),
                );
                let (lhs, rhs) = if flip { (lit, path) } else { (path, lit) };
                Expr::Binary {
                    op: BinaryOp::Eq,
                    lhs,
                    rhs,
                }
            }
        });
    (term, proptest::collection::vec(expr(), 0..2), any::<bool>()).prop_map(|(term, rest, or)| {
        let mut items = vec![term];
        items.extend(rest);
        if items.len() == 1 {
            items.pop().unwrap_or(Expr::Literal(Literal::Null))
        } else if or {
            Expr::Or(items)
        } else {
            Expr::And(items)
        }
    })
}

/// Rewrites JSON text so that every non-ASCII character, and the first
/// character of every string, is a `\u` escape (surrogate pairs above U+FFFF).
fn escape_everything(json: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut first = false;
    let mut chars = json.chars();
    while let Some(c) = chars.next() {
        if !in_string {
            out.push(c);
            if c == '"' {
                in_string = true;
                first = true;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = false;
                out.push(c);
            }
            '\\' => {
                out.push(c);
                out.extend(chars.next());
                first = false;
            }
            c if first || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
                first = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// Guards the generators: a property that only ever compares NULL with NULL
/// proves nothing, so check that random filters on random documents often
/// produce real values and matches.
#[test]
fn generators_produce_meaningful_cases() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut non_null, mut matched, mut path_hits) = (0, 0, 0);
    let total = 2000;
    for _ in 0..total {
        let ast = expr().new_tree(&mut runner).expect("tree").current();
        let doc = document().new_tree(&mut runner).expect("tree").current();
        let mut found = false;
        ast.for_each_path(&mut |p| found |= !reference::path_values(&doc, p).is_empty());
        path_hits += usize::from(found);
        if std::env::var_os("SHOW_SAMPLES").is_some() {
            eprintln!("{ast}  ON  {doc}");
        }
        let value = reference::evaluate_document(&ast, Some(&doc), &context(b""));
        non_null += usize::from(value != statecast_filter::Value::Null);
        matched += usize::from(value.truth() == statecast_filter::Truth::True);
    }
    eprintln!("{non_null} non-NULL, {matched} TRUE, {path_hits} find a field, of {total}");
    assert!(
        non_null * 4 > total,
        "only {non_null} of {total} cases are non-NULL"
    );
    assert!(
        matched * 10 > total,
        "only {matched} of {total} cases match"
    );
    assert!(
        path_hits * 4 > total,
        "only {path_hits} of {total} filters find a field"
    );
}
