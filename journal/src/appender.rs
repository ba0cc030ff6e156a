//! The one writer of the journal.
//!
//! An append encodes the record (header, CRC from the segment's seed),
//! copies it into the active segment past its readable end, publishes the
//! new end (Release), then the record's bookmark (Release), then the
//! journal-wide appended watermark, and wakes the flusher in batch mode. It
//! never syncs and never blocks on the disk, except to create a segment file
//! when no preallocated spare is left.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::Thread;

use crate::dedup::PublisherId;
use crate::error::{AppendError, Failure};
use crate::format::{
    HEADER_PAGE_BYTES, RECORD_ALIGN, RECORD_HEADER_BYTES, RecordHeader, padded, record_crc,
};
use crate::journal::{Shared, SyncPolicy};
use crate::segment::{IndexEntry, Segment, lock};

/// Who published a record, for de-duplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The publisher's id from [`crate::Journal::register_publisher`].
    pub publisher: PublisherId,
    /// Its own sequence number for this message (strictly increasing).
    pub sequence: u64,
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Topic bytes (at most 65,535).
    pub topic: &'a [u8],
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Caller-defined flags (opaque to the journal).
    pub flags: u16,
    /// Publisher and sequence, for de-duplication.
    pub origin: Option<Origin>,
}

impl<'a> NewRecord<'a> {
    /// A record with no flags and no origin.
    pub fn new(topic: &'a [u8], payload: &'a [u8]) -> NewRecord<'a> {
        NewRecord {
            topic,
            payload,
            flags: 0,
            origin: None,
        }
    }
}

/// Where a record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's bookmark.
    pub bookmark: u64,
    /// The record's timestamp (ns since the Unix epoch).
    pub timestamp_ns: u64,
}

/// Why a record was refused as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    /// The publisher.
    pub publisher: PublisherId,
    /// The sequence offered.
    pub sequence: u64,
    /// The highest sequence already appended for it.
    pub last: u64,
}

/// The one writer. See the module doc.
pub struct Appender {
    shared: Arc<Shared>,
    segment: Arc<Segment>,
    offset: u64,
    next_bookmark: u64,
    last_timestamp_ns: u64,
    next_index_at: u64,
    force_roll: bool,
    flusher: Option<Thread>,
    /// Highest appended sequence per publisher (persisted or not).
    live: HashMap<u32, u64>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("segment", &self.segment.index)
            .field("offset", &self.offset)
            .field("next_bookmark", &self.next_bookmark)
            .finish()
    }
}

const ZERO_PAD: [u8; RECORD_ALIGN as usize] = [0; RECORD_ALIGN as usize];

impl Appender {
    pub(crate) fn new(
        shared: Arc<Shared>,
        segment: Arc<Segment>,
        next_bookmark: u64,
        last_timestamp_ns: u64,
        force_roll: bool,
    ) -> Appender {
        let offset = segment.end.load(Ordering::Acquire);
        let live = lock(&shared.dedup)
            .all()
            .into_iter()
            .map(|(id, _, sequence)| (id.0, sequence))
            .collect();
        Appender {
            shared,
            segment,
            offset,
            next_bookmark,
            last_timestamp_ns,
            next_index_at: offset,
            force_roll,
            flusher: None,
            live,
        }
    }

    /// Bookmark the next record will get.
    pub fn next_bookmark(&self) -> u64 {
        self.next_bookmark
    }

    /// Highest sequence appended for a publisher (persisted or not): a
    /// publish with a sequence ≤ this is a duplicate.
    pub fn last_sequence(&self, publisher: PublisherId) -> u64 {
        self.live.get(&publisher.0).copied().unwrap_or(0)
    }

    /// Largest record (header, topic, payload, padding) a segment can hold.
    pub fn max_record_bytes(&self) -> u64 {
        self.shared.config.segment_bytes - HEADER_PAGE_BYTES
    }

    /// Appends a record. On success it is visible to readers at once and
    /// becomes persisted when a later sync covers it (watch
    /// [`crate::Journal::persisted`]). On error nothing of it was written.
    pub fn append(&mut self, record: NewRecord<'_>) -> Result<Appended, AppendError> {
        self.try_append(record).and_then(|result| {
            result.map_err(|duplicate| {
                AppendError::Duplicate(duplicate.publisher.0, duplicate.sequence, duplicate.last)
            })
        })
    }

