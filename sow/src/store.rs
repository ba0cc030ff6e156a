//! The store of one SOW topic: the log of slabs, the key index, hash
//! indexes, writes, compaction, checkpoints and recovery.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use statecast_filter::Value;
use statecast_journal::storage::{SegmentFile, Storage};

use crate::background::{Done, Emptied, JobSink, SowJob, SpareSlot, create_slab_file};
use crate::config::{Durability, MAX_SLAB_SIZE, TopicSpec, max_payload_for};
use crate::error::{KeyError, OpenError, SowError};
use crate::format::{
    FILE_HEADER_BYTES, FLAG_EXPLICIT_KEY, Kind, RECORD_HEADER_BYTES, decode_file_header,
    decode_header_unchecked, encode_record_header, parse_slab_name, record_span, slab_name,
    stable_hash,
};
use crate::index::HashIndex;
use crate::key::{KeyScratch, SowKey, compute_key};
use crate::range::RangeIndex;
use crate::slab::{Body, Slab, decode_checkpoint, encode_checkpoint, scan_image};

/// Folder (inside the topic's storage) damaged files are moved to.
pub const QUARANTINE_FOLDER: &str = "quarantine";

/// The folder name (under `<data>/sow/`) for a durable topic's files: the
/// topic's name made file-system safe (letters, digits, `-`, `_`, `.`; the
/// rest `_`; at most 64 bytes) and a hash of the exact name, so that two
/// topics never share a folder and an operator can still tell which is
/// which. The broker and `sow-dump` must both use it.
pub fn topic_folder(topic: &str) -> String {
    let mut safe: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if safe.starts_with('.') {
        safe.replace_range(..1, "_");
    }
    format!("{safe}-{:016x}", stable_hash(&[topic.as_bytes()]))
}

/// Where the current version of a key is, and how many older versions of it
/// are still on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) off: u32,
    pub(crate) len: u32,
    /// Older records of this key still in some slab (durable stores); a
    /// tombstone is kept while this is non-zero.
    pub(crate) stale: u32,
    /// The current version is a tombstone (the key is deleted).
    pub(crate) tombstone: bool,
}

/// One record as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SowRecord {
    /// Its key.
    pub key: SowKey,
    /// Journal bookmark of the message that set it.
    pub bookmark: u64,
    /// Timestamp of that message (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

/// One record as [`crate::Matches::next_record`] lends it: the payload is
/// borrowed (from the store's memory or the query's read buffer) until the
/// next record is read, so a caller that copies it once (into an outbound
/// frame) copies it only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its key.
    pub key: SowKey,
    /// Journal bookmark of the message that set it.
    pub bookmark: u64,
    /// Timestamp of that message (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// The record's key.
    pub key: SowKey,
    /// Whether it replaced a record.
    pub replaced: bool,
}

/// What opening a store found, and what the broker must replay from the
/// journal to bring it up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No slab files: a new durable topic. Replay the topic's whole journal.
    Fresh,
    /// A memory-only topic. Replay the topic's whole journal.
    Transient,
    /// Reloaded from the slab files as of the last checkpoint. Replay
    /// journal records with a bookmark after `report.checkpoint`.
    Resumed(RecoveryReport),
    /// The slab files were missing or damaged: they were moved to the
    /// `quarantine/` folder and the store starts empty. Replay the topic's
    /// whole journal (if retention dropped part of it, those keys are lost:
    /// log it loudly).
    Rebuild {
        /// What was wrong.
        reason: RebuildReason,
        /// Files moved to quarantine.
        quarantined: Vec<String>,
    },
}

impl Recovery {
    /// The journal bookmark after which the broker must replay this topic's
    /// records into the store (0: from the start).
    pub fn replay_after(&self) -> u64 {
        match self {
            Recovery::Resumed(report) => report.checkpoint,
            _ => 0,
        }
    }
}

/// Details of a resumed open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Bookmark the last checkpoint covered.
    pub checkpoint: u64,
    /// Live records loaded.
    pub records: usize,
    /// Slab files in use.
    pub slabs: usize,
    /// Records written after the last checkpoint and dropped (the journal
    /// replay brings them back).
    pub discarded_after_checkpoint: usize,
    /// The first torn or unreadable record after the last checkpoint, if any:
    /// an interrupted write, dropped with the rest of the tail.
    pub torn_tail: Option<Damage>,
    /// Files removed: leftovers of a compaction or slabs created after the
    /// checkpoint.
    pub removed_files: Vec<String>,
}

/// A place in a slab file that does not hold what it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub file: String,
    /// Byte offset in it.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// Why a durable store had to be rebuilt from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildReason {
    /// Synced data (before the last checkpoint) failed its check.
    Damaged(Damage),
    /// A slab the last checkpoint lists is missing.
    Missing {
        /// The file.
        file: String,
    },
    /// Slab files exist but none holds a valid checkpoint.
    NoCheckpoint,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactReport {
    /// Slabs emptied and released.
    pub slabs_released: usize,
    /// Bytes of live records copied.
    pub bytes_moved: u64,
    /// Bytes of slab space given back.
    pub bytes_released: u64,
}

/// Sizes, for monitoring and the overhead figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Live records.
    pub records: usize,
    /// Sum of their payload sizes.
    pub payload_bytes: u64,
    /// Slabs in use.
    pub slabs: usize,
    /// Bytes of slab space in use (slab count × slab size).
    pub slab_bytes: u64,
    /// Bytes written into slabs (headers included), live or not.
    pub written_bytes: u64,
    /// Bytes of current records in slabs (record headers and padding included).
    pub live_bytes: u64,
    /// Approximate heap bytes of the key index.
    pub key_index_bytes: u64,
    /// Approximate heap bytes of the hash indexes.
    pub hash_index_bytes: u64,
    /// Approximate heap bytes of the range indexes built so far.
    pub range_index_bytes: u64,
    /// The bookmark the last checkpoint covered.
    pub checkpoint: u64,
}

/// A checkpoint whose syncs run on another thread (`background.rs`): first
/// every byte it covers is synced, then its record is appended and synced;
/// only then does it count.
#[derive(Debug, Default)]
enum CheckpointRun {
    #[default]
    Idle,
    /// Syncing every slab up to `ends` (the slabs at the start).
    Data {
        bookmark: u64,
        ends: BTreeMap<u64, u32>,
        waits: Vec<Arc<Done>>,
        removals: Vec<Emptied>,
    },
    /// The record is appended in slab `seq`, ending at `end`; syncing it.
    Record {
        bookmark: u64,
        seq: u64,
        end: u32,
        done: Arc<Done>,
        removals: Vec<Emptied>,
    },
}

/// Empty range indexes on the fields `spec` declares (`range_indexes`),
/// filled by recovery and every write.
fn declared_ranges(spec: &TopicSpec) -> Vec<RangeIndex> {
    spec.range_indexes
        .iter()
        .map(|(path, text)| RangeIndex::new(path.clone(), text.clone()))
        .collect()
}

/// The store of one SOW topic. Single writer: the processor that owns the
/// topic calls every method; nothing inside locks.
#[derive(Debug)]
pub struct SowStore {
    topic: String,
    topic_hash: u64,
    spec: TopicSpec,
    storage: Option<Arc<dyn Storage>>,
    pub(crate) slabs: BTreeMap<u64, Slab>,
    active: u64,
    next_seq: u64,
    pub(crate) keys: FxHashMap<u64, Entry>,
    live: usize,
    payload_bytes: u64,
    pub(crate) indexes: Vec<HashIndex>,
    /// Built by the first query that wants one (hence the cell: queries
    /// take `&self`), maintained by every write afterwards.
    pub(crate) ranges: RefCell<Vec<RangeIndex>>,
    last_bookmark: u64,
    checkpoint: u64,
    pending_removal: Vec<Emptied>,
    failed: Option<String>,
    /// Where file work goes to run off this thread (`background.rs`);
    /// `None`: done in line.
    jobs: Option<JobSink>,
    /// The next slab file, made by a job (with `jobs`).
    spare: Arc<SpareSlot>,
    /// A checkpoint whose syncs run in the background.
    run: CheckpointRun,
    /// The last removal of compacted slabs handed to a job.
    removing: Option<Arc<Done>>,
    compacting: bool,
    written_since_checkpoint: bool,
    key_scratch: KeyScratch,
    values: Vec<Value>,
    /// The image of the slab being compacted, kept between compactions
    /// (up to one slab: 4 MiB by default).
    compact_buf: Vec<u8>,

