//! The connection: logon, the reader and writer tasks, acks, subscriptions.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use statecast_protocol::{
    Ack, AckSet, AckType, Command, Decoded, Deliver, DeliverDecoder, Flush, FrameDecoder, GroupEnd,
    Heartbeat, Logon, Publish, Status, Subscribe, Unsubscribe, Utf8,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::Error;

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The client's name (shown in the broker's logs).
    pub name: String,
    /// Heartbeat interval to ask for (the broker clamps it).
    pub heartbeat: Duration,
    /// Deadline for connect + logon.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the broker.
    pub max_frame_bytes: usize,
    /// Bytes buffered for writing before publishers wait.
    pub write_buffer_bytes_max: usize,
    /// Message batches buffered per subscription before the reader waits
    /// (which in turn makes the broker see a slow client).
    pub subscription_buffer_batches: usize,
}

impl ClientOptions {
    /// Defaults with the given client name.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            heartbeat: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_frame_bytes: 64 << 20,
            write_buffer_bytes_max: 4 << 20,
            subscription_buffer_batches: 256,
        }
    }

    /// Sets the heartbeat interval to ask for.
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }
}

/// What the broker said about itself at logon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The broker's version.
    pub version: String,
    /// The heartbeat interval in force.
    pub heartbeat: Duration,
    /// The largest frame the broker accepts.
    pub max_frame_bytes: usize,
    /// The highest publish sequence number the broker has persisted for
    /// this client name (0 for none); `None` from a broker without a
    /// journal. A publisher resends what comes after it.
    pub persisted_sequence: Option<u64>,
}

/// A subscription request.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Topic or topic pattern.
    pub topic: String,
    /// Content filter.
    pub filter: Option<String>,
    /// Comma-separated options.
    pub options: Option<String>,
    /// Where to start in the journal: `epoch`, a bookmark (the messages
    /// after it), an RFC 3339 time, or a range `[from:to)`; `None` for live
    /// messages only.
    pub bookmark: Option<String>,
}

impl SubscribeOptions {
    /// A subscription to `topic`.
    #[must_use]
    pub fn topic(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// With a content filter.
    #[must_use]
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Starting from a point in the journal (see [`SubscribeOptions::bookmark`]).
    #[must_use]
    pub fn bookmark(mut self, bookmark: impl Into<String>) -> Self {
        self.bookmark = Some(bookmark.into());
        self
    }
}

/// What the reader hands to a subscription's (or query's) stream.
#[derive(Debug)]
pub(crate) enum Event {
    /// A delivery: a live message, or a SOW record (it carries a key).
    Deliver(Deliver),
    /// Several records of a SOW query (its `batch_size` was above 1).
    SowBatch(statecast_protocol::SowBatch),
    /// The end of a SOW query's records.
    GroupEnd(GroupEnd),
    /// The stream ends with this error.
    Failed(Error),
}

pub(crate) type Batch = Vec<Event>;

/// Hashes the ids this client assigns (small, sequential integers) with one
/// multiplication (Fibonacci hashing), which spreads them over the table's
/// high bits; the default SipHash costs more per delivery than the rest of
/// the lookup. Only keys this client chose are hashed: there is no
/// adversary to resist.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by ids this client assigns.
type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Debug, Default)]
struct WriteState {
    buf: BytesMut,
    closed: Option<Error>,
    /// Set when the writer should stop after flushing.
    finish: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    acks: IdMap<oneshot::Sender<Ack>>,
    subs: IdMap<mpsc::Sender<Batch>>,
    /// Subscriptions over a bounded journal range: their `completed` ack
    /// ends the stream.
    ranges: std::collections::HashSet<u64>,
    /// SOW queries (not subscriptions): their `group_end` ends the stream.
    queries: std::collections::HashSet<u64>,
    /// Bumped whenever `subs` changes, so that the reader can keep its own
    /// copy of the senders and lock only when it is stale.
    subs_version: u64,
    closed: Option<Error>,
}

