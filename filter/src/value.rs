//! Values and the rules that combine them: conversions, comparison,
//! arithmetic and three-valued logic.
//!
//! These rules are shared by the compiled evaluator and the reference
//! interpreter, so that the two can only disagree about how they find values
//! in a document and how they combine predicates, which is what the property
//! tests compare. The rules themselves are pinned by the table tests and by
//! the README's examples.

use std::cmp::Ordering;
use std::fmt;

use crate::ast::BinaryOp;

/// The result of evaluating an expression.
#[derive(Clone, Debug)]
pub enum Value {
    /// SQL NULL: missing, unknown or not applicable.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// A string of bytes (not necessarily UTF-8).
    Str(Vec<u8>),
}

impl PartialEq for Value {
    /// Structural equality, in which NaN equals NaN and `Int(1) != Float(1.0)`:
    /// it tells whether two evaluations produced the same result, which is
    /// what tests need, not whether the filter language calls them equal.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => {
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || a == b
            }
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    /// Prints the value as a filter literal would be written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(true) => f.write_str("TRUE"),
            Value::Bool(false) => f.write_str("FALSE"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => crate::print::write_float(f, *x),
            Value::Str(s) => crate::print::write_string(f, s),
        }
    }
}

impl Value {
    /// Borrows the value as a [`Scalar`].
    pub fn as_scalar(&self) -> Scalar<'_> {
        match self {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Int(i) => Scalar::Int(*i),
            Value::Float(x) => Scalar::Float(*x),
            Value::Str(s) => Scalar::Str(s),
        }
    }

    /// The value as a SQL truth value.
    pub fn truth(&self) -> Truth {
        self.as_scalar().truth()
    }
}

/// A value borrowed from the message, the filter or scratch space.
#[derive(Clone, Copy, Debug)]
pub enum Scalar<'a> {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// A string of bytes.
    Str(&'a [u8]),
}

impl Scalar<'_> {
    /// Copies the value out.
    pub fn to_value(self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::Int(i),
            Scalar::Float(x) => Value::Float(x),
            Scalar::Str(s) => Value::Str(s.to_vec()),
        }
    }

    /// NULL, or the empty string, which AMPS treats as NULL in comparisons
    /// and `IS NULL`.
    pub fn is_nullish(self) -> bool {
        match self {
            Scalar::Null => true,
            Scalar::Str(s) => s.is_empty(),
            _ => false,
        }
    }

    /// The value as a number for arithmetic: booleans are 1 and 0, strings
    /// are parsed (an unparseable string is NaN), NULL and `''` stay NULL.
    pub fn to_number(self) -> Num {
        match self {
            Scalar::Null => Num::Null,
            Scalar::Bool(b) => Num::Int(i64::from(b)),
            Scalar::Int(i) => Num::Int(i),
            Scalar::Float(x) => Num::Float(x),
            Scalar::Str(b"") => Num::Null,
            Scalar::Str(s) => parse_number(s).unwrap_or(Num::Float(f64::NAN)),
        }
    }

    /// The value in a boolean position (`NOT x`, `x AND y`, `IF(x, …)`).
    pub fn truth(self) -> Truth {
        match self {
            Scalar::Null => Truth::Unknown,
            Scalar::Bool(b) => Truth::from(b),
            Scalar::Int(i) => Truth::from(i != 0),
            Scalar::Float(x) if x.is_nan() => Truth::Unknown,
            Scalar::Float(x) => Truth::from(x != 0.0),
            Scalar::Str(s) => {
                if s.eq_ignore_ascii_case(b"true") {
                    Truth::True
                } else if s.eq_ignore_ascii_case(b"false") {
                    Truth::False
                } else {
                    match parse_number(s) {
                        Some(n) => Scalar::from(n).truth(),
                        None => Truth::Unknown,
                    }
                }
            }
        }
    }

    /// Whether this is a floating-point NaN.
    pub fn is_nan(self) -> bool {
        matches!(self, Scalar::Float(x) if x.is_nan())
    }
}

/// A numeric value, or NULL.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A double.
    Float(f64),
}

impl From<Num> for Scalar<'_> {
    fn from(n: Num) -> Self {
        match n {
            Num::Null => Scalar::Null,
            Num::Int(i) => Scalar::Int(i),
            Num::Float(x) => Scalar::Float(x),
        }
    }
}

impl Num {
    fn as_f64(self) -> Option<f64> {
        match self {
            Num::Null => None,
            // Precision loss above 2^53 is the documented price of mixing
            // integers with doubles in arithmetic.
            #[allow(clippy::cast_precision_loss)]
            Num::Int(i) => Some(i as f64),
            Num::Float(x) => Some(x),
        }
    }
}

