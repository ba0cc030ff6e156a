//! One segment file in memory: its header facts, the published end, the
//! sparse index, and the record scanner shared by recovery, lazy indexing,
//! the dump tool and the fuzz target.
//!
//! # Sharing
//!
//! A [`Segment`] is shared (`Arc`) by the appender, the flusher, readers and
//! retention. The appender is its only writer: it stores `end` (Release), then
//! `last_bookmark` (Release) after each record, and `sealed` (Release) once it
//! has moved to the next segment. Readers and the flusher load them in the
//! opposite order with Acquire, so an observed `last_bookmark` is always
//! covered by the `end` read after it, and a `sealed` flag means both are
//! final. Segments older than the last checkpoint are *lazy*: recovery does
//! not read them, and the first reader that needs one scans it (with CRC
//! checks) to learn its end and build its sparse index.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Damage;
use crate::format::{
    HEADER_PAGE_BYTES, RECORD_HEADER_BYTES, RecordHeader, RecordVerdict, SegmentHeader,
    check_record, crc_seed,
};
use crate::recovery::Label;
use crate::storage::SegmentFile;

/// File name of segment `index` inside the journal directory.
pub fn segment_name(index: u64) -> String {
    format!("{index:020}.journal")
}

/// Parses a segment file name back to its index.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".journal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A sparse index entry: the record at `offset` has this bookmark and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub bookmark: u64,
    pub timestamp_ns: u64,
    pub offset: u64,
}

/// What a lazy segment's first scan found.
#[derive(Debug, Clone)]
enum LazyState {
    NotScanned,
    Scanned,
    Damaged(Box<Damage>),
}

