//! The journal handle: configuration, opening (recovery, activation), the
//! state shared by the appender, the flusher and readers, watermarks,
//! retention and the publisher table.
//!
//! # Threads and sharing
//!
//! `Journal::open` returns five things: a [`Journal`] handle (cheap to clone,
//! `Send + Sync`: readers, watermarks, retention, publishers), the one
//! [`Appender`] (`Send`, not `Clone`: whoever owns it is the only writer), the
//! one [`Flusher`] (run it on its own thread: [`Flusher::spawn`], or call
//! [`Flusher::run`] from a thread you pinned), the [`Housekeeper`] (spares
//! and retention, on an unpinned thread of its own; without it the flusher
//! does that work when idle) and the [`RecoveryReport`]. Drop every one of
//! them (after [`Journal::shutdown`] and joining the threads) to release the
//! directory lock.
//!
//! Shared state lives in `Shared`: the segment list (`RwLock`, written only
//! when the appender rolls to a new segment and when retention removes one),
//! the spare files (`Mutex`), the watermarks (atomics), the failure latch,
//! and the de-dup table (`Mutex`, touched once per append that names a
//! publisher and once per sync). Lock order: spares → segments → dedup; no
//! lock is held across a sync except the de-dup lock while a publisher
//! registers.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::appender::Appender;
use crate::checkpoint::CheckpointFile;
use crate::dedup::{DedupState, PUBLISHER_NAME_BYTES_MAX, PublisherId};
use crate::error::{AppendError, DedupError, Failure, OpenError, ReadError, WaitError};
use crate::flusher::Flusher;
use crate::format::{HEADER_PAGE_BYTES, SEGMENT_BYTES_MIN, SegmentHeader};
use crate::reader::{ReadLimit, Reader, Start};
use crate::recovery::{RecoveryMode, RecoveryOptions, RecoveryReport, recover};
use crate::segment::{Segment, lock, segment_name};
use crate::storage::{FsMode, FsStorage, SegmentFile, Storage};

/// When the flusher syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Group commit (the default): a sync starts as soon as the previous one
    /// returned and there is anything new, and covers everything appended
    /// before it started.
    #[default]
    Batch,
    /// One sync every interval. `persisted` still means synced: acks wait up
    /// to the interval.
    Interval(Duration),
}

/// What retention removes. Whole segment files only; never the active
/// segment, a spare, or a segment not behind the durable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Remove a segment once all its records are older than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest segments while all segment files (spares excluded)
    /// take more than this many bytes.
    pub max_bytes: Option<u64>,
    /// Move removed files to `archive/` in the journal directory instead of
    /// deleting them.
    pub archive: bool,
}

/// The clock the journal stamps records with (ns since the Unix epoch).
/// Tests inject their own.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        }))
    }

    /// A clock from a function.
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// Reads the clock.
    pub fn now_ns(&self) -> u64 {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Journal configuration.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// Size of each segment file (a multiple of 4096, at least 8192).
    pub segment_bytes: u64,
    /// Spare segment files kept created ahead of need (at least 1).
    pub preallocate: usize,
    /// Sync policy.
    pub sync: SyncPolicy,
    /// Retention.
    pub retention: Retention,
    /// What to do about damaged synced data at open.
    pub recovery: RecoveryMode,
    /// Read and check every segment at open, not only the un-synced ones.
    pub verify_all_on_open: bool,
    /// How often the flusher records its progress in the checkpoint file
    /// (also whenever it moves to a new segment).
    pub checkpoint_interval: Duration,
    /// A sparse-index entry every this many bytes of records.
    pub index_every_bytes: u64,
    /// The flusher's housekeeping (spares, retention) period.
    pub housekeeping_interval: Duration,
    /// Record timestamps.
    pub clock: Clock,
    /// Instance id for a journal created by this open (random when `None`);
    /// tests set it so runs are reproducible. Ignored for an existing journal.
    pub new_instance_id: Option<u64>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: 64 << 20,
            preallocate: 2,
            sync: SyncPolicy::Batch,
            retention: Retention::default(),
            recovery: RecoveryMode::Strict,
            verify_all_on_open: false,
            checkpoint_interval: Duration::from_secs(1),
            index_every_bytes: 64 << 10,
            housekeeping_interval: Duration::from_secs(1),
            clock: Clock::system(),
            new_instance_id: None,
        }
    }
}

