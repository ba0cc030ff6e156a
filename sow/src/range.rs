//! Range indexes: built the first time a query uses a field in a range
//! predicate (`< <= > >= BETWEEN`, and `=`) or as its only `order_by` field,
//! then kept up to date by every write. Not persisted: after a restart the
//! first query that wants one builds it again.
//!
//! The filter language compares a string with a number by reading the string
//! as a number, and two strings bytewise, so no single order agrees with it
//! for mixed values. The index therefore keeps two ordered maps: `nums`
//! (numbers, booleans as 1/0, and strings that read as numbers, by numeric
//! value) and `strs` (every string, by bytes). A lookup returns a superset
//! of the records the predicate can be TRUE for, which the query then
//! evaluates with the full filter: like the hash index, it narrows the scan
//! and never changes an answer.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use rustc_hash::{FxHashMap, FxHashSet};
use statecast_filter::Value;
use statecast_filter::ast::{BinaryOp, Expr, Literal, Path};
use statecast_filter::value::{Comparison, Num, compare_numbers, parse_number};

use crate::extract::values_at;

/// A number ordered as the filter language orders numbers (exactly, also
/// integers against doubles). Never NaN.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NumOrd(Num);

impl NumOrd {
    fn of(n: Num) -> Option<NumOrd> {
        match n {
            Num::Null => None,
            Num::Float(x) if x.is_nan() => None,
            n => Some(NumOrd(n)),
        }
    }
}

impl Ord for NumOrd {
    fn cmp(&self, other: &Self) -> Ordering {
        match compare_numbers(self.0, other.0) {
            Comparison::Ordered(o) => o,
            Comparison::Null | Comparison::Unordered => Ordering::Equal,
        }
    }
}

impl PartialOrd for NumOrd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for NumOrd {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for NumOrd {}

/// A range operator, with the literal on the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl RangeOp {
    fn of(op: BinaryOp, flipped: bool) -> Option<RangeOp> {
        let op = match op {
            BinaryOp::Lt => RangeOp::Lt,
            BinaryOp::Le => RangeOp::Le,
            BinaryOp::Gt => RangeOp::Gt,
            BinaryOp::Ge => RangeOp::Ge,
            BinaryOp::Eq => RangeOp::Eq,
            _ => return None,
        };
        Some(if flipped {
            match op {
                RangeOp::Lt => RangeOp::Gt,
                RangeOp::Le => RangeOp::Ge,
                RangeOp::Gt => RangeOp::Lt,
                RangeOp::Ge => RangeOp::Le,
                RangeOp::Eq => RangeOp::Eq,
            }
        } else {
            op
        })
    }

    fn bounds<T: Clone>(self, v: T) -> (Bound<T>, Bound<T>) {
        match self {
            RangeOp::Lt => (Bound::Unbounded, Bound::Excluded(v)),
            RangeOp::Le => (Bound::Unbounded, Bound::Included(v)),
            RangeOp::Gt => (Bound::Excluded(v), Bound::Unbounded),
            RangeOp::Ge => (Bound::Included(v), Bound::Unbounded),
            RangeOp::Eq => (Bound::Included(v.clone()), Bound::Included(v)),
        }
    }
}

/// One range condition of a filter: every condition on the path must hold
/// (they come from one term: a comparison, or both ends of a BETWEEN).
#[derive(Debug)]
pub(crate) struct RangeTerm<'e> {
    pub(crate) path: &'e Path,
    pub(crate) conditions: Vec<(RangeOp, &'e Literal)>,
}

