//! Publisher de-duplication state: ids and high-water marks survive restart
//! and retention; duplicates are refused by the appender; a sequence counts
//! as persisted only after the sync that covers its record. (Power loss is
//! covered by `crash.rs`, which checks the high-water mark of every publisher
//! against the recovered records after every crash.)

use statecast_journal::sim::SimStorage;
use statecast_journal::{NewRecord, Origin, Retention};

use crate::support::{open_sim, small_config};

fn publish(
    opened: &mut statecast_journal::Opened,
    publisher: statecast_journal::PublisherId,
    sequence: u64,
) {
    opened
        .appender
        .append(NewRecord {
            origin: Some(Origin {
                publisher,
                sequence,
            }),
            ..NewRecord::new(b"t", &[1; 300])
        })
        .expect("append");
}

#[test]
fn high_water_marks_survive_restart_and_duplicates_are_refused() {
    let storage = SimStorage::new();
    let mut opened = open_sim(&storage, small_config(8192));
    let alpha = opened
        .journal
        .register_publisher("alpha")
        .expect("register")
        .id;
    let beta = opened
        .journal
        .register_publisher("beta")
        .expect("register")
        .id;
    assert_ne!(alpha, beta);
    for sequence in 1..=5 {
        publish(&mut opened, alpha, sequence);
    }
    for sequence in [2, 4, 7] {
        publish(&mut opened, beta, sequence);
    }
    assert_eq!(
        opened.journal.persisted_sequence(alpha),
        Some(0),
        "not persisted before the sync"
    );
    opened.flusher.sync_now().expect("sync");
    assert_eq!(opened.journal.persisted_sequence(alpha), Some(5));
    publish(&mut opened, alpha, 6);
    assert_eq!(opened.appender.last_sequence(alpha), 6);
    assert_eq!(opened.journal.persisted_sequence(alpha), Some(5));
    drop(opened);
    let mut reopened = open_sim(&storage.kill_image(), small_config(8192));
    let again = reopened
        .journal
        .register_publisher("alpha")
        .expect("register");
    assert_eq!(
        (again.id, again.persisted_sequence),
        (alpha, 6),
        "the process kill kept the page cache"
    );
    assert_eq!(
        reopened
            .journal
            .register_publisher("beta")
            .expect("register")
            .persisted_sequence,
        7
    );
    let duplicate = reopened
        .appender
        .try_append(NewRecord {
            origin: Some(Origin {
                publisher: alpha,
                sequence: 6,
            }),
            ..NewRecord::new(b"t", b"x")
        })
        .expect("no I/O error");
    assert!(duplicate.is_err(), "sequence 6 is a duplicate");
    publish(&mut reopened, alpha, 7);
}

#[test]
fn high_water_marks_survive_retention_of_the_segments_that_carried_them() {
    let storage = SimStorage::new();
    let mut config = small_config(8192);
    config.retention = Retention {
        max_bytes: Some(2 * 8192),
        ..Retention::default()
    };
    let mut opened = open_sim(&storage, config.clone());
    let early = opened
        .journal
        .register_publisher("early")
        .expect("register")
        .id;
    let late = opened
        .journal
        .register_publisher("late")
        .expect("register")
        .id;
    publish(&mut opened, early, 41);
    for sequence in 1..=60 {
        publish(&mut opened, late, sequence);
        opened.flusher.sync_now().expect("sync");
    }
    let removed = opened.journal.enforce_retention().expect("retention");
    assert!(
        !removed.removed.is_empty() && opened.journal.first_bookmark() > 1,
        "the record of `early` is gone"
    );
    drop(opened);
    let reopened = open_sim(&storage.kill_image(), config);
    assert_eq!(
        reopened
            .journal
            .register_publisher("early")
            .expect("register")
            .persisted_sequence,
        41
    );
    assert_eq!(
        reopened
            .journal
            .register_publisher("late")
            .expect("register")
            .persisted_sequence,
        60
    );
}
