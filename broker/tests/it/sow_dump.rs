//! `statecast sow-dump` on a real durable SOW store: a store is written in
//! `<tmp>/sow/<topic_folder>` through the sow crate's own API, closed, and
//! the binary's listing and `--stats` output are checked against what was
//! written (records, keys, current versions, histogram buckets, slab_size
//! advice); the command writes nothing and refuses a missing topic with
//! one line naming where it looked.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use statecast_journal::storage::{FsMode, FsStorage, Storage};
use statecast_sow::{Recovery, SowKey, SowStore, SowTopicConfig, topic_folder};

use crate::support::{path_str, run_cli};

/// A topic name with characters `topic_folder` must replace.
const TOPIC: &str = "orders/eu";
/// Timestamps: 2023-11-14T22:13:20Z plus the bookmark in nanoseconds.
const T0: u64 = 1_700_000_000_000_000_000;

/// A payload of exactly `len` bytes keyed by `/id`.
fn payload(id: u64, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"id":{id},"pad":""#);
    let text = format!("{head}{}\"}}", "p".repeat(len - head.len() - 2));
    assert_eq!(text.len(), len);
    text.into_bytes()
}

fn open_store(folder: &Path) -> (SowStore, Recovery) {
    let mut config = SowTopicConfig::new(TOPIC, &["/id"]);
    config.slab_size = 1 << 20;
    let spec = config.validate().expect("valid config");
    let storage: Arc<dyn Storage> =
        Arc::new(FsStorage::open(folder, FsMode::Exclusive).expect("storage"));
    SowStore::open(&spec, TOPIC, Some(storage)).expect("open store")
}

/// What was written: the keys of ids 1..=5 (id 3 deleted, id 2 replaced).
struct Written {
    keys: HashMap<u64, SowKey>,
}