impl Shared {
    pub(crate) fn remove_sub(&mut self, sub_id: u64) -> Option<mpsc::Sender<Batch>> {
        self.subs_version += 1;
        self.ranges.remove(&sub_id);
        self.queries.remove(&sub_id);
        self.subs.remove(&sub_id)
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    write: Mutex<WriteState>,
    write_ready: Notify,
    write_space: Notify,
    write_buffer_bytes_max: usize,
    shared: Mutex<Shared>,
    next_id: AtomicU64,
    server: ServerInfo,
    subscription_buffer_batches: usize,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    pub(crate) fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_error(&self) -> Error {
        self.shared()
            .closed
            .clone()
            .unwrap_or_else(|| Error::Closed("the connection is closed".into()))
    }

    /// Encodes `command` into the write buffer, waiting while it is full.
    async fn send(&self, command: &Command) -> Result<(), Error> {
        let len = command.encoded_len()?;
        self.send_with(len, |buf| command.encode(buf)).await
    }

    /// Appends `len` bytes written by `encode` to the write buffer, waiting
    /// while it is full.
    async fn send_with(
        &self,
        len: usize,
        encode: impl Fn(&mut BytesMut) -> Result<(), statecast_protocol::EncodeError>,
    ) -> Result<(), Error> {
        // A send that finds room never waits, so a task publishing in a
        // loop would keep the runtime from every other task (the streams
        // of this very client among them) until the write buffer filled:
        // megabytes. Spending the cooperative budget makes it give way
        // every 128 sends, as tokio's own resources do (without this, W1
        // fan-out-4 with publisher and subscribers on one thread lost its
        // subscribers to the broker's slow-client limit in 3 runs of 3).
        tokio::task::consume_budget().await;
        loop {
            let space = self.write_space.notified();
            {
                let mut write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(error) = &write.closed {
                    return Err(error.clone());
                }
                if write.buf.is_empty() || write.buf.len() + len <= self.write_buffer_bytes_max {
                    let was_empty = write.buf.is_empty();
                    write.buf.reserve(len);
                    encode(&mut write.buf)?;
                    drop(write);
                    if was_empty {
                        self.write_ready.notify_one();
                    }
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// Marks the connection closed for every waiter.
    fn close(&self, error: Error) {
        let (acks, subs) = {
            let mut shared = self.shared();
            if shared.closed.is_none() {
                shared.closed = Some(error.clone());
            }
            (std::mem::take(&mut shared.acks), {
                shared.subs_version += 1;
                std::mem::take(&mut shared.subs)
            })
        };
        drop(acks);
        for sender in subs.into_values() {
            let _ = sender.try_send(vec![Event::Failed(error.clone())]);
        }
        let mut write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if write.closed.is_none() {
            write.closed = Some(error);
        }
        drop(write);
        self.write_ready.notify_one();
        self.write_space.notify_waiters();
    }
}

/// A connection to a statecast broker. Cheap to clone; all clones share the
/// connection, which closes when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    _guard: Arc<CloseOnDrop>,
}

#[derive(Debug)]
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(Error::Closed("the client was dropped".into()));
        if let Some(reader) = self
            .0
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            reader.abort();
        }
    }
}

/// An ack that has been asked for and not yet received.
#[derive(Debug)]
pub struct PendingAck {
    ack_type: AckType,
    receiver: oneshot::Receiver<Ack>,
    inner: Arc<Inner>,
}

impl PendingAck {
    /// Waits for the ack.
    ///
    /// # Errors
    /// [`Error::Failed`] for a failure ack, [`Error::Closed`] when the
    /// connection closed first.
    pub async fn wait(self) -> Result<Ack, Error> {
        match self.receiver.await {
            Ok(ack) if ack.status == Status::Success => Ok(ack),
            Ok(ack) => Err(Error::failed(
                ack.ack_type,
                ack.reason_code,
                ack.reason.as_ref().map(Utf8::as_str),
            )),
            Err(_) => Err(self.inner.closed_error()),
        }
        .map_err(|e| match e {
            Error::Failed { code, reason, .. } => Error::Failed {
                ack_type: self.ack_type.name(),
                code,
                reason,
            },
            other => other,
        })
    }
}

impl Client {
    /// Connects to `addr` and logs on.
    ///
    /// # Errors
    /// When the connection or the logon fails or times out.
    pub async fn connect(addr: &str, options: ClientOptions) -> Result<Self, Error> {
        tokio::time::timeout(options.connect_timeout, Self::connect_inner(addr, options))
            .await
            .map_err(|_| Error::Timeout("connect and logon"))?
    }