/// A segment of the journal.
pub(crate) struct Segment {
    pub index: u64,
    pub name: String,
    pub file: Arc<dyn SegmentFile>,
    pub seed: u32,
    pub header: SegmentHeader,
    /// End of the records (published bytes); meaningless until scanned.
    pub end: AtomicU64,
    /// Bookmark of the last record (the header's previous last bookmark when empty).
    pub last_bookmark: AtomicU64,
    /// Timestamp of the last record (the header's first timestamp when empty).
    pub last_timestamp_ns: AtomicU64,
    /// The appender has moved on; `end` and `last_bookmark` are final.
    pub sealed: AtomicBool,
    /// Retention removed (or archived) the file.
    pub removed: AtomicBool,
    index_entries: Mutex<Vec<IndexEntry>>,
    lazy: Mutex<LazyState>,
    scanned: AtomicBool,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("index", &self.index)
            .field("first_bookmark", &self.header.first_bookmark)
            .field("end", &self.end.load(Ordering::Relaxed))
            .field("last_bookmark", &self.last_bookmark.load(Ordering::Relaxed))
            .field("sealed", &self.sealed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Segment {
    /// A segment whose extent is known (scanned by recovery, or new).
    pub(crate) fn known(
        header: SegmentHeader,
        file: Arc<dyn SegmentFile>,
        scan: &ScanResult,
        sealed: bool,
    ) -> Arc<Segment> {
        if sealed {
            // Recovery read it through the mapping; nothing writes it again,
            // and keeping it resident would count a whole segment of page
            // cache in the broker's memory until a reader wants it.
            file.release_pages();
        }
        let segment = Segment::new(header, file, sealed, true);
        segment.end.store(scan.end, Ordering::Release);
        segment
            .last_bookmark
            .store(scan.last_bookmark, Ordering::Release);
        segment
            .last_timestamp_ns
            .store(scan.last_timestamp_ns, Ordering::Release);
        *lock(&segment.index_entries) = scan.index.clone();
        Arc::new(segment)
    }

    /// A segment just activated by the appender: header only, no records.
    pub(crate) fn fresh(header: SegmentHeader, file: Arc<dyn SegmentFile>) -> Arc<Segment> {
        Arc::new(Segment::new(header, file, false, true))
    }

    /// An older, synced segment not read at open; `last_bookmark` comes from
    /// the next segment's header.
    pub(crate) fn lazy(
        header: SegmentHeader,
        file: Arc<dyn SegmentFile>,
        last_bookmark: u64,
    ) -> Arc<Segment> {
        let segment = Segment::new(header, file, true, false);
        segment
            .last_bookmark
            .store(last_bookmark, Ordering::Release);
        Arc::new(segment)
    }

    fn new(
        header: SegmentHeader,
        file: Arc<dyn SegmentFile>,
        sealed: bool,
        scanned: bool,
    ) -> Segment {
        Segment {
            index: header.segment_index,
            name: segment_name(header.segment_index),
            file,
            seed: crc_seed(header.instance_id, header.segment_index),
            header,
            end: AtomicU64::new(HEADER_PAGE_BYTES),
            last_bookmark: AtomicU64::new(header.previous_last_bookmark),
            last_timestamp_ns: AtomicU64::new(header.first_timestamp_ns),
            sealed: AtomicBool::new(sealed),
            removed: AtomicBool::new(false),
            index_entries: Mutex::new(Vec::new()),
            lazy: Mutex::new(if scanned {
                LazyState::Scanned
            } else {
                LazyState::NotScanned
            }),
            scanned: AtomicBool::new(scanned),
        }
    }

    /// Scans a lazy segment once (CRC-checked); returns the damage it holds
    /// if any (its `end` then stops at the damage).
    pub(crate) fn ensure_scanned(&self, index_every_bytes: u64) -> io::Result<Option<Box<Damage>>> {
        if self.scanned.load(Ordering::Acquire) {
            return Ok(self.damage());
        }
        let mut state = lock(&self.lazy);
        if let LazyState::NotScanned = *state {
            let scan = scan_segment(
                self.file.as_ref(),
                &self.header,
                self.seed,
                ScanStart::segment_start(&self.header),
                index_every_bytes,
                |_, _, _, _| {},
            )?;
            self.end.store(scan.end, Ordering::Release);
            self.last_timestamp_ns
                .store(scan.last_timestamp_ns, Ordering::Release);
            *lock(&self.index_entries) = scan.index.clone();
            // The scan faulted the sealed segment in; readers that need its
            // bytes fault them back from the page cache.
            self.file.release_pages();
            let expected_last = self.last_bookmark.load(Ordering::Acquire);
            *state = match scan.stop {
                ScanStop::Damaged {
                    offset,
                    label,
                    detail,
                } => LazyState::Damaged(Box::new(Damage {
                    file: self.name.clone(),
                    segment: self.index,
                    offset,
                    label,
                    detail,
                })),
                _ if scan.last_bookmark != expected_last => LazyState::Damaged(Box::new(Damage {
                    file: self.name.clone(),
                    segment: self.index,
                    offset: scan.end,
                    label: Label::SyncedZeroLength,
                    detail: format!(
                        "records end at bookmark {} but the next segment starts after {expected_last}",
                        scan.last_bookmark
                    ),
                })),
                _ => LazyState::Scanned,
            };
            self.scanned.store(true, Ordering::Release);
        }
        Ok(match &*state {
            LazyState::Damaged(damage) => Some(damage.clone()),
            _ => None,
        })
    }

    fn damage(&self) -> Option<Box<Damage>> {
        match &*lock(&self.lazy) {
            LazyState::Damaged(damage) => Some(damage.clone()),
            _ => None,
        }
    }

    /// Adds a sparse index entry (appender only).
    pub(crate) fn push_index(&self, entry: IndexEntry) {
        let mut entries = lock(&self.index_entries);
        if let Some(last) = entries.last() {
            assert!(entry.bookmark > last.bookmark, "sparse index out of order");
            assert!(
                entry.offset > last.offset,
                "sparse index offsets out of order"
            );
        }
        entries.push(entry);
    }

    /// Where to start scanning for the first record with bookmark ≥ `bookmark`
    /// (or timestamp ≥ `timestamp_ns`): the last index entry strictly before it.
    pub(crate) fn seek_start(&self, target: SeekTarget) -> ScanStart {
        let entries = lock(&self.index_entries);
        let before = entries.partition_point(|entry| match target {
            SeekTarget::Bookmark(bookmark) => entry.bookmark <= bookmark,
            SeekTarget::Timestamp(timestamp_ns) => entry.timestamp_ns < timestamp_ns,
        });
        match before.checked_sub(1).and_then(|at| entries.get(at)) {
            Some(entry) => ScanStart {
                offset: entry.offset,
                bookmark: entry.bookmark,
                previous_bookmark: entry.bookmark - 1,
                timestamp_ns: entry.timestamp_ns,
            },
            None => ScanStart::segment_start(&self.header),
        }
    }

    /// Capacity of the file (what retention counts).
    pub(crate) fn capacity(&self) -> u64 {
        self.file.capacity()
    }
}

/// A target of a seek inside a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SeekTarget {
    Bookmark(u64),
    Timestamp(u64),
}

/// Where a scan starts: a record boundary and what the record there must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanStart {
    pub offset: u64,
    /// Bookmark the record at `offset` must carry.
    pub bookmark: u64,
    /// The bookmark before it (lower than `bookmark − 1` only at the start
    /// of a segment that follows a bookmark jump).
    pub previous_bookmark: u64,
    /// Lower bound for the timestamp of the record at `offset`.
    pub timestamp_ns: u64,
}

