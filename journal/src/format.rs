//! Byte layouts of every journal file: segment header, record header,
//! checkpoint slot. Pure code, no I/O. `journal/FORMAT.md` draws the same
//! layouts as box diagrams; the constants and offsets here are the source of
//! truth and the document must follow them.
//!
//! All integers are little-endian. Decoding never panics on any input: every
//! function that reads bytes from a file returns an error or a verdict.

/// Size of the header page at the start of every segment file. Records begin
/// right after it, so record offsets are always ≥ this value.
pub const HEADER_PAGE_BYTES: u64 = 4096;

/// Records start and end on this alignment (the padding after a record is
/// zero and belongs to the record).
pub const RECORD_ALIGN: u64 = 8;

/// Fixed part of every record, before the topic and payload bytes.
pub const RECORD_HEADER_BYTES: usize = 40;

/// Smallest segment the journal accepts: the header page plus room for a few
/// records. Real deployments use 64 MiB – 1 GiB.
pub const SEGMENT_BYTES_MIN: u64 = 2 * HEADER_PAGE_BYTES;

/// Magic of a segment file (first 8 bytes).
pub const SEGMENT_MAGIC: [u8; 8] = *b"SCJOURNL";
/// Current segment format version. History: 1 = first version.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header that carry fields (the rest of the page is zero).
pub const SEGMENT_HEADER_BYTES: usize = 72;

/// Magic of the checkpoint (“synced up to / clean shutdown”) file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SCJCKPT\0";
/// Current checkpoint format version.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Each checkpoint slot occupies one 512-byte sector; the file has two slots.
pub const CHECKPOINT_SLOT_BYTES: u64 = 512;
/// Bytes of a slot that carry fields.
pub const CHECKPOINT_FIELDS_BYTES: usize = 72;
/// Size of the checkpoint file (one page).
pub const CHECKPOINT_FILE_BYTES: u64 = 4096;

const _: () = assert!((RECORD_HEADER_BYTES as u64).is_multiple_of(RECORD_ALIGN));
const _: () = assert!(HEADER_PAGE_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_HEADER_BYTES as u64 <= HEADER_PAGE_BYTES);
const _: () = assert!(2 * CHECKPOINT_SLOT_BYTES <= CHECKPOINT_FILE_BYTES);
const _: () = assert!(CHECKPOINT_FIELDS_BYTES as u64 <= CHECKPOINT_SLOT_BYTES);

/// Rounds `len` up to the record alignment.
pub const fn padded(len: u64) -> u64 {
    len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// The `N` bytes at offset `AT` of a fixed-size block. The offset is checked
/// against the block's size when the caller compiles, so a read never fails.
#[allow(
    clippy::indexing_slicing,
    reason = "AT + N <= LEN is asserted at compile time by the const block before the slice"
)]
fn field<const AT: usize, const N: usize, const LEN: usize>(block: &[u8; LEN]) -> [u8; N] {
    const { assert!(AT + N <= LEN, "field past the end of its block") };
    let mut raw = [0u8; N];
    raw.copy_from_slice(&block[AT..AT + N]);
    raw
}

fn u16_at<const AT: usize, const LEN: usize>(block: &[u8; LEN]) -> u16 {
    u16::from_le_bytes(field::<AT, 2, LEN>(block))
}

fn u32_at<const AT: usize, const LEN: usize>(block: &[u8; LEN]) -> u32 {
    u32::from_le_bytes(field::<AT, 4, LEN>(block))
}

fn u64_at<const AT: usize, const LEN: usize>(block: &[u8; LEN]) -> u64 {
    u64::from_le_bytes(field::<AT, 8, LEN>(block))
}

/// The CRC seed of a segment: CRC32C of (instance id, segment index). Every
/// record's CRC starts from it, so a record copied or misdirected into another
/// segment or another instance's journal fails its check although its own
/// bytes are intact. The seed costs no bytes on disk.
pub fn crc_seed(instance_id: u64, segment_index: u64) -> u32 {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&instance_id.to_le_bytes());
    raw[8..].copy_from_slice(&segment_index.to_le_bytes());
    crc32c::crc32c(&raw)
}

