//! Bookmark subscriptions: parsing where a subscription starts in the
//! journal (and where a range ends), and the rule that hands a replaying
//! subscription over to live delivery with no gap and no duplicate.
//!
//! The hand-over rule. A topic processor is the only writer of its topics,
//! so it knows the highest bookmark it has appended, `B`. The replay reads
//! the journal in bookmark order; when it has read everything below `R` it
//! asks the processor to go live. If `R > B`, every record of the
//! processor's topics up to `B` has been replayed and every later one will
//! be delivered live: the processor registers the subscription at once and
//! answers "live from `B + 1`". Otherwise the journal holds records the
//! replay has not read yet: the processor answers "behind" and the replay
//! reads on, then asks again. A pattern subscription spans processors; each
//! goes live on its own, and the replay stops delivering a processor's
//! records from the point it went live.

use std::time::UNIX_EPOCH;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained message.
    Epoch,
    /// The messages after this bookmark (the last one a subscriber processed).
    After(u64),
    /// The messages from this bookmark on (a range's inclusive start).
    At(u64),
    /// The messages stamped at or after this time (ns since the Unix epoch).
    Time(u64),
}

/// Where a range ends (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndAt {
    /// Before this bookmark.
    Bookmark(u64),
    /// Before this time (ns since the Unix epoch).
    Time(u64),
}

/// What to do when the start bookmark is no longer (or not yet) in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotFound {
    /// Refuse the subscription with the journal's explanation.
    #[default]
    Fail,
    /// Start from the oldest retained message instead.
    Epoch,
    /// Start live instead.
    Now,
}

/// A parsed `bookmark_spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySpec {
    /// Where the replay starts.
    pub start: StartAt,
    /// Where a range ends; `None` continues live.
    pub end: Option<EndAt>,
    /// Fallback for an unknown start bookmark.
    pub not_found: NotFound,
}

impl EndAt {
    /// Whether a record with this bookmark and time is past the end.
    #[must_use]
    pub fn reached(self, bookmark: u64, time_ns: u64) -> bool {
        match self {
            Self::Bookmark(end) => bookmark >= end,
            Self::Time(end) => time_ns >= end,
        }
    }
}

fn time_ns(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    u64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()
}

fn start(text: &str) -> Result<StartAt, String> {
    match text.trim() {
        "epoch" | "0" => Ok(StartAt::Epoch),
        digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().map(StartAt::After).map_err(|_| format!("bookmark `{digits}` is too large"))
        }
        other => time_ns(other)
            .map(StartAt::Time)
            .ok_or_else(|| format!("`{other}` is not `epoch`, a bookmark number or an RFC 3339 UTC time such as 2026-11-23T10:00:00Z")),
    }
}

fn end(text: &str) -> Result<EndAt, String> {
    match text.trim() {
        digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits
            .parse()
            .map(EndAt::Bookmark)
            .map_err(|_| format!("bookmark `{digits}` is too large")),
        other => time_ns(other).map(EndAt::Time).ok_or_else(|| {
            format!("range end `{other}` is not a bookmark number or an RFC 3339 UTC time")
        }),
    }
}

/// Parses a `bookmark_spec`: `now`, `epoch`, a bookmark, an RFC 3339 UTC
/// time, or a range `[from:to)`. Returns `None` for `now` (live only).
///
/// # Errors
/// A message saying what forms are accepted.
pub fn parse(text: &str, not_found: NotFound) -> Result<Option<ReplaySpec>, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(None);
    }
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner
            .strip_suffix(')')
            .ok_or_else(|| format!("range `{text}` must end with `)`: [from:to)"))?;
        // Times contain ':' too: the range separator is the last ':' that
        // leaves a valid end, tried from the right.
        let mut candidates: Vec<usize> = inner.match_indices(':').map(|(i, _)| i).collect();
        candidates.reverse();
        for at in candidates {
            let (from, to) = (&inner[..at], &inner[at + 1..]);
            if let (Ok(start), Ok(end)) = (start(from), end(to)) {
                // A range is an interval: its start bookmark is included.
                let start = match start {
                    StartAt::After(bookmark) => StartAt::At(bookmark),
                    other => other,
                };
                return Ok(Some(ReplaySpec {
                    start,
                    end: Some(end),
                    not_found,
                }));
            }
        }
        return Err(format!(
            "range `{text}` is not [from:to) with from = epoch, a bookmark or a time and to = a bookmark or a time"
        ));
    }
    Ok(Some(ReplaySpec {
        start: start(text)?,
        end: None,
        not_found,
    }))
}

/// A processor's answer to "go live at `position`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoLive {
    /// Registered: records of this processor from `from` on are delivered live.
    Live {
        /// First bookmark delivered live.
        from: u64,
    },
    /// The journal holds records of this processor at or beyond `position`:
    /// read up to past `appended` and ask again.
    Behind {
        /// The highest bookmark this processor has appended.
        appended: u64,
    },
    /// The subscription is gone (unsubscribed, connection closed).
    Gone,
}

/// The hand-over rule: `read_below` is the replay's position (every record
/// below it has been read), `appended` the processor's highest appended
/// bookmark.
#[must_use]
pub fn go_live(read_below: u64, appended: u64) -> GoLive {
    if read_below > appended {
        GoLive::Live { from: appended + 1 }
    } else {
        GoLive::Behind { appended }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(parse("now", NotFound::Fail), Ok(None));
        let spec = |s: &str| parse(s, NotFound::Fail).unwrap().unwrap();
        assert_eq!(spec("epoch").start, StartAt::Epoch);
        assert_eq!(spec("42").start, StartAt::After(42));
        assert_eq!(
            spec("2026-11-23T10:00:00Z").start,
            StartAt::Time(1_795_428_000_000_000_000)
        );
        let range = spec("[epoch:100)");
        assert_eq!(
            (range.start, range.end),
            (StartAt::Epoch, Some(EndAt::Bookmark(100)))
        );
        let range = spec("[3:6)");
        assert_eq!(
            (range.start, range.end),
            (StartAt::At(3), Some(EndAt::Bookmark(6)))
        );
        let range = spec("[2026-11-23T10:00:00Z:2026-11-23T11:00:00.5Z)");
        assert_eq!(range.start, StartAt::Time(1_795_428_000_000_000_000));
        assert_eq!(range.end, Some(EndAt::Time(1_795_431_600_500_000_000)));
        for bad in ["", "yesterday", "[1:2]", "[x:1)", "99999999999999999999999"] {
            assert!(parse(bad, NotFound::Fail).is_err(), "{bad}");
        }
    }

    #[test]
    fn hand_over_needs_the_replay_past_the_processors_appends() {
        assert_eq!(go_live(11, 10), GoLive::Live { from: 11 });
        assert_eq!(go_live(10, 10), GoLive::Behind { appended: 10 });
        assert_eq!(go_live(1, 0), GoLive::Live { from: 1 });
    }
}
