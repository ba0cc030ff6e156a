//! `sow_batch`: several records of one SOW query in one frame (SPEC.md
//! section 4.14).
//!
//! The frame's header fields name the topic, the query and the number of
//! records; its payload is the records back to back, each a fixed 28-byte
//! header (SowKey, bookmark, timestamp, payload length) followed by the
//! record's message. A receiver lends each message as a slice of the
//! frame's buffer ([`SowBatchRecord::payload`] shares it): nothing is
//! copied. The payload is untrusted input: [`SowBatch::from_parts`] walks
//! it once and refuses anything but exactly the declared records, and
//! nothing is allocated on the strength of a declared length.

use bytes::{BufMut, Bytes};

use crate::command::{CommandCode, Utf8, put_frame_header};
use crate::error::{DecodeError, EncodeError};
use crate::field::{FieldTag, FieldWriter, check_value_len, fixed_len};

/// The most records one `sow_batch` may carry, and the largest
/// `batch_size` a query may ask for (a query asking for more is refused
/// with `invalid_field`). AMPS refuses a `BatchSize` above the same figure.
pub const SOW_BATCH_SIZE_MAX: u32 = 10_000;

/// Bytes of the header in front of each record of a `sow_batch` payload:
/// SowKey (8), bookmark (8), timestamp (8), payload length (4).
pub const SOW_BATCH_RECORD_HEADER_LEN: usize = 28;

/// `sow_batch`: up to a query's `batch_size` records of one topic, sent
/// between the query's `group_begin` and `group_end` like the `deliver`s
/// they replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SowBatch {
    /// The records' topic (one topic per batch).
    pub topic: Utf8,
    /// The query's id.
    pub sub_id: u64,
    /// Number of records in `payload`, at least 1.
    pub records: u64,
    /// The records, each [`SOW_BATCH_RECORD_HEADER_LEN`] bytes of header
    /// and its message (see [`SowBatch::iter`]). A decoded batch's payload
    /// holds exactly `records` well-formed records.
    pub payload: Bytes,
}

/// One record of a [`SowBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SowBatchRecord {
    /// The record's SowKey.
    pub key: u64,
    /// The bookmark of the message that set the record (`None` when the
    /// wire value is 0: no journal position).
    pub bookmark: Option<u64>,
    /// When the broker took that message, ns since the Unix epoch.
    pub timestamp: u64,
    /// The message, sharing the frame's buffer.
    pub payload: Bytes,
}

/// One record's header, read from the front of `rest`; `None` when fewer
/// than [`SOW_BATCH_RECORD_HEADER_LEN`] bytes remain.
fn record_header(rest: &[u8]) -> Option<(u64, u64, u64, u32)> {
    let (header, _) = rest.split_first_chunk::<SOW_BATCH_RECORD_HEADER_LEN>()?;
    let (key, header) = header.split_first_chunk::<8>()?;
    let (bookmark, header) = header.split_first_chunk::<8>()?;
    let (timestamp, header) = header.split_first_chunk::<8>()?;
    let (len, _) = header.split_first_chunk::<4>()?;
    Some((
        u64::from_le_bytes(*key),
        u64::from_le_bytes(*bookmark),
        u64::from_le_bytes(*timestamp),
        u32::from_le_bytes(*len),
    ))
}

impl SowBatch {
    /// A batch from its header fields and payload, after checking that the
    /// payload holds exactly `records` records (at least 1, at most
    /// [`SOW_BATCH_SIZE_MAX`]).
    ///
    /// # Errors
    /// [`DecodeError::InvalidField`] for a `records` of 0 or above the
    /// maximum; [`DecodeError::MalformedBatch`] naming the first record
    /// that is truncated, or bytes left after the last one.
    pub fn from_parts(
        topic: Utf8,
        sub_id: u64,
        records: u64,
        payload: Bytes,
    ) -> Result<Self, DecodeError> {
        if records == 0 || records > u64::from(SOW_BATCH_SIZE_MAX) {
            return Err(DecodeError::InvalidField {
                field: "records",
                reason: "a sow_batch carries 1 to 10,000 records",
            });
        }
        let mut rest: &[u8] = &payload;
        for index in 0..records {
            let Some((_, _, _, len)) = record_header(rest) else {
                return Err(DecodeError::MalformedBatch {
                    record: index,
                    reason: "the payload ends inside the record's 28-byte header",
                });
            };
            let Some(after) = usize::try_from(len)
                .ok()
                .and_then(|len| rest.get(SOW_BATCH_RECORD_HEADER_LEN..)?.get(len..))
            else {
                return Err(DecodeError::MalformedBatch {
                    record: index,
                    reason: "the record's length runs past the end of the payload",
                });
            };
            rest = after;
        }
        if !rest.is_empty() {
            return Err(DecodeError::MalformedBatch {
                record: records,
                reason: "bytes remain after the declared number of records",
            });
        }
        Ok(Self {
            topic,
            sub_id,
            records,
            payload,
        })
    }

    /// Encodes `records` into a batch (for tools and tests; the broker
    /// writes its batches with [`encode_sow_batch_header`] and
    /// [`encode_sow_batch_record_header`]).
    ///
    /// # Errors
    /// No records or more than [`SOW_BATCH_SIZE_MAX`], or a record's
    /// message longer than a `u32` can say.
    pub fn from_records(
        topic: Utf8,
        sub_id: u64,
        records: &[SowBatchRecord],
    ) -> Result<Self, EncodeError> {
        let count = u32::try_from(records.len())
            .ok()
            .filter(|n| (1..=SOW_BATCH_SIZE_MAX).contains(n))
            .ok_or(EncodeError::BatchSize {
                records: records.len(),
            })?;
        let len = records.iter().map(|r| r.payload.len()).sum::<usize>()
            + records.len() * SOW_BATCH_RECORD_HEADER_LEN;
        let mut payload = Vec::with_capacity(len);
        for record in records {
            encode_sow_batch_record_header(
                record.key,
                record.bookmark,
                record.timestamp,
                record.payload.len(),
                &mut payload,
            )?;
            payload.extend_from_slice(&record.payload);
        }
        Ok(Self {
            topic,
            sub_id,
            records: u64::from(count),
            payload: Bytes::from(payload),
        })
    }

