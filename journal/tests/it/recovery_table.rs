//! One test per label of the recovery decision table
//! (`statecast_journal::recovery::DECISIONS`): each builds the on-disk state
//! that label describes on the simulated disk and checks recovery's decision
//! and report. The last test checks that every label is covered here.

use std::time::Duration;

use statecast_journal::format::{RecordHeader, crc_seed, record_crc};
use statecast_journal::recovery::{DECISIONS, Label};
use statecast_journal::sim::SimStorage;
use statecast_journal::storage::Storage;
use statecast_journal::{Journal, JournalConfig, NewRecord, OpenError, Opened, RecoveryMode};

use crate::support::{locations, open_sim, payload_for, read_all, small_config, topic_for};

/// A journal of `n` records of `payload_len` bytes (or varied sizes when 0)
/// on 8 KiB segments, with a sync after record `sync_after` (each sync also
/// writes the checkpoint); then the process dies (page cache kept).
pub fn build(n: u64, sync_after: &[u64], payload_len: usize) -> (SimStorage, JournalConfig, u64) {
    let storage = SimStorage::new();
    let config = config();
    let mut opened = open_sim(&storage, config.clone());
    for bookmark in 1..=n {
        let payload = if payload_len == 0 {
            payload_for(bookmark, 0)
        } else {
            vec![bookmark as u8; payload_len]
        };
        opened
            .appender
            .append(NewRecord::new(&topic_for(bookmark), &payload))
            .expect("append");
        if sync_after.contains(&bookmark) {
            opened.flusher.sync_now().expect("sync");
        }
    }
    let instance = opened.journal.instance_id();
    drop(opened);
    (storage.kill_image(), config, instance)
}

pub fn config() -> JournalConfig {
    JournalConfig {
        checkpoint_interval: Duration::ZERO,
        ..small_config(8192)
    }
}

fn reopen(storage: &SimStorage, config: &JournalConfig) -> Result<Opened, OpenError> {
    Journal::open_with_storage(std::sync::Arc::new(storage.clone()), config.clone())
}

/// Applies `edit` to the record with this bookmark: (file, offset in file,
/// bytes of the whole file).
pub fn edit_record(
    storage: &SimStorage,
    bookmark: u64,
    edit: impl FnOnce(&mut Vec<u8>, usize, usize),
) -> (String, u64) {
    let (file, offset, _, stored) = locations(storage)
        .into_iter()
        .find(|location| location.2 == bookmark)
        .expect("record exists");
    assert!(storage.edit_file(&file, |bytes| edit(bytes, offset as usize, stored as usize)));
    (file, offset)
}

fn last_label(opened: &Opened) -> Label {
    opened
        .report
        .segments
        .iter()
        .rev()
        .find(|s| s.label != Label::Spare)
        .expect("a segment")
        .label
}

fn corrupt(result: Result<Opened, OpenError>) -> statecast_journal::Damage {
    match result {
        Err(OpenError::Corrupt { damage }) => *damage,
        Err(other) => panic!("expected a Corrupt error, got {other}"),
        Ok(_) => panic!("expected a Corrupt error, the journal opened"),
    }
}

#[test]
fn a_record_valid_and_b_clean_end() {
    let (storage, config, _) = build(10, &[10], 0);
    let opened = reopen(&storage, &config).expect("open");
    assert_eq!(last_label(&opened), Label::CleanEnd);
    assert!(opened.report.truncations.is_empty() && !opened.report.lost_anything());
    assert_eq!(read_all(&opened.journal).len(), 10);
}

#[test]
fn c_segment_full() {
    let storage = SimStorage::new();
    let config = config();
    let mut opened = open_sim(&storage, config.clone());
    // 40-byte header + 1-byte topic + payload = exactly the 4096 bytes after the header page.
    opened
        .appender
        .append(NewRecord::new(b"t", &[7u8; 4096 - 41]))
        .expect("append");
    opened.flusher.sync_now().expect("sync");
    drop(opened);
    let image = storage.kill_image();
    let mut opened = reopen(&image, &config).expect("open");
    assert_eq!(last_label(&opened), Label::SegmentFull);
    let appended = opened
        .appender
        .append(NewRecord::new(b"t", b"next"))
        .expect("append rolls");
    assert!(
        appended.bookmark > 1,
        "after an unclean stop bookmarks jump, never reused"
    );
    assert_eq!(read_all(&opened.journal).len(), 2);
}

