//! A topic processor's routing: the subscriptions on the topics it owns, and
//! fan-out of each published message to the connections whose
//! subscriptions match it.
//!
//! One router runs on each processor thread and is the only writer of its
//! topics' state, which is what gives every topic one total order. The
//! router is generic over the connection handle so that tests can use plain
//! ids and the server uses shared outbound queues.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use smallvec::SmallVec;
use statecast_filter::{Filter, IndexScratch, MessageContext, SubscriptionIndex};
use statecast_protocol::{Ack, AckSet, AckType, Command, GroupEnd, ReasonCode, Status, Utf8};

use super::replay::{self, GoLive, ReplaySpec};
use super::session::requested;
use super::sow::{DeleteOp, FLAG_EXPLICIT_KEY, FLAG_SOW_DELETE, Prepared, Refusal, SowTopics};
use super::topic::{Pattern, TopicSpec};

/// How a router names a connection.
pub trait ConnHandle: Clone {
    /// A process-unique id for the connection.
    fn conn_id(&self) -> u64;
}

impl ConnHandle for u64 {
    fn conn_id(&self) -> u64 {
        *self
    }
}

/// Counts down the processors a broadcast command visits, so that exactly
/// one of them (the last) sends the ack.
#[derive(Debug, Clone, Default)]
pub struct Completion(Option<Arc<AtomicUsize>>);

impl Completion {
    /// A command visiting one processor.
    #[must_use]
    pub fn single() -> Self {
        Self(None)
    }

    /// A command visiting `processors` processors.
    #[must_use]
    pub fn shared(processors: usize) -> Self {
        if processors <= 1 {
            Self(None)
        } else {
            Self(Some(Arc::new(AtomicUsize::new(processors))))
        }
    }

    /// Records one visit; true for the last. A shared command first has
    /// `sink` release what this processor produced before it: whichever
    /// processor acks last, nothing that came before the command on any
    /// of them may reach the connection after the ack (a flush is a
    /// barrier).
    fn finish<C>(&self, sink: &mut impl Sink<C>) -> bool {
        match &self.0 {
            None => true,
            Some(remaining) => {
                sink.release();
                remaining.fetch_sub(1, Ordering::AcqRel) == 1
            }
        }
    }
}

/// A command for a processor.
#[derive(Debug, Clone)]
pub enum ProcessorCommand<C> {
    /// Route a message.
    Publish {
        /// The publisher.
        conn: C,
        /// The topic.
        topic: Utf8,
        /// The message body.
        payload: Bytes,
        /// For acks.
        command_id: Option<u64>,
        /// Acks wanted.
        ack: AckSet,
        /// The publisher's sequence number, for de-duplication.
        sequence: Option<u64>,
        /// The publisher's explicit SowKey.
        sow_key: Option<Bytes>,
    },
    /// Query SOW topics (and, for `sow_and_subscribe`, subscribe).
    Sow {
        /// The client.
        conn: C,
        /// The query, shared by every processor visited.
        request: Arc<SowRequest>,
        /// Shared by every processor visited.
        done: Completion,
    },
    /// Delete SOW records of one topic.
    SowDelete {
        /// The client.
        conn: C,
        /// The topic.
        topic: Utf8,
        /// Which records.
        selector: DeleteSelector,
        /// For the acks.
        command_id: u64,
        /// Acks wanted (processed when empty).
        ack: AckSet,
    },
    /// Register a subscription.
    Subscribe {
        /// The subscriber.
        conn: C,
        /// Its id on the connection.
        sub_id: u64,
        /// What it listens to.
        topic: TopicSpec,
        /// Its content filter.
        filter: Option<Filter>,
        /// Where it starts in the journal, with the handle that cancels the
        /// replay; `None` for live messages only.
        replay: Option<(ReplaySpec, ReplayCancel)>,
        /// For the ack.
        command_id: Option<u64>,
        /// Shared by every processor visited.
        done: Completion,
    },
    /// End one or all of a connection's subscriptions.
    Unsubscribe {
        /// The subscriber.
        conn: C,
        /// `None` = all.
        sub_id: Option<u64>,
        /// For the ack.
        command_id: Option<u64>,
        /// Shared by every processor visited.
        done: Completion,
    },
    /// A barrier.
    Flush {
        /// The client.
        conn: C,
        /// For the ack.
        command_id: u64,
        /// Shared by every processor visited.
        done: Completion,
    },
    /// The connection is gone: drop its subscriptions silently.
    Closed {
        /// Its id.
        conn_id: u64,
    },
}

/// A SOW query as the processors run it.
#[derive(Debug)]
pub struct SowRequest {
    /// The query's id (and the subscription's, for `sow_and_subscribe`).
    pub sub_id: u64,
    /// For the group frames.
    pub command_id: Option<u64>,
    /// Which topics.
    pub topic: TopicSpec,
    /// Filter, keys, order, paging.
    pub query: statecast_sow::Query,
    /// Count the matches, send none.
    pub count_only: bool,
    /// Register the subscription in the same step as the query.
    pub subscribe: bool,
    /// The most records per frame: 1 sends each record as a `deliver`,
    /// more as `sow_batch` frames (validated by the session: 1 to
    /// `SOW_BATCH_SIZE_MAX`).
    pub batch_size: u32,
    /// Records sent (or counted) so far, over every processor.
    pub records: std::sync::atomic::AtomicU64,
    /// The first error of any processor.
    pub failure: std::sync::Mutex<Option<String>>,
}

/// Which records a `sow_delete` removes.
#[derive(Debug, Clone)]
pub enum DeleteSelector {
    /// These SowKeys.
    Keys(Vec<u64>),
    /// Those this filter is TRUE for.
    Filter(Filter),
    /// The one with this example message's key.
    Example(Bytes),
}

/// A message being routed.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Topic.
    pub topic: &'a Utf8,
    /// Body.
    pub payload: &'a Bytes,
    /// When the processor took it, ns since the Unix epoch.
    pub timestamp: u64,
    /// Journal position, when journaled.
    pub bookmark: Option<u64>,
    /// Set on a SOW query's records (and only there).
    pub sow_key: Option<u64>,
}

/// Cancels a replay: set (under its lock) when the subscription ends, so
/// that the replay, which checks it under the same lock before queueing
/// each batch of frames, never sends a frame after the unsubscribe's ack.
#[derive(Debug, Clone, Default)]
pub struct ReplayCancel(Arc<std::sync::Mutex<bool>>);

impl ReplayCancel {
    /// A live (not cancelled) handle.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the replay cancelled.
    pub fn cancel(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    }

    /// Runs `send` unless cancelled, holding the lock across it; returns
    /// false when cancelled.
    pub fn unless_cancelled(&self, send: impl FnOnce()) -> bool {
        let cancelled = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *cancelled {
            return false;
        }
        send();
        true
    }

    /// Whether the replay was cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A bookmark subscription whose replay is to start.
#[derive(Debug, Clone)]
pub struct ReplayStart<C> {
    /// The subscriber.
    pub conn: C,
    /// Its subscription id.
    pub sub_id: u64,
    /// What it listens to.
    pub topic: TopicSpec,
    /// Its filter.
    pub filter: Option<Filter>,
    /// Where to start (and end).
    pub spec: ReplaySpec,
    /// Cancels the replay.
    pub cancel: ReplayCancel,
    /// For the acks.
    pub command_id: Option<u64>,
}

/// A bookmark subscription waiting for its replay to catch up.
#[derive(Debug)]
struct PendingSub<C> {
    conn: C,
    topic: TopicSpec,
    filter: Option<Filter>,
    cancel: ReplayCancel,
}

/// What the journal did with a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutcome {
    /// The topic is not journaled (or there is no journal).
    NotJournaled,
    /// Journaled under this bookmark and timestamp.
    Appended {
        /// The record's bookmark.
        bookmark: u64,
        /// The record's timestamp, ns since the Unix epoch.
        timestamp: u64,
    },
    /// The publisher's sequence number was already journaled: not published
    /// again. Its persisted ack waits for the journal's tip at this moment,
    /// which covers the original.
    Duplicate {
        /// The last bookmark appended when the duplicate arrived.
        tip: u64,
    },
    /// The journal refused the record; it is not published.
    Failed {
        /// Why, for the failure ack.
        text: String,
    },
}

