//! The errors of the store. Every message says what is wrong and, where the
//! caller can act, what to change.

use std::io;

/// A SOW topic configuration that cannot be used. Each variant names the
/// setting, the value given and what is allowed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `topic` is empty.
    #[error("sow topic: `topic` is empty; give a topic name or a regular expression")]
    EmptyTopic,
    /// `topic` as a pattern does not compile.
    #[error("sow topic `{pattern}`: `topic` is not a valid regular expression: {reason}")]
    BadPattern {
        /// The pattern given.
        pattern: String,
        /// Why the regex crate refused it.
        reason: String,
    },
    /// A key field or index field is not a path.
    #[error(
        "sow topic `{topic}`: `{setting}` entry `{value}` is not a field path; allowed: a path such as `/id` or `/order/id` ({reason})"
    )]
    BadPath {
        /// Topic being configured.
        topic: String,
        /// `key`, `hash_indexes` or `range_indexes`.
        setting: &'static str,
        /// The entry given.
        value: String,
        /// Why it is not a path.
        reason: String,
    },
    /// The same key field twice.
    #[error("sow topic `{topic}`: `key` lists `{path}` twice; each key field once")]
    DuplicateKeyField {
        /// Topic being configured.
        topic: String,
        /// The repeated path.
        path: String,
    },
    /// `slab_size` is below the floor or above the ceiling.
    #[error(
        "sow topic `{topic}`: `slab_size` = {value} bytes is not allowed; allowed: {min} ({min_text}) to {max} ({max_text}) bytes, a multiple of 4096"
    )]
    SlabSize {
        /// Topic being configured.
        topic: String,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Smallest, in words.
        min_text: &'static str,
        /// Largest allowed.
        max: u64,
        /// Largest, in words.
        max_text: &'static str,
    },
    /// `compact_below` outside 0.05..=0.95.
    #[error(
        "sow topic `{topic}`: `compact_below` = {value} is not allowed; allowed: 0.05 to 0.95 (the live fraction under which a slab is compacted)"
    )]
    CompactBelow {
        /// Topic being configured.
        topic: String,
        /// The value given.
        value: String,
    },
}

/// Why a message's key could not be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The payload has no (non-null, non-empty) value at a key field.
    #[error(
        "topic `{topic}`: the message has no value at key field `{path}`; every message of this SOW topic needs all its key fields ({all})"
    )]
    MissingField {
        /// The topic.
        topic: String,
        /// The missing field.
        path: String,
        /// All key fields, for the message.
        all: String,
    },
    /// The payload is not JSON where the key field was looked for.
    #[error(
        "topic `{topic}`: the message is not valid JSON ({reason} at byte {offset}); this SOW topic computes its key from the JSON fields {all}"
    )]
    NotJson {
        /// The topic.
        topic: String,
        /// What was wrong.
        reason: &'static str,
        /// Byte offset in the payload.
        offset: usize,
        /// All key fields.
        all: String,
    },
    /// The topic has no key fields and the publish gave no explicit key.
    #[error(
        "topic `{topic}`: this SOW topic has no key fields, so every publish must carry an explicit SowKey"
    )]
    ExplicitKeyRequired {
        /// The topic.
        topic: String,
    },
}

/// What went wrong in a store operation.
#[derive(Debug, thiserror::Error)]
pub enum SowError {
    /// The message is larger than a slab can hold.
    #[error(
        "topic `{topic}`: message of {size} bytes is larger than this SOW topic holds ({limit} bytes: `slab_size` {slab_size} minus {headers} bytes of headers); raise `slab_size` for this topic"
    )]
    Oversize {
        /// The topic.
        topic: String,
        /// The message size.
        size: usize,
        /// The largest message the topic holds.
        limit: usize,
        /// The configured `slab_size`.
        slab_size: u64,
        /// Bytes of file and record header per slab.
        headers: usize,
    },
    /// The key could not be computed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The storage failed. After a failed sync the store refuses further
    /// writes: the pages may be gone (see the journal's flusher).
    #[error("topic `{topic}`: SOW storage failed while {doing}: {source}")]
    Io {
        /// The topic.
        topic: String,
        /// What the store was doing.
        doing: String,
        /// The error from the storage.
        source: io::Error,
    },
    /// A previous sync failed; the store accepts no more writes.
    #[error(
        "topic `{topic}`: the SOW store stopped accepting writes after a failed sync ({first}); restart to recover from the last checkpoint and the journal"
    )]
    Failed {
        /// The topic.
        topic: String,
        /// The first failure.
        first: String,
    },
    /// A record read back did not check out (bit rot after open).
    #[error("topic `{topic}`: record at {file} offset {offset} is damaged ({what})")]
    Damaged {
        /// The topic.
        topic: String,
        /// File name.
        file: String,
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A query option combination that is not allowed.
    #[error("bad query: {0}")]
    BadQuery(String),
}

/// Why a durable store could not be opened at all (as opposed to opened with
/// a [`crate::Recovery::Rebuild`] outcome).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The storage failed.
    #[error("opening SOW topic `{topic}`: storage failed while {doing}: {source}")]
    Io {
        /// The topic.
        topic: String,
        /// What the store was doing.
        doing: String,
        /// The error from the storage.
        source: io::Error,
    },
    /// The files belong to another topic.
    #[error(
        "opening SOW topic `{topic}`: {file} belongs to another topic (topic hash {found:#x}, expected {expected:#x}); give each topic its own directory"
    )]
    WrongTopic {
        /// The topic.
        topic: String,
        /// The file.
        file: String,
        /// Hash found in the file.
        found: u64,
        /// Hash of this topic.
        expected: u64,
    },
    /// The configuration does not cover this topic.
    #[error("opening SOW topic `{topic}`: the SOW configuration `{selector}` does not cover it")]
    NotCovered {
        /// The topic.
        topic: String,
        /// The configured name or pattern.
        selector: String,
    },
}
