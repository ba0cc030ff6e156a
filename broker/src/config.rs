//! Configuration: the embedded, commented default (`default.toml`), an
//! optional TOML file layered over it, command-line overrides, and
//! validation whose errors name the key, the value and what is allowed.
//!
//! `docs/configuration.md` documents every key; a test checks that it lists
//! every key of `default.toml`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// The embedded default configuration, exactly as `statecast serve` uses it
/// when no file is given.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that statecast does not know (often a typo).
    #[error("unknown config key `{key}`{hint}")]
    UnknownKey {
        /// The full key, `section.name`.
        key: String,
        /// A suggestion listing the known keys of that section.
        hint: String,
    },
    /// A key has a value of the wrong type or out of range.
    #[error("config key `{key}` = {value}: {allowed}")]
    Invalid {
        /// The full key.
        key: String,
        /// The value as given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

fn invalid(key: &str, value: impl fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// A size in bytes, written as an integer or as a string such as `"64 MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64 MiB"`, `"512KiB"`, `"1 GB"`, `"4096"`.
    ///
    /// # Errors
    /// A message saying what forms are accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| "expected a number of bytes such as 4096 or \"64 MiB\"".to_owned())?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit `{other}`; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| "size overflows 64 bits".to_owned())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, unit) in units {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "\"{} {unit}\"", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(Self(n)),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Client listener.
    pub listen: String,
    /// Admin listener.
    pub admin_listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// `[threads]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ThreadsConfig {
    /// Pin critical threads to NUMA node 0.
    pub pin: bool,
    /// I/O threads (0 = auto).
    pub io: usize,
    /// Processor threads (0 = auto).
    pub processors: usize,
    /// Run the single processor on the single I/O thread: `auto`, `always`, `never`.
    pub inline: String,
}

/// `[connections]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Logon deadline after connect.
    pub logon_timeout_ms: u64,
    /// Default heartbeat interval.
    pub heartbeat_ms: u64,
    /// Smallest interval a client may ask for.
    pub heartbeat_min_ms: u64,
    /// Largest interval a client may ask for.
    pub heartbeat_max_ms: u64,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest frame after logon.
    pub frame_bytes_max: ByteSize,
    /// Largest frame before logon.
    pub frame_bytes_max_before_logon: ByteSize,
    /// Longest topic or pattern.
    pub topic_bytes_max: usize,
    /// Longest content filter.
    pub filter_bytes_max: usize,
    /// Deepest nesting of a content filter.
    pub filter_depth_max: usize,
    /// Connection cap.
    pub connections_max: usize,
    /// Subscriptions per connection.
    pub subscriptions_per_connection_max: usize,
    /// Per-client outbound queue cap.
    pub client_outbound_bytes_max: ByteSize,
    /// Per-client no-progress bound.
    pub client_outbound_stall_ms: u64,
    /// No-progress bound for a client holding up a processor's SOW answer.
    pub sow_answer_stall_ms: u64,
    /// Instance-wide outbound cap.
    pub outbound_total_bytes_max: ByteSize,
    /// Per-I/O-thread bytes handed to processors and not yet processed.
    pub io_inflight_bytes_max: ByteSize,
}

/// `[journal]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Regular expressions of journaled topics (whole-name match).
    pub topics: Vec<String>,
    /// Segment file size.
    pub segment_bytes: ByteSize,
    /// Spare segments kept ready.
    pub preallocate: usize,
    /// `batch` or `interval`.
    pub sync: String,
    /// Interval for `sync = "interval"`.
    pub sync_interval_ms: u64,
    /// Age limit (`"7d"`, `"0"` = none).
    pub retention_max_age: String,
    /// Size limit (0 = none).
    pub retention_max_bytes: ByteSize,
    /// Archive instead of delete.
    pub archive: bool,
    /// `strict` or `quarantine`.
    pub recovery: String,
}

