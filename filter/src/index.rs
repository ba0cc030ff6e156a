//! Matching one message against many filters without trying them all.
//!
//! Each filter is examined for a term it requires: a top-level AND term of
//! the form `/path = literal` or `/path IN (literals…)`. A filter with such a
//! term is filed under each literal, in a hash map for its path; a filter
//! without one goes on a list that is always evaluated. For a message, the
//! index scans the payload once for every indexed path, looks each value up,
//! and evaluates only the filters filed under a value the message has (plus
//! the unindexed ones). A filter whose term cannot be TRUE for the message is
//! never touched, so the cost does not grow with the number of filters that
//! cannot match.
//!
//! Keys follow the evaluator's `=` exactly or err on the side of a
//! candidate: strings are filed by bytes, numbers by [`NumKey`] (so `100`,
//! `100.0` and `1e2` are one key), a string literal that reads as a number is
//! filed under both, and booleans are the numbers 1 and 0. Candidates are
//! always evaluated in full, so a spare candidate costs time, never
//! correctness.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use crate::ast::{BinaryOp, Expr, Literal, Path};
use crate::context::MessageContext;
use crate::filter::{Filter, Scratch};
use crate::scan::{Captures, PathSet, Raw};
use crate::value::{Num, NumKey, parse_number};

/// Filters keyed by `K`, indexed by the equality terms they require.
pub struct SubscriptionIndex<K> {
    entries: Vec<Option<Entry<K>>>,
    free: Vec<u32>,
    by_key: HashMap<K, u32>,
    fields: Vec<Field>,
    /// Scan plan for the indexed paths; slot `i` is `fields[i]`.
    paths: PathSet,
    /// Entries with no indexable term, evaluated for every message.
    unindexed: Vec<u32>,
}

impl<K: fmt::Debug> fmt::Debug for SubscriptionIndex<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("len", &self.by_key.len())
            .field(
                "indexed_paths",
                &self.fields.iter().map(|f| &f.path).collect::<Vec<_>>(),
            )
            .field("unindexed", &self.unindexed.len())
            .finish()
    }
}

struct Entry<K> {
    key: K,
    filter: Filter,
    placement: Placement,
}

enum Placement {
    /// Filed under these keys of `fields[field]`.
    Indexed { field: usize, keys: Keys },
    /// At this position of `unindexed`.
    Unindexed(usize),
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Keys {
    strings: Vec<Box<[u8]>>,
    numbers: Vec<NumKey>,
}

struct Field {
    path: Path,
    strings: HashMap<Box<[u8]>, Vec<u32>>,
    numbers: HashMap<NumKey, Vec<u32>>,
    /// Entries filed under this path.
    users: usize,
}

/// Scratch space for [`SubscriptionIndex::for_each_match`]; keep one per
/// matching thread.
#[derive(Debug, Default)]
pub struct IndexScratch {
    captures: Captures,
    filter: Scratch,
    /// Per entry, the message number at which it was last evaluated, so
    /// that each entry is evaluated (and reported) at most once per message.
    stamps: Vec<u32>,
    epoch: u32,
}

impl IndexScratch {
    /// Empty scratch space.
    pub fn new() -> Self {
        IndexScratch::default()
    }
}

impl<K> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        SubscriptionIndex {
            entries: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            fields: Vec::new(),
            paths: PathSet::default(),
            unindexed: Vec::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> SubscriptionIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        SubscriptionIndex::default()
    }

    /// Number of filters held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether the index holds no filter.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The filter stored under `key`.
    pub fn get(&self, key: &K) -> Option<&Filter> {
        let id = *self.by_key.get(key)?;
        self.entry(id).map(|e| &e.filter)
    }

    /// Number of filters that have no indexable term and are evaluated for
    /// every message.
    pub fn unindexed_len(&self) -> usize {
        self.unindexed.len()
    }

    fn entry(&self, id: u32) -> Option<&Entry<K>> {
        self.entries.get(id as usize).and_then(Option::as_ref)
    }

