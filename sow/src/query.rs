//! Queries: filter, SowKeys, hash-index narrowing, order_by, top_n/skip_n,
//! count-only, results in batches; and delete by filter.

use std::cmp::Ordering;

use rustc_hash::FxHashSet;
use statecast_filter::ast::{Expr, Path};
use statecast_filter::value::{Comparison, compare};
use statecast_filter::{Filter, Limits, MessageContext, Scratch, Value};

use crate::error::SowError;
use crate::extract::{first_value, values_at_each};
use crate::format::RECORD_HEADER_BYTES;
use crate::index::index_terms;
use crate::key::SowKey;
use crate::range::{RangeBuilder, range_terms};
use crate::store::{Entry, RecordRef, SowRecord, SowStore, sort_in_slab_order};

/// One `order_by` field.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    /// The field.
    pub path: Path,
    /// Descending instead of ascending.
    pub descending: bool,
}

impl OrderBy {
    /// Parses `"/f DESC, /g ASC, /h"` (ASC is the default).
    pub fn parse_list(text: &str) -> Result<Vec<OrderBy>, SowError> {
        let mut out = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (field, descending) = match item.rsplit_once(char::is_whitespace) {
                Some((f, dir)) if dir.eq_ignore_ascii_case("desc") => (f.trim(), true),
                Some((f, dir)) if dir.eq_ignore_ascii_case("asc") => (f.trim(), false),
                _ => (item, false),
            };
            let filter = Filter::parse(field, &Limits::default())
                .map_err(|e| SowError::BadQuery(format!("order_by `{item}`: {e}")))?;
            match filter.expr() {
                Expr::Path(path) => out.push(OrderBy {
                    path: path.clone(),
                    descending,
                }),
                _ => {
                    return Err(SowError::BadQuery(format!(
                        "order_by `{item}`: expected a field path such as `/price DESC`"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// A SOW query. Build it with the fields or the `with_*` helpers.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only records this filter is TRUE for.
    pub filter: Option<Filter>,
    /// Only these records.
    pub keys: Option<Vec<SowKey>>,
    /// Sort order; without it the order is unspecified.
    pub order_by: Vec<OrderBy>,
    /// At most this many records.
    pub top_n: Option<usize>,
    /// Skip this many first (needs `order_by`, as in AMPS).
    pub skip_n: usize,
    /// Records per batch (0 is taken as 1).
    pub batch_size: usize,
    /// Passed to `UNIX_TIMESTAMP()` in filters.
    pub unix_timestamp: Option<f64>,
}

impl Query {
    /// Every record.
    pub fn all() -> Query {
        Query {
            batch_size: 10,
            ..Query::default()
        }
    }

    /// Records matching `filter`.
    pub fn filter(filter: Filter) -> Query {
        Query {
            filter: Some(filter),
            ..Query::all()
        }
    }

    /// Sets the order.
    #[must_use]
    pub fn with_order(mut self, order_by: Vec<OrderBy>) -> Query {
        self.order_by = order_by;
        self
    }

    /// Sets top_n.
    #[must_use]
    pub fn with_top_n(mut self, n: usize) -> Query {
        self.top_n = Some(n);
        self
    }

    /// Sets skip_n.
    #[must_use]
    pub fn with_skip_n(mut self, n: usize) -> Query {
        self.skip_n = n;
        self
    }

    /// Sets the batch size.
    #[must_use]
    pub fn with_batch_size(mut self, n: usize) -> Query {
        self.batch_size = n;
        self
    }

    /// Restricts to SowKeys.
    #[must_use]
    pub fn with_keys(mut self, keys: Vec<SowKey>) -> Query {
        self.keys = Some(keys);
        self
    }
}

/// How a query found its candidates (for tests and monitoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every live record was evaluated.
    FullScan,
    /// The listed SowKeys.
    Keys,
    /// A hash index on this field narrowed the candidates.
    HashIndex(String),
    /// A range index on this field narrowed the candidates.
    RangeIndex(String),
    /// A range index on the `order_by` field gave the order: records were
    /// visited in order until `top_n` (+ `skip_n`) matched.
    RangeOrder(String),
}

struct Hit {
    key: u64,
    entry: Entry,
    sort: Vec<Value>,
}

/// The results of a query, read lazily in batches.
pub struct Matches<'s> {
    store: &'s SowStore,
    hits: Vec<Hit>,
    pos: usize,
    batch_size: usize,
    buf: Vec<u8>,
    /// How the candidates were found.
    pub plan: Plan,
    /// Records evaluated against the filter.
    pub scanned: usize,
}

impl std::fmt::Debug for Matches<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matches")
            .field("count", &self.hits.len())
            .field("pos", &self.pos)
            .field("plan", &self.plan)
            .finish()
    }
}

impl Matches<'_> {
    /// Number of records the query returns (all batches together).
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// Whether the query returns nothing.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Payload bytes of the results not yet read (all batches together):
    /// what sending them will cost, known before any is read.
    pub fn payload_bytes(&self) -> u64 {
        self.hits
            .iter()
            .skip(self.pos)
            .map(|h| u64::from(h.entry.len))
            .sum()
    }

    /// The keys of the results, in result order.
    pub fn keys(&self) -> Vec<SowKey> {
        self.hits.iter().map(|h| SowKey(h.key)).collect()
    }

    /// The next record, its payload borrowed until the next call (no copy
    /// of it is made here), its CRC checked. After an error the query is
    /// over: `None` follows.
    pub fn next_record(&mut self) -> Option<Result<RecordRef<'_>, SowError>> {
        let hit = self.hits.get(self.pos)?;
        self.pos += 1;
        let store = self.store;
        let record = store.record_ref(hit.key, &hit.entry, &mut self.buf);
        if record.is_err() {
            self.pos = self.hits.len();
        }
        Some(record)
    }

