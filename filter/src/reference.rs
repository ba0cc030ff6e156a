//! A reference interpreter over `serde_json::Value`, written to be obviously
//! right rather than fast: it parses the whole document, walks the syntax
//! tree directly, and collects every value of a path into a `Vec`.
//!
//! It shares with the compiled path only the scalar rules of
//! [`crate::value`] and the function bodies of [`crate::functions`] (which
//! the table tests pin down). Everything else (finding values in the
//! document, array semantics, NULL handling, three-valued logic, short
//! circuits) is written again here, so the property tests and the fuzzer
//! compare two independent implementations of it.

use std::ops::Not as _;

use serde_json::Value as Json;

use crate::ast::{AffixKind, BinaryOp, Expr, IsTest, Literal, Path, Step, UnaryOp};
use crate::context::MessageContext;
use crate::functions::{self, FnOut, Function, TextBuffers};
use crate::value::{Num, Scalar, Truth, Value, apply_comparison, arithmetic, negate};

/// Evaluates `expr` against the message, parsing the payload with
/// serde_json. A payload serde_json rejects gives NULL for every field.
pub fn evaluate(expr: &Expr, ctx: &MessageContext<'_>) -> Value {
    let doc: Option<Json> = serde_json::from_slice(ctx.payload).ok();
    evaluate_document(expr, doc.as_ref(), ctx)
}

/// Evaluates `expr` against an already parsed document (None: every field
/// is NULL). `ctx.payload` is not read.
pub fn evaluate_document(expr: &Expr, doc: Option<&Json>, ctx: &MessageContext<'_>) -> Value {
    Interpreter { doc, ctx }.value(expr)
}

/// The values at `path` in `doc`, in document order.
pub fn path_values(doc: &Json, path: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    collect(doc, &path.steps, &mut out);
    out
}

/// Follows `steps` from `value`. A field step on an array applies to each
/// element (arrays in arrays too); an index step picks one element of an
/// array and finds nothing in anything else.
fn collect(value: &Json, steps: &[Step], out: &mut Vec<Value>) {
    let Some((step, rest)) = steps.split_first() else {
        leaf(value, out);
        return;
    };
    match (step, value) {
        (Step::Field(name), Json::Object(members)) => {
            if let Some(member) = members.get(name) {
                collect(member, rest, out);
            }
        }
        (Step::Field(_), Json::Array(items)) => {
            for item in items {
                collect(item, steps, out);
            }
        }
        (Step::Index(i), Json::Array(items)) => {
            if let Some(item) = items.get(*i as usize) {
                collect(item, rest, out);
            }
        }
        _ => {}
    }
}

/// The values a path's final value contributes: itself if scalar, each
/// element (recursively) if an array, nothing if an object.
fn leaf(value: &Json, out: &mut Vec<Value>) {
    match value {
        Json::Null => out.push(Value::Null),
        Json::Bool(b) => out.push(Value::Bool(*b)),
        Json::Number(n) => out.push(match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Json::String(s) => out.push(Value::Str(s.as_bytes().to_vec())),
        Json::Array(items) => items.iter().for_each(|item| leaf(item, out)),
        Json::Object(_) => {}
    }
}

struct Interpreter<'a> {
    doc: Option<&'a Json>,
    ctx: &'a MessageContext<'a>,
}

fn any(values: &[Value], mut f: impl FnMut(&Value) -> Truth) -> Truth {
    values.iter().fold(Truth::False, |acc, v| acc.or(f(v)))
}

fn text(v: &Value) -> Option<Vec<u8>> {
    if v.as_scalar().is_nullish() {
        return None;
    }
    let mut out = Vec::new();
    crate::value::write_text(v.as_scalar(), &mut out);
    Some(out)
}

fn from_num(n: Num) -> Value {
    Scalar::from(n).to_value()
}

