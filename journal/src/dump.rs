//! The library side of `statecast journal-dump DIR [--from B] [--topic T]
//! [--stats]`: walks a journal directory read-only (no lock, files read with
//! `pread`, so it is safe beside a running broker) and reports every record
//! and a summary.

use std::ops::ControlFlow;
use std::path::Path;

use crate::format::{HEADER_PAGE_BYTES, HeaderVerdict, SegmentHeader, crc_seed};
use crate::segment::{ScanStart, ScanStop, parse_segment_name, scan_segment};
use crate::storage::{FsMode, FsStorage, Storage};

/// One record as the dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRecord<'a> {
    /// Segment file.
    pub file: &'a str,
    /// Offset of the record in it.
    pub offset: u64,
    /// Bookmark.
    pub bookmark: u64,
    /// Timestamp, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Caller flags.
    pub flags: u16,
    /// (publisher id, sequence) when the record has an origin.
    pub origin: Option<(u32, u64)>,
    /// Topic bytes.
    pub topic: &'a [u8],
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Bytes on disk, header and padding included.
    pub stored_bytes: u64,
}

/// Something the dump could not read as records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpIssue {
    /// The file.
    pub file: String,
    /// Offset (0 for a header problem).
    pub offset: u64,
    /// What was found. In the last segment of a live journal this may be a
    /// record being written.
    pub detail: String,
}

/// Summary of a journal directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DumpStats {
    /// Segment files holding records.
    pub files: usize,
    /// Preallocated spare files.
    pub spares: usize,
    /// Records.
    pub records: u64,
    /// Bytes of all segment files (spares excluded).
    pub file_bytes: u64,
    /// Bytes of records, headers and padding included.
    pub record_bytes: u64,
    /// Topic bytes.
    pub topic_bytes: u64,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// First bookmark.
    pub first_bookmark: Option<u64>,
    /// Last bookmark.
    pub last_bookmark: Option<u64>,
    /// First timestamp.
    pub first_timestamp_ns: Option<u64>,
    /// Last timestamp.
    pub last_timestamp_ns: Option<u64>,
    /// Places that did not read as records.
    pub issues: Vec<DumpIssue>,
}

impl DumpStats {
    /// Bytes per record that are neither topic nor payload: the 40-byte
    /// header plus the alignment padding.
    pub fn overhead_per_record(&self) -> f64 {
        if self.records == 0 {
            return 0.0;
        }
        (self.record_bytes - self.topic_bytes - self.payload_bytes) as f64 / self.records as f64
    }
}

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct DumpFilter<'a> {
    /// Only records with a bookmark ≥ this.
    pub from: Option<u64>,
    /// Only records on this topic.
    pub topic: Option<&'a [u8]>,
}

/// Error of the dump.
#[derive(Debug, thiserror::Error)]
#[error("journal-dump: could not {op} {name}: {source}")]
pub struct DumpError {
    op: &'static str,
    name: String,
    source: std::io::Error,
}

/// Summary of the journal in `dir`.
pub fn stats(dir: &Path) -> Result<DumpStats, DumpError> {
    records(dir, &DumpFilter::default(), |_| ControlFlow::Continue(()))
}

/// Calls `each` for every record matching `filter`, in bookmark order, and
/// returns the summary of the whole directory (not only the matches).
/// `each` can stop the walk early with `ControlFlow::Break`.
pub fn records(
    dir: &Path,
    filter: &DumpFilter<'_>,
    each: impl FnMut(&DumpRecord<'_>) -> ControlFlow<()>,
) -> Result<DumpStats, DumpError> {
    let storage = FsStorage::open(dir, FsMode::ReadOnly).map_err(|source| DumpError {
        op: "open",
        name: dir.display().to_string(),
        source,
    })?;
    records_in(&storage, filter, each)
}

/// [`records`] over any storage (tests use the simulated disk).
pub fn records_in(
    storage: &dyn Storage,
    filter: &DumpFilter<'_>,
    mut each: impl FnMut(&DumpRecord<'_>) -> ControlFlow<()>,
) -> Result<DumpStats, DumpError> {
    let error = |op, name: &str| {
        let name = name.to_string();
        move |source| DumpError { op, name, source }
    };
    let mut names: Vec<(u64, String)> = storage
        .list("")
        .map_err(error("list", "the journal directory"))?
        .into_iter()
        .filter_map(|name| parse_segment_name(&name).map(|index| (index, name)))
        .collect();
    names.sort();
    let mut stats = DumpStats::default();
    let mut stopped = false;
    for (_, name) in names {
        let file = storage.open(&name).map_err(error("open", &name))?;
        let mut raw = [0u8; crate::format::SEGMENT_HEADER_BYTES];
        let verdict = if file.capacity() < HEADER_PAGE_BYTES {
            HeaderVerdict::BadMagic
        } else {
            file.read_at(0, &mut raw).map_err(error("read", &name))?;
            SegmentHeader::decode(&raw)
        };
        let header = match verdict {
            HeaderVerdict::Valid(header) => header,
            HeaderVerdict::Zero => {
                stats.spares += 1;
                continue;
            }
            other => {
                stats.issues.push(DumpIssue {
                    file: name.clone(),
                    offset: 0,
                    detail: format!("header: {other:?}"),
                });
                continue;
            }
        };
        stats.files += 1;
        stats.file_bytes += file.capacity();
        let seed = crc_seed(header.instance_id, header.segment_index);
        let scan = scan_segment(
            file.as_ref(),
            &header,
            seed,
            ScanStart::segment_start(&header),
            u64::MAX,
            {
                |record, offset, topic, payload| {
                    stats.first_bookmark.get_or_insert(record.bookmark);
                    stats.first_timestamp_ns.get_or_insert(record.timestamp_ns);
                    stats.last_bookmark = Some(record.bookmark);
                    stats.last_timestamp_ns = Some(record.timestamp_ns);
                    if stopped
                        || filter.from.is_some_and(|from| record.bookmark < from)
                        || filter.topic.is_some_and(|wanted| wanted != topic)
                    {
                        return;
                    }
                    let shown = DumpRecord {
                        file: &name,
                        offset,
                        bookmark: record.bookmark,
                        timestamp_ns: record.timestamp_ns,
                        flags: record.flags,
                        origin: (record.origin != 0)
                            .then_some((record.origin, record.origin_sequence)),
                        topic,
                        payload,
                        stored_bytes: record.padded_length(),
                    };
                    if each(&shown).is_break() {
                        stopped = true;
                    }
                }
            },
        )
        .map_err(error("read", &name))?;
        stats.records += scan.records;
        stats.record_bytes += scan.record_bytes;
        stats.topic_bytes += scan.topic_bytes;
        stats.payload_bytes += scan.payload_bytes;
        if let ScanStop::Damaged {
            offset,
            label,
            detail,
        } = scan.stop
        {
            stats.issues.push(DumpIssue {
                file: name.clone(),
                offset,
                detail: format!("{}: {detail}", label.name()),
            });
        }
    }
    Ok(stats)
}