    old_buf: Vec<u8>,
}

/// The error for a failed I/O `doing` something to `topic`'s store. Its
/// strings are made only on failure: `record_bytes` calls this for every
/// record a scan reads, and allocating them up front cost 5 % of a full
/// scan (perf, benches/RESULTS.md).
fn io_err<'a>(
    topic: &'a str,
    doing: impl Into<String> + 'a,
) -> impl FnOnce(io::Error) -> SowError + 'a {
    move |source| SowError::Io {
        topic: topic.to_string(),
        doing: doing.into(),
        source,
    }
}

fn open_err(topic: &str, doing: impl Into<String>) -> impl FnOnce(io::Error) -> OpenError {
    let topic = topic.to_string();
    let doing = doing.into();
    move |source| OpenError::Io {
        topic,
        doing,
        source,
    }
}

impl SowStore {
    /// Opens the store of `topic` (which `spec` must cover). A durable topic
    /// needs `storage`: a folder of its own (the broker gives each topic a
    /// directory under `<data>/sow/`). The [`Recovery`] says what to replay.
    pub fn open(
        spec: &TopicSpec,
        topic: &str,
        storage: Option<Arc<dyn Storage>>,
    ) -> Result<(SowStore, Recovery), OpenError> {
        if !spec.matches(topic) {
            return Err(OpenError::NotCovered {
                topic: topic.to_string(),
                selector: match spec.selector() {
                    crate::config::TopicSelector::Name(n)
                    | crate::config::TopicSelector::Pattern(n) => n.clone(),
                },
            });
        }
        let mut store = SowStore {
            topic: topic.to_string(),
            topic_hash: stable_hash(&[topic.as_bytes()]),
            spec: spec.clone(),
            storage: None,
            slabs: BTreeMap::new(),
            active: 0,
            next_seq: 1,
            keys: FxHashMap::default(),
            live: 0,
            payload_bytes: 0,
            indexes: spec
                .hash_indexes
                .iter()
                .map(|(p, t)| HashIndex::new(p.clone(), t.clone()))
                .collect(),
            ranges: RefCell::new(declared_ranges(spec)),
            last_bookmark: 0,
            checkpoint: 0,
            pending_removal: Vec::new(),
            failed: None,
            jobs: None,
            spare: Arc::default(),
            run: CheckpointRun::Idle,
            removing: None,
            compacting: false,
            written_since_checkpoint: false,
            key_scratch: KeyScratch::default(),
            values: Vec::new(),
            compact_buf: Vec::new(),

            old_buf: Vec::new(),
        };
        match (spec.durability, storage) {
            (Durability::Transient, _) => {
                store.new_slab().map_err(|e| OpenError::Io {
                    topic: topic.to_string(),
                    doing: "creating a memory slab".into(),
                    source: io::Error::other(e.to_string()),
                })?;
                Ok((store, Recovery::Transient))
            }
            (Durability::Durable, None) => Err(OpenError::Io {
                topic: topic.to_string(),
                doing: "opening".into(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a durable SOW topic needs a storage folder",
                ),
            }),
            (Durability::Durable, Some(storage)) => {
                store.storage = Some(storage);
                let recovery = store.recover()?;
                Ok((store, recovery))
            }
        }
    }

