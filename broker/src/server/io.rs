//! An I/O thread: one mio event loop owning a set of client connections.
//!
//! It reads and decodes frames, runs each connection's [`Session`], hands
//! publishes and subscriptions to processors in per-iteration batches, and
//! writes each connection's outbound queue with vectored writes.
//!
//! mio readiness is edge-triggered: after a readable or writable event the
//! loop must read or write until `WouldBlock`, or it may never be woken for
//! that socket again. Where it stops early (read budget, back-pressure) it
//! remembers the connection in `want_read` and comes back without waiting.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use statecast_protocol::{Ack, AckType, Command, ReasonCode};

use super::outbound::{ConnShared, IoShared, Tag, Totals};
use super::processor::{Batch, ProcessorCore, ProcessorMsg};
use crate::core::router::{Completion, ProcessorCommand, ReplayCancel};
use crate::core::session::{Action, CloseReason, Session, SessionLimits, Targets};

/// The waker's token; connections use their slab index.
pub const WAKER: Token = Token(usize::MAX);

/// Bytes read from one connection before others get a turn.
const READ_BUDGET_BYTES: usize = 1 << 20;

/// Each read asks the kernel for up to this much.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The least room a connection's buffer is given for a read: reads ask for
/// twice what the last one brought, within this and [`READ_CHUNK_BYTES`].
const READ_ROOM_MIN_BYTES: usize = 2 * 1024;

/// Slices per vectored write (well under Linux's IOV_MAX of 1024).
const WRITE_SLICES_MAX: usize = 512;

/// How long a connection being closed gets to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Approximate bytes a command costs besides its payload, for back-pressure.
const COMMAND_OVERHEAD_BYTES: usize = 128;

/// Bytes of commands a new batch has room for at most before it grows.
const BATCH_CAPACITY_BYTES_MAX: usize = 1024 * 1024;

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    session: Session,
    shared: Arc<ConnShared>,
    read_buf: BytesMut,
    /// The room the next read gets in `read_buf` (twice the last read's
    /// size, within bounds): a trickle does not hold a whole chunk.
    read_room: usize,
    write_queue: VecDeque<Bytes>,
    last_sent: Instant,
    last_progress: Instant,
    closing: Option<(Instant, CloseReason)>,
    /// Bytes of the frame being written that are still in `write_queue`
    /// (0 at a frame boundary), so that dropping a slow client's queue
    /// never cuts a frame in half before the failure ack.
    frame_left: usize,
    /// Our side of the connection is shut (FIN sent after the last frame).
    write_shut: bool,
    eof: bool,
}

/// Settings an I/O thread needs.
#[derive(Debug, Clone)]
pub struct IoSettings {
    /// Shared session limits.
    pub limits: Arc<SessionLimits>,
    /// Per-client outbound cap.
    pub client_outbound_bytes_max: usize,
    /// Per-client no-progress bound.
    pub client_outbound_stall: Duration,
    /// No-progress bound for a client holding up a SOW answer's processor.
    pub sow_answer_stall: Duration,
    /// Bound on draining at shutdown.
    pub drain_timeout: Duration,
}

/// What every I/O thread shares with the rest of the broker.
#[derive(Debug)]
pub struct IoWiring {
    /// Each processor's inbox.
    pub processors: Vec<Sender<ProcessorMsg>>,
    /// Instance-wide counters.
    pub totals: Arc<Totals>,
    /// Source of connection ids.
    pub next_conn_id: Arc<std::sync::atomic::AtomicU64>,
    /// Processors that have finished draining.
    pub processors_done: Arc<std::sync::atomic::AtomicUsize>,
    /// Live connections, for instance-wide decisions.
    pub registry: Arc<super::acceptor::ConnRegistry>,
    /// The journal, for publisher registration at logon.
    pub journal: Option<Arc<super::journaling::Journaling>>,
    /// Live connections by client name.
    pub names: Arc<super::names::NameRegistry>,
    /// When set, this thread runs the (only) processor itself: its inbox
    /// (for the replayer's messages) and the replayer's channel.
    pub inline: Option<(
        crossbeam_channel::Receiver<ProcessorMsg>,
        Option<crossbeam_channel::Sender<super::replayer::ReplayerMsg>>,
        super::processor::ProcessorSow,
    )>,
}