/// SQL-92 truth values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// FALSE.
    False,
    /// TRUE.
    True,
    /// NULL (unknown).
    Unknown,
}

impl From<bool> for Truth {
    fn from(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }
}

impl std::ops::Not for Truth {
    type Output = Truth;

    /// Three-valued NOT.
    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

impl Truth {
    /// Three-valued AND.
    #[must_use]
    pub fn and(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        }
    }

    /// Three-valued OR.
    #[must_use]
    pub fn or(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        }
    }

    /// The truth value as a [`Value`]: TRUE, FALSE or NULL.
    pub fn to_value(self) -> Value {
        match self {
            Truth::True => Value::Bool(true),
            Truth::False => Value::Bool(false),
            Truth::Unknown => Value::Null,
        }
    }

    /// The truth value as a [`Scalar`].
    pub fn to_scalar(self) -> Scalar<'static> {
        match self {
            Truth::True => Scalar::Bool(true),
            Truth::False => Scalar::Bool(false),
            Truth::Unknown => Scalar::Null,
        }
    }
}

/// Parses text that is entirely a number: an optional sign, digits with an
/// optional decimal point, an optional exponent. No spaces, no `inf`/`nan`.
/// Integer text that fits in 64 bits is an integer; other numbers are doubles.
pub fn parse_number(text: &[u8]) -> Option<Num> {
    let mut i = 0;
    if matches!(text.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while text.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    let mut integral = true;
    if text.get(i) == Some(&b'.') {
        integral = false;
        i += 1;
        let frac_start = i;
        while text.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        integral = false;
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        while text.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != text.len() {
        return None;
    }
    if let Some(n) = parse_simple(text) {
        return Some(n);
    }
    // The grammar above admits only ASCII, so this never fails.
    let text = std::str::from_utf8(text).ok()?;
    if integral && let Ok(n) = text.parse::<i64>() {
        // `-0` is the double -0.0, as serde_json reads it; every other
        // integer text that fits is an integer.
        if n == 0 && text.starts_with('-') {
            return Some(Num::Float(-0.0));
        }
        return Some(Num::Int(n));
    }
    text.parse::<f64>().ok().map(Num::Float)
}

/// [`parse_number`] for text the payload scanner has already checked against
/// the JSON number grammar: the common cases in one pass, without checking
/// the grammar again.
pub(crate) fn parse_json_number(text: &[u8]) -> Option<Num> {
    parse_simple(text).or_else(|| parse_number(text))
}

/// The common cases of [`parse_number`] without the standard library's
/// general parsers: an integer of at most 18 digits, or a decimal with at
/// most 15 significant digits and no exponent. The decimal is its digits as
/// an integer divided by a power of ten; both are exact doubles, and IEEE
/// division rounds correctly, so the result equals the correctly rounded
/// parse (Clinger's fast path). Returns None for anything else (an exponent
/// among them, so text without a `.` is an integer). `text` must already
/// have been checked against the number grammar (at least one digit).
fn parse_simple(text: &[u8]) -> Option<Num> {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    // Digits accumulate with wrapping arithmetic: a number with too many
    // digits to fit is refused by its digit count below.
    let mut mantissa: u64 = 0;
    let mut at = 0;
    let digits = |at: &mut usize, mantissa: &mut u64| {
        while let Some(d) = body
            .get(*at)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|&d| d < 10)
        {
            *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            *at += 1;
        }
    };
    digits(&mut at, &mut mantissa);
    let integer_digits = at;
    match body.get(at) {
        None => {
            if integer_digits > 18 {
                return None;
            }
            // At most 18 digits, so it fits.
            let n = i64::try_from(mantissa).ok()?;
            if n == 0 && negative {
                return Some(Num::Float(-0.0));
            }
            Some(Num::Int(if negative { -n } else { n }))
        }
        Some(b'.') => {
            at += 1;
            let fraction_start = at;
            digits(&mut at, &mut mantissa);
            if at != body.len() {
                return None;
            }
            let scale = at - fraction_start;
            if integer_digits + scale > 15 {
                return None;
            }
            // At most 15 digits: below 2^53, so the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            let value = mantissa as f64 / *POWERS.get(scale)?;
            Some(Num::Float(if negative { -value } else { value }))
        }
        Some(_) => None,
    }
}

/// The outcome of comparing two values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// One side is NULL (or `''`): every comparison is NULL.
    Null,
    /// A NaN is involved: `!=` is TRUE, every other comparison FALSE.
    Unordered,
    /// The values are ordered.
    Ordered(Ordering),
}

