//! QUIC application error codes used by the transport, on stream resets, STOP_SENDING and
//! connection closes: the one list in `quiver_proto::wire::codes`, shared with the SDK.

pub use quiver_proto::wire::codes::*;
