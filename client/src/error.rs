//! The SDK's one error type.

use std::fmt;
use std::net::SocketAddr;

use quiver_proto::api::common::ErrorResponse;
use quiver_proto::ErrorCode;

use crate::client::Node;
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
#[non_exhaustive]
pub enum Error {
    /// The connection or a stream to a broker failed (connect, TLS, reset, timeout). `broker`
    /// names the broker's address (and its id, when the client knows it).
    #[error("{}{error}", BrokerAddr::prefix(.broker.as_ref()))]
    Transport {
        /// The broker the connection was to, when known.
        broker: Option<BrokerAddr>,
        /// What went wrong.
        #[source]
        error: TransportError,
    },
    /// The broker answered with an error code for this topic, partition or item.
    #[error("{}: {message}", code.name())]
    Broker {
        /// The protocol error code.
        code: ErrorCode,
        /// The broker's message, or the code's description.
        message: String,
    },
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
    Unsupported {
        /// The API's name (`OffsetCommit`, ...).
        api: &'static str,
        /// What needed it.
        reason: String,
    },
    /// Records failed to be delivered since the last [`Producer::flush`] or
    /// [`Producer::close`] returned: returned by `flush` and `close` (and their `_timeout`
    /// forms), whether or not each record's own [`Delivery`] or delivery listener also
    /// reported its failure.
    ///
    /// [`Producer::flush`]: crate::Producer::flush
    /// [`Producer::close`]: crate::Producer::close
    /// [`Delivery`]: crate::Delivery
    #[error("{failed} record(s) were not delivered; the first failed with: {first}")]
    DeliveryFailed {
        /// How many records failed.
        failed: u64,
        /// Why the first of them failed.
        first: Box<Error>,
    },
    /// The broker did not accept this client's credentials, or requires credentials the
    /// client was not given, or could not prove that it holds the user's credential. Never
    /// retriable: the same credentials fail the same way.
    #[error("authentication: {message}")]
    Authentication {
        /// The broker's error code (`SaslAuthenticationFailed`, `UnsupportedSaslMechanism`,
        /// `AuthenticationRequired`, ...); `None` when the client itself refused the broker's
        /// answer (a server signature that does not match).
        code: Option<ErrorCode>,
        /// What failed, with the broker's words when it gave some.
        message: String,
    },
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
}

impl From<TransportError> for Error {
    fn from(error: TransportError) -> Error {
        Error::Transport {
            broker: None,
            error,
        }
    }
}

/// The broker a transport error happened with: its address, and its id (and shard) when the
/// client knows them.
///
/// ```
/// use quiver_client::{BrokerAddr, BrokerId, Node};
/// let b = BrokerAddr { addr: "127.0.0.1:9092".parse().unwrap(), node: Some(Node::broker(BrokerId(1))) };
/// assert_eq!(b.to_string(), "broker 1 at 127.0.0.1:9092");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddr {
    /// The address the client connects to.
    pub addr: SocketAddr,
    /// The broker's id (and the shard of its connection), when known.
    pub node: Option<Node>,
}

impl BrokerAddr {
    fn prefix(b: Option<&BrokerAddr>) -> String {
        b.map_or_else(|| "transport: ".to_string(), |b| format!("{b}: "))
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(Node {
                broker,
                shard: Some(s),
            }) => write!(f, "broker {broker} (shard {s}) at {}", self.addr),
            Some(Node { broker, .. }) => write!(f, "broker {broker} at {}", self.addr),
            None => write!(f, "broker at {}", self.addr),
        }
    }
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
            Error::Authentication { code, .. } => *code,
            _ => None,
        }
    }

    /// The transport error, when the connection or a stream failed.
    pub fn transport(&self) -> Option<&TransportError> {
        match self {
            Error::Transport { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether trying again (after a metadata refresh and a backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => code.is_retriable(),
            Error::Refused(e) => e.error_code.is_retriable(),
            Error::Transport { error, .. } => error.is_retriable(),
            Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// Whether the client's idea of leaders or topics may be stale after this error (a
    /// broker that no longer leads, a topic it does not know, a connection lost): refresh the
    /// metadata before trying again.
    pub fn needs_metadata(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            _ => matches!(
                self.code(),
                Some(
                    ErrorCode::NotLeaderOrFollower
                        | ErrorCode::LeaderNotAvailable
                        | ErrorCode::UnknownTopicOrPartition
                        | ErrorCode::BrokerNotAvailable
                        | ErrorCode::FencedLeaderEpoch
                        | ErrorCode::UnknownLeaderEpoch
                        | ErrorCode::ReplicaNotAvailable
                )
            ),
        }
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::BrokerId;
    use std::time::Duration;

    #[test]
    fn a_transport_error_names_the_broker() {
        let e = Error::Transport {
            broker: Some(BrokerAddr {
                addr: "10.0.0.7:9092".parse().unwrap(),
                node: Some(Node {
                    broker: BrokerId(3),
                    shard: Some(1),
                }),
            }),
            error: TransportError::Timeout(Duration::from_secs(10)),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("broker 3 (shard 1) at 10.0.0.7:9092: "),
            "{s}"
        );
        assert!(e.is_retriable());
        let unknown = Error::from(TransportError::ConnectionLost("reset".into()));
        assert_eq!(unknown.to_string(), "transport: connection lost: reset");
    }

    #[test]
    fn delivery_failures_carry_the_count_and_the_first_error() {
        let e = Error::DeliveryFailed {
            failed: 3,
            first: Box::new(Error::Timeout("delivery_timeout".into())),
        };
        assert_eq!(
            e.to_string(),
            "3 record(s) were not delivered; the first failed with: timed out: delivery_timeout"
        );
        assert!(!e.is_retriable());
    }
}
