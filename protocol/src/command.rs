//! The command set: typed views of frames, decoded without copying and
//! encoded into a caller's buffer.

use bytes::{BufMut, Bytes};

use crate::batch::{SowBatch, sow_batch_fields_len, write_sow_batch_fields};
use crate::error::{DecodeError, EncodeError};
use crate::field::{FieldIter, FieldTag, FieldWriter, check_value_len, fixed_len};
use crate::field::{read_u8, read_u16, read_u32, read_u64};
use crate::frame::{Frame, FrameHeader};
use crate::reason::ReasonCode;

/// Command codes. Codes 0x13–0x15 are reserved for the delta and OOF
/// commands of later versions; 0x00 and everything else is unassigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CommandCode {
    /// Client → broker: identify the connection. Must be first.
    Logon = 0x01,
    /// Either way: liveness.
    Heartbeat = 0x02,
    /// Client → broker: a message for a topic.
    Publish = 0x03,
    /// Client → broker: start a subscription.
    Subscribe = 0x04,
    /// Client → broker: end one or all subscriptions.
    Unsubscribe = 0x05,
    /// Broker → client: the outcome of a command.
    Ack = 0x06,
    /// Broker → client: a message matching subscriptions.
    Deliver = 0x07,
    /// Client → broker: a barrier acked once everything sent before it is processed.
    Flush = 0x08,
    /// Client → broker: query a SOW topic's current records.
    Sow = 0x10,
    /// Client → broker: query a SOW topic and subscribe to it atomically.
    SowAndSubscribe = 0x11,
    /// Client → broker: delete SOW records.
    SowDelete = 0x12,
    /// Broker → client: the records of a query follow.
    GroupBegin = 0x16,
    /// Broker → client: the records of a query are complete.
    GroupEnd = 0x17,
    /// Broker → client: several records of a query in one frame.
    SowBatch = 0x18,
}

/// Reserved command codes and their future names.
const RESERVED: &[(u8, &str)] = &[
    (0x13, "delta_publish"),
    (0x14, "delta_subscribe"),
    (0x15, "oof"),
];

impl CommandCode {
    /// The code for a wire value.
    ///
    /// # Errors
    /// [`DecodeError::UnsupportedCommand`] for reserved codes,
    /// [`DecodeError::UnknownCommand`] for the rest.
    pub fn from_u8(code: u8) -> Result<Self, DecodeError> {
        Ok(match code {
            0x01 => Self::Logon,
            0x02 => Self::Heartbeat,
            0x03 => Self::Publish,
            0x04 => Self::Subscribe,
            0x05 => Self::Unsubscribe,
            0x06 => Self::Ack,
            0x07 => Self::Deliver,
            0x08 => Self::Flush,
            0x10 => Self::Sow,
            0x11 => Self::SowAndSubscribe,
            0x12 => Self::SowDelete,
            0x16 => Self::GroupBegin,
            0x17 => Self::GroupEnd,
            0x18 => Self::SowBatch,
            _ => {
                return Err(match RESERVED.iter().find(|(c, _)| *c == code) {
                    Some((_, name)) => DecodeError::UnsupportedCommand { code, name },
                    None => DecodeError::UnknownCommand(code),
                });
            }
        })
    }

    /// The command's name as SPEC.md spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Logon => "logon",
            Self::Heartbeat => "heartbeat",
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Ack => "ack",
            Self::Deliver => "deliver",
            Self::Flush => "flush",
            Self::Sow => "sow",
            Self::SowAndSubscribe => "sow_and_subscribe",
            Self::SowDelete => "sow_delete",
            Self::GroupBegin => "group_begin",
            Self::GroupEnd => "group_end",
            Self::SowBatch => "sow_batch",
        }
    }
}

/// Validated UTF-8 text that shares the receive buffer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Utf8(Bytes);

impl Utf8 {
    /// Wraps `bytes` after checking that they are UTF-8.
    ///
    /// # Errors
    /// The UTF-8 error when they are not.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        check_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// Copies a string (for senders).
    #[must_use]
    pub fn from_string(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Wraps a static string without copying.
    #[must_use]
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// The text. (Checked again: cheap for the short strings headers hold,
    /// and it keeps this crate free of `unsafe`.)
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared buffer.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks that `bytes` are UTF-8: ASCII (what topics and names nearly
/// always are) by the word-at-a-time ASCII test, which costs a fraction of
/// the general validation on short strings; anything else by the general
/// validation (ASCII is a subset of UTF-8, so the answer is the same).
fn check_utf8(bytes: &[u8]) -> Result<(), std::str::Utf8Error> {
    if bytes.is_ascii() {
        return Ok(());
    }
    std::str::from_utf8(bytes).map(drop)
}

impl std::fmt::Debug for Utf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Utf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Utf8 {
    fn from(text: &str) -> Self {
        Self::from_string(text)
    }
}

impl From<String> for Utf8 {
    fn from(text: String) -> Self {
        Self(Bytes::from(text.into_bytes()))
    }
}

/// One ack type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AckType {
    /// The broker has taken the command.
    Processed = 1,
    /// The command is on disk and will survive a crash.
    Persisted = 2,
    /// The command has finished (e.g. a bounded replay or query).
    Completed = 4,
}

impl AckType {
    fn from_u8(value: u8) -> Result<Self, DecodeError> {
        match value {
            1 => Ok(Self::Processed),
            2 => Ok(Self::Persisted),
            4 => Ok(Self::Completed),
            _ => Err(DecodeError::InvalidField {
                field: "ack_type",
                reason: "an ack carries exactly one of 1 (processed), 2 (persisted), 4 (completed)",
            }),
        }
    }

    /// The ack type's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Persisted => "persisted",
            Self::Completed => "completed",
        }
    }
}

/// A set of ack types a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AckSet(u8);

impl AckSet {
    /// No acks.
    pub const NONE: Self = Self(0);
    /// Every ack type this version defines.
    const KNOWN: u8 = 1 | 2 | 4;

    /// A set holding one ack type.
    #[must_use]
    pub const fn only(ack: AckType) -> Self {
        Self(ack as u8)
    }

    /// This set plus `ack`.
    #[must_use]
    pub const fn with(self, ack: AckType) -> Self {
        Self(self.0 | ack as u8)
    }

    /// Whether `ack` is in the set.
    #[must_use]
    pub const fn contains(self, ack: AckType) -> bool {
        self.0 & ack as u8 != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The wire value.
    #[must_use]
    pub const fn bits(self) -> u8 {
        self.0
    }

    fn from_u8(value: u8) -> Result<Self, DecodeError> {
        if value & !Self::KNOWN != 0 {
            return Err(DecodeError::InvalidField {
                field: "ack_type",
                reason: "a request's ack set may only combine 1 (processed), 2 (persisted), 4 (completed)",
            });
        }
        Ok(Self(value))
    }
}

/// An ack's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The command succeeded.
    Success = 0,
    /// The command failed; the reason code says why.
    Failure = 1,
}

/// `logon`: the first command on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logon {
    /// Echoed on the logon ack.
    pub command_id: Option<u64>,
    /// The client's name: non-empty, unique per publisher once the journal's
    /// de-duplication is on.
    pub client_name: Utf8,
    /// Reserved for authentication; this version ignores it.
    pub credentials: Option<Bytes>,
    /// The heartbeat interval the client asks for, in ms (0 = none).
    pub heartbeat_ms: Option<u32>,
}

/// `heartbeat`: sent by either side after a heartbeat interval with nothing else sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat;

/// `publish`: a message for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Required when acks are requested; echoed on them.
    pub command_id: Option<u64>,
    /// The topic (literal; never a pattern).
    pub topic: Utf8,
    /// Acks wanted.
    pub ack: AckSet,
    /// Publisher sequence number (for de-duplication).
    pub sequence: Option<u64>,
    /// The record's key on a SOW topic without key fields.
    pub sow_key: Option<Bytes>,
    /// The message body, opaque to the protocol.
    pub payload: Bytes,
}

/// `subscribe`: start receiving a topic's (or a topic pattern's) messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Echoed on the ack.
    pub command_id: Option<u64>,
    /// Chosen by the client, unique on its connection.
    pub sub_id: u64,
    /// A topic, or a regular expression over topics (see SPEC.md).
    pub topic: Utf8,
    /// A content filter expression.
    pub filter: Option<Utf8>,
    /// Comma-separated options.
    pub options: Option<Utf8>,
    /// Where to start in the journal (`epoch`, a bookmark, a timestamp, a
    /// range); absent means live messages only.
    pub bookmark: Option<Utf8>,
}

/// `unsubscribe`: end one subscription, or all of the connection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Echoed on the ack.
    pub command_id: Option<u64>,
    /// The subscription to end; `None` ends all of them.
    pub sub_id: Option<u64>,
}

