//! File work a durable store hands to another thread, so that the thread
//! that writes the store (the broker's processor, which routes every publish
//! of its topics) does not wait for the disk: creating the next slab file
//! (`fallocate`, `fsync` of the file and its folder), syncing sealed slabs
//! and checkpoints, and removing compacted slabs.
//!
//! This crate starts no thread. A store given a [`JobSink`]
//! ([`SowStore::set_job_sink`](crate::SowStore::set_job_sink)) passes
//! [`SowJob`]s to it and whoever owns the sink runs them ([`SowJob::run`]) on
//! a thread of its own; results come back through shared state the store
//! polls. A store without a sink does the same work itself, in line.
//!
//! What keeps recovery right: a spare slab is created under the sequence
//! number the store will give its next slab (one spare at a time, so it is
//! always the newest file; a file with a header and no record is removed by
//! recovery like any slab a checkpoint does not list), and a checkpoint
//! record is appended only after every byte it covers was synced, and counts
//! only once it is synced itself (see `SowStore::poll_checkpoint`).
//!
//! **Emptied slabs are reused.** A slab compaction emptied that no
//! checkpoint record lists (none was written while it existed, and none in
//! progress noted it) holds nothing recovery would keep: it is newer than
//! every checkpoint, so its records would be discarded. Instead of being
//! removed (after the next checkpoint) while a new file is made for the next
//! slab, it is made the next spare: its header zeroed durably and its
//! records zeroed in the page cache ([`SowJob::reuse`]), then renamed to the
//! next sequence number with a new header. Writing into a new file takes
//! page-cache pages the file never had, which the kernel (and, on a VM, the
//! host) must allocate and zero: that was the largest part of the
//! processor's cost of a SOW update (benches/RESULTS.md, 2026-12-04 "SOW
//! upsert cost"). A reused file's pages are still in the page cache, so the
//! processor's `pwrite`s only copy. A slab a checkpoint listed is kept the
//! same way (instead of removed) once a checkpoint that does not list it
//! has completed — older than that checkpoint, it is never read again —
//! unless it holds a checkpoint record.
//!
//! What a power cut can leave, and why recovery is right with it: a file
//! with a zeroed header (before or after the rename) holds nothing and is
//! skipped wherever it lies before the checkpoint recovery finds; a
//! renamed file with its new header may show on disk, past what was
//! synced, bytes of its earlier lives — records only (a file that held a
//! checkpoint record is never reused), which lie after the last checkpoint
//! and are discarded like any record there.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use statecast_journal::storage::{SegmentFile, Storage};

use crate::format::{FILE_HEADER_BYTES, FileHeader, encode_file_header, slab_name};

/// Where a store sends its jobs; the owner runs each on another thread.
#[derive(Clone)]
pub struct JobSink(Arc<dyn Fn(SowJob) + Send + Sync>);

impl JobSink {
    /// A sink that calls `send` with each job (which should hand it to a
    /// thread that calls [`SowJob::run`], in the order sent).
    pub fn new(send: impl Fn(SowJob) + Send + Sync + 'static) -> JobSink {
        JobSink(Arc::new(send))
    }

    pub(crate) fn send(&self, job: SowJob) {
        (self.0)(job);
    }
}

impl fmt::Debug for JobSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobSink")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates slab file `seq` with its header durable and its directory entry
/// synced.
pub(crate) fn create_slab_file(
    storage: &dyn Storage,
    seq: u64,
    capacity: u32,
    topic_hash: u64,
) -> io::Result<Box<dyn SegmentFile>> {
    let file = storage.create(&slab_name(seq), u64::from(capacity))?;
    start_slab_file(storage, file, seq, topic_hash)
}

/// Writes `file`'s header as slab `seq`, makes it durable and syncs the
/// folder (the file's new name with it).
fn start_slab_file(
    storage: &dyn Storage,
    mut file: Box<dyn SegmentFile>,
    seq: u64,
    topic_hash: u64,
) -> io::Result<Box<dyn SegmentFile>> {
    file.begin_append(0);
    let header = encode_file_header(&FileHeader {
        seq,
        capacity: file.capacity(),
        topic_hash,
    });
    file.write_at(0, &[&header])?;
    file.publish(FILE_HEADER_BYTES as u64);
    file.sync_range(0, FILE_HEADER_BYTES as u64)?;
    storage.sync_dir("")?;
    Ok(file)
}

