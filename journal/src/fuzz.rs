//! Support for the `journal_recover` fuzz target (and the corpus replay
//! test): treat arbitrary bytes as a segment file and run everything that
//! reads files over it. Must never panic, whatever the input.

use std::sync::Arc;

use crate::format::{HEADER_PAGE_BYTES, RecordHeader, SegmentHeader, check_record, crc_seed};
use crate::journal::{Journal, JournalConfig};
use crate::reader::Start;
use crate::recovery::RecoveryMode;
use crate::segment::segment_name;
use crate::sim::SimStorage;
use crate::{NewRecord, dump};

/// Runs header and record decoding, recovery (strict and quarantine), a
/// full read and one append over `data` taken as segment file 1.
pub fn recover(data: &[u8]) {
    let _ = SegmentHeader::decode(data);
    let seed = crc_seed(0, 0);
    for at in (0..data.len().min(1 << 16)).step_by(8) {
        let Some(rest) = data.get(at..) else {
            break;
        };
        let _ = RecordHeader::decode(rest);
        let _ = check_record(seed, rest, rest.len() as u64);
    }
    // Recovery reads the header's instance id and segment index; give the
    // file the name its header claims, when it claims one that fits.
    let name = match SegmentHeader::decode(data) {
        crate::format::HeaderVerdict::Valid(header) if header.segment_index < 1 << 40 => {
            segment_name(header.segment_index)
        }
        _ => segment_name(1),
    };
    for mode in [RecoveryMode::Strict, RecoveryMode::Quarantine] {
        let storage = SimStorage::new();
        storage.insert_file(&name, data.to_vec());
        storage.set_space_bytes(data.len() as u64 + 8 * HEADER_PAGE_BYTES * 4 + (1 << 16));
        let config = JournalConfig {
            segment_bytes: 2 * HEADER_PAGE_BYTES,
            preallocate: 1,
            recovery: mode,
            ..JournalConfig::default()
        };
        let _ = dump::records_in(&storage, &dump::DumpFilter::default(), |_| {
            std::ops::ControlFlow::Continue(())
        });
        let Ok(mut opened) = Journal::open_with_storage(Arc::new(storage), config) else {
            continue;
        };
        if let Ok(reader) = opened.journal.reader(Start::Epoch) {
            for record in reader.take(10_000) {
                if record.is_err() {
                    break;
                }
            }
        }
        let _ = opened.appender.append(NewRecord::new(b"t", b"fuzz"));
        let _ = opened.flusher.sync_now();
    }
}
