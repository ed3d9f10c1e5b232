//! Facts both ends of a connection must agree on, beside the frame format: the ALPN name, the
//! largest UDP payload QUIC allows, and the QUIC application error codes carried by stream resets,
//! STOP_SENDING and connection closes. One list, used by the broker's transport (`net`) and the
//! SDK (`client`), so they cannot drift apart.
//!
//! Rationale for codes rather than text on streams: QUIC carries only a number when a stream is
//! reset; connection closes carry a reason string as well.

/// ALPN protocol name of Quiver's protocol, version 1.
pub const ALPN_QUIVER_V1: &[u8] = b"quiver/1";

/// The largest UDP payload QUIC allows (RFC 9000, `max_udp_payload_size`).
pub const MAX_UDP_PAYLOAD: u16 = 65_527;

/// QUIC application error codes.
pub mod codes {
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
    /// The service's response could not be framed (over 4 GiB); a bug on the broker's side,
    /// reported instead of sent.
    pub const RESPONSE_TOO_LARGE: u32 = 0x16;
    /// The request's frame did not arrive in full within the read timeout after its first bytes.
    pub const READ_TIMEOUT: u32 = 0x17;
    /// Connection closed for abuse: too many malformed frames.
    pub const CONNECTION_ABUSE: u32 = 0x20;
    /// Connection closed by the application (a dial-out connection closed by its owner).
    pub const CLOSED_BY_APPLICATION: u32 = 0x21;
    /// Connection closed because it did not authenticate within the broker's deadline.
    pub const AUTHENTICATION_TIMEOUT: u32 = 0x22;

    /// The code a frame-level error is answered with when no error response is sent.
    pub fn for_frame_error(err: &crate::frame::FrameError) -> u32 {
        use crate::frame::FrameError;
        match err {
            FrameError::TooLarge { .. } => FRAME_TOO_LARGE,
            FrameError::Truncated { .. } => FRAME_TRUNCATED,
            FrameError::TooShort { .. }
            | FrameError::BodyOverrun { .. }
            | FrameError::Reserved(_) => FRAME_INVALID,
        }
    }

    /// A short description of a code, for error messages.
    pub fn describe(code: u64) -> &'static str {
        match u32::try_from(code) {
            Ok(NO_ERROR) => "no error",
            Ok(SHUTDOWN) => "broker shutting down",
            Ok(FRAME_TOO_LARGE) => "frame too large",
            Ok(FRAME_TRUNCATED) => "frame truncated",
            Ok(FRAME_INVALID) => "frame invalid",
            Ok(WRITE_TIMEOUT) => "write timeout: response not read in time",
            Ok(CANCELLED) => "cancelled",
            Ok(STREAM_PROTOCOL) => "stream protocol violation",
            Ok(RESPONSE_TOO_LARGE) => "response too large",
            Ok(READ_TIMEOUT) => "read timeout: request not received in time",
            Ok(CONNECTION_ABUSE) => "connection abuse",
            Ok(CLOSED_BY_APPLICATION) => "closed by application",
            Ok(AUTHENTICATION_TIMEOUT) => "not authenticated in time",
            _ => "unknown code",
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_code_is_described_and_distinct() {
            let all = [
                NO_ERROR,
                SHUTDOWN,
                FRAME_TOO_LARGE,
                FRAME_TRUNCATED,
                FRAME_INVALID,
                WRITE_TIMEOUT,
                CANCELLED,
                STREAM_PROTOCOL,
                RESPONSE_TOO_LARGE,
                READ_TIMEOUT,
                CONNECTION_ABUSE,
                CLOSED_BY_APPLICATION,
                AUTHENTICATION_TIMEOUT,
            ];
            let mut seen = std::collections::HashSet::new();
            for c in all {
                assert!(seen.insert(c), "{c:#x} twice");
                assert_ne!(describe(u64::from(c)), "unknown code", "{c:#x}");
            }
            assert_eq!(describe(0x9999), "unknown code");
            assert_eq!(describe(u64::MAX), "unknown code");
        }
    }
}