/// The header at offset 0 of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random id of the journal instance; every file of a journal carries it.
    pub instance_id: u64,
    /// Position of the segment in the journal (1, 2, 3, … never reused).
    pub segment_index: u64,
    /// Bookmark of the first record written into this segment.
    pub first_bookmark: u64,
    /// Timestamp (ns since the Unix epoch) of the first record, or of the
    /// activation when the segment holds none yet; ≤ every record timestamp in it.
    pub first_timestamp_ns: u64,
    /// Size of the file in bytes, header page included.
    pub capacity_bytes: u64,
    /// Last bookmark of the previous segment when this one was activated
    /// (normally `first_bookmark - 1`; lower after an unclean stop or a
    /// quarantine, where the journal skips every bookmark that may have been
    /// handed out, so none is ever reused).
    pub previous_last_bookmark: u64,
}

/// What the first page of a segment file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderVerdict {
    /// A valid header.
    Valid(SegmentHeader),
    /// All 64 header bytes are zero: a preallocated file never activated.
    Zero,
    /// The magic is not ours: not a statecast segment.
    BadMagic,
    /// Our magic with a version this build does not read.
    UnsupportedVersion(u32),
    /// Our magic and version but the header CRC does not match (torn or rotten).
    BadCrc,
}

impl SegmentHeader {
    /// Encodes the header into the first [`SEGMENT_HEADER_BYTES`] of a page.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.instance_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.segment_index.to_le_bytes());
        out[32..40].copy_from_slice(&self.first_bookmark.to_le_bytes());
        out[40..48].copy_from_slice(&self.first_timestamp_ns.to_le_bytes());
        out[48..56].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        out[56..64].copy_from_slice(&self.previous_last_bookmark.to_le_bytes());
        // 64..68 reserved, zero.
        let crc = crc32c::crc32c(&out[..68]);
        out[68..72].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header from the start of a segment file. `bytes` may be of
    /// any length; a short input is reported as a bad header.
    pub fn decode(bytes: &[u8]) -> HeaderVerdict {
        let Some(bytes) = bytes.first_chunk::<SEGMENT_HEADER_BYTES>() else {
            return HeaderVerdict::BadMagic;
        };
        if bytes.iter().all(|&b| b == 0) {
            return HeaderVerdict::Zero;
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return HeaderVerdict::BadMagic;
        }
        let version = u32_at::<8, _>(bytes);
        if version != SEGMENT_VERSION {
            return HeaderVerdict::UnsupportedVersion(version);
        }
        if crc32c::crc32c(&bytes[..68]) != u32_at::<68, _>(bytes)
            || u32_at::<12, _>(bytes) != SEGMENT_HEADER_BYTES as u32
        {
            return HeaderVerdict::BadCrc;
        }
        HeaderVerdict::Valid(SegmentHeader {
            instance_id: u64_at::<16, _>(bytes),
            segment_index: u64_at::<24, _>(bytes),
            first_bookmark: u64_at::<32, _>(bytes),
            first_timestamp_ns: u64_at::<40, _>(bytes),
            capacity_bytes: u64_at::<48, _>(bytes),
            previous_last_bookmark: u64_at::<56, _>(bytes),
        })
    }
}

/// The fixed fields of a record as they sit on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Length of header + topic + payload, without the padding.
    pub length: u32,
    /// CRC32C from the segment's seed over bytes 8..length of the record.
    pub crc: u32,
    /// The record's bookmark: its position in the instance's total order.
    pub bookmark: u64,
    /// Nanoseconds since the Unix epoch; never decreases along the journal.
    pub timestamp_ns: u64,
    /// The publisher's own sequence number (0 when `origin` is 0).
    pub origin_sequence: u64,
    /// Publisher id from the de-duplication store, 0 for none.
    pub origin: u32,
    /// Length of the topic bytes that follow the header.
    pub topic_length: u16,
    /// Caller-defined flags; opaque to the journal.
    pub flags: u16,
}

impl RecordHeader {
    /// Encodes the header; the CRC field is written as given.
    pub fn encode(&self) -> [u8; RECORD_HEADER_BYTES] {
        let mut out = [0u8; RECORD_HEADER_BYTES];
        out[0..4].copy_from_slice(&self.length.to_le_bytes());
        out[4..8].copy_from_slice(&self.crc.to_le_bytes());
        out[8..16].copy_from_slice(&self.bookmark.to_le_bytes());
        out[16..24].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        out[24..32].copy_from_slice(&self.origin_sequence.to_le_bytes());
        out[32..36].copy_from_slice(&self.origin.to_le_bytes());
        out[36..38].copy_from_slice(&self.topic_length.to_le_bytes());
        out[38..40].copy_from_slice(&self.flags.to_le_bytes());
        out
    }