impl ScanStart {
    pub(crate) fn segment_start(header: &SegmentHeader) -> ScanStart {
        ScanStart {
            offset: HEADER_PAGE_BYTES,
            bookmark: header.first_bookmark,
            previous_bookmark: header.previous_last_bookmark,
            timestamp_ns: header.first_timestamp_ns,
        }
    }
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// A zero length word: the end of written data.
    ZeroLength,
    /// No room for another record header before the end of the file.
    Full,
    /// Something other than a valid record or a zero length word.
    Damaged {
        offset: u64,
        label: Label,
        detail: String,
    },
}

/// What a scan of one segment found.
#[derive(Debug, Clone)]
pub(crate) struct ScanResult {
    /// Offset just past the last valid record.
    pub end: u64,
    pub records: u64,
    /// Last valid bookmark (the start's previous bookmark when none).
    pub last_bookmark: u64,
    pub last_timestamp_ns: u64,
    pub index: Vec<IndexEntry>,
    pub stop: ScanStop,
    /// Bytes of valid records, padding included.
    pub record_bytes: u64,
    pub topic_bytes: u64,
    pub payload_bytes: u64,
}

const WINDOW_BYTES: usize = 1 << 20;

/// Reads a file through a window so a scan costs one copy per megabyte.
pub(crate) struct Window<'f> {
    file: &'f dyn SegmentFile,
    start: u64,
    bytes: Vec<u8>,
}

impl<'f> Window<'f> {
    pub(crate) fn new(file: &'f dyn SegmentFile) -> Window<'f> {
        Window {
            file,
            start: 0,
            bytes: Vec::new(),
        }
    }

    /// The bytes `offset..offset + len` (the caller checked they lie in the file).
    pub(crate) fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        if offset < self.start || end > self.start + self.bytes.len() as u64 {
            let capacity = self.file.capacity();
            let want = (len.max(WINDOW_BYTES) as u64)
                .min(capacity.saturating_sub(offset))
                .max(len as u64);
            self.bytes.resize(want as usize, 0);
            self.file.read_at(offset, &mut self.bytes)?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        self.bytes
            .get(from..from + len)
            .ok_or_else(|| past_the_end(offset, len))
    }
}

/// The error of a window read past the end of the file (kept out of line so
/// that [`Window::get`] stays small enough to inline into the scan loop).
#[cold]
#[inline(never)]
fn past_the_end(offset: u64, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at offset {offset} is past the end of the file"),
    )
}

