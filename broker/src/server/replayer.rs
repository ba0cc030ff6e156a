//! The replayer thread: serves bookmark subscriptions from the journal,
//! then hands each over to live delivery (the rule is in `core::replay`).
//!
//! Replays are paced to their subscriber: a replay queues frames only while
//! its connection has less than [`REPLAY_QUEUE_BYTES`] waiting, reading the
//! journal as the client drains rather than loading records into memory,
//! and a replay never counts toward slow-client disconnection. One thread
//! serves every replay in turn, a bounded batch each.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use statecast_filter::{MessageContext, Scratch};
use statecast_journal::{ReadError, Reader, Start};
use statecast_protocol::{Ack, AckType, Command, ReasonCode, encode_deliver_header};

use crate::core::sow::message_range;

use super::journaling::Journaling;
use super::outbound::ConnShared;
use super::processor::ProcessorMsg;
use crate::core::replay::{GoLive, NotFound, StartAt};
use crate::core::router::{ConnHandle, ReplayStart};
use crate::core::topic::{TopicSpec, processor_for};

/// Bytes a replay lets wait in its connection's queue before it pauses.
const REPLAY_QUEUE_BYTES: usize = 1 << 20;

/// Records one replay reads before the next replay gets a turn.
const RECORDS_PER_TURN: usize = 512;

/// How long the thread waits when every replay is paused.
const IDLE_WAIT: Duration = Duration::from_millis(1);

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What the replayer receives.
#[derive(Debug)]
pub enum ReplayerMsg {
    /// A bookmark subscription to serve.
    Start(ReplayStart<Arc<ConnShared>>),
    /// A processor's answer to "go live".
    Answer {
        /// The replay.
        replay: u64,
        /// The processor answering.
        processor: usize,
        /// Its answer.
        answer: GoLive,
    },
    /// Shut down.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not asked yet, or answered "behind".
    Replaying,
    /// Asked to go live; no answer yet.
    Asked,
    /// Delivering live records from this bookmark on.
    Live(u64),
}

struct Replay {
    id: u64,
    start: ReplayStart<Arc<ConnShared>>,
    reader: Option<Reader>,
    /// The processors holding the subscription, and how far each is.
    stages: Vec<(usize, Stage)>,
    scratch: Scratch,
    headers: BytesMut,
    delivered: u64,
}

enum Turn {
    /// Did work; come back soon.
    Busy,
    /// Waiting (on the client, on answers, on new records).
    Idle,
    /// Finished or ended.
    Done,
}

/// The replayer's state.
pub struct Replayer {
    journal: Arc<Journaling>,
    processors: Vec<Sender<ProcessorMsg>>,
    /// For a processor that runs inline on an I/O thread: that thread,
    /// which must be woken to see a message.
    wakers: Vec<Option<Arc<super::outbound::IoShared>>>,
    replays: Vec<Replay>,
    next_id: u64,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("replays", &self.replays.len())
            .finish_non_exhaustive()
    }
}

fn ack(
    kind: AckType,
    start: &ReplayStart<Arc<ConnShared>>,
    failure: Option<(ReasonCode, String)>,
) -> Bytes {
    let mut ack = match failure {
        None => Ack::success(kind, start.command_id),
        Some((code, text)) => Ack::failure(kind, start.command_id, code, text),
    };
    ack.sub_id = Some(start.sub_id);
    Command::Ack(ack).to_bytes().unwrap_or_default()
}

impl Replayer {
    /// A replayer over `journal` that talks to `processors`.
    #[must_use]
    pub fn new(
        journal: Arc<Journaling>,
        processors: Vec<Sender<ProcessorMsg>>,
        wakers: Vec<Option<Arc<super::outbound::IoShared>>>,
    ) -> Self {
        Self {
            journal,
            processors,
            wakers,
            replays: Vec::new(),
            next_id: 1,
        }
    }

    /// Sends to processor `index`, waking its I/O thread if it runs inline.
    fn send(&self, index: usize, message: ProcessorMsg) {
        if let Some(inbox) = self.processors.get(index) {
            let _ = inbox.send(message);
        }
        if let Some(Some(io)) = self.wakers.get(index) {
            io.wake();
        }
    }