    /// Decodes the fixed fields; `None` when fewer than 40 bytes are given.
    pub fn decode(bytes: &[u8]) -> Option<RecordHeader> {
        let bytes = bytes.first_chunk::<RECORD_HEADER_BYTES>()?;
        Some(RecordHeader {
            length: u32_at::<0, _>(bytes),
            crc: u32_at::<4, _>(bytes),
            bookmark: u64_at::<8, _>(bytes),
            timestamp_ns: u64_at::<16, _>(bytes),
            origin_sequence: u64_at::<24, _>(bytes),
            origin: u32_at::<32, _>(bytes),
            topic_length: u16_at::<36, _>(bytes),
            flags: u16_at::<38, _>(bytes),
        })
    }

    /// Length on disk including the zero padding.
    pub fn padded_length(&self) -> u64 {
        padded(u64::from(self.length))
    }
}

/// CRC of a record from its segment's seed: the header from byte 8 on (so the
/// bookmark and every other field is covered), then topic and payload.
pub fn record_crc(
    seed: u32,
    header: &[u8; RECORD_HEADER_BYTES],
    topic: &[u8],
    payload: &[u8],
) -> u32 {
    let crc = crc32c::crc32c_append(seed, &header[8..]);
    let crc = crc32c::crc32c_append(crc, topic);
    crc32c::crc32c_append(crc, payload)
}

/// What sits at a record position, judged from the bytes alone (the caller
/// adds what it knows about bookmarks and synced regions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordVerdict {
    /// A record whose length and CRC check out.
    Valid(RecordHeader),
    /// The length word is zero: the end of written data.
    ZeroLength,
    /// The length is shorter than a header, shorter than header + topic, or
    /// runs past the end of the segment.
    BadLength(u32),
    /// Length fits but the CRC does not match.
    BadCrc(RecordHeader),
}

/// Judges the record at the start of `bytes`, which must extend to the end of
/// the segment (or at least over the whole record); `room` is the number of
/// bytes from the record's offset to the end of the segment.
pub fn check_record(seed: u32, bytes: &[u8], room: u64) -> RecordVerdict {
    let Some(length_word) = bytes.first_chunk::<4>() else {
        return RecordVerdict::ZeroLength;
    };
    let length = u32::from_le_bytes(*length_word);
    if length == 0 {
        return RecordVerdict::ZeroLength;
    }
    let Some(header) = RecordHeader::decode(bytes) else {
        return RecordVerdict::BadLength(length);
    };
    let fixed_and_topic = RECORD_HEADER_BYTES as u64 + u64::from(header.topic_length);
    if u64::from(length) < fixed_and_topic || header.padded_length() > room {
        return RecordVerdict::BadLength(length);
    }
    // `length` ≥ header + topic was checked above, so the splits succeed.
    let Some((fixed, topic, payload)) = bytes
        .get(..length as usize)
        .and_then(<[u8]>::split_first_chunk::<RECORD_HEADER_BYTES>)
        .and_then(|(fixed, rest)| {
            let (topic, payload) = rest.split_at_checked(usize::from(header.topic_length))?;
            Some((fixed, topic, payload))
        })
    else {
        return RecordVerdict::BadLength(length);
    };
    let crc = record_crc(seed, fixed, topic, payload);
    if crc != header.crc {
        return RecordVerdict::BadCrc(header);
    }
    RecordVerdict::Valid(header)
}

/// One slot of the checkpoint file: “every record up to `bookmark`, which
/// ends at `offset` of segment `segment_index`, was synced”, and whether the
/// journal was shut down cleanly right after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Instance the checkpoint belongs to.
    pub instance_id: u64,
    /// Increases with every slot write; the valid slot with the highest wins.
    pub generation: u64,
    /// Segment holding the synced end.
    pub segment_index: u64,
    /// End (exclusive) of the synced bytes in that segment.
    pub offset: u64,
    /// Last synced bookmark (0 when the journal holds no record).
    pub bookmark: u64,
    /// Written by a clean shutdown after the final sync: nothing follows
    /// `offset` in the segment and no later segment holds records.
    pub clean: bool,
    /// No bookmark above this was handed out (the appender's reservation).
    /// After an unclean stop the journal continues above it, so a bookmark
    /// of a record lost with the un-synced tail is never given to another.
    pub reserved_bookmark: u64,
}