    /// The remaining results, detached from the store so that they can be
    /// read a few at a time (a large answer sent in pieces) with
    /// [`Cursor::next_record`].
    pub fn into_cursor(self) -> Cursor {
        Cursor {
            hits: self
                .hits
                .into_iter()
                .skip(self.pos)
                .map(|h| (h.key, h.entry))
                .collect(),
            pos: 0,
            buf: self.buf,
        }
    }

    /// Every remaining record in one vector.
    pub fn collect_all(self) -> Result<Vec<SowRecord>, SowError> {
        let mut out = Vec::with_capacity(self.hits.len());
        for batch in self {
            out.extend(batch?);
        }
        Ok(out)
    }
}

impl Iterator for Matches<'_> {
    type Item = Result<Vec<SowRecord>, SowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.hits.len() {
            return None;
        }
        let end = (self.pos + self.batch_size.max(1)).min(self.hits.len());
        let mut batch = Vec::with_capacity(end - self.pos);
        for hit in self.hits.get(self.pos..end).unwrap_or_default() {
            match self.store.read_record(hit.key, &hit.entry, &mut self.buf) {
                Ok(r) => batch.push(r),
                Err(e) => {
                    self.pos = self.hits.len();
                    return Some(Err(e));
                }
            }
        }
        self.pos = end;
        Some(Ok(batch))
    }
}

/// A query's results detached from the store ([`Matches::into_cursor`]):
/// where each record was when the query ran. Read it before the store is
/// written again: a write may compact a slab away, and reading a record of
/// a slab that is gone is an error (a record's bytes never change while
/// its slab exists, so a cursor never returns anything but what the query
/// found, or an error).
#[derive(Debug)]
pub struct Cursor {
    hits: Vec<(u64, Entry)>,
    pos: usize,
    buf: Vec<u8>,
}

impl Cursor {
    /// Records not yet read.
    pub fn remaining(&self) -> usize {
        self.hits.len() - self.pos
    }

    /// The next record of `store` (the store the query ran on), as
    /// [`Matches::next_record`]. After an error the cursor is at its end.
    pub fn next_record<'a>(
        &'a mut self,
        store: &'a SowStore,
    ) -> Option<Result<RecordRef<'a>, SowError>> {
        let (key, entry) = *self.hits.get(self.pos)?;
        self.pos += 1;
        let record = store.record_ref(key, &entry, &mut self.buf);
        if record.is_err() {
            self.pos = self.hits.len();
        }
        Some(record)
    }
}

