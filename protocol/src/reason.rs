//! The registry of reason codes carried by failure acks. Codes are stable:
//! a code, once published, keeps its meaning forever. SPEC.md lists this
//! table; a test checks the two agree.

/// Why a command failed (or, for code 0, that it did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// Success.
    None,
    /// The bytes do not form a valid frame.
    MalformedFrame,
    /// The frame is larger than the broker accepts (before or after logon).
    FrameTooLarge,
    /// The frame's protocol version is not supported.
    UnsupportedVersion,
    /// The command code is unknown or not implemented by this broker.
    UnknownCommand,
    /// A command other than logon arrived before logon.
    NotLoggedOn,
    /// A second logon on the same connection.
    AlreadyLoggedOn,
    /// A required field is missing.
    MissingField,
    /// A field has the wrong type, length or encoding.
    InvalidField,
    /// The topic is empty, too long, or an invalid regular expression.
    InvalidTopic,
    /// The subscription id is already in use on this connection.
    DuplicateSubId,
    /// No subscription with that id on this connection.
    UnknownSubId,
    /// The client did not log on in time.
    LogonTimeout,
    /// Nothing was received for two heartbeat intervals.
    HeartbeatTimeout,
    /// The broker's connection cap is reached.
    TooManyConnections,
    /// The connection's subscription cap is reached.
    TooManySubscriptions,
    /// The client did not read its messages fast enough.
    SlowClient,
    /// The broker is shutting down.
    ShuttingDown,
    /// The content filter does not parse or is not allowed here.
    InvalidFilter,
    /// The requested ack type cannot be given for this command or topic.
    AckNotAvailable,
    /// The broker failed internally; the message names the cause.
    Internal,
    /// A publish whose sequence number was already persisted for its
    /// publisher: acknowledged (status success) and not published again.
    Duplicate,
    /// The journal could not take the message (disk full, record too large,
    /// journal stopped after an I/O failure); it was not published.
    JournalError,
    /// A bookmark subscription's start is not in the journal (removed by
    /// retention, or beyond its end), or the replay could not read on.
    BookmarkNotFound,
    /// Another connection logged on with this connection's client name;
    /// this (older) one is closed.
    ClientReplaced,
    /// The topic has no SOW (no `[[sow.topics]]` entry covers it).
    NotASowTopic,
    /// A message for a SOW topic has no usable key: a key field is missing
    /// or null, the payload is not JSON, or an explicit key is required.
    InvalidSowKey,
    /// A message is larger than its SOW topic's `slab_size` allows.
    SowMessageTooLarge,
    /// The SOW store could not complete the command (storage failure, a
    /// damaged record).
    SowError,
    /// A code this build does not know (from a newer peer).
    Other(u16),
}

/// Every defined reason: code, name, meaning. The order is the code order.
pub const REASONS: &[(u16, &str, &str)] = &[
    (0, "none", "success"),
    (
        1,
        "malformed_frame",
        "the bytes do not form a valid frame; the connection is closed",
    ),
    (
        2,
        "frame_too_large",
        "the frame exceeds the broker's limit (smaller before logon); the connection is closed",
    ),
    (
        3,
        "unsupported_version",
        "the frame's protocol version is not supported; the connection is closed",
    ),
    (
        4,
        "unknown_command",
        "the command code is unknown or not implemented; the connection is closed",
    ),
    (
        5,
        "not_logged_on",
        "a command other than logon arrived before logon; the connection is closed",
    ),
    (
        6,
        "already_logged_on",
        "a second logon on one connection; the connection is closed",
    ),
    (
        7,
        "missing_field",
        "a required header field is absent; the connection is closed",
    ),
    (
        8,
        "invalid_field",
        "a header field has the wrong size or encoding; the connection is closed",
    ),
    (
        9,
        "invalid_topic",
        "the topic is empty, too long, or not a valid regular expression",
    ),
    (
        10,
        "duplicate_sub_id",
        "the subscription id is already in use on this connection",
    ),
    (
        11,
        "unknown_sub_id",
        "no subscription with that id on this connection",
    ),
    (
        12,
        "logon_timeout",
        "no logon within the logon timeout; the connection is closed",
    ),
    (
        13,
        "heartbeat_timeout",
        "nothing received for two heartbeat intervals; the connection is closed",
    ),
    (
        14,
        "too_many_connections",
        "the connection cap is reached; the connection is closed",
    ),
    (
        15,
        "too_many_subscriptions",
        "the connection's subscription cap is reached",
    ),
    (
        16,
        "slow_client",
        "the client's outbound queue passed its limit; the connection is closed",
    ),
    (
        17,
        "shutting_down",
        "the broker is shutting down; the connection is closed",
    ),
    (
        18,
        "invalid_filter",
        "the content filter does not parse or is not allowed here",
    ),
    (
        19,
        "ack_not_available",
        "the requested ack type cannot be given for this command or topic",
    ),
    (
        20,
        "internal",
        "the broker failed internally; the reason text names the cause",
    ),
    (
        21,
        "duplicate",
        "success: this publisher's sequence number was already journaled; the message is not published again",
    ),
    (
        22,
        "journal_error",
        "the journal could not take the message (disk full, record too large, or stopped after an I/O failure); it was not published",
    ),
    (
        23,
        "bookmark_not_found",
        "a bookmark subscription's start is not in the journal (removed by retention, or beyond its end), or its replay could not read on",
    ),
    (
        24,
        "client_replaced",
        "another connection logged on with this client name; this older one is closed",
    ),
    (
        25,
        "not_a_sow_topic",
        "the topic has no State of the World (no sow.topics entry covers it)",
    ),
    (
        26,
        "invalid_sow_key",
        "a message for a SOW topic has no usable key (a key field missing or null, the payload not JSON, or an explicit sow_key required); it was not published",
    ),
    (
        27,
        "sow_message_too_large",
        "the message is larger than its SOW topic's slab_size allows; it was not published",
    ),
    (
        28,
        "sow_error",
        "the SOW store could not complete the command (storage failure, damaged record); the reason text names the cause",
    ),
];

