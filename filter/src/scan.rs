//! A streaming JSON scanner that pulls a fixed set of paths out of a payload
//! in one pass, without building a document.
//!
//! The paths a filter reads are merged into a trie ([`PathSet`]). The scanner
//! walks the payload bytes once: at each object it looks the member names up
//! in the trie node (a perfect hash of the few names the filter uses),
//! descends into members that lead to wanted paths, and skips every other
//! value ([`skip`]: strings and containers are crossed with vector searches
//! and word arithmetic, not byte by byte). Values at wanted paths are
//! recorded as byte ranges ([`Raw`]); numbers are converted only when the
//! evaluator asks.
//!
//! Array semantics follow AMPS: a field step applied to an array applies to
//! each element, an array at the end of a path contributes each element (so
//! comparisons are "any element"), and `[n]` picks one element. A path may
//! therefore collect several values.
//!
//! The scan stops as soon as every wanted path is complete: when the last
//! top-level member that leads to a wanted path has been read, the rest of the
//! payload is never looked at. Duplicate member names: the first wins.
//!
//! The scanner is not a validator. What it reads it checks (strings close,
//! `:` and `,` are where they belong, wanted scalars are valid JSON literals
//! and numbers, the brackets of each skipped container balance, nesting stays
//! within [`MAX_NESTING`]); if any of that fails, every path is NULL.
//! Malformations inside skipped values (a bad scalar, `[1}]` where only the
//! skipped container's own kind of bracket is counted) and after the point
//! where the scan stops go unnoticed.

use std::collections::HashMap;

use crate::ast::{Path, Step};

mod skip;

use skip::{Clean, Searchers, word_at};

/// Deepest payload nesting the scanner follows, the same as serde_json's
/// default so that the reference interpreter accepts the same documents.
pub const MAX_NESTING: u32 = 128;

/// Above this many member names at one trie node, names are looked up in a
/// hash map rather than compared one by one.
const LINEAR_LOOKUP_MAX: usize = 8;

/// A value found at a wanted path, as a range of the payload (or of the
/// unescape arena).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Raw {
    Null,
    True,
    False,
    /// A JSON number, already checked against the JSON grammar.
    Number {
        start: usize,
        end: usize,
    },
    /// String contents with no escapes, in the payload.
    Str {
        start: usize,
        end: usize,
    },
    /// String contents after unescaping, in the arena.
    Unescaped {
        start: usize,
        end: usize,
    },
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    /// Member names leading to wanted paths, and the child node of each.
    fields: Vec<FieldName>,
    /// A perfect hash over `fields`, when one was found (nearly always).
    table: Option<NameTable>,
    /// The same, hashed, when there are many and no perfect hash was found.
    field_map: Option<HashMap<Box<[u8]>, u32>>,
    /// Bit `n` set when some name has `n` bytes (bit 63: 63 or more), so
    /// most unwanted names are rejected by their length alone.
    name_lengths: u64,
    /// Array positions leading to wanted paths, and the child of each.
    indexes: Vec<(u32, u32)>,
    /// No member names and no positions below: only a value is recorded here.
    leaf: bool,
    /// The slot that collects values found exactly here, if this is a wanted path.
    slot: Option<u32>,
}

/// Most names a [`NameTable`] is built for; its 64 buckets stay sparse.
const TABLE_MAX_NAMES: usize = 24;

/// A perfect hash of a trie node's member names: a multiplier, chosen when
/// the filter is compiled, that sends each name's [`name_key`] to its own
/// bucket, so a lookup is one multiply, one load and one comparison.
#[derive(Clone, Debug)]
struct NameTable {
    multiplier: u64,
    /// Per bucket, the index in `fields` plus one (0: no name).
    buckets: Box<[u8; 64]>,
}

impl NameTable {
    fn bucket(&self, key: u64) -> usize {
        (key.wrapping_mul(self.multiplier) >> 58) as usize
    }

