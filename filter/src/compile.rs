//! Turns a syntax tree into an evaluation plan: paths become slots of one
//! shared scan, literals become ready values, `LIKE` patterns become compiled
//! regexes. Nothing is reordered or folded, so the plan computes exactly what
//! the tree says.

use std::collections::HashMap;

use regex::bytes::Regex;

use crate::ast::{AffixKind, BinaryOp, Expr, IsTest, Literal, UnaryOp};
use crate::error::ParseErrorKind;
use crate::functions::Function;
use crate::scan::PathSet;

/// A constant in the plan.
#[derive(Clone, Debug)]
pub(crate) enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<[u8]>),
}

/// One node of the plan.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Const(Const),
    /// The values found at a path, by slot.
    Path(u32),
    Not(Box<Node>),
    Neg(Box<Node>),
    Plus(Box<Node>),
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Compare {
        op: BinaryOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    /// `path op constant`, or `constant op path` with the operator mirrored:
    /// the commonest predicate, evaluated without the general operand
    /// machinery.
    ComparePath {
        op: BinaryOp,
        slot: u32,
        value: Const,
    },
    /// `path [NOT] IN (constant, …)`.
    InPath {
        slot: u32,
        list: Box<[Const]>,
        negated: bool,
    },
    Arith {
        op: BinaryOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    Between {
        expr: Box<Node>,
        low: Box<Node>,
        high: Box<Node>,
        negated: bool,
    },
    In {
        expr: Box<Node>,
        list: Box<[Node]>,
        negated: bool,
    },
    Like {
        expr: Box<Node>,
        regex: Regex,
        negated: bool,
    },
    Affix {
        expr: Box<Node>,
        kind: AffixKind,
        list: Box<[Node]>,
        negated: bool,
    },
    Is {
        expr: Box<Node>,
        test: IsTest,
        negated: bool,
    },
    Call {
        function: Function,
        args: Box<[Node]>,
    },
}

pub(crate) struct Compiler<'r> {
    pub(crate) paths: PathSet,
    pub(crate) regexes: &'r mut HashMap<Vec<u8>, Regex>,
    pub(crate) regex_size_limit: usize,
}

