//! The server side of request streams: a stream is accepted, its frame read (within the
//! connection's byte budget, parked while there is none), handed out as a `Job`, and the
//! service's answer written back; a malformed frame is answered by `Service::reject` or reset.

use std::{rc::Rc, time::Instant};

use bytes::Bytes;
use quinn_proto::{StreamId, WriteError};
use quiver_proto::frame::{self, Frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};

use super::{
    conn::{charge, read_frame, release, unset_read_deadline, varint, Conn, Ctx, StreamState},
    EndpointStats, StreamKey,
};
use crate::{
    codes,
    config::EndpointConfig,
    frame_reader::{FrameReader, ReadOutcome},
    service::{Request, Response},
    sync::Cancel,
};

/// A request ready for the service: run `req`, and give the answer to
/// `Driver::handle_response(now, key, ..)`.
pub(crate) struct Job {
    pub req: Request,
    pub key: StreamKey,
    /// Set when the stream or the connection goes away while the service works: the service
    /// future is then to be dropped.
    pub cancel: Rc<Cancel>,
}

pub(super) struct ServerStream {
    reader: FrameReader,
    pub phase: Phase,
    /// Budget bytes this stream holds (request buffer, then unsent response bytes).
    pub charged: u64,
    /// Write deadline, once the response is being written.
    pub deadline: Option<Instant>,
    /// Read deadline, while the request is being read (not while parked for budget).
    pub read_deadline: Option<Instant>,
    /// The service's cancellation, while it serves this request.
    pub cancel: Option<Rc<Cancel>>,
}

pub(super) enum Phase {
    Reading,
    Parked,
    Serving,
    Writing(Outgoing),
    Finishing,
}

pub(super) struct Outgoing {
    pub chunks: Vec<Bytes>,
    pub next: usize,
}

/// A stream the peer opened: a request starts.
pub(super) fn accept(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId) {
    if ctx.service.is_none() {
        // A dial-out-only endpoint serves nothing.
        let _ = conn
            .inner
            .recv_stream(id)
            .stop(varint(codes::STREAM_PROTOCOL));
        let _ = conn
            .inner
            .send_stream(id)
            .reset(varint(codes::STREAM_PROTOCOL));
        return;
    }
    let read_deadline = ctx.now + ctx.cfg.read_timeout;
    conn.read_deadlines.insert((read_deadline, id));
    conn.streams.insert(
        id,
        StreamState::Server(ServerStream {
            reader: FrameReader::default(),
            phase: Phase::Reading,
            charged: 0,
            deadline: None,
            read_deadline: Some(read_deadline),
            cancel: None,
        }),
    );
    conn.serving += 1;
    ctx.stats.requests_in_flight += 1;
    ctx.stats.requests_in_flight_peak = ctx
        .stats
        .requests_in_flight_peak
        .max(ctx.stats.requests_in_flight);
    read(ctx, conn, id);
}

/// Reads what has arrived of stream `id`'s request.
pub(super) fn read(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId) {
    let frame_max = ctx.cfg.frame_bytes_max;
    loop {
        let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) else {
            return;
        };
        if !matches!(s.phase, Phase::Reading) {
            return; // Parked streams wait for budget; later phases read nothing more.
        }
        match read_frame(&mut conn.inner, id, &mut s.reader, frame_max) {
            ReadOutcome::Blocked => return,
            ReadOutcome::NeedAlloc(total) => {
                let admitted = conn.parked.is_empty()
                    && (conn.inflight_bytes == 0
                        || conn.inflight_bytes + total as u64 <= ctx.cfg.inflight_bytes_max);
                if admitted {
                    s.reader.alloc(ctx.pool);
                    charge(&mut conn.inflight_bytes, s, total as u64, ctx.stats);
                } else {
                    // Waiting for our budget is not the peer's delay: no read deadline meanwhile.
                    s.phase = Phase::Parked;
                    unset_read_deadline(&mut conn.read_deadlines, id, &mut s.read_deadline);
                    conn.parked.push_back(id);
                    return;
                }
            }
            ReadOutcome::Done { bytes, fin } => {
                ctx.pool.lend(&bytes);
                if !fin {
                    // The frame is complete; whatever follows is not ours to read. Usually the
                    // FIN is already here and this does not run.
                    let _ = conn.inner.recv_stream(id).stop(varint(codes::NO_ERROR));
                }
                unset_read_deadline(&mut conn.read_deadlines, id, &mut s.read_deadline);
                match frame::decode(bytes, frame_max) {
                    Ok(frame) => {
                        s.phase = Phase::Serving;
                        make_job(ctx, conn, id, frame);
                    }
                    Err(e) => {
                        let header = s.reader.header();
                        reject(ctx, conn, id, header, e);
                    }
                }
                return;
            }
            ReadOutcome::Invalid(e) => {
                let header = s.reader.header();
                reject(ctx, conn, id, header, e);
                return;
            }
            ReadOutcome::Reset(code) => {
                tracing::debug!(conn = conn.id, %id, %code, "request stream reset by peer");
                let _ = conn.inner.send_stream(id).reset(varint(codes::CANCELLED));
                conn.drop_server_stream(id, ctx.stats);
                return;
            }
            ReadOutcome::Closed => {
                conn.drop_server_stream(id, ctx.stats);
                return;
            }
        }
    }
}

