//! One connection: its quinn-proto events dispatched to the server and dial-out sides of its
//! streams, its byte budget, its read and write deadlines, and what happens when it is lost.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    rc::Rc,
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use quinn_proto::{
    ConnectionError, ConnectionHandle, Dir, Event, ReadableError, StreamEvent, StreamId, VarInt,
};
use rustls::pki_types::CertificateDer;

use super::{
    dial::{self, CallStream, DialEvent, PendingCall},
    server::{self, Job, Phase, ServerStream},
    EndpointStats,
};
use crate::{
    codes,
    config::EndpointConfig,
    error::{CallError, ConnectError},
    frame_reader::{FrameReader, QuinnChunks, ReadOutcome},
    pool::FramePool,
    service::DynService,
    tls::PeerIdentity,
};

pub(super) struct Conn {
    pub id: u64,
    pub inner: quinn_proto::Connection,
    pub streams: HashMap<StreamId, StreamState>,
    pub inflight_bytes: u64,
    pub frame_errors: u32,
    pub identity: Option<Arc<PeerIdentity>>,
    /// Request streams whose frame length is known, waiting for budget, oldest first.
    pub parked: VecDeque<StreamId>,
    /// Write deadlines in the order responses became ready, which is deadline order.
    pub deadlines: VecDeque<(Instant, StreamId)>,
    /// Read deadlines of the streams still reading their request, exactly those (an entry goes
    /// when its stream's frame is read, parks or ends), so the set never outgrows the streams.
    pub read_deadlines: BTreeSet<(Instant, StreamId)>,
    /// The peer's IP address as counted by the connection limiter (accepted connections only).
    pub counted_ip: Option<IpAddr>,
    pub pending_calls: VecDeque<PendingCall>,
    /// A dial-out connection whose handshake has not ended: `DialEvent::Connected` is owed.
    pub awaiting_connect: bool,
    pub lost: Option<ConnectionError>,
    /// Marked for the next pass.
    pub queued: bool,
    /// The deadline this connection has in the driver's timer heap.
    pub timer: Option<Instant>,
    /// Server streams open (reading, serving or writing).
    pub serving: usize,
    /// What the service keeps for this connection (`session.rs`).
    pub session: Rc<crate::session::Session>,
    /// An accepted connection not admitted by then is closed (`EndpointConfig::admit_timeout`).
    pub admit_deadline: Option<Instant>,
}

pub(super) enum StreamState {
    Server(ServerStream),
    Call(CallStream),
}

/// What processing a connection needs besides the connection, borrowed from the driver.
pub(super) struct Ctx<'a> {
    pub cfg: &'a EndpointConfig,
    pub service: Option<&'a Rc<dyn DynService>>,
    pub jobs: &'a mut VecDeque<Job>,
    pub events: &'a mut VecDeque<DialEvent>,
    pub stats: &'a mut EndpointStats,
    pub pool: &'a mut FramePool,
    pub now: Instant,
    pub ch: ConnectionHandle,
}

pub(super) fn varint(code: u32) -> VarInt {
    VarInt::from_u32(code)
}

impl Conn {
    pub fn new(id: u64, inner: quinn_proto::Connection) -> Conn {
        Conn {
            id,
            inner,
            streams: HashMap::new(),
            inflight_bytes: 0,
            frame_errors: 0,
            identity: None,
            parked: VecDeque::new(),
            deadlines: VecDeque::new(),
            read_deadlines: BTreeSet::new(),
            counted_ip: None,
            pending_calls: VecDeque::new(),
            awaiting_connect: false,
            lost: None,
            queued: false,
            timer: None,
            serving: 0,
            session: Rc::default(),
            admit_deadline: None,
        }
    }

    pub fn admits(&self, bytes: u64, budget: u64) -> bool {
        self.inflight_bytes == 0 || self.inflight_bytes + bytes <= budget
    }

    /// quinn's next timeout or the oldest read or write deadline, whichever is first.
    pub fn next_timer(&mut self) -> Option<Instant> {
        let mut timer = self.inner.poll_timeout();
        let admit = self.admit_deadline.filter(|_| !self.session.is_admitted());
        if let Some(d) = admit {
            timer = Some(timer.map_or(d, |t| t.min(d)));
        }
        for &(d, _) in self
            .deadlines
            .front()
            .into_iter()
            .chain(self.read_deadlines.first())
        {
            timer = Some(timer.map_or(d, |t| t.min(d)));
        }
        timer
    }

    /// Forgets a server stream, returning its budget; a service still working on it is
    /// cancelled.
    pub fn drop_server_stream(&mut self, id: StreamId, stats: &mut EndpointStats) {
        if let Some(StreamState::Server(mut s)) = self.streams.remove(&id) {
            unset_read_deadline(&mut self.read_deadlines, id, &mut s.read_deadline);
            if let Some(cancel) = s.cancel.take() {
                cancel.cancel();
                stats.requests_cancelled += 1;
            }
            let charged = s.charged;
            release(&mut self.inflight_bytes, &mut s, charged, stats);
            self.serving -= 1;
            stats.requests_in_flight -= 1;
        }
    }
}

