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

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::{DurableTarget, Expected, PendingUpdate, Updater, seq_of_update};

/// The KV bucket.
const BUCKET: &str = "bench";
/// Keys spot-checked by reading their last message back.
const SPOT_CHECKS: u64 = 100;

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
    stream: stream::Stream,
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
        let stream = context
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
        Ok(JetStreamUpdater { context, stream })
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

    async fn check(&mut self, expected: Expected) -> anyhow::Result<String> {
        let info = self.stream.get_info().await?;
        let keys = expected.keys_updated();
        anyhow::ensure!(
            info.state.messages == keys,
            "the stream holds {} messages for {keys} keys",
            info.state.messages
        );
        let step = (keys / SPOT_CHECKS).max(1);
        let mut checked = 0;
        for key in (0..keys).step_by(usize::try_from(step)?) {
            let message = self
                .stream
                .get_last_raw_message_by_subject(&format!("$KV.{BUCKET}.k{key}"))
                .await?;
            let seq = seq_of_update(&message.payload, key);
            anyhow::ensure!(
                seq == expected.last_seq(key),
                "key k{key} holds update {seq:?}, not its last, {:?}",
                expected.last_seq(key)
            );
            checked += 1;
        }
        Ok(format!(
            "{} messages for {keys} keys; {checked} keys read back hold their last update",
            info.state.messages
        ))
    }
}
