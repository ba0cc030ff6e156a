//! Evaluates a compiled plan against the values one scan collected.
//!
//! Values borrow from the payload and the plan; strings that functions build
//! go to a scratch arena, named by range, so that evaluation allocates
//! nothing once the scratch buffers have grown. A path can hold several
//! values (array elements): comparisons, `IN`, `BETWEEN`, `LIKE` and the
//! affix tests are TRUE when any element makes them TRUE; everything else
//! sees the first element.

use std::ops::Not as _;

use crate::ast::{AffixKind, BinaryOp, IsTest};
use crate::compile::{Const, Node};
use crate::context::MessageContext;
use crate::functions::{self, FnOut, Function, TextBuffers};
use crate::scan::{Captures, Raw};
use crate::value::{
    Comparison, Num, Scalar, Truth, apply_comparison, arithmetic, compare_numbers,
    comparison_truth, negate, parse_json_number,
};

/// A value during evaluation: like [`Scalar`], but strings built by
/// functions are ranges of the arena, and JSON numbers stay text until used.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a [u8]),
    /// JSON number text, parsed when used.
    Number(&'a [u8]),
    /// Bytes `start..end` of the arena.
    Arena(usize, usize),
}

impl From<Num> for Val<'_> {
    fn from(n: Num) -> Self {
        match n {
            Num::Null => Val::Null,
            Num::Int(i) => Val::Int(i),
            Num::Float(x) => Val::Float(x),
        }
    }
}

impl From<Truth> for Val<'_> {
    fn from(t: Truth) -> Self {
        match t {
            Truth::True => Val::Bool(true),
            Truth::False => Val::Bool(false),
            Truth::Unknown => Val::Null,
        }
    }
}

/// An operand of an any-element predicate: a path's values, or one value.
#[derive(Clone, Copy, Debug)]
enum Operand<'a> {
    Path(u32),
    One(Val<'a>),
}

/// Scratch space reused across evaluations.
#[derive(Debug, Default)]
pub(crate) struct EvalScratch {
    /// Strings being built by nested calls, used as a stack.
    out: Vec<u8>,
    texts: TextBuffers,
    conv: [Vec<u8>; 2],
}

pub(crate) struct Eval<'a, 's> {
    pub(crate) ctx: &'a MessageContext<'a>,
    pub(crate) cap: &'s mut Captures,
    pub(crate) scratch: &'s mut EvalScratch,
}

fn resolve<'x>(v: Val<'x>, arena: &'x [u8]) -> Scalar<'x> {
    match v {
        Val::Null => Scalar::Null,
        Val::Bool(b) => Scalar::Bool(b),
        Val::Int(i) => Scalar::Int(i),
        Val::Float(x) => Scalar::Float(x),
        Val::Str(s) => Scalar::Str(s),
        // Number text comes from the scanner, which checked its grammar.
        Val::Number(text) => parse_json_number(text).map_or(Scalar::Null, Scalar::from),
        Val::Arena(start, end) => Scalar::Str(arena.get(start..end).unwrap_or(&[])),
    }
}

fn raw_val(raw: Raw, payload: &[u8]) -> Val<'_> {
    match raw {
        Raw::Null => Val::Null,
        Raw::True => Val::Bool(true),
        Raw::False => Val::Bool(false),
        Raw::Number { start, end } => Val::Number(payload.get(start..end).unwrap_or(b"0")),
        Raw::Str { start, end } => Val::Str(payload.get(start..end).unwrap_or(&[])),
        Raw::Unescaped { start, end } => Val::Arena(start, end),
    }
}

/// A constant of the plan as a value.
fn const_scalar(c: &Const) -> Scalar<'_> {
    match c {
        Const::Null => Scalar::Null,
        Const::Bool(b) => Scalar::Bool(*b),
        Const::Int(i) => Scalar::Int(*i),
        Const::Float(x) => Scalar::Float(*x),
        Const::Str(s) => Scalar::Str(s),
    }
}