    /// Adds a filter under `key`, replacing (and returning) any filter
    /// already there.
    pub fn insert(&mut self, key: K, filter: Filter) -> Option<Filter> {
        let old = self.remove(&key);
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.entries.push(None);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let placement = match index_term(filter.expr()) {
            Some((path, keys)) => {
                let field = self.field_for(&path);
                // `field_for` returns a field that exists.
                if let Some(entry_field) = self.fields.get_mut(field) {
                    entry_field.users += 1;
                    for s in &keys.strings {
                        entry_field.strings.entry(s.clone()).or_default().push(id);
                    }
                    for n in &keys.numbers {
                        entry_field.numbers.entry(*n).or_default().push(id);
                    }
                }
                Placement::Indexed { field, keys }
            }
            None => {
                self.unindexed.push(id);
                Placement::Unindexed(self.unindexed.len() - 1)
            }
        };
        self.by_key.insert(key.clone(), id);
        // `id` was pushed above or freed by `remove`: its entry exists.
        if let Some(slot) = self.entries.get_mut(id as usize) {
            *slot = Some(Entry {
                key,
                filter,
                placement,
            });
        }
        old
    }

    /// Removes the filter under `key`, returning it.
    pub fn remove(&mut self, key: &K) -> Option<Filter> {
        let id = self.by_key.remove(key)?;
        let entry = self.entries.get_mut(id as usize)?.take()?;
        self.free.push(id);
        match entry.placement {
            Placement::Indexed { field, keys } => {
                // An entry's field exists while the entry does.
                let Some(f) = self.fields.get_mut(field) else {
                    return Some(entry.filter);
                };
                for s in &keys.strings {
                    if let Some(ids) = f.strings.get_mut(s) {
                        ids.retain(|&i| i != id);
                        if ids.is_empty() {
                            f.strings.remove(s);
                        }
                    }
                }
                for n in &keys.numbers {
                    if let Some(ids) = f.numbers.get_mut(n) {
                        ids.retain(|&i| i != id);
                        if ids.is_empty() {
                            f.numbers.remove(n);
                        }
                    }
                }
                f.users -= 1;
                if f.users == 0 {
                    self.drop_field(field);
                }
            }
            Placement::Unindexed(pos) => {
                self.unindexed.swap_remove(pos);
                if let Some(&moved) = self.unindexed.get(pos)
                    && let Some(Some(e)) = self.entries.get_mut(moved as usize)
                {
                    e.placement = Placement::Unindexed(pos);
                }
            }
        }
        Some(entry.filter)
    }

    fn field_for(&mut self, path: &Path) -> usize {
        if let Some(i) = self.fields.iter().position(|f| f.path == *path) {
            return i;
        }
        self.fields.push(Field {
            path: path.clone(),
            strings: HashMap::new(),
            numbers: HashMap::new(),
            users: 0,
        });
        self.rebuild_paths();
        self.fields.len() - 1
    }

    /// Forgets an indexed path nobody uses, renumbering the last field into its place.
    fn drop_field(&mut self, field: usize) {
        let last = self.fields.len() - 1;
        self.fields.swap_remove(field);
        if field != last {
            for entry in self.entries.iter_mut().flatten() {
                if let Placement::Indexed { field: f, .. } = &mut entry.placement
                    && *f == last
                {
                    *f = field;
                }
            }
        }
        self.rebuild_paths();
    }

    fn rebuild_paths(&mut self) {
        let mut paths = PathSet::default();
        for field in &self.fields {
            paths.insert(&field.path);
        }
        self.paths = paths;
    }

