//! Header fields: `tag (u8) | length (u16 LE) | value`, repeated.
//!
//! Tags a receiver does not know are skipped by their length, which is what
//! lets later versions add fields without breaking older peers.

use bytes::BufMut;

use crate::FIELD_VALUE_LEN_MAX;
use crate::error::{DecodeError, EncodeError};

/// Bytes of a field's tag and length.
pub const FIELD_HEADER_LEN: usize = 3;

/// The header fields this version defines. Values are the wire tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FieldTag {
    /// `u64`: the client's id for a command, echoed on its acks.
    CommandId = 1,
    /// UTF-8: a topic name, or a regular expression on subscribe.
    Topic = 2,
    /// `u64`: a subscription id chosen by the client.
    SubId = 3,
    /// Array of `u64`: every subscription of this connection a delivery matches.
    SubIds = 4,
    /// `u64`: the journal position of a message.
    Bookmark = 5,
    /// `u64`: nanoseconds since the Unix epoch.
    Timestamp = 6,
    /// UTF-8: the client's name.
    ClientName = 7,
    /// Bytes: credentials (reserved; ignored by this version).
    Credentials = 8,
    /// `u8`: on requests a set of ack types wanted, on acks the one ack type.
    AckType = 9,
    /// `u8`: an ack's status.
    Status = 10,
    /// `u16`: an ack's reason code.
    ReasonCode = 11,
    /// UTF-8: human-readable reason text.
    Reason = 12,
    /// `u32`: heartbeat interval in milliseconds.
    HeartbeatMs = 13,
    /// UTF-8: a content filter expression.
    Filter = 14,
    /// UTF-8: comma-separated options.
    Options = 15,
    /// `u64`: a publisher's sequence number.
    Sequence = 16,
    /// UTF-8: the server's version string.
    ServerVersion = 17,
    /// `u32`: the largest frame the server accepts, in bytes.
    MaxFrameBytes = 18,
    /// UTF-8: where a subscription starts in the journal (and, for a
    /// range, where it ends).
    BookmarkSpec = 19,
    /// `u64`: how many records a SOW query returns at most.
    TopN = 20,
    /// `u64`: how many matching records a SOW query skips first.
    SkipN = 21,
    /// UTF-8: a SOW query's sort order, `/path [ASC|DESC], …`.
    OrderBy = 22,
    /// Bytes: a publisher-supplied SOW key for a topic without key fields.
    SowKey = 23,
    /// Array of `u64`: SowKeys (of records to query or delete; on a
    /// delivered SOW record, that record's key).
    SowKeys = 24,
    /// `u64`: a number of records (a query's group end, a delete's ack,
    /// the records of one `sow_batch`).
    Records = 25,
    /// `u32`: on a SOW query, the most records one frame of its answer
    /// carries (`sow_batch`).
    BatchSize = 26,
}

impl FieldTag {
    /// The field's name as SPEC.md and error messages spell it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::CommandId => "command_id",
            Self::Topic => "topic",
            Self::SubId => "sub_id",
            Self::SubIds => "sub_ids",
            Self::Bookmark => "bookmark",
            Self::Timestamp => "timestamp",
            Self::ClientName => "client_name",
            Self::Credentials => "credentials",
            Self::AckType => "ack_type",
            Self::Status => "status",
            Self::ReasonCode => "reason_code",
            Self::Reason => "reason",
            Self::HeartbeatMs => "heartbeat_ms",
            Self::Filter => "filter",
            Self::Options => "options",
            Self::Sequence => "sequence",
            Self::ServerVersion => "server_version",
            Self::MaxFrameBytes => "max_frame_bytes",
            Self::BookmarkSpec => "bookmark_spec",
            Self::TopN => "top_n",
            Self::SkipN => "skip_n",
            Self::OrderBy => "order_by",
            Self::SowKey => "sow_key",
            Self::SowKeys => "sow_keys",
            Self::Records => "records",
            Self::BatchSize => "batch_size",
        }
    }

    /// The tag for a wire value, or `None` for tags this version does not know.
    #[must_use]
    pub fn from_u8(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => Self::CommandId,
            2 => Self::Topic,
            3 => Self::SubId,
            4 => Self::SubIds,
            5 => Self::Bookmark,
            6 => Self::Timestamp,
            7 => Self::ClientName,
            8 => Self::Credentials,
            9 => Self::AckType,
            10 => Self::Status,
            11 => Self::ReasonCode,
            12 => Self::Reason,
            13 => Self::HeartbeatMs,
            14 => Self::Filter,
            15 => Self::Options,
            16 => Self::Sequence,
            17 => Self::ServerVersion,
            18 => Self::MaxFrameBytes,
            19 => Self::BookmarkSpec,
            20 => Self::TopN,
            21 => Self::SkipN,
            22 => Self::OrderBy,
            23 => Self::SowKey,
            24 => Self::SowKeys,
            25 => Self::Records,
            26 => Self::BatchSize,
            _ => return None,
        })
    }
}

/// One raw header field: its tag and the bytes of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Wire tag (possibly one this version does not know).
    pub tag: u8,
    /// The value's bytes.
    pub value: &'a [u8],
}

