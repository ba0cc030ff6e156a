//! Framing: a little-endian `u32` length prefix, then the rest of the fixed
//! header, the header fields and the payload.
//!
//! ```text
//! 0        4         5         6        8            12             12+F
//! | length | version | command | flags  | fields_len | fields (F B) | payload |
//! | u32 LE | u8      | u8      | u16 LE | u32 LE     |              |         |
//! ```
//!
//! `length` counts every byte after itself, so a frame occupies `4 + length`
//! bytes on the wire.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::{FIXED_HEADER_LEN, LENGTH_PREFIX_LEN, PROTOCOL_VERSION};

/// Bytes of the fixed header after the length prefix.
const HEADER_AFTER_PREFIX: usize = FIXED_HEADER_LEN - LENGTH_PREFIX_LEN;

/// The fixed header of a frame, as written by [`FrameHeader::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Command code.
    pub command: u8,
    /// Flags (none are defined in version 1; senders write 0, receivers ignore them).
    pub flags: u16,
    /// Bytes of header fields.
    pub fields_len: usize,
    /// Bytes of payload.
    pub payload_len: usize,
}

impl FrameHeader {
    /// The whole frame's size on the wire.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        FIXED_HEADER_LEN + self.fields_len + self.payload_len
    }

    /// Checks that the frame's size can be expressed.
    ///
    /// # Errors
    /// [`EncodeError::FrameTooLarge`] past 4 GiB.
    pub fn check(&self) -> Result<(), EncodeError> {
        let len = self.frame_len();
        if len - LENGTH_PREFIX_LEN > u32::MAX as usize {
            return Err(EncodeError::FrameTooLarge { len });
        }
        Ok(())
    }

    /// Writes the 12 header bytes. The caller has called [`FrameHeader::check`].
    pub fn encode(&self, dst: &mut impl BufMut) {
        let after_prefix = self.frame_len() - LENGTH_PREFIX_LEN;
        debug_assert!(
            u32::try_from(after_prefix).is_ok(),
            "checked by FrameHeader::check"
        );
        dst.put_u32_le(after_prefix as u32);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(self.command);
        dst.put_u16_le(self.flags);
        dst.put_u32_le(self.fields_len as u32);
    }
}

/// One decoded frame. `fields` and `payload` share the receive buffer: no
/// bytes are copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Protocol version (always [`PROTOCOL_VERSION`] once decoded).
    pub version: u8,
    /// Command code.
    pub command: u8,
    /// Flags.
    pub flags: u16,
    /// The header fields area.
    pub fields: Bytes,
    /// The payload.
    pub payload: Bytes,
}

/// Splits frames off the front of a receive buffer.
///
/// The decoder is resumable: when the buffer holds only part of a frame it
/// returns `Ok(None)` and the caller reads more. It rejects an oversize frame
/// as soon as the length prefix has arrived, before any of it is buffered.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder accepting frames of at most `max_frame_len` bytes (length
    /// prefix included).
    #[must_use]
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: max_frame_len.max(FIXED_HEADER_LEN),
        }
    }

    /// The limit this decoder enforces.
    #[must_use]
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Changes the limit (the broker lowers it until a client has logged on).
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len.max(FIXED_HEADER_LEN);
    }

    /// How many bytes the frame at the front of `buf` occupies, once its
    /// length prefix has arrived, after checking it against the limit.
    ///
    /// # Errors
    /// [`DecodeError::FrameTooShort`] or [`DecodeError::FrameTooLarge`].
    pub fn peek_len(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(prefix) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let declared = u32::from_le_bytes(*prefix);
        if (declared as usize) < HEADER_AFTER_PREFIX {
            return Err(DecodeError::FrameTooShort { declared });
        }
        let total = u64::from(declared) + LENGTH_PREFIX_LEN as u64;
        if total > self.max_frame_len as u64 {
            return Err(DecodeError::FrameTooLarge {
                declared: total,
                max: self.max_frame_len,
            });
        }
        Ok(Some(total as usize))
    }

    /// Splits the next complete frame off `buf`, or returns `Ok(None)` when
    /// more bytes are needed.
    ///
    /// # Errors
    /// Any framing error; the connection cannot be resynchronised after one.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(total) = self.peek_len(buf)? else {
            return Ok(None);
        };
        let Some(whole) = buf.get(..total) else {
            return Ok(None);
        };
        // Validate before splitting so that an error leaves the buffer as it was.
        let (version, command, flags, fields_len) = parse_fixed(whole)?;
        let mut frame = buf.split_to(total).freeze();
        frame.advance(FIXED_HEADER_LEN);
        let payload = frame.split_off(fields_len);
        Ok(Some(Frame {
            version,
            command,
            flags,
            fields: frame,
            payload,
        }))
    }

    /// Decodes exactly one frame that fills `bytes`.
    ///
    /// # Errors
    /// Any framing error, or [`DecodeError::FieldsOverrun`] style errors when
    /// `bytes` is not one whole frame.
    pub fn decode_one(&self, mut bytes: Bytes) -> Result<Frame, DecodeError> {
        let total = self
            .peek_len(&bytes)?
            .ok_or(DecodeError::FrameTooShort { declared: 0 })?;
        if total != bytes.len() {
            return Err(DecodeError::FieldsOverrun {
                fields_len: 0,
                available: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            });
        }
        let (version, command, flags, fields_len) = parse_fixed(&bytes)?;
        bytes.advance(FIXED_HEADER_LEN);
        let payload = bytes.split_off(fields_len);
        Ok(Frame {
            version,
            command,
            flags,
            fields: bytes,
            payload,
        })
    }
}

/// Parses and checks the fixed header of a complete frame.
fn parse_fixed(frame: &[u8]) -> Result<(u8, u8, u16, usize), DecodeError> {
    let Some(header) = frame.first_chunk::<FIXED_HEADER_LEN>() else {
        return Err(DecodeError::FrameTooShort { declared: 0 });
    };
    let version = header[4];
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let command = header[5];
    let flags = u16::from_le_bytes([header[6], header[7]]);
    let fields_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let available = frame.len() - FIXED_HEADER_LEN;
    if fields_len as usize > available {
        return Err(DecodeError::FieldsOverrun {
            fields_len,
            available: u32::try_from(available).unwrap_or(u32::MAX),
        });
    }
    Ok((version, command, flags, fields_len as usize))
}