/// Range terms among the top-level AND terms of a filter.
pub(crate) fn range_terms(expr: &Expr) -> Vec<RangeTerm<'_>> {
    let terms: Vec<&Expr> = match expr {
        Expr::And(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for term in terms {
        match term {
            Expr::Binary { op, lhs, rhs } => match (lhs.as_ref(), rhs.as_ref()) {
                (Expr::Path(p), Expr::Literal(l)) => {
                    if let Some(op) = RangeOp::of(*op, false) {
                        out.push(RangeTerm {
                            path: p,
                            conditions: vec![(op, l)],
                        });
                    }
                }
                (Expr::Literal(l), Expr::Path(p)) => {
                    if let Some(op) = RangeOp::of(*op, true) {
                        out.push(RangeTerm {
                            path: p,
                            conditions: vec![(op, l)],
                        });
                    }
                }
                _ => {}
            },
            Expr::Between {
                expr,
                low,
                high,
                negated: false,
            } => {
                if let (Expr::Path(p), Expr::Literal(lo), Expr::Literal(hi)) =
                    (expr.as_ref(), low.as_ref(), high.as_ref())
                {
                    out.push(RangeTerm {
                        path: p,
                        conditions: vec![(RangeOp::Ge, lo), (RangeOp::Le, hi)],
                    });
                }
            }
            _ => {}
        }
    }
    out
}

#[derive(Debug)]
pub(crate) struct RangeIndex {
    pub(crate) path: Path,
    pub(crate) text: String,
    nums: BTreeMap<NumOrd, FxHashSet<u64>>,
    strs: BTreeMap<Box<[u8]>, FxHashSet<u64>>,
    /// Records with more than one value at the path (arrays): while any
    /// exists, the index cannot give the `order_by` order (which uses the
    /// first value).
    multi: FxHashMap<u64, ()>,
    entries: usize,
}

enum Slot {
    Num(NumOrd),
    Str(Box<[u8]>),
}

fn slots_of(value: &Value, out: &mut Vec<Slot>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push(Slot::Num(NumOrd(Num::Int(i64::from(*b))))),
        Value::Int(i) => out.push(Slot::Num(NumOrd(Num::Int(*i)))),
        Value::Float(x) => {
            if let Some(n) = NumOrd::of(Num::Float(*x)) {
                out.push(Slot::Num(n));
            }
        }
        Value::Str(s) if s.is_empty() => {}
        Value::Str(s) => {
            if let Some(n) = parse_number(s).and_then(NumOrd::of) {
                out.push(Slot::Num(n));
            }
            out.push(Slot::Str(s.clone().into_boxed_slice()));
        }
    }
}

impl RangeIndex {
    pub(crate) fn new(path: Path, text: String) -> RangeIndex {
        RangeIndex {
            path,
            text,
            nums: BTreeMap::new(),
            strs: BTreeMap::new(),
            multi: FxHashMap::default(),
            entries: 0,
        }
    }

    fn slots(&self, payload: &[u8], values: &mut Vec<Value>) -> (Vec<Slot>, bool) {
        values.clear();
        let mut slots = Vec::new();
        if values_at(payload, &self.path, values).is_err() {
            return (slots, false);
        }
        for v in values.iter() {
            slots_of(v, &mut slots);
        }
        (slots, values.len() > 1)
    }

    pub(crate) fn insert(&mut self, key: u64, payload: &[u8], values: &mut Vec<Value>) {
        let (slots, multi) = self.slots(payload, values);
        if multi {
            self.multi.insert(key, ());
        }
        for slot in slots {
            let added = match slot {
                Slot::Num(n) => self.nums.entry(n).or_default().insert(key),
                Slot::Str(s) => self.strs.entry(s).or_default().insert(key),
            };
            self.entries += usize::from(added);
        }
    }

    pub(crate) fn remove(&mut self, key: u64, payload: &[u8], values: &mut Vec<Value>) {
        let (slots, _) = self.slots(payload, values);
        self.multi.remove(&key);
        for slot in slots {
            let removed = match slot {
                Slot::Num(n) => remove_from(&mut self.nums, &n, key),
                Slot::Str(s) => remove_from(&mut self.strs, &s, key),
            };
            self.entries -= usize::from(removed);
        }
    }