/// Compares two values the way AMPS does: numbers numerically (booleans are
/// 1 and 0), strings bytewise, and a string against a number by converting
/// the string to a number, or, when it is not a number, ranking every string
/// above every number.
pub fn compare(a: Scalar<'_>, b: Scalar<'_>) -> Comparison {
    if a.is_nullish() || b.is_nullish() {
        return Comparison::Null;
    }
    match (a, b) {
        (Scalar::Str(x), Scalar::Str(y)) => Comparison::Ordered(x.cmp(y)),
        (Scalar::Str(x), _) => match parse_number(x) {
            Some(n) => compare_numbers(n, b.to_number()),
            None => Comparison::Ordered(Ordering::Greater),
        },
        (_, Scalar::Str(y)) => match parse_number(y) {
            Some(n) => compare_numbers(a.to_number(), n),
            None => Comparison::Ordered(Ordering::Less),
        },
        _ => compare_numbers(a.to_number(), b.to_number()),
    }
}

/// Compares two numbers exactly, also an integer against a double.
pub fn compare_numbers(a: Num, b: Num) -> Comparison {
    let ordering = match (a, b) {
        (Num::Null, _) | (_, Num::Null) => return Comparison::Null,
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => compare_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => compare_int_float(y, x).map(Ordering::reverse),
    };
    match ordering {
        Some(o) => Comparison::Ordered(o),
        None => Comparison::Unordered,
    }
}

/// Orders an integer against a double without rounding the integer.
fn compare_int_float(i: i64, f: f64) -> Option<Ordering> {
    // 2^63 is exactly representable; every i64 is below it and at or above -2^63.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return None;
    }
    if f >= TWO_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_63 {
        return Some(Ordering::Greater);
    }
    // In range, so the cast truncates exactly (and, unlike `f64::trunc`,
    // which the baseline x86-64 target calls a library function for, it
    // is one instruction).
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = f as i64;
    match i.cmp(&whole_int) {
        Ordering::Equal => {
            // The truncation is an integer below 2^63 taken from a double,
            // so it converts back exactly, and so does the difference.
            #[allow(clippy::cast_precision_loss)]
            let frac = f - whole_int as f64;
            Some(if frac > 0.0 {
                Ordering::Less
            } else if frac < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            })
        }
        other => Some(other),
    }
}

/// Applies a comparison operator; `op` must be a comparison.
pub fn apply_comparison(op: BinaryOp, a: Scalar<'_>, b: Scalar<'_>) -> Truth {
    comparison_truth(op, compare(a, b))
}

/// What a comparison operator says about a [`Comparison`].
#[inline]
pub fn comparison_truth(op: BinaryOp, c: Comparison) -> Truth {
    match c {
        Comparison::Null => Truth::Unknown,
        Comparison::Unordered => Truth::from(op == BinaryOp::Ne),
        Comparison::Ordered(o) => Truth::from(match op {
            BinaryOp::Eq => o == Ordering::Equal,
            BinaryOp::Ne => o != Ordering::Equal,
            BinaryOp::Lt => o == Ordering::Less,
            BinaryOp::Le => o != Ordering::Greater,
            BinaryOp::Gt => o == Ordering::Greater,
            BinaryOp::Ge => o != Ordering::Less,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => false,
        }),
    }
}

/// Applies an arithmetic operator; `op` must be arithmetic.
///
/// Integers stay integers (`/` truncates towards zero, `%` keeps the sign of
/// the left operand) unless the result overflows, in which case the operation
/// is done in doubles. A zero divisor gives NULL.
pub fn arithmetic(op: BinaryOp, a: Scalar<'_>, b: Scalar<'_>) -> Num {
    let (x, y) = (a.to_number(), b.to_number());
    if x == Num::Null || y == Num::Null {
        return Num::Null;
    }
    if let (Num::Int(i), Num::Int(j)) = (x, y) {
        let exact = match op {
            BinaryOp::Add => i.checked_add(j),
            BinaryOp::Sub => i.checked_sub(j),
            BinaryOp::Mul => i.checked_mul(j),
            BinaryOp::Div if j == 0 => return Num::Null,
            BinaryOp::Div => i.checked_div(j),
            BinaryOp::Mod if j == 0 => return Num::Null,
            // i64::MIN % -1 overflows in hardware; mathematically it is 0.
            BinaryOp::Mod => Some(i.checked_rem(j).unwrap_or(0)),
            _ => return Num::Null,
        };
        if let Some(n) = exact {
            return Num::Int(n);
        }
    }
    let (Some(p), Some(q)) = (x.as_f64(), y.as_f64()) else {
        return Num::Null;
    };
    Num::Float(match op {
        BinaryOp::Add => p + q,
        BinaryOp::Sub => p - q,
        BinaryOp::Mul => p * q,
        BinaryOp::Div if q == 0.0 => return Num::Null,
        BinaryOp::Div => p / q,
        BinaryOp::Mod if q == 0.0 => return Num::Null,
        BinaryOp::Mod => p % q,
        _ => return Num::Null,
    })
}

