//! QUIC application error codes used by the transport, on stream resets, STOP_SENDING and
//! connection closes. The SDK (`quiver_client::transport::codes`) mirrors these numbers; a test in
//! `net/tests` checks that the two lists agree, because the client may not depend on net.
//!
//! Rationale for codes rather than text on streams: QUIC carries only a number when a stream is
//! reset; connection closes carry a reason string as well.

/// Graceful close, nothing wrong.
pub const NO_ERROR: u32 = 0;
/// The broker is shutting down (connection close, reason "broker shutting down").
pub const SHUTDOWN: u32 = 1;
/// The request frame's length prefix exceeds the maximum frame size.
pub const FRAME_TOO_LARGE: u32 = 0x10;
/// The stream ended before the whole frame arrived.
pub const FRAME_TRUNCATED: u32 = 0x11;
/// The frame is malformed (shorter than a header, reserved bits, body longer than the frame).
pub const FRAME_INVALID: u32 = 0x12;
/// The peer did not read the response within the write timeout.
pub const WRITE_TIMEOUT: u32 = 0x13;
/// The request was cancelled by the side that sent it.
pub const CANCELLED: u32 = 0x14;
/// The stream was used against the protocol (data after the frame, a unidirectional stream).
pub const STREAM_PROTOCOL: u32 = 0x15;
/// The service's response could not be framed (over 4 GiB); a bug on the broker's side, reported
/// instead of sent.
pub const RESPONSE_TOO_LARGE: u32 = 0x16;
/// The request's frame did not arrive in full within the read timeout after its first bytes.
pub const READ_TIMEOUT: u32 = 0x17;
/// Connection closed for abuse: too many malformed frames.
pub const CONNECTION_ABUSE: u32 = 0x20;
/// Connection closed by the application (a dial-out connection closed by its owner).
pub const CLOSED_BY_APPLICATION: u32 = 0x21;

/// The code a frame-level error is answered with when the service gives no error response.
pub fn for_frame_error(err: &quiver_proto::frame::FrameError) -> u32 {
    use quiver_proto::frame::FrameError;
    match err {
        FrameError::TooLarge { .. } => FRAME_TOO_LARGE,
        FrameError::Truncated { .. } => FRAME_TRUNCATED,
        FrameError::TooShort { .. } | FrameError::BodyOverrun { .. } | FrameError::Reserved(_) => {
            FRAME_INVALID
        }
    }
}

/// A short description of a code, for error messages.
pub fn describe(code: u64) -> &'static str {
    match code {
        0 => "no error",
        1 => "broker shutting down",
        0x10 => "frame too large",
        0x11 => "frame truncated",
        0x12 => "frame invalid",
        0x13 => "write timeout: response not read in time",
        0x14 => "cancelled",
        0x15 => "stream protocol violation",
        0x16 => "response too large",
        0x17 => "read timeout: request not received in time",
        0x20 => "connection abuse",
        0x21 => "closed by application",
        _ => "unknown code",
    }
}
