//! statecast's content-filter language: AMPS-style filters such as
//! `/symbol IN ('IBM','MSFT') AND /price > 100`, parsed and compiled once and
//! evaluated against JSON message payloads in one streaming pass over the
//! bytes; and [`SubscriptionIndex`], which matches a message against many
//! filters without evaluating the ones that cannot match.
//!
//! The language reference is `filter/README.md`.
//!
//! This crate owns the filter grammar, its semantics (types, coercions,
//! three-valued logic, functions), the payload scanner and the subscription
//! index. It must not depend on the rest of statecast: it knows nothing of
//! topics' routing, sockets, threads, tokio or mio, or the broker. It reads no
//! clock (the caller passes the time in [`MessageContext`]) and does no I/O.
//!
//! ```text
//! let filter = Filter::parse("/price > 100", &Limits::default())?;
//! let mut scratch = Scratch::new();
//! filter.matches_with(&MessageContext::new(br#"{"price":101}"#), &mut scratch); // true
//! ```

#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod ast;
mod compile;
mod context;
mod error;
mod eval;
mod filter;
pub mod functions;
pub mod fuzz;
mod index;
mod lexer;
mod parser;
mod print;
pub mod reference;
mod scan;
pub mod value;

pub use context::MessageContext;
pub use error::{ParseError, ParseErrorKind};
pub use filter::{Filter, Scratch};
pub use functions::Function;
pub use index::{IndexScratch, SubscriptionIndex};
pub use parser::Limits;
pub use value::{Truth, Value};
