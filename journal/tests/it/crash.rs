//! Simulated power loss (test plan D2): the journal runs on the simulated
//! disk, and at a random moment the disk is replaced by the image a power
//! cut would leave (each un-synced page kept or lost at random, one page
//! torn at a 512-byte boundary, un-synced directory entries undone). After
//! recovery, every record at or below the persisted watermark of the moment
//! must be there, the log must be a prefix of what was appended (no hole, no
//! reordering, nothing invented), no record may fail its CRC (readers check),
//! and the de-dup high-water mark of each publisher must equal the highest
//! sequence among its recovered records. A pure crash must never be taken
//! for damage to synced data (open in strict mode must succeed), and no
//! bookmark is ever handed out twice, not even one whose record was lost.
//!
//! Each case runs up to three crash/recover epochs with random segment sizes,
//! checkpoint frequency, record sizes, sync points and publishers. Cases:
//! `STATECAST_CRASH_CASES` (default 1,500); one case: `STATECAST_SEED`.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use statecast_journal::sim::{SimRng, SimStorage};
use statecast_journal::{NewRecord, Origin, PublisherId};

use crate::support::{count, open_sim, read_all, seed, seed_pinned, small_config};

/// How often recovery had to cut a torn tail or drop a file, and how many
/// appended records a crash lost (never persisted ones): proof that the
/// cases reach the interesting paths.
static TRUNCATIONS: AtomicU64 = AtomicU64::new(0);
static DROPPED_FILES: AtomicU64 = AtomicU64::new(0);
static LOST_UNPERSISTED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    bookmark: u64,
    topic: Vec<u8>,
    payload: Vec<u8>,
    flags: u16,
    origin: Option<Origin>,
}

fn random_record(rng: &mut SimRng, max_payload: u64) -> (Vec<u8>, Vec<u8>, u16) {
    let topic_len = 1 + rng.below(12) as usize;
    let topic: Vec<u8> = (0..topic_len).map(|_| b'a' + rng.below(26) as u8).collect();
    let payload_len = match rng.below(10) {
        0 => rng.below(max_payload),
        1..=3 => rng.below(600),
        _ => rng.below(120),
    } as usize;
    let payload: Vec<u8> = (0..payload_len).map(|_| rng.next_u64() as u8).collect();
    (topic, payload, rng.below(4) as u16)
}

