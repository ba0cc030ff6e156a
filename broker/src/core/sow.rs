//! The State of the World as a processor holds it: which topics have one,
//! their stores (opened on first use, or handed over by start-up recovery),
//! the key of a publish worked out before it is journaled, deletes written
//! to the journal as records of their own, queries, and checkpoints.
//!
//! A processor is the only writer of its topics' stores, as it is of their
//! subscriptions: that is what makes `sow_and_subscribe` atomic (the query
//! and the registration happen in one step of the processor, between two
//! publishes).
//!
//! Journal records of SOW topics use the record's caller flags
//! ([`FLAG_SOW_DELETE`], [`FLAG_EXPLICIT_KEY`]); [`parse_journal`] is the one
//! reader of that encoding (start-up replay and bookmark replays use it).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rustc_hash::FxHashMap;
use statecast_filter::Filter;
use statecast_journal::storage::{FsMode, FsStorage, Storage};
use statecast_protocol::ReasonCode;
use statecast_sow::{Durability, JobSink, KeyError, SowError, SowKey, SowStore, TopicSpec};

/// Journal flag: the record is a SOW delete ([`DeleteOp`]), not a message.
pub const FLAG_SOW_DELETE: u16 = 1;
/// Journal flag: the payload starts with a publisher's explicit SowKey
/// (`u16` length, the key's bytes), then the message.
pub const FLAG_EXPLICIT_KEY: u16 = 2;

/// The file in a durable topic's folder that names its topic (the folder
/// name is a hash; the start-up scan needs the exact name).
pub const TOPIC_FILE: &str = "TOPIC";
const TOPIC_FILE_MAGIC: &str = "statecast-sow-topic 1";

/// What a journal record of a SOW topic holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEntry<'a> {
    /// A message, with the publisher's explicit key when it gave one.
    Message {
        /// The explicit SowKey bytes.
        explicit_key: Option<&'a [u8]>,
        /// The message body.
        payload: &'a [u8],
    },
    /// A delete.
    Delete(DeleteOp),
}

/// Reads a journal record's flags and payload.
///
/// # Errors
/// A record whose SOW encoding does not parse (names what is wrong).
pub fn parse_journal(flags: u16, payload: &[u8]) -> Result<JournalEntry<'_>, &'static str> {
    if flags & FLAG_SOW_DELETE != 0 {
        return DeleteOp::decode(payload).map(JournalEntry::Delete);
    }
    if flags & FLAG_EXPLICIT_KEY != 0 {
        let (len, rest) = payload
            .split_first_chunk::<2>()
            .ok_or("explicit-key record shorter than its key length")?;
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() < len {
            return Err("explicit-key record shorter than its key");
        }
        let (key, payload) = rest.split_at(len);
        return Ok(JournalEntry::Message {
            explicit_key: Some(key),
            payload,
        });
    }
    Ok(JournalEntry::Message {
        explicit_key: None,
        payload,
    })
}

/// The message part of a journal record, for replays to subscribers:
/// `None` for a delete (not a message) or a record that does not parse.
#[must_use]
pub fn message_range(flags: u16, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    match parse_journal(flags, payload) {
        Ok(JournalEntry::Message { payload: body, .. }) => {
            let start = payload.len() - body.len();
            Some(start..payload.len())
        }
        _ => None,
    }
}

/// A delete as journaled: resolved to keys (by keys or example), or a
/// filter evaluated at its place in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOp {
    /// These SowKeys.
    Keys(Vec<u64>),
    /// The records this (deterministic) filter is TRUE for.
    Filter(String),
}

const DELETE_KEYS: u8 = 1;
const DELETE_FILTER: u8 = 2;