/// Reads every server stream still reading its request, oldest first.
pub(super) fn read_open_streams(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    let mut reading: Vec<StreamId> = conn
        .streams
        .iter()
        .filter(|(_, s)| {
            matches!(
                s,
                StreamState::Server(ServerStream {
                    phase: Phase::Reading,
                    ..
                })
            )
        })
        .map(|(id, _)| *id)
        .collect();
    reading.sort_unstable_by_key(|id| id.index());
    for id in reading {
        read(ctx, conn, id);
    }
}

/// Lets parked requests in, oldest first, while the budget admits them.
pub(super) fn resume_parked(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    while let Some(&id) = conn.parked.front() {
        let total = match conn.streams.get(&id) {
            Some(StreamState::Server(s)) => s.reader.total.expect("parked after the prefix"),
            _ => {
                conn.parked.pop_front();
                continue;
            }
        };
        if !conn.admits(total as u64, ctx.cfg.inflight_bytes_max) {
            return;
        }
        conn.parked.pop_front();
        if let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) {
            s.reader.alloc(ctx.pool);
            s.phase = Phase::Reading;
            let deadline = ctx.now + ctx.cfg.read_timeout;
            s.read_deadline = Some(deadline);
            conn.read_deadlines.insert((deadline, id));
            charge(&mut conn.inflight_bytes, s, total as u64, ctx.stats);
        }
        read(ctx, conn, id);
    }
}

fn reject(
    ctx: &mut Ctx<'_>,
    conn: &mut Conn,
    id: StreamId,
    header: Option<FrameHeader>,
    err: FrameError,
) {
    tracing::debug!(conn = conn.id, %id, error = %err, "malformed request frame");
    ctx.stats.frame_errors += 1;
    conn.frame_errors += 1;
    let code = varint(codes::for_frame_error(&err));
    // Whatever else the peer sends on this stream is not read.
    let _ = conn.inner.recv_stream(id).stop(code);
    let response = ctx.service.and_then(|svc| svc.reject(header, &err));
    let Some(StreamState::Server(mut s)) = conn.streams.remove(&id) else {
        return;
    };
    let charged = s.charged;
    release(&mut conn.inflight_bytes, &mut s, charged, ctx.stats);
    match response {
        Some(resp) => {
            start_writing(conn, id, s, resp, ctx.cfg, ctx.now, ctx.stats);
        }
        None => {
            let _ = conn.inner.send_stream(id).reset(code);
            conn.streams.insert(id, StreamState::Server(s));
            conn.drop_server_stream(id, ctx.stats);
        }
    }
}

fn make_job(ctx: &mut Ctx<'_>, conn: &mut Conn, id: StreamId, frame: Frame) {
    let cancel = Rc::new(Cancel::default());
    if let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) {
        s.cancel = Some(cancel.clone());
    }
    let req = Request {
        header: frame.header,
        body: frame.body,
        payload: frame.payload,
        peer: conn.inner.remote_address(),
        connection_id: conn.id,
        identity: conn.identity.clone(),
        session: conn.session.clone(),
    };
    ctx.jobs.push_back(Job {
        req,
        key: StreamKey {
            ch: ctx.ch,
            conn_id: conn.id,
            id,
        },
        cancel,
    });
}