    /// Runs until [`ReplayerMsg::Stop`].
    pub fn run(mut self, inbox: &Receiver<ReplayerMsg>) {
        loop {
            let message = if self.replays.is_empty() {
                inbox.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                inbox.recv_timeout(Duration::ZERO)
            };
            match message {
                Ok(ReplayerMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(message) => {
                    self.handle(message);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let mut busy = false;
            let mut index = 0;
            while index < self.replays.len() {
                match self.turn(index) {
                    Turn::Busy => {
                        busy = true;
                        index += 1;
                    }
                    Turn::Idle => index += 1,
                    Turn::Done => {
                        self.replays.swap_remove(index);
                    }
                }
            }
            if !busy {
                match inbox.recv_timeout(IDLE_WAIT) {
                    Ok(ReplayerMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Ok(message) => self.handle(message),
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        }
    }

    fn handle(&mut self, message: ReplayerMsg) {
        match message {
            ReplayerMsg::Start(start) => self.start(start),
            ReplayerMsg::Answer {
                replay,
                processor,
                answer,
            } => {
                let Some(replay) = self.replays.iter_mut().find(|r| r.id == replay) else {
                    return;
                };
                if let Some((_, stage)) = replay.stages.iter_mut().find(|(p, _)| *p == processor) {
                    *stage = match answer {
                        GoLive::Live { from } => Stage::Live(from),
                        GoLive::Behind { .. } => Stage::Replaying,
                        // Unsubscribed: the cancel flag ends the replay.
                        GoLive::Gone => Stage::Live(0),
                    };
                }
            }
            ReplayerMsg::Stop => {}
        }
    }

    fn start(&mut self, start: ReplayStart<Arc<ConnShared>>) {
        let stages: Vec<(usize, Stage)> = match &start.topic {
            TopicSpec::Exact(topic) => vec![(
                processor_for(topic.as_bytes(), self.processors.len()),
                Stage::Replaying,
            )],
            TopicSpec::Pattern(_) => (0..self.processors.len())
                .map(|p| (p, Stage::Replaying))
                .collect(),
        };
        let journal = self.journal.journal();
        let first = match start.spec.start {
            StartAt::Epoch => Start::Epoch,
            StartAt::After(bookmark) => Start::After(bookmark),
            StartAt::At(bookmark) => Start::At(bookmark),
            StartAt::Time(ns) => Start::Timestamp(ns),
        };
        let reader = match journal.reader(first) {
            Ok(reader) => Some(reader),
            Err(error @ (ReadError::BeforeOldest { .. } | ReadError::Unknown { .. })) => {
                match start.spec.not_found {
                    NotFound::Fail => {
                        let text = format!(
                            "{error} (subscribe option bookmark_not_found=epoch|now chooses a fallback)"
                        );
                        self.refuse(&start, &stages, ReasonCode::BookmarkNotFound, text);
                        return;
                    }
                    // From now: a reader at the tip, so that a message published
                    // between this ack and the hand-over is replayed, not lost.
                    fallback @ (NotFound::Epoch | NotFound::Now) => {
                        match journal.reader(if fallback == NotFound::Epoch {
                            Start::Epoch
                        } else {
                            Start::Now
                        }) {
                            Ok(reader) => Some(reader),
                            Err(error) => {
                                self.refuse(
                                    &start,
                                    &stages,
                                    ReasonCode::BookmarkNotFound,
                                    error.to_string(),
                                );
                                return;
                            }
                        }
                    }
                }
            }
            Err(error) => {
                self.refuse(
                    &start,
                    &stages,
                    ReasonCode::BookmarkNotFound,
                    error.to_string(),
                );
                return;
            }
        };
        start
            .conn
            .enqueue_frame(ack(AckType::Processed, &start, None));
        let id = self.next_id;
        self.next_id += 1;
        tracing::debug!(conn = start.conn.conn_id(), sub = start.sub_id, spec = ?start.spec, "replay started");
        self.replays.push(Replay {
            id,
            start,
            reader,
            stages,
            scratch: Scratch::new(),
            headers: BytesMut::new(),
            delivered: 0,
        });
    }

    /// Fails a bookmark subscription before it started.
    fn refuse(
        &self,
        start: &ReplayStart<Arc<ConnShared>>,
        stages: &[(usize, Stage)],
        code: ReasonCode,
        text: String,
    ) {
        start
            .conn
            .enqueue_frame(ack(AckType::Processed, start, Some((code, text))));
        self.drop_pending(start, stages);
    }

    fn drop_pending(&self, start: &ReplayStart<Arc<ConnShared>>, stages: &[(usize, Stage)]) {
        for (processor, _) in stages {
            self.send(
                *processor,
                ProcessorMsg::DropPending {
                    conn_id: start.conn.conn_id(),
                    sub_id: start.sub_id,
                },
            );
        }
    }

    /// One turn of replay `index`.
    fn turn(&mut self, index: usize) -> Turn {
        let processors = self.processors.len();
        let Some(replay) = self.replays.get_mut(index) else {
            return Turn::Done;
        };
        let conn = Arc::clone(&replay.start.conn);
        if conn.is_closed() || replay.start.cancel.is_cancelled() {
            return Turn::Done;
        }
        if replay
            .stages
            .iter()
            .all(|(_, stage)| matches!(stage, Stage::Live(_)))
        {
            if !replay.start.cancel.is_cancelled() {
                conn.enqueue_frame(ack(AckType::Completed, &replay.start, None));
            }
            tracing::debug!(
                conn = conn.conn_id(),
                sub = replay.start.sub_id,
                delivered = replay.delivered,
                "replay handed over to live delivery"
            );
            return Turn::Done;
        }
        if replay
            .stages
            .iter()
            .any(|(_, stage)| *stage == Stage::Asked)
        {
            return Turn::Idle;
        }
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut bytes = 0;
        let mut at_tip = false;
        let mut finished: Option<Option<(ReasonCode, String)>> = None;
        match replay.reader.as_mut() {
            None => at_tip = true,
            Some(reader) => {
                for _ in 0..RECORDS_PER_TURN {
                    if conn.queued() + bytes >= REPLAY_QUEUE_BYTES {
                        break;
                    }
                    let record = match reader.next_record() {
                        Ok(Some(record)) => record,
                        Ok(None) => {
                            at_tip = true;
                            break;
                        }
                        Err(error) => {
                            finished =
                                Some(Some((ReasonCode::BookmarkNotFound, error.to_string())));
                            break;
                        }
                    };
                    if replay
                        .start
                        .spec
                        .end
                        .is_some_and(|end| end.reached(record.bookmark, record.timestamp_ns))
                    {
                        finished = Some(None);
                        break;
                    }
                    let matches_topic = match &replay.start.topic {
                        TopicSpec::Exact(topic) => record.topic() == topic.as_bytes(),
                        TopicSpec::Pattern(pattern) => pattern.matches(record.topic()),
                    };
                    if !matches_topic {
                        continue;
                    }
                    let owner = processor_for(record.topic(), processors);
                    let live_from =
                        replay
                            .stages
                            .iter()
                            .find(|(p, _)| *p == owner)
                            .and_then(|(_, stage)| match stage {
                                Stage::Live(from) => Some(*from),
                                _ => None,
                            });
                    if live_from.is_some_and(|from| record.bookmark >= from) {
                        continue; // Delivered live.
                    }
                    // SOW deletes are not messages; an explicit SowKey is
                    // not part of the message.
                    let Some(message) = message_range(record.flags, record.payload()) else {
                        continue;
                    };
                    if let Some(filter) = &replay.start.filter {
                        let topic = std::str::from_utf8(record.topic()).unwrap_or_default();
                        let ctx = MessageContext::new(
                            record.payload().get(message.clone()).unwrap_or_default(),
                        )
                        .with_topic(topic)
                        .with_unix_timestamp(record.timestamp_ns as f64 / 1e9);
                        if !filter.matches_with(&ctx, &mut replay.scratch) {
                            continue;
                        }
                    }
                    let (bookmark, timestamp) = (record.bookmark, record.timestamp_ns);
                    let (stored, topic, payload) = record.into_parts();
                    let stored = Bytes::from(stored);
                    let payload =
                        stored.slice(payload.start + message.start..payload.start + message.end);
                    replay.headers.reserve(64 + topic.len());
                    if encode_deliver_header(
                        stored.get(topic).unwrap_or_default(),
                        &[replay.start.sub_id],
                        Some(bookmark),
                        timestamp,
                        payload.len(),
                        &mut replay.headers,
                    )
                    .is_err()
                    {
                        continue;
                    }
                    let header = replay.headers.split().freeze();
                    bytes += header.len() + payload.len();
                    chunks.push(header);
                    chunks.push(payload);
                    replay.delivered += 1;
                }
            }
        }
        let busy = !chunks.is_empty();
        if busy {
            let cancel = replay.start.cancel.clone();
            let sent = cancel.unless_cancelled(|| conn.enqueue_chunks(&mut chunks, bytes));
            if !sent {
                return Turn::Done;
            }
        }
        if let Some(failure) = finished {
            // A range ended (failure = None) or the journal could not be read on.
            let kind = if failure.is_none() {
                AckType::Completed
            } else {
                AckType::Processed
            };
            if let Some((_, text)) = &failure {
                tracing::warn!(
                    conn = conn.conn_id(),
                    sub = replay.start.sub_id,
                    "replay stopped: {text}"
                );
            }
            conn.enqueue_frame(ack(kind, &replay.start, failure));
            let (start, stages) = (replay.start.clone(), replay.stages.clone());
            self.drop_pending(&start, &stages);
            return Turn::Done;
        }
        if at_tip {
            if let Some(end) = replay.start.spec.end {
                // At the tip, every record below the reader's position has
                // been read, and records appended later get later bookmarks
                // and times: the range is over once its end is behind them.
                let position = replay.reader.as_ref().map_or(0, Reader::next_bookmark);
                if end.reached(position, now_ns()) {
                    conn.enqueue_frame(ack(AckType::Completed, &replay.start, None));
                    let (start, stages) = (replay.start.clone(), replay.stages.clone());
                    self.drop_pending(&start, &stages);
                    return Turn::Done;
                }
                // The end is not written yet: follow the journal.
                return if busy { Turn::Busy } else { Turn::Idle };
            }
            let read_below = replay
                .reader
                .as_ref()
                .map_or(u64::MAX, Reader::next_bookmark);
            let (id, conn_id, sub_id) = (replay.id, conn.conn_id(), replay.start.sub_id);
            let mut asked = Vec::new();
            for (processor, stage) in &mut replay.stages {
                if *stage == Stage::Replaying {
                    *stage = Stage::Asked;
                    asked.push(*processor);
                }
            }
            for processor in asked {
                self.send(
                    processor,
                    ProcessorMsg::GoLive {
                        replay: id,
                        conn_id,
                        sub_id,
                        read_below,
                    },
                );
            }
            return Turn::Busy;
        }
        if busy { Turn::Busy } else { Turn::Idle }
    }
}
