//! Readers: iterate records from a bookmark or a timestamp, across segment
//! boundaries, while the appender writes.
//!
//! A reader holds an `Arc` of its current segment (so the mapping stays valid
//! even if retention removes the file; the reader then reports
//! [`ReadError::Removed`] rather than serve from a removed file). It reads
//! only below the segment's published end, checks every record's CRC,
//! bookmark and position again (pair assertion with the appender), and never
//! skips a bad record: it returns [`ReadError::Corrupt`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::appender::Origin;
use crate::dedup::PublisherId;
use crate::error::{Damage, ReadError};
use crate::format::{
    HEADER_PAGE_BYTES, RECORD_HEADER_BYTES, RecordHeader, RecordVerdict, check_record,
};
use crate::journal::Shared;
use crate::recovery::Label;
use crate::segment::{ScanStart, SeekTarget, Segment};

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained record.
    Epoch,
    /// Only records appended from now on.
    Now,
    /// The record with this bookmark (inclusive).
    At(u64),
    /// The record after this bookmark (a subscriber resuming after the last
    /// one it processed).
    After(u64),
    /// The first record with a timestamp ≥ this (ns since the Unix epoch);
    /// before the oldest record means the oldest.
    Timestamp(u64),
}

/// Which records a reader may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLimit {
    /// Every appended record (visible as soon as it is written).
    #[default]
    Appended,
    /// Only records at or below the persisted watermark.
    Persisted,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its bookmark.
    pub bookmark: u64,
    /// Its timestamp (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// Caller flags.
    pub flags: u16,
    /// Publisher and sequence, if it had one.
    pub origin: Option<Origin>,
    bytes: Vec<u8>,
    topic_end: usize,
    length: usize,
}

