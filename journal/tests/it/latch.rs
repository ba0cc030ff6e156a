//! The I/O-failure latch (test plan D5, in-process): a backend that fails
//! the Nth sync. The persisted watermark never passes the failed sync, every
//! later append and wait fails with a clear error, nothing is retried, and
//! after a power loss every record at or below the watermark is there —
//! although the simulated kernel dropped the pages of the failed sync, as
//! Linux may, so a retry would have "succeeded" over lost data.

use std::time::Duration;

use statecast_journal::sim::{SimRng, SimStorage};
use statecast_journal::{AppendError, NewRecord, WaitError};

use crate::support::{open_sim, payload_for, read_all, small_config};

#[test]
fn the_nth_failed_sync_latches_and_nothing_after_it_is_acknowledged() {
    for failing in [1u64, 2, 3, 5, 8, 13] {
        let storage = SimStorage::new();
        let opened = open_sim(&storage, small_config(8192));
        let journal = opened.journal.clone();
        let mut appender = opened.appender;
        let mut flusher = opened.flusher;
        storage.fail_sync_number(failing);
        let mut appended = 0u64;
        let mut last_good = journal.persisted();
        let failure = loop {
            for _ in 0..3 {
                appended = appender
                    .append(NewRecord::new(b"t", &payload_for(appended + 1, 3)))
                    .expect("append")
                    .bookmark;
            }
            match flusher.sync_now() {
                Ok(persisted) => {
                    assert_eq!(persisted, appended);
                    last_good = persisted;
                }
                Err(failure) => break failure,
            }
            assert!(appended < 1000, "the sync never failed");
        };
        assert!(failure.0.contains("failed"), "{failure}");
        assert!(journal.persisted() <= appended);
        assert!(journal.persisted() >= last_good);
        let watermark = journal.persisted();
        assert!(journal.health().is_err());
        match appender.append(NewRecord::new(b"t", b"late")) {
            Err(error @ AppendError::Failed(_)) => {
                assert!(error.to_string().contains("restart"), "{error}")
            }
            other => panic!("append after a failed sync must fail, got {other:?}"),
        }
        assert!(flusher.sync_now().is_err(), "no retry after a failed sync");
        assert_eq!(
            journal.persisted(),
            watermark,
            "the watermark never moves again"
        );
        match journal.wait_persisted(appended, Duration::from_secs(5)) {
            Err(WaitError::Failed(_)) => {}
            Ok(_) if watermark >= appended => {}
            other => panic!("waiting past the failure must fail, got {other:?}"),
        }
        assert!(journal.register_publisher("late").is_err());
        drop((appender, flusher, journal));
        for crash_seed in 0..20 {
            let image = storage.crash_image(&mut SimRng::new(crash_seed));
            let reopened = open_sim(&image, small_config(8192));
            let records = read_all(&reopened.journal);
            assert!(
                records.len() as u64 >= watermark,
                "failing sync #{failing}, crash {crash_seed}: {} records, watermark {watermark}",
                records.len()
            );
            for record in &records {
                assert_eq!(record.payload(), payload_for(record.bookmark, 3).as_slice());
            }
        }
    }
}

#[test]
fn the_flusher_thread_stops_and_reports_the_failure() {
    let storage = SimStorage::new();
    let opened = open_sim(&storage, small_config(8192));
    let journal = opened.journal.clone();
    let mut appender = opened.appender;
    storage.fail_sync_number(4);
    let flusher = opened.flusher.spawn().expect("spawn");
    let mut bookmark = 0;
    let error = loop {
        match appender.append(NewRecord::new(b"t", &payload_for(bookmark + 1, 0))) {
            Ok(appended) => {
                bookmark = appended.bookmark;
                // Pace the writer by the watermark (no sleep): each wait ends
                // with the sync or with the failure.
                let _ = journal.wait_persisted(bookmark, Duration::from_secs(10));
            }
            Err(error) => break error,
        }
    };
    assert!(matches!(error, AppendError::Failed(_)), "{error}");
    let failure = flusher.join().expect_err("the flusher returns the failure");
    assert_eq!(journal.health().expect_err("unhealthy"), failure);
}
