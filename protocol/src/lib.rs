//! statecast-protocol: the binary wire format spoken between statecast clients
//! and the broker.
//!
//! It owns framing (a length-prefixed frame with a fixed 12-byte header), the
//! typed header fields, the command set, encoding into a caller's buffer and
//! zero-copy decoding out of a [`bytes::Bytes`] buffer. `SPEC.md` next to this
//! crate describes every byte; `tests/vectors/` holds hex test vectors.
//!
//! **Invariant:** this crate does no I/O and depends on nothing else in the
//! workspace (no broker, no client, no tokio, no mio). It is a pure codec so
//! that it can be fuzzed, property-tested and reused by third-party tools.
//!
//! Decoding never panics on input: every malformed frame is a [`DecodeError`]
//! that names what is wrong, and nothing is allocated on the strength of a
//! declared length alone.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod batch;
mod command;
mod error;
mod field;
mod frame;
pub mod fuzz;
mod reason;

pub use batch::{
    SOW_BATCH_RECORD_HEADER_LEN, SOW_BATCH_SIZE_MAX, SowBatch, SowBatchRecord, SowBatchRecords,
    encode_sow_batch_header, encode_sow_batch_record_header, sow_batch_header_len,
};
pub use command::{
    Ack, AckSet, AckType, Command, CommandCode, Decoded, Deliver, DeliverDecoder, Flush,
    GroupBegin, GroupEnd, Heartbeat, Logon, Publish, SowDelete, SowQuery, Status, SubIds,
    Subscribe, Unsubscribe, Utf8, encode_deliver_header, encode_publish, encode_record_header,
    publish_len,
};
pub use error::{DecodeError, EncodeError};
pub use field::{Field, FieldIter, FieldTag, FieldWriter};
pub use frame::{Frame, FrameDecoder, FrameHeader};
pub use reason::{REASONS, ReasonCode};

/// The protocol version this crate speaks, carried in every frame's header.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the length prefix at the start of every frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Bytes of the fixed header: length prefix (4), version (1), command (1),
/// flags (2), fields length (4).
pub const FIXED_HEADER_LEN: usize = 12;

/// The largest frame (all bytes, length prefix included) this crate will ever
/// accept, whatever a caller configures: the length prefix is a `u32`.
pub const FRAME_LEN_LIMIT: usize = u32::MAX as usize;

/// The longest value one header field can carry (its length is a `u16`).
pub const FIELD_VALUE_LEN_MAX: usize = u16::MAX as usize;

/// The most subscription ids one delivery can name (`sub_ids` is one field
/// of 8-byte ids).
pub const SUB_IDS_PER_DELIVERY_MAX: usize = FIELD_VALUE_LEN_MAX / 8;
