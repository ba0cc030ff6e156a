//! Outbound queues: how processor threads hand frames to the I/O thread
//! that owns a connection, with byte accounting per client and for the
//! instance.
//!
//! A processor accumulates a whole batch's frames per connection in a
//! [`ProcessorSink`], then appends them to each connection's shared queue
//! under one short lock, schedules the connection on its I/O thread's ready
//! list, and wakes each I/O thread at most once per batch. Payloads are
//! shared `Bytes`: one buffer however many subscribers receive a message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use statecast_protocol::{
    Ack, Command, SOW_BATCH_RECORD_HEADER_LEN, Utf8, encode_record_header, encode_sow_batch_header,
    encode_sow_batch_record_header, sow_batch_header_len,
};

use super::journaling::Journaling;
pub use super::out_queue::Tag;
use super::out_queue::{OutQueue, Span};
use crate::core::router::{ConnHandle, LogOutcome, Message, ReplayStart, Sink};

/// Payloads up to this size are copied next to their header instead of
/// being referenced, because one contiguous chunk is cheaper to write than
/// two iovecs for small messages.
const INLINE_PAYLOAD_BYTES_MAX: usize = 256;

/// Room kept in the header buffer before it is refilled.
const HEADER_BUFFER_BYTES: usize = 64 * 1024;

/// A `sow_batch` frame is closed before a record would take it past this
/// many bytes (a batch always holds at least one record, however large):
/// batches stay well inside a client's frame limit, and an answer's 512 KiB
/// pieces ([`SOW_PIECE_BYTES`]) stay about that size.
const SOW_BATCH_BYTES_MAX: usize = 256 * 1024;

/// A SOW answer is sent in pieces of about this many bytes, each queued
/// once the client's queue has room for it ([`ConnShared::has_piece_room`]),
/// so that the I/O thread writes one (and the client reads it) while the
/// next is read from the store. 512 KiB: 10 MB read back in 64-256 KiB
/// pieces took 8-9 ms warm against 6-8 ms in 512 KiB-2 MiB ones (each
/// piece wakes the client once more); the first answer on a fresh
/// connection took 14-21 ms with any of them (benches/RESULTS.md,
/// 2026-12-04, measured inline).
pub const SOW_PIECE_BYTES: usize = 512 * 1024;

/// Instance-wide counters shared by every thread.
#[derive(Debug, Default)]
pub struct Totals {
    /// Bytes queued for all clients.
    pub outbound_bytes: AtomicUsize,
    /// Open client connections.
    pub connections: AtomicUsize,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Clients disconnected for being slow.
    pub slow_disconnects: AtomicU64,
}

/// An I/O thread's handle, as other threads see it.
#[derive(Debug)]
pub struct IoShared {
    /// The thread's index.
    pub index: usize,
    waker: mio::Waker,
    notified: AtomicBool,
    ready: Mutex<Vec<(usize, u64)>>,
    /// Accepted sockets waiting to be registered.
    pub(super) new_conns: Mutex<Vec<(mio::net::TcpStream, std::net::SocketAddr)>>,
    /// Bytes handed to processors and not yet processed.
    pub inflight: AtomicUsize,
    /// Bound on `inflight` before the thread stops reading.
    pub inflight_max: usize,
    /// Set while the thread has stopped reading because of `inflight`.
    pub paused: AtomicBool,
    /// Set to start the thread's part of a clean shutdown.
    pub shutdown: AtomicBool,
}

impl IoShared {
    /// A handle for I/O thread `index`, woken through `waker`.
    pub fn new(index: usize, waker: mio::Waker, inflight_max: usize) -> Self {
        Self {
            index,
            waker,
            notified: AtomicBool::new(false),
            ready: Mutex::new(Vec::new()),
            new_conns: Mutex::new(Vec::new()),
            inflight: AtomicUsize::new(0),
            inflight_max,
            paused: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Wakes the thread unless a wake is already pending.
    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A failed wake means the poller is gone: the thread is exiting.
            let _ = self.waker.wake();
        }
    }

    /// Called by the I/O thread before it drains its ready list, so that
    /// any schedule after this point wakes it again.
    pub(super) fn clear_notified(&self) {
        self.notified.store(false, Ordering::Release);
    }

    fn schedule(&self, token: usize, conn_id: u64) {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((token, conn_id));
    }

    /// Takes the connections scheduled since the last call.
    pub(super) fn take_ready(&self, into: &mut Vec<(usize, u64)>) {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *ready, into);
    }

    /// Records that a processor finished `bytes` of this thread's input, and
    /// wakes the thread when that lets it read again.
    pub fn processed(&self, bytes: usize) {
        let before = self.inflight.fetch_sub(bytes, Ordering::AcqRel);
        if self.paused.load(Ordering::Acquire) && before - bytes <= self.inflight_max / 2 {
            self.wake();
        }
    }
}

