//! One slab: a fixed-size region records are appended to, either a file
//! through the journal's storage seam (durable topics) or a vector in memory
//! (transient topics). Offsets are 32-bit (slabs are at most 1 GiB).

use std::io;
use std::sync::Arc;

use statecast_journal::storage::SegmentFile;

use crate::background::Done;

use crate::format::{BadRecord, FILE_HEADER_BYTES, Kind, RecordHeader, decode_record, le_u64};

pub(crate) enum Body {
    Mem(Vec<u8>),
    // Shared with background syncs (see `background.rs`).
    File(Arc<dyn SegmentFile>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Mem(v) => write!(f, "Mem({} bytes)", v.len()),
            Body::File(file) => write!(f, "File({file:?})"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Slab {
    pub(crate) seq: u64,
    pub(crate) capacity: u32,
    /// Where the next record goes.
    pub(crate) end: u32,
    /// Bytes below this are durable (file slabs).
    pub(crate) synced: u32,
    /// Bytes of records that are current (live records and needed tombstones).
    pub(crate) live_bytes: u64,
    pub(crate) body: Body,
    /// A background sync of the slab up to `.0`, started when it was sealed.
    pub(crate) sealed_sync: Option<(u32, Arc<Done>)>,
    /// A checkpoint record written, or one in progress, lists it (or may:
    /// recovered slabs): recovery may read it, so once emptied it is
    /// removed only after a checkpoint that does not list it, never reused
    /// early (`background.rs`).
    pub(crate) listed: bool,
    /// It holds a checkpoint record (or may: recovered slabs), so is never
    /// reused: a stale copy of that record could be taken for a new one.
    pub(crate) holds_checkpoint: bool,
}

impl Slab {
    pub(crate) fn mem(seq: u64, capacity: u32) -> Slab {
        let mut bytes = Vec::with_capacity(capacity as usize);
        bytes.resize(FILE_HEADER_BYTES, 0);
        Slab {
            seq,
            capacity,
            end: FILE_HEADER_BYTES as u32,
            synced: FILE_HEADER_BYTES as u32,
            live_bytes: 0,
            body: Body::Mem(bytes),
            sealed_sync: None,
            listed: false,
            holds_checkpoint: false,
        }
    }

    pub(crate) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.end) as usize
    }

    /// Appends `parts` (their total is a multiple of 8 and fits) and returns
    /// the offset they start at.
    pub(crate) fn append(&mut self, parts: &[&[u8]]) -> io::Result<u32> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let at = self.end;
        match &mut self.body {
            Body::Mem(bytes) => {
                for p in parts {
                    bytes.extend_from_slice(p);
                }
            }
            Body::File(file) => {
                file.write_at(u64::from(at), parts)?;
                file.publish(u64::from(at) + len as u64);
            }
        }
        self.end = at + len as u32;
        Ok(at)
    }

    /// The bytes `off..off + len`, borrowed from memory or read into `buf`.
    pub(crate) fn read<'a>(
        &'a self,
        off: u32,
        len: usize,
        buf: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        match &self.body {
            Body::Mem(bytes) => bytes
                .get(off as usize..off as usize + len)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "record out of range")),
            Body::File(file) => {
                // Every byte is overwritten by the read: only growth is
                // zero-filled (`clear` + `resize` zeroed every record
                // before copying it).
                if buf.len() < len {
                    buf.resize(len, 0);
                } else {
                    buf.truncate(len);
                }
                file.read_at(u64::from(off), buf)?;
                Ok(buf.as_slice())
            }
        }
    }

    /// Copies the written part of the slab into `buf` (its length becomes
    /// `end`; a buffer kept from an earlier image is reused, not zeroed).
    pub(crate) fn image_into(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.read(0, self.end as usize, buf).map(|_| ())?;
        if let Body::Mem(bytes) = &self.body {
            buf.clear();
            buf.extend_from_slice(bytes.get(..self.end as usize).unwrap_or(bytes));
        }
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.synced >= self.end {
            return Ok(());
        }
        if let Some(done) = self.sealed_sync_covering() {
            // Done here if the job has not started (its thread may be
            // behind, or there is none: tests), else waited for rather than
            // repeated: a sync after a failed one can succeed with the
            // failed pages dropped.
            if done.claim()
                && let Body::File(file) = &self.body
            {
                done.finish(crate::background::sync_files(std::slice::from_ref(file)));
            }
            done.wait()?;
        } else if let Body::File(file) = &self.body {
            file.sync_range(u64::from(self.synced), u64::from(self.end - self.synced))?;
        }
        self.synced = self.end;
        Ok(())
    }

    /// The background sync started when the slab was sealed, if it covers
    /// everything written.
    pub(crate) fn sealed_sync_covering(&self) -> Option<Arc<Done>> {
        match &self.sealed_sync {
            Some((end, done)) if *end == self.end => Some(Arc::clone(done)),
            _ => None,
        }
    }
}

