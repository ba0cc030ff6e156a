//! A simulated disk for tests: an in-memory [`Storage`] that keeps what was
//! *written* apart from what is *durable*, and can produce the image a power
//! loss would leave at any moment.
//!
//! The fault model (what [`SimStorage::crash_image`] does to un-synced state):
//!
//! - every 4 KiB page written since its last successful sync is kept or lost
//!   independently with probability ½ (the kernel writes dirty pages back in
//!   any order, at any time);
//! - one of those pages is torn at a random 512-byte boundary: its first
//!   sectors hold the new bytes and the rest the old, or the other way round
//!   (sector writes are not assumed to be ordered within a page);
//! - directory entries created, removed or renamed since the folder's last
//!   `sync_dir` are undone;
//! - bytes made durable by a successful `sync_range` are never lost.
//!
//! It also injects the failures the journal must survive: the Nth
//! `sync_range` can fail with EIO (and, as Linux may do, the pages it covered
//! are then marked clean without reaching the disk, so a retry would
//! "succeed" while the data is gone), and `create` fails with ENOSPC when the
//! files would exceed a space limit.
//!
//! Every random choice comes from a [`SimRng`] seeded by the test, so a
//! failure reproduces from its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::storage::{AccessGate, SegmentFile, Storage, split_name};

/// Page size of the simulated page cache.
pub const SIM_PAGE_BYTES: u64 = 4096;
/// Sector size at which a page may tear.
pub const SIM_SECTOR_BYTES: u64 = 512;

/// A small deterministic random number generator (SplitMix64), so tests
/// need no extra dependency and replay exactly from a seed.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SimRng::below(0)");
        self.next_u64() % bound
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies `range` of `from` over the same range of `to`. Written and durable
/// bytes of a file always have the same length (every change of length sets
/// both), so the range lies in both.
fn copy_range(to: &mut [u8], from: &[u8], range: std::ops::Range<usize>) {
    if let (Some(to), Some(from)) = (to.get_mut(range.clone()), from.get(range)) {
        to.copy_from_slice(from);
    }
}

#[derive(Debug)]
struct FileBytes {
    live: Vec<u8>,
    durable: Vec<u8>,
    dirty: BTreeSet<u64>,
}

#[derive(Debug)]
struct FileData {
    bytes: Mutex<FileBytes>,
}

impl FileData {
    fn zeroed(len: u64) -> Arc<FileData> {
        Arc::new(FileData {
            bytes: Mutex::new(FileBytes {
                live: vec![0; len as usize],
                durable: vec![0; len as usize],
                dirty: BTreeSet::new(),
            }),
        })
    }

    fn from_image(image: Vec<u8>) -> Arc<FileData> {
        Arc::new(FileData {
            bytes: Mutex::new(FileBytes {
                live: image.clone(),
                durable: image,
                dirty: BTreeSet::new(),
            }),
        })
    }
}

#[derive(Debug, Default)]
struct Directory {
    live: BTreeMap<String, Arc<FileData>>,
    durable: BTreeMap<String, Arc<FileData>>,
}

/// Counters and injected faults of a simulated disk.
#[derive(Debug)]
struct Faults {
    /// Writes and syncs hold it shared; taking an image holds it exclusive,
    /// so an image is one moment in time across all files (a power cut is).
    moment: RwLock<()>,
    syncs: AtomicU64,
    fail_sync_number: AtomicU64,
    space_bytes: AtomicU64,
}

/// The simulated disk. Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimStorage {
    directory: Arc<Mutex<Directory>>,
    faults: Arc<Faults>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let directory = lock(&self.directory);
        f.debug_struct("SimStorage")
            .field("files", &directory.live.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::new()
    }
}