/// `apply_comparison(op, value, k)` for one value found at a path, with
/// the commonest cases done directly: string equality compares the bytes in
/// place, and a number is compared with a numeric constant without going
/// through the general coercions (the scanner has checked its grammar).
#[inline(always)]
fn compare_raw(op: BinaryOp, raw: &Raw, payload: &[u8], arena: &[u8], k: &Const) -> Truth {
    match (raw, k) {
        (&Raw::Str { start, end }, Const::Str(key))
            if matches!(op, BinaryOp::Eq | BinaryOp::Ne) =>
        {
            let text = payload.get(start..end).unwrap_or(&[]);
            // The empty string is NULL.
            if text.is_empty() || key.is_empty() {
                return Truth::Unknown;
            }
            Truth::from(bytes_equal(text, key) == (op == BinaryOp::Eq))
        }
        (&Raw::Number { start, end }, Const::Int(_) | Const::Float(_)) => {
            compare_number(op, payload.get(start..end), k)
        }
        _ => compare_general(op, *raw, payload, arena, k),
    }
}

/// [`compare_raw`] for JSON number text against a numeric constant.
#[inline(always)]
fn compare_number(op: BinaryOp, text: Option<&[u8]>, k: &Const) -> Truth {
    if let (Some(text), Const::Int(k)) = (text, k)
        && let Some(ordering) = order_decimal_int(text, *k)
    {
        return comparison_truth(op, Comparison::Ordered(ordering));
    }
    compare_number_parsed(op, text, k)
}

/// How the JSON number `text` (grammar already checked) orders against the
/// integer `k`, exactly, for the commonest numbers: at most 15 digits and
/// no exponent. None for any other.
///
/// The parsed path gives the same answer: such a number parses to an
/// integer, or to the double nearest its decimal value, which is never
/// an integer nor on the other side of one when its fraction is not
/// zero (15 significant digits leave it at least 10^-15 of its size from
/// the nearest integer, where doubles are 2^-52 of it apart).
#[inline(always)]
fn order_decimal_int(text: &[u8], k: i64) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    let (negative, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mut whole: i64 = 0;
    let mut at = 0;
    while let Some(d) = body
        .get(at)
        .map(|b| b.wrapping_sub(b'0'))
        .filter(|&d| d < 10)
    {
        whole = whole * 10 + i64::from(d);
        at += 1;
        if at > 15 {
            return None;
        }
    }
    // A fraction: whether any of its digits is not zero.
    let mut fraction = false;
    match body.get(at) {
        None => {}
        Some(b'.') => {
            at += 1;
            while let Some(&b) = body.get(at) {
                if !b.is_ascii_digit() {
                    return None;
                }
                fraction |= b != b'0';
                at += 1;
            }
            if at > 16 {
                return None;
            }
        }
        Some(_) => return None,
    }
    Some(if !negative {
        // whole + fraction against k.
        match whole.cmp(&k) {
            Ordering::Equal if fraction => Ordering::Greater,
            other => other,
        }
    } else if !fraction {
        (-whole).cmp(&k)
    } else if k >= -whole {
        // Strictly between -whole - 1 and -whole.
        Ordering::Less
    } else {
        Ordering::Greater
    })
}

/// [`compare_number`] through the general parse.
#[inline(never)]
fn compare_number_parsed(op: BinaryOp, text: Option<&[u8]>, k: &Const) -> Truth {
    let constant = match *k {
        Const::Int(i) => Num::Int(i),
        Const::Float(x) => Num::Float(x),
        _ => Num::Null,
    };
    match text.and_then(parse_json_number) {
        Some(n) => comparison_truth(op, compare_numbers(n, constant)),
        None => Truth::Unknown,
    }
}

/// [`compare_raw`] for everything else, through the general coercions.
#[inline(never)]
fn compare_general(op: BinaryOp, raw: Raw, payload: &[u8], arena: &[u8], k: &Const) -> Truth {
    apply_comparison(op, resolve(raw_val(raw, payload), arena), const_scalar(k))
}

/// Whether two byte strings are equal; strings of up to 16 bytes are
/// compared as two overlapping words each rather than by a library call.
#[inline(always)]
fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    fn ends<const N: usize>(s: &[u8]) -> Option<([u8; N], [u8; N])> {
        Some((*s.first_chunk::<N>()?, *s.last_chunk::<N>()?))
    }
    match a.len() {
        0 => true,
        1..=3 => a.first() == b.first() && a.last() == b.last() && a.get(1) == b.get(1),
        4..=8 => ends::<4>(a) == ends::<4>(b),
        9..=16 => ends::<8>(a) == ends::<8>(b),
        _ => a == b,
    }
}

