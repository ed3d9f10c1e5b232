//! Frames: how one request or one response travels on a QUIC stream.
//!
//! Quiver opens one bidirectional QUIC stream per request (see ARCHITECTURE.md, "Why a stream per
//! request"): the client writes one request frame and finishes its side; the server writes one
//! response frame and finishes its side. A long-polling fetch therefore holds only its own stream,
//! and one slow partition never delays another request (no head-of-line blocking as on a single
//! TCP connection). The correlation id still travels in every frame, for logs and tracing, and so
//! a transport that multiplexes frames on one stream could be added without a format change.
//!
//! ```text
//! offset  size  field
//!      0     4  frame_len       u32 LE: bytes after this field (16 + body_len + payload bytes)
//!      4     2  api_key         u16 LE (see `api`)
//!      6     2  api_version     u16 LE
//!      8     4  correlation_id  u32 LE, chosen by the client, echoed by the server
//!     12     2  flags           u16 LE: bit 0 = the body is an `ErrorResponse`, not the API's own
//!     14     2  reserved        must be 0
//!     16     4  body_len        u32 LE: bytes of the flatbuffer body
//!     20  body  flatbuffer      verified before any field is read
//!      …  rest  payload         raw bytes (record batches), referenced from the body by
//!                               (offset, length) into this section
//! ```
//!
//! Why a payload section beside the flatbuffer: record batches are stored and served byte for
//! byte. Putting them in a flatbuffer `[ubyte]` vector would copy every byte into a builder on the
//! way out; the payload lets the broker hand the stored `Bytes` straight to the QUIC stream.
//!
//! The frame length is read and checked against the limit before anything is allocated.
//!
//! A body refers to payload bytes with `(offset, length)` references (`api::PayloadRef`). Rule:
//! each payload byte belongs to at most one reference. A request whose references overlap (two
//! produce entries naming the same batch, or one batch and part of it) is refused before any
//! work, in one place: `api::limits::check`, run by `api::decode_request`. So a producer's bytes
//! are appended at most once, however the body is written.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the body: frame_len(4) + api_key(2) + api_version(2) + correlation_id(4) +
/// flags(2) + reserved(2) + body_len(4).
pub const FRAME_HEADER_BYTES: usize = 20;
/// Bytes counted by `frame_len` that belong to the header (everything after `frame_len` itself).
const HEADER_AFTER_LEN: usize = FRAME_HEADER_BYTES - 4;

/// Default bound on one frame, header included. A produce or fetch larger than this is refused
/// before its bytes are read. Rationale: a peer must not make the broker allocate more than this
/// per request; batches are at most `batch::BATCH_BYTES_MAX`, so this leaves room for many.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
const _: () = assert!(FRAME_BYTES_MAX_DEFAULT <= u32::MAX as usize);

/// Frames up to this size are sent ahead of larger ones queued on the same connection. Both
/// the SDK and the broker send a connection's streams one after another (not interleaved), so
/// without this a heartbeat or metadata call would wait behind a bulk produce or fetch.
pub const SMALL_FRAME_BYTES: usize = 64 * 1024;

/// The QUIC send priority of a stream carrying a frame of `frame_bytes` (higher goes first;
/// quinn's default is 0).
pub fn send_priority(frame_bytes: usize) -> i32 {
    i32::from(frame_bytes <= SMALL_FRAME_BYTES)
}

/// Flag bit: the body is an `ErrorResponse` table (unknown API, unsupported version, malformed
/// request) rather than the API's own response type.
pub const FLAG_ERROR_RESPONSE: u16 = 1;

/// The fixed part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub api_key: u16,
    pub api_version: u16,
    pub correlation_id: u32,
    pub flags: u16,
}

impl FrameHeader {
    pub fn is_error_response(&self) -> bool {
        self.flags & FLAG_ERROR_RESPONSE != 0
    }
}

/// A whole frame: header, flatbuffer body and raw payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub body: Bytes,
    pub payload: Bytes,
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame length {len} is shorter than the {min}-byte frame header")]
    TooShort { len: usize, min: usize },
    #[error("frame body length {body_len} exceeds the {available} bytes that follow the header")]
    BodyOverrun { body_len: usize, available: usize },
    #[error("reserved frame header bits are set ({0:#06x})")]
    Reserved(u16),
    #[error("stream ended after {got} of {need} bytes of a frame")]
    Truncated { got: usize, need: usize },
}

/// Reads the 4-byte length prefix and checks it, before anything else is read or allocated.
/// Returns the total frame size, prefix included.
pub fn check_len_prefix(prefix: [u8; 4], frame_bytes_max: usize) -> Result<usize, FrameError> {
    let after = u32::from_le_bytes(prefix) as usize;
    let total = after + 4;
    if after < HEADER_AFTER_LEN {
        return Err(FrameError::TooShort {
            len: total,
            min: FRAME_HEADER_BYTES,
        });
    }
    if total > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len: total,
            max: frame_bytes_max,
        });
    }
    Ok(total)
}

/// Decodes one complete frame from `buf` (exactly one frame, prefix included). The body is not
/// verified here: that is the job of the API layer, which knows the body's type.
pub fn decode(buf: Bytes, frame_bytes_max: usize) -> Result<Frame, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            got: buf.len(),
            need: FRAME_HEADER_BYTES,
        });
    }
    let total = check_len_prefix(buf[0..4].try_into().expect("4 bytes"), frame_bytes_max)?;
    if buf.len() != total {
        return Err(FrameError::Truncated {
            got: buf.len(),
            need: total,
        });
    }
    let mut h = &buf[4..FRAME_HEADER_BYTES];
    let api_key = h.get_u16_le();
    let api_version = h.get_u16_le();
    let correlation_id = h.get_u32_le();
    let flags = h.get_u16_le();
    let reserved = h.get_u16_le();
    let body_len = h.get_u32_le() as usize;
    if reserved != 0 {
        return Err(FrameError::Reserved(reserved));
    }
    let available = total - FRAME_HEADER_BYTES;
    if body_len > available {
        return Err(FrameError::BodyOverrun {
            body_len,
            available,
        });
    }
    let body = buf.slice(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body_len);
    let payload = buf.slice(FRAME_HEADER_BYTES + body_len..);
    Ok(Frame {
        header: FrameHeader {
            api_key,
            api_version,
            correlation_id,
            flags,
        },
        body,
        payload,
    })
}