/// Emptied slabs kept for reuse as spares, per store (beyond that they
/// are removed as usual).
pub(crate) const REUSE_MAX: usize = 8;

/// Zeros to write from.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// A slab compaction emptied: removed once a checkpoint that does not list
/// it has completed, or reused at once if none lists it.
#[derive(Debug)]
pub(crate) struct Emptied {
    pub(crate) seq: u64,
    /// Where its records ended.
    pub(crate) end: u32,
    pub(crate) file: Arc<dyn SegmentFile>,
    /// It may be reused: it never held a checkpoint record and has the
    /// slab size of new slabs.
    pub(crate) reusable: bool,
}

/// Prepares emptied slab file `seq` for reuse under its own name: its
/// header zeroed durably (from then on it holds nothing for recovery), its
/// records (`FILE_HEADER_BYTES..end`) zeroed in the page cache only — what
/// a power cut keeps of them does not matter (module doc); they go to the
/// disk, if at all, with the next life's syncs. Bytes past `end` are zero
/// in the page cache already (never written in this life, zeroed after the
/// last).
fn zero_for_reuse(storage: &dyn Storage, seq: u64, end: u32) -> io::Result<()> {
    let mut file = storage.open(&slab_name(seq))?;
    let end = u64::from(end).min(file.capacity());
    file.begin_append(0);
    let header = ZEROS.get(..FILE_HEADER_BYTES).unwrap_or_default();
    file.write_at(0, &[header])?;
    file.sync_range(0, FILE_HEADER_BYTES as u64)?;
    let mut at = FILE_HEADER_BYTES as u64;
    while at < end {
        let n = (end - at).min(ZEROS.len() as u64);
        file.write_at(at, &[ZEROS.get(..n as usize).unwrap_or_default()])?;
        at += n;
    }
    file.release_write_buffer()
}

/// Makes file `from`, zeroed by [`zero_for_reuse`], slab file `seq`:
/// renamed, its header written and synced, the folder synced.
fn reuse_slab_file(
    storage: &dyn Storage,
    from: u64,
    seq: u64,
    topic_hash: u64,
) -> io::Result<Box<dyn SegmentFile>> {
    let name = slab_name(seq);
    storage.rename(&slab_name(from), &name)?;
    let file = storage.open(&name)?;
    start_slab_file(storage, file, seq, topic_hash)
}

/// Emptied slab files for reuse: zeroed ones by sequence number (their
/// names) and capacity, and how many are promised (a job on its way).
#[derive(Debug, Default)]
struct Reusable {
    files: Vec<(u64, u64)>,
    promised: usize,
}

const PENDING: u8 = 0;
const SUCCEEDED: u8 = 1;
const FAILED: u8 = 2;

/// The outcome of one job, waited for or polled by the store.
#[derive(Debug, Default)]
pub(crate) struct Done {
    /// Set by whoever does the work: the job's thread, or the store when
    /// it needs the result before the thread got to it.
    claimed: AtomicBool,
    /// `PENDING`, `SUCCEEDED` or `FAILED`: polled without the lock.
    state: AtomicU8,
    error: Mutex<Option<String>>,
    finished: Condvar,
}

impl Done {
    pub(crate) fn new() -> Arc<Done> {
        Arc::new(Done::default())
    }

    /// Whether the caller is the one to do the work (first to ask).
    pub(crate) fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn finish(&self, result: io::Result<()>) {
        let mut error = lock(&self.error);
        let state = match result {
            Ok(()) => SUCCEEDED,
            Err(e) => {
                *error = Some(e.to_string());
                FAILED
            }
        };
        self.state.store(state, Ordering::Release);
        drop(error);
        self.finished.notify_all();
    }

    /// `None` while the job runs.
    pub(crate) fn poll(&self) -> Option<io::Result<()>> {
        match self.state.load(Ordering::Acquire) {
            PENDING => None,
            SUCCEEDED => Some(Ok(())),
            _ => Some(Err(io::Error::other(
                lock(&self.error)
                    .clone()
                    .unwrap_or_else(|| "background job failed".into()),
            ))),
        }
    }

    /// Blocks until the job has run.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let mut error = lock(&self.error);
        while self.state.load(Ordering::Acquire) == PENDING {
            error = self
                .finished
                .wait(error)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(error);
        self.poll().unwrap_or(Ok(()))
    }
}

/// The next slab file, made ahead of need.
#[derive(Default)]
enum Spare {
    #[default]
    None,
    /// Asked for; no thread has started on it.
    Wanted(u64),
    /// A thread is creating it.
    Making(u64),
    Ready(u64, Box<dyn SegmentFile>),
}

