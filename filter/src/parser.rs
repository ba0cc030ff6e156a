//! Recursive-descent parser with SQL precedence, and the limits that keep it
//! (and everything that walks its tree) from running away on hostile input.
//!
//! Precedence, loosest first: `OR`; `AND`; `NOT`; comparisons and the
//! predicates (`BETWEEN`, `IN`, `LIKE`, `BEGINS WITH`, `ENDS WITH`, `IS`);
//! `+ -`; `* / % MOD`; unary `- +`; literals, paths, calls and parentheses.

use std::collections::HashMap;

use regex::bytes::{Regex, RegexBuilder};

use crate::ast::{AffixKind, BinaryOp, Expr, IsTest, Literal, UnaryOp};
use crate::error::{ParseError, ParseErrorKind};
use crate::functions::Function;
use crate::lexer::{Tok, Token, tokenize};

/// Bounds on what a filter may ask of the parser, compiler and evaluator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted filter text, in bytes.
    pub max_text_bytes: usize,
    /// Deepest accepted nesting: both parentheses and the height of the
    /// expression tree (`a + b + c` is three levels high). Evaluation
    /// recurses this deep, so it bounds stack use.
    pub max_depth: usize,
    /// Most accepted expression nodes (literals, paths, operators, calls).
    pub max_nodes: usize,
    /// Size limit handed to the regex compiler for each `LIKE` pattern.
    pub max_regex_bytes: usize,
    /// Whether non-deterministic functions (`UNIX_TIMESTAMP`) are accepted.
    /// The broker turns this off where it must evaluate the same message
    /// the same way twice.
    pub allow_nondeterministic: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: 128 * 1024,
            max_depth: 64,
            max_nodes: 10_000,
            max_regex_bytes: 1 << 20,
            allow_nondeterministic: true,
        }
    }
}

/// What the parser hands to the compiler.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) expr: Expr,
    /// Each distinct `LIKE` pattern, compiled once while its position was known.
    pub(crate) regexes: HashMap<Vec<u8>, Regex>,
}

pub(crate) fn parse(text: &str, limits: &Limits) -> Result<Parsed, ParseError> {
    if text.len() > limits.max_text_bytes {
        return Err(ParseError::new(
            text,
            limits.max_text_bytes,
            ParseErrorKind::TooLong {
                len: text.len(),
                max: limits.max_text_bytes,
            },
        ));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        text,
        tokens,
        pos: 0,
        limits,
        nodes: 0,
        nesting: 0,
        regexes: HashMap::new(),
    };
    let (expr, _) = parser.expr()?;
    if parser.peek() != &Tok::Eof {
        return Err(parser.expected("an operator or the end of the filter"));
    }
    Ok(Parsed {
        expr,
        regexes: parser.regexes,
    })
}

/// A subtree and its height.
type Node = (Expr, usize);

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    pos: usize,
    limits: &'t Limits,
    nodes: usize,
    nesting: usize,
    regexes: HashMap<Vec<u8>, Regex>,
}

