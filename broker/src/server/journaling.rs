//! The journal as the broker uses it: which topics are journaled, the one
//! appender shared by the processors, publisher de-duplication, and
//! `persisted` acks released by the flusher's watermark.
//!
//! Appends from all processors go through one mutex around the appender:
//! that is what gives bookmarks one total order over the instance, and each
//! topic's records the order of its processor. The critical section is a
//! copy into the mapped segment.
//!
//! A `persisted` ack is parked in `pending` with the bookmark it waits for.
//! The flusher's hook runs after every sync that advances the watermark and
//! sends every parked ack at or below it. An ack is parked, then the
//! watermark is checked again, so that an ack parked just after a hook ran
//! is not left waiting for a sync that may never come.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use statecast_journal::{
    Appender, Housekeeper, Journal, JournalConfig, NewRecord, Origin, RecoveryMode, RecoveryReport,
    Retention, SyncPolicy,
};
use statecast_protocol::{Ack, Command};

use super::outbound::ConnShared;
use crate::config::{Config, ConfigError};
use crate::core::router::LogOutcome;

/// Which topics are journaled.
#[derive(Debug)]
enum Selector {
    All,
    Some(regex::bytes::RegexSet),
}

struct Parked {
    bookmark: u64,
    order: u64,
    conn: Arc<ConnShared>,
    ack: Ack,
}

impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        (self.bookmark, self.order) == (other.bookmark, other.order)
    }
}

impl Eq for Parked {}

impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Parked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.bookmark, self.order).cmp(&(other.bookmark, other.order))
    }
}

/// The broker's journal.
pub struct Journaling {
    journal: Journal,
    appender: Mutex<Option<Appender>>,
    selector: Selector,
    /// SOW topics are journaled whatever `selector` says: the journal is
    /// how their stores recover.
    sow: Vec<statecast_sow::TopicSpec>,
    pending: Mutex<BinaryHeap<Reverse<Parked>>>,
    parked_order: AtomicU64,
}

impl std::fmt::Debug for Journaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journaling")
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

/// What opening the journal gives the server to run.
pub struct OpenedJournal {
    /// The shared handle.
    pub journaling: Arc<Journaling>,
    /// The sync loop, for a pinned thread of its own.
    pub flusher: statecast_journal::Flusher,
    /// Spares and retention, for an unpinned thread.
    pub housekeeper: Housekeeper,
    /// What recovery found.
    pub report: RecoveryReport,
}

impl std::fmt::Debug for OpenedJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedJournal")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalStartError {
    /// A configuration value was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The journal refused to open (damage, I/O).
    #[error("journal in {dir}: {source}")]
    Open {
        /// The journal directory.
        dir: String,
        /// The journal's error, which names the file and what to do.
        source: statecast_journal::OpenError,
    },
}

impl Journaling {
    /// Opens (recovering) the journal under `<data_dir>/journal`, or `None`
    /// when no topic is journaled.
    ///
    /// # Errors
    /// The configuration or the journal's own refusal.
    pub fn open(config: &Config) -> Result<Option<OpenedJournal>, JournalStartError> {
        let section = &config.journal;
        if !section.enabled() {
            return Ok(None);
        }
        let selector = if section.topics.iter().any(|t| t == ".*") {
            Selector::All
        } else {
            let anchored: Vec<String> = section
                .topics
                .iter()
                .map(|t| format!("^(?:{t})$"))
                .collect();
            Selector::Some(regex::bytes::RegexSet::new(anchored).map_err(|e| {
                ConfigError::Invalid {
                    key: "journal.topics".into(),
                    value: format!("{:?}", section.topics),
                    allowed: format!("regular expressions: {e}"),
                }
            })?)
        };
        let journal_config = JournalConfig {
            segment_bytes: section.segment_bytes.0,
            preallocate: section.preallocate,
            sync: match section.sync.as_str() {
                "interval" => SyncPolicy::Interval(Duration::from_millis(section.sync_interval_ms)),
                _ => SyncPolicy::Batch,
            },
            retention: Retention {
                max_age: section.retention_age()?,
                max_bytes: (section.retention_max_bytes.0 > 0)
                    .then_some(section.retention_max_bytes.0),
                archive: section.archive,
            },
            recovery: match section.recovery.as_str() {
                "quarantine" => RecoveryMode::Quarantine,
                _ => RecoveryMode::Strict,
            },
            ..JournalConfig::default()
        };
        let dir = config.server.data_dir.join("journal");
        let opened = statecast_journal::Journal::open(&dir, journal_config).map_err(|source| {
            JournalStartError::Open {
                dir: dir.display().to_string(),
                source,
            }
        })?;
        let journaling = Arc::new(Self {
            journal: opened.journal,
            appender: Mutex::new(Some(opened.appender)),
            selector,
            sow: config.sow.specs()?,
            pending: Mutex::new(BinaryHeap::new()),
            parked_order: AtomicU64::new(0),
        });
        let weak: Weak<Self> = Arc::downgrade(&journaling);
        journaling
            .journal
            .set_persisted_hook(Box::new(move |watermark| {
                if let Some(journaling) = weak.upgrade() {
                    journaling.release(watermark);
                }
            }));
        Ok(Some(OpenedJournal {
            journaling,
            flusher: opened.flusher,
            housekeeper: opened.housekeeper,
            report: opened.report,
        }))
    }

