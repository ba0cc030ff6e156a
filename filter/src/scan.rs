//! A streaming JSON scanner that pulls a fixed set of paths out of a payload
//! in one pass, without building a document.
//!
//! The paths a filter reads are merged into a trie ([`PathSet`]). The scanner
//! walks the payload once: an object's bytes are classified 64 at a time
//! with vector instructions ([`simd`]) into masks of quotes, colons and
//! brackets, and the object's members are read off the masks ([`walk`]):
//! each member's name length comes from its quotes' positions, most names
//! are rejected by it, the rest are looked up in the trie node (compared a
//! word at a time), members that lead to wanted paths are descended into,
//! and every other value is crossed on the masks without being read.
//! Arrays on a wanted path, and skips outside an object walk, go value by
//! value ([`skip`]).
//! Values at wanted paths are recorded as byte ranges ([`Raw`]); numbers are
//! converted only when the evaluator asks.
//!
//! Array semantics follow AMPS: a field step applied to an array applies to
//! each element, an array at the end of a path contributes each element (so
//! comparisons are "any element"), and `[n]` picks one element. A path may
//! therefore collect several values.
//!
//! The scan stops as soon as every wanted path is complete: when the last
//! top-level member that leads to a wanted path has been read, the rest of the
//! payload is never looked at. It also stops when the caller, told after each
//! top-level member which paths are complete ([`PathSet::scan_checked`]),
//! says the filter's result is known. Duplicate member names: the first wins.
//!
//! The scanner is not a validator. What it reads it checks (strings close,
//! brackets balance, nesting stays within [`MAX_NESTING`], the members it
//! looks up are written `"name":` after a `,` or `{`, wanted scalars are
//! valid JSON literals and numbers followed by `,` or `}`); if any of that
//! fails, every path is NULL. What it does not read goes unnoticed: the
//! text of members whose names are rejected by length (values and commas
//! included), a `}` closing a `[` inside a skipped value (any closing
//! bracket counts), and everything after the point where the scan stops.

use std::collections::HashMap;

use crate::ast::{Path, Step};

mod simd;
mod skip;
mod walk;

use skip::Searchers;

/// Deepest payload nesting the scanner follows, the same as serde_json's
/// default so that the reference interpreter accepts the same documents.
pub const MAX_NESTING: u32 = 128;

/// Above this many member names of one length at one trie node, names are
/// looked up in a hash map rather than compared one by one.
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
    /// Member names leading to wanted paths, and the child node of each,
    /// ordered by [`length_bucket`].
    fields: Vec<FieldName>,
    /// Where each length bucket's names start in `fields` (entry 64: the
    /// end), so that a name is compared only with the names of its length.
    length_start: LengthStart,
    /// The names, hashed, when one length has too many to compare one by
    /// one.
    field_map: Option<HashMap<Box<[u8]>, u32>>,
    /// Per length below 16, the names of that length when there are one or
    /// two and of at most eight bytes: then comparisons of words settle a
    /// lookup.
    short: [ShortNames; 16],
    /// Bit `n` set when some name has `n` bytes (bit 63: 63 or more), so
    /// most unwanted names are rejected by their length alone.
    name_lengths: u64,
    /// Array positions leading to wanted paths, and the child of each.
    indexes: Vec<(u32, u32)>,
    /// No member names and no positions below: only a value is recorded here.
    leaf: bool,
    /// The slot that collects values found exactly here, if this is a wanted path.
    slot: Option<u32>,
    /// The slots below 64 at or below this node, as a bit mask.
    subtree: u64,
}

/// Per length bucket, the index in [`TrieNode::fields`] of its first name.
#[derive(Clone, Debug)]
struct LengthStart([u32; 65]);

impl Default for LengthStart {
    fn default() -> Self {
        LengthStart([0; 65])
    }
}

/// The one or two member names of one length, of at most eight bytes.
#[derive(Clone, Copy, Debug, Default)]
struct ShortNames {
    /// Whether these entries settle a lookup.
    complete: bool,
    /// The bytes of a word that a name of this length occupies.
    mask: u64,
    /// Each name as a word (zero-padded), and its child; with one name,
    /// both entries are that name.
    names: [(u64, u32); 2],
}

