//! Frame decoder: arbitrary bytes split into frames and decoded; every
//! decoded command must re-encode and decode to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    statecast_protocol::fuzz::frame_decode(data);
});