impl DeleteOp {
    /// The journal payload.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Self::Keys(keys) => {
                out.reserve(1 + keys.len() * 8);
                out.put_u8(DELETE_KEYS);
                for key in keys {
                    out.put_u64_le(*key);
                }
            }
            Self::Filter(text) => {
                out.put_u8(DELETE_FILTER);
                out.put_slice(text.as_bytes());
            }
        }
        out.freeze()
    }

    /// Reads a journal payload.
    ///
    /// # Errors
    /// Names what is wrong.
    pub fn decode(payload: &[u8]) -> Result<Self, &'static str> {
        match payload.split_first() {
            Some((&DELETE_KEYS, rest)) if rest.len() % 8 == 0 => Ok(Self::Keys(
                rest.chunks_exact(8)
                    .map(|c| {
                        let mut key = [0u8; 8];
                        key.copy_from_slice(c);
                        u64::from_le_bytes(key)
                    })
                    .collect(),
            )),
            Some((&DELETE_KEYS, _)) => Err("SOW delete record: keys not a multiple of 8 bytes"),
            Some((&DELETE_FILTER, rest)) => std::str::from_utf8(rest)
                .map(|text| Self::Filter(text.to_owned()))
                .map_err(|_| "SOW delete record: filter not UTF-8"),
            _ => Err("SOW delete record: unknown kind"),
        }
    }
}

/// What a SOW refusal sends back: the reason code and its text.
pub type Refusal = (ReasonCode, String);

/// The reason code for a store error.
#[must_use]
pub fn refusal(error: &SowError) -> Refusal {
    let code = match error {
        SowError::Oversize { .. } => ReasonCode::SowMessageTooLarge,
        SowError::Key(_) => ReasonCode::InvalidSowKey,
        _ => ReasonCode::SowError,
    };
    (code, error.to_string())
}

fn key_refusal(error: &KeyError) -> Refusal {
    (ReasonCode::InvalidSowKey, error.to_string())
}

/// A publish to a SOW topic, checked before it is journaled.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The record's key.
    pub key: SowKey,
    /// The key was given by the publisher.
    pub explicit: bool,
}

/// Topics whose whole name the first covering spec decides, remembered
/// before the cache is reset.
const SPEC_CACHE_MAX: usize = 65_536;

/// The SOW topics one processor owns.
pub struct SowTopics {
    specs: Arc<Vec<TopicSpec>>,
    /// `<data>/sow`; `None` keeps durable topics in memory (tests).
    root: Option<PathBuf>,
    stores: FxHashMap<Bytes, SowStore>,
    spec_of: FxHashMap<Bytes, Option<usize>>,
    /// Where durable stores send their file work (`None`: done in line).
    jobs: Option<JobSink>,
    /// Stores with a checkpoint in progress in the background.
    in_flight: usize,
}

impl std::fmt::Debug for SowTopics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SowTopics")
            .field("specs", &self.specs.len())
            .field("stores", &self.stores.len())
            .finish_non_exhaustive()
    }
}

impl Default for SowTopics {
    fn default() -> Self {
        Self::new(Arc::new(Vec::new()), None)
    }
}

impl SowTopics {
    /// No stores yet; `root` is `<data>/sow` (`None`: durable topics are
    /// kept in memory, for tests).
    #[must_use]
    pub fn new(specs: Arc<Vec<TopicSpec>>, root: Option<PathBuf>) -> Self {
        Self {
            specs,
            root,
            stores: FxHashMap::default(),
            spec_of: FxHashMap::default(),
            jobs: None,
            in_flight: 0,
        }
    }

    /// Durable stores, open and opened later, hand their file work to
    /// `jobs` (run on the server's `sow-files` thread) and checkpoint in the
    /// background.
    pub fn set_job_sink(&mut self, jobs: JobSink) {
        for store in self.stores.values_mut() {
            store.set_job_sink(jobs.clone());
        }
        self.jobs = Some(jobs);
    }

    /// Whether a background checkpoint waits to be moved on
    /// ([`SowTopics::poll_checkpoints`]).
    #[must_use]
    pub fn checkpoint_in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// Whether any SOW topic is configured.
    #[must_use]
    pub fn is_configured(&self) -> bool {
        !self.specs.is_empty()
    }

