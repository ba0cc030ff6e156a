//! A processor thread: the single writer of the topics it owns. It takes
//! batches of commands from the I/O threads, runs them through its
//! [`Router`], and flushes the resulting frames to the connections' queues
//! once per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use super::outbound::{ConnShared, IoShared, ProcessorSink, SOW_PIECE_BYTES};
use crate::core::router::{ProcessorCommand, Router};
use crate::core::sow::SowTopics;

/// Commands from one I/O thread's loop iteration for one processor.
#[derive(Debug)]
pub struct Batch {
    /// The I/O thread that read them (for back-pressure accounting).
    pub origin: Arc<IoShared>,
    /// Bytes the origin counted for them.
    pub bytes: usize,
    /// The commands, in the order they were read.
    pub commands: Vec<ProcessorCommand<Arc<ConnShared>>>,
}

/// What a processor receives.
#[derive(Debug)]
pub enum ProcessorMsg {
    /// Work.
    Batch(Batch),
    /// One I/O thread will send nothing more (clean shutdown).
    Drain,
    /// A replay asks to hand its subscription over to live delivery.
    GoLive {
        /// The replay, for the answer.
        replay: u64,
        /// The subscriber.
        conn_id: u64,
        /// The subscription.
        sub_id: u64,
        /// The replay has read every record below this bookmark.
        read_below: u64,
    },
    /// A replay ended without going live: forget its pending subscription.
    DropPending {
        /// The subscriber.
        conn_id: u64,
        /// The subscription.
        sub_id: u64,
    },
}

/// Batches handled before output is flushed, so that a processor that is
/// behind still flushes regularly.
const BATCHES_PER_FLUSH_MAX: usize = 16;

/// How long a processor thread waits on a streaming answer's client at a
/// time before it looks again. Only a safety net: the client's I/O thread
/// wakes it as the queue drains or the connection closes.
const SOW_PIECE_WAIT: Duration = Duration::from_secs(1);

/// Now, in ns since the Unix epoch: the time stamped on messages.
pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A processor's state, run on its own thread by [`run`] or inline on the
/// single I/O thread (when both would share one CPU, hand-offs between them
/// would cost two context switches per message for nothing).
pub struct ProcessorCore {
    index: usize,
    router: Router<Arc<ConnShared>>,
    sink: ProcessorSink,
    replayer: Option<crossbeam_channel::Sender<super::replayer::ReplayerMsg>>,
    checkpoint_interval: Duration,
    last_checkpoint: Instant,
    /// Commands that came after a SOW answer being sent in pieces: run
    /// once it is complete.
    held: std::collections::VecDeque<ProcessorCommand<Arc<ConnShared>>>,
}