const EOF: Tok = Tok::Eof;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&EOF, |t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.tokens.get(self.pos + ahead).map_or(&EOF, |t| &t.tok)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .or_else(|| self.tokens.last())
            .map_or(self.text.len(), |t| t.offset)
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w == word)
    }

    fn is_word_at(&self, ahead: usize, word: &str) -> bool {
        matches!(self.peek_at(ahead), Tok::Word(w) if w == word)
    }

    fn error_here(&self, kind: ParseErrorKind) -> ParseError {
        ParseError::new(self.text, self.offset(), kind)
    }

    fn expected(&self, expected: &'static str) -> ParseError {
        self.error_here(ParseErrorKind::Expected {
            expected,
            found: self.peek().describe(),
        })
    }

    fn expect(&mut self, tok: &Tok, expected: &'static str) -> Result<(), ParseError> {
        if self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.expected(expected))
        }
    }

    fn expect_word(&mut self, word: &str, expected: &'static str) -> Result<(), ParseError> {
        if self.is_word(word) {
            self.next();
            Ok(())
        } else {
            Err(self.expected(expected))
        }
    }

    /// Accounts for one new node of the given height, at `offset`.
    fn node(&mut self, expr: Expr, height: usize, offset: usize) -> Result<Node, ParseError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(ParseError::new(
                self.text,
                offset,
                ParseErrorKind::TooManyNodes {
                    max: self.limits.max_nodes,
                },
            ));
        }
        if height > self.limits.max_depth {
            return Err(ParseError::new(
                self.text,
                offset,
                ParseErrorKind::TooDeep {
                    max: self.limits.max_depth,
                },
            ));
        }
        Ok((expr, height))
    }

    /// Parses a nested expression (in parentheses, a call or a list),
    /// bounding how deep the parser itself recurses.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        self.nesting += 1;
        if self.nesting > self.limits.max_depth {
            return Err(self.error_here(ParseErrorKind::TooDeep {
                max: self.limits.max_depth,
            }));
        }
        let result = f(self);
        self.nesting -= 1;
        result
    }

    fn expr(&mut self) -> Result<Node, ParseError> {
        self.nested(Self::or)
    }

    fn or(&mut self) -> Result<Node, ParseError> {
        self.chain("OR", Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Node, ParseError> {
        self.chain("AND", Self::not, Expr::And)
    }

    fn chain(
        &mut self,
        word: &str,
        operand: fn(&mut Self) -> Result<Node, ParseError>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Result<Node, ParseError> {
        let start = self.offset();
        let (first, mut height) = operand(self)?;
        if !self.is_word(word) {
            return Ok((first, height));
        }
        let mut items = vec![first];
        while self.is_word(word) {
            self.next();
            let (item, h) = operand(self)?;
            items.push(item);
            height = height.max(h);
        }
        self.node(build(items), height + 1, start)
    }

    fn not(&mut self) -> Result<Node, ParseError> {
        if self.is_word("NOT") {
            let start = self.offset();
            self.next();
            let (expr, h) = self.nested(Self::not)?;
            return self.node(
                Expr::Unary {
                    op: UnaryOp::Not,
                    expr: Box::new(expr),
                },
                h + 1,
                start,
            );
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Node, ParseError> {
        let start = self.offset();
        let (mut lhs, mut height) = self.additive()?;
        loop {
            let op = match self.peek() {
                Tok::Eq => Some(BinaryOp::Eq),
                Tok::Ne => Some(BinaryOp::Ne),
                Tok::Lt => Some(BinaryOp::Lt),
                Tok::Le => Some(BinaryOp::Le),
                Tok::Gt => Some(BinaryOp::Gt),
                Tok::Ge => Some(BinaryOp::Ge),
                _ => None,
            };
            if let Some(op) = op {
                self.next();
                let (rhs, h) = self.additive()?;
                (lhs, height) = self.node(
                    Expr::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                    height.max(h) + 1,
                    start,
                )?;
                continue;
            }
            let negated = self.is_word("NOT")
                && (self.is_word_at(1, "BETWEEN")
                    || self.is_word_at(1, "IN")
                    || self.is_word_at(1, "LIKE")
                    || self.is_word_at(1, "BEGINS")
                    || self.is_word_at(1, "ENDS"));
            if negated {
                self.next();
            }
            let expr = Box::new(lhs);
            let (node, h) = match self.peek() {
                Tok::Word(w) if w == "BETWEEN" => {
                    self.next();
                    let (low, hl) = self.additive()?;
                    self.expect_word("AND", "AND in BETWEEN … AND …")?;
                    let (high, hh) = self.additive()?;
                    (
                        Expr::Between {
                            expr,
                            low: Box::new(low),
                            high: Box::new(high),
                            negated,
                        },
                        hl.max(hh),
                    )
                }
                Tok::Word(w) if w == "IN" => {
                    self.next();
                    let (list, h) = self.list()?;
                    (
                        Expr::In {
                            expr,
                            list,
                            negated,
                        },
                        h,
                    )
                }
                Tok::Word(w) if w == "LIKE" => {
                    self.next();
                    let pattern = self.pattern()?;
                    (
                        Expr::Like {
                            expr,
                            pattern,
                            negated,
                        },
                        0,
                    )
                }
                Tok::Word(w) if w == "BEGINS" || w == "ENDS" => {
                    let kind = if w == "BEGINS" {
                        AffixKind::Begins
                    } else {
                        AffixKind::Ends
                    };
                    self.next();
                    self.expect_word("WITH", "WITH")?;
                    let (list, h) = self.list()?;
                    (
                        Expr::Affix {
                            expr,
                            kind,
                            list,
                            negated,
                        },
                        h,
                    )
                }
                Tok::Word(w) if w == "IS" && !negated => {
                    self.next();
                    let negated = self.is_word("NOT");
                    if negated {
                        self.next();
                    }
                    let test = if self.is_word("NULL") {
                        IsTest::Null
                    } else if self.is_word("NAN") {
                        IsTest::Nan
                    } else {
                        return Err(self.expected("NULL or NAN after IS"));
                    };
                    self.next();
                    (
                        Expr::Is {
                            expr,
                            test,
                            negated,
                        },
                        0,
                    )
                }
                _ => return Ok((*expr, height)),
            };
            (lhs, height) = self.node(node, height.max(h) + 1, start)?;
        }
    }

    /// `( expr, … )` for IN, BEGINS WITH and ENDS WITH.
    fn list(&mut self) -> Result<(Vec<Expr>, usize), ParseError> {
        self.expect(&Tok::LParen, "'(' opening the list")?;
        let mut items = Vec::new();
        let mut height = 0;
        loop {
            let (item, h) = self.expr()?;
            items.push(item);
            height = height.max(h);
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {
                    self.next();
                    return Ok((items, height));
                }
                _ => return Err(self.expected("',' or ')' in the list")),
            }
        }
    }

    fn pattern(&mut self) -> Result<Vec<u8>, ParseError> {
        let offset = self.offset();
        let Tok::Str(pattern) = self.peek().clone() else {
            return Err(self.expected("a string literal holding the LIKE pattern"));
        };
        self.next();
        if !self.regexes.contains_key(&pattern) {
            let regex = compile_regex(&pattern, self.limits.max_regex_bytes)
                .map_err(|e| ParseError::new(self.text, offset, e))?;
            self.regexes.insert(pattern.clone(), regex);
        }
        Ok(pattern)
    }

    fn additive(&mut self) -> Result<Node, ParseError> {
        let start = self.offset();
        let (mut lhs, mut height) = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinaryOp::Add,
                Tok::Minus => BinaryOp::Sub,
                _ => return Ok((lhs, height)),
            };
            self.next();
            let (rhs, h) = self.multiplicative()?;
            (lhs, height) = self.node(
                Expr::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                height.max(h) + 1,
                start,
            )?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, ParseError> {
        let start = self.offset();
        let (mut lhs, mut height) = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinaryOp::Mul,
                Tok::Slash => BinaryOp::Div,
                Tok::Percent => BinaryOp::Mod,
                Tok::Word(w) if w == "MOD" => BinaryOp::Mod,
                _ => return Ok((lhs, height)),
            };
            self.next();
            let (rhs, h) = self.unary()?;
            (lhs, height) = self.node(
                Expr::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                height.max(h) + 1,
                start,
            )?;
        }
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let start = self.offset();
        let op = match self.peek() {
            Tok::Minus => UnaryOp::Neg,
            Tok::Plus => UnaryOp::Plus,
            _ => return self.primary(),
        };
        self.next();
        if op == UnaryOp::Neg
            && let Tok::Number { text, integral } = self.peek().clone()
        {
            // A minus before a number is part of the literal, so that
            // -9223372036854775808 is an integer and printing -5 reads back as -5.
            self.next();
            let literal = number_literal(&format!("-{text}"), integral);
            return self.node(Expr::Literal(literal), 1, start);
        }
        let (expr, h) = self.nested(Self::unary)?;
        self.node(
            Expr::Unary {
                op,
                expr: Box::new(expr),
            },
            h + 1,
            start,
        )
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let start = self.offset();
        let expr = match self.peek().clone() {
            Tok::Number { text, integral } => {
                self.next();
                Expr::Literal(number_literal(&text, integral))
            }
            Tok::Str(s) => {
                self.next();
                Expr::Literal(Literal::Str(s))
            }
            Tok::Path(path) => {
                self.next();
                Expr::Path(path)
            }
            Tok::LParen => {
                self.next();
                let inner = self.expr()?;
                self.expect(&Tok::RParen, "')'")?;
                return Ok(inner);
            }
            Tok::Word(w) => match w.as_str() {
                "TRUE" => {
                    self.next();
                    Expr::Literal(Literal::Bool(true))
                }
                "FALSE" => {
                    self.next();
                    Expr::Literal(Literal::Bool(false))
                }
                "NULL" => {
                    self.next();
                    Expr::Literal(Literal::Null)
                }
                _ => return self.call(&w),
            },
            _ => return Err(self.expected("a value")),
        };
        self.node(expr, 1, start)
    }

    fn call(&mut self, name: &str) -> Result<Node, ParseError> {
        let start = self.offset();
        let Some(function) = Function::from_name(name) else {
            if self.peek_at(1) == &Tok::LParen {
                return Err(self.error_here(ParseErrorKind::UnknownFunction(name.to_owned())));
            }
            return Err(self.expected("a value"));
        };
        if !function.is_deterministic() && !self.limits.allow_nondeterministic {
            return Err(self.error_here(ParseErrorKind::NonDeterministic(function.name())));
        }
        self.next();
        self.expect(&Tok::LParen, "'(' after the function name")?;
        let mut args = Vec::new();
        let mut height = 0;
        if self.peek() == &Tok::RParen {
            self.next();
        } else {
            loop {
                let (arg, h) = self.expr()?;
                args.push(arg);
                height = height.max(h);
                match self.peek() {
                    Tok::Comma => {
                        self.next();
                    }
                    Tok::RParen => {
                        self.next();
                        break;
                    }
                    _ => return Err(self.expected("',' or ')' after a function argument")),
                }
            }
        }
        let (min, max) = function.arity();
        if args.len() < min || max.is_some_and(|max| args.len() > max) {
            let arity = match max {
                Some(max) if max == min => {
                    format!("{min} argument{}", if min == 1 { "" } else { "s" })
                }
                Some(max) => format!("{min} to {max} arguments"),
                None => format!("at least {min} argument{}", if min == 1 { "" } else { "s" }),
            };
            return Err(ParseError::new(
                self.text,
                start,
                ParseErrorKind::Arity {
                    function: function.name(),
                    arity,
                    found: args.len(),
                },
            ));
        }
        self.node(Expr::Call { function, args }, height + 1, start)
    }
}

/// A number token's value: integer text that fits in 64 bits is an integer,
/// anything else a double (`1e400` is infinity).
fn number_literal(text: &str, integral: bool) -> Literal {
    if integral && let Ok(i) = text.parse::<i64>() {
        return Literal::Int(i);
    }
    Literal::Float(text.parse::<f64>().unwrap_or(f64::NAN))
}

/// Compiles a `LIKE` pattern: a regular expression matched anywhere in the
/// string, in linear time.
pub(crate) fn compile_regex(pattern: &[u8], size_limit: usize) -> Result<Regex, ParseErrorKind> {
    let text = std::str::from_utf8(pattern)
        .map_err(|_| ParseErrorKind::BadRegex("pattern is not valid UTF-8".to_owned()))?;
    RegexBuilder::new(text)
        .size_limit(size_limit)
        .dfa_size_limit(size_limit)
        .build()
        .map_err(|e| ParseErrorKind::BadRegex(first_line(&e.to_string())))
}

fn first_line(message: &str) -> String {
    // The regex crate's messages span several lines with their own caret;
    // keep the last line, which says what is wrong.
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}
