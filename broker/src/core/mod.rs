//! The broker's logic with no sockets, threads or clocks: the connection
//! state machine ([`session`]) and the topic processor's routing
//! ([`router`]). The I/O layer in `server` drives them, passing time in as a
//! value, so they can be unit-tested, fuzzed, and later run under a seeded
//! deterministic simulator.
//!
//! **Invariant:** nothing in `core` reads the clock, touches a socket, spawns
//! a thread or blocks.

pub mod replay;
pub mod router;
pub mod session;
pub mod sow;
pub mod topic;