/// The service answered the request of stream `id`: start writing the response. False when
/// the stream is gone (the peer reset it meanwhile).
pub(super) fn answer(
    conn: &mut Conn,
    id: StreamId,
    resp: Response,
    cfg: &EndpointConfig,
    now: Instant,
    stats: &mut EndpointStats,
) -> bool {
    let Some(StreamState::Server(mut s)) = conn.streams.remove(&id) else {
        return false;
    };
    s.cancel = None;
    let charged = s.charged;
    release(&mut conn.inflight_bytes, &mut s, charged, stats);
    stats.requests_served += 1;
    start_writing(conn, id, s, resp, cfg, now, stats);
    true
}

fn start_writing(
    conn: &mut Conn,
    id: StreamId,
    mut s: ServerStream,
    resp: Response,
    cfg: &EndpointConfig,
    now: Instant,
    stats: &mut EndpointStats,
) {
    let header = match frame::encode_header(
        &resp.header,
        resp.body.len(),
        resp.wire_len() - resp.body.len() - FRAME_HEADER_BYTES,
    ) {
        Ok(h) => h,
        Err(e) => {
            // A service bug, not the peer's doing: say so on the stream rather than panic.
            tracing::error!(conn = conn.id, %id, error = %e, "response cannot be framed");
            let _ = conn
                .inner
                .send_stream(id)
                .reset(varint(codes::RESPONSE_TOO_LARGE));
            conn.streams.insert(id, StreamState::Server(s));
            conn.drop_server_stream(id, stats);
            return;
        }
    };
    let mut chunks = Vec::with_capacity(2 + resp.payload.len());
    chunks.push(Bytes::copy_from_slice(&header));
    if !resp.body.is_empty() {
        chunks.push(resp.body);
    }
    chunks.extend(resp.payload.into_iter().filter(|p| !p.is_empty()));
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    prioritise(&mut conn.inner, id, total);
    charge(&mut conn.inflight_bytes, &mut s, total, stats);
    unset_read_deadline(&mut conn.read_deadlines, id, &mut s.read_deadline);
    let deadline = now + cfg.write_timeout;
    s.deadline = Some(deadline);
    s.phase = Phase::Writing(Outgoing { chunks, next: 0 });
    conn.deadlines.push_back((deadline, id));
    conn.streams.insert(id, StreamState::Server(s));
    write(conn, id, stats);
}

/// Small frames go out ahead of bulk ones queued on the connection (streams are sent one after
/// another, see `EndpointConfig::transport`).
pub(super) fn prioritise(inner: &mut quinn_proto::Connection, id: StreamId, frame_bytes: u64) {
    let priority = frame::send_priority(usize::try_from(frame_bytes).unwrap_or(usize::MAX));
    // Fails only for a stream already closed, which the write that follows reports.
    let _ = inner.send_stream(id).set_priority(priority);
}

/// Hands as much of stream `id`'s response to quinn-proto as it takes, then finishes it.
pub(super) fn write(conn: &mut Conn, id: StreamId, stats: &mut EndpointStats) {
    loop {
        let Some(StreamState::Server(s)) = conn.streams.get_mut(&id) else {
            return;
        };
        let Phase::Writing(out) = &mut s.phase else {
            return;
        };
        if out.next == out.chunks.len() {
            match conn.inner.send_stream(id).finish() {
                Ok(()) => s.phase = Phase::Finishing,
                Err(_) => conn.drop_server_stream(id, stats),
            }
            return;
        }
        match conn
            .inner
            .send_stream(id)
            .write_chunks(&mut out.chunks[out.next..])
        {
            Ok(w) => {
                out.next += w.chunks;
                release(&mut conn.inflight_bytes, s, w.bytes as u64, stats);
                if w.bytes == 0 && w.chunks == 0 {
                    return;
                }
            }
            Err(WriteError::Blocked) => return,
            Err(WriteError::Stopped(code)) => {
                tracing::debug!(conn = conn.id, %id, %code, "peer stopped reading a response");
                let _ = conn.inner.send_stream(id).reset(code);
                conn.drop_server_stream(id, stats);
                return;
            }
            Err(WriteError::ClosedStream) => {
                conn.drop_server_stream(id, stats);
                return;
            }
        }
    }
}