/// A connection as processors see it: its outbound queue and flags.
#[derive(Debug)]
pub struct ConnShared {
    /// Process-unique id.
    pub id: u64,
    /// Its slot on the I/O thread.
    pub token: usize,
    /// The owning I/O thread.
    pub io: Arc<IoShared>,
    /// Frames for the I/O thread, and those held behind an open SOW answer
    /// ([`OutQueue`]).
    out: Mutex<OutQueue>,
    /// Signalled (under `out`) when the queue drains far enough for the
    /// next piece of a SOW answer, or the connection closes: a processor
    /// thread streaming an answer waits on it ([`Self::wait_for_piece_room`]).
    piece_room: Condvar,
    /// Processor threads waiting on `piece_room`: the I/O thread signals
    /// only when one is, so that a plain write costs one atomic load more.
    piece_waiters: AtomicUsize,
    /// How many chunks a processor batch last queued for this connection:
    /// the next batch's list starts that large (a hint; no ordering).
    chunks_hint: AtomicUsize,
    queued: AtomicUsize,
    closed: AtomicBool,
    slow: AtomicBool,
    /// Another connection logged on with this one's client name.
    replaced: AtomicBool,
    outbound_max: usize,
    totals: Arc<Totals>,
    /// The journal's id for this client, set once at logon.
    publisher: OnceLock<statecast_journal::PublisherId>,
}

impl ConnHandle for Arc<ConnShared> {
    fn conn_id(&self) -> u64 {
        self.id
    }
}

impl ConnShared {
    /// A connection on `io`, slot `token`.
    pub fn new(
        id: u64,
        token: usize,
        io: Arc<IoShared>,
        outbound_max: usize,
        totals: Arc<Totals>,
    ) -> Self {
        Self {
            id,
            token,
            io,
            out: Mutex::new(OutQueue::default()),
            piece_room: Condvar::new(),
            piece_waiters: AtomicUsize::new(0),
            chunks_hint: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
            outbound_max,
            totals,
            publisher: OnceLock::new(),
        }
    }

    /// The journal's id for this client, once it logged on.
    pub fn publisher(&self) -> Option<statecast_journal::PublisherId> {
        self.publisher.get().copied()
    }

    /// Records the journal's id for this client (once, at logon).
    pub(super) fn set_publisher(&self, publisher: statecast_journal::PublisherId) {
        let _ = self.publisher.set(publisher);
    }

    /// Appends frames for this connection and accounts for them. Returns
    /// whether its I/O thread must be woken to write them (the caller may
    /// batch wakes); marks the connection slow past its limit.
    fn enqueue(&self, chunks: &mut Vec<Bytes>, bytes: usize, spans: &[Span]) -> bool {
        // Counts change only under the `out` lock, so that a close (which
        // releases everything counted) can never interleave with them.
        let (was_empty, queued) = {
            let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
            if self.is_closed() {
                chunks.clear();
                return false;
            }
            let was_empty = out.frames.is_empty();
            if out.holding() || !spans.is_empty() {
                // Frame by frame: some may wait behind an open answer, or
                // open or close one.
                let open = out.open();
                out.push_all(chunks, spans);
                if out.open() != open && self.piece_waiters.load(Ordering::Acquire) > 0 {
                    // A processor may be waiting for that answer to end
                    // before it sends its own next piece.
                    self.piece_room.notify_all();
                }
            } else if was_empty {
                // Hand the list over whole; `chunks` gets the queue's
                // empty one (and its capacity) back for reuse.
                std::mem::swap(&mut out.frames, chunks);
            } else {
                out.frames.append(chunks);
            }
            let was_empty = was_empty && !out.frames.is_empty();
            let queued = self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes;
            self.totals
                .outbound_bytes
                .fetch_add(bytes, Ordering::AcqRel);
            (was_empty, queued)
        };
        if queued > self.outbound_max {
            self.mark_slow();
            false
        } else if was_empty {
            self.io.schedule(self.token, self.id);
            true
        } else {
            false
        }
    }

    /// Queues frames from outside a processor batch (a replay) and wakes
    /// the I/O thread when needed.
    pub fn enqueue_chunks(&self, chunks: &mut Vec<Bytes>, bytes: usize) {
        if self.enqueue(chunks, bytes, &[]) {
            self.io.wake();
        }
    }

    /// Queues one frame from outside a processor batch (a released
    /// persisted ack) and wakes the I/O thread when needed.
    pub fn enqueue_frame(&self, frame: Bytes) {
        let len = frame.len();
        if self.enqueue(&mut vec![frame], len, &[]) {
            self.io.wake();
        }
    }

    /// Bytes this connection may still have queued before it is over its
    /// limit.
    pub fn room(&self) -> usize {
        self.outbound_max.saturating_sub(self.queued())
    }

    /// Whether the next piece of query `sub_id`'s SOW answer (about
    /// `piece` bytes, which may pass that by one record, hence room for
    /// two) may be queued: no other answer is open on the connection (its
    /// pieces would only be held behind it), and the queue is empty, or
    /// holds at most one piece and has room for two under
    /// `limits.client_outbound_bytes_max`. A reading client never gets
    /// near its limit this way, and the socket always has the piece before
    /// to write while the next is made.
    pub fn has_piece_room(&self, piece: usize, sub_id: u64) -> bool {
        let out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        self.piece_room_in(&out, piece, sub_id)
    }

    fn piece_room_in(&self, out: &OutQueue, piece: usize, sub_id: u64) -> bool {
        out.open().is_none_or(|open| open == sub_id) && self.writable_room_in(out, piece)
    }

    /// The room test of [`Self::has_piece_room`] on the frames the I/O
    /// thread can write (held ones cannot drain before the answer ends).
    fn writable_room_in(&self, out: &OutQueue, piece: usize) -> bool {
        let queued = self.queued().saturating_sub(out.held_bytes());
        queued == 0 || (queued <= piece && self.room() >= 2 * piece)
    }