/// The bucket of a name's length: the length, or 63 for 63 and more.
#[inline]
fn length_bucket(len: usize) -> usize {
    len.min(63)
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

/// Whether `name`, of more than eight bytes whose first eight equal
/// `known`'s, equals `known`: up to 16 bytes by comparing the last eight
/// as a word rather than by a library call.
#[inline(always)]
fn same_tail(name: Option<&[u8]>, known: &[u8]) -> bool {
    let Some(name) = name else { return false };
    match (name.len(), name.last_chunk::<8>(), known.last_chunk::<8>()) {
        (9..=16, Some(a), Some(b)) => a == b && name.len() == known.len(),
        _ => name == known,
    }
}

/// The first eight bytes of `name` (zero-padded), as a little-endian word.
fn prefix_word(name: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    for (w, b) in word.iter_mut().zip(name) {
        *w = *b;
    }
    u64::from_le_bytes(word)
}

/// `word` with only its first `len` bytes kept: the [`prefix_word`] of a
/// `len`-byte name whose first eight bytes (or more) `word` holds.
#[inline]
fn keep_bytes(word: u64, len: usize) -> u64 {
    if len >= 8 {
        word
    } else {
        word & !(u64::MAX << (8 * len))
    }
}

impl TrieNode {
    /// The child for member name `name`.
    fn field_child(&self, name: &[u8]) -> Option<u32> {
        if (self.name_lengths >> length_bucket(name.len())) & 1 == 0 {
            return None;
        }
        self.lookup(name, 0, name.len(), prefix_word(name))
    }

    /// The child for the member name of `len` bytes at `bytes[start..]`,
    /// whose first eight bytes (or more) `word` holds. The caller has
    /// checked `name_lengths`.
    #[inline(always)]
    fn lookup_word(&self, bytes: &[u8], start: usize, len: usize, word: u64) -> Option<u32> {
        match self.short.get(len) {
            Some(short) if short.complete => {
                let [(a, a_child), (b, b_child)] = short.names;
                let word = word & short.mask;
                if word == a {
                    Some(a_child)
                } else if word == b {
                    Some(b_child)
                } else {
                    None
                }
            }
            _ => self.lookup(bytes, start, len, keep_bytes(word, len)),
        }
    }

    /// The child for the `len`-byte member name at `bytes[start..]`, whose
    /// [`prefix_word`] is `prefix`. The caller has checked `name_lengths`.
    #[inline(never)]
    fn lookup(&self, bytes: &[u8], start: usize, len: usize, prefix: u64) -> Option<u32> {
        let bucket = length_bucket(len);
        let from = *self.length_start.0.get(bucket)? as usize;
        let to = *self.length_start.0.get(bucket + 1)? as usize;
        let candidates = self.fields.get(from..to)?;
        if candidates.len() > LINEAR_LOOKUP_MAX {
            return self.map_lookup(bytes.get(start..start + len)?);
        }
        candidates
            .iter()
            .find(|f| {
                f.prefix == prefix
                    && f.len == len
                    && (len <= 8 || same_tail(bytes.get(start..start + len), &f.name))
            })
            .map(|f| f.child)
    }

    #[cold]
    fn map_lookup(&self, name: &[u8]) -> Option<u32> {
        self.field_map.as_ref()?.get(name).copied()
    }

    /// Adds member name `name` leading to `child`.
    fn add_field(&mut self, name: &[u8], child: u32) {
        let bucket = length_bucket(name.len());
        self.name_lengths |= 1 << bucket;
        let at = self
            .fields
            .partition_point(|f| length_bucket(f.len) <= bucket);
        self.fields.insert(
            at,
            FieldName {
                len: name.len(),
                prefix: prefix_word(name),
                name: name.into(),
                child,
            },
        );
        for start in self.length_start.0.iter_mut().skip(bucket + 1) {
            *start += 1;
        }
        let same_length: Vec<&FieldName> = self
            .fields
            .iter()
            .filter(|f| length_bucket(f.len) == bucket)
            .collect();
        if let Some(short) = self.short.get_mut(bucket) {
            let entry = |f: &FieldName| (f.prefix, f.child);
            *short = match same_length[..] {
                [a] if a.len <= 8 => ShortNames {
                    complete: true,
                    mask: keep_bytes(u64::MAX, a.len),
                    names: [entry(a), entry(a)],
                },
                [a, b] if a.len <= 8 => ShortNames {
                    complete: true,
                    mask: keep_bytes(u64::MAX, a.len),
                    names: [entry(a), entry(b)],
                },
                _ => ShortNames::default(),
            };
        }
        let same_length = same_length.len();
        match &mut self.field_map {
            Some(map) => {
                map.insert(name.into(), child);
            }
            None if same_length > LINEAR_LOOKUP_MAX => {
                self.field_map = Some(
                    self.fields
                        .iter()
                        .map(|f| (f.name.clone(), f.child))
                        .collect(),
                );
            }
            None => {}
        }
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
    /// Trie node `node`. The scanner only follows numbers the trie gave
    /// it, so this always finds one; were it not to, the scan would end
    /// as on a malformed payload rather than panic.
    #[inline(always)]
    fn node(&self, node: u32) -> Result<&TrieNode, Malformed> {
        self.nodes.get(node as usize).ok_or(Malformed)
    }

    /// Adds a path (once) and returns its slot number.
    pub(crate) fn insert(&mut self, path: &Path) -> u32 {
        if let Some(slot) = self.paths.iter().position(|p| p == path) {
            return slot as u32;
        }
        let slot = self.paths.len() as u32;
        self.paths.push(path.clone());
        let bit = 1_u64.checked_shl(slot).unwrap_or(0);
        // Node numbers come from the trie itself, so every `get` below finds
        // its node.
        let mut node = 0usize;
        if let Some(root) = self.nodes.get_mut(node) {
            root.subtree |= bit;
        }
        for step in &path.steps {
            let next = self.nodes.len() as u32;
            let existing = self.nodes.get(node).and_then(|n| match step {
                Step::Field(name) => n.field_child(name.as_bytes()),
                Step::Index(i) => n.index_child(*i),
            });
            node = match existing {
                Some(child) => child as usize,
                None => {
                    self.nodes.push(TrieNode {
                        leaf: true,
                        ..TrieNode::default()
                    });
                    if let Some(parent) = self.nodes.get_mut(node) {
                        parent.leaf = false;
                        match step {
                            Step::Field(name) => parent.add_field(name.as_bytes(), next),
                            Step::Index(i) => parent.indexes.push((*i, next)),
                        }
                    }
                    next as usize
                }
            };
            if let Some(n) = self.nodes.get_mut(node) {
                n.subtree |= bit;
            }
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.slot = Some(slot);
        }
        slot
    }

    /// Collects the values of every path from `payload` into `captures`.
    /// Returns false (with every path empty) when the payload was found
    /// malformed.
    pub(crate) fn scan(&self, payload: &[u8], captures: &mut Captures) -> bool {
        self.scan_with(payload, captures, None) == ScanEnd::Complete(true)
    }

    /// [`Self::scan`] that, when the payload is an object, calls `check`
    /// after each of its members that leads to wanted paths, with the
    /// slots complete so far (a bit mask of those below 64: no value can be
    /// added to them any more), until it says to stop or that it is done.
    pub(crate) fn scan_checked(
        &self,
        payload: &[u8],
        captures: &mut Captures,
        check: &mut Check<'_>,
    ) -> ScanEnd {
        self.scan_with(payload, captures, Some(check))
    }

    fn scan_with<'a>(
        &'a self,
        payload: &'a [u8],
        captures: &'a mut Captures,
        check: Option<&'a mut Check<'a>>,
    ) -> ScanEnd {
        captures.reset(self.paths.len(), self.nodes.len());
        if self.paths.is_empty() {
            return ScanEnd::Complete(true);
        }
        let mut scanner = Scanner {
            bytes: payload,
            pos: skip_ws(payload, 0),
            set: self,
            cap: captures,
            search: Searchers::default(),
            check,
            completed: 0,
            decided: false,
        };
        if scanner.value(0, true, true, 0).is_err() {
            scanner.cap.clear_values();
            return ScanEnd::Complete(false);
        }
        if scanner.decided {
            ScanEnd::Decided
        } else {
            ScanEnd::Complete(true)
        }
    }
}

/// What [`PathSet::scan_checked`] calls.
pub(crate) type Check<'c> = dyn FnMut(&mut Captures, u64) -> Verdict + 'c;

/// What a [`Check`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Stop the scan.
    Stop,
    /// Go on, and call again.
    Continue,
    /// Go on, and do not call again.
    Done,
}