    /// Adds a store opened elsewhere (start-up recovery).
    pub fn adopt(&mut self, mut store: SowStore) {
        if let Some(jobs) = &self.jobs {
            store.set_job_sink(jobs.clone());
        }
        self.stores
            .insert(Bytes::copy_from_slice(store.topic().as_bytes()), store);
    }

    /// Marks every store as having seen the journal up to `bookmark` (see
    /// [`SowStore::advance`]).
    pub fn advance_all(&mut self, bookmark: u64) {
        for store in self.stores.values_mut() {
            store.advance(bookmark);
        }
    }

    /// The stores held.
    pub fn stores(&self) -> impl Iterator<Item = &SowStore> {
        self.stores.values()
    }

    /// The spec covering `topic`, if it is a SOW topic.
    pub fn spec_for(&mut self, topic: &Bytes) -> Option<&TopicSpec> {
        let index = match self.spec_of.get(topic) {
            Some(index) => *index,
            None => {
                let index = std::str::from_utf8(topic)
                    .ok()
                    .and_then(|t| self.specs.iter().position(|s| s.matches(t)));
                if self.spec_of.len() >= SPEC_CACHE_MAX {
                    self.spec_of.clear();
                }
                self.spec_of.insert(topic.clone(), index);
                index
            }
        };
        index.and_then(|i| self.specs.get(i))
    }

    /// The store of `topic`, opened (created) on first use; `Ok(None)` when
    /// `topic` has no SOW.
    ///
    /// # Errors
    /// The store could not be opened.
    pub fn store_mut(&mut self, topic: &Bytes) -> Result<Option<&mut SowStore>, Refusal> {
        if !self.stores.contains_key(topic) {
            let Some(spec) = self.spec_for(topic).cloned() else {
                return Ok(None);
            };
            let name = std::str::from_utf8(topic)
                .map_err(|_| (ReasonCode::InvalidTopic, "topic is not UTF-8".to_owned()))?;
            let mut store = open_store(&spec, name, self.root.as_deref())
                .map_err(|e| (ReasonCode::SowError, e))?;
            if let Some(jobs) = &self.jobs {
                store.set_job_sink(jobs.clone());
            }
            self.stores.insert(topic.clone(), store);
        }
        Ok(self.stores.get_mut(topic))
    }

    /// The store of `topic` if it is open.
    #[must_use]
    pub fn store(&self, topic: &[u8]) -> Option<&SowStore> {
        self.stores.get(topic)
    }