/// One store's spare slab, shared with the job that makes it.
#[derive(Default)]
pub(crate) struct SpareSlot {
    spare: Mutex<Spare>,
    changed: Condvar,
    reusable: Mutex<Reusable>,
}

impl fmt::Debug for SpareSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*lock(&self.spare) {
            Spare::None => "none".to_string(),
            Spare::Wanted(seq) => format!("wanted {seq}"),
            Spare::Making(seq) => format!("making {seq}"),
            Spare::Ready(seq, _) => format!("ready {seq}"),
        };
        f.debug_struct("SpareSlot").field("spare", &state).finish()
    }
}

impl SpareSlot {
    pub(crate) fn want(&self, seq: u64) {
        *lock(&self.spare) = Spare::Wanted(seq);
    }

    /// The spare for slab `seq`, if one was made: waits when a thread is
    /// making it right now (it would take as long to make it here);
    /// otherwise calls off any request, so that no thread creates the file
    /// the caller is about to create itself.
    pub(crate) fn take(&self, seq: u64) -> Option<Box<dyn SegmentFile>> {
        let mut spare = lock(&self.spare);
        loop {
            match std::mem::take(&mut *spare) {
                Spare::Ready(s, file) if s == seq => return Some(file),
                Spare::Making(s) if s == seq => {
                    *spare = Spare::Making(s);
                    spare = self
                        .changed
                        .wait(spare)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                _ => return None,
            }
        }
    }

    /// Promises an emptied slab for reuse (a [`SowJob::reuse`] to follow);
    /// false when enough are kept already.
    pub(crate) fn promise_reuse(&self) -> bool {
        let mut reusable = lock(&self.reusable);
        let ok = reusable.files.len() + reusable.promised < REUSE_MAX;
        reusable.promised += usize::from(ok);
        ok
    }

    /// Settles a promise: the file of slab `seq` (`size` bytes) is kept for
    /// reuse if its zeroing succeeded. Returns whether it did.
    fn zeroed(&self, seq: u64, size: u64, zeroing: io::Result<()>) -> bool {
        let mut reusable = lock(&self.reusable);
        reusable.promised = reusable.promised.saturating_sub(1);
        let ok = zeroing.is_ok();
        if ok {
            reusable.files.push((seq, size));
        }
        ok
    }

    /// Whether a spare for `seq` is ready (tests).
    pub(crate) fn is_ready(&self, seq: u64) -> bool {
        matches!(&*lock(&self.spare), Spare::Ready(s, _) if *s == seq)
    }
}

/// Syncs every written byte of each file.
pub(crate) fn sync_files(files: &[Arc<dyn SegmentFile>]) -> io::Result<()> {
    files
        .iter()
        .try_for_each(|file| file.sync_range(0, file.capacity()))
}

/// One piece of file work for another thread. See the module doc.
pub struct SowJob {
    kind: JobKind,
}

enum JobKind {
    Spare {
        slot: Arc<SpareSlot>,
        storage: Arc<dyn Storage>,
        seq: u64,
        capacity: u32,
        topic_hash: u64,
    },
    Sync {
        files: Vec<Arc<dyn SegmentFile>>,
        done: Arc<Done>,
    },
    Remove {
        storage: Arc<dyn Storage>,
        /// Oldest first: each removal is durable before the next.
        files: Vec<Emptied>,
        done: Arc<Done>,
        /// Where files kept for reuse go.
        slot: Arc<SpareSlot>,
    },
    Reuse {
        storage: Arc<dyn Storage>,
        slot: Arc<SpareSlot>,
        emptied: Emptied,
    },
}

impl fmt::Debug for SowJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            JobKind::Spare { seq, .. } => write!(f, "SowJob::Spare({seq})"),
            JobKind::Sync { files, .. } => write!(f, "SowJob::Sync({} files)", files.len()),
            JobKind::Remove { files, .. } => write!(f, "SowJob::Remove({} files)", files.len()),
            JobKind::Reuse { emptied, .. } => write!(f, "SowJob::Reuse({})", emptied.seq),
        }
    }
}

impl SowJob {
    pub(crate) fn spare(
        slot: Arc<SpareSlot>,
        storage: Arc<dyn Storage>,
        seq: u64,
        capacity: u32,
        topic_hash: u64,
    ) -> SowJob {
        SowJob {
            kind: JobKind::Spare {
                slot,
                storage,
                seq,
                capacity,
                topic_hash,
            },
        }
    }

