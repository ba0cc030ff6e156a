//! Splits filter text into tokens, each with its byte offset.
//!
//! The one context-dependent rule: a `/` right after something that ends an
//! operand (a number, string, path, `)` or a value keyword) and followed by
//! whitespace or a non-name character is division; otherwise it starts a
//! path. So `/a / 2` divides and `/a/2` is the path `a` → `2`, as in AMPS.

use crate::ast::{Path, Step};
use crate::error::{ParseError, ParseErrorKind};

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A number literal: its text, and whether it has a `.` or exponent.
    Number {
        text: String,
        integral: bool,
    },
    /// A string literal, unescaped.
    Str(Vec<u8>),
    /// A path identifier.
    Path(Path),
    /// A bare word: a keyword or a function name, upper-cased.
    Word(String),
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eof,
}

impl Tok {
    /// How the token is described in "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Number { text, .. } => format!("number {text}"),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Path(_) => "a field path".to_owned(),
            Tok::Word(w) => format!("'{w}'"),
            Tok::LParen => "'('".to_owned(),
            Tok::RParen => "')'".to_owned(),
            Tok::Comma => "','".to_owned(),
            Tok::Eq => "'='".to_owned(),
            Tok::Ne => "'!='".to_owned(),
            Tok::Lt => "'<'".to_owned(),
            Tok::Le => "'<='".to_owned(),
            Tok::Gt => "'>'".to_owned(),
            Tok::Ge => "'>='".to_owned(),
            Tok::Plus => "'+'".to_owned(),
            Tok::Minus => "'-'".to_owned(),
            Tok::Star => "'*'".to_owned(),
            Tok::Slash => "'/'".to_owned(),
            Tok::Percent => "'%'".to_owned(),
            Tok::Eof => "the end of the filter".to_owned(),
        }
    }

    fn ends_operand(&self) -> bool {
        match self {
            Tok::Number { .. } | Tok::Str(_) | Tok::Path(_) | Tok::RParen => true,
            Tok::Word(w) => matches!(w.as_str(), "NULL" | "TRUE" | "FALSE" | "NAN"),
            _ => false,
        }
    }
}

/// A token and where it starts.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) offset: usize,
}

/// Whether a byte may appear in a bare path step (`/name`). Non-ASCII bytes
/// are allowed so that names in any script need no brackets.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b >= 0x80
}

