//! statecast: the broker binary's library — configuration, thread
//! placement, the connection and routing logic, the threads that run them,
//! and the command line.
//!
//! It owns everything that is the server: what it must not depend on is
//! any other binary. Its `core` module is free of sockets, threads and
//! clocks (so it can be unit-tested and fuzzed); only `server` and `cli`
//! touch the OS. The `cli` module alone uses tokio (through the client
//! SDK); the server's data path uses mio and std threads.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod affinity;
pub mod cli;
pub mod config;
pub mod core;
pub mod fuzz;
pub mod logging;
pub mod placement;
pub mod server;