/// Encodes the 20-byte header for a frame whose body and payload have the given sizes. The
/// caller then writes the body and the payload chunks after it, so the payload is never copied.
///
/// Fails with [`FrameError::TooLarge`] when the frame cannot be described by the header's 32-bit
/// length (a sender that built more than that has a bug, but a sender must not panic on it: the
/// transport resets the stream instead).
pub fn encode_header(
    header: &FrameHeader,
    body_len: usize,
    payload_len: usize,
) -> Result<[u8; FRAME_HEADER_BYTES], FrameError> {
    let too_large = || FrameError::TooLarge {
        len: FRAME_HEADER_BYTES
            .saturating_add(body_len)
            .saturating_add(payload_len),
        max: u32::MAX as usize,
    };
    let after = HEADER_AFTER_LEN
        .checked_add(body_len)
        .and_then(|n| n.checked_add(payload_len))
        .ok_or_else(too_large)?;
    let after = u32::try_from(after).map_err(|_| too_large())?;
    let body_len = u32::try_from(body_len).map_err(|_| too_large())?;
    let mut out = [0u8; FRAME_HEADER_BYTES];
    let mut w = &mut out[..];
    w.put_u32_le(after);
    w.put_u16_le(header.api_key);
    w.put_u16_le(header.api_version);
    w.put_u32_le(header.correlation_id);
    w.put_u16_le(header.flags);
    w.put_u16_le(0);
    w.put_u32_le(body_len);
    Ok(out)
}

/// Encodes a whole frame into one contiguous buffer (convenient for small frames and tests; the
/// broker's fetch path writes header, body and payload chunks separately instead).
///
/// Panics if the frame is over 4 GiB: it is for frames built in memory whole, which cannot get
/// there without the caller first holding 4 GiB (use [`encode_header`] for anything else).
pub fn encode(header: &FrameHeader, body: &[u8], payload: &[&[u8]]) -> Bytes {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(FRAME_HEADER_BYTES + body.len() + payload_len);
    out.put_slice(
        &encode_header(header, body.len(), payload_len).expect("an in-memory frame under 4 GiB"),
    );
    out.put_slice(body);
    for p in payload {
        out.put_slice(p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_get_the_higher_send_priority() {
        assert_eq!(send_priority(0), 1);
        assert_eq!(send_priority(SMALL_FRAME_BYTES), 1);
        assert_eq!(send_priority(SMALL_FRAME_BYTES + 1), 0);
        assert_eq!(send_priority(FRAME_BYTES_MAX_DEFAULT), 0);
    }

    const H: FrameHeader = FrameHeader {
        api_key: 3,
        api_version: 1,
        correlation_id: 77,
        flags: 0,
    };

    #[test]
    fn round_trip_with_payload() {
        let f = encode(&H, b"body", &[b"pay", b"load"]);
        assert_eq!(f.len(), FRAME_HEADER_BYTES + 4 + 7);
        let d = decode(f, FRAME_BYTES_MAX_DEFAULT).unwrap();
        assert_eq!(d.header, H);
        assert_eq!(&d.body[..], b"body");
        assert_eq!(&d.payload[..], b"payload");
    }

    #[test]
    fn length_over_maximum_is_refused_from_the_prefix_alone() {
        let prefix = (1_000_000u32).to_le_bytes();
        assert_eq!(
            check_len_prefix(prefix, 1000),
            Err(FrameError::TooLarge {
                len: 1_000_004,
                max: 1000
            })
        );
    }

    #[test]
    fn short_length_is_refused() {
        assert!(matches!(
            check_len_prefix(3u32.to_le_bytes(), 1000),
            Err(FrameError::TooShort { .. })
        ));
    }

    #[test]
    fn body_longer_than_frame_is_refused() {
        let mut f = encode(&H, b"body", &[]).to_vec();
        f[16..20].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            decode(Bytes::from(f), FRAME_BYTES_MAX_DEFAULT),
            Err(FrameError::BodyOverrun {
                body_len: 100,
                available: 4
            })
        );
    }

    #[test]
    fn truncated_frame_is_refused() {
        let f = encode(&H, b"body", &[b"payload"]);
        let cut = f.slice(..f.len() - 1);
        assert!(matches!(
            decode(cut, FRAME_BYTES_MAX_DEFAULT),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn a_header_for_more_than_four_gib_is_an_error_not_a_panic() {
        let big = u32::MAX as usize;
        for (body, payload) in [
            (0, big),
            (big, 0),
            (big / 2, big / 2 + 100),
            (usize::MAX, 1),
        ] {
            assert!(
                matches!(
                    encode_header(&H, body, payload),
                    Err(FrameError::TooLarge { .. })
                ),
                "{body} + {payload}"
            );
        }
        assert!(encode_header(&H, 10, u32::MAX as usize - 36).is_ok());
    }

    #[test]
    fn reserved_bits_are_refused() {
        let mut f = encode(&H, b"", &[]).to_vec();
        f[14] = 1;
        assert_eq!(
            decode(Bytes::from(f), FRAME_BYTES_MAX_DEFAULT),
            Err(FrameError::Reserved(1))
        );
    }
}