/// Unary minus.
pub fn negate(a: Scalar<'_>) -> Num {
    match a.to_number() {
        Num::Null => Num::Null,
        Num::Int(i) => match i.checked_neg() {
            Some(n) => Num::Int(n),
            #[allow(clippy::cast_precision_loss)]
            None => Num::Float(-(i as f64)),
        },
        Num::Float(x) => Num::Float(-x),
    }
}

/// Writes the text form of a non-string value, as string functions see it:
/// integers in decimal, doubles in their shortest round-trip form (`2.5`,
/// `100`, `1e300`…), booleans as `true`/`false`. Returns false for NULL.
pub fn write_text(a: Scalar<'_>, out: &mut Vec<u8>) -> bool {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = match a {
        Scalar::Null => return false,
        Scalar::Bool(b) => out.write_all(if b { b"true" } else { b"false" }),
        Scalar::Int(i) => write!(out, "{i}"),
        Scalar::Float(x) => write_float_text(out, x),
        Scalar::Str(s) => out.write_all(s),
    };
    true
}

fn write_float_text(out: &mut Vec<u8>, x: f64) -> std::io::Result<()> {
    use std::io::Write as _;
    if x.is_nan() {
        out.write_all(b"NaN")
    } else if x.is_infinite() {
        out.write_all(if x > 0.0 { b"Infinity" } else { b"-Infinity" })
    } else if x == x.trunc() && x.abs() < 1e16 {
        // Whole doubles print without a fraction, so `100.0` reads as `100`.
        write!(out, "{x:.0}")
    } else {
        write!(out, "{x:?}")
    }
}

/// The canonical identity of a number, for hashing: two numbers have the same
/// key exactly when [`compare`] calls them equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumKey {
    /// An integer, or a double with an integral value in the i64 range.
    Int(i64),
    /// Any other double, by its bits (never NaN, never -0.0).
    Bits(u64),
}

impl NumKey {
    /// The key of a number; None for NULL and NaN, which equal nothing.
    pub fn of(n: Num) -> Option<NumKey> {
        const TWO_63: f64 = 9_223_372_036_854_775_808.0;
        match n {
            Num::Null => None,
            Num::Int(i) => Some(NumKey::Int(i)),
            Num::Float(x) if x.is_nan() => None,
            Num::Float(x) if x == x.trunc() && (-TWO_63..TWO_63).contains(&x) => {
                // Integral and in range, so the cast is exact (and -0.0 becomes 0).
                #[allow(clippy::cast_possible_truncation)]
                Some(NumKey::Int(x as i64))
            }
            Num::Float(x) => Some(NumKey::Bits(x.to_bits())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path must agree with the standard library's parsers.
    #[test]
    fn simple_numbers_parse_like_the_standard_library() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let r = next();
            let int_digits = (r % 12) as usize;
            let frac_digits = ((r >> 8) % 10) as usize;
            let mut text = String::new();
            if r & (1 << 20) != 0 {
                text.push('-');
            }
            for k in 0..int_digits {
                text.push(char::from(b'0' + ((next() >> (k % 8)) % 10) as u8));
            }
            if r & (1 << 21) != 0 {
                text.push('.');
                for k in 0..frac_digits {
                    text.push(char::from(b'0' + ((next() >> (k % 8)) % 10) as u8));
                }
            }
            let integral = !text.contains('.');
            if !text.bytes().any(|b| b.is_ascii_digit()) {
                continue;
            }
            let Some(fast) = parse_simple(text.as_bytes()) else {
                continue;
            };
            let expected = if integral {
                match text.parse::<i64>() {
                    Ok(0) if text.starts_with('-') => Num::Float(-0.0),
                    Ok(n) => Num::Int(n),
                    Err(_) => continue,
                }
            } else {
                match text.parse::<f64>() {
                    Ok(x) => Num::Float(x),
                    Err(_) => continue,
                }
            };
            match (fast, expected) {
                (Num::Float(a), Num::Float(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{text}"),
                (a, b) => assert_eq!(a, b, "{text}"),
            }
        }
    }
}