impl Interpreter<'_> {
    /// Every value of an operand of an any-element predicate: all of a
    /// path's values (NULL if none), or the single value of anything else.
    fn elements(&self, expr: &Expr) -> Vec<Value> {
        match expr {
            Expr::Path(path) => {
                let values = self.doc.map(|d| path_values(d, path)).unwrap_or_default();
                if values.is_empty() {
                    vec![Value::Null]
                } else {
                    values
                }
            }
            other => vec![self.value(other)],
        }
    }

    fn truth(&self, expr: &Expr) -> Truth {
        self.value(expr).truth()
    }

    fn value(&self, expr: &Expr) -> Value {
        match expr {
            Expr::Literal(literal) => match literal {
                Literal::Null => Value::Null,
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Int(i) => Value::Int(*i),
                Literal::Float(x) => Value::Float(*x),
                Literal::Str(s) => Value::Str(s.clone()),
            },
            Expr::Path(_) => self.elements(expr).swap_remove(0),
            Expr::Unary { op, expr } => {
                let v = self.value(expr);
                match op {
                    UnaryOp::Not => v.truth().not().to_value(),
                    UnaryOp::Neg => from_num(negate(v.as_scalar())),
                    UnaryOp::Plus => from_num(v.as_scalar().to_number()),
                }
            }
            Expr::Binary { op, lhs, rhs } if op.is_comparison() => {
                let (ls, rs) = (self.elements(lhs), self.elements(rhs));
                any(&ls, |l| {
                    any(&rs, |r| apply_comparison(*op, l.as_scalar(), r.as_scalar()))
                })
                .to_value()
            }
            Expr::Binary { op, lhs, rhs } => {
                let (l, r) = (self.value(lhs), self.value(rhs));
                from_num(arithmetic(*op, l.as_scalar(), r.as_scalar()))
            }
            Expr::And(items) => items
                .iter()
                .fold(Truth::True, |acc, item| acc.and(self.truth(item)))
                .to_value(),
            Expr::Or(items) => items
                .iter()
                .fold(Truth::False, |acc, item| acc.or(self.truth(item)))
                .to_value(),
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let (low, high) = (self.value(low), self.value(high));
                let t = any(&self.elements(expr), |e| {
                    let above = apply_comparison(BinaryOp::Ge, e.as_scalar(), low.as_scalar());
                    let below = apply_comparison(BinaryOp::Le, e.as_scalar(), high.as_scalar());
                    above.and(below)
                });
                negate_if(t, *negated).to_value()
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let xs = self.elements(expr);
                let t = list.iter().fold(Truth::False, |acc, item| {
                    let candidates = self.elements(item);
                    acc.or(any(&xs, |x| {
                        any(&candidates, |c| {
                            apply_comparison(BinaryOp::Eq, x.as_scalar(), c.as_scalar())
                        })
                    }))
                });
                negate_if(t, *negated).to_value()
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => {
                let Ok(regex) = crate::parser::compile_regex(pattern, usize::MAX >> 1) else {
                    return Value::Null;
                };
                let t = any(&self.elements(expr), |e| match text(e) {
                    Some(s) => Truth::from(regex.is_match(&s)),
                    None => Truth::Unknown,
                });
                negate_if(t, *negated).to_value()
            }
            Expr::Affix {
                expr,
                kind,
                list,
                negated,
            } => {
                let xs = self.elements(expr);
                let t = list.iter().fold(Truth::False, |acc, item| {
                    let affixes = self.elements(item);
                    acc.or(any(&xs, |x| {
                        any(&affixes, |a| match (text(x), text(a)) {
                            (Some(x), Some(a)) => Truth::from(match kind {
                                AffixKind::Begins => x.starts_with(&a),
                                AffixKind::Ends => x.ends_with(&a),
                            }),
                            _ => Truth::Unknown,
                        })
                    }))
                });
                negate_if(t, *negated).to_value()
            }
            Expr::Is {
                expr,
                test,
                negated,
            } => {
                let xs = self.elements(expr);
                let t = match test {
                    IsTest::Null => Truth::from(xs.iter().all(|x| x.as_scalar().is_nullish())),
                    IsTest::Nan => Truth::from(xs.iter().any(|x| x.as_scalar().is_nan())),
                };
                negate_if(t, *negated).to_value()
            }
            Expr::Call { function, args } => self.call(*function, args),
        }
    }

    fn call(&self, function: Function, args: &[Expr]) -> Value {
        match function {
            Function::If => match args {
                [cond, then, otherwise] => {
                    if self.truth(cond) == Truth::True {
                        self.value(then)
                    } else {
                        self.value(otherwise)
                    }
                }
                _ => Value::Null,
            },
            Function::Coalesce => args
                .iter()
                .map(|a| self.value(a))
                .find(|v| !v.as_scalar().is_nullish())
                .unwrap_or(Value::Null),
            Function::Greatest | Function::Least => {
                let values: Vec<Value> = args.iter().map(|a| self.value(a)).collect();
                if values.contains(&Value::Null) {
                    return Value::Null;
                }
                let mut best: Option<&Value> = None;
                for v in &values {
                    let replace = best.is_none_or(|b| {
                        functions::extreme_step(
                            b.as_scalar(),
                            v.as_scalar(),
                            function == Function::Least,
                        )
                    });
                    if replace {
                        best = Some(v);
                    }
                }
                best.cloned().unwrap_or(Value::Null)
            }
            Function::Concat => {
                let mut out = Vec::new();
                for arg in args {
                    let written = crate::value::write_text(self.value(arg).as_scalar(), &mut out);
                    if !written || out.len() > functions::MAX_BUILT_STRING_BYTES {
                        return Value::Null;
                    }
                }
                Value::Str(out)
            }
            Function::TopicName => Value::Str(self.ctx.topic.as_bytes().to_vec()),
            Function::MessageSize => {
                Value::Int(i64::try_from(self.ctx.message_size).unwrap_or(i64::MAX))
            }
            Function::UnixTimestamp => self.ctx.unix_timestamp.map_or(Value::Null, Value::Float),
            _ => {
                let values: Vec<Value> = args.iter().map(|a| self.value(a)).collect();
                let scalars: Vec<Scalar<'_>> = values.iter().map(Value::as_scalar).collect();
                let mut out = Vec::new();
                match functions::call(function, &scalars, &mut out, &mut TextBuffers::default()) {
                    FnOut::Num(n) => from_num(n),
                    FnOut::Bool(b) => Value::Bool(b),
                    FnOut::Slice { arg, start, end } => match values.get(arg) {
                        Some(Value::Str(s)) => {
                            Value::Str(s.get(start..end).unwrap_or(&[]).to_vec())
                        }
                        _ => Value::Null,
                    },
                    FnOut::Out => Value::Str(out),
                }
            }
        }
    }
}

fn negate_if(t: Truth, negated: bool) -> Truth {
    if negated { t.not() } else { t }
}
