//! Fast skipping of JSON strings and containers the filter does not want,
//! in safe code: vector searches come from `memchr`, everything else is
//! plain integer arithmetic on 8-byte words.
//!
//! JSON is dense in structure (a quote every five or six bytes in typical
//! messages), so starting a vector search per quote would spend most of its
//! time starting and stopping. Instead:
//!
//! - **Where the payload has no backslash**, a quote always opens or closes a
//!   string. [`Clean`] finds such stretches with one `memchr` per window of
//!   the payload (typically one per message). There, a string ends at the
//!   next quote (found a word at a time, then by vector search for long
//!   strings), and a container ends at the first bracket of its own kind
//!   that is outside every string and balances it: `memchr2` jumps from
//!   bracket to bracket, and whether a bracket is inside a string is the
//!   parity of the quotes since the container opened, counted eight bytes per
//!   step.
//! - **Elsewhere** strings are walked honouring escapes, and containers
//!   string by string (`memchr3` for a quote or a bracket, then the string's
//!   end): exact, and slower only where escapes are.
//!
//! Only the skipped container's own kind of bracket is counted: in valid
//! JSON each kind balances on its own, so the result is the same, and the
//! scanner was never a validator of skipped values (`[1}]` passes).

use super::{MAX_NESTING, Malformed, Scanner};

pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bytes searched for backslashes at a time: large enough that a typical
/// message needs one search, small enough that a scan that stops early in a
/// large payload does not search all of it.
const CLEAN_WINDOW: usize = 4096;

/// Words of a string searched by arithmetic before a vector search: most
/// strings in messages are shorter, and starting a vector search costs
/// about as much as four words.
const STRING_WORDS: usize = 4;

/// The high bit of each byte of `word` that equals `byte`, exactly (unlike
/// [`bytes_equal`], no borrow crosses from one byte to the next).
#[inline]
pub(super) fn flag_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !(((x & !HIGHS).wrapping_add(!HIGHS)) | x) & HIGHS
}

/// A word with the high bit set in (at least) the lowest byte of `word`
/// equal to `byte`, and no bit set below it: cheaper than [`flag_equal`]
/// when only the first match matters.
#[inline]
pub(super) fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// How many bytes of a [`flag_equal`] mask are flagged. A multiply adds the
/// eight 0/1 bytes into the top byte; `count_ones` would be a dozen
/// instructions on the baseline x86-64 target, which has no `popcnt`.
#[inline]
fn count_flags(flags: u64) -> u32 {
    ((flags >> 7).wrapping_mul(ONES) >> 56) as u32
}

/// The eight bytes at `at` as a little-endian word, if the payload has them.
#[inline]
pub(super) fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map(|chunk| u64::from_le_bytes(*chunk))
}

/// Whether an odd number of `"` lie in `bytes[from..to]`.
#[inline]
fn odd_quotes(bytes: &[u8], from: usize, to: usize) -> bool {
    let Some(span) = bytes.get(from..to) else {
        return false;
    };
    let (words, tail) = span.as_chunks::<8>();
    // XOR keeps the parity of each byte position's flags; the total parity
    // is that of the bits left.
    let mut acc = 0;
    for word in words {
        acc ^= flag_equal(u64::from_le_bytes(*word), b'"');
    }
    if !tail.is_empty() {
        // The tail as one word read from the payload, masked to its length,
        // unless the payload ends first.
        match word_at(bytes, to - tail.len()) {
            Some(word) => acc ^= flag_equal(word, b'"') & ((1 << (tail.len() * 8)) - 1),
            None => {
                let odd = tail.iter().filter(|&&b| b == b'"').count() & 1 == 1;
                acc ^= u64::from(odd) << 7;
            }
        }
    }
    count_flags(acc) & 1 == 1
}