    /// The records in order, each message a slice of the payload's buffer.
    /// On a batch that [`SowBatch::from_parts`] (or decoding) checked,
    /// every item is `Ok`; otherwise the first malformed record is an
    /// error and ends the iteration.
    #[must_use]
    pub fn iter(&self) -> SowBatchRecords {
        SowBatchRecords {
            payload: self.payload.clone(),
            at: 0,
            index: 0,
            records: self.records,
        }
    }
}

impl IntoIterator for SowBatch {
    type Item = Result<SowBatchRecord, DecodeError>;
    type IntoIter = SowBatchRecords;

    fn into_iter(self) -> SowBatchRecords {
        SowBatchRecords {
            payload: self.payload,
            at: 0,
            index: 0,
            records: self.records,
        }
    }
}

/// The records of a [`SowBatch`] ([`SowBatch::iter`]).
#[derive(Debug, Clone)]
pub struct SowBatchRecords {
    payload: Bytes,
    /// Offset of the next record in `payload`.
    at: usize,
    /// Index of the next record.
    index: u64,
    /// Records declared.
    records: u64,
}

impl Iterator for SowBatchRecords {
    type Item = Result<SowBatchRecord, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.records {
            return None;
        }
        let index = self.index;
        let fail = |this: &mut Self, reason| {
            this.index = this.records;
            Some(Err(DecodeError::MalformedBatch {
                record: index,
                reason,
            }))
        };
        let rest = self.payload.get(self.at..).unwrap_or_default();
        let Some((key, bookmark, timestamp, len)) = record_header(rest) else {
            return fail(self, "the payload ends inside the record's 28-byte header");
        };
        let start = self.at + SOW_BATCH_RECORD_HEADER_LEN;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= self.payload.len());
        let Some(end) = end else {
            return fail(self, "the record's length runs past the end of the payload");
        };
        self.at = end;
        self.index += 1;
        Some(Ok(SowBatchRecord {
            key,
            bookmark: (bookmark != 0).then_some(bookmark),
            timestamp,
            payload: self.payload.slice(start..end),
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.records - self.index).unwrap_or(usize::MAX);
        (0, Some(left))
    }
}

/// Bytes of a `sow_batch` frame's header fields for `topic`.
pub(crate) fn sow_batch_fields_len(topic: &[u8]) -> Result<usize, EncodeError> {
    Ok(check_value_len(FieldTag::Topic, topic.len())? + fixed_len(8) + fixed_len(8))
}

pub(crate) fn write_sow_batch_fields<B: BufMut>(
    w: &mut FieldWriter<'_, B>,
    topic: &[u8],
    sub_id: u64,
    records: u64,
) {
    w.bytes(FieldTag::Topic, topic);
    w.u64(FieldTag::SubId, sub_id);
    w.u64(FieldTag::Records, records);
}

/// Bytes [`encode_sow_batch_header`] writes for `topic`: the fixed header
/// and the fields, whatever the number of records.
///
/// # Errors
/// The topic is longer than a field holds.
pub fn sow_batch_header_len(topic: &[u8]) -> Result<usize, EncodeError> {
    Ok(crate::FIXED_HEADER_LEN + sow_batch_fields_len(topic)?)
}

/// Writes the fixed header and fields of a `sow_batch` frame whose payload
/// (`payload_len` bytes: the records, each written with
/// [`encode_sow_batch_record_header`] and its message) the caller writes
/// after them. Returns the bytes written ([`sow_batch_header_len`]).
///
/// # Errors
/// The topic is too long, the frame too large, or `dst` too small.
pub fn encode_sow_batch_header(
    topic: &[u8],
    sub_id: u64,
    records: u64,
    payload_len: usize,
    dst: &mut impl BufMut,
) -> Result<usize, EncodeError> {
    let fields_len = sow_batch_fields_len(topic)?;
    let written = put_frame_header(CommandCode::SowBatch, fields_len, payload_len, dst)?;
    write_sow_batch_fields(&mut FieldWriter::new(dst), topic, sub_id, records);
    Ok(written)
}

/// Writes the [`SOW_BATCH_RECORD_HEADER_LEN`]-byte header of one record
/// of a `sow_batch` payload; its `payload_len` bytes of message follow.
///
/// # Errors
/// The message is longer than `u32::MAX` bytes, or `dst` is too small.
pub fn encode_sow_batch_record_header(
    key: u64,
    bookmark: Option<u64>,
    timestamp: u64,
    payload_len: usize,
    dst: &mut impl BufMut,
) -> Result<(), EncodeError> {
    let len =
        u32::try_from(payload_len).map_err(|_| EncodeError::FrameTooLarge { len: payload_len })?;
    if dst.remaining_mut() < SOW_BATCH_RECORD_HEADER_LEN {
        return Err(EncodeError::BufferTooSmall {
            need: SOW_BATCH_RECORD_HEADER_LEN,
            have: dst.remaining_mut(),
        });
    }
    dst.put_u64_le(key);
    dst.put_u64_le(bookmark.unwrap_or(0));
    dst.put_u64_le(timestamp);
    dst.put_u32_le(len);
    Ok(())
}