    /// The topic this store holds.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The validated configuration.
    pub fn spec(&self) -> &TopicSpec {
        &self.spec
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The bookmark the last successful checkpoint covered (0: none).
    pub fn checkpoint_bookmark(&self) -> u64 {
        self.checkpoint
    }

    /// The highest bookmark applied so far.
    pub fn last_bookmark(&self) -> u64 {
        self.last_bookmark
    }

    /// Records that every journal record of this topic up to `bookmark` has
    /// been applied (the broker's start-up replay read that far), so that
    /// the next checkpoint covers them and the next start replays less. An
    /// idle topic would otherwise replay from its old checkpoint forever.
    pub fn advance(&mut self, bookmark: u64) {
        self.last_bookmark = self.last_bookmark.max(bookmark);
    }

    /// The largest payload this topic accepts.
    pub fn max_payload(&self) -> usize {
        max_payload_for(self.spec.slab_size)
    }

    /// The key `payload` would be stored under.
    pub fn key_of(&mut self, payload: &[u8]) -> Result<SowKey, KeyError> {
        compute_key(&self.spec, &self.topic, payload, &mut self.key_scratch)
    }

    fn durable(&self) -> bool {
        self.storage.is_some()
    }

    fn check_writable(&self) -> Result<(), SowError> {
        match &self.failed {
            Some(first) => Err(SowError::Failed {
                topic: self.topic.clone(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Runs a storage operation, latching the store on failure.
    fn latch<T>(&mut self, doing: &str, result: io::Result<T>) -> Result<T, SowError> {
        result.map_err(|e| {
            if self.durable() && self.failed.is_none() {
                self.failed = Some(format!("{doing}: {e}"));
            }
            io_err(&self.topic, doing)(e)
        })
    }

    // ---- writes -------------------------------------------------------

    /// Stores `payload` under the key computed from its key fields,
    /// replacing the record of that key.
    pub fn upsert(
        &mut self,
        payload: &[u8],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<Upserted, SowError> {
        self.check_size(payload.len())?;
        let key = self.key_of(payload)?;
        self.upsert_at(key, false, payload, bookmark, timestamp_ns)
    }

    /// Stores `payload` under a key the caller gives (a publisher-supplied
    /// SowKey, see [`SowKey::explicit`]).
    pub fn upsert_with_key(
        &mut self,
        key: SowKey,
        payload: &[u8],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<Upserted, SowError> {
        self.upsert_at(key, true, payload, bookmark, timestamp_ns)
    }

    /// Stores `payload` under `key`: a publisher's key (`explicit`), or one
    /// the caller computed from the key fields with [`SowStore::key_of`]
    /// (so the payload is not parsed twice).
    pub fn upsert_at(
        &mut self,
        key: SowKey,
        explicit: bool,
        payload: &[u8],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<Upserted, SowError> {
        self.check_size(payload.len())?;
        let flags = if explicit { FLAG_EXPLICIT_KEY } else { 0 };
        self.put(key, flags, payload, bookmark, timestamp_ns)
    }

    fn check_size(&self, size: usize) -> Result<(), SowError> {
        let limit = self.max_payload();
        if size > limit {
            return Err(SowError::Oversize {
                topic: self.topic.clone(),
                size,
                limit,
                slab_size: self.spec.slab_size,
                headers: FILE_HEADER_BYTES + RECORD_HEADER_BYTES,
            });
        }
        Ok(())
    }

    fn put(
        &mut self,
        key: SowKey,
        flags: u8,
        payload: &[u8],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<Upserted, SowError> {
        self.check_writable()?;
        // Take the old version out of the field indexes first (it is read
        // back for that): if the read fails, nothing has changed yet.
        let before = self.keys.get(&key.0).copied();
        if let Some(old) = before.filter(|e| !e.tombstone) {
            self.unindex(key.0, &old)?;
        }
        let header =
            encode_record_header(Kind::Upsert, flags, key.0, bookmark, timestamp_ns, payload);
        let (seq, off) = match self.append(&header, payload) {
            Ok(at) => at,
            Err(e) => {
                if let Some(old) = before.filter(|e| !e.tombstone) {
                    self.reindex(key.0, &old);
                }
                return Err(e);
            }
        };
        self.last_bookmark = self.last_bookmark.max(bookmark);
        let span = record_span(payload.len()) as u64;
        if let Some(slab) = self.slabs.get_mut(&seq) {
            slab.live_bytes += span;
        }
        let previous = self.keys.get(&key.0).copied();
        let mut stale = 0;
        let mut replaced = false;
        if let Some(old) = previous {
            self.retire(&old);
            stale = old.stale + u32::from(self.durable());
            if !old.tombstone {
                replaced = true;
                self.live -= 1;
                self.payload_bytes -= u64::from(old.len);
            }
        }
        self.keys.insert(
            key.0,
            Entry {
                seq,
                off,
                len: payload.len() as u32,
                stale,
                tombstone: false,
            },
        );
        self.live += 1;
        self.payload_bytes += payload.len() as u64;
        for index in &mut self.indexes {
            index.insert(key.0, payload, &mut self.values);
        }
        for range in self.ranges.get_mut() {
            range.insert(key.0, payload, &mut self.values);
        }
        Ok(Upserted { key, replaced })
    }

    /// The current version at `old` stops being current: its bytes no
    /// longer count as live in its slab. A tombstone's bytes count only
    /// while it shadows something (`stale > 0`); one that shadows nothing
    /// stays in the key index, uncounted, until its slab is compacted, so
    /// that `stale` always equals the older records physically present.
    fn retire(&mut self, old: &Entry) {
        if old.tombstone && old.stale == 0 {
            return;
        }
        if let Some(slab) = self.slabs.get_mut(&old.seq) {
            slab.live_bytes = slab
                .live_bytes
                .saturating_sub(record_span(old.len as usize) as u64);
        }
    }

    /// Puts a version back into the field indexes after a failed write.
    /// Puts back `entry` of `key` into the field indexes after a failed
    /// write took it out (a failed read back leaves it out, as before).
    fn reindex(&mut self, key: u64, entry: &Entry) {
        let _ = self.index_record(key, entry, true);
    }

    fn unindex(&mut self, key: u64, old: &Entry) -> Result<(), SowError> {
        self.index_record(key, old, false)
    }

    /// Adds (`add`) or removes the record `entry` of `key` in every hash
    /// and range index; the record is read back for its field values.
    fn index_record(&mut self, key: u64, entry: &Entry, add: bool) -> Result<(), SowError> {
        if self.indexes.is_empty() && self.ranges.get_mut().is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.old_buf);
        let mut indexes = std::mem::take(&mut self.indexes);
        let mut ranges = std::mem::take(self.ranges.get_mut());
        let mut values = std::mem::take(&mut self.values);
        let result = self.record_bytes(entry, &mut buf).map(|bytes| {
            let payload = bytes.get(RECORD_HEADER_BYTES..).unwrap_or_default();
            for index in &mut indexes {
                if add {
                    index.insert(key, payload, &mut values);
                } else {
                    index.remove(key, payload, &mut values);
                }
            }
            for range in &mut ranges {
                if add {
                    range.insert(key, payload, &mut values);
                } else {
                    range.remove(key, payload, &mut values);
                }
            }
        });
        self.indexes = indexes;
        *self.ranges.get_mut() = ranges;
        self.values = values;
        self.old_buf = buf;
        result
    }

    /// Deletes the record of `key`; true if there was one.
    pub fn delete_key(
        &mut self,
        key: SowKey,
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<bool, SowError> {
        self.check_writable()?;
        self.last_bookmark = self.last_bookmark.max(bookmark);
        let Some(old) = self.keys.get(&key.0).copied() else {
            return Ok(false);
        };
        if old.tombstone {
            return Ok(false);
        }
        self.unindex(key.0, &old)?;
        if self.durable() {
            let header =
                encode_record_header(Kind::Tombstone, 0, key.0, bookmark, timestamp_ns, &[]);
            let (seq, off) = match self.append(&header, &[]) {
                Ok(at) => at,
                Err(e) => {
                    // The entry may have moved if the append compacted.
                    let old = self.keys.get(&key.0).copied().unwrap_or(old);
                    self.reindex(key.0, &old);
                    return Err(e);
                }
            };
            // The entry may have moved if the append compacted its slab.
            let old = self.keys.get(&key.0).copied().unwrap_or(old);
            self.retire(&old);
            if let Some(slab) = self.slabs.get_mut(&seq) {
                slab.live_bytes += RECORD_HEADER_BYTES as u64;
            }
            self.keys.insert(
                key.0,
                Entry {
                    seq,
                    off,
                    len: 0,
                    stale: old.stale + 1,
                    tombstone: true,
                },
            );
        } else {
            self.retire(&old);
            self.keys.remove(&key.0);
        }
        self.live -= 1;
        self.payload_bytes -= u64::from(old.len);
        Ok(true)
    }

    /// Deletes the records of `keys`; returns how many there were.
    pub fn delete_keys(
        &mut self,
        keys: &[SowKey],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<usize, SowError> {
        self.check_writable()?;
        self.last_bookmark = self.last_bookmark.max(bookmark);
        let mut n = 0;
        for key in keys {
            n += usize::from(self.delete_key(*key, bookmark, timestamp_ns)?);
        }
        Ok(n)
    }

    /// Deletes the record whose key `example` has (the key is computed from
    /// its key fields); returns 1 or 0.
    pub fn delete_example(
        &mut self,
        example: &[u8],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<usize, SowError> {
        let key = self.key_of(example)?;
        Ok(usize::from(self.delete_key(key, bookmark, timestamp_ns)?))
    }

    /// Appends one record (header + payload + padding) to the active slab,
    /// opening a new slab when it does not fit.
    fn append(&mut self, header: &[u8], payload: &[u8]) -> Result<(u64, u32), SowError> {
        let span = record_span(payload.len());
        // A record that cannot fit even an empty slab (only a checkpoint
        // listing more slabs than one slab can name) must not roll forever.
        if span > (self.spec.slab_size as usize).saturating_sub(FILE_HEADER_BYTES) {
            return Err(SowError::Oversize {
                topic: self.topic.clone(),
                size: payload.len(),
                limit: self.max_payload(),
                slab_size: self.spec.slab_size,
                headers: FILE_HEADER_BYTES + RECORD_HEADER_BYTES,
            });
        }
        // A roll may compact, and the copies may fill the new slab: check
        // again until the record fits.
        while self.slabs.get(&self.active).is_none_or(|s| s.room() < span) {
            self.roll()?;
        }
        let pad = [0u8; 8];
        let pad = pad
            .get(..span - RECORD_HEADER_BYTES - payload.len())
            .unwrap_or_default();
        let active = self.active;
        let result = match self.slabs.get_mut(&active) {
            Some(slab) => slab.append(&[header, payload, pad]),
            None => Err(io::Error::other("no active slab")),
        };
        let off = self.latch("appending a record", result)?;
        self.written_since_checkpoint = true;
        Ok((active, off))
    }

    /// Opens a new active slab without compacting (room for a checkpoint
    /// record: compaction would write records after it is planned).
    fn roll_without_compacting(&mut self) -> Result<(), SowError> {
        let was = self.compacting;
        self.compacting = true;
        let rolled = self.roll();
        self.compacting = was;
        rolled
    }

    /// Opens a new active slab, then compacts slabs whose live fraction fell
    /// below `compact_below`.
    fn roll(&mut self) -> Result<(), SowError> {
        self.new_slab()?;
        if !self.compacting {
            let threshold = self.spec.compact_below;
            let candidates: Vec<u64> = self
                .slabs
                .values()
                .filter(|s| {
                    s.seq != self.active
                        && (s.live_bytes as f64) < threshold * f64::from(s.capacity)
                })
                .map(|s| s.seq)
                .collect();
            if !candidates.is_empty() {
                self.compact_slabs(&candidates)?;
            }
        }
        Ok(())
    }

    fn new_slab(&mut self) -> Result<(), SowError> {
        self.seal_active()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let capacity = self.spec.slab_size as u32;
        let slab = match self.storage.clone() {
            None => Slab::mem(seq, capacity),
            Some(storage) => {
                let file = match self.spare.take(seq) {
                    Some(file) => Ok(file),
                    None => create_slab_file(&*storage, seq, capacity, self.topic_hash),
                };
                let file = self.latch("creating a slab file", file)?;
                Slab {
                    seq,
                    capacity,
                    end: FILE_HEADER_BYTES as u32,
                    synced: FILE_HEADER_BYTES as u32,
                    live_bytes: 0,
                    body: Body::File(Arc::from(file)),
                    sealed_sync: None,
                    listed: false,
                    holds_checkpoint: false,
                }
            }
        };
        self.slabs.insert(seq, slab);
        self.active = seq;
        self.want_spare();
        Ok(())
    }

    /// The active slab will not be written again: its write buffer goes
    /// (a megabyte per slab otherwise, kept for the life of the store), and
    /// with a job sink its sync starts now, off this thread, so that the
    /// next checkpoint finds it done.
    fn seal_active(&mut self) -> Result<(), SowError> {
        let Some(slab) = self.slabs.get_mut(&self.active) else {
            return Ok(());
        };
        let Body::File(file) = &slab.body else {
            return Ok(());
        };
        let file = Arc::clone(file);
        let released = file.release_write_buffer();
        self.latch("writing out a sealed slab", released)?;
        if let (Some(jobs), Some(slab)) = (&self.jobs, self.slabs.get_mut(&self.active))
            && slab.synced < slab.end
        {
            let done = Done::new();
            slab.sealed_sync = Some((slab.end, Arc::clone(&done)));
            jobs.send(SowJob::sync(vec![file], done));
        }
        Ok(())
    }

    /// Asks the job sink for the next slab file, made ahead of need.
    fn want_spare(&mut self) {
        if let (Some(jobs), Some(storage)) = (&self.jobs, &self.storage) {
            let seq = self.next_seq;
            self.spare.want(seq);
            jobs.send(SowJob::spare(
                Arc::clone(&self.spare),
                Arc::clone(storage),
                seq,
                self.spec.slab_size as u32,
                self.topic_hash,
            ));
        }
    }

    /// From now on the store hands its file work (next slab files, syncs of
    /// sealed slabs and checkpoints, removals) to `jobs`, whose owner runs
    /// them on another thread; see [`SowStore::begin_checkpoint`]. Only
    /// durable stores have such work.
    pub fn set_job_sink(&mut self, jobs: JobSink) {
        if self.durable() {
            self.jobs = Some(jobs);
            self.want_spare();
        }
    }

    /// Whether the next slab file was made ahead of need (tests).
    #[doc(hidden)]
    pub fn spare_ready(&self) -> bool {
        self.spare.is_ready(self.next_seq)
    }

    /// Sealed slabs whose background sync has completed (tests).
    #[doc(hidden)]
    pub fn sealed_slabs_synced_in_background(&self) -> usize {
        self.slabs
            .values()
            .filter(|s| {
                s.sealed_sync
                    .as_ref()
                    .is_some_and(|(_, done)| matches!(done.poll(), Some(Ok(()))))
            })
            .count()
    }

    // ---- compaction ---------------------------------------------------

    /// Compacts every slab but the active one that holds any dead bytes:
    /// live records are copied to the active slab and the old slabs are
    /// released (for a durable store, after a checkpoint that makes the
    /// copies durable).
    pub fn compact(&mut self) -> Result<CompactReport, SowError> {
        self.check_writable()?;
        let candidates: Vec<u64> = self
            .slabs
            .values()
            .filter(|s| {
                s.seq != self.active && s.live_bytes < u64::from(s.end) - FILE_HEADER_BYTES as u64
            })
            .map(|s| s.seq)
            .collect();
        let report = self.compact_slabs(&candidates)?;
        if self.durable() {
            self.checkpoint()?;
        }
        Ok(report)
    }

    fn compact_slabs(&mut self, seqs: &[u64]) -> Result<CompactReport, SowError> {
        self.compacting = true;
        let result = (|| {
            let mut report = CompactReport::default();
            for &seq in seqs {
                if seq == self.active {
                    continue;
                }
                let capacity = self.slabs.get(&seq).map_or(0, |s| u64::from(s.capacity));
                if let Some(moved) = self.compact_one(seq)? {
                    report.slabs_released += 1;
                    report.bytes_moved += moved;
                    report.bytes_released += capacity;
                }
            }
            Ok(report)
        })();
        self.compacting = false;
        result
    }

    /// Compacts one slab; None if it holds a record too large for the
    /// current `slab_size` (it was lowered), in which case it stays.
    fn compact_one(&mut self, seq: u64) -> Result<Option<u64>, SowError> {
        // Out of the map while its records are copied: a memory slab is
        // then read in place, and nothing else can refer to it.
        let Some(slab) = self.slabs.remove(&seq) else {
            return Ok(None);
        };
        let file_image = match &slab.body {
            Body::Mem(_) => None,
            Body::File(_) => {
                // One buffer for every compaction: a fresh 4 MiB image each
                // time cost page faults and zeroing on the writer's thread.
                let mut buf = std::mem::take(&mut self.compact_buf);
                match slab.image_into(&mut buf) {
                    Ok(()) => Some(buf),
                    Err(e) => {
                        self.compact_buf = buf;
                        self.slabs.insert(seq, slab);
                        return self
                            .latch("reading a slab to compact it", Err(e))
                            .map(|()| None);
                    }
                }
            }
        };
        let image: &[u8] = match (&slab.body, &file_image) {
            (Body::Mem(bytes), _) => bytes,
            (_, Some(image)) => image,
            (Body::File(_), None) => &[],
        };
        // Every record must fit a slab of the current size; check before
        // changing anything (a half-compacted slab would leave the stale
        // counts wrong).
        let room = (self.spec.slab_size as usize).saturating_sub(FILE_HEADER_BYTES);
        let mut at = FILE_HEADER_BYTES;
        let mut fits = true;
        while let Some(h) = image
            .get(at..at + RECORD_HEADER_BYTES)
            .and_then(decode_header_unchecked)
        {
            fits &= h.span() <= room;
            at += h.span();
        }
        if !fits {
            self.compact_buf = file_image.unwrap_or_default();
            self.slabs.insert(seq, slab);
            return Ok(None);
        }
        let result = self.copy_live(seq, image);
        match result {
            Ok(moved) => {
                self.compact_buf = file_image.unwrap_or_default();
                if let Body::File(file) = slab.body {
                    // Nothing reads it again: the pages its image faulted
                    // in leave the process now, not when a checkpoint
                    // (one or two intervals later) removes the file.
                    file.release_pages();
                    let emptied = Emptied {
                        seq,
                        end: slab.end,
                        file,
                        reusable: !slab.holds_checkpoint
                            && u64::from(slab.capacity) == self.spec.slab_size,
                    };
                    match (&self.jobs, &self.storage) {
                        // No checkpoint lists it: it becomes a later spare,
                        // its page-cache pages reused (`background.rs`).
                        (Some(jobs), Some(storage))
                            if !slab.listed && emptied.reusable && self.spare.promise_reuse() =>
                        {
                            jobs.send(SowJob::reuse(
                                Arc::clone(storage),
                                Arc::clone(&self.spare),
                                emptied,
                            ));
                        }
                        _ => self.pending_removal.push(emptied),
                    }
                }
                Ok(Some(moved))
            }
            Err(e) => {
                self.compact_buf = file_image.unwrap_or_default();
                self.slabs.insert(seq, slab);
                Err(e)
            }
        }
    }

    /// Copies the current records of slab `seq` (its bytes `image`) to the
    /// active slab. Records are walked by their headers without checking
    /// CRCs: they are copied byte for byte, CRC included, so damage would
    /// still be found where it matters (recovery, serving).
    fn copy_live(&mut self, seq: u64, image: &[u8]) -> Result<u64, SowError> {
        let mut moved = 0u64;
        let mut at = FILE_HEADER_BYTES;
        while let Some(h) = image
            .get(at..at + RECORD_HEADER_BYTES)
            .and_then(decode_header_unchecked)
        {
            let off = at as u32;
            let span = h.span();
            let Some(bytes) = image.get(at..at + span) else {
                break;
            };
            at += span;
            if h.kind == Kind::Checkpoint {
                continue;
            }
            let Some(entry) = self.keys.get(&h.key).copied() else {
                continue;
            };
            if entry.seq == seq && entry.off == off {
                // The current version: copy it (a tombstone only while
                // older versions of its key remain somewhere).
                if entry.tombstone && entry.stale == 0 {
                    self.keys.remove(&h.key);
                    continue;
                }
                let (header, rest) = bytes.split_at(RECORD_HEADER_BYTES.min(bytes.len()));
                let payload = rest.get(..h.len as usize).unwrap_or_default();
                let (new_seq, new_off) = self.append(header, payload)?;
                if let Some(slab) = self.slabs.get_mut(&new_seq) {
                    slab.live_bytes += span as u64;
                }
                if let Some(e) = self.keys.get_mut(&h.key) {
                    e.seq = new_seq;
                    e.off = new_off;
                }
                moved += span as u64;
            } else if let Some(e) = self.keys.get(&h.key).copied() {
                // An older version goes away with this slab. A tombstone
                // left shadowing nothing stops counting as live.
                if e.tombstone && e.stale == 1 {
                    self.retire(&e);
                }
                if let Some(e) = self.keys.get_mut(&h.key) {
                    e.stale = e.stale.saturating_sub(1);
                }
            }
        }
        Ok(moved)
    }

    // ---- durability -----------------------------------------------------

    /// Makes everything applied so far durable and records it: syncs every
    /// slab, appends a checkpoint record naming the bookmark covered and the
    /// slabs in use, syncs it, then removes slabs that compaction emptied.
    /// Returns the bookmark covered. A transient store only returns it.
    pub fn checkpoint(&mut self) -> Result<u64, SowError> {
        if !self.durable() {
            self.checkpoint = self.last_bookmark;
            return Ok(self.checkpoint);
        }
        self.check_writable()?;
        self.abandon_run()?;
        self.check_removing()?;
        if !self.written_since_checkpoint
            && self.last_bookmark == self.checkpoint
            && self.pending_removal.is_empty()
        {
            // Nothing new: an idle topic costs no syncs.
            return Ok(self.checkpoint);
        }
        for seq in self.slabs.keys().copied().collect::<Vec<_>>() {
            let result = match self.slabs.get_mut(&seq) {
                Some(slab) => slab.sync(),
                None => Ok(()),
            };
            self.latch("syncing a slab", result)?;
        }
        let bookmark = self.last_bookmark;
        // Room for the checkpoint record, with one more slab listed in case
        // it needs a new one.
        let payload_len = 4 + 12 * (self.slabs.len() + 1);
        if self
            .slabs
            .get(&self.active)
            .is_none_or(|s| s.room() < record_span(payload_len))
        {
            self.roll_without_compacting()?;
        }
        let list: Vec<(u64, u32)> = self.slabs.values().map(|s| (s.seq, s.end)).collect();
        self.append_checkpoint(&list, bookmark)?;
        let active = self.active;
        let result = match self.slabs.get_mut(&active) {
            Some(slab) => slab.sync(),
            None => Ok(()),
        };
        self.latch("syncing a checkpoint", result)?;
        self.checkpoint = bookmark;
        self.written_since_checkpoint = false;
        // Only now are the compacted copies durable: release the old files,
        // oldest first, each removal durable before the next (a tombstone in
        // a newer slab must not vanish while an older slab it shadows might
        // come back).
        let mut pending = std::mem::take(&mut self.pending_removal);
        pending.sort_by_key(|emptied| emptied.seq);
        if let Some(storage) = self.storage.clone() {
            for Emptied { seq, file, .. } in pending {
                drop(file);
                let removed = storage
                    .remove(&slab_name(seq))
                    .and_then(|()| storage.sync_dir(""));
                self.latch("removing a compacted slab", removed)?;
            }
        }
        Ok(bookmark)
    }

    /// Drops a background checkpoint in progress (a checkpoint in line
    /// follows): its removals wait for the next checkpoint that completes.
    ///
    /// Its syncs are settled first: one not started is called off, one
    /// running is waited for, and a failed one fails the store — a sync
    /// after a failed one can succeed with the failed pages dropped, so the
    /// checkpoint in line must not trust its own.
    fn abandon_run(&mut self) -> Result<(), SowError> {
        // The run's own job is the last of a data phase's waits; the others
        // are sealed slabs' syncs, which `Slab::sync` settles (it must not
        // take them as done).
        let (own, removals) = match std::mem::take(&mut self.run) {
            CheckpointRun::Idle => return Ok(()),
            CheckpointRun::Data {
                mut waits,
                removals,
                ..
            } => (waits.pop(), removals),
            CheckpointRun::Record { done, removals, .. } => (Some(done), removals),
        };
        self.pending_removal.extend(removals);
        self.written_since_checkpoint = true;
        if let Some(done) = own {
            if done.claim() {
                done.finish(Ok(()));
            }
            let settled = done.wait();
            self.latch("syncing slabs for a checkpoint", settled)?;
        }
        Ok(())
    }

    /// Latches the failure of the last background removal, if any.
    fn check_removing(&mut self) -> Result<(), SowError> {
        match self.removing.as_ref().and_then(|done| done.poll()) {
            Some(result) => {
                self.removing = None;
                self.latch("removing a compacted slab", result)
            }
            None => Ok(()),
        }
    }

    /// Whether a background checkpoint is in progress (poll it with
    /// [`SowStore::poll_checkpoint`]).
    pub fn checkpoint_in_progress(&self) -> bool {
        !matches!(self.run, CheckpointRun::Idle)
    }

    /// Starts a checkpoint of everything applied so far, its syncs run by
    /// the job sink; [`SowStore::poll_checkpoint`] finishes it. Without a
    /// job sink it is [`SowStore::checkpoint`], done in line. Does nothing
    /// when one is in progress or nothing changed since the last.
    ///
    /// The caller need not wait for the journal to persist the store's last
    /// bookmark first: `poll_checkpoint` asks before it writes the record.
    ///
    /// # Errors
    /// The store's write failure (the store is then failed).
    pub fn begin_checkpoint(&mut self) -> Result<(), SowError> {
        let Some(jobs) = self.jobs.clone() else {
            return self.checkpoint().map(|_| ());
        };
        if self.checkpoint_in_progress() {
            return Ok(());
        }
        self.check_writable()?;
        self.check_removing()?;
        if !self.written_since_checkpoint
            && self.last_bookmark == self.checkpoint
            && self.pending_removal.is_empty()
        {
            return Ok(());
        }
        let mut ends = BTreeMap::new();
        let mut waits = Vec::new();
        let mut files = Vec::new();
        for slab in self.slabs.values_mut() {
            // Its record will list it (even if compacted meanwhile).
            slab.listed = true;
            ends.insert(slab.seq, slab.end);
            if slab.synced >= slab.end {
                continue;
            }
            if let Some(done) = slab.sealed_sync_covering() {
                waits.push(done);
            } else if let Body::File(file) = &slab.body {
                files.push(Arc::clone(file));
            }
        }
        let done = Done::new();
        waits.push(Arc::clone(&done));
        jobs.send(SowJob::sync(files, done));
        self.run = CheckpointRun::Data {
            bookmark: self.last_bookmark,
            ends,
            waits,
            removals: std::mem::take(&mut self.pending_removal),
        };
        self.written_since_checkpoint = false;
        Ok(())
    }

    /// Moves a background checkpoint on: once the bytes it covers are
    /// synced and `persisted(bookmark)` says the journal holds every record
    /// up to the checkpoint's bookmark durably, appends the checkpoint
    /// record and has it synced; once that is synced, the checkpoint counts
    /// and the slabs compaction emptied before it began are removed (by a
    /// job). Returns the bookmark of a checkpoint that completed now.
    ///
    /// The record lists the slabs as they were when the checkpoint began
    /// (with their lengths then), plus slabs opened since, empty: recovery
    /// loads exactly the state at its bookmark and replays the journal
    /// after it. A slab compacted since it began is listed and kept (its
    /// removal waits for a checkpoint that does not list it).
    ///
    /// # Errors
    /// A failed sync or write (the store is then failed).
    pub fn poll_checkpoint(
        &mut self,
        persisted: impl FnOnce(u64) -> bool,
    ) -> Result<Option<u64>, SowError> {
        match &self.run {
            CheckpointRun::Idle => Ok(None),
            CheckpointRun::Data {
                bookmark, waits, ..
            } => {
                let bookmark = *bookmark;
                for wait in waits {
                    match wait.poll() {
                        None => return Ok(None),
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            self.run = CheckpointRun::Idle;
                            return self.latch("syncing slabs for a checkpoint", Err(e));
                        }
                    }
                }
                if !persisted(bookmark) {
                    return Ok(None);
                }
                let CheckpointRun::Data { ends, removals, .. } = std::mem::take(&mut self.run)
                else {
                    return Ok(None);
                };
                self.run = CheckpointRun::Data {
                    bookmark,
                    ends: BTreeMap::new(),
                    waits: Vec::new(),
                    removals,
                };
                let appended = self.append_checkpoint_record(bookmark, &ends);
                let CheckpointRun::Data { removals, .. } = std::mem::take(&mut self.run) else {
                    return Ok(None);
                };
                let (seq, end, file) = match appended {
                    Ok(at) => at,
                    Err(e) => {
                        self.pending_removal.extend(removals);
                        return Err(e);
                    }
                };
                let done = Done::new();
                if let Some(jobs) = &self.jobs {
                    jobs.send(SowJob::sync(vec![file], Arc::clone(&done)));
                }
                self.run = CheckpointRun::Record {
                    bookmark,
                    seq,
                    end,
                    done,
                    removals,
                };
                Ok(None)
            }
            CheckpointRun::Record { done, .. } => {
                match done.poll() {
                    None => return Ok(None),
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        self.run = CheckpointRun::Idle;
                        return self.latch("syncing a checkpoint", Err(e));
                    }
                }
                let CheckpointRun::Record {
                    bookmark,
                    seq,
                    end,
                    removals,
                    ..
                } = std::mem::take(&mut self.run)
                else {
                    return Ok(None);
                };
                if let Some(slab) = self.slabs.get_mut(&seq) {
                    slab.synced = slab.synced.max(end);
                }
                self.checkpoint = bookmark;
                if !removals.is_empty()
                    && let (Some(jobs), Some(storage)) = (&self.jobs, &self.storage)
                {
                    let mut removals = removals;
                    removals.sort_by_key(|emptied| emptied.seq);
                    let done = Done::new();
                    self.removing = Some(Arc::clone(&done));
                    jobs.send(SowJob::remove(
                        Arc::clone(storage),
                        removals,
                        done,
                        Arc::clone(&self.spare),
                    ));
                }
                Ok(Some(bookmark))
            }
        }
    }

    /// Appends the record of a background checkpoint of `bookmark` whose
    /// slabs were synced up to `ends`; returns where it ended and its file.
    fn append_checkpoint_record(
        &mut self,
        bookmark: u64,
        ends: &BTreeMap<u64, u32>,
    ) -> Result<(u64, u32, Arc<dyn SegmentFile>), SowError> {
        for (seq, end) in ends {
            if let Some(slab) = self.slabs.get_mut(seq) {
                slab.synced = slab.synced.max(*end);
            }
        }
        let written = self.written_since_checkpoint;
        let listed = |slabs: &BTreeMap<u64, Slab>| {
            let mut list: BTreeMap<u64, u32> = ends.clone();
            for seq in slabs.keys() {
                list.entry(*seq).or_insert(FILE_HEADER_BYTES as u32);
            }
            list
        };
        let payload_len = 4 + 12 * (listed(&self.slabs).len() + 1);
        // Records appended to the active slab since the checkpoint began
        // are not synced yet: the record must not follow them in the same
        // file, where a power cut could keep its page and lose theirs (a
        // valid checkpoint after missing records is damage to recovery).
        // It then starts a new slab instead; the old one's tail stays
        // unused until compaction.
        let unsynced_before = self.slabs.get(&self.active).is_some_and(|s| {
            s.end
                > ends
                    .get(&s.seq)
                    .copied()
                    .unwrap_or(FILE_HEADER_BYTES as u32)
        });
        if unsynced_before
            || self
                .slabs
                .get(&self.active)
                .is_none_or(|s| s.room() < record_span(payload_len))
        {
            self.roll_without_compacting()?;
        }
        let list: Vec<(u64, u32)> = listed(&self.slabs).into_iter().collect();
        let seq = self.append_checkpoint(&list, bookmark)?;
        // The record is not a change the next checkpoint must cover.
        self.written_since_checkpoint = written;
        match self.slabs.get(&seq) {
            Some(Slab {
                end,
                body: Body::File(file),
                ..
            }) => Ok((seq, *end, Arc::clone(file))),
            _ => self.latch(
                "appending a checkpoint",
                Err(io::Error::other("checkpoint record not in a file slab")),
            ),
        }
    }

    /// Checkpoints and closes the store.
    pub fn close(mut self) -> Result<u64, SowError> {
        self.checkpoint()
    }

    // ---- reads ----------------------------------------------------------

    /// The bytes of the record at `entry` (header and payload).
    pub(crate) fn record_bytes<'a>(
        &'a self,
        entry: &Entry,
        buf: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], SowError> {
        self.record_bytes_near(entry, &mut None, buf)
    }

    /// [`record_bytes`](Self::record_bytes) for records read in slab
    /// order: `last` keeps the slab of the previous read, so a run of
    /// records in one slab looks it up once (the map lookup per record was
    /// 3 % of a full scan).
    pub(crate) fn record_bytes_near<'s: 'b, 'b>(
        &'s self,
        entry: &Entry,
        last: &mut Option<&'s Slab>,
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], SowError> {
        let slab = match *last {
            Some(slab) if slab.seq == entry.seq => slab,
            _ => {
                let Some(slab) = self.slabs.get(&entry.seq) else {
                    return Err(SowError::Damaged {
                        topic: self.topic.clone(),
                        file: slab_name(entry.seq),
                        offset: u64::from(entry.off),
                        what: "slab missing from the store".into(),
                    });
                };
                *last = Some(slab);
                slab
            }
        };
        slab.read(entry.off, RECORD_HEADER_BYTES + entry.len as usize, buf)
            .map_err(io_err(&self.topic, "reading a record"))
    }

    /// The record of `key`, if live, with its CRC checked.
    pub fn get(&self, key: SowKey) -> Result<Option<SowRecord>, SowError> {
        let Some(entry) = self.keys.get(&key.0) else {
            return Ok(None);
        };
        if entry.tombstone {
            return Ok(None);
        }
        let mut buf = Vec::new();
        self.read_record(key.0, entry, &mut buf).map(Some)
    }

    pub(crate) fn read_record(
        &self,
        key: u64,
        entry: &Entry,
        buf: &mut Vec<u8>,
    ) -> Result<SowRecord, SowError> {
        let record = self.record_ref(key, entry, buf)?;
        Ok(SowRecord {
            key: record.key,
            bookmark: record.bookmark,
            timestamp_ns: record.timestamp_ns,
            payload: record.payload.to_vec(),
        })
    }

    /// The record of `key` at `entry`, its payload borrowed from the slab
    /// or `buf`, with its CRC checked.
    pub(crate) fn record_ref<'a>(
        &'a self,
        key: u64,
        entry: &Entry,
        buf: &'a mut Vec<u8>,
    ) -> Result<RecordRef<'a>, SowError> {
        let bytes = self.record_bytes(entry, buf)?;
        let damaged = |what: &str| SowError::Damaged {
            topic: self.topic.clone(),
            file: slab_name(entry.seq),
            offset: u64::from(entry.off),
            what: what.to_string(),
        };
        let header = decode_header_unchecked(bytes).ok_or_else(|| damaged("bad record header"))?;
        let payload = bytes.get(RECORD_HEADER_BYTES..).unwrap_or_default();
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(bytes.get(4..RECORD_HEADER_BYTES).unwrap_or_default()),
            payload,
        );
        if crc != header.crc || header.key != key {
            return Err(damaged("CRC32C mismatch"));
        }
        Ok(RecordRef {
            key: SowKey(key),
            bookmark: header.bookmark,
            timestamp_ns: header.timestamp_ns,
            payload,
        })
    }

    /// Live entries (key, entry), in no particular order.
    pub(crate) fn live_entries(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.keys
            .iter()
            .filter(|(_, e)| !e.tombstone)
            .map(|(k, e)| (*k, e))
    }

    /// The live entries by slab, then offset. A scan in this order reads
    /// each slab front to back; in the key index's hash order it would
    /// jump to a new page for every record (a cache and TLB miss each,
    /// once the records outgrow the caches).
    ///
    /// Sorted slab by slab, as `(offset, length, key)`: sorting the 32-byte
    /// `(key, entry)` pairs of a million records as one array took a tenth
    /// of a full scan's CPU time; a slab's few thousand 16-byte triples
    /// sort inside the CPU's caches.
    pub(crate) fn live_in_slab_order(&self) -> impl Iterator<Item = (u64, Entry)> + '_ {
        let index: FxHashMap<u64, usize> = self
            .slabs
            .keys()
            .enumerate()
            .map(|(i, seq)| (*seq, i))
            .collect();
        let mut per_slab: Vec<Vec<(u32, u32, u64)>> = vec![Vec::new(); self.slabs.len()];
        // Entries of a slab the store does not hold: their read fails
        // later, as it would in any order.
        let mut orphans: Vec<(u64, Entry)> = Vec::new();
        for (key, e) in self.live_entries() {
            match index.get(&e.seq).and_then(|&i| per_slab.get_mut(i)) {
                Some(records) => records.push((e.off, e.len, key)),
                None => orphans.push((key, *e)),
            }
        }
        for records in &mut per_slab {
            records.sort_unstable_by_key(|&(off, _, _)| off);
        }
        self.slabs
            .keys()
            .zip(per_slab)
            .flat_map(|(&seq, records)| {
                records.into_iter().map(move |(off, len, key)| {
                    (
                        key,
                        Entry {
                            seq,
                            off,
                            len,
                            stale: 0,
                            tombstone: false,
                        },
                    )
                })
            })
            .chain(orphans)
    }

    /// Sizes and overheads.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.live,
            payload_bytes: self.payload_bytes,
            slabs: self.slabs.len(),
            slab_bytes: self.slabs.values().map(|s| u64::from(s.capacity)).sum(),
            written_bytes: self.slabs.values().map(|s| u64::from(s.end)).sum(),
            live_bytes: self.slabs.values().map(|s| s.live_bytes).sum(),
            // hashbrown: a power-of-two number of buckets, at most 7/8 of
            // them usable; each bucket holds key (8) + entry (24) and has one
            // control byte.
            key_index_bytes: ((self.keys.capacity() as u64 * 8).div_ceil(7)).next_power_of_two()
                * (8 + std::mem::size_of::<Entry>() as u64 + 1),
            hash_index_bytes: self.indexes.iter().map(|i| i.approx_bytes() as u64).sum(),
            range_index_bytes: self
                .ranges
                .borrow()
                .iter()
                .map(|i| i.approx_bytes() as u64)
                .sum(),
            checkpoint: self.checkpoint,
        }
    }

    // ---- recovery -------------------------------------------------------

    fn recover(&mut self) -> Result<Recovery, OpenError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(Recovery::Transient);
        };
        let topic = self.topic.clone();
        let names = storage
            .list("")
            .map_err(open_err(&topic, "listing the SOW folder"))?;
        let mut files: BTreeMap<u64, String> = names
            .into_iter()
            .filter_map(|n| parse_slab_name(&n).map(|seq| (seq, n)))
            .collect();
        if files.is_empty() {
            self.start_fresh()?;
            return Ok(Recovery::Fresh);
        }
        self.next_seq = files.keys().next_back().map_or(1, |s| s + 1);
        let mut report = RecoveryReport::default();

        // Phase 1: newest first, find the last valid checkpoint.
        let mut handles: BTreeMap<u64, (Box<dyn SegmentFile>, u64)> = BTreeMap::new();
        let mut found = None;
        let mut later_torn: Option<Damage> = None;
        for (&seq, name) in files.iter().rev() {
            let file = storage
                .open(name)
                .map_err(open_err(&topic, format!("opening {name}")))?;
            let capacity = file.capacity();
            if capacity > MAX_SLAB_SIZE || capacity < FILE_HEADER_BYTES as u64 {
                // Not a slab this store wrote; never allocate its size.
                drop(file);
                drop(handles);
                return self.rebuild(
                    &storage,
                    &files,
                    RebuildReason::Damaged(Damage {
                        file: name.clone(),
                        offset: 0,
                        what: format!("file size {capacity} is not a slab size"),
                    }),
                );
            }
            let mut image = vec![0u8; usize::try_from(capacity).unwrap_or(0)];
            file.read_at(0, &mut image)
                .map_err(open_err(&topic, format!("reading {name}")))?;
            let header = match decode_file_header(&image) {
                Ok(h) => h,
                Err(what) => {
                    let zeroed = image
                        .get(..FILE_HEADER_BYTES)
                        .is_some_and(|h| h.iter().all(|&b| b == 0));
                    if found.is_none() && (handles.is_empty() || zeroed) {
                        // The newest file, its creation interrupted before
                        // its header was synced, or an emptied slab being
                        // reused (its header zeroed, `background.rs`),
                        // newer than any checkpoint still to find: it holds
                        // nothing.
                        later_torn.get_or_insert(Damage {
                            file: name.clone(),
                            offset: 0,
                            what: what.to_string(),
                        });
                        handles.insert(seq, (file, capacity));
                        continue;
                    }
                    return self.rebuild(
                        &storage,
                        &files,
                        RebuildReason::Damaged(Damage {
                            file: name.clone(),
                            offset: 0,
                            what: format!("slab file header: {what}"),
                        }),
                    );
                }
            };
            if header.topic_hash != self.topic_hash {
                return Err(OpenError::WrongTopic {
                    topic,
                    file: name.clone(),
                    found: header.topic_hash,
                    expected: self.topic_hash,
                });
            }
            if header.seq != seq || header.capacity != capacity {
                return self.rebuild(
                    &storage,
                    &files,
                    RebuildReason::Damaged(Damage {
                        file: name.clone(),
                        offset: 0,
                        what: "slab file header does not match the file name or size".into(),
                    }),
                );
            }
            let scan = scan_image(&image, image.len());
            if let Some(at) = scan.checkpoint_beyond {
                return self.rebuild(
                    &storage,
                    &files,
                    RebuildReason::Damaged(Damage {
                        file: name.clone(),
                        offset: scan.end as u64,
                        what: format!(
                            "{} before a valid checkpoint at offset {at}",
                            scan.stop.map_or("records missing", |s| s.describe())
                        ),
                    }),
                );
            }
            let last_ckpt = scan
                .records
                .iter()
                .rev()
                .find(|r| r.header.kind == Kind::Checkpoint)
                .copied();
            match last_ckpt {
                Some(ckpt) => {
                    let after = scan.records.iter().filter(|r| r.off > ckpt.off).count();
                    report.discarded_after_checkpoint += after;
                    if let Some(stop) = scan.stop {
                        later_torn.get_or_insert(Damage {
                            file: name.clone(),
                            offset: scan.end as u64,
                            what: stop.describe().to_string(),
                        });
                    }
                    let payload_at = ckpt.off as usize + RECORD_HEADER_BYTES;
                    let list = image
                        .get(payload_at..payload_at + ckpt.header.len as usize)
                        .and_then(decode_checkpoint);
                    let ckpt_end = ckpt.off as usize + ckpt.header.span();
                    found = Some((seq, ckpt, list, ckpt_end, scan.dirty_beyond || after > 0));
                    handles.insert(seq, (file, capacity));
                    break;
                }
                None => {
                    report.discarded_after_checkpoint += scan.records.len();
                    if let Some(stop) = scan.stop {
                        later_torn.get_or_insert(Damage {
                            file: name.clone(),
                            offset: scan.end as u64,
                            what: stop.describe().to_string(),
                        });
                    }
                    handles.insert(seq, (file, capacity));
                }
            }
        }
        let Some((ckpt_seq, ckpt, list, ckpt_end, dirty_tail)) = found else {
            if report.discarded_after_checkpoint == 0 {
                // Files but no record at all: the first slab's creation was
                // interrupted. Start again.
                for name in files.values() {
                    storage
                        .remove(name)
                        .map_err(open_err(&topic, format!("removing {name}")))?;
                }
                storage
                    .sync_dir("")
                    .map_err(open_err(&topic, "syncing the SOW folder"))?;
                drop(handles);
                self.start_fresh()?;
                return Ok(Recovery::Fresh);
            }
            drop(handles);
            return self.rebuild(&storage, &files, RebuildReason::NoCheckpoint);
        };
        let Some(list) = list else {
            drop(handles);
            return self.rebuild(
                &storage,
                &files,
                RebuildReason::Damaged(Damage {
                    file: slab_name(ckpt_seq),
                    offset: u64::from(ckpt.off),
                    what: "checkpoint record lists slabs it cannot hold".into(),
                }),
            );
        };
        for (seq, _) in &list {
            if !files.contains_key(seq) {
                drop(handles);
                return self.rebuild(
                    &storage,
                    &files,
                    RebuildReason::Missing {
                        file: slab_name(*seq),
                    },
                );
            }
        }
        report.checkpoint = ckpt.header.bookmark;
        report.torn_tail = later_torn;

        // Phase 2: oldest first, replay the listed slabs up to the checkpoint.
        let listed: BTreeMap<u64, u32> = list.iter().copied().collect();
        for (&seq, &end) in &listed {
            let name = slab_name(seq);
            let (file, capacity) = match handles.remove(&seq) {
                Some(h) => h,
                None => {
                    let file = storage
                        .open(&name)
                        .map_err(open_err(&topic, format!("opening {name}")))?;
                    let capacity = file.capacity();
                    (file, capacity)
                }
            };
            if capacity > MAX_SLAB_SIZE
                || u64::from(end) > capacity
                || (end as usize) < FILE_HEADER_BYTES
            {
                drop(file);
                drop(handles);
                return self.rebuild(
                    &storage,
                    &files,
                    RebuildReason::Damaged(Damage {
                        file: slab_name(ckpt_seq),
                        offset: u64::from(ckpt.off),
                        what: format!(
                            "checkpoint lists {name} ending at {end}, past its size {capacity}"
                        ),
                    }),
                );
            }
            let mut image = vec![0u8; end as usize];
            let read = file.read_at(0, &mut image);
            if let Err(e) = read {
                return Err(open_err(&topic, format!("reading {name}"))(e));
            }
            if seq != ckpt_seq {
                match decode_file_header(&image) {
                    Ok(h) if h.topic_hash == self.topic_hash && h.seq == seq => {}
                    Ok(_) | Err(_) => {
                        drop(file);
                        drop(handles);
                        return self.rebuild(
                            &storage,
                            &files,
                            RebuildReason::Damaged(Damage {
                                file: name,
                                offset: 0,
                                what: "slab file header damaged".into(),
                            }),
                        );
                    }
                }
            }
            let scan = scan_image(&image, end as usize);
            if scan.end != end as usize {
                drop(file);
                drop(handles);
                return self.rebuild(
                    &storage,
                    &files,
                    RebuildReason::Damaged(Damage {
                        file: name,
                        offset: scan.end as u64,
                        what: format!(
                            "{} in synced data (the checkpoint says records run to offset {end})",
                            scan.stop.map_or("records end early", |s| s.describe())
                        ),
                    }),
                );
            }
            let mut slab = Slab {
                seq,
                capacity: capacity as u32,
                end,
                synced: end,
                live_bytes: 0,
                body: Body::Mem(Vec::new()),
                sealed_sync: None,
                listed: true,
                holds_checkpoint: true,
            };
            let mut file = file;
            if seq == ckpt_seq {
                // Continue after the checkpoint record; zero whatever was
                // written after it (it is dropped), durably, so that nothing
                // stale can be read as a record later.
                slab.end = ckpt_end as u32;
                slab.synced = ckpt_end as u32;
                file.begin_append(ckpt_end as u64);
                if dirty_tail {
                    let zeros = vec![0u8; (capacity as usize).saturating_sub(ckpt_end)];
                    file.write_at(ckpt_end as u64, &[&zeros])
                        .and_then(|()| file.sync_range(ckpt_end as u64, zeros.len() as u64))
                        .map_err(open_err(&topic, format!("clearing the tail of {name}")))?;
                }
            }
            slab.body = Body::File(Arc::from(file));
            self.slabs.insert(seq, slab);
            for rec in &scan.records {
                self.replay(seq, rec.off, &rec.header);
            }
        }
        self.active = ckpt_seq;
        self.checkpoint = report.checkpoint;
        self.last_bookmark = report.checkpoint;

        // Files the checkpoint does not list: compaction leftovers (older)
        // and slabs created after it (newer). Oldest first.
        drop(handles);
        for (seq, name) in &files {
            if !listed.contains_key(seq) {
                storage
                    .remove(name)
                    .and_then(|()| storage.sync_dir(""))
                    .map_err(open_err(&topic, format!("removing {name}")))?;
                report.removed_files.push(name.clone());
            }
        }
        files.retain(|seq, _| listed.contains_key(seq));

        // Hash indexes and declared range indexes from the live records.
        if !self.indexes.is_empty() || !self.ranges.get_mut().is_empty() {
            let mut buf = Vec::new();
            let live: Vec<(u64, Entry)> = self.live_entries().map(|(k, e)| (k, *e)).collect();
            let mut indexes = std::mem::take(&mut self.indexes);
            let mut ranges = std::mem::take(self.ranges.get_mut());
            let mut values = std::mem::take(&mut self.values);
            for (key, entry) in live {
                if let Ok(bytes) = self.record_bytes(&entry, &mut buf) {
                    let payload = bytes.get(RECORD_HEADER_BYTES..).unwrap_or_default();
                    for index in &mut indexes {
                        index.insert(key, payload, &mut values);
                    }
                    for range in &mut ranges {
                        range.insert(key, payload, &mut values);
                    }
                }
            }
            self.indexes = indexes;
            *self.ranges.get_mut() = ranges;
            self.values = values;
        }
        report.records = self.live;
        report.slabs = self.slabs.len();
        Ok(Recovery::Resumed(report))
    }