/// Where a router's output goes, and the journal it writes through.
pub trait Sink<C> {
    /// Deliver `message` to `conn`, naming its matching subscriptions.
    fn deliver(&mut self, conn: &C, sub_ids: &[u64], message: &Message<'_>);
    /// Deliver a SOW query's record to `conn` (query `sub_id`, on `topic`).
    /// Its payload is borrowed from the store's read: a sink copies it once,
    /// next to the frame's header. This default copies it into a `Bytes`
    /// first.
    fn deliver_record(
        &mut self,
        conn: &C,
        sub_id: u64,
        topic: &Utf8,
        record: &statecast_sow::RecordRef<'_>,
    ) {
        let payload = Bytes::copy_from_slice(record.payload);
        self.deliver(
            conn,
            &[sub_id],
            &Message {
                topic,
                payload: &payload,
                timestamp: record.timestamp_ns,
                bookmark: Some(record.bookmark),
                sow_key: Some(record.key.0),
            },
        );
    }
    /// Deliver a SOW query's record as one of a `sow_batch` of up to
    /// `batch_size` records: a sink adds it to the batch it has open for
    /// the same connection, query and topic, or closes that batch and
    /// opens another. [`Sink::end_batch`] closes the open batch; so does
    /// any other output of the sink. This default sends each record as a
    /// `deliver` ([`Sink::deliver_record`]).
    fn deliver_batched(
        &mut self,
        conn: &C,
        sub_id: u64,
        topic: &Utf8,
        record: &statecast_sow::RecordRef<'_>,
        batch_size: u32,
    ) {
        let _ = batch_size;
        self.deliver_record(conn, sub_id, topic, record);
    }
    /// Completes the `sow_batch` open, if any (the router calls it after
    /// a topic's records and at the end of each piece of an answer).
    fn end_batch(&mut self) {}
    /// Whether `conn` is closed (what is sent to it is dropped).
    fn is_closed(&mut self, _conn: &C) -> bool {
        false
    }
    /// Bytes queued for `conn` and not yet written to it, this sink's
    /// pending output included.
    fn queued(&mut self, _conn: &C) -> usize {
        0
    }
    /// Send an ack to `conn`.
    fn reply(&mut self, conn: &C, ack: Ack);
    /// Send any other frame to `conn`.
    fn send(&mut self, conn: &C, command: Command);
    /// Hand everything produced so far to the connections' queues (a sink
    /// may hold output until the end of a batch).
    fn release(&mut self) {}
    /// Journal a publish before it is routed. Without a journal nothing is.
    fn append(
        &mut self,
        conn: &C,
        topic: &Utf8,
        payload: &Bytes,
        flags: u16,
        sequence: Option<u64>,
    ) -> LogOutcome {
        let _ = (conn, topic, payload, flags, sequence);
        LogOutcome::NotJournaled
    }
    /// Bytes `conn` may still have queued before it is over its outbound
    /// limit (unbounded without one).
    fn outbound_room(&mut self, conn: &C) -> usize {
        let _ = conn;
        usize::MAX
    }
    /// Whether the journal's persisted watermark covers `bookmark` (always,
    /// without a journal), waiting a little for the next sync if need be.
    fn persisted(&mut self, bookmark: u64) -> bool {
        let _ = bookmark;
        true
    }
    /// Whether the persisted watermark covers `bookmark` now, without
    /// waiting (a background SOW checkpoint asks on every loop).
    fn persisted_now(&mut self, bookmark: u64) -> bool {
        self.persisted(bookmark)
    }
    /// Send `ack` to `conn` once every bookmark up to `bookmark` is
    /// persisted. Only called after [`Sink::append`] journaled something.
    fn ack_when_persisted(&mut self, bookmark: u64, conn: &C, ack: Ack) {
        let _ = bookmark;
        self.reply(conn, ack);
    }
    /// Start the replay of a bookmark subscription (every processor holding
    /// it has registered it as pending). Without a journal it is refused.
    fn start_replay(&mut self, start: ReplayStart<C>) {
        let mut ack = Ack::failure(
            AckType::Processed,
            start.command_id,
            ReasonCode::AckNotAvailable,
            "bookmark subscriptions need a journal (journal.topics is empty)",
        );
        ack.sub_id = Some(start.sub_id);
        self.reply(&start.conn, ack);
    }
}

#[derive(Debug, Clone)]
struct Target<C> {
    conn: C,
    conn_id: u64,
    sub_ids: SmallVec<[u64; 2]>,
}

/// One topic's subscriptions. Those without a filter are grouped by
/// connection and delivered to without evaluation; those with a filter live
/// in a [`SubscriptionIndex`], which evaluates only the filters that can
/// match a message.
#[derive(Debug)]
struct TopicEntry<C> {
    targets: Vec<Target<C>>,
    filtered: SubscriptionIndex<(u64, u64)>,
    /// Connections with filtered subscriptions here: handle and sub ids.
    filtered_conns: HashMap<u64, (C, SmallVec<[u64; 2]>)>,
}

impl<C: ConnHandle> TopicEntry<C> {
    fn new() -> Self {
        Self {
            targets: Vec::new(),
            filtered: SubscriptionIndex::new(),
            filtered_conns: HashMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.filtered.is_empty()
    }

    fn add(&mut self, conn: &C, sub_id: u64, filter: Option<&Filter>) {
        let conn_id = conn.conn_id();
        if let Some(filter) = filter {
            if self
                .filtered
                .insert((conn_id, sub_id), filter.clone())
                .is_none()
            {
                self.filtered_conns
                    .entry(conn_id)
                    .or_insert_with(|| (conn.clone(), SmallVec::new()))
                    .1
                    .push(sub_id);
            }
            return;
        }
        match self.targets.iter_mut().find(|t| t.conn_id == conn_id) {
            Some(target) => target.sub_ids.push(sub_id),
            None => {
                self.targets.push(Target {
                    conn: conn.clone(),
                    conn_id,
                    sub_ids: SmallVec::from_slice(&[sub_id]),
                });
            }
        }
    }

    fn remove(&mut self, conn_id: u64, sub_id: u64) {
        if let Some(index) = self.targets.iter().position(|t| t.conn_id == conn_id)
            && let Some(target) = self.targets.get_mut(index)
        {
            target.sub_ids.retain(|id| *id != sub_id);
            if target.sub_ids.is_empty() {
                // Keep insertion order: delivery order across connections is
                // not promised, but stable order makes tests and traces readable.
                self.targets.remove(index);
            }
        }
        if self.filtered.remove(&(conn_id, sub_id)).is_some()
            && let Some((_, ids)) = self.filtered_conns.get_mut(&conn_id)
        {
            ids.retain(|id| *id != sub_id);
            if ids.is_empty() {
                self.filtered_conns.remove(&conn_id);
            }
        }
    }

    fn remove_conn(&mut self, conn_id: u64) {
        self.targets.retain(|t| t.conn_id != conn_id);
        if let Some((_, ids)) = self.filtered_conns.remove(&conn_id) {
            for sub_id in ids {
                self.filtered.remove(&(conn_id, sub_id));
            }
        }
    }
}

#[derive(Debug)]
struct PatternSub<C> {
    conn: C,
    conn_id: u64,
    sub_id: u64,
    pattern: Arc<Pattern>,
    filter: Option<Filter>,
}

#[derive(Debug, Default)]
struct ConnSubs {
    exact: Vec<(u64, Bytes)>,
    patterns: Vec<u64>,
}

/// Entries kept for topics without subscribers (remembering which
/// patterns match them) before they are swept.
const EMPTY_TOPICS_MAX: usize = 100_000;

/// Counters a router keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Messages routed.
    pub published: u64,
    /// Deliveries made (one per message and connection).
    pub delivered: u64,
}

/// Reusable buffers for matching filtered subscriptions.
#[derive(Debug, Default)]
struct MatchScratch {
    index: IndexScratch,
    /// (connection id, sub id) of the filtered subscriptions that matched.
    matches: Vec<(u64, u64)>,
    sub_ids: SmallVec<[u64; 8]>,
}

/// The subscriptions of the topics one processor owns.
#[derive(Debug)]
pub struct Router<C> {
    topics: rustc_hash::FxHashMap<Bytes, TopicEntry<C>>,
    patterns: Vec<PatternSub<C>>,
    conns: HashMap<u64, ConnSubs>,
    stats: RouterStats,
    scratch: MatchScratch,
    /// Bookmark subscriptions whose replay has not caught up yet.
    pending: HashMap<(u64, u64), PendingSub<C>>,
    /// The highest bookmark this router's processor has appended.
    last_appended: u64,
    /// The SOW topics this processor owns.
    sow: SowTopics,
    /// When a refused publish was last logged (ns), to log at most one a second.
    refusal_logged_ns: u64,
    /// Send SOW answers in pieces of about this many bytes (`None`: whole,
    /// in the step that runs the query).
    sow_piece_bytes: Option<usize>,
    /// The SOW answer being sent in pieces, if any.
    sow_stream: Option<SowStream<C>>,
}

/// A SOW answer being sent in pieces ([`Router::set_sow_pieces`]). While
/// it lasts its processor runs nothing else (the driver holds every other
/// command back): the stores do not change, so the answer is the state at
/// the moment the query ran, no other frame of this processor reaches the
/// client inside the group, and a `sow_and_subscribe`'s subscription is
/// registered after the last record with no publish in between.
struct SowStream<C> {
    conn: C,
    request: Arc<SowRequest>,
    done: Completion,
    /// Stores still to query.
    topics: std::vec::IntoIter<Utf8>,
    /// The store being read and its results.
    current: Option<(Utf8, statecast_sow::Cursor)>,
    sent: u64,
    failure: Option<String>,
}

impl<C> std::fmt::Debug for SowStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SowStream")
            .field("sub_id", &self.request.sub_id)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

/// Sends one record of `request`'s answer: a `deliver`, or a place in a
/// `sow_batch` when the query asked for batches.
fn send_record<C>(
    sink: &mut impl Sink<C>,
    conn: &C,
    request: &SowRequest,
    topic: &Utf8,
    record: &statecast_sow::RecordRef<'_>,
) {
    if request.batch_size > 1 {
        sink.deliver_batched(conn, request.sub_id, topic, record, request.batch_size);
    } else {
        sink.deliver_record(conn, request.sub_id, topic, record);
    }
}

impl<C: ConnHandle> Default for Router<C> {
    fn default() -> Self {
        Self {
            topics: rustc_hash::FxHashMap::default(),
            patterns: Vec::new(),
            conns: HashMap::new(),
            stats: RouterStats::default(),
            scratch: MatchScratch::default(),
            pending: HashMap::new(),
            last_appended: 0,
            sow: SowTopics::default(),
            refusal_logged_ns: 0,
            sow_piece_bytes: None,
            sow_stream: None,
        }
    }
}

impl<C: ConnHandle> Router<C> {
    /// An empty router.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A router owning these SOW topics.
    #[must_use]
    pub fn with_sow(sow: SowTopics) -> Self {
        Self {
            sow,
            ..Self::default()
        }
    }

