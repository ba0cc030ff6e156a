//! The `statecast` target: the broker through the `statecast-client` SDK,
//! exactly as an application uses it.
//!
//! For W2, [`StatecastUpdates`] publishes every update on one topic with
//! `publish_acked`, and the acknowledgement is the SDK's `PendingAck`; its
//! bookmark is the update's stamp. When that topic is a SOW topic keyed by
//! the document's `id` (`sow.topics`, key `["/id"]`), the read-back is one
//! `sow` query on a fresh connection over raw frames ([`SowConnection`]),
//! timed from writing the command to `group_end`, each record checked as it
//! is decoded ([`keep_seq`](super::keep_seq)); counting is a
//! `count_only` query. A journal-only topic has nothing to read back.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use statecast_client::{Client, ClientOptions, Subscription};
use statecast_protocol::AckType;

use super::{
    DurableTarget, Expected, PendingUpdate, Publisher, ReadBack, ReadBackKind, SowConnection,
    SowRequest, Subscriber, Target, Updater, check_count, check_last_values, keep_seq, repeated,
};

/// The statecast broker at `addr`, publishing and subscribing on `topic`.
#[derive(Debug)]
pub struct Statecast {
    addr: String,
    topic: String,
}

impl Statecast {
    /// The target.
    pub fn new(addr: &str, topic: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            topic: topic.to_owned(),
        }
    }

    async fn connect(&self, name: String) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.addr, ClientOptions::new(name)).await?)
    }
}

/// A publishing SDK client.
#[derive(Debug)]
pub struct StatecastPublisher {
    client: Client,
    topic: String,
}

/// A subscribing SDK client.
#[derive(Debug)]
pub struct StatecastSubscriber {
    _client: Client,
    subscription: Subscription,
}

impl Target for Statecast {
    type Publisher = StatecastPublisher;
    type Subscriber = StatecastSubscriber;

    async fn publisher(&self, index: usize) -> anyhow::Result<StatecastPublisher> {
        Ok(StatecastPublisher {
            client: self.connect(format!("bench-pub-{index}")).await?,
            topic: self.topic.clone(),
        })
    }

    async fn subscriber(&self, index: usize) -> anyhow::Result<StatecastSubscriber> {
        let client = self.connect(format!("bench-sub-{index}")).await?;
        // `subscribe` returns after the broker's ack: the subscription is live.
        let subscription = client.subscribe(&self.topic).await?;
        Ok(StatecastSubscriber {
            _client: client,
            subscription,
        })
    }
}

impl Publisher for StatecastPublisher {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        Ok(self.client.publish(&self.topic, payload).await?)
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        self.client.flush().await?;
        Ok(())
    }
}

impl Subscriber for StatecastSubscriber {
    async fn recv(&mut self, sink: &mut impl FnMut(&[u8])) -> anyhow::Result<bool> {
        match self.subscription.next().await {
            Some(Ok(message)) => {
                sink(&message.payload);
                Ok(true)
            }
            Some(Err(error)) => Err(error.into()),
            None => Ok(false),
        }
    }
}

/// The statecast broker at `addr` taking W2 updates on `topic`, asking for
/// `ack` acknowledgements; `sow` when the topic is a SOW topic keyed by `id`.
#[derive(Debug)]
pub struct StatecastUpdates {
    addr: String,
    topic: String,
    ack: AckType,
    sow: bool,
    batch_size: u32,
}

/// Records per frame of the read-back's answer (`sow_batch`): of 1, 10 and
/// 100, the fastest read-back of W2's 10,000 1 KiB records
/// (benches/RESULTS.md, the issue 5 batch_size section).
pub const READ_BACK_BATCH_SIZE: u32 = 100;

impl StatecastUpdates {
    /// The target.
    pub fn new(addr: &str, topic: &str, ack: AckType, sow: bool) -> Self {
        Self {
            addr: addr.to_owned(),
            topic: topic.to_owned(),
            ack,
            sow,
            batch_size: READ_BACK_BATCH_SIZE,
        }
    }

    /// Reads the state back with `batch_size` records per frame (1: one
    /// `deliver` per record).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = batch_size;
        self
    }
}

/// An updating SDK client.
#[derive(Debug)]
pub struct StatecastUpdater {
    client: Client,
    topic: String,
    ack: AckType,
}

impl DurableTarget for StatecastUpdates {
    type Updater = StatecastUpdater;

    async fn updater(&self) -> anyhow::Result<StatecastUpdater> {
        let client = Client::connect(&self.addr, ClientOptions::new("bench-updater")).await?;
        Ok(StatecastUpdater {
            client,
            topic: self.topic.clone(),
            ack: self.ack,
        })
    }

    async fn read_back(&self, expected: Expected, kind: ReadBackKind) -> anyhow::Result<ReadBack> {
        if !self.sow || kind == ReadBackKind::None {
            return Ok(ReadBack {
                check: format!(
                    "{} acks (no read-back{})",
                    self.ack.name(),
                    if self.sow { "" } else { ": not a SOW topic" }
                ),
                ..ReadBack::default()
            });
        }
        let started = Instant::now();
        let mut connection = SowConnection::connect(&self.addr, "bench-read-back").await?;
        let connect = started.elapsed();
        let request = SowRequest {
            filter: None,
            count_only: kind == ReadBackKind::Count,
            batch_size: Some(self.batch_size),
        };
        // Each record is checked as it is decoded and only its key's `seq`
        // kept, as an application applies a streamed answer: holding all
        // 10 MB of answers would make the client touch fresh memory, and
        // time its page faults instead of the broker.
        let keys = usize::try_from(expected.keys_updated())?;
        let mut seqs: Vec<Option<u64>> = vec![None; keys];
        let mut problem: Option<String> = None;
        let answer = connection
            .query(&self.topic, &request, |payload| {
                match keep_seq(&mut seqs, payload) {
                    Ok(false) => {}
                    Ok(true) => problem = problem.take().or_else(|| Some(repeated(payload))),
                    Err(error) => problem = problem.take().or(Some(error)),
                }
            })
            .await?;
        if let Some(problem) = problem {
            anyhow::bail!(problem);
        }
        let check = if request.count_only {
            check_count(expected, answer.group_records)?
        } else {
            // `keep_seq` refused a second record of a key: each received
            // record is a distinct key.
            let held = usize::try_from(answer.received)?;
            check_last_values(expected, held, |key| {
                seqs.get(usize::try_from(key).ok()?).copied().flatten()
            })?
        };
        Ok(ReadBack {
            check: format!("{check} (sow)"),
            connect: Some(connect),
            query: Some(answer.elapsed),
            records: Some(answer.group_records),
        })
    }
}

impl Updater for StatecastUpdater {
    async fn update(&mut self, _key: u64, payload: Bytes) -> anyhow::Result<PendingUpdate> {
        let pending = self
            .client
            .publish_acked(&self.topic, payload, self.ack)
            .await?;
        Ok(Box::pin(async move { Ok(pending.wait().await?.bookmark) }))
    }
}