/// Walks the records of a segment from `start`, checking each one's length,
/// CRC, bookmark (must be the next in sequence) and timestamp (must not go
/// back), calling `visit(header, offset, topic, payload)` for each valid
/// record, and stops at the first thing that is not a valid record.
pub(crate) fn scan_segment(
    file: &dyn SegmentFile,
    header: &SegmentHeader,
    seed: u32,
    start: ScanStart,
    index_every_bytes: u64,
    mut visit: impl FnMut(&RecordHeader, u64, &[u8], &[u8]),
) -> io::Result<ScanResult> {
    let capacity = file.capacity().min(header.capacity_bytes);
    let mut window = Window::new(file);
    let mut result = ScanResult {
        end: start.offset,
        records: 0,
        last_bookmark: start.previous_bookmark,
        last_timestamp_ns: start.timestamp_ns,
        index: Vec::new(),
        stop: ScanStop::Full,
        record_bytes: 0,
        topic_bytes: 0,
        payload_bytes: 0,
    };
    let mut offset = start.offset;
    let mut next_index_at = offset;
    let index_every_bytes = index_every_bytes.max(1);
    loop {
        let room = capacity.saturating_sub(offset);
        if room < RECORD_HEADER_BYTES as u64 {
            // Bytes too few for a header must be zero padding of a full segment.
            let tail = window.get(offset, room as usize)?;
            result.stop = if tail.iter().all(|&b| b == 0) {
                ScanStop::Full
            } else {
                ScanStop::Damaged {
                    offset,
                    label: Label::TornBadLength,
                    detail: "non-zero bytes in the last bytes of a full segment".into(),
                }
            };
            break;
        }
        let head = window.get(offset, RECORD_HEADER_BYTES)?;
        let Some(fixed) = RecordHeader::decode(head) else {
            result.stop = ScanStop::ZeroLength;
            break;
        };
        if fixed.length == 0 {
            result.stop = ScanStop::ZeroLength;
            break;
        }
        let padded = fixed.padded_length();
        if padded > room || (fixed.length as usize) < RECORD_HEADER_BYTES {
            result.stop = ScanStop::Damaged {
                offset,
                label: Label::TornBadLength,
                detail: format!("length {} does not fit the {room} bytes left", fixed.length),
            };
            break;
        }
        let bytes = window.get(offset, padded as usize)?;
        match check_record(seed, bytes, room) {
            RecordVerdict::Valid(record) => {
                let expected = if result.records == 0 {
                    start.bookmark
                } else {
                    result.last_bookmark + 1
                };
                if record.bookmark != expected || record.timestamp_ns < result.last_timestamp_ns {
                    result.stop = ScanStop::Damaged {
                        offset,
                        label: Label::TornMisplaced,
                        detail: format!(
                            "record with a valid CRC carries bookmark {} (expected {expected}) and time {} \
                             (previous {})",
                            record.bookmark, record.timestamp_ns, result.last_timestamp_ns
                        ),
                    };
                    break;
                }
                // check_record accepted header + topic ≤ length ≤ bytes.len(),
                // so the splits succeed.
                let Some((topic, payload, padding)) = record_parts(bytes, &record) else {
                    result.stop = ScanStop::Damaged {
                        offset,
                        label: Label::TornBadLength,
                        detail: format!("length {} does not fit the record", record.length),
                    };
                    break;
                };
                if padding.iter().any(|&b| b != 0) {
                    result.stop = ScanStop::Damaged {
                        offset,
                        label: Label::TornBadCrc,
                        detail: "non-zero padding after a record".into(),
                    };
                    break;
                }
                let topic_end = RECORD_HEADER_BYTES + usize::from(record.topic_length);
                visit(&record, offset, topic, payload);
                if offset >= next_index_at {
                    result.index.push(IndexEntry {
                        bookmark: record.bookmark,
                        timestamp_ns: record.timestamp_ns,
                        offset,
                    });
                    next_index_at = offset.saturating_add(index_every_bytes);
                }
                result.records += 1;
                result.last_bookmark = record.bookmark;
                result.last_timestamp_ns = record.timestamp_ns;
                result.record_bytes += padded;
                result.topic_bytes += u64::from(record.topic_length);
                result.payload_bytes += u64::from(record.length) - topic_end as u64;
                offset += padded;
                result.end = offset;
            }
            RecordVerdict::ZeroLength => {
                result.stop = ScanStop::ZeroLength;
                break;
            }
            RecordVerdict::BadLength(length) => {
                result.stop = ScanStop::Damaged {
                    offset,
                    label: Label::TornBadLength,
                    detail: format!("length {length} is impossible here"),
                };
                break;
            }
            RecordVerdict::BadCrc(record) => {
                result.stop = ScanStop::Damaged {
                    offset,
                    label: Label::TornBadCrc,
                    detail: format!("CRC mismatch in a record of {} bytes", record.length),
                };
                break;
            }
        }
    }
    Ok(result)
}

