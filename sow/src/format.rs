//! Bytes on disk (and in memory slabs): the slab file header, the record
//! header, and the stable hash behind SowKeys. `sow/README.md` documents every
//! byte; the constants here are the source of truth.

/// First bytes of every slab file.
pub const SLAB_MAGIC: [u8; 8] = *b"SCSOWSLB";
/// Format version written and accepted.
pub const SLAB_VERSION: u32 = 1;
/// Size of the slab file header.
pub const FILE_HEADER_BYTES: usize = 64;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 40;
/// Bytes 4..6 of every record header.
pub const RECORD_MAGIC: u16 = 0x5253; // "SR" little-endian
/// Records start and end on this alignment.
pub const RECORD_ALIGN: usize = 8;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The latest message of a key.
    Upsert = 1,
    /// The key was deleted (durable stores only).
    Tombstone = 2,
    /// Everything before it in log order is durable; names the bookmark
    /// covered and the slabs that hold the state.
    Checkpoint = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Upsert),
            2 => Some(Kind::Tombstone),
            3 => Some(Kind::Checkpoint),
            _ => None,
        }
    }
}

/// Record flag: the key was given by the publisher, not computed.
pub const FLAG_EXPLICIT_KEY: u8 = 1;

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC32C of header bytes 4..40 and the payload.
    pub crc: u32,
    /// Record kind.
    pub kind: Kind,
    /// Flags.
    pub flags: u8,
    /// Payload length in bytes.
    pub len: u32,
    /// The SowKey.
    pub key: u64,
    /// Journal bookmark of the message (for a checkpoint: covered bookmark).
    pub bookmark: u64,
    /// Nanoseconds since the Unix epoch, from the caller.
    pub timestamp_ns: u64,
}

impl RecordHeader {
    /// Bytes the record takes in a slab: header, payload, padding.
    pub fn span(&self) -> usize {
        record_span(self.len as usize)
    }
}

/// Bytes a record with `len` payload bytes takes.
pub fn record_span(len: usize) -> usize {
    (RECORD_HEADER_BYTES + len).next_multiple_of(RECORD_ALIGN)
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    if let Some(s) = bytes.get(at..at + 2) {
        b.copy_from_slice(s);
    }
    u16::from_le_bytes(b)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

/// Encodes a record header for `payload` (computing the CRC).
pub fn encode_record_header(
    kind: Kind,
    flags: u8,
    key: u64,
    bookmark: u64,
    timestamp_ns: u64,
    payload: &[u8],
) -> [u8; RECORD_HEADER_BYTES] {
    let mut h = [0u8; RECORD_HEADER_BYTES];
    h[4..6].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[6] = kind as u8;
    h[7] = flags;
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[16..24].copy_from_slice(&key.to_le_bytes());
    h[24..32].copy_from_slice(&bookmark.to_le_bytes());
    h[32..40].copy_from_slice(&timestamp_ns.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[4..]), payload);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why bytes at a record position are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// All-zero header: the end of the written data.
    End,
    /// The header is not a record header.
    BadHeader,
    /// The length runs past the end of the slab.
    BadLength,
    /// The CRC does not match.
    BadCrc,
}

impl BadRecord {
    /// Words for reports.
    pub fn describe(self) -> &'static str {
        match self {
            BadRecord::End => "end of data",
            BadRecord::BadHeader => "not a record header (magic or kind wrong)",
            BadRecord::BadLength => "record length runs past the end of the slab",
            BadRecord::BadCrc => "CRC32C mismatch",
        }
    }
}

