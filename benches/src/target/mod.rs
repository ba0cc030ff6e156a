//! The adapter layer: how one workload talks to each system under test.
//!
//! A [`Target`] opens publisher and subscriber connections; a [`Publisher`]
//! sends payloads; a [`Subscriber`] hands received payloads to a sink. The
//! runner (`run.rs`) is written once against these traits and knows nothing
//! of any client library. Everything runs on one single-threaded tokio
//! runtime inside a `LocalSet`, so the traits need no `Send` bounds and an
//! adapter may use `Rc`/`RefCell` and `spawn_local`.
//!
//! W2 (durable keyed updates, `durable.rs`) has its own pair of traits: a
//! [`DurableTarget`] opens an [`Updater`], which sends keyed updates and
//! hands back each update's acknowledgement as a future ([`PendingUpdate`]);
//! the runner awaits those in send order. Afterwards the target reads the
//! state back on a fresh connection ([`DurableTarget::read_back`], timed;
//! W3, `restart.rs`, retries it against a restarting server). Its targets
//! are [`DurableKind`].
//!
//! Adding a peer (Redis pub/sub, MQTT…) is one file here: a type for each
//! trait, plus a [`TargetKind`] (or [`DurableKind`]) variant and its arm in
//! `run.rs` (`durable.rs`). Rules every adapter keeps, so that figures compare:
//! - one network connection per publisher and per subscriber, TCP_NODELAY on;
//! - `subscriber` returns only once the server has registered the
//!   subscription (a round trip), so nothing published later can be missed;
//! - `publish` sends one message per call, with no batching beyond what the
//!   client library does by itself; `finish` returns once everything
//!   published has reached the server (a round trip where the protocol has one);
//! - an [`Updater`] sends one update per call, in its own request (no
//!   batching of updates beyond what the client library does by itself), on
//!   one connection, and its acknowledgement future resolves only on the
//!   server's reply to that update.

mod jetstream;
mod mem;
mod nats;
mod raw;
mod redis;
mod sow;
mod statecast;

use std::time::Duration;

use bytes::Bytes;
use futures::future::LocalBoxFuture;

pub use jetstream::JetStream;
pub use mem::{Mem, MemUpdates};
pub use nats::Nats;
pub use raw::{FilteredSubscriptions, Raw};
pub use redis::Redis;
pub use sow::{SowConnection, SowRequest};
pub use statecast::{READ_BACK_BATCH_SIZE, Statecast, StatecastUpdates};

/// The systems the generator can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// In-process channels, no network: the generator's own ceiling.
    Mem,
    /// The bench crate's null broker (`statecast-bench relay`) through the
    /// bare framing client: the ceiling this generator can measure through
    /// the network on this machine.
    Relay,
    /// The statecast broker through the `statecast-client` SDK (what users run).
    Statecast,
    /// The statecast broker through the bare framing client that the relay
    /// target uses: separates the SDK's cost from the broker's.
    StatecastRaw,
    /// NATS core publish/subscribe through async-nats.
    Nats,
}

impl TargetKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mem => "mem",
            Self::Relay => "relay",
            Self::Statecast => "statecast",
            Self::StatecastRaw => "statecast-raw",
            Self::Nats => "nats",
        }
    }
}

/// A system under test.
pub trait Target {
    /// A publishing connection.
    type Publisher: Publisher + 'static;
    /// A subscribing connection.
    type Subscriber: Subscriber + 'static;

    /// Opens publisher number `index`.
    async fn publisher(&self, index: usize) -> anyhow::Result<Self::Publisher>;

    /// Opens subscriber number `index`, subscribed to the run's topic, once
    /// the server has registered the subscription.
    async fn subscriber(&self, index: usize) -> anyhow::Result<Self::Subscriber>;
}

/// A publishing connection.
pub trait Publisher {
    /// Sends one message (fire-and-forget: returns once the client library
    /// has taken it).
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()>;

    /// Returns once every message published so far has reached the server.
    async fn finish(&mut self) -> anyhow::Result<()>;
}

