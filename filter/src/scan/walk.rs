//! The object walk, on the structure of whole 64-byte blocks.
//!
//! Each block of the object is classified once: its quotes, backslashes,
//! colons and brackets, as bit masks ([`Structure`](super::simd::Structure)),
//! a block ahead of the one being read. The quotes give, by a running
//! parity, the bytes inside strings (in the rare block with a backslash,
//! the quotes are read byte by byte: [`quotes_by_byte`]); what is left
//! outside them is the object's structure.
//! A colon outside strings and outside any nested container is a member,
//! and its name is the string before it: the last opening quote before
//! the colon is where the name starts. So a member's name length comes
//! from the masks alone, and most members are rejected by it without a
//! byte of the payload being read; the rest ([`Scanner::member`]) are
//! looked up in the trie, and wanted values read. A nested container
//! that is not wanted is crossed by counting its brackets, and an
//! unwanted scalar is never looked at at all: its bytes hold no colon or
//! bracket outside a string. A wanted object nested in the object is read
//! on the same masks, its walk's state kept on a small stack ([`Outer`],
//! up to [`NESTED`] deep, then by a call); wanted arrays and other values
//! that take more than the masks are read by calls, and the walk goes on
//! from where they end.
//!
//! What is checked: the payload's structure (strings close, brackets
//! balance, nesting stays within [`MAX_NESTING`], the object closes with
//! `}` after a value or with nothing in it), and at each member whose
//! name is looked up, that the name is a string right before the `:` and
//! right after a `,` or the `{` (whitespace aside), and that a wanted
//! value is a valid scalar, or a container read by its own walk, followed
//! by `,` or `}`. What is not: the text of members whose names are
//! rejected by their length, values and separators included
//! (`{"a":nonsense,"b":1}` gives `/b` 1), and stray text that holds no `:`
//! (`{"a":1,"b"}`).

use super::simd::{Structure, Vectors, settled};
use super::{Flow, Leaf, MAX_NESTING, Malformed, Scanner, TrieNode, Walk, skip_ws, unescape};

/// The quotes of `block` that open or close strings, read byte by byte
/// from the state its first byte is in: inside a string or not, and
/// escaped or not (inside a string, after a backslash). For blocks with a
/// backslash, whose meaning depends on whether it is inside a string: a
/// backslash outside strings is malformed JSON, which the walk reads as an
/// ordinary byte, as skipping always has. Returns the mask and the state
/// the next block starts in.
#[cold]
#[inline(never)]
fn quotes_by_byte(block: &[u8; 64], mut in_string: bool, mut escaped: bool) -> (u64, bool) {
    let mut quote = 0;
    for (i, &b) in block.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if in_string && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quote |= 1 << i;
            in_string = !in_string;
        }
    }
    (quote, escaped)
}

/// The highest set bit of a non-zero `mask`, as a position from `base`.
#[inline(always)]
fn last_at(base: usize, mask: u64) -> usize {
    base + 63 - mask.leading_zeros() as usize
}

/// The eight bytes at `at` as a little-endian word, zero-padded past the
/// payload's end.
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        Some(word) => u64::from_le_bytes(*word),
        None => super::prefix_word(bytes.get(at..).unwrap_or(&[])),
    }
}

/// Whether the byte at `at` (after any whitespace) ends a member: `,` or
/// `}`.
#[inline(always)]
fn ends_member(bytes: &[u8], at: usize) -> bool {
    match bytes.get(at) {
        Some(b',' | b'}') => true,
        _ => matches!(bytes.get(skip_ws(bytes, at)), Some(b',' | b'}')),
    }
}

