//! Typed errors of every journal operation. Each message says what is wrong
//! and what the operator or caller can do about it.

use std::io;

use crate::recovery::Label;

/// Where and how a journal file is damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// File name inside the journal directory.
    pub file: String,
    /// Segment index of the file.
    pub segment: u64,
    /// Byte offset of the first bad byte or record in the file.
    pub offset: u64,
    /// The recovery decision-table case that matched.
    pub label: Label,
    /// What was found, in words.
    pub detail: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {} ({}: {})",
            self.file,
            self.offset,
            self.label.name(),
            self.detail
        )
    }
}

/// Opening (and recovering) a journal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A file operation failed.
    #[error(
        "journal: could not {op} {name}: {source}; check the disk, free space and permissions of the journal directory"
    )]
    Storage {
        /// What was being done.
        op: &'static str,
        /// Which file or folder.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// Damage inside data that had been synced (bit rot, a misdirected write,
    /// an edited file): the journal refuses to start rather than silently
    /// dropping acknowledged records.
    #[error(
        "journal: synced data is damaged: {damage}; refusing to start. Restore the file from a backup, or \
         restart with recovery mode `quarantine` to move the data from that point to quarantine/ and go on \
         (records after it are then lost)"
    )]
    Corrupt {
        /// Where.
        damage: Box<Damage>,
    },
    /// A file in the journal directory belongs to another journal instance.
    #[error(
        "journal: {name} belongs to journal instance {found:#x}, not {expected:#x}; files of two journals are \
         mixed in one directory: move the foreign file out"
    )]
    ForeignFile {
        /// The file.
        name: String,
        /// Its instance id.
        found: u64,
        /// The instance id of the other files.
        expected: u64,
    },
    /// A file written by a newer statecast.
    #[error(
        "journal: {name} has format version {version}, this build reads version {supported}; upgrade statecast"
    )]
    UnsupportedVersion {
        /// The file.
        name: String,
        /// Its version.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A segment known to hold synced records is missing.
    #[error(
        "journal: segment {index} is missing although the checkpoint says records up to bookmark {synced_bookmark} \
         were synced; restore it from a backup, or restart with recovery mode `quarantine` to continue without it"
    )]
    MissingSegment {
        /// Index of the missing segment.
        index: u64,
        /// Synced bookmark recorded in the checkpoint.
        synced_bookmark: u64,
    },
    /// The configuration cannot work.
    #[error("journal: invalid configuration: {0}")]
    Config(String),
    /// The de-duplication state could not be read.
    #[error("journal: {0}")]
    Dedup(#[from] DedupError),
}

/// Why the journal stopped accepting writes (the I/O-failure latch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

/// Appending a record failed. Nothing of the record is in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The journal latched after an I/O failure.
    #[error(
        "journal stopped after an I/O failure ({0}); it accepts no more writes and acknowledges nothing more; \
         restart the broker to recover from what is on disk"
    )]
    Failed(Failure),
    /// No room for a new segment.
    #[error(
        "journal: could not preallocate segment {name}: {source}; free space in the journal directory or lower \
         retention (this record was not written; nothing acknowledged is lost)"
    )]
    NoSpace {
        /// Segment file that could not be created.
        name: String,
        /// The OS error (ENOSPC or similar).
        source: io::Error,
    },
    /// The record cannot fit in a segment.
    #[error(
        "journal: record of {bytes} bytes exceeds the largest record a segment holds ({max} bytes); raise segment_bytes"
    )]
    TooLarge {
        /// Record size on disk.
        bytes: u64,
        /// Largest that fits.
        max: u64,
    },
    /// The publisher already appended this sequence (or a later one).
    #[error(
        "journal: publisher {0} sequence {1} is a duplicate (highest appended: {2}); acknowledge it as a \
         duplicate and drop it"
    )]
    Duplicate(u32, u64, u64),
    /// Topic longer than 65,535 bytes.
    #[error("journal: topic of {0} bytes is longer than 65535 bytes")]
    TopicTooLong(usize),
    /// Writing to a segment failed.
    #[error(
        "journal: writing {name} failed: {source}; the journal has stopped, restart the broker"
    )]
    Storage {
        /// The file.
        name: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Reading records failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The reader's segment was removed (or archived) by retention.
    #[error(
        "journal: segment {segment} was removed by retention while reading bookmark {bookmark}; the oldest \
         retained bookmark is {oldest}: restart the replay from there or from a later bookmark"
    )]
    Removed {
        /// Removed segment.
        segment: u64,
        /// Bookmark the reader was about to read.
        bookmark: u64,
        /// Oldest bookmark still in the journal.
        oldest: u64,
    },
    /// The requested start is before the oldest retained record.
    #[error(
        "journal: bookmark {bookmark} is no longer in the journal (retention removed it); the oldest retained \
         bookmark is {oldest}"
    )]
    BeforeOldest {
        /// Requested bookmark.
        bookmark: u64,
        /// Oldest retained.
        oldest: u64,
    },
    /// The requested start is after the newest record.
    #[error("journal: bookmark {bookmark} is not in the journal (the newest is {newest})")]
    Unknown {
        /// Requested bookmark.
        bookmark: u64,
        /// Newest appended.
        newest: u64,
    },
    /// A damaged record was found; the reader does not skip it.
    #[error(
        "journal: damaged record: {0}; the reader stops here. Run journal-dump --stats to see the extent"
    )]
    Corrupt(Box<Damage>),
    /// A storage read failed.
    #[error("journal: reading {name} failed: {source}")]
    Storage {
        /// The file.
        name: String,
        /// The OS error.
        source: io::Error,
    },
}

/// A wait for the persisted watermark ended without reaching it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The journal latched: the bookmark will never be persisted by this run.
    #[error(
        "journal stopped after an I/O failure ({0}); the record is not acknowledged as persisted"
    )]
    Failed(Failure),
    /// The timeout passed first.
    #[error(
        "journal: timed out waiting for bookmark {bookmark} to be persisted (persisted: {persisted})"
    )]
    Timeout {
        /// Bookmark waited for.
        bookmark: u64,
        /// Persisted watermark at the timeout.
        persisted: u64,
    },
}

/// The publisher de-duplication store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DedupError {
    /// A file operation failed.
    #[error("de-dup state: could not {op} {name}: {source}; check the disk and free space")]
    Storage {
        /// What was being done.
        op: &'static str,
        /// The file.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// Neither state file is valid although the journal references publishers.
    #[error("de-dup state: {0}")]
    Damaged(String),
    /// The publisher name is unusable.
    #[error("de-dup state: publisher name of {0} bytes is empty or longer than 1024 bytes")]
    BadName(usize),
    /// The journal latched.
    #[error("de-dup state: the journal stopped after an I/O failure ({0}); restart the broker")]
    Failed(Failure),
}
