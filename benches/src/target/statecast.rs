//! The `statecast` target: the broker through the `statecast-client` SDK,
//! exactly as an application uses it.
//!
//! For W2, [`StatecastUpdates`] publishes every update on one topic (the key
//! is the document's `id`, as a state-of-the-world topic keys it) with
//! `publish_acked`, and the acknowledgement is the SDK's `PendingAck`; its
//! bookmark is the update's stamp.

use bytes::Bytes;
use futures::StreamExt;
use statecast_client::{Client, ClientOptions, Subscription};
use statecast_protocol::AckType;

use super::{DurableTarget, Expected, PendingUpdate, Publisher, Subscriber, Target, Updater};

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
/// `ack` acknowledgements.
#[derive(Debug)]
pub struct StatecastUpdates {
    addr: String,
    topic: String,
    ack: AckType,
}

impl StatecastUpdates {
    /// The target.
    pub fn new(addr: &str, topic: &str, ack: AckType) -> Self {
        Self {
            addr: addr.to_owned(),
            topic: topic.to_owned(),
            ack,
        }
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
}

impl Updater for StatecastUpdater {
    async fn update(&mut self, _key: u64, payload: Bytes) -> anyhow::Result<PendingUpdate> {
        let pending = self
            .client
            .publish_acked(&self.topic, payload, self.ack)
            .await?;
        Ok(Box::pin(async move { Ok(pending.wait().await?.bookmark) }))
    }

    async fn check(&mut self, _expected: Expected) -> anyhow::Result<String> {
        Ok(format!("{} acks (no read-back)", self.ack.name()))
    }
}
