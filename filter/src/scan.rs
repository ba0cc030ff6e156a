//! A streaming JSON scanner that pulls a fixed set of paths out of a payload
//! in one pass, without building a document.
//!
//! The paths a filter reads are merged into a trie ([`PathSet`]). The scanner
//! walks the payload bytes once: at each object it looks the member names up
//! in the trie node, descends into members that lead to wanted paths, and
//! skips every other value by bracket counting (strings are skipped with
//! `memchr`). Values at wanted paths are recorded as byte ranges ([`Raw`]);
//! numbers are converted only when the evaluator asks.
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
//! The scanner is not a validator. What it reads it checks (brackets
//! balance, strings close, `:` and `,` are where they belong, wanted scalars are valid
//! JSON literals and numbers, nesting stays within [`MAX_NESTING`]); if any of
//! that fails, every path is NULL. Malformations inside skipped values (a
//! bad scalar, `[1}` where only the balance of brackets is counted) and
//! after the point where the scan stops go unnoticed.

use std::collections::HashMap;

use crate::ast::{Path, Step};

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
    /// The same, hashed, when there are many.
    field_map: Option<HashMap<Box<[u8]>, u32>>,
    /// Bit `n` set when some name has `n` bytes (bit 63: 63 or more), so
    /// most unwanted names are rejected by their length alone.
    name_lengths: u64,
    /// Array positions leading to wanted paths, and the child of each.
    indexes: Vec<(u32, u32)>,
    /// The slot that collects values found exactly here, if this is a wanted path.
    slot: Option<u32>,
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
        self.field_child_with_prefix(name, prefix_word(name))
    }

    #[inline]
    fn field_child_with_prefix(&self, name: &[u8], prefix: u64) -> Option<u32> {
        if (self.name_lengths >> name.len().min(63)) & 1 == 0 {
            return None;
        }
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
            nodes: vec![TrieNode::default()],
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
                    self.nodes.push(TrieNode::default());
                    let parent = &mut self.nodes[node];
                    match step {
                        Step::Field(name) => {
                            parent.name_lengths |= 1 << name.len().min(63);
                            parent.fields.push(FieldName {
                                len: name.len(),
                                prefix: prefix_word(name.as_bytes()),
                                name: name.as_bytes().into(),
                                child: next,
                            });
                            if parent.fields.len() > LINEAR_LOOKUP_MAX {
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
        };
        scanner.skip_ws();
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
}

/// Bytes after which a scalar ends.
fn is_delimiter(b: u8) -> bool {
    matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Malformed> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// Reads the value at the cursor, collecting what `node` wants from it.
    /// `stop` says that once this value is done, every wanted path is.
    fn value(
        &mut self,
        node: u32,
        allow_index: bool,
        stop: bool,
        depth: u32,
    ) -> Result<Flow, Malformed> {
        let trie = &self.set.nodes[node as usize];
        let slot = trie.slot;
        match self.peek() {
            Some(b'{') => {
                if trie.fields.is_empty() {
                    self.skip_container(depth)?;
                    Ok(Flow::Continue)
                } else {
                    self.object(node, stop, depth + 1)
                }
            }
            Some(b'[') => {
                let wanted = slot.is_some()
                    || !trie.fields.is_empty()
                    || (allow_index && !trie.indexes.is_empty());
                if wanted {
                    self.array(node, allow_index, depth + 1)?;
                } else {
                    self.skip_container(depth)?;
                }
                Ok(Flow::Continue)
            }
            Some(b'"') => {
                let (start, end, escaped) = self.string()?;
                if let Some(slot) = slot {
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
                Ok(Flow::Continue)
            }
            Some(b't') => self.literal(b"true", Raw::True, slot),
            Some(b'f') => self.literal(b"false", Raw::False, slot),
            Some(b'n') => self.literal(b"null", Raw::Null, slot),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.number()?;
                if let Some(slot) = slot {
                    self.cap.push(
                        slot,
                        Raw::Number {
                            start,
                            end: self.pos,
                        },
                    );
                }
                Ok(Flow::Continue)
            }
            _ => Err(Malformed),
        }
    }

    fn literal(&mut self, word: &[u8], raw: Raw, slot: Option<u32>) -> Result<Flow, Malformed> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) != Some(word)
            || self.bytes.get(end).is_some_and(|&b| !is_delimiter(b))
        {
            return Err(Malformed);
        }
        self.pos = end;
        if let Some(slot) = slot {
            self.cap.push(slot, raw);
        }
        Ok(Flow::Continue)
    }

    /// Checks a number against the JSON grammar and moves past it.
    fn number(&mut self) -> Result<(), Malformed> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Malformed),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(Malformed);
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(Malformed);
            }
            self.digits();
        }
        match self.peek() {
            Some(b) if !is_delimiter(b) => Err(Malformed),
            _ => Ok(()),
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// Reads a string at the cursor: its content range and whether it has escapes.
    #[inline]
    fn string(&mut self) -> Result<(usize, usize, bool), Malformed> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(self.pos..).ok_or(Malformed)?;
            let at = find_quote_or_backslash(rest).ok_or(Malformed)?;
            self.pos += at;
            if self.peek() == Some(b'"') {
                let end = self.pos;
                self.pos += 1;
                return Ok((start, end, escaped));
            }
            escaped = true;
            // The escaped byte can be a quote; step over it with the backslash.
            self.pos += 2;
        }
    }

    /// Reads a member name at the cursor: its range, whether it has
    /// escapes, and its [`prefix_word`]. A name shorter than eight bytes
    /// (most are) is found, and its prefix taken, from one word.
    #[inline]
    fn member_name(&mut self) -> Result<(usize, usize, bool, u64), Malformed> {
        let start = self.pos + 1;
        if let Some(chunk) = self.bytes.get(start..).and_then(<[u8]>::first_chunk::<8>) {
            let word = u64::from_le_bytes(*chunk);
            let quote = bytes_equal(word, b'"');
            let backslash = bytes_equal(word, b'\\');
            // The lowest flag of each mask is exact: a quote before any backslash ends the name.
            if quote != 0 && (backslash == 0 || quote.trailing_zeros() < backslash.trailing_zeros())
            {
                let len = (quote.trailing_zeros() / 8) as usize;
                self.pos = start + len + 1;
                let prefix = word & ((1_u64 << (len * 8)) - 1);
                return Ok((start, start + len, false, prefix));
            }
        }
        let (start, end, escaped) = self.string()?;
        Ok((
            start,
            end,
            escaped,
            prefix_at(self.bytes, start, end - start),
        ))
    }

    fn object(&mut self, node: u32, stop: bool, depth: u32) -> Result<Flow, Malformed> {
        if depth > MAX_NESTING {
            return Err(Malformed);
        }
        let set = self.set;
        let trie = &set.nodes[node as usize];
        let instance = self.cap.next_instance();
        let mut remaining = trie.fields.len();
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Flow::Continue);
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Malformed);
            }
            let (start, end, escaped, prefix) = self.member_name()?;
            if self.peek() == Some(b':') {
                self.pos += 1;
            } else {
                self.skip_ws();
                self.expect(b':')?;
            }
            self.skip_ws();
            let name = self.bytes.get(start..end).unwrap_or(&[]);
            // Most names are rejected by length before any call (an escaped
            // name's raw length says nothing about its real one).
            let child = if !escaped && (trie.name_lengths >> (end - start).min(63)) & 1 == 0 {
                None
            } else if escaped {
                let mut key = std::mem::take(&mut self.cap.key);
                key.clear();
                unescape(name, &mut key);
                let child = trie.field_child(&key);
                self.cap.key = key;
                child
            } else {
                trie.field_child_with_prefix(name, prefix)
            };
            match child {
                Some(child) if self.cap.seen[child as usize] != instance => {
                    self.cap.seen[child as usize] = instance;
                    remaining -= 1;
                    let last = remaining == 0;
                    if self.value(child, true, stop && last, depth)? == Flow::Stop || (stop && last)
                    {
                        return Ok(Flow::Stop);
                    }
                }
                _ => self.skip_value(depth)?,
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if remaining == 0 {
                        self.skip_rest(depth)?;
                        return Ok(Flow::Continue);
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Flow::Continue);
                }
                _ => return Err(Malformed),
            }
        }
    }

    fn array(&mut self, node: u32, allow_index: bool, depth: u32) -> Result<(), Malformed> {
        if depth > MAX_NESTING {
            return Err(Malformed);
        }
        let set = self.set;
        let trie = &set.nodes[node as usize];
        // Field steps and the path's own values apply to every element.
        let flatten = trie.slot.is_some() || !trie.fields.is_empty();
        let last_index = if allow_index { trie.max_index() } else { None };
        self.pos += 1;
        self.skip_ws();
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
                self.skip_value(depth)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if !flatten && last_index.is_none_or(|last| index >= last) {
                        return self.skip_rest(depth);
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

    #[inline]
    fn skip_value(&mut self, depth: u32) -> Result<(), Malformed> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{' | b'[') => self.skip_container(depth),
            Some(_) => {
                let start = self.pos;
                while self.peek().is_some_and(|b| !is_delimiter(b)) {
                    self.pos += 1;
                }
                if self.pos == start {
                    Err(Malformed)
                } else {
                    Ok(())
                }
            }
            None => Err(Malformed),
        }
    }

    /// Skips an object or array at the cursor.
    fn skip_container(&mut self, depth: u32) -> Result<(), Malformed> {
        self.pos += 1;
        self.skip_rest(depth + 1)
    }

    /// Skips to just past the `close` byte that ends the container the
    /// cursor is in, checking that brackets balance and nesting stays in
    /// bounds on the way.
    ///
    /// Eight bytes at a time: one word gives exact masks of its quotes and
    /// brackets, a prefix XOR of the quote mask tells which bytes are inside
    /// strings, and the brackets outside strings change the depth. Only a
    /// word holding a backslash, or one where the container may end or the
    /// nesting bound may be crossed, is walked byte by byte.
    fn skip_rest(&mut self, depth: u32) -> Result<(), Malformed> {
        // Depth of containers opened since the cursor, counting the one it is in.
        let mut open: u32 = 1;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            if let Some(chunk) = self
                .bytes
                .get(self.pos..)
                .and_then(<[u8]>::first_chunk::<8>)
            {
                let word = u64::from_le_bytes(*chunk);
                if !escaped && bytes_equal(word, b'\\') == 0 {
                    let folded = word | (ONES * 0x20);
                    if bytes_equal(folded, b'{') | bytes_equal(folded, b'}') == 0 {
                        // No bracket: only the parity of the quotes matters.
                        in_string ^= count_flags(flag_equal(word, b'"')) & 1 == 1;
                        self.pos += 8;
                        continue;
                    }
                    // Masks keep one flag per byte, in the byte's high bit.
                    let quotes = flag_equal(word, b'"');
                    // Prefix XOR: a byte's flag is set when an odd number
                    // of quotes precede it (inclusive) in this word.
                    let mut inside = quotes;
                    inside ^= inside << 8;
                    inside ^= inside << 16;
                    inside ^= inside << 32;
                    if in_string {
                        inside ^= HIGHS;
                    }
                    let opens = flag_equal(folded, b'{') & !inside;
                    let closes = flag_equal(folded, b'}') & !inside;
                    in_string = inside >> 63 == 1;
                    let (opened, closed) = (count_flags(opens), count_flags(closes));
                    if closed < open && depth + open + opened <= MAX_NESTING + 1 {
                        open = open + opened - closed;
                        self.pos += 8;
                        continue;
                    }
                    // The container may end, or nest too deep, in this
                    // word: follow its brackets in order.
                    let mut marks = opens | closes;
                    while marks != 0 {
                        let bit = marks.trailing_zeros();
                        if (opens >> bit) & 1 == 1 {
                            open += 1;
                            if depth + open > MAX_NESTING + 1 {
                                return Err(Malformed);
                            }
                        } else {
                            open -= 1;
                            if open == 0 {
                                self.pos += (bit / 8) as usize + 1;
                                return Ok(());
                            }
                        }
                        marks &= marks - 1;
                    }
                    self.pos += 8;
                    continue;
                }
            }
            // Byte by byte, for this word or the tail of the payload.
            let stop = (self.pos + 8).min(self.bytes.len());
            if self.pos >= stop {
                return Err(Malformed);
            }
            while self.pos < stop {
                let Some(&b) = self.bytes.get(self.pos) else {
                    return Err(Malformed);
                };
                self.pos += 1;
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => {
                        open += 1;
                        if depth + open > MAX_NESTING + 1 {
                            return Err(Malformed);
                        }
                    }
                    b'}' | b']' => {
                        open -= 1;
                        if open == 0 {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// How many bytes of a [`flag_equal`] mask are flagged. A multiply adds the
/// eight 0/1 bytes into the top byte; `count_ones` would be a dozen
/// instructions on the baseline x86-64 target, which has no `popcnt`.
fn count_flags(flags: u64) -> u32 {
    ((flags >> 7).wrapping_mul(ONES) >> 56) as u32
}

/// The high bit of each byte of `word` that equals `byte`, exactly (unlike
/// [`bytes_equal`], no borrow crosses from one byte to the next).
fn flag_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !(((x & !HIGHS).wrapping_add(!HIGHS)) | x) & HIGHS
}

// Word-at-a-time byte search. Strings in messages are mostly short, where
// setting up a vector search costs more than it saves; eight bytes per step
// with plain integer operations wins for them, and is still fast on long ones.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A word with the high bit set in (at least) the lowest byte of `word` equal
/// to `byte`, and no bit set below it.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Position of the first byte of `hay` for which `hit(word)` flags a match,
/// checking eight bytes at a time and the tail one by one.
#[inline]
fn find_with(hay: &[u8], hit: impl Fn(u64) -> u64, is_match: impl Fn(u8) -> bool) -> Option<usize> {
    let mut at = 0;
    while let Some(chunk) = hay.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let mask = hit(u64::from_le_bytes(*chunk));
        if mask != 0 {
            return Some(at + (mask.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    hay.get(at..)?
        .iter()
        .position(|&b| is_match(b))
        .map(|p| at + p)
}

/// Position of the first `"` or `\`.
#[inline]
fn find_quote_or_backslash(hay: &[u8]) -> Option<usize> {
    find_with(
        hay,
        |w| bytes_equal(w, b'"') | bytes_equal(w, b'\\'),
        |b| b == b'"' || b == b'\\',
    )
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