    /// Waits (a processor thread streaming a SOW answer) until the
    /// connection [has room for a piece](Self::has_piece_room) or is
    /// closed, or `timeout` passes; returns whether one of the first two
    /// happened. No spinning: the I/O thread signals as its writes drain
    /// the queue ([`Self::written`]) and when it closes the connection.
    pub fn wait_for_piece_room(&self, piece: usize, sub_id: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted before the check, under the lock the I/O thread takes to
        // change the count: a write after the check sees the waiter.
        self.piece_waiters.fetch_add(1, Ordering::AcqRel);
        let ready = loop {
            if self.is_closed() || self.piece_room_in(&out, piece, sub_id) {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            out = match self.piece_room.wait_timeout(out, left) {
                Ok((out, _)) => out,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        self.piece_waiters.fetch_sub(1, Ordering::AcqRel);
        drop(out);
        ready
    }

    /// Whether a processor thread is waiting for this client to read
    /// before it sends the next piece of a SOW answer
    /// ([`Self::wait_for_piece_room`]).
    pub fn holds_a_processor(&self) -> bool {
        self.piece_waiters.load(Ordering::Acquire) > 0
    }

    /// Bytes queued and not yet written to the socket.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether the connection is closed (queued frames are dropped).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the connection passed its outbound limit.
    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Acquire)
    }

    /// Marks the connection slow and asks its I/O thread to close it.
    pub fn mark_slow(&self) {
        if !self.slow.swap(true, Ordering::AcqRel) {
            self.io.schedule(self.token, self.id);
            self.io.wake();
        }
    }

    /// Whether a newer connection took this one's client name.
    pub fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }

    /// Asks this connection's I/O thread to close it: a newer connection
    /// logged on with its client name.
    pub fn mark_replaced(&self) {
        if !self.replaced.swap(true, Ordering::AcqRel) {
            self.io.schedule(self.token, self.id);
            self.io.wake();
        }
    }

    /// Appends frames queued by the I/O thread itself (its own replies).
    pub(super) fn account_local(&self, bytes: usize) {
        let _out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        self.count_local(bytes);
    }

    /// Counts `bytes` the I/O thread queued itself, unless the connection
    /// is closed (`close` released everything counted). The caller holds
    /// the `out` lock.
    fn count_local(&self, bytes: usize) {
        if self.is_closed() {
            return;
        }
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        self.totals
            .outbound_bytes
            .fetch_add(bytes, Ordering::AcqRel);
    }

    /// Records `bytes` written to the socket.
    pub(super) fn written(&self, bytes: usize) {
        let out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_closed() {
            return; // `close` already released everything counted.
        }
        let before = self.queued.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(
            before >= bytes,
            "wrote {bytes} bytes with only {before} counted"
        );
        self.totals
            .outbound_bytes
            .fetch_sub(bytes, Ordering::AcqRel);
        if self.piece_waiters.load(Ordering::Acquire) > 0
            && self.writable_room_in(&out, SOW_PIECE_BYTES)
        {
            self.piece_room.notify_all();
        }
    }

    /// Takes the frames processors queued, appending them to `into`.
    pub(super) fn take_out(&self, into: &mut std::collections::VecDeque<Bytes>) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        Self::take_frames(&mut out, into);
    }

    fn take_frames(out: &mut OutQueue, into: &mut std::collections::VecDeque<Bytes>) {
        if into.is_empty() {
            // Both conversions keep the buffer (an empty deque is
            // contiguous): the lists trade places without copying a frame,
            // and the queue's empty buffer is the next list's (unless it is
            // too large to keep idle).
            let mut spare = Vec::from(std::mem::take(into));
            if spare.capacity() > CHUNK_LIST_CAPACITY_KEPT_MAX {
                spare = Vec::new();
            }
            *into = std::collections::VecDeque::from(std::mem::replace(&mut out.frames, spare));
        } else {
            into.extend(out.frames.drain(..));
        }
    }

    /// Queues a frame the I/O thread made itself (a reply to a command, a
    /// heartbeat) behind what processors queued before it, and takes what
    /// can be written into `into`. While a SOW answer is open the frame
    /// waits behind it, like any other; a `group_begin` (tagged
    /// [`Tag::Begin`]) opens its query's answer.
    pub(super) fn queue_local(
        &self,
        frame: Bytes,
        tag: Tag,
        into: &mut std::collections::VecDeque<Bytes>,
    ) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        self.count_local(frame.len());
        out.push(frame, tag);
        Self::take_frames(&mut out, into);
    }

    /// Closes the connection for processors: later frames are dropped, and
    /// everything still counted as queued is released.
    pub(super) fn close(&self) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        out.clear();
        let queued = self.queued.swap(0, Ordering::AcqRel);
        self.totals
            .outbound_bytes
            .fetch_sub(queued, Ordering::AcqRel);
        // A processor streaming an answer to this client gives it up.
        self.piece_room.notify_all();
    }
}

struct PendingOut {
    /// `conn.id`, read without following the pointer.
    conn_id: u64,
    conn: Arc<ConnShared>,
    chunks: Vec<Bytes>,
    bytes: usize,
    /// Which chunks are a SOW answer's (its records and `group_end`): they
    /// pass the hold an open answer puts on the connection ([`Tag`]).
    spans: Vec<Span>,
}

