//! Fast skipping of JSON strings and containers the filter does not want,
//! on vector masks ([`simd`]) and plain integer arithmetic.
//!
//! - A **string** ends at the first quote if no backslash comes before it:
//!   one 16-byte mask of quotes and backslashes settles most strings, longer
//!   ones take a mask per 16 bytes (a skipped one in the object walk, a
//!   mask per 32). From the first backslash on, the string is walked
//!   honouring escapes.
//! - A **container** ends at the first closing bracket that is outside
//!   every string and balances it. Each step classifies 64 bytes
//!   into quote, backslash and bracket masks; up to the first backslash a
//!   quote always opens or closes a string, so the running parity of the
//!   quotes (a prefix XOR of their mask) says which bytes are inside
//!   strings, and the brackets outside them are counted in order. At a
//!   backslash inside a string, that string is finished by the exact walk;
//!   outside a string (malformed JSON) a backslash is an ordinary byte; then
//!   the 64-byte steps resume.
//!
//! Both kinds of bracket are counted alike, `{` and `[` up, `}` and `]`
//! down: one compare per class finds either kind (they differ in one bit),
//! in valid JSON the result is the one counting a kind alone gives, and
//! the nesting bound counts containers of both kinds, as serde_json's
//! does. A mismatched bracket (`[1}`) is not noticed as such, but it ends
//! the container early, where the walk then finds no `,` or `}` (the
//! scanner is not a validator of skipped values).

use super::simd::{self, Dispatch, Skip, Stop, Vectors};
use super::{MAX_NESTING, Malformed, Scanner};

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
    quote_or_backslash: Two,
}

impl Default for Searchers {
    fn default() -> Self {
        Searchers {
            quote_or_backslash: Two::new(b'"', b'\\'),
        }
    }
}

impl Scanner<'_> {
    /// The end of the string whose contents start at `from` (just after its
    /// opening quote): the position of its closing quote, and whether it
    /// holds escapes. Inlined for the common case, a string of at most 15
    /// bytes without escapes, settled by one mask.
    #[inline(always)]
    pub(super) fn string_end(&self, from: usize) -> Result<(usize, bool), Malformed> {
        if let Some(chunk) = self.bytes.get(from..).and_then(<[u8]>::first_chunk::<16>)
            && let Some(at) = simd::specials16(chunk).string_end(0)
        {
            return Ok((from + at, false));
        }
        self.string_end_long(from)
    }

    /// [`Self::string_end`] for the rest: a mask per 16 bytes up to the
    /// first quote or backslash, then from a backslash (or near the end of
    /// the payload) the exact walk.
    #[inline(never)]
    fn string_end_long(&self, from: usize) -> Result<(usize, bool), Malformed> {
        let mut at = from;
        while let Some(chunk) = self.bytes.get(at..).and_then(<[u8]>::first_chunk::<16>) {
            let specials = simd::specials16(chunk);
            if specials.quote | specials.backslash != 0 {
                if let Some(end) = specials.string_end(0) {
                    return Ok((at + end, false));
                }
                break;
            }
            at += 16;
        }
        // No backslash before `at`, so it is not inside an escape.
        self.string_end_exact(at)
    }

    /// The end of the string whose contents start at `from` (its closing
    /// quote), for a string that is skipped: a mask of `vectors`' widest
    /// per step up to the first quote or backslash, then from a backslash
    /// (or near the end of the payload) the exact walk.
    #[inline(always)]
    pub(super) fn string_end_with<V: Vectors>(
        &self,
        vectors: V,
        from: usize,
    ) -> Result<usize, Malformed> {
        let mut at = from;
        while let Some(chunk) = self.bytes.get(at..).and_then(<[u8]>::first_chunk::<32>) {
            let specials = vectors.specials32(chunk);
            if specials.quote | specials.backslash != 0 {
                if let Some(end) = specials.string_end(0) {
                    return Ok(at + end);
                }
                break;
            }
            at += 32;
        }
        // No backslash before `at`, so it is not inside an escape.
        Ok(self.string_end_exact(at)?.0)
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
    /// just past its closing bracket. Nesting may not exceed
    /// [`MAX_NESTING`].
    #[inline]
    pub(super) fn skip_container(&self, open_at: usize, level: u32) -> Result<usize, Malformed> {
        self.skip_container_with(Dispatch, open_at, level)
    }

    /// [`Self::skip_container`] with the vector code `vectors`.
    #[inline(always)]
    pub(super) fn skip_container_with<V: Vectors>(
        &self,
        vectors: V,
        open_at: usize,
        level: u32,
    ) -> Result<usize, Malformed> {
        self.rest_of_container_with(vectors, open_at + 1, level)
    }

    /// Skips from `from`, which is inside a container at nesting level
    /// `level` and outside any string, to just past that container's
    /// closing bracket.
    pub(super) fn rest_of_container(&self, from: usize, level: u32) -> Result<usize, Malformed> {
        self.rest_of_container_with(Dispatch, from, level)
    }

    /// [`Self::rest_of_container`] with the vector code `vectors`. Inlined,
    /// so that the object walk's AVX2 build inlines the block loop too.
    #[inline(always)]
    pub(super) fn rest_of_container_with<V: Vectors>(
        &self,
        vectors: V,
        from: usize,
        level: u32,
    ) -> Result<usize, Malformed> {
        let skip = Skip {
            at: from,
            open: 1,
            in_string: false,
        };
        self.skip_on(vectors, skip, level)
    }

    /// Goes on with `skip`, in a container at nesting level `level`, to
    /// just past that container's closing bracket.
    #[inline(always)]
    pub(super) fn skip_on<V: Vectors>(
        &self,
        vectors: V,
        mut skip: Skip,
        level: u32,
    ) -> Result<usize, Malformed> {
        // Containers that may be open at once.
        let max_open = (MAX_NESTING + 1).saturating_sub(level);
        loop {
            match vectors.skip_blocks(self.bytes, &mut skip, max_open) {
                Stop::Closed(end) => return Ok(end),
                Stop::TooDeep => return Err(Malformed),
                Stop::Backslash => skip = self.past_backslash(skip)?,
            }
        }
    }

    /// `skip`, stopped at a backslash, moved past it: to the end of the
    /// string it is in, or (outside strings, where it is an ordinary byte)
    /// to the next byte. At the payload's end, the payload is malformed.
    /// By value, so that the state of an inlined skip stays in registers.
    #[cold]
    fn past_backslash(&self, mut skip: Skip) -> Result<Skip, Malformed> {
        if skip.in_string {
            skip.at = self.string_end_exact(skip.at)?.0 + 1;
            skip.in_string = false;
            Ok(skip)
        } else if skip.at < self.bytes.len() {
            skip.at += 1;
            Ok(skip)
        } else {
            Err(Malformed)
        }
    }
}