pub(super) fn charge(
    inflight: &mut u64,
    s: &mut ServerStream,
    bytes: u64,
    stats: &mut EndpointStats,
) {
    s.charged += bytes;
    *inflight += bytes;
    stats.inflight_bytes += bytes;
    stats.inflight_bytes_peak_per_connection =
        stats.inflight_bytes_peak_per_connection.max(*inflight);
}

pub(super) fn release(
    inflight: &mut u64,
    s: &mut ServerStream,
    bytes: u64,
    stats: &mut EndpointStats,
) {
    let bytes = bytes.min(s.charged);
    s.charged -= bytes;
    *inflight -= bytes;
    stats.inflight_bytes -= bytes;
}

/// Reads what has arrived of a frame on stream `id`.
pub(super) fn read_frame(
    inner: &mut quinn_proto::Connection,
    id: StreamId,
    reader: &mut FrameReader,
    frame_bytes_max: usize,
) -> ReadOutcome {
    let mut stream = inner.recv_stream(id);
    let mut chunks = match stream.read(true) {
        Ok(c) => c,
        Err(ReadableError::ClosedStream) => return ReadOutcome::Closed,
        // Only ordered reads are ever made on a stream.
        Err(ReadableError::IllegalOrderedRead) => return ReadOutcome::Closed,
    };
    let outcome = reader.read(&mut QuinnChunks(&mut chunks), frame_bytes_max);
    // Whether credit must be sent is moot: the connection is polled for transmits after every
    // pass that touched it.
    let _ = chunks.finalize();
    outcome
}

