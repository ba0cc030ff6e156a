//! The `mem` target: publishers hand each payload to every subscriber through
//! in-process channels. No network, no server: what is left is the
//! generator's own per-message cost, its ceiling.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Publisher, Subscriber, Target};

/// Messages buffered per subscriber before publishers wait.
const CHANNEL_CAPACITY: usize = 4096;

/// The in-process target. Subscribers must be opened before publishers.
#[derive(Debug, Default)]
pub struct Mem {
    subscribers: Rc<RefCell<Vec<mpsc::Sender<Bytes>>>>,
}

/// A publisher of the `mem` target.
#[derive(Debug)]
pub struct MemPublisher {
    subscribers: Vec<mpsc::Sender<Bytes>>,
}

/// A subscriber of the `mem` target.
#[derive(Debug)]
pub struct MemSubscriber {
    receiver: mpsc::Receiver<Bytes>,
}

impl Target for Mem {
    type Publisher = MemPublisher;
    type Subscriber = MemSubscriber;

    async fn publisher(&self, _index: usize) -> anyhow::Result<MemPublisher> {
        Ok(MemPublisher {
            subscribers: self.subscribers.borrow().clone(),
        })
    }

    async fn subscriber(&self, _index: usize) -> anyhow::Result<MemSubscriber> {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        self.subscribers.borrow_mut().push(sender);
        Ok(MemSubscriber { receiver })
    }
}

impl Publisher for MemPublisher {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        for subscriber in &self.subscribers {
            subscriber
                .send(payload.clone())
                .await
                .map_err(|_| anyhow::anyhow!("a mem subscriber has gone"))?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Subscriber for MemSubscriber {
    async fn recv(&mut self, sink: &mut impl FnMut(&[u8])) -> anyhow::Result<bool> {
        let Some(first) = self.receiver.recv().await else {
            return Ok(false);
        };
        sink(&first);
        while let Ok(next) = self.receiver.try_recv() {
            sink(&next);
        }
        Ok(true)
    }
}
