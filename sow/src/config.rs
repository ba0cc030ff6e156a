//! SOW topic configuration as plain types. The broker maps its TOML onto
//! [`SowTopicConfig`] and calls [`SowTopicConfig::validate`]; the store only
//! ever sees the validated [`TopicSpec`].

use statecast_filter::ast::{Expr, Path};
use statecast_filter::{Filter, Limits};

use crate::error::ConfigError;
use crate::format::{FILE_HEADER_BYTES, RECORD_HEADER_BYTES};

/// Smallest `slab_size`: 1 MiB, as in AMPS.
pub const MIN_SLAB_SIZE: u64 = 1 << 20;
/// Largest `slab_size`: 1 GiB (offsets inside a slab are 32-bit).
pub const MAX_SLAB_SIZE: u64 = 1 << 30;
/// Default `slab_size`: 4 MiB.
pub const DEFAULT_SLAB_SIZE: u64 = 4 << 20;
/// Default `compact_below`.
pub const DEFAULT_COMPACT_BELOW: f64 = 0.5;

/// Which topics a SOW configuration applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSelector {
    /// Exactly this topic.
    Name(String),
    /// Every topic the regular expression matches (anchored at both ends).
    Pattern(String),
}

/// Whether the store survives a restart by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Slab files through the storage seam, checkpointed; reloaded at start.
    Durable,
    /// Memory only; rebuilt from the journal at start.
    Transient,
}

/// One SOW topic as an operator configures it.
#[derive(Debug, Clone, PartialEq)]
pub struct SowTopicConfig {
    /// Topic name or pattern.
    pub topic: TopicSelector,
    /// Key field paths (`/id`, or `/region` + `/id`). Empty: every publish
    /// carries an explicit SowKey.
    pub key: Vec<String>,
    /// Durable or transient.
    pub durability: Durability,
    /// Allocation unit in bytes (1 MiB to 1 GiB, a multiple of 4096). The
    /// largest message is `slab_size − 104` bytes.
    pub slab_size: u64,
    /// Fields with a hash index, used by `=` and `IN` terms.
    pub hash_indexes: Vec<String>,
    /// Fields with a range index declared ahead: built when the store
    /// opens (from its records, at recovery) and kept up to date, so that
    /// no query pays for building it. Other fields get one on first use.
    pub range_indexes: Vec<String>,
    /// A slab whose live bytes fall below this fraction of its size is
    /// compacted when the store opens a new slab.
    pub compact_below: f64,
}

impl SowTopicConfig {
    /// A durable topic named `topic` keyed by `key`, with defaults elsewhere.
    pub fn new(topic: &str, key: &[&str]) -> SowTopicConfig {
        SowTopicConfig {
            topic: TopicSelector::Name(topic.to_string()),
            key: key.iter().map(|k| (*k).to_string()).collect(),
            durability: Durability::Durable,
            slab_size: DEFAULT_SLAB_SIZE,
            hash_indexes: Vec::new(),
            range_indexes: Vec::new(),
            compact_below: DEFAULT_COMPACT_BELOW,
        }
    }

    /// Checks every setting, naming the first that is wrong.
    pub fn validate(&self) -> Result<TopicSpec, ConfigError> {
        self.validate_inner(MIN_SLAB_SIZE)
    }

    /// Like [`SowTopicConfig::validate`] but with a 4 KiB slab floor, so
    /// tests can fill many slabs with little data. Not for production.
    #[doc(hidden)]
    pub fn validate_for_tests(&self) -> Result<TopicSpec, ConfigError> {
        self.validate_inner(4096)
    }

