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
//!
//! The read-back is peer-baseline.md's: `HGETALL sow:bench` on a fresh
//! connection (`HLEN` to count only), timed from sending it to the whole
//! reply parsed by redis-rs; while the server replays its AOF after a
//! restart it answers `LOADING`, an error the W3 loop retries.

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo as _};

use std::time::Instant;

use super::{
    DurableTarget, Expected, PendingUpdate, ReadBack, ReadBackKind, Updater, check_count,
    check_last_values, seq_of_update,
};

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

impl Redis {
    async fn connect(&self) -> anyhow::Result<MultiplexedConnection> {
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
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

impl DurableTarget for Redis {
    type Updater = RedisUpdater;

    async fn updater(&self) -> anyhow::Result<RedisUpdater> {
        Ok(RedisUpdater {
            connection: self.connect().await?,
        })
    }

    async fn read_back(&self, expected: Expected, kind: ReadBackKind) -> anyhow::Result<ReadBack> {
        if kind == ReadBackKind::None {
            return Ok(ReadBack::default());
        }
        let started = Instant::now();
        let mut connection = self.connect().await?;
        let connect = started.elapsed();
        let started = Instant::now();
        if kind == ReadBackKind::Count {
            let held: u64 = redis::cmd("HLEN")
                .arg(HASH)
                .query_async(&mut connection)
                .await?;
            let query = started.elapsed();
            return Ok(ReadBack {
                check: check_count(expected, held)?,
                connect: Some(connect),
                query: Some(query),
                records: Some(held),
            });
        }
        let state: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(HASH)
            .query_async(&mut connection)
            .await?;
        let query = started.elapsed();
        let check = check_last_values(expected, state.len(), |key| {
            seq_of_update(state.get(&format!("k{key}"))?, key)
        })?;
        Ok(ReadBack {
            check,
            connect: Some(connect),
            query: Some(query),
            records: Some(state.len() as u64),
        })
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
}