    async fn connect_inner(addr: &str, options: ClientOptions) -> Result<Self, Error> {
        let stream = TcpStream::connect(addr).await.map_err(|e| Error::Connect {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let logon = Command::Logon(Logon {
            command_id: Some(0),
            client_name: Utf8::from(options.name.as_str()),
            credentials: None,
            heartbeat_ms: Some(u32::try_from(options.heartbeat.as_millis()).unwrap_or(u32::MAX)),
        });
        write
            .write_all(&logon.to_bytes()?)
            .await
            .map_err(|e| Error::Closed(e.to_string()))?;
        let decoder = FrameDecoder::new(options.max_frame_bytes);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let ack = loop {
            if let Some(frame) = decoder.decode(&mut buf)? {
                match Command::decode(&frame)? {
                    Command::Ack(ack) => break ack,
                    other => {
                        return Err(Error::Closed(format!(
                            "expected a logon ack, got {}",
                            other.code().name()
                        )));
                    }
                }
            }
            let n = read
                .read_buf(&mut buf)
                .await
                .map_err(|e| Error::Closed(e.to_string()))?;
            if n == 0 {
                return Err(Error::Closed(
                    "the broker closed the connection during logon".into(),
                ));
            }
        };
        if ack.status != Status::Success {
            return Err(Error::failed(
                ack.ack_type,
                ack.reason_code,
                ack.reason.as_ref().map(Utf8::as_str),
            ));
        }
        let heartbeat = Duration::from_millis(ack.heartbeat_ms.map_or(10_000, u64::from));
        let server = ServerInfo {
            version: ack
                .server_version
                .as_ref()
                .map(Utf8::to_string)
                .unwrap_or_default(),
            heartbeat,
            max_frame_bytes: ack.max_frame_bytes.map_or(usize::MAX, |n| n as usize),
            persisted_sequence: ack.sequence,
        };
        let inner = Arc::new(Inner {
            write: Mutex::new(WriteState::default()),
            write_ready: Notify::new(),
            write_space: Notify::new(),
            write_buffer_bytes_max: options.write_buffer_bytes_max,
            shared: Mutex::new(Shared::default()),
            next_id: AtomicU64::new(1),
            server,
            subscription_buffer_batches: options.subscription_buffer_batches.max(1),
            reader: Mutex::new(None),
            writer: Mutex::new(None),
        });
        let reader = tokio::spawn(read_loop(Arc::clone(&inner), read, buf, decoder));
        let writer = tokio::spawn(write_loop(Arc::clone(&inner), write));
        *inner.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(reader);
        *inner.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(writer);
        Ok(Self {
            _guard: Arc::new(CloseOnDrop(Arc::clone(&inner))),
            inner,
        })
    }

    /// What the broker said at logon.
    #[must_use]
    pub fn server(&self) -> &ServerInfo {
        &self.inner.server
    }

    /// Whether the connection has closed, and why.
    #[must_use]
    pub fn closed(&self) -> Option<Error> {
        self.inner.shared().closed.clone()
    }

    /// Publishes without asking for an ack. Returns once the message is in
    /// the write buffer. Like tokio's own I/O, it spends the task's
    /// cooperative budget, so a loop of publishes gives the runtime's other
    /// tasks (this client's subscription streams among them) a turn every
    /// 128 sends even while the buffer has room.
    ///
    /// # Errors
    /// When the connection is closed or the topic cannot be encoded.
    pub async fn publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        // Encoded straight from the borrowed topic and payload: the hot path.
        let payload = payload.as_ref();
        let len = statecast_protocol::publish_len(
            topic.as_bytes(),
            None,
            AckSet::NONE,
            None,
            payload.len(),
        )?;
        self.inner
            .send_with(len, |buf| {
                statecast_protocol::encode_publish(
                    topic.as_bytes(),
                    None,
                    AckSet::NONE,
                    None,
                    payload,
                    buf,
                )
                .map(|_| ())
            })
            .await
    }

    /// Publishes asking for one ack type; returns once the message is in the
    /// write buffer, with the ack still to come, so that many publishes can
    /// be in flight.
    ///
    /// # Errors
    /// When the connection is closed or the topic cannot be encoded.
    pub async fn publish_acked(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        ack_type: AckType,
    ) -> Result<PendingAck, Error> {
        self.publish_command(topic, payload, ack_type, None, None)
            .await
    }

    /// Like [`Client::publish_acked`], numbered with this client's
    /// `sequence` for de-duplication: the broker drops (and acks as a
    /// `duplicate`) a number not above the highest it journaled for this
    /// client name. [`crate::ReliablePublisher`] does the numbering and
    /// the resending for you.
    ///
    /// # Errors
    /// When the connection is closed or the topic cannot be encoded.
    pub async fn publish_sequenced(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        ack_type: AckType,
        sequence: u64,
    ) -> Result<PendingAck, Error> {
        self.publish_command(topic, payload, ack_type, Some(sequence), None)
            .await
    }

    /// A publish asking for `ack_type`, optionally numbered and with an
    /// explicit SowKey.
    pub(crate) async fn publish_command(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        ack_type: AckType,
        sequence: Option<u64>,
        sow_key: Option<Bytes>,
    ) -> Result<PendingAck, Error> {
        let command_id = self.inner.id();
        let command = Command::Publish(Publish {
            command_id: Some(command_id),
            topic: Utf8::from(topic),
            ack: AckSet::only(ack_type),
            sequence,
            sow_key,
            payload: payload.into(),
        });
        self.send_acked(command_id, &command, ack_type).await
    }

    /// Sends `command`, whose acks name `command_id`, and returns the
    /// `ack_type` ack still to come.
    pub(crate) async fn send_acked(
        &self,
        command_id: u64,
        command: &Command,
        ack_type: AckType,
    ) -> Result<PendingAck, Error> {
        let receiver = self.register_ack(command_id)?;
        self.send_or_unregister(command, command_id).await?;
        Ok(PendingAck {
            ack_type,
            receiver,
            inner: Arc::clone(&self.inner),
        })
    }

    fn register_ack(&self, command_id: u64) -> Result<oneshot::Receiver<Ack>, Error> {
        let (sender, receiver) = oneshot::channel();
        let mut shared = self.inner.shared();
        if let Some(error) = &shared.closed {
            return Err(error.clone());
        }
        shared.acks.insert(command_id, sender);
        Ok(receiver)
    }

    async fn send_or_unregister(&self, command: &Command, command_id: u64) -> Result<(), Error> {
        let result = self.inner.send(command).await;
        if result.is_err() {
            self.inner.shared().acks.remove(&command_id);
        }
        result
    }

    /// Sends `command` and waits for its processed ack.
    pub(crate) async fn request(&self, command_id: u64, command: Command) -> Result<Ack, Error> {
        self.send_acked(command_id, &command, AckType::Processed)
            .await?
            .wait()
            .await
    }

    /// Subscribes to a topic or topic pattern; returns once the broker has
    /// registered the subscription.
    ///
    /// # Errors
    /// When the broker refuses the subscription or the connection closes.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        self.subscribe_with(SubscribeOptions::topic(topic)).await
    }

