//! The library side of `statecast sow-dump`: read a durable topic's slab
//! files (read-only, never writing), and compute the message-size histogram
//! and slab usage that tell an operator which `slab_size` to choose.

use std::collections::BTreeMap;
use std::io;

use rustc_hash::FxHashMap;
use statecast_journal::storage::Storage;

use crate::config::{MAX_SLAB_SIZE, MIN_SLAB_SIZE};
use crate::format::{
    FILE_HEADER_BYTES, Kind, RECORD_HEADER_BYTES, decode_file_header, parse_slab_name,
};
use crate::slab::scan_image;

/// One record as the dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRecord {
    /// Slab file.
    pub file: String,
    /// Offset in it.
    pub offset: u64,
    /// `upsert`, `tombstone` or `checkpoint`.
    pub kind: &'static str,
    /// SowKey (0 for checkpoints).
    pub key: u64,
    /// Bookmark.
    pub bookmark: u64,
    /// Timestamp, ns.
    pub timestamp_ns: u64,
    /// Payload length.
    pub len: u32,
    /// Whether it is the current version of its key in log order.
    pub current: bool,
}

/// Usage of one slab file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabUsage {
    /// File name.
    pub file: String,
    /// File size.
    pub capacity: u64,
    /// Bytes written (headers included).
    pub written: u64,
    /// Bytes of current records.
    pub live: u64,
    /// Records of any kind.
    pub records: usize,
    /// Where and why the scan stopped early, if it did.
    pub stopped: Option<String>,
}

/// A power-of-two size bucket: messages of `from..=to` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeBucket {
    /// Smallest size in the bucket.
    pub from: u64,
    /// Largest size in the bucket.
    pub to: u64,
    /// Current messages of that size.
    pub count: u64,
}

/// What `sow-dump --stats` reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SizingReport {
    /// Current (latest per key) records.
    pub records: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Largest current payload.
    pub max_payload: u64,
    /// Message-size histogram of current records.
    pub histogram: Vec<SizeBucket>,
    /// Per slab file.
    pub slabs: Vec<SlabUsage>,
    /// Total bytes of slab files.
    pub file_bytes: u64,
    /// Fraction of slab bytes holding current records.
    pub live_fraction: f64,
    /// A `slab_size` for this data: at least 1 MiB and eight of the largest
    /// record, rounded up to a power of two.
    pub recommended_slab_size: u64,
    /// Every record, in log order, when asked for.
    pub records_list: Vec<DumpRecord>,
}