    /// The SOW topics held here.
    #[must_use]
    pub fn sow(&self) -> &SowTopics {
        &self.sow
    }

    /// Checkpoints the durable SOW stores whose records the journal has
    /// persisted; returns how many.
    pub fn checkpoint_sow(&mut self, sink: &mut impl Sink<C>) -> usize {
        if self.sow_streaming() {
            // A checkpoint appends, which may roll and compact slabs under
            // the open answer's cursor: it waits for the answer's end.
            return 0;
        }
        self.sow.checkpoint(|bookmark| sink.persisted(bookmark))
    }

    /// Moves the SOW's background checkpoints on, if any is in progress.
    pub fn poll_sow_checkpoints(&mut self, sink: &mut impl Sink<C>) -> usize {
        if !self.sow.checkpoint_in_flight() || self.sow_streaming() {
            // As in `checkpoint_sow`: finishing a checkpoint appends (and
            // may roll slabs) under the open answer's cursor.
            return 0;
        }
        self.sow
            .poll_checkpoints(|bookmark| sink.persisted_now(bookmark))
    }

    /// Checkpoints and closes the SOW stores (clean shutdown).
    pub fn close_sow(&mut self, sink: &mut impl Sink<C>) {
        // The stores close under it: the answer ends here, failed.
        self.stop_sow_stream(sink);
        self.sow.close(|bookmark| sink.persisted(bookmark));
    }