/// `sow` and `sow_and_subscribe`: a query of SOW records (and, for
/// `sow_and_subscribe`, a subscription that starts exactly where the
/// query's snapshot ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SowQuery {
    /// Echoed on the ack and the group frames.
    pub command_id: Option<u64>,
    /// Chosen by the client: names the query's group and records (and the
    /// subscription of a `sow_and_subscribe`).
    pub sub_id: u64,
    /// A SOW topic, or a regular expression over topics.
    pub topic: Utf8,
    /// A content filter expression.
    pub filter: Option<Utf8>,
    /// Comma-separated options.
    pub options: Option<Utf8>,
    /// Sort order: `/path [ASC|DESC]`, comma-separated.
    pub order_by: Option<Utf8>,
    /// At most this many records.
    pub top_n: Option<u64>,
    /// Skip this many matching records first.
    pub skip_n: Option<u64>,
    /// Only these SowKeys.
    pub sow_keys: Option<SubIds>,
    /// The most records one frame of the answer carries: absent or 1, one
    /// `deliver` per record; above 1, `sow_batch` frames of up to this
    /// many (at most [`crate::SOW_BATCH_SIZE_MAX`]).
    pub batch_size: Option<u32>,
}

/// `sow_delete`: remove records of one SOW topic, chosen by a filter, by
/// SowKeys, or by an example message (the payload) whose key is computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SowDelete {
    /// Echoed on the ack, which carries the count deleted.
    pub command_id: u64,
    /// The SOW topic (literal).
    pub topic: Utf8,
    /// Delete the records matching this filter (`1=1`: all).
    pub filter: Option<Utf8>,
    /// Delete the records with these keys.
    pub sow_keys: Option<SubIds>,
    /// Acks wanted (processed when empty).
    pub ack: AckSet,
    /// An example message: delete the record with its key.
    pub payload: Bytes,
}

/// `group_begin`: the records of query `sub_id` follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBegin {
    /// The query's command id.
    pub command_id: Option<u64>,
    /// The query's id.
    pub sub_id: u64,
}

/// `group_end`: every record of query `sub_id` has been sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEnd {
    /// The query's command id.
    pub command_id: Option<u64>,
    /// The query's id.
    pub sub_id: u64,
    /// Records sent (for a `count_only` query: records matching).
    pub records: u64,
    /// Failure when the query stopped early (the records sent stand).
    pub status: Status,
    /// Why it failed.
    pub reason_code: ReasonCode,
    /// Human-readable reason.
    pub reason: Option<Utf8>,
}

/// `flush`: acked (processed) once every command sent before it on this
/// connection has been processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flush {
    /// Echoed on the ack.
    pub command_id: u64,
}

/// `ack`: the outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The command this ack answers, when it had one.
    pub command_id: Option<u64>,
    /// Which ack this is.
    pub ack_type: AckType,
    /// Success or failure.
    pub status: Status,
    /// Why it failed ([`ReasonCode::None`] on success).
    pub reason_code: ReasonCode,
    /// Human-readable reason.
    pub reason: Option<Utf8>,
    /// The subscription a subscribe or unsubscribe ack is about.
    pub sub_id: Option<u64>,
    /// Publisher sequence number.
    pub sequence: Option<u64>,
    /// Journal position.
    pub bookmark: Option<u64>,
    /// Logon ack: the client's name.
    pub client_name: Option<Utf8>,
    /// Logon ack: the heartbeat interval in force, in ms.
    pub heartbeat_ms: Option<u32>,
    /// Logon ack: the largest frame the broker accepts.
    pub max_frame_bytes: Option<u32>,
    /// Logon ack: the broker's version.
    pub server_version: Option<Utf8>,
    /// A `sow_delete` ack: records deleted.
    pub records: Option<u64>,
}

impl Ack {
    /// A success ack with no extras.
    #[must_use]
    pub fn success(ack_type: AckType, command_id: Option<u64>) -> Self {
        Self {
            command_id,
            ack_type,
            status: Status::Success,
            reason_code: ReasonCode::None,
            reason: None,
            sub_id: None,
            sequence: None,
            bookmark: None,
            client_name: None,
            heartbeat_ms: None,
            max_frame_bytes: None,
            server_version: None,
            records: None,
        }
    }

    /// A failure ack.
    #[must_use]
    pub fn failure(
        ack_type: AckType,
        command_id: Option<u64>,
        reason_code: ReasonCode,
        reason: impl Into<Utf8>,
    ) -> Self {
        Self {
            status: Status::Failure,
            reason_code,
            reason: Some(reason.into()),
            ..Self::success(ack_type, command_id)
        }
    }
}

/// The subscription ids of a delivery: little-endian `u64`s sharing the receive buffer.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SubIds(Bytes);

impl SubIds {
    /// Encodes ids (for senders and tests).
    #[must_use]
    pub fn from_ids(ids: &[u64]) -> Self {
        let mut bytes = Vec::with_capacity(ids.len() * 8);
        for id in ids {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        Self(Bytes::from(bytes))
    }

    /// Number of ids.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len() / 8
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.chunks_exact(8).map(|chunk| {
            let mut id = [0u8; 8];
            id.copy_from_slice(chunk);
            u64::from_le_bytes(id)
        })
    }

    /// The first id.
    #[must_use]
    pub fn first(&self) -> Option<u64> {
        self.iter().next()
    }

    /// The raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SubIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// `deliver`: a message sent to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The message's topic.
    pub topic: Utf8,
    /// Every subscription of this connection that the message matches.
    pub sub_ids: SubIds,
    /// Journal position, when the topic is journaled.
    pub bookmark: Option<u64>,
    /// When the broker took the message, ns since the Unix epoch.
    pub timestamp: u64,
    /// Set on the records of a SOW query (and only there): the record's key.
    pub sow_key: Option<u64>,
    /// The message body.
    pub payload: Bytes,
}

