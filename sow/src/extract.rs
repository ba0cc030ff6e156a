//! Every value at one path of a JSON payload, read in one pass without
//! building a document, with the filter language's path semantics: a field
//! step applied to an array applies to each element, an array at the end of
//! the path contributes each element (nested arrays flattened), `[n]` picks
//! one element, an object is not a value, and the first of duplicate member
//! names wins.
//!
//! The filter crate's scanner is private to it and its public
//! `evaluate_value` gives only the first value of a path; hash indexes need
//! all of them (an `=` on an array field is true when any element is), so
//! this small extraction exists. It stops at the end of the top-level member
//! the path starts with.

use statecast_filter::Value;
use statecast_filter::ast::{Path, Step};
use statecast_filter::value::{Num, parse_number};

/// Deepest nesting followed (as the filter scanner and serde_json).
const MAX_NESTING: u32 = 128;

/// The payload is not JSON where it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// What was wrong.
    pub reason: &'static str,
    /// Byte offset.
    pub offset: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn fail<T>(&self, reason: &'static str) -> Result<T, Malformed> {
        Err(Malformed {
            reason,
            offset: self.at,
        })
    }

    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.at) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, b: u8, reason: &'static str) -> Result<(), Malformed> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(reason)
        }
    }

    /// Reads a string (the cursor on its opening quote); returns the raw
    /// contents and whether they contain escapes.
    fn string(&mut self) -> Result<(&'a [u8], bool), Malformed> {
        self.expect(b'"', "expected a string")?;
        let start = self.at;
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(self.at..).unwrap_or_default();
            let Some(i) = quote_or_backslash(rest) else {
                self.at = self.bytes.len();
                return self.fail("string not closed");
            };
            self.at += i;
            if self.bytes.get(self.at) == Some(&b'\\') {
                escaped = true;
                self.at += 2;
            } else {
                let raw = self.bytes.get(start..self.at).unwrap_or_default();
                self.at += 1;
                return Ok((raw, escaped));
            }
        }
    }

    /// Skips the value under the cursor, checking it as far as the walk
    /// would (the same errors at the same places, the same nesting limit).
    /// A loop over an explicit stack of the containers open, not a call per
    /// value: skipping is most of what finding a field late in a document
    /// costs.
    fn skip_value(&mut self, depth: u32) -> Result<(), Malformed> {
        // `open[i]`: whether the container opened at level i is an object.
        let mut open = [false; MAX_NESTING as usize + 2];
        let mut level = 0usize;
        'value: loop {
            if depth as usize + level > MAX_NESTING as usize {
                return self.fail("nesting too deep");
            }
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(c @ (b'{' | b'[')) => {
                    self.at += 1;
                    let object = c == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        match open.get_mut(level) {
                            Some(slot) => *slot = object,
                            None => return self.fail("nesting too deep"),
                        }
                        level += 1;
                        if object {
                            self.string()?;
                            self.expect(b':', "expected ':' after a member name")?;
                        }
                        continue 'value;
                    }
                }
                Some(_) => self.skip_scalar()?,
                None => return self.fail("expected a value, found the end"),
            }
            // A value ended: close what it ends, or go on to the next.
            loop {
                let Some(inner) = level.checked_sub(1) else {
                    return Ok(());
                };
                let object = open.get(inner).copied().unwrap_or_default();
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.at += 1;
                        if object {
                            self.string()?;
                            self.expect(b':', "expected ':' after a member name")?;
                        }
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.at += 1;
                        level = inner;
                    }
                    (_, true) => return self.fail("expected ',' or '}' in an object"),
                    (_, false) => return self.fail("expected ',' or ']' in an array"),
                }
            }
        }
    }

    /// [`Cursor::scalar`] without the value: a number is checked against
    /// `parse_number`'s grammar (which `parse_number` then never refuses)
    /// but not converted, which most of a skip's time went to.
    fn skip_scalar(&mut self) -> Result<(), Malformed> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        for word in [&b"true"[..], b"false", b"null"] {
            if rest.starts_with(word) {
                self.at += word.len();
                return Ok(());
            }
        }
        let len = rest
            .iter()
            .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .unwrap_or(rest.len());
        if len > 0 && is_number(rest.get(..len).unwrap_or_default()) {
            self.at += len;
            Ok(())
        } else {
            self.fail("not a JSON value")
        }
    }

    fn scalar(&mut self) -> Result<Value, Malformed> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        for (word, value) in [
            (&b"true"[..], Value::Bool(true)),
            (b"false", Value::Bool(false)),
            (b"null", Value::Null),
        ] {
            if rest.starts_with(word) {
                self.at += word.len();
                return Ok(value);
            }
        }
        let len = rest
            .iter()
            .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .unwrap_or(rest.len());
        let text = rest.get(..len).unwrap_or_default();
        match (len, parse_number(text)) {
            (1.., Some(Num::Int(i))) => {
                self.at += len;
                Ok(Value::Int(i))
            }
            (1.., Some(Num::Float(x))) => {
                self.at += len;
                Ok(Value::Float(x))
            }
            _ => self.fail("not a JSON value"),
        }
    }

    /// Walks the value under the cursor along `steps`, pushing what it finds.
    fn walk(&mut self, steps: &[Step], out: &mut Vec<Value>, depth: u32) -> Result<(), Malformed> {
        if depth > MAX_NESTING {
            return self.fail("nesting too deep");
        }
        match (self.peek(), steps.first()) {
            (Some(b'['), _) => {
                // Field steps and the end of the path apply to each element;
                // an index step picks one.
                self.at += 1;
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(());
                }
                let mut position = 0u32;
                loop {
                    match steps.first() {
                        Some(Step::Index(n)) if *n == position => {
                            self.walk(steps.get(1..).unwrap_or_default(), out, depth + 1)?
                        }
                        Some(Step::Index(_)) => self.skip_value(depth + 1)?,
                        _ => self.walk(steps, out, depth + 1)?,
                    }
                    position = position.saturating_add(1);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return self.fail("expected ',' or ']' in an array"),
                    }
                }
            }
            (Some(b'{'), Some(Step::Field(name))) => {
                self.at += 1;
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(());
                }
                let mut found = false;
                loop {
                    let (raw, escaped) = self.string()?;
                    self.expect(b':', "expected ':' after a member name")?;
                    let is_match = !found
                        && if escaped {
                            unescape(raw) == name.as_bytes()
                        } else {
                            raw == name.as_bytes()
                        };
                    if is_match {
                        found = true;
                        self.walk(steps.get(1..).unwrap_or_default(), out, depth + 1)?;
                        if depth == 0 {
                            // Top level: the first member of this name is
                            // all the path can reach.
                            return Ok(());
                        }
                    } else {
                        self.skip_value(depth + 1)?;
                    }
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return self.fail("expected ',' or '}' in an object"),
                    }
                }
            }
            (Some(b'"'), None) => {
                let (raw, escaped) = self.string()?;
                let bytes = if escaped { unescape(raw) } else { raw.to_vec() };
                out.push(Value::Str(bytes));
                Ok(())
            }
            (Some(b'{' | b'"'), _) => self.skip_value(depth),
            (Some(_), None) => {
                let v = self.scalar()?;
                out.push(v);
                Ok(())
            }
            (Some(_), Some(_)) => self.scalar().map(|_| ()),
            (None, _) => self.fail("expected a value, found the end"),
        }
    }
}

