//! The syntax tree a filter parses into.
//!
//! The tree is what the parser produces, what the printer prints, what the
//! compiler turns into an evaluation plan and what the reference interpreter
//! walks. It keeps the shape of the text (no folding, no reordering), so that
//! printing a parsed tree and parsing it again gives the same tree.

use crate::functions::Function;

/// One expression node.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Literal),
    /// A field of the message.
    Path(Path),
    /// `NOT x`, `-x`, `+x`.
    Unary {
        /// Which operator.
        op: UnaryOp,
        /// Its operand.
        expr: Box<Expr>,
    },
    /// Arithmetic and comparison operators.
    Binary {
        /// Which operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `a AND b AND c`: one node per chain written without parentheses.
    And(Vec<Expr>),
    /// `a OR b OR c`: one node per chain written without parentheses.
    Or(Vec<Expr>),
    /// `x [NOT] BETWEEN low AND high`.
    Between {
        /// Tested value.
        expr: Box<Expr>,
        /// Inclusive lower bound.
        low: Box<Expr>,
        /// Inclusive upper bound.
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `x [NOT] IN (a, b, …)`.
    In {
        /// Tested value.
        expr: Box<Expr>,
        /// The candidates.
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `x [NOT] LIKE 'regex'`.
    Like {
        /// Tested value.
        expr: Box<Expr>,
        /// The pattern, exactly as written (after unescaping the literal).
        pattern: Vec<u8>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `x [NOT] BEGINS WITH (a, …)` and `x [NOT] ENDS WITH (a, …)`.
    Affix {
        /// Tested value.
        expr: Box<Expr>,
        /// Prefix or suffix.
        kind: AffixKind,
        /// The candidate prefixes or suffixes.
        list: Vec<Expr>,
        /// `NOT BEGINS WITH` / `NOT ENDS WITH`.
        negated: bool,
    },
    /// `x IS [NOT] NULL` and `x IS [NOT] NAN`.
    Is {
        /// Tested value.
        expr: Box<Expr>,
        /// NULL or NaN.
        test: IsTest,
        /// `IS NOT`.
        negated: bool,
    },
    /// A built-in function call, including `IF(c, a, b)`.
    Call {
        /// Which function.
        function: Function,
        /// Its arguments, already checked against the function's arity.
        args: Vec<Expr>,
    },
}

/// A constant written in the filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `NULL`.
    Null,
    /// `TRUE` / `FALSE`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A decimal, an exponent form, or an integer too large for 64 bits.
    Float(f64),
    /// A quoted string, unescaped. Strings are bytes, as in AMPS.
    Str(Vec<u8>),
}

/// A path into the message: `/a/b[0]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    /// The steps from the document root; never empty, never starts with an index.
    pub steps: Vec<Step>,
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// A member of an object (or of each object in an array).
    Field(String),
    /// The element at this 0-based position of an array.
    Index(u32),
}

/// Prefix operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// Logical `NOT`.
    Not,
    /// Arithmetic negation.
    Neg,
    /// Arithmetic `+x`: converts to a number.
    Plus,
}

/// Infix operators other than AND/OR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%` or `MOD`
    Mod,
    /// `=` or `==`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl BinaryOp {
    /// Whether the operator compares (as opposed to computing a number).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Ne | Self::Lt | Self::Le | Self::Gt | Self::Ge
        )
    }

    /// The operator's canonical spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Mod => "%",
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// `BEGINS WITH` or `ENDS WITH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffixKind {
    /// `BEGINS WITH`
    Begins,
    /// `ENDS WITH`
    Ends,
}

/// What `IS` tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsTest {
    /// `IS NULL`
    Null,
    /// `IS NAN`
    Nan,
}

impl Expr {
    /// Calls `f` on every path the expression reads, in text order.
    pub fn for_each_path<'e>(&'e self, f: &mut impl FnMut(&'e Path)) {
        match self {
            Expr::Literal(_) => {}
            Expr::Path(path) => f(path),
            Expr::Unary { expr, .. } | Expr::Like { expr, .. } | Expr::Is { expr, .. } => {
                expr.for_each_path(f)
            }
            Expr::Binary { lhs, rhs, .. } => {
                lhs.for_each_path(f);
                rhs.for_each_path(f);
            }
            Expr::And(items) | Expr::Or(items) | Expr::Call { args: items, .. } => {
                items.iter().for_each(|item| item.for_each_path(f));
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.for_each_path(f);
                low.for_each_path(f);
                high.for_each_path(f);
            }
            Expr::In { expr, list, .. } | Expr::Affix { expr, list, .. } => {
                expr.for_each_path(f);
                list.iter().for_each(|item| item.for_each_path(f));
            }
        }
    }

    /// Whether every function the expression calls gives the same result for
    /// the same message every time.
    pub fn is_deterministic(&self) -> bool {
        match self {
            Expr::Literal(_) | Expr::Path(_) => true,
            Expr::Unary { expr, .. } | Expr::Like { expr, .. } | Expr::Is { expr, .. } => {
                expr.is_deterministic()
            }
            Expr::Binary { lhs, rhs, .. } => lhs.is_deterministic() && rhs.is_deterministic(),
            Expr::And(items) | Expr::Or(items) => items.iter().all(Expr::is_deterministic),
            Expr::Call { function, args } => {
                function.is_deterministic() && args.iter().all(Expr::is_deterministic)
            }
            Expr::Between {
                expr, low, high, ..
            } => expr.is_deterministic() && low.is_deterministic() && high.is_deterministic(),
            Expr::In { expr, list, .. } | Expr::Affix { expr, list, .. } => {
                expr.is_deterministic() && list.iter().all(Expr::is_deterministic)
            }
        }
    }
}