    /// Subscribes with a filter or options.
    ///
    /// # Errors
    /// When the broker refuses the subscription or the connection closes.
    pub async fn subscribe_with(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        let sub_id = self.inner.id();
        let bounded = options
            .bookmark
            .as_deref()
            .is_some_and(|b| b.trim_start().starts_with('['));
        let inbox = self.open_inbox(
            sub_id,
            if bounded {
                StreamEnd::Completed
            } else {
                StreamEnd::Unsubscribe
            },
        )?;
        let command = Command::Subscribe(Subscribe {
            command_id: Some(sub_id),
            sub_id,
            topic: Utf8::from(options.topic.as_str()),
            filter: options.filter.as_deref().map(Utf8::from),
            options: options.options.as_deref().map(Utf8::from),
            bookmark: options.bookmark.as_deref().map(Utf8::from),
        });
        self.request(sub_id, command).await?;
        Ok(Subscription { inbox })
    }

    /// Routes the frames naming `sub_id` to a new stream, which `end`
    /// says how to finish. Dropping the inbox (e.g. when the request
    /// fails) stops the routing.
    pub(crate) fn open_inbox(&self, sub_id: u64, end: StreamEnd) -> Result<Inbox, Error> {
        let (sender, receiver) = mpsc::channel(self.inner.subscription_buffer_batches);
        let mut shared = self.inner.shared();
        if let Some(error) = &shared.closed {
            return Err(error.clone());
        }
        match end {
            StreamEnd::Unsubscribe => {}
            StreamEnd::Completed => {
                shared.ranges.insert(sub_id);
            }
            StreamEnd::GroupEnd => {
                shared.queries.insert(sub_id);
            }
        }
        shared.subs.insert(sub_id, sender);
        shared.subs_version += 1;
        drop(shared);
        Ok(Inbox {
            sub_id,
            receiver,
            buffered: Vec::new().into_iter(),
            client: self.clone(),
            done: false,
        })
    }

