//! The client's errors.

use statecast_protocol::{AckType, DecodeError, EncodeError, ReasonCode};
use thiserror::Error;

/// Everything a client call can fail with.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The OS error.
        message: String,
    },
    /// The broker refused or failed a command.
    #[error("{ack_type} ack: {code}: {reason}")]
    Failed {
        /// Which ack carried the failure.
        ack_type: &'static str,
        /// The broker's reason code.
        code: ReasonCode,
        /// The broker's explanation.
        reason: String,
    },
    /// The connection is closed; the text says why.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The broker sent bytes that are not valid protocol.
    #[error("protocol error from the broker: {0}")]
    Protocol(#[from] DecodeError),
    /// A command could not be encoded (e.g. a topic over 65,535 bytes).
    #[error("cannot encode the command: {0}")]
    Encode(#[from] EncodeError),
    /// A deadline passed.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl Error {
    pub(crate) fn failed(ack_type: AckType, code: ReasonCode, reason: Option<&str>) -> Self {
        Self::Failed {
            ack_type: ack_type.name(),
            code,
            reason: reason.unwrap_or("no reason given").to_owned(),
        }
    }
}