impl JournalSection {
    /// Whether any topic is journaled.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.topics.is_empty()
    }

    /// The retention age limit, `None` for none.
    ///
    /// # Errors
    /// When the text is not a duration.
    pub fn retention_age(&self) -> Result<Option<std::time::Duration>, ConfigError> {
        parse_duration(&self.retention_max_age).map_err(|allowed| {
            invalid(
                "journal.retention_max_age",
                format!("{:?}", self.retention_max_age),
                allowed,
            )
        })
    }
}

/// Parses `"0"`, `"90s"`, `"15m"`, `"12h"`, `"7d"`.
fn parse_duration(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    let allowed =
        || "a duration such as \"30s\", \"15m\", \"12h\", \"7d\", or \"0\" for no limit".to_owned();
    if text == "0" {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(allowed)?;
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| allowed())?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(allowed()),
    };
    Ok(Some(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    )))
}

/// `[sow]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SowSection {
    /// How often each durable SOW topic with new records is checkpointed.
    pub checkpoint_interval_ms: u64,
    /// `[[sow.topics]]`: the SOW topics.
    pub topics: Vec<SowTopicEntry>,
}

/// One `[[sow.topics]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SowTopicEntry {
    /// Exactly this topic (give `topic` or `pattern`).
    #[serde(default)]
    pub topic: Option<String>,
    /// Every topic this regular expression matches as a whole.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Key field paths; empty: publishers give a `sow_key`.
    #[serde(default)]
    pub key: Vec<String>,
    /// `durable` or `transient`.
    #[serde(default = "default_durability")]
    pub durability: String,
    /// Slab size.
    #[serde(default = "default_slab_size")]
    pub slab_size: ByteSize,
    /// Fields with a hash index.
    #[serde(default)]
    pub hash_indexes: Vec<String>,
    /// Fields with a range index built at start (else on first use).
    #[serde(default)]
    pub range_indexes: Vec<String>,
    /// Live fraction under which a slab is compacted.
    #[serde(default = "default_compact_below")]
    pub compact_below: f64,
}

fn default_durability() -> String {
    "durable".into()
}

fn default_slab_size() -> ByteSize {
    ByteSize(statecast_sow::DEFAULT_SLAB_SIZE)
}

fn default_compact_below() -> f64 {
    statecast_sow::DEFAULT_COMPACT_BELOW
}

impl SowSection {
    /// The validated topic specs, in configuration order (the first that
    /// covers a topic wins).
    ///
    /// # Errors
    /// The first entry that is wrong, named by its index and topic.
    pub fn specs(&self) -> Result<Vec<statecast_sow::TopicSpec>, ConfigError> {
        self.topics
            .iter()
            .enumerate()
            .map(|(i, entry)| entry.spec(i))
            .collect()
    }
}

impl SowTopicEntry {
    fn spec(&self, index: usize) -> Result<statecast_sow::TopicSpec, ConfigError> {
        let key = |name: &str| format!("sow.topics[{index}].{name}");
        let topic = match (&self.topic, &self.pattern) {
            (Some(name), None) => statecast_sow::TopicSelector::Name(name.clone()),
            (None, Some(pattern)) => statecast_sow::TopicSelector::Pattern(pattern.clone()),
            _ => {
                return Err(invalid(
                    &key("topic"),
                    format!("{:?} / pattern {:?}", self.topic, self.pattern),
                    "give exactly one of `topic` (a name) and `pattern` (a regular expression)",
                ));
            }
        };
        let durability = match self.durability.as_str() {
            "durable" => statecast_sow::Durability::Durable,
            "transient" => statecast_sow::Durability::Transient,
            other => {
                return Err(invalid(
                    &key("durability"),
                    format!("{other:?}"),
                    "\"durable\" (slab files, reloaded at start) or \"transient\" (memory, rebuilt from the journal)",
                ));
            }
        };
        statecast_sow::SowTopicConfig {
            topic,
            key: self.key.clone(),
            durability,
            slab_size: self.slab_size.0,
            hash_indexes: self.hash_indexes.clone(),
            range_indexes: self.range_indexes.clone(),
            compact_below: self.compact_below,
        }
        .validate()
        .map_err(|e| invalid(&format!("sow.topics[{index}]"), "(entry)", e.to_string()))
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Bound on draining queues at shutdown.
    pub drain_timeout_ms: u64,
}

/// `[logging]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// tracing filter directives.
    pub level: String,
    /// Write the log file.
    pub file: bool,
    /// Rotate the log file past this size.
    pub file_bytes_max: ByteSize,
    /// Rotated files kept.
    pub files_kept: usize,
}