/// Writes the store: 5 upserts (20, 30, 100, 120 and 200,000 bytes), id 2
/// replaced by 50 bytes, id 3 deleted; bookmarks 1..=7; then closed.
fn write_store(folder: &Path) -> Written {
    let (mut store, recovery) = open_store(folder);
    assert_eq!(recovery, Recovery::Fresh);
    let mut keys = HashMap::new();
    for (bookmark, (id, len)) in [(1, 20), (2, 30), (3, 100), (4, 120), (5, 200_000)]
        .into_iter()
        .enumerate()
    {
        let bookmark = bookmark as u64 + 1;
        let up = store
            .upsert(&payload(id, len), bookmark, T0 + bookmark)
            .expect("upsert");
        assert!(!up.replaced);
        keys.insert(id, up.key);
    }
    assert!(
        store
            .upsert(&payload(2, 50), 6, T0 + 6)
            .expect("replace")
            .replaced
    );
    assert!(store.delete_key(keys[&3], 7, T0 + 7).expect("delete"));
    assert_eq!(store.close().expect("close"), 7);
    Written { keys }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// Runs `statecast args…`, expecting success; returns (stdout, stderr).
fn dump_ok(args: &[&str]) -> (String, String) {
    let out = run_cli(args, None);
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert!(out.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

/// A listing line as field → value.
fn fields(line: &str) -> HashMap<&str, &str> {
    line.split(' ')
        .map(|pair| pair.split_once('=').expect("field=value"))
        .collect()
}

/// The histogram of a `--stats` output: ("from-to", count) per line.
fn histogram(stats: &str) -> Vec<(String, u64)> {
    stats
        .lines()
        .skip_while(|l| !l.starts_with("message sizes"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let range = words.next().expect("range").to_owned();
            let count = words.next().expect("count").parse().expect("count");
            (range, count)
        })
        .collect()
}

#[test]
fn sow_dump_lists_every_record_and_sizes_the_topic_without_writing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sow = tmp.path().join("sow");
    let folder = sow.join(topic_folder(TOPIC));
    let written = write_store(&folder);
    let before = snapshot(tmp.path());
    let data = path_str(tmp.path());

    // The listing: initial checkpoint, 5 upserts, the replacement, the
    // tombstone, the closing checkpoint.
    let (listing, summary) = dump_ok(&["sow-dump", data, "--topic", TOPIC]);
    let records: Vec<HashMap<&str, &str>> = listing.lines().map(fields).collect();
    assert_eq!(records.len(), 9, "{listing}");
    let kinds: Vec<&str> = records.iter().map(|r| r["kind"]).collect();
    assert_eq!(
        kinds,
        [
            "checkpoint",
            "upsert",
            "upsert",
            "upsert",
            "upsert",
            "upsert",
            "upsert",
            "tombstone",
            "checkpoint"
        ]
    );
    let slab = records[0]["file"];
    assert!(records.iter().all(|r| r["file"] == slab), "one slab");
    assert_eq!(records[0]["offset"], "64", "records start after the header");
    let bookmarks: Vec<&str> = records.iter().map(|r| r["bookmark"]).collect();
    assert_eq!(bookmarks, ["0", "1", "2", "3", "4", "5", "6", "7", "7"]);
    assert_eq!(records[1]["time"], "2023-11-14T22:13:20.000000001Z");
    assert_eq!(records[1]["key"], written.keys[&1].to_string());
    let current: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["current"] == "yes")
        .map(|r| (r["key"], r["length"]))
        .collect();
    let (k1, k2, k4, k5) = (
        written.keys[&1].to_string(),
        written.keys[&2].to_string(),
        written.keys[&4].to_string(),
        written.keys[&5].to_string(),
    );
    assert_eq!(
        current,
        [
            (k1.as_str(), "20"),
            (k4.as_str(), "120"),
            (k5.as_str(), "200000"),
            (k2.as_str(), "50"),
        ],
        "the latest version of each key not deleted"
    );
    assert_eq!(
        (
            records[2]["key"],
            records[2]["length"],
            records[2]["current"]
        ),
        (k2.as_str(), "30", "no"),
        "the replaced version is listed, not current"
    );
    assert_eq!(records[7]["key"], written.keys[&3].to_string());
    assert_eq!(
        summary.lines().count(),
        1,
        "one summary line on stderr: {summary}"
    );
    assert!(
        summary.contains("9 records listed, 4 current, from 1 slab file in "),
        "{summary}"
    );
    assert!(!summary.contains("stopped"), "{summary}");

    // The statistics, the same from each form of DIR.
    let (stats, stderr) = dump_ok(&["sow-dump", data, "--topic", TOPIC, "--stats"]);
    assert_eq!(stderr, "");
    for dir in [&sow, &folder] {
        let (again, _) = dump_ok(&["sow-dump", path_str(dir), "--topic", TOPIC, "--stats"]);
        assert_eq!(again, stats, "DIR = {}", dir.display());
    }
    assert!(
        stats.contains("records: 4 live of 9 in the files"),
        "{stats}"
    );
    assert!(
        stats.contains("payload: 200190 bytes in live records, largest message 200000 bytes"),
        "{stats}"
    );
    assert!(
        stats.contains(&format!("\n  {slab} size=1048576 written=")),
        "{stats}"
    );
    // Live sizes 20, 50, 120 and 200,000: buckets 17-32 … 131073-262144.
    let expected: Vec<(String, u64)> = (5..=18u32)
        .map(|b| {
            let range = format!("{}-{}", (1u64 << (b - 1)) + 1, 1u64 << b);
            let count = u64::from(matches!(b, 5 | 6 | 7 | 18));
            (range, count)
        })
        .collect();
    assert_eq!(histogram(&stats), expected, "{stats}");
    // 8 × (200,040 + 104) bytes need a 2 MiB slab; the files have 1 MiB.
    let advice: Vec<&str> = stats
        .lines()
        .skip_while(|l| !l.starts_with("slab_size:"))
        .collect();
    assert_eq!(advice.len(), 3, "value, why, now: {stats}");
    assert_eq!(
        advice[0],
        r#"slab_size: set slab_size = "2 MiB" (2097152 bytes) in this topic's [[sow.topics]] entry"#
    );
    assert!(
        advice[1].contains("holds 8 of the largest message (200000 bytes"),
        "{stats}"
    );
    assert!(
        advice[2].contains("the newest slab is 1 MiB") && advice[2].contains("raise slab_size"),
        "{stats}"
    );

    assert_eq!(snapshot(tmp.path()), before, "sow-dump wrote nothing");

    // Beside an open store (its lock held, as a running broker holds it).
    let (store, recovery) = open_store(&folder);
    assert_eq!(recovery.replay_after(), 7);
    let (beside, _) = dump_ok(&["sow-dump", data, "--topic", TOPIC, "--stats"]);
    assert_eq!(beside, stats);
    drop(store);
}

#[test]
fn sow_dump_of_a_missing_topic_says_where_it_looked() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let sow = tmp.path().join("sow");
    write_store(&sow.join(topic_folder(TOPIC)));
    // A folder as the broker makes it, with its TOPIC file.
    let quotes = SowTopicConfig::new("quotes/us", &["/id"])
        .validate()
        .expect("valid config");
    let store = statecast::core::sow::open_store(&quotes, "quotes/us", Some(&sow))
        .expect("broker's open_store");
    store.close().expect("close");
    let data = path_str(tmp.path());
    let out = run_cli(&["sow-dump", data, "--topic", "quotes"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let looked = tmp.path().join("sow").join(topic_folder("quotes"));
    assert!(
        stderr.starts_with(r#"statecast: no SOW folder for topic "quotes": looked for "#),
        "{stderr}"
    );
    assert!(stderr.contains(path_str(&looked)), "{stderr}");
    assert!(
        stderr.contains(&format!(
            r#"hold folder {}, topic "quotes/us")"#,
            topic_folder(TOPIC)
        )),
        "names the folders there, by topic when they say: {stderr}"
    );

    let other = sow.join(topic_folder("quotes/us"));
    let out = run_cli(&["sow-dump", path_str(&other), "--topic", TOPIC], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"is the SOW folder of topic "quotes/us", not of topic "orders/eu""#),
        "{stderr}"
    );

    let gone = tmp.path().join("no-such-dir");
    let out = run_cli(&["sow-dump", path_str(&gone), "--topic", TOPIC], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{} does not exist", gone.display())),
        "{stderr}"
    );
}

#[test]
fn sow_dump_says_where_a_damaged_slab_stops() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let folder = tmp.path().join("sow").join(topic_folder(TOPIC));
    write_store(&folder);
    let data = path_str(tmp.path());
    let (listing, _) = dump_ok(&["sow-dump", data, "--topic", TOPIC]);
    let third = fields(listing.lines().nth(2).expect("a third record"));
    let offset: u64 = third["offset"].parse().expect("offset");
    // Flip a payload byte of the third record (bookmark 2): its CRC fails.
    let file = folder.join(third["file"]);
    let mut bytes = std::fs::read(&file).expect("read slab");
    let at = usize::try_from(offset).expect("offset") + 40 + 3;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).expect("write slab");

    let (listing, summary) = dump_ok(&["sow-dump", data, "--topic", TOPIC]);
    assert_eq!(
        listing.lines().count(),
        2,
        "records up to the stop: {listing}"
    );
    let stop = format!("{} stopped at offset {offset}: CRC32C", third["file"]);
    assert!(summary.contains(&stop), "{summary}");
    let (stats, _) = dump_ok(&["sow-dump", data, "--topic", TOPIC, "--stats"]);
    assert!(
        stats.contains("records: 1 live of 2 in the files"),
        "{stats}"
    );
    assert!(
        stats.contains(&format!("records=2 stopped at offset {offset}: CRC32C")),
        "{stats}"
    );
}