    /// A barrier: returns once the broker has processed everything this
    /// client sent before it, with the round-trip time. Every message the
    /// broker delivered to this client before answering is in its
    /// subscription streams by then.
    ///
    /// # Errors
    /// When the connection closes first.
    pub async fn flush(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        let command_id = self.inner.id();
        self.request(command_id, Command::Flush(Flush { command_id }))
            .await?;
        Ok(started.elapsed())
    }

    /// Flushes, then closes the connection.
    ///
    /// # Errors
    /// When the flush fails.
    pub async fn close(self) -> Result<(), Error> {
        let result = self.flush().await.map(|_| ());
        {
            let mut write = self
                .inner
                .write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            write.finish = true;
        }
        self.inner.write_ready.notify_one();
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        result
    }
}

/// What ends the stream of an [`Inbox`] (besides an error or dropping it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// Only an unsubscribe: a live subscription.
    Unsubscribe,
    /// The `completed` ack of a bounded replay.
    Completed,
    /// The `group_end` of a SOW query.
    GroupEnd,
}

/// The receiving end of the frames routed to one sub id: batches taken
/// whole from the reader (no copy per message) and handed out one by one.
#[derive(Debug)]
pub(crate) struct Inbox {
    sub_id: u64,
    receiver: mpsc::Receiver<Batch>,
    /// The rest of the batch being handed out.
    buffered: std::vec::IntoIter<Event>,
    client: Client,
    done: bool,
}

impl Inbox {
    /// The sub id.
    pub(crate) fn id(&self) -> u64 {
        self.sub_id
    }