impl std::fmt::Debug for ProcessorCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorCore")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl ProcessorCore {
    /// Processor `index`, journaling through `journal`, owning the SOW
    /// stores in `sow`. `local_io` is the I/O thread running it inline,
    /// which needs no wake-up.
    #[must_use]
    pub fn new(
        index: usize,
        journal: Option<Arc<super::journaling::Journaling>>,
        replayer: Option<crossbeam_channel::Sender<super::replayer::ReplayerMsg>>,
        local_io: Option<Arc<IoShared>>,
        sow: ProcessorSow,
    ) -> Self {
        let mut router = Router::with_sow(sow.topics);
        // Answers go in pieces, each queued once the client has room for
        // it, so that an answer of any size reaches a reading client
        // without passing its outbound limit. The driver (the I/O loop
        // inline, `run` on a thread) runs nothing else of this processor's
        // until the last piece: the answer stays atomic for its client.
        router.set_sow_pieces(Some(SOW_PIECE_BYTES));
        let mut sink = ProcessorSink::new(journal, replayer.clone());
        sink.set_local_io(local_io);
        Self {
            index,
            router,
            sink,
            replayer,
            checkpoint_interval: sow.checkpoint_interval,
            last_checkpoint: Instant::now(),
            held: std::collections::VecDeque::new(),
        }
    }

    /// How long the processor may wait for work before it must look at its
    /// SOW checkpoints (`None`: it has no SOW topic).
    #[must_use]
    pub fn idle_bound(&self) -> Option<Duration> {
        self.router
            .sow()
            .is_configured()
            .then_some(self.checkpoint_interval)
    }

    /// Checkpoints the durable SOW stores when the interval has passed.
    /// It may wait (bounded) for the journal to persist their last records.
    pub fn maybe_checkpoint(&mut self, now: Instant) {
        if !self.router.sow().is_configured() {
            return;
        }
        if now.saturating_duration_since(self.last_checkpoint) < self.checkpoint_interval {
            // A background checkpoint moves on as soon as its syncs are
            // done, not a whole interval later.
            self.router.poll_sow_checkpoints(&mut self.sink);
            return;
        }
        self.last_checkpoint = now;
        let done = self.router.checkpoint_sow(&mut self.sink);
        if done > 0 {
            tracing::debug!(stores = done, "processor-{}: SOW checkpoint", self.index);
        }
    }

    /// Checkpoints and closes the SOW stores (clean shutdown).
    pub fn close_sow(&mut self) {
        self.router.close_sow(&mut self.sink);
    }

    /// Handles one message other than a batch or a drain.
    pub fn control(&mut self, message: ProcessorMsg) {
        match message {
            ProcessorMsg::GoLive {
                replay,
                conn_id,
                sub_id,
                read_below,
            } => {
                let answer = self.router.go_live(conn_id, sub_id, read_below);
                if let Some(replayer) = &self.replayer {
                    let _ = replayer.send(super::replayer::ReplayerMsg::Answer {
                        replay,
                        processor: self.index,
                        answer,
                    });
                }
            }
            ProcessorMsg::DropPending { conn_id, sub_id } => {
                self.router.drop_pending(conn_id, sub_id)
            }
            ProcessorMsg::Batch(batch) => self.commands(batch.commands, now_ns()),
            ProcessorMsg::Drain => {}
        }
    }

    /// Routes a batch of commands; frames wait in the sink until [`Self::flush`].
    pub fn commands(&mut self, commands: Vec<ProcessorCommand<Arc<ConnShared>>>, now: u64) {
        let mut commands = commands.into_iter();
        // Behind an open answer (or commands held behind one) everything
        // waits, in order.
        if self.held.is_empty() && !self.router.sow_streaming() {
            for command in commands.by_ref() {
                self.router.handle(command, now, &mut self.sink);
                if self.router.sow_streaming() {
                    break;
                }
            }
        }
        self.held.extend(commands);
    }

    /// Whether a SOW answer is being sent in pieces ([`Self::sow_stream`]
    /// sends them); meanwhile nothing else may be handed to this processor.
    #[must_use]
    pub fn sow_streaming(&self) -> bool {
        self.router.sow_streaming()
    }

    /// The connection id of the SOW answer being sent in pieces, if any.
    #[must_use]
    pub fn sow_stream_conn_id(&self) -> Option<u64> {
        self.router.sow_stream_conn().map(|conn| conn.id)
    }

    /// Whether the SOW answer being sent in pieces can take its next piece
    /// now: its client is gone, or has room for it under
    /// `limits.client_outbound_bytes_max` (a piece may pass its size by
    /// one record, hence twice), or nothing queued. A client that reads
    /// keeps far below the limit (a piece is written as soon as it is
    /// made), so the processor waits only for one that has let its queue
    /// fill, and not past the stall timer (`client_outbound_stall_ms`),
    /// which closes it; until then the rest of this processor's work waits
    /// too, as it did behind a whole answer.
    #[must_use]
    pub fn sow_stream_ready(&self) -> bool {
        match self.router.sow_stream_query() {
            None => false,
            Some((conn, sub_id)) => {
                conn.is_closed() || conn.has_piece_room(SOW_PIECE_BYTES, sub_id)
            }
        }
    }

    /// On a processor thread: sends the SOW answer being sent in pieces to
    /// its end, and the commands held behind it (and any answer they
    /// start), waiting before each piece until the client has room for it
    /// ([`ConnShared::wait_for_piece_room`], woken by its I/O thread) or is
    /// gone. Nothing else of this processor's runs meanwhile (its inbox
    /// waits; checkpoints are held back by the router), as inline. A client
    /// that stops reading holds it only until the slow-client rules close
    /// the connection, which wakes it and ends the answer.
    pub fn finish_sow_streams(&mut self) {
        while let Some((conn, sub_id)) = self
            .router
            .sow_stream_query()
            .map(|(conn, sub_id)| (Arc::clone(conn), sub_id))
        {
            if conn.io.shutdown.load(Ordering::Acquire) {
                // As inline (`close_sow`): a clean shutdown does not wait
                // for a client to read the rest; the answer ends failed.
                self.router.stop_sow_stream(&mut self.sink);
                self.run_held(now_ns());
                self.flush();
                continue;
            }
            if !conn.wait_for_piece_room(SOW_PIECE_BYTES, sub_id, SOW_PIECE_WAIT) {
                continue;
            }
            if self.sow_stream(now_ns()) {
                self.flush();
            }
        }
    }

    /// Sends the next piece of the SOW answer being sent in pieces, when its
    /// client can take it; once the answer is complete, runs the commands
    /// held behind it (until one starts another answer in pieces). Frames
    /// wait in the sink until [`Self::flush`]. Returns whether it did
    /// anything.
    pub fn sow_stream(&mut self, now: u64) -> bool {
        if !self.sow_stream_ready() {
            return false;
        }
        if self.router.sow_piece(SOW_PIECE_BYTES, &mut self.sink) {
            return true;
        }
        self.run_held(now);
        true
    }

    /// Runs the commands held behind a SOW answer that is complete, until
    /// one starts another answer in pieces.
    fn run_held(&mut self, now: u64) {
        while let Some(command) = self.held.pop_front() {
            self.router.handle(command, now, &mut self.sink);
            if self.router.sow_streaming() {
                break;
            }
        }
    }

    /// Hands the frames of the batches handled so far to their connections.
    pub fn flush(&mut self) {
        self.sink.flush();
    }

    /// Logs the processor's counters (at shutdown).
    pub fn log_stopped(&self) {
        let stats = self.router.stats();
        tracing::debug!(
            published = stats.published,
            delivered = stats.delivered,
            encode_failures = self.sink.encode_failures(),
            append_failures = self.sink.append_failures(),
            "processor-{} stopped",
            self.index
        );
    }
}

