//! The journal's integration tests, in one binary (one link, one run).
//!
//! Every randomised test prints its seed on failure and replays it with
//! `STATECAST_SEED=<seed>`; case counts scale with env vars (see each module).

mod support;

mod crash;
mod dedup;
mod full_disk;
mod fuzz_corpus;
mod latch;
mod model;
mod real_disk;
mod recovery_table;
mod replay;
mod retention;
mod torn_tail;