impl Checkpoint {
    /// Encodes a slot's fields.
    pub fn encode(&self) -> [u8; CHECKPOINT_FIELDS_BYTES] {
        let mut out = [0u8; CHECKPOINT_FIELDS_BYTES];
        out[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        out[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&u32::from(self.clean).to_le_bytes());
        out[16..24].copy_from_slice(&self.instance_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.generation.to_le_bytes());
        out[32..40].copy_from_slice(&self.segment_index.to_le_bytes());
        out[40..48].copy_from_slice(&self.offset.to_le_bytes());
        out[48..56].copy_from_slice(&self.bookmark.to_le_bytes());
        out[56..64].copy_from_slice(&self.reserved_bookmark.to_le_bytes());
        // 64..68 reserved.
        let crc = crc32c::crc32c(&out[..68]);
        out[68..72].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes one slot; `None` when it is not a valid slot of this version.
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let bytes = bytes.first_chunk::<CHECKPOINT_FIELDS_BYTES>()?;
        if bytes[0..8] != CHECKPOINT_MAGIC || u32_at::<8, _>(bytes) != CHECKPOINT_VERSION {
            return None;
        }
        if crc32c::crc32c(&bytes[..68]) != u32_at::<68, _>(bytes) {
            return None;
        }
        let clean = match u32_at::<12, _>(bytes) {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(Checkpoint {
            instance_id: u64_at::<16, _>(bytes),
            generation: u64_at::<24, _>(bytes),
            segment_index: u64_at::<32, _>(bytes),
            offset: u64_at::<40, _>(bytes),
            bookmark: u64_at::<48, _>(bytes),
            clean,
            reserved_bookmark: u64_at::<56, _>(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            instance_id: 7,
            segment_index: 3,
            first_bookmark: 100,
            first_timestamp_ns: 5,
            capacity_bytes: 1 << 20,
            previous_last_bookmark: 99,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), HeaderVerdict::Valid(header));
        let mut bad = bytes;
        bad[33] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), HeaderVerdict::BadCrc);
        assert_eq!(SegmentHeader::decode(&[0u8; 72]), HeaderVerdict::Zero);
        assert_eq!(SegmentHeader::decode(&bytes[..10]), HeaderVerdict::BadMagic);
        let mut future = bytes;
        future[8] = 9;
        assert_eq!(
            SegmentHeader::decode(&future),
            HeaderVerdict::UnsupportedVersion(9)
        );
    }

    #[test]
    fn record_check_covers_every_field_and_the_seed() {
        let seed = crc_seed(1, 2);
        let topic = b"orders";
        let payload = b"hello";
        let length = (RECORD_HEADER_BYTES + topic.len() + payload.len()) as u32;
        let mut header = RecordHeader {
            length,
            crc: 0,
            bookmark: 9,
            timestamp_ns: 10,
            origin_sequence: 11,
            origin: 12,
            topic_length: topic.len() as u16,
            flags: 13,
        };
        header.crc = record_crc(seed, &header.encode(), topic, payload);
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(topic);
        bytes.extend_from_slice(payload);
        bytes.resize(padded(u64::from(length)) as usize, 0);
        let room = bytes.len() as u64;
        assert_eq!(
            check_record(seed, &bytes, room),
            RecordVerdict::Valid(header)
        );
        assert!(matches!(
            check_record(crc_seed(1, 3), &bytes, room),
            RecordVerdict::BadCrc(_)
        ));
        for at in 4..length as usize {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            let verdict = check_record(seed, &flipped, room);
            assert!(
                !matches!(verdict, RecordVerdict::Valid(_)),
                "flip at {at} went unnoticed"
            );
        }
        assert!(matches!(
            check_record(seed, &bytes, room - 8),
            RecordVerdict::BadLength(_)
        ));
        assert_eq!(
            check_record(seed, &[0u8; 48], 48),
            RecordVerdict::ZeroLength
        );
    }

    #[test]
    fn checkpoint_round_trips() {
        let checkpoint = Checkpoint {
            instance_id: 1,
            generation: 2,
            segment_index: 3,
            offset: 4096,
            bookmark: 5,
            clean: true,
            reserved_bookmark: 1 << 20,
        };
        assert_eq!(Checkpoint::decode(&checkpoint.encode()), Some(checkpoint));
        let mut bad = checkpoint.encode();
        bad[41] ^= 4;
        assert_eq!(Checkpoint::decode(&bad), None);
    }
}
