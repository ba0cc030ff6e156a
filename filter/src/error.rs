//! Parse errors: what was wrong, where, and a caret rendering of it.

use std::fmt;

/// Why a filter was refused. Every error points at a byte offset in the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (line {line}, column {column})")]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Byte offset in the filter text where the problem starts.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, counted in characters.
    pub column: usize,
}

/// What is wrong with a filter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The filter text is longer than [`crate::Limits::max_text_bytes`].
    #[error("filter is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nesting deeper than [`crate::Limits::max_depth`].
    #[error("expression nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More nodes than [`crate::Limits::max_nodes`].
    #[error("expression has more than {max} terms")]
    TooManyNodes {
        /// The limit.
        max: usize,
    },
    /// The parser wanted one thing and found another.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What would have been accepted here.
        expected: &'static str,
        /// What is there instead.
        found: String,
    },
    /// A character that starts no token.
    #[error("unexpected character '{0}'")]
    UnexpectedChar(char),
    /// A quote that is never closed.
    #[error("string literal is not closed")]
    UnterminatedString,
    /// `\x` not followed by two hex digits, or an octal escape above `\377`.
    #[error("bad escape sequence in string literal")]
    BadEscape,
    /// A malformed number, such as `1e` or `12abc`.
    #[error("malformed number")]
    BadNumber,
    /// An empty path step, as in `[/]` or `[/a//b]`.
    #[error("empty field name in path")]
    EmptyPathStep,
    /// An array index that is not a 32-bit unsigned integer.
    #[error("array index must be an integer from 0 to 4294967295")]
    BadIndex,
    /// A word that is neither a keyword nor a known function.
    #[error("unknown function or keyword '{0}'")]
    UnknownFunction(String),
    /// A function called with the wrong number of arguments.
    #[error("{function} takes {arity}, got {found}")]
    Arity {
        /// The function's name.
        function: &'static str,
        /// How many it takes, in words.
        arity: String,
        /// How many were given.
        found: usize,
    },
    /// The `LIKE` pattern is not a valid regular expression.
    #[error("bad LIKE pattern: {0}")]
    BadRegex(String),
    /// A non-deterministic function where [`crate::Limits::allow_nondeterministic`] is false.
    #[error("{0} is not deterministic and is not allowed here")]
    NonDeterministic(&'static str),
}

impl ParseError {
    pub(crate) fn new(text: &str, offset: usize, kind: ParseErrorKind) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        ParseError {
            kind,
            offset,
            line,
            column,
        }
    }

    /// The line of `text` holding the error, then a caret under the error's
    /// column, then the message: ready for a terminal or a failure ack.
    ///
    /// ```text
    /// /price > AND /qty = 1
    ///          ^ expected a value, found 'AND' (line 1, column 10)
    /// ```
    pub fn render(&self, text: &str) -> String {
        Rendered { error: self, text }.to_string()
    }
}

struct Rendered<'a> {
    error: &'a ParseError,
    text: &'a str,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self.text.lines().nth(self.error.line - 1).unwrap_or("");
        // Tabs and other control characters would shift the caret.
        let shown: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        writeln!(f, "{shown}")?;
        let pad = self.error.column.saturating_sub(1);
        write!(f, "{:pad$}^ {}", "", self.error)
    }
}
