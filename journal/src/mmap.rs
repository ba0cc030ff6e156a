//! Memory-mapped segment files: the only module of the crate with `unsafe`.
//!
//! # Soundness argument
//!
//! A [`MmapFile`] maps a whole file `MAP_SHARED` **read-only** with
//! [`memmap2::MmapRaw`], which hands out raw pointers only, and reads
//! through the mapping. Writes do not go through it: they are staged in a
//! buffer and written with one `pwritev` per sync (or per
//! [`STAGE_BYTES_MAX`]) into the page cache the mapping shows. Writing
//! through the mapping made every sync write-protect each dirtied page and
//! shoot down the other CPU's TLB — an IPI per page, which on a VM cost more
//! than the disk — and a `pwritev` per record cost a system call each
//! (benches/RESULTS.md). Staged bytes are read from the buffer until they
//! are written.
//!
//! This module never creates a Rust reference (`&[u8]` / `&mut [u8]`) into
//! the mapping; bytes come out with `ptr::copy_nonoverlapping` into a
//! caller's buffer, which cannot itself lie inside the mapping because no
//! reference to the mapping ever escapes. So no slice into a mapping can
//! outlive the unmap (the mapping is unmapped when the `MmapFile` drops, and
//! every copy borrows `&self`).
//!
//! The remaining hazards and what rules each out:
//!
//! - **Data races inside this process.** Every read and write first passes
//!   the [`AccessGate`](crate::storage::AccessGate): writes happen only at or
//!   after the readable end, under the writer lock; reads only below the
//!   readable end, which is published with `Release` after the bytes were
//!   staged and loaded with `Acquire` before they are read; a byte is read
//!   through the mapping only once its `pwritev` has returned (the staged
//!   range's start is published with `Release` before the readable end that
//!   covers it, and moved on only after the write). A byte of the mapping is
//!   therefore never written while it can be read through it.
//! - **SIGBUS on a full disk.** Nothing is stored through the mapping, and
//!   files are created with `fallocate` (mode 0) and never extended, so
//!   every page read lies inside the file and a `pwritev` into it cannot hit
//!   ENOSPC. (Not enough on copy-on-write file systems such as btrfs or ZFS,
//!   where an overwrite needs new blocks: run the journal on ext4 or xfs.)
//! - **Truncation or mutation by another process.** The journal directory is
//!   locked (`flock` on `DIR/LOCK`) by the one broker that maps it read-write;
//!   tools read with `pread` instead of mapping. Another program that ignores
//!   the lock and truncates a segment can still make this process fault;
//!   that is outside what Rust can defend against.
//! - **Durability.** Nothing is assumed durable because it was written:
//!   [`SegmentFile::sync_range`] writes what is staged and runs `fdatasync`;
//!   only its success makes bytes durable. A failed write or sync is
//!   returned as an error and the journal latches (see `flusher.rs`).

use std::fs::File;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FallocateFlags, fallocate};

use crate::storage::{AccessGate, SegmentFile};

/// Reserves `len` bytes of real blocks for `file` (never a sparse file).
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let len = i64::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file size too large"))?;
    fallocate(file, FallocateFlags::empty(), 0, len).map_err(io::Error::from)
}

/// Bytes populated per step when a new file is prefaulted: short enough
/// that a thread waiting for the mmap lock waits a few milliseconds at most.
const POPULATE_CHUNK_BYTES: usize = 2 << 20;

/// Staged bytes are written out once they reach this size, so that the
/// buffer stays small whatever the sync interval.
const STAGE_BYTES_MAX: usize = 1 << 20;

/// Bytes written and not yet handed to the kernel: `bytes` belongs at
/// `start`.
#[derive(Debug, Default)]
struct Staged {
    start: u64,
    bytes: Vec<u8>,
}

/// A file mapped for reading, written through a staging buffer. See the
/// module doc for why this is sound.
#[derive(Debug)]
pub(crate) struct MmapFile {
    // `None` for an empty file, which cannot be mapped.
    map: Option<MmapRaw>,
    gate: AccessGate,
    staged: Mutex<Staged>,
    /// `staged.start` while bytes are staged, `u64::MAX` otherwise: reads
    /// below it go straight to the mapping.
    staged_from: AtomicU64,
    file: File,
}

