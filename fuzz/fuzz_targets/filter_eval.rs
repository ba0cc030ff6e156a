//! Fuzzes filter evaluation: `filter text NUL payload`, checked against the
//! reference interpreter and the subscription index.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    statecast_filter::fuzz::eval(data);
});