    /// Ends the SOW answer being sent in pieces, if any, where it is: a
    /// `group_end` that fails it (the broker is shutting down), and for a
    /// `sow_and_subscribe` the subscription, as after a failed read.
    pub fn stop_sow_stream(&mut self, sink: &mut impl Sink<C>) {
        if let Some(stream) = self.sow_stream.as_mut() {
            stream.topics = Vec::new().into_iter();
            stream.current = None;
            stream.failure.get_or_insert_with(|| {
                "the broker is shutting down: the answer stops here".to_owned()
            });
            self.sow_piece(1, sink);
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Live subscriptions (exact and pattern) held here.
    #[must_use]
    pub fn subscription_count(&self) -> usize {
        self.conns
            .values()
            .map(|c| c.exact.len() + c.patterns.len())
            .sum()
    }

    /// Handles one command; `now_ns` stamps published messages.
    pub fn handle(&mut self, command: ProcessorCommand<C>, now_ns: u64, sink: &mut impl Sink<C>) {
        match command {
            ProcessorCommand::Publish {
                conn,
                topic,
                payload,
                command_id,
                ack,
                sequence,
                sow_key,
            } => {
                let prepared = if self.sow.is_configured() {
                    match self
                        .sow
                        .prepare(topic.bytes(), &payload, sow_key.as_deref())
                    {
                        Ok(prepared) => prepared,
                        Err(refusal) => {
                            self.refuse_publish(
                                &conn, command_id, ack, &topic, refusal, now_ns, sink,
                            );
                            return;
                        }
                    }
                } else {
                    None
                };
                let outcome = match (&prepared, &sow_key) {
                    (Some(Prepared { explicit: true, .. }), Some(key)) => {
                        let mut journaled =
                            bytes::BytesMut::with_capacity(2 + key.len() + payload.len());
                        journaled.extend_from_slice(&(key.len() as u16).to_le_bytes());
                        journaled.extend_from_slice(key);
                        journaled.extend_from_slice(&payload);
                        sink.append(
                            &conn,
                            &topic,
                            &journaled.freeze(),
                            FLAG_EXPLICIT_KEY,
                            sequence,
                        )
                    }
                    _ => sink.append(&conn, &topic, &payload, 0, sequence),
                };
                let (bookmark, timestamp) = match &outcome {
                    LogOutcome::NotJournaled => (None, now_ns),
                    LogOutcome::Appended {
                        bookmark,
                        timestamp,
                    } => {
                        self.last_appended = self.last_appended.max(*bookmark);
                        (Some(*bookmark), *timestamp)
                    }
                    LogOutcome::Duplicate { .. } | LogOutcome::Failed { .. } => {
                        Self::publish_acks(
                            &conn, command_id, ack, sequence, &topic, &outcome, None, sink,
                        );
                        return;
                    }
                };
                let mut failure = None;
                if let Some(prepared) = &prepared
                    && let Err((_, text)) = self.sow.upsert(
                        topic.bytes(),
                        prepared,
                        &payload,
                        bookmark.unwrap_or(0),
                        timestamp,
                    )
                {
                    tracing::error!(
                        "SOW upsert on {topic} failed after the message was journaled: {text}"
                    );
                    failure = Some(text);
                }
                self.publish(&topic, &payload, timestamp, bookmark, sink);
                Self::publish_acks(
                    &conn, command_id, ack, sequence, &topic, &outcome, failure, sink,
                );
            }
            ProcessorCommand::Sow {
                conn,
                request,
                done,
            } => self.sow_query(&conn, request, done, sink),
            ProcessorCommand::SowDelete {
                conn,
                topic,
                selector,
                command_id,
                ack,
            } => self.sow_delete(&conn, &topic, selector, command_id, ack, now_ns, sink),
            ProcessorCommand::Subscribe {
                conn,
                sub_id,
                topic,
                filter,
                replay: Some((spec, cancel)),
                command_id,
                done,
            } => {
                // Registered for live delivery only when the replay catches up
                // (see `go_live`); the replay sends the acks.
                let key = (conn.conn_id(), sub_id);
                self.pending.insert(
                    key,
                    PendingSub {
                        conn: conn.clone(),
                        topic: topic.clone(),
                        filter: filter.clone(),
                        cancel: cancel.clone(),
                    },
                );
                if done.finish(sink) {
                    sink.start_replay(ReplayStart {
                        conn,
                        sub_id,
                        topic,
                        filter,
                        spec,
                        cancel,
                        command_id,
                    });
                }
            }
            ProcessorCommand::Subscribe {
                conn,
                sub_id,
                topic,
                filter,
                replay: None,
                command_id,
                done,
            } => {
                self.subscribe(&conn, sub_id, topic, filter);
                if done.finish(sink) {
                    let mut ack = Ack::success(AckType::Processed, command_id);
                    ack.sub_id = Some(sub_id);
                    sink.reply(&conn, ack);
                }
            }
            ProcessorCommand::Unsubscribe {
                conn,
                sub_id,
                command_id,
                done,
            } => {
                match sub_id {
                    Some(sub_id) => self.unsubscribe(conn.conn_id(), sub_id),
                    None => self.remove_conn(conn.conn_id()),
                }
                if done.finish(sink) {
                    let mut ack = Ack::success(AckType::Processed, command_id);
                    ack.sub_id = sub_id;
                    sink.reply(&conn, ack);
                }
            }
            ProcessorCommand::Flush {
                conn,
                command_id,
                done,
            } => {
                if done.finish(sink) {
                    sink.reply(&conn, Ack::success(AckType::Processed, Some(command_id)));
                }
            }
            ProcessorCommand::Closed { conn_id } => self.remove_conn(conn_id),
        }
    }

    /// The acks a publish asked for, by what the journal did with it.
    #[allow(clippy::too_many_arguments)]
    fn publish_acks(
        conn: &C,
        command_id: Option<u64>,
        ack: AckSet,
        sequence: Option<u64>,
        topic: &Utf8,
        outcome: &LogOutcome,
        sow_failure: Option<String>,
        sink: &mut impl Sink<C>,
    ) {
        for ack_type in requested(ack) {
            let mut reply = match outcome {
                LogOutcome::Appended { .. } | LogOutcome::NotJournaled
                    if ack_type == AckType::Processed && sow_failure.is_some() =>
                {
                    Ack::failure(
                        ack_type,
                        command_id,
                        ReasonCode::SowError,
                        format!(
                            "the message was journaled and delivered, but its SOW store failed: {}",
                            sow_failure.as_deref().unwrap_or_default()
                        ),
                    )
                }
                LogOutcome::Failed { text } => Ack::failure(
                    ack_type,
                    command_id,
                    ReasonCode::JournalError,
                    text.as_str(),
                ),
                LogOutcome::NotJournaled if ack_type != AckType::Processed => Ack::failure(
                    ack_type,
                    command_id,
                    ReasonCode::AckNotAvailable,
                    format!(
                        "{} acks need a journaled topic and `{topic}` is not journaled (journal.topics); the message was published",
                        ack_type.name()
                    ),
                ),
                LogOutcome::Duplicate { .. } => {
                    let mut duplicate = Ack::success(ack_type, command_id);
                    duplicate.reason_code = ReasonCode::Duplicate;
                    duplicate.reason = Some(Utf8::from_static(
                        "duplicate: already journaled, not published again",
                    ));
                    duplicate
                }
                _ => Ack::success(ack_type, command_id),
            };
            reply.sequence = sequence;
            match (ack_type, outcome) {
                (AckType::Persisted, LogOutcome::Appended { bookmark, .. }) => {
                    reply.bookmark = Some(*bookmark);
                    sink.ack_when_persisted(*bookmark, conn, reply);
                }
                (AckType::Persisted, LogOutcome::Duplicate { tip }) => {
                    sink.ack_when_persisted(*tip, conn, reply)
                }
                (_, LogOutcome::Appended { bookmark, .. }) => {
                    reply.bookmark = Some(*bookmark);
                    if ack_type == AckType::Completed {
                        reply = Ack::failure(
                            ack_type,
                            command_id,
                            ReasonCode::AckNotAvailable,
                            "a publish has no completed ack",
                        );
                    }
                    sink.reply(conn, reply);
                }
                _ => sink.reply(conn, reply),
            }
        }
    }

    fn publish(
        &mut self,
        topic: &Utf8,
        payload: &Bytes,
        now_ns: u64,
        bookmark: Option<u64>,
        sink: &mut impl Sink<C>,
    ) {
        self.stats.published += 1;
        if !self.topics.contains_key(topic.as_bytes()) {
            if self.patterns.is_empty() {
                return;
            }
            self.create_entry(topic.bytes().clone());
        }
        let Some(entry) = self.topics.get(topic.as_bytes()) else {
            return;
        };
        let message = Message {
            topic,
            payload,
            timestamp: now_ns,
            bookmark,
            sow_key: None,
        };
        self.stats.delivered += deliver(entry, &message, &mut self.scratch, sink);
    }

    /// Answers a publish the SOW refused (no key, too large): failure acks
    /// when asked for, else a log line (at most one a second).
    #[allow(clippy::too_many_arguments)]
    fn refuse_publish(
        &mut self,
        conn: &C,
        command_id: Option<u64>,
        ack: AckSet,
        topic: &Utf8,
        (code, text): Refusal,
        now_ns: u64,
        sink: &mut impl Sink<C>,
    ) {
        if ack.is_empty() {
            if now_ns.saturating_sub(self.refusal_logged_ns) >= 1_000_000_000 {
                self.refusal_logged_ns = now_ns;
                tracing::warn!("publish to {topic} refused ({code}): {text}");
            }
            return;
        }
        for ack_type in requested(ack) {
            sink.reply(
                conn,
                Ack::failure(ack_type, command_id, code, text.as_str()),
            );
        }
    }

    /// Has SOW answers (other than counts) sent in pieces of about `bytes`
    /// ([`Router::sow_piece`]) instead of whole in one step; `None` turns
    /// it off. A driver that sets it must hold every other command back
    /// while [`Router::sow_streaming`] and drive the pieces.
    pub fn set_sow_pieces(&mut self, bytes: Option<usize>) {
        self.sow_piece_bytes = bytes;
    }

    /// Whether a SOW answer is being sent in pieces.
    #[must_use]
    pub fn sow_streaming(&self) -> bool {
        self.sow_stream.is_some()
    }

    /// The connection of the SOW answer being sent in pieces, if any.
    #[must_use]
    pub fn sow_stream_conn(&self) -> Option<&C> {
        self.sow_stream.as_ref().map(|stream| &stream.conn)
    }

    /// The connection and query (`sub_id`) of the SOW answer being sent in
    /// pieces, if any.
    #[must_use]
    pub fn sow_stream_query(&self) -> Option<(&C, u64)> {
        self.sow_stream
            .as_ref()
            .map(|stream| (&stream.conn, stream.request.sub_id))
    }

    /// Runs a SOW query over this processor's stores that `request` names,
    /// sending each record, then (for `sow_and_subscribe`) registers the
    /// subscription in the same step: no publish can fall between the two.
    /// With pieces on ([`Router::set_sow_pieces`]) only the first piece is
    /// sent here and the query stays open ([`Router::sow_piece`]).
    fn sow_query(
        &mut self,
        conn: &C,
        request: Arc<SowRequest>,
        done: Completion,
        sink: &mut impl Sink<C>,
    ) {
        let topic_matches = |topic: &[u8]| match &request.topic {
            TopicSpec::Exact(name) => topic == name.as_bytes(),
            TopicSpec::Pattern(pattern) => pattern.matches(topic),
        };
        if let Some(piece) = self.sow_piece_bytes
            && !request.count_only
        {
            let topics: Vec<Utf8> = self
                .sow
                .stores_matching(topic_matches)
                .map(|store| Utf8::from(store.topic()))
                .collect();
            self.sow_stream = Some(SowStream {
                conn: conn.clone(),
                request,
                done,
                topics: topics.into_iter(),
                current: None,
                sent: 0,
                failure: None,
            });
            self.sow_piece(piece, sink);
            return;
        }
        let mut sent = 0u64;
        let mut failure = None;
        for store in self.sow.stores_matching(topic_matches) {
            let topic = Utf8::from(store.topic());
            let mut matches = match store.query(&request.query) {
                Ok(matches) => matches,
                Err(error) => {
                    failure.get_or_insert_with(|| error.to_string());
                    continue;
                }
            };
            if request.count_only {
                sent += matches.len() as u64;
                continue;
            }
            // Answered whole (a driver that does not stream pieces; the
            // broker's processors always do): a result larger than the
            // client may have queued would get it disconnected as slow
            // halfway through, so it is refused whole, saying how to ask
            // for less.
            let frame_bytes = matches.len() as u64 * (64 + topic.len() as u64);
            let bytes = matches.payload_bytes() + frame_bytes;
            let room = sink.outbound_room(conn) as u64;
            if bytes > room {
                failure.get_or_insert_with(|| {
                    format!(
                        "the results on `{topic}` ({} records, {bytes} bytes) exceed what this client may have queued ({room} bytes free of limits.client_outbound_bytes_max): narrow the filter, page with top_n and skip_n, or raise the limit",
                        matches.len()
                    )
                });
                continue;
            }
            while let Some(record) = matches.next_record() {
                match record {
                    Ok(record) => {
                        send_record(sink, conn, &request, &topic, &record);
                        sent += 1;
                    }
                    Err(error) => {
                        failure.get_or_insert_with(|| error.to_string());
                        break;
                    }
                }
            }
            sink.end_batch();
        }
        self.finish_sow_query(conn, &request, &done, sent, failure, sink);
    }

    /// Sends the next piece (about `bytes`, at least one record) of the SOW
    /// answer being sent in pieces; after its last record, ends it as
    /// [`Router::sow_query`] would have (subscription, `group_end`). An
    /// answer whose client is gone is dropped. Returns whether the answer
    /// is still open.
    pub fn sow_piece(&mut self, bytes: usize, sink: &mut impl Sink<C>) -> bool {
        let Some(stream) = self.sow_stream.as_mut() else {
            return false;
        };
        let mut gone = sink.is_closed(&stream.conn);
        let mut budget = bytes;
        let mut finished = false;
        while !gone && budget > 0 {
            let Some((topic, cursor)) = stream.current.as_mut() else {
                let Some(topic) = stream.topics.next() else {
                    finished = true;
                    break;
                };
                // A store is queried when its turn comes: the stores do not
                // change while the answer is open.
                match self
                    .sow
                    .store(topic.as_bytes())
                    .map(|store| store.query(&stream.request.query))
                {
                    Some(Ok(matches)) => stream.current = Some((topic, matches.into_cursor())),
                    Some(Err(error)) => {
                        stream.failure.get_or_insert_with(|| error.to_string());
                    }
                    None => {}
                }
                continue;
            };
            // The store is looked up once per piece, not per record.
            let mut exhausted = true;
            if let Some(store) = self.sow.store(topic.as_bytes()) {
                while let Some(record) = cursor.next_record(store) {
                    match record {
                        Ok(record) => {
                            send_record(sink, &stream.conn, &stream.request, topic, &record);
                            stream.sent += 1;
                            budget = budget.saturating_sub(record.payload.len() + topic.len() + 64);
                        }
                        Err(error) => {
                            stream.failure.get_or_insert_with(|| error.to_string());
                            break;
                        }
                    }
                    if budget == 0 {
                        exhausted = cursor.remaining() == 0;
                        break;
                    }
                }
            }
            if exhausted {
                stream.current = None;
            }
            gone = gone || (budget == 0 && sink.is_closed(&stream.conn));
        }
        // A piece ends with whole frames: it is written before the next.
        sink.end_batch();
        if !finished && !gone {
            return true;
        }
        let Some(stream) = self.sow_stream.take() else {
            return false;
        };
        if gone {
            // Nobody to answer: no subscription, and the group_end (if this
            // processor is the last) goes nowhere.
            stream.done.finish(sink);
            return false;
        }
        self.finish_sow_query(
            &stream.conn,
            &stream.request,
            &stream.done,
            stream.sent,
            stream.failure,
            sink,
        );
        false
    }

    /// Ends this processor's part of a SOW query: its count and first error
    /// recorded, the subscription of a `sow_and_subscribe` registered, and
    /// (by the last processor) the `group_end`.
    fn finish_sow_query(
        &mut self,
        conn: &C,
        request: &SowRequest,
        done: &Completion,
        sent: u64,
        failure: Option<String>,
        sink: &mut impl Sink<C>,
    ) {
        request.records.fetch_add(sent, Ordering::AcqRel);
        if let Some(text) = failure {
            let mut first = request
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert(text);
        }
        if request.subscribe {
            self.subscribe(
                conn,
                request.sub_id,
                request.topic.clone(),
                request.query.filter.clone(),
            );
        }
        if done.finish(sink) {
            let failure = request
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            sink.send(
                conn,
                Command::GroupEnd(GroupEnd {
                    command_id: request.command_id,
                    sub_id: request.sub_id,
                    records: request.records.load(Ordering::Acquire),
                    status: if failure.is_some() {
                        Status::Failure
                    } else {
                        Status::Success
                    },
                    reason_code: if failure.is_some() {
                        ReasonCode::SowError
                    } else {
                        ReasonCode::None
                    },
                    reason: failure.map(Utf8::from),
                }),
            );
        }
    }

    /// Deletes SOW records: resolved to keys (or kept as a filter),
    /// journaled, then applied; the acks carry the count.
    #[allow(clippy::too_many_arguments)]
    fn sow_delete(
        &mut self,
        conn: &C,
        topic: &Utf8,
        selector: DeleteSelector,
        command_id: u64,
        ack: AckSet,
        now_ns: u64,
        sink: &mut impl Sink<C>,
    ) {
        let ack = if ack.is_empty() {
            AckSet::only(AckType::Processed)
        } else {
            ack
        };
        let fail = |sink: &mut dyn FnMut(Ack), (code, text): Refusal| {
            for ack_type in requested(ack) {
                sink(Ack::failure(
                    ack_type,
                    Some(command_id),
                    code,
                    text.as_str(),
                ));
            }
        };
        let op = match selector {
            DeleteSelector::Keys(keys) => DeleteOp::Keys(keys),
            DeleteSelector::Filter(filter) => DeleteOp::Filter(filter.text().to_owned()),
            DeleteSelector::Example(example) => match self.sow.store_mut(topic.bytes()) {
                Ok(Some(store)) => match store.key_of(&example) {
                    Ok(key) => DeleteOp::Keys(vec![key.0]),
                    Err(error) => {
                        let refusal = (ReasonCode::InvalidSowKey, error.to_string());
                        return fail(&mut |a| sink.reply(conn, a), refusal);
                    }
                },
                Ok(None) => {
                    let refusal = (
                        ReasonCode::NotASowTopic,
                        format!("`{topic}` has no SOW (no sow.topics entry covers it)"),
                    );
                    return fail(&mut |a| sink.reply(conn, a), refusal);
                }
                Err(refusal) => return fail(&mut |a| sink.reply(conn, a), refusal),
            },
        };
        let outcome = sink.append(conn, topic, &op.encode(), FLAG_SOW_DELETE, None);
        let (bookmark, timestamp) = match &outcome {
            LogOutcome::Appended {
                bookmark,
                timestamp,
            } => {
                self.last_appended = self.last_appended.max(*bookmark);
                (*bookmark, *timestamp)
            }
            LogOutcome::NotJournaled => (0, now_ns),
            LogOutcome::Duplicate { .. } | LogOutcome::Failed { .. } => {
                let text = match &outcome {
                    LogOutcome::Failed { text } => text.clone(),
                    _ => "the journal refused the delete".to_owned(),
                };
                return fail(
                    &mut |a| sink.reply(conn, a),
                    (ReasonCode::JournalError, text),
                );
            }
        };
        let deleted = match self.sow.delete(topic.bytes(), &op, bookmark, timestamp) {
            Ok(deleted) => deleted as u64,
            Err(refusal) => return fail(&mut |a| sink.reply(conn, a), refusal),
        };
        for ack_type in requested(ack) {
            let mut reply = Ack::success(ack_type, Some(command_id));
            reply.records = Some(deleted);
            match (ack_type, &outcome) {
                (AckType::Persisted, LogOutcome::Appended { bookmark, .. }) => {
                    reply.bookmark = Some(*bookmark);
                    sink.ack_when_persisted(*bookmark, conn, reply);
                }
                (AckType::Persisted | AckType::Completed, _) => sink.reply(
                    conn,
                    Ack::failure(
                        ack_type,
                        Some(command_id),
                        ReasonCode::AckNotAvailable,
                        format!("a sow_delete has no {} ack here", ack_type.name()),
                    ),
                ),
                _ => sink.reply(conn, reply),
            }
        }
    }

    /// Creates a topic's entry, adding the pattern subscriptions that match it.
    fn create_entry(&mut self, topic: Bytes) -> &mut TopicEntry<C> {
        if self.topics.len() >= EMPTY_TOPICS_MAX {
            self.topics.retain(|_, entry| !entry.is_empty());
        }
        let mut entry = TopicEntry::new();
        for sub in &self.patterns {
            if sub.pattern.matches(&topic) {
                entry.add(&sub.conn, sub.sub_id, sub.filter.as_ref());
            }
        }
        self.topics.entry(topic).or_insert(entry)
    }

    fn subscribe(&mut self, conn: &C, sub_id: u64, topic: TopicSpec, filter: Option<Filter>) {
        let conn_id = conn.conn_id();
        match topic {
            TopicSpec::Exact(topic) => {
                let key = topic.bytes().clone();
                let entry = match self.topics.contains_key(&key) {
                    true => self.topics.get_mut(&key),
                    false => Some(self.create_entry(key.clone())),
                };
                if let Some(entry) = entry {
                    entry.add(conn, sub_id, filter.as_ref());
                }
                self.conns
                    .entry(conn_id)
                    .or_default()
                    .exact
                    .push((sub_id, key));
            }
            TopicSpec::Pattern(pattern) => {
                for (topic, entry) in &mut self.topics {
                    if pattern.matches(topic) {
                        entry.add(conn, sub_id, filter.as_ref());
                    }
                }
                self.patterns.push(PatternSub {
                    conn: conn.clone(),
                    conn_id,
                    sub_id,
                    pattern,
                    filter,
                });
                self.conns.entry(conn_id).or_default().patterns.push(sub_id);
            }
        }
    }

    /// A replay asks to hand a pending bookmark subscription over to live
    /// delivery, having read every record below `read_below` (see
    /// `core::replay`).
    pub fn go_live(&mut self, conn_id: u64, sub_id: u64, read_below: u64) -> GoLive {
        let key = (conn_id, sub_id);
        if !self.pending.contains_key(&key) {
            return GoLive::Gone;
        }
        let answer = replay::go_live(read_below, self.last_appended);
        if let GoLive::Live { .. } = answer
            && let Some(pending) = self.pending.remove(&key)
        {
            self.subscribe(&pending.conn, sub_id, pending.topic, pending.filter);
        }
        answer
    }

    /// Forgets a pending bookmark subscription whose replay ended (a
    /// bounded range finished, or the replay failed).
    pub fn drop_pending(&mut self, conn_id: u64, sub_id: u64) {
        self.pending.remove(&(conn_id, sub_id));
    }

    fn unsubscribe(&mut self, conn_id: u64, sub_id: u64) {
        if let Some(pending) = self.pending.remove(&(conn_id, sub_id)) {
            pending.cancel.cancel();
        }
        let Some(subs) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if let Some(index) = subs.exact.iter().position(|(id, _)| *id == sub_id) {
            let (_, topic) = subs.exact.swap_remove(index);
            if let Some(entry) = self.topics.get_mut(&topic) {
                entry.remove(conn_id, sub_id);
                if entry.is_empty() && self.patterns.is_empty() {
                    self.topics.remove(&topic);
                }
            }
        } else if let Some(index) = subs.patterns.iter().position(|id| *id == sub_id) {
            subs.patterns.swap_remove(index);
            self.patterns
                .retain(|p| !(p.conn_id == conn_id && p.sub_id == sub_id));
            for entry in self.topics.values_mut() {
                entry.remove(conn_id, sub_id);
            }
        }
        if subs.exact.is_empty() && subs.patterns.is_empty() {
            self.conns.remove(&conn_id);
        }
        self.sweep_if_no_patterns();
    }

    fn remove_conn(&mut self, conn_id: u64) {
        self.pending.retain(|&(conn, _), pending| {
            let keep = conn != conn_id;
            if !keep {
                pending.cancel.cancel();
            }
            keep
        });
        let Some(subs) = self.conns.remove(&conn_id) else {
            return;
        };
        for (_, topic) in &subs.exact {
            if let Some(entry) = self.topics.get_mut(topic) {
                entry.remove_conn(conn_id);
            }
        }
        if !subs.patterns.is_empty() {
            self.patterns.retain(|p| p.conn_id != conn_id);
            for entry in self.topics.values_mut() {
                entry.remove_conn(conn_id);
            }
        }
        self.sweep_if_no_patterns();
    }

    /// Without patterns an empty entry remembers nothing: drop them.
    fn sweep_if_no_patterns(&mut self) {
        if self.patterns.is_empty() {
            self.topics.retain(|_, entry| !entry.is_empty());
        }
    }
}

/// The matches of one connection in a delivery.
struct MatchGroup<'m> {
    conn_id: u64,
    /// (connection id, sub id), all of this connection.
    matches: &'m [(u64, u64)],
    /// Whether the group was merged into a plain target of the connection.
    merged: bool,
}

/// Delivers one message to a topic's matching subscriptions, one delivery
/// per connection naming all its matching subscriptions. Returns the number
/// of deliveries.
fn deliver<C: ConnHandle>(
    entry: &TopicEntry<C>,
    message: &Message<'_>,
    scratch: &mut MatchScratch,
    sink: &mut impl Sink<C>,
) -> u64 {
    scratch.matches.clear();
    if !entry.filtered.is_empty() {
        let ctx = MessageContext::new(message.payload)
            .with_topic(message.topic.as_str())
            .with_unix_timestamp(message.timestamp as f64 / 1e9);
        let matches = &mut scratch.matches;
        entry
            .filtered
            .for_each_match(&ctx, &mut scratch.index, |&(conn_id, sub_id)| {
                matches.push((conn_id, sub_id))
            });
    }
    if scratch.matches.is_empty() {
        // The common case: no filter matched (or none exists).
        for target in &entry.targets {
            sink.deliver(&target.conn, &target.sub_ids, message);
        }
        return entry.targets.len() as u64;
    }
    scratch.matches.sort_unstable();
    // One group of `matches` per connection.
    let mut groups: SmallVec<[MatchGroup<'_>; 16]> = scratch
        .matches
        .chunk_by(|a, b| a.0 == b.0)
        .filter_map(|matches| {
            Some(MatchGroup {
                conn_id: matches.first()?.0,
                matches,
                merged: false,
            })
        })
        .collect();
    let mut deliveries = 0;
    for target in &entry.targets {
        let group = groups
            .binary_search_by_key(&target.conn_id, |group| group.conn_id)
            .ok()
            .and_then(|g| groups.get_mut(g));
        match group {
            None => sink.deliver(&target.conn, &target.sub_ids, message),
            Some(group) => {
                group.merged = true;
                scratch.sub_ids.clear();
                scratch.sub_ids.extend_from_slice(&target.sub_ids);
                scratch
                    .sub_ids
                    .extend(group.matches.iter().map(|&(_, sub_id)| sub_id));
                sink.deliver(&target.conn, &scratch.sub_ids, message);
            }
        }
        deliveries += 1;
    }
    for group in &groups {
        if group.merged {
            continue;
        }
        if let Some((conn, _)) = entry.filtered_conns.get(&group.conn_id) {
            scratch.sub_ids.clear();
            scratch
                .sub_ids
                .extend(group.matches.iter().map(|&(_, sub_id)| sub_id));
            sink.deliver(conn, &scratch.sub_ids, message);
            deliveries += 1;
        }
    }
    deliveries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        deliveries: Vec<(u64, Vec<u64>, String, Vec<u8>)>,
        acks: Vec<(u64, Ack)>,
        frames: Vec<(u64, Command)>,
    }

    impl Sink<u64> for Recorder {
        fn deliver(&mut self, conn: &u64, sub_ids: &[u64], message: &Message<'_>) {
            self.deliveries.push((
                *conn,
                sub_ids.to_vec(),
                message.topic.to_string(),
                message.payload.to_vec(),
            ));
        }
        fn reply(&mut self, conn: &u64, ack: Ack) {
            self.acks.push((*conn, ack));
        }
        fn send(&mut self, conn: &u64, command: Command) {
            self.frames.push((*conn, command));
        }
    }

    fn publish(router: &mut Router<u64>, sink: &mut Recorder, topic: &str, body: &str) {
        router.handle(
            ProcessorCommand::Publish {
                conn: 99,
                topic: Utf8::from(topic),
                payload: Bytes::copy_from_slice(body.as_bytes()),
                command_id: None,
                ack: AckSet::NONE,
                sequence: None,
                sow_key: None,
            },
            1,
            sink,
        );
    }

    fn subscribe(
        router: &mut Router<u64>,
        sink: &mut Recorder,
        conn: u64,
        sub_id: u64,
        topic: &str,
    ) {
        let spec = if super::super::topic::is_pattern(topic) {
            TopicSpec::Pattern(Arc::new(Pattern::new(Utf8::from(topic)).unwrap()))
        } else {
            TopicSpec::Exact(Utf8::from(topic))
        };
        router.handle(
            ProcessorCommand::Subscribe {
                conn,
                sub_id,
                topic: spec,
                filter: None,
                replay: None,
                command_id: Some(sub_id),
                done: Completion::single(),
            },
            1,
            sink,
        );
    }

    #[test]
    fn exact_and_pattern_subscriptions_merge_per_connection() {
        let (mut router, mut sink) = (Router::new(), Recorder::default());
        subscribe(&mut router, &mut sink, 1, 10, "orders");
        subscribe(&mut router, &mut sink, 1, 11, "^ord");
        subscribe(&mut router, &mut sink, 2, 20, "ord.*s$");
        assert_eq!(sink.acks.len(), 3);
        publish(&mut router, &mut sink, "orders", "a");
        publish(&mut router, &mut sink, "quotes", "b");
        publish(&mut router, &mut sink, "ordinals", "c");
        let got: Vec<_> = sink
            .deliveries
            .iter()
            .map(|(c, ids, t, _)| (*c, ids.clone(), t.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, vec![10, 11], "orders"),
                (2, vec![20], "orders"),
                (1, vec![11], "ordinals"),
                (2, vec![20], "ordinals")
            ]
        );
    }