    /// A table for `fields`, if some multiplier separates all their keys.
    fn build(fields: &[FieldName]) -> Option<NameTable> {
        if fields.len() > TABLE_MAX_NAMES {
            return None;
        }
        let keys: Vec<u64> = fields
            .iter()
            .map(|f| name_key(f.len, f.prefix, suffix_word(&f.name)))
            .collect();
        // Odd multipliers from a fixed sequence (splitmix64), so the choice
        // is deterministic.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..256 {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let mut table = NameTable {
                multiplier: (z ^ (z >> 31)) | 1,
                buckets: Box::new([0; 64]),
            };
            let mut ok = true;
            for (index, &key) in keys.iter().enumerate() {
                let bucket = table.bucket(key);
                match table.buckets.get_mut(bucket) {
                    Some(slot @ 0) => *slot = u8::try_from(index + 1).unwrap_or(0),
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                return Some(table);
            }
        }
        None
    }
}

/// What a [`NameTable`] hashes: a name's length, first eight bytes and
/// (for longer names) last eight bytes.
#[inline]
fn name_key(len: usize, prefix: u64, suffix: u64) -> u64 {
    prefix ^ suffix.rotate_left(29) ^ (len as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// The last eight bytes of a name longer than eight bytes, else 0.
#[inline]
fn suffix_word(name: &[u8]) -> u64 {
    match name.last_chunk::<8>() {
        Some(chunk) if name.len() > 8 => u64::from_le_bytes(*chunk),
        _ => 0,
    }
}

/// A member name in a trie node, with its length and first eight bytes
/// kept as a word so that most mismatches cost one comparison.
#[derive(Clone, Debug)]
struct FieldName {
    len: usize,
    prefix: u64,
    name: Box<[u8]>,
    child: u32,
}

/// The first eight bytes of `name` (zero-padded), as a little-endian word.
fn prefix_word(name: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    for (w, b) in word.iter_mut().zip(name) {
        *w = *b;
    }
    u64::from_le_bytes(word)
}

/// [`prefix_word`] of the `len`-byte name starting at `bytes[start]`, read
/// as one word when the payload has eight bytes there (it nearly always
/// does: a name is followed by at least `":` and a value).
#[inline]
fn prefix_at(bytes: &[u8], start: usize, len: usize) -> u64 {
    match bytes.get(start..).and_then(<[u8]>::first_chunk::<8>) {
        Some(chunk) if len >= 8 => u64::from_le_bytes(*chunk),
        Some(chunk) => u64::from_le_bytes(*chunk) & ((1_u64 << (len * 8)) - 1),
        None => prefix_word(bytes.get(start..start + len).unwrap_or(&[])),
    }
}

impl TrieNode {
    fn field_child(&self, name: &[u8]) -> Option<u32> {
        if (self.name_lengths >> name.len().min(63)) & 1 == 0 {
            return None;
        }
        if self.table.is_some() {
            return self.field_child_with_prefix(name, 0, name.len(), prefix_word(name));
        }
        self.field_child_slow(name, prefix_word(name))
    }

    /// The child for the `len`-byte member name at `bytes[start..]` (whose
    /// [`prefix_word`] is `prefix`), by the perfect hash when there is one.
    #[inline(always)]
    fn field_child_with_prefix(
        &self,
        bytes: &[u8],
        start: usize,
        len: usize,
        prefix: u64,
    ) -> Option<u32> {
        let Some(table) = &self.table else {
            return self.field_child_slow(bytes.get(start..start + len)?, prefix);
        };
        let suffix = if len > 8 {
            word_at(bytes, start + len - 8).unwrap_or(0)
        } else {
            0
        };
        let index = table
            .buckets
            .get(table.bucket(name_key(len, prefix, suffix)))?;
        let field = self.fields.get(usize::from(*index).checked_sub(1)?)?;
        let same = field.len == len
            && field.prefix == prefix
            && (len <= 8 || bytes.get(start..start + len) == Some(&field.name[..]));
        same.then_some(field.child)
    }

    #[cold]
    fn field_child_slow(&self, name: &[u8], prefix: u64) -> Option<u32> {
        if let Some(map) = &self.field_map {
            return map.get(name).copied();
        }
        self.fields
            .iter()
            .find(|f| f.len == name.len() && f.prefix == prefix && (f.len <= 8 || *f.name == *name))
            .map(|f| f.child)
    }

    fn index_child(&self, index: u32) -> Option<u32> {
        self.indexes
            .iter()
            .find(|&&(i, _)| i == index)
            .map(|&(_, child)| child)
    }

    fn max_index(&self) -> Option<u32> {
        self.indexes.iter().map(|&(i, _)| i).max()
    }
}

/// The set of paths one scan collects, merged into a trie.
#[derive(Clone, Debug)]
pub(crate) struct PathSet {
    nodes: Vec<TrieNode>,
    paths: Vec<Path>,
}

impl Default for PathSet {
    fn default() -> Self {
        PathSet {
            nodes: vec![TrieNode {
                leaf: true,
                ..TrieNode::default()
            }],
            paths: Vec::new(),
        }
    }
}

impl PathSet {
    /// Adds a path (once) and returns its slot number.
    pub(crate) fn insert(&mut self, path: &Path) -> u32 {
        if let Some(slot) = self.paths.iter().position(|p| p == path) {
            return slot as u32;
        }
        let slot = self.paths.len() as u32;
        self.paths.push(path.clone());
        let mut node = 0usize;
        for step in &path.steps {
            let next = self.nodes.len() as u32;
            let existing = match step {
                Step::Field(name) => self.nodes[node].field_child(name.as_bytes()),
                Step::Index(i) => self.nodes[node].index_child(*i),
            };
            node = match existing {
                Some(child) => child as usize,
                None => {
                    self.nodes.push(TrieNode {
                        leaf: true,
                        ..TrieNode::default()
                    });
                    let parent = &mut self.nodes[node];
                    parent.leaf = false;
                    match step {
                        Step::Field(name) => {
                            parent.name_lengths |= 1 << name.len().min(63);
                            parent.fields.push(FieldName {
                                len: name.len(),
                                prefix: prefix_word(name.as_bytes()),
                                name: name.as_bytes().into(),
                                child: next,
                            });
                            parent.table = NameTable::build(&parent.fields);
                            if parent.table.is_none() && parent.fields.len() > LINEAR_LOOKUP_MAX {
                                parent.field_map = Some(
                                    parent
                                        .fields
                                        .iter()
                                        .map(|f| (f.name.clone(), f.child))
                                        .collect(),
                                );
                            }
                        }
                        Step::Index(i) => parent.indexes.push((*i, next)),
                    }
                    next as usize
                }
            };
        }
        self.nodes[node].slot = Some(slot);
        slot
    }

    /// Collects the values of every path from `payload` into `captures`.
    /// Returns false (with every path empty) when the payload was found
    /// malformed.
    pub(crate) fn scan(&self, payload: &[u8], captures: &mut Captures) -> bool {
        captures.reset(self.paths.len(), self.nodes.len());
        if self.paths.is_empty() {
            return true;
        }
        let mut scanner = Scanner {
            bytes: payload,
            pos: 0,
            set: self,
            cap: captures,
            clean: Clean::default(),
            search: Searchers::default(),
        };
        scanner.clean.refresh(payload, 0);
        scanner.pos = skip_ws(payload, 0);
        if scanner.value(0, true, true, 0).is_err() {
            scanner.cap.clear_values();
            return false;
        }
        true
    }
}

/// Where the values of one scan go. Reused between scans so that scanning
/// allocates nothing once the buffers have grown to fit.
#[derive(Debug, Default)]
pub(crate) struct Captures {
    /// Number of values found per slot.
    counts: Vec<u32>,
    /// First value per slot.
    first: Vec<Raw>,
    /// Second and later values per slot.
    more: Vec<Vec<Raw>>,
    /// Per trie node, the object instance in which its name was last seen,
    /// to let the first of duplicate member names win.
    seen: Vec<u32>,
    instance: u32,
    /// Unescaped strings.
    pub(crate) arena: Vec<u8>,
    key: Vec<u8>,
}

impl Captures {
    fn reset(&mut self, slots: usize, nodes: usize) {
        if self.counts.len() < slots {
            self.counts.resize(slots, 0);
            self.first.resize(slots, Raw::Null);
            self.more.resize_with(slots, Vec::new);
        }
        if self.seen.len() < nodes {
            self.seen.resize(nodes, 0);
        }
        self.clear_values();
    }

    fn clear_values(&mut self) {
        for (count, more) in self.counts.iter_mut().zip(&mut self.more) {
            if *count > 1 {
                more.clear();
            }
            *count = 0;
        }
        self.arena.clear();
    }

    fn next_instance(&mut self) -> u32 {
        self.instance = self.instance.wrapping_add(1);
        if self.instance == 0 {
            self.seen.fill(0);
            self.instance = 1;
        }
        self.instance
    }

    fn push(&mut self, slot: u32, raw: Raw) {
        let slot = slot as usize;
        let Some(count) = self.counts.get_mut(slot) else {
            return;
        };
        if *count == 0 {
            if let Some(first) = self.first.get_mut(slot) {
                *first = raw;
            }
        } else if let Some(more) = self.more.get_mut(slot) {
            more.push(raw);
        }
        *count = count.saturating_add(1);
    }

    /// How many values slot `slot` holds.
    pub(crate) fn count(&self, slot: u32) -> usize {
        self.counts.get(slot as usize).map_or(0, |&c| c as usize)
    }

    /// The first value of a slot, if any.
    pub(crate) fn first(&self, slot: u32) -> Option<Raw> {
        if self.count(slot) == 0 {
            return None;
        }
        self.first.get(slot as usize).copied()
    }

    /// Every value of a slot, in document order.
    pub(crate) fn values(&self, slot: u32) -> impl Iterator<Item = Raw> + '_ {
        let more = match self.count(slot) {
            0 | 1 => &[][..],
            _ => self.more.get(slot as usize).map_or(&[][..], Vec::as_slice),
        };
        self.first(slot).into_iter().chain(more.iter().copied())
    }
}

/// The payload was found malformed; every path becomes NULL.
#[derive(Debug)]
struct Malformed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Every wanted path is complete: abandon the rest of the payload.
    Stop,
}

