//! The `jetstream` W2 target: NATS JetStream through async-nats, as
//! peer-baseline.md W2 drives it. Updates go to `$KV.bench.k<key>`, the
//! subjects of a KV bucket `bench` (history 1, file storage); each publish's
//! PubAck is its acknowledgement and its stream sequence the stamp.
//!
//! The bucket's stream is created directly, with the settings a KV bucket
//! gets (`KV_bench`, one message per subject, discard new, roll-ups allowed,
//! deletes denied, direct gets): async-nats's `create_key_value` cannot
//! parse nats-server 2.9's account-info reply.
//!
//! What a PubAck promises on nats-server 2.9: the message is in the file
//! store, handed to the OS, not fsynced (see peer-baseline.md §3).
//!
//! The read-back is peer-baseline.md's: on a fresh connection, the bucket
//! (`get_key_value`, which reads the stream's info) and a KV watch with
//! history (`watch_with_history(">")`: an ordered push consumer delivering
//! the last message of every subject), read until the consumer reports
//! nothing pending; timed from creating the watch (the consumer's creation
//! is the query's first round trip) to the last entry. Counting reads the
//! stream's message count.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt as _;

use super::{
    DurableTarget, Expected, PendingUpdate, ReadBack, ReadBackKind, Updater, check_count,
    check_last_values, keep_seq,
};

/// The KV bucket.
const BUCKET: &str = "bench";
/// Longest wait for the next entry of a watch.
const WATCH_IDLE: Duration = Duration::from_secs(10);

/// A nats-server with JetStream at `addr`.
#[derive(Debug)]
pub struct JetStream {
    addr: String,
    window: usize,
}

impl JetStream {
    /// The target; `window` is the most updates the runner keeps in flight
    /// (async-nats's own in-flight limit is set above it).
    pub fn new(addr: &str, window: usize) -> Self {
        Self {
            addr: addr.to_owned(),
            window,
        }
    }
}

/// One connection's JetStream context.
#[derive(Debug)]
pub struct JetStreamUpdater {
    context: jetstream::Context,
}

impl DurableTarget for JetStream {
    type Updater = JetStreamUpdater;

    async fn updater(&self) -> anyhow::Result<JetStreamUpdater> {
        let client = async_nats::ConnectOptions::new()
            .name("bench-updater")
            .connect(self.addr.as_str())
            .await?;
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_ack_inflight(self.window.max(1) + 1)
            .build(client);
        context
            .get_or_create_stream(stream::Config {
                name: format!("KV_{BUCKET}"),
                subjects: vec![format!("$KV.{BUCKET}.>")],
                max_messages_per_subject: 1,
                discard: stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                storage: stream::StorageType::File,
                num_replicas: 1,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await?;
        Ok(JetStreamUpdater { context })
    }

    async fn read_back(&self, expected: Expected, kind: ReadBackKind) -> anyhow::Result<ReadBack> {
        if kind == ReadBackKind::None {
            return Ok(ReadBack::default());
        }
        let started = Instant::now();
        let client = async_nats::ConnectOptions::new()
            .name("bench-read-back")
            .connect(self.addr.as_str())
            .await?;
        let context = jetstream::new(client);
        if kind == ReadBackKind::Count {
            let connect = started.elapsed();
            let started = Instant::now();
            let mut stream = context.get_stream(format!("KV_{BUCKET}")).await?;
            let held = stream.info().await?.state.messages;
            let query = started.elapsed();
            return Ok(ReadBack {
                check: check_count(expected, held)?,
                connect: Some(connect),
                query: Some(query),
                records: Some(held),
            });
        }
        let store = context.get_key_value(BUCKET).await?;
        let connect = started.elapsed();
        let started = Instant::now();
        let mut watch = store.watch_with_history(">").await?;
        let keys = usize::try_from(expected.keys_updated())?;
        let mut seqs: Vec<Option<u64>> = vec![None; keys];
        let mut held = 0usize;
        loop {
            let entry = tokio::time::timeout(WATCH_IDLE, watch.next())
                .await
                .map_err(|_| anyhow::anyhow!("no watch entry for {WATCH_IDLE:?} after {held}"))?
                .ok_or_else(|| anyhow::anyhow!("the watch ended after {held} entries"))??;
            let pending = entry.delta;
            // A key seen again replaces its value, as the map this was.
            if !keep_seq(&mut seqs, &entry.value).map_err(|error| anyhow::anyhow!(error))? {
                held += 1;
            }
            if pending == 0 {
                break;
            }
        }
        let query = started.elapsed();
        let check = check_last_values(expected, held, |key| {
            seqs.get(usize::try_from(key).ok()?).copied().flatten()
        })?;
        Ok(ReadBack {
            check,
            connect: Some(connect),
            query: Some(query),
            records: Some(held as u64),
        })
    }
}

impl Updater for JetStreamUpdater {
    async fn update(&mut self, key: u64, payload: Bytes) -> anyhow::Result<PendingUpdate> {
        let ack = self
            .context
            .publish(format!("$KV.{BUCKET}.k{key}"), payload)
            .await?;
        Ok(Box::pin(async move { Ok(Some(ack.await?.sequence)) }))
    }
}
