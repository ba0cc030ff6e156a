//! statecast-sow integration tests: one binary, one module per concern.

mod crash;
mod model;
mod support;
mod tables;