/// The whole configuration, validated.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[threads]`
    pub threads: ThreadsConfig,
    /// `[connections]`
    pub connections: ConnectionsConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[journal]`
    pub journal: JournalSection,
    /// `[sow]`
    pub sow: SowSection,
    /// `[shutdown]`
    pub shutdown: ShutdownConfig,
    /// `[logging]`
    pub logging: LoggingConfig,
}

/// Command-line values that replace configuration keys.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--listen`
    pub listen: Option<String>,
    /// `--admin-listen`
    pub admin_listen: Option<String>,
}

fn parse_table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim().to_owned(),
        })
}

/// Lays `user` over `base`, refusing keys that `base` does not have.
fn merge(base: &mut toml::Table, user: toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (key, value) in user {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(slot) = base.get_mut(&key) else {
            let known: Vec<&str> = base.keys().map(String::as_str).collect();
            let section = if prefix.is_empty() {
                "top level".to_owned()
            } else {
                format!("[{prefix}]")
            };
            return Err(ConfigError::UnknownKey {
                key: full,
                hint: format!(" (known keys in {section}: {})", known.join(", ")),
            });
        };
        match (slot, value) {
            (toml::Value::Table(base_section), toml::Value::Table(user_section)) => {
                merge(base_section, user_section, &full)?;
            }
            (toml::Value::Table(_), other) => {
                return Err(invalid(
                    &full,
                    other,
                    format!("must be a table: write it as [{full}]"),
                ));
            }
            (slot, value) => *slot = value,
        }
    }
    Ok(())
}