impl PendingOut {
    /// Appends a frame of the answer or `group_end` that `tag` names.
    fn push_tagged(&mut self, frame: Bytes, tag: Tag) {
        let at = self.chunks.len();
        self.bytes += frame.len();
        self.chunks.push(frame);
        match self.spans.last_mut() {
            Some(span) if span.tag == tag && span.end == at => span.end = at + 1,
            _ => self.spans.push(Span {
                start: at,
                end: at + 1,
                tag,
            }),
        }
    }
}

/// A processor's output for one batch, flushed to the connections' queues
/// at the end of the batch.
pub struct ProcessorSink {
    pending: Vec<PendingOut>,
    slots: rustc_hash::FxHashMap<u64, usize>,
    headers: BytesMut,
    /// The deliver header encoded last in this batch, for the next
    /// connection that receives the same message.
    last_deliver: Option<LastDeliver>,
    /// Emptied chunk lists, reused for the next batch's connections.
    spare_chunks: Vec<Vec<Bytes>>,
    /// The index in `pending` of the output used last.
    last_slot: usize,
    wake: Vec<Arc<IoShared>>,
    encode_failures: u64,
    journal: Option<Arc<Journaling>>,
    replayer: Option<crossbeam_channel::Sender<super::replayer::ReplayerMsg>>,
    /// The I/O thread running this sink's processor inline: it writes right
    /// after a flush, so it is not woken.
    local_io: Option<Arc<IoShared>>,
    /// Whether each recently seen topic is journaled (bounded).
    journaled: HashMap<Bytes, bool>,
    append_failures: u64,
    append_failure_logged: Option<std::time::Instant>,
    /// Persisted acks of this batch, handed to the journal only after the
    /// flush: the journal sends a due ack straight to the connection, and
    /// it must not overtake what this batch queued before it (the same
    /// command's processed ack).
    parked: Vec<(u64, Arc<ConnShared>, Ack)>,
    /// The `sow_batch` being filled, if any: its frame is the whole of
    /// `headers` (every other output splits its frame off at once, and
    /// closes the batch first).
    batch: Option<OpenBatch>,
}

/// A `sow_batch` frame being written at the front of the sink's header
/// buffer: a header of `header_len` bytes to fill in when it closes, then
/// the records so far.
struct OpenBatch {
    conn: Arc<ConnShared>,
    sub_id: u64,
    topic: Utf8,
    header_len: usize,
    records: u32,
    max: u32,
}

impl std::fmt::Debug for ProcessorSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorSink")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Default for ProcessorSink {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            slots: rustc_hash::FxHashMap::default(),
            headers: BytesMut::with_capacity(HEADER_BUFFER_BYTES),
            last_deliver: None,
            spare_chunks: Vec::new(),
            last_slot: 0,
            wake: Vec::new(),
            encode_failures: 0,
            journal: None,
            replayer: None,
            local_io: None,
            journaled: HashMap::new(),
            append_failures: 0,
            append_failure_logged: None,
            parked: Vec::new(),
            batch: None,
        }
    }
}

/// Topics remembered as journaled or not before the cache is reset.
const JOURNALED_CACHE_MAX: usize = 65_536;

/// Emptied chunk lists a processor keeps for reuse at most.
const SPARE_CHUNK_LISTS_MAX: usize = 16;

/// The largest chunk list kept empty for reuse (a processor's spare list, a
/// connection's idle queue) or started with, in chunks: 512 KiB of `Bytes`
/// handles, so at most 8 MiB of spare lists per processor.
const CHUNK_LIST_CAPACITY_KEPT_MAX: usize = 16 * 1024;

/// Bytes of a header field's tag and length (SPEC.md, "Header fields").
const FIELD_HEADER_LEN: usize = 3;

/// Where the header of the last delivery is, and what it was encoded from
/// besides the topic, sub ids and inline payload (which are compared in
/// the header's own bytes).
struct LastDeliver {
    /// Its place in `pending` (valid until the flush, which clears this).
    slot: usize,
    chunk: usize,
    timestamp: u64,
    bookmark: Option<u64>,
    sow_key: Option<u64>,
    payload_len: usize,
    topic_len: usize,
    sub_ids: usize,
}

/// Where a deliver header holds its topic: after the fixed header and the
/// topic field's tag and length (`encode_record_header` writes the topic
/// first, then the sub ids).
const DELIVER_TOPIC_AT: usize = statecast_protocol::FIXED_HEADER_LEN + FIELD_HEADER_LEN;

impl ProcessorSink {
    /// A sink writing through `journal` (when there is one).
    #[must_use]
    pub fn new(
        journal: Option<Arc<Journaling>>,
        replayer: Option<crossbeam_channel::Sender<super::replayer::ReplayerMsg>>,
    ) -> Self {
        Self {
            journal,
            replayer,
            ..Self::default()
        }
    }

    /// Marks the sink as run inline by `io`'s thread.
    pub fn set_local_io(&mut self, io: Option<Arc<IoShared>>) {
        self.local_io = io;
    }

    /// Publishes the journal refused.
    pub fn append_failures(&self) -> u64 {
        self.append_failures
    }