    /// The client this inbox belongs to.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The next event; `None` once the stream is finished or the reader
    /// stopped routing to it.
    #[inline]
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.buffered.next() {
                return Poll::Ready(Some(event));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.buffered = batch.into_iter(),
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Ends the stream here: nothing more is handed out, and the reader
    /// stops routing to it.
    pub(crate) fn finish(&mut self) {
        self.done = true;
        self.buffered = Vec::new().into_iter();
        self.client.inner.shared().remove_sub(self.sub_id);
        self.receiver.close();
    }

    /// Whether the stream has finished.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Sends an unsubscribe for this sub id and waits for its ack; the
    /// stream ends.
    pub(crate) async fn unsubscribe(&mut self) -> Result<(), Error> {
        // Stop routing to this stream first: the reader may be waiting for
        // room in it, and it must be free to read the unsubscribe's ack.
        self.finish();
        let command_id = self.client.inner.id();
        let command = Command::Unsubscribe(Unsubscribe {
            command_id: Some(command_id),
            sub_id: Some(self.sub_id),
        });
        let result = self.client.request(command_id, command).await.map(|_| ());
        self.client.inner.shared().remove_sub(self.sub_id);
        result
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if !self.done {
            // Stop routing to this stream; the broker keeps a subscription
            // until an explicit unsubscribe or the connection closes.
            self.client.inner.shared().remove_sub(self.sub_id);
        }
    }
}

/// A live subscription: a stream of the messages it matches. The stream
/// ends after yielding an error when the connection closes.
#[derive(Debug)]
pub struct Subscription {
    inbox: Inbox,
}

impl Subscription {
    /// The subscription's id on its connection.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.inbox.id()
    }

    /// Ends the subscription. No message for it arrives after the broker's
    /// ack, so the stream ends cleanly.
    ///
    /// # Errors
    /// When the broker refuses or the connection closes.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.inbox.unsubscribe().await
    }
}