/// Deserializes one section of the merged table. When that fails, each key
/// the user gave is tried alone over the default section, so that the error
/// names the key at fault rather than the section.
fn section<T: for<'de> Deserialize<'de>>(
    merged: &toml::Table,
    defaults: &toml::Table,
    name: &str,
) -> Result<T, ConfigError> {
    let table_of = |t: &toml::Table| {
        t.get(name)
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let merged_section = table_of(merged);
    let default_section = table_of(defaults);
    match T::deserialize(toml::Value::Table(merged_section.clone())) {
        Ok(value) => Ok(value),
        Err(section_error) => {
            for (key, value) in &merged_section {
                if default_section.get(key) == Some(value) {
                    continue;
                }
                let mut probe = default_section.clone();
                probe.insert(key.clone(), value.clone());
                if let Err(e) = T::deserialize(toml::Value::Table(probe)) {
                    return Err(invalid(
                        &format!("{name}.{key}"),
                        value,
                        e.to_string().trim().to_owned(),
                    ));
                }
            }
            Err(invalid(
                name,
                "(section)",
                section_error.to_string().trim().to_owned(),
            ))
        }
    }
}

impl Config {
    /// The embedded default.
    ///
    /// # Panics
    /// Never in a released build: a test checks the embedded default.
    #[must_use]
    #[allow(
        clippy::expect_used,
        reason = "a startup invariant: the embedded default is a constant, and a test checks it parses and validates"
    )]
    pub fn embedded_default() -> Self {
        Self::from_toml(DEFAULT_TOML, Path::new("<embedded default>"))
            .expect("the embedded default configuration is valid (checked by a test)")
    }

    /// Loads `path` over the embedded default (or the default alone), then
    /// applies `overrides`, then validates.
    ///
    /// # Errors
    /// Anything wrong with the file, a key or a value.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match path {
            None => Self::embedded_default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml(&text, path)?
            }
        };
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir.clone_from(dir);
        }
        if let Some(listen) = &overrides.listen {
            config.server.listen.clone_from(listen);
        }
        if let Some(listen) = &overrides.admin_listen {
            config.server.admin_listen.clone_from(listen);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text laid over the embedded default and validates it.
    ///
    /// # Errors
    /// Anything wrong with the text, a key or a value.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let defaults = parse_table(DEFAULT_TOML, Path::new("<embedded default>"))?;
        let mut table = defaults.clone();
        merge(&mut table, parse_table(text, path)?, "")?;
        let config = Self {
            server: section(&table, &defaults, "server")?,
            threads: section(&table, &defaults, "threads")?,
            connections: section(&table, &defaults, "connections")?,
            limits: section(&table, &defaults, "limits")?,
            journal: section(&table, &defaults, "journal")?,
            sow: section(&table, &defaults, "sow")?,
            shutdown: section(&table, &defaults, "shutdown")?,
            logging: section(&table, &defaults, "logging")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// The client listener address.
    ///
    /// # Errors
    /// When `server.listen` is not `HOST:PORT`.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.listen", &self.server.listen)
    }

    /// The admin listener address.
    ///
    /// # Errors
    /// When `server.admin_listen` is not `HOST:PORT`.
    pub fn admin_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.admin_listen", &self.server.admin_listen)
    }

    /// Checks every range and relationship between keys.
    ///
    /// # Errors
    /// The first key that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.admin_addr()?;
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "server.data_dir",
                "\"\"",
                "must be a directory path",
            ));
        }
        range(
            "threads.io",
            self.threads.io as u64,
            0,
            256,
            "threads (0 = auto)",
        )?;
        range(
            "threads.processors",
            self.threads.processors as u64,
            0,
            256,
            "threads (0 = auto)",
        )?;
        if !matches!(self.threads.inline.as_str(), "auto" | "always" | "never") {
            return Err(invalid(
                "threads.inline",
                format!("{:?}", self.threads.inline),
                "\"auto\", \"always\" or \"never\"",
            ));
        }
        let c = &self.connections;
        range(
            "connections.logon_timeout_ms",
            c.logon_timeout_ms,
            10,
            3_600_000,
            "ms",
        )?;
        range(
            "connections.heartbeat_min_ms",
            c.heartbeat_min_ms,
            10,
            3_600_000,
            "ms",
        )?;
        range(
            "connections.heartbeat_max_ms",
            c.heartbeat_max_ms,
            c.heartbeat_min_ms,
            3_600_000,
            "ms (at least connections.heartbeat_min_ms)",
        )?;
        range(
            "connections.heartbeat_ms",
            c.heartbeat_ms,
            c.heartbeat_min_ms,
            c.heartbeat_max_ms,
            "ms (between connections.heartbeat_min_ms and connections.heartbeat_max_ms)",
        )?;
        let l = &self.limits;
        let frame_max = u64::from(u32::MAX);
        byte_range("limits.frame_bytes_max", l.frame_bytes_max, 4096, frame_max)?;
        byte_range(
            "limits.frame_bytes_max_before_logon",
            l.frame_bytes_max_before_logon,
            512,
            l.frame_bytes_max.0,
        )?;
        range(
            "limits.topic_bytes_max",
            l.topic_bytes_max as u64,
            1,
            65_535,
            "bytes",
        )?;
        range(
            "limits.filter_bytes_max",
            l.filter_bytes_max as u64,
            1,
            65_535,
            "bytes",
        )?;
        range(
            "limits.filter_depth_max",
            l.filter_depth_max as u64,
            1,
            1_000,
            "levels",
        )?;
        range(
            "limits.connections_max",
            l.connections_max as u64,
            1,
            10_000_000,
            "connections",
        )?;
        range(
            "limits.subscriptions_per_connection_max",
            l.subscriptions_per_connection_max as u64,
            1,
            statecast_protocol::SUB_IDS_PER_DELIVERY_MAX as u64,
            "subscriptions (a delivery names at most 8191 of one connection's subscriptions)",
        )?;
        byte_range(
            "limits.client_outbound_bytes_max",
            l.client_outbound_bytes_max,
            l.frame_bytes_max.0,
            u64::MAX,
        )?;
        range(
            "limits.client_outbound_stall_ms",
            l.client_outbound_stall_ms,
            100,
            86_400_000,
            "ms",
        )?;
        range(
            "limits.sow_answer_stall_ms",
            l.sow_answer_stall_ms,
            100,
            86_400_000,
            "ms",
        )?;
        byte_range(
            "limits.outbound_total_bytes_max",
            l.outbound_total_bytes_max,
            l.client_outbound_bytes_max.0,
            u64::MAX,
        )?;
        byte_range(
            "limits.io_inflight_bytes_max",
            l.io_inflight_bytes_max,
            l.frame_bytes_max.0,
            u64::MAX,
        )?;
        let j = &self.journal;
        for (n, pattern) in j.topics.iter().enumerate() {
            if let Err(error) = regex::Regex::new(pattern) {
                return Err(invalid(
                    &format!("journal.topics[{n}]"),
                    format!("{pattern:?}"),
                    format!("must be a regular expression: {error}"),
                ));
            }
        }
        byte_range("journal.segment_bytes", j.segment_bytes, 1 << 20, 1 << 40)?;
        if !j.segment_bytes.0.is_multiple_of(4096) {
            return Err(invalid(
                "journal.segment_bytes",
                j.segment_bytes,
                "must be a multiple of 4 KiB",
            ));
        }
        range("journal.preallocate", j.preallocate as u64, 1, 64, "files")?;
        if !matches!(j.sync.as_str(), "batch" | "interval") {
            return Err(invalid(
                "journal.sync",
                format!("{:?}", j.sync),
                "\"batch\" (group commit) or \"interval\"",
            ));
        }
        range(
            "journal.sync_interval_ms",
            j.sync_interval_ms,
            1,
            60_000,
            "ms",
        )?;
        j.retention_age()?;
        if !matches!(j.recovery.as_str(), "strict" | "quarantine") {
            return Err(invalid(
                "journal.recovery",
                format!("{:?}", j.recovery),
                "\"strict\" or \"quarantine\"",
            ));
        }
        range(
            "sow.checkpoint_interval_ms",
            self.sow.checkpoint_interval_ms,
            10,
            3_600_000,
            "ms",
        )?;
        self.sow.specs()?;
        if !self.sow.topics.is_empty() && !j.enabled() {
            return Err(invalid(
                "sow.topics",
                format!("{} topics", self.sow.topics.len()),
                "SOW topics need the journal (it is how they recover): set journal.topics (SOW topics are journaled whatever it lists), or turn the SOW off with `[sow]` `topics = []`",
            ));
        }
        range(
            "shutdown.drain_timeout_ms",
            self.shutdown.drain_timeout_ms,
            0,
            3_600_000,
            "ms",
        )?;
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            return Err(invalid(
                "logging.level",
                format!("{:?}", self.logging.level),
                "a level (error, warn, info, debug, trace) or tracing directives such as \"info,statecast::server=debug\"",
            ));
        }
        byte_range(
            "logging.file_bytes_max",
            self.logging.file_bytes_max,
            4096,
            u64::MAX,
        )?;
        range(
            "logging.files_kept",
            self.logging.files_kept as u64,
            1,
            1000,
            "files",
        )?;
        Ok(())
    }

    /// Where log files go.
    #[must_use]
    pub fn log_dir(&self) -> PathBuf {
        self.server.data_dir.join("logs")
    }
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?}"),
            "an IP address and port such as \"127.0.0.1:9007\" (port 0 picks a free port)",
        )
    })
}

