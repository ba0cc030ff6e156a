//! Topics: validation, how a subscription topic is recognised as a pattern,
//! and which processor owns a topic.

use std::sync::Arc;

use statecast_protocol::Utf8;

/// Characters that make a subscription topic a regular expression. `.` and
/// `/` are deliberately absent: they are common in plain topic names.
pub const PATTERN_CHARS: &[char] = &[
    '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
];

/// Upper bound on a compiled pattern's size, so that a hostile pattern
/// cannot take much memory (the regex crate bounds matching time anyway).
const PATTERN_COMPILED_BYTES_MAX: usize = 1 << 20;

/// Whether a subscription topic is a pattern.
#[must_use]
pub fn is_pattern(topic: &str) -> bool {
    topic.contains(PATTERN_CHARS)
}

/// A compiled topic pattern.
#[derive(Debug)]
pub struct Pattern {
    text: Utf8,
    regex: regex::bytes::Regex,
}

impl Pattern {
    /// Compiles `text`.
    ///
    /// # Errors
    /// The regex crate's message when it is not a valid pattern or too big.
    pub fn new(text: Utf8) -> Result<Self, String> {
        let regex = regex::bytes::RegexBuilder::new(text.as_str())
            .size_limit(PATTERN_COMPILED_BYTES_MAX)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { text, regex })
    }

    /// Whether the pattern matches (anywhere in) `topic`.
    #[must_use]
    pub fn matches(&self, topic: &[u8]) -> bool {
        self.regex.is_match(topic)
    }

    /// The pattern as given.
    #[must_use]
    pub fn text(&self) -> &Utf8 {
        &self.text
    }
}

/// What a subscription listens to.
#[derive(Debug, Clone)]
pub enum TopicSpec {
    /// One topic.
    Exact(Utf8),
    /// Every topic the pattern matches.
    Pattern(Arc<Pattern>),
}

/// The processor that owns `topic`, out of `processors`: FNV-1a, stable
/// across runs so placement is reproducible.
#[must_use]
pub fn processor_for(topic: &[u8], processors: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % processors.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_recognition() {
        assert!(!is_pattern("orders"));
        assert!(!is_pattern("orders.eu/fx"));
        assert!(is_pattern("orders.*"));
        assert!(is_pattern("^orders$"));
        assert!(is_pattern("a|b"));
    }

    #[test]
    fn patterns_match_anywhere_unless_anchored() {
        let p = Pattern::new(Utf8::from("rders")).unwrap();
        assert!(p.matches(b"orders"));
        let p = Pattern::new(Utf8::from("^orders/(eu|us)$")).unwrap();
        assert!(p.matches(b"orders/eu"));
        assert!(!p.matches(b"orders/eu2"));
        assert!(Pattern::new(Utf8::from("(")).is_err());
        assert!(
            Pattern::new(Utf8::from("a{10000}{10000}")).is_err(),
            "oversize patterns are refused"
        );
    }

    #[test]
    fn processor_choice_is_stable_and_in_range() {
        for n in 1..8 {
            assert!(processor_for(b"orders", n) < n);
        }
        assert_eq!(processor_for(b"orders", 4), processor_for(b"orders", 4));
        assert_eq!(processor_for(b"x", 0), 0);
    }
}
