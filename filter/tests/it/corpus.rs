//! Replays every committed fuzz corpus file through the same functions the
//! fuzz targets call, so that past crashes stay fixed in ordinary test runs.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", path.display());
        count += 1;
    }
    assert!(count >= 20, "only {count} files in {}", dir.display());
}

#[test]
fn filter_parse_corpus() {
    replay("filter_parse", statecast_filter::fuzz::parse);
}

#[test]
fn filter_eval_corpus() {
    replay("filter_eval", statecast_filter::fuzz::eval);
}
