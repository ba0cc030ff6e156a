//! Entry points for the cargo-fuzz targets (`fuzz/fuzz_targets/filter_*.rs`)
//! and for the test that replays their corpora.
//!
//! Both functions must never panic on any input; they panic only when the
//! crate contradicts itself (a printed filter that parses differently, the
//! compiled evaluator disagreeing with the reference interpreter, the index
//! disagreeing with direct evaluation), which is what the fuzzer hunts for.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer as _, MapAccess, SeqAccess, Visitor};

use crate::context::MessageContext;
use crate::filter::{Filter, Scratch};
use crate::index::{IndexScratch, SubscriptionIndex};
use crate::parser::Limits;
use crate::reference;

/// Parses `data` (as lossy UTF-8) as a filter. When it parses, checks that
/// the printed form parses back to the same tree; when it does not, renders
/// the error.
pub fn parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Filter::parse(&text, &Limits::default()) {
        Ok(filter) => check_round_trip(&filter),
        Err(error) => {
            let rendered = error.render(&text);
            assert!(rendered.contains('^'), "caret missing from {rendered}");
        }
    }
}

fn check_round_trip(filter: &Filter) {
    let printed = filter.expr().to_string();
    // The printed form can be longer than the original (it spells `==` as
    // `=`, but `-(5)` and quotes can grow), never deeper.
    let limits = Limits {
        max_text_bytes: usize::MAX,
        ..Limits::default()
    };
    match Filter::parse(&printed, &limits) {
        Ok(again) => assert_eq!(again.expr(), filter.expr(), "printed as {printed}"),
        Err(e) => panic!("printed form {printed:?} does not parse: {e}"),
    }
}

/// Splits `data` at its first NUL byte into filter text and payload (no NUL:
/// all filter, empty payload), evaluates the filter, and when the payload is
/// JSON that serde_json reads the same way the scanner does, compares with
/// the reference interpreter. Also checks that a one-entry
/// [`SubscriptionIndex`] agrees with direct evaluation.
pub fn eval(data: &[u8]) {
    let (text, payload) = match memchr::memchr(0, data) {
        Some(at) => (
            data.get(..at).unwrap_or(&[]),
            data.get(at + 1..).unwrap_or(&[]),
        ),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let Ok(filter) = Filter::parse(&text, &Limits::default()) else {
        return;
    };
    let ctx = MessageContext::new(payload)
        .with_topic("fuzz/topic")
        .with_unix_timestamp(1_700_000_000.5);
    let mut scratch = Scratch::new();
    let value = filter.evaluate_value(&ctx, &mut scratch);
    let truth = filter.evaluate(&ctx, &mut scratch);
    assert_eq!(
        truth,
        value.truth(),
        "evaluate and evaluate_value disagree on {text}"
    );

    if let Some(doc) = comparable_document(payload) {
        let expected = reference::evaluate_document(filter.expr(), Some(&doc), &ctx);
        assert_eq!(
            value, expected,
            "compiled and reference disagree on {text} for {payload:?}"
        );
    }

    let mut index = SubscriptionIndex::new();
    index.insert(0_u8, filter.clone());
    let mut hits = 0;
    index.for_each_match(&ctx, &mut IndexScratch::new(), |_| hits += 1);
    assert_eq!(
        hits == 1,
        filter.matches_with(&ctx, &mut scratch),
        "index disagrees on {text}"
    );
    assert!(hits <= 1, "index reported a key twice");
}

/// The payload as a serde_json document, when the comparison is meaningful:
/// serde_json accepts it and no object in it repeats a member name (serde_json
/// keeps the last of duplicates, the scanner the first).
pub fn comparable_document(payload: &[u8]) -> Option<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let mut de = serde_json::Deserializer::from_slice(payload);
    de.deserialize_any(NoDuplicates).ok()?;
    Some(doc)
}

/// Walks a document, failing on the first object that repeats a name.
struct NoDuplicates;

impl<'de> de::DeserializeSeed<'de> for NoDuplicates {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(NoDuplicates)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !names.insert(name) {
                return Err(de::Error::custom("duplicate member name"));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}