fn range(key: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(
            key,
            value,
            format!("must be between {min} and {max} {unit}"),
        ));
    }
    Ok(())
}

fn byte_range(key: &str, value: ByteSize, min: u64, max: u64) -> Result<(), ConfigError> {
    if value.0 < min || value.0 > max {
        let max = if max == u64::MAX {
            "no upper bound".to_owned()
        } else {
            format!("at most {}", ByteSize(max))
        };
        return Err(invalid(
            key,
            value,
            format!("must be at least {} bytes ({max})", ByteSize(min)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn embedded_default_is_valid_and_an_empty_file_equals_it() {
        let default = Config::embedded_default();
        assert_eq!(load("").unwrap(), default);
        assert_eq!(default.limits.frame_bytes_max, ByteSize(16 << 20));
        assert_eq!(default.listen_addr().unwrap().port(), 9007);
        assert_eq!(default.admin_addr().unwrap().port(), 8085);
    }

    #[test]
    fn a_file_changes_only_its_keys() {
        let config = load("[limits]\nconnections_max = 7\n").unwrap();
        assert_eq!(config.limits.connections_max, 7);
        assert_eq!(
            config.limits.topic_bytes_max,
            Config::embedded_default().limits.topic_bytes_max
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_known_ones() {
        let err = load("[limits]\nconections_max = 7\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown config key `limits.conections_max`"),
            "{err}"
        );
        assert!(err.contains("connections_max"), "{err}");
        let err = load("[limitz]\n").unwrap_err().to_string();
        assert!(err.contains("`limitz`"), "{err}");
    }

    #[test]
    fn type_errors_name_the_key_and_value() {
        let err = load("[limits]\nconnections_max = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config key `limits.connections_max` = \"many\""),
            "{err}"
        );
        let err = load("[limits]\nframe_bytes_max = \"12 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.frame_bytes_max") && err.contains("unknown unit"),
            "{err}"
        );
    }

    #[test]
    fn range_errors_say_what_is_allowed() {
        let err = load("[connections]\nheartbeat_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`connections.heartbeat_ms` = 5: must be between 100 and 600000"),
            "{err}"
        );
        let err = load("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.listen") && err.contains("port 0 picks a free port"),
            "{err}"
        );
        let err = load("[limits]\nframe_bytes_max_before_logon = \"32 MiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.frame_bytes_max_before_logon"), "{err}");
        let err = load("[logging]\nlevel = \"loud[\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("logging.level"), "{err}");
    }

    #[test]
    fn sow_topics_declare_range_indexes() {
        let config =
            load("[[sow.topics]]\ntopic = \"t\"\nkey = [\"/id\"]\nrange_indexes = [\"/price\"]\n")
                .unwrap();
        assert_eq!(
            config.sow.topics[0].range_indexes,
            vec!["/price".to_owned()]
        );
        assert_eq!(config.sow.specs().unwrap().len(), 1);
        let bad = SowSection {
            topics: vec![SowTopicEntry {
                range_indexes: vec!["price".into()],
                ..config.sow.topics[0].clone()
            }],
            ..config.sow.clone()
        };
        let err = bad.specs().unwrap_err().to_string();
        assert!(
            err.contains("sow.topics[0]") && err.contains("`range_indexes` entry `price`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = load("[limits\n").unwrap_err().to_string();
        assert!(err.contains("test.toml is not valid TOML"), "{err}");
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(ByteSize::parse("64 MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("512KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("1 GB"), Ok(ByteSize(1_000_000_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("99999999999 TiB").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "\"64 MiB\"");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            data_dir: Some("/tmp/x".into()),
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
        };
        let config = Config::load(None, &overrides).unwrap();
        assert_eq!(config.server.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.listen_addr().unwrap().port(), 0);
    }

    #[test]
    fn configuration_doc_lists_every_key() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .expect("docs/configuration.md exists");
        let table = parse_table(DEFAULT_TOML, Path::new("default")).unwrap();
        for (section, keys) in &table {
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    doc.contains(&format!("`{section}.{key}`")),
                    "docs/configuration.md lacks `{section}.{key}`"
                );
            }
        }
    }
}