impl SimStorage {
    /// An empty disk with unlimited space and no injected failure.
    pub fn new() -> SimStorage {
        SimStorage {
            directory: Arc::new(Mutex::new(Directory::default())),
            faults: Arc::new(Faults {
                moment: RwLock::new(()),
                syncs: AtomicU64::new(0),
                fail_sync_number: AtomicU64::new(0),
                space_bytes: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// Makes the `n`th `sync_range` from now on (1 = the next one) fail with
    /// EIO, dropping the pages it covered as Linux may do.
    pub fn fail_sync_number(&self, n: u64) {
        let done = self.faults.syncs.load(Ordering::SeqCst);
        self.faults
            .fail_sync_number
            .store(done + n, Ordering::SeqCst);
    }

    /// Limits the total size of all files; `create` beyond it fails with ENOSPC.
    pub fn set_space_bytes(&self, bytes: u64) {
        self.faults.space_bytes.store(bytes, Ordering::SeqCst);
    }

    /// Number of `sync_range` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.faults.syncs.load(Ordering::SeqCst)
    }

    /// Total bytes of the files in the live directory.
    pub fn used_bytes(&self) -> u64 {
        let directory = lock(&self.directory);
        directory
            .live
            .values()
            .map(|data| lock(&data.bytes).live.len() as u64)
            .sum()
    }

    /// Puts a file with exactly these bytes on the disk, durable and synced
    /// (for tests that hand-craft damaged files, and the fuzz target).
    pub fn insert_file(&self, name: &str, image: Vec<u8>) {
        let data = FileData::from_image(image);
        let mut directory = lock(&self.directory);
        directory.live.insert(name.to_string(), data.clone());
        directory.durable.insert(name.to_string(), data);
    }

    /// The current (written) bytes of a file, if it exists.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let directory = lock(&self.directory);
        directory
            .live
            .get(name)
            .map(|data| lock(&data.bytes).live.clone())
    }

    /// Replaces the written and durable bytes of an existing file in place
    /// (simulates bit rot or an operator's edit). Returns false if absent.
    pub fn edit_file(&self, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> bool {
        let directory = lock(&self.directory);
        let Some(data) = directory.live.get(name) else {
            return false;
        };
        let mut bytes = lock(&data.bytes);
        edit(&mut bytes.live);
        bytes.durable = bytes.live.clone();
        bytes.dirty.clear();
        true
    }

    /// The disk a power loss right now would leave, per the fault model in
    /// the module doc. The new disk has no injected faults.
    pub fn crash_image(&self, rng: &mut SimRng) -> SimStorage {
        let _moment = self
            .faults
            .moment
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let directory = lock(&self.directory);
        let image = SimStorage::new();
        // Pick the torn page among all un-synced pages of the surviving files.
        let mut candidates = Vec::new();
        for (name, data) in &directory.durable {
            for page in &lock(&data.bytes).dirty {
                candidates.push((name.clone(), *page));
            }
        }
        let torn = if candidates.is_empty() {
            None
        } else {
            candidates
                .get(rng.below(candidates.len() as u64) as usize)
                .cloned()
        };
        for (name, data) in &directory.durable {
            let bytes = lock(&data.bytes);
            let mut out = bytes.durable.clone();
            for &page in &bytes.dirty {
                let start = (page * SIM_PAGE_BYTES) as usize;
                let end = ((page + 1) * SIM_PAGE_BYTES).min(out.len() as u64) as usize;
                if torn
                    .as_ref()
                    .is_some_and(|(torn_name, torn_page)| torn_name == name && *torn_page == page)
                {
                    let sectors = (end - start).div_ceil(SIM_SECTOR_BYTES as usize) as u64;
                    let cut = start + (rng.below(sectors + 1) * SIM_SECTOR_BYTES) as usize;
                    let cut = cut.min(end);
                    if rng.chance(1, 2) {
                        copy_range(&mut out, &bytes.live, start..cut);
                    } else {
                        copy_range(&mut out, &bytes.live, cut..end);
                    }
                } else if rng.chance(1, 2) {
                    copy_range(&mut out, &bytes.live, start..end);
                }
            }
            image.insert_file(name, out);
        }
        image
    }

    /// The disk a process kill (SIGKILL) would leave: the page cache
    /// survives, so every written byte is there, but un-synced directory
    /// changes are kept too (the kernel keeps them).
    pub fn kill_image(&self) -> SimStorage {
        let _moment = self
            .faults
            .moment
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let directory = lock(&self.directory);
        let image = SimStorage::new();
        for (name, data) in &directory.live {
            image.insert_file(name, lock(&data.bytes).live.clone());
        }
        image
    }
}

impl Storage for SimStorage {
    fn list(&self, folder: &str) -> io::Result<Vec<String>> {
        let directory = lock(&self.directory);
        Ok(directory
            .live
            .keys()
            .filter(|name| split_name(name).0 == folder)
            .map(|name| split_name(name).1.to_string())
            .collect())
    }

    fn create(&self, name: &str, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut directory = lock(&self.directory);
        let used: u64 = directory
            .live
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .map(|(_, data)| lock(&data.bytes).live.len() as u64)
            .sum();
        if used.saturating_add(len) > self.faults.space_bytes.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let data = match directory.live.get(name) {
            // Like O_TRUNC + fallocate + fsync on the same inode.
            Some(existing) => {
                let mut bytes = lock(&existing.bytes);
                bytes.live = vec![0; len as usize];
                bytes.durable = vec![0; len as usize];
                bytes.dirty.clear();
                existing.clone()
            }
            None => {
                let data = FileData::zeroed(len);
                directory.live.insert(name.to_string(), data.clone());
                data
            }
        };
        Ok(Box::new(SimFile {
            data,
            gate: AccessGate::new(len),
            faults: self.faults.clone(),
        }))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn SegmentFile>> {
        let directory = lock(&self.directory);
        let data =
            directory.live.get(name).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
            })?;
        let len = lock(&data.bytes).live.len() as u64;
        Ok(Box::new(SimFile {
            data,
            gate: AccessGate::new(len),
            faults: self.faults.clone(),
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut directory = lock(&self.directory);
        directory
            .live
            .remove(name)
            .map(drop)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut directory = lock(&self.directory);
        let data = directory
            .live
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {from}")))?;
        directory.live.insert(to.to_string(), data);
        Ok(())
    }

    fn sync_dir(&self, folder: &str) -> io::Result<()> {
        let mut directory = lock(&self.directory);
        let in_folder = |name: &String| split_name(name).0 == folder;
        directory.durable.retain(|name, _| !in_folder(name));
        let entries: Vec<_> = directory
            .live
            .iter()
            .filter(|(name, _)| in_folder(name))
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect();
        directory.durable.extend(entries);
        Ok(())
    }
}

/// A file on the simulated disk.
#[derive(Debug)]
struct SimFile {
    data: Arc<FileData>,
    gate: AccessGate,
    faults: Arc<Faults>,
}

impl SegmentFile for SimFile {
    fn capacity(&self) -> u64 {
        lock(&self.data.bytes).live.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.gate.check_read(offset, buf.len() as u64)?;
        let bytes = lock(&self.data.bytes);
        let start = offset as usize;
        let source = bytes.live.get(start..start + buf.len()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            )
        })?;
        buf.copy_from_slice(source);
        Ok(())
    }

    fn begin_append(&mut self, at: u64) {
        self.gate.begin_append(at);
    }

    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let _moment = self
            .faults
            .moment
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.gate.write(offset, len, || {
            let mut bytes = lock(&self.data.bytes);
            let mut at = offset as usize;
            for part in parts {
                let target = bytes.live.get_mut(at..at + part.len()).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "write past the end of the file",
                    )
                })?;
                target.copy_from_slice(part);
                at += part.len();
            }
            if len > 0 {
                let first = offset / SIM_PAGE_BYTES;
                let last = (offset + len - 1) / SIM_PAGE_BYTES;
                bytes.dirty.extend(first..=last);
            }
            Ok(())
        })
    }

    fn publish(&self, end: u64) {
        self.gate.publish(end);
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let _moment = self
            .faults
            .moment
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let number = self.faults.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        let mut bytes = lock(&self.data.bytes);
        let end = offset.saturating_add(len).min(bytes.live.len() as u64);
        if end <= offset {
            return Ok(());
        }
        let first = offset / SIM_PAGE_BYTES;
        let last = (end - 1) / SIM_PAGE_BYTES;
        let pages: Vec<u64> = bytes.dirty.range(first..=last).copied().collect();
        let failing = number == self.faults.fail_sync_number.load(Ordering::SeqCst);
        for page in pages {
            bytes.dirty.remove(&page);
            if failing {
                // The write-back failed and the kernel dropped the dirty
                // state: the page cache still shows the bytes, the disk
                // never got them, and no later sync will write them.
                continue;
            }
            let start = (page * SIM_PAGE_BYTES) as usize;
            let stop = ((page + 1) * SIM_PAGE_BYTES).min(bytes.live.len() as u64) as usize;
            let bytes = &mut *bytes;
            copy_range(&mut bytes.durable, &bytes.live, start..stop);
        }
        if failing {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}