    fn validate_inner(&self, min_slab: u64) -> Result<TopicSpec, ConfigError> {
        let (topic_text, pattern) = match &self.topic {
            TopicSelector::Name(name) => (name.clone(), None),
            TopicSelector::Pattern(p) => {
                let anchored = format!("^(?:{p})$");
                let regex = regex::Regex::new(&anchored).map_err(|e| ConfigError::BadPattern {
                    pattern: p.clone(),
                    reason: e.to_string(),
                })?;
                (p.clone(), Some(regex))
            }
        };
        if topic_text.is_empty() {
            return Err(ConfigError::EmptyTopic);
        }
        let mut key = Vec::new();
        for text in &self.key {
            let path = parse_path(&topic_text, "key", text)?;
            if key.iter().any(|(p, _): &(Path, String)| *p == path) {
                return Err(ConfigError::DuplicateKeyField {
                    topic: topic_text,
                    path: text.clone(),
                });
            }
            key.push((path, text.clone()));
        }
        let hash_indexes = index_paths(&topic_text, "hash_indexes", &self.hash_indexes)?;
        let range_indexes = index_paths(&topic_text, "range_indexes", &self.range_indexes)?;
        if self.slab_size < min_slab
            || self.slab_size > MAX_SLAB_SIZE
            || !self.slab_size.is_multiple_of(4096)
        {
            return Err(ConfigError::SlabSize {
                topic: topic_text,
                value: self.slab_size,
                min: MIN_SLAB_SIZE,
                min_text: "1 MiB",
                max: MAX_SLAB_SIZE,
                max_text: "1 GiB",
            });
        }
        if !(0.05..=0.95).contains(&self.compact_below) {
            return Err(ConfigError::CompactBelow {
                topic: topic_text,
                value: self.compact_below.to_string(),
            });
        }
        Ok(TopicSpec {
            selector: self.topic.clone(),
            pattern,
            key,
            durability: self.durability,
            slab_size: self.slab_size,
            hash_indexes,
            range_indexes,
            compact_below: self.compact_below,
        })
    }
}

/// The paths of an index setting, each once (a repeat is ignored), with
/// the text it was given as.
fn index_paths(
    topic: &str,
    setting: &'static str,
    texts: &[String],
) -> Result<Vec<(Path, String)>, ConfigError> {
    let mut paths: Vec<(Path, String)> = Vec::new();
    for text in texts {
        let path = parse_path(topic, setting, text)?;
        if !paths.iter().any(|(p, _)| *p == path) {
            paths.push((path, text.clone()));
        }
    }
    Ok(paths)
}

fn parse_path(topic: &str, setting: &'static str, text: &str) -> Result<Path, ConfigError> {
    let bad = |reason: String| ConfigError::BadPath {
        topic: topic.to_string(),
        setting,
        value: text.to_string(),
        reason,
    };
    let filter = Filter::parse(text, &Limits::default()).map_err(|e| bad(e.to_string()))?;
    match filter.expr() {
        Expr::Path(path) => Ok(path.clone()),
        _ => Err(bad("it is an expression, not a single path".to_string())),
    }
}

/// A validated SOW topic configuration.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    selector: TopicSelector,
    pattern: Option<regex::Regex>,
    pub(crate) key: Vec<(Path, String)>,
    pub(crate) durability: Durability,
    pub(crate) slab_size: u64,
    pub(crate) hash_indexes: Vec<(Path, String)>,
    pub(crate) range_indexes: Vec<(Path, String)>,
    pub(crate) compact_below: f64,
}

impl TopicSpec {
    /// Whether this configuration covers `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        match (&self.selector, &self.pattern) {
            (_, Some(regex)) => regex.is_match(topic),
            (TopicSelector::Name(name), None) => name == topic,
            (TopicSelector::Pattern(_), None) => false,
        }
    }

    /// The selector it was configured with.
    pub fn selector(&self) -> &TopicSelector {
        &self.selector
    }

    /// Durable or transient.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The slab size in bytes.
    pub fn slab_size(&self) -> u64 {
        self.slab_size
    }

    /// The key field paths as configured.
    pub fn key_fields(&self) -> impl Iterator<Item = &str> {
        self.key.iter().map(|(_, text)| text.as_str())
    }

    /// The same configuration kept in memory only (for embedders without
    /// a data directory, such as tests).
    pub fn as_transient(&self) -> TopicSpec {
        TopicSpec {
            durability: Durability::Transient,
            ..self.clone()
        }
    }

    /// The largest payload one record may carry.
    pub fn max_payload(&self) -> usize {
        max_payload_for(self.slab_size)
    }
}

/// The largest payload a slab of `slab_size` bytes holds.
pub(crate) fn max_payload_for(slab_size: u64) -> usize {
    let room = slab_size.saturating_sub((FILE_HEADER_BYTES + RECORD_HEADER_BYTES) as u64);
    usize::try_from(room & !7).unwrap_or(usize::MAX)
}