    #[allow(
        clippy::indexing_slicing,
        reason = "slots holds indices into pending: each is inserted right after its push, and flush drains pending and clears slots together"
    )]
    fn slot(&mut self, conn: &Arc<ConnShared>) -> &mut PendingOut {
        let index = self.slot_index(conn);
        &mut self.pending[index]
    }

    /// The index in `pending` of `conn`'s output, added when it has none.
    fn slot_index(&mut self, conn: &Arc<ConnShared>) -> usize {
        // A topic's targets come in the same order for every message, so
        // after the first message of a batch the output a delivery goes to
        // is nearly always the one after the last (or the first): checked
        // before the map.
        let next = self.last_slot.wrapping_add(1);
        for guess in [next, 0] {
            if self
                .pending
                .get(guess)
                .is_some_and(|pending| pending.conn_id == conn.id)
            {
                self.last_slot = guess;
                return guess;
            }
        }
        let index = *self.slots.entry(conn.id).or_insert_with(|| {
            // A spare list, unless this connection's last batch would
            // outgrow it: growing copies, a new list of the right size
            // does not.
            let hint = conn
                .chunks_hint
                .load(Ordering::Relaxed)
                .min(CHUNK_LIST_CAPACITY_KEPT_MAX);
            let mut chunks = self.spare_chunks.pop().unwrap_or_default();
            if chunks.capacity() < hint {
                chunks = Vec::with_capacity(hint);
            }
            self.pending.push(PendingOut {
                conn_id: conn.id,
                conn: Arc::clone(conn),
                chunks,
                bytes: 0,
                spans: Vec::new(),
            });
            self.pending.len() - 1
        });
        self.last_slot = index;
        index
    }

    /// The header for delivering `message` to `sub_ids`, made from the last
    /// delivery's when that was the same message (the router delivers one
    /// message to every matching connection in turn): the same header when
    /// the sub ids are the same too (shared, like the payload), else a copy
    /// with the sub ids written over. `None` when the last delivery was of
    /// another message (or the header was not reusable): encode it.
    fn reuse_header(
        &mut self,
        sub_ids: &[u64],
        message: &Message<'_>,
        inline: bool,
    ) -> Option<Bytes> {
        let last = self.last_deliver.as_ref()?;
        let topic = message.topic.as_bytes();
        let payload = message.payload;
        if last.timestamp != message.timestamp
            || last.bookmark != message.bookmark
            || last.sow_key != message.sow_key
            || last.payload_len != payload.len()
            || last.topic_len != topic.len()
            || last.sub_ids != sub_ids.len()
        {
            return None;
        }
        let previous = self.pending.get(last.slot)?.chunks.get(last.chunk)?;
        // Same topic and (inline) payload: compared where the header holds
        // them, so nothing about the message is kept between deliveries.
        if previous.get(DELIVER_TOPIC_AT..DELIVER_TOPIC_AT + topic.len())? != topic {
            return None;
        }
        if inline && previous.get(previous.len().checked_sub(payload.len())?..)? != payload.as_ref()
        {
            return None;
        }
        let ids_at = DELIVER_TOPIC_AT + topic.len() + FIELD_HEADER_LEN;
        let ids = previous.get(ids_at..ids_at + sub_ids.len() * 8)?;
        if ids
            .chunks_exact(8)
            .zip(sub_ids)
            .all(|(bytes, id)| bytes == id.to_le_bytes())
        {
            return Some(previous.clone());
        }
        let len = previous.len();
        if self.headers.capacity() - self.headers.len() < len {
            self.headers.reserve(HEADER_BUFFER_BYTES.max(len));
        }
        let start = self.headers.len();
        self.headers.extend_from_slice(previous);
        let ids = self
            .headers
            .get_mut(start + ids_at..start + ids_at + sub_ids.len() * 8)?;
        for (bytes, id) in ids.chunks_exact_mut(8).zip(sub_ids) {
            bytes.copy_from_slice(&id.to_le_bytes());
        }
        Some(self.headers.split().freeze())
    }

    fn reserve_headers(&mut self, need: usize) {
        if self.headers.capacity() - self.headers.len() < need {
            self.headers.reserve(HEADER_BUFFER_BYTES.max(need));
        }
    }

    /// Frames that could not be encoded (an id list too long for one frame).
    pub fn encode_failures(&self) -> u64 {
        self.encode_failures
    }

    /// Bytes this batch holds for `conn`, not yet in its queue.
    fn pending_bytes(&self, conn: &ConnShared) -> usize {
        self.slots
            .get(&conn.id)
            .and_then(|&index| self.pending.get(index))
            .map_or(0, |slot| slot.bytes)
    }

    /// Completes the open `sow_batch`: its header written in front of its
    /// records, the frame queued for its connection.
    fn close_batch(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let payload_len = self.headers.len().saturating_sub(batch.header_len);
        let encoded = match self.headers.get_mut(..batch.header_len) {
            Some(mut header) => encode_sow_batch_header(
                batch.topic.as_bytes(),
                batch.sub_id,
                u64::from(batch.records),
                payload_len,
                &mut header,
            )
            .is_ok(),
            None => false,
        };
        let frame = self.headers.split().freeze();
        if !encoded || batch.records == 0 || batch.conn.is_closed() {
            self.encode_failures += u64::from(!encoded);
            return;
        }
        self.slot(&batch.conn)
            .push_tagged(frame, Tag::Answer(batch.sub_id));
    }

    /// Appends every pending frame to its connection's queue, schedules the
    /// connections and wakes their I/O threads.
    pub fn flush(&mut self) {
        self.close_batch();
        for mut pending in self.pending.drain(..) {
            let conn = &pending.conn;
            conn.chunks_hint
                .store(pending.chunks.len(), Ordering::Relaxed);
            let local = self
                .local_io
                .as_ref()
                .is_some_and(|io| Arc::ptr_eq(io, &conn.io));
            if conn.enqueue(&mut pending.chunks, pending.bytes, &pending.spans)
                && !local
                && !self.wake.iter().any(|io| Arc::ptr_eq(io, &conn.io))
            {
                self.wake.push(Arc::clone(&conn.io));
            }
            if (1..=CHUNK_LIST_CAPACITY_KEPT_MAX).contains(&pending.chunks.capacity())
                && self.spare_chunks.len() < SPARE_CHUNK_LISTS_MAX
            {
                pending.chunks.clear();
                self.spare_chunks.push(std::mem::take(&mut pending.chunks));
            }
        }
        self.slots.clear();
        self.last_deliver = None;
        if let Some(journal) = &self.journal {
            for (bookmark, conn, ack) in self.parked.drain(..) {
                journal.ack_when_persisted(bookmark, conn, ack);
            }
        }
        for io in self.wake.drain(..) {
            io.wake();
        }
    }
}

