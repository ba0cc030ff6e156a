//! The `redis` W2 target: Redis through redis-rs, as peer-baseline.md W2
//! drives it. Each update is one pipeline, `HSET sow:bench k<key> <doc>` +
//! `PUBLISH sow.bench <doc>`, on one multiplexed connection; the update is
//! acknowledged when both replies are in. What a reply promises is the
//! server's `appendfsync` setting: `always` replies after the fsync that
//! covers the command (group commit), `everysec` before it.
//!
//! redis-rs sends a request only when its future is polled, so each update
//! is spawned as a task (on the runner's single thread; tasks first run in
//! spawn order, which keeps the updates in order on the connection — the
//! read-back check proves it).

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo as _};

use super::{DurableTarget, Expected, PendingUpdate, Updater, check_last_values, seq_of_update};

/// The hash that holds the state: field `k<key>`, value the latest document.
const HASH: &str = "sow:bench";
/// The channel every update is published on.
const CHANNEL: &str = "sow.bench";

/// A redis-server at `addr` (`host:port`).
#[derive(Debug)]
pub struct Redis {
    addr: String,
    window: usize,
}

impl Redis {
    /// The target; `window` is the most updates the runner keeps in flight
    /// (redis-rs's request queue is sized to hold them).
    pub fn new(addr: &str, window: usize) -> Self {
        Self {
            addr: addr.to_owned(),
            window,
        }
    }
}

/// One multiplexed connection.
pub struct RedisUpdater {
    connection: MultiplexedConnection,
}

impl std::fmt::Debug for RedisUpdater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUpdater").finish_non_exhaustive()
    }
}

impl DurableTarget for Redis {
    type Updater = RedisUpdater;

    async fn updater(&self) -> anyhow::Result<RedisUpdater> {
        let info = format!("redis://{}/", self.addr)
            .into_connection_info()?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        // No response timeout: with `appendfsync always` on a slow disk a
        // reply can take longer than redis-rs's default 500 ms, and the
        // runner has its own.
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_pipeline_buffer_size(self.window.max(1));
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(RedisUpdater { connection })
    }
}

impl Updater for RedisUpdater {
    async fn update(&mut self, key: u64, payload: Bytes) -> anyhow::Result<PendingUpdate> {
        let mut connection = self.connection.clone();
        let field = format!("k{key}");
        let task = tokio::task::spawn_local(async move {
            redis::pipe()
                .hset(HASH, field, &payload[..])
                .ignore()
                .publish(CHANNEL, &payload[..])
                .ignore()
                .query_async::<()>(&mut connection)
                .await
        });
        Ok(Box::pin(async move {
            task.await??;
            Ok(None)
        }))
    }

    async fn check(&mut self, expected: Expected) -> anyhow::Result<String> {
        let state: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(HASH)
            .query_async(&mut self.connection)
            .await?;
        check_last_values(expected, state.len(), |key| {
            seq_of_update(state.get(&format!("k{key}"))?, key)
        })
    }
}