/// A subscribing connection.
pub trait Subscriber {
    /// Waits for at least one message and calls `sink` with the payload of
    /// each message that is ready. `Ok(false)` when the stream has ended.
    async fn recv(&mut self, sink: &mut impl FnMut(&[u8])) -> anyhow::Result<bool>;
}

/// The systems the W2 (durable keyed updates) workload can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurableKind {
    /// In-process: every update is acknowledged at once, no network: the
    /// generator's own ceiling.
    Mem,
    /// The statecast broker through the SDK (`publish_acked`, `persisted`
    /// acks unless `--ack processed`).
    Statecast,
    /// Redis through redis-rs: one `HSET` + `PUBLISH` pipeline per update;
    /// what its reply promises is the server's `appendfsync` setting.
    Redis,
    /// NATS JetStream through async-nats: a publish to `$KV.bench.k<key>` (a
    /// KV bucket's stream, file storage), acknowledged by a PubAck.
    Jetstream,
}

impl DurableKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mem => "mem",
            Self::Statecast => "statecast",
            Self::Redis => "redis",
            Self::Jetstream => "jetstream",
        }
    }
}

/// How a W2 read-back reads the server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadBackKind {
    /// Every key's value, each checked to be its last update (statecast: one
    /// `sow` query; Redis: `HGETALL`; JetStream: a KV watch with history).
    Full,
    /// Only the number of keys held (statecast: a `count_only` `sow`; Redis:
    /// `HLEN`; JetStream: the stream's message count).
    Count,
    /// Nothing read back.
    None,
}

/// What a read-back found, and how long it took.
#[derive(Debug, Clone, Default)]
pub struct ReadBack {
    /// What was checked (e.g. "10000 of 10000 keys hold their last update").
    pub check: String,
    /// Opening the fresh connection (connect, handshake, and what the client
    /// library needs before the query), when one was opened.
    pub connect: Option<Duration>,
    /// The query: from sending it to the whole answer received.
    pub query: Option<Duration>,
    /// Keys (records) the server returned or counted.
    pub records: Option<u64>,
}

/// What an acknowledged update's reply says about its place in the server's
/// order: statecast's bookmark, JetStream's stream sequence; `None` where the
/// protocol has none (Redis).
pub type Stamp = Option<u64>;

/// The acknowledgement of one update, still to come.
pub type PendingUpdate = LocalBoxFuture<'static, anyhow::Result<Stamp>>;

/// What the server should hold once every update of a run is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Updates sent (and acknowledged), `seq` 0 to `sent - 1`.
    pub sent: u64,
    /// Update `seq` is for key `seq % keys`.
    pub keys: u64,
}

impl Expected {
    /// Keys that were updated at least once.
    pub fn keys_updated(self) -> u64 {
        self.sent.min(self.keys)
    }

    /// The `seq` of the last update of `key`, `None` when it had none.
    pub fn last_seq(self, key: u64) -> Option<u64> {
        (key < self.keys_updated()).then(|| key + (self.sent - 1 - key) / self.keys * self.keys)
    }
}

/// Checks that the server holds as many keys as were updated.
fn check_count(expected: Expected, held: u64) -> anyhow::Result<String> {
    let keys = expected.keys_updated();
    anyhow::ensure!(held == keys, "{held} keys held, {keys} updated");
    Ok(format!("{held} keys held (counted)"))
}

/// Checks that each updated key holds its last update: `seq_of(key)` is the
/// `seq` in the value the server holds for `key`, `held` the number of keys
/// it holds.
fn check_last_values(
    expected: Expected,
    held: usize,
    seq_of: impl Fn(u64) -> Option<u64>,
) -> anyhow::Result<String> {
    let keys = expected.keys_updated();
    let latest = (0..keys)
        .filter(|&key| seq_of(key).is_some() && seq_of(key) == expected.last_seq(key))
        .count() as u64;
    anyhow::ensure!(
        latest == keys && held as u64 == keys,
        "{latest} of {keys} keys hold their last update ({held} keys held)"
    );
    Ok(format!("{latest} of {keys} keys hold their last update"))
}