/// A search for either of two bytes. On x86-64 it calls `memchr`'s SSE2
/// searcher directly (SSE2 is part of every x86-64 CPU), which inlines:
/// most searches here end within a few dozen bytes, where the run-time
/// dispatch to AVX2 of `memchr::memchr2` costs more than the wider vectors
/// save. Elsewhere, `memchr::memchr2`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Two {
    a: u8,
    b: u8,
    #[cfg(target_arch = "x86_64")]
    sse2: Option<memchr::arch::x86_64::sse2::memchr::Two>,
}

impl Two {
    fn new(a: u8, b: u8) -> Two {
        Two {
            a,
            b,
            #[cfg(target_arch = "x86_64")]
            sse2: memchr::arch::x86_64::sse2::memchr::Two::new(a, b),
        }
    }

    #[inline]
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(sse2) = &self.sse2 {
            return sse2.find(haystack);
        }
        memchr::memchr2(self.a, self.b, haystack)
    }
}

/// The searches a scan uses, set up once per scan.
#[derive(Clone, Copy, Debug)]
pub(super) struct Searchers {
    braces: Two,
    brackets: Two,
    quote_or_backslash: Two,
}

impl Default for Searchers {
    fn default() -> Self {
        Searchers {
            braces: Two::new(b'{', b'}'),
            brackets: Two::new(b'[', b']'),
            quote_or_backslash: Two::new(b'"', b'\\'),
        }
    }
}

/// Which part of the payload is known to hold no backslash: `lo..hi`,
/// found a window at a time by `memchr` as the scan moves on. `hi` is
/// either a backslash, the end of a window or the end of the payload.
#[derive(Debug, Default)]
pub(super) struct Clean {
    pub(super) lo: usize,
    pub(super) hi: usize,
}

impl Clean {
    /// Makes the clean range start at or before `from` and reach as far as
    /// the window allows: grows it when `from` is inside or adjacent to it
    /// and it ended at a window's end, starts a new one when `from` lies
    /// past a backslash. Returns whether `hi` moved.
    #[cold]
    pub(super) fn refresh(&mut self, bytes: &[u8], from: usize) -> bool {
        let before = self.hi;
        if from < self.lo || from > self.hi {
            self.lo = from;
            self.hi = from;
        } else if bytes.get(self.hi) == Some(&b'\\') {
            // Stuck at a backslash before `from`'s string could end.
            return false;
        }
        let end = self
            .hi
            .saturating_add(CLEAN_WINDOW)
            .max(from)
            .min(bytes.len());
        let Some(window) = bytes.get(self.hi..end) else {
            return false;
        };
        self.hi = match memchr::memchr(b'\\', window) {
            Some(at) => self.hi + at,
            None => end,
        };
        self.hi != before
    }
}

