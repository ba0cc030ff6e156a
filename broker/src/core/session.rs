//! The connection state machine: logon, heartbeats and timeouts, frame
//! limits, command validation, and translating commands into actions for
//! the I/O layer (replies to write, commands for topic processors, close).
//!
//! A session never blocks and never reads the clock: the driver passes
//! `now` in. Protocol errors produce [`Action::Close`] with the failure ack's
//! reason; the driver writes that ack and closes only this connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use statecast_protocol::{
    Ack, AckSet, AckType, Command, DecodeError, Frame, FrameDecoder, GroupBegin, Heartbeat,
    ReasonCode, SowDelete as SowDeleteCommand, SowQuery, Utf8,
};

use statecast_filter::Filter;

use super::replay::{self, NotFound, ReplaySpec};
use super::router::{DeleteSelector, SowRequest};
use super::sow::Refusal;
use super::topic::{Pattern, TopicSpec, is_pattern, processor_for};

/// Longest client name accepted at logon.
pub const CLIENT_NAME_BYTES_MAX: usize = 256;

/// The limits and settings every session of a broker shares.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Largest frame after logon.
    pub frame_bytes_max: usize,
    /// Largest frame before logon.
    pub frame_bytes_max_before_logon: usize,
    /// Longest topic or pattern.
    pub topic_bytes_max: usize,
    /// Live subscriptions per connection.
    pub subscriptions_max: usize,
    /// Heartbeat interval when the client asks for none.
    pub heartbeat_default: Duration,
    /// Smallest interval a client may ask for.
    pub heartbeat_min: Duration,
    /// Largest interval a client may ask for.
    pub heartbeat_max: Duration,
    /// Logon deadline after connect.
    pub logon_timeout: Duration,
    /// Number of topic processors.
    pub processors: usize,
    /// Limits on content filters.
    pub filter: statecast_filter::Limits,
    /// This broker's version, for the logon ack.
    pub server_version: &'static str,
    /// The SOW topics' configurations (first match wins).
    pub sow: Arc<Vec<statecast_sow::TopicSpec>>,
}

impl SessionLimits {
    /// Limits from a validated configuration.
    #[must_use]
    pub fn from_config(config: &crate::config::Config, processors: usize) -> Self {
        let l = &config.limits;
        let c = &config.connections;
        Self {
            frame_bytes_max: usize::try_from(l.frame_bytes_max.0).unwrap_or(usize::MAX),
            frame_bytes_max_before_logon: usize::try_from(l.frame_bytes_max_before_logon.0)
                .unwrap_or(usize::MAX),
            topic_bytes_max: l.topic_bytes_max,
            subscriptions_max: l.subscriptions_per_connection_max,
            heartbeat_default: Duration::from_millis(c.heartbeat_ms),
            heartbeat_min: Duration::from_millis(c.heartbeat_min_ms),
            heartbeat_max: Duration::from_millis(c.heartbeat_max_ms),
            logon_timeout: Duration::from_millis(c.logon_timeout_ms),
            processors: processors.max(1),
            filter: statecast_filter::Limits {
                max_text_bytes: l.filter_bytes_max,
                max_depth: l.filter_depth_max,
                ..statecast_filter::Limits::default()
            },
            server_version: env!("CARGO_PKG_VERSION"),
            // Validated with the configuration.
            sow: Arc::new(config.sow.specs().unwrap_or_default()),
        }
    }

    /// Whether `topic` has a SOW.
    #[must_use]
    pub fn is_sow_topic(&self, topic: &str) -> bool {
        self.sow.iter().any(|spec| spec.matches(topic))
    }
}

/// Which processors a command must visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// The processor that owns one topic.
    One(usize),
    /// Every processor (pattern subscriptions, flush, unsubscribe-all).
    All,
}

/// Why the session wants its connection closed, and the failure ack to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The reason code for the failure ack.
    pub code: ReasonCode,
    /// The text for the failure ack and the log.
    pub text: String,
    /// The command id of the offending command, when it could be read.
    pub command_id: Option<u64>,
}