    /// Applies one record found by recovery.
    fn replay(&mut self, seq: u64, off: u32, h: &crate::format::RecordHeader) {
        let (tombstone, len) = match h.kind {
            Kind::Checkpoint => return,
            Kind::Upsert => (false, h.len),
            Kind::Tombstone => (true, 0),
        };
        let mut stale = 0;
        if let Some(old) = self.keys.get(&h.key).copied() {
            self.retire(&old);
            stale = old.stale + 1;
            if !old.tombstone {
                self.live -= 1;
                self.payload_bytes -= u64::from(old.len);
            }
        }
        // A tombstone whose older records are all gone shadows nothing: it
        // stays in the index (it is on disk) but does not count as live.
        if (!tombstone || stale > 0)
            && let Some(slab) = self.slabs.get_mut(&seq)
        {
            slab.live_bytes += h.span() as u64;
        }
        self.keys.insert(
            h.key,
            Entry {
                seq,
                off,
                len,
                stale,
                tombstone,
            },
        );
        if !tombstone {
            self.live += 1;
            self.payload_bytes += u64::from(len);
        }
    }

    /// A new durable store: first slab and a first checkpoint (bookmark 0).
    /// Appends the checkpoint record of `bookmark` listing `list`, and
    /// marks every slab as listed by a checkpoint and the one holding the
    /// record as holding one (neither may then be reused at once). Returns
    /// the slab the record went to.
    fn append_checkpoint(&mut self, list: &[(u64, u32)], bookmark: u64) -> Result<u64, SowError> {
        for slab in self.slabs.values_mut() {
            slab.listed = true;
        }
        let payload = encode_checkpoint(list);
        let header = encode_record_header(Kind::Checkpoint, 0, 0, bookmark, 0, &payload);
        let (seq, _) = self.append(&header, &payload)?;
        if let Some(slab) = self.slabs.get_mut(&seq) {
            slab.holds_checkpoint = true;
        }
        Ok(seq)
    }