/// Everything short of endpoint events and transmits for one connection.
pub(super) fn process_conn(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    if conn.inner.poll_timeout().is_some_and(|t| t <= ctx.now) {
        conn.inner.handle_timeout(ctx.now);
    }
    expire_writes(ctx, conn);
    expire_reads(ctx, conn);

    while let Some(ev) = conn.inner.poll() {
        match ev {
            Event::Connected => {
                conn.identity = conn
                    .inner
                    .crypto_session()
                    .peer_identity()
                    .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
                    .and_then(|certs| certs.first().and_then(PeerIdentity::from_cert))
                    .map(Arc::new);
                // A peer that proved itself with a certificate is authenticated by it.
                if conn.identity.is_some() {
                    conn.session.admit();
                }
                if std::mem::take(&mut conn.awaiting_connect) {
                    ctx.events.push_back(DialEvent::Connected {
                        conn_id: conn.id,
                        result: Ok(()),
                    });
                }
            }
            Event::ConnectionLost { reason } => {
                tracing::debug!(conn = conn.id, %reason, "connection lost");
                conn.lost = Some(reason);
                fail_everything(conn, ctx.stats, ctx.events);
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                // quinn-proto reports `Opened` ahead of the `Readable` events already queued, so
                // when the last bytes of one request and the whole of the next arrive together,
                // the next would be read (and served) first. Requests are served in the order
                // the peer opened their streams: the streams already open read what came first.
                server::read_open_streams(ctx, conn);
                while let Some(id) = conn.inner.streams().accept(Dir::Bi) {
                    server::accept(ctx, conn, id);
                }
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                // Refused by the transport parameters (limit 0); quinn-proto closes the
                // connection before this could happen, but never leave a stream unread.
                while let Some(id) = conn.inner.streams().accept(Dir::Uni) {
                    let _ = conn
                        .inner
                        .recv_stream(id)
                        .stop(varint(codes::STREAM_PROTOCOL));
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => match conn.streams.get(&id) {
                Some(StreamState::Server(_)) => server::read(ctx, conn, id),
                Some(StreamState::Call(_)) => dial::read(ctx, conn, id),
                None => {}
            },
            Event::Stream(StreamEvent::Writable { id }) => match conn.streams.get(&id) {
                Some(StreamState::Server(_)) => server::write(conn, id, ctx.stats),
                Some(StreamState::Call(_)) => dial::write(conn, id),
                None => {}
            },
            Event::Stream(StreamEvent::Finished { id }) => {
                if let Some(StreamState::Server(s)) = conn.streams.get(&id) {
                    if matches!(s.phase, Phase::Finishing) {
                        conn.drop_server_stream(id, ctx.stats);
                    }
                }
            }
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                match conn.streams.get_mut(&id) {
                    Some(StreamState::Server(_)) => {
                        tracing::debug!(conn = conn.id, %id, %error_code, "peer stopped a response");
                        let _ = conn.inner.send_stream(id).reset(error_code);
                        conn.drop_server_stream(id, ctx.stats);
                    }
                    Some(StreamState::Call(c)) => {
                        // The server refused the rest of our request; its response (often an error
                        // frame) may still come on the receive side.
                        c.send = None;
                    }
                    None => {}
                }
            }
            Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {}
            Event::Stream(StreamEvent::Available { dir: Dir::Uni }) => {}
            Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
        }
    }
    dial::open_pending_calls(conn);
    server::resume_parked(ctx, conn);

    let unadmitted =
        conn.admit_deadline.is_some_and(|d| d <= ctx.now) && !conn.session.is_admitted();
    if unadmitted && !conn.inner.is_closed() {
        tracing::info!(
            conn = conn.id,
            "closing a connection that did not authenticate in time"
        );
        conn.admit_deadline = None;
        conn.inner.close(
            ctx.now,
            varint(codes::AUTHENTICATION_TIMEOUT),
            Bytes::from_static(b"not authenticated in time"),
        );
    }
    if conn.frame_errors > ctx.cfg.frame_errors_max && !conn.inner.is_closed() {
        tracing::info!(
            conn = conn.id,
            errors = conn.frame_errors,
            "closing abusive connection"
        );
        conn.inner.close(
            ctx.now,
            varint(codes::CONNECTION_ABUSE),
            Bytes::from_static(b"too many malformed frames"),
        );
    }
}

/// The connection is lost or gone: every dial-out waiter is told, every server stream dropped
/// (its service cancelled, its budget returned).
pub(super) fn fail_everything(
    conn: &mut Conn,
    stats: &mut EndpointStats,
    events: &mut VecDeque<DialEvent>,
) {
    let reason = conn.lost.clone().unwrap_or(ConnectionError::LocallyClosed);
    if std::mem::take(&mut conn.awaiting_connect) {
        events.push_back(DialEvent::Connected {
            conn_id: conn.id,
            result: Err(ConnectError::Lost(reason.clone())),
        });
    }
    for p in conn.pending_calls.drain(..) {
        events.push_back(DialEvent::Response {
            token: p.token,
            result: Err(CallError::ConnectionLost(reason.clone())),
        });
    }
    let ids: Vec<_> = conn.streams.keys().copied().collect();
    for id in ids {
        match conn.streams.get(&id) {
            Some(StreamState::Call(c)) => {
                events.push_back(DialEvent::Response {
                    token: c.token,
                    result: Err(CallError::ConnectionLost(reason.clone())),
                });
                conn.streams.remove(&id);
            }
            Some(StreamState::Server(_)) => conn.drop_server_stream(id, stats),
            None => {}
        }
    }
    conn.parked.clear();
    conn.deadlines.clear();
    conn.read_deadlines.clear();
}

/// Takes a stream's read deadline out of its slot and out of the connection's set.
pub(super) fn unset_read_deadline(
    set: &mut BTreeSet<(Instant, StreamId)>,
    id: StreamId,
    slot: &mut Option<Instant>,
) {
    if let Some(d) = slot.take() {
        set.remove(&(d, id));
    }
}

/// Resets the responses not delivered in time (`write_timeout`).
fn expire_writes(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    while let Some(&(deadline, id)) = conn.deadlines.front() {
        if deadline > ctx.now {
            break;
        }
        conn.deadlines.pop_front();
        let expired = matches!(
            conn.streams.get(&id),
            Some(StreamState::Server(s)) if s.deadline == Some(deadline)
        );
        if expired {
            tracing::debug!(conn = conn.id, %id, "response write timed out");
            ctx.stats.write_timeouts += 1;
            let _ = conn
                .inner
                .send_stream(id)
                .reset(varint(codes::WRITE_TIMEOUT));
            let _ = conn
                .inner
                .recv_stream(id)
                .stop(varint(codes::WRITE_TIMEOUT));
            conn.drop_server_stream(id, ctx.stats);
        }
    }
}

/// Stops the request streams whose frame did not arrive whole in time (`read_timeout`).
fn expire_reads(ctx: &mut Ctx<'_>, conn: &mut Conn) {
    while let Some(&(deadline, id)) = conn.read_deadlines.first() {
        if deadline > ctx.now {
            break;
        }
        conn.read_deadlines.pop_first();
        let expired = match conn.streams.get_mut(&id) {
            Some(StreamState::Server(s)) if s.read_deadline == Some(deadline) => {
                s.read_deadline = None;
                true
            }
            _ => false,
        };
        if expired {
            tracing::debug!(conn = conn.id, %id, "request read timed out");
            ctx.stats.read_timeouts += 1;
            let _ = conn.inner.recv_stream(id).stop(varint(codes::READ_TIMEOUT));
            let _ = conn
                .inner
                .send_stream(id)
                .reset(varint(codes::READ_TIMEOUT));
            conn.parked.retain(|p| *p != id);
            conn.drop_server_stream(id, ctx.stats);
        }
    }
}