/// Runs one seeded case; returns the number of crash states checked.
fn run_case(seed: u64) -> u64 {
    let mut rng = SimRng::new(seed);
    let segment_bytes = [8192, 12288, 16384][rng.below(3) as usize];
    let mut config = small_config(segment_bytes);
    config.preallocate = 1 + rng.below(2) as usize;
    config.index_every_bytes = 64 << rng.below(6);
    config.checkpoint_interval = if rng.chance(1, 2) {
        Duration::ZERO
    } else {
        Duration::from_secs(3600)
    };
    let max_payload = segment_bytes - 4096 - 64;
    let mut storage = SimStorage::new();
    let mut model: Vec<Written> = Vec::new();
    let mut persisted_before_crash = 0u64;
    let mut kill_only = false;
    // Highest bookmark ever handed out, lost records included: a bookmark is
    // never given to a second record, even after its first one was lost.
    let mut highest_handed_out = 0u64;
    let mut publishers: Vec<(String, PublisherId)> = Vec::new();
    let mut next_sequence: HashMap<u32, u64> = HashMap::new();
    let epochs = 1 + rng.below(3);
    let mut states = 0;
    for epoch in 0..=epochs {
        let mut opened = open_sim(&storage, config.clone());
        let journal = opened.journal.clone();
        TRUNCATIONS.fetch_add(opened.report.truncations.len() as u64, Ordering::Relaxed);
        DROPPED_FILES.fetch_add(opened.report.dropped_files.len() as u64, Ordering::Relaxed);
        let records = read_all(&journal);
        let persisted_count = model
            .iter()
            .filter(|w| w.bookmark <= persisted_before_crash)
            .count();
        LOST_UNPERSISTED.fetch_add(
            (model.len() - records.len().min(model.len())) as u64,
            Ordering::Relaxed,
        );
        assert!(
            records.len() >= persisted_count,
            "epoch {epoch}: {} records recovered, {persisted_before_crash} were persisted",
            records.len()
        );
        if kill_only {
            assert_eq!(
                records.len(),
                model.len(),
                "a process kill keeps the page cache: nothing may be lost"
            );
        }
        assert!(
            records.len() <= model.len(),
            "recovered more records than were appended"
        );
        for (position, record) in records.iter().enumerate() {
            let expected = &model[position];
            assert_eq!(
                record.bookmark, expected.bookmark,
                "the recovered log is a prefix of what was appended, bookmarks and all"
            );
            assert_eq!(
                record.topic(),
                expected.topic.as_slice(),
                "topic of bookmark {}",
                record.bookmark
            );
            assert_eq!(
                record.payload(),
                expected.payload.as_slice(),
                "payload of bookmark {}",
                record.bookmark
            );
            assert_eq!(record.flags, expected.flags);
            assert_eq!(record.origin, expected.origin);
        }
        model.truncate(records.len());
        assert_eq!(
            journal.persisted(),
            journal.appended(),
            "everything recovered is persisted after open"
        );
        if let Some(last) = records.last() {
            assert_eq!(journal.appended(), last.bookmark);
        }
        for (name, id) in &publishers {
            let registered = journal.register_publisher(name).expect("register");
            assert_eq!(registered.id, *id, "publisher ids survive restarts");
            let highest = model
                .iter()
                .filter_map(|w| w.origin.filter(|o| o.publisher == *id).map(|o| o.sequence))
                .max()
                .unwrap_or(0);
            assert_eq!(
                registered.persisted_sequence, highest,
                "de-dup high-water mark of {name}"
            );
        }
        if epoch == epochs {
            break;
        }
        let steps = 1 + rng.below(150);
        for _ in 0..steps {
            match rng.below(100) {
                0..=79 => {
                    let (topic, payload, flags) = random_record(&mut rng, max_payload);
                    let origin = if !publishers.is_empty() && rng.chance(1, 3) {
                        let id = publishers[rng.below(publishers.len() as u64) as usize].1;
                        let next = next_sequence.entry(id.0).or_insert(1);
                        let sequence = *next;
                        *next += 1 + rng.below(2);
                        Some(Origin {
                            publisher: id,
                            sequence,
                        })
                    } else {
                        None
                    };
                    let appended = opened
                        .appender
                        .append(NewRecord {
                            topic: &topic,
                            payload: &payload,
                            flags,
                            origin,
                        })
                        .expect("append");
                    assert!(
                        appended.bookmark > highest_handed_out,
                        "bookmark {} handed out again (highest so far {highest_handed_out})",
                        appended.bookmark
                    );
                    highest_handed_out = appended.bookmark;
                    model.push(Written {
                        bookmark: appended.bookmark,
                        topic,
                        payload,
                        flags,
                        origin,
                    });
                }
                80..=94 => {
                    let persisted = opened.flusher.sync_now().expect("sync");
                    assert_eq!(
                        persisted,
                        journal.appended(),
                        "a sync covers everything appended before it"
                    );
                }
                _ => {
                    if publishers.len() < 3 {
                        let name = format!("publisher-{}", publishers.len());
                        let registered = journal.register_publisher(&name).expect("register");
                        publishers.push((name, registered.id));
                    }
                }
            }
        }
        persisted_before_crash = journal.persisted();
        assert!(persisted_before_crash <= journal.appended());
        drop(opened);
        kill_only = rng.chance(1, 8);
        storage = if kill_only {
            storage.kill_image()
        } else {
            storage.crash_image(&mut rng)
        };
        states += 1;
    }
    states
}