    /// The keys the conditions allow, or `None` when no condition narrows
    /// them to `limit` keys or fewer (the caller then scans instead). A
    /// condition that allows more than `limit` is left out of the
    /// intersection: the set stays a superset of the matches, which the
    /// filter decides.
    pub(crate) fn candidates(
        &self,
        conditions: &[(RangeOp, &Literal)],
        limit: usize,
    ) -> Option<FxHashSet<u64>> {
        let mut result: Option<FxHashSet<u64>> = None;
        for (op, literal) in conditions {
            let Some(set) = self.candidates_one(*op, literal, limit) else {
                continue;
            };
            result = Some(match result {
                None => set,
                Some(prev) => prev.intersection(&set).copied().collect(),
            });
        }
        result
    }

    /// The keys one condition allows, or `None` past `limit`.
    fn candidates_one(
        &self,
        op: RangeOp,
        literal: &Literal,
        limit: usize,
    ) -> Option<FxHashSet<u64>> {
        let mut out = FxHashSet::default();
        let number = match literal {
            Literal::Null => return Some(out),
            Literal::Bool(b) => Some(Num::Int(i64::from(*b))),
            Literal::Int(i) => Some(Num::Int(*i)),
            Literal::Float(x) => Some(Num::Float(*x)),
            Literal::Str(s) if s.is_empty() => return Some(out),
            Literal::Str(s) => {
                // Strings compare with strings bytewise.
                extend(
                    &mut out,
                    self.strs.range::<[u8], _>(bytes_bounds(op, s)),
                    limit,
                )?;
                parse_number(s)
            }
        };
        let is_str = matches!(literal, Literal::Str(_));
        match number.map(NumOrd::of) {
            // A NaN literal: every range comparison is FALSE.
            Some(None) => {}
            Some(Some(n)) => {
                extend(&mut out, self.nums.range(op.bounds(n)), limit)?;
                // A string that is not a number is above every number.
                if !is_str && matches!(op, RangeOp::Gt | RangeOp::Ge) {
                    extend(&mut out, self.strs.range::<[u8], _>(..), limit)?;
                }
            }
            None => {
                // A non-numeric string literal is above every number.
                if matches!(op, RangeOp::Lt | RangeOp::Le) {
                    extend(&mut out, self.nums.range(..), limit)?;
                }
            }
        }
        Some(out)
    }

    /// The keys in `order_by` order (each distinct value's keys by SowKey),
    /// when the index can give it: no record has several values, and the
    /// values are all numbers or all non-numeric strings.
    pub(crate) fn ordered(&self, descending: bool) -> Option<Vec<Vec<u64>>> {
        if !self.multi.is_empty() {
            return None;
        }
        let sorted = |set: &FxHashSet<u64>| {
            let mut keys: Vec<u64> = set.iter().copied().collect();
            keys.sort_unstable();
            keys
        };
        let groups: Vec<Vec<u64>> = if self.strs.is_empty() {
            let mut g: Vec<_> = self.nums.values().map(sorted).collect();
            if descending {
                g.reverse();
            }
            g
        } else if self.nums.is_empty() {
            let mut g: Vec<_> = self.strs.values().map(sorted).collect();
            if descending {
                g.reverse();
            }
            g
        } else {
            return None;
        };
        Some(groups)
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        self.entries * 10 + (self.nums.len() + self.strs.len()) * 80
    }
}

/// A range index being built from every live record on its first use. The
/// keys of each value are gathered in vectors (appends in order) and turned
/// into sets of the right size once every record is read, rather than
/// growing a hash set by rehashing, one random insert per record and value,
/// while the processor waits. The result is the index that inserting the
/// records one by one gives.
#[derive(Debug)]
pub(crate) struct RangeBuilder {
    path: Path,
    text: String,
    nums: BTreeMap<NumOrd, Vec<u64>>,
    strs: BTreeMap<Box<[u8]>, Vec<u64>>,
    multi: FxHashMap<u64, ()>,
}