/// Reads the slab files in `storage` (a topic's folder) and reports. The
/// current version of a key is its last record in log order (slab sequence,
/// then offset) in the files as they stand — records written after the last
/// checkpoint included, which a recovery would drop.
pub fn sizing(storage: &dyn Storage, list_records: bool) -> io::Result<SizingReport> {
    let mut files: BTreeMap<u64, String> = BTreeMap::new();
    for name in storage.list("")? {
        if let Some(seq) = parse_slab_name(&name) {
            files.insert(seq, name);
        }
    }
    let mut report = SizingReport::default();
    // key -> (slab index in report.slabs, span, payload len, record index)
    let mut latest: FxHashMap<u64, (usize, u64, u64, Option<usize>, bool)> = FxHashMap::default();
    for name in files.values() {
        let file = storage.open(name)?;
        let capacity = file.capacity();
        let mut image = vec![0u8; usize::try_from(capacity).unwrap_or(0)];
        file.read_at(0, &mut image)?;
        report.file_bytes += capacity;
        let mut usage = SlabUsage {
            file: name.clone(),
            capacity,
            written: FILE_HEADER_BYTES as u64,
            live: 0,
            records: 0,
            stopped: None,
        };
        if let Err(what) = decode_file_header(&image) {
            usage.stopped = Some(format!("offset 0: {what}"));
            report.slabs.push(usage);
            continue;
        }
        let scan = scan_image(&image, image.len());
        usage.written = scan.end as u64;
        usage.records = scan.records.len();
        if let Some(stop) = scan.stop {
            usage.stopped = Some(format!("offset {}: {}", scan.end, stop.describe()));
        }
        let slab_index = report.slabs.len();
        for rec in &scan.records {
            let h = rec.header;
            let index = if list_records {
                report.records_list.push(DumpRecord {
                    file: name.clone(),
                    offset: u64::from(rec.off),
                    kind: match h.kind {
                        Kind::Upsert => "upsert",
                        Kind::Tombstone => "tombstone",
                        Kind::Checkpoint => "checkpoint",
                    },
                    key: h.key,
                    bookmark: h.bookmark,
                    timestamp_ns: h.timestamp_ns,
                    len: h.len,
                    current: false,
                });
                Some(report.records_list.len() - 1)
            } else {
                None
            };
            if h.kind != Kind::Checkpoint {
                latest.insert(
                    h.key,
                    (
                        slab_index,
                        h.span() as u64,
                        u64::from(h.len),
                        index,
                        h.kind == Kind::Upsert,
                    ),
                );
            }
        }
        report.slabs.push(usage);
    }
    let mut buckets: BTreeMap<u32, u64> = BTreeMap::new();
    let mut max_span = 0u64;
    for (slab, span, len, index, upsert) in latest.values().copied() {
        if !upsert {
            continue;
        }
        if let Some(s) = report.slabs.get_mut(slab) {
            s.live += span;
        }
        if let Some(r) = index.and_then(|i| report.records_list.get_mut(i)) {
            r.current = true;
        }
        report.records += 1;
        report.payload_bytes += len;
        report.max_payload = report.max_payload.max(len);
        max_span = max_span.max(span);
        let bucket = if len == 0 {
            0
        } else {
            64 - (len - 1).leading_zeros()
        };
        *buckets.entry(bucket).or_default() += 1;
    }
    report.histogram = buckets
        .into_iter()
        .map(|(b, count)| SizeBucket {
            from: if b == 0 { 0 } else { (1u64 << (b - 1)) + 1 },
            to: 1u64 << b,
            count,
        })
        .collect();
    let live: u64 = report.slabs.iter().map(|s| s.live).sum();
    report.live_fraction = if report.file_bytes == 0 {
        0.0
    } else {
        live as f64 / report.file_bytes as f64
    };
    report.recommended_slab_size = (8
        * (max_span + (FILE_HEADER_BYTES + RECORD_HEADER_BYTES) as u64))
        .next_power_of_two()
        .clamp(MIN_SLAB_SIZE, MAX_SLAB_SIZE);
    Ok(report)
}

/// Calls `f` for every record of the slab files in `storage`, in log order,
/// with its payload (the `sow-dump` listing). `current` is set on the last
/// version of each key (an upsert that no later record replaced or
/// deleted). Reads every file twice; never writes.
pub fn records(storage: &dyn Storage, mut f: impl FnMut(&DumpRecord, &[u8])) -> io::Result<()> {
    let mut files: BTreeMap<u64, String> = BTreeMap::new();
    for name in storage.list("")? {
        if let Some(seq) = parse_slab_name(&name) {
            files.insert(seq, name);
        }
    }
    let read = |name: &str| -> io::Result<Vec<u8>> {
        let file = storage.open(name)?;
        let mut image = vec![0u8; usize::try_from(file.capacity()).unwrap_or(0)];
        file.read_at(0, &mut image)?;
        Ok(image)
    };
    // Pass 1: where each key's last record is.
    let mut last: FxHashMap<u64, (u64, u32, bool)> = FxHashMap::default();
    for (&seq, name) in &files {
        let image = read(name)?;
        if decode_file_header(&image).is_err() {
            continue;
        }
        for rec in scan_image(&image, image.len()).records {
            if rec.header.kind != Kind::Checkpoint {
                last.insert(
                    rec.header.key,
                    (seq, rec.off, rec.header.kind == Kind::Upsert),
                );
            }
        }
    }
    // Pass 2: report.
    for (&seq, name) in &files {
        let image = read(name)?;
        if decode_file_header(&image).is_err() {
            continue;
        }
        for rec in scan_image(&image, image.len()).records {
            let h = rec.header;
            let start = rec.off as usize + RECORD_HEADER_BYTES;
            let payload = image.get(start..start + h.len as usize).unwrap_or_default();
            let current = h.kind == Kind::Upsert && last.get(&h.key) == Some(&(seq, rec.off, true));
            let record = DumpRecord {
                file: name.clone(),
                offset: u64::from(rec.off),
                kind: match h.kind {
                    Kind::Upsert => "upsert",
                    Kind::Tombstone => "tombstone",
                    Kind::Checkpoint => "checkpoint",
                },
                key: h.key,
                bookmark: h.bookmark,
                timestamp_ns: h.timestamp_ns,
                len: h.len,
                current,
            };
            f(&record, payload);
        }
    }
    Ok(())
}