/// How many bookmarks past the last appended one the checkpoint reserves.
/// After an unclean stop the journal continues above the reservation, so a
/// bookmark handed out for a record that was lost with the un-synced tail
/// (and may have been delivered) is never given to another record.
pub const BOOKMARK_RESERVATION: u64 = 1 << 20;

/// Called by the flusher with the new persisted watermark after each sync.
pub type PersistedHook = Box<dyn Fn(u64) + Send + Sync>;

pub(crate) struct Spares {
    pub list: VecDeque<(u64, Box<dyn SegmentFile>)>,
    pub next_index: u64,
    /// Index of a spare being created (outside the lock) by the housekeeper.
    pub in_flight: Option<u64>,
}

pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    pub config: JournalConfig,
    pub instance_id: u64,
    pub segments: RwLock<VecDeque<Arc<Segment>>>,
    pub spares: Mutex<Spares>,
    /// Signalled when a spare being created is done.
    pub spares_ready: Condvar,
    pub housekeeper_thread: OnceLock<Thread>,
    /// Last appended bookmark.
    pub appended: AtomicU64,
    /// Every bookmark ≤ this is durable.
    pub persisted: AtomicU64,
    pub failed: AtomicBool,
    pub failure: Mutex<Option<Failure>>,
    pub persist_lock: Mutex<()>,
    pub persist_cv: Condvar,
    pub hook: RwLock<Option<PersistedHook>>,
    pub flusher_thread: OnceLock<Thread>,
    pub shutdown: AtomicBool,
    pub appender_closed: AtomicBool,
    pub dedup: Mutex<DedupState>,
    /// Serialises writers of the de-dup snapshot files.
    pub dedup_writer: Mutex<()>,
    /// Set by the flusher when it enters a segment: the housekeeper writes
    /// a de-dup snapshot (off the group-commit path) before retention runs.
    pub dedup_snapshot_wanted: AtomicBool,
    /// Segment index of the last durable checkpoint (retention stays behind it).
    pub checkpoint_segment: AtomicU64,
    /// The checkpoint file: written by the flusher, and by the appender when
    /// it runs out of reserved bookmarks.
    pub checkpoint: Mutex<CheckpointFile>,
    /// Highest bookmark the appender may hand out: durable in the checkpoint.
    pub reserved: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("instance_id", &self.instance_id)
            .field("appended", &self.appended.load(Ordering::Relaxed))
            .field("persisted", &self.persisted.load(Ordering::Relaxed))
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Shared {
    /// Latches the journal after an I/O failure: no more appends, no more
    /// persisted progress, waiters released with the failure.
    pub(crate) fn latch(&self, failure: Failure) {
        tracing::error!(%failure, "journal: I/O failure; the journal stops accepting writes and acknowledging");
        let mut slot = lock(&self.failure);
        if slot.is_none() {
            *slot = Some(failure);
        }
        self.failed.store(true, Ordering::SeqCst);
        drop(slot);
        let _guard = lock(&self.persist_lock);
        self.persist_cv.notify_all();
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.failure).clone()
    }

    pub(crate) fn segment_by_index(&self, index: u64) -> Option<Arc<Segment>> {
        let segments = self
            .segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = segments.front()?.index;
        let position = index.checked_sub(first)?;
        segments.get(position as usize).cloned()
    }

    /// Takes the spare numbered `index`, creating it when there is none.
    pub(crate) fn take_spare(&self, index: u64) -> Result<Box<dyn SegmentFile>, AppendError> {
        let file = self.take_spare_locked(index);
        if let Some(thread) = self.housekeeper_thread.get() {
            thread.unpark();
        }
        file
    }

    fn take_spare_locked(&self, index: u64) -> Result<Box<dyn SegmentFile>, AppendError> {
        let mut spares = lock(&self.spares);
        while spares.in_flight.is_some_and(|in_flight| in_flight <= index) {
            spares = self
                .spares_ready
                .wait(spares)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        while let Some((stale, file)) = spares
            .list
            .pop_front_if(|(spare_index, _)| *spare_index < index)
        {
            drop(file);
            let _ = self.storage.remove(&segment_name(stale));
        }
        if let Some((_, file)) = spares
            .list
            .pop_front_if(|(spare_index, _)| *spare_index == index)
        {
            return Ok(file);
        }
        let name = segment_name(index);
        let file = self
            .storage
            .create(&name, self.config.segment_bytes)
            .map_err(|source| AppendError::NoSpace {
                name: name.clone(),
                source,
            })?;
        self.storage
            .sync_dir("")
            .map_err(|source| AppendError::NoSpace { name, source })?;
        spares.next_index = spares.next_index.max(index + 1);
        Ok(file)
    }

    /// Creates spares until `preallocate` exist. Returns how many were made.
    /// The file is created (fallocated, mapped, faulted in) outside the
    /// spares lock, so the appender is not held up unless it needs that very
    /// spare, in which case it waits for it rather than make a second one.
    pub(crate) fn ensure_spares(&self) -> std::io::Result<usize> {
        let mut made = 0;
        loop {
            let index = {
                let mut spares = lock(&self.spares);
                if spares.list.len() >= self.config.preallocate || spares.in_flight.is_some() {
                    return Ok(made);
                }
                let index = spares.next_index;
                spares.in_flight = Some(index);
                spares.next_index = index + 1;
                index
            };
            let name = segment_name(index);
            let created = self
                .storage
                .create(&name, self.config.segment_bytes)
                .and_then(|file| self.storage.sync_dir("").map(|()| file));
            let mut spares = lock(&self.spares);
            spares.in_flight = None;
            let outcome = match created {
                Ok(file) => {
                    assert!(
                        spares.list.back().is_none_or(|(last, _)| *last < index),
                        "spares are kept in index order"
                    );
                    spares.list.push_back((index, file));
                    made += 1;
                    Ok(())
                }
                Err(error) => {
                    if spares.next_index == index + 1 {
                        spares.next_index = index;
                    }
                    Err(error)
                }
            };
            drop(spares);
            self.spares_ready.notify_all();
            outcome?;
        }
    }

    pub(crate) fn activate(
        &self,
        mut file: Box<dyn SegmentFile>,
        index: u64,
        first_bookmark: u64,
        first_timestamp_ns: u64,
        previous_last_bookmark: u64,
    ) -> Result<Arc<Segment>, AppendError> {
        let header = SegmentHeader {
            instance_id: self.instance_id,
            segment_index: index,
            first_bookmark,
            first_timestamp_ns,
            capacity_bytes: file.capacity(),
            previous_last_bookmark,
        };
        file.begin_append(0);
        file.write_at(0, &[&header.encode()])
            .map_err(|source| AppendError::Storage {
                name: segment_name(index),
                source,
            })?;
        file.publish(HEADER_PAGE_BYTES);
        Ok(Segment::fresh(header, Arc::from(file)))
    }

    /// Makes bookmarks up to at least `needed` reserved (durably) before the
    /// appender hands `needed` out. The flusher normally keeps the
    /// reservation ahead; this is the appender's fallback.
    pub(crate) fn extend_reservation(&self, needed: u64) -> Result<(), Failure> {
        let mut file = lock(&self.checkpoint);
        if self.reserved.load(Ordering::Acquire) >= needed {
            return Ok(());
        }
        let last = file.last();
        let reserved_bookmark = needed - 1 + BOOKMARK_RESERVATION;
        if let Err(error) = file.write(crate::format::Checkpoint {
            reserved_bookmark,
            ..last
        }) {
            let failure = Failure(format!(
                "writing the checkpoint (bookmark reservation) failed: {error}"
            ));
            drop(file);
            self.latch(failure.clone());
            return Err(failure);
        }
        self.reserved.fetch_max(reserved_bookmark, Ordering::AcqRel);
        Ok(())
    }

    pub(crate) fn notify_persisted(&self, persisted: u64) {
        {
            let _guard = lock(&self.persist_lock);
            self.persist_cv.notify_all();
        }
        if let Some(hook) = self
            .hook
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            hook(persisted);
        }
    }
}