impl RangeBuilder {
    pub(crate) fn new(path: Path, text: String) -> RangeBuilder {
        RangeBuilder {
            path,
            text,
            nums: BTreeMap::new(),
            strs: BTreeMap::new(),
            multi: FxHashMap::default(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The record `key`, whose values at the path are `values` if reading
    /// them succeeded (`read`); as [`RangeIndex::insert`], a record that
    /// could not be read is left out.
    pub(crate) fn add(&mut self, key: u64, values: &[Value], read: bool) {
        if !read {
            return;
        }
        if values.len() > 1 {
            self.multi.insert(key, ());
        }
        for value in values {
            let number = match value {
                Value::Null => None,
                Value::Bool(b) => Some(NumOrd(Num::Int(i64::from(*b)))),
                Value::Int(i) => Some(NumOrd(Num::Int(*i))),
                Value::Float(x) => NumOrd::of(Num::Float(*x)),
                Value::Str(s) if s.is_empty() => None,
                Value::Str(s) => parse_number(s).and_then(NumOrd::of),
            };
            if let Some(n) = number {
                self.nums.entry(n).or_default().push(key);
            }
            if let Value::Str(s) = value
                && !s.is_empty()
            {
                // The string is copied only the first time it is seen.
                match self.strs.get_mut(s.as_slice()) {
                    Some(keys) => keys.push(key),
                    None => {
                        self.strs.insert(s.as_slice().into(), vec![key]);
                    }
                }
            }
        }
    }

    pub(crate) fn finish(self) -> RangeIndex {
        fn set(keys: Vec<u64>) -> FxHashSet<u64> {
            let mut set = FxHashSet::with_capacity_and_hasher(keys.len(), Default::default());
            // A record with the same value twice (an array) is there once.
            set.extend(keys);
            set
        }
        let nums: BTreeMap<NumOrd, FxHashSet<u64>> =
            self.nums.into_iter().map(|(k, v)| (k, set(v))).collect();
        let strs: BTreeMap<Box<[u8]>, FxHashSet<u64>> =
            self.strs.into_iter().map(|(k, v)| (k, set(v))).collect();
        let entries = nums.values().chain(strs.values()).map(|s| s.len()).sum();
        RangeIndex {
            path: self.path,
            text: self.text,
            nums,
            strs,
            multi: self.multi,
            entries,
        }
    }
}

fn remove_from<Q: Ord>(map: &mut BTreeMap<Q, FxHashSet<u64>>, k: &Q, key: u64) -> bool {
    let Some(set) = map.get_mut(k) else {
        return false;
    };
    let removed = set.remove(&key);
    if set.is_empty() {
        map.remove(k);
    }
    removed
}

fn bytes_bounds(op: RangeOp, s: &[u8]) -> (Bound<&[u8]>, Bound<&[u8]>) {
    op.bounds(s)
}

/// Adds the keys of `range` to `out`; `None` once more than `limit`.
fn extend<'a, K: 'a>(
    out: &mut FxHashSet<u64>,
    range: impl Iterator<Item = (&'a K, &'a FxHashSet<u64>)> + Clone,
    limit: usize,
) -> Option<()> {
    // Counted before anything is copied: a range past the limit (the
    // sow-1m filter's `/qty >= 10` leaves 80 % of the store) would
    // otherwise fill a set of up to `limit` keys only to drop it.
    let total = range
        .clone()
        .try_fold(out.len(), |n, (_, set)| n.checked_add(set.len()))?;
    if total > limit {
        return None;
    }
    out.reserve(total - out.len());
    for (_, set) in range {
        out.extend(set.iter().copied());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::values_at;
    use proptest::prelude::*;
    use statecast_filter::{Filter, Limits};

    type Contents = (
        Vec<(String, Vec<u64>)>,
        Vec<(Vec<u8>, Vec<u64>)>,
        Vec<u64>,
        usize,
    );

    /// What an index holds, in a comparable form (sets sorted).
    fn contents(index: &RangeIndex) -> Contents {
        let sorted = |set: &FxHashSet<u64>| {
            let mut keys: Vec<u64> = set.iter().copied().collect();
            keys.sort_unstable();
            keys
        };
        let mut multi: Vec<u64> = index.multi.keys().copied().collect();
        multi.sort_unstable();
        (
            index
                .nums
                .iter()
                .map(|(n, s)| (format!("{:?}", n.0), sorted(s)))
                .collect(),
            index
                .strs
                .iter()
                .map(|(k, s)| (k.to_vec(), sorted(s)))
                .collect(),
            multi,
            index.entries,
        )
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            (-3i64..3).prop_map(|i| i.to_string()),
            (-3i64..3).prop_map(|i| format!("{i}.0")),
            Just("1e0".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("\"\"".to_string()),
            Just("\"2\"".to_string()),
            Just("\"b\"".to_string()),
            Just("\"a\"".to_string()),
            Just("{}".to_string()),
            Just("1e".to_string()),
        ]
    }

    /// `candidates` gives every key a condition allows up to `limit` of
    /// them, and `None` (use a scan) past it, whether the groups it walks
    /// are numbers or strings.
    #[test]
    fn candidates_stop_past_the_limit() {
        let path = match Filter::parse("/q", &Limits::default()).map(|f| f.expr().clone()) {
            Ok(Expr::Path(p)) => p,
            other => panic!("not a path: {other:?}"),
        };
        let mut index = RangeIndex::new(path, "/q".into());
        let mut values = Vec::new();
        // Keys 0..10 hold 0..10, keys 10..13 the strings "x", "y", "z".
        for key in 0..10u64 {
            index.insert(key, format!("{{\"q\":{key}}}").as_bytes(), &mut values);
        }
        for (key, s) in [(10u64, "x"), (11, "y"), (12, "z")] {
            index.insert(key, format!("{{\"q\":\"{s}\"}}").as_bytes(), &mut values);
        }
        let sorted = |set: FxHashSet<u64>| {
            let mut keys: Vec<u64> = set.into_iter().collect();
            keys.sort_unstable();
            keys
        };
        let seven = Literal::Int(7);
        // `>= 7`: 7, 8, 9 and the three strings (above every number).
        let ge = [(RangeOp::Ge, &seven)];
        assert_eq!(
            index.candidates(&ge, 6).map(sorted),
            Some(vec![7, 8, 9, 10, 11, 12])
        );
        assert_eq!(index.candidates(&ge, 5), None);
        assert_eq!(index.candidates(&ge, 3), None);
        let y = Literal::Str("y".into());
        // `< 'y'`: "x" and, a non-numeric string being above every
        // number, all ten numbers.
        let lt = [(RangeOp::Lt, &y)];
        assert_eq!(
            index.candidates(&lt, 11).map(sorted),
            Some((0..=10).collect::<Vec<u64>>())
        );
        assert_eq!(index.candidates(&lt, 10), None);
    }

    proptest! {
        /// Building from every record at once gives the index that
        /// inserting them one by one gives (arrays, duplicates, mixed
        /// types, nulls and unreadable records included).
        #[test]
        fn a_built_index_is_the_inserted_index(
            records in proptest::collection::vec(
                (0u64..40, proptest::collection::vec(value(), 0..4), any::<bool>()),
                0..30,
            ),
        ) {
            let path = match Filter::parse("/f", &Limits::default()).map(|f| f.expr().clone()) {
                Ok(Expr::Path(p)) => p,
                other => panic!("not a path: {other:?}"),
            };
            let mut inserted = RangeIndex::new(path.clone(), "/f".into());
            let mut builder = RangeBuilder::new(path.clone(), "/f".into());
            let mut values = Vec::new();
            let mut seen = FxHashSet::default();
            for (key, items, array) in records {
                // Each key once, as in a store.
                if !seen.insert(key) {
                    continue;
                }
                let field = match (array, items.first()) {
                    (false, Some(one)) => one.clone(),
                    _ => format!("[{}]", items.join(",")),
                };
                let payload = format!("{{\"f\":{field}}}");
                inserted.insert(key, payload.as_bytes(), &mut values);
                values.clear();
                let read = values_at(payload.as_bytes(), &path, &mut values).is_ok();
                builder.add(key, &values, read);
            }
            prop_assert_eq!(contents(&builder.finish()), contents(&inserted));
        }
    }
}
