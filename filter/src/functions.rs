//! Built-in functions: the name table (arity, determinism) and the
//! implementations shared by the compiled evaluator and the reference
//! interpreter.
//!
//! Strings are bytes and case mapping is ASCII-only, as in AMPS. Every
//! function but `COALESCE` and `IF` returns NULL when an argument is NULL.
//! String functions see numbers as their text (see [`crate::value::write_text`]);
//! numeric functions see strings as numbers (unparseable text is NaN).

use crate::value::{Comparison, Num, Scalar, compare};

macro_rules! functions {
    ($($variant:ident $name:literal $min:literal $max:expr, $deterministic:literal;)*) => {
        /// A built-in function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Function {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Function {
            /// Every function, in the order of the README's table.
            pub const ALL: &'static [Function] = &[$(Function::$variant,)*];

            /// The function's name as written in filters (matching is case-insensitive).
            pub fn name(self) -> &'static str {
                match self { $(Function::$variant => $name,)* }
            }

            /// Looks a function up by its upper-cased name.
            pub fn from_name(name: &str) -> Option<Function> {
                match name { $($name => Some(Function::$variant),)* _ => None }
            }

            /// Least and greatest number of arguments (None: any number).
            pub fn arity(self) -> (usize, Option<usize>) {
                match self { $(Function::$variant => ($min, $max),)* }
            }

            /// Whether the function gives the same result for the same
            /// message every time it is evaluated.
            pub fn is_deterministic(self) -> bool {
                match self { $(Function::$variant => $deterministic,)* }
            }
        }
    };
}

functions! {
    Upper "UPPER" 1 Some(1), true;
    Lower "LOWER" 1 Some(1), true;
    Length "LENGTH" 1 Some(1), true;
    Substr "SUBSTR" 2 Some(3), true;
    Instr "INSTR" 2 Some(2), true;
    InstrI "INSTR_I" 2 Some(2), true;
    StrEqualI "STREQUAL_I" 2 Some(2), true;
    Concat "CONCAT" 1 None, true;
    Replace "REPLACE" 3 Some(3), true;
    Trim "TRIM" 1 Some(1), true;
    Ltrim "LTRIM" 1 Some(1), true;
    Rtrim "RTRIM" 1 Some(1), true;
    Left "LEFT" 2 Some(2), true;
    Right "RIGHT" 2 Some(2), true;
    Abs "ABS" 1 Some(1), true;
    Round "ROUND" 1 Some(2), true;
    Floor "FLOOR" 1 Some(1), true;
    Ceiling "CEILING" 1 Some(1), true;
    Greatest "GREATEST" 1 None, true;
    Least "LEAST" 1 None, true;
    Power "POWER" 2 Some(2), true;
    Sqrt "SQRT" 1 Some(1), true;
    Sign "SIGN" 1 Some(1), true;
    Exp "EXP" 1 Some(1), true;
    Ln "LN" 1 Some(1), true;
    Log10 "LOG10" 1 Some(1), true;
    Log2 "LOG2" 1 Some(1), true;
    Coalesce "COALESCE" 1 None, true;
    If "IF" 3 Some(3), true;
    UnixTimestamp "UNIX_TIMESTAMP" 0 Some(0), false;
    TopicName "TOPIC_NAME" 0 Some(0), true;
    MessageSize "MESSAGE_SIZE" 0 Some(0), true;
}

/// Longest string `CONCAT` or `REPLACE` may build; a longer result is NULL.
/// Without a cap, `REPLACE(/text, 'a', '<100 KiB literal>')` on a large
/// payload could make one evaluation allocate gigabytes.
pub const MAX_BUILT_STRING_BYTES: usize = 1 << 20;

/// The result of a function, pointing back at its arguments where it can so
/// that common cases copy nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FnOut {
    /// A non-string result (or NULL).
    Num(Num),
    /// A boolean result.
    Bool(bool),
    /// The string argument `arg`, bytes `start..end` (only for string arguments).
    Slice {
        arg: usize,
        start: usize,
        end: usize,
    },
    /// The bytes written to the output buffer.
    Out,
}