/// One I/O thread's state.
pub struct IoThread {
    poll: Poll,
    shared: Arc<IoShared>,
    conns: Slab<Conn>,
    processors: Vec<Sender<ProcessorMsg>>,
    batches: Vec<(Vec<ProcessorCommand<Arc<ConnShared>>>, usize)>,
    batch_bytes: usize,
    settings: IoSettings,
    totals: Arc<Totals>,
    next_conn_id: Arc<std::sync::atomic::AtomicU64>,
    want_read: Vec<usize>,
    /// Connections being closed, checked every iteration until removed.
    closing: Vec<usize>,
    actions: Vec<Action>,
    ready: Vec<(usize, u64)>,
    processors_done: Arc<std::sync::atomic::AtomicUsize>,
    registry: Arc<super::acceptor::ConnRegistry>,
    journal: Option<Arc<super::journaling::Journaling>>,
    names: Arc<super::names::NameRegistry>,
    inline: Option<(ProcessorCore, crossbeam_channel::Receiver<ProcessorMsg>)>,
}

impl std::fmt::Debug for IoThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoThread")
            .field("index", &self.shared.index)
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn tick_interval(limits: &SessionLimits) -> Duration {
    (limits.heartbeat_min / 2).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

impl IoThread {
    /// Builds the thread's poller and shared handle.
    ///
    /// # Errors
    /// When the poller or its waker cannot be created.
    pub fn new(
        index: usize,
        inflight_max: usize,
        settings: IoSettings,
        wiring: IoWiring,
    ) -> io::Result<Self> {
        let IoWiring {
            processors,
            totals,
            next_conn_id,
            processors_done,
            registry,
            journal,
            names,
            inline,
        } = wiring;
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(IoShared::new(index, waker, inflight_max));
        let inline = inline.map(|(inbox, replayer, sow)| {
            (
                ProcessorCore::new(0, journal.clone(), replayer, Some(Arc::clone(&shared)), sow),
                inbox,
            )
        });
        let batches = processors.iter().map(|_| (Vec::new(), 0)).collect();
        Ok(Self {
            poll,
            shared,
            conns: Slab::new(),
            processors,
            batches,
            batch_bytes: 0,
            settings,
            totals,
            next_conn_id,
            want_read: Vec::new(),
            closing: Vec::new(),
            actions: Vec::new(),
            ready: Vec::new(),
            processors_done,
            inline,

            registry,
            journal,
            names,
        })
    }

    /// The handle other threads use.
    #[must_use]
    pub fn shared(&self) -> Arc<IoShared> {
        Arc::clone(&self.shared)
    }

    /// Runs the loop until a clean shutdown completes.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = tick_interval(&self.settings.limits);
        let mut next_tick = Instant::now() + tick;
        let mut draining: Option<Instant> = None;
        loop {
            // While a SOW answer is sent in pieces nothing is read (below),
            // and the loop waits only while its client has no room.
            let streaming = self
                .inline
                .as_ref()
                .map(|(core, _)| (core.sow_streaming(), core.sow_stream_ready()));
            let timeout = match streaming {
                Some((true, ready)) if !ready => {
                    next_tick.saturating_duration_since(Instant::now())
                }
                Some((true, _)) => Duration::ZERO,
                _ if self.want_read.is_empty() => {
                    next_tick.saturating_duration_since(Instant::now())
                }
                _ => Duration::ZERO,
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout))
                && error.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(%error, "io-{}: poll failed; closing this thread's connections", self.shared.index);
                break;
            }
            let now = Instant::now();
            self.shared.clear_notified();
            for event in &events {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if event.is_writable() {
                    self.write(token.0, now);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(token.0, now);
                }
            }
            self.accept_new(now);
            if !self.shared.paused.load(Ordering::Acquire)
                || self.shared.inflight.load(Ordering::Acquire) <= self.shared.inflight_max / 2
            {
                self.shared.paused.store(false, Ordering::Release);
                for token in std::mem::take(&mut self.want_read) {
                    self.read(token, now);
                }
            }
            self.send_batches();
            self.drain_ready(now);
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick;
            }
            if let Some((core, _)) = &mut self.inline {
                core.maybe_checkpoint(now);
            }
            self.finish_closing(now);
            if draining.is_none() && self.shared.shutdown.load(Ordering::Acquire) {
                draining = Some(now + self.settings.drain_timeout);
                self.start_drain();
            }
            if let Some(deadline) = draining {
                let processors_done =
                    self.processors_done.load(Ordering::Acquire) >= self.processors.len();
                let flushed = self
                    .conns
                    .iter()
                    .all(|(_, c)| c.write_queue.is_empty() && c.shared.queued() == 0);
                if processors_done && (flushed || now >= deadline) {
                    self.close_all_for_shutdown(now);
                    break;
                }
            }
        }
        for conn in self.conns.drain() {
            conn.shared.close();
            self.totals.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn start_drain(&mut self) {
        if self.inline.is_some() {
            self.send_batches();
            if let Some((core, _)) = &mut self.inline {
                core.close_sow();
                core.log_stopped();
            }
            self.processors_done.fetch_add(1, Ordering::AcqRel);
            self.want_read.clear();
            return;
        }
        tracing::debug!("io-{}: draining for shutdown", self.shared.index);
        self.send_batches();
        for processor in &self.processors {
            let _ = processor.send(ProcessorMsg::Drain);
        }
        // No more reads: publishers' data already read is processed.
        self.want_read.clear();
    }

    fn close_all_for_shutdown(&mut self, now: Instant) {
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            if let Some(conn) = self.conns.get_mut(token) {
                let unsent =
                    conn.write_queue.iter().map(Bytes::len).sum::<usize>() + conn.shared.queued();
                if unsent > 0 {
                    tracing::warn!(client = conn.session.client_name().unwrap_or("-"), peer = %conn.peer, unsent,
                        "shutdown: drain timeout passed with frames still queued for this client");
                }
                let ack = Ack::failure(
                    AckType::Processed,
                    None,
                    ReasonCode::ShuttingDown,
                    "the broker is shutting down",
                );
                if let Ok(frame) = Command::Ack(ack).to_bytes() {
                    // Best effort: one attempt, the socket is closed right after.
                    let _ = conn.stream.write(&frame);
                }
            }
            self.remove(token, "shutdown", now);
        }
    }

    fn accept_new(&mut self, now: Instant) {
        let new = std::mem::take(
            &mut *self
                .shared
                .new_conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (mut stream, peer) in new {
            if self.shared.shutdown.load(Ordering::Acquire) {
                self.totals.connections.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let entry = self.conns.vacant_entry();
            let token = entry.key();
            if let Err(error) = self.poll.registry().register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(%peer, %error, "could not register connection");
                self.totals.connections.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::new(ConnShared::new(
                id,
                token,
                Arc::clone(&self.shared),
                self.settings.client_outbound_bytes_max,
                Arc::clone(&self.totals),
            ));
            tracing::debug!(%peer, conn = id, "io-{}: connection registered", self.shared.index);
            self.registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::downgrade(&shared));
            entry.insert(Conn {
                stream,
                peer,
                session: Session::new(Arc::clone(&self.settings.limits), now),
                shared,
                read_buf: BytesMut::new(),
                read_room: READ_ROOM_MIN_BYTES,
                write_queue: VecDeque::new(),
                last_sent: now,
                last_progress: now,
                closing: None,
                frame_left: 0,
                write_shut: false,
                eof: false,
            });
            // The socket may already hold data; an edge may have been missed
            // between accept and register.
            self.want_read.push(token);
        }
    }

    /// Reads a connection until `WouldBlock`, its budget, or back-pressure,
    /// handing every complete frame to its session as it arrives.
    fn read(&mut self, token: usize, now: Instant) {
        if self
            .inline
            .as_ref()
            .is_some_and(|(core, _)| core.sow_streaming())
        {
            // A SOW answer is being sent in pieces: no command may reach
            // the processor (nor a reply get between the pieces) until it
            // is complete; reading resumes then.
            if !self.want_read.contains(&token) {
                self.want_read.push(token);
            }
            return;
        }
        let mut budget = READ_BUDGET_BYTES;
        loop {
            let Some(conn) = self.conns.get_mut(token) else {
                return;
            };
            if conn.closing.is_some() {
                Self::discard_input(conn);
                return;
            }
            if conn.eof || self.shared.shutdown.load(Ordering::Acquire) {
                break;
            }
            if self.shared.inflight.load(Ordering::Acquire) + self.batch_bytes
                > self.shared.inflight_max
            {
                // Processors are behind: stop reading so that publishers
                // feel TCP back-pressure; resume when they catch up.
                self.shared.paused.store(true, Ordering::Release);
                if !self.want_read.contains(&token) {
                    self.want_read.push(token);
                }
                return;
            }
            if budget == 0 {
                if !self.want_read.contains(&token) {
                    self.want_read.push(token);
                }
                return;
            }
            // The session's decoder rejects a frame longer than the limit as
            // soon as its length prefix arrives, so the buffer never holds
            // more than one permitted frame plus one read chunk.
            // The kernel writes straight into the buffer's room (no
            // scratch buffer, no copy); a buffer with less than half the
            // room this read should get is given it first (its frames
            // still held elsewhere keep the old allocation alive).
            let room = conn.read_buf.capacity() - conn.read_buf.len();
            if room < conn.read_room / 2 {
                conn.read_buf.reserve(conn.read_room);
            }
            let n = match super::recv::read_into(&conn.stream, &mut conn.read_buf, READ_CHUNK_BYTES)
            {
                Ok(0) => {
                    conn.eof = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::debug!(peer = %conn.peer, %error, "read failed");
                    conn.eof = true;
                    break;
                }
            };
            conn.read_room = (2 * n).clamp(READ_ROOM_MIN_BYTES, READ_CHUNK_BYTES);
            budget = budget.saturating_sub(n);
            conn.session
                .on_bytes(&mut conn.read_buf, now, &mut self.actions);
            self.dispatch(token, now);
        }
        if self
            .conns
            .get(token)
            .is_some_and(|c| c.eof && c.closing.is_none())
        {
            self.begin_close(token, None, now);
        }
    }

    /// Reads and drops what a closing connection still sends, so that
    /// closing the socket with unread data does not reset the connection
    /// and destroy the failure ack before the client has read it.
    fn discard_input(conn: &mut Conn) {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            match conn.stream.read(&mut scratch) {
                Ok(0) => {
                    conn.eof = true;
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    conn.eof = true;
                    return;
                }
            }
        }
    }

    /// Carries out the actions the session produced.
    fn dispatch(&mut self, token: usize, now: Instant) {
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            let Some(shared) = self.conns.get(token).map(|c| Arc::clone(&c.shared)) else {
                break;
            };
            match action {
                Action::Reply(command) => self.reply(token, &command, now),
                Action::LoggedOn(ack) => self.logged_on(token, &shared, ack, now),
                Action::Publish {
                    processor,
                    topic,
                    payload,
                    command_id,
                    ack,
                    sequence,
                    sow_key,
                } => {
                    let bytes = payload.len() + COMMAND_OVERHEAD_BYTES;
                    let command = ProcessorCommand::Publish {
                        conn: shared,
                        topic,
                        payload,
                        command_id,
                        ack,
                        sequence,
                        sow_key,
                    };
                    self.push(processor, command, bytes);
                }
                Action::Sow { targets, request } => {
                    let done = self.completion(targets);
                    self.broadcast(targets, &done, |done| ProcessorCommand::Sow {
                        conn: Arc::clone(&shared),
                        request: Arc::clone(&request),
                        done,
                    });
                }
                Action::SowDelete {
                    processor,
                    topic,
                    selector,
                    command_id,
                    ack,
                } => {
                    let command = ProcessorCommand::SowDelete {
                        conn: shared,
                        topic,
                        selector,
                        command_id,
                        ack,
                    };
                    self.push(processor, command, COMMAND_OVERHEAD_BYTES);
                }
                Action::Subscribe {
                    targets,
                    sub_id,
                    topic,
                    filter,
                    replay,
                    command_id,
                } => {
                    let done = self.completion(targets);
                    let replay = replay.map(|spec| (spec, ReplayCancel::new()));
                    self.broadcast(targets, &done, |done| ProcessorCommand::Subscribe {
                        conn: Arc::clone(&shared),
                        sub_id,
                        topic: topic.clone(),
                        filter: filter.clone(),
                        replay: replay.clone(),
                        command_id,
                        done,
                    });
                }
                Action::Unsubscribe {
                    targets,
                    sub_id,
                    command_id,
                } => {
                    let done = self.completion(targets);
                    self.broadcast(targets, &done, |done| ProcessorCommand::Unsubscribe {
                        conn: Arc::clone(&shared),
                        sub_id,
                        command_id,
                        done,
                    });
                }
                Action::Flush { command_id } => {
                    let done = self.completion(Targets::All);
                    self.broadcast(Targets::All, &done, |done| ProcessorCommand::Flush {
                        conn: Arc::clone(&shared),
                        command_id,
                        done,
                    });
                }
                Action::Rejected(text) => {
                    if let Some(conn) = self.conns.get(token) {
                        let client = conn.session.client_name().unwrap_or("-");
                        tracing::debug!(client, peer = %conn.peer, "publish refused: {text}");
                    }
                }
                Action::Close(reason) => self.begin_close(token, Some(reason), now),
            }
        }
        self.actions = actions;
    }

    /// Completes a logon: with a journal, the client is registered as a
    /// publisher and the ack carries the highest sequence persisted for
    /// its name, so a reconnecting publisher resends only what is missing.
    fn logged_on(
        &mut self,
        token: usize,
        shared: &Arc<ConnShared>,
        mut ack: statecast_protocol::Ack,
        now: Instant,
    ) {
        if let Some(name) = &ack.client_name
            && let Some(old) = self.names.claim(name.as_str(), shared)
        {
            old.mark_replaced();
        }
        if let (Some(journal), Some(name)) = (&self.journal, ack.client_name.clone()) {
            match journal.register_publisher(name.as_str()) {
                Ok(publisher) => {
                    shared.set_publisher(publisher.id);
                    ack.sequence = Some(publisher.persisted_sequence);
                }
                Err(error) => {
                    tracing::warn!(
                        client = name.as_str(),
                        "publisher registration failed: {error}; de-duplication is off for it"
                    );
                }
            }
        }
        self.reply(token, &Command::Ack(ack), now);
    }

    fn completion(&self, targets: Targets) -> Completion {
        match targets {
            Targets::One(_) => Completion::single(),
            Targets::All => Completion::shared(self.processors.len()),
        }
    }

    /// Adds a command for one processor to this iteration's batch,
    /// counting `bytes` toward back-pressure.
    fn push(&mut self, processor: usize, command: ProcessorCommand<Arc<ConnShared>>, bytes: usize) {
        if let Some((batch, batch_bytes)) = self.batches.get_mut(processor) {
            batch.push(command);
            *batch_bytes += bytes;
            self.batch_bytes += bytes;
        }
    }

    fn broadcast(
        &mut self,
        targets: Targets,
        done: &Completion,
        make: impl Fn(Completion) -> ProcessorCommand<Arc<ConnShared>>,
    ) {
        for (index, (batch, batch_bytes)) in self.batches.iter_mut().enumerate() {
            if targets == Targets::All || targets == Targets::One(index) {
                batch.push(make(done.clone()));
                *batch_bytes += COMMAND_OVERHEAD_BYTES;
                self.batch_bytes += COMMAND_OVERHEAD_BYTES;
            }
        }
    }

    /// Queues a frame produced on this thread (an ack or a heartbeat) behind
    /// whatever processors queued before it, and writes.
    fn reply(&mut self, token: usize, command: &Command, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let Ok(frame) = command.to_bytes() else {
            tracing::warn!("a reply could not be encoded: {command:?}");
            return;
        };
        let tag = match command {
            Command::GroupBegin(begin) => Tag::Begin(begin.sub_id),
            Command::Heartbeat(_) => Tag::Heartbeat,
            _ => Tag::Plain,
        };
        conn.shared.queue_local(frame, tag, &mut conn.write_queue);
        self.write(token, now);
    }

    /// Hands this iteration's commands to the processors.
    fn send_batches(&mut self) {
        if let Some((core, inbox)) = &mut self.inline {
            if core.sow_streaming() {
                // Its next piece (written by this iteration's
                // `drain_ready`); everything else waits for the end.
                let now = super::processor::now_ns();
                if core.sow_stream(now) {
                    core.flush();
                }
                if core.sow_streaming() {
                    return;
                }
            }
            // The processor runs here: no hand-off, no back-pressure count.
            while let Ok(message) = inbox.try_recv() {
                core.control(message);
            }
            self.batch_bytes = 0;
            let now = super::processor::now_ns();
            let mut any = false;
            for (batch, bytes) in &mut self.batches {
                *bytes = 0;
                if !batch.is_empty() {
                    core.commands(next_batch(batch), now);
                    any = true;
                }
            }
            if any {
                core.flush();
            }
            return;
        }
        if self.batches.iter().all(|(batch, _)| batch.is_empty()) {
            return;
        }
        self.shared
            .inflight
            .fetch_add(self.batch_bytes, Ordering::AcqRel);
        self.batch_bytes = 0;
        for (processor, (batch, bytes)) in self.processors.iter().zip(&mut self.batches) {
            if batch.is_empty() {
                continue;
            }
            let commands = next_batch(batch);
            let bytes = std::mem::take(bytes);
            let message = ProcessorMsg::Batch(Batch {
                origin: Arc::clone(&self.shared),
                bytes,
                commands,
            });
            if let Err(crossbeam_channel::SendError(ProcessorMsg::Batch(batch))) =
                processor.send(message)
            {
                // Processors stop only at shutdown, after this thread's Drain.
                tracing::debug!(
                    "io-{}: a processor has stopped; its commands are dropped",
                    self.shared.index
                );
                self.shared.processed(batch.bytes);
            }
        }
    }

    /// Moves frames queued by processors into write queues, and closes
    /// connections marked slow.
    fn drain_ready(&mut self, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        self.shared.take_ready(&mut ready);
        for (token, id) in ready.drain(..) {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.shared.id != id {
                continue;
            }
            if conn.shared.is_slow() && conn.closing.is_none() {
                let queued = conn.shared.queued();
                self.totals.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                drop_after_current_frame(&mut conn.write_queue, conn.frame_left);
                conn.shared.close();
                let reason = CloseReason {
                    code: ReasonCode::SlowClient,
                    text: format!(
                        "slow client: {queued} bytes queued, over limits.client_outbound_bytes_max ({}) or the instance's limits.outbound_total_bytes_max",
                        self.settings.client_outbound_bytes_max
                    ),
                    command_id: None,
                };
                self.begin_close(token, Some(reason), now);
                continue;
            }
            if conn.shared.is_replaced() && conn.closing.is_none() {
                let client = conn.session.client_name().unwrap_or("-").to_owned();
                tracing::info!(
                    client,
                    peer = %conn.peer,
                    "closing a connection: a newer one logged on with its client name"
                );
                let reason = CloseReason {
                    code: ReasonCode::ClientReplaced,
                    text: format!(
                        "another connection logged on as `{client}`; client names are unique among live connections"
                    ),
                    command_id: None,
                };
                self.begin_close(token, Some(reason), now);
                continue;
            }
            if conn.write_queue.is_empty() {
                conn.last_progress = now;
            }
            conn.shared.take_out(&mut conn.write_queue);
            self.write(token, now);
        }
        self.ready = ready;
    }

    /// Writes as much of a connection's queue as the socket takes.
    fn write(&mut self, token: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.write_queue.is_empty() {
            conn.shared.take_out(&mut conn.write_queue);
        }
        while !conn.write_queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = conn
                .write_queue
                .iter()
                .take(WRITE_SLICES_MAX)
                .map(|b| IoSlice::new(b))
                .collect();
            let result = conn.stream.write_vectored(&slices);
            drop(slices);
            match result {
                Ok(0) => {
                    conn.eof = true;
                    break;
                }
                Ok(n) => {
                    conn.shared.written(n);
                    conn.last_sent = now;
                    conn.last_progress = now;
                    advance(&mut conn.write_queue, &mut conn.frame_left, n);
                    if conn.write_queue.is_empty() {
                        conn.shared.take_out(&mut conn.write_queue);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(peer = %conn.peer, %error, "write failed");
                    conn.eof = true;
                    conn.write_queue.clear();
                    break;
                }
            }
        }
    }

    /// Runs every session's timers and the stall check.
    fn tick(&mut self, now: Instant) {
        let streaming = self
            .inline
            .as_ref()
            .is_some_and(|(core, _)| core.sow_streaming());
        let stream_conn = self
            .inline
            .as_ref()
            .and_then(|(core, _)| core.sow_stream_conn_id());
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.closing.is_some() {
                continue;
            }
            // Only frames this thread holds can have stalled: frames a
            // processor queued since `drain_ready` ran (scheduled, not yet
            // taken) start their clock when taken, however long the
            // connection was idle before.
            let pending = !conn.write_queue.is_empty();
            // A client that a SOW answer waits for holds up the processor
            // sending it (inline: this thread's reads of every socket), and
            // through it everyone whose commands queue behind: a shorter
            // bound.
            let holding = stream_conn == Some(conn.shared.id) || conn.shared.holds_a_processor();
            let (bound, key, what) = if holding {
                (
                    self.settings
                        .sow_answer_stall
                        .min(self.settings.client_outbound_stall),
                    "limits.sow_answer_stall_ms",
                    "holding up the processor sending it a SOW answer, with ",
                )
            } else {
                (
                    self.settings.client_outbound_stall,
                    "limits.client_outbound_stall_ms",
                    "",
                )
            };
            if pending && now.saturating_duration_since(conn.last_progress) > bound {
                let queued = conn.shared.queued();
                self.totals.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                drop_after_current_frame(&mut conn.write_queue, conn.frame_left);
                conn.shared.close();
                let reason = CloseReason {
                    code: ReasonCode::SlowClient,
                    text: format!(
                        "slow client: {what}{queued} bytes queued and nothing written for {} ms ({key})",
                        bound.as_millis()
                    ),
                    command_id: None,
                };
                self.begin_close(token, Some(reason), now);
                continue;
            }
            if streaming {
                // Nothing is read while a SOW answer is sent in pieces: a
                // client's silence says nothing then.
                continue;
            }
            conn.session.on_tick(now, conn.last_sent, &mut self.actions);
            self.dispatch(token, now);
        }
    }

    /// Starts closing a connection: no more reads, a failure ack (when
    /// there is a reason) behind what is queued, then [`Self::finish_closing`].
    fn begin_close(&mut self, token: usize, reason: Option<CloseReason>, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let reason = reason.unwrap_or(CloseReason {
            code: ReasonCode::None,
            text: "closed by the client".into(),
            command_id: None,
        });
        let client = conn.session.client_name().unwrap_or("-").to_owned();
        if reason.code == ReasonCode::None {
            tracing::debug!(client, peer = %conn.peer, conn = conn.shared.id, "client disconnected");
        } else if reason.code == ReasonCode::SlowClient {
            tracing::warn!(client, peer = %conn.peer, conn = conn.shared.id, reason = reason.code.name(), "disconnecting client: {}", reason.text);
        } else {
            tracing::info!(client, peer = %conn.peer, conn = conn.shared.id, reason = reason.code.name(), "disconnecting client: {}", reason.text);
        }
        let send_ack = reason.code != ReasonCode::None && !conn.eof;
        let ack = reason.ack();
        conn.closing = Some((now + CLOSE_FLUSH_TIMEOUT, reason));
        self.closing.push(token);
        if send_ack && let Ok(frame) = Command::Ack(ack).to_bytes() {
            conn.shared.take_out(&mut conn.write_queue);
            conn.shared.account_local(frame.len());
            conn.write_queue.push_back(frame);
            self.write(token, now);
        }
        // Processors forget the connection's subscriptions now; frames they
        // produce from here on are dropped.
        if let Some(conn) = self.conns.get(token) {
            let conn_id = conn.shared.id;
            conn.shared.close();
            for (batch, _) in &mut self.batches {
                batch.push(ProcessorCommand::Closed { conn_id });
            }
        }
    }

    /// Shuts the write side of closing connections whose last frames are
    /// written, and removes them once the peer has closed too (or the close
    /// deadline has passed).
    fn finish_closing(&mut self, now: Instant) {
        if self.closing.is_empty() {
            return;
        }
        let mut closing = std::mem::take(&mut self.closing);
        closing.retain(|&token| {
            let Some(conn) = self.conns.get_mut(token) else {
                return false;
            };
            if conn.closing.is_none() {
                return false;
            }
            if !conn.write_shut && !conn.eof && conn.write_queue.is_empty() {
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                conn.write_shut = true;
                Self::discard_input(conn);
            }
            let done = conn.eof
                || conn
                    .closing
                    .as_ref()
                    .is_some_and(|(deadline, _)| now >= *deadline);
            if done {
                self.remove(token, "closed", now);
            }
            !done
        });
        closing.append(&mut self.closing);
        self.closing = closing;
    }

    fn remove(&mut self, token: usize, why: &str, _now: Instant) {
        if !self.conns.contains(token) {
            return;
        }
        let mut conn = self.conns.remove(token);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(name) = conn.session.client_name() {
            self.names.release(name, conn.shared.id);
        }
        if conn.closing.is_none() {
            conn.shared.close();
            for (batch, _) in &mut self.batches {
                batch.push(ProcessorCommand::Closed {
                    conn_id: conn.shared.id,
                });
            }
        }
        tracing::trace!(conn = conn.shared.id, why, "connection removed");
        self.totals.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes a batch of commands, leaving an empty one as large as it was
/// (within a bound), so that the next iteration's pushes do not regrow
/// (and copy) it step by step.
fn next_batch<T>(batch: &mut Vec<T>) -> Vec<T> {
    let capacity = batch
        .len()
        .min(BATCH_CAPACITY_BYTES_MAX / std::mem::size_of::<T>().max(1));
    std::mem::replace(batch, Vec::with_capacity(capacity))
}

/// Removes `n` written bytes from the front of `queue`, keeping
/// `frame_left` (the unwritten bytes of the frame in progress) up to date.
/// Every frame starts at the start of a chunk, with its 4-byte length.
fn advance(queue: &mut VecDeque<Bytes>, frame_left: &mut usize, mut n: usize) {
    while n > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if *frame_left == 0 {
            let length = front
                .first_chunk::<4>()
                .map_or(0, |prefix| u32::from_le_bytes(*prefix) as usize);
            *frame_left = statecast_protocol::LENGTH_PREFIX_LEN + length;
        }
        let take = n.min(front.len());
        debug_assert!(take <= *frame_left, "a chunk never spans two frames");
        *frame_left = frame_left.saturating_sub(take);
        n -= take;
        if take == front.len() {
            queue.pop_front();
        } else {
            bytes::Buf::advance(front, take);
        }
    }
}

