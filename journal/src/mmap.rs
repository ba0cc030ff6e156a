//! Memory-mapped segment files: the only module of the crate with `unsafe`.
//!
//! # Soundness argument
//!
//! A [`MmapFile`] maps a whole file `MAP_SHARED` read-write with
//! [`memmap2::MmapRaw`], which hands out raw pointers only. This module never
//! creates a Rust reference (`&[u8]` / `&mut [u8]`) into the mapping; bytes go
//! in and out with `ptr::copy_nonoverlapping` between the mapping and a
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
//!   written and loaded with `Acquire` before they are read. A byte is
//!   therefore never written while it can be read, nor written by two threads
//!   at once.
//! - **SIGBUS on a full disk.** Files are created with `fallocate` (mode 0)
//!   and never extended, so every page of the mapping has blocks reserved; a
//!   store into it cannot hit ENOSPC at write-back. (Not enough on
//!   copy-on-write file systems such as btrfs or ZFS, where an overwrite needs
//!   new blocks: run the journal on ext4 or xfs.)
//! - **Truncation or mutation by another process.** The journal directory is
//!   locked (`flock` on `DIR/LOCK`) by the one broker that maps it read-write;
//!   tools read with `pread` instead of mapping. Another program that ignores
//!   the lock and truncates a segment can still make this process fault;
//!   that is outside what Rust can defend against.
//! - **Durability.** Nothing is assumed durable because it was copied into the
//!   mapping: [`SegmentFile::sync_range`] runs `msync(MS_SYNC)` over the range
//!   and only its success makes bytes durable. A failed msync is returned as
//!   an error and the journal latches (see `flusher.rs`).

use std::fs::File;
use std::io;
use std::ptr;

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

/// A file mapped read-write. See the module doc for why this is sound.
#[derive(Debug)]
pub(crate) struct MmapFile {
    // `None` for an empty file, which cannot be mapped.
    map: Option<MmapRaw>,
    gate: AccessGate,
    _file: File,
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
            let map = options.map_raw(&file)?;
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
                    offset += chunk;
                }
            }
            Some(map)
        };
        Ok(MmapFile {
            map,
            gate: AccessGate::new(len),
            _file: file,
        })
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
        let base = self.base()?;
        // SAFETY: the gate checked offset + len ≤ readable end ≤ capacity, so
        // the source range lies inside the live mapping (unmapped only when
        // `self` drops, and we hold `&self`). Bytes below the readable end are
        // never written again (writes are gated to ≥ readable end), so no
        // write races this read; the Acquire load in the gate orders it after
        // the writes that produced them. `buf` is ordinary Rust memory, not
        // part of the mapping (no reference into the mapping ever escapes),
        // so the ranges do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(base.add(offset as usize), buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    fn begin_append(&mut self, at: u64) {
        self.gate.begin_append(at);
    }

    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let base = self.base()?;
        self.gate.write(offset, len, || {
            let mut at = offset as usize;
            for part in parts {
                // SAFETY: the gate asserted offset + len ≤ capacity (the
                // mapping's length), so every destination byte lies inside
                // the mapping; it asserted offset ≥ readable end and holds
                // the writer lock, so no reader may read and no other writer
                // may write these bytes now. `part` is Rust memory outside
                // the mapping, so source and destination do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(part.as_ptr(), base.add(at), part.len());
                }
                at += part.len();
            }
        });
        Ok(())
    }

    fn publish(&self, end: u64) {
        self.gate.publish(end);
    }

    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let Some(map) = self.map.as_ref() else {
            return Ok(());
        };
        let end = offset.saturating_add(len).min(map.len() as u64);
        if end <= offset {
            return Ok(());
        }
        map.flush_range(offset as usize, (end - offset) as usize)
    }
}
