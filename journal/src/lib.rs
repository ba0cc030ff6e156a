//! statecast-journal: the transaction log of statecast.
//!
//! It owns: preallocated, memory-mapped segment files of records (each with
//! length, CRC32C, bookmark, timestamp, topic, flags, payload and an optional
//! publisher origin); the one appender; readers that start from a bookmark or
//! a timestamp and follow the appender across files; the flusher that turns
//! appends into a *persisted* watermark only after the covering sync returned
//! success (group commit or interval), and latches on the first sync failure;
//! retention of whole files; crash recovery as a labelled decision table
//! ([`recovery::DECISIONS`]); the publisher de-duplication table; the
//! library side of `journal-dump`; and the storage seam ([`storage::Storage`])
//! with a simulated disk ([`sim::SimStorage`]) for power-loss tests.
//!
//! It must not depend on, and knows nothing of: SOW, topic routing or
//! subscriptions, sockets, the wire protocol, or the broker. Topics and
//! payloads are bytes to it; flags are opaque. `journal/FORMAT.md` documents
//! every byte it writes.
//!
//! Entry points: [`Journal::open`] (returns the [`Journal`] handle, the
//! [`Appender`], the [`Flusher`], the [`Housekeeper`] and the
//! [`RecoveryReport`]), the [`Reader`] from [`Journal::reader`], and [`dump`].

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod appender;
mod checkpoint;
mod dedup;
pub mod dump;
mod error;
mod flusher;
pub mod format;
pub mod fuzz;
mod journal;
mod mmap;
mod reader;
pub mod recovery;
mod segment;
pub mod sim;
pub mod storage;

pub use appender::{Appended, Appender, Duplicate, NewRecord, Origin};
pub use checkpoint::CHECKPOINT_FILE;
pub use dedup::{DEDUP_FILES, DEDUP_MAGIC, DEDUP_VERSION, PublisherId, Snapshot as DedupSnapshot};
pub use error::{AppendError, Damage, DedupError, Failure, OpenError, ReadError, WaitError};
pub use flusher::{Flusher, FlusherHandle};
pub use journal::{
    Clock, Housekeeper, Journal, JournalConfig, JournalStats, Opened, PersistedHook, Publisher,
    Retention, RetentionReport, SyncPolicy,
};
pub use reader::{ReadLimit, Reader, Record, Start};
pub use recovery::{Label, RecoveryMode, RecoveryReport};
pub use segment::{parse_segment_name, segment_name};
