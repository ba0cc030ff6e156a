//! Fuzzes the filter parser (and the printer's round trip) on arbitrary text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    statecast_filter::fuzz::parse(data);
});
