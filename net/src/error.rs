//! Errors of dial-out connections and calls.

use std::time::Duration;

use quinn_proto::ConnectionError;
use quiver_proto::frame::FrameError;

use crate::codes;

/// Why a dial-out connection could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start connecting: {0}")]
    Config(#[from] quinn_proto::ConnectError),
    #[error("this endpoint has no client TLS configuration for dial-out")]
    NoClientConfig,
    #[error("handshake failed: {0}")]
    Lost(ConnectionError),
    #[error("the endpoint is shut down")]
    EndpointClosed,
}

/// Why a dial-out call got no response frame.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    #[error("the connection is gone")]
    ConnectionGone,
    #[error("stream reset by the peer with code {code:#x} ({})", codes::describe(*.code))]
    StreamReset { code: u64 },
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("bad response frame: {0}")]
    Frame(FrameError),
    #[error("the endpoint is shut down")]
    EndpointClosed,
}
