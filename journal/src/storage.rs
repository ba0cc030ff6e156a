//! The storage seam: every byte the journal keeps goes through these two
//! traits, so tests can swap the real disk for a simulated one that loses
//! un-synced data on command ([`crate::sim`]).
//!
//! [`Storage`] is a folder of named files (names may contain one `/` to name
//! a sub-folder such as `archive/` or `quarantine/`); [`SegmentFile`] is one
//! preallocated file of fixed size that is read and written at offsets and
//! made durable by syncing a byte range.
//!
//! # The access contract of a [`SegmentFile`]
//!
//! A file starts in *read mode*: any byte below its capacity may be read and
//! nothing may be written. [`SegmentFile::begin_append`] (which needs `&mut`,
//! so it happens before the file is shared between threads) switches it to
//! *append mode* at offset `at`: from then on bytes below the *readable end*
//! may be read and never written again, bytes at or after it may be written
//! and never read, and [`SegmentFile::publish`] moves the readable end
//! forward. The one appender writes past the readable end and publishes; any
//! number of readers on other threads read below it. Implementations enforce
//! the contract themselves: reads outside it fail with an error, writes outside
//! it are a bug of the journal and panic. This is what makes the memory-mapped
//! backend sound without trusting its callers (see `mmap.rs`).
//!
//! Durability: written bytes are durable only once a [`SegmentFile::sync_range`]
//! covering them has returned `Ok`. A file created by [`Storage::create`]
//! has its size and zeroed allocation durable when `create` returns, but its
//! directory entry only after [`Storage::sync_dir`] of its folder; the same
//! holds for [`Storage::remove`] and [`Storage::rename`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::mmap::MmapFile;

/// One fixed-size file of the journal. See the module doc for the access
/// contract every implementation enforces.
pub trait SegmentFile: Send + Sync + fmt::Debug {
    /// Size of the file in bytes; fixed for the life of the handle.
    fn capacity(&self) -> u64;
    /// Copies `buf.len()` bytes at `offset` into `buf`. Fails when the range
    /// is not readable under the access contract or the device fails.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Switches the file to append mode with its readable end at `at`.
    fn begin_append(&mut self, at: u64);
    /// Writes the concatenation of `parts` at `offset` (at or after the
    /// readable end; panics otherwise). Not durable until synced.
    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()>;
    /// Moves the readable end forward to `end` (panics if it would move back
    /// or past the capacity).
    fn publish(&self, end: u64);
    /// Makes every byte written in `offset..offset + len` durable. An error is
    /// fatal for the journal: the pages may have been dropped.
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// No more writes are coming (the file is full or sealed): writes out
    /// anything buffered (durable only once synced) and frees the buffer
    /// kept for writing. A later write still works; it allocates again.
    fn release_write_buffer(&self) -> io::Result<()> {
        Ok(())
    }
    /// Lets go of this process's resident copy of the file's pages, if it
    /// keeps one (a mapping): the bytes stay in the file and the page cache
    /// and reads still see them. A hint; nothing is lost if it does nothing.
    fn release_pages(&self) {}
}

/// A folder of files: the journal directory. See the module doc for which
/// operations are durable when.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Names of the files directly in `folder` ("" for the root).
    fn list(&self, folder: &str) -> io::Result<Vec<String>>;
    /// Creates (or replaces) `name` with `len` zero bytes allocated on the
    /// device (never a sparse file) and returns it in read mode.
    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing file in read mode.
    fn open(&self, name: &str) -> io::Result<Box<dyn SegmentFile>>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames (moves) a file, possibly into another folder.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the folder's entries (creations, removals, renames) durable.
    fn sync_dir(&self, folder: &str) -> io::Result<()>;
}

/// Splits a storage name into (folder, file name).
pub fn split_name(name: &str) -> (&str, &str) {
    match name.rsplit_once('/') {
        Some((folder, file)) => (folder, file),
        None => ("", name),
    }
}

/// The access contract of the module doc, shared by every backend. It owns
/// the readable end and the writer lock; backends call it before touching
/// bytes.
#[derive(Debug)]
pub(crate) struct AccessGate {
    capacity: u64,
    appending: bool,
    readable_end: AtomicU64,
    writer: Mutex<()>,
}

impl AccessGate {
    pub(crate) fn new(capacity: u64) -> AccessGate {
        AccessGate {
            capacity,
            appending: false,
            readable_end: AtomicU64::new(capacity),
            writer: Mutex::new(()),
        }
    }

    pub(crate) fn begin_append(&mut self, at: u64) {
        assert!(
            at <= self.capacity,
            "begin_append at {at} past capacity {}",
            self.capacity
        );
        self.appending = true;
        *self.readable_end.get_mut() = at;
    }

    /// Checks that `offset..offset + len` may be read now.
    pub(crate) fn check_read(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| out_of_range(offset, len))?;
        // Acquire pairs with the Release in `publish`: bytes below the
        // readable end were written before it was published.
        let limit = self.readable_end.load(Ordering::Acquire);
        if end > limit || end > self.capacity {
            return Err(out_of_range(offset, len));
        }
        Ok(())
    }

    /// Runs `write` with the writer lock held after checking the range.
    pub(crate) fn write<R>(&self, offset: u64, len: u64, write: impl FnOnce() -> R) -> R {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(self.appending, "write to a file not in append mode");
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.capacity),
            "write {offset}+{len} past capacity {}",
            self.capacity
        );
        let readable = self.readable_end.load(Ordering::Relaxed);
        assert!(
            offset >= readable,
            "write at {offset} below the readable end {readable}"
        );
        write()
    }

    pub(crate) fn publish(&self, end: u64) {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(self.appending, "publish on a file not in append mode");
        assert!(
            end <= self.capacity,
            "publish {end} past capacity {}",
            self.capacity
        );
        let readable = self.readable_end.load(Ordering::Relaxed);
        assert!(
            end >= readable,
            "publish would move the readable end back from {readable} to {end}"
        );
        self.readable_end.store(end, Ordering::Release);
    }
}