/// Drops everything queued after the frame being written, which is kept
/// whole so that the stream stays well-formed for what follows.
fn drop_after_current_frame(queue: &mut VecDeque<Bytes>, frame_left: usize) {
    let mut keep = frame_left;
    let mut chunks = 0;
    while keep > 0 {
        let Some(chunk) = queue.get(chunks) else {
            break;
        };
        keep = keep.saturating_sub(chunk.len());
        chunks += 1;
    }
    queue.truncate(chunks);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<Bytes> {
        // A frame of `len` bytes split into a 12-byte header chunk and a body.
        let mut header = vec![0u8; 12];
        header[..4].copy_from_slice(&u32::try_from(len - 4).unwrap().to_le_bytes());
        vec![Bytes::from(header), Bytes::from(vec![7u8; len - 12])]
    }

    #[test]
    fn slow_close_keeps_the_frame_in_progress_whole() {
        let mut queue: VecDeque<Bytes> = frame(100).into_iter().chain(frame(50)).collect();
        let mut left = 0;
        advance(&mut queue, &mut left, 30);
        assert_eq!(left, 70, "30 of 100 bytes written");
        drop_after_current_frame(&mut queue, left);
        assert_eq!(
            queue.iter().map(Bytes::len).sum::<usize>(),
            70,
            "only the rest of frame 1 stays"
        );
        advance(&mut queue, &mut left, 70);
        assert_eq!((left, queue.len()), (0, 0));
    }

    #[test]
    fn at_a_frame_boundary_everything_goes() {
        let mut queue: VecDeque<Bytes> = frame(100).into_iter().chain(frame(50)).collect();
        let mut left = 0;
        advance(&mut queue, &mut left, 100);
        assert_eq!(left, 0);
        drop_after_current_frame(&mut queue, left);
        assert!(queue.is_empty());
    }
}
