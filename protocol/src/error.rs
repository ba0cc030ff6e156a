//! Typed decode and encode errors. Each message says what is wrong with the
//! input, in terms a client author can act on.

use thiserror::Error;

/// Why a frame or a command could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix declares fewer bytes than the fixed header needs.
    #[error(
        "frame length {declared} is shorter than the 8 bytes of header that follow the length prefix"
    )]
    FrameTooShort {
        /// The declared length (bytes after the length prefix).
        declared: u32,
    },
    /// The frame is larger than the receiver accepts.
    #[error("frame of {declared} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The whole frame's declared size, length prefix included.
        declared: u64,
        /// The receiver's limit.
        max: usize,
    },
    /// The version byte is not one this build speaks.
    #[error("protocol version {found} is not supported (this build speaks version {supported})")]
    UnsupportedVersion {
        /// The version found in the frame.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The header's fields length runs past the end of the frame.
    #[error("header fields length {fields_len} runs past the frame's {available} bytes")]
    FieldsOverrun {
        /// Declared fields length.
        fields_len: u32,
        /// Bytes available after the fixed header.
        available: u32,
    },
    /// A header field's length runs past the end of the fields area.
    #[error(
        "header field with tag {tag} at offset {offset} declares {len} bytes but only {available} remain"
    )]
    FieldTruncated {
        /// The field's tag.
        tag: u8,
        /// Offset of the field within the fields area.
        offset: usize,
        /// Declared value length.
        len: usize,
        /// Bytes left in the fields area.
        available: usize,
    },
    /// The command code is not one this build knows.
    #[error("unknown command code {0:#04x}")]
    UnknownCommand(u8),
    /// The command code is reserved for a command this build does not implement yet.
    #[error("command {name} ({code:#04x}) is not supported by this build")]
    UnsupportedCommand {
        /// Code found.
        code: u8,
        /// Its reserved name.
        name: &'static str,
    },
    /// A field the command needs is absent.
    #[error("{command} is missing its required `{field}` field")]
    MissingField {
        /// The command being decoded.
        command: &'static str,
        /// The absent field.
        field: &'static str,
    },
    /// A field's value does not have the type the spec gives it.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A known field appears twice in one frame.
    #[error("field `{field}` appears more than once")]
    DuplicateField {
        /// The repeated field.
        field: &'static str,
    },
    /// A `sow_batch` payload does not hold exactly its declared records.
    #[error("sow_batch record {record} (counting from 0) is malformed: {reason}")]
    MalformedBatch {
        /// The index of the record found wrong (the declared count when
        /// bytes remain after the last record).
        record: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a command could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field value is longer than a field can carry.
    #[error("field `{field}` is {len} bytes; a header field holds at most 65535")]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The frame would exceed the 4 GiB the length prefix can express.
    #[error("frame of {len} bytes is larger than a frame can be")]
    FrameTooLarge {
        /// The frame's size.
        len: usize,
    },
    /// A `sow_batch` must carry 1 to `SOW_BATCH_SIZE_MAX` records.
    #[error("a sow_batch carries 1 to 10,000 records, not {records}")]
    BatchSize {
        /// The records given.
        records: usize,
    },
    /// The caller's buffer is too small.
    #[error("buffer of {have} bytes is too small for a frame of {need} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}