impl CloseReason {
    /// The failure ack announcing the close.
    #[must_use]
    pub fn ack(&self) -> Ack {
        Ack::failure(
            AckType::Processed,
            self.command_id,
            self.code,
            self.text.as_str(),
        )
    }
}

/// What the driver must do after a session has handled input.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write this frame to the client.
    Reply(Command),
    /// The client logged on: the driver registers it as a publisher with
    /// the journal (adding the last persisted sequence to the ack), then
    /// writes the ack.
    LoggedOn(Ack),
    /// Hand a publish to the processor owning its topic.
    Publish {
        /// Owning processor.
        processor: usize,
        /// Topic.
        topic: Utf8,
        /// Message body (shares the receive buffer).
        payload: Bytes,
        /// For acks.
        command_id: Option<u64>,
        /// Acks wanted.
        ack: AckSet,
        /// Publisher sequence number.
        sequence: Option<u64>,
        /// The publisher's explicit SowKey.
        sow_key: Option<Bytes>,
    },
    /// Run a SOW query (the ack and `group_begin` were pushed before it).
    Sow {
        /// Where: the owning processor, or all for a pattern.
        targets: Targets,
        /// The query.
        request: Arc<SowRequest>,
    },
    /// Delete SOW records.
    SowDelete {
        /// The processor owning the topic.
        processor: usize,
        /// The topic.
        topic: Utf8,
        /// Which records.
        selector: DeleteSelector,
        /// For the acks.
        command_id: u64,
        /// Acks wanted.
        ack: AckSet,
    },
    /// Register a subscription.
    Subscribe {
        /// Where it must be registered.
        targets: Targets,
        /// Client's id for it.
        sub_id: u64,
        /// What it listens to.
        topic: TopicSpec,
        /// Its content filter.
        filter: Option<Filter>,
        /// Where it starts in the journal (`None`: live only).
        replay: Option<ReplaySpec>,
        /// For the ack.
        command_id: Option<u64>,
    },
    /// End one or all subscriptions.
    Unsubscribe {
        /// Where they are registered.
        targets: Targets,
        /// `None` = all of this connection's.
        sub_id: Option<u64>,
        /// For the ack.
        command_id: Option<u64>,
    },
    /// A barrier through every processor.
    Flush {
        /// For the ack.
        command_id: u64,
    },
    /// A fire-and-forget command was refused (nothing is sent back); the
    /// driver may log it.
    Rejected(String),
    /// Write the failure ack and close this connection.
    Close(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingLogon { deadline: Instant },
    Active,
    Closed,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    limits: Arc<SessionLimits>,
    decoder: FrameDecoder,
    state: State,
    client_name: Option<Utf8>,
    heartbeat: Duration,
    last_received: Instant,
    subscriptions: HashMap<u64, Targets>,
}

impl Session {
    /// A session for a connection accepted at `now`.
    #[must_use]
    pub fn new(limits: Arc<SessionLimits>, now: Instant) -> Self {
        Self {
            decoder: FrameDecoder::new(limits.frame_bytes_max_before_logon),
            state: State::AwaitingLogon {
                deadline: now + limits.logon_timeout,
            },
            client_name: None,
            heartbeat: limits.heartbeat_default,
            last_received: now,
            subscriptions: HashMap::new(),
            limits,
        }
    }