fn assert_tail_cut(
    storage: &SimStorage,
    config: &JournalConfig,
    label: Label,
    offset: u64,
    kept: usize,
) {
    let opened = reopen(storage, config).expect("a torn tail must not stop the open");
    assert_eq!(last_label(&opened), label);
    let cut = &opened.report.truncations;
    assert_eq!(cut.len(), 1, "one truncation reported: {cut:?}");
    assert_eq!(cut[0].damage.offset, offset);
    assert_eq!(cut[0].damage.label, label);
    assert!(cut[0].bytes_zeroed > 0);
    assert_eq!(read_all(&opened.journal).len(), kept);
}

#[test]
fn d_torn_zero_residue() {
    let (storage, config, _) = build(6, &[3], 0);
    let (_, offset) = edit_record(&storage, 5, |bytes, at, _| bytes[at..at + 4].fill(0));
    assert_tail_cut(&storage, &config, Label::TornZeroResidue, offset, 4);
}

#[test]
fn e_torn_bad_length() {
    let (storage, config, _) = build(6, &[3], 0);
    let (_, offset) = edit_record(&storage, 6, |bytes, at, _| {
        bytes[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes())
    });
    assert_tail_cut(&storage, &config, Label::TornBadLength, offset, 5);
}

#[test]
fn f_torn_bad_crc() {
    let (storage, config, _) = build(6, &[3], 100);
    let (_, offset) = edit_record(&storage, 6, |bytes, at, _| bytes[at + 60] ^= 0x40);
    assert_tail_cut(&storage, &config, Label::TornBadCrc, offset, 5);
}

/// Rewrites the record's bookmark and re-seals its CRC, as a stale record or
/// a write landing in the wrong place would look.
fn misplace(storage: &SimStorage, instance: u64, bookmark: u64) -> u64 {
    let (_, offset) = edit_record(storage, bookmark, |bytes, at, _| {
        let mut header = RecordHeader::decode(&bytes[at..]).expect("header");
        header.bookmark += 1000;
        let mut encoded = header.encode();
        let topic_end = at + 40 + usize::from(header.topic_length);
        let end = at + header.length as usize;
        let crc = record_crc(
            crc_seed(instance, 1),
            &encoded,
            &bytes[at + 40..topic_end],
            &bytes[topic_end..end],
        );
        encoded[4..8].copy_from_slice(&crc.to_le_bytes());
        bytes[at..at + 40].copy_from_slice(&encoded);
    });
    offset
}

#[test]
fn g_torn_misplaced() {
    let (storage, config, instance) = build(6, &[3], 0);
    let offset = misplace(&storage, instance, 6);
    assert_tail_cut(&storage, &config, Label::TornMisplaced, offset, 5);
}

/// 1000-byte payloads: three records per 8 KiB segment.
#[test]
fn h_torn_header() {
    let (storage, config, _) = build(5, &[3], 1000);
    assert!(storage.edit_file(&statecast_journal::segment_name(2), |bytes| bytes[20] ^= 1));
    let opened = reopen(&storage, &config).expect("open");
    assert_eq!(
        opened.report.dropped_files,
        vec![(statecast_journal::segment_name(2), Label::TornHeader)]
    );
    assert_eq!(read_all(&opened.journal).len(), 3);
}

#[test]
fn i_after_end() {
    let (storage, config, _) = build(5, &[2], 1000);
    let (_, offset) = edit_record(&storage, 3, |bytes, at, _| bytes[at + 100] ^= 1);
    let opened = reopen(&storage, &config).expect("open");
    assert_eq!(
        opened.report.dropped_files,
        vec![(statecast_journal::segment_name(2), Label::AfterEnd)]
    );
    assert_eq!(opened.report.truncations[0].damage.offset, offset);
    assert_eq!(opened.report.truncations[0].damage.label, Label::TornBadCrc);
    assert_eq!(read_all(&opened.journal).len(), 2);
}

fn assert_refused(
    storage: &SimStorage,
    config: &JournalConfig,
    label: Label,
    file: &str,
    offset: u64,
) {
    let damage = corrupt(reopen(storage, config));
    assert_eq!(damage.label, label, "{damage}");
    assert_eq!(damage.file, file);
    assert_eq!(damage.offset, offset);
}

#[test]
fn j_synced_zero_length() {
    let (storage, config, _) = build(10, &[10], 50);
    let (file, offset) = edit_record(&storage, 5, |bytes, at, _| bytes[at..at + 4].fill(0));
    assert_refused(&storage, &config, Label::SyncedZeroLength, &file, offset);
}

