//! The public face of one compiled filter: parse once, evaluate many times.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use crate::ast::{Expr, Path};
use crate::compile::{Compiler, Node, slot_mask};
use crate::context::MessageContext;
use crate::error::{ParseError, ParseErrorKind};
use crate::eval::{Eval, EvalScratch, to_value};
use crate::parser::{self, Limits};
use crate::scan::{Captures, PathSet, ScanEnd, Verdict};
use crate::value::{Truth, Value};

/// A parsed and compiled filter. Cheap to clone (the plan is shared), and
/// `Send + Sync`: evaluation state lives in a [`Scratch`].
#[derive(Clone)]
pub struct Filter {
    inner: Arc<Inner>,
}

struct Inner {
    text: String,
    expr: Expr,
    root: Node,
    paths: PathSet,
    deterministic: bool,
    /// When the root is an AND whose first term reads fields (all numbered
    /// below 64): those slots, as a bit mask (see [`slot_mask`]), so that the
    /// term can be evaluated as soon as the scan has completed them.
    first_slots: Option<u64>,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("text", &self.inner.text)
            .finish()
    }
}

impl fmt::Display for Filter {
    /// The filter in canonical form, which parses back to the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.expr, f)
    }
}

/// Reusable evaluation state. Keep one per thread (or per index) and pass it
/// to [`Filter::matches_with`]: after the first few messages its buffers fit
/// and evaluation allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) captures: Captures,
    eval: EvalScratch,
}

impl Scratch {
    /// Empty scratch space.
    pub fn new() -> Self {
        Scratch::default()
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

impl Filter {
    /// Parses and compiles `text`, refusing it with a positioned error when
    /// it is malformed or exceeds `limits`.
    pub fn parse(text: &str, limits: &Limits) -> Result<Filter, ParseError> {
        let mut parsed = parser::parse(text, limits)?;
        let mut compiler = Compiler {
            paths: PathSet::default(),
            regexes: &mut parsed.regexes,
            regex_size_limit: limits.max_regex_bytes,
        };
        let root = compiler
            .compile(&parsed.expr)
            .map_err(|kind| ParseError::new(text, 0, kind))?;
        let paths = compiler.paths;
        let first_slots = match &root {
            Node::And(items) => items
                .first()
                .map(slot_mask)
                .filter(|&mask| mask != 0 && mask != u64::MAX),
            _ => None,
        };
        let deterministic = parsed.expr.is_deterministic();
        if !deterministic && !limits.allow_nondeterministic {
            // The parser refuses these at the call; this is a second line.
            return Err(ParseError::new(
                text,
                0,
                ParseErrorKind::NonDeterministic("UNIX_TIMESTAMP"),
            ));
        }
        Ok(Filter {
            inner: Arc::new(Inner {
                text: text.to_owned(),
                expr: parsed.expr,
                root,
                paths,
                deterministic,
                first_slots,
            }),
        })
    }

    /// The text the filter was parsed from.
    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.inner.expr
    }

    /// Whether the filter gives the same result for the same message every
    /// time. The broker refuses non-deterministic filters where it must
    /// re-evaluate a message consistently (out-of-focus notification,
    /// paginated or aggregated queries…); see also [`Limits::allow_nondeterministic`].
    pub fn is_deterministic(&self) -> bool {
        self.inner.deterministic
    }

    /// Every distinct path the filter reads.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        let mut seen: Vec<&Path> = Vec::new();
        self.inner.expr.for_each_path(&mut |p| {
            if !seen.contains(&p) {
                seen.push(p);
            }
        });
        seen.into_iter()
    }

    /// Whether the message matches: the filter is TRUE (not FALSE, not NULL).
    /// Uses a thread-local [`Scratch`].
    pub fn matches(&self, ctx: &MessageContext<'_>) -> bool {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.matches_with(ctx, &mut scratch),
            // Only reachable if a caller evaluates from inside an evaluation.
            Err(_) => self.matches_with(ctx, &mut Scratch::new()),
        })
    }

    /// Whether the message matches, using the caller's scratch space.
    pub fn matches_with(&self, ctx: &MessageContext<'_>, scratch: &mut Scratch) -> bool {
        self.evaluate(ctx, scratch) == Truth::True
    }

    /// The filter's SQL truth value for the message.
    pub fn evaluate(&self, ctx: &MessageContext<'_>, scratch: &mut Scratch) -> Truth {
        if let (Node::And(items), Some(first_slots)) = (&self.inner.root, self.inner.first_slots) {
            return self.evaluate_and(items, first_slots, ctx, scratch);
        }
        let _well_formed = self.inner.paths.scan(ctx.payload, &mut scratch.captures);
        let mut eval = Eval {
            ctx,
            cap: &mut scratch.captures,
            scratch: &mut scratch.eval,
        };
        eval.truth(&self.inner.root)
    }

    /// A top-level AND whose first term reads fields: that term is
    /// evaluated as soon as the scan has completed them, and when it is
    /// FALSE the scan stops there (the AND is FALSE whatever the rest).
    /// Otherwise the scan goes on and the other terms are evaluated at its
    /// end, in order. The result is the same as evaluating every term
    /// after the whole scan, as nothing has side effects; only less of the
    /// payload is read when the first term rules the message out.
    fn evaluate_and(
        &self,
        items: &[Node],
        first_slots: u64,
        ctx: &MessageContext<'_>,
        scratch: &mut Scratch,
    ) -> Truth {
        let Scratch { captures, eval } = scratch;
        let Some((first, rest)) = items.split_first() else {
            return Truth::True;
        };
        let mut first_truth = None;
        let mut check = |cap: &mut Captures, complete: u64| {
            if first_slots & !complete != 0 {
                return Verdict::Continue;
            }
            let mut eval = Eval {
                ctx,
                cap,
                scratch: &mut *eval,
            };
            let truth = eval.and_term(first);
            first_truth = Some(truth);
            if truth == Truth::False {
                Verdict::Stop
            } else {
                Verdict::Done
            }
        };
        match self
            .inner
            .paths
            .scan_checked(ctx.payload, captures, &mut check)
        {
            ScanEnd::Decided => return Truth::False,
            // The values the first term saw are gone: every field is NULL.
            ScanEnd::Complete(false) => first_truth = None,
            ScanEnd::Complete(true) => {}
        }
        let mut eval = Eval {
            ctx,
            cap: captures,
            scratch: eval,
        };
        let mut acc = first_truth.unwrap_or_else(|| eval.and_term(first));
        if acc == Truth::False {
            return Truth::False;
        }
        for item in rest {
            match eval.and_term(item) {
                Truth::False => return Truth::False,
                Truth::Unknown => acc = Truth::Unknown,
                Truth::True => {}
            }
        }
        acc
    }

    /// The expression's value for the message, for expressions that are not
    /// predicates (`UPPER(/name)`, `/price * /qty`…).
    pub fn evaluate_value(&self, ctx: &MessageContext<'_>, scratch: &mut Scratch) -> Value {
        if self.inner.first_slots.is_some() {
            return match self.evaluate(ctx, scratch) {
                Truth::True => Value::Bool(true),
                Truth::False => Value::Bool(false),
                Truth::Unknown => Value::Null,
            };
        }
        let _well_formed = self.inner.paths.scan(ctx.payload, &mut scratch.captures);
        let mut eval = Eval {
            ctx,
            cap: &mut scratch.captures,
            scratch: &mut scratch.eval,
        };
        let v = eval.value(&self.inner.root);
        to_value(v, eval.cap)
    }
}