impl Stream for Subscription {
    type Item = Result<Deliver, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match self.inbox.poll_event(cx) {
                Poll::Ready(Some(Event::Deliver(message))) => Poll::Ready(Some(Ok(message))),
                Poll::Ready(Some(Event::Failed(error))) => {
                    self.inbox.finish();
                    Poll::Ready(Some(Err(error)))
                }
                // Only SOW queries have groups and batches.
                Poll::Ready(Some(Event::GroupEnd(_) | Event::SowBatch(_))) => continue,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

async fn read_loop(
    inner: Arc<Inner>,
    mut read: OwnedReadHalf,
    mut buf: BytesMut,
    decoder: FrameDecoder,
) {
    let error = read_frames(&inner, &mut read, &mut buf, decoder).await;
    inner.close(error);
}

/// Bounds on the capacity a new delivery batch starts with (the size of
/// the last read's largest batch): a few so a trickle does not over-allocate,
/// at most a read's worth of small messages.
const BATCH_HINT_MIN: usize = 8;
const BATCH_HINT_MAX: usize = 256;

/// The reader's copy of the subscription senders.
#[derive(Default)]
struct Senders {
    version: u64,
    map: IdMap<mpsc::Sender<Batch>>,
}

/// Sends every buffered delivery to its subscription stream, in order.
/// Waiting here is the back-pressure: an application that does not consume
/// its subscription stops this reader, and the broker then sees a slow
/// client.
/// Returns the length of the largest batch sent (0 for none).
async fn send_batches(inner: &Inner, senders: &mut Senders, batches: &mut IdMap<Batch>) -> usize {
    if batches.is_empty() {
        return 0;
    }
    {
        let shared = inner.shared();
        if shared.subs_version != senders.version || senders.map.len() != shared.subs.len() {
            senders.map.clone_from(&shared.subs);
            senders.version = shared.subs_version;
        }
    }
    let mut largest = 0;
    for (sub_id, batch) in batches.drain() {
        largest = largest.max(batch.len());
        if let Some(sender) = senders.map.get(&sub_id) {
            let _ = sender.send(batch).await;
        }
    }
    largest
}

/// Appends a delivery to the batch of each subscription it names.
#[inline(always)]
fn route(batches: &mut IdMap<Batch>, batch_hint: usize, deliver: Deliver) {
    if deliver.sub_ids.len() == 1 {
        // The common case: one subscription, no copy.
        let sub_id = deliver.sub_ids.first().unwrap_or_default();
        batches
            .entry(sub_id)
            .or_insert_with(|| Vec::with_capacity(batch_hint))
            .push(Event::Deliver(deliver));
    } else {
        for sub_id in deliver.sub_ids.iter() {
            batches
                .entry(sub_id)
                .or_insert_with(|| Vec::with_capacity(batch_hint))
                .push(Event::Deliver(deliver.clone()));
        }
    }
}

async fn read_frames(
    inner: &Inner,
    read: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    decoder: FrameDecoder,
) -> Error {
    let silence_max = inner.server.heartbeat * 2;
    let mut batches: IdMap<Batch> = IdMap::default();
    // Each batch is handed over whole, so every read starts new ones: sized
    // like the largest recent batch, they do not regrow (and copy) as they
    // fill.
    let mut batch_hint = BATCH_HINT_MIN;
    let mut senders = Senders::default();
    let mut delivers = DeliverDecoder::new();
    let mut close_reason: Option<Error> = None;
    loop {
        loop {
            let frame = match decoder.decode(buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => return error.into(),
            };
            // Deliveries, nearly every frame, skip the general decoder (and
            // the revalidation of a topic seen in the frame before).
            let frame = match delivers.decode(frame) {
                Ok(Decoded::Deliver(deliver)) => {
                    route(&mut batches, batch_hint, deliver);
                    continue;
                }
                Ok(Decoded::Other(frame)) => frame,
                Err(error) => return error.into(),
            };
            match Command::decode(&frame) {
                Ok(Command::Deliver(deliver)) => route(&mut batches, batch_hint, deliver),
                Ok(Command::Ack(ack)) => {
                    // Deliveries that arrived before an ack reach their
                    // streams before the ack's waiter wakes: when a flush
                    // returns, everything delivered before it is readable.
                    let _ = send_batches(inner, &mut senders, &mut batches).await;
                    let waiter = ack
                        .command_id
                        .and_then(|id| inner.shared().acks.remove(&id));
                    match waiter {
                        Some(waiter) => {
                            let _ = waiter.send(ack);
                        }
                        None if ack
                            .sub_id
                            .is_some_and(|id| inner.shared().subs.contains_key(&id)) =>
                        {
                            // A subscription's later ack: a failed replay
                            // ends its stream with the error; a bounded
                            // range's `completed` ack ends it cleanly.
                            let sub_id = ack.sub_id.unwrap_or_default();
                            if ack.status == Status::Failure {
                                let error = Error::failed(
                                    ack.ack_type,
                                    ack.reason_code,
                                    ack.reason.as_ref().map(Utf8::as_str),
                                );
                                let sender = inner.shared().remove_sub(sub_id);
                                senders.map.remove(&sub_id);
                                if let Some(sender) = sender {
                                    let _ = sender.send(vec![Event::Failed(error)]).await;
                                }
                            } else if ack.ack_type == statecast_protocol::AckType::Completed {
                                let mut shared = inner.shared();
                                if shared.ranges.remove(&sub_id) {
                                    shared.remove_sub(sub_id);
                                    senders.map.remove(&sub_id);
                                }
                            }
                        }
                        None if ack.status == Status::Failure && ack.command_id.is_none() => {
                            // A connection-level failure (slow client,
                            // heartbeat timeout, shutdown): the close follows.
                            close_reason = Some(Error::failed(
                                ack.ack_type,
                                ack.reason_code,
                                ack.reason.as_ref().map(Utf8::as_str),
                            ));
                        }
                        None => {}
                    }
                }
                Ok(Command::Heartbeat(_) | Command::GroupBegin(_)) => {}
                Ok(Command::SowBatch(batch)) => {
                    batches
                        .entry(batch.sub_id)
                        .or_insert_with(|| Vec::with_capacity(batch_hint))
                        .push(Event::SowBatch(batch));
                }
                Ok(Command::GroupEnd(end)) => {
                    // After the query's records; a one-shot query's stream
                    // ends with it (a sow_and_subscribe goes on live).
                    let sub_id = end.sub_id;
                    batches
                        .entry(sub_id)
                        .or_insert_with(|| Vec::with_capacity(1))
                        .push(Event::GroupEnd(end));
                    let _ = send_batches(inner, &mut senders, &mut batches).await;
                    let mut shared = inner.shared();
                    if shared.queries.contains(&sub_id) {
                        shared.remove_sub(sub_id);
                        senders.map.remove(&sub_id);
                    }
                }
                Ok(other) => tracing::debug!(
                    "ignoring unexpected {} from the broker",
                    other.code().name()
                ),
                Err(error) => return error.into(),
            }
        }
        let largest = send_batches(inner, &mut senders, &mut batches).await;
        if largest > 0 {
            batch_hint = largest.clamp(BATCH_HINT_MIN, BATCH_HINT_MAX);
            // Let the streams just handed a batch take it before reading
            // more. Otherwise, on a runtime shared with the consumers, the
            // reader runs ahead by up to `subscription_buffer_batches`
            // batches per stream: every payload is read back from memory
            // long after it arrived, and the allocator keeps returning and
            // re-faulting the pages (W1 fan-out-4 with the load generator:
            // 7,600-17,800 page faults per 800,000 deliveries without this,
            // 1,500-2,000 with it and the send budget; benches/RESULTS.md). Publishers spend
            // the task budget (`send_with`), so this does not hand the
            // runtime to a publishing loop.
            tokio::task::yield_now().await;
        }
        // Room for the rest of the frame begun in the buffer, whole (a SOW
        // answer's `sow_batch` can be hundreds of KiB): growing by a read's
        // worth at a time would copy its first part again at every step,
        // and the frames before it, still held by the streams, keep the old
        // buffer from being reused.
        let rest = decoder
            .peek_len(buf)
            .ok()
            .flatten()
            .map_or(0, |total| total.saturating_sub(buf.len()));
        if buf.capacity() - buf.len() < rest.max(16 * 1024) {
            buf.reserve(rest.max(64 * 1024));
        }
        let read = tokio::time::timeout(silence_max, read.read_buf(buf)).await;
        match read {
            Err(_) => {
                return Error::Closed(format!(
                    "nothing received from the broker for {} ms (two heartbeat intervals)",
                    silence_max.as_millis()
                ));
            }
            Ok(Ok(0)) => {
                return close_reason
                    .unwrap_or_else(|| Error::Closed("the broker closed the connection".into()));
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                return close_reason.unwrap_or_else(|| Error::Closed(error.to_string()));
            }
        }
    }
}

async fn write_loop(inner: Arc<Inner>, mut write: OwnedWriteHalf) {
    let heartbeat = inner.server.heartbeat;
    let mut spare = BytesMut::new();
    loop {
        let ready = inner.write_ready.notified();
        let (mut data, finish) = {
            let mut state = inner.write.lock().unwrap_or_else(PoisonError::into_inner);
            if state.closed.is_some() && state.buf.is_empty() {
                return;
            }
            std::mem::swap(&mut state.buf, &mut spare);
            (std::mem::take(&mut spare), state.finish)
        };
        if !data.is_empty() {
            inner.write_space.notify_waiters();
            if let Err(error) = write.write_all(&data).await {
                inner.close(Error::Closed(error.to_string()));
                return;
            }
            data.clear();
            spare = data;
            continue;
        }
        spare = data;
        if finish {
            let _ = write.shutdown().await;
            return;
        }
        if tokio::time::timeout(heartbeat, ready).await.is_err() {
            // Nothing written for a heartbeat interval.
            let mut state = inner.write.lock().unwrap_or_else(PoisonError::into_inner);
            if let Ok(frame) = Command::Heartbeat(Heartbeat).to_bytes() {
                state.buf.extend_from_slice(&frame);
            }
        }
    }
}