    /// The journal handle (readers, stats, publishers).
    #[must_use]
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Whether `topic` is journaled.
    #[must_use]
    pub fn is_journaled(&self, topic: &[u8]) -> bool {
        match &self.selector {
            Selector::All => true,
            Selector::Some(set) => {
                set.is_match(topic)
                    || std::str::from_utf8(topic)
                        .is_ok_and(|topic| self.sow.iter().any(|spec| spec.matches(topic)))
            }
        }
    }

    /// Registers a publisher name, returning its id and the highest
    /// sequence persisted for it.
    ///
    /// # Errors
    /// The journal's refusal (a name too long, the journal stopped).
    pub fn register_publisher(
        &self,
        name: &str,
    ) -> Result<statecast_journal::Publisher, statecast_journal::DedupError> {
        self.journal.register_publisher(name)
    }

    /// Appends a publish of `conn` (with its sequence number when it has one).
    pub fn append(
        &self,
        conn: &ConnShared,
        topic: &[u8],
        payload: &[u8],
        flags: u16,
        sequence: Option<u64>,
    ) -> LogOutcome {
        let origin = match (sequence, conn.publisher()) {
            (Some(sequence), Some(publisher)) => Some(Origin {
                publisher,
                sequence,
            }),
            _ => None,
        };
        let mut appender = self.appender.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(appender) = appender.as_mut() else {
            return LogOutcome::Failed {
                text: "the journal is closed: the broker is shutting down".into(),
            };
        };
        let record = NewRecord {
            topic,
            payload,
            flags,
            origin,
        };
        match appender.try_append(record) {
            Ok(Ok(appended)) => LogOutcome::Appended {
                bookmark: appended.bookmark,
                timestamp: appended.timestamp_ns,
            },
            // The duplicate's own record is at or below the last appended
            // bookmark (not `next_bookmark - 1`: after a restart the next
            // bookmark starts past a reserved range, where no sync would
            // ever reach and the ack would wait forever).
            Ok(Err(_duplicate)) => LogOutcome::Duplicate {
                tip: self.journal.appended(),
            },
            Err(error) => LogOutcome::Failed {
                text: error.to_string(),
            },
        }
    }

    /// Sends `ack` to `conn` once `bookmark` is persisted.
    pub fn ack_when_persisted(&self, bookmark: u64, conn: Arc<ConnShared>, ack: Ack) {
        let order = self.parked_order.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Reverse(Parked {
                bookmark,
                order,
                conn,
                ack,
            }));
        let persisted = self.journal.persisted();
        if persisted >= bookmark {
            self.release(persisted);
        }
    }

    /// Sends every parked ack at or below `watermark`.
    fn release(&self, watermark: u64) {
        let mut ready = Vec::new();
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            while pending
                .peek()
                .is_some_and(|Reverse(parked)| parked.bookmark <= watermark)
            {
                if let Some(Reverse(parked)) = pending.pop() {
                    ready.push(parked);
                }
            }
        }
        for parked in ready {
            debug_assert!(
                parked.bookmark <= self.journal.persisted(),
                "a persisted ack only after its sync"
            );
            if let Ok(frame) = Command::Ack(parked.ack).to_bytes() {
                parked.conn.enqueue_frame(frame);
            }
        }
    }

    /// Closes the appender so that the flusher can write a clean-shutdown
    /// checkpoint, then asks the flusher and housekeeper to finish.
    pub fn close(&self) {
        if let Some(appender) = self
            .appender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            appender.close();
        }
        self.journal.shutdown();
    }
}