impl MmapFile {
    /// Maps `len` bytes of `file` (which must be that long). With
    /// `populate`, the kernel faults the pages in now: for a new, fallocated
    /// file that is where it zeroes its page-cache pages, so doing it when a
    /// spare is created (on the housekeeper's thread) keeps that cost
    /// (≈ 40 % of an append otherwise) off the appender.
    ///
    /// It is done in [`POPULATE_CHUNK_BYTES`] steps (`MADV_POPULATE_READ`),
    /// not with `MAP_POPULATE`: populating holds the process's mmap lock,
    /// and one 128 MiB `MAP_POPULATE` held it for ~390 ms, during which the
    /// flusher could not map or unmap a file and no sync was issued — a
    /// stall of every persisted ack (benches/RESULTS.md). Between steps a
    /// waiting mapper gets in. Read faults, like `MAP_POPULATE` on a shared
    /// mapping: the pages are not dirtied, so nothing is written back.
    pub(crate) fn map(file: File, len: u64, populate: bool) -> io::Result<MmapFile> {
        let len_usize = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        let map = if len == 0 {
            None
        } else {
            let mut options = MmapOptions::new();
            options.len(len_usize);
            let map = options.map_raw_read_only(&file)?;
            if populate {
                let mut offset = 0;
                while offset < len_usize {
                    let chunk = POPULATE_CHUNK_BYTES.min(len_usize - offset);
                    // Failing (a kernel before 5.14 has no MADV_POPULATE_READ)
                    // only means the appender takes the page faults itself.
                    if map
                        .advise_range(memmap2::Advice::PopulateRead, offset, chunk)
                        .is_err()
                    {
                        break;
                    }
                    // The zeroed pages stay in the page cache (what
                    // prefaulting is for: `pwrite` then finds them there);
                    // only this process's mapping of them goes, step by
                    // step, so a 128 MiB spare never counts in the broker's
                    // resident memory, even while it is being made.
                    release_mapped_range(&map, offset, chunk);
                    offset += chunk;
                }
            }
            Some(map)
        };
        Ok(MmapFile {
            map,
            gate: AccessGate::new(len),
            staged: Mutex::new(Staged::default()),
            staged_from: AtomicU64::new(u64::MAX),
            file,
        })
    }