impl Compiler<'_> {
    pub(crate) fn compile(&mut self, expr: &Expr) -> Result<Node, ParseErrorKind> {
        Ok(match expr {
            Expr::Literal(literal) => Node::Const(match literal {
                Literal::Null => Const::Null,
                Literal::Bool(b) => Const::Bool(*b),
                Literal::Int(i) => Const::Int(*i),
                Literal::Float(x) => Const::Float(*x),
                Literal::Str(s) => Const::Str(s.as_slice().into()),
            }),
            Expr::Path(path) => Node::Path(self.paths.insert(path)),
            Expr::Unary { op, expr } => {
                let inner = Box::new(self.compile(expr)?);
                match op {
                    UnaryOp::Not => Node::Not(inner),
                    UnaryOp::Neg => Node::Neg(inner),
                    UnaryOp::Plus => Node::Plus(inner),
                }
            }
            Expr::Binary { op, lhs, rhs } => {
                let lhs = Box::new(self.compile(lhs)?);
                let rhs = Box::new(self.compile(rhs)?);
                if op.is_comparison() {
                    match (&*lhs, &*rhs) {
                        (Node::Path(slot), Node::Const(value)) => Node::ComparePath {
                            op: *op,
                            slot: *slot,
                            value: value.clone(),
                        },
                        (Node::Const(value), Node::Path(slot)) => Node::ComparePath {
                            op: mirror(*op),
                            slot: *slot,
                            value: value.clone(),
                        },
                        _ => Node::Compare { op: *op, lhs, rhs },
                    }
                } else {
                    Node::Arith { op: *op, lhs, rhs }
                }
            }
            Expr::And(items) => Node::And(self.compile_list(items)?),
            Expr::Or(items) => Node::Or(self.compile_list(items)?),
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => Node::Between {
                expr: Box::new(self.compile(expr)?),
                low: Box::new(self.compile(low)?),
                high: Box::new(self.compile(high)?),
                negated: *negated,
            },
            Expr::In {
                expr,
                list,
                negated,
            } => {
                let expr = self.compile(expr)?;
                let list = self.compile_list(list)?;
                let constants: Option<Box<[Const]>> = list
                    .iter()
                    .map(|item| match item {
                        Node::Const(c) => Some(c.clone()),
                        _ => None,
                    })
                    .collect();
                match (expr, constants) {
                    (Node::Path(slot), Some(list)) => Node::InPath {
                        slot,
                        list,
                        negated: *negated,
                    },
                    (expr, _) => Node::In {
                        expr: Box::new(expr),
                        list,
                        negated: *negated,
                    },
                }
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => {
                let regex = match self.regexes.get(pattern) {
                    Some(regex) => regex.clone(),
                    None => {
                        let regex = crate::parser::compile_regex(pattern, self.regex_size_limit)?;
                        self.regexes.insert(pattern.clone(), regex.clone());
                        regex
                    }
                };
                Node::Like {
                    expr: Box::new(self.compile(expr)?),
                    regex,
                    negated: *negated,
                }
            }
            Expr::Affix {
                expr,
                kind,
                list,
                negated,
            } => Node::Affix {
                expr: Box::new(self.compile(expr)?),
                kind: *kind,
                list: self.compile_list(list)?,
                negated: *negated,
            },
            Expr::Is {
                expr,
                test,
                negated,
            } => Node::Is {
                expr: Box::new(self.compile(expr)?),
                test: *test,
                negated: *negated,
            },
            Expr::Call { function, args } => Node::Call {
                function: *function,
                args: self.compile_list(args)?,
            },
        })
    }

    fn compile_list(&mut self, items: &[Expr]) -> Result<Box<[Node]>, ParseErrorKind> {
        items.iter().map(|item| self.compile(item)).collect()
    }
}

/// The operator that gives the same answer with its operands swapped
/// (`a < b` is `b > a`): comparisons are antisymmetric, NULL and NaN
/// included.
fn mirror(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Le => BinaryOp::Ge,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Ge => BinaryOp::Le,
        other => other,
    }
}

/// The slots `node` reads, as a bit mask; all ones when it reads a slot
/// numbered 64 or more (which a mask cannot name).
pub(crate) fn slot_mask(node: &Node) -> u64 {
    let mut mask = 0_u64;
    for_each_slot(node, &mut |slot| {
        mask |= 1_u64.checked_shl(slot).unwrap_or(u64::MAX);
    });
    mask
}

fn for_each_slot(node: &Node, f: &mut dyn FnMut(u32)) {
    match node {
        Node::Const(_) => {}
        Node::Path(slot) | Node::ComparePath { slot, .. } | Node::InPath { slot, .. } => f(*slot),
        Node::Not(inner) | Node::Neg(inner) | Node::Plus(inner) => for_each_slot(inner, f),
        Node::And(items) | Node::Or(items) | Node::Call { args: items, .. } => {
            for item in items.iter() {
                for_each_slot(item, f);
            }
        }
        Node::Compare { lhs, rhs, .. } | Node::Arith { lhs, rhs, .. } => {
            for_each_slot(lhs, f);
            for_each_slot(rhs, f);
        }
        Node::Between {
            expr, low, high, ..
        } => {
            for_each_slot(expr, f);
            for_each_slot(low, f);
            for_each_slot(high, f);
        }
        Node::In { expr, list, .. } | Node::Affix { expr, list, .. } => {
            for_each_slot(expr, f);
            for item in list.iter() {
                for_each_slot(item, f);
            }
        }
        Node::Like { expr, .. } | Node::Is { expr, .. } => for_each_slot(expr, f),
    }
}