impl Record {
    /// Topic bytes.
    #[allow(
        clippy::indexing_slicing,
        reason = "RECORD_HEADER_BYTES <= topic_end <= length <= bytes.len(): read_at builds a Record only from bytes check_record accepted"
    )]
    pub fn topic(&self) -> &[u8] {
        &self.bytes[RECORD_HEADER_BYTES..self.topic_end]
    }

    /// Payload bytes.
    #[allow(
        clippy::indexing_slicing,
        reason = "topic_end <= length <= bytes.len(): read_at builds a Record only from bytes check_record accepted"
    )]
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.topic_end..self.length]
    }

    /// Size on disk, header and padding included.
    pub fn stored_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The record's bytes as stored and the ranges of topic and payload in
    /// them, for zero-copy hand-off (e.g. `bytes::Bytes::from(vec).slice(..)`).
    pub fn into_parts(self) -> (Vec<u8>, std::ops::Range<usize>, std::ops::Range<usize>) {
        (
            self.bytes,
            RECORD_HEADER_BYTES..self.topic_end,
            self.topic_end..self.length,
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Skip {
    None,
    BelowBookmark(u64),
    BeforeTime(u64),
}

/// Iterates records. See the module doc.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    segment: Arc<Segment>,
    offset: u64,
    next_bookmark: u64,
    /// The bookmark before `next_bookmark` in journal order (the last one
    /// read, or the previous segment's last at the start of a segment).
    previous_bookmark: u64,
    last_timestamp_ns: u64,
    skip: Skip,
    limit: ReadLimit,
}

fn corrupt(segment: &Segment, offset: u64, label: Label, detail: String) -> ReadError {
    ReadError::Corrupt(Box::new(Damage {
        file: segment.name.clone(),
        segment: segment.index,
        offset,
        label,
        detail,
    }))
}

impl Reader {
    pub(crate) fn open(
        shared: Arc<Shared>,
        start: Start,
        limit: ReadLimit,
    ) -> Result<Reader, ReadError> {
        let (segment, target) = {
            let segments = shared
                .segments
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let oldest = segments
                .front()
                .map_or(1, |segment| segment.header.first_bookmark);
            let newest = shared.appended.load(Ordering::Acquire);
            let bookmark = match start {
                Start::Epoch => Some(oldest),
                Start::Now => Some(newest + 1),
                Start::At(bookmark) => Some(bookmark),
                Start::After(bookmark) => Some(bookmark.saturating_add(1)),
                Start::Timestamp(_) => None,
            };
            match (bookmark, start) {
                (Some(bookmark), _) => {
                    if bookmark < oldest {
                        return Err(ReadError::BeforeOldest { bookmark, oldest });
                    }
                    if bookmark > newest + 1 {
                        return Err(ReadError::Unknown { bookmark, newest });
                    }
                    let at = segments
                        .partition_point(|segment| segment.header.first_bookmark <= bookmark);
                    let segment = segments.get(at.saturating_sub(1)).cloned();
                    (segment, SeekTarget::Bookmark(bookmark))
                }
                (None, Start::Timestamp(timestamp_ns)) => {
                    let at = segments.partition_point(|segment| {
                        segment.header.first_timestamp_ns < timestamp_ns
                    });
                    (
                        segments.get(at.saturating_sub(1)).cloned(),
                        SeekTarget::Timestamp(timestamp_ns),
                    )
                }
                (None, _) => unreachable!("only Timestamp has no bookmark"),
            }
        };
        #[allow(
            clippy::expect_used,
            reason = "an open journal always holds its active segment: retention never removes the last one"
        )]
        let segment = segment.expect("an open journal always has an active segment");
        // A damaged lazy segment is reported by the first read that reaches
        // the damage, not here.
        segment
            .ensure_scanned(shared.config.index_every_bytes)
            .map_err(|source| ReadError::Storage {
                name: segment.name.clone(),
                source,
            })?;
        let ScanStart {
            offset,
            bookmark,
            previous_bookmark,
            timestamp_ns,
        } = segment.seek_start(target);
        let skip = match target {
            SeekTarget::Bookmark(bookmark) => Skip::BelowBookmark(bookmark),
            SeekTarget::Timestamp(timestamp_ns) => Skip::BeforeTime(timestamp_ns),
        };
        Ok(Reader {
            shared,
            segment,
            offset,
            next_bookmark: bookmark,
            previous_bookmark,
            last_timestamp_ns: timestamp_ns,
            skip,
            limit,
        })
    }

    /// Bookmark of the next record this reader will return.
    pub fn next_bookmark(&self) -> u64 {
        self.next_bookmark
    }

    /// The next record, `Ok(None)` when the reader has caught up with the
    /// appender (call again later: it continues with no gap and no
    /// duplicate), or an error.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            let Some(record) = self.step()? else {
                return Ok(None);
            };
            match self.skip {
                Skip::BelowBookmark(bookmark) if record.bookmark < bookmark => continue,
                Skip::BeforeTime(timestamp_ns) if record.timestamp_ns < timestamp_ns => continue,
                _ => {
                    self.skip = Skip::None;
                    return Ok(Some(record));
                }
            }
        }
    }

    fn step(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if self.limit == ReadLimit::Persisted
                && self.next_bookmark > self.shared.persisted.load(Ordering::Acquire)
            {
                return Ok(None);
            }
            let segment = self.segment.clone();
            if segment.removed.load(Ordering::Acquire) {
                return Err(ReadError::Removed {
                    segment: segment.index,
                    bookmark: self.next_bookmark,
                    oldest: crate::Journal {
                        shared: self.shared.clone(),
                    }
                    .first_bookmark(),
                });
            }
            let damage = segment
                .ensure_scanned(self.shared.config.index_every_bytes)
                .map_err(|source| ReadError::Storage {
                    name: segment.name.clone(),
                    source,
                })?;
            // Sealed is loaded before end: a sealed segment's end is final.
            let sealed = segment.sealed.load(Ordering::Acquire);
            let end = segment.end.load(Ordering::Acquire);
            if self.offset < end {
                return self.read_at(&segment, end).map(Some);
            }
            if let Some(damage) = damage {
                return Err(ReadError::Corrupt(damage));
            }
            if !sealed {
                return Ok(None);
            }
            let Some(next) = self.shared.segment_by_index(segment.index + 1) else {
                // The successor joins the list before the seal; only
                // retention of this very segment makes it vanish.
                return Err(ReadError::Removed {
                    segment: segment.index,
                    bookmark: self.next_bookmark,
                    oldest: crate::Journal {
                        shared: self.shared.clone(),
                    }
                    .first_bookmark(),
                });
            };
            if next.header.previous_last_bookmark != self.previous_bookmark {
                return Err(corrupt(
                    &next,
                    0,
                    Label::SyncedSegmentMissing,
                    format!(
                        "segment {} continues after bookmark {} but the reader is at {}",
                        next.index, next.header.previous_last_bookmark, self.previous_bookmark
                    ),
                ));
            }
            self.segment = next;
            self.offset = HEADER_PAGE_BYTES;
            self.next_bookmark = self.segment.header.first_bookmark;
        }
    }

    fn read_at(&mut self, segment: &Segment, end: u64) -> Result<Record, ReadError> {
        let storage_error = |source| ReadError::Storage {
            name: segment.name.clone(),
            source,
        };
        let mut head = [0u8; RECORD_HEADER_BYTES];
        segment
            .file
            .read_at(self.offset, &mut head)
            .map_err(storage_error)?;
        let Some(header) = RecordHeader::decode(&head) else {
            unreachable!("decode of 40 bytes cannot fail")
        };
        let padded = header.padded_length();
        let room = end - self.offset;
        if header.length == 0 || padded > room {
            return Err(corrupt(
                segment,
                self.offset,
                Label::SyncedBadLength,
                format!(
                    "length {} does not fit the {room} published bytes",
                    header.length
                ),
            ));
        }
        let mut bytes = vec![0u8; padded as usize];
        segment
            .file
            .read_at(self.offset, &mut bytes)
            .map_err(storage_error)?;
        let header = match check_record(segment.seed, &bytes, room) {
            RecordVerdict::Valid(header) => header,
            other => {
                return Err(corrupt(
                    segment,
                    self.offset,
                    Label::SyncedBadCrc,
                    format!("{other:?}"),
                ));
            }
        };
        if header.bookmark != self.next_bookmark || header.timestamp_ns < self.last_timestamp_ns {
            return Err(corrupt(
                segment,
                self.offset,
                Label::SyncedMisplaced,
                format!(
                    "record carries bookmark {} where {} was expected",
                    header.bookmark, self.next_bookmark
                ),
            ));
        }
        self.offset += padded;
        self.previous_bookmark = header.bookmark;
        self.next_bookmark += 1;
        self.last_timestamp_ns = header.timestamp_ns;
        let topic_end = RECORD_HEADER_BYTES + usize::from(header.topic_length);
        Ok(Record {
            bookmark: header.bookmark,
            timestamp_ns: header.timestamp_ns,
            flags: header.flags,
            origin: (header.origin != 0).then_some(Origin {
                publisher: PublisherId(header.origin),
                sequence: header.origin_sequence,
            }),
            bytes,
            topic_end,
            length: header.length as usize,
        })
    }
}

impl Iterator for Reader {
    type Item = Result<Record, ReadError>;

    /// Ends (`None`) when caught up; a later call may return more.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
