//! The SDK's one error type.

use quiver_proto::api::common::ErrorResponse;
use quiver_proto::ErrorCode;

use crate::transport::TransportError;

/// Everything an SDK call can fail with.
///
/// ```
/// use quiver_client::{Error, ErrorCode};
/// let e = Error::Broker { code: ErrorCode::UnknownTopicOrPartition, message: "topic 'x' does not exist".into() };
/// assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition));
/// assert!(e.is_retriable()); // Kafka treats it as retriable: the topic may be being created
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The connection or a stream failed (connect, TLS, reset, timeout).
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The broker answered with an error code for this topic, partition or item.
    #[error("{}: {message}", code.name())]
    Broker { code: ErrorCode, message: String },
    /// The broker refused the whole request (unknown API, unsupported version, malformed).
    #[error("broker refused the request: {} {}", .0.error_code.name(), .0.message.as_deref().unwrap_or(""))]
    Refused(ErrorResponse),
    /// The broker's answer could not be understood.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The client is configured in a way that cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// A record or batch could not be built (too large, bad header).
    #[error("record: {0}")]
    Record(String),
    /// A bounded wait (buffer space, flush, metadata) ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A key or value could not be serialized or deserialized.
    #[error("serialization: {0}")]
    Serialization(String),
    /// The broker does not serve an API this call needs (it is older, or the feature is not
    /// built yet): e.g. committing offsets against a broker without consumer groups.
    #[error("the broker does not support {api}: {reason}")]
    Unsupported { api: &'static str, reason: String },
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
}

impl Error {
    /// An error with a code from the broker.
    pub(crate) fn broker(code: ErrorCode, message: Option<String>) -> Error {
        Error::Broker {
            code,
            message: message.unwrap_or_else(|| code.description().to_string()),
        }
    }

    /// The protocol error code, when the broker gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            Error::Refused(e) => Some(e.error_code),
            _ => None,
        }
    }

    /// Whether trying again (after a metadata refresh and a backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => code.is_retriable(),
            Error::Refused(e) => e.error_code.is_retriable(),
            Error::Transport(t) => t.is_retriable(),
            Error::Timeout(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
