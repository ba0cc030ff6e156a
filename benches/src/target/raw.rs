//! The bare framing client used by the `relay` and `statecast-raw` targets:
//! statecast frames encoded and decoded with `statecast-protocol` directly,
//! without the SDK's acks table, subscription channels and batching.
//!
//! It speaks the real protocol (logon, subscribe with its ack, publish,
//! flush), so it drives the statecast broker as well as the relay, which
//! answers the same handshake. Subscribers take the payload of every
//! `publish` (from the relay, which forwards publishers' frames verbatim)
//! or `deliver` frame (from the broker) straight out of the receive buffer.
//! Publishers append frames to a write buffer that a writer task drains,
//! so consecutive publishes share a `write` system call — the same
//! coalescing the SDK does, at the least cost.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use statecast_protocol::{
    AckSet, Command, CommandCode, Flush, Frame, FrameDecoder, Logon, Publish, Status, Subscribe,
    Utf8,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use super::{Publisher, Subscriber, Target};

/// Largest frame accepted from the server.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Bytes buffered for writing before `publish` waits (the SDK's default).
const WRITE_BUFFER_BYTES_MAX: usize = 4 << 20;
/// Free space kept in the receive buffer before each read (as the SDK).
const READ_RESERVE_BYTES: usize = 64 * 1024;
/// Heartbeat interval asked for: longer than any run, since these clients
/// never send heartbeats.
const HEARTBEAT_MS: u32 = 600_000;

/// A server speaking statecast's protocol at `addr` (the broker or the relay).
#[derive(Debug)]
pub struct Raw {
    addr: String,
    topic: Utf8,
}

impl Raw {
    /// The target.
    pub fn new(addr: &str, topic: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            topic: Utf8::from(topic),
        }
    }
}

/// One connection's receiving side.
#[derive(Debug)]
pub(super) struct Reader {
    read: OwnedReadHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Reader {
    /// The next frame, `None` at end of stream.
    pub(super) async fn next_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.read_more().await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn read_more(&mut self) -> anyhow::Result<usize> {
        // Room for the whole rest of a frame begun in the buffer (a
        // `sow_batch` can be larger than a read): growing a read's worth at
        // a time would copy its first part at every step.
        let rest = self
            .decoder
            .peek_len(&self.buf)?
            .map_or(0, |total| total.saturating_sub(self.buf.len()));
        if self.buf.capacity() - self.buf.len() < rest.max(READ_RESERVE_BYTES / 4) {
            self.buf.reserve(rest.max(READ_RESERVE_BYTES));
        }
        Ok(self.read.read_buf(&mut self.buf).await?)
    }

    /// Reads until the ack for `command_id`; fails on a failure ack or on
    /// any message in between.
    async fn wait_ack(&mut self, command_id: u64) -> anyhow::Result<()> {
        loop {
            let frame = self
                .next_frame()
                .await?
                .context("the server closed the connection before acking")?;
            match Command::decode(&frame)? {
                Command::Ack(ack) if ack.status == Status::Failure => bail!(
                    "the server refused: {:?} {}",
                    ack.reason_code,
                    ack.reason.as_ref().map_or("", Utf8::as_str)
                ),
                Command::Ack(ack) if ack.command_id == Some(command_id) => return Ok(()),
                Command::Ack(_) | Command::Heartbeat(_) => {}
                other => bail!("expected an ack, the server sent {}", other.code().name()),
            }
        }
    }
}

/// Connects and logs on.
pub(super) async fn logon(addr: &str, name: &str) -> anyhow::Result<(Reader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let logon = Command::Logon(Logon {
        command_id: Some(0),
        client_name: Utf8::from(name),
        credentials: None,
        heartbeat_ms: Some(HEARTBEAT_MS),
    });
    write.write_all(&logon.to_bytes()?).await?;
    let mut reader = Reader {
        read,
        buf: BytesMut::with_capacity(READ_RESERVE_BYTES),
        decoder: FrameDecoder::new(MAX_FRAME_BYTES),
    };
    reader.wait_ack(0).await.context("logon")?;
    Ok((reader, write))
}

#[derive(Debug, Default)]
struct WriteState {
    buf: BytesMut,
    error: Option<String>,
}

/// The buffer shared by a publisher and its writer task.
#[derive(Debug, Default)]
struct WriteShared {
    state: RefCell<WriteState>,
    /// The buffer went from empty to not empty.
    ready: Notify,
    /// The writer took the buffer.
    space: Notify,
}

/// A publishing connection of the bare client.
#[derive(Debug)]
pub struct RawPublisher {
    shared: Rc<WriteShared>,
    reader: Reader,
    topic: Utf8,
    next_command_id: u64,
    writer: tokio::task::JoinHandle<()>,
}

/// A subscribing connection of the bare client.
#[derive(Debug)]
pub struct RawSubscriber {
    reader: Reader,
    /// Kept open: closing it would end the connection.
    _write: OwnedWriteHalf,
}

impl Target for Raw {
    type Publisher = RawPublisher;
    type Subscriber = RawSubscriber;