    /// Open stores whose topic satisfies `matches`.
    pub fn stores_matching<'a>(
        &'a self,
        matches: impl Fn(&[u8]) -> bool + 'a,
    ) -> impl Iterator<Item = &'a SowStore> + 'a {
        self.stores
            .iter()
            .filter(move |(topic, _)| matches(topic))
            .map(|(_, store)| store)
    }

    /// Checks a publish to `topic` before it is journaled: `Ok(None)` when
    /// the topic has no SOW, else its key. A refusal means the message must
    /// be neither journaled nor delivered.
    ///
    /// # Errors
    /// The key cannot be worked out, or the message is too large.
    pub fn prepare(
        &mut self,
        topic: &Bytes,
        payload: &[u8],
        explicit: Option<&[u8]>,
    ) -> Result<Option<Prepared>, Refusal> {
        let Some(store) = self.store_mut(topic)? else {
            return Ok(None);
        };
        if payload.len() > store.max_payload() {
            return Err(refusal(&SowError::Oversize {
                topic: store.topic().to_owned(),
                size: payload.len(),
                limit: store.max_payload(),
                slab_size: store.spec().slab_size(),
                headers: statecast_sow::format::FILE_HEADER_BYTES
                    + statecast_sow::format::RECORD_HEADER_BYTES,
            }));
        }
        let prepared = match explicit {
            Some(key) if key.len() > usize::from(u16::MAX) => {
                return Err((
                    ReasonCode::InvalidSowKey,
                    format!("sow_key of {} bytes is longer than 65,535", key.len()),
                ));
            }
            Some(key) => Prepared {
                key: SowKey::explicit(store.topic(), key),
                explicit: true,
            },
            None => Prepared {
                key: store.key_of(payload).map_err(|e| key_refusal(&e))?,
                explicit: false,
            },
        };
        Ok(Some(prepared))
    }

    /// Stores a journaled message under its prepared key.
    ///
    /// # Errors
    /// The store's error.
    pub fn upsert(
        &mut self,
        topic: &Bytes,
        prepared: &Prepared,
        payload: &[u8],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<(), Refusal> {
        let Some(store) = self.store_mut(topic)? else {
            return Ok(());
        };
        store
            .upsert_at(
                prepared.key,
                prepared.explicit,
                payload,
                bookmark,
                timestamp_ns,
            )
            .map(|_| ())
            .map_err(|e| refusal(&e))
    }

    /// Applies a journaled delete; returns how many records went.
    ///
    /// # Errors
    /// The store's error, or a filter that no longer parses.
    pub fn delete(
        &mut self,
        topic: &Bytes,
        op: &DeleteOp,
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<usize, Refusal> {
        let Some(store) = self.store_mut(topic)? else {
            return Ok(0);
        };
        match op {
            DeleteOp::Keys(keys) => {
                let keys: Vec<SowKey> = keys.iter().map(|k| SowKey(*k)).collect();
                store.delete_keys(&keys, bookmark, timestamp_ns)
            }
            DeleteOp::Filter(text) => {
                let filter = Filter::parse(text, &statecast_filter::Limits::default())
                    .map_err(|e| (ReasonCode::InvalidFilter, format!("invalid filter: {e}")))?;
                store.delete_where(&filter, bookmark, timestamp_ns)
            }
        }
        .map_err(|e| refusal(&e))
    }

    /// Replays one journal record into the stores (start-up recovery):
    /// records at or below a store's checkpoint are skipped. Returns whether
    /// the record touched a SOW topic.
    ///
    /// # Errors
    /// What went wrong, for the log; the record is skipped.
    pub fn replay(
        &mut self,
        topic: &[u8],
        flags: u16,
        payload: &[u8],
        bookmark: u64,
        timestamp_ns: u64,
    ) -> Result<bool, String> {
        let topic = Bytes::copy_from_slice(topic);
        let Some(store) = self.store_mut(&topic).map_err(|(_, text)| text)? else {
            return Ok(false);
        };
        if bookmark <= store.checkpoint_bookmark() {
            return Ok(true);
        }
        match parse_journal(flags, payload)? {
            JournalEntry::Message {
                explicit_key: Some(key),
                payload,
            } => {
                let key = SowKey::explicit(store.topic(), key);
                store
                    .upsert_with_key(key, payload, bookmark, timestamp_ns)
                    .map_err(|e| e.to_string())?;
            }
            JournalEntry::Message {
                explicit_key: None,
                payload,
            } => {
                store
                    .upsert(payload, bookmark, timestamp_ns)
                    .map_err(|e| e.to_string())?;
            }
            JournalEntry::Delete(op) => {
                self.delete(&topic, &op, bookmark, timestamp_ns)
                    .map_err(|(_, text)| text)?;
            }
        }
        Ok(true)
    }

    /// Checkpoints every durable store with records after its checkpoint,
    /// provided `persisted` (the journal's watermark) covers them: a
    /// checkpoint must never hold a message the journal could still lose.
    /// Returns the stores checkpointed.
    ///
    /// With a job sink a checkpoint runs in the background: it starts here
    /// (no wait for the journal), [`SowTopics::poll_checkpoints`] moves it
    /// on, and its record is written only once `persisted` covers its
    /// bookmark. Returns the stores whose checkpoint completed.
    pub fn checkpoint(&mut self, mut persisted: impl FnMut(u64) -> bool) -> usize {
        let mut done = self.poll_checkpoints(&mut persisted);
        let background = self.jobs.is_some();
        for store in self.stores.values_mut() {
            if store.spec().durability() != Durability::Durable
                || store.checkpoint_in_progress()
                || store.last_bookmark() <= store.checkpoint_bookmark()
            {
                continue;
            }
            if background {
                match store.begin_checkpoint() {
                    Ok(()) => self.in_flight += usize::from(store.checkpoint_in_progress()),
                    Err(error) => tracing::error!("SOW checkpoint failed: {error}"),
                }
                continue;
            }
            if !persisted(store.last_bookmark()) {
                continue;
            }
            match store.checkpoint() {
                Ok(_) => done += 1,
                Err(error) => tracing::error!("SOW checkpoint failed: {error}"),
            }
        }
        done
    }

    /// Moves the background checkpoints in progress on (see
    /// [`SowStore::poll_checkpoint`]); cheap when none is. Returns the
    /// stores whose checkpoint completed.
    pub fn poll_checkpoints(&mut self, mut persisted: impl FnMut(u64) -> bool) -> usize {
        if self.in_flight == 0 {
            return 0;
        }
        let mut done = 0;
        let mut in_flight = 0;
        for store in self.stores.values_mut() {
            if !store.checkpoint_in_progress() {
                continue;
            }
            match store.poll_checkpoint(&mut persisted) {
                Ok(Some(_)) => done += 1,
                Ok(None) => {}
                Err(error) => tracing::error!("SOW checkpoint failed: {error}"),
            }
            in_flight += usize::from(store.checkpoint_in_progress());
        }
        self.in_flight = in_flight;
        done
    }

    /// Checkpoints and closes every store (clean shutdown), once
    /// `persisted` covers its records.
    pub fn close(&mut self, mut persisted: impl FnMut(u64) -> bool) {
        self.in_flight = 0;
        for (_, store) in self.stores.drain() {
            if store.spec().durability() == Durability::Durable
                && store.last_bookmark() > store.checkpoint_bookmark()
                && !persisted(store.last_bookmark())
            {
                tracing::warn!(
                    topic = store.topic(),
                    "SOW store closed without a final checkpoint: the journal did not persist its last records in time; the next start replays them"
                );
                continue;
            }
            let topic = store.topic().to_owned();
            if let Err(error) = store.close() {
                tracing::error!(topic, "closing the SOW store failed: {error}");
            }
        }
    }
}

/// Opens (creating when new) the store of `topic` under `root`.
///
/// # Errors
/// What failed, naming the folder.
pub fn open_store(spec: &TopicSpec, topic: &str, root: Option<&Path>) -> Result<SowStore, String> {
    let storage: Option<Arc<dyn Storage>> = match (spec.durability(), root) {
        (Durability::Durable, Some(root)) => {
            let folder = root.join(statecast_sow::topic_folder(topic));
            write_topic_file(&folder, topic)
                .map_err(|e| format!("SOW folder {}: {e}", folder.display()))?;
            let storage = FsStorage::open(&folder, FsMode::Exclusive)
                .map_err(|e| format!("SOW folder {}: {e}", folder.display()))?
                .without_prefault();
            Some(Arc::new(storage))
        }
        _ => None,
    };
    let spec = match (spec.durability(), &storage) {
        // Without a root (tests), a durable topic lives in memory.
        (Durability::Durable, None) => spec.as_transient(),
        _ => spec.clone(),
    };
    let (store, recovery) = SowStore::open(&spec, topic, storage).map_err(|e| e.to_string())?;
    log_recovery(topic, &recovery);
    Ok(store)
}

fn log_recovery(topic: &str, recovery: &statecast_sow::Recovery) {
    match recovery {
        statecast_sow::Recovery::Fresh | statecast_sow::Recovery::Transient => {}
        statecast_sow::Recovery::Resumed(report) => {
            tracing::info!(
                topic,
                records = report.records,
                checkpoint = report.checkpoint,
                slabs = report.slabs,
                discarded_after_checkpoint = report.discarded_after_checkpoint,
                "SOW store reloaded"
            );
            if let Some(damage) = &report.torn_tail {
                tracing::warn!(
                    topic,
                    "SOW store: torn tail after the checkpoint dropped ({damage:?}); the journal replay restores it"
                );
            }
        }
        statecast_sow::Recovery::Rebuild {
            reason,
            quarantined,
        } => {
            tracing::error!(
                topic,
                ?reason,
                ?quarantined,
                "SOW store damaged or missing: files moved to quarantine/, rebuilding from the journal (records the journal no longer holds are lost)"
            );
        }
    }
}

/// Writes `folder/TOPIC` naming `topic`, unless it is there already.
fn write_topic_file(folder: &Path, topic: &str) -> io::Result<()> {
    std::fs::create_dir_all(folder)?;
    let path = folder.join(TOPIC_FILE);
    if path.exists() {
        return Ok(());
    }
    let tmp = folder.join(format!("{TOPIC_FILE}.tmp"));
    std::fs::write(&tmp, format!("{TOPIC_FILE_MAGIC}\n{topic}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(folder)?.sync_all()
}

/// The topic a durable SOW folder holds, from its `TOPIC` file.
///
/// # Errors
/// The file is missing, unreadable or not a topic file.
pub fn read_topic_file(folder: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(folder.join(TOPIC_FILE))?;
    let mut lines = text.splitn(2, '\n');
    match (lines.next(), lines.next()) {
        (Some(TOPIC_FILE_MAGIC), Some(rest)) if !rest.trim_end_matches('\n').is_empty() => {
            Ok(rest.trim_end_matches('\n').to_owned())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{TOPIC_FILE} does not start with `{TOPIC_FILE_MAGIC}` and a topic line"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_ops_round_trip() {
        for op in [
            DeleteOp::Keys(vec![]),
            DeleteOp::Keys(vec![1, u64::MAX]),
            DeleteOp::Filter("/a = 1".into()),
        ] {
            assert_eq!(DeleteOp::decode(&op.encode()), Ok(op));
        }
        assert!(DeleteOp::decode(&[1, 2, 3]).is_err());
        assert!(DeleteOp::decode(&[]).is_err());
        assert!(DeleteOp::decode(&[9]).is_err());
    }

    #[test]
    fn explicit_key_records_parse_and_strip() {
        let mut record = vec![3, 0];
        record.extend_from_slice(b"k-1{\"a\":1}");
        assert_eq!(
            parse_journal(FLAG_EXPLICIT_KEY, &record),
            Ok(JournalEntry::Message {
                explicit_key: Some(b"k-1"),
                payload: b"{\"a\":1}"
            })
        );
        assert_eq!(message_range(FLAG_EXPLICIT_KEY, &record), Some(5..12));
        assert_eq!(message_range(0, b"abc"), Some(0..3));
        assert_eq!(message_range(FLAG_SOW_DELETE, &[2, b'x']), None);
        assert!(parse_journal(FLAG_EXPLICIT_KEY, &[9, 0, b'a']).is_err());
        assert!(parse_journal(FLAG_EXPLICIT_KEY, &[1]).is_err());
    }

    #[test]
    fn topic_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write_topic_file(dir.path(), "orders/eu").unwrap();
        assert_eq!(read_topic_file(dir.path()).unwrap(), "orders/eu");
        std::fs::write(dir.path().join(TOPIC_FILE), "junk").unwrap();
        assert!(read_topic_file(dir.path()).is_err());
    }
}
