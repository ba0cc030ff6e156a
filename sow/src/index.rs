//! Hash indexes on declared fields, used by `=` and `IN` terms (alone or
//! ANDed with the rest of the filter).
//!
//! Keys agree with the filter language's `=`: strings by their bytes, and
//! numbers by value ([`NumKey`]); a string that reads as a number is filed
//! under both. A lookup may return candidates that `=` would refuse (`'2.0'`
//! and `'2'` share the number 2); the query evaluates the full filter on
//! every candidate, so the index only ever narrows the scan, never changes
//! the answer.

use rustc_hash::{FxHashMap, FxHashSet};
use statecast_filter::Value;
use statecast_filter::ast::{BinaryOp, Expr, Literal, Path};
use statecast_filter::value::{Num, NumKey, parse_number};

use crate::extract::values_at;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    Str(Box<[u8]>),
    Num(NumKey),
}

/// The index keys a payload value is filed under.
pub(crate) fn keys_of_value(value: &Value, out: &mut Vec<IndexKey>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push(IndexKey::Num(NumKey::Int(i64::from(*b)))),
        Value::Int(i) => out.push(IndexKey::Num(NumKey::Int(*i))),
        Value::Float(x) => {
            if let Some(k) = NumKey::of(Num::Float(*x)) {
                out.push(IndexKey::Num(k));
            }
        }
        Value::Str(s) if s.is_empty() => {}
        Value::Str(s) => {
            out.push(IndexKey::Str(s.clone().into_boxed_slice()));
            if let Some(k) = parse_number(s).and_then(NumKey::of) {
                out.push(IndexKey::Num(k));
            }
        }
    }
}

/// Removes repeated keys (a payload value yields one or two keys, so the
/// lists are short).
fn dedup(keys: &mut Vec<IndexKey>) {
    let mut i = 0;
    while i < keys.len() {
        let seen = keys
            .get(..i)
            .zip(keys.get(i))
            .is_some_and(|(before, k)| before.contains(k));
        if seen {
            keys.remove(i);
        } else {
            i += 1;
        }
    }
}

/// The index keys to look up for a literal on the other side of `=`.
fn keys_of_literal(lit: &Literal, out: &mut Vec<IndexKey>) {
    match lit {
        Literal::Null => {}
        Literal::Bool(b) => keys_of_value(&Value::Bool(*b), out),
        Literal::Int(i) => keys_of_value(&Value::Int(*i), out),
        Literal::Float(x) => keys_of_value(&Value::Float(*x), out),
        Literal::Str(s) => keys_of_value(&Value::Str(s.clone()), out),
    }
}

#[derive(Debug)]
pub(crate) struct HashIndex {
    pub(crate) path: Path,
    pub(crate) text: String,
    map: FxHashMap<IndexKey, FxHashSet<u64>>,
    entries: usize,
}

impl HashIndex {
    pub(crate) fn new(path: Path, text: String) -> HashIndex {
        HashIndex {
            path,
            text,
            map: FxHashMap::default(),
            entries: 0,
        }
    }

    fn keys_of_payload(&self, payload: &[u8], values: &mut Vec<Value>, keys: &mut Vec<IndexKey>) {
        values.clear();
        keys.clear();
        // A payload that is not JSON has no values: every field is NULL for it.
        if values_at(payload, &self.path, values).is_err() {
            return;
        }
        for v in values.iter() {
            keys_of_value(v, keys);
        }
        dedup(keys);
    }

    pub(crate) fn insert(&mut self, key: u64, payload: &[u8], values: &mut Vec<Value>) {
        let mut keys = Vec::new();
        self.keys_of_payload(payload, values, &mut keys);
        for k in keys {
            if self.map.entry(k).or_default().insert(key) {
                self.entries += 1;
            }
        }
    }

    pub(crate) fn remove(&mut self, key: u64, payload: &[u8], values: &mut Vec<Value>) {
        let mut keys = Vec::new();
        self.keys_of_payload(payload, values, &mut keys);
        for k in keys {
            if let Some(set) = self.map.get_mut(&k) {
                if set.remove(&key) {
                    self.entries -= 1;
                }
                if set.is_empty() {
                    self.map.remove(&k);
                }
            }
        }
    }

    /// Adds the keys of records holding one of `literals` to `out`;
    /// `None` once they are more than `limit` (the caller then scans).
    pub(crate) fn lookup(
        &self,
        literals: &[&Literal],
        out: &mut FxHashSet<u64>,
        limit: usize,
    ) -> Option<()> {
        let mut keys = Vec::new();
        for lit in literals {
            keys_of_literal(lit, &mut keys);
        }
        // Counted before anything is copied, as the range index does: a
        // set past the limit is dropped for a scan anyway.
        let sets: Vec<&FxHashSet<u64>> = keys.iter().filter_map(|k| self.map.get(k)).collect();
        let total = sets
            .iter()
            .try_fold(out.len(), |n, set| n.checked_add(set.len()))?;
        if total > limit {
            return None;
        }
        out.reserve(total - out.len());
        for set in sets {
            out.extend(set.iter().copied());
        }
        Some(())
    }

    /// Approximate bytes held (for the overhead report).
    pub(crate) fn approx_bytes(&self) -> usize {
        // A set entry is 8 bytes plus a control byte at 7/8 load; a map entry
        // is the key (~32 bytes with its box) and the set header (32 bytes).
        self.entries * 10 + self.map.len() * 72
    }
}

/// An index term of a filter: `/path = literal` (either side) or
/// `/path IN (literal, …)` at the top level or as one term of a top-level AND.
pub(crate) fn index_terms(expr: &Expr) -> Vec<(&Path, Vec<&Literal>)> {
    let mut out = Vec::new();
    let terms: Vec<&Expr> = match expr {
        Expr::And(items) => items.iter().collect(),
        other => vec![other],
    };
    for term in terms {
        match term {
            Expr::Binary {
                op: BinaryOp::Eq,
                lhs,
                rhs,
            } => match (lhs.as_ref(), rhs.as_ref()) {
                (Expr::Path(p), Expr::Literal(l)) | (Expr::Literal(l), Expr::Path(p)) => {
                    out.push((p, vec![l]));
                }
                _ => {}
            },
            Expr::In {
                expr,
                list,
                negated: false,
            } => {
                if let Expr::Path(p) = expr.as_ref() {
                    let lits: Option<Vec<&Literal>> = list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(l) => Some(l),
                            _ => None,
                        })
                        .collect();
                    if let Some(lits) = lits {
                        out.push((p, lits));
                    }
                }
            }
            _ => {}
        }
    }
    out
}
