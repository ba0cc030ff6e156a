//! Byte classification with vector instructions: which bytes of a 16-, 32-
//! or 64-byte chunk are a quote, a backslash, a colon, an opening bracket
//! (`{` or `[`) or a closing one, as bit masks (bit `i` for byte `i`). The
//! scanner turns those masks into members, string and container ends with
//! integer arithmetic.
//!
//! The object walk ([`super::walk`]) is compiled once per instruction set
//! ([`with_vectors`], [`Vectors`]), and so is [`skip_blocks`], which
//! crosses a skipped container 64 bytes per step outside the walk. Where
//! the CPU has AVX2 (checked once, at run time), 32 bytes are classified
//! per instruction instead of 16; where it also has AVX-512 (foundation
//! and byte-word), a block's five masks take one load and five compares
//! straight into mask registers, which on the machine the figures come
//! from made the whole evaluation about 6 % faster than AVX2 (364 →
//! 343 ns).
//!
//! This is the crate's only `unsafe` code. On x86-64 the masks come from SSE2
//! (`pcmpeqb`, `pmovmskb`: two instructions per class per 16 bytes), which
//! every x86-64 CPU has and which this build enables (`target_feature =
//! "sse2"` is part of the baseline target); calling a function compiled
//! for a target feature is `unsafe` in Rust even when the build enables the
//! feature, hence one `unsafe` call per entry point, justified by that cfg
//! (or, for AVX2 and AVX-512, by the run-time check). One empty `asm!`
//! block keeps the optimiser from taking the AVX2 block loop's masks
//! apart, without the stores and reloads of `black_box` ([`opaque`]).
//! Elsewhere (and in the tests, as the reference) a plain loop computes
//! the same masks.

/// Which bytes of a 64-byte chunk are `"`, `\`, `{` or `[`, and `}` or
/// `]`: bit `i` stands for byte `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Classes {
    pub(super) quote: u64,
    pub(super) backslash: u64,
    pub(super) open: u64,
    pub(super) close: u64,
}

/// Which bytes of a 16-, 32- or 64-byte chunk are `"` and `\`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Specials {
    pub(super) quote: u64,
    pub(super) backslash: u64,
}

impl Specials {
    /// Where the first quote at or after offset `from` is, if no backslash
    /// comes before it: the end of a string whose contents start at `from`.
    /// `from` must be below 64.
    #[inline(always)]
    pub(super) fn string_end(self, from: usize) -> Option<usize> {
        let any = (self.quote | self.backslash) >> from;
        let first = any & any.wrapping_neg();
        (first & (self.quote >> from) != 0).then(|| from + first.trailing_zeros() as usize)
    }
}

/// Which bytes of a 64-byte chunk are `"`, `\\`, `:`, `{` or `[`, and `}`
/// or `]`: what the object walk reads of each block of the payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Structure {
    pub(super) quote: u64,
    pub(super) backslash: u64,
    pub(super) colon: u64,
    pub(super) open: u64,
    pub(super) close: u64,
}

/// The bytes of `chunk` that are `"`, `\\`, `:` and brackets.
#[inline(always)]
pub(super) fn structure64(chunk: &[u8; 64]) -> Structure {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: as in `classify64`: SSE2 is enabled for this build.
        unsafe { sse2::structure64(chunk) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        portable::structure64(chunk)
    }
}

/// The bytes of `chunk` that are `"`, `\`, an opening and a closing
/// bracket.
#[inline(always)]
pub(super) fn classify64(chunk: &[u8; 64]) -> Classes {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: `sse2::classify64` requires only the SSE2 target feature,
        // and this code is compiled only when the build enables it (the cfg
        // above; every x86-64 target does).
        unsafe { sse2::classify64(chunk) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        portable::classify64(chunk)
    }
}

/// The bytes of `chunk` equal to `"` and `\`.
#[inline(always)]
pub(super) fn specials16(chunk: &[u8; 16]) -> Specials {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: as in `classify64`: SSE2 is enabled for this build.
        unsafe { sse2::specials16(chunk) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        portable::specials(chunk)
    }
}