#[test]
fn k_synced_bad_length() {
    let (storage, config, _) = build(10, &[10], 50);
    let (file, offset) = edit_record(&storage, 5, |bytes, at, _| bytes[at + 2] = 0x7f);
    assert_refused(&storage, &config, Label::SyncedBadLength, &file, offset);
}

#[test]
fn l_synced_bad_crc() {
    let (storage, config, _) = build(10, &[10], 100);
    let (file, offset) = edit_record(&storage, 5, |bytes, at, _| bytes[at + 70] ^= 0x02);
    assert_refused(&storage, &config, Label::SyncedBadCrc, &file, offset);
}

#[test]
fn m_synced_misplaced() {
    let (storage, config, instance) = build(10, &[10], 50);
    let offset = misplace(&storage, instance, 5);
    assert_refused(
        &storage,
        &config,
        Label::SyncedMisplaced,
        &statecast_journal::segment_name(1),
        offset,
    );
}

#[test]
fn n_synced_header_damaged() {
    let (storage, config, _) = build(4, &[4], 1000);
    assert!(storage.edit_file(&statecast_journal::segment_name(1), |bytes| bytes[30] ^= 1));
    assert_refused(
        &storage,
        &config,
        Label::SyncedHeaderDamaged,
        &statecast_journal::segment_name(1),
        0,
    );
}

#[test]
fn o_synced_segment_missing() {
    let (storage, config, _) = build(7, &[7], 1000);
    storage
        .remove(&statecast_journal::segment_name(2))
        .expect("remove");
    let damage = corrupt(reopen(&storage, &config));
    assert_eq!(damage.label, Label::SyncedSegmentMissing, "{damage}");
    assert_eq!(damage.segment, 1);
}

#[test]
fn p_spare() {
    let (storage, config, _) = build(3, &[3], 0);
    let opened = reopen(&storage, &config).expect("open");
    assert!(
        opened
            .report
            .segments
            .iter()
            .any(|s| s.label == Label::Spare),
        "{:?}",
        opened.report.segments
    );
    assert_eq!(opened.journal.stats().spares, 1);
}

#[test]
fn q_checkpoint_missing() {
    let (storage, config, _) = build(5, &[5], 0);
    storage
        .remove(statecast_journal::CHECKPOINT_FILE)
        .expect("remove");
    let opened = reopen(&storage, &config).expect("open");
    assert!(
        opened
            .report
            .segments
            .iter()
            .any(|s| s.label == Label::CheckpointMissing)
    );
    assert!(!opened.report.warnings.is_empty());
    assert_eq!(read_all(&opened.journal).len(), 5);
}

#[test]
fn quarantine_sets_synced_damage_aside_and_continues_without_reusing_bookmarks() {
    let (storage, mut config, _) = build(10, &[10], 100);
    let (file, offset) = edit_record(&storage, 5, |bytes, at, _| bytes[at + 70] ^= 0x02);
    config.recovery = RecoveryMode::Quarantine;
    let mut opened = reopen(&storage, &config).expect("quarantine mode opens");
    let damage = opened
        .report
        .quarantined_damage
        .clone()
        .expect("damage reported");
    assert_eq!(
        (damage.file.as_str(), damage.offset, damage.label),
        (file.as_str(), offset, Label::SyncedBadCrc)
    );
    assert!(
        storage.list("quarantine").expect("list").contains(&file),
        "a copy of the damaged file is kept"
    );
    assert_eq!(read_all(&opened.journal).len(), 4);
    let appended = opened
        .appender
        .append(NewRecord::new(b"t", b"after"))
        .expect("append");
    assert!(
        appended.bookmark > 10,
        "bookmarks of set-aside records are not reused"
    );
    opened.flusher.sync_now().expect("sync");
    drop(opened);
    config.recovery = RecoveryMode::Strict;
    let opened = reopen(&storage.kill_image(), &config).expect("strict open after quarantine");
    let bookmarks: Vec<u64> = read_all(&opened.journal)
        .iter()
        .map(|r| r.bookmark)
        .collect();
    assert_eq!(bookmarks, vec![1, 2, 3, 4, appended.bookmark]);
}

#[test]
fn every_label_of_the_decision_table_has_a_test_here() {
    let source = include_str!("recovery_table.rs");
    for decision in DECISIONS {
        let name = format!("Label::{:?}", decision.label);
        let uses = source.matches(&name).count();
        assert!(
            uses >= 1 || decision.label == Label::RecordValid,
            "no test names {name}"
        );
    }
}