    #[test]
    fn pattern_added_after_topic_seen_still_matches() {
        let (mut router, mut sink) = (Router::new(), Recorder::default());
        subscribe(&mut router, &mut sink, 1, 1, "^a");
        publish(&mut router, &mut sink, "b", "x"); // remembered as an empty entry
        subscribe(&mut router, &mut sink, 2, 2, "b|c");
        publish(&mut router, &mut sink, "b", "y");
        assert_eq!(sink.deliveries.len(), 1);
        assert_eq!(sink.deliveries[0].0, 2);
    }

    #[test]
    fn unsubscribe_and_close_stop_delivery() {
        let (mut router, mut sink) = (Router::new(), Recorder::default());
        subscribe(&mut router, &mut sink, 1, 1, "t");
        subscribe(&mut router, &mut sink, 1, 2, "t.*");
        subscribe(&mut router, &mut sink, 2, 3, "t");
        router.handle(
            ProcessorCommand::Unsubscribe {
                conn: 1,
                sub_id: Some(1),
                command_id: None,
                done: Completion::single(),
            },
            1,
            &mut sink,
        );
        publish(&mut router, &mut sink, "t", "a");
        router.handle(ProcessorCommand::Closed { conn_id: 2 }, 1, &mut sink);
        router.handle(
            ProcessorCommand::Unsubscribe {
                conn: 1,
                sub_id: Some(2),
                command_id: None,
                done: Completion::single(),
            },
            1,
            &mut sink,
        );
        publish(&mut router, &mut sink, "t", "b");
        let got: Vec<_> = sink
            .deliveries
            .iter()
            .map(|(c, ids, _, p)| (*c, ids.clone(), p.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(1, vec![2], b"a".to_vec()), (2, vec![3], b"a".to_vec())]
        );
        assert_eq!(router.subscription_count(), 0);
        assert!(
            router.topics.is_empty(),
            "no state is kept for topics nobody listens to"
        );
    }