/// Where the first `"` or `\\` of `bytes` is: eight bytes at a time (a
/// string's contents are most of what a skip reads).
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);
    let (chunks, tail) = bytes.as_chunks::<8>();
    for (n, chunk) in chunks.iter().enumerate() {
        let word = u64::from_le_bytes(*chunk);
        let (q, b) = (word ^ QUOTES, word ^ BACKSLASHES);
        // A zero byte in q or b (the classic test: exact for the lowest
        // such byte, which is the one wanted).
        let found = ((q.wrapping_sub(ONES) & !q) | (b.wrapping_sub(ONES) & !b)) & HIGHS;
        if found != 0 {
            return Some(n * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|i| chunks.len() * 8 + i)
}

/// Whether `parse_number` reads `text` as a number: its grammar (an
/// optional sign, digits with an optional decimal point, at least one
/// digit, an optional exponent with digits), for which it then always
/// gives a value.
fn is_number(text: &[u8]) -> bool {
    let digits = |at: &mut usize| {
        let start = *at;
        while text.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - start
    };
    let mut i = usize::from(matches!(text.first(), Some(b'+' | b'-')));
    let mut n = digits(&mut i);
    if text.get(i) == Some(&b'.') {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return false;
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == text.len()
}

/// Pushes every value at `path` in `payload` onto `out` (nulls included, as
/// `Value::Null`). A payload that is not JSON where it is read is an error.
pub fn values_at(payload: &[u8], path: &Path, out: &mut Vec<Value>) -> Result<(), Malformed> {
    let mut cursor = Cursor {
        bytes: payload,
        at: 0,
    };
    cursor.walk(&path.steps, out, 0)
}

/// Every value at each of `paths`, as [`values_at`] gives it for each path
/// alone (`out[i]` and `results[i]` for `paths[i]`), in one walk over the
/// top-level members instead of one per path: a range index build for
/// several fields reads each record once, and a field near the end of a
/// document (the sow-1m query's `/qty`) no longer costs a second walk over
/// everything before it.
///
/// The exact semantics of one walk per path are kept, errors included: a
/// path's walk ends at the first top-level member of its name (what
/// follows is not read for it, so damage there is not its error), and a
/// member skipped before that is skipped for it too (damage there is). A
/// payload that is not an object, or a path that does not start with a
/// field name, takes the single-path walk.
pub(crate) fn values_at_each(
    payload: &[u8],
    paths: &[&Path],
    out: &mut [Vec<Value>],
    results: &mut [Result<(), Malformed>],
) {
    let mut cursor = Cursor {
        bytes: payload,
        at: 0,
    };
    let simple = cursor.peek() == Some(b'{')
        && paths
            .iter()
            .all(|p| matches!(p.steps.first(), Some(Step::Field(_))))
        // Which paths are done is a bit mask.
        && paths.len() <= 64
        && out.len() == paths.len()
        && results.len() == paths.len();
    if !simple {
        for ((path, out), result) in paths.iter().zip(out.iter_mut()).zip(results.iter_mut()) {
            *result = values_at(payload, path, out);
        }
        return;
    }
    // `pending` paths have not met their member yet; everything that
    // happens to the shared cursor happens to each of them.
    let mut pending = paths.len();
    let mut done = 0u64;
    let finish_pending =
        |done: u64, results: &mut [Result<(), Malformed>], r: Result<(), Malformed>| {
            for (i, result) in results.iter_mut().enumerate() {
                if done & (1 << i) == 0 {
                    *result = r;
                }
            }
        };
    cursor.at += 1;
    if cursor.peek() == Some(b'}') {
        results.iter_mut().for_each(|r| *r = Ok(()));
        return;
    }
    while pending > 0 {
        let member = cursor.string().and_then(|name| {
            cursor
                .expect(b':', "expected ':' after a member name")
                .map(|()| name)
        });
        let (raw, escaped) = match member {
            Ok(m) => m,
            Err(m) => return finish_pending(done, results, Err(m)),
        };
        let unescaped = escaped.then(|| unescape(raw));
        let name: &[u8] = unescaped.as_deref().unwrap_or(raw);
        let value_at = cursor.at;
        for (i, path) in paths.iter().enumerate() {
            let Some((Step::Field(field), rest)) = path.steps.split_first() else {
                continue;
            };
            if done & (1 << i) == 0 && field.as_bytes() == name {
                let mut walker = Cursor {
                    bytes: payload,
                    at: value_at,
                };
                let result = match out.get_mut(i) {
                    Some(out) => walker.walk(rest, out, 1),
                    None => Ok(()),
                };
                if let Some(r) = results.get_mut(i) {
                    *r = result;
                }
                done |= 1 << i;
                pending -= 1;
            }
        }
        if pending == 0 {
            break;
        }
        let next = cursor.skip_value(1).and_then(|()| match cursor.peek() {
            Some(b',') => {
                cursor.at += 1;
                Ok(true)
            }
            Some(b'}') => Ok(false),
            _ => cursor.fail("expected ',' or '}' in an object"),
        });
        match next {
            Ok(true) => {}
            Ok(false) => return finish_pending(done, results, Ok(())),
            Err(m) => return finish_pending(done, results, Err(m)),
        }
    }
}

/// The first value at `path`, NULL if none (or if the payload is malformed).
pub fn first_value(payload: &[u8], path: &Path, scratch: &mut Vec<Value>) -> Value {
    scratch.clear();
    match values_at(payload, path, scratch) {
        Ok(()) => scratch.drain(..).next().unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// JSON string unescaping: `\uXXXX` with surrogate pairs (a lone surrogate
/// becomes U+FFFD), the usual one-letter escapes, and `\c` as `c`, as the
/// filter scanner does.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&e) = raw.get(i + 1) else {
            break;
        };
        i += 2;
        let simple = match e {
            b'n' => Some(b'\n'),
            b't' => Some(b'\t'),
            b'r' => Some(b'\r'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'u' => None,
            other => Some(other),
        };
        if let Some(c) = simple {
            out.push(c);
            continue;
        }
        let hex = |at: usize| -> Option<u32> {
            let s = std::str::from_utf8(raw.get(at..at + 4)?).ok()?;
            u32::from_str_radix(s, 16).ok()
        };
        let Some(first) = hex(i) else {
            out.extend_from_slice("\u{FFFD}".as_bytes());
            continue;
        };
        i += 4;
        let code = if (0xD800..0xDC00).contains(&first) {
            match (raw.get(i..i + 2), hex(i + 2)) {
                (Some(b"\\u"), Some(low)) if (0xDC00..0xE000).contains(&low) => {
                    i += 6;
                    0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
                }
                _ => 0xFFFD,
            }
        } else {
            first
        };
        let c = char::from_u32(code).unwrap_or('\u{FFFD}');
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use statecast_filter::{Filter, Limits};

    fn path(text: &str) -> Path {
        match Filter::parse(text, &Limits::default()).map(|f| f.expr().clone()) {
            Ok(statecast_filter::ast::Expr::Path(p)) => p,
            other => panic!("not a path: {other:?}"),
        }
    }

    fn all(payload: &str, p: &str) -> Result<Vec<Value>, Malformed> {
        let mut out = Vec::new();
        values_at(payload.as_bytes(), &path(p), &mut out).map(|()| out)
    }

    /// A random JSON text over a few member names (so that paths meet
    /// them, duplicates and escaped names included), as a string.
    fn json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just("a"),
            Just("b"),
            Just("c"),
            Just("a\\u0062"),
            Just("\\u0061")
        ];
        let leaf = prop_oneof![
            any::<i32>().prop_map(|i| i.to_string()),
            (-1e6f64..1e6).prop_map(|x| format!("{x:?}")),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("\"10\"".to_string()),
            Just("\"x\\\"y\"".to_string()),
            Just("\"\"".to_string()),
            Just("1e".to_string()),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((name.clone(), inner), 0..5).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(n, v)| format!("\"{n}\" : {v}"))
                        .collect();
                    format!("{{ {} }}", members.join(","))
                }),
            ]
        })
    }

    /// The skip as it was, one call per value: the reference for the loop.
    fn skip_recursive(c: &mut Cursor<'_>, depth: u32) -> Result<(), Malformed> {
        if depth > MAX_NESTING {
            return c.fail("nesting too deep");
        }
        match c.peek() {
            Some(b'"') => c.string().map(|_| ()),
            Some(b'{') => {
                c.at += 1;
                if c.peek() == Some(b'}') {
                    c.at += 1;
                    return Ok(());
                }
                loop {
                    c.string()?;
                    c.expect(b':', "expected ':' after a member name")?;
                    skip_recursive(c, depth + 1)?;
                    match c.peek() {
                        Some(b',') => c.at += 1,
                        Some(b'}') => {
                            c.at += 1;
                            return Ok(());
                        }
                        _ => return c.fail("expected ',' or '}' in an object"),
                    }
                }
            }
            Some(b'[') => {
                c.at += 1;
                if c.peek() == Some(b']') {
                    c.at += 1;
                    return Ok(());
                }
                loop {
                    skip_recursive(c, depth + 1)?;
                    match c.peek() {
                        Some(b',') => c.at += 1,
                        Some(b']') => {
                            c.at += 1;
                            return Ok(());
                        }
                        _ => return c.fail("expected ',' or ']' in an array"),
                    }
                }
            }
            Some(_) => c.scalar().map(|_| ()),
            None => c.fail("expected a value, found the end"),
        }
    }

    #[test]
    fn the_skip_keeps_the_nesting_limit() {
        for n in [120usize, 127, 128, 129, 130, 200] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let doc = format!("{}1{}", open.repeat(n), close.repeat(n));
                for depth in [0, 1, 5] {
                    let mut a = Cursor {
                        bytes: doc.as_bytes(),
                        at: 0,
                    };
                    let mut b = Cursor {
                        bytes: doc.as_bytes(),
                        at: 0,
                    };
                    assert_eq!(
                        a.skip_value(depth),
                        skip_recursive(&mut b, depth),
                        "{n} {depth}"
                    );
                    assert_eq!(a.at, b.at);
                }
            }
        }
    }

    proptest::proptest! {
        /// The skip's loop accepts and refuses what the recursive skip did,
        /// at the same places, and ends where it ended.
        #[test]
        fn the_skip_is_the_recursive_skip(
            doc in json(),
            cut in proptest::option::of((0usize..200, proptest::sample::select(b"{}[],:\"\\ 1ex".to_vec()))),
            depth in proptest::sample::select(vec![0u32, 1, 125, 127]),
        ) {
            let mut bytes = doc.into_bytes();
            if let Some((at, byte)) = cut
                && let Some(b) = bytes.get_mut(at)
            {
                *b = byte;
            }
            let mut a = Cursor { bytes: &bytes, at: 0 };
            let mut b = Cursor { bytes: &bytes, at: 0 };
            proptest::prop_assert_eq!(a.skip_value(depth), skip_recursive(&mut b, depth));
            proptest::prop_assert_eq!(a.at, b.at);
        }

        /// The skip's number check accepts what `parse_number` reads.
        #[test]
        fn is_number_is_parse_number_accepting(
            text in proptest::collection::vec(proptest::sample::select(b"0123456789+-.eEx".to_vec()), 0..8),
        ) {
            proptest::prop_assert_eq!(is_number(&text), parse_number(&text).is_some());
        }

        /// The eight-at-a-time search finds the first quote or backslash.
        #[test]
        fn quote_or_backslash_finds_the_first(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'a', b'"', b'\\', 0x80, 0xff, 0, 0x21, 0x5b, 0x5d]), 0..40),
        ) {
            proptest::prop_assert_eq!(
                quote_or_backslash(&bytes),
                bytes.iter().position(|&b| b == b'"' || b == b'\\')
            );
        }

        /// One walk for several paths finds what one walk per path finds,
        /// errors (and where they are) included, also on damaged documents.
        #[test]
        fn one_walk_for_several_paths_is_one_walk_per_path(
            doc in json(),
            cut in proptest::option::of((0usize..400, proptest::prelude::any::<u8>())),
            wanted in proptest::collection::vec(
                proptest::sample::select(vec!["/a", "/b", "/c", "/ab", "/a/b", "/b/a/c", "/c[1]", "/a[0]/b", "/b[2]"]),
                1..5,
            ),
        ) {
            let mut bytes = format!("{{\"a\":{doc},\"b\":{doc},\"c\":[{doc},1]}}").into_bytes();
            if let Some((at, byte)) = cut
                && let Some(b) = bytes.get_mut(at)
            {
                *b = byte;
            }
            for payload in [&bytes[..], doc.as_bytes()] {
                let paths: Vec<Path> = wanted.iter().map(|p| path(p)).collect();
                let paths: Vec<&Path> = paths.iter().collect();
                let mut out = vec![Vec::new(); paths.len()];
                let mut results = vec![Ok(()); paths.len()];
                values_at_each(payload, &paths, &mut out, &mut results);
                for ((p, got), result) in paths.iter().zip(&out).zip(&results) {
                    let mut one = Vec::new();
                    let expected = values_at(payload, p, &mut one);
                    proptest::prop_assert_eq!(result, &expected, "{}", p);
                    proptest::prop_assert_eq!(got, &one, "{}", p);
                }
            }
        }
    }

    #[test]
    fn paths_follow_the_filter_semantics() {
        let doc = r#"{"a":1,"s":"x\"y","arr":[1,[2,3],{"b":4}],"o":{"b":{"c":"deep"}},"legs":[{"px":1},{"px":2}],"a":9,"e":"caf\u00e9"}"#;
        assert_eq!(all(doc, "/a"), Ok(vec![Value::Int(1)]));
        assert_eq!(all(doc, "/s"), Ok(vec![Value::Str(b"x\"y".to_vec())]));
        assert_eq!(
            all(doc, "/arr"),
            Ok(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
        );
        assert_eq!(all(doc, "/arr[1]"), Ok(vec![Value::Int(2), Value::Int(3)]));
        assert_eq!(all(doc, "/arr/b"), Ok(vec![Value::Int(4)]));
        assert_eq!(all(doc, "/o/b/c"), Ok(vec![Value::Str(b"deep".to_vec())]));
        assert_eq!(all(doc, "/o"), Ok(vec![]));
        assert_eq!(all(doc, "/legs/px"), Ok(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!(all(doc, "/missing"), Ok(vec![]));
        assert_eq!(
            all(doc, "/e"),
            Ok(vec![Value::Str("café".as_bytes().to_vec())])
        );
        assert!(all("not json", "/a").is_err());
        assert!(all(r#"{"a":"#, "/a").is_err());
    }
}