impl Scanner<'_> {
    /// The end of the string whose contents start at `from` (just after its
    /// opening quote): the position of its closing quote, and whether it
    /// holds escapes. Inlined for the common case, a string of up to
    /// [`STRING_WORDS`] words in the clean range, where the next quote ends
    /// it.
    #[inline(always)]
    pub(super) fn string_end(&mut self, from: usize) -> Result<(usize, bool), Malformed> {
        if from >= self.clean.lo {
            let mut at = from;
            for _ in 0..STRING_WORDS {
                let Some(word) = word_at(self.bytes, at) else {
                    break;
                };
                let quote = bytes_equal(word, b'"');
                if quote != 0 {
                    let end = at + (quote.trailing_zeros() / 8) as usize;
                    if end < self.clean.hi {
                        return Ok((end, false));
                    }
                    break;
                }
                at += 8;
            }
        }
        self.string_end_long(from)
    }

    /// [`Self::string_end`] for the rest: a vector search for long clean
    /// strings, and an exact walk through escapes.
    #[inline(never)]
    fn string_end_long(&mut self, from: usize) -> Result<(usize, bool), Malformed> {
        if from >= self.clean.lo && from < self.clean.hi {
            let found = self
                .bytes
                .get(from..self.clean.hi)
                .and_then(|hay| memchr::memchr(b'"', hay));
            if let Some(found) = found {
                return Ok((from + found, false));
            }
        } else if from >= self.clean.hi {
            self.clean.refresh(self.bytes, from);
        }
        self.string_end_exact(from)
    }

    /// [`Self::string_end`] honouring escapes.
    fn string_end_exact(&self, from: usize) -> Result<(usize, bool), Malformed> {
        let mut at = from;
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(at..).ok_or(Malformed)?;
            at += self.search.quote_or_backslash.find(rest).ok_or(Malformed)?;
            if self.bytes.get(at) == Some(&b'"') {
                return Ok((at, escaped));
            }
            escaped = true;
            // The escaped byte can be a quote; step over it with the backslash.
            at += 2;
        }
    }

    /// Skips the container whose opening bracket is at `open_at`, at nesting
    /// level `level` (1 for the outermost value), and returns the position
    /// just past its closing bracket. Only brackets of the container's own
    /// kind are counted; their nesting may not exceed [`MAX_NESTING`].
    #[inline]
    pub(super) fn skip_container(
        &mut self,
        open_at: usize,
        level: u32,
    ) -> Result<usize, Malformed> {
        let kind = match self.bytes.get(open_at) {
            Some(b'[') => b'[',
            _ => b'{',
        };
        self.rest_of_container(open_at + 1, kind, level)
    }

    /// Skips from `from`, which is inside a container at nesting level
    /// `level` whose opening bracket is `kind` (`{` or `[`), and outside any
    /// string, to just past that container's closing bracket.
    pub(super) fn rest_of_container(
        &mut self,
        from: usize,
        kind: u8,
        level: u32,
    ) -> Result<usize, Malformed> {
        if from >= self.clean.lo {
            loop {
                match self.clean_rest_of_container(from, kind, level) {
                    Some(outcome) => return outcome,
                    // The clean range ended first; grow it if it can.
                    None if self.clean.refresh(self.bytes, from) => {}
                    None => break,
                }
            }
        }
        self.rest_of_container_exact(from, kind, level)
    }

    /// [`Self::rest_of_container`] within the clean range, by bracket search
    /// and quote parity; None if the container does not end inside it.
    fn clean_rest_of_container(
        &self,
        from: usize,
        kind: u8,
        level: u32,
    ) -> Option<Result<usize, Malformed>> {
        let (bytes, hi) = (self.bytes, self.clean.hi);
        let search = if kind == b'[' {
            &self.search.brackets
        } else {
            &self.search.braces
        };
        // Open containers of this kind since `from`, counting the one it is in.
        let mut open: u32 = 1;
        let mut in_string = false;
        // Quotes before `counted` have been folded into `in_string`.
        let mut counted = from;
        loop {
            let bracket = counted + search.find(bytes.get(counted..hi)?)?;
            in_string ^= odd_quotes(bytes, counted, bracket);
            counted = bracket + 1;
            if in_string {
                continue;
            }
            if bytes.get(bracket) == Some(&kind) {
                open += 1;
                if level + open > MAX_NESTING + 1 {
                    return Some(Err(Malformed));
                }
            } else {
                open -= 1;
                if open == 0 {
                    return Some(Ok(counted));
                }
            }
        }
    }

    /// [`Self::rest_of_container`] honouring escapes: strings are skipped
    /// one by one.
    #[cold]
    fn rest_of_container_exact(
        &mut self,
        from: usize,
        kind: u8,
        level: u32,
    ) -> Result<usize, Malformed> {
        let close = kind + 2;
        let mut open: u32 = 1;
        let mut at = from;
        loop {
            let rest = self.bytes.get(at..).ok_or(Malformed)?;
            at += memchr::memchr3(b'"', kind, close, rest).ok_or(Malformed)?;
            let byte = self.bytes.get(at).copied();
            at += 1;
            if byte == Some(b'"') {
                at = self.string_end(at)?.0 + 1;
            } else if byte == Some(kind) {
                open += 1;
                if level + open > MAX_NESTING + 1 {
                    return Err(Malformed);
                }
            } else {
                open -= 1;
                if open == 0 {
                    return Ok(at);
                }
            }
        }
    }
}