/// What `Journal::open` returns.
#[derive(Debug)]
pub struct Opened {
    /// The shared handle.
    pub journal: Journal,
    /// The one writer.
    pub appender: Appender,
    /// The sync loop; run it on its own thread.
    pub flusher: Flusher,
    /// Spares and retention; run it on a thread of its own (not pinned to
    /// the data path), or leave it and the flusher does this when idle.
    pub housekeeper: Housekeeper,
    /// What recovery found and did.
    pub report: RecoveryReport,
}

/// A handle to an open journal. Clone it freely.
#[derive(Debug, Clone)]
pub struct Journal {
    pub(crate) shared: Arc<Shared>,
}

/// A registered publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publisher {
    /// Its id, to pass in [`crate::Origin`].
    pub id: PublisherId,
    /// The highest sequence of its records that is persisted (0 for none).
    pub persisted_sequence: u64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Files removed (or archived), oldest first.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub bytes: u64,
    /// Oldest bookmark left.
    pub first_bookmark: u64,
}

/// Figures about the journal for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStats {
    /// Segment files holding data.
    pub segments: usize,
    /// Preallocated spares.
    pub spares: usize,
    /// Bytes of segment files holding data.
    pub segment_bytes: u64,
    /// Oldest retained bookmark.
    pub first_bookmark: u64,
    /// Last appended bookmark.
    pub appended: u64,
    /// Persisted watermark.
    pub persisted: u64,
    /// Latched failure, if any.
    pub failure: Option<String>,
}