struct Scanner<'s> {
    bytes: &'s [u8],
    pos: usize,
    set: &'s PathSet,
    cap: &'s mut Captures,
    /// Where the payload is known to hold no backslash.
    clean: Clean,
    search: Searchers,
}

/// Bytes after which a scalar ends.
#[inline]
fn is_delimiter(b: u8) -> bool {
    DELIMITERS[usize::from(b)]
}

/// [`is_delimiter`] as a table: one load per byte of a skipped scalar.
static DELIMITERS: [bool; 256] = {
    let mut table = [false; 256];
    table[b',' as usize] = true;
    table[b'}' as usize] = true;
    table[b']' as usize] = true;
    table[b' ' as usize] = true;
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table[b'\t' as usize] = true;
    table
};

/// The first position at or after `pos` that is not JSON whitespace.
#[inline]
fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Reads the value at the cursor, collecting what `node` wants from it.
    /// `stop` says that once this value is done, every wanted path is.
    /// `depth` is the number of containers around the value.
    fn value(
        &mut self,
        node: u32,
        allow_index: bool,
        stop: bool,
        depth: u32,
    ) -> Result<Flow, Malformed> {
        let set = self.set;
        let trie = &set.nodes[node as usize];
        match self.peek() {
            Some(b'{') => {
                if trie.fields.is_empty() {
                    self.pos = self.skip_container(self.pos, depth + 1)?;
                    Ok(Flow::Continue)
                } else {
                    self.object(node, stop, depth + 1)
                }
            }
            Some(b'[') => {
                let wanted = trie.slot.is_some()
                    || !trie.fields.is_empty()
                    || (allow_index && !trie.indexes.is_empty());
                if wanted {
                    self.array(node, allow_index, depth + 1)?;
                } else {
                    self.pos = self.skip_container(self.pos, depth + 1)?;
                }
                Ok(Flow::Continue)
            }
            _ => {
                self.scalar(trie.slot)?;
                Ok(Flow::Continue)
            }
        }
    }

    /// Reads the string, number or literal at the cursor, and records it in
    /// `slot` if there is one.
    #[inline]
    fn scalar(&mut self, slot: Option<u32>) -> Result<(), Malformed> {
        let raw = match self.peek() {
            Some(b'"') => {
                let start = self.pos + 1;
                let (end, escaped) = self.string_end(start)?;
                self.pos = end + 1;
                if let Some(slot) = slot {
                    self.capture_string(slot, start, end, escaped);
                }
                return Ok(());
            }
            Some(b't') => self.literal(b"true", Raw::True)?,
            Some(b'f') => self.literal(b"false", Raw::False)?,
            Some(b'n') => self.literal(b"null", Raw::Null)?,
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos = number_end(self.bytes, start)?;
                Raw::Number {
                    start,
                    end: self.pos,
                }
            }
            _ => return Err(Malformed),
        };
        if let Some(slot) = slot {
            self.cap.push(slot, raw);
        }
        Ok(())
    }

    /// Records the string `bytes[start..end]` in `slot`, unescaped if it
    /// has escapes.
    #[inline]
    fn capture_string(&mut self, slot: u32, start: usize, end: usize, escaped: bool) {
        let raw = if escaped {
            let from = self.cap.arena.len();
            unescape(
                self.bytes.get(start..end).unwrap_or(&[]),
                &mut self.cap.arena,
            );
            Raw::Unescaped {
                start: from,
                end: self.cap.arena.len(),
            }
        } else {
            Raw::Str { start, end }
        };
        self.cap.push(slot, raw);
    }

    fn literal(&mut self, word: &[u8], raw: Raw) -> Result<Raw, Malformed> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) != Some(word)
            || self.bytes.get(end).is_some_and(|&b| !is_delimiter(b))
        {
            return Err(Malformed);
        }
        self.pos = end;
        Ok(raw)
    }

    /// Walks the object at the cursor, at nesting level `depth`.
    ///
    /// The loop is written for compact JSON in the clean range, where a
    /// member costs a few dozen instructions: its name is found and
    /// rejected (by length, then by perfect hash) from one word, and an
    /// unwanted string or scalar value is crossed inline. Whitespace, escapes,
    /// long strings and containers take calls.
    fn object(&mut self, node: u32, stop: bool, depth: u32) -> Result<Flow, Malformed> {
        if depth > MAX_NESTING {
            return Err(Malformed);
        }
        let (set, bytes) = (self.set, self.bytes);
        let trie = &set.nodes[node as usize];
        let instance = self.cap.next_instance();
        let mut remaining = trie.fields.len();
        let mut pos = skip_ws(bytes, self.pos + 1);
        if bytes.get(pos) == Some(&b'}') {
            self.pos = pos + 1;
            return Ok(Flow::Continue);
        }
        loop {
            if bytes.get(pos) != Some(&b'"') {
                return Err(Malformed);
            }
            let start = pos + 1;
            let (end, escaped, prefix) = match quick_name(bytes, start, &self.clean) {
                Some((end, prefix)) => (end, false, prefix),
                None => self.long_name(start)?,
            };
            pos = end + 1;
            if bytes.get(pos) != Some(&b':') {
                pos = skip_ws(bytes, pos);
                if bytes.get(pos) != Some(&b':') {
                    return Err(Malformed);
                }
            }
            pos += 1;
            if bytes.get(pos).is_some_and(|&b| b <= b' ') {
                pos = skip_ws(bytes, pos);
            }
            let len = end - start;
            // Most names are rejected by length before any lookup (an
            // escaped name's raw length says nothing about its real one).
            let child = if escaped {
                self.escaped_field_child(trie, start, end)
            } else if (trie.name_lengths >> len.min(63)) & 1 == 0 {
                None
            } else {
                trie.field_child_with_prefix(bytes, start, len, prefix)
            };
            match child {
                Some(child) if self.cap.seen.get(child as usize) != Some(&instance) => {
                    if let Some(seen) = self.cap.seen.get_mut(child as usize) {
                        *seen = instance;
                    }
                    remaining -= 1;
                    let last = remaining == 0;
                    self.pos = pos;
                    if self.wanted_member(child, stop && last, depth)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                    pos = self.pos;
                }
                _ => {
                    pos = match bytes.get(pos) {
                        Some(b'"') => match quick_string(bytes, pos + 1, &self.clean) {
                            Some(end) => end + 1,
                            None => self.string_end(pos + 1)?.0 + 1,
                        },
                        Some(b'{' | b'[') => self.skip_container(pos, depth + 1)?,
                        _ => skip_scalar(bytes, pos)?,
                    }
                }
            }
            match bytes.get(pos) {
                Some(b',') => pos += 1,
                Some(b'}') => {
                    self.pos = pos + 1;
                    return Ok(Flow::Continue);
                }
                _ => {
                    pos = skip_ws(bytes, pos);
                    match bytes.get(pos) {
                        Some(b',') => pos += 1,
                        Some(b'}') => {
                            self.pos = pos + 1;
                            return Ok(Flow::Continue);
                        }
                        _ => return Err(Malformed),
                    }
                }
            }
            if bytes.get(pos).is_some_and(|&b| b <= b' ') {
                pos = skip_ws(bytes, pos);
            }
            if remaining == 0 {
                self.pos = self.rest_of_container(pos, b'{', depth)?;
                return Ok(Flow::Continue);
            }
        }
    }

    /// Reads the value of a member that leads to wanted paths (the cursor
    /// is at the value). `stop`: it is the last one wanted, so the scan
    /// stops after it. Out of line, so that the loop over the (mostly
    /// unwanted) members stays small.
    #[inline(never)]
    fn wanted_member(&mut self, child: u32, stop: bool, depth: u32) -> Result<Flow, Malformed> {
        let child_trie = &self.set.nodes[child as usize];
        match self.peek() {
            // A path's last step that finds a string: record it here rather
            // than through the general `value`.
            Some(b'"') if child_trie.leaf => {
                let start = self.pos + 1;
                let (end, escaped) = self.string_end(start)?;
                if let Some(slot) = child_trie.slot {
                    self.capture_string(slot, start, end, escaped);
                }
                self.pos = end + 1;
            }
            _ => {
                if self.value(child, true, stop, depth)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(if stop { Flow::Stop } else { Flow::Continue })
    }

    /// A member name that one word did not settle: its end, whether it has
    /// escapes, and its [`prefix_word`].
    #[inline(never)]
    fn long_name(&mut self, start: usize) -> Result<(usize, bool, u64), Malformed> {
        let (end, escaped) = self.string_end(start)?;
        Ok((end, escaped, prefix_at(self.bytes, start, end - start)))
    }

    /// The child for an escaped member name, looked up once unescaped.
    #[cold]
    fn escaped_field_child(&mut self, trie: &TrieNode, start: usize, end: usize) -> Option<u32> {
        let name = self.bytes.get(start..end).unwrap_or(&[]);
        let mut key = std::mem::take(&mut self.cap.key);
        key.clear();
        unescape(name, &mut key);
        let child = trie.field_child(&key);
        self.cap.key = key;
        child
    }

    /// Walks the array at the cursor, at nesting level `depth`.
    fn array(&mut self, node: u32, allow_index: bool, depth: u32) -> Result<(), Malformed> {
        if depth > MAX_NESTING {
            return Err(Malformed);
        }
        let set = self.set;
        let trie = &set.nodes[node as usize];
        // Field steps and the path's own values apply to every element.
        let flatten = trie.slot.is_some() || !trie.fields.is_empty();
        let last_index = if allow_index { trie.max_index() } else { None };
        self.pos = skip_ws(self.bytes, self.pos + 1);
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        let mut index: u32 = 0;
        loop {
            let start = self.pos;
            let index_child = if allow_index {
                trie.index_child(index)
            } else {
                None
            };
            if let Some(child) = index_child {
                self.value(child, true, false, depth)?;
                if flatten {
                    self.pos = start;
                }
            }
            if flatten {
                self.value(node, false, false, depth)?;
            } else if index_child.is_none() {
                self.pos = self.skip_value(self.pos, depth)?;
            }
            self.pos = skip_ws(self.bytes, self.pos);
            match self.peek() {
                Some(b',') => {
                    self.pos = skip_ws(self.bytes, self.pos + 1);
                    if !flatten && last_index.is_none_or(|last| index >= last) {
                        self.pos = self.rest_of_container(self.pos, b'[', depth)?;
                        return Ok(());
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
            index = index.saturating_add(1);
        }
    }

    /// Skips the value at `pos`, inside `depth` containers, and returns the
    /// position after it.
    fn skip_value(&mut self, pos: usize, depth: u32) -> Result<usize, Malformed> {
        match self.bytes.get(pos) {
            Some(b'"') => Ok(self.string_end(pos + 1)?.0 + 1),
            Some(b'{' | b'[') => self.skip_container(pos, depth + 1),
            _ => skip_scalar(self.bytes, pos),
        }
    }
}

/// In the clean range, the end of a string of at most four words whose
/// contents start at `from`, found by word arithmetic; None when that does
/// not settle it.
#[inline(always)]
fn quick_string(bytes: &[u8], from: usize, clean: &Clean) -> Option<usize> {
    if from < clean.lo {
        return None;
    }
    let mut at = from;
    for _ in 0..4 {
        let quote = skip::bytes_equal(word_at(bytes, at)?, b'"');
        if quote != 0 {
            let end = at + (quote.trailing_zeros() / 8) as usize;
            return (end < clean.hi).then_some(end);
        }
        at += 8;
    }
    None
}

/// In the clean range, the end of a member name of at most fifteen bytes
/// whose contents start at `start`, and its [`prefix_word`], from one or two
/// words.
#[inline(always)]
fn quick_name(bytes: &[u8], start: usize, clean: &Clean) -> Option<(usize, u64)> {
    if start < clean.lo {
        return None;
    }
    let word = word_at(bytes, start)?;
    let quote = skip::bytes_equal(word, b'"');
    let (end, prefix) = if quote != 0 {
        let len = (quote.trailing_zeros() / 8) as usize;
        (start + len, word & ((1_u64 << (len * 8)) - 1))
    } else {
        let quote = skip::bytes_equal(word_at(bytes, start + 8)?, b'"');
        if quote == 0 {
            return None;
        }
        (start + 8 + (quote.trailing_zeros() / 8) as usize, word)
    };
    (end < clean.hi).then_some((end, prefix))
}

/// Skips the scalar (number or literal, unchecked) at `pos`: it must not be
/// empty.
#[inline(always)]
fn skip_scalar(bytes: &[u8], pos: usize) -> Result<usize, Malformed> {
    let mut end = pos;
    while bytes.get(end).is_some_and(|&b| !is_delimiter(b)) {
        end += 1;
    }
    if end == pos { Err(Malformed) } else { Ok(end) }
}

/// Checks the number at `pos` against the JSON grammar and returns the
/// position after it.
fn number_end(bytes: &[u8], mut pos: usize) -> Result<usize, Malformed> {
    let digits = |mut pos: usize| {
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        pos
    };
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    pos = match bytes.get(pos) {
        Some(b'0') => pos + 1,
        Some(b'1'..=b'9') => digits(pos + 1),
        _ => return Err(Malformed),
    };
    if bytes.get(pos) == Some(&b'.') {
        if !bytes.get(pos + 1).is_some_and(u8::is_ascii_digit) {
            return Err(Malformed);
        }
        pos = digits(pos + 1);
    }
    if let Some(b'e' | b'E') = bytes.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = bytes.get(pos) {
            pos += 1;
        }
        if !bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            return Err(Malformed);
        }
        pos = digits(pos);
    }
    match bytes.get(pos) {
        Some(&b) if !is_delimiter(b) => Err(Malformed),
        _ => Ok(pos),
    }
}

/// Unescapes the contents of a JSON string the way serde_json does, except
/// that what serde_json rejects is kept rather than refused: an unknown
/// escape `\q` is `q`, and an unpaired surrogate is U+FFFD.
pub(crate) fn unescape(src: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < src.len() {
        let Some(at) = memchr::memchr(b'\\', src.get(i..).unwrap_or(&[])) else {
            out.extend_from_slice(src.get(i..).unwrap_or(&[]));
            return;
        };
        out.extend_from_slice(src.get(i..i + at).unwrap_or(&[]));
        i += at + 1;
        let Some(&e) = src.get(i) else { return };
        i += 1;
        let byte = match e {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let Some(unit) = hex4(src, i) else {
                    out.push(b'u');
                    continue;
                };
                i += 4;
                let c = if (0xD800..0xDC00).contains(&unit) {
                    let low = (src.get(i) == Some(&b'\\') && src.get(i + 1) == Some(&b'u'))
                        .then(|| hex4(src, i + 2))
                        .flatten()
                        .filter(|low| (0xDC00..0xE000).contains(low));
                    match low {
                        Some(low) => {
                            i += 6;
                            char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                        }
                        None => None,
                    }
                } else {
                    char::from_u32(unit)
                };
                let mut buf = [0; 4];
                out.extend_from_slice(c.unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes());
                continue;
            }
            other => other,
        };
        out.push(byte);
    }
}

fn hex4(src: &[u8], at: usize) -> Option<u32> {
    let digits = src.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
}

#[cfg(test)]
mod tests;