    /// Like [`Appender::append`], but a duplicate comes back as `Ok(Err(_))`.
    pub fn try_append(
        &mut self,
        record: NewRecord<'_>,
    ) -> Result<Result<Appended, Duplicate>, AppendError> {
        if let Some(failure) = self.shared.failure() {
            return Err(AppendError::Failed(failure));
        }
        let topic_length = u16::try_from(record.topic.len())
            .map_err(|_| AppendError::TopicTooLong(record.topic.len()))?;
        let length =
            RECORD_HEADER_BYTES as u64 + record.topic.len() as u64 + record.payload.len() as u64;
        let padded_length = padded(length);
        let max = self.max_record_bytes().min(u64::from(u32::MAX) & !7);
        if padded_length > max {
            return Err(AppendError::TooLarge {
                bytes: padded_length,
                max,
            });
        }
        if let Some(origin) = record.origin {
            let last = self.last_sequence(origin.publisher);
            if origin.sequence <= last {
                return Ok(Err(Duplicate {
                    publisher: origin.publisher,
                    sequence: origin.sequence,
                    last,
                }));
            }
        }
        if self.next_bookmark > self.shared.reserved.load(Ordering::Acquire) {
            self.shared
                .extend_reservation(self.next_bookmark)
                .map_err(AppendError::Failed)?;
        }
        let timestamp_ns = self
            .shared
            .config
            .clock
            .now_ns()
            .max(self.last_timestamp_ns);
        if self.force_roll || self.offset + padded_length > self.segment.file.capacity() {
            self.roll(timestamp_ns)?;
        }
        let bookmark = self.next_bookmark;
        let (origin, origin_sequence) = record
            .origin
            .map_or((0, 0), |origin| (origin.publisher.0, origin.sequence));
        let header = RecordHeader {
            length: length as u32,
            crc: 0,
            bookmark,
            timestamp_ns,
            origin_sequence,
            origin,
            topic_length,
            flags: record.flags,
        };
        let mut encoded = header.encode();
        let crc = record_crc(self.segment.seed, &encoded, record.topic, record.payload);
        encoded[4..8].copy_from_slice(&crc.to_le_bytes());
        #[allow(
            clippy::indexing_slicing,
            reason = "padded(length) - length < RECORD_ALIGN = ZERO_PAD.len()"
        )]
        let pad = &ZERO_PAD[..(padded_length - length) as usize];
        if let Err(source) = self
            .segment
            .file
            .write_at(self.offset, &[&encoded, record.topic, record.payload, pad])
        {
            let failure = Failure(format!("writing {} failed: {source}", self.segment.name));
            self.shared.latch(failure);
            return Err(AppendError::Storage {
                name: self.segment.name.clone(),
                source,
            });
        }
        let end = self.offset + padded_length;
        self.segment.file.publish(end);
        self.segment.end.store(end, Ordering::Release);
        self.segment
            .last_timestamp_ns
            .store(timestamp_ns, Ordering::Release);
        self.segment
            .last_bookmark
            .store(bookmark, Ordering::Release);
        if self.offset >= self.next_index_at {
            self.segment.push_index(IndexEntry {
                bookmark,
                timestamp_ns,
                offset: self.offset,
            });
            self.next_index_at = self
                .offset
                .saturating_add(self.shared.config.index_every_bytes.max(1));
        }
        if let Some(origin) = record.origin {
            self.live.insert(origin.publisher.0, origin.sequence);
            lock(&self.shared.dedup).note_pending(bookmark, origin.publisher.0, origin.sequence);
        }
        self.shared.appended.store(bookmark, Ordering::Release);
        self.offset = end;
        self.next_bookmark = bookmark + 1;
        self.last_timestamp_ns = timestamp_ns;
        self.wake_flusher();
        Ok(Ok(Appended {
            bookmark,
            timestamp_ns,
        }))
    }

    fn wake_flusher(&mut self) {
        if self.shared.config.sync != SyncPolicy::Batch {
            return;
        }
        if self.flusher.is_none() {
            self.flusher = self.shared.flusher_thread.get().cloned();
        }
        if let Some(thread) = &self.flusher {
            thread.unpark();
        }
    }

    /// Moves to the next segment: a spare (or a new file) gets a header
    /// naming the next bookmark, joins the segment list, and only then is the
    /// old segment sealed, so a reader that sees `sealed` finds its successor.
    fn roll(&mut self, timestamp_ns: u64) -> Result<(), AppendError> {
        let index = self.segment.index + 1;
        let file = self.shared.take_spare(index)?;
        let previous_last = self.segment.last_bookmark.load(Ordering::Acquire);
        assert!(
            self.next_bookmark > previous_last,
            "bookmarks must increase across segments"
        );
        let segment =
            self.shared
                .activate(file, index, self.next_bookmark, timestamp_ns, previous_last)?;
        {
            let mut segments = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            assert_eq!(
                segments.back().map(|s| s.index),
                Some(self.segment.index),
                "the active segment is last"
            );
            segments.push_back(segment.clone());
        }
        self.segment.sealed.store(true, Ordering::Release);
        self.segment = segment;
        self.offset = HEADER_PAGE_BYTES;
        self.next_index_at = HEADER_PAGE_BYTES;
        self.force_roll = false;
        Ok(())
    }

    /// Closes the appender: the flusher's final sync then writes a
    /// clean-shutdown checkpoint. Same as dropping it.
    pub fn close(self) {}
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.shared.appender_closed.store(true, Ordering::SeqCst);
        if let Some(thread) = self.shared.flusher_thread.get() {
            thread.unpark();
        }
    }
}