    #[test]
    fn broadcast_commands_ack_once() {
        let (mut a, mut b, mut sink) = (Router::new(), Router::new(), Recorder::default());
        let done = Completion::shared(2);
        for router in [&mut a, &mut b] {
            router.handle(
                ProcessorCommand::Flush {
                    conn: 5,
                    command_id: 8,
                    done: done.clone(),
                },
                1,
                &mut sink,
            );
        }
        assert_eq!(sink.acks.len(), 1);
        assert_eq!(sink.acks[0].1.command_id, Some(8));
    }

    #[test]
    fn publish_acks_processed_and_refuses_persisted_without_journal() {
        let (mut router, mut sink) = (Router::new(), Recorder::default());
        router.handle(
            ProcessorCommand::Publish {
                conn: 1,
                topic: Utf8::from("t"),
                payload: Bytes::new(),
                command_id: Some(3),
                ack: AckSet::only(AckType::Processed).with(AckType::Persisted),
                sequence: None,
                sow_key: None,
            },
            1,
            &mut sink,
        );
        assert_eq!(sink.acks.len(), 2);
        assert_eq!(sink.acks[0].1.status, statecast_protocol::Status::Success);
        assert_eq!(sink.acks[1].1.reason_code, ReasonCode::AckNotAvailable);
    }

