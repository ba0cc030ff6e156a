//! The committed fuzz corpus of the `connection` target replays as an
//! ordinary test, and random byte streams run through the same entry point.

use proptest::prelude::*;

#[test]
fn connection_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/connection");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        statecast::fuzz::connection(&data);
        count += 1;
    }
    assert!(count > 0, "corpus at {} is empty", dir.display());
}

proptest! {
    #[test]
    fn random_connections_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        statecast::fuzz::connection(&data);
    }

    #[test]
    fn logged_on_random_commands_never_panic(split in 1u8..64, tail in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let logon = statecast_protocol::Command::Logon(statecast_protocol::Logon {
            command_id: None,
            client_name: statecast_protocol::Utf8::from("fuzz"),
            credentials: None,
            heartbeat_ms: None,
        }).to_bytes().unwrap();
        let mut data = vec![split];
        data.extend_from_slice(&logon);
        data.extend_from_slice(&tail);
        statecast::fuzz::connection(&data);
    }
}
