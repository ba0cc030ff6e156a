//! The `nats` target: NATS core publish/subscribe through async-nats, one
//! connection per publisher and per subscriber (as in peer-baseline.md).

use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;

use super::{Publisher, Subscriber, Target};

/// A nats-server at `addr`, publishing and subscribing on subject `topic`.
#[derive(Debug)]
pub struct Nats {
    addr: String,
    subject: Subject,
}

impl Nats {
    /// The target.
    pub fn new(addr: &str, topic: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            subject: Subject::from(topic),
        }
    }

    async fn connect(&self, name: String) -> anyhow::Result<Client> {
        Ok(async_nats::ConnectOptions::new()
            .name(name)
            .connect(self.addr.as_str())
            .await?)
    }
}

/// A publishing NATS connection.
#[derive(Debug)]
pub struct NatsPublisher {
    client: Client,
    subject: Subject,
}

/// A subscribing NATS connection.
#[derive(Debug)]
pub struct NatsSubscriber {
    _client: Client,
    subscriber: async_nats::Subscriber,
}

impl Target for Nats {
    type Publisher = NatsPublisher;
    type Subscriber = NatsSubscriber;

    async fn publisher(&self, index: usize) -> anyhow::Result<NatsPublisher> {
        Ok(NatsPublisher {
            client: self.connect(format!("bench-pub-{index}")).await?,
            subject: self.subject.clone(),
        })
    }

    async fn subscriber(&self, index: usize) -> anyhow::Result<NatsSubscriber> {
        let client = self.connect(format!("bench-sub-{index}")).await?;
        let subscriber = client.subscribe(self.subject.clone()).await?;
        // SUB then PING/PONG: the server has the subscription when this returns.
        client.flush().await?;
        Ok(NatsSubscriber {
            _client: client,
            subscriber,
        })
    }
}

impl Publisher for NatsPublisher {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        Ok(self.client.publish(self.subject.clone(), payload).await?)
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        Ok(self.client.flush().await?)
    }
}

impl Subscriber for NatsSubscriber {
    async fn recv(&mut self, sink: &mut impl FnMut(&[u8])) -> anyhow::Result<bool> {
        match self.subscriber.next().await {
            Some(message) => {
                sink(&message.payload);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