/// The bytes of `chunk` equal to `"` and `\`.
#[inline(always)]
pub(super) fn specials32(chunk: &[u8; 32]) -> Specials {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: as in `classify64`: SSE2 is enabled for this build.
        unsafe { sse2::specials32(chunk) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        portable::specials(chunk)
    }
}

/// How far a skip of a container has got: the next byte to look at, the
/// containers still open (counting the one being skipped), and
/// whether that byte is inside a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Skip {
    pub(super) at: usize,
    pub(super) open: u32,
    pub(super) in_string: bool,
}

/// Why [`skip_blocks`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// The container closed; the position just past its closing bracket.
    Closed(usize),
    /// More than `max_open` containers were open at once.
    TooDeep,
    /// At a backslash, or at the payload's end (`skip.at`), which the
    /// caller deals with.
    Backslash,
}

/// Goes on with `skip` through a container, 64 bytes per step, up to the first backslash: before one, a
/// quote always opens or closes a string, so the running parity of the
/// quotes (a prefix XOR of their mask) says which bytes are inside strings,
/// and the brackets outside them are counted in order.
#[inline(never)]
pub(super) fn skip_blocks(bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: `avx2::skip_blocks` requires the features that
        // `available` has found on this CPU.
        return unsafe { avx2::skip_blocks(bytes, skip, max_open) };
    }
    skip_blocks_baseline(bytes, skip, max_open)
}

/// [`skip_blocks`] for the build's baseline target.
#[inline(never)]
fn skip_blocks_baseline(bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
    skip_blocks_with(bytes, skip, max_open, classify64, prefix_xor)
}

/// [`skip_blocks`] with the given classification of 64 bytes. Inlined
/// into each caller, so that it is compiled for the caller's target
/// features.
#[inline(always)]
fn skip_blocks_with(
    bytes: &[u8],
    skip: &mut Skip,
    max_open: u32,
    classify: impl Fn(&[u8; 64]) -> Classes,
    prefix_xor: impl Fn(u64) -> u64,
) -> Stop {
    // All ones when the previous block ended inside a string.
    let mut carry = if skip.in_string { u64::MAX } else { 0 };
    let mut count = skip.open;
    let mut at = skip.at;
    while at < bytes.len() {
        // The bytes of the payload (all 64 but near its end, a case kept
        // off the path of full blocks).
        let (classes, mut valid) = match bytes.get(at..).and_then(<[u8]>::first_chunk::<64>) {
            Some(chunk) => (classify(chunk), u64::MAX),
            None => {
                // The payload's end, padded with zeros (none of the
                // classified bytes).
                let mut chunk = [0; 64];
                let tail = bytes.get(at..).unwrap_or(&[]);
                for (c, b) in chunk.iter_mut().zip(tail) {
                    *c = *b;
                }
                // `tail` is shorter than 64 bytes.
                (classify(&chunk), (1 << tail.len()) - 1)
            }
        };
        // Those before the first backslash.
        valid &= classes.backslash.wrapping_sub(1) & !classes.backslash;
        // Bit i: byte i is inside a string (an opening quote counts as
        // inside, a closing one as outside; brackets are never quotes).
        let strings = prefix_xor(classes.quote & valid) ^ carry;
        let mut brackets = (classes.open | classes.close) & valid & !strings;
        while brackets != 0 {
            let bit = brackets & brackets.wrapping_neg();
            if classes.open & bit != 0 {
                count += 1;
                if count > max_open {
                    return Stop::TooDeep;
                }
            } else {
                count -= 1;
                if count == 0 {
                    return Stop::Closed(at + bit.trailing_zeros() as usize + 1);
                }
            }
            brackets ^= bit;
        }
        // The top bit holds the parity of every valid quote.
        carry = ((strings as i64) >> 63) as u64;
        if valid != u64::MAX {
            // A backslash, or the payload's end.
            at += valid.trailing_ones() as usize;
            break;
        }
        at += 64;
    }
    *skip = Skip {
        at,
        open: count,
        in_string: carry != 0,
    };
    Stop::Backslash
}