/// Any command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// See [`Logon`].
    Logon(Logon),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`Publish`].
    Publish(Publish),
    /// See [`Subscribe`].
    Subscribe(Subscribe),
    /// See [`Unsubscribe`].
    Unsubscribe(Unsubscribe),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Deliver`].
    Deliver(Deliver),
    /// See [`Flush`].
    Flush(Flush),
    /// A SOW query; see [`SowQuery`].
    Sow(SowQuery),
    /// A SOW query and subscription; see [`SowQuery`].
    SowAndSubscribe(SowQuery),
    /// See [`SowDelete`].
    SowDelete(SowDelete),
    /// See [`GroupBegin`].
    GroupBegin(GroupBegin),
    /// See [`GroupEnd`].
    GroupEnd(GroupEnd),
    /// See [`SowBatch`].
    SowBatch(SowBatch),
}

/// Decodes the `deliver` frames of one connection as [`Command::decode`]
/// does — the same [`Deliver`] for the same frame, the same errors — but
/// taking the frame by value (its buffers become the delivery's, without
/// a reference count to raise or drop), and remembering the last topic it
/// found valid UTF-8, so that deliveries on the topic of the one before
/// (nearly all, on most connections) compare its bytes instead of
/// validating them again.
#[derive(Debug, Clone, Default)]
pub struct DeliverDecoder {
    /// The last topic validated: the bytes are UTF-8 (empty before the
    /// first, and a deliver's topic is never empty).
    last_topic: Vec<u8>,
}

/// What [`DeliverDecoder::decode`] made of a frame.
#[derive(Debug)]
pub enum Decoded {
    /// A `deliver` frame's command.
    Deliver(Deliver),
    /// Any other frame, untouched, for [`Command::decode`].
    Other(Frame),
}

impl DeliverDecoder {
    /// A decoder that has seen no topic yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `frame` when it is a `deliver`, exactly as
    /// [`Command::decode`] would (`Command::Deliver` of the same value);
    /// hands any other frame back.
    ///
    /// # Errors
    /// The error [`Command::decode`] gives for the same `deliver` frame.
    pub fn decode(&mut self, frame: Frame) -> Result<Decoded, DecodeError> {
        if frame.command != CommandCode::Deliver as u8 {
            return Ok(Decoded::Other(frame));
        }
        let parts = DeliverParts::parse(&frame, Some(&mut self.last_topic))?;
        let sub_ids = parts.sub_ids(&frame.fields);
        // The fields area, narrowed in place to the topic.
        let mut topic = frame.fields;
        topic.truncate(parts.topic.end);
        bytes::Buf::advance(&mut topic, parts.topic.start);
        Ok(Decoded::Deliver(Deliver {
            // Checked by `parse` (or equal to bytes that were).
            topic: Utf8(topic),
            sub_ids,
            bookmark: parts.bookmark,
            timestamp: parts.timestamp,
            sow_key: parts.sow_key,
            payload: frame.payload,
        }))
    }
}

/// Field tags are below 64: a `u64` of flags marks those seen.
const _: () = assert!((FieldTag::BatchSize as u8) < 64);

/// The sub ids up to this one are shared static buffers when a delivery
/// names just one of them: a client numbers its subscriptions from 1, so
/// nearly every delivery does, and its `SubIds` then costs no reference
/// count (the bytes are the same).
const STATIC_SUB_IDS: usize = 256;

static SMALL_SUB_IDS: [[u8; 8]; STATIC_SUB_IDS] = {
    let mut ids = [[0u8; 8]; STATIC_SUB_IDS];
    let mut rest: &mut [[u8; 8]] = &mut ids;
    let mut id = 0u64;
    while let Some((first, tail)) = rest.split_first_mut() {
        *first = id.to_le_bytes();
        id += 1;
        rest = tail;
    }
    ids
};

/// A deliver frame's fields, checked: where the topic and sub ids are in
/// the fields area, and the numbers.
struct DeliverParts {
    topic: std::ops::Range<usize>,
    sub_ids: std::ops::Range<usize>,
    bookmark: Option<u64>,
    timestamp: u64,
    sow_key: Option<u64>,
}

impl DeliverParts {
    /// Reads a deliver frame's fields with the rules of [`RawFields`]
    /// (unknown tags skipped, a known tag at most once, required fields
    /// present and well-formed), reading only the four it uses. With
    /// `last_topic`, a topic equal to it is known to be UTF-8, and a topic
    /// validated here replaces it.
    fn parse(frame: &Frame, last_topic: Option<&mut Vec<u8>>) -> Result<Self, DecodeError> {
        Self::parse_with(frame, last_topic, true)
    }

    /// [`Self::parse`], trying the broker's layout first or not (the tests
    /// check that both ways agree).
    fn parse_with(
        frame: &Frame,
        last_topic: Option<&mut Vec<u8>>,
        layout_first: bool,
    ) -> Result<Self, DecodeError> {
        let canonical = if layout_first {
            Self::canonical(&frame.fields)
        } else {
            None
        };
        let fields = match canonical {
            Some(fields) => fields,
            None => Self::any_order(&frame.fields)?,
        };
        match last_topic {
            Some(last) if same_bytes(last, fields.topic) => {}
            last => {
                check_utf8(fields.topic).map_err(|_| DecodeError::InvalidField {
                    field: "topic",
                    reason: "not valid UTF-8",
                })?;
                if let Some(last) = last {
                    last.clear();
                    last.extend_from_slice(fields.topic);
                }
            }
        }
        Ok(Self {
            topic: within(&frame.fields, fields.topic),
            sub_ids: within(&frame.fields, fields.sub_ids),
            bookmark: fields.bookmark,
            timestamp: fields.timestamp.ok_or(DecodeError::MissingField {
                command: "deliver",
                field: FieldTag::Timestamp.name(),
            })?,
            sow_key: fields.sow_key,
        })
    }

    /// The fields as the broker writes them (`encode_record_header`): topic,
    /// sub ids, bookmark (optional), timestamp, SowKey (optional), each
    /// well-formed, nothing else. `None` for any other layout, which
    /// [`Self::any_order`] reads (and finds the same values in, or the
    /// error): for these bytes it could only fail on the topic's UTF-8,
    /// which [`Self::parse`] checks after either.
    fn canonical(fields: &[u8]) -> Option<DeliverFields<'_>> {
        fn field(fields: &[u8], tag: FieldTag) -> Option<(&[u8], &[u8])> {
            let (&[found, len_lo, len_hi], rest) = fields.split_first_chunk::<3>()?;
            if found != tag as u8 {
                return None;
            }
            rest.split_at_checked(usize::from(u16::from_le_bytes([len_lo, len_hi])))
        }
        fn number(value: &[u8]) -> Option<u64> {
            <[u8; 8]>::try_from(value).ok().map(u64::from_le_bytes)
        }
        let (topic, rest) = field(fields, FieldTag::Topic)?;
        let (sub_ids, mut rest) = field(rest, FieldTag::SubIds)?;
        if topic.is_empty() || sub_ids.len() % 8 != 0 {
            return None;
        }
        let mut bookmark = None;
        if let Some((value, after)) = field(rest, FieldTag::Bookmark) {
            bookmark = Some(number(value)?);
            rest = after;
        }
        let (value, mut rest) = field(rest, FieldTag::Timestamp)?;
        let timestamp = number(value)?;
        let mut sow_key = None;
        if let Some((value, after)) = field(rest, FieldTag::SowKeys) {
            sow_key = Some(number(value)?);
            rest = after;
        }
        rest.is_empty().then_some(DeliverFields {
            topic,
            sub_ids,
            bookmark,
            timestamp: Some(timestamp),
            sow_key,
        })
    }

    /// The fields in any order, with the rules of [`RawFields`] (unknown
    /// tags skipped, a known tag at most once, required fields present and
    /// well-formed), reading only the five it uses; all but the topic's
    /// UTF-8 and the timestamp's presence checked, in the generic
    /// decoder's order ([`Self::parse`] does those two, in that order).
    fn any_order(fields: &[u8]) -> Result<DeliverFields<'_>, DecodeError> {
        // Tags are below 64 (a u64 of flags, no table to clear).
        let mut seen = 0u64;
        let (mut topic, mut sub_ids, mut bookmark, mut timestamp) = (None, None, None, None);
        let mut sow_key = None;
        for field in FieldIter::new(fields) {
            let field = field?;
            let Some(tag) = FieldTag::from_u8(field.tag) else {
                continue;
            };
            let bit = 1u64 << (tag as u32 % 64);
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateField { field: tag.name() });
            }
            seen |= bit;
            match tag {
                FieldTag::Topic => topic = Some(field.value),
                FieldTag::SubIds => sub_ids = Some(field.value),
                FieldTag::Bookmark => bookmark = Some(read_u64(tag, field.value)?),
                FieldTag::Timestamp => timestamp = Some(read_u64(tag, field.value)?),
                FieldTag::SowKeys => sow_key = Some(read_u64(tag, field.value)?),
                _ => {}
            }
        }
        let missing = |field: FieldTag| DecodeError::MissingField {
            command: "deliver",
            field: field.name(),
        };
        let sub_ids = sub_ids.ok_or_else(|| missing(FieldTag::SubIds))?;
        if sub_ids.len() % 8 != 0 {
            return Err(DecodeError::InvalidField {
                field: "sub_ids",
                reason: "length must be a multiple of 8",
            });
        }
        let topic = topic.ok_or_else(|| missing(FieldTag::Topic))?;
        if topic.is_empty() {
            return Err(DecodeError::InvalidField {
                field: "topic",
                reason: "must not be empty",
            });
        }
        Ok(DeliverFields {
            topic,
            sub_ids,
            bookmark,
            timestamp,
            sow_key,
        })
    }

    /// The sub ids, sharing `fields` (or a static buffer of the same bytes).
    fn sub_ids(&self, fields: &Bytes) -> SubIds {
        let one = fields
            .get(self.sub_ids.clone())
            .and_then(|ids| <[u8; 8]>::try_from(ids).ok())
            .and_then(|id| usize::try_from(u64::from_le_bytes(id)).ok())
            .and_then(|id| SMALL_SUB_IDS.get(id));
        match one {
            Some(id) => SubIds(Bytes::from_static(id)),
            None => SubIds(fields.slice(self.sub_ids.clone())),
        }
    }
}

/// A deliver frame's fields, found (the topic not yet checked for UTF-8,
/// the timestamp not yet for presence).
struct DeliverFields<'a> {
    topic: &'a [u8],
    sub_ids: &'a [u8],
    bookmark: Option<u64>,
    timestamp: Option<u64>,
    sow_key: Option<u64>,
}

/// Whether two byte strings are equal: from 8 to 16 bytes (most topics)
/// as two overlapping 8-byte words, without a call to `memcmp`.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (a.first_chunk::<8>(), a.last_chunk::<8>()) {
        (Some(a_first), Some(a_last)) if a.len() <= 16 => {
            b.first_chunk::<8>() == Some(a_first) && b.last_chunk::<8>() == Some(a_last)
        }
        _ => a == b,
    }
}

/// Where `part`, a slice of `whole`, lies in it.
fn within(whole: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

impl Publish {
    /// Decodes a publish frame's fields with the rules of [`RawFields`]
    /// (unknown tags skipped, a known tag at most once, then each field
    /// checked in the generic decoder's order), reading only the five it
    /// uses.
    fn decode_fields(frame: &Frame) -> Result<Self, DecodeError> {
        let mut seen = 0u64;
        let (mut command_id, mut topic, mut ack, mut sequence, mut sow_key) =
            (None, None, None, None, None);
        for field in FieldIter::new(&frame.fields) {
            let field = field?;
            let Some(tag) = FieldTag::from_u8(field.tag) else {
                continue;
            };
            let bit = 1u64 << (tag as u32 % 64);
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateField { field: tag.name() });
            }
            seen |= bit;
            match tag {
                FieldTag::CommandId => command_id = Some(field.value),
                FieldTag::Topic => topic = Some(field.value),
                FieldTag::AckType => ack = Some(field.value),
                FieldTag::Sequence => sequence = Some(field.value),
                FieldTag::SowKey => sow_key = Some(field.value),
                _ => {}
            }
        }
        let command_id = command_id
            .map(|v| read_u64(FieldTag::CommandId, v))
            .transpose()?;
        let ack = ack
            .map(|v| read_u8(FieldTag::AckType, v))
            .transpose()?
            .map(AckSet::from_u8)
            .transpose()?
            .unwrap_or_default();
        if !ack.is_empty() && command_id.is_none() {
            return Err(DecodeError::MissingField {
                command: "publish",
                field: "command_id",
            });
        }
        let Some(topic) = topic else {
            return Err(DecodeError::MissingField {
                command: "publish",
                field: FieldTag::Topic.name(),
            });
        };
        check_utf8(topic).map_err(|_| DecodeError::InvalidField {
            field: FieldTag::Topic.name(),
            reason: "not valid UTF-8",
        })?;
        if topic.is_empty() {
            return Err(DecodeError::InvalidField {
                field: FieldTag::Topic.name(),
                reason: "must not be empty",
            });
        }
        let sequence = sequence
            .map(|v| read_u64(FieldTag::Sequence, v))
            .transpose()?;
        Ok(Self {
            command_id,
            // Checked above.
            topic: Utf8(frame.fields.slice(within(&frame.fields, topic))),
            ack,
            sequence,
            sow_key: sow_key.map(|key| frame.fields.slice(within(&frame.fields, key))),
            payload: frame.payload.clone(),
        })
    }
}

impl Deliver {
    /// Decodes a deliver frame's fields (see [`DeliverParts::parse`]).
    fn decode_fields(frame: &Frame) -> Result<Self, DecodeError> {
        let parts = DeliverParts::parse(frame, None)?;
        Ok(Self {
            // Checked by `parse`.
            topic: Utf8(frame.fields.slice(parts.topic.clone())),
            sub_ids: parts.sub_ids(&frame.fields),
            bookmark: parts.bookmark,
            timestamp: parts.timestamp,
            sow_key: parts.sow_key,
            payload: frame.payload.clone(),
        })
    }
}

/// The known fields of one frame, each at most once.
struct RawFields<'a> {
    fields: &'a Bytes,
    values: [Option<&'a [u8]>; 27],
    command: &'static str,
}

impl<'a> RawFields<'a> {
    fn collect(fields: &'a Bytes, command: &'static str) -> Result<Self, DecodeError> {
        let mut values: [Option<&'a [u8]>; 27] = [None; 27];
        for field in FieldIter::new(fields) {
            let field = field?;
            let Some(tag) = FieldTag::from_u8(field.tag) else {
                continue; // Unknown fields are skipped: forward compatibility.
            };
            let Some(slot) = values.get_mut(tag as usize) else {
                continue;
            };
            if slot.is_some() {
                return Err(DecodeError::DuplicateField { field: tag.name() });
            }
            *slot = Some(field.value);
        }
        Ok(Self {
            fields,
            values,
            command,
        })
    }

    fn raw(&self, tag: FieldTag) -> Option<&'a [u8]> {
        self.values.get(tag as usize).copied().flatten()
    }

    fn required<T>(&self, tag: FieldTag, value: Option<T>) -> Result<T, DecodeError> {
        value.ok_or(DecodeError::MissingField {
            command: self.command,
            field: tag.name(),
        })
    }

    fn u64(&self, tag: FieldTag) -> Result<Option<u64>, DecodeError> {
        self.raw(tag).map(|v| read_u64(tag, v)).transpose()
    }

    fn u32(&self, tag: FieldTag) -> Result<Option<u32>, DecodeError> {
        self.raw(tag).map(|v| read_u32(tag, v)).transpose()
    }

    fn u16(&self, tag: FieldTag) -> Result<Option<u16>, DecodeError> {
        self.raw(tag).map(|v| read_u16(tag, v)).transpose()
    }

    fn u8(&self, tag: FieldTag) -> Result<Option<u8>, DecodeError> {
        self.raw(tag).map(|v| read_u8(tag, v)).transpose()
    }

    fn bytes(&self, tag: FieldTag) -> Option<Bytes> {
        self.raw(tag).map(|v| self.fields.slice_ref(v))
    }

    fn utf8(&self, tag: FieldTag) -> Result<Option<Utf8>, DecodeError> {
        self.bytes(tag)
            .map(|b| {
                Utf8::from_bytes(b).map_err(|_| DecodeError::InvalidField {
                    field: tag.name(),
                    reason: "not valid UTF-8",
                })
            })
            .transpose()
    }

    fn u64_list(&self, tag: FieldTag) -> Result<Option<SubIds>, DecodeError> {
        match self.bytes(tag) {
            Some(bytes) if bytes.len() % 8 != 0 => Err(DecodeError::InvalidField {
                field: tag.name(),
                reason: "length must be a multiple of 8",
            }),
            other => Ok(other.map(SubIds)),
        }
    }

    fn ack_set(&self) -> Result<AckSet, DecodeError> {
        Ok(self
            .u8(FieldTag::AckType)?
            .map(AckSet::from_u8)
            .transpose()?
            .unwrap_or_default())
    }

    fn status(&self, required: bool) -> Result<Status, DecodeError> {
        let status = match self.u8(FieldTag::Status)? {
            Some(status) => status,
            None if required => {
                return Err(DecodeError::MissingField {
                    command: self.command,
                    field: "status",
                });
            }
            None => 0,
        };
        match status {
            0 => Ok(Status::Success),
            1 => Ok(Status::Failure),
            _ => Err(DecodeError::InvalidField {
                field: "status",
                reason: "expected 0 (success) or 1 (failure)",
            }),
        }
    }

    fn sow_query(&self) -> Result<SowQuery, DecodeError> {
        Ok(SowQuery {
            command_id: self.u64(FieldTag::CommandId)?,
            sub_id: self.required(FieldTag::SubId, self.u64(FieldTag::SubId)?)?,
            topic: self.non_empty_utf8(FieldTag::Topic)?,
            filter: self.utf8(FieldTag::Filter)?,
            options: self.utf8(FieldTag::Options)?,
            order_by: self.utf8(FieldTag::OrderBy)?,
            top_n: self.u64(FieldTag::TopN)?,
            skip_n: self.u64(FieldTag::SkipN)?,
            sow_keys: self.u64_list(FieldTag::SowKeys)?,
            batch_size: self.u32(FieldTag::BatchSize)?,
        })
    }

    fn non_empty_utf8(&self, tag: FieldTag) -> Result<Utf8, DecodeError> {
        let text = self.required(tag, self.utf8(tag)?)?;
        if text.is_empty() {
            return Err(DecodeError::InvalidField {
                field: tag.name(),
                reason: "must not be empty",
            });
        }
        Ok(text)
    }
}

impl Command {
    /// The command's code.
    #[must_use]
    pub fn code(&self) -> CommandCode {
        match self {
            Self::Logon(_) => CommandCode::Logon,
            Self::Heartbeat(_) => CommandCode::Heartbeat,
            Self::Publish(_) => CommandCode::Publish,
            Self::Subscribe(_) => CommandCode::Subscribe,
            Self::Unsubscribe(_) => CommandCode::Unsubscribe,
            Self::Ack(_) => CommandCode::Ack,
            Self::Deliver(_) => CommandCode::Deliver,
            Self::Flush(_) => CommandCode::Flush,
            Self::Sow(_) => CommandCode::Sow,
            Self::SowAndSubscribe(_) => CommandCode::SowAndSubscribe,
            Self::SowDelete(_) => CommandCode::SowDelete,
            Self::GroupBegin(_) => CommandCode::GroupBegin,
            Self::GroupEnd(_) => CommandCode::GroupEnd,
            Self::SowBatch(_) => CommandCode::SowBatch,
        }
    }

    /// Decodes a frame's command. Fields and payload keep sharing the
    /// frame's buffer.
    ///
    /// # Errors
    /// Unknown or reserved command codes, missing or malformed fields.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let code = CommandCode::from_u8(frame.command)?;
        if code == CommandCode::Deliver {
            // The one command a subscriber decodes per message: its own
            // pass over the fields, same rules, none of the generic table.
            return Deliver::decode_fields(frame).map(Self::Deliver);
        }
        if code == CommandCode::Publish {
            // Likewise the one the broker decodes per message.
            return Publish::decode_fields(frame).map(Self::Publish);
        }
        let f = RawFields::collect(&frame.fields, code.name())?;
        Ok(match code {
            CommandCode::Logon => Self::Logon(Logon {
                command_id: f.u64(FieldTag::CommandId)?,
                client_name: f.non_empty_utf8(FieldTag::ClientName)?,
                credentials: f.bytes(FieldTag::Credentials),
                heartbeat_ms: f.u32(FieldTag::HeartbeatMs)?,
            }),
            CommandCode::Heartbeat => Self::Heartbeat(Heartbeat),
            CommandCode::Publish => Self::Publish(Publish::decode_fields(frame)?),
            CommandCode::Sow => Self::Sow(f.sow_query()?),
            CommandCode::SowAndSubscribe => Self::SowAndSubscribe(f.sow_query()?),
            CommandCode::SowDelete => Self::SowDelete(SowDelete {
                command_id: f.required(FieldTag::CommandId, f.u64(FieldTag::CommandId)?)?,
                topic: f.non_empty_utf8(FieldTag::Topic)?,
                filter: f.utf8(FieldTag::Filter)?,
                sow_keys: f.u64_list(FieldTag::SowKeys)?,
                ack: f.ack_set()?,
                payload: frame.payload.clone(),
            }),
            CommandCode::GroupBegin => Self::GroupBegin(GroupBegin {
                command_id: f.u64(FieldTag::CommandId)?,
                sub_id: f.required(FieldTag::SubId, f.u64(FieldTag::SubId)?)?,
            }),
            CommandCode::GroupEnd => Self::GroupEnd(GroupEnd {
                command_id: f.u64(FieldTag::CommandId)?,
                sub_id: f.required(FieldTag::SubId, f.u64(FieldTag::SubId)?)?,
                records: f.required(FieldTag::Records, f.u64(FieldTag::Records)?)?,
                status: f.status(false)?,
                reason_code: ReasonCode::from_code(f.u16(FieldTag::ReasonCode)?.unwrap_or(0)),
                reason: f.utf8(FieldTag::Reason)?,
            }),
            CommandCode::Subscribe => Self::Subscribe(Subscribe {
                command_id: f.u64(FieldTag::CommandId)?,
                sub_id: f.required(FieldTag::SubId, f.u64(FieldTag::SubId)?)?,
                topic: f.non_empty_utf8(FieldTag::Topic)?,
                filter: f.utf8(FieldTag::Filter)?,
                options: f.utf8(FieldTag::Options)?,
                bookmark: f.utf8(FieldTag::BookmarkSpec)?,
            }),
            CommandCode::Unsubscribe => Self::Unsubscribe(Unsubscribe {
                command_id: f.u64(FieldTag::CommandId)?,
                sub_id: f.u64(FieldTag::SubId)?,
            }),
            CommandCode::Flush => Self::Flush(Flush {
                command_id: f.required(FieldTag::CommandId, f.u64(FieldTag::CommandId)?)?,
            }),
            CommandCode::Ack => {
                let ack_type = f.required(FieldTag::AckType, f.u8(FieldTag::AckType)?)?;
                let status = f.status(true)?;
                Self::Ack(Ack {
                    command_id: f.u64(FieldTag::CommandId)?,
                    ack_type: AckType::from_u8(ack_type)?,
                    status,
                    reason_code: ReasonCode::from_code(f.u16(FieldTag::ReasonCode)?.unwrap_or(0)),
                    reason: f.utf8(FieldTag::Reason)?,
                    sub_id: f.u64(FieldTag::SubId)?,
                    sequence: f.u64(FieldTag::Sequence)?,
                    bookmark: f.u64(FieldTag::Bookmark)?,
                    client_name: f.utf8(FieldTag::ClientName)?,
                    heartbeat_ms: f.u32(FieldTag::HeartbeatMs)?,
                    max_frame_bytes: f.u32(FieldTag::MaxFrameBytes)?,
                    server_version: f.utf8(FieldTag::ServerVersion)?,
                    records: f.u64(FieldTag::Records)?,
                })
            }
            CommandCode::SowBatch => Self::SowBatch(SowBatch::from_parts(
                f.non_empty_utf8(FieldTag::Topic)?,
                f.required(FieldTag::SubId, f.u64(FieldTag::SubId)?)?,
                f.required(FieldTag::Records, f.u64(FieldTag::Records)?)?,
                frame.payload.clone(),
            )?),
            // Decoded above, without the generic table.
            CommandCode::Deliver => Self::Deliver(Deliver::decode_fields(frame)?),
        })
    }

    /// Bytes of header fields this command encodes to.
    fn fields_len(&self) -> Result<usize, EncodeError> {
        let opt_u64 = |v: Option<u64>| if v.is_some() { fixed_len(8) } else { 0 };
        let opt_u32 = |v: Option<u32>| if v.is_some() { fixed_len(4) } else { 0 };
        let opt_text =
            |tag: FieldTag, v: Option<&[u8]>| v.map_or(Ok(0), |v| check_value_len(tag, v.len()));
        Ok(match self {
            Self::Logon(c) => {
                opt_u64(c.command_id)
                    + check_value_len(FieldTag::ClientName, c.client_name.len())?
                    + opt_text(FieldTag::Credentials, c.credentials.as_deref())?
                    + opt_u32(c.heartbeat_ms)
            }
            Self::Heartbeat(_) => 0,
            Self::Publish(c) => {
                opt_u64(c.command_id)
                    + check_value_len(FieldTag::Topic, c.topic.len())?
                    + if c.ack.is_empty() { 0 } else { fixed_len(1) }
                    + opt_u64(c.sequence)
                    + opt_text(FieldTag::SowKey, c.sow_key.as_deref())?
            }
            Self::Sow(c) | Self::SowAndSubscribe(c) => {
                opt_u64(c.command_id)
                    + fixed_len(8)
                    + check_value_len(FieldTag::Topic, c.topic.len())?
                    + opt_text(FieldTag::Filter, c.filter.as_ref().map(Utf8::as_bytes))?
                    + opt_text(FieldTag::Options, c.options.as_ref().map(Utf8::as_bytes))?
                    + opt_text(FieldTag::OrderBy, c.order_by.as_ref().map(Utf8::as_bytes))?
                    + opt_u64(c.top_n)
                    + opt_u64(c.skip_n)
                    + opt_text(FieldTag::SowKeys, c.sow_keys.as_ref().map(SubIds::as_bytes))?
                    + opt_u32(c.batch_size)
            }
            Self::SowDelete(c) => {
                fixed_len(8)
                    + check_value_len(FieldTag::Topic, c.topic.len())?
                    + opt_text(FieldTag::Filter, c.filter.as_ref().map(Utf8::as_bytes))?
                    + opt_text(FieldTag::SowKeys, c.sow_keys.as_ref().map(SubIds::as_bytes))?
                    + if c.ack.is_empty() { 0 } else { fixed_len(1) }
            }
            Self::GroupBegin(c) => opt_u64(c.command_id) + fixed_len(8),
            Self::GroupEnd(c) => {
                opt_u64(c.command_id)
                    + fixed_len(8)
                    + fixed_len(8)
                    + if c.status == Status::Success {
                        0
                    } else {
                        fixed_len(1)
                    }
                    + if c.reason_code == ReasonCode::None {
                        0
                    } else {
                        fixed_len(2)
                    }
                    + opt_text(FieldTag::Reason, c.reason.as_ref().map(Utf8::as_bytes))?
            }
            Self::Subscribe(c) => {
                opt_u64(c.command_id)
                    + fixed_len(8)
                    + check_value_len(FieldTag::Topic, c.topic.len())?
                    + opt_text(FieldTag::Filter, c.filter.as_ref().map(Utf8::as_bytes))?
                    + opt_text(FieldTag::Options, c.options.as_ref().map(Utf8::as_bytes))?
                    + opt_text(
                        FieldTag::BookmarkSpec,
                        c.bookmark.as_ref().map(Utf8::as_bytes),
                    )?
            }
            Self::Unsubscribe(c) => opt_u64(c.command_id) + opt_u64(c.sub_id),
            Self::Flush(_) => fixed_len(8),
            Self::Ack(c) => {
                opt_u64(c.command_id)
                    + fixed_len(1)
                    + fixed_len(1)
                    + if c.reason_code == ReasonCode::None {
                        0
                    } else {
                        fixed_len(2)
                    }
                    + opt_text(FieldTag::Reason, c.reason.as_ref().map(Utf8::as_bytes))?
                    + opt_u64(c.sub_id)
                    + opt_u64(c.sequence)
                    + opt_u64(c.bookmark)
                    + opt_text(
                        FieldTag::ClientName,
                        c.client_name.as_ref().map(Utf8::as_bytes),
                    )?
                    + opt_u32(c.heartbeat_ms)
                    + opt_u32(c.max_frame_bytes)
                    + opt_text(
                        FieldTag::ServerVersion,
                        c.server_version.as_ref().map(Utf8::as_bytes),
                    )?
                    + opt_u64(c.records)
            }
            Self::Deliver(c) => {
                deliver_fields_len(c.topic.as_bytes(), c.sub_ids.len(), c.bookmark)?
                    + opt_u64(c.sow_key)
            }
            Self::SowBatch(c) => sow_batch_fields_len(c.topic.as_bytes())?,
        })
    }

    fn payload(&self) -> &[u8] {
        match self {
            Self::Publish(c) => &c.payload,
            Self::Deliver(c) => &c.payload,
            Self::SowDelete(c) => &c.payload,
            Self::SowBatch(c) => &c.payload,
            _ => &[],
        }
    }

    fn header(&self) -> Result<FrameHeader, EncodeError> {
        let header = FrameHeader {
            command: self.code() as u8,
            flags: 0,
            fields_len: self.fields_len()?,
            payload_len: self.payload().len(),
        };
        header.check()?;
        Ok(header)
    }

    /// The frame's size on the wire.
    ///
    /// # Errors
    /// A field or the frame is too long to encode.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(self.header()?.frame_len())
    }

    /// Appends the frame to `dst`. Lengths are checked before anything is
    /// written, so on error `dst` is untouched. Writes exactly
    /// [`Command::encoded_len`] bytes and allocates only if `dst` must grow.
    ///
    /// # Errors
    /// A field or the frame is too long to encode.
    pub fn encode(&self, dst: &mut impl BufMut) -> Result<(), EncodeError> {
        let header = self.header()?;
        if dst.remaining_mut() < header.frame_len() {
            return Err(EncodeError::BufferTooSmall {
                need: header.frame_len(),
                have: dst.remaining_mut(),
            });
        }
        header.encode(dst);
        self.write_fields(&mut FieldWriter::new(dst));
        dst.put_slice(self.payload());
        Ok(())
    }

    /// Encodes into the front of `dst` and returns the bytes written.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] when `dst` is too short.
    pub fn encode_to_slice(&self, dst: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len()?;
        let have = dst.len();
        let mut window = dst
            .get_mut(..len)
            .ok_or(EncodeError::BufferTooSmall { need: len, have })?;
        self.encode(&mut window)?;
        Ok(len)
    }

    /// Encodes into a new buffer (a convenience for tools and tests).
    ///
    /// # Errors
    /// A field or the frame is too long to encode.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut buf = Vec::with_capacity(self.encoded_len()?);
        self.encode(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    fn write_fields<B: BufMut>(&self, w: &mut FieldWriter<'_, B>) {
        let opt_u64 = |w: &mut FieldWriter<'_, B>, tag, v: Option<u64>| {
            if let Some(v) = v {
                w.u64(tag, v);
            }
        };
        let opt_u32 = |w: &mut FieldWriter<'_, B>, tag, v: Option<u32>| {
            if let Some(v) = v {
                w.u32(tag, v);
            }
        };
        let opt_text = |w: &mut FieldWriter<'_, B>, tag, v: Option<&[u8]>| {
            if let Some(v) = v {
                w.bytes(tag, v);
            }
        };
        match self {
            Self::Logon(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                w.bytes(FieldTag::ClientName, c.client_name.as_bytes());
                opt_text(w, FieldTag::Credentials, c.credentials.as_deref());
                opt_u32(w, FieldTag::HeartbeatMs, c.heartbeat_ms);
            }
            Self::Heartbeat(_) => {}
            Self::Publish(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                w.bytes(FieldTag::Topic, c.topic.as_bytes());
                if !c.ack.is_empty() {
                    w.u8(FieldTag::AckType, c.ack.bits());
                }
                opt_u64(w, FieldTag::Sequence, c.sequence);
                opt_text(w, FieldTag::SowKey, c.sow_key.as_deref());
            }
            Self::Sow(c) | Self::SowAndSubscribe(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                w.u64(FieldTag::SubId, c.sub_id);
                w.bytes(FieldTag::Topic, c.topic.as_bytes());
                opt_text(w, FieldTag::Filter, c.filter.as_ref().map(Utf8::as_bytes));
                opt_text(w, FieldTag::Options, c.options.as_ref().map(Utf8::as_bytes));
                opt_text(
                    w,
                    FieldTag::OrderBy,
                    c.order_by.as_ref().map(Utf8::as_bytes),
                );
                opt_u64(w, FieldTag::TopN, c.top_n);
                opt_u64(w, FieldTag::SkipN, c.skip_n);
                opt_text(
                    w,
                    FieldTag::SowKeys,
                    c.sow_keys.as_ref().map(SubIds::as_bytes),
                );
                opt_u32(w, FieldTag::BatchSize, c.batch_size);
            }
            Self::SowDelete(c) => {
                w.u64(FieldTag::CommandId, c.command_id);
                w.bytes(FieldTag::Topic, c.topic.as_bytes());
                opt_text(w, FieldTag::Filter, c.filter.as_ref().map(Utf8::as_bytes));
                opt_text(
                    w,
                    FieldTag::SowKeys,
                    c.sow_keys.as_ref().map(SubIds::as_bytes),
                );
                if !c.ack.is_empty() {
                    w.u8(FieldTag::AckType, c.ack.bits());
                }
            }
            Self::GroupBegin(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                w.u64(FieldTag::SubId, c.sub_id);
            }
            Self::GroupEnd(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                w.u64(FieldTag::SubId, c.sub_id);
                w.u64(FieldTag::Records, c.records);
                if c.status != Status::Success {
                    w.u8(FieldTag::Status, c.status as u8);
                }
                if c.reason_code != ReasonCode::None {
                    w.u16(FieldTag::ReasonCode, c.reason_code.code());
                }
                opt_text(w, FieldTag::Reason, c.reason.as_ref().map(Utf8::as_bytes));
            }
            Self::Subscribe(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                w.u64(FieldTag::SubId, c.sub_id);
                w.bytes(FieldTag::Topic, c.topic.as_bytes());
                opt_text(w, FieldTag::Filter, c.filter.as_ref().map(Utf8::as_bytes));
                opt_text(w, FieldTag::Options, c.options.as_ref().map(Utf8::as_bytes));
                opt_text(
                    w,
                    FieldTag::BookmarkSpec,
                    c.bookmark.as_ref().map(Utf8::as_bytes),
                );
            }
            Self::Unsubscribe(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                opt_u64(w, FieldTag::SubId, c.sub_id);
            }
            Self::Flush(c) => w.u64(FieldTag::CommandId, c.command_id),
            Self::Ack(c) => {
                opt_u64(w, FieldTag::CommandId, c.command_id);
                w.u8(FieldTag::AckType, c.ack_type as u8);
                w.u8(FieldTag::Status, c.status as u8);
                if c.reason_code != ReasonCode::None {
                    w.u16(FieldTag::ReasonCode, c.reason_code.code());
                }
                opt_text(w, FieldTag::Reason, c.reason.as_ref().map(Utf8::as_bytes));
                opt_u64(w, FieldTag::SubId, c.sub_id);
                opt_u64(w, FieldTag::Sequence, c.sequence);
                opt_u64(w, FieldTag::Bookmark, c.bookmark);
                opt_text(
                    w,
                    FieldTag::ClientName,
                    c.client_name.as_ref().map(Utf8::as_bytes),
                );
                opt_u32(w, FieldTag::HeartbeatMs, c.heartbeat_ms);
                opt_u32(w, FieldTag::MaxFrameBytes, c.max_frame_bytes);
                opt_text(
                    w,
                    FieldTag::ServerVersion,
                    c.server_version.as_ref().map(Utf8::as_bytes),
                );
                opt_u64(w, FieldTag::Records, c.records);
            }
            Self::Deliver(c) => {
                write_deliver_fields(
                    w,
                    c.topic.as_bytes(),
                    c.sub_ids.as_bytes(),
                    c.bookmark,
                    c.timestamp,
                );
                opt_u64(w, FieldTag::SowKeys, c.sow_key);
            }
            Self::SowBatch(c) => {
                write_sow_batch_fields(w, c.topic.as_bytes(), c.sub_id, c.records);
            }
        }
    }
}

fn deliver_fields_len(
    topic: &[u8],
    sub_ids: usize,
    bookmark: Option<u64>,
) -> Result<usize, EncodeError> {
    Ok(check_value_len(FieldTag::Topic, topic.len())?
        + check_value_len(FieldTag::SubIds, sub_ids * 8)?
        + if bookmark.is_some() { fixed_len(8) } else { 0 }
        + fixed_len(8))
}

fn write_deliver_fields<B: BufMut>(
    w: &mut FieldWriter<'_, B>,
    topic: &[u8],
    sub_ids: &[u8],
    bookmark: Option<u64>,
    timestamp: u64,
) {
    w.bytes(FieldTag::Topic, topic);
    w.bytes(FieldTag::SubIds, sub_ids);
    if let Some(bookmark) = bookmark {
        w.u64(FieldTag::Bookmark, bookmark);
    }
    w.u64(FieldTag::Timestamp, timestamp);
}

/// Writes the header and fields of a `deliver` frame whose payload the
/// caller sends separately (a vectored write of a shared payload buffer).
/// Returns the number of bytes written; the payload must follow them.
///
/// # Errors
/// A field is too long (topic over 65,535 bytes, more than
/// [`crate::SUB_IDS_PER_DELIVERY_MAX`] ids).
pub fn encode_deliver_header(
    topic: &[u8],
    sub_ids: &[u64],
    bookmark: Option<u64>,
    timestamp: u64,
    payload_len: usize,
    dst: &mut impl BufMut,
) -> Result<usize, EncodeError> {
    encode_record_header(topic, sub_ids, bookmark, timestamp, None, payload_len, dst)
}

/// Writes the fixed header of a `command` frame whose `fields_len` bytes
/// of fields the caller writes next, `payload_len` bytes of payload after
/// them. Checks the lengths, and that `dst` has room for the header and
/// the fields, before writing anything. Returns those bytes.
pub(crate) fn put_frame_header(
    command: CommandCode,
    fields_len: usize,
    payload_len: usize,
    dst: &mut impl BufMut,
) -> Result<usize, EncodeError> {
    let header = FrameHeader {
        command: command as u8,
        flags: 0,
        fields_len,
        payload_len,
    };
    header.check()?;
    let written = crate::FIXED_HEADER_LEN + fields_len;
    if dst.remaining_mut() < written {
        return Err(EncodeError::BufferTooSmall {
            need: written,
            have: dst.remaining_mut(),
        });
    }
    header.encode(dst);
    Ok(written)
}

/// [`encode_deliver_header`] for the records of a SOW query, which carry
/// their SowKey (`sow_key: None` writes a plain delivery).
///
/// # Errors
/// As [`encode_deliver_header`].
pub fn encode_record_header(
    topic: &[u8],
    sub_ids: &[u64],
    bookmark: Option<u64>,
    timestamp: u64,
    sow_key: Option<u64>,
    payload_len: usize,
    dst: &mut impl BufMut,
) -> Result<usize, EncodeError> {
    let fields_len = deliver_fields_len(topic, sub_ids.len(), bookmark)?
        + if sow_key.is_some() { fixed_len(8) } else { 0 };
    let written = put_frame_header(CommandCode::Deliver, fields_len, payload_len, dst)?;
    let mut w = FieldWriter::new(dst);
    w.bytes(FieldTag::Topic, topic);
    w.u64_array(FieldTag::SubIds, sub_ids);
    if let Some(bookmark) = bookmark {
        w.u64(FieldTag::Bookmark, bookmark);
    }
    w.u64(FieldTag::Timestamp, timestamp);
    if let Some(key) = sow_key {
        w.u64(FieldTag::SowKeys, key);
    }
    Ok(written)
}

/// The size of a `publish` frame, without building a [`Publish`].
///
/// # Errors
/// A field is too long.
pub fn publish_len(
    topic: &[u8],
    command_id: Option<u64>,
    ack: AckSet,
    sequence: Option<u64>,
    payload_len: usize,
) -> Result<usize, EncodeError> {
    let fields_len = if command_id.is_some() {
        fixed_len(8)
    } else {
        0
    } + check_value_len(FieldTag::Topic, topic.len())?
        + if ack.is_empty() { 0 } else { fixed_len(1) }
        + if sequence.is_some() { fixed_len(8) } else { 0 };
    let header = FrameHeader {
        command: CommandCode::Publish as u8,
        flags: 0,
        fields_len,
        payload_len,
    };
    header.check()?;
    Ok(header.frame_len())
}

/// Encodes a `publish` frame straight from borrowed parts (the hot path of
/// a publisher: no [`Publish`] and no copy of the topic). Produces exactly
/// the bytes `Command::Publish(..).encode` would.
///
/// # Errors
/// A field is too long, or `dst` has not the room [`publish_len`] gives.
pub fn encode_publish(
    topic: &[u8],
    command_id: Option<u64>,
    ack: AckSet,
    sequence: Option<u64>,
    payload: &[u8],
    dst: &mut impl BufMut,
) -> Result<usize, EncodeError> {
    let len = publish_len(topic, command_id, ack, sequence, payload.len())?;
    if dst.remaining_mut() < len {
        return Err(EncodeError::BufferTooSmall {
            need: len,
            have: dst.remaining_mut(),
        });
    }
    let fields_len = len - crate::FIXED_HEADER_LEN - payload.len();
    FrameHeader {
        command: CommandCode::Publish as u8,
        flags: 0,
        fields_len,
        payload_len: payload.len(),
    }
    .encode(dst);
    let mut w = FieldWriter::new(dst);
    if let Some(command_id) = command_id {
        w.u64(FieldTag::CommandId, command_id);
    }
    w.bytes(FieldTag::Topic, topic);
    if !ack.is_empty() {
        w.u8(FieldTag::AckType, ack.bits());
    }
    if let Some(sequence) = sequence {
        w.u64(FieldTag::Sequence, sequence);
    }
    dst.put_slice(payload);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};
    use proptest::prelude::*;

    use super::*;

    /// The generic decoding of a deliver frame, which
    /// `Deliver::decode_fields` must agree with.
    fn generic(frame: &Frame) -> Result<Deliver, DecodeError> {
        let f = RawFields::collect(&frame.fields, "deliver")?;
        let sub_ids = f.required(FieldTag::SubIds, f.bytes(FieldTag::SubIds))?;
        if sub_ids.len() % 8 != 0 {
            return Err(DecodeError::InvalidField {
                field: "sub_ids",
                reason: "length must be a multiple of 8",
            });
        }
        Ok(Deliver {
            topic: f.non_empty_utf8(FieldTag::Topic)?,
            sub_ids: SubIds(sub_ids),
            bookmark: f.u64(FieldTag::Bookmark)?,
            timestamp: f.required(FieldTag::Timestamp, f.u64(FieldTag::Timestamp)?)?,
            sow_key: f.u64(FieldTag::SowKeys)?,
            payload: frame.payload.clone(),
        })
    }

    /// Fields of a deliver frame: mostly the right tags with plausible
    /// values, sometimes wrong sizes, duplicates, other and unknown tags.
    fn fields() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        let tag = prop_oneof![
            4 => Just(2u8),
            4 => Just(4u8),
            3 => Just(5u8),
            4 => Just(6u8),
            1 => 0u8..=30,
            1 => any::<u8>(),
        ];
        let value = prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 8..=8),
            2 => proptest::collection::vec(any::<u8>(), 16..=16),
            2 => "[a-z/]{0,6}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec((tag, value), 0..7)
    }

    /// The generic decoding of a publish frame, which
    /// `Publish::decode_fields` must agree with.
    fn generic_publish(frame: &Frame) -> Result<Publish, DecodeError> {
        let f = RawFields::collect(&frame.fields, "publish")?;
        let command_id = f.u64(FieldTag::CommandId)?;
        let ack = f.ack_set()?;
        if !ack.is_empty() && command_id.is_none() {
            return Err(DecodeError::MissingField {
                command: "publish",
                field: "command_id",
            });
        }
        Ok(Publish {
            command_id,
            topic: f.non_empty_utf8(FieldTag::Topic)?,
            ack,
            sequence: f.u64(FieldTag::Sequence)?,
            sow_key: f.bytes(FieldTag::SowKey),
            payload: frame.payload.clone(),
        })
    }

    /// Fields of a publish frame: mostly its own tags with plausible
    /// values, sometimes wrong sizes, duplicates, other and unknown tags.
    fn publish_fields() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        let tag = prop_oneof![
            3 => Just(1u8),
            4 => Just(2u8),
            3 => Just(9u8),
            3 => Just(16u8),
            2 => Just(23u8),
            1 => 0u8..=30,
            1 => any::<u8>(),
        ];
        let value = prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 8..=8),
            2 => proptest::collection::vec(0u8..8, 1..=1),
            2 => "[a-z/]{0,6}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec((tag, value), 0..7)
    }

    proptest! {
        #[test]
        fn the_publish_fast_path_agrees_with_the_generic_decoder(fields in publish_fields()) {
            let mut area = BytesMut::new();
            for (tag, value) in &fields {
                area.put_u8(*tag);
                area.put_u16_le(u16::try_from(value.len()).unwrap());
                area.put_slice(value);
            }
            let frame = Frame {
                version: 1,
                command: CommandCode::Publish as u8,
                flags: 0,
                fields: area.freeze(),
                payload: Bytes::from_static(b"payload"),
            };
            let fast = Publish::decode_fields(&frame);
            let slow = generic_publish(&frame);
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                _ => prop_assert!(false, "fast {:?} vs generic {:?}", fast, slow),
            }
        }

        #[test]
        fn the_broker_s_layout_and_near_misses_decode_as_the_generic_decoder_does(
            topic in prop_oneof![
                4 => "[a-z/]{1,6}".prop_map(String::into_bytes),
                1 => proptest::collection::vec(any::<u8>(), 0..4),
            ],
            ids in prop_oneof![
                4 => proptest::collection::vec(any::<u8>(), 8..=8),
                1 => proptest::collection::vec(any::<u8>(), 0..20),
            ],
            bookmark in proptest::option::of(proptest::collection::vec(any::<u8>(), 7..=9)),
            timestamp in proptest::option::of(proptest::collection::vec(any::<u8>(), 7..=9)),
            sow_key in proptest::option::of(proptest::collection::vec(any::<u8>(), 7..=9)),
            extra in proptest::option::of((0usize..6, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..9))),
        ) {
            let mut fields: Vec<(u8, Vec<u8>)> = vec![(2, topic), (4, ids)];
            fields.extend(bookmark.map(|v| (5, v)));
            fields.extend(timestamp.map(|v| (6, v)));
            fields.extend(sow_key.map(|v| (24, v)));
            if let Some((at, tag, value)) = extra {
                fields.insert(at.min(fields.len()), (tag, value));
            }
            let mut area = BytesMut::new();
            for (tag, value) in &fields {
                area.put_u8(*tag);
                area.put_u16_le(u16::try_from(value.len()).unwrap());
                area.put_slice(value);
            }
            let frame = Frame {
                version: 1,
                command: CommandCode::Deliver as u8,
                flags: 0,
                fields: area.freeze(),
                payload: Bytes::from_static(b"payload"),
            };
            // The layout's shortcut changes nothing, errors included.
            let mut last = Vec::new();
            let shortcut = DeliverParts::parse_with(&frame, Some(&mut last), true);
            let mut last = Vec::new();
            let any_order = DeliverParts::parse_with(&frame, Some(&mut last), false);
            match (&shortcut, &any_order) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!((&a.topic, &a.sub_ids), (&b.topic, &b.sub_ids));
                    prop_assert_eq!((a.bookmark, a.timestamp, a.sow_key), (b.bookmark, b.timestamp, b.sow_key));
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                _ => prop_assert!(false, "shortcut {:?} vs any order {:?}", shortcut.is_ok(), any_order.is_ok()),
            }
            // And decoding agrees with the generic decoder (on errors only
            // in that there is one: the fast path reports a malformed
            // number as it meets it, the generic decoder field by field).
            let fast = Deliver::decode_fields(&frame);
            let slow = generic(&frame);
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "fast {:?} vs generic {:?}", fast, slow),
            }
        }

        #[test]
        fn the_deliver_fast_path_agrees_with_the_generic_decoder(fields in fields()) {
            let mut area = BytesMut::new();
            for (tag, value) in &fields {
                area.put_u8(*tag);
                area.put_u16_le(u16::try_from(value.len()).unwrap());
                area.put_slice(value);
            }
            let frame = Frame {
                version: 1,
                command: CommandCode::Deliver as u8,
                flags: 0,
                fields: area.freeze(),
                payload: Bytes::from_static(b"payload"),
            };
            let fast = Deliver::decode_fields(&frame);
            let slow = generic(&frame);
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "fast {:?} vs generic {:?}", fast, slow),
            }
        }

        #[test]
        fn a_deliver_decoder_agrees_with_command_decode_frame_by_frame(
            frames in proptest::collection::vec(
                (
                    0usize..TOPICS.len(),
                    prop_oneof![Just(0u64), Just(1), Just(255), Just(256), any::<u64>()],
                    any::<bool>(),
                    0u8..4,
                ),
                1..24,
            )
        ) {
            let mut decoder = DeliverDecoder::new();
            for (topic, first_id, second_id, shape) in frames {
                let frame = deliver_frame(TOPICS[topic], first_id, second_id, shape);
                let plain = Command::decode(&frame);
                let cached = decoder.decode(frame);
                match (cached, plain) {
                    (Ok(Decoded::Deliver(a)), Ok(Command::Deliver(b))) => {
                        prop_assert_eq!(a.sub_ids.iter().collect::<Vec<_>>(), b.sub_ids.iter().collect::<Vec<_>>());
                        prop_assert_eq!(a, b);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => prop_assert!(false, "decoder {:?} vs Command::decode {:?}", a, b),
                }
            }
        }
    }

    /// Topics a deliver decoder may see in a row: valid ones of equal
    /// length, invalid UTF-8 of the same length as a valid one, and the
    /// empty (refused) topic.
    const TOPICS: &[&[u8]] = &[
        b"orders",
        b"trades",
        b"\xffrders",
        b"ord\xc3\xa9",
        b"caf\xc3\xa9!",
        b"",
        b"\xc3",
    ];

    /// A deliver frame on `topic`; `shape` 1 misses its timestamp, 2
    /// repeats the topic, 3 has a truncated sub id.
    fn deliver_frame(topic: &[u8], first_id: u64, second_id: bool, shape: u8) -> Frame {
        let mut area = BytesMut::new();
        let mut field = |tag: u8, value: &[u8]| {
            area.put_u8(tag);
            area.put_u16_le(u16::try_from(value.len()).unwrap());
            area.put_slice(value);
        };
        field(FieldTag::Topic as u8, topic);
        if shape == 2 {
            field(FieldTag::Topic as u8, topic);
        }
        let mut ids = first_id.to_le_bytes().to_vec();
        if second_id {
            ids.extend_from_slice(&7u64.to_le_bytes());
        }
        if shape == 3 {
            ids.pop();
        }
        field(FieldTag::SubIds as u8, &ids);
        if shape != 1 {
            field(FieldTag::Timestamp as u8, &42u64.to_le_bytes());
        }
        Frame {
            version: 1,
            command: CommandCode::Deliver as u8,
            flags: 0,
            fields: area.freeze(),
            payload: Bytes::from_static(b"payload"),
        }
    }

    #[test]
    fn a_deliver_decoder_leaves_other_commands_to_command_decode() {
        let frame = Frame {
            version: 1,
            command: CommandCode::Heartbeat as u8,
            flags: 0,
            fields: Bytes::new(),
            payload: Bytes::new(),
        };
        let back = DeliverDecoder::new().decode(frame.clone());
        assert!(matches!(back, Ok(Decoded::Other(other)) if other == frame));
    }

    #[test]
    fn a_single_sub_id_decodes_to_itself_static_or_not() {
        for id in (0..=STATIC_SUB_IDS as u64 + 8).chain([u64::MAX]) {
            let frame = deliver_frame(b"orders", id, false, 0);
            let Ok(Command::Deliver(plain)) = Command::decode(&frame) else {
                panic!("sub id {id} did not decode");
            };
            let Ok(Decoded::Deliver(taken)) = DeliverDecoder::new().decode(frame) else {
                panic!("sub id {id} did not decode");
            };
            for deliver in [plain, taken] {
                assert_eq!(deliver.sub_ids.iter().collect::<Vec<_>>(), [id]);
                assert_eq!(deliver.sub_ids.as_bytes(), id.to_le_bytes());
            }
        }
    }

    #[test]
    fn same_bytes_is_equality() {
        let texts: Vec<Vec<u8>> = (0..=20)
            .flat_map(|len| {
                let base: Vec<u8> = (0..len).map(|i| b'a' + i).collect();
                let mut changed = Vec::new();
                for at in 0..len as usize {
                    let mut other = base.clone();
                    other[at] ^= 1;
                    changed.push(other);
                }
                std::iter::once(base).chain(changed)
            })
            .collect();
        for a in &texts {
            for b in &texts {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn every_field_tag_has_a_bit_in_a_u64() {
        for tag in 0..=u8::MAX {
            if let Some(known) = FieldTag::from_u8(tag) {
                assert!(
                    (known as u8) < 64,
                    "{known:?} needs a wider seen-set in Deliver::decode_fields"
                );
            }
        }
    }
}