impl Journal {
    /// Opens (creating if needed) the journal in directory `dir`, running
    /// recovery. Locks the directory against other processes.
    pub fn open(dir: &Path, config: JournalConfig) -> Result<Opened, OpenError> {
        let storage =
            FsStorage::open(dir, FsMode::Exclusive).map_err(|source| OpenError::Storage {
                op: "open",
                name: dir.display().to_string(),
                source,
            })?;
        Journal::open_with_storage(Arc::new(storage), config)
    }

    /// Opens the journal on any storage backend (tests use [`crate::sim::SimStorage`]).
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        config: JournalConfig,
    ) -> Result<Opened, OpenError> {
        if config.segment_bytes < SEGMENT_BYTES_MIN || !config.segment_bytes.is_multiple_of(4096) {
            return Err(OpenError::Config(format!(
                "segment_bytes = {} must be a multiple of 4096 and at least {SEGMENT_BYTES_MIN}",
                config.segment_bytes
            )));
        }
        if config.preallocate == 0 {
            return Err(OpenError::Config("preallocate must be at least 1".into()));
        }
        let now_ns = config.clock.now_ns();
        let recovered = recover(
            storage.as_ref(),
            RecoveryOptions {
                mode: config.recovery,
                verify_all: config.verify_all_on_open,
                index_every_bytes: config.index_every_bytes,
                now_ns,
                new_instance_id: config.new_instance_id,
            },
        )?;
        let mut report = recovered.report;
        let instance_id = recovered.instance_id;
        let last_bookmark = recovered.last_bookmark;
        let mut segments: VecDeque<Arc<Segment>> = recovered.sealed.into_iter().collect();
        let spare_next = recovered
            .spares
            .last()
            .map(|(index, _)| index + 1)
            .unwrap_or(0)
            .max(recovered.highest_index + 1)
            .max(
                recovered
                    .active
                    .as_ref()
                    .map_or(0, |a| a.header.segment_index + 1),
            );
        let shared = Arc::new(Shared {
            storage: storage.clone(),
            config: config.clone(),
            instance_id,
            segments: RwLock::new(VecDeque::new()),
            spares_ready: Condvar::new(),
            housekeeper_thread: OnceLock::new(),
            spares: Mutex::new(Spares {
                list: recovered.spares.into_iter().collect(),
                next_index: spare_next,
                in_flight: None,
            }),
            appended: AtomicU64::new(last_bookmark),
            persisted: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            persist_lock: Mutex::new(()),
            persist_cv: Condvar::new(),
            hook: RwLock::new(None),
            flusher_thread: OnceLock::new(),
            shutdown: AtomicBool::new(false),
            appender_closed: AtomicBool::new(false),
            dedup: Mutex::new(recovered.dedup),
            dedup_writer: Mutex::new(()),
            dedup_snapshot_wanted: AtomicBool::new(false),
            checkpoint_segment: AtomicU64::new(recovered.checkpoint.last().segment_index),
            reserved: AtomicU64::new(recovered.checkpoint.last().reserved_bookmark),
            checkpoint: Mutex::new(recovered.checkpoint),
        });
        let sync_error = |name: &str| {
            let name = name.to_string();
            move |source| OpenError::Storage {
                op: "sync",
                name,
                source,
            }
        };
        // Recovered bytes may still sit only in the page cache (after a
        // process kill): sync everything read at open before calling it
        // persisted.
        for segment in &segments {
            if segment.sealed.load(Ordering::Acquire)
                && segment.index >= lock(&shared.checkpoint).last().segment_index
            {
                let end = segment.end.load(Ordering::Acquire);
                segment
                    .file
                    .sync_range(0, end)
                    .map_err(sync_error(&segment.name))?;
            }
        }
        let active = match recovered.active {
            Some(active) => {
                active
                    .file
                    .sync_range(0, active.scan.end)
                    .map_err(sync_error(&segment_name(active.header.segment_index)))?;
                Segment::known(active.header, Arc::from(active.file), &active.scan, false)
            }
            None => {
                let index = {
                    let spares = lock(&shared.spares);
                    spares
                        .list
                        .front()
                        .map_or(spares.next_index, |(index, _)| *index)
                };
                let file = shared.take_spare(index).map_err(|error| match error {
                    AppendError::NoSpace { name, source } => OpenError::Storage {
                        op: "create",
                        name,
                        source,
                    },
                    other => OpenError::Config(other.to_string()),
                })?;
                let timestamp = now_ns.max(recovered.last_timestamp_ns);
                let segment = shared
                    .activate(
                        file,
                        index,
                        recovered.next_bookmark,
                        timestamp,
                        last_bookmark,
                    )
                    .map_err(|error| OpenError::Config(error.to_string()))?;
                // The flusher starts past the header: make it durable now.
                segment
                    .file
                    .sync_range(0, HEADER_PAGE_BYTES)
                    .map_err(sync_error(&segment.name))?;
                segment
            }
        };
        segments.push_back(active.clone());
        *shared
            .segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = segments;
        shared.persisted.store(last_bookmark, Ordering::Release);
        lock(&shared.dedup).persist_through(last_bookmark);
        if let Err(error) = shared.ensure_spares() {
            report
                .warnings
                .push(format!("could not preallocate spare segments: {error}"));
        }
        report.duration = report.duration.max(Duration::from_nanos(1));
        let journal = Journal {
            shared: shared.clone(),
        };
        let appender = Appender::new(
            shared.clone(),
            active.clone(),
            recovered.next_bookmark,
            recovered
                .last_timestamp_ns
                .max(active.header.first_timestamp_ns),
            recovered.force_roll,
        );
        let housekeeper = Housekeeper {
            shared: shared.clone(),
        };
        let flusher = Flusher::new(shared, active, last_bookmark);
        tracing::info!(
            first = report.first_bookmark,
            last = report.last_bookmark,
            clean = report.clean_shutdown,
            scanned = report.records_scanned,
            "journal: opened"
        );
        Ok(Opened {
            journal,
            appender,
            flusher,
            housekeeper,
            report,
        })
    }

    /// Instance id of this journal.
    pub fn instance_id(&self) -> u64 {
        self.shared.instance_id
    }

    /// Last appended bookmark (0 when the journal has never held a record).
    pub fn appended(&self) -> u64 {
        self.shared.appended.load(Ordering::Acquire)
    }

    /// The last bookmark the durable checkpoint covers. Recovery treats
    /// damage up to it as damage in synced data (refused, or quarantined),
    /// and damage after it as a torn tail (cut and reported): the flusher
    /// writes a checkpoint when it enters a segment and at most every
    /// `checkpoint_interval`, not at every sync.
    pub fn checkpointed(&self) -> u64 {
        lock(&self.shared.checkpoint).last().bookmark
    }

    /// The persisted watermark: every bookmark ≤ this is durable (its sync
    /// returned success). Never moves back; stops moving after a failure.
    pub fn persisted(&self) -> u64 {
        self.shared.persisted.load(Ordering::Acquire)
    }

    /// Oldest bookmark still in the journal.
    pub fn first_bookmark(&self) -> u64 {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        segments
            .front()
            .map_or(1, |segment| segment.header.first_bookmark)
    }

    /// Blocks until `bookmark` is persisted, the journal fails, or `timeout`.
    pub fn wait_persisted(&self, bookmark: u64, timeout: Duration) -> Result<u64, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.shared.persist_lock);
        loop {
            let persisted = self.persisted();
            if persisted >= bookmark {
                return Ok(persisted);
            }
            if let Some(failure) = self.shared.failure() {
                return Err(WaitError::Failed(failure));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout {
                    bookmark,
                    persisted,
                });
            }
            guard = self
                .shared
                .persist_cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Installs the function the flusher calls (on its thread) with the new
    /// persisted watermark after every sync that advanced it. Keep it short:
    /// hand the value to another thread (a channel, a mio `Waker`), and do
    /// not call `set_persisted_hook` from inside it (it holds the hook's lock).
    pub fn set_persisted_hook(&self, hook: PersistedHook) {
        *self
            .shared
            .hook
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(hook);
    }

    /// `Ok` while healthy; the latched failure after an I/O error.
    pub fn health(&self) -> Result<(), Failure> {
        match self.shared.failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// A reader from `start` that serves every appended record.
    pub fn reader(&self, start: Start) -> Result<Reader, ReadError> {
        Reader::open(self.shared.clone(), start, ReadLimit::Appended)
    }

    /// A reader from `start` that serves only persisted records.
    pub fn reader_with_limit(&self, start: Start, limit: ReadLimit) -> Result<Reader, ReadError> {
        Reader::open(self.shared.clone(), start, limit)
    }

    /// Asks the flusher to finish: final sync, and a clean-shutdown
    /// checkpoint if the appender was closed (dropped) first.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(thread) = self.shared.flusher_thread.get() {
            thread.unpark();
        }
        if let Some(thread) = self.shared.housekeeper_thread.get() {
            thread.unpark();
        }
    }

    /// Registers a publisher name (or looks it up) and returns its id and
    /// highest persisted sequence. A new name is made durable before this
    /// returns.
    pub fn register_publisher(&self, name: &str) -> Result<Publisher, DedupError> {
        if name.is_empty() || name.len() > PUBLISHER_NAME_BYTES_MAX {
            return Err(DedupError::BadName(name.len()));
        }
        if let Some(failure) = self.shared.failure() {
            return Err(DedupError::Failed(failure));
        }
        {
            let dedup = lock(&self.shared.dedup);
            if let Some(id) = dedup.id_of(name) {
                return Ok(Publisher {
                    id,
                    persisted_sequence: dedup.persisted_sequence(id).unwrap_or(0),
                });
            }
        }
        // A new name: durable before it is used (writers first, then the
        // state, the order `Shared::write_dedup_snapshot` takes them in).
        let _writer = lock(&self.shared.dedup_writer);
        let mut dedup = lock(&self.shared.dedup);
        if let Some(id) = dedup.id_of(name) {
            return Ok(Publisher {
                id,
                persisted_sequence: dedup.persisted_sequence(id).unwrap_or(0),
            });
        }
        let id = dedup.add(name);
        let pending = dedup.prepare_snapshot(self.shared.instance_id);
        if let Err(error) =
            crate::dedup::write_snapshot_file(self.shared.storage.as_ref(), &pending)
        {
            dedup.remove_last(name);
            return Err(error);
        }
        dedup.snapshot_written(&pending);
        Ok(Publisher {
            id,
            persisted_sequence: 0,
        })
    }

    /// Highest persisted sequence of a publisher.
    pub fn persisted_sequence(&self, publisher: PublisherId) -> Option<u64> {
        lock(&self.shared.dedup).persisted_sequence(publisher)
    }

    /// Every publisher: (id, name, highest persisted sequence).
    pub fn publishers(&self) -> Vec<(PublisherId, String, u64)> {
        lock(&self.shared.dedup).all()
    }

    /// Figures for monitoring.
    pub fn stats(&self) -> JournalStats {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        JournalStats {
            segments: segments.len(),
            spares: lock(&self.shared.spares).list.len(),
            segment_bytes: segments.iter().map(|segment| segment.capacity()).sum(),
            first_bookmark: segments
                .front()
                .map_or(1, |segment| segment.header.first_bookmark),
            appended: self.appended(),
            persisted: self.persisted(),
            failure: self.shared.failure().map(|failure| failure.0),
        }
    }

    /// Creates spare segments until `preallocate` exist (each fallocated,
    /// mapped and faulted in, which is most of the cost of first writes into
    /// a file). The flusher does this between syncs when spares run short; a
    /// broker that wants the flusher to do nothing but sync can call this
    /// from a housekeeping thread of its own. Returns how many were created.
    pub fn prepare_spares(&self) -> std::io::Result<usize> {
        self.shared.ensure_spares()
    }

    /// Runs retention now (the flusher also runs it every housekeeping
    /// interval). Removes whole segments, oldest first, that are aged out or
    /// over the byte limit, and only when they are sealed, persisted, behind
    /// the durable checkpoint and the de-dup snapshot.
    pub fn enforce_retention(&self) -> std::io::Result<RetentionReport> {
        enforce_retention(&self.shared)
    }
}

