//! Prints a syntax tree back as filter text that parses to the same tree.
//!
//! Parentheses are added only where precedence needs them, and around a
//! nested AND inside an AND (or OR inside OR), which the parser keeps as its
//! own node when the text has parentheses there.

use std::fmt::{self, Write as _};

use crate::ast::{AffixKind, BinaryOp, Expr, IsTest, Literal, Path, Step, UnaryOp};
use crate::lexer::is_name_byte;

const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const PREDICATE: u8 = 4;
const ADDITIVE: u8 = 5;
const MULTIPLICATIVE: u8 = 6;
const UNARY: u8 = 7;
const PRIMARY: u8 = 8;

fn precedence(expr: &Expr) -> u8 {
    match expr {
        Expr::Or(_) => OR,
        Expr::And(_) => AND,
        Expr::Unary {
            op: UnaryOp::Not, ..
        } => NOT,
        Expr::Unary { .. } => UNARY,
        Expr::Binary { op, .. } => match op {
            BinaryOp::Add | BinaryOp::Sub => ADDITIVE,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => MULTIPLICATIVE,
            _ => PREDICATE,
        },
        Expr::Between { .. }
        | Expr::In { .. }
        | Expr::Like { .. }
        | Expr::Affix { .. }
        | Expr::Is { .. } => PREDICATE,
        Expr::Literal(_) | Expr::Path(_) | Expr::Call { .. } => PRIMARY,
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            match step {
                Step::Field(name) if !name.is_empty() && name.bytes().all(is_name_byte) => {
                    write!(f, "/{name}")?;
                }
                Step::Field(name) => write!(f, "[/{name}]")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

fn write_expr(f: &mut fmt::Formatter<'_>, expr: &Expr, min: u8) -> fmt::Result {
    let parens = precedence(expr) < min;
    if parens {
        f.write_char('(')?;
    }
    match expr {
        Expr::Literal(literal) => write_literal(f, literal)?,
        Expr::Path(path) => write!(f, "{path}")?,
        Expr::Unary {
            op: UnaryOp::Not,
            expr,
        } => {
            f.write_str("NOT ")?;
            write_expr(f, expr, NOT)?;
        }
        Expr::Unary { op, expr } => {
            f.write_char(if *op == UnaryOp::Neg { '-' } else { '+' })?;
            match &**expr {
                // `-(5)`: written `-5` it would read back as the literal -5.
                Expr::Literal(Literal::Int(_) | Literal::Float(_)) => {
                    f.write_char('(')?;
                    write_expr(f, expr, 0)?;
                    f.write_char(')')?;
                }
                Expr::Unary {
                    op: UnaryOp::Neg | UnaryOp::Plus,
                    ..
                } => {
                    f.write_char(' ')?;
                    write_expr(f, expr, UNARY)?;
                }
                _ => write_expr(f, expr, UNARY)?,
            }
        }
        Expr::Binary { op, lhs, rhs } => {
            let level = precedence(expr);
            write_expr(f, lhs, level)?;
            write!(f, " {} ", op.symbol())?;
            write_expr(f, rhs, level + 1)?;
        }
        Expr::And(items) => write_items(f, items, " AND ", AND + 1)?,
        Expr::Or(items) => write_items(f, items, " OR ", OR + 1)?,
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            write_expr(f, expr, PREDICATE)?;
            f.write_str(if *negated {
                " NOT BETWEEN "
            } else {
                " BETWEEN "
            })?;
            write_expr(f, low, ADDITIVE)?;
            f.write_str(" AND ")?;
            write_expr(f, high, ADDITIVE)?;
        }
        Expr::In {
            expr,
            list,
            negated,
        } => {
            write_expr(f, expr, PREDICATE)?;
            f.write_str(if *negated { " NOT IN (" } else { " IN (" })?;
            write_items(f, list, ", ", 0)?;
            f.write_char(')')?;
        }
        Expr::Like {
            expr,
            pattern,
            negated,
        } => {
            write_expr(f, expr, PREDICATE)?;
            f.write_str(if *negated { " NOT LIKE " } else { " LIKE " })?;
            write_string(f, pattern)?;
        }
        Expr::Affix {
            expr,
            kind,
            list,
            negated,
        } => {
            write_expr(f, expr, PREDICATE)?;
            f.write_str(if *negated { " NOT" } else { "" })?;
            f.write_str(match kind {
                AffixKind::Begins => " BEGINS WITH (",
                AffixKind::Ends => " ENDS WITH (",
            })?;
            write_items(f, list, ", ", 0)?;
            f.write_char(')')?;
        }
        Expr::Is {
            expr,
            test,
            negated,
        } => {
            write_expr(f, expr, PREDICATE)?;
            f.write_str(if *negated { " IS NOT " } else { " IS " })?;
            f.write_str(match test {
                IsTest::Null => "NULL",
                IsTest::Nan => "NAN",
            })?;
        }
        Expr::Call { function, args } => {
            write!(f, "{}(", function.name())?;
            write_items(f, args, ", ", 0)?;
            f.write_char(')')?;
        }
    }
    if parens {
        f.write_char(')')?;
    }
    Ok(())
}

fn write_items(
    f: &mut fmt::Formatter<'_>,
    items: &[Expr],
    separator: &str,
    min: u8,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write_expr(f, item, min)?;
    }
    Ok(())
}

fn write_literal(f: &mut fmt::Formatter<'_>, literal: &Literal) -> fmt::Result {
    match literal {
        Literal::Null => f.write_str("NULL"),
        Literal::Bool(true) => f.write_str("TRUE"),
        Literal::Bool(false) => f.write_str("FALSE"),
        Literal::Int(i) => write!(f, "{i}"),
        Literal::Float(x) => write_float(f, *x),
        Literal::Str(s) => write_string(f, s),
    }
}

/// Writes a double so that it reads back as the same double (and as a double,
/// never an integer).
pub(crate) fn write_float(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    if x.is_infinite() {
        // No literal is infinite, but 1e999 overflows to it.
        f.write_str(if x > 0.0 { "1e999" } else { "-1e999" })
    } else {
        // `{:?}` is the shortest round-trip form and always has `.` or `e`
        // (or is NaN, which no literal can produce).
        write!(f, "{x:?}")
    }
}

/// Writes a string literal in single quotes, escaping what would not read back.
pub(crate) fn write_string(f: &mut fmt::Formatter<'_>, s: &[u8]) -> fmt::Result {
    f.write_char('\'')?;
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\'' => f.write_str("\\'")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
                c => f.write_char(c)?,
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    f.write_char('\'')
}