/// A processor's SOW: its stores and how often to checkpoint them.
#[derive(Debug, Default)]
pub struct ProcessorSow {
    /// The stores of the SOW topics this processor owns (recovered at start).
    pub topics: SowTopics,
    /// `sow.checkpoint_interval_ms`.
    pub checkpoint_interval: Duration,
}

/// Runs processor `index` until every I/O thread has sent [`ProcessorMsg::Drain`].
pub fn run(
    index: usize,
    inbox: Receiver<ProcessorMsg>,
    io_threads: usize,
    done: &AtomicUsize,
    journal: Option<Arc<super::journaling::Journaling>>,
    replayer: Option<crossbeam_channel::Sender<super::replayer::ReplayerMsg>>,
    sow: ProcessorSow,
) {
    let mut core = ProcessorCore::new(index, journal, replayer, None, sow);
    let mut drained = 0;
    let mut handled: Vec<(Arc<IoShared>, usize)> = Vec::new();
    'outer: while drained < io_threads {
        let received = match core.idle_bound() {
            None => inbox.recv().ok(),
            Some(bound) => match inbox.recv_timeout(bound) {
                Ok(message) => Some(message),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    core.maybe_checkpoint(Instant::now());
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
            },
        };
        let Some(first) = received else {
            break;
        };
        let now = now_ns();
        let mut next = Some(first);
        let mut batches = 0;
        while let Some(message) = next.take() {
            match message {
                ProcessorMsg::Drain => {
                    drained += 1;
                    if drained == io_threads {
                        break;
                    }
                }
                ProcessorMsg::Batch(batch) => {
                    core.commands(batch.commands, now);
                    handled.push((batch.origin, batch.bytes));
                    batches += 1;
                }
                control => core.control(control),
            }
            // An answer sent in pieces holds everything else back, the
            // inbox included (see `finish_sow_streams`).
            if batches < BATCHES_PER_FLUSH_MAX && !core.sow_streaming() {
                next = inbox.try_recv().ok();
            }
        }
        core.flush();
        for (origin, bytes) in handled.drain(..) {
            origin.processed(bytes);
        }
        if core.sow_streaming() {
            core.finish_sow_streams();
        }
        core.maybe_checkpoint(Instant::now());
        if drained == io_threads {
            break 'outer;
        }
    }
    core.close_sow();
    core.log_stopped();
    done.fetch_add(1, Ordering::AcqRel);
}