    /// The client's name once logged on.
    #[must_use]
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_ref().map(Utf8::as_str)
    }

    /// Whether the session has asked for its connection to close.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the client has logged on.
    #[must_use]
    pub fn is_logged_on(&self) -> bool {
        self.state == State::Active
    }

    /// The heartbeat interval in force.
    #[must_use]
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Live subscriptions.
    #[must_use]
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Bytes the session needs to see before it can decode the next frame,
    /// so the driver never buffers more than one frame's worth: `None` when
    /// the length prefix is incomplete.
    #[must_use]
    pub fn max_frame_len(&self) -> usize {
        self.decoder.max_frame_len()
    }

    fn close(
        &mut self,
        code: ReasonCode,
        text: String,
        command_id: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        if self.state != State::Closed {
            self.state = State::Closed;
            out.push(Action::Close(CloseReason {
                code,
                text,
                command_id,
            }));
        }
    }

    /// Decodes and handles every complete frame at the front of `buf`.
    /// Stops at the first protocol error, after pushing [`Action::Close`].
    pub fn on_bytes(&mut self, buf: &mut BytesMut, now: Instant, out: &mut Vec<Action>) {
        while self.state != State::Closed {
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    self.last_received = now;
                    self.on_frame(&frame, out);
                }
                Ok(None) => return,
                Err(error) => {
                    let text = if let DecodeError::FrameTooLarge { .. } = error {
                        if self.state == State::Active {
                            format!("{error} (limits.frame_bytes_max)")
                        } else {
                            format!(
                                "{error} (limits.frame_bytes_max_before_logon applies until logon)"
                            )
                        }
                    } else {
                        error.to_string()
                    };
                    self.close(reason_for(&error), text, None, out);
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, frame: &Frame, out: &mut Vec<Action>) {
        let command = match Command::decode(frame) {
            Ok(command) => command,
            Err(error) => {
                let command_id = command_id_of(frame);
                self.close(reason_for(&error), error.to_string(), command_id, out);
                return;
            }
        };
        match (self.state, command) {
            (State::Closed, _) => {}
            (State::AwaitingLogon { .. }, Command::Logon(logon)) => self.logon(logon, out),
            (State::AwaitingLogon { .. }, other) => {
                let text = format!(
                    "{} before logon: logon must be the first command",
                    other.code().name()
                );
                self.close(ReasonCode::NotLoggedOn, text, None, out);
            }
            (State::Active, Command::Logon(logon)) => {
                self.close(
                    ReasonCode::AlreadyLoggedOn,
                    "a connection logs on once".into(),
                    logon.command_id,
                    out,
                );
            }
            (State::Active, Command::Heartbeat(_)) => {}
            (State::Active, Command::Publish(publish)) => {
                if publish.topic.len() > self.limits.topic_bytes_max {
                    let text = format!(
                        "topic of {} bytes exceeds limits.topic_bytes_max ({})",
                        publish.topic.len(),
                        self.limits.topic_bytes_max
                    );
                    if publish.ack.is_empty() {
                        out.push(Action::Rejected(text));
                    } else {
                        for ack in requested(publish.ack) {
                            out.push(Action::Reply(Command::Ack(Ack::failure(
                                ack,
                                publish.command_id,
                                ReasonCode::InvalidTopic,
                                text.as_str(),
                            ))));
                        }
                    }
                    return;
                }
                out.push(Action::Publish {
                    processor: processor_for(publish.topic.as_bytes(), self.limits.processors),
                    topic: publish.topic,
                    payload: publish.payload,
                    command_id: publish.command_id,
                    ack: publish.ack,
                    sequence: publish.sequence,
                    sow_key: publish.sow_key,
                });
            }
            (State::Active, Command::Sow(query)) => self.sow(query, false, out),
            (State::Active, Command::SowAndSubscribe(query)) => self.sow(query, true, out),
            (State::Active, Command::SowDelete(delete)) => self.sow_delete(delete, out),
            (State::Active, Command::Subscribe(subscribe)) => self.subscribe(subscribe, out),
            (State::Active, Command::Unsubscribe(unsubscribe)) => match unsubscribe.sub_id {
                Some(sub_id) => match self.subscriptions.remove(&sub_id) {
                    Some(targets) => {
                        out.push(Action::Unsubscribe {
                            targets,
                            sub_id: Some(sub_id),
                            command_id: unsubscribe.command_id,
                        });
                    }
                    None => {
                        let mut ack = Ack::failure(
                            AckType::Processed,
                            unsubscribe.command_id,
                            ReasonCode::UnknownSubId,
                            format!("no subscription {sub_id} on this connection"),
                        );
                        ack.sub_id = Some(sub_id);
                        out.push(Action::Reply(Command::Ack(ack)));
                    }
                },
                None => {
                    self.subscriptions.clear();
                    out.push(Action::Unsubscribe {
                        targets: Targets::All,
                        sub_id: None,
                        command_id: unsubscribe.command_id,
                    });
                }
            },
            (State::Active, Command::Flush(flush)) => out.push(Action::Flush {
                command_id: flush.command_id,
            }),
            (
                State::Active,
                other @ (Command::Ack(_)
                | Command::Deliver(_)
                | Command::GroupBegin(_)
                | Command::GroupEnd(_)
                | Command::SowBatch(_)),
            ) => {
                let text = format!("{} is sent by brokers, not clients", other.code().name());
                self.close(ReasonCode::UnknownCommand, text, None, out);
            }
            (State::Active, other) => {
                let text = format!("{} is not handled by this broker", other.code().name());
                self.close(ReasonCode::UnknownCommand, text, None, out);
            }
        }
    }

    fn logon(&mut self, logon: statecast_protocol::Logon, out: &mut Vec<Action>) {
        if logon.client_name.len() > CLIENT_NAME_BYTES_MAX {
            let text = format!(
                "client_name of {} bytes exceeds {CLIENT_NAME_BYTES_MAX}",
                logon.client_name.len()
            );
            self.close(ReasonCode::InvalidField, text, logon.command_id, out);
            return;
        }
        let requested = logon
            .heartbeat_ms
            .map_or(self.limits.heartbeat_default, |ms| {
                Duration::from_millis(ms.into())
            });
        self.heartbeat = requested.clamp(self.limits.heartbeat_min, self.limits.heartbeat_max);
        self.decoder.set_max_frame_len(self.limits.frame_bytes_max);
        self.state = State::Active;
        let mut ack = Ack::success(AckType::Processed, logon.command_id);
        ack.client_name = Some(logon.client_name.clone());
        ack.heartbeat_ms = Some(u32::try_from(self.heartbeat.as_millis()).unwrap_or(u32::MAX));
        ack.max_frame_bytes = Some(u32::try_from(self.limits.frame_bytes_max).unwrap_or(u32::MAX));
        ack.server_version = Some(Utf8::from_static(self.limits.server_version));
        self.client_name = Some(logon.client_name);
        out.push(Action::LoggedOn(ack));
    }

    /// The checks every new subscription passes: a free sub id, the
    /// connection's limit, the topic's length.
    fn check_new_subscription(&self, sub_id: u64, topic: &Utf8) -> Result<(), Refusal> {
        if self.subscriptions.contains_key(&sub_id) {
            return Err((
                ReasonCode::DuplicateSubId,
                format!("subscription {sub_id} already exists on this connection"),
            ));
        }
        if self.subscriptions.len() >= self.limits.subscriptions_max {
            return Err((
                ReasonCode::TooManySubscriptions,
                format!(
                    "this connection has {} subscriptions, the limit (limits.subscriptions_per_connection_max)",
                    self.subscriptions.len()
                ),
            ));
        }
        self.check_topic_len(topic)
    }

    fn check_topic_len(&self, topic: &Utf8) -> Result<(), Refusal> {
        if topic.len() > self.limits.topic_bytes_max {
            return Err((
                ReasonCode::InvalidTopic,
                format!(
                    "topic of {} bytes exceeds limits.topic_bytes_max ({})",
                    topic.len(),
                    self.limits.topic_bytes_max
                ),
            ));
        }
        Ok(())
    }

    #[allow(clippy::unused_self)]
    fn parse_filter(
        &self,
        text: Option<&Utf8>,
        limits: &statecast_filter::Limits,
    ) -> Result<Option<Filter>, Refusal> {
        text.map(|text| {
            Filter::parse(text.as_str(), limits).map_err(|error| {
                (
                    ReasonCode::InvalidFilter,
                    format!("invalid filter: {error}"),
                )
            })
        })
        .transpose()
    }

    /// A subscription or query topic: a pattern (on every processor) unless
    /// `literal` or it has no pattern characters.
    fn topic_spec(&self, topic: &Utf8, literal: bool) -> Result<(Targets, TopicSpec), Refusal> {
        if !literal && is_pattern(topic.as_str()) {
            let pattern = Pattern::new(topic.clone()).map_err(|error| {
                (
                    ReasonCode::InvalidTopic,
                    format!("invalid topic pattern: {error}"),
                )
            })?;
            Ok((Targets::All, TopicSpec::Pattern(Arc::new(pattern))))
        } else {
            let processor = processor_for(topic.as_bytes(), self.limits.processors);
            Ok((Targets::One(processor), TopicSpec::Exact(topic.clone())))
        }
    }

    fn subscribe(&mut self, subscribe: statecast_protocol::Subscribe, out: &mut Vec<Action>) {
        let fail = |code, text: String| {
            let mut ack = Ack::failure(AckType::Processed, subscribe.command_id, code, text);
            ack.sub_id = Some(subscribe.sub_id);
            Action::Reply(Command::Ack(ack))
        };
        if let Err((code, text)) = self.check_new_subscription(subscribe.sub_id, &subscribe.topic) {
            return out.push(fail(code, text));
        }
        let mut literal = false;
        let mut not_found = NotFound::Fail;
        for option in options(subscribe.options.as_ref()) {
            match option {
                "" => {}
                "non_regex_topic" => literal = true,
                "bookmark_not_found=fail" => not_found = NotFound::Fail,
                "bookmark_not_found=epoch" => not_found = NotFound::Epoch,
                "bookmark_not_found=now" => not_found = NotFound::Now,
                unknown => {
                    out.push(fail(
                        ReasonCode::InvalidField,
                        format!(
                            "unknown subscribe option `{unknown}` (known: non_regex_topic, bookmark_not_found=fail|epoch|now)"
                        ),
                    ));
                    return;
                }
            }
        }
        let replay = match &subscribe.bookmark {
            None => None,
            Some(text) => match replay::parse(text.as_str(), not_found) {
                Ok(replay) => replay,
                Err(error) => {
                    out.push(fail(
                        ReasonCode::InvalidField,
                        format!("invalid bookmark_spec: {error}"),
                    ));
                    return;
                }
            },
        };
        let filter = match self.parse_filter(subscribe.filter.as_ref(), &self.limits.filter) {
            Ok(filter) => filter,
            Err((code, text)) => return out.push(fail(code, text)),
        };
        let (targets, topic) = match self.topic_spec(&subscribe.topic, literal) {
            Ok(spec) => spec,
            Err((code, text)) => return out.push(fail(code, text)),
        };
        self.subscriptions.insert(subscribe.sub_id, targets);
        out.push(Action::Subscribe {
            targets,
            sub_id: subscribe.sub_id,
            topic,
            filter,
            replay,
            command_id: subscribe.command_id,
        });
    }

    /// A `sow` or `sow_and_subscribe`: validated here, answered with the
    /// ack and `group_begin`, then run by the processors (which send the
    /// records and `group_end`).
    fn sow(&mut self, query: SowQuery, subscribe: bool, out: &mut Vec<Action>) {
        let (command_id, sub_id) = (query.command_id, query.sub_id);
        let fail = |(code, text): Refusal| {
            let mut ack = Ack::failure(AckType::Processed, command_id, code, text);
            ack.sub_id = Some(sub_id);
            Action::Reply(Command::Ack(ack))
        };
        match self.sow_request(query, subscribe) {
            Err(refusal) => out.push(fail(refusal)),
            Ok((targets, request)) => {
                if subscribe {
                    self.subscriptions.insert(sub_id, targets);
                }
                let mut ack = Ack::success(AckType::Processed, command_id);
                ack.sub_id = Some(sub_id);
                out.push(Action::Reply(Command::Ack(ack)));
                out.push(Action::Reply(Command::GroupBegin(GroupBegin {
                    command_id,
                    sub_id,
                })));
                out.push(Action::Sow {
                    targets,
                    request: Arc::new(request),
                });
            }
        }
    }

    fn sow_request(
        &self,
        query: SowQuery,
        subscribe: bool,
    ) -> Result<(Targets, SowRequest), Refusal> {
        if subscribe {
            self.check_new_subscription(query.sub_id, &query.topic)?;
        } else {
            self.check_topic_len(&query.topic)?;
        }
        let (mut literal, mut count_only) = (false, false);
        for option in options(query.options.as_ref()) {
            match option {
                "" => {}
                "non_regex_topic" => literal = true,
                "count_only" if !subscribe => count_only = true,
                unknown => {
                    return Err((
                        ReasonCode::InvalidField,
                        format!(
                            "unknown {} option `{unknown}` (known: non_regex_topic{})",
                            if subscribe {
                                "sow_and_subscribe"
                            } else {
                                "sow"
                            },
                            if subscribe { "" } else { ", count_only" }
                        ),
                    ));
                }
            }
        }
        let batch_size = match query.batch_size {
            None => 1,
            Some(size @ 1..=statecast_protocol::SOW_BATCH_SIZE_MAX) => size,
            Some(size) => {
                return Err((
                    ReasonCode::InvalidField,
                    format!(
                        "batch_size {size} is out of range: ask for 1 to {} records per frame",
                        statecast_protocol::SOW_BATCH_SIZE_MAX
                    ),
                ));
            }
        };
        let filter = self.parse_filter(query.filter.as_ref(), &self.limits.filter)?;
        let (targets, topic) = self.topic_spec(&query.topic, literal)?;
        if let TopicSpec::Exact(name) = &topic
            && !subscribe
            && !self.limits.is_sow_topic(name.as_str())
        {
            return Err((
                ReasonCode::NotASowTopic,
                format!("`{name}` has no SOW (no sow.topics entry covers it)"),
            ));
        }
        let order_by = match &query.order_by {
            None => Vec::new(),
            Some(text) => statecast_sow::OrderBy::parse_list(text.as_str())
                .map_err(|e| (ReasonCode::InvalidField, format!("invalid order_by: {e}")))?,
        };
        let skip_n = usize::try_from(query.skip_n.unwrap_or(0)).unwrap_or(usize::MAX);
        if skip_n > 0 && order_by.is_empty() {
            return Err((
                ReasonCode::InvalidField,
                "skip_n needs order_by (without an order, which records are skipped is undefined)"
                    .into(),
            ));
        }
        let mut sow_query = statecast_sow::Query::all().with_skip_n(skip_n);
        sow_query.filter = filter;
        sow_query.order_by = order_by;
        if let Some(top_n) = query.top_n {
            sow_query = sow_query.with_top_n(usize::try_from(top_n).unwrap_or(usize::MAX));
        }
        if let Some(keys) = &query.sow_keys {
            sow_query = sow_query.with_keys(keys.iter().map(statecast_sow::SowKey).collect());
        }
        Ok((
            targets,
            SowRequest {
                sub_id: query.sub_id,
                command_id: query.command_id,
                topic,
                query: sow_query,
                count_only,
                subscribe,
                batch_size,
                records: std::sync::atomic::AtomicU64::new(0),
                failure: std::sync::Mutex::new(None),
            },
        ))
    }

    fn sow_delete(&mut self, delete: SowDeleteCommand, out: &mut Vec<Action>) {
        let command_id = delete.command_id;
        let ack = if delete.ack.is_empty() {
            AckSet::only(AckType::Processed)
        } else {
            delete.ack
        };
        match self.delete_selector(&delete) {
            Err((code, text)) => {
                for ack_type in requested(ack) {
                    out.push(Action::Reply(Command::Ack(Ack::failure(
                        ack_type,
                        Some(command_id),
                        code,
                        text.as_str(),
                    ))));
                }
            }
            Ok(selector) => out.push(Action::SowDelete {
                processor: processor_for(delete.topic.as_bytes(), self.limits.processors),
                topic: delete.topic,
                selector,
                command_id,
                ack,
            }),
        }
    }

    fn delete_selector(&self, delete: &SowDeleteCommand) -> Result<DeleteSelector, Refusal> {
        self.check_topic_len(&delete.topic)?;
        if !self.limits.is_sow_topic(delete.topic.as_str()) {
            return Err((
                ReasonCode::NotASowTopic,
                format!(
                    "`{}` has no SOW (no sow.topics entry covers it)",
                    delete.topic
                ),
            ));
        }
        let given = usize::from(delete.filter.is_some())
            + usize::from(delete.sow_keys.is_some())
            + usize::from(!delete.payload.is_empty());
        if given != 1 {
            return Err((
                ReasonCode::InvalidField,
                format!(
                    "a sow_delete names its records one way: a filter, sow_keys, or an example message as payload (this one gives {given})"
                ),
            ));
        }
        // A delete is replayed from the journal at start: its filter must
        // give the same answer then.
        let limits = statecast_filter::Limits {
            allow_nondeterministic: false,
            ..self.limits.filter.clone()
        };
        if let Some(filter) = self.parse_filter(delete.filter.as_ref(), &limits)? {
            return Ok(DeleteSelector::Filter(filter));
        }
        if let Some(keys) = &delete.sow_keys {
            return Ok(DeleteSelector::Keys(keys.iter().collect()));
        }
        Ok(DeleteSelector::Example(delete.payload.clone()))
    }

    /// Checks timers. `last_sent` is when the driver last wrote anything to
    /// the client (deliveries bypass the session, so the driver tracks it).
    pub fn on_tick(&mut self, now: Instant, last_sent: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Closed => {}
            State::AwaitingLogon { deadline } => {
                if now >= deadline {
                    let text = format!(
                        "no logon within {} ms (connections.logon_timeout_ms)",
                        self.limits.logon_timeout.as_millis()
                    );
                    self.close(ReasonCode::LogonTimeout, text, None, out);
                }
            }
            State::Active => {
                let silent = now.saturating_duration_since(self.last_received);
                if silent > self.heartbeat * 2 {
                    let text = format!(
                        "nothing received for {} ms, more than two heartbeat intervals of {} ms",
                        silent.as_millis(),
                        self.heartbeat.as_millis()
                    );
                    self.close(ReasonCode::HeartbeatTimeout, text, None, out);
                } else if now.saturating_duration_since(last_sent) >= self.heartbeat {
                    out.push(Action::Reply(Command::Heartbeat(Heartbeat)));
                }
            }
        }
    }
}

