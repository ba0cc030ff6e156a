//! Fuzz target: arbitrary bytes as a journal segment file, through header and
//! record decoding, recovery (strict and quarantine), a full read, an append
//! and the dump. Must never panic. Run:
//! `cd fuzz && cargo fuzz run -s none journal_recover -- -max_total_time=120`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    statecast_journal::fuzz::recover(data);
});