fn order_cmp(a: &Hit, b: &Hit, order: &[OrderBy]) -> Ordering {
    for (i, o) in order.iter().enumerate() {
        let (x, y) = (a.sort.get(i), b.sort.get(i));
        let (x, y) = match (x, y) {
            (Some(x), Some(y)) => (x, y),
            _ => continue,
        };
        // NULL (and '') sorts last in both directions.
        let (xn, yn) = (x.as_scalar().is_nullish(), y.as_scalar().is_nullish());
        let c = match (xn, yn) {
            (true, true) => Ordering::Equal,
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (false, false) => match compare(x.as_scalar(), y.as_scalar()) {
                Comparison::Ordered(c) => c,
                Comparison::Null | Comparison::Unordered => Ordering::Equal,
            },
        };
        let c = if o.descending { c.reverse() } else { c };
        if c != Ordering::Equal {
            return c;
        }
    }
    a.key.cmp(&b.key)
}

impl SowStore {
    /// Runs a query. The result borrows the store; read it before the next
    /// write.
    pub fn query(&self, query: &Query) -> Result<Matches<'_>, SowError> {
        if query.skip_n > 0 && query.order_by.is_empty() {
            return Err(SowError::BadQuery(
                "skip_n needs order_by (without an order, which records are skipped is undefined)"
                    .into(),
            ));
        }
        let (mut candidates, mut plan) = self.candidates(query)?;
        // One order_by field, a top_n and no narrower plan: walk a range
        // index in order and stop when enough records matched.
        let mut ordered_walk = false;
        let candidates_was_none = candidates.is_none();
        if let ([order], Some(top_n), Plan::FullScan) =
            (query.order_by.as_slice(), query.top_n, &plan)
        {
            let position = self.range_index(&order.path)?;
            let groups = self
                .ranges
                .borrow()
                .get(position)
                .and_then(|r| r.ordered(order.descending).map(|g| (g, r.text.clone())));
            if let Some((groups, text)) = groups
                && top_n > 0
            {
                candidates = Some(groups.into_iter().flatten().collect());
                plan = Plan::RangeOrder(text);
                ordered_walk = true;
            }
        }
        let mut scratch = Scratch::new();
        let mut buf = Vec::new();
        let mut slab = None;
        let mut values = Vec::new();
        let mut hits = Vec::new();
        let mut scanned = 0;
        // Without an order (or walking in order), top_n can stop the scan
        // early.
        let early_stop = if query.order_by.is_empty() {
            query.top_n
        } else if ordered_walk {
            query.top_n.map(|n| n.saturating_add(query.skip_n))
        } else {
            None
        };
        let mut visit = |hits: &mut Vec<Hit>,
                         key: u64,
                         entry: &Entry,
                         early_stop: Option<usize>|
         -> Result<bool, SowError> {
            if entry.tombstone {
                return Ok(true);
            }
            let needs_payload = query.filter.is_some() || !query.order_by.is_empty();
            let mut sort = Vec::new();
            if needs_payload {
                let bytes = self.record_bytes_near(entry, &mut slab, &mut buf)?;
                let payload = bytes.get(RECORD_HEADER_BYTES..).unwrap_or_default();
                if let Some(filter) = &query.filter {
                    scanned += 1;
                    let mut ctx = MessageContext::new(payload).with_topic(self.topic());
                    if let Some(t) = query.unix_timestamp {
                        ctx = ctx.with_unix_timestamp(t);
                    }
                    if !filter.matches_with(&ctx, &mut scratch) {
                        return Ok(true);
                    }
                }
                for o in &query.order_by {
                    sort.push(first_value(payload, &o.path, &mut values));
                }
            }
            hits.push(Hit {
                key,
                entry: *entry,
                sort,
            });
            Ok(early_stop.is_none_or(|n| hits.len() < n))
        };
        if let Some(keys) = candidates {
            let mut located: Vec<(u64, Entry)> = keys
                .into_iter()
                .filter_map(|k| self.keys.get(&k).map(|e| (k, *e)))
                .collect();
            if !ordered_walk && early_stop.is_none() {
                sort_in_slab_order(&mut located);
            }
            for (key, entry) in located {
                if !visit(&mut hits, key, &entry, early_stop)? {
                    break;
                }
            }
        }
        let walk_short = ordered_walk && early_stop.is_some_and(|n| hits.len() < n);
        if (candidates_was_none && !ordered_walk) || walk_short {
            // A full scan; also when an ordered walk ran short (records
            // without a value at the order field are not in the index and
            // sort last).
            hits.clear();
            let early_stop = if ordered_walk { None } else { early_stop };
            if walk_short {
                plan = Plan::FullScan;
            }
            if early_stop.is_some() {
                // A few records will do: sorting every entry first would
                // cost more than the scan.
                for (key, entry) in self.live_entries() {
                    if !visit(&mut hits, key, entry, early_stop)? {
                        break;
                    }
                }
            } else {
                for (key, entry) in self.live_in_slab_order() {
                    if !visit(&mut hits, key, &entry, early_stop)? {
                        break;
                    }
                }
            }
        }
        if !query.order_by.is_empty() {
            let order = &query.order_by;
            if let Some(n) = query.top_n {
                let keep = n.saturating_add(query.skip_n);
                if keep < hits.len() {
                    hits.select_nth_unstable_by(keep, |a, b| order_cmp(a, b, order));
                    hits.truncate(keep);
                }
            }
            hits.sort_unstable_by(|a, b| order_cmp(a, b, order));
        }
        let skip = query.skip_n.min(hits.len());
        hits.drain(..skip);
        if let Some(n) = query.top_n {
            hits.truncate(n);
        }
        if query.order_by.is_empty() {
            // No order was asked for: read the records in slab order, so a
            // large answer walks its slabs front to back (page cache
            // read-ahead, neighbouring records in the same pages) instead
            // of in the key index's hash order.
            hits.sort_unstable_by_key(|h| (h.entry.seq, h.entry.off));
        }
        Ok(Matches {
            store: self,
            hits,
            pos: 0,
            batch_size: query.batch_size.max(1),
            buf: Vec::new(),
            plan,
            scanned,
        })
    }

    /// The number of records the query would return.
    pub fn count(&self, query: &Query) -> Result<usize, SowError> {
        Ok(self.query(query)?.len())
    }

    /// Candidate keys: the query's SowKeys, or a hash-index lookup, or None
    /// for a full scan.
    fn candidates(&self, query: &Query) -> Result<(Option<Vec<u64>>, Plan), SowError> {
        if let Some(keys) = &query.keys {
            let mut seen = FxHashSet::default();
            let keys = keys
                .iter()
                .map(|k| k.0)
                .filter(|k| seen.insert(*k))
                .collect();
            return Ok((Some(keys), Plan::Keys));
        }
        if let Some(filter) = &query.filter {
            let limit = self.index_limit();
            // The most selective indexed term wins.
            let mut best: Option<(FxHashSet<u64>, String)> = None;
            for (path, literals) in index_terms(filter.expr()) {
                if let Some(index) = self.indexes.iter().find(|i| i.path == *path) {
                    let mut set = FxHashSet::default();
                    if index.lookup(&literals, &mut set, limit).is_some()
                        && best.as_ref().is_none_or(|(b, _)| set.len() < b.len())
                    {
                        best = Some((set, index.text.clone()));
                    }
                }
            }
            let mut best_range: Option<(FxHashSet<u64>, String)> = None;
            let terms = range_terms(filter.expr());
            // Every range index the filter wants that is missing, in one
            // pass over the records rather than one per field.
            let paths: Vec<&Path> = terms.iter().map(|t| t.path).collect();
            self.build_range_indexes(&paths)?;
            for term in terms {
                let position = self.range_index(term.path)?;
                let ranges = self.ranges.borrow();
                if let Some(range) = ranges.get(position)
                    && let Some(set) = range.candidates(&term.conditions, limit)
                    && best_range.as_ref().is_none_or(|(b, _)| set.len() < b.len())
                {
                    best_range = Some((set, range.text.clone()));
                }
            }
            match (best, best_range) {
                (Some((h, ht)), Some((r, _))) if h.len() <= r.len() => {
                    return Ok((Some(h.into_iter().collect()), Plan::HashIndex(ht)));
                }
                (_, Some((r, rt))) => {
                    return Ok((Some(r.into_iter().collect()), Plan::RangeIndex(rt)));
                }
                (Some((h, ht)), None) => {
                    return Ok((Some(h.into_iter().collect()), Plan::HashIndex(ht)));
                }
                (None, None) => {}
            }
        }
        Ok((None, Plan::FullScan))
    }

    /// The most candidates an index may leave for the query to use it.
    ///
    /// A candidate costs a key-index lookup and a read at a random place
    /// in the slabs; a scan reads every record front to back. Before this
    /// rule, a query whose index left 80 % of 1M records of 1 KiB cost
    /// 0.71 µs per record (candidates in hash order); scanning them in slab
    /// order costs 0.38 µs (benches/RESULTS.md, 2026-12-04 22:05–22:50). A
    /// quarter is a cautious line below that; the exact crossover was not
    /// measured. Small stores always use an index that
    /// applies: either way costs little there, and the plan stays
    /// predictable.
    fn index_limit(&self) -> usize {
        const ALWAYS_BELOW: usize = 4096;
        if self.len() < ALWAYS_BELOW {
            usize::MAX
        } else {
            self.len() / 4
        }
    }

    /// The position of the range index on `path`, built now if this is its
    /// first use: every live record is read once.
    fn range_index(&self, path: &Path) -> Result<usize, SowError> {
        self.build_range_indexes(&[path])?;
        self.ranges
            .borrow()
            .iter()
            .position(|r| r.path == *path)
            .ok_or_else(|| SowError::BadQuery(format!("no range index on {path}")))
    }

    /// Builds the range indexes on `paths` that do not exist yet, in one
    /// pass over the live records, in slab order: each record is read (and
    /// copied out of its slab) once for all of them, and its fields are
    /// found in one walk of its top-level members (`values_at_each`).
    /// The processor owning the topic does nothing else meanwhile; the
    /// sow-1m query wants two (benches/RESULTS.md, issue 5: the first-use
    /// range index build).
    fn build_range_indexes(&self, paths: &[&Path]) -> Result<(), SowError> {
        let mut builders: Vec<RangeBuilder> = Vec::new();
        {
            let ranges = self.ranges.borrow();
            for path in paths {
                if !ranges.iter().any(|r| r.path == **path)
                    && !builders.iter().any(|b| b.path() == *path)
                {
                    builders.push(RangeBuilder::new((*path).clone(), path.to_string()));
                }
            }
        }
        if builders.is_empty() {
            return Ok(());
        }
        let wanted: Vec<Path> = builders.iter().map(|b| b.path().clone()).collect();
        let wanted: Vec<&Path> = wanted.iter().collect();
        let mut values: Vec<Vec<Value>> = vec![Vec::new(); builders.len()];
        let mut results = vec![Ok(()); builders.len()];
        let mut buf = Vec::new();
        let mut slab = None;
        for (key, entry) in self.live_in_slab_order() {
            let bytes = self.record_bytes_near(&entry, &mut slab, &mut buf)?;
            let payload = bytes.get(RECORD_HEADER_BYTES..).unwrap_or_default();
            values.iter_mut().for_each(Vec::clear);
            values_at_each(payload, &wanted, &mut values, &mut results);
            for ((builder, values), result) in builders.iter_mut().zip(&values).zip(&results) {
                builder.add(key, values, result.is_ok());
            }
        }
        self.ranges
            .borrow_mut()
            .extend(builders.into_iter().map(RangeBuilder::finish));
        Ok(())
    }

    /// Deletes every record `filter` is TRUE for (`1=1` deletes all);
    /// returns how many went.
    pub fn delete_where(
        &mut self,
        filter: &Filter,
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<usize, SowError> {
        let keys = self.query(&Query::filter(filter.clone()))?.keys();
        self.delete_keys(&keys, bookmark, timestamp_ns)
    }
}
