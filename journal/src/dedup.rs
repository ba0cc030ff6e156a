//! Publisher de-duplication state: each publisher name → the highest
//! sequence number of its records that are persisted.
//!
//! # How it stays durable without a second sync per batch
//!
//! A record appended for a publisher carries the publisher's id and sequence
//! in its own header (`origin`, `origin_sequence`), so the same sync that
//! persists the record persists the de-dup fact: the high-water mark can never
//! be behind an acknowledged record, nor ahead of the journal. The store
//! itself is a snapshot of the table “as of bookmark C”, written (two files,
//! alternating, each with magic, version, generation and CRC) when a publisher
//! registers, when the flusher's checkpoint moves to a new segment, and at a
//! clean shutdown. Recovery loads the newest valid snapshot and replays the
//! origins of the journal records after C. Retention never removes a segment
//! holding records after C.

use std::collections::{HashMap, VecDeque};
use std::io;

use crate::error::DedupError;
use crate::storage::Storage;

/// Magic of a de-dup state file.
pub const DEDUP_MAGIC: [u8; 8] = *b"SCDEDUP\0";
/// Current de-dup state format version.
pub const DEDUP_VERSION: u32 = 1;
/// The two alternating state files.
pub const DEDUP_FILES: [&str; 2] = ["dedup.0", "dedup.1"];
/// Longest publisher name accepted.
pub const PUBLISHER_NAME_BYTES_MAX: usize = 1024;
const HEAD_BYTES: usize = 48;

/// A publisher's id in the journal (≥ 1; 0 in a record means “no publisher”).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublisherId(pub u32);

/// The in-memory table.
#[derive(Debug, Default)]
pub(crate) struct DedupState {
    names: HashMap<String, PublisherId>,
    /// Indexed by id − 1: (name, highest persisted sequence).
    by_id: Vec<(String, u64)>,
    /// Appended records with an origin, not yet known persisted:
    /// (bookmark, id, sequence), in bookmark order.
    pending: VecDeque<(u64, u32, u64)>,
    /// The table reflects every record with a bookmark ≤ this.
    applied_through: u64,
    generation: u64,
    /// C of the newest durable snapshot.
    snapshot_bookmark: u64,
    /// Records whose origin id is unknown (reported by recovery).
    pub(crate) unknown_origins: u64,
    /// Whether any snapshot file existed at load.
    pub(crate) files_found: bool,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// A decoded snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Increases with each write.
    pub generation: u64,
    /// The table reflects all journal records with a bookmark ≤ this.
    pub bookmark: u64,
    /// Journal instance.
    pub instance_id: u64,
    /// (id, name, highest persisted sequence).
    pub entries: Vec<(u32, String, u64)>,
}

impl Snapshot {
    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (id, name, sequence) in &self.entries {
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&sequence.to_le_bytes());
            body.extend_from_slice(&(name.len() as u16).to_le_bytes());
            body.extend_from_slice(name.as_bytes());
        }
        let mut out = Vec::with_capacity(HEAD_BYTES + body.len());
        out.extend_from_slice(&DEDUP_MAGIC);
        out.extend_from_slice(&DEDUP_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.bookmark.to_le_bytes());
        out.extend_from_slice(&self.instance_id.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &body);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a file; `None` for anything but a valid snapshot of this version.
    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        if bytes.get(0..8)? != DEDUP_MAGIC || u32_at(bytes, 8)? != DEDUP_VERSION {
            return None;
        }
        let count = u32_at(bytes, 12)?;
        let body_len = u32_at(bytes, 40)? as usize;
        let body = bytes.get(HEAD_BYTES..HEAD_BYTES.checked_add(body_len)?)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(bytes.get(..44)?), body);
        if crc != u32_at(bytes, 44)? {
            return None;
        }
        let mut entries = Vec::new();
        let mut at = 0;
        for _ in 0..count {
            let id = u32_at(body, at)?;
            let sequence = u64_at(body, at + 4)?;
            let len = usize::from(u16_at(body, at + 12)?);
            let name = std::str::from_utf8(body.get(at + 14..at + 14 + len)?).ok()?;
            entries.push((id, name.to_string(), sequence));
            at += 14 + len;
        }
        Some(Snapshot {
            generation: u64_at(bytes, 16)?,
            bookmark: u64_at(bytes, 24)?,
            instance_id: u64_at(bytes, 32)?,
            entries,
        })
    }
}