fn out_of_range(offset: u64, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("read of {len} bytes at offset {offset} is outside the readable part of the file"),
    )
}

/// How [`FsStorage`] opens a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsMode {
    /// The broker's mode: takes an exclusive lock on `DIR/LOCK`, maps files
    /// read-write with mmap.
    Exclusive,
    /// For tools (`journal-dump`): no lock, files read with `pread`, every
    /// write refused. Safe to run beside a live broker.
    ReadOnly,
}

/// The production backend: a directory on a real file system. Segment files
/// are preallocated with `fallocate` and memory-mapped (see `mmap.rs`).
pub struct FsStorage {
    root: PathBuf,
    mode: FsMode,
    /// Whether a created file's mapping is prefaulted (see `MmapFile::map`).
    prefault: bool,
    _lock: Option<Flock<File>>,
}

impl fmt::Debug for FsStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsStorage")
            .field("root", &self.root)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Name of the lock file in a journal directory.
pub const LOCK_FILE: &str = "LOCK";

impl FsStorage {
    /// Opens (creating it in exclusive mode) the directory `root`.
    pub fn open(root: &Path, mode: FsMode) -> io::Result<FsStorage> {
        let lock = match mode {
            FsMode::Exclusive => {
                std::fs::create_dir_all(root)?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(root.join(LOCK_FILE))?;
                let lock =
                    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                        io::Error::new(
                            io::ErrorKind::WouldBlock,
                            format!(
                                "journal directory {} is locked: another broker (or another open \
                             journal in this process) uses it ({errno}); stop it or use another \
                             data directory",
                                root.display()
                            ),
                        )
                    })?;
                Some(lock)
            }
            FsMode::ReadOnly => {
                if !root.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("journal directory {} does not exist", root.display()),
                    ));
                }
                None
            }
        };
        Ok(FsStorage {
            root: root.to_path_buf(),
            mode,
            prefault: true,
            _lock: lock,
        })
    }

    /// Files created from now on are not prefaulted. The journal creates
    /// its spares ahead of need, off the hot path, and wants them faulted
    /// in; a caller that creates files on its hot path (the SOW store's
    /// slabs, created by the processor that routes their topic) does not:
    /// prefaulting a freshly allocated extent makes the kernel zero every
    /// page, and writes go through `pwrite` anyway.
    #[must_use]
    pub fn without_prefault(mut self) -> FsStorage {
        self.prefault = false;
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn refuse_read_only(&self) -> io::Result<()> {
        if self.mode == FsMode::ReadOnly {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "journal storage opened read-only (journal-dump); writes are refused",
            ));
        }
        Ok(())
    }

    fn ensure_folder(&self, name: &str) -> io::Result<()> {
        let (folder, _) = split_name(name);
        if !folder.is_empty() {
            let path = self.root.join(folder);
            if !path.is_dir() {
                std::fs::create_dir_all(&path)?;
                File::open(&self.root)?.sync_all()?;
            }
        }
        Ok(())
    }
}

impl Storage for FsStorage {
    fn list(&self, folder: &str) -> io::Result<Vec<String>> {
        let path = self.root.join(folder);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound && !folder.is_empty() => {
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        self.refuse_read_only()?;
        self.ensure_folder(name)?;
        let path = self.path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        if let Err(error) = crate::mmap::allocate(&file, len).and_then(|()| file.sync_all()) {
            // Leave no half-made file behind: a full disk must not leave junk.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        Ok(Box::new(MmapFile::map(file, len, self.prefault)?))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn SegmentFile>> {
        let path = self.path(name);
        match self.mode {
            FsMode::Exclusive => {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                let len = file.metadata()?.len();
                Ok(Box::new(MmapFile::map(file, len, false)?))
            }
            FsMode::ReadOnly => {
                let file = File::open(&path)?;
                let len = file.metadata()?.len();
                Ok(Box::new(PreadFile {
                    file,
                    gate: AccessGate::new(len),
                }))
            }
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.refuse_read_only()?;
        std::fs::remove_file(self.path(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.refuse_read_only()?;
        self.ensure_folder(to)?;
        std::fs::rename(self.path(from), self.path(to))
    }

    fn sync_dir(&self, folder: &str) -> io::Result<()> {
        self.refuse_read_only()?;
        File::open(self.root.join(folder))?.sync_all()
    }
}

/// A read-only file read with `pread`: what `journal-dump` uses, so it can
/// look at a journal a live broker is writing without mapping it.
#[derive(Debug)]
struct PreadFile {
    file: File,
    gate: AccessGate,
}

impl SegmentFile for PreadFile {
    fn capacity(&self) -> u64 {
        self.gate.capacity
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.gate.check_read(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }

    fn begin_append(&mut self, at: u64) {
        self.gate.begin_append(at);
    }

    fn write_at(&self, _offset: u64, _parts: &[&[u8]]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "file opened read-only",
        ))
    }

    fn publish(&self, end: u64) {
        self.gate.publish(end);
    }

    fn sync_range(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "file opened read-only",
        ))
    }
}