/// `text IN (list)` for a non-empty string `text`, when every item is a
/// string (None otherwise): TRUE when one equals it, else NULL when one is
/// empty (the empty string is NULL), else FALSE.
#[inline]
fn in_strings(text: &[u8], list: &[Const]) -> Option<Truth> {
    let mut acc = Truth::False;
    for item in list {
        let Const::Str(key) = item else { return None };
        if key.is_empty() {
            acc = Truth::Unknown;
        } else if bytes_equal(text, key) {
            return Some(Truth::True);
        }
    }
    Some(acc)
}

/// Calls `f` on each element of an operand (NULL once for a path with no
/// value) and ORs the results, stopping at the first TRUE.
fn any<'x>(
    op: Operand<'x>,
    cap: &'x Captures,
    payload: &'x [u8],
    mut f: impl FnMut(Scalar<'x>) -> Truth,
) -> Truth {
    match op {
        Operand::One(v) => f(resolve(v, &cap.arena)),
        Operand::Path(slot) => {
            if cap.count(slot) == 0 {
                return f(Scalar::Null);
            }
            let mut acc = Truth::False;
            for raw in cap.values(slot) {
                acc = acc.or(f(resolve(raw_val(raw, payload), &cap.arena)));
                if acc == Truth::True {
                    break;
                }
            }
            acc
        }
    }
}

/// The text of a value for string operations; None for NULL and `''`.
fn text_of<'b>(s: Scalar<'b>, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    if s.is_nullish() {
        return None;
    }
    match s {
        Scalar::Str(s) => Some(s),
        other => {
            buf.clear();
            crate::value::write_text(other, buf);
            Some(buf)
        }
    }
}