/// The last byte before `at` that is not whitespace, and its position.
fn byte_before(bytes: &[u8], at: usize) -> Option<(usize, u8)> {
    let head = bytes.get(..at)?;
    head.iter()
        .rposition(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .and_then(|i| head.get(i).map(|&b| (i, b)))
}

/// Whether the name opening at `open` starts a member: a `,` or `{`
/// comes before it (whitespace aside).
#[inline(always)]
fn starts_member(bytes: &[u8], open: usize) -> bool {
    match bytes.get(open.wrapping_sub(1)) {
        Some(b',' | b'{') => true,
        _ => matches!(byte_before(bytes, open), Some((_, b',' | b'{'))),
    }
}

/// What [`Scanner::member`] reads besides the member: the walk, and the
/// masks of the block its colon is in.
struct Members {
    walk: Walk,
    base: usize,
    /// The block's quotes that open or close strings, and its backslashes.
    quote: u64,
    backslash: u64,
}

/// How [`Scanner::member`] ended.
enum Member {
    /// Go on with the next colon.
    Next,
    /// A wanted value was read by a call that went past the block's
    /// masks: go on from this position.
    Resume(usize),
    /// A wanted object starts here: the walk goes into it.
    Enter(usize),
    /// The scan is over.
    Stop,
}

/// An object the walk is inside of while it reads a wanted object nested
/// in it, on the same masks.
#[derive(Clone, Copy)]
struct Outer {
    node: u32,
    walk: Walk,
    start: usize,
    members: bool,
}

/// How many wanted objects deep a walk goes on the same masks; deeper
/// ones are walked by a call.
const NESTED: usize = 4;

impl Scanner<'_> {
    /// Walks the object at the cursor, at nesting level `depth`, with the
    /// vector code `vectors` (see the module's comment).
    #[inline(always)]
    pub(super) fn object_with<V: Vectors>(
        &mut self,
        vectors: V,
        node: u32,
        stop: bool,
        depth: u32,
    ) -> Result<Flow, Malformed> {
        if depth > MAX_NESTING {
            return Err(Malformed);
        }
        let (set, bytes) = (self.set, self.bytes);
        // The object whose members the walk reads: `node` at first, then
        // any wanted object nested in it, with the ones around it in
        // `outer`.
        let mut node = node;
        let mut trie = set.node(node)?;
        let mut name_lengths = trie.name_lengths;
        let mut outer = [None::<Outer>; NESTED];
        let mut nested = 0usize;
        let mut m = Members {
            walk: Walk {
                instance: self.cap.next_instance(),
                remaining: trie.fields.len(),
                stop,
                depth,
            },
            base: 0,
            quote: 0,
            backslash: 0,
        };
        // Containers that may be open inside this object at once.
        let mut max_open = MAX_NESTING - depth;
        let mut start = self.pos + 1;
        // The block's start, and the state its first byte is in: inside a
        // string (all ones) or not, escaped (1) or not.
        let mut base = start;
        let mut in_string = 0u64;
        let mut escape = false;
        // Containers open inside the object: its members are where none is.
        let mut open = 0u32;
        // The last string-opening quote before this block (0: none, as no
        // name starts there), and whether the block before ended with a
        // closing quote (bit 0) or had a backslash (bit 1).
        let mut last_opening = 0usize;
        let mut before_block = 0u64;
        // Whether a member has been seen, and whether every wanted one has.
        let mut members = false;
        let mut done = m.walk.remaining == 0;
        // The block after the one being read is classified a block
        // ahead, so that its masks are ready when the walk gets there
        // rather than waited for after each mispredicted branch.
        let mut ahead = self.structure_at(vectors, base);
        'blocks: loop {
            if base >= bytes.len() {
                return Err(Malformed);
            }
            let s = ahead;
            ahead = settled(self.structure_at(vectors, base + 64));
            let mut quote = s.quote;
            if s.backslash != 0 || escape {
                (quote, escape) =
                    quotes_by_byte(self.cap.tail.window(bytes, base), in_string != 0, escape);
            }
            // Opening quotes count as inside, closing ones as outside.
            let strings = vectors.prefix_xor(quote) ^ in_string;
            in_string = ((strings as i64) >> 63) as u64;
            let opening = quote & strings;
            let closing = quote & !strings;
            let mut brackets = (s.open | s.close) & !strings;
            let colons = s.colon & !strings;
            // Right after a closing quote (bit i: byte i - 1 is one): where
            // a compact member's colon is. In a block with a backslash, or
            // after one, none: every colon is read in full, as a name may
            // hold an escape.
            let after_quote = if s.backslash != 0 || before_block & 2 != 0 {
                0
            } else {
                (closing << 1) | (before_block & 1)
            };
            let mut wanted = if done { 0 } else { colons };
            'events: loop {
                if open == 0 {
                    // This object's members, up to the next bracket.
                    let next = brackets & brackets.wrapping_neg();
                    let before = next.wrapping_sub(1);
                    let mut here = wanted & before;
                    wanted ^= here;
                    while here != 0 {
                        members = true;
                        let bit = here & here.wrapping_neg();
                        here ^= bit;
                        let opened = opening & (bit - 1);
                        let name_open = if opened != 0 {
                            last_at(base, opened)
                        } else {
                            last_opening
                        };
                        let colon = base + bit.trailing_zeros() as usize;
                        // A compact name's length is the distance between
                        // its quotes; most are rejected by it.
                        let len = colon.wrapping_sub(name_open + 2);
                        let child = if after_quote & bit != 0 {
                            if (name_lengths >> len.min(63)) & 1 == 0 {
                                continue;
                            }
                            // A compact name without escapes: looked up
                            // here, and only a wanted one read on.
                            trie.lookup_word(
                                bytes,
                                name_open + 1,
                                len,
                                word_at(bytes, name_open + 1),
                            )
                        } else {
                            self.member_name(trie, colon, name_open)?
                        };
                        let Some(child) = child else { continue };
                        m.base = base;
                        m.quote = quote;
                        m.backslash = s.backslash;
                        match self.member(&mut m, child, colon, name_open, nested < NESTED)? {
                            Member::Next => {
                                if m.walk.remaining == 0 {
                                    done = true;
                                    (wanted, here) = (0, 0);
                                }
                            }
                            Member::Stop => return Ok(Flow::Stop),
                            Member::Resume(after) => {
                                done = m.walk.remaining == 0;
                                // Go on from the value's end: in this
                                // block, with what lies before it cleared;
                                // past it, in a block starting there.
                                let offset = after - base;
                                if offset >= 64 {
                                    base = after;
                                    ahead = self.structure_at(vectors, base);
                                    (in_string, escape, before_block) = (0, false, 0);
                                    continue 'blocks;
                                }
                                let rest = u64::MAX << offset;
                                brackets &= rest;
                                wanted = if done { 0 } else { (wanted | here) & rest };
                                continue 'events;
                            }
                            Member::Enter(value) => {
                                // Into a wanted object, on the same masks:
                                // its members are the colons after its `{`
                                // where no container inside it is open.
                                let depth = m.walk.depth + 1;
                                if depth > MAX_NESTING {
                                    return Err(Malformed);
                                }
                                if let Some(slot) = outer.get_mut(nested) {
                                    *slot = Some(Outer {
                                        node,
                                        walk: m.walk,
                                        start,
                                        members,
                                    });
                                }
                                nested += 1;
                                node = child;
                                trie = set.node(node)?;
                                name_lengths = trie.name_lengths;
                                m.walk = Walk {
                                    instance: self.cap.next_instance(),
                                    remaining: trie.fields.len(),
                                    stop: m.walk.stop && m.walk.remaining == 0,
                                    depth,
                                };
                                max_open = MAX_NESTING - depth;
                                start = value + 1;
                                (members, done) = (false, m.walk.remaining == 0);
                                let offset = start - base;
                                if offset >= 64 {
                                    base = start;
                                    ahead = self.structure_at(vectors, base);
                                    (in_string, escape, before_block) = (0, false, 0);
                                    continue 'blocks;
                                }
                                let rest = u64::MAX << offset;
                                brackets &= rest;
                                wanted = if done { 0 } else { colons & rest };
                                continue 'events;
                            }
                        }
                    }
                    if next == 0 {
                        break 'events;
                    }
                    brackets ^= next;
                    if s.close & next != 0 {
                        let end = base + next.trailing_zeros() as usize;
                        if bytes.get(end) != Some(&b'}') || !self.closes_well(start, end, members) {
                            return Err(Malformed);
                        }
                        let Some(Some(up)) = nested.checked_sub(1).and_then(|i| outer.get(i))
                        else {
                            self.pos = end + 1;
                            return Ok(Flow::Continue);
                        };
                        // Out of a nested wanted object: what a call
                        // reading it would do after it, then on with the
                        // object around it.
                        nested -= 1;
                        let (child, stop) = (node, m.walk.stop);
                        node = up.node;
                        trie = set.node(node)?;
                        name_lengths = trie.name_lengths;
                        m.walk = up.walk;
                        max_open = MAX_NESTING - m.walk.depth;
                        (start, members) = (up.start, up.members);
                        if m.walk.depth == 1 && self.top_level_done(set.node(child)?.subtree) {
                            return Ok(Flow::Stop);
                        }
                        if stop {
                            self.pos = end + 1;
                            return Ok(Flow::Stop);
                        }
                        if !ends_member(bytes, end + 1) {
                            return Err(Malformed);
                        }
                        done = m.walk.remaining == 0;
                        let rest = !((next << 1).wrapping_sub(1));
                        wanted = if done { 0 } else { colons & rest };
                        continue 'events;
                    }
                    // An unwanted container: counted through.
                    open = 1;
                    if open > max_open {
                        return Err(Malformed);
                    }
                } else {
                    while brackets != 0 {
                        let bit = brackets & brackets.wrapping_neg();
                        brackets ^= bit;
                        if s.open & bit != 0 {
                            open += 1;
                            if open > max_open {
                                return Err(Malformed);
                            }
                        } else {
                            open -= 1;
                            if open == 0 {
                                // The colons inside it were not members.
                                let rest = !((bit << 1).wrapping_sub(1));
                                wanted &= rest;
                                continue 'events;
                            }
                        }
                    }
                    break 'events;
                }
            }
            if opening != 0 {
                last_opening = last_at(base, opening);
            }
            before_block = (closing >> 63) | (u64::from(s.backslash != 0) << 1);
            base += 64;
        }
    }

    /// The structure of the 64 bytes at `at`; past the payload's end, no
    /// byte is anything. Near the end, the last 64 bytes of the payload
    /// are classified and the masks shifted down, rather than the bytes
    /// copied to a padded buffer: a vector load of freshly copied bytes
    /// waits for the copy's stores to reach the cache.
    #[inline(always)]
    fn structure_at<V: Vectors>(&mut self, vectors: V, at: usize) -> Structure {
        let bytes = self.bytes;
        if let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<64>) {
            return vectors.structure64(chunk);
        }
        self.structure_near_end(vectors, at)
    }

    /// [`Self::structure_at`] where fewer than 64 bytes are left.
    #[inline(always)]
    fn structure_near_end<V: Vectors>(&mut self, vectors: V, at: usize) -> Structure {
        let bytes = self.bytes;
        if at >= bytes.len() {
            return Structure::default();
        }
        match bytes.last_chunk::<64>() {
            Some(last) => {
                let s = vectors.structure64(last);
                // `last` starts `shift` bytes before `at` (0 < shift < 64).
                let shift = at - (bytes.len() - 64);
                Structure {
                    quote: s.quote >> shift,
                    backslash: s.backslash >> shift,
                    colon: s.colon >> shift,
                    open: s.open >> shift,
                    close: s.close >> shift,
                }
            }
            // A payload shorter than one block: its bytes, padded.
            None => vectors.structure64(self.cap.tail.window(bytes, at)),
        }
    }

    /// The child in `trie` of the name before the colon at `colon`, which
    /// opens at `name_open`, where the colon is not right after a quote or
    /// a name may hold a backslash; checks that the name starts a member.
    #[cold]
    #[inline(never)]
    fn member_name(
        &mut self,
        trie: &TrieNode,
        colon: usize,
        name_open: usize,
    ) -> Result<Option<u32>, Malformed> {
        let bytes = self.bytes;
        let close = match bytes.get(colon.wrapping_sub(1)) {
            Some(b'"') => colon - 1,
            _ => match byte_before(bytes, colon) {
                Some((at, b'"')) => at,
                _ => return Err(Malformed),
            },
        };
        if name_open >= close || !starts_member(bytes, name_open) {
            return Err(Malformed);
        }
        let name = bytes.get(name_open + 1..close).unwrap_or(&[]);
        Ok(if name.contains(&b'\\') {
            self.escaped_name(trie, name)
        } else if (trie.name_lengths >> name.len().min(63)) & 1 == 0 {
            None
        } else {
            trie.lookup_word(
                bytes,
                name_open + 1,
                name.len(),
                word_at(bytes, name_open + 1),
            )
        })
    }

    /// The member of name `child` (in the walk's trie) whose colon is at
    /// `colon` and whose name opens at `name_open`: checks that a `,` or
    /// the `{` comes before it, and reads its value unless it is a
    /// duplicate.
    #[inline(never)]
    fn member(
        &mut self,
        m: &mut Members,
        child: u32,
        colon: usize,
        name_open: usize,
        nest: bool,
    ) -> Result<Member, Malformed> {
        let bytes = self.bytes;
        if !starts_member(bytes, name_open) {
            return Err(Malformed);
        }
        if self.cap.seen.get(child as usize) == Some(&m.walk.instance) {
            // A duplicate: the first one won.
            return Ok(Member::Next);
        }
        let value = match bytes.get(colon + 1) {
            Some(&b) if b > b' ' => colon + 1,
            _ => skip_ws(bytes, colon + 1),
        };
        // A string value's closing quote, if the block has it and no
        // backslash comes before it.
        let from = value - m.base + 1;
        let later = if from < 64 { u64::MAX << from } else { 0 };
        let string_close = m.quote & later & (m.quote & later).wrapping_neg();
        let string_close = if m.backslash & later & string_close.wrapping_sub(1) == 0 {
            string_close
        } else {
            0
        };
        match self.leaf_value(&mut m.walk, child, value, m.base, string_close)? {
            Leaf::After(after) => {
                if !ends_member(bytes, after) {
                    return Err(Malformed);
                }
                Ok(Member::Next)
            }
            Leaf::Stop => Ok(Member::Stop),
            Leaf::Other => {
                if nest
                    && bytes.get(value) == Some(&b'{')
                    && !self.set.node(child)?.fields.is_empty()
                {
                    // The walk goes into it (what `wanted_value` does
                    // before reading the value).
                    self.claim(&mut m.walk, child);
                    return Ok(Member::Enter(value));
                }
                let Some(after) = self.wanted_value(&mut m.walk, child, value)? else {
                    return Ok(Member::Stop);
                };
                if !ends_member(bytes, after) {
                    return Err(Malformed);
                }
                Ok(Member::Resume(after))
            }
        }
    }

    /// The child in `trie` of the member name `name`, which holds a
    /// backslash: looked up unescaped.
    #[cold]
    #[inline(never)]
    fn escaped_name(&mut self, trie: &TrieNode, name: &[u8]) -> Option<u32> {
        let mut key = std::mem::take(&mut self.cap.key);
        key.clear();
        unescape(name, &mut key);
        let child = trie.field_child(&key);
        self.cap.key = key;
        child
    }

    /// Whether the object whose contents start at `start` may close at
    /// `end`: after a value, or with nothing but whitespace in it.
    #[inline(always)]
    fn closes_well(&self, start: usize, end: usize, members: bool) -> bool {
        match self.bytes.get(end.wrapping_sub(1)) {
            Some(b',' | b':') | None => false,
            Some(b' ' | b'\n' | b'\r' | b'\t') => self.closes_after_whitespace(start, end, members),
            Some(_) => members || end == start,
        }
    }

    /// [`Self::closes_well`] where whitespace comes before the `}`.
    #[inline(never)]
    fn closes_after_whitespace(&self, start: usize, end: usize, members: bool) -> bool {
        if !members {
            return skip_ws(self.bytes, start) == end;
        }
        !matches!(byte_before(self.bytes, end), Some((_, b',' | b':')) | None)
    }
}