/// Keeps spares created and runs retention, off the data path: woken by the
/// appender whenever it takes a spare, and every `housekeeping_interval`.
#[derive(Debug)]
pub struct Housekeeper {
    shared: Arc<Shared>,
}

impl Housekeeper {
    /// Runs until [`Journal::shutdown`]. Errors (a full disk) are logged and
    /// retried at the next wake-up; appends report them when they need a
    /// spare that could not be made.
    pub fn run(self) {
        let _ = self.shared.housekeeper_thread.set(std::thread::current());
        while !self.shared.shutdown.load(Ordering::SeqCst) {
            self.step();
            std::thread::park_timeout(self.shared.config.housekeeping_interval);
        }
    }

    /// Starts [`Housekeeper::run`] on a thread named `statecast-journal-housekeeper`.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("statecast-journal-housekeeper".into())
            .spawn(move || self.run())
    }

    /// One round: spares, the de-dup snapshot the flusher asked for, then
    /// retention.
    pub fn step(&self) {
        if let Err(error) = self.shared.ensure_spares() {
            tracing::warn!(%error, "journal: could not preallocate a spare segment");
        }
        self.shared.write_wanted_dedup_snapshot();
        if let Err(error) = enforce_retention(&self.shared) {
            tracing::warn!(%error, "journal: retention failed");
        }
    }
}

