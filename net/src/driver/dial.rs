//! The dial-out side (broker to broker): a call is one request frame written on a stream this
//! side opens, answered by one response frame; its outcome leaves as a `DialEvent`.

use bytes::Bytes;
use quinn_proto::{Dir, StreamId, WriteError};
use quiver_proto::frame::{self, Frame};

use super::{
    conn::{read_frame, varint, Conn, Ctx, StreamState},
    server::{prioritise, Outgoing},
};
use crate::{
    codes,
    error::{CallError, ConnectError},
    frame_reader::{FrameReader, ReadOutcome},
};

/// What a dial-out caller waits for.
#[derive(Debug)]
pub(crate) enum DialEvent {
    /// The handshake of the connection `Driver::connect` named `conn_id` ended.
    Connected {
        conn_id: u64,
        result: Result<(), ConnectError>,
    },
    /// The call `token` (from `Driver::start_call`) ended. Exactly one per call not cancelled.
    Response {
        token: u64,
        result: Result<Frame, CallError>,
    },
}

pub(super) struct CallStream {
    pub token: u64,
    pub send: Option<Outgoing>,
    reader: FrameReader,
}

pub(super) struct PendingCall {
    pub token: u64,
    chunks: Vec<Bytes>,
}

pub(super) fn queue_call(conn: &mut Conn, token: u64, chunks: Vec<Bytes>) {
    conn.pending_calls.push_back(PendingCall { token, chunks });
}

/// Forgets call `token`, resetting its stream if it has one. True if a stream was reset.
pub(super) fn cancel(conn: &mut Conn, token: u64) -> bool {
    conn.pending_calls.retain(|p| p.token != token);
    let id = conn.streams.iter().find_map(|(id, s)| match s {
        StreamState::Call(c) if c.token == token => Some(*id),
        _ => None,
    });
    let Some(id) = id else {
        return false;
    };
    conn.streams.remove(&id);
    let _ = conn.inner.send_stream(id).reset(varint(codes::CANCELLED));
    let _ = conn.inner.recv_stream(id).stop(varint(codes::CANCELLED));
    true
}

/// Opens a stream for each queued call, as far as the peer's stream limit allows.
pub(super) fn open_pending_calls(conn: &mut Conn) {
    while !conn.pending_calls.is_empty() {
        if conn.lost.is_some() || conn.inner.is_closed() {
            return;
        }
        let Some(id) = conn.inner.streams().open(Dir::Bi) else {
            return; // At the peer's stream limit; `Available` will bring us back.
        };
        let p = conn.pending_calls.pop_front().expect("non-empty");
        let total: u64 = p.chunks.iter().map(|c| c.len() as u64).sum();
        prioritise(&mut conn.inner, id, total);
        conn.streams.insert(
            id,
            StreamState::Call(CallStream {
                token: p.token,
                send: Some(Outgoing {
                    chunks: p.chunks,
                    next: 0,
                }),
                reader: FrameReader::default(),
            }),
        );
        write(conn, id);
    }
}

/// Hands as much of the request as quinn-proto takes, then finishes the stream.
pub(super) fn write(conn: &mut Conn, id: StreamId) {
    let Some(StreamState::Call(c)) = conn.streams.get_mut(&id) else {
        return;
    };
    let Some(out) = c.send.as_mut() else {
        return;
    };
    loop {
        if out.next == out.chunks.len() {
            let _ = conn.inner.send_stream(id).finish();
            c.send = None;
            return;
        }
        match conn
            .inner
            .send_stream(id)
            .write_chunks(&mut out.chunks[out.next..])
        {
            Ok(w) => {
                out.next += w.chunks;
                if w.bytes == 0 && w.chunks == 0 {
                    return;
                }
            }
            Err(WriteError::Blocked) => return,
            Err(WriteError::Stopped(_)) | Err(WriteError::ClosedStream) => {
                c.send = None;
                return;
            }
        }
    }
}

/// Reads what has arrived of the response; once it is whole (or the stream fails) the call
/// ends with a `DialEvent::Response`.
pub(super) fn read(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId) {
    let frame_max = ctx.cfg.frame_bytes_max;
    loop {
        let Some(StreamState::Call(c)) = conn.streams.get_mut(&id) else {
            return;
        };
        let result = match read_frame(&mut conn.inner, id, &mut c.reader, frame_max) {
            ReadOutcome::Blocked => return,
            ReadOutcome::NeedAlloc(_) => {
                // The response was asked for; its size is already bounded by frame_bytes_max.
                c.reader.alloc(ctx.pool);
                continue;
            }
            ReadOutcome::Done { bytes, fin } => {
                ctx.pool.lend(&bytes);
                if !fin {
                    let _ = conn.inner.recv_stream(id).stop(varint(codes::NO_ERROR));
                }
                frame::decode(bytes, frame_max).map_err(CallError::Frame)
            }
            ReadOutcome::Invalid(e) => {
                let _ = conn
                    .inner
                    .recv_stream(id)
                    .stop(varint(codes::for_frame_error(&e)));
                Err(CallError::Frame(e))
            }
            ReadOutcome::Reset(code) => Err(CallError::StreamReset {
                code: code.into_inner(),
            }),
            ReadOutcome::Closed => Err(CallError::ConnectionGone),
        };
        let Some(StreamState::Call(c)) = conn.streams.remove(&id) else {
            unreachable!("checked above");
        };
        if c.send.is_some() {
            // The answer came before the request was fully sent (an early error response).
            let _ = conn.inner.send_stream(id).reset(varint(codes::CANCELLED));
        }
        ctx.events.push_back(DialEvent::Response {
            token: c.token,
            result,
        });
        return;
    }
}