/// A record found by a scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanRec {
    pub(crate) off: u32,
    pub(crate) header: RecordHeader,
}

/// What a scan of a slab image found.
#[derive(Debug)]
pub(crate) struct SlabScan {
    pub(crate) records: Vec<ScanRec>,
    /// Where the valid records end.
    pub(crate) end: usize,
    /// Why the scan stopped there, if not at a clean end.
    pub(crate) stop: Option<BadRecord>,
    /// A valid checkpoint record after the stop: the stop is damage in data
    /// that was synced before that checkpoint was written.
    pub(crate) checkpoint_beyond: Option<usize>,
    /// Whether any byte after `end` is non-zero.
    pub(crate) dirty_beyond: bool,
}

/// Scans records from the file header on, up to `limit` bytes of the image.
pub(crate) fn scan_image(image: &[u8], limit: usize) -> SlabScan {
    let image = image.get(..limit.min(image.len())).unwrap_or(image);
    let mut records = Vec::new();
    let mut at = FILE_HEADER_BYTES;
    let mut stop = None;
    while at < image.len() {
        match decode_record(image, at) {
            Ok(header) => {
                records.push(ScanRec {
                    off: at as u32,
                    header,
                });
                at += header.span();
            }
            Err(BadRecord::End) => break,
            Err(bad) => {
                stop = Some(bad);
                break;
            }
        }
    }
    let end = at.min(image.len());
    let mut checkpoint_beyond = None;
    let mut probe = end + 8;
    while probe + 8 <= image.len() {
        // Cheap pre-check on magic and kind before the CRC.
        if image.get(probe + 4..probe + 6) == Some(&crate::format::RECORD_MAGIC.to_le_bytes()[..])
            && image.get(probe + 6) == Some(&(Kind::Checkpoint as u8))
            && let Ok(h) = decode_record(image, probe)
            && h.kind == Kind::Checkpoint
        {
            checkpoint_beyond = Some(probe);
            break;
        }
        probe += 8;
    }
    let dirty_beyond = image
        .get(end..)
        .is_some_and(|rest| rest.iter().any(|&b| b != 0));
    SlabScan {
        records,
        end,
        stop,
        checkpoint_beyond,
        dirty_beyond,
    }
}

/// The payload of a checkpoint record: the slabs that hold the state and
/// where each one's records end, as (seq, end) pairs.
pub(crate) fn encode_checkpoint(slabs: &[(u64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 12 * slabs.len());
    out.extend_from_slice(&(slabs.len() as u32).to_le_bytes());
    for (seq, end) in slabs {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    out
}

pub(crate) fn decode_checkpoint(payload: &[u8]) -> Option<Vec<(u64, u32)>> {
    let count = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    if payload.len() != 4 + 12 * count {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = 4 + 12 * i;
        let seq = le_u64(payload, at);
        let end = u32::from_le_bytes(payload.get(at + 8..at + 12)?.try_into().ok()?);
        out.push((seq, end));
    }
    Some(out)
}