impl Shared {
    /// Writes the de-dup table's snapshot (when it has publishers).
    pub(crate) fn write_dedup_snapshot(&self) -> Result<(), crate::error::DedupError> {
        let _writer = lock(&self.dedup_writer);
        let pending = {
            let dedup = lock(&self.dedup);
            if dedup.len() == 0 {
                return Ok(());
            }
            dedup.prepare_snapshot(self.instance_id)
        };
        crate::dedup::write_snapshot_file(self.storage.as_ref(), &pending)?;
        lock(&self.dedup).snapshot_written(&pending);
        Ok(())
    }

    /// Writes the snapshot the flusher asked for, if it did.
    pub(crate) fn write_wanted_dedup_snapshot(&self) {
        if self.dedup_snapshot_wanted.swap(false, Ordering::AcqRel)
            && let Err(error) = self.write_dedup_snapshot()
        {
            // Asked again at the next round; retention waits for it.
            self.dedup_snapshot_wanted.store(true, Ordering::Release);
            tracing::warn!(%error, "journal: could not write the de-dup snapshot; retention waits for it");
        }
    }
}

pub(crate) fn enforce_retention(shared: &Shared) -> std::io::Result<RetentionReport> {
    shared.write_wanted_dedup_snapshot();
    let retention = shared.config.retention;
    let mut report = RetentionReport::default();
    if retention.max_age.is_none() && retention.max_bytes.is_none() {
        return Ok(report);
    }
    let now_ns = shared.config.clock.now_ns();
    let persisted = shared.persisted.load(Ordering::Acquire);
    let checkpoint_segment = shared.checkpoint_segment.load(Ordering::Acquire);
    let dedup_bookmark = {
        let dedup = lock(&shared.dedup);
        if dedup.len() == 0 {
            u64::MAX
        } else {
            dedup.snapshot_bookmark()
        }
    };
    loop {
        let mut segments = shared
            .segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (Some(oldest), Some(next)) = (segments.front(), segments.get(1)) else {
            break;
        };
        let total: u64 = segments.iter().map(|segment| segment.capacity()).sum();
        let aged = retention.max_age.is_some_and(|age| {
            next.header
                .first_timestamp_ns
                .saturating_add(age.as_nanos() as u64)
                <= now_ns
        });
        let over = retention.max_bytes.is_some_and(|max| total > max);
        let last = oldest.last_bookmark.load(Ordering::Acquire);
        let safe = oldest.sealed.load(Ordering::Acquire)
            && last <= persisted
            && oldest.index < checkpoint_segment
            && last <= dedup_bookmark;
        if !(aged || over) || !safe {
            break;
        }
        let Some(segment) = segments.pop_front() else {
            break;
        };
        drop(segments);
        segment.removed.store(true, Ordering::Release);
        if retention.archive {
            shared
                .storage
                .rename(&segment.name, &format!("archive/{}", segment.name))?;
        } else {
            shared.storage.remove(&segment.name)?;
        }
        report.bytes += segment.capacity();
        report.removed.push(segment.name.clone());
        tracing::info!(file = %segment.name, archived = retention.archive, "journal: retention removed a segment");
    }
    if !report.removed.is_empty() {
        shared.storage.sync_dir("")?;
        if retention.archive {
            shared.storage.sync_dir("archive")?;
        }
    }
    let segments = shared
        .segments
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    report.first_bookmark = segments
        .front()
        .map_or(1, |segment| segment.header.first_bookmark);
    Ok(report)
}
