//! Torn tails and mid-log damage (test plan D4, in-process): every single-bit
//! flip and every truncation of the last (un-synced) record is cut and
//! reported while every complete record before it is kept; damage inside an
//! older synced segment, which open does not read, is reported by the reader
//! that reaches it (file and offset), never skipped, and refused at open
//! when `verify_all_on_open` is set.

use std::sync::Arc;

use statecast_journal::recovery::Label;
use statecast_journal::{Journal, JournalConfig, OpenError, ReadError, Start};

use crate::recovery_table::{build, edit_record};
use crate::support::read_all;

#[test]
fn every_bit_flip_in_the_last_record_is_cut_and_reported() {
    let (storage, config, _) = build(8, &[7], 0);
    let (_, offset, _, stored) = crate::support::locations(&storage)
        .into_iter()
        .find(|l| l.2 == 8)
        .expect("record 8");
    let mut cases = 0;
    for byte in 0..stored as usize {
        for bit in 0..8 {
            let image = storage.kill_image();
            edit_record(&image, 8, |bytes, at, _| bytes[at + byte] ^= 1 << bit);
            let opened = Journal::open_with_storage(Arc::new(image), config.clone())
                .unwrap_or_else(|error| panic!("flip of byte {byte} bit {bit}: {error}"));
            let records = read_all(&opened.journal);
            assert_eq!(records.len(), 7, "flip of byte {byte} bit {bit}");
            let cut = &opened.report.truncations;
            assert_eq!(
                cut.len(),
                1,
                "flip of byte {byte} bit {bit} must be reported"
            );
            assert_eq!(cut[0].damage.offset, offset);
            cases += 1;
        }
    }
    assert!(cases > 300);
}

#[test]
fn every_truncation_of_the_last_record_keeps_the_ones_before() {
    let (storage, config, _) = build(8, &[7], 0);
    let (_, offset, _, stored) = crate::support::locations(&storage)
        .into_iter()
        .find(|l| l.2 == 8)
        .expect("record 8");
    let length = storage
        .file_bytes(&crate::support::locations(&storage)[7].0)
        .map_or(0, |bytes| {
            u32::from_le_bytes(
                bytes[offset as usize..offset as usize + 4]
                    .try_into()
                    .expect("4 bytes"),
            ) as usize
        });
    assert!(length > 40 && length <= stored as usize);
    for keep in 0..length {
        let image = storage.kill_image();
        edit_record(&image, 8, |bytes, at, len| {
            bytes[at + keep..at + len].fill(0)
        });
        let opened = Journal::open_with_storage(Arc::new(image), config.clone())
            .unwrap_or_else(|error| panic!("truncated to {keep} bytes: {error}"));
        assert_eq!(
            read_all(&opened.journal).len(),
            7,
            "truncated to {keep} bytes"
        );
        let cut = &opened.report.truncations;
        if keep == 0 {
            // Nothing of the record is left: a clean end, nothing to report.
            assert!(cut.is_empty());
        } else {
            assert_eq!(cut.len(), 1, "truncated to {keep} bytes must be reported");
            assert_eq!(cut[0].damage.offset, offset);
        }
    }
}

#[test]
fn damage_in_an_older_segment_is_reported_by_the_reader_and_never_skipped() {
    // 1000-byte payloads: 3 records per segment; all synced.
    let (storage, config, _) = build(10, &[10], 1000);
    let (file, offset) = edit_record(&storage, 2, |bytes, at, _| bytes[at + 500] ^= 0x08);
    let opened = Journal::open_with_storage(Arc::new(storage.clone()), config.clone())
        .expect("open reads only un-synced segments");
    let mut reader = opened.journal.reader(Start::Epoch).expect("reader");
    assert_eq!(
        reader
            .next_record()
            .expect("record 1")
            .expect("some")
            .bookmark,
        1
    );
    match reader.next_record() {
        Err(ReadError::Corrupt(damage)) => {
            assert_eq!(
                (damage.file.as_str(), damage.offset),
                (file.as_str(), offset)
            );
        }
        other => panic!("expected a Corrupt error at record 2, got {other:?}"),
    }
    // Asking again does not skip past it either.
    assert!(matches!(reader.next_record(), Err(ReadError::Corrupt(_))));
    // A reader starting after the damage is served (the damage is local).
    let mut later = opened.journal.reader(Start::At(4)).expect("reader");
    assert_eq!(
        later.next_record().expect("read").expect("some").bookmark,
        4
    );
    drop(opened);

    let strict_all = JournalConfig {
        verify_all_on_open: true,
        ..config
    };
    match Journal::open_with_storage(Arc::new(storage), strict_all) {
        Err(OpenError::Corrupt { damage }) => {
            assert_eq!(
                (damage.file.as_str(), damage.offset, damage.label),
                (file.as_str(), offset, Label::SyncedBadCrc)
            );
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("verify_all_on_open must refuse damaged synced data"),
    }
}