/// The comma-separated items of an `options` field, trimmed.
fn options(field: Option<&Utf8>) -> impl Iterator<Item = &str> {
    field.map_or("", Utf8::as_str).split(',').map(str::trim)
}

/// The ack types in a set, in the order acks are sent.
pub fn requested(set: AckSet) -> impl Iterator<Item = AckType> {
    [AckType::Processed, AckType::Persisted, AckType::Completed]
        .into_iter()
        .filter(move |ack| set.contains(*ack))
}

fn reason_for(error: &DecodeError) -> ReasonCode {
    match error {
        DecodeError::FrameTooLarge { .. } => ReasonCode::FrameTooLarge,
        DecodeError::UnsupportedVersion { .. } => ReasonCode::UnsupportedVersion,
        DecodeError::UnknownCommand(_) | DecodeError::UnsupportedCommand { .. } => {
            ReasonCode::UnknownCommand
        }
        DecodeError::MissingField { .. } => ReasonCode::MissingField,
        DecodeError::InvalidField { .. } | DecodeError::DuplicateField { .. } => {
            ReasonCode::InvalidField
        }
        _ => ReasonCode::MalformedFrame,
    }
}

/// The command id of a frame whose command did not decode, when it has a
/// well-formed one, so the failure ack can name the command.
fn command_id_of(frame: &Frame) -> Option<u64> {
    statecast_protocol::FieldIter::new(&frame.fields)
        .map_while(Result::ok)
        .find(|field| field.tag == statecast_protocol::FieldTag::CommandId as u8)
        .and_then(|field| <[u8; 8]>::try_from(field.value).ok())
        .map(u64::from_le_bytes)
}