/// Iterates over the fields of a fields area, in order.
///
/// Yields an error (and then stops) when a field's declared length runs past
/// the end of the area.
#[derive(Debug, Clone)]
pub struct FieldIter<'a> {
    rest: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> FieldIter<'a> {
    /// Iterates over `fields`, the bytes between the fixed header and the payload.
    #[must_use]
    pub fn new(fields: &'a [u8]) -> Self {
        Self {
            rest: fields,
            offset: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<Field<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let Some((&[tag, len_lo, len_hi], after)) = self.rest.split_first_chunk::<3>() else {
            self.failed = true;
            let tag = self.rest.first().copied().unwrap_or(0);
            return Some(Err(DecodeError::FieldTruncated {
                tag,
                offset: self.offset,
                len: FIELD_HEADER_LEN,
                available: self.rest.len(),
            }));
        };
        let len = usize::from(u16::from_le_bytes([len_lo, len_hi]));
        if after.len() < len {
            self.failed = true;
            return Some(Err(DecodeError::FieldTruncated {
                tag,
                offset: self.offset,
                len,
                available: after.len(),
            }));
        }
        let (value, rest) = after.split_at(len);
        self.rest = rest;
        self.offset += FIELD_HEADER_LEN + len;
        Some(Ok(Field { tag, value }))
    }
}

/// Writes header fields into a caller's buffer. It never allocates: callers
/// size the buffer with the `*_len` helpers first.
#[derive(Debug)]
pub struct FieldWriter<'b, B: BufMut> {
    dst: &'b mut B,
}

impl<'b, B: BufMut> FieldWriter<'b, B> {
    /// Writes fields into `dst`.
    pub fn new(dst: &'b mut B) -> Self {
        Self { dst }
    }

    fn header(&mut self, tag: FieldTag, len: usize) {
        debug_assert!(
            len <= FIELD_VALUE_LEN_MAX,
            "callers check lengths before writing"
        );
        self.dst.put_u8(tag as u8);
        self.dst.put_u16_le(len as u16);
    }

    /// Writes a `u8` field.
    pub fn u8(&mut self, tag: FieldTag, value: u8) {
        self.header(tag, 1);
        self.dst.put_u8(value);
    }

    /// Writes a `u16` field.
    pub fn u16(&mut self, tag: FieldTag, value: u16) {
        self.header(tag, 2);
        self.dst.put_u16_le(value);
    }

    /// Writes a `u32` field.
    pub fn u32(&mut self, tag: FieldTag, value: u32) {
        self.header(tag, 4);
        self.dst.put_u32_le(value);
    }

    /// Writes a `u64` field.
    pub fn u64(&mut self, tag: FieldTag, value: u64) {
        self.header(tag, 8);
        self.dst.put_u64_le(value);
    }

    /// Writes a bytes or UTF-8 field. The length must have been checked with
    /// [`check_value_len`].
    pub fn bytes(&mut self, tag: FieldTag, value: &[u8]) {
        self.header(tag, value.len());
        self.dst.put_slice(value);
    }

    /// Writes an array of `u64`. The length must have been checked.
    pub fn u64_array(&mut self, tag: FieldTag, values: &[u64]) {
        self.header(tag, values.len() * 8);
        for value in values {
            self.dst.put_u64_le(*value);
        }
    }
}

/// Checks that a value fits in one field.
///
/// # Errors
/// [`EncodeError::FieldTooLong`] when it does not.
pub fn check_value_len(tag: FieldTag, len: usize) -> Result<usize, EncodeError> {
    if len > FIELD_VALUE_LEN_MAX {
        return Err(EncodeError::FieldTooLong {
            field: tag.name(),
            len,
        });
    }
    Ok(FIELD_HEADER_LEN + len)
}

/// Encoded size of a fixed-width field holding `n` value bytes.
#[must_use]
pub const fn fixed_len(n: usize) -> usize {
    FIELD_HEADER_LEN + n
}

/// Reads a little-endian `u64` field value.
pub(crate) fn read_u64(tag: FieldTag, value: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| DecodeError::InvalidField {
        field: tag.name(),
        reason: "expected an 8-byte unsigned integer",
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Reads a little-endian `u32` field value.
pub(crate) fn read_u32(tag: FieldTag, value: &[u8]) -> Result<u32, DecodeError> {
    let bytes: [u8; 4] = value.try_into().map_err(|_| DecodeError::InvalidField {
        field: tag.name(),
        reason: "expected a 4-byte unsigned integer",
    })?;
    Ok(u32::from_le_bytes(bytes))
}

/// Reads a little-endian `u16` field value.
pub(crate) fn read_u16(tag: FieldTag, value: &[u8]) -> Result<u16, DecodeError> {
    let bytes: [u8; 2] = value.try_into().map_err(|_| DecodeError::InvalidField {
        field: tag.name(),
        reason: "expected a 2-byte unsigned integer",
    })?;
    Ok(u16::from_le_bytes(bytes))
}

/// Reads a `u8` field value.
pub(crate) fn read_u8(tag: FieldTag, value: &[u8]) -> Result<u8, DecodeError> {
    match value {
        [byte] => Ok(*byte),
        _ => Err(DecodeError::InvalidField {
            field: tag.name(),
            reason: "expected a 1-byte value",
        }),
    }
}