    fn subscribe_filtered(
        router: &mut Router<u64>,
        sink: &mut Recorder,
        conn: u64,
        sub_id: u64,
        topic: &str,
        filter: &str,
    ) {
        let spec = if super::super::topic::is_pattern(topic) {
            TopicSpec::Pattern(Arc::new(Pattern::new(Utf8::from(topic)).unwrap()))
        } else {
            TopicSpec::Exact(Utf8::from(topic))
        };
        let filter = Filter::parse(filter, &statecast_filter::Limits::default()).unwrap();
        router.handle(
            ProcessorCommand::Subscribe {
                conn,
                sub_id,
                topic: spec,
                filter: Some(filter),
                replay: None,
                command_id: None,
                done: Completion::single(),
            },
            1,
            sink,
        );
    }

    #[test]
    fn filtered_and_plain_subscriptions_of_one_connection_share_a_delivery() {
        let (mut router, mut sink) = (Router::new(), Recorder::default());
        subscribe(&mut router, &mut sink, 1, 10, "q");
        subscribe_filtered(&mut router, &mut sink, 1, 11, "q", "/sym = 'IBM'");
        subscribe_filtered(
            &mut router,
            &mut sink,
            2,
            20,
            "q",
            "/sym IN ('IBM', 'MSFT') AND /px > 10",
        );
        subscribe_filtered(&mut router, &mut sink, 3, 30, "^q$", "/px > 100");
        publish(&mut router, &mut sink, "q", r#"{"sym":"IBM","px":50}"#);
        publish(&mut router, &mut sink, "q", r#"{"sym":"MSFT","px":500}"#);
        publish(&mut router, &mut sink, "q", "not json");
        let got: Vec<_> = sink
            .deliveries
            .iter()
            .map(|(c, ids, _, p)| (*c, ids.clone(), p.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, vec![10, 11], 21),
                (2, vec![20], 21),
                (1, vec![10], 23),
                (2, vec![20], 23),
                (3, vec![30], 23),
                (1, vec![10], 8)
            ]
        );
    }

    #[test]
    fn filtered_subscriptions_are_removed_by_unsubscribe_and_close() {
        let (mut router, mut sink) = (Router::new(), Recorder::default());
        subscribe_filtered(&mut router, &mut sink, 1, 1, "q", "/a = 1");
        subscribe_filtered(&mut router, &mut sink, 2, 2, "q", "/a = 1");
        router.handle(
            ProcessorCommand::Unsubscribe {
                conn: 1,
                sub_id: Some(1),
                command_id: None,
                done: Completion::single(),
            },
            1,
            &mut sink,
        );
        publish(&mut router, &mut sink, "q", r#"{"a":1}"#);
        router.handle(ProcessorCommand::Closed { conn_id: 2 }, 1, &mut sink);
        publish(&mut router, &mut sink, "q", r#"{"a":1}"#);
        assert_eq!(sink.deliveries.len(), 1);
        assert_eq!(sink.deliveries[0].0, 2);
        assert!(router.topics.is_empty());
    }

    mod model {
        //! The router against a brute-force model: random subscriptions
        //! (exact or pattern, with or without a filter), unsubscribes,
        //! closes and publishes; every publish must reach exactly the
        //! connections and subscriptions the model says, once each.

        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        const TOPICS: &[&str] = &["a", "b", "ab", "ba"];
        const PATTERNS: &[&str] = &["^a", "b$", "a|b"];
        const FILTERS: &[&str] = &[
            "/n = 1",
            "/n IN (1, 2)",
            "/n > 1",
            "/s = 'x' OR /n = 3",
            "NOT /n = 2",
        ];

        #[derive(Debug, Clone)]
        enum Op {
            Sub {
                conn: u64,
                topic: usize,
                pattern: bool,
                filter: Option<usize>,
            },
            Unsub {
                conn: u64,
                nth: usize,
            },
            Close {
                conn: u64,
            },
            Publish {
                topic: usize,
                n: u8,
                s: bool,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0u64..4, 0usize..4, any::<bool>(), proptest::option::of(0usize..5))
                    .prop_map(|(conn, topic, pattern, filter)| Op::Sub { conn, topic, pattern, filter }),
                1 => (0u64..4, 0usize..8).prop_map(|(conn, nth)| Op::Unsub { conn, nth }),
                1 => (0u64..4).prop_map(|conn| Op::Close { conn }),
                4 => (0usize..4, 0u8..4, any::<bool>()).prop_map(|(topic, n, s)| Op::Publish { topic, n, s }),
            ]
        }

        struct ModelSub {
            conn: u64,
            sub_id: u64,
            topic: String,
            pattern: Option<regex::Regex>,
            filter: Option<Filter>,
        }

        proptest! {
            #[test]
            fn router_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
                let (mut router, mut sink) = (Router::new(), Recorder::default());
                let mut model: Vec<ModelSub> = Vec::new();
                let mut next_sub = 1;
                for op in ops {
                    match op {
                        Op::Sub { conn, topic, pattern, filter } => {
                            let text = if pattern { PATTERNS[topic % PATTERNS.len()] } else { TOPICS[topic] };
                            let sub_id = next_sub;
                            next_sub += 1;
                            match filter {
                                Some(f) => subscribe_filtered(&mut router, &mut sink, conn, sub_id, text, FILTERS[f]),
                                None => subscribe(&mut router, &mut sink, conn, sub_id, text),
                            }
                            model.push(ModelSub {
                                conn,
                                sub_id,
                                topic: text.to_owned(),
                                pattern: pattern.then(|| regex::Regex::new(text).unwrap()),
                                filter: filter.map(|f| Filter::parse(FILTERS[f], &statecast_filter::Limits::default()).unwrap()),
                            });
                        }
                        Op::Unsub { conn, nth } => {
                            let mine: Vec<u64> = model.iter().filter(|m| m.conn == conn).map(|m| m.sub_id).collect();
                            if let Some(&sub_id) = mine.get(nth % mine.len().max(1)) {
                                router.handle(ProcessorCommand::Unsubscribe { conn, sub_id: Some(sub_id), command_id: None, done: Completion::single() }, 1, &mut sink);
                                model.retain(|m| m.sub_id != sub_id);
                            }
                        }
                        Op::Close { conn } => {
                            router.handle(ProcessorCommand::Closed { conn_id: conn }, 1, &mut sink);
                            model.retain(|m| m.conn != conn);
                        }
                        Op::Publish { topic, n, s } => {
                            let body = format!(r#"{{"n":{n},"s":"{}"}}"#, if s { "x" } else { "y" });
                            sink.deliveries.clear();
                            publish(&mut router, &mut sink, TOPICS[topic], &body);
                            let mut expected: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
                            for m in &model {
                                let topic_ok = match &m.pattern {
                                    Some(re) => re.is_match(TOPICS[topic]),
                                    None => m.topic == TOPICS[topic],
                                };
                                let filter_ok = m.filter.as_ref().is_none_or(|f| f.matches(&MessageContext::new(body.as_bytes())));
                                if topic_ok && filter_ok {
                                    expected.entry(m.conn).or_default().push(m.sub_id);
                                }
                            }
                            let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
                            for (conn, ids, _, _) in &sink.deliveries {
                                let previous = got.insert(*conn, ids.clone());
                                prop_assert!(previous.is_none(), "one delivery per connection");
                            }
                            for ids in got.values_mut().chain(expected.values_mut()) {
                                ids.sort_unstable();
                            }
                            prop_assert_eq!(got, expected);
                        }
                    }
                }
            }
        }
    }

    fn sow_router() -> Router<u64> {
        let specs = vec![
            statecast_sow::SowTopicConfig::new("orders", &["/id"])
                .validate()
                .unwrap(),
        ];
        Router::with_sow(SowTopics::new(Arc::new(specs), None))
    }

    fn publish_acked(router: &mut Router<u64>, sink: &mut Recorder, topic: &str, body: &str) {
        router.handle(
            ProcessorCommand::Publish {
                conn: 99,
                topic: Utf8::from(topic),
                payload: Bytes::copy_from_slice(body.as_bytes()),
                command_id: Some(1),
                ack: AckSet::only(AckType::Processed),
                sequence: None,
                sow_key: None,
            },
            1,
            sink,
        );
    }

    fn sow_request(topic: &str, subscribe: bool, filter: Option<&str>) -> Arc<SowRequest> {
        let mut query = statecast_sow::Query::all();
        query.filter =
            filter.map(|f| Filter::parse(f, &statecast_filter::Limits::default()).unwrap());
        Arc::new(SowRequest {
            sub_id: 7,
            command_id: Some(70),
            topic: TopicSpec::Exact(Utf8::from(topic)),
            query,
            count_only: false,
            subscribe,
            batch_size: 1,
            records: std::sync::atomic::AtomicU64::new(0),
            failure: std::sync::Mutex::new(None),
        })
    }

    #[test]
    fn sow_topics_keep_the_latest_message_per_key_and_refuse_keyless_ones() {
        let (mut router, mut sink) = (sow_router(), Recorder::default());
        publish_acked(&mut router, &mut sink, "orders", r#"{"id":1,"v":"a"}"#);
        publish_acked(&mut router, &mut sink, "orders", r#"{"id":2,"v":"b"}"#);
        publish_acked(&mut router, &mut sink, "orders", r#"{"id":1,"v":"c"}"#);
        publish_acked(&mut router, &mut sink, "orders", r#"{"v":"no key"}"#);
        publish_acked(&mut router, &mut sink, "orders", "not json");
        let codes: Vec<_> = sink.acks.iter().map(|(_, a)| a.reason_code).collect();
        assert_eq!(
            codes,
            [
                ReasonCode::None,
                ReasonCode::None,
                ReasonCode::None,
                ReasonCode::InvalidSowKey,
                ReasonCode::InvalidSowKey
            ]
        );
        let store = router.sow().store(b"orders").unwrap();
        assert_eq!(store.len(), 2);
        router.handle(
            ProcessorCommand::Sow {
                conn: 5,
                request: sow_request("orders", false, Some("/v = 'c'")),
                done: Completion::single(),
            },
            1,
            &mut sink,
        );
        let records: Vec<_> = sink.deliveries.iter().filter(|d| d.0 == 5).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].3, br#"{"id":1,"v":"c"}"#.to_vec());
        assert!(matches!(
            &sink.frames[..],
            [(
                5,
                Command::GroupEnd(GroupEnd {
                    records: 1,
                    sub_id: 7,
                    status: Status::Success,
                    ..
                })
            )]
        ));
    }

    #[test]
    fn sow_and_subscribe_sends_the_snapshot_then_only_later_messages() {
        let (mut router, mut sink) = (sow_router(), Recorder::default());
        publish_acked(&mut router, &mut sink, "orders", r#"{"id":1,"v":1}"#);
        router.handle(
            ProcessorCommand::Sow {
                conn: 5,
                request: sow_request("orders", true, None),
                done: Completion::single(),
            },
            1,
            &mut sink,
        );
        publish_acked(&mut router, &mut sink, "orders", r#"{"id":1,"v":2}"#);
        let to_5: Vec<_> = sink
            .deliveries
            .iter()
            .filter(|d| d.0 == 5)
            .map(|d| String::from_utf8(d.3.clone()).unwrap())
            .collect();
        assert_eq!(to_5, [r#"{"id":1,"v":1}"#, r#"{"id":1,"v":2}"#]);
    }

    /// With pieces on, the query sends its first piece, stays open until
    /// `sow_piece` has sent the last record, and only then registers the
    /// subscription and sends `group_end`; a query whose client is gone is
    /// dropped without either.
    #[test]
    fn a_sow_answer_in_pieces_ends_and_subscribes_after_its_last_record() {
        let (mut router, mut sink) = (sow_router(), Recorder::default());
        for id in 0..5 {
            publish_acked(
                &mut router,
                &mut sink,
                "orders",
                &format!(r#"{{"id":{id}}}"#),
            );
        }
        // Each record is over one byte: one record per piece.
        router.set_sow_pieces(Some(1));
        let before = sink.deliveries.len();
        router.handle(
            ProcessorCommand::Sow {
                conn: 5,
                request: sow_request("orders", true, None),
                done: Completion::single(),
            },
            1,
            &mut sink,
        );
        let records = |sink: &Recorder| sink.deliveries.len() - before;
        let ended = |sink: &Recorder| {
            sink.frames
                .iter()
                .any(|(conn, f)| *conn == 5 && matches!(f, Command::GroupEnd(_)))
        };
        assert_eq!(records(&sink), 1);
        assert!(router.sow_streaming() && !ended(&sink));
        assert_eq!(router.sow_stream_conn(), Some(&5));
        let mut open = true;
        while open {
            assert!(!ended(&sink), "group_end before the last record");
            assert!(!router.conns.contains_key(&5), "subscribed before the end");
            open = router.sow_piece(1, &mut sink);
        }
        assert_eq!(records(&sink), 5);
        assert!(!router.sow_streaming() && ended(&sink));
        let end = sink.frames.iter().rev().find_map(|(_, f)| match f {
            Command::GroupEnd(end) => Some(end.clone()),
            _ => None,
        });
        assert_eq!(
            end.map(|e| (e.records, e.status)),
            Some((5, Status::Success))
        );
        publish_acked(&mut router, &mut sink, "orders", r#"{"id":1,"v":2}"#);
        assert_eq!(records(&sink), 6, "subscribed once the answer ended");
    }

    #[test]
    fn sow_delete_by_filter_and_example_counts_what_went() {
        let (mut router, mut sink) = (sow_router(), Recorder::default());
        for id in 0..10 {
            publish_acked(
                &mut router,
                &mut sink,
                "orders",
                &format!(r#"{{"id":{id},"odd":{}}}"#, id % 2 == 1),
            );
        }
        sink.acks.clear();
        let filter = Filter::parse("/odd = true", &statecast_filter::Limits::default()).unwrap();
        for (command_id, selector) in [
            (3, DeleteSelector::Filter(filter)),
            (
                4,
                DeleteSelector::Example(Bytes::from_static(br#"{"id":4}"#)),
            ),
            (5, DeleteSelector::Example(Bytes::from_static(b"{}"))),
        ] {
            router.handle(
                ProcessorCommand::SowDelete {
                    conn: 5,
                    topic: Utf8::from("orders"),
                    selector,
                    command_id,
                    ack: AckSet::NONE,
                },
                1,
                &mut sink,
            );
        }
        let got: Vec<_> = sink
            .acks
            .iter()
            .map(|(_, a)| (a.command_id, a.records, a.reason_code))
            .collect();
        assert_eq!(
            got,
            [
                (Some(3), Some(5), ReasonCode::None),
                (Some(4), Some(1), ReasonCode::None),
                (Some(5), None, ReasonCode::InvalidSowKey)
            ]
        );
        assert_eq!(router.sow().store(b"orders").unwrap().len(), 4);
    }
}
