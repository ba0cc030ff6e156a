//! What an evaluation sees besides the filter: the message payload and the
//! few facts about the message that functions can ask for.

/// One message, as a filter sees it.
#[derive(Clone, Copy, Debug)]
pub struct MessageContext<'a> {
    /// The message payload; fields are read from it as JSON.
    pub payload: &'a [u8],
    /// The topic, for `TOPIC_NAME()`.
    pub topic: &'a str,
    /// The message size in bytes, for `MESSAGE_SIZE()`.
    pub message_size: usize,
    /// Seconds since the UNIX epoch, for `UNIX_TIMESTAMP()` (NULL when None).
    /// The caller supplies it so that evaluation never reads a clock.
    pub unix_timestamp: Option<f64>,
}

impl<'a> MessageContext<'a> {
    /// A context for `payload` with no topic, a message size equal to the
    /// payload's length and no clock.
    pub fn new(payload: &'a [u8]) -> Self {
        MessageContext {
            payload,
            topic: "",
            message_size: payload.len(),
            unix_timestamp: None,
        }
    }

    /// Sets the topic.
    #[must_use]
    pub fn with_topic(mut self, topic: &'a str) -> Self {
        self.topic = topic;
        self
    }

    /// Sets the message size.
    #[must_use]
    pub fn with_message_size(mut self, size: usize) -> Self {
        self.message_size = size;
        self
    }

    /// Sets the time `UNIX_TIMESTAMP()` returns.
    #[must_use]
    pub fn with_unix_timestamp(mut self, seconds: f64) -> Self {
        self.unix_timestamp = Some(seconds);
        self
    }
}
