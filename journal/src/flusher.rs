//! The flusher: makes appended records durable and releases the persisted
//! watermark, in order, only after the sync that covers them returned
//! success.
//!
//! One cycle reads, for its current segment, `sealed` then `last_bookmark`
//! then `end` (Acquire; the appender stores them in the reverse order), syncs
//! the bytes from where the previous cycle stopped to `end`, moves on to the
//! next segment while the current one is sealed (syncing the new one from
//! byte 0, header page included), then applies the de-dup origins up to the
//! covered bookmark, stores the watermark (Release), wakes waiters and calls
//! the persisted hook.
//!
//! In batch mode (group commit) a cycle starts as soon as the previous one
//! returned and anything new was appended; the appender unparks the thread.
//! In interval mode a cycle starts every interval.
//!
//! A failed sync is fatal: the journal latches (appends fail, the watermark
//! never moves again, waiters get the failure, [`crate::Journal::health`]
//! reports it) and [`Flusher::run`] returns the failure. It never retries: after a
//! failed fsync Linux may have dropped the dirty pages, so a retry could
//! “succeed” for data that is gone.
//!
//! Between cycles the flusher also does the housekeeping: it records a
//! checkpoint (whenever it entered a new segment, and at least every
//! `checkpoint_interval`), keeps `preallocate` spare segments created, and
//! runs retention.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::Failure;
use crate::format::Checkpoint;
use crate::journal::{Shared, SyncPolicy, enforce_retention};
use crate::segment::{Segment, lock};

/// The flusher. Run it with [`Flusher::run`] on a thread of your own (the
/// broker pins it) or [`Flusher::spawn`]; tests drive it step by step with
/// [`Flusher::sync_now`].
pub struct Flusher {
    shared: Arc<Shared>,
    cursor: Arc<Segment>,
    synced_offset: u64,
    covered: u64,
    checkpoint_at: Instant,
    housekeeping_at: Instant,
    spares_failed: bool,
    sync_latency: Option<Box<dyn FnMut(Duration) + Send>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("segment", &self.cursor.index)
            .field("synced_offset", &self.synced_offset)
            .field("covered", &self.covered)
            .finish()
    }
}

/// A flusher running on its own thread.
#[derive(Debug)]
pub struct FlusherHandle {
    thread: JoinHandle<Result<(), Failure>>,
}

impl FlusherHandle {
    /// Waits for the flusher to stop (after [`crate::Journal::shutdown`] or a
    /// failure) and returns how it ended.
    pub fn join(self) -> Result<(), Failure> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Failure("the flusher thread panicked".into())))
    }
}

impl Flusher {
    pub(crate) fn new(shared: Arc<Shared>, cursor: Arc<Segment>, covered: u64) -> Flusher {
        let synced_offset = cursor.end.load(Ordering::Acquire);
        let now = Instant::now();
        Flusher {
            shared,
            cursor,
            synced_offset,
            covered,
            checkpoint_at: now,
            housekeeping_at: now,
            spares_failed: false,
            sync_latency: None,
        }
    }

    /// Installs a function called with the duration of every sync cycle that
    /// synced anything (for latency histograms).
    pub fn on_sync_latency(&mut self, observe: impl FnMut(Duration) + Send + 'static) {
        self.sync_latency = Some(Box::new(observe));
    }

    /// Starts [`Flusher::run`] on a new thread named `statecast-flusher`.
    pub fn spawn(self) -> std::io::Result<FlusherHandle> {
        let thread = thread::Builder::new()
            .name("statecast-flusher".into())
            .spawn(move || self.run())?;
        Ok(FlusherHandle { thread })
    }

