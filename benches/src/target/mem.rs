//! The `mem` target: publishers hand each payload to every subscriber through
//! in-process channels. No network, no server: what is left is the
//! generator's own per-message cost, its ceiling.
//!
//! For W2, [`MemUpdates`] keeps the latest update of each key in a map and
//! acknowledges every update at once, numbering the acks like bookmarks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    DurableTarget, Expected, PendingUpdate, Publisher, ReadBack, ReadBackKind, Subscriber, Target,
    Updater, check_count, check_last_values, seq_of_update,
};

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

/// The in-process W2 target: a map of the latest update per key, shared by
/// the updater and the read-back.
#[derive(Debug, Default)]
pub struct MemUpdates {
    latest: Rc<RefCell<HashMap<u64, Bytes>>>,
}

/// The updater of [`MemUpdates`].
#[derive(Debug, Default)]
pub struct MemUpdater {
    latest: Rc<RefCell<HashMap<u64, Bytes>>>,
    acked: u64,
}

impl DurableTarget for MemUpdates {
    type Updater = MemUpdater;

    async fn updater(&self) -> anyhow::Result<MemUpdater> {
        Ok(MemUpdater {
            latest: Rc::clone(&self.latest),
            acked: 0,
        })
    }

    async fn read_back(&self, expected: Expected, kind: ReadBackKind) -> anyhow::Result<ReadBack> {
        let latest = self.latest.borrow();
        let started = std::time::Instant::now();
        let check = match kind {
            ReadBackKind::None => return Ok(ReadBack::default()),
            ReadBackKind::Count => check_count(expected, latest.len() as u64)?,
            ReadBackKind::Full => check_last_values(expected, latest.len(), |key| {
                seq_of_update(latest.get(&key)?, key)
            })?,
        };
        Ok(ReadBack {
            check,
            connect: None,
            query: Some(started.elapsed()),
            records: Some(latest.len() as u64),
        })
    }
}

impl Updater for MemUpdater {
    async fn update(&mut self, key: u64, payload: Bytes) -> anyhow::Result<PendingUpdate> {
        self.latest.borrow_mut().insert(key, payload);
        self.acked += 1;
        Ok(Box::pin(std::future::ready(Ok(Some(self.acked)))))
    }
}
