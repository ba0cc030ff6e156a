//! The W1 message: a JSON object of a fixed size whose send timestamp and
//! sequence number sit at fixed offsets, so subscribers read them without a
//! JSON parser.
//!
//! ```text
//! {"ts":   1000000123456789,"seq":                  42,"id":"k042","symbol":"S42",
//!  "price":12.5,"qty":100,"side":"buy","pad":"xxxx…"}
//! ```
//!
//! (one line on the wire). The numbers are right-aligned in 20-byte slots
//! padded with spaces — whitespace before a JSON value is valid JSON, so the
//! message stays a well-formed object of exactly `size` bytes. `ts` is
//! nanoseconds on the process's monotonic clock ([`now_ns`]), shared by the
//! publishers and subscribers of one run; `seq` is
//! `publisher × SEQ_PUBLISHER_STRIDE + n`.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

/// Width of the `ts` and `seq` slots (the digits of `u64::MAX`).
const SLOT: usize = 20;
/// Where the `ts` digits start: after `{"ts":`.
const TS_AT: usize = 6;
/// Where the `seq` digits start: after `{"ts":<slot>,"seq":`.
const SEQ_AT: usize = TS_AT + SLOT + 7;
/// `seq` values of publisher `p` start at `p × SEQ_PUBLISHER_STRIDE`.
pub const SEQ_PUBLISHER_STRIDE: u64 = 10_000_000_000;

/// Nanoseconds since the first call in this process, on the monotonic clock.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Builds W1 messages of one size.
#[derive(Debug)]
pub struct MessageBuilder {
    template: Vec<u8>,
    /// Messages are carved out of one larger block, so that building one is
    /// a copy, not an allocation.
    block: BytesMut,
}

impl MessageBuilder {
    /// The smallest message size: the JSON without padding.
    pub fn min_size() -> usize {
        Self::shape(0).len()
    }

    fn shape(pad: usize) -> Vec<u8> {
        let slot = " ".repeat(SLOT);
        format!(
            r#"{{"ts":{slot},"seq":{slot},"id":"k000","symbol":"S00","price":12.5,"qty":100,"side":"buy","pad":"{}"}}"#,
            "x".repeat(pad)
        )
        .into_bytes()
    }

    /// A builder of `size`-byte messages.
    ///
    /// # Errors
    /// When `size` is below [`MessageBuilder::min_size`].
    pub fn new(size: usize) -> anyhow::Result<Self> {
        let min = Self::min_size();
        anyhow::ensure!(
            size >= min,
            "message size {size} is below the minimum of {min} bytes"
        );
        let template = Self::shape(size - min);
        debug_assert_eq!(template.len(), size);
        debug_assert_eq!(&template[SEQ_AT - 7..SEQ_AT], br#","seq":"#);
        Ok(Self {
            template,
            block: BytesMut::new(),
        })
    }

    /// The message for send time `ts` and sequence number `seq`.
    pub fn build(&mut self, ts: u64, seq: u64) -> Bytes {
        let size = self.template.len();
        if self.block.capacity() < size {
            self.block = BytesMut::with_capacity(size * 64);
        }
        self.block.extend_from_slice(&self.template);
        write_slot(&mut self.block[TS_AT..TS_AT + SLOT], ts);
        write_slot(&mut self.block[SEQ_AT..SEQ_AT + SLOT], seq);
        let id_at = SEQ_AT + SLOT + r#","id":"k"#.len();
        write_digits(&mut self.block[id_at..id_at + 3], seq % 1000);
        let symbol_at = id_at + r#"000","symbol":"S"#.len();
        write_digits(&mut self.block[symbol_at..symbol_at + 2], seq % 100);
        self.block.split().freeze()
    }
}

/// Right-aligns `value` in `slot`, spaces before it.
fn write_slot(slot: &mut [u8], mut value: u64) {
    let mut i = slot.len();
    loop {
        i -= 1;
        slot[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    slot[..i].fill(b' ');
}

/// Writes the last `slot.len()` decimal digits of `value`, zero-padded.
fn write_digits(slot: &mut [u8], mut value: u64) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn read_slot(slot: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    let mut digits = 0;
    for &byte in slot {
        match byte {
            b' ' if digits == 0 => {}
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
                digits += 1;
            }
            _ => return None,
        }
    }
    (digits > 0).then_some(value)
}

/// Reads `(ts, seq)` from a W1 message; `None` when it is not one.
pub fn parse(message: &[u8]) -> Option<(u64, u64)> {
    let ts = read_slot(message.get(TS_AT..TS_AT + SLOT)?)?;
    let seq = read_slot(message.get(SEQ_AT..SEQ_AT + SLOT)?)?;
    Some((ts, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json_of_the_exact_size_and_parse_back() {
        let mut builder = MessageBuilder::new(1024).unwrap();
        for (ts, seq) in [(0, 0), (1, 7), (123_456_789_012, 42), (u64::MAX, u64::MAX)] {
            let message = builder.build(ts, seq);
            assert_eq!(message.len(), 1024);
            assert_eq!(parse(&message), Some((ts, seq)));
            let value: serde_json::Value = serde_json::from_slice(&message).unwrap();
            assert_eq!(value["ts"].as_u64(), Some(ts));
            assert_eq!(value["seq"].as_u64(), Some(seq));
            assert_eq!(value["price"].as_f64(), Some(12.5));
            assert_eq!(value["side"].as_str(), Some("buy"));
        }
        let message = builder.build(5, 1_234);
        let value: serde_json::Value = serde_json::from_slice(&message).unwrap();
        assert_eq!(value["id"].as_str(), Some("k234"));
        assert_eq!(value["symbol"].as_str(), Some("S34"));
    }

    #[test]
    fn the_smallest_size_has_no_padding_and_smaller_is_refused() {
        let min = MessageBuilder::min_size();
        assert_eq!(MessageBuilder::new(min).unwrap().build(1, 2).len(), min);
        assert!(MessageBuilder::new(min - 1).is_err());
    }

    #[test]
    fn other_payloads_do_not_parse() {
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(&[b'x'; 100]), None);
    }
}