/// Decodes and checks the record at `at` in `slab` (the whole slab image).
pub fn decode_record(slab: &[u8], at: usize) -> Result<RecordHeader, BadRecord> {
    let Some(h) = slab
        .get(at..)
        .and_then(<[u8]>::first_chunk::<RECORD_HEADER_BYTES>)
    else {
        return Err(BadRecord::End);
    };
    if h.iter().all(|&b| b == 0) {
        return Err(BadRecord::End);
    }
    if le_u16(h, 4) != RECORD_MAGIC {
        return Err(BadRecord::BadHeader);
    }
    let Some(kind) = h.get(6).copied().and_then(Kind::from_byte) else {
        return Err(BadRecord::BadHeader);
    };
    let len = le_u32(h, 8);
    let payload_start = at + RECORD_HEADER_BYTES;
    let Some(payload) = slab.get(payload_start..payload_start + len as usize) else {
        return Err(BadRecord::BadLength);
    };
    let crc = le_u32(h, 0);
    if crc32c::crc32c_append(crc32c::crc32c(&h[4..]), payload) != crc {
        return Err(BadRecord::BadCrc);
    }
    Ok(RecordHeader {
        crc,
        kind,
        flags: h.get(7).copied().unwrap_or(0),
        len,
        key: le_u64(h, 16),
        bookmark: le_u64(h, 24),
        timestamp_ns: le_u64(h, 32),
    })
}

/// Decodes a record header without checking the CRC (the payload is read
/// separately); used on the query path for records already checked.
pub fn decode_header_unchecked(h: &[u8]) -> Option<RecordHeader> {
    if h.len() < RECORD_HEADER_BYTES || le_u16(h, 4) != RECORD_MAGIC {
        return None;
    }
    Some(RecordHeader {
        crc: le_u32(h, 0),
        kind: h.get(6).copied().and_then(Kind::from_byte)?,
        flags: h.get(7).copied().unwrap_or(0),
        len: le_u32(h, 8),
        key: le_u64(h, 16),
        bookmark: le_u64(h, 24),
        timestamp_ns: le_u64(h, 32),
    })
}

/// A decoded slab file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Slab sequence number (also in the file name).
    pub seq: u64,
    /// File size.
    pub capacity: u64,
    /// Hash of the topic name.
    pub topic_hash: u64,
}

/// Encodes a slab file header.
pub fn encode_file_header(header: &FileHeader) -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0u8; FILE_HEADER_BYTES];
    h[0..8].copy_from_slice(&SLAB_MAGIC);
    h[8..12].copy_from_slice(&SLAB_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(FILE_HEADER_BYTES as u32).to_le_bytes());
    h[16..24].copy_from_slice(&header.seq.to_le_bytes());
    h[24..32].copy_from_slice(&header.capacity.to_le_bytes());
    h[32..40].copy_from_slice(&header.topic_hash.to_le_bytes());
    let crc = crc32c::crc32c(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes and checks a slab file header.
pub fn decode_file_header(h: &[u8]) -> Result<FileHeader, &'static str> {
    let Some(h) = h.first_chunk::<FILE_HEADER_BYTES>() else {
        return Err("file shorter than its header");
    };
    if h.iter().all(|&b| b == 0) {
        return Err("header never written (all zeros)");
    }
    if h.get(0..8) != Some(&SLAB_MAGIC[..]) {
        return Err("not a statecast SOW slab (magic)");
    }
    if le_u32(h, 60) != crc32c::crc32c(&h[..60]) {
        return Err("header CRC32C mismatch");
    }
    if le_u32(h, 8) != SLAB_VERSION {
        return Err("unknown format version");
    }
    Ok(FileHeader {
        seq: le_u64(h, 16),
        capacity: le_u64(h, 24),
        topic_hash: le_u64(h, 32),
    })
}

/// The name of slab file `seq`.
pub fn slab_name(seq: u64) -> String {
    format!("{seq:016x}.slab")
}

/// The sequence number in a slab file name, if it is one.
pub fn parse_slab_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".slab")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A stable 64-bit hash (fixed across Rust versions and machines, since
/// keys are stored): 8 bytes at a time through a multiply-xorshift, then the
/// SplitMix64 finaliser.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x5157_4F53_5443_4153; // "SACTSOWQ"
    for part in parts {
        h = (h ^ part.len() as u64).wrapping_mul(K);
        h ^= h >> 29;
        let mut chunks = part.chunks_exact(8);
        for chunk in &mut chunks {
            h = (h ^ le_u64(chunk, 0)).wrapping_mul(K);
            h ^= h >> 29;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            for (to, from) in b.iter_mut().zip(rest) {
                *to = *from;
            }
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K);
            h ^= h >> 29;
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}