/// Splits `text` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn error(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::new(self.text, offset, kind)
    }

    fn push(&mut self, tok: Tok, offset: usize) {
        self.tokens.push(Token { tok, offset });
    }

    fn run(&mut self) -> Result<(), ParseError> {
        loop {
            while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                self.pos += 1;
            }
            let start = self.pos;
            let Some(b) = self.peek() else {
                self.push(Tok::Eof, start);
                return Ok(());
            };
            let single = |tok| (tok, 1);
            let (tok, len) = match b {
                b'(' => single(Tok::LParen),
                b')' => single(Tok::RParen),
                b',' => single(Tok::Comma),
                b'+' => single(Tok::Plus),
                b'-' => single(Tok::Minus),
                b'*' => single(Tok::Star),
                b'%' => single(Tok::Percent),
                b'=' if self.peek_at(1) == Some(b'=') => (Tok::Eq, 2),
                b'=' => single(Tok::Eq),
                b'!' if self.peek_at(1) == Some(b'=') => (Tok::Ne, 2),
                b'<' if self.peek_at(1) == Some(b'>') => (Tok::Ne, 2),
                b'<' if self.peek_at(1) == Some(b'=') => (Tok::Le, 2),
                b'<' => single(Tok::Lt),
                b'>' if self.peek_at(1) == Some(b'=') => (Tok::Ge, 2),
                b'>' => single(Tok::Gt),
                b'/' if self.slash_is_division() => single(Tok::Slash),
                b'[' if !matches!(self.peek_at(1), Some(b'/')) => {
                    return Err(self.error(
                        start,
                        ParseErrorKind::Expected {
                            expected: "'[/' opening a bracketed path",
                            found: format!(
                                "'[{}'",
                                self.text
                                    .get(start + 1..)
                                    .and_then(|s| s.chars().next())
                                    .map(String::from)
                                    .unwrap_or_default()
                            ),
                        },
                    ));
                }
                b'/' | b'[' => {
                    let path = self.path()?;
                    self.push(Tok::Path(path), start);
                    continue;
                }
                b'\'' | b'"' => {
                    let s = self.string(b, false)?;
                    self.push(Tok::Str(s), start);
                    continue;
                }
                b'r' | b'R' if matches!(self.peek_at(1), Some(b'\'' | b'"')) => {
                    self.pos += 1;
                    let quote = self.peek().unwrap_or(b'\'');
                    let s = self.string(quote, true)?;
                    self.push(Tok::Str(s), start);
                    continue;
                }
                b'0'..=b'9' | b'.' => {
                    let tok = self.number()?;
                    self.push(tok, start);
                    continue;
                }
                b if b.is_ascii_alphabetic() || b == b'_' => {
                    while self
                        .peek()
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        self.pos += 1;
                    }
                    let word = self.text.get(start..self.pos).unwrap_or("");
                    self.push(Tok::Word(word.to_ascii_uppercase()), start);
                    continue;
                }
                _ => {
                    let found = self
                        .text
                        .get(start..)
                        .and_then(|s| s.chars().next())
                        .unwrap_or('?');
                    return Err(self.error(start, ParseErrorKind::UnexpectedChar(found)));
                }
            };
            self.pos += len;
            self.push(tok, start);
        }
    }

    /// After an operand a `/` can only be division, since no operand may
    /// follow another; a path glued to a path (`/a/b`) never gets here
    /// because [`Self::path`] reads it whole.
    fn slash_is_division(&self) -> bool {
        self.tokens.last().is_some_and(|t| t.tok.ends_operand())
    }

    /// Reads a path: segments `/name`, `[/any name]` and `[n]`, glued together.
    fn path(&mut self) -> Result<Path, ParseError> {
        let start = self.pos;
        let mut steps = Vec::new();
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(b'/'), Some(next)) if is_name_byte(next) => {
                    self.pos += 1;
                    let name_start = self.pos;
                    while self.peek().is_some_and(is_name_byte) {
                        self.pos += 1;
                    }
                    let name = self.text.get(name_start..self.pos).unwrap_or("");
                    steps.push(Step::Field(name.to_owned()));
                }
                (Some(b'['), Some(b'/')) => {
                    let open = self.pos;
                    self.pos += 1;
                    let Some(len) = self
                        .bytes
                        .get(self.pos..)
                        .and_then(|rest| memchr::memchr(b']', rest))
                    else {
                        return Err(self.error(
                            open,
                            ParseErrorKind::Expected {
                                expected: "']' closing the bracketed path",
                                found: "the end of the filter".to_owned(),
                            },
                        ));
                    };
                    let inner = self.text.get(self.pos + 1..self.pos + len).unwrap_or("");
                    for name in inner.split('/') {
                        if name.is_empty() {
                            return Err(self.error(open, ParseErrorKind::EmptyPathStep));
                        }
                        steps.push(Step::Field(name.to_owned()));
                    }
                    self.pos += len + 1;
                }
                (Some(b'['), Some(b'0'..=b'9')) if !steps.is_empty() => {
                    let open = self.pos;
                    self.pos += 1;
                    let digits_start = self.pos;
                    while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    let digits = self.text.get(digits_start..self.pos).unwrap_or("");
                    let index = digits
                        .parse::<u32>()
                        .map_err(|_| self.error(open, ParseErrorKind::BadIndex))?;
                    if self.peek() != Some(b']') {
                        return Err(self.error(
                            self.pos,
                            ParseErrorKind::Expected {
                                expected: "']' closing the array index",
                                found: self.found_here(),
                            },
                        ));
                    }
                    self.pos += 1;
                    steps.push(Step::Index(index));
                }
                _ => break,
            }
        }
        if steps.is_empty() {
            return Err(self.error(start, ParseErrorKind::EmptyPathStep));
        }
        Ok(Path { steps })
    }

    fn found_here(&self) -> String {
        match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            Some(c) => format!("'{c}'"),
            None => "the end of the filter".to_owned(),
        }
    }

    /// Reads a quoted string. Escapes as in AMPS (and C): `\n \t \r \0 \\ \'
    /// \"`, `\xHH`, `\OOO` octal, any other `\c` is `c`. Raw strings keep
    /// every backslash, and end at the first matching quote.
    fn string(&mut self, quote: u8, raw: bool) -> Result<Vec<u8>, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error(open, ParseErrorKind::UnterminatedString));
            };
            self.pos += 1;
            if b == quote {
                return Ok(out);
            }
            if b != b'\\' || raw {
                out.push(b);
                continue;
            }
            let escape_at = self.pos - 1;
            let Some(e) = self.peek() else {
                return Err(self.error(open, ParseErrorKind::UnterminatedString));
            };
            self.pos += 1;
            match e {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'x' => {
                    let hex = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
                    let (Some(h), Some(l)) = (hex(self.peek()), hex(self.peek_at(1))) else {
                        return Err(self.error(escape_at, ParseErrorKind::BadEscape));
                    };
                    self.pos += 2;
                    out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                }
                b'0'..=b'7' => {
                    let mut value = u32::from(e - b'0');
                    for _ in 0..2 {
                        match self.peek() {
                            Some(d @ b'0'..=b'7') => {
                                value = value * 8 + u32::from(d - b'0');
                                self.pos += 1;
                            }
                            _ => break,
                        }
                    }
                    let byte = u8::try_from(value)
                        .map_err(|_| self.error(escape_at, ParseErrorKind::BadEscape))?;
                    out.push(byte);
                }
                other => out.push(other),
            }
        }
    }

    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let mut integral = true;
        let mut digits = 0;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
            digits += 1;
        }
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
                digits += 1;
            }
        }
        if digits == 0 {
            return Err(self.error(start, ParseErrorKind::UnexpectedChar('.')));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let exp_at = self.pos;
            integral = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            let exp_digits = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            if self.pos == exp_digits {
                return Err(self.error(exp_at, ParseErrorKind::BadNumber));
            }
        }
        if self
            .peek()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return Err(self.error(start, ParseErrorKind::BadNumber));
        }
        let text = self.text.get(start..self.pos).unwrap_or("0").to_owned();
        Ok(Tok::Number { text, integral })
    }
}