    /// The loop: sync per the policy until [`crate::Journal::shutdown`],
    /// then a final sync and (if the appender was closed) a clean-shutdown
    /// checkpoint. Returns the failure if a sync failed.
    pub fn run(mut self) -> Result<(), Failure> {
        let _ = self.shared.flusher_thread.set(thread::current());
        let idle = self
            .shared
            .config
            .housekeeping_interval
            .min(Duration::from_millis(100));
        let mut next_tick = Instant::now();
        loop {
            if let Some(failure) = self.shared.failure() {
                return Err(failure);
            }
            let shutdown = self.shared.shutdown.load(Ordering::SeqCst);
            if shutdown {
                return self.finish();
            }
            match self.shared.config.sync {
                SyncPolicy::Batch => {
                    if self.shared.appended.load(Ordering::Acquire) > self.covered {
                        self.sync_now()?;
                    } else {
                        self.housekeeping();
                        // Unpark tokens make this race-free: an append after
                        // the check above makes park return at once.
                        thread::park_timeout(idle);
                    }
                }
                SyncPolicy::Interval(interval) => {
                    let now = Instant::now();
                    if now >= next_tick {
                        self.sync_now()?;
                        next_tick = now + interval;
                    }
                    self.housekeeping();
                    let now = Instant::now();
                    if now < next_tick {
                        thread::park_timeout((next_tick - now).min(idle));
                    }
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), Failure> {
        self.sync_now()?;
        let clean = self.shared.appender_closed.load(Ordering::SeqCst)
            && self.shared.appended.load(Ordering::Acquire) == self.covered;
        self.write_checkpoint(clean)?;
        if let Err(error) = self.shared.write_dedup_snapshot() {
            tracing::warn!(%error, "journal: could not write the de-dup snapshot at shutdown");
        }
        Ok(())
    }

    /// One sync cycle now: syncs everything appended so far and advances
    /// the persisted watermark. Returns the watermark.
    pub fn sync_now(&mut self) -> Result<u64, Failure> {
        if let Some(failure) = self.shared.failure() {
            return Err(failure);
        }
        let started = Instant::now();
        let mut covered = self.covered;
        let mut synced_any = false;
        loop {
            let segment = self.cursor.clone();
            let sealed = segment.sealed.load(Ordering::Acquire);
            let last = segment.last_bookmark.load(Ordering::Acquire);
            let end = segment.end.load(Ordering::Acquire);
            if end > self.synced_offset {
                if let Err(error) = segment
                    .file
                    .sync_range(self.synced_offset, end - self.synced_offset)
                {
                    let failure = Failure(format!(
                        "sync of {} bytes {}..{end} failed: {error}",
                        segment.name, self.synced_offset
                    ));
                    self.shared.latch(failure.clone());
                    return Err(failure);
                }
                synced_any = true;
                self.synced_offset = end;
            }
            covered = covered.max(last);
            if !sealed {
                break;
            }
            // Sealed and synced to its end: it is never written again. Its
            // staging buffer (up to 1 MiB) and any pages readers faulted in
            // leave the process; the bytes stay in the file and page cache.
            if let Err(error) = segment.file.release_write_buffer() {
                // Nothing was staged after the sync above; an error here
                // would mean bytes written after the seal — a bug.
                let failure = Failure(format!(
                    "releasing the write buffer of sealed {} failed: {error}",
                    segment.name
                ));
                self.shared.latch(failure.clone());
                return Err(failure);
            }
            segment.file.release_pages();
            // Go on with the successor, from byte 0 (its header page).
            let Some(successor) = self.shared.segment_by_index(segment.index + 1) else {
                let failure = Failure(format!(
                    "{} is sealed but its successor (segment {}) is not in the segment list",
                    segment.name,
                    segment.index + 1
                ));
                self.shared.latch(failure.clone());
                return Err(failure);
            };
            self.cursor = successor;
            self.synced_offset = 0;
        }
        let entered_segment =
            lock(&self.shared.checkpoint).last().segment_index != self.cursor.index;
        if covered > self.covered {
            self.covered = covered;
            lock(&self.shared.dedup).persist_through(covered);
            let previous = self.shared.persisted.swap(covered, Ordering::AcqRel);
            assert!(
                previous <= covered,
                "the persisted watermark moved back from {previous} to {covered}"
            );
            self.shared.notify_persisted(covered);
        }
        if synced_any && let Some(observe) = self.sync_latency.as_mut() {
            observe(started.elapsed());
        }
        if entered_segment || self.checkpoint_at.elapsed() >= self.shared.config.checkpoint_interval
        {
            self.write_checkpoint(false)?;
            if entered_segment {
                // Off the group-commit path: creating, syncing and mapping
                // a file here delayed every persisted ack behind it by
                // 100–350 ms at each segment switch (benches/RESULTS.md).
                self.shared
                    .dedup_snapshot_wanted
                    .store(true, Ordering::Release);
                if let Some(thread) = self.shared.housekeeper_thread.get() {
                    thread.unpark();
                }
            }
        }
        Ok(self.covered)
    }

    /// Records the synced position, and extends the bookmark reservation to
    /// `BOOKMARK_RESERVATION` past the last appended bookmark (never lowers it).
    fn write_checkpoint(&mut self, clean: bool) -> Result<(), Failure> {
        let mut file = lock(&self.shared.checkpoint);
        let reserved_bookmark = file.last().reserved_bookmark.max(
            self.shared.appended.load(Ordering::Acquire) + crate::journal::BOOKMARK_RESERVATION,
        );
        let checkpoint = Checkpoint {
            instance_id: self.shared.instance_id,
            generation: 0,
            segment_index: self.cursor.index,
            offset: self.synced_offset,
            bookmark: self.covered,
            clean,
            reserved_bookmark,
        };
        let written = file.write(checkpoint);
        drop(file);
        if written.is_ok() {
            self.shared
                .reserved
                .fetch_max(reserved_bookmark, Ordering::AcqRel);
        }
        if let Err(error) = written {
            let failure = Failure(format!("writing the checkpoint failed: {error}"));
            self.shared.latch(failure.clone());
            return Err(failure);
        }
        self.checkpoint_at = Instant::now();
        self.shared
            .checkpoint_segment
            .store(self.cursor.index, Ordering::Release);
        Ok(())
    }

    /// Spares and retention when idle, at most once per housekeeping
    /// interval (and at once when spares run short), unless a
    /// [`crate::Housekeeper`] thread runs: then it does this, and the
    /// flusher's thread does nothing but sync.
    pub fn housekeeping(&mut self) {
        if self.shared.housekeeper_thread.get().is_some() {
            return;
        }
        let short = lock(&self.shared.spares).list.len() < self.shared.config.preallocate;
        let due = self.housekeeping_at.elapsed() >= self.shared.config.housekeeping_interval;
        if !(due || short && !self.spares_failed) {
            return;
        }
        self.housekeeping_at = Instant::now();
        self.spares_failed = false;
        if let Err(error) = self.shared.ensure_spares() {
            // Retried at the next interval, not on every idle wake-up.
            self.spares_failed = true;
            tracing::warn!(%error, "journal: could not preallocate a spare segment");
        }
        if let Err(error) = enforce_retention(&self.shared) {
            tracing::warn!(%error, "journal: retention failed");
        }
    }
}
