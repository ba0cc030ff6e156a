//! statecast-sow: the State-of-the-World store of statecast.
//!
//! It owns, for each SOW topic: the latest message per key ([`SowKey`],
//! computed from configured key fields or given by the publisher), kept as
//! records in slabs of `slab_size` bytes (files through the journal crate's
//! storage seam for durable topics, memory for transient ones); the key
//! index, hash indexes and range indexes (declared ones built at open, others on first use) in memory;
//! queries with content filters,
//! `order_by`, `top_n`/`skip_n`, SowKeys, count-only and batches; deletes by
//! key, example and filter; compaction that gives dead space back;
//! checkpoints that tell the broker from which journal bookmark to replay;
//! crash recovery as a typed [`Recovery`] outcome; and the library side of
//! `sow-dump` ([`dump::sizing`]). Topic configuration is plain types
//! ([`SowTopicConfig`]) with validation; the broker maps its TOML onto them.
//!
//! It must not depend on sockets, the wire protocol, threads, clocks or the
//! broker. It depends on statecast-filter (filters, paths, value rules) and
//! statecast-journal (only its storage seam). Every byte it writes is
//! documented in `sow/README.md`.
//!
//! Entry points: [`SowTopicConfig::validate`] → [`TopicSpec`];
//! [`SowStore::open`] → ([`SowStore`], [`Recovery`]); then
//! [`SowStore::upsert`], [`SowStore::delete_key`], [`SowStore::delete_where`],
//! [`SowStore::query`], [`SowStore::checkpoint`], [`SowStore::compact`].

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod background;
mod config;
pub mod dump;
mod error;
mod extract;
pub mod format;
mod index;
mod key;
mod query;
mod range;
mod slab;
mod store;

pub use background::{JobSink, SowJob};
pub use config::{
    DEFAULT_COMPACT_BELOW, DEFAULT_SLAB_SIZE, Durability, MAX_SLAB_SIZE, MIN_SLAB_SIZE,
    SowTopicConfig, TopicSelector, TopicSpec,
};
pub use error::{ConfigError, KeyError, OpenError, SowError};
pub use key::SowKey;
pub use query::{Cursor, Matches, OrderBy, Plan, Query};
pub use store::{
    CompactReport, Damage, QUARANTINE_FOLDER, RebuildReason, RecordRef, Recovery, RecoveryReport,
    SowRecord, SowStore, StoreStats, Upserted, topic_folder,
};