/// The `seq` of update `value` when it is an update of `key`.
fn seq_of_update(value: &[u8], key: u64) -> Option<u64> {
    let id = crate::payload::parse_key(value)?;
    let (_, seq) = crate::payload::parse(value)?;
    (id.strip_prefix(b"k")? == key.to_string().as_bytes()).then_some(seq)
}

/// Records the `seq` of W2 update `record` in slot `n` of `seqs`, `n` from
/// its key `k<n>`, replacing any earlier one; `true` when the slot was
/// taken already. A record that is not a W2 update or of a key outside
/// `seqs` is an error.
///
/// Read-backs that stream (statecast's `sow`, JetStream's watch) check each
/// record as it is decoded and keep only this, as an application applies a
/// streamed answer: holding every record would make the client touch fresh
/// memory and time its page faults rather than the server.
fn keep_seq(seqs: &mut [Option<u64>], record: &[u8]) -> Result<bool, String> {
    let not_w2 = || "a record that is not a W2 update".to_owned();
    let key = crate::payload::parse_key(record).ok_or_else(not_w2)?;
    let (_, seq) = crate::payload::parse(record).ok_or_else(not_w2)?;
    let slot = key
        .strip_prefix(b"k")
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
        .and_then(|n| seqs.get_mut(n))
        .ok_or_else(|| {
            format!(
                "a record of key {}, which was never updated",
                String::from_utf8_lossy(key)
            )
        })?;
    Ok(slot.replace(seq).is_some())
}

/// The error for a second record of `record`'s key.
fn repeated(record: &[u8]) -> String {
    let key = crate::payload::parse_key(record).unwrap_or_default();
    format!("two records for key {}", String::from_utf8_lossy(key))
}

/// A system under test for W2.
pub trait DurableTarget {
    /// The updating connection.
    type Updater: Updater + 'static;

    /// Opens the connection (and creates what the server needs: a stream…).
    async fn updater(&self) -> anyhow::Result<Self::Updater>;

    /// After every update was acknowledged, on a fresh connection: reads the
    /// state back as `kind` says, times it, and checks it against
    /// `expected`. An `Err` is a failed read-back or check (W3 retries it
    /// while the server restarts).
    async fn read_back(&self, expected: Expected, kind: ReadBackKind) -> anyhow::Result<ReadBack>;
}

/// A connection that sends acknowledged keyed updates.
pub trait Updater {
    /// Sends one update of key `key` (named `k<key>`); returns once the
    /// client library has taken it, with the acknowledgement still to come.
    /// The runner awaits acknowledgements in the order of the calls.
    async fn update(&mut self, key: u64, payload: Bytes) -> anyhow::Result<PendingUpdate>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::KeyedBuilder;

    #[test]
    fn keep_seq_keeps_each_keys_seq_and_reports_a_repeat() {
        let mut builder = KeyedBuilder::new(256).unwrap();
        let mut seqs = vec![None; 3];
        assert_eq!(keep_seq(&mut seqs, &builder.build(1, 7, 2)), Ok(false));
        assert_eq!(keep_seq(&mut seqs, &builder.build(1, 4, 0)), Ok(false));
        assert_eq!(seqs, [Some(4), None, Some(7)]);
        assert_eq!(keep_seq(&mut seqs, &builder.build(1, 10, 2)), Ok(true));
        assert_eq!(seqs[2], Some(10));
        assert_eq!(repeated(&builder.build(1, 10, 2)), "two records for key k2");
    }

    #[test]
    fn keep_seq_refuses_a_key_never_updated_and_a_foreign_record() {
        let mut builder = KeyedBuilder::new(256).unwrap();
        let mut seqs = vec![None; 3];
        assert_eq!(
            keep_seq(&mut seqs, &builder.build(1, 3, 3)),
            Err("a record of key k3, which was never updated".to_owned())
        );
        assert_eq!(
            keep_seq(&mut seqs, br#"{"id":"k1"}"#),
            Err("a record that is not a W2 update".to_owned())
        );
        assert_eq!(seqs, [None, None, None]);
    }
}