    fn start_fresh(&mut self) -> Result<(), OpenError> {
        let topic = self.topic.clone();
        let wrap = |e: SowError| OpenError::Io {
            topic: topic.clone(),
            doing: "creating the first slab".into(),
            source: io::Error::other(e.to_string()),
        };
        self.new_slab().map_err(wrap)?;
        if self.durable() {
            // The first checkpoint record is what makes the slab a store.
            self.written_since_checkpoint = true;
            self.checkpoint().map_err(wrap)?;
        }
        Ok(())
    }

    /// Moves every slab file to quarantine and starts empty.
    fn rebuild(
        &mut self,
        storage: &Arc<dyn Storage>,
        files: &BTreeMap<u64, String>,
        reason: RebuildReason,
    ) -> Result<Recovery, OpenError> {
        let topic = self.topic.clone();
        let mut quarantined = Vec::new();
        let stamp = files.keys().next_back().copied().unwrap_or(0);
        self.slabs.clear();
        self.keys.clear();
        *self.ranges.get_mut() = declared_ranges(&self.spec);
        self.live = 0;
        self.payload_bytes = 0;
        for name in files.values() {
            let to = format!("{QUARANTINE_FOLDER}/{stamp:016x}-{name}");
            storage
                .rename(name, &to)
                .map_err(open_err(&topic, format!("moving {name} to quarantine")))?;
            quarantined.push(to);
        }
        storage
            .sync_dir(QUARANTINE_FOLDER)
            .and_then(|()| storage.sync_dir(""))
            .map_err(open_err(&topic, "syncing the SOW folder"))?;
        self.start_fresh()?;
        Ok(Recovery::Rebuild {
            reason,
            quarantined,
        })
    }
}

/// Sorts `(key, entry)` pairs by where their records are: by slab, then
/// offset.
pub(crate) fn sort_in_slab_order(entries: &mut [(u64, Entry)]) {
    entries.sort_unstable_by_key(|(_, e)| (e.seq, e.off));
}