/// Bit i set when an odd number of bits at or below i are set in `x`: with
/// `x` the quotes of a block, the bytes inside strings.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// `classes`, opaque to the optimiser but left in registers: without a
/// barrier it takes the masks of [`skip_blocks_with`] apart bit by bit
/// (twice the instructions), and `black_box` stores and reloads all four
/// (nine instructions per 64-byte block).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn opaque(mut classes: Classes) -> Classes {
    // SAFETY: the assembly is empty: it reads and writes only the four
    // registers it is given, touches no memory and no stack, and has no
    // other effect.
    unsafe {
        std::arch::asm!(
            "/* {0} {1} {2} {3} */",
            inout(reg) classes.quote,
            inout(reg) classes.backslash,
            inout(reg) classes.open,
            inout(reg) classes.close,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    classes
}

/// `structure`, computed here and now: without this, the optimiser moves
/// the classification of the object walk's next block (done a block
/// ahead, so that its masks are ready when the walk gets there) to where
/// the masks are used, and keeps only the load ahead. The empty assembly
/// is not `pure`, so it stays where it is, and its inputs are computed
/// before it.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
#[inline(always)]
pub(super) fn settled(mut structure: Structure) -> Structure {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the assembly is empty: it reads and writes only the five
    // registers it is given, touches no memory and no stack, and leaves
    // the flags alone.
    unsafe {
        std::arch::asm!(
            "/* {0} {1} {2} {3} {4} */",
            inout(reg) structure.quote,
            inout(reg) structure.backslash,
            inout(reg) structure.colon,
            inout(reg) structure.open,
            inout(reg) structure.close,
            options(nomem, nostack, preserves_flags),
        );
    }
    structure
}

/// The vector operations of the object walk, for one instruction set: the
/// walk is written once, generic over this, and compiled for each set
/// ([`with_vectors`]).
pub(super) trait Vectors: Copy {
    // The defaults are the build's baseline (SSE2 on x86-64, else the
    // portable loops); an instruction set overrides what it does better.

    /// [`specials32`].
    #[inline(always)]
    fn specials32(self, chunk: &[u8; 32]) -> Specials {
        specials32(chunk)
    }
    /// [`skip_blocks`].
    fn skip_blocks(self, bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop;
    /// [`structure64`].
    #[inline(always)]
    fn structure64(self, chunk: &[u8; 64]) -> Structure {
        structure64(chunk)
    }
    /// [`prefix_xor`].
    #[inline(always)]
    fn prefix_xor(self, x: u64) -> u64 {
        prefix_xor(x)
    }
}

/// Each operation chooses for itself ([`skip_blocks`] checks the CPU), for
/// code that is compiled once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dispatch;

impl Vectors for Dispatch {
    #[inline(always)]
    fn skip_blocks(self, bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
        skip_blocks(bytes, skip, max_open)
    }
}

/// The build's baseline: SSE2 on x86-64.
#[derive(Clone, Copy, Debug)]
pub(super) struct Baseline;

impl Vectors for Baseline {
    #[inline(always)]
    fn skip_blocks(self, bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
        skip_blocks_baseline(bytes, skip, max_open)
    }
}

/// AVX2. Only [`with_vectors`] makes one, after checking that the CPU has
/// it, and [`Avx512`], which exists only where it does (the private field
/// keeps any other code from making one).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2(());

#[cfg(target_arch = "x86_64")]
impl Vectors for Avx2 {
    #[inline(always)]
    fn specials32(self, chunk: &[u8; 32]) -> Specials {
        // SAFETY: an `Avx2` exists only inside `avx2::run`, which
        // `with_vectors` calls after `avx2::available` found AVX2, or
        // inside `avx512::run`, after `avx512::available` found that and
        // more.
        unsafe { avx2::specials32(chunk) }
    }

    /// The block loop itself, inlined into the caller (the object walk,
    /// compiled for AVX2 in `avx2::run`) rather than called.
    #[inline(always)]
    fn skip_blocks(self, bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
        skip_blocks_with(
            bytes,
            skip,
            max_open,
            |chunk| {
                // SAFETY: as for `specials32`.
                let classes = unsafe { avx2::classify64(chunk) };
                // Opaque to the optimiser, which otherwise takes the masks
                // apart bit by bit; unlike `black_box`, in registers.
                opaque(classes)
            },
            |x| {
                // SAFETY: as for `specials32`; `available` found carry-less
                // multiplication too.
                unsafe { avx2::prefix_xor(x) }
            },
        )
    }

    #[inline(always)]
    fn structure64(self, chunk: &[u8; 64]) -> Structure {
        // SAFETY: as for `specials32`.
        unsafe { avx2::structure64(chunk) }
    }

    #[inline(always)]
    fn prefix_xor(self, x: u64) -> u64 {
        // SAFETY: as for `specials32`; `available` found carry-less
        // multiplication too.
        unsafe { avx2::prefix_xor(x) }
    }
}

/// AVX-512: the structure of a block in one load and five compares; the
/// rest as AVX2. Only [`with_vectors`] makes one, after checking that the
/// CPU has it.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512(());

#[cfg(target_arch = "x86_64")]
impl Vectors for Avx512 {
    // What AVX-512 does not do better is AVX2's: an `Avx512` exists only
    // inside `avx512::run`, after `avx512::available` found AVX-512 and
    // everything `avx2::available` checks, so it may make an `Avx2`.
    #[inline(always)]
    fn specials32(self, chunk: &[u8; 32]) -> Specials {
        Avx2(()).specials32(chunk)
    }
    #[inline(always)]
    fn skip_blocks(self, bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
        Avx2(()).skip_blocks(bytes, skip, max_open)
    }
    #[inline(always)]
    fn structure64(self, chunk: &[u8; 64]) -> Structure {
        // SAFETY: an `Avx512` exists only inside `avx512::run`, which
        // `with_vectors` calls after `avx512::available` found AVX-512.
        unsafe { avx512::structure64(chunk) }
    }
    #[inline(always)]
    fn prefix_xor(self, x: u64) -> u64 {
        Avx2(()).prefix_xor(x)
    }
}

/// Code to compile for each instruction set: [`with_vectors`] runs it with
/// the best one the CPU has.
pub(super) trait Job {
    type Output;
    fn run<V: Vectors>(self, vectors: V) -> Self::Output;
}

/// Runs `job` with AVX2 where the CPU has it, the baseline elsewhere.
#[inline]
pub(super) fn with_vectors<J: Job>(job: J) -> J::Output {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: `avx512::run` requires the features that `available`
        // has found on this CPU.
        return unsafe { avx512::run(job) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: `avx2::run` requires the features that `available` has
        // found on this CPU.
        return unsafe { avx2::run(job) };
    }
    job.run(Baseline)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set_epi64x, _mm_set1_epi8,
        _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    use std::sync::atomic::{AtomicU8, Ordering};

    use super::{Classes, Skip, Stop};

    /// Whether this CPU runs [`skip_blocks`]: AVX2, carry-less
    /// multiplication and the bit instructions that come with them. Checked
    /// once; 0 until then, 1 without, 2 with.
    #[inline]
    pub(super) fn available() -> bool {
        #[cfg(test)]
        if super::tests::BASELINE_ONLY.with(std::cell::Cell::get) {
            return false;
        }
        static FOUND: AtomicU8 = AtomicU8::new(0);
        match FOUND.load(Ordering::Relaxed) {
            0 => {
                let found = std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("pclmulqdq")
                    && std::is_x86_feature_detected!("bmi1")
                    && std::is_x86_feature_detected!("bmi2")
                    && std::is_x86_feature_detected!("lzcnt")
                    && std::is_x86_feature_detected!("popcnt");
                FOUND.store(1 + u8::from(found), Ordering::Relaxed);
                found
            }
            found => found == 2,
        }
    }

    /// [`super::prefix_xor`] as one carry-less multiplication by all ones.
    #[target_feature(enable = "pclmulqdq")]
    #[inline]
    pub(super) fn prefix_xor(x: u64) -> u64 {
        let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
        _mm_cvtsi128_si64(product) as u64
    }

    /// One bit per byte of `v` equal to `byte`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn equal(v: __m256i, byte: u8) -> u32 {
        _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(byte as i8))) as u32
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn classify64(chunk: &[u8; 64]) -> Classes {
        let (lo, hi) = chunk.split_at(32);
        let (lo, hi) = (lo.as_ptr().cast::<__m256i>(), hi.as_ptr().cast::<__m256i>());
        // SAFETY: `lo` and `hi` each point to 32 bytes of `chunk`, and
        // `loadu` reads them without any alignment requirement.
        let (lo, hi) = unsafe { (_mm256_loadu_si256(lo), _mm256_loadu_si256(hi)) };
        let both = |byte: u8| u64::from(equal(lo, byte)) | (u64::from(equal(hi, byte)) << 32);
        // `[` and `{` differ only in bit 5, as do `]` and `}`: with it set,
        // one compare finds either kind.
        let case = _mm256_set1_epi8(0x20);
        let (lo_folded, hi_folded) = (_mm256_or_si256(lo, case), _mm256_or_si256(hi, case));
        let folded = |byte: u8| {
            u64::from(equal(lo_folded, byte)) | (u64::from(equal(hi_folded, byte)) << 32)
        };
        Classes {
            quote: both(b'"'),
            backslash: both(b'\\'),
            open: folded(b'{'),
            close: folded(b'}'),
        }
    }

    /// [`super::structure64`].
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn structure64(chunk: &[u8; 64]) -> super::Structure {
        let (lo, hi) = chunk.split_at(32);
        let (lo, hi) = (lo.as_ptr().cast::<__m256i>(), hi.as_ptr().cast::<__m256i>());
        // SAFETY: `lo` and `hi` each point to 32 bytes of `chunk`, and
        // `loadu` reads them without any alignment requirement.
        let (lo, hi) = unsafe { (_mm256_loadu_si256(lo), _mm256_loadu_si256(hi)) };
        let both = |byte: u8| u64::from(equal(lo, byte)) | (u64::from(equal(hi, byte)) << 32);
        // As in `classify64`: bit 5 set, one compare per kind of bracket
        // (`:` has bit 5 set, but so has the control byte 0x1a, so it is
        // compared unfolded).
        let case = _mm256_set1_epi8(0x20);
        let (lo_folded, hi_folded) = (_mm256_or_si256(lo, case), _mm256_or_si256(hi, case));
        let folded = |byte: u8| {
            u64::from(equal(lo_folded, byte)) | (u64::from(equal(hi_folded, byte)) << 32)
        };
        super::Structure {
            quote: both(b'"'),
            backslash: both(b'\\'),
            colon: both(b':'),
            open: folded(b'{'),
            close: folded(b'}'),
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn specials32(chunk: &[u8; 32]) -> super::Specials {
        // SAFETY: `chunk` points to 32 bytes, and `loadu` reads them
        // without any alignment requirement.
        let v = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast::<__m256i>()) };
        super::Specials {
            quote: u64::from(equal(v, b'"')),
            backslash: u64::from(equal(v, b'\\')),
        }
    }

    /// [`super::with_vectors`] for AVX2: `job` is compiled (inlined) here
    /// with AVX2 and the bit instructions enabled.
    #[target_feature(enable = "avx2,pclmulqdq,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) fn run<J: super::Job>(job: J) -> J::Output {
        job.run(super::Avx2(()))
    }

    /// [`super::skip_blocks`] compiled for AVX2.
    #[target_feature(enable = "avx2,pclmulqdq,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) fn skip_blocks(bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
        super::skip_blocks_with(
            bytes,
            skip,
            max_open,
            |chunk| super::opaque(classify64(chunk)),
            |x| prefix_xor(x),
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        _mm512_cmpeq_epi8_mask, _mm512_loadu_si512, _mm512_or_si512, _mm512_set1_epi8,
    };
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Whether this CPU has AVX-512 for bytes (foundation and byte-word
    /// instructions) besides what [`super::avx2::available`] checks.
    /// Checked once; 0 until then, 1 without, 2 with.
    #[inline]
    pub(super) fn available() -> bool {
        #[cfg(test)]
        if super::tests::NO_AVX512.with(std::cell::Cell::get) {
            return false;
        }
        static FOUND: AtomicU8 = AtomicU8::new(0);
        match FOUND.load(Ordering::Relaxed) {
            0 => {
                let found = super::avx2::available()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw");
                FOUND.store(1 + u8::from(found), Ordering::Relaxed);
                found
            }
            found => found == 2,
        }
    }

    /// [`super::structure64`]: one load and five compares into mask
    /// registers, where AVX2 takes two loads, ten compares and ten mask
    /// moves.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(super) fn structure64(chunk: &[u8; 64]) -> super::Structure {
        // SAFETY: `chunk` points to 64 bytes, and `loadu` reads them
        // without any alignment requirement.
        let v = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
        let folded = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
        let eq = |v, b: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b as i8));
        super::Structure {
            quote: eq(v, b'"'),
            backslash: eq(v, b'\\'),
            colon: eq(v, b':'),
            open: eq(folded, b'{'),
            close: eq(folded, b'}'),
        }
    }

    /// [`super::with_vectors`] for AVX-512: `job` is compiled (inlined)
    /// here with AVX-512, AVX2 and the bit instructions enabled.
    #[target_feature(enable = "avx512f,avx512bw,avx2,pclmulqdq,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) fn run<J: super::Job>(job: J) -> J::Output {
        job.run(super::Avx512(()))
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x, _mm_set1_epi8,
    };

    use super::{Classes, Specials, Structure};

    /// Sixteen bytes as a vector. Built from two words (no pointer, so no
    /// `unsafe`); the compiler emits one unaligned load.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn load(chunk: &[u8; 16]) -> __m128i {
        let bits = u128::from_le_bytes(*chunk);
        _mm_set_epi64x((bits >> 64) as i64, bits as i64)
    }

    /// One bit per byte of `v` equal to `byte`.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn equal(v: __m128i, byte: u8) -> u64 {
        let mask = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8)));
        // The mask has 16 bits.
        u64::from(mask as u16)
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn classify64(chunk: &[u8; 64]) -> Classes {
        let mut classes = Classes {
            quote: 0,
            backslash: 0,
            open: 0,
            close: 0,
        };
        let (parts, _) = chunk.as_chunks::<16>();
        for (i, part) in parts.iter().enumerate() {
            let v = load(part);
            let shift = 16 * i;
            classes.quote |= equal(v, b'"') << shift;
            classes.backslash |= equal(v, b'\\') << shift;
            // Either kind of bracket, as in `avx2::classify64`.
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            classes.open |= equal(folded, b'{') << shift;
            classes.close |= equal(folded, b'}') << shift;
        }
        classes
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn structure64(chunk: &[u8; 64]) -> Structure {
        let mut s = Structure {
            quote: 0,
            backslash: 0,
            colon: 0,
            open: 0,
            close: 0,
        };
        let (parts, _) = chunk.as_chunks::<16>();
        for (i, part) in parts.iter().enumerate() {
            let v = load(part);
            let shift = 16 * i;
            s.quote |= equal(v, b'"') << shift;
            s.backslash |= equal(v, b'\\') << shift;
            s.colon |= equal(v, b':') << shift;
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            s.open |= equal(folded, b'{') << shift;
            s.close |= equal(folded, b'}') << shift;
        }
        s
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn specials16(chunk: &[u8; 16]) -> Specials {
        let v = load(chunk);
        Specials {
            quote: equal(v, b'"'),
            backslash: equal(v, b'\\'),
        }
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn specials32(chunk: &[u8; 32]) -> Specials {
        specials_of(chunk)
    }

    /// The masks of a 32- or 64-byte chunk, 16 bytes at a time.
    #[target_feature(enable = "sse2")]
    #[inline]
    fn specials_of<const N: usize>(chunk: &[u8; N]) -> Specials {
        let (parts, _) = chunk.as_chunks::<16>();
        let mut specials = Specials {
            quote: 0,
            backslash: 0,
        };
        for (i, part) in parts.iter().enumerate() {
            let v = load(part);
            specials.quote |= equal(v, b'"') << (16 * i);
            specials.backslash |= equal(v, b'\\') << (16 * i);
        }
        specials
    }
}

/// The same masks byte by byte: the fallback off x86-64, and the reference
/// the tests hold the vector code to.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(super) mod portable {
    use super::{Classes, Specials, Structure};

    fn mask(bytes: &[u8], byte: u8) -> u64 {
        bytes
            .iter()
            .enumerate()
            .fold(0, |m, (i, &b)| m | (u64::from(b == byte) << i))
    }

    pub(in crate::scan) fn classify64(chunk: &[u8; 64]) -> Classes {
        let either = |a: u8, b: u8| mask(chunk, a) | mask(chunk, b);
        Classes {
            quote: mask(chunk, b'"'),
            backslash: mask(chunk, b'\\'),
            open: either(b'{', b'['),
            close: either(b'}', b']'),
        }
    }

    pub(in crate::scan) fn structure64(chunk: &[u8; 64]) -> Structure {
        let classes = classify64(chunk);
        Structure {
            quote: classes.quote,
            backslash: classes.backslash,
            colon: mask(chunk, b':'),
            open: classes.open,
            close: classes.close,
        }
    }

    pub(in crate::scan) fn specials(chunk: &[u8]) -> Specials {
        Specials {
            quote: mask(chunk, b'"'),
            backslash: mask(chunk, b'\\'),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;

    thread_local! {
        /// Set while [`baseline_only`] runs: the vector code for the build's
        /// baseline is used even where the CPU has more.
        pub(in crate::scan) static BASELINE_ONLY: Cell<bool> = const { Cell::new(false) };
        /// Set while [`Code::Avx2`] runs: AVX2 is the best vector code
        /// used, so that tests cover it on CPUs that have AVX-512.
        pub(in crate::scan) static NO_AVX512: Cell<bool> = const { Cell::new(false) };
    }

    /// Runs `f` with the baseline vector code only, so that tests cover it
    /// on CPUs that have AVX2.
    pub(in crate::scan) fn baseline_only<R>(f: impl FnOnce() -> R) -> R {
        BASELINE_ONLY.with(|b| b.set(true));
        let result = f();
        BASELINE_ONLY.with(|b| b.set(false));
        result
    }

    /// Each vector code this CPU can run: the best it has, and the
    /// baseline.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(in crate::scan) enum Code {
        Best,
        /// AVX2 at best (the same as `Best` on CPUs without AVX-512).
        Avx2,
        Baseline,
    }

    impl Code {
        pub(in crate::scan) const ALL: [Code; 3] = [Code::Best, Code::Avx2, Code::Baseline];

        /// Runs `f` with this code.
        pub(in crate::scan) fn run<R>(self, f: impl FnOnce() -> R) -> R {
            match self {
                Code::Best => f(),
                Code::Avx2 => {
                    NO_AVX512.with(|b| b.set(true));
                    let result = f();
                    NO_AVX512.with(|b| b.set(false));
                    result
                }
                Code::Baseline => baseline_only(f),
            }
        }
    }

    /// Bytes drawn mostly from the classified ones.
    fn chunk<const N: usize>() -> impl Strategy<Value = [u8; N]> {
        proptest::collection::vec(
            prop_oneof![
                3 => proptest::sample::select(&b"\"{}[]\\ a:\x1a"[..]),
                1 => any::<u8>(),
            ],
            N,
        )
        .prop_map(|v| {
            let mut out = [0; N];
            for (o, b) in out.iter_mut().zip(v) {
                *o = b;
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn vector_masks_equal_the_byte_loop(c in chunk::<64>()) {
            prop_assert_eq!(classify64(&c), portable::classify64(&c));
            prop_assert_eq!(structure64(&c), portable::structure64(&c));
            #[cfg(target_arch = "x86_64")]
            if avx2::available() {
                // SAFETY: `available` found AVX2.
                prop_assert_eq!(unsafe { avx2::classify64(&c) }, portable::classify64(&c));
                // SAFETY: as above.
                prop_assert_eq!(unsafe { avx2::structure64(&c) }, portable::structure64(&c));
            }
            let (halves, _) = c.as_chunks::<32>();
            for half in halves {
                prop_assert_eq!(specials32(half), portable::specials(half));
            }
            let (quarters, _) = c.as_chunks::<16>();
            for quarter in quarters {
                prop_assert_eq!(specials16(quarter), portable::specials(quarter));
            }
        }

        /// `string_end` is the first quote at or after `from` with no
        /// backslash before it.
        #[test]
        fn string_end_is_the_first_quote_before_any_backslash(c in chunk::<32>(), from in 0usize..32) {
            let expected = c
                .iter()
                .enumerate()
                .skip(from)
                .find(|&(_, &b)| b == b'"' || b == b'\\')
                .and_then(|(i, &b)| (b == b'"').then_some(i));
            prop_assert_eq!(specials32(&c).string_end(from), expected);
        }
    }

    /// Text for a container body: pieces of JSON, malformed ones and
    /// backslashes outside strings included, now and then long.
    fn container_body() -> impl Strategy<Value = Vec<u8>> {
        let piece = proptest::sample::select(
            &[
                "\"a\"",
                "\"{\"",
                "\"}\"",
                "\"[\"",
                "\"]\"",
                "\"\\\"\"",
                "\"\\\\\"",
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "1",
                " ",
                "\"",
                "\\",
                "\"a string longer than a few words, with {brackets} and [more]\"",
            ][..],
        );
        proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat().into_bytes())
    }

    /// A way of running [`skip_blocks`].
    type SkipFn = fn(&[u8], &mut Skip, u32) -> Stop;

    /// [`skip_blocks`] one byte at a time: the definition every
    /// implementation must meet (up to the first backslash). Both kinds of
    /// bracket count alike.
    fn skip_bytes(bytes: &[u8], skip: &mut Skip, max_open: u32) -> Stop {
        while let Some(&b) = bytes.get(skip.at) {
            match b {
                b'\\' => return Stop::Backslash,
                b'"' => skip.in_string = !skip.in_string,
                _ if skip.in_string => {}
                b'{' | b'[' => {
                    skip.open += 1;
                    if skip.open > max_open {
                        return Stop::TooDeep;
                    }
                }
                b'}' | b']' => {
                    skip.open -= 1;
                    if skip.open == 0 {
                        return Stop::Closed(skip.at + 1);
                    }
                }
                _ => {}
            }
            skip.at += 1;
        }
        Stop::Backslash
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every implementation of the block skip (the vector one this CPU
        /// runs, the baseline one, and one on the byte-loop masks) ends,
        /// fails or stops exactly where the byte-by-byte definition does,
        /// from any starting state.
        #[test]
        fn block_skips_agree_with_a_byte_walk(
            body in container_body(),
            at in 0usize..8,
            open in 1u32..4,
            in_string in any::<bool>(),
            max_open in 1u32..6,
        ) {
            let start = Skip { at: at.min(body.len()), open: open.min(max_open), in_string };
            let mut expected_skip = start;
            let expected = skip_bytes(&body, &mut expected_skip, max_open);
            let runs: [(&str, SkipFn); 3] = [
                ("dispatched", skip_blocks),
                ("baseline", skip_blocks_baseline),
                ("portable", |b, s, m| skip_blocks_with(b, s, m, portable::classify64, prefix_xor)),
            ];
            for (name, run) in runs {
                let mut skip = start;
                let got = run(&body, &mut skip, max_open);
                prop_assert_eq!(got, expected, "{} on {:?}", name, String::from_utf8_lossy(&body));
                if got == Stop::Backslash {
                    prop_assert_eq!(skip, expected_skip, "{} on {:?}", name, String::from_utf8_lossy(&body));
                }
            }
        }

        #[test]
        fn prefix_xor_is_the_running_parity(x in any::<u64>()) {
            let mut parity = 0;
            let mut expected = 0u64;
            for i in 0..64 {
                parity ^= (x >> i) & 1;
                expected |= parity << i;
            }
            prop_assert_eq!(prefix_xor(x), expected);
            #[cfg(target_arch = "x86_64")]
            if avx2::available() {
                // SAFETY: `available` found carry-less multiplication.
                prop_assert_eq!(unsafe { avx2::prefix_xor(x) }, expected);
            }
        }
    }

    #[test]
    fn every_position_and_byte_value() {
        for at in 0..64 {
            for byte in 0..=255u8 {
                let mut c = [b'x'; 64];
                if let Some(b) = c.get_mut(at) {
                    *b = byte;
                }
                assert_eq!(classify64(&c), portable::classify64(&c));
                assert_eq!(structure64(&c), portable::structure64(&c));
                #[cfg(target_arch = "x86_64")]
                if avx2::available() {
                    // SAFETY: `available` found AVX2.
                    assert_eq!(unsafe { avx2::classify64(&c) }, portable::classify64(&c));
                    // SAFETY: as above.
                    assert_eq!(unsafe { avx2::structure64(&c) }, portable::structure64(&c));
                }
                let (halves, _) = c.as_chunks::<32>();
                for half in halves {
                    assert_eq!(specials32(half), portable::specials(half));
                }
            }
        }
    }
}