fn storage_error<'a>(op: &'static str, name: &'a str) -> impl FnOnce(io::Error) -> DedupError + 'a {
    move |source| DedupError::Storage {
        op,
        name: name.to_string(),
        source,
    }
}

impl DedupState {
    /// Loads the newest valid snapshot of `instance_id`.
    pub(crate) fn load(storage: &dyn Storage, instance_id: u64) -> Result<DedupState, DedupError> {
        let present = storage
            .list("")
            .map_err(storage_error("list", "journal directory"))?;
        let mut best: Option<Snapshot> = None;
        let mut found = false;
        for name in DEDUP_FILES {
            if !present.iter().any(|p| p == name) {
                continue;
            }
            found = true;
            let file = storage.open(name).map_err(storage_error("open", name))?;
            let mut bytes = vec![0u8; file.capacity() as usize];
            file.read_at(0, &mut bytes)
                .map_err(storage_error("read", name))?;
            if let Some(snapshot) = Snapshot::decode(&bytes)
                && snapshot.instance_id == instance_id
                && best
                    .as_ref()
                    .is_none_or(|best| snapshot.generation > best.generation)
            {
                best = Some(snapshot);
            }
        }
        let mut state = DedupState {
            files_found: found,
            ..DedupState::default()
        };
        let Some(snapshot) = best else {
            if found {
                return Err(DedupError::Damaged(
                    "neither dedup.0 nor dedup.1 is a valid snapshot of this journal; restore one from a backup, \
                     or restart with recovery mode `quarantine` to start de-duplication afresh (publishers' \
                     resends may then be accepted twice)"
                        .into(),
                ));
            }
            return Ok(state);
        };
        state.generation = snapshot.generation;
        state.snapshot_bookmark = snapshot.bookmark;
        state.applied_through = snapshot.bookmark;
        let mut entries = snapshot.entries;
        entries.sort_by_key(|entry| entry.0);
        for (position, (id, name, sequence)) in entries.into_iter().enumerate() {
            if id as usize != position + 1 {
                return Err(DedupError::Damaged(format!(
                    "snapshot generation {} lists publisher ids out of sequence at {id}",
                    snapshot.generation
                )));
            }
            state.names.insert(name.clone(), PublisherId(id));
            state.by_id.push((name, sequence));
        }
        Ok(state)
    }

    /// An empty table (quarantine of a damaged store).
    pub(crate) fn empty() -> DedupState {
        DedupState::default()
    }

    /// Bookmark of the newest durable snapshot.
    pub(crate) fn snapshot_bookmark(&self) -> u64 {
        self.snapshot_bookmark
    }

    /// Applies a persisted record's origin (recovery and the flusher).
    pub(crate) fn apply(&mut self, bookmark: u64, origin: u32, sequence: u64) {
        if origin == 0 {
            return;
        }
        match self.by_id.get_mut(origin as usize - 1) {
            Some(entry) => entry.1 = entry.1.max(sequence),
            None => self.unknown_origins += 1,
        }
        self.applied_through = self.applied_through.max(bookmark);
    }

    /// Marks the table as reflecting every record ≤ `bookmark`.
    pub(crate) fn applied_through(&mut self, bookmark: u64) {
        self.applied_through = self.applied_through.max(bookmark);
    }

    /// Queues an appended, not yet persisted origin (appender).
    pub(crate) fn note_pending(&mut self, bookmark: u64, origin: u32, sequence: u64) {
        self.pending.push_back((bookmark, origin, sequence));
    }

    /// Applies every pending origin with bookmark ≤ `persisted` (flusher).
    pub(crate) fn persist_through(&mut self, persisted: u64) {
        while let Some(&(bookmark, origin, sequence)) = self.pending.front() {
            if bookmark > persisted {
                break;
            }
            self.pending.pop_front();
            self.apply(bookmark, origin, sequence);
        }
        self.applied_through(persisted);
    }