/// How a scan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// It read what it needed; false when the payload was found malformed
    /// (every path is then empty).
    Complete(bool),
    /// The check said to stop.
    Decided,
}

/// Where the values of one scan go. Reused between scans so that scanning
/// allocates nothing once the buffers have grown to fit.
#[derive(Debug, Default)]
pub(crate) struct Captures {
    /// Per slot, how many values were found and the first of them.
    slots: Vec<Slot>,
    /// Second and later values per slot.
    more: Vec<Vec<Raw>>,
    /// Per trie node, the object instance in which its name was last seen,
    /// to let the first of duplicate member names win.
    seen: Vec<u32>,
    instance: u32,
    /// Unescaped strings.
    pub(crate) arena: Vec<u8>,
    key: Vec<u8>,
    /// The payload's last bytes, zero-padded, for the object walks of
    /// the scan under way (filled when one gets there).
    tail: Tail,
}

/// The values one slot collected: how many, and the first (meaningless
/// when there are none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) count: u32,
    pub(crate) first: Raw,
}

const EMPTY_SLOT: Slot = Slot {
    count: 0,
    first: Raw::Null,
};

impl Captures {
    fn reset(&mut self, slots: usize, nodes: usize) {
        if self.slots.len() < slots {
            self.slots.resize(slots, EMPTY_SLOT);
            self.more.resize_with(slots, Vec::new);
        }
        if self.seen.len() < nodes {
            self.seen.resize(nodes, 0);
        }
        self.clear_values();
        self.tail.start = usize::MAX;
    }

