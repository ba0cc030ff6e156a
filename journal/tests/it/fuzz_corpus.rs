//! Replays the committed fuzz corpus of the `journal_recover` target
//! (`fuzz/corpus/journal_recover/`) through
//! `statecast_journal::fuzz::recover`, so every past input runs in ordinary
//! `cargo test`. `STATECAST_WRITE_CORPUS=1` regenerates the seed inputs.

use std::path::PathBuf;

use statecast_journal::sim::SimStorage;
use statecast_journal::{NewRecord, segment_name};

use crate::support::{open_sim, payload_for, small_config};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/journal_recover")
}

/// Seed inputs: a healthy segment, a torn one, a truncated one, a header
/// only, a full segment.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let storage = SimStorage::new();
    let mut opened = open_sim(&storage, small_config(8192));
    for bookmark in 1..=12 {
        opened
            .appender
            .append(NewRecord::new(b"orders", &payload_for(bookmark, 9)))
            .expect("append");
    }
    opened.flusher.sync_now().expect("sync");
    drop(opened);
    let healthy = storage.file_bytes(&segment_name(1)).expect("segment 1");
    let mut torn = healthy.clone();
    torn[4096 + 300] ^= 0xff;
    let truncated = healthy[..4096 + 700].to_vec();
    let header_only = healthy[..4096].to_vec();
    let mut zero_length_mid = healthy.clone();
    zero_length_mid[4096..4100].fill(0);
    vec![
        ("healthy-segment", healthy),
        ("torn-record", torn),
        ("truncated-file", truncated),
        ("header-only", header_only),
        ("zeroed-first-length", zero_length_mid),
        ("short-garbage", b"SCJOURNL\x01\x00\x00\x00garbage".to_vec()),
    ]
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = corpus_dir();
    if std::env::var("STATECAST_WRITE_CORPUS").is_ok() {
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
    }
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus is committed") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read input");
        statecast_journal::fuzz::recover(&data);
        replayed += 1;
    }
    assert!(replayed >= 6, "only {replayed} corpus inputs");
    for (_, bytes) in seeds() {
        statecast_journal::fuzz::recover(&bytes);
    }
}