impl ReasonCode {
    /// The wire value.
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Self::None => 0,
            Self::MalformedFrame => 1,
            Self::FrameTooLarge => 2,
            Self::UnsupportedVersion => 3,
            Self::UnknownCommand => 4,
            Self::NotLoggedOn => 5,
            Self::AlreadyLoggedOn => 6,
            Self::MissingField => 7,
            Self::InvalidField => 8,
            Self::InvalidTopic => 9,
            Self::DuplicateSubId => 10,
            Self::UnknownSubId => 11,
            Self::LogonTimeout => 12,
            Self::HeartbeatTimeout => 13,
            Self::TooManyConnections => 14,
            Self::TooManySubscriptions => 15,
            Self::SlowClient => 16,
            Self::ShuttingDown => 17,
            Self::InvalidFilter => 18,
            Self::AckNotAvailable => 19,
            Self::Internal => 20,
            Self::Duplicate => 21,
            Self::JournalError => 22,
            Self::BookmarkNotFound => 23,
            Self::ClientReplaced => 24,
            Self::NotASowTopic => 25,
            Self::InvalidSowKey => 26,
            Self::SowMessageTooLarge => 27,
            Self::SowError => 28,
            Self::Other(code) => code,
        }
    }

    /// The code for a wire value; unknown values are kept as [`ReasonCode::Other`].
    #[must_use]
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => Self::None,
            1 => Self::MalformedFrame,
            2 => Self::FrameTooLarge,
            3 => Self::UnsupportedVersion,
            4 => Self::UnknownCommand,
            5 => Self::NotLoggedOn,
            6 => Self::AlreadyLoggedOn,
            7 => Self::MissingField,
            8 => Self::InvalidField,
            9 => Self::InvalidTopic,
            10 => Self::DuplicateSubId,
            11 => Self::UnknownSubId,
            12 => Self::LogonTimeout,
            13 => Self::HeartbeatTimeout,
            14 => Self::TooManyConnections,
            15 => Self::TooManySubscriptions,
            16 => Self::SlowClient,
            17 => Self::ShuttingDown,
            18 => Self::InvalidFilter,
            19 => Self::AckNotAvailable,
            20 => Self::Internal,
            21 => Self::Duplicate,
            22 => Self::JournalError,
            23 => Self::BookmarkNotFound,
            24 => Self::ClientReplaced,
            25 => Self::NotASowTopic,
            26 => Self::InvalidSowKey,
            27 => Self::SowMessageTooLarge,
            28 => Self::SowError,
            other => Self::Other(other),
        }
    }

    /// The code's name as SPEC.md spells it (`"other"` for unknown codes).
    #[must_use]
    pub fn name(self) -> &'static str {
        REASONS
            .iter()
            .find(|(code, _, _)| *code == self.code())
            .map_or("other", |(_, name, _)| *name)
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_enum_agree() {
        for (index, (code, name, _)) in REASONS.iter().enumerate() {
            assert_eq!(
                usize::from(*code),
                index,
                "REASONS is in code order without gaps"
            );
            let reason = ReasonCode::from_code(*code);
            assert!(
                !matches!(reason, ReasonCode::Other(_)),
                "code {code} has an enum variant"
            );
            assert_eq!(reason.code(), *code);
            assert_eq!(reason.name(), *name);
        }
        assert_eq!(ReasonCode::from_code(999), ReasonCode::Other(999));
    }
}