impl Sink<Arc<ConnShared>> for ProcessorSink {
    fn release(&mut self) {
        self.flush();
    }

    fn append(
        &mut self,
        conn: &Arc<ConnShared>,
        topic: &Utf8,
        payload: &Bytes,
        flags: u16,
        sequence: Option<u64>,
    ) -> LogOutcome {
        let Some(journal) = &self.journal else {
            return LogOutcome::NotJournaled;
        };
        let journaled = match self.journaled.get(topic.as_bytes()) {
            Some(journaled) => *journaled,
            None => {
                if self.journaled.len() >= JOURNALED_CACHE_MAX {
                    self.journaled.clear();
                }
                let journaled = journal.is_journaled(topic.as_bytes());
                self.journaled.insert(topic.bytes().clone(), journaled);
                journaled
            }
        };
        if !journaled {
            return LogOutcome::NotJournaled;
        }
        let outcome = journal.append(conn, topic.as_bytes(), payload, flags, sequence);
        if let LogOutcome::Failed { text } = &outcome {
            self.append_failures += 1;
            // Once a second at most: a full disk fails every publish.
            let now = std::time::Instant::now();
            if self
                .append_failure_logged
                .is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(1))
            {
                self.append_failure_logged = Some(now);
                tracing::error!(
                    failures = self.append_failures,
                    "publish to {topic} refused: {text}"
                );
            }
        }
        outcome
    }

    fn start_replay(&mut self, start: ReplayStart<Arc<ConnShared>>) {
        match &self.replayer {
            Some(replayer) => {
                if let Err(crossbeam_channel::SendError(super::replayer::ReplayerMsg::Start(
                    start,
                ))) = replayer.send(super::replayer::ReplayerMsg::Start(start))
                {
                    let mut ack = Ack::failure(
                        statecast_protocol::AckType::Processed,
                        start.command_id,
                        statecast_protocol::ReasonCode::ShuttingDown,
                        "the broker is shutting down",
                    );
                    ack.sub_id = Some(start.sub_id);
                    self.reply(&start.conn, ack);
                }
            }
            None => {
                let mut ack = Ack::failure(
                    statecast_protocol::AckType::Processed,
                    start.command_id,
                    statecast_protocol::ReasonCode::AckNotAvailable,
                    "bookmark subscriptions need a journal (journal.topics is empty)",
                );
                ack.sub_id = Some(start.sub_id);
                self.reply(&start.conn, ack);
            }
        }
    }

    fn outbound_room(&mut self, conn: &Arc<ConnShared>) -> usize {
        conn.room().saturating_sub(self.pending_bytes(conn))
    }

    fn persisted(&mut self, bookmark: u64) -> bool {
        // A checkpoint waits at most this long for the sync that covers it
        // (one group commit, normally a few ms); otherwise it is retried.
        const WAIT: std::time::Duration = std::time::Duration::from_millis(100);
        match &self.journal {
            None => true,
            Some(journal) => journal
                .journal()
                .wait_persisted(bookmark, WAIT)
                .is_ok_and(|persisted| persisted >= bookmark),
        }
    }

    fn persisted_now(&mut self, bookmark: u64) -> bool {
        // Asked on every processor loop while a SOW checkpoint waits for
        // it: waiting here would stall the processor each time.
        self.journal
            .as_ref()
            .is_none_or(|journal| journal.journal().persisted() >= bookmark)
    }

    fn ack_when_persisted(&mut self, bookmark: u64, conn: &Arc<ConnShared>, ack: Ack) {
        match &self.journal {
            Some(_) => self.parked.push((bookmark, Arc::clone(conn), ack)),
            None => self.reply(conn, ack),
        }
    }

    fn deliver(&mut self, conn: &Arc<ConnShared>, sub_ids: &[u64], message: &Message<'_>) {
        self.close_batch();
        if conn.is_closed() {
            return;
        }
        let payload = message.payload;
        let inline = payload.len() <= INLINE_PAYLOAD_BYTES_MAX;
        let header = match self.reuse_header(sub_ids, message, inline) {
            Some(header) => header,
            None => {
                let need = statecast_protocol::FIXED_HEADER_LEN
                    + 3 * 4
                    + message.topic.len()
                    + sub_ids.len() * 8
                    + 8 * 2
                    + if message.sow_key.is_some() { 11 } else { 0 }
                    + if inline { payload.len() } else { 0 };
                self.reserve_headers(need);
                let encoded = encode_record_header(
                    message.topic.as_bytes(),
                    sub_ids,
                    message.bookmark,
                    message.timestamp,
                    message.sow_key,
                    payload.len(),
                    &mut self.headers,
                );
                if encoded.is_err() {
                    self.encode_failures += 1;
                    return;
                }
                if inline {
                    self.headers.put_slice(payload);
                }
                self.headers.split().freeze()
            }
        };
        #[cfg(debug_assertions)]
        debug_check_header(&header, sub_ids, message, inline);
        let index = self.slot_index(conn);
        let Some(slot) = self.pending.get_mut(index) else {
            return;
        };
        let chunk = slot.chunks.len();
        slot.bytes += header.len();
        slot.chunks.push(header);
        if !inline {
            slot.bytes += payload.len();
            slot.chunks.push(payload.clone());
        }
        self.last_deliver = Some(LastDeliver {
            slot: index,
            chunk,
            timestamp: message.timestamp,
            bookmark: message.bookmark,
            sow_key: message.sow_key,
            payload_len: payload.len(),
            topic_len: message.topic.len(),
            sub_ids: sub_ids.len(),
        });
    }

    fn deliver_record(
        &mut self,
        conn: &Arc<ConnShared>,
        sub_id: u64,
        topic: &Utf8,
        record: &statecast_sow::RecordRef<'_>,
    ) {
        self.close_batch();
        if conn.is_closed() {
            return;
        }
        // Header and payload in one chunk: the payload is copied once, from
        // the store's read straight into the frame (no `Bytes` of its own,
        // one iovec per record).
        let payload = record.payload;
        let need = statecast_protocol::FIXED_HEADER_LEN
            + 3 * 4
            + topic.len()
            + 8
            + 8 * 2
            + 11
            + payload.len();
        self.reserve_headers(need);
        if encode_record_header(
            topic.as_bytes(),
            &[sub_id],
            Some(record.bookmark),
            record.timestamp_ns,
            Some(record.key.0),
            payload.len(),
            &mut self.headers,
        )
        .is_err()
        {
            self.encode_failures += 1;
            return;
        }
        self.headers.put_slice(payload);
        let frame = self.headers.split().freeze();
        self.slot(conn).push_tagged(frame, Tag::Answer(sub_id));
    }

    fn deliver_batched(
        &mut self,
        conn: &Arc<ConnShared>,
        sub_id: u64,
        topic: &Utf8,
        record: &statecast_sow::RecordRef<'_>,
        batch_size: u32,
    ) {
        let payload = record.payload;
        let need = SOW_BATCH_RECORD_HEADER_LEN + payload.len();
        if let Some(open) = &self.batch
            && (open.records >= open.max
                || open.sub_id != sub_id
                || !Arc::ptr_eq(&open.conn, conn)
                || open.topic != *topic
                || self.headers.len() + need > SOW_BATCH_BYTES_MAX)
        {
            self.close_batch();
        }
        if conn.is_closed() {
            return;
        }
        if self.batch.is_none() {
            let Ok(header_len) = sow_batch_header_len(topic.as_bytes()) else {
                self.encode_failures += 1;
                return;
            };
            // Room for the whole batch at once (as far as the byte cap
            // goes): growing the buffer mid-batch copies what it holds.
            let expected = (need * batch_size as usize).min(SOW_BATCH_BYTES_MAX);
            self.reserve_headers(header_len + expected.max(need));
            self.headers.put_bytes(0, header_len);
            self.batch = Some(OpenBatch {
                conn: Arc::clone(conn),
                sub_id,
                topic: topic.clone(),
                header_len,
                records: 0,
                max: batch_size,
            });
        }
        self.reserve_headers(need);
        if encode_sow_batch_record_header(
            record.key.0,
            Some(record.bookmark),
            record.timestamp_ns,
            payload.len(),
            &mut self.headers,
        )
        .is_err()
        {
            // Only a message over 4 GiB: the batch so far stands.
            self.encode_failures += 1;
            return;
        }
        self.headers.put_slice(payload);
        if let Some(open) = &mut self.batch {
            open.records += 1;
        }
    }

    fn end_batch(&mut self) {
        self.close_batch();
    }

    fn is_closed(&mut self, conn: &Arc<ConnShared>) -> bool {
        conn.is_closed()
    }

    fn queued(&mut self, conn: &Arc<ConnShared>) -> usize {
        conn.queued() + self.pending_bytes(conn)
    }

    fn reply(&mut self, conn: &Arc<ConnShared>, ack: Ack) {
        self.send(conn, Command::Ack(ack));
    }

    fn send(&mut self, conn: &Arc<ConnShared>, command: Command) {
        self.close_batch();
        if conn.is_closed() {
            return;
        }
        let Ok(len) = command.encoded_len() else {
            self.encode_failures += 1;
            return;
        };
        self.reserve_headers(len);
        if command.encode(&mut self.headers).is_err() {
            self.encode_failures += 1;
            return;
        }
        let frame = self.headers.split().freeze();
        let slot = self.slot(conn);
        if let Command::GroupEnd(end) = &command {
            slot.push_tagged(frame, Tag::End(end.sub_id));
        } else {
            slot.bytes += frame.len();
            slot.chunks.push(frame);
        }
    }
}