/// The topic, payload and padding of the record `header` at the start of
/// `bytes`; `None` when its lengths do not fit.
fn record_parts<'b>(
    bytes: &'b [u8],
    header: &RecordHeader,
) -> Option<(&'b [u8], &'b [u8], &'b [u8])> {
    let (record, padding) = bytes.split_at_checked(header.length as usize)?;
    let (topic, payload) = record
        .get(RECORD_HEADER_BYTES..)?
        .split_at_checked(usize::from(header.topic_length))?;
    Some((topic, payload, padding))
}

static ZERO_PAGE: [u8; 4096] = [0; 4096];

/// Position of the first non-zero byte: whole pages are compared with a
/// zero page (a vectorised memcmp), bytes only inside the first that differs.
fn first_nonzero_in(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    for chunk in bytes.chunks(ZERO_PAGE.len()) {
        if !ZERO_PAGE.starts_with(chunk) {
            return chunk
                .iter()
                .position(|&b| b != 0)
                .map(|position| at + position);
        }
        at += chunk.len();
    }
    None
}

/// Position of the last non-zero byte, the same way from the end.
fn last_nonzero_in(bytes: &[u8]) -> Option<usize> {
    for (page, chunk) in bytes.chunks(ZERO_PAGE.len()).enumerate().rev() {
        let start = page * ZERO_PAGE.len();
        if !ZERO_PAGE.starts_with(chunk) {
            return chunk
                .iter()
                .rposition(|&b| b != 0)
                .map(|position| start + position);
        }
    }
    None
}

/// First offset at or after `from` holding a non-zero byte, if any.
pub(crate) fn first_nonzero(file: &dyn SegmentFile, from: u64) -> io::Result<Option<u64>> {
    let capacity = file.capacity();
    let mut buffer = vec![0u8; WINDOW_BYTES];
    let mut offset = from;
    while offset < capacity {
        // Shorter only for the last piece of the file.
        buffer.truncate(usize::try_from(capacity - offset).unwrap_or(usize::MAX));
        file.read_at(offset, &mut buffer)?;
        if let Some(at) = first_nonzero_in(&buffer) {
            return Ok(Some(offset + at as u64));
        }
        offset += buffer.len() as u64;
    }
    Ok(None)
}

/// Last offset (exclusive) holding a non-zero byte at or after `from`.
pub(crate) fn nonzero_extent(file: &dyn SegmentFile, from: u64) -> io::Result<u64> {
    let capacity = file.capacity();
    let mut buffer = vec![0u8; WINDOW_BYTES];
    let mut offset = from;
    let mut extent = from;
    while offset < capacity {
        // Shorter only for the last piece of the file.
        buffer.truncate(usize::try_from(capacity - offset).unwrap_or(usize::MAX));
        file.read_at(offset, &mut buffer)?;
        if let Some(at) = last_nonzero_in(&buffer) {
            extent = offset + at as u64 + 1;
        }
        offset += buffer.len() as u64;
    }
    Ok(extent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_scans_find_the_exact_byte() {
        let mut bytes = vec![0u8; 3 * 4096 + 100];
        assert_eq!(
            (first_nonzero_in(&bytes), last_nonzero_in(&bytes)),
            (None, None)
        );
        bytes[5000] = 1;
        bytes[9000] = 2;
        assert_eq!(first_nonzero_in(&bytes), Some(5000));
        assert_eq!(last_nonzero_in(&bytes), Some(9000));
        bytes[3 * 4096 + 99] = 3;
        assert_eq!(last_nonzero_in(&bytes), Some(3 * 4096 + 99));
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.journal"), None);
        assert_eq!(parse_segment_name("checkpoint"), None);
    }
}