#[test]
fn power_loss_keeps_every_persisted_record_and_a_clean_prefix() {
    let base = seed(0x00C0_FFEE);
    let cases = if seed_pinned() {
        1
    } else {
        count("STATECAST_CRASH_CASES", 1500)
    };
    let mut states = 0;
    for case in 0..cases {
        let seed = base.wrapping_add(case);
        match catch_unwind(AssertUnwindSafe(|| run_case(seed))) {
            Ok(checked) => states += checked,
            Err(panic) => {
                eprintln!("power-loss case failed; reproduce with STATECAST_SEED={seed}");
                resume_unwind(panic);
            }
        }
    }
    let truncations = TRUNCATIONS.load(Ordering::Relaxed);
    let dropped = DROPPED_FILES.load(Ordering::Relaxed);
    let lost = LOST_UNPERSISTED.load(Ordering::Relaxed);
    eprintln!(
        "power loss: {cases} cases, {states} crash states checked (seed base {base}); recovery cut {truncations} \
         torn tails, dropped {dropped} files, {lost} un-persisted records were lost"
    );
    assert!(states >= cases, "every case crashes at least once");
    if cases >= 200 {
        assert!(
            truncations > 0 && dropped > 0 && lost > 0,
            "the cases must reach torn tails and lost pages"
        );
    }
}

/// The same oracle with real threads: the appender and the batch flusher run
/// on their own threads while the test takes power-loss images at arbitrary
/// moments; every image must hold every record at or below the watermark
/// read just before it. This exercises the atomics that order the
/// appender's publication and the flusher's sync (timing, not the seed, picks
/// the moments, so a failure here names the image number instead).
#[test]
fn power_loss_under_concurrent_append_and_group_commit() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let storage = SimStorage::new();
    let mut config = small_config(65536);
    config.preallocate = 2;
    // Retention keeps the journal (and so each image's recovery) small.
    config.retention = statecast_journal::Retention {
        max_bytes: Some(1 << 20),
        ..statecast_journal::Retention::default()
    };
    config.housekeeping_interval = std::time::Duration::from_millis(5);
    let opened = open_sim(&storage, config.clone());
    let journal = opened.journal.clone();
    let mut appender = opened.appender;
    let flusher = opened.flusher.spawn().expect("flusher");
    let housekeeper = opened.housekeeper.spawn().expect("housekeeper");
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer_journal = journal.clone();
    const LAST: u64 = 10_000_000;
    let writer = std::thread::spawn(move || {
        let mut bookmark = 0;
        while !writer_stop.load(Ordering::Relaxed) && bookmark < LAST {
            bookmark = appender
                .append(NewRecord::new(
                    b"t",
                    &crate::support::payload_for(bookmark + 1, 5),
                ))
                .expect("append")
                .bookmark;
            // A window of 500 un-persisted records, like a pipelined publisher.
            if bookmark > 500 {
                writer_journal
                    .wait_persisted(bookmark - 500, std::time::Duration::from_secs(30))
                    .expect("the flusher keeps up");
            }
        }
        appender
    });
    let mut rng = SimRng::new(seed(77));
    let images = count("STATECAST_THREADED_CRASHES", 60);
    let mut taken = 0;
    for image_number in 0..images {
        taken += 1;
        let persisted = journal.persisted();
        let image = storage.crash_image(&mut rng);
        let recovered = open_sim(&image, config.clone());
        let records = read_all(&recovered.journal);
        let first = recovered.journal.first_bookmark();
        assert!(
            first + records.len() as u64 > persisted,
            "image {image_number}: records {first}.. ({}) do not reach the watermark {persisted}",
            records.len()
        );
        for (position, record) in records.iter().enumerate() {
            assert_eq!(
                record.bookmark,
                first + position as u64,
                "image {image_number}"
            );
            assert_eq!(
                record.payload(),
                crate::support::payload_for(record.bookmark, 5).as_slice()
            );
        }
        if persisted >= LAST {
            break;
        }
        // Let the writer and the flusher move on before the next image.
        journal
            .wait_persisted(persisted + 1, std::time::Duration::from_secs(30))
            .expect("progress");
    }
    eprintln!("concurrent power loss: {taken} images checked");
    assert!(
        taken >= images.min(10),
        "only {taken} images were taken while the writer ran"
    );
    stop.store(true, Ordering::Relaxed);
    let appender = writer.join().expect("writer");
    drop(appender);
    journal.shutdown();
    flusher.join().expect("flusher");
    housekeeper.join().expect("housekeeper");
}