/// Checks a deliver header (reused or not) against a fresh encoding.
#[cfg(debug_assertions)]
fn debug_check_header(header: &Bytes, sub_ids: &[u64], message: &Message<'_>, inline: bool) {
    let mut fresh = BytesMut::new();
    if encode_record_header(
        message.topic.as_bytes(),
        sub_ids,
        message.bookmark,
        message.timestamp,
        message.sow_key,
        message.payload.len(),
        &mut fresh,
    )
    .is_ok()
    {
        if inline {
            fresh.put_slice(message.payload);
        }
        debug_assert_eq!(
            fresh.as_ref(),
            header.as_ref(),
            "a reused deliver header differs from its encoding"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection on a throwaway I/O handle, with `queued` bytes queued.
    fn queued_conn(queued: usize) -> (mio::Poll, Arc<ConnShared>) {
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
        let io = Arc::new(IoShared::new(0, waker, 1 << 20));
        let conn = Arc::new(ConnShared::new(
            1,
            0,
            io,
            64 << 20,
            Arc::new(Totals::default()),
        ));
        conn.account_local(queued);
        (poll, conn)
    }

    /// Waits on another thread for room for a piece; returns its answer.
    fn waiter(conn: &Arc<ConnShared>) -> std::sync::mpsc::Receiver<bool> {
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = Arc::clone(conn);
        std::thread::spawn(move || {
            let _ =
                tx.send(waiting.wait_for_piece_room(SOW_PIECE_BYTES, 1, Duration::from_secs(60)));
        });
        // Until it waits (counted under the lock it then waits on): what
        // follows must wake it, not find the room before it looks.
        while conn.piece_waiters.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        rx
    }

    #[test]
    fn room_for_a_piece_means_at_most_one_piece_queued_and_room_for_two() {
        let (_poll, conn) = queued_conn(0);
        assert!(conn.has_piece_room(SOW_PIECE_BYTES, 1), "an empty queue");
        conn.account_local(SOW_PIECE_BYTES);
        assert!(conn.has_piece_room(SOW_PIECE_BYTES, 1), "one piece queued");
        conn.account_local(1);
        assert!(
            !conn.has_piece_room(SOW_PIECE_BYTES, 1),
            "more than one piece"
        );
        assert!(
            !conn.wait_for_piece_room(SOW_PIECE_BYTES, 1, Duration::from_millis(1)),
            "no room: the wait times out"
        );
    }

    /// A processor waiting for room is woken by the write that makes it
    /// (long before its 60 s timeout), and by a close.
    #[test]
    fn a_waiting_processor_is_woken_by_the_draining_write_and_by_a_close() {
        let (_poll, conn) = queued_conn(4 * SOW_PIECE_BYTES);
        let woken = waiter(&conn);
        conn.written(SOW_PIECE_BYTES); // three pieces still queued
        conn.written(3 * SOW_PIECE_BYTES - 10);
        assert_eq!(woken.recv_timeout(Duration::from_secs(30)), Ok(true));

        let (_poll, closing) = queued_conn(4 * SOW_PIECE_BYTES);
        let woken = waiter(&closing);
        closing.close();
        assert_eq!(woken.recv_timeout(Duration::from_secs(30)), Ok(true));
    }

    /// Frames held behind an open answer count against the client's
    /// outbound limit: past it the client is slow, as with frames queued.
    #[test]
    fn held_frames_count_against_the_client_limit() {
        let (_poll, conn) = queued_conn(0);
        let mut into = std::collections::VecDeque::new();
        conn.queue_local(Bytes::from_static(b"begin"), Tag::Begin(1), &mut into);
        conn.enqueue_frame(Bytes::from(vec![0u8; 32 << 20]));
        assert!(!conn.is_slow(), "32 MiB held, under the 64 MiB limit");
        conn.enqueue_frame(Bytes::from(vec![0u8; 33 << 20]));
        assert!(conn.is_slow(), "65 MiB held: slow");
    }

    /// While query 2's answer is open, query 1's pieces would only be held:
    /// its processor waits, and is woken by query 2's `group_end`. Frames
    /// held behind an answer do not count against its own pieces' room.
    #[test]
    fn a_piece_waits_for_another_open_answer_to_end() {
        let (_poll, conn) = queued_conn(0);
        let mut into = std::collections::VecDeque::new();
        conn.queue_local(Bytes::from_static(b"begin 2"), Tag::Begin(2), &mut into);
        conn.queue_local(Bytes::from_static(b"begin 1"), Tag::Begin(1), &mut into);
        assert!(conn.has_piece_room(SOW_PIECE_BYTES, 2));
        assert!(!conn.has_piece_room(SOW_PIECE_BYTES, 1), "answer 2 is open");
        let big = Bytes::from(vec![0u8; 3 * SOW_PIECE_BYTES]);
        conn.enqueue_frame(big);
        assert!(
            conn.has_piece_room(SOW_PIECE_BYTES, 2),
            "held frames cannot drain before answer 2 ends: they do not count"
        );
        let woken = waiter(&conn);
        let end = [Span {
            start: 0,
            end: 1,
            tag: Tag::End(2),
        }];
        let mut chunks = vec![Bytes::from_static(b"end 2")];
        conn.enqueue(&mut chunks, 5, &end);
        conn.take_out(&mut into);
        let order: Vec<usize> = into.iter().map(Bytes::len).collect();
        // The big frame came after query 1's group_begin: it waits for
        // answer 1 now.
        assert_eq!(order, [7, 5, 7], "begin 2, end 2, begin 1");
        assert_eq!(woken.recv_timeout(Duration::from_secs(30)), Ok(true));
    }
}
