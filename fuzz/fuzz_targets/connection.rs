//! A whole connection: arbitrary bytes fed to a session (logon, limits,
//! commands) and its commands run through topic routers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    statecast::fuzz::connection(data);
});