    /// Looks a publisher up.
    pub(crate) fn id_of(&self, name: &str) -> Option<PublisherId> {
        self.names.get(name).copied()
    }

    /// Highest persisted sequence of a publisher.
    pub(crate) fn persisted_sequence(&self, id: PublisherId) -> Option<u64> {
        self.by_id
            .get((id.0 as usize).checked_sub(1)?)
            .map(|entry| entry.1)
    }

    /// Every publisher with its highest persisted sequence.
    pub(crate) fn all(&self) -> Vec<(PublisherId, String, u64)> {
        self.by_id
            .iter()
            .enumerate()
            .map(|(position, (name, sequence))| {
                (PublisherId(position as u32 + 1), name.clone(), *sequence)
            })
            .collect()
    }

    /// Adds a publisher (not yet durable: call `write_snapshot`).
    pub(crate) fn add(&mut self, name: &str) -> PublisherId {
        let id = PublisherId(self.by_id.len() as u32 + 1);
        self.by_id.push((name.to_string(), 0));
        self.names.insert(name.to_string(), id);
        id
    }

    /// Undoes the last `add` (its snapshot failed).
    pub(crate) fn remove_last(&mut self, name: &str) {
        self.by_id.pop();
        self.names.remove(name);
    }

    /// Number of publishers.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The table as of `applied_through`, encoded for the older file. Taken
    /// under the state's lock; written without it ([`write_snapshot_file`]),
    /// then recorded with [`DedupState::snapshot_written`].
    pub(crate) fn prepare_snapshot(&self, instance_id: u64) -> PendingSnapshot {
        let generation = self.generation + 1;
        let snapshot = Snapshot {
            generation,
            bookmark: self.applied_through,
            instance_id,
            entries: self
                .by_id
                .iter()
                .enumerate()
                .map(|(position, (name, sequence))| (position as u32 + 1, name.clone(), *sequence))
                .collect(),
        };
        PendingSnapshot {
            generation,
            bookmark: snapshot.bookmark,
            bytes: snapshot.encode(),
        }
    }

    /// Records that `pending` is durable.
    pub(crate) fn snapshot_written(&mut self, pending: &PendingSnapshot) {
        if pending.generation > self.generation {
            self.generation = pending.generation;
            self.snapshot_bookmark = self.snapshot_bookmark.max(pending.bookmark);
        }
    }
}

/// A snapshot of the table, encoded, not yet written.
#[derive(Debug)]
pub(crate) struct PendingSnapshot {
    generation: u64,
    bookmark: u64,
    bytes: Vec<u8>,
}

/// Writes `pending` durably into its file (the older of the two). Callers
/// serialise snapshot writers; the state's lock is not held meanwhile, so
/// appends of numbered publishes do not wait for this I/O.
pub(crate) fn write_snapshot_file(
    storage: &dyn Storage,
    pending: &PendingSnapshot,
) -> Result<(), DedupError> {
    let bytes = &pending.bytes;
    let [even, odd] = DEDUP_FILES;
    let name = if pending.generation.is_multiple_of(2) {
        even
    } else {
        odd
    };
    let mut file = storage
        .create(name, bytes.len() as u64)
        .map_err(storage_error("create", name))?;
    file.begin_append(0);
    file.write_at(0, &[bytes])
        .map_err(storage_error("write", name))?;
    file.sync_range(0, bytes.len() as u64)
        .map_err(storage_error("sync", name))?;
    storage
        .sync_dir("")
        .map_err(storage_error("sync the folder of", name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let snapshot = Snapshot {
            generation: 3,
            bookmark: 77,
            instance_id: 9,
            entries: vec![(1, "alpha".into(), 5), (2, "beta".into(), 0)],
        };
        let bytes = snapshot.encode();
        assert_eq!(Snapshot::decode(&bytes), Some(snapshot));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert_eq!(Snapshot::decode(&bad), None, "flip at {at} went unnoticed");
        }
        assert_eq!(Snapshot::decode(&bytes[..bytes.len() - 1]), None);
    }
}
