//! Integration tests of the `statecast` binary: each starts real broker
//! processes on ephemeral ports and talks to them over TCP, through the SDK,
//! raw frames or the CLI. One test binary (modules below) so the suite
//! links once.

mod cli;
mod crash;
mod dedup;
mod filters;
mod full_disk;
mod fuzz_corpus;
mod limits;
mod placement;
mod protocol_errors;
mod pubsub;
mod recovery;
mod replay;
mod sow;
mod sow_cli;
mod sow_dump;
mod support;
mod sync_failure;
mod tidy;