    async fn publisher(&self, index: usize) -> anyhow::Result<RawPublisher> {
        let (reader, write) = logon(&self.addr, &format!("bench-raw-pub-{index}")).await?;
        let shared = Rc::new(WriteShared::default());
        let writer = tokio::task::spawn_local(write_loop(Rc::clone(&shared), write));
        Ok(RawPublisher {
            shared,
            reader,
            topic: self.topic.clone(),
            next_command_id: 1,
            writer,
        })
    }

    async fn subscriber(&self, index: usize) -> anyhow::Result<RawSubscriber> {
        let (mut reader, mut write) = logon(&self.addr, &format!("bench-raw-sub-{index}")).await?;
        let subscribe = Command::Subscribe(Subscribe {
            command_id: Some(1),
            sub_id: 1,
            topic: self.topic.clone(),
            filter: None,
            options: None,
            bookmark: None,
        });
        write.write_all(&subscribe.to_bytes()?).await?;
        reader.wait_ack(1).await.context("subscribe")?;
        Ok(RawSubscriber {
            reader,
            _write: write,
        })
    }
}

impl RawPublisher {
    /// Appends `command` to the write buffer, waiting while it is full.
    async fn send(&self, command: &Command) -> anyhow::Result<()> {
        let len = command.encoded_len()?;
        loop {
            let space = self.shared.space.notified();
            {
                let mut state = self.shared.state.borrow_mut();
                if let Some(error) = &state.error {
                    bail!("writing to the server failed: {error}");
                }
                if state.buf.is_empty() || state.buf.len() + len <= WRITE_BUFFER_BYTES_MAX {
                    let was_empty = state.buf.is_empty();
                    state.buf.reserve(len);
                    command.encode(&mut state.buf)?;
                    if was_empty {
                        self.shared.ready.notify_one();
                    }
                    return Ok(());
                }
            }
            space.await;
        }
    }
}

impl Publisher for RawPublisher {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        let command = Command::Publish(Publish {
            command_id: None,
            topic: self.topic.clone(),
            ack: AckSet::NONE,
            sequence: None,
            sow_key: None,
            payload,
        });
        self.send(&command).await
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        let command_id = self.next_command_id;
        self.next_command_id += 1;
        self.send(&Command::Flush(Flush { command_id })).await?;
        self.reader.wait_ack(command_id).await.context("flush")
    }
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Drains the shared write buffer into the socket.
async fn write_loop(shared: Rc<WriteShared>, mut write: OwnedWriteHalf) {
    let mut spare = BytesMut::new();
    loop {
        let ready = shared.ready.notified();
        let took = {
            let mut state = shared.state.borrow_mut();
            let took = !state.buf.is_empty();
            if took {
                std::mem::swap(&mut state.buf, &mut spare);
            }
            took
        };
        if !took {
            ready.await;
            continue;
        }
        shared.space.notify_waiters();
        if let Err(error) = write.write_all(&spare).await {
            shared.state.borrow_mut().error = Some(error.to_string());
            shared.space.notify_waiters();
            return;
        }
        spare.clear();
    }
}

const PUBLISH: u8 = CommandCode::Publish as u8;
const DELIVER: u8 = CommandCode::Deliver as u8;
const ACK: u8 = CommandCode::Ack as u8;

impl Subscriber for RawSubscriber {
    async fn recv(&mut self, sink: &mut impl FnMut(&[u8])) -> anyhow::Result<bool> {
        loop {
            let mut delivered = 0usize;
            while let Some(frame) = self.reader.decoder.decode(&mut self.reader.buf)? {
                match frame.command {
                    PUBLISH | DELIVER => {
                        sink(&frame.payload);
                        delivered += 1;
                    }
                    ACK => {
                        if let Command::Ack(ack) = Command::decode(&frame)?
                            && ack.status == Status::Failure
                        {
                            bail!(
                                "the server sent a failure ack: {:?} {}",
                                ack.reason_code,
                                ack.reason.as_ref().map_or("", Utf8::as_str)
                            );
                        }
                    }
                    _ => {}
                }
            }
            if delivered > 0 {
                return Ok(true);
            }
            if self.reader.read_more().await? == 0 {
                return Ok(false);
            }
        }
    }
}

/// The first `S<n>` value of the filters [`FilteredSubscriptions::open`]
/// uses: W1 messages carry `"symbol":"S00"` to `"S99"` (two digits), so no
/// filter `/symbol = 'S<n>'` with `n` ≥ 100 matches any of them.
pub const FILTERED_FIRST_SYMBOL: u64 = 100;

/// Extra connections holding content-filtered subscriptions on the run's
/// topic that the run's messages never match: the broker must test every
/// message against them (or find through its index that none can match)
/// and deliver nothing. A task per connection keeps reading it and counts
/// anything delivered (there should be nothing).
#[derive(Debug)]
pub struct FilteredSubscriptions {
    count: u64,
    deliveries: Rc<std::cell::Cell<u64>>,
    errors: Rc<RefCell<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FilteredSubscriptions {
    /// Opens `count` subscriptions on `topic` at `addr`, at most
    /// `per_connection` on each connection (the broker's
    /// `limits.subscriptions_per_connection_max`, 4096 by default), with
    /// the filters `/symbol = 'S<n>'`, `n` from [`FILTERED_FIRST_SYMBOL`]
    /// on: indexed equality filters that no W1 message matches. Returns
    /// once the broker has acknowledged every subscription.
    pub async fn open(
        addr: &str,
        topic: &str,
        count: u64,
        per_connection: u64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(per_connection > 0, "at least 1 subscription per connection");
        let topic = Utf8::from(topic);
        let deliveries = Rc::new(std::cell::Cell::new(0));
        let errors = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        let mut first = 0;
        let mut connection = 0;
        while first < count {
            let last = count.min(first + per_connection);
            let (mut reader, mut write) =
                logon(addr, &format!("bench-filtered-{connection}")).await?;
            // Every subscribe in one write: command id = sub id = i + 1.
            let mut buf = BytesMut::new();
            for i in first..last {
                Command::Subscribe(Subscribe {
                    command_id: Some(i + 1),
                    sub_id: i + 1,
                    topic: topic.clone(),
                    filter: Some(Utf8::from(format!(
                        "/symbol = 'S{}'",
                        FILTERED_FIRST_SYMBOL + i
                    ))),
                    options: None,
                    bookmark: None,
                })
                .encode(&mut buf)?;
            }
            write.write_all(&buf).await?;
            let mut acked = 0;
            while acked < last - first {
                let frame = reader.next_frame().await?.with_context(|| {
                    format!("connection {connection} closed after {acked} subscribe acks")
                })?;
                match Command::decode(&frame)? {
                    Command::Ack(ack) if ack.status == Status::Failure => bail!(
                        "filtered subscription refused: {:?} {}",
                        ack.reason_code,
                        ack.reason.as_ref().map_or("", Utf8::as_str)
                    ),
                    Command::Ack(ack)
                        if ack.command_id.is_some_and(|id| id > first && id <= last) =>
                    {
                        acked += 1;
                    }
                    Command::Deliver(_) => deliveries.set(deliveries.get() + 1),
                    _ => {}
                }
            }
            tasks.push(tokio::task::spawn_local(drain_filtered(
                reader,
                write,
                connection,
                Rc::clone(&deliveries),
                Rc::clone(&errors),
            )));
            first = last;
            connection += 1;
        }
        Ok(Self {
            count,
            deliveries,
            errors,
            tasks,
        })
    }

    /// Subscriptions held.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Messages delivered to them so far (should be 0).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.get()
    }

    /// Errors on their connections so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.borrow().clone()
    }
}

impl Drop for FilteredSubscriptions {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads a filtered-subscription connection until it ends, counting
/// deliveries; keeps `_write` so that the connection stays open.
async fn drain_filtered(
    mut reader: Reader,
    _write: OwnedWriteHalf,
    connection: u64,
    deliveries: Rc<std::cell::Cell<u64>>,
    errors: Rc<RefCell<Vec<String>>>,
) {
    let error = loop {
        match reader.next_frame().await {
            Ok(Some(frame)) => match frame.command {
                DELIVER | PUBLISH => deliveries.set(deliveries.get() + 1),
                ACK => {
                    if let Ok(Command::Ack(ack)) = Command::decode(&frame)
                        && ack.status == Status::Failure
                    {
                        break format!(
                            "failure ack: {:?} {}",
                            ack.reason_code,
                            ack.reason.as_ref().map_or("", Utf8::as_str)
                        );
                    }
                }
                _ => {}
            },
            Ok(None) => break "the server closed the connection".to_owned(),
            Err(error) => break format!("{error:#}"),
        }
    };
    errors.borrow_mut().push(format!(
        "filtered-subscription connection {connection}: {error}"
    ));
}