    fn clear_values(&mut self) {
        for (slot, more) in self.slots.iter_mut().zip(&mut self.more) {
            if slot.count > 1 {
                more.clear();
            }
            slot.count = 0;
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

    #[inline(always)]
    fn push(&mut self, slot: u32, raw: Raw) {
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if entry.count == 0 {
            entry.first = raw;
        } else if let Some(more) = self.more.get_mut(slot as usize) {
            more.push(raw);
        }
        entry.count = entry.count.saturating_add(1);
    }

    /// How many values slot `slot` holds, and the first.
    ///
    /// By reference: the scan wrote the slot field by field, and a copy
    /// of it reads the value back through a vector register, which the
    /// evaluator then waits for.
    #[inline]
    pub(crate) fn slot(&self, slot: u32) -> &Slot {
        self.slots.get(slot as usize).unwrap_or(&EMPTY_SLOT)
    }

    /// How many values slot `slot` holds.
    pub(crate) fn count(&self, slot: u32) -> usize {
        self.slot(slot).count as usize
    }

    /// The first value of a slot, if any.
    #[inline]
    pub(crate) fn first(&self, slot: u32) -> Option<Raw> {
        let slot = self.slot(slot);
        (slot.count != 0).then_some(slot.first)
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

/// [`Scanner::object`] as a [`simd::Job`], compiled for each instruction
/// set.
struct ObjectWalk<'a, 's> {
    scanner: &'a mut Scanner<'s>,
    node: u32,
    stop: bool,
    depth: u32,
}

impl simd::Job for ObjectWalk<'_, '_> {
    type Output = Result<Flow, Malformed>;

    #[inline(always)]
    fn run<V: simd::Vectors>(self, vectors: V) -> Self::Output {
        self.scanner
            .object_with(vectors, self.node, self.stop, self.depth)
    }
}

/// What an object walk needs to know about the object it is in.
#[derive(Clone, Copy)]
struct Walk {
    /// Tells this object's members from those of others (duplicates).
    instance: u32,
    /// Wanted members not seen yet.
    remaining: usize,
    /// Every wanted path is complete once this object's wanted members are.
    stop: bool,
    depth: u32,
}

/// The payload was found malformed; every path becomes NULL.
#[derive(Debug)]
struct Malformed;

/// What [`Scanner::leaf_value`] did.
enum Leaf {
    /// Recorded the value; the member ends here.
    After(usize),
    /// Recorded the value, the last the scan needed.
    Stop,
    /// Nothing: [`Scanner::wanted_value`] reads this one.
    Other,
}

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
    search: Searchers,
    /// Called after each wanted member of a top-level object.
    check: Option<&'s mut Check<'s>>,
    /// The slots complete so far, for `check`.
    completed: u64,
    /// `check` stopped the scan.
    decided: bool,
}

/// Bytes after which a scalar ends.
#[inline]
fn is_delimiter(b: u8) -> bool {
    // 256 entries: every byte has one (and the check compiles away).
    DELIMITERS.get(usize::from(b)).copied().unwrap_or(false)
}

/// [`is_delimiter`] as a table: one load per byte of a skipped scalar.
// Indexing in a constant: an index out of bounds fails the build.
#[allow(clippy::indexing_slicing)]
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
        let trie = set.node(node)?;
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

    /// Walks the object at the cursor, at nesting level `depth`: the walk
    /// of [`walk`], compiled for the best vector code the CPU has.
    #[inline(never)]
    fn object(&mut self, node: u32, stop: bool, depth: u32) -> Result<Flow, Malformed> {
        simd::with_vectors(ObjectWalk {
            scanner: self,
            node,
            stop,
            depth,
        })
    }

    /// [`Self::wanted_value`] inlined into the object walk for its
    /// commonest case: a path's last step that finds a string (whose
    /// closing quote the walk's mask found: `string_close`, a bit of the
    /// window at `window`), a number or a literal; the check after a
    /// top-level member included. Anything else is [`Leaf::Other`], with
    /// nothing done.
    #[inline(always)]
    fn leaf_value(
        &mut self,
        walk: &mut Walk,
        child: u32,
        value: usize,
        window: usize,
        string_close: u64,
    ) -> Result<Leaf, Malformed> {
        let bytes = self.bytes;
        let child_trie = self.set.node(child)?;
        if !child_trie.leaf {
            return Ok(Leaf::Other);
        }
        let (raw, after) = match bytes.get(value) {
            Some(b'"') if string_close != 0 => {
                let end = window + string_close.trailing_zeros() as usize;
                (
                    Raw::Str {
                        start: value + 1,
                        end,
                    },
                    end + 1,
                )
            }
            Some(b'-' | b'0'..=b'9') => {
                let end = number_end(bytes, value)?;
                (Raw::Number { start: value, end }, end)
            }
            Some(&b) if matches!(b, b't' | b'f' | b'n') => {
                // Compared as one word (the last four bytes of `false`,
                // whose `f` is known) rather than by a library call.
                let (word, len, raw) = match b {
                    b't' => (*b"true", 4, Raw::True),
                    b'f' => (*b"alse", 5, Raw::False),
                    _ => (*b"null", 4, Raw::Null),
                };
                let end = value + len;
                let last = bytes.get(end - 4..end).and_then(<[u8]>::first_chunk::<4>);
                if last != Some(&word) || bytes.get(end).is_some_and(|&b| !is_delimiter(b)) {
                    return Err(Malformed);
                }
                (raw, end)
            }
            _ => return Ok(Leaf::Other),
        };
        self.claim(walk, child);
        if let Some(slot) = child_trie.slot {
            self.cap.push(slot, raw);
        }
        if walk.depth == 1 && self.top_level_done(child_trie.subtree) {
            return Ok(Leaf::Stop);
        }
        if walk.stop && walk.remaining == 0 {
            self.pos = after;
            return Ok(Leaf::Stop);
        }
        Ok(Leaf::After(after))
    }

    /// Marks the wanted member `child` as read in `walk`'s object: a later
    /// one of the same name is a duplicate, and one fewer is left.
    #[inline(always)]
    fn claim(&mut self, walk: &mut Walk, child: u32) {
        if let Some(seen) = self.cap.seen.get_mut(child as usize) {
            *seen = walk.instance;
        }
        walk.remaining -= 1;
    }

    /// After a top-level member that completed the paths in `subtree`:
    /// tells the caller's check, and returns whether it has decided the
    /// filter's result (the scan stops there).
    #[inline(always)]
    fn top_level_done(&mut self, subtree: u64) -> bool {
        let Some(check) = self.check.as_mut() else {
            return false;
        };
        self.completed |= subtree;
        match check(self.cap, self.completed) {
            Verdict::Continue => false,
            Verdict::Done => {
                self.check = None;
                false
            }
            Verdict::Stop => {
                self.decided = true;
                true
            }
        }
    }

    /// Reads the value at `value` of a member that leads to wanted paths,
    /// `child`, and returns the position after it, or None when the scan
    /// is over.
    #[inline(never)]
    fn wanted_value(
        &mut self,
        walk: &mut Walk,
        child: u32,
        value: usize,
    ) -> Result<Option<usize>, Malformed> {
        self.claim(walk, child);
        let stop = walk.stop && walk.remaining == 0;
        self.pos = value;
        let child_trie = self.set.node(child)?;
        match self.peek() {
            // A path's last step that finds a scalar: record it here rather
            // than through the general `value`.
            Some(b) if child_trie.leaf && b != b'{' && b != b'[' => self.scalar(child_trie.slot)?,
            _ => {
                if self.value(child, true, stop, walk.depth)? == Flow::Stop {
                    return Ok(None);
                }
            }
        }
        if walk.depth == 1 && self.top_level_done(child_trie.subtree) {
            return Ok(None);
        }
        Ok((!stop).then_some(self.pos))
    }

    /// Walks the array at the cursor, at nesting level `depth`.
    fn array(&mut self, node: u32, allow_index: bool, depth: u32) -> Result<(), Malformed> {
        if depth > MAX_NESTING {
            return Err(Malformed);
        }
        let set = self.set;
        let trie = set.node(node)?;
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
                        self.pos = self.rest_of_container(self.pos, depth)?;
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
    #[inline]
    fn skip_value(&mut self, pos: usize, depth: u32) -> Result<usize, Malformed> {
        self.skip_value_with(simd::Dispatch, pos, depth)
    }

    /// [`Self::skip_value`] with the vector code `vectors`.
    #[inline(always)]
    fn skip_value_with<V: simd::Vectors>(
        &mut self,
        vectors: V,
        pos: usize,
        depth: u32,
    ) -> Result<usize, Malformed> {
        match self.bytes.get(pos) {
            Some(b'"') => Ok(self.string_end_with(vectors, pos + 1)? + 1),
            Some(b'{' | b'[') => self.skip_container_with(vectors, pos, depth + 1),
            _ => skip_scalar(self.bytes, pos),
        }
    }
}

/// The payload's last bytes followed by zeros, copied once per scan when
/// an object walk comes near the end (and kept in [`Captures`], so that
/// no walk zeroes a buffer it may not use), so that every block has 64
/// bytes to classify.
#[derive(Debug)]
struct Tail {
    /// Where `bytes[0]` is in the payload; `bytes` holds the payload from
    /// there to its end, then zeros. `usize::MAX` until filled.
    start: usize,
    bytes: [u8; 128],
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            start: usize::MAX,
            bytes: [0; 128],
        }
    }
}

impl Tail {
    /// The 64 bytes at `at`, zero-padded past the payload's end (all
    /// zeros from the end on).
    #[inline(always)]
    fn window<'a>(&'a mut self, bytes: &'a [u8], at: usize) -> &'a [u8; 64] {
        if let Some(window) = bytes.get(at..).and_then(<[u8]>::first_chunk::<64>) {
            return window;
        }
        if self.start == usize::MAX {
            self.fill(bytes);
        }
        // `at - start` is at most 64 for `at` up to the payload's end.
        self.bytes
            .get(at.saturating_sub(self.start)..)
            .and_then(<[u8]>::first_chunk::<64>)
            .unwrap_or(&[0; 64])
    }

    #[cold]
    #[inline(never)]
    fn fill(&mut self, bytes: &[u8]) {
        self.start = bytes.len().saturating_sub(64);
        // Fixed-size copies (vector moves rather than library calls): the
        // last 64 bytes, then zeros.
        let (head, zeros) = self.bytes.split_at_mut(64);
        zeros.fill(0);
        match bytes.last_chunk::<64>() {
            Some(last) => head.copy_from_slice(last),
            None => {
                head.fill(0);
                if let Some(head) = head.get_mut(..bytes.len()) {
                    head.copy_from_slice(bytes);
                }
            }
        }
    }
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
