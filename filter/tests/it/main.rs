//! The crate's integration tests, in one binary (one link, one run):
//! table tests from README.md and `cases/*.txt`, parse errors and limits,
//! property tests against the reference interpreter, the subscription
//! index, and the replay of the fuzz corpora.

mod cases;
mod corpus;
mod errors;
mod index;
mod properties;
mod readme;
mod support;