    /// Calls `on_match` once for the key of every filter the message
    /// matches (in no particular order).
    pub fn for_each_match(
        &self,
        ctx: &MessageContext<'_>,
        scratch: &mut IndexScratch,
        mut on_match: impl FnMut(&K),
    ) {
        scratch.epoch = scratch.epoch.wrapping_add(1);
        if scratch.epoch == 0 {
            scratch.stamps.fill(0);
            scratch.epoch = 1;
        }
        if scratch.stamps.len() < self.entries.len() {
            scratch.stamps.resize(self.entries.len(), 0);
        }
        let epoch = scratch.epoch;
        let IndexScratch {
            captures,
            filter: filter_scratch,
            stamps,
            ..
        } = scratch;
        let mut try_entry = |id: u32| {
            let Some(stamp) = stamps.get_mut(id as usize) else {
                return;
            };
            if *stamp == epoch {
                return;
            }
            *stamp = epoch;
            if let Some(entry) = self.entry(id)
                && entry.filter.matches_with(ctx, filter_scratch)
            {
                on_match(&entry.key);
            }
        };
        if !self.fields.is_empty() && !self.paths.scan(ctx.payload, captures) {
            // A malformed payload: the index scan may have read further than
            // some filter would, so the safe answer is to evaluate them all.
            for id in 0..self.entries.len() {
                try_entry(u32::try_from(id).unwrap_or(u32::MAX));
            }
            return;
        }
        for (slot, field) in self.fields.iter().enumerate() {
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            for raw in captures.values(slot) {
                let (string, number) = lookup_keys(raw, ctx.payload, &captures.arena);
                if let Some(s) = string {
                    for &id in field.strings.get(s).map_or(&[][..], Vec::as_slice) {
                        try_entry(id);
                    }
                }
                if let Some(n) = number {
                    for &id in field.numbers.get(&n).map_or(&[][..], Vec::as_slice) {
                        try_entry(id);
                    }
                }
            }
        }
        for &id in &self.unindexed {
            try_entry(id);
        }
    }
}

/// The string and numeric keys under which a payload value finds the
/// filters it can satisfy.
fn lookup_keys<'a>(
    raw: Raw,
    payload: &'a [u8],
    arena: &'a [u8],
) -> (Option<&'a [u8]>, Option<NumKey>) {
    let string = match raw {
        Raw::Str { start, end } => payload.get(start..end),
        Raw::Unescaped { start, end } => arena.get(start..end),
        Raw::Null => return (None, None),
        Raw::True => return (None, NumKey::of(Num::Int(1))),
        Raw::False => return (None, NumKey::of(Num::Int(0))),
        Raw::Number { start, end } => {
            let number = payload.get(start..end).and_then(parse_number);
            return (None, number.and_then(NumKey::of));
        }
    };
    match string {
        Some(s) if !s.is_empty() => (Some(s), parse_number(s).and_then(NumKey::of)),
        _ => (None, None),
    }
}

/// The term a filter is indexed under: the first `/path = literal` among its
/// top-level AND terms, else the first `/path IN (literals…)`.
fn index_term(expr: &Expr) -> Option<(Path, Keys)> {
    let mut terms = Vec::new();
    conjuncts(expr, &mut terms);
    let equality = terms.iter().find_map(|t| match t {
        Expr::Binary {
            op: BinaryOp::Eq,
            lhs,
            rhs,
        } => match (&**lhs, &**rhs) {
            (Expr::Path(p), Expr::Literal(l)) | (Expr::Literal(l), Expr::Path(p)) => {
                Some((p.clone(), keys_of([l])))
            }
            _ => None,
        },
        _ => None,
    });
    equality.or_else(|| {
        terms.iter().find_map(|t| match t {
            Expr::In {
                expr,
                list,
                negated: false,
            } => {
                let Expr::Path(p) = &**expr else { return None };
                let literals: Option<Vec<&Literal>> = list
                    .iter()
                    .map(|item| match item {
                        Expr::Literal(l) => Some(l),
                        _ => None,
                    })
                    .collect();
                Some((p.clone(), keys_of(literals?)))
            }
            _ => None,
        })
    })
}

fn conjuncts<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::And(items) => items.iter().for_each(|item| conjuncts(item, out)),
        other => out.push(other),
    }
}

/// The keys under which a value equal to one of `literals` is found. NULL,
/// `''` and NaN equal nothing and contribute no key.
fn keys_of<'l>(literals: impl IntoIterator<Item = &'l Literal>) -> Keys {
    let mut keys = Keys::default();
    for literal in literals {
        let number = match literal {
            Literal::Null => None,
            Literal::Bool(b) => NumKey::of(Num::Int(i64::from(*b))),
            Literal::Int(i) => NumKey::of(Num::Int(*i)),
            Literal::Float(x) => NumKey::of(Num::Float(*x)),
            Literal::Str(s) if s.is_empty() => None,
            Literal::Str(s) => {
                keys.strings.push(s.as_slice().into());
                parse_number(s).and_then(NumKey::of)
            }
        };
        keys.numbers.extend(number);
    }
    keys.strings.sort();
    keys.strings.dedup();
    keys.numbers.dedup();
    keys
}
