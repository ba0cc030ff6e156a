//! The subscription index, by table: which payload values find which
//! equality terms, that unindexed filters still run, that removal and
//! replacement work, that each key is reported once; and 10,000 equality
//! subscriptions each receiving exactly their messages.

use std::collections::BTreeSet;

use statecast_filter::{Filter, IndexScratch, Limits, MessageContext, SubscriptionIndex};

fn filter(text: &str) -> Filter {
    Filter::parse(text, &Limits::default()).unwrap_or_else(|e| panic!("{}", e.render(text)))
}

fn matches(index: &SubscriptionIndex<&'static str>, payload: &str) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let mut count = 0;
    index.for_each_match(
        &MessageContext::new(payload.as_bytes()),
        &mut IndexScratch::new(),
        |k| {
            out.insert(*k);
            count += 1;
        },
    );
    assert_eq!(count, out.len(), "a key was reported twice for {payload}");
    out
}

fn index_of(filters: &[(&'static str, &str)]) -> SubscriptionIndex<&'static str> {
    let mut index = SubscriptionIndex::new();
    for (key, text) in filters {
        index.insert(*key, filter(text));
    }
    index
}

#[test]
fn keys_follow_the_comparison_rules() {
    let index = index_of(&[
        ("num", "/qty = 100"),
        ("numstr", "/qty = '100'"),
        ("float", "/qty = 100.5"),
        ("str", "/qty = 'abc'"),
        ("bool", "/qty = TRUE"),
        ("flipped", "100 = /qty"),
    ]);
    assert_eq!(index.unindexed_len(), 0);
    let set = |v: &[&'static str]| v.iter().copied().collect::<BTreeSet<_>>();
    assert_eq!(
        matches(&index, r#"{"qty":100}"#),
        set(&["num", "numstr", "flipped"])
    );
    assert_eq!(
        matches(&index, r#"{"qty":100.0}"#),
        set(&["num", "numstr", "flipped"])
    );
    assert_eq!(
        matches(&index, r#"{"qty":1e2}"#),
        set(&["num", "numstr", "flipped"])
    );
    assert_eq!(
        matches(&index, r#"{"qty":"100"}"#),
        set(&["num", "numstr", "flipped"])
    );
    assert_eq!(
        matches(&index, r#"{"qty":"1e2"}"#),
        set(&["num", "flipped"])
    );
    assert_eq!(matches(&index, r#"{"qty":100.5}"#), set(&["float"]));
    assert_eq!(matches(&index, r#"{"qty":"abc"}"#), set(&["str"]));
    assert_eq!(matches(&index, r#"{"qty":true}"#), set(&["bool"]));
    assert_eq!(matches(&index, r#"{"qty":1}"#), set(&["bool"]));
    assert_eq!(matches(&index, r#"{"qty":"\u0061bc"}"#), set(&["str"]));
    assert_eq!(matches(&index, r#"{"qty":null}"#), set(&[]));
    assert_eq!(matches(&index, r#"{"other":100}"#), set(&[]));
}

#[test]
fn in_terms_arrays_and_other_terms() {
    let index = index_of(&[
        ("in", "/sym IN ('IBM', 'MSFT') AND /px > 10"),
        ("eq", "/px > 10 AND /sym = 'IBM'"),
        ("tag", "/tags = 'urgent'"),
        ("nested", "(/a = 1 AND (/sym = 'ORCL' AND /px < 5))"),
        ("or", "/sym = 'IBM' OR /px = 3"),
        ("none", "/px > 1000"),
    ]);
    assert_eq!(index.unindexed_len(), 2);
    let set = |v: &[&'static str]| v.iter().copied().collect::<BTreeSet<_>>();
    assert_eq!(
        matches(&index, r#"{"sym":"IBM","px":11}"#),
        set(&["in", "eq", "or"])
    );
    assert_eq!(matches(&index, r#"{"sym":"MSFT","px":11}"#), set(&["in"]));
    assert_eq!(matches(&index, r#"{"sym":"IBM","px":9}"#), set(&["or"]));
    assert_eq!(
        matches(&index, r#"{"sym":"ORCL","px":3,"a":1}"#),
        set(&["nested", "or"])
    );
    assert_eq!(
        matches(&index, r#"{"tags":["x","urgent"],"px":2000}"#),
        set(&["tag", "none"])
    );
    assert_eq!(
        matches(&index, r#"{"sym":["MSFT","IBM"],"px":11}"#),
        set(&["in", "eq", "or"])
    );
}

#[test]
fn remove_and_replace() {
    let mut index = index_of(&[("a", "/s = 'x'"), ("b", "/s = 'x'"), ("c", "/t > 1")]);
    assert_eq!(index.len(), 3);
    assert!(index.remove(&"a").is_some());
    assert!(index.remove(&"a").is_none());
    assert_eq!(
        matches(&index, r#"{"s":"x","t":2}"#),
        ["b", "c"].into_iter().collect()
    );
    let old = index.insert("b", filter("/s = 'y'"));
    assert_eq!(
        old.map(|f| f.text().to_owned()).as_deref(),
        Some("/s = 'x'")
    );
    assert_eq!(matches(&index, r#"{"s":"x"}"#), BTreeSet::new());
    assert_eq!(matches(&index, r#"{"s":"y"}"#), ["b"].into_iter().collect());
    assert!(index.remove(&"c").is_some());
    assert!(index.remove(&"b").is_some());
    assert!(index.is_empty());
    assert_eq!(matches(&index, r#"{"s":"y"}"#), BTreeSet::new());
    // Slots are reused after removal.
    index.insert("d", filter("/s = 'y'"));
    assert_eq!(matches(&index, r#"{"s":"y"}"#), ["d"].into_iter().collect());
    assert_eq!(index.get(&"d").map(Filter::text), Some("/s = 'y'"));
}

#[test]
fn malformed_payloads_fall_back_to_full_evaluation() {
    let index = index_of(&[
        ("all", "1 = 1"),
        ("null", "/s IS NULL"),
        ("eq", "/s = 'x'"),
        ("z", "/z = 1"),
    ]);
    // The index scan (for /s and /z) reads past /s and finds garbage; the
    // filter `/s = 'x'` alone would stop at /s, so the index must not
    // simply drop it.
    let set = matches(&index, r#"{"s":"x", garbage"#);
    assert_eq!(set, ["all", "eq"].into_iter().collect());
    assert_eq!(
        matches(&index, "not json"),
        ["all", "null"].into_iter().collect()
    );
}

#[test]
fn ten_thousand_subscribers_each_get_their_messages() {
    let mut index = SubscriptionIndex::new();
    for i in 0..10_000u32 {
        index.insert(i, filter(&format!("/symbol = 'S{i}'")));
    }
    assert_eq!(index.unindexed_len(), 0);
    let mut scratch = IndexScratch::new();
    for i in (0..10_000u32).step_by(7) {
        let payload = format!(r#"{{"price":1.5,"symbol":"S{i}","qty":3}}"#);
        let mut got = Vec::new();
        index.for_each_match(
            &MessageContext::new(payload.as_bytes()),
            &mut scratch,
            |k| got.push(*k),
        );
        assert_eq!(got, vec![i]);
    }
    let mut got = Vec::new();
    index.for_each_match(
        &MessageContext::new(br#"{"symbol":"S10000"}"#),
        &mut scratch,
        |k| got.push(*k),
    );
    assert!(got.is_empty());
}

#[test]
fn filters_and_indexes_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Filter>();
    assert_send_sync::<SubscriptionIndex<u64>>();
    fn assert_send<T: Send>() {}
    assert_send::<statecast_filter::Scratch>();
    assert_send::<IndexScratch>();
}