    fn staged(&self) -> MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is staged into the file (the page cache).
    fn write_staged(&self, staged: &mut Staged) -> io::Result<()> {
        if staged.bytes.is_empty() {
            return Ok(());
        }
        pwrite_all(&self.file, staged.start, &staged.bytes)?;
        self.staged_from.store(u64::MAX, Ordering::Release);
        staged.bytes.clear();
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    fn copy_from_map(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let base = self.base()?;
        // SAFETY: the caller checked offset + len ≤ readable end ≤ capacity
        // (the gate), so the source range lies inside the live mapping
        // (unmapped only when `self` drops, and we hold `&self`), and that
        // the range lies below the staged bytes: its `pwritev` has returned
        // (see the module doc), and bytes below the readable end are never
        // written again, so nothing writes them now. `buf` is ordinary Rust
        // memory, not part of the mapping (no reference into the mapping
        // ever escapes), so the ranges do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(base.add(offset as usize), buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    /// Frees the staging buffer's capacity once nothing is staged: a file
    /// that will not be written again (a sealed slab or segment) keeps no
    /// megabyte of spare room. The next write, if any, grows a new one.
    fn release_staging(&self) -> io::Result<()> {
        let mut staged = self.staged();
        self.write_staged(&mut staged)?;
        staged.bytes = Vec::new();
        Ok(())
    }

    fn base(&self) -> io::Result<*mut u8> {
        self.map
            .as_ref()
            .map(MmapRaw::as_mut_ptr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty file has no bytes"))
    }
}

impl SegmentFile for MmapFile {
    fn capacity(&self) -> u64 {
        self.map.as_ref().map_or(0, |map| map.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.gate.check_read(offset, buf.len() as u64)?;
        let end = offset + buf.len() as u64;
        if end <= self.staged_from.load(Ordering::Acquire) {
            return self.copy_from_map(offset, buf);
        }
        // Some of it may still be staged: the part below the staged bytes
        // comes from the mapping, the rest from the buffer.
        let staged = self.staged();
        let split = if staged.bytes.is_empty() {
            end
        } else {
            staged.start.clamp(offset, end)
        };
        let below = usize::try_from(split - offset).unwrap_or(usize::MAX);
        let (mapped, buffered) = buf.split_at_mut(below.min(buf.len()));
        if !buffered.is_empty() {
            let from = usize::try_from(split - staged.start).unwrap_or(usize::MAX);
            let source = staged
                .bytes
                .get(from..from + buffered.len())
                .ok_or_else(|| io::Error::other("read past the staged bytes"))?;
            buffered.copy_from_slice(source);
        }
        drop(staged);
        self.copy_from_map(offset, mapped)
    }

    fn begin_append(&mut self, at: u64) {
        self.gate.begin_append(at);
    }

    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        if len == 0 {
            return Ok(());
        }
        self.base()?;
        self.gate.write(offset, len, || {
            let mut staged = self.staged();
            if !staged.bytes.is_empty() && staged.start + staged.bytes.len() as u64 != offset {
                self.write_staged(&mut staged)?;
            }
            if staged.bytes.is_empty() {
                staged.start = offset;
                self.staged_from.store(offset, Ordering::Release);
            }
            for part in parts {
                staged.bytes.extend_from_slice(part);
            }
            if staged.bytes.len() >= STAGE_BYTES_MAX {
                self.write_staged(&mut staged)?;
            }
            Ok(())
        })
    }

    fn publish(&self, end: u64) {
        self.gate.publish(end);
    }

    fn sync_range(&self, _offset: u64, len: u64) -> io::Result<()> {
        if self.map.is_none() || len == 0 {
            return Ok(());
        }
        self.write_staged(&mut self.staged())?;
        // The whole file's written data: a superset of the range.
        self.file.sync_data()
    }

    fn release_write_buffer(&self) -> io::Result<()> {
        self.release_staging()
    }

    fn release_pages(&self) {
        if let Some(map) = &self.map {
            release_mapped_pages(map);
        }
    }
}

/// Drops this process's page-table entries for the whole mapping
/// (`MADV_DONTNEED`): the pages leave the process's resident set, stay in
/// the page cache, and a later read through the mapping faults them back
/// in with the file's bytes. Failing only leaves them resident.
fn release_mapped_pages(map: &MmapRaw) {
    release_mapped_range(map, 0, map.len());
}

/// [`release_mapped_pages`] for `len` bytes at `offset` (page-aligned).
fn release_mapped_range(map: &MmapRaw, offset: usize, len: usize) {
    // SAFETY: `MADV_DONTNEED` zero-fills pages only in *private* mappings;
    // this one is `MAP_SHARED` (`map_raw_read_only`), where it just unmaps
    // the pages and the next access reads the file's current bytes from the
    // page cache — the same bytes, since nothing is written through the
    // mapping (module doc). No Rust reference into the mapping exists
    // (copies go through raw pointers), so nothing can observe the pages
    // going away; a concurrent `copy_from_map` faults them back in. The
    // callers pass a range inside this mapping (a populate step, or all of
    // it), so no other mapping of the process is touched.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
}

impl Drop for MmapFile {
    fn drop(&mut self) {
        // What was written and never synced still reaches the page cache
        // (as it did when writes went through the mapping); an error here
        // is like a crash before the write: nothing was promised for it.
        let staged = self
            .staged
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if !staged.bytes.is_empty() {
            let _ = pwrite_all(&self.file, staged.start, &staged.bytes);
        }
    }
}

/// Writes all of `bytes` at `offset` (`pwrite`, retried on short writes
/// and interrupts).
fn pwrite_all(file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn mapped(dir: &tempfile::TempDir, len: u64) -> MmapFile {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        allocate(&file, len).unwrap();
        MmapFile::map(file, len, true).unwrap()
    }

    #[test]
    fn a_released_file_keeps_no_staging_capacity_and_still_reads_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = mapped(&dir, 1 << 16);
        file.begin_append(0);
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        file.write_at(0, &[&bytes]).unwrap();
        file.publish(bytes.len() as u64);
        assert!(file.staged().bytes.capacity() >= bytes.len());

        file.release_write_buffer().unwrap();
        assert_eq!(file.staged().bytes.capacity(), 0);
        assert_eq!(file.staged_from.load(Ordering::Acquire), u64::MAX);
        let mut back = vec![0u8; bytes.len()];
        file.read_at(0, &mut back).unwrap();
        assert_eq!(back, bytes, "written out before the buffer went");

        // Pages dropped from the process fault back in with the same bytes.
        file.release_pages();
        let mut again = vec![0u8; bytes.len()];
        file.read_at(0, &mut again).unwrap();
        assert_eq!(again, bytes);

        // A later write still works.
        file.write_at(5000, &[b"tail"]).unwrap();
        file.publish(5004);
        let mut tail = [0u8; 4];
        file.read_at(5000, &mut tail).unwrap();
        assert_eq!(&tail, b"tail");
    }
}
