//! The adapter layer: how one workload talks to each system under test.
//!
//! A [`Target`] opens publisher and subscriber connections; a [`Publisher`]
//! sends payloads; a [`Subscriber`] hands received payloads to a sink. The
//! runner (`run.rs`) is written once against these traits and knows nothing
//! of any client library. Everything runs on one single-threaded tokio
//! runtime inside a `LocalSet`, so the traits need no `Send` bounds and an
//! adapter may use `Rc`/`RefCell` and `spawn_local`.
//!
//! Adding a peer (Redis pub/sub, MQTT…) is one file here: a type for each
//! trait, plus a [`TargetKind`] variant and its arm in `run.rs`. Rules every
//! adapter keeps, so that figures compare:
//! - one network connection per publisher and per subscriber, TCP_NODELAY on;
//! - `subscriber` returns only once the server has registered the
//!   subscription (a round trip), so nothing published later can be missed;
//! - `publish` sends one message per call, with no batching beyond what the
//!   client library does by itself; `finish` returns once everything
//!   published has reached the server (a round trip where the protocol has one).

mod mem;
mod nats;
mod raw;
mod statecast;

use bytes::Bytes;

pub use mem::Mem;
pub use nats::Nats;
pub use raw::Raw;
pub use statecast::Statecast;

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