/// Text buffers for arguments that are numbers but are used as strings.
#[derive(Debug, Default)]
pub(crate) struct TextBuffers {
    bufs: [Vec<u8>; 3],
}

impl TextBuffers {
    /// The texts of up to three arguments: None where the argument is NULL.
    fn texts<'s>(&'s mut self, args: &[Scalar<'s>]) -> [Option<&'s [u8]>; 3] {
        let [b0, b1, b2] = &mut self.bufs;
        let mut bufs = [b0, b1, b2].into_iter();
        let mut out = [None, None, None];
        for (slot, arg) in out.iter_mut().zip(args) {
            let Some(buf) = bufs.next() else { break };
            *slot = match *arg {
                Scalar::Str(s) => Some(s),
                Scalar::Null => None,
                other => {
                    buf.clear();
                    crate::value::write_text(other, buf);
                    Some(&buf[..])
                }
            };
        }
        out
    }
}

/// Whether argument `i` is held as a string, so a [`FnOut::Slice`] of it is valid.
fn is_str(args: &[Scalar<'_>], i: usize) -> bool {
    matches!(args.get(i), Some(Scalar::Str(_)))
}

/// Converts an argument used as a count or position to an integer:
/// doubles truncate towards zero; NaN, NULL and non-numbers give None.
fn to_int(arg: Option<&Scalar<'_>>) -> Option<i64> {
    match arg?.to_number() {
        Num::Null => None,
        Num::Int(i) => Some(i),
        Num::Float(x) if x.is_nan() => None,
        // Saturating float-to-int conversion is the intent.
        #[allow(clippy::cast_possible_truncation)]
        Num::Float(x) => Some(x as i64),
    }
}

/// A slice of `text` as a result: a slice of the argument when it is a
/// string, else a copy into `out`.
fn slice_of(
    args: &[Scalar<'_>],
    i: usize,
    text: &[u8],
    start: usize,
    end: usize,
    out: &mut Vec<u8>,
) -> FnOut {
    let end = end.min(text.len());
    let start = start.min(end);
    if is_str(args, i) {
        FnOut::Slice { arg: i, start, end }
    } else {
        out.extend_from_slice(text.get(start..end).unwrap_or(&[]));
        FnOut::Out
    }
}

/// Calls a fixed-arity string or numeric function. `args` has been checked
/// against the arity. Variadic functions, `IF`, `COALESCE` and the
/// current-message functions are handled by the evaluators.
pub(crate) fn call(
    function: Function,
    args: &[Scalar<'_>],
    out: &mut Vec<u8>,
    texts: &mut TextBuffers,
) -> FnOut {
    if args.iter().any(|a| matches!(a, Scalar::Null)) {
        return FnOut::Num(Num::Null);
    }
    match function {
        Function::Abs => num1(args, |n| match n {
            Num::Int(i) => i.checked_abs().map_or(Num::Float(-(i as f64)), Num::Int),
            Num::Float(x) => Num::Float(x.abs()),
            Num::Null => Num::Null,
        }),
        Function::Floor => num1(args, |n| match n {
            Num::Float(x) => Num::Float(x.floor()),
            other => other,
        }),
        Function::Ceiling => num1(args, |n| match n {
            Num::Float(x) => Num::Float(x.ceil()),
            other => other,
        }),
        Function::Sign => num1(args, |n| match n {
            Num::Int(i) => Num::Int(i.signum()),
            Num::Float(x) if x == 0.0 || x.is_nan() => Num::Float(x),
            Num::Float(x) => Num::Float(x.signum()),
            Num::Null => Num::Null,
        }),
        Function::Sqrt => float1(args, f64::sqrt),
        Function::Exp => float1(args, f64::exp),
        Function::Ln => float1(args, f64::ln),
        Function::Log10 => float1(args, f64::log10),
        Function::Log2 => float1(args, f64::log2),
        Function::Round => FnOut::Num(round(args)),
        Function::Power => FnOut::Num(power(args)),
        _ => call_text(function, args, out, texts),
    }
}

fn num1(args: &[Scalar<'_>], f: impl Fn(Num) -> Num) -> FnOut {
    FnOut::Num(args.first().map_or(Num::Null, |a| f(a.to_number())))
}

fn float1(args: &[Scalar<'_>], f: impl Fn(f64) -> f64) -> FnOut {
    num1(args, |n| match n {
        Num::Null => Num::Null,
        #[allow(clippy::cast_precision_loss)]
        Num::Int(i) => Num::Float(f(i as f64)),
        Num::Float(x) => Num::Float(f(x)),
    })
}

fn round(args: &[Scalar<'_>]) -> Num {
    let Some(x) = args.first().map(|a| a.to_number()) else {
        return Num::Null;
    };
    let digits = match args.get(1) {
        None => 0,
        Some(d) => match to_int(Some(d)) {
            Some(d) => d.clamp(-400, 400),
            None => return Num::Null,
        },
    };
    match x {
        Num::Null => Num::Null,
        Num::Int(i) if digits >= 0 => Num::Int(i),
        Num::Int(i) => {
            // Round half away from zero to a power of ten, in i128 so that
            // nothing overflows on the way.
            let Some(p) = u32::try_from(-digits)
                .ok()
                .and_then(|e| 10_i128.checked_pow(e))
            else {
                return Num::Int(0);
            };
            let v = i128::from(i);
            let q = (v.abs() + p / 2) / p * p;
            let r = if v < 0 { -q } else { q };
            i64::try_from(r).map_or(Num::Float(r as f64), Num::Int)
        }
        Num::Float(x) if digits == 0 => Num::Float(x.round()),
        Num::Float(x) => {
            // Digits are clamped to ±400, so the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            let p = 10_f64.powi(digits as i32);
            let r = (x * p).round() / p;
            Num::Float(if r.is_finite() { r } else { x })
        }
    }
}

fn power(args: &[Scalar<'_>]) -> Num {
    let (Some(x), Some(y)) = (args.first(), args.get(1)) else {
        return Num::Null;
    };
    match (x.to_number(), y.to_number()) {
        (Num::Null, _) | (_, Num::Null) => Num::Null,
        (Num::Int(b), Num::Int(e)) if e >= 0 => {
            match u32::try_from(e).ok().and_then(|e| b.checked_pow(e)) {
                Some(v) => Num::Int(v),
                #[allow(clippy::cast_precision_loss)]
                None => Num::Float((b as f64).powf(e as f64)),
            }
        }
        (a, b) => match (as_f64(a), as_f64(b)) {
            (Some(a), Some(b)) => Num::Float(a.powf(b)),
            _ => Num::Null,
        },
    }
}

fn as_f64(n: Num) -> Option<f64> {
    match n {
        Num::Null => None,
        #[allow(clippy::cast_precision_loss)]
        Num::Int(i) => Some(i as f64),
        Num::Float(x) => Some(x),
    }
}

fn position(found: Option<usize>) -> FnOut {
    FnOut::Num(Num::Int(found.map_or(0, |p| {
        i64::try_from(p).unwrap_or(i64::MAX).saturating_add(1)
    })))
}

fn call_text(
    function: Function,
    args: &[Scalar<'_>],
    out: &mut Vec<u8>,
    texts: &mut TextBuffers,
) -> FnOut {
    let [t0, t1, t2] = texts.texts(args);
    let s = t0.unwrap_or(&[]);
    let len = s.len();
    match function {
        Function::Upper => {
            out.extend(s.iter().map(u8::to_ascii_uppercase));
            FnOut::Out
        }
        Function::Lower => {
            out.extend(s.iter().map(u8::to_ascii_lowercase));
            FnOut::Out
        }
        Function::Length => FnOut::Num(Num::Int(i64::try_from(len).unwrap_or(i64::MAX))),
        Function::Substr => {
            let Some(start) = to_int(args.get(1)) else {
                return FnOut::Num(Num::Null);
            };
            let len_i = i64::try_from(len).unwrap_or(i64::MAX);
            let from = match start {
                0 => 0,
                s if s > 0 => s - 1,
                s => len_i.saturating_add(s).max(0),
            };
            let to = match args.get(2) {
                None => len_i,
                Some(_) => match to_int(args.get(2)) {
                    Some(n) if n <= 0 => from,
                    Some(n) => from.saturating_add(n),
                    None => return FnOut::Num(Num::Null),
                },
            };
            let from = usize::try_from(from).unwrap_or(usize::MAX);
            let to = usize::try_from(to).unwrap_or(usize::MAX);
            slice_of(args, 0, s, from, to, out)
        }
        Function::Instr => {
            let sub = t1.unwrap_or(&[]);
            position(memchr::memmem::find(s, sub))
        }
        Function::InstrI => {
            let sub = t1.unwrap_or(&[]);
            if sub.is_empty() {
                return position(Some(0));
            }
            position(
                s.windows(sub.len())
                    .position(|w| w.eq_ignore_ascii_case(sub)),
            )
        }
        Function::StrEqualI => FnOut::Bool(s.eq_ignore_ascii_case(t1.unwrap_or(&[]))),
        Function::Replace => {
            let (from, to) = (t1.unwrap_or(&[]), t2.unwrap_or(&[]));
            if from.is_empty() {
                return slice_of(args, 0, s, 0, len, out);
            }
            let mark = out.len();
            let mut rest = s;
            while let Some(at) = memchr::memmem::find(rest, from) {
                out.extend_from_slice(rest.get(..at).unwrap_or(&[]));
                out.extend_from_slice(to);
                rest = rest.get(at + from.len()..).unwrap_or(&[]);
                if out.len() - mark > MAX_BUILT_STRING_BYTES {
                    out.truncate(mark);
                    return FnOut::Num(Num::Null);
                }
            }
            out.extend_from_slice(rest);
            if out.len() - mark > MAX_BUILT_STRING_BYTES {
                out.truncate(mark);
                return FnOut::Num(Num::Null);
            }
            FnOut::Out
        }
        Function::Trim | Function::Ltrim | Function::Rtrim => {
            let mut start = 0;
            let mut end = len;
            if function != Function::Rtrim {
                while s.get(start).is_some_and(u8::is_ascii_whitespace) {
                    start += 1;
                }
            }
            if function != Function::Ltrim {
                while end > start && s.get(end - 1).is_some_and(u8::is_ascii_whitespace) {
                    end -= 1;
                }
            }
            slice_of(args, 0, s, start, end, out)
        }
        Function::Left | Function::Right => {
            let Some(n) = to_int(args.get(1)) else {
                return FnOut::Num(Num::Null);
            };
            let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX).min(len);
            if function == Function::Left {
                slice_of(args, 0, s, 0, n, out)
            } else {
                slice_of(args, 0, s, len - n, len, out)
            }
        }
        _ => FnOut::Num(Num::Null),
    }
}

/// One step of `CONCAT`: appends an argument's text; false if it is NULL.
pub(crate) fn concat_step(arg: Scalar<'_>, out: &mut Vec<u8>) -> bool {
    crate::value::write_text(arg, out)
}

/// One step of `GREATEST` (or `LEAST` when `least`): whether `next` replaces
/// the current best. NULLs are handled by the caller.
pub(crate) fn extreme_step(best: Scalar<'_>, next: Scalar<'_>, least: bool) -> bool {
    let wanted = if least {
        std::cmp::Ordering::Less
    } else {
        std::cmp::Ordering::Greater
    };
    compare(next, best) == Comparison::Ordered(wanted)
}
