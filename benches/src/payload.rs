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
//!
//! W2's keyed updates ([`KeyedBuilder`]) have the same shape, with the
//! update's key in `id` (`"id":"k4711"`, key 4711 of 10,000) and the padding
//! shortened by the key's extra digits, so every update is exactly `size`
//! bytes too.
//!
//! The 1M-record SOW workload uses another document, [`order`]: the filter
//! bench's 1 KiB order (`filter/benches/support/messages.rs`, included
//! here), numbered as `sow/benches/query.rs` numbers its records, so that a
//! full-scan query with the filter bench's 5-predicate filter
//! ([`ORDER_FILTER`]) through the broker evaluates the same bytes as the
//! SOW library's own scan benchmark.

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

/// Builds W2 keyed updates of one size: a W1-shaped JSON document whose
/// `id` is the key (`k<key>`), `ts` and `seq` at the same offsets as W1's.
#[derive(Debug)]
pub struct KeyedBuilder {
    size: usize,
    /// Up to and including `"id":"k`.
    head: Vec<u8>,
    /// From the key's closing quote up to the padding's opening quote.
    tail: &'static [u8],
    block: BytesMut,
}

impl KeyedBuilder {
    const TAIL: &'static [u8] = br#"","symbol":"S00","price":12.5,"qty":100,"side":"buy","pad":""#;
    /// The digits of the largest key (`u64::MAX`).
    const MAX_KEY_DIGITS: usize = 20;

    /// A builder of `size`-byte updates.
    ///
    /// # Errors
    /// When `size` is too small for the largest key without padding.
    pub fn new(size: usize) -> anyhow::Result<Self> {
        let slot = " ".repeat(SLOT);
        let head = format!(r#"{{"ts":{slot},"seq":{slot},"id":"k"#).into_bytes();
        debug_assert_eq!(&head[SEQ_AT - 7..SEQ_AT], br#","seq":"#);
        let min = head.len() + Self::MAX_KEY_DIGITS + Self::TAIL.len() + 2;
        anyhow::ensure!(
            size >= min,
            "update size {size} is below the minimum of {min} bytes"
        );
        Ok(Self {
            size,
            head,
            tail: Self::TAIL,
            block: BytesMut::new(),
        })
    }

    /// The update of `key` sent at `ts` with sequence number `seq`.
    pub fn build(&mut self, ts: u64, seq: u64, key: u64) -> Bytes {
        if self.block.capacity() < self.size {
            self.block = BytesMut::with_capacity(self.size * 64);
        }
        let start = self.block.len();
        self.block.extend_from_slice(&self.head);
        write_slot(&mut self.block[start + TS_AT..start + TS_AT + SLOT], ts);
        write_slot(&mut self.block[start + SEQ_AT..start + SEQ_AT + SLOT], seq);
        let mut digits = [0u8; 20];
        let key_digits = decimal(key, &mut digits);
        self.block.extend_from_slice(key_digits);
        self.block.extend_from_slice(self.tail);
        let symbol_at = start + self.head.len() + key_digits.len() + r#"","symbol":"S"#.len();
        write_digits(&mut self.block[symbol_at..symbol_at + 2], key % 100);
        let pad = self.size - (self.block.len() - start) - 2;
        self.block.resize(self.block.len() + pad, b'x');
        self.block.extend_from_slice(br#""}"#);
        debug_assert_eq!(self.block.len() - start, self.size);
        self.block.split().freeze()
    }
}

/// The decimal digits of `value`, in the end of `buf`.
fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[i..];
        }
    }
}

/// The key written by [`KeyedBuilder`] (`k<key>` in `id`), `None` when
/// `message` is not a W2 update.
pub fn parse_key(message: &[u8]) -> Option<&[u8]> {
    let rest = message.get(SEQ_AT + SLOT..)?;
    let rest = rest.strip_prefix(br#","id":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

// The filter bench's order message and 5-predicate filter (shared with
// sow/benches/query.rs, which includes the same file).
#[allow(dead_code)]
#[path = "../../filter/benches/support/messages.rs"]
mod orders;

/// The filter bench's 5-predicate filter: `/symbol IN ('IBM','MSFT') AND
/// /price > 100 AND /trader/desk = 'FX' AND NOT /cancelled AND /qty >= 10`.
pub const ORDER_FILTER: &str = orders::FILTER;

/// Order `key`, as `sow/benches/query.rs` builds its record `key`: the
/// filter bench's 1 KiB order with `id` `ord-20261123-<key, 9 digits>`,
/// symbol `IBM` when `key % 10 == 0`, `MSFT` when 1, else `S<key % 1000>`,
/// `qty` `key % 50`. [`ORDER_FILTER`] matches 16 % of them (IBM or MSFT and
/// qty ≥ 10).
pub fn order(key: u64) -> Bytes {
    let symbol = match key % 10 {
        0 => "IBM".to_owned(),
        1 => "MSFT".to_owned(),
        _ => format!("S{}", key % 1000),
    };
    let qty = u32::try_from(key % 50).unwrap_or(0);
    let text = String::from_utf8(orders::message(&symbol, qty)).unwrap_or_default();
    Bytes::from(
        text.replacen(
            "ord-20261123-000123456",
            &format!("ord-20261123-{key:09}"),
            1,
        )
        .into_bytes(),
    )
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
    fn keyed_updates_are_json_of_the_exact_size_with_their_key() {
        let mut builder = KeyedBuilder::new(1024).unwrap();
        for (ts, seq, key) in [
            (0, 0, 0),
            (1, 7, 7),
            (99, 123_456, 9_999),
            (u64::MAX, 1, u64::MAX),
        ] {
            let message = builder.build(ts, seq, key);
            assert_eq!(message.len(), 1024);
            assert_eq!(parse(&message), Some((ts, seq)));
            let id = format!("k{key}");
            assert_eq!(parse_key(&message), Some(id.as_bytes()));
            let value: serde_json::Value = serde_json::from_slice(&message).unwrap();
            assert_eq!(value["id"].as_str(), Some(id.as_str()));
            assert_eq!(value["seq"].as_u64(), Some(seq));
            assert_eq!(
                value["symbol"].as_str(),
                Some(format!("S{:02}", key % 100).as_str())
            );
        }
        assert!(KeyedBuilder::new(100).is_err());
        assert_eq!(parse_key(b"hello"), None);
    }

    #[test]
    fn orders_are_the_filter_bench_s_with_their_key() {
        let order_7 = order(7);
        let value: serde_json::Value = serde_json::from_slice(&order_7).unwrap();
        assert_eq!(value["id"].as_str(), Some("ord-20261123-000000007"));
        assert_eq!(value["symbol"].as_str(), Some("S7"));
        assert_eq!(value["qty"].as_u64(), Some(7));
        assert!((1000..1100).contains(&order_7.len()));
        let value: serde_json::Value = serde_json::from_slice(&order(1_000_011)).unwrap();
        assert_eq!(value["id"].as_str(), Some("ord-20261123-001000011"));
        assert_eq!(value["symbol"].as_str(), Some("MSFT"));
        assert_eq!(value["qty"].as_u64(), Some(11));
        assert!(ORDER_FILTER.contains("/trader/desk = 'FX'"));
    }

    #[test]
    fn other_payloads_do_not_parse() {
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(&[b'x'; 100]), None);
    }
}