    pub(crate) fn sync(files: Vec<Arc<dyn SegmentFile>>, done: Arc<Done>) -> SowJob {
        SowJob {
            kind: JobKind::Sync { files, done },
        }
    }

    pub(crate) fn remove(
        storage: Arc<dyn Storage>,
        files: Vec<Emptied>,
        done: Arc<Done>,
        slot: Arc<SpareSlot>,
    ) -> SowJob {
        SowJob {
            kind: JobKind::Remove {
                storage,
                files,
                done,
                slot,
            },
        }
    }

    /// Makes `emptied` (a slab no checkpoint lists, promised with
    /// [`SpareSlot::promise_reuse`]) ready to be a later spare; if that
    /// fails, removes it.
    pub(crate) fn reuse(
        storage: Arc<dyn Storage>,
        slot: Arc<SpareSlot>,
        emptied: Emptied,
    ) -> SowJob {
        SowJob {
            kind: JobKind::Reuse {
                storage,
                slot,
                emptied,
            },
        }
    }

    /// Whether to run it before the jobs already waiting: a spare slab is
    /// needed by the next roll, and a writer that finds it not started
    /// creates the file itself, on its own thread. The others (syncs,
    /// removals) only delay a checkpoint's completion.
    pub fn is_urgent(&self) -> bool {
        matches!(self.kind, JobKind::Spare { .. } | JobKind::Reuse { .. })
    }

    /// Does the work (blocking on the disk). Results go back to the store
    /// that asked; a store that is gone leaves at most an empty spare slab
    /// file, which the next recovery removes.
    pub fn run(self) {
        match self.kind {
            JobKind::Spare {
                slot,
                storage,
                seq,
                capacity,
                topic_hash,
            } => {
                {
                    let mut spare = lock(&slot.spare);
                    if !matches!(*spare, Spare::Wanted(s) if s == seq) {
                        return;
                    }
                    *spare = Spare::Making(seq);
                }
                let reuse = {
                    let mut reusable = lock(&slot.reusable);
                    let files = &mut reusable.files;
                    files
                        .iter()
                        .position(|&(_, size)| size == u64::from(capacity))
                        .map(|i| files.swap_remove(i).0)
                };
                // A failed reuse leaves a zeroed file under either name:
                // removed under the old one (if the rename failed), replaced
                // by the new file under `seq`.
                let made = match reuse {
                    Some(from) => reuse_slab_file(&*storage, from, seq, topic_hash).or_else(|_| {
                        let _ = storage.remove(&slab_name(from));
                        create_slab_file(&*storage, seq, capacity, topic_hash)
                    }),
                    None => create_slab_file(&*storage, seq, capacity, topic_hash),
                };
                let mut spare = lock(&slot.spare);
                // On failure the store creates the file itself and meets
                // the error (a full disk, say) where it can report it.
                *spare = match made {
                    Ok(file) => Spare::Ready(seq, file),
                    Err(_) => Spare::None,
                };
                drop(spare);
                slot.changed.notify_all();
            }
            JobKind::Sync { files, done } => {
                if done.claim() {
                    done.finish(sync_files(&files));
                }
            }
            JobKind::Remove {
                storage,
                files,
                done,
                slot,
            } => {
                let result = files.into_iter().try_for_each(|emptied| {
                    let Emptied {
                        seq,
                        end,
                        file,
                        reusable,
                    } = emptied;
                    let size = file.capacity();
                    drop(file);
                    // Kept for reuse instead: its header zeroed durably, it
                    // holds nothing for recovery, as if removed (module
                    // doc); if that fails, removed.
                    if reusable
                        && slot.promise_reuse()
                        && slot.zeroed(seq, size, zero_for_reuse(&*storage, seq, end))
                    {
                        return Ok(());
                    }
                    storage
                        .remove(&slab_name(seq))
                        .and_then(|()| storage.sync_dir(""))
                });
                done.finish(result);
            }
            JobKind::Reuse {
                storage,
                slot,
                emptied,
            } => {
                let Emptied { seq, end, file, .. } = emptied;
                let size = file.capacity();
                drop(file);
                if !slot.zeroed(seq, size, zero_for_reuse(&*storage, seq, end)) {
                    // Newer than every checkpoint, so its removal needs no
                    // order; a failed one leaves it to the next recovery.
                    let _ = storage.remove(&slab_name(seq));
                }
            }
        }
    }
}