impl<'a> Eval<'a, '_> {
    fn payload(&self) -> &'a [u8] {
        self.ctx.payload
    }

    fn operand(&mut self, node: &'a Node) -> Operand<'a> {
        match node {
            Node::Path(slot) => Operand::Path(*slot),
            other => Operand::One(self.value(other)),
        }
    }

    fn scalar(&self, v: Val<'a>) -> Scalar<'_> {
        resolve(v, &self.cap.arena)
    }

    /// [`Self::term`], for the filter's early look at a top-level AND.
    pub(crate) fn and_term(&mut self, node: &'a Node) -> Truth {
        self.term(node)
    }

    /// A term of AND or OR: the common simple predicates are evaluated
    /// here, inline in the loop, rather than through a call of the whole
    /// [`Self::truth`].
    #[inline(always)]
    fn term(&mut self, node: &'a Node) -> Truth {
        match node {
            Node::ComparePath { op, slot, value } => self.compare_path(*op, *slot, value),
            Node::InPath {
                slot,
                list,
                negated,
            } => self.in_path(*slot, list, *negated),
            Node::Not(inner) => match &**inner {
                Node::Path(slot) => self.path_truth(*slot).not(),
                other => self.truth(other).not(),
            },
            Node::Path(slot) => self.path_truth(*slot),
            other => self.truth(other),
        }
    }

    /// A path in a boolean position: its first value's truth.
    #[inline]
    fn path_truth(&self, slot: u32) -> Truth {
        match self.cap.first(slot) {
            None | Some(Raw::Null) => Truth::Unknown,
            Some(Raw::True) => Truth::True,
            Some(Raw::False) => Truth::False,
            Some(raw) => resolve(raw_val(raw, self.payload()), &self.cap.arena).truth(),
        }
    }

    /// `path op constant`, TRUE when any value at the path makes it TRUE.
    #[inline]
    fn compare_path(&self, op: BinaryOp, slot: u32, value: &Const) -> Truth {
        let (cap, payload) = (&*self.cap, self.payload());
        let found = cap.slot(slot);
        match found.count {
            // Comparing NULL.
            0 => Truth::Unknown,
            1 => compare_raw(op, &found.first, payload, &cap.arena, value),
            _ => self.compare_path_values(op, slot, value),
        }
    }

    /// [`Self::compare_path`] for a path with several values: apart, so
    /// that the one-value case does not pay for this loop's set-up.
    #[inline(never)]
    fn compare_path_values(&self, op: BinaryOp, slot: u32, value: &Const) -> Truth {
        let (cap, payload) = (&*self.cap, self.payload());
        let mut acc = Truth::False;
        for raw in cap.values(slot) {
            acc = acc.or(compare_raw(op, &raw, payload, &cap.arena, value));
            if acc == Truth::True {
                break;
            }
        }
        acc
    }

    /// `path [NOT] IN (constants)`.
    #[inline]
    fn in_path(&self, slot: u32, list: &[Const], negated: bool) -> Truth {
        let (cap, payload) = (&*self.cap, self.payload());
        let found = cap.slot(slot);
        // The commonest case, one string against a list of strings, with
        // nothing else to set up: what `compare_raw` does for each item.
        if found.count == 1
            && let Raw::Str { start, end } = found.first
            && let Some(text) = payload.get(start..end).filter(|t| !t.is_empty())
            && let Some(acc) = in_strings(text, list)
        {
            return if negated { acc.not() } else { acc };
        }
        let mut acc = Truth::False;
        if found.count == 0 {
            // NULL IN (…): NULL, unless the list is empty.
            if !list.is_empty() {
                acc = Truth::Unknown;
            }
        } else if found.count == 1 {
            for item in list {
                acc = acc.or(compare_raw(
                    BinaryOp::Eq,
                    &found.first,
                    payload,
                    &cap.arena,
                    item,
                ));
                if acc == Truth::True {
                    break;
                }
            }
        } else {
            // TRUE when any (element, item) pair is equal: OR is
            // commutative, so elements can be the outer loop.
            'values: for raw in cap.values(slot) {
                for item in list {
                    acc = acc.or(compare_raw(BinaryOp::Eq, &raw, payload, &cap.arena, item));
                    if acc == Truth::True {
                        break 'values;
                    }
                }
            }
        }
        if negated { acc.not() } else { acc }
    }

    /// The node in a boolean position.
    pub(crate) fn truth(&mut self, node: &'a Node) -> Truth {
        match node {
            Node::Not(inner) => self.truth(inner).not(),
            Node::And(items) => {
                let mut acc = Truth::True;
                for item in items.iter() {
                    match self.term(item) {
                        Truth::False => return Truth::False,
                        Truth::Unknown => acc = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                acc
            }
            Node::Or(items) => {
                let mut acc = Truth::False;
                for item in items.iter() {
                    match self.term(item) {
                        Truth::True => return Truth::True,
                        Truth::Unknown => acc = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                acc
            }
            Node::Compare { op, lhs, rhs } => {
                let l = self.operand(lhs);
                let r = self.operand(rhs);
                let (cap, payload) = (&*self.cap, self.payload());
                any(l, cap, payload, |a| {
                    any(r, cap, payload, |b| apply_comparison(*op, a, b))
                })
            }
            Node::ComparePath { op, slot, value } => self.compare_path(*op, *slot, value),
            Node::InPath {
                slot,
                list,
                negated,
            } => self.in_path(*slot, list, *negated),
            Node::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let x = self.operand(expr);
                let low = self.value(low);
                let high = self.value(high);
                let (cap, payload) = (&*self.cap, self.payload());
                let (low, high) = (resolve(low, &cap.arena), resolve(high, &cap.arena));
                let t = any(x, cap, payload, |e| {
                    apply_comparison(BinaryOp::Ge, e, low).and(apply_comparison(
                        BinaryOp::Le,
                        e,
                        high,
                    ))
                });
                if *negated { t.not() } else { t }
            }
            Node::In {
                expr,
                list,
                negated,
            } => {
                let x = self.operand(expr);
                let mut acc = Truth::False;
                for item in list.iter() {
                    let r = self.operand(item);
                    let (cap, payload) = (&*self.cap, self.payload());
                    acc = acc.or(any(x, cap, payload, |a| {
                        any(r, cap, payload, |b| apply_comparison(BinaryOp::Eq, a, b))
                    }));
                    if acc == Truth::True {
                        break;
                    }
                }
                if *negated { acc.not() } else { acc }
            }
            Node::Like {
                expr,
                regex,
                negated,
            } => {
                let x = self.operand(expr);
                let (cap, payload) = (&*self.cap, self.payload());
                let buf = &mut self.scratch.conv[0];
                let t = any(x, cap, payload, |e| match text_of(e, buf) {
                    Some(text) => Truth::from(regex.is_match(text)),
                    None => Truth::Unknown,
                });
                if *negated { t.not() } else { t }
            }
            Node::Affix {
                expr,
                kind,
                list,
                negated,
            } => {
                let x = self.operand(expr);
                let mut acc = Truth::False;
                for item in list.iter() {
                    let r = self.operand(item);
                    let (cap, payload) = (&*self.cap, self.payload());
                    let [buf_a, buf_b] = &mut self.scratch.conv;
                    acc = acc.or(any(x, cap, payload, |e| {
                        let Some(text) = text_of(e, buf_a) else {
                            return Truth::Unknown;
                        };
                        any(r, cap, payload, |p| match text_of(p, buf_b) {
                            Some(affix) => Truth::from(match kind {
                                AffixKind::Begins => text.starts_with(affix),
                                AffixKind::Ends => text.ends_with(affix),
                            }),
                            None => Truth::Unknown,
                        })
                    }));
                    if acc == Truth::True {
                        break;
                    }
                }
                if *negated { acc.not() } else { acc }
            }
            Node::Is {
                expr,
                test,
                negated,
            } => {
                let x = self.operand(expr);
                let (cap, payload) = (&*self.cap, self.payload());
                let t = match test {
                    // NULL when no element has a value: an absent field, a
                    // JSON null, '' and an empty array are all NULL.
                    IsTest::Null => any(x, cap, payload, |e| Truth::from(!e.is_nullish())).not(),
                    IsTest::Nan => any(x, cap, payload, |e| Truth::from(e.is_nan())),
                };
                if *negated { t.not() } else { t }
            }
            other => {
                let v = self.value(other);
                self.scalar(v).truth()
            }
        }
    }

    /// The node's value (the first element, for a path).
    pub(crate) fn value(&mut self, node: &'a Node) -> Val<'a> {
        match node {
            Node::Const(c) => match c {
                Const::Null => Val::Null,
                Const::Bool(b) => Val::Bool(*b),
                Const::Int(i) => Val::Int(*i),
                Const::Float(x) => Val::Float(*x),
                Const::Str(s) => Val::Str(s),
            },
            Node::Path(slot) => self
                .cap
                .first(*slot)
                .map_or(Val::Null, |raw| raw_val(raw, self.payload())),
            Node::Arith { op, lhs, rhs } => {
                let l = self.value(lhs);
                let r = self.value(rhs);
                arithmetic(*op, self.scalar(l), self.scalar(r)).into()
            }
            Node::Neg(inner) => {
                let v = self.value(inner);
                negate(self.scalar(v)).into()
            }
            Node::Plus(inner) => {
                let v = self.value(inner);
                self.scalar(v).to_number().into()
            }
            Node::Call { function, args } => self.call(*function, args),
            predicate => self.truth(predicate).into(),
        }
    }

    fn call(&mut self, function: Function, args: &'a [Node]) -> Val<'a> {
        match function {
            Function::If => {
                let [cond, then, otherwise] = args else {
                    return Val::Null;
                };
                if self.truth(cond) == Truth::True {
                    self.value(then)
                } else {
                    self.value(otherwise)
                }
            }
            Function::Coalesce => {
                for arg in args {
                    let v = self.value(arg);
                    if !self.scalar(v).is_nullish() {
                        return v;
                    }
                }
                Val::Null
            }
            Function::Greatest | Function::Least => {
                let mut best = None;
                for arg in args {
                    let v = self.value(arg);
                    let s = self.scalar(v);
                    if matches!(s, Scalar::Null) {
                        return Val::Null;
                    }
                    let better = match best {
                        None => true,
                        Some(b) => {
                            functions::extreme_step(self.scalar(b), s, function == Function::Least)
                        }
                    };
                    if better {
                        best = Some(v);
                    }
                }
                best.unwrap_or(Val::Null)
            }
            Function::Concat => {
                let mark = self.scratch.out.len();
                for arg in args {
                    let v = self.value(arg);
                    let s = resolve(v, &self.cap.arena);
                    let fits = functions::concat_step(s, &mut self.scratch.out)
                        && self.scratch.out.len() - mark <= functions::MAX_BUILT_STRING_BYTES;
                    if !fits {
                        self.scratch.out.truncate(mark);
                        return Val::Null;
                    }
                }
                self.take_out(mark)
            }
            Function::TopicName => Val::Str(self.ctx.topic.as_bytes()),
            Function::MessageSize => {
                Val::Int(i64::try_from(self.ctx.message_size).unwrap_or(i64::MAX))
            }
            Function::UnixTimestamp => self.ctx.unix_timestamp.map_or(Val::Null, Val::Float),
            _ => self.call_fixed(function, args),
        }
    }

    fn call_fixed(&mut self, function: Function, args: &'a [Node]) -> Val<'a> {
        let mut vals = [Val::Null; 3];
        for (slot, arg) in vals.iter_mut().zip(args) {
            *slot = self.value(arg);
        }
        let vals = vals.get(..args.len().min(3)).unwrap_or(&[]);
        let mark = self.scratch.out.len();
        let arena = &self.cap.arena;
        let mut scalars = [Scalar::Null; 3];
        for (s, v) in scalars.iter_mut().zip(vals) {
            *s = resolve(*v, arena);
        }
        let scalars = scalars.get(..vals.len()).unwrap_or(&[]);
        let result = functions::call(
            function,
            scalars,
            &mut self.scratch.out,
            &mut self.scratch.texts,
        );
        match result {
            FnOut::Num(n) => n.into(),
            FnOut::Bool(b) => Val::Bool(b),
            FnOut::Slice { arg, start, end } => match vals.get(arg) {
                Some(Val::Str(s)) => Val::Str(s.get(start..end).unwrap_or(&[])),
                Some(Val::Arena(from, _)) => Val::Arena(from + start, from + end),
                _ => Val::Null,
            },
            FnOut::Out => self.take_out(mark),
        }
    }

    /// Moves the bytes written to the output stack since `mark` to the arena.
    fn take_out(&mut self, mark: usize) -> Val<'a> {
        let start = self.cap.arena.len();
        self.cap
            .arena
            .extend_from_slice(self.scratch.out.get(mark..).unwrap_or(&[]));
        self.scratch.out.truncate(mark);
        Val::Arena(start, self.cap.arena.len())
    }
}

/// Copies a value out of the evaluation.
pub(crate) fn to_value(v: Val<'_>, cap: &Captures) -> crate::value::Value {
    resolve(v, &cap.arena).to_value()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{BinaryOp, Const, compare_number, compare_number_parsed};

    /// JSON number text without an exponent, with few or many digits, and
    /// fractions that are zero, tiny or close to the next integer.
    fn decimal_text() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop_oneof![
                Just("0".to_owned()),
                "[1-9][0-9]{0,3}",
                "[1-9][0-9]{10,17}",
                Just("999999999999999".to_owned()),
            ],
            prop_oneof![
                Just(String::new()),
                "\\.[0-9]{1,4}",
                "\\.0{1,14}[1-9]?",
                "\\.9{1,16}",
            ],
        )
            .prop_map(|(negative, whole, fraction)| {
                format!("{}{whole}{fraction}", if negative { "-" } else { "" })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Comparing number text with an integer constant without parsing
        /// it gives what the parsed comparison gives, for every operator.
        #[test]
        fn decimal_against_integer_agrees_with_the_parse(
            text in decimal_text(),
            k in prop_oneof![-1000i64..1000, any::<i64>(), Just(999_999_999_999_999), Just(-1_000_000_000_000_000)],
            near in any::<bool>(),
        ) {
            // Constants next to the number's own integer part, where the
            // fraction decides.
            let k = if near {
                text.split('.').next().and_then(|w| w.parse::<i64>().ok()).map_or(k, |w| w + k.rem_euclid(3) - 1)
            } else {
                k
            };
            for op in [BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge] {
                let fast = compare_number(op, Some(text.as_bytes()), &Const::Int(k));
                let parsed = compare_number_parsed(op, Some(text.as_bytes()), &Const::Int(k));
                prop_assert_eq!(fast, parsed, "{} {:?} {}", text, op, k);
            }
        }
    }
}
